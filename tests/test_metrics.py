"""Known-class metrics: values, zero_division=0 and the report files (the step itself: tests/test_judge.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sourcetracing.metrics import classification_metrics, write_classification_outputs

ROOT = Path(__file__).resolve().parents[1]


def test_metric_values() -> None:
    m = classification_metrics([0, 0, 0, 1], [0, 0, 0, 0])
    assert m["accuracy"] == 0.75
    assert m["balanced_accuracy"] == 0.5  # recall 1 and 0
    assert m["macro_f1"] == pytest.approx((6 / 7 + 0) / 2)
    assert m["n"] == 4
    assert classification_metrics([], [])["n"] == 0
    with pytest.raises(ValueError):
        classification_metrics([0, 1], [0])


def test_never_predicted_class_gets_precision_zero(tmp_path) -> None:
    names = ["alpha", "beta", "gamma"]
    y_true = [0, 0, 1, 1, 2]
    y_pred = [0, 0, 0, 0, 2]  # beta is never predicted
    m = write_classification_outputs(tmp_path, "dev", y_true, y_pred, names)
    report = (tmp_path / "dev_in_domain_results.txt").read_text()
    beta = next(line for line in report.splitlines() if line.strip().startswith("beta"))
    precision, recall, f1, support = beta.split()[1:]
    assert float(precision) == 0.0 and float(recall) == 0.0 and float(f1) == 0.0 and support == "2"
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    cm = pd.read_csv(tmp_path / "confusion_dev.csv", index_col=0)
    assert list(cm.columns) == names and cm.loc["beta", "alpha"] == 2
    assert (tmp_path / "confusion_dev.png").stat().st_size > 1000


def test_predicted_class_outside_the_split_is_reported(tmp_path) -> None:
    names = ["a", "b", "c", "d"]
    write_classification_outputs(tmp_path, "eval", [0, 1], [3, 1], names)
    cm = pd.read_csv(tmp_path / "confusion_eval.csv", index_col=0)
    assert list(cm.columns) == ["a", "b", "d"]  # classes in y_true or y_pred
