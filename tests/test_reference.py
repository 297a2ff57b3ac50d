"""The MFCC + logistic-regression reference baseline on a tiny synthetic corpus."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import soundfile as sf

from sourcetracing.config import load_config
from sourcetracing.reference import mfcc_stats, run_reference

SYSTEMS = {"sys/a": 200.0, "sys/b": 700.0, "sys/c": 1900.0, "other/x": 4100.0, "other/y": 3100.0}


def _corpus(root, rng):
    """Sine-tone "systems" (the frequency is the fingerprint); other/* never appear in train."""
    rows = {"train": [], "dev": [], "eval": []}
    plan = {
        "train": (["sys/a", "sys/b", "sys/c"], 6),
        "dev": (["sys/a", "sys/b", "other/x"], 4),
        "eval": (["sys/a", "sys/b", "sys/c", "other/x", "other/y"], 4),
    }
    sr = 16000
    for split, (systems, n) in plan.items():
        for system in systems:
            for i in range(n):
                lang = "en" if i % 2 else "de"
                rel = f"./fake/{lang}/{system.replace('/', '_')}/{split}_{i}.wav"
                t = np.arange(int(0.6 * sr)) / sr
                f = SYSTEMS[system] * (1 + 0.02 * rng.standard_normal())
                wave = 0.3 * np.sin(2 * np.pi * f * t) + 0.02 * rng.standard_normal(len(t))
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(root / rel, wave.astype(np.float32), sr)
                rows[split].append({"path": rel, "model_name": system})
    rows["eval"].append({"path": "./fake/en/sys_a/broken.wav", "model_name": "sys/a"})
    (root / "fake/en/sys_a/broken.wav").write_bytes(b"garbage")
    proto = root / "protocols"
    proto.mkdir()
    for split, r in rows.items():
        pd.DataFrame(r).to_csv(proto / f"{split}.csv", index=False)
    return proto


def test_mfcc_stats_shape() -> None:
    x = mfcc_stats(np.random.default_rng(0).standard_normal(16000).astype(np.float32), 16000)
    assert x.shape == (80,) and x.dtype == np.float32 and np.isfinite(x).all()


def test_reference_baseline_end_to_end(tmp_path) -> None:
    root = tmp_path / "data"
    proto = _corpus(root, np.random.default_rng(0))
    cfg = load_config(
        None,
        [
            f"exp_dir={tmp_path / 'exp'}",
            f"data.root={root}",
            f"data.protocols={proto}",
            "data.max_len_s=1.0",
            "ood.knn_k=3",
        ],
    )
    known, summary = run_reference(cfg, n_jobs=1)
    out = tmp_path / "exp" / "reference"
    assert known["eval"]["accuracy"] >= 0.9 and known["dev"]["n"] == 8
    for f in (
        "ood_summary.csv",
        "OOD_eval_results.txt",
        "scores_eval.tsv",
        "thresholds.json",
        "metrics.json",
        "eval_in_domain_results.txt",
        "skipped.csv",
    ):
        assert (out / f).is_file(), f
    assert json.loads((out / "metrics.json").read_text())["eval"]["n"] == 12
    assert set(summary["scorer"]) == {"msp", "knn"}
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["clip_id"].str.endswith("broken.wav").all() and len(skipped) == 1
    ev = summary[(summary.split == "eval") & (summary.subset == "all")].set_index("scorer")
    assert ev.loc["knn", "auroc"] > 0.8  # the unseen tones are far from the training tones
    # the cache is reused on a second run (same clip list)
    assert (out / "mfcc_stats_train.npz").is_file()
    again, _ = run_reference(cfg, n_jobs=1)
    assert again["eval"]["accuracy"] == known["eval"]["accuracy"]
