"""Tracing new clips: file discovery, clear errors, one result row per file (errors included)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from sourcetracing import trace
from sourcetracing.config import load_config, save_resolved
from sourcetracing.data.protocols import LabelMap
from sourcetracing.ood.scorers import build_scorer

KNOWN = ["sys_a", "sys_b", "sys_c", "sys_d"]


class StandIn(torch.nn.Module):
    def __init__(self, dim: int, classes: int = len(KNOWN)):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(dim, 6)
        self.head = torch.nn.Linear(6, classes)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor):
        self.seen.append(x)
        e = torch.tanh(self.proj(x.mean(dim=1)))
        return self.head(e), e


def _write_wave(path: Path, seconds: float, freq: float, sr: int = 22050) -> None:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(int(freq))
    wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave.astype(np.float32), sr)


@pytest.fixture()
def experiment(tmp_path):
    """A tiny experiment folder: resolved config, a fitted scorer + threshold, a placeholder best.pt."""
    exp = tmp_path / "exp"
    cfg = load_config(None, [f"exp_dir={exp}", "frontend.name=lfcc", "device=cpu", "data.max_len_s=1.0"])
    save_resolved(cfg)
    rng = np.random.default_rng(0)
    ood = exp / "ood_step"
    ood.mkdir(parents=True)
    build_scorer("nsd").fit(rng.normal(size=(20, 6)), rng.normal(size=(20, 4)), rng.integers(0, 4, 20)).save(
        ood / "scorer_nsd.npz"
    )
    (ood / "thresholds.json").write_text(
        json.dumps({"default": "nsd", "scorers": {"nsd": {"threshold": 0.0}}})
    )
    (exp / "trained_models").mkdir()
    (exp / "trained_models" / "best.pt").write_bytes(b"placeholder")
    return exp, cfg


def test_find_audio_recursive(tmp_path) -> None:
    for rel in ("a/x.wav", "a/b/y.FLAC", "a/b/c/z.mp3", "a/notes.txt", "w.ogg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = trace.find_audio([tmp_path / "a", tmp_path / "w.ogg", tmp_path / "missing.wav"])
    names = [p.name for p in found]
    assert names == ["z.mp3", "y.FLAC", "x.wav", "w.ogg", "missing.wav"]  # folders: sorted by path


def test_missing_ood_step_is_a_clear_error(experiment) -> None:
    exp, _ = experiment
    (exp / "ood_step" / "thresholds.json").unlink()
    with pytest.raises(trace.TraceError, match="ood_detector.py"):
        trace.trace_files(exp, [exp / "x.wav"])
    assert trace.main(["--exp", str(exp), str(exp / "config.yaml")]) == 1


def test_trace_rows_and_error_rows(experiment, monkeypatch, tmp_path) -> None:
    from sourcetracing.features.frontends import build_frontend

    exp, cfg = experiment
    sr = cfg.data.sample_rate
    n = int(cfg.data.max_len_s * sr)
    frontend = build_frontend(cfg.frontend, "cpu", sample_rate=sr)
    _, dim = frontend.output_shape(n)
    model = StandIn(dim).eval()
    ckpt = {"label_map": LabelMap(KNOWN).to_dict(), "input_dim": dim}
    monkeypatch.setattr(trace, "load_model", lambda path, device: (model, ckpt))

    clips = tmp_path / "clips"
    _write_wave(clips / "one.wav", 1.7, 220)
    _write_wave(clips / "sub" / "two.wav", 0.4, 440)  # shorter than the crop: wrap-padded
    (clips / "broken.wav").write_bytes(b"not audio at all")
    files = trace.find_audio([clips])
    out = tmp_path / "res.csv"
    assert (
        trace.main(["--exp", str(exp), str(clips), "--top-k", "2", "--out", str(out), "--batch-size", "2"])
        == 0
    )
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == trace.RESULT_COLUMNS
    assert df["path"].tolist() == [str(f) for f in files]
    bad = df[df["path"].str.endswith("broken.wav")].iloc[0]
    assert bad["status"] == "error" and bad["error"] != ""
    ok = df[df["status"] == "ok"].astype({"ood_score": float, "probability": float})
    assert len(ok) == 2
    assert ok["predicted"].isin(KNOWN).all() and ok["decision"].isin(["known", "unknown"]).all()
    assert all(len(s.split("; ")) == 2 for s in ok["top_k"])
    assert (ok["ood_score"] >= 0.0).eq(ok["decision"] == "unknown").all()

    # features are computed as the store holds them: deterministic crop, front end, float16 round trip
    from sourcetracing.data.audio import crop_or_pad, load_audio

    wave = crop_or_pad(load_audio(clips / "one.wav", sr), n)
    expected = frontend(torch.from_numpy(wave[None])).to(torch.float16).float()
    got = torch.cat(model.seen)
    assert any(torch.equal(expected[0], row) for row in got)


def _tone_corpus(root: Path) -> Path:
    """A tiny MLAAD-layout corpus of tone "systems"; other/* are unseen in train."""
    systems = {"sys/a": 200.0, "sys/b": 700.0, "sys/c": 1900.0, "other/x": 4100.0}
    plan = {
        "train": (["sys/a", "sys/b", "sys/c"], 6),
        "dev": (["sys/a", "sys/b", "other/x"], 3),
        "eval": (["sys/a", "sys/b", "sys/c", "other/x"], 3),
    }
    proto = root / "protocols"
    proto.mkdir(parents=True)
    for split, (names, n) in plan.items():
        rows = []
        for system in names:
            for i in range(n):
                rel = f"./fake/{'en' if i % 2 else 'de'}/{system.replace('/', '_')}/{split}_{i}.wav"
                _write_wave(root / rel, 1.2, systems[system] * (1 + 0.01 * i))
                rows.append({"path": rel, "model_name": system})
        pd.DataFrame(rows).to_csv(proto / f"{split}.csv", index=False)
    return proto


@pytest.mark.slow
def test_ood_step_and_trace_end_to_end(tmp_path) -> None:
    """preprocess -> train 1 epoch -> ood_detector.py -> trace.py, all through the real scripts."""
    import subprocess
    import sys

    import yaml

    repo = Path(__file__).resolve().parents[1]
    if not (repo / "train_refd.py").is_file():
        pytest.skip("train_refd.py not written yet")
    root = tmp_path / "data"
    proto = _tone_corpus(root)
    exp = tmp_path / "exp"
    config = {
        "name": "tiny",
        "exp_dir": str(exp),
        "device": "cpu",
        "data": {"root": str(root), "protocols": str(proto), "max_len_s": 1.0},
        "augment": {"versions": ["original"]},
        "frontend": {"name": "lfcc"},
        "features": {"num_workers": 0, "batch_size": 8},
        "train": {"epochs": 1, "batch_size": 8},
        "ood": {"knn_k": 2},
    }
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(config))

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, *args], cwd=repo, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        return proc

    run("scripts/preprocess_dataset.py", "--config", str(cfg_path))
    run("train_refd.py", "--config", str(cfg_path))
    proc = run("scripts/ood_detector.py", "--config", str(cfg_path), "--scorers", "nsd,msp,knn")
    assert "nsd" in proc.stdout and "eval" in proc.stdout
    ood = exp / "ood_step"
    for f in (
        "OOD_eval_results.txt",
        "ood_summary.csv",
        "scores_dev.tsv",
        "scores_eval.tsv",
        "thresholds.json",
    ):
        assert (ood / f).is_file(), f
    assert np.load(ood / "train_embeddings.npy").shape[0] == 18
    assert len(pd.read_csv(ood / "scores_eval.tsv", sep="\t")) == 12

    clips = tmp_path / "new"
    _write_wave(clips / "a.wav", 2.0, 200)
    _write_wave(clips / "deep" / "x.flac", 0.7, 4100)
    (clips / "bad.wav").write_bytes(b"RIFF....")
    out = tmp_path / "trace.csv"
    proc = run("scripts/trace.py", "--exp", str(exp), str(clips), "--out", str(out), "--top-k", "2")
    df = pd.read_csv(out, keep_default_na=False)
    assert len(df) == 3 and (df["status"] == "error").sum() == 1
    assert set(df.loc[df["status"] == "ok", "decision"]) <= {"known", "unknown"}
    assert set(df.loc[df["status"] == "ok", "predicted"]) <= {"sys/a", "sys/b", "sys/c"}
