"""Steps 1-4 and the GE2E baseline end to end: the real scripts on the small demo corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.yaml"


def run(script: str, *args: str) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_demo_pipeline_end_to_end(small_demo, tmp_path):
    corpus, _ = small_demo
    exp = tmp_path / "exp"
    overrides = [
        f"data.root={corpus / 'MLAAD_v5'}",
        f"data.protocols={corpus / 'protocols'}",
        f"augment.musan={corpus / 'musan'}",
        f"augment.rirs={corpus / 'RIRS_NOISES'}",
        f"exp_dir={exp}",
        "features.num_workers=0",
        "train.epochs=2",
        "train.batch_size=32",
        "ge2e.epochs=2",
        "ge2e.steps_per_epoch=5",
    ]
    cfg = ["--config", str(CONFIG), *overrides]

    out = run("scripts/preprocess_dataset.py", *cfg)
    assert "feature store written" in out
    protocols = {s: pd.read_csv(corpus / "protocols" / f"{s}.csv") for s in ("train", "dev", "eval")}
    store = next((exp / "features").glob("lfcc-*"))
    index = pd.read_csv(store / "index.csv")
    n_versions = len(load_versions(exp))
    assert (index["split"] == "train").sum() == len(protocols["train"]) * n_versions
    assert (index["split"] == "eval").sum() == len(protocols["eval"])  # eval stored clean, once

    run("train_refd.py", *cfg)
    models = exp / "trained_models"
    history = pd.read_csv(models / "metrics.csv")
    assert list(history["epoch"]) == [1, 2]
    assert history["train_loss"].notna().all() and (models / "best.pt").is_file()
    assert (models / "curves.png").stat().st_size > 0

    run("scripts/get_classification_metrics.py", *cfg)
    metrics = json.loads((exp / "results" / "metrics.json").read_text())
    known_eval = int(protocols["eval"]["model_name"].isin(set(protocols["train"]["model_name"])).sum())
    assert metrics["eval"]["n"] == known_eval
    assert 0.0 <= metrics["eval"]["macro_f1"] <= 1.0
    assert (exp / "results" / "eval_in_domain_results.txt").is_file()

    run("scripts/ood_detector.py", *cfg)
    ood = exp / "ood_step"
    summary = pd.read_csv(ood / "ood_summary.csv")
    assert set(summary["scorer"]) == {"nsd", "msp", "maxlogit", "energy", "knn", "mahalanobis"}
    for split in ("dev", "eval"):
        scores = pd.read_csv(ood / f"scores_{split}.tsv", sep="\t")
        assert len(scores) == len(protocols[split])  # one row per clip, no padding rows
    overall = summary[summary["subset"] == "all"]
    assert overall["auroc"].between(0, 1).all() and overall["eer"].between(0, 1).all()
    assert "EER" in (ood / "OOD_eval_results.txt").read_text()

    clips = sorted((corpus / "MLAAD_v5").rglob("*_eval_0000.wav"))[:3]
    run("scripts/trace.py", "--exp", str(exp), *map(str, clips))
    traced = pd.read_csv(exp / "trace_results.csv")
    assert len(traced) == 3 and traced["decision"].isin(["known", "unknown"]).all()

    run("train_ge2e.py", *cfg)
    ge2e = exp / "ge2e"
    assert (ge2e / "best.pt").is_file()
    assert json.loads((ge2e / "results" / "metrics.json").read_text())["eval"]["n"] == known_eval
    assert set(pd.read_csv(ge2e / "ood_step" / "ood_summary.csv")["scorer"]) >= {"centroid", "knn"}

    out = run("scripts/summarize_results.py", *cfg)
    assert "AASIST (REFD)" in out and "GE2E" in out and (exp / "summary.md").is_file()


def load_versions(exp: Path) -> list[str]:
    import yaml

    return yaml.safe_load((exp / "config.yaml").read_text())["augment"]["versions"]
