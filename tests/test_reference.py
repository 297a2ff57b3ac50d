"""The MFCC + logistic-regression reference baseline on a tiny synthetic corpus."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import soundfile as sf

from sourcetracing.config import load_config
from sourcetracing.systems.mfcc import export_mfcc, mfcc_stats

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
    short = mfcc_stats(np.random.default_rng(0).standard_normal(1200).astype(np.float32), 16000)
    assert short.shape == (80,) and np.isfinite(short).all()  # a very short whole clip works too


def test_whole_clip_statistics_are_not_those_of_the_wrap_padded_crop(tmp_path) -> None:
    from sourcetracing.data.audio import crop_or_pad
    from sourcetracing.systems.mfcc import split_features

    rng = np.random.default_rng(1)
    t = np.arange(6000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 300 * t * (1 + t)) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32
    )
    sf.write(tmp_path / "a.wav", wave, 16000, subtype="FLOAT")
    df = pd.DataFrame({"path": ["a.wav"], "clip_id": ["a.wav"], "model_name": ["s"], "label": [0]})
    base = {"n_mfcc": 20, "sample_rate": 16000, "max_len_s": 1.0, "min_len_s": 0.0}
    whole, _, _ = split_features(df, tmp_path, {**base, "crop": False})
    cropped, _, _ = split_features(df, tmp_path, {**base, "crop": True})
    np.testing.assert_allclose(whole[0], mfcc_stats(wave, 16000), rtol=1e-5)
    np.testing.assert_allclose(cropped[0], mfcc_stats(crop_or_pad(wave, 16000), 16000), rtol=1e-5)
    assert np.abs(whole[0] - cropped[0]).max() > 0.1


def test_mfcc_system_exports_and_is_judged_like_any_system(tmp_path) -> None:
    from sourcetracing.judge import judge_system
    from sourcetracing.systems.outputs import SystemOutputs

    root = tmp_path / "data"
    proto = _corpus(root, np.random.default_rng(0))
    cfg = load_config(
        None,
        [
            f"exp_dir={tmp_path / 'exp'}",
            f"data.root={root}",
            f"data.protocols={proto}",
            "data.max_len_s=1.0",
            "ood.knn.k=3",
        ],
    )
    export_mfcc(cfg, n_jobs=1)
    out = tmp_path / "exp" / "mfcc"
    outputs = SystemOutputs.read(out / "outputs")
    assert outputs.has == {"embeddings", "logits"}
    assert len(outputs.split("eval").rows) == 20  # the broken clip is left out, reported
    train = outputs.split("train").embeddings
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-4)  # standardised on train
    known, summary = judge_system(cfg, "mfcc")
    assert known["eval"]["accuracy"] >= 0.9 and known["dev"]["n"] == 8
    for f in (
        "results/metrics.json",
        "results/eval_in_domain_results.txt",
        "ood_step/ood_summary.csv",
        "ood_step/OOD_eval_results.txt",
    ):
        assert (out / f).is_file(), f
    assert json.loads((out / "results" / "metrics.json").read_text())["eval"]["n"] == 12
    # energy and NSD are constant on normalised log-probabilities (logsumexp = 0): left out
    assert set(summary["scorer"]) == {"msp", "maxlogit", "knn", "mahalanobis", "centroid"}
    ev = summary[(summary.split == "eval") & (summary.subset == "all")].set_index("scorer")
    assert ev.loc["knn", "auroc"] > 0.8  # the unseen tones are far from the training tones
    # the statistics are cached and reused while the clip list stays
    stamp = (out / "cache" / "train.npz").stat().st_mtime_ns
    export_mfcc(cfg, n_jobs=1)
    assert (out / "cache" / "train.npz").stat().st_mtime_ns == stamp


def test_duration_statistics_measure_the_clip_and_its_speech() -> None:
    from sourcetracing.systems.utterance_features import clip_statistics

    sr = 16000
    t = np.arange(sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)  # 1 s of "speech"
    clip = np.concatenate([np.zeros(sr // 2, np.float32), tone, np.zeros(sr // 2, np.float32)])  # 2 s in all
    x, names = clip_statistics(clip, sr, ["duration"])
    assert names == ["log_clip_s", "log_speech_s"]
    assert abs(np.exp(x[0]) - 2.0) < 1e-3
    assert abs(np.exp(x[1]) - 1.0) < 0.06  # the speech frames: the tone, within a 40 ms frame's reach


def test_plain_reference_has_exactly_its_settings_and_is_never_a_choice(tmp_path) -> None:
    """30 MFCCs of the first 4 s, mean + std, standardised on train, L2-normalised, cosine distance
    to the 5th-nearest train clip: recomputed here from the clips, and left out of every dev choice."""
    from sourcetracing.data.audio import load_audio
    from sourcetracing.judge import judge_system
    from sourcetracing.summary import dev_selected, experiment_rows
    from sourcetracing.systems.fusion import candidate_scores
    from sourcetracing.systems.outputs import SystemOutputs
    from sourcetracing.systems.plain_reference import SYSTEM, export_plain, plain_config
    from sourcetracing.systems.utterance_features import plain_mfcc_group

    root = tmp_path / "data"
    proto = _corpus(root, np.random.default_rng(0))
    long_clip = root / "fake/en/sys_a/train_1.wav"  # 6 s: only its first 4 s may count
    wave = np.random.default_rng(5).standard_normal(6 * 16000).astype(np.float32) * 0.1
    sf.write(long_clip, wave, 16000)
    cfg = load_config(None, [f"exp_dir={tmp_path / 'exp'}", f"data.root={root}", f"data.protocols={proto}"])
    export_plain(cfg, n_jobs=1)
    outputs = SystemOutputs.read(tmp_path / "exp" / SYSTEM / "outputs")
    assert outputs.meta["reference"] is True and outputs.split("train").embeddings.shape[1] == 60
    # the statistics of the train clips, by hand: first 4 s, 30 MFCCs, mean and std
    train_rows = outputs.split("train").rows
    stats = np.stack(
        [
            plain_mfcc_group(load_audio(str(root / p), 16000)[: 4 * 16000], 16000, 30)[0]
            for p in train_rows["path"]
        ]
    )
    assert len(plain_mfcc_group(wave, 16000, 30)[0]) == 60
    mean, std = stats.mean(0), stats.std(0)
    dev = outputs.split("dev").rows
    dev_stats = np.stack(
        [plain_mfcc_group(load_audio(str(root / p), 16000)[:64000], 16000, 30)[0] for p in dev["path"]]
    )

    def unit(x: np.ndarray) -> np.ndarray:
        z = (x - mean) / std
        return z / np.linalg.norm(z, axis=1, keepdims=True)

    expected = 1.0 - np.sort(unit(dev_stats) @ unit(stats).T, axis=1)[:, -5]
    judge_system(plain_config(cfg), SYSTEM)
    scores = pd.read_csv(tmp_path / "exp" / SYSTEM / "ood_step" / "scores_dev.tsv", sep="\t")
    assert list(scores.columns[6:]) == ["knn"]  # one scorer, nothing tuned
    np.testing.assert_allclose(scores["knn"].to_numpy(), expected, atol=2e-4)
    thresholds = json.loads((tmp_path / "exp" / SYSTEM / "ood_step" / "thresholds.json").read_text())
    assert thresholds["scorers"]["knn"]["tuning"]["settings"]["k"] == 5
    # never a choice: not a fusion candidate, not the dev-chosen system even when its dev EER is lowest
    export_mfcc(cfg, n_jobs=1)
    judge_system(cfg, "mfcc")
    assert not [c for c in candidate_scores(cfg, "dev").columns if c.startswith(f"{SYSTEM}:")]
    frame, _ = experiment_rows(tmp_path / "exp")
    frame.loc[frame["system"] == SYSTEM, "dev_eer_%"] = -1.0
    assert dev_selected(frame)[0] == "mfcc"
