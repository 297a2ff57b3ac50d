"""Known-class metrics: values, zero_division=0, report files, and the step-3 script end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from sourcetracing.config import load_config
from sourcetracing.metrics import classification_metrics, write_classification_outputs
from sourcetracing.training import evaluate, refd
from toy_store import make_toy_store

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


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = load_config(
        None,
        [
            f"exp_dir={tmp / 'exp'}",
            f"features.dir={tmp / 'features'}",
            "frontend.name=lfcc",
            "device=cpu",
            "train.epochs=1",
            "train.batch_size=16",
            "model.in_proj_dim=12",
            "model.first_pool=[2,2]",
            "model.filts=[[1,4],[4,8]]",
            "model.gat_dims=[8,8]",
            "model.embedding_dim=16",
        ],
    )
    make_toy_store(cfg, n_known=4, n_ood=2, train_per_class=8, train_versions=("original",))
    refd.train(cfg)
    yield tmp, cfg
    torch.set_num_threads(threads)


def test_get_classification_metrics_writes_files(trained, capsys) -> None:
    tmp, cfg = trained
    config = tmp / "exp.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    assert evaluate.main(["--config", str(config)]) == 0
    out = Path(cfg.exp_dir) / "results"
    for name in (
        "dev_in_domain_results.txt",
        "eval_in_domain_results.txt",
        "metrics.json",
        "confusion_dev.csv",
        "confusion_dev.png",
        "confusion_eval.csv",
        "confusion_eval.png",
    ):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"dev", "eval"}
    assert metrics["dev"]["n"] == 4 * 8  # known systems only, clean version: OOD clips excluded
    assert "macro-F1" in capsys.readouterr().out


def test_get_classification_metrics_label_map_mismatch(trained, capsys) -> None:
    tmp, cfg = trained
    exp2 = tmp / "exp_other"
    exp2.mkdir(exist_ok=True)
    (exp2 / "label_map.csv").write_text(
        "system,system_id,label,status\n"
        + "".join(f"sys_k{i},{i},{i},known\n" for i in range(4))
        + "sys_new,4,4,known\n"
    )
    other = load_config(
        None,
        [f"{k}={v}" for k, v in (("exp_dir", exp2), ("features.dir", tmp / "features"))]
        + ["frontend.name=lfcc", "device=cpu"],
    )
    config = tmp / "other.yaml"
    config.write_text(yaml.safe_dump(other.to_dict()))
    ckpt = Path(cfg.exp_dir) / "trained_models" / "best.pt"
    assert evaluate.main(["--config", str(config), "--checkpoint", str(ckpt)]) == 1
    assert "label map mismatch" in capsys.readouterr().err


@pytest.mark.slow
def test_scripts_end_to_end(trained) -> None:
    """train_refd.py then scripts/get_classification_metrics.py as a user runs them."""
    tmp, cfg = trained
    cfg2 = load_config(None, [f"exp_dir={tmp / 'e2e'}"])
    data = cfg.to_dict()
    data["exp_dir"] = str(tmp / "e2e")
    config = tmp / "e2e.yaml"
    config.write_text(yaml.safe_dump(data))
    env_cmd = [sys.executable]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = subprocess.run(
        env_cmd + [str(ROOT / "train_refd.py"), "--config", str(config), "train.epochs=2"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "best epoch" in run.stdout
    run = subprocess.run(
        env_cmd + [str(ROOT / "scripts/get_classification_metrics.py"), "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    metrics = json.loads((Path(cfg2.exp_dir) / "results" / "metrics.json").read_text())
    assert 0.0 <= metrics["eval"]["accuracy"] <= 1.0
    assert len(pd.read_csv(Path(cfg2.exp_dir) / "trained_models" / "metrics.csv")) == 2
