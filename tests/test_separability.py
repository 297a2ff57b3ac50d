"""The separability diagnostic: its numbers on known data, its errors, and the script on a tiny corpus."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_reference import _corpus

from sourcetracing.errors import DataError
from sourcetracing.separability import separability

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "separability.py"


def test_two_systems_d_prime_and_accuracy() -> None:
    rng = np.random.default_rng(0)
    same = rng.normal(0, 1, (200, 2))
    shifted = rng.normal(0, 1, (200, 2)) + [3.0, 0.0]
    report = separability(np.concatenate([same, shifted]), ["a"] * 200 + ["b"] * 200, ["apart", "alike"])
    assert report.index_name == "d'" and report.chance == pytest.approx(0.5)
    assert [name for name, _, _ in report.top] == ["apart", "alike"]
    assert report.top[0][1] == pytest.approx(3.0, abs=0.3)  # d' of a 3-sd shift
    assert report.top[1][1] < 0.4
    assert report.top[0][2] == pytest.approx([0.0, 3.0], abs=0.2)  # per-system means
    # the Bayes accuracy of a 3-sd shift is Phi(1.5) = 0.933
    assert report.best_accuracy == pytest.approx(0.933, abs=0.04)
    assert "| apart |" in report.to_markdown()


def test_indistinguishable_systems_stay_near_chance_and_three_use_the_fisher_ratio() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (300, 4))
    labels = np.repeat(["a", "b", "c"], [100, 100, 100])
    report = separability(x, labels, list("wxyz"))
    assert report.index_name == "Fisher ratio" and report.chance == pytest.approx(1 / 3)
    assert report.best_accuracy < 0.45
    x[labels == "c", 2] += 2.0  # one statistic moves one system
    moved = separability(x, labels, list("wxyz"))
    assert moved.top[0][0] == "y" and moved.top[0][1] > 0.5


def test_separability_errors() -> None:
    x = np.zeros((6, 2))
    with pytest.raises(DataError, match="at least two systems"):
        separability(x, ["a"] * 6, ["p", "q"])
    with pytest.raises(DataError, match="fewer than the 5 folds"):
        separability(x, ["a"] * 3 + ["b"] * 3, ["p", "q"])
    with pytest.raises(DataError, match="do not match"):
        separability(x, ["a"] * 6, ["p"])


def test_separability_script_on_a_tiny_corpus(tmp_path) -> None:
    root = tmp_path / "data"
    proto = _corpus(root, np.random.default_rng(0))
    common = [sys.executable, str(SCRIPT), "--folds", "3", "--splits", "train", "dev"]
    overrides = ["--", f"data.root={root}", f"data.protocols={proto}", f"exp_dir={tmp_path / 'exp'}"]
    out = tmp_path / "sep.md"
    done = subprocess.run(
        [*common, "--synthesizers", "sys/a", "sys/b", "--out", str(out), *overrides],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "| sys/a | 10 |" in text and "| sys/b | 10 |" in text  # 6 train + 4 dev clips each
    accuracies = [float(line.split("|")[2]) for line in text.splitlines() if line.startswith("| 0.01 |")]
    assert accuracies == [1.0]  # 200 Hz and 700 Hz tones: always told apart
    assert not (tmp_path / "exp").exists()  # a diagnostic writes nothing into the experiment
    bad = subprocess.run(
        [*common, "--synthesizers", "sys/a", "sys/zzz", *overrides],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1 and "no clips of ['sys/zzz']" in bad.stderr
