"""The whole pipeline through run.sh's stages on the small demo corpus: the files each stage must
produce, one row per clip, and no trained model run twice over the same split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "demo.yaml"

EXPECTED = {  # stage -> files it must write (relative to exp_dir)
    1: ["label_assignment.txt", "label_map.csv", "config.yaml"],
    2: ["aasist/trained_models/best.pt", "aasist/trained_models/last.pt", "aasist/trained_models/metrics.csv",
        "aasist/trained_models/curves.png", "aasist/outputs/meta.json", "aasist/outputs/eval.npz"],
    3: ["aasist/results/dev_in_domain_results.txt", "aasist/results/eval_in_domain_results.txt", "aasist/results/metrics.json"],
    4: ["aasist/ood_step/OOD_eval_results.txt", "aasist/ood_step/ood_summary.csv", "aasist/ood_step/scores_eval.tsv",
        "aasist/ood_step/thresholds.json", "aasist/ood_step/roc_eval.png", "aasist/ood_step/det_eval.png"],
    5: ["ge2e/trained_models/best.pt", "ge2e/outputs/meta.json", "ge2e/results/metrics.json", "ge2e/ood_step/ood_summary.csv"],
    6: ["mfcc/outputs/meta.json", "mfcc/results/metrics.json", "mfcc/ood_step/OOD_eval_results.txt"],
    7: ["stats/outputs/meta.json", "stats/results/metrics.json", "stats/ood_step/ood_summary.csv"],
    8: ["fusion/outputs/meta.json", "fusion/results/metrics.json", "fusion/ood_step/OOD_eval_results.txt"],
    9: ["ge2e/embeddings/embedding_map.png", "aasist/embeddings/embedding_map.png", "ge2e/embeddings/eval.npz"],
    10: ["summary.md"],
}  # fmt: skip


@pytest.mark.slow
def test_run_sh_stages_on_the_small_demo(small_demo, tmp_path):
    corpus, _ = small_demo
    exp = tmp_path / "exp"
    passes = tmp_path / "passes.tsv"
    overrides = [
        f"data.root={corpus / 'MLAAD_v5'}", f"data.protocols={corpus / 'protocols'}",
        f"augment.musan={corpus / 'musan'}", f"augment.rirs={corpus / 'RIRS_NOISES'}", f"exp_dir={exp}",
        "features.num_workers=0", "train.epochs=2", "train.batch_size=32", "ge2e.epochs=2", "ge2e.steps_per_epoch=5",
        "mfcc.jobs=1", "stats.jobs=1",
    ]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", SOURCETRACING_PASS_LOG=str(passes))
    cmd = [
        "bash",
        str(ROOT / "run.sh"),
        "--python",
        sys.executable,
        "--config",
        str(CONFIG),
        "--stage",
        "1",
        "--",
        *overrides,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1500)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    for stage in range(1, 12):
        assert f"== stage {stage}:" in proc.stdout
    for stage, files in EXPECTED.items():
        for f in files:
            assert (exp / f).is_file(), f"stage {stage}: {f}"

    protocols = {s: pd.read_csv(corpus / "protocols" / f"{s}.csv") for s in ("train", "dev", "eval")}
    store = next((exp / "features").glob("lfcc-*"))
    index = pd.read_csv(store / "index.csv")
    versions = json.loads((store / "meta.json").read_text())["versions"]["train"]
    assert (index["split"] == "train").sum() == len(protocols["train"]) * len(versions)
    assert (index["split"] == "eval").sum() == len(protocols["eval"])  # eval stored clean, once
    for split in ("dev", "eval"):  # one row per clip, no padding rows
        assert len(pd.read_csv(exp / "aasist" / "ood_step" / f"scores_{split}.tsv", sep="\t")) == len(
            protocols[split]
        )
    known_eval = int(protocols["eval"]["model_name"].isin(set(protocols["train"]["model_name"])).sum())
    for system in ("aasist", "ge2e", "mfcc", "stats", "fusion"):
        assert json.loads((exp / system / "results" / "metrics.json").read_text())["eval"]["n"] == known_eval
    summary = pd.read_csv(exp / "aasist" / "ood_step" / "ood_summary.csv")
    assert set(summary["scorer"]) == {"nsd", "msp", "maxlogit", "energy", "knn", "mahalanobis", "centroid"}
    assert set(pd.read_csv(exp / "ge2e" / "ood_step" / "ood_summary.csv")["scorer"]) == {
        "knn",
        "mahalanobis",
        "centroid",
    }
    table = (exp / "summary.md").read_text()
    assert all(f"| {s} |" in table for s in ("aasist", "ge2e", "mfcc", "stats", "fusion"))
    fusion = json.loads((exp / "fusion" / "outputs" / "meta.json").read_text())
    assert fusion["members"] and all(":" in m for m in fusion["members"])
    traced = pd.read_csv(next((exp / "trace").glob("trace_*.csv")))
    assert (
        len(traced)
        and traced["decision"].isin(["known", "unknown"]).all()
        and traced["p_unseen"].between(0, 1).all()
    )

    # every system ran over each split exactly once in the whole pipeline
    runs = Counter(tuple(line.split("\t")[:2]) for line in passes.read_text().splitlines())
    assert set(runs) == {
        (s, split)
        for s in ("aasist", "ge2e", "mfcc", "plain_mfcc", "stats")
        for split in ("train", "dev", "eval")
    }
    assert set(runs.values()) == {1}, runs

    # a rerun resumes: nothing is retrained, the outputs are exported again with the same content
    best = (exp / "aasist" / "trained_models" / "best.pt").read_bytes()
    out_id = json.loads((exp / "aasist" / "outputs" / "manifest.json").read_text())["id"]
    proc = subprocess.run(
        ["bash", str(ROOT / "run.sh"), "--python", sys.executable, "--config", str(CONFIG), "--stage", "2", "--stop-stage", "2", "--", *overrides],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (exp / "aasist" / "trained_models" / "best.pt").read_bytes() == best
    assert json.loads((exp / "aasist" / "outputs" / "manifest.json").read_text())["id"] == out_id
