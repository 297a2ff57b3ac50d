"""Trace new clips with a trained experiment.

For every clip: the predicted system, the top-k systems with probabilities, the OOD score of the
chosen scorer and the known/unknown decision at the threshold fitted on dev by the OOD step.

    python scripts/trace.py --exp exp/demo clip.wav folder/ [--top-k 3] [--scorer nsd] [--out file.csv]

Features are computed as the feature store computes them: the experiment's front end on the
deterministic 4 s crop (``crop_or_pad`` without a random generator), cast through float16.
Folders are searched recursively for audio files; a file that cannot be read gives a row with
the error instead of stopping the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from sourcetracing.config import Config, ConfigError, load_config, resolve_device
from sourcetracing.features.store import to_store_dtype
from sourcetracing.training.checkpoint import best_checkpoint, load_model

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
RESULT_COLUMNS = [
    "path",
    "status",
    "predicted",
    "probability",
    "top_k",
    "scorer",
    "ood_score",
    "threshold",
    "decision",
    "error",
]


class TraceError(RuntimeError):
    """The experiment is not ready for tracing (missing step outputs)."""


def find_audio(inputs: Iterable[str | Path]) -> list[Path]:
    """Files given directly plus audio files found recursively in folders (sorted, in input order)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            )
        else:
            out.append(p)  # a missing or odd file is reported as an error row later
    return out


def load_experiment_config(exp: Path) -> Config:
    path = exp / "config.yaml"
    if not path.is_file():
        raise TraceError(f"{path} not found: is {exp} an experiment folder (run the pipeline steps first)?")
    try:
        return load_config(path)
    except ConfigError as err:
        raise TraceError(f"{path}: {err}") from err


def load_ood(exp: Path, scorer_name: str | None):
    """The fitted scorer and its dev-EER threshold saved by the OOD step."""
    from sourcetracing.ood.scorers import Scorer

    ood_dir = exp / "ood_step"
    thr_path = ood_dir / "thresholds.json"
    if not thr_path.is_file():
        raise TraceError(
            f"no OOD threshold in {ood_dir}: run `python scripts/ood_detector.py --config {exp / 'config.yaml'}` first"
        )
    info = json.loads(thr_path.read_text())
    name = scorer_name or info.get("default")
    if name not in info.get("scorers", {}):
        raise TraceError(
            f"scorer '{name}' was not fitted by the OOD step; available: {sorted(info.get('scorers', {}))}"
        )
    state = ood_dir / f"scorer_{name}.npz"
    if not state.is_file():
        raise TraceError(f"{state} missing: rerun scripts/ood_detector.py")
    return name, Scorer.load(state), float(info["scorers"][name]["threshold"])


def store_like_features(frontend, waves: np.ndarray, device: torch.device) -> torch.Tensor:
    """Front-end features of ``[B, samples]`` waves as the store holds them (clamped, through float16)."""
    with torch.no_grad():
        feats = frontend(torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32)).to(device))
    return to_store_dtype(feats).to(torch.float32)


def trace_files(
    exp: str | Path,
    files: Sequence[str | Path],
    top_k: int | None = None,
    scorer_name: str | None = None,
    device: str | None = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Trace ``files`` (already expanded) with the experiment in ``exp``; one result row per file."""
    from sourcetracing.data.audio import clip_samples, crop_or_pad, load_audio
    from sourcetracing.data.protocols import LabelMap
    from sourcetracing.features.frontends import build_frontend, frontend_settings

    exp = Path(exp)
    cfg = load_experiment_config(exp)
    name, scorer, threshold = load_ood(exp, scorer_name)
    ckpt_path = best_checkpoint(exp)
    if not ckpt_path.is_file():
        raise TraceError(f"{ckpt_path} not found: train the model first (python train_refd.py --config ...)")
    dev = resolve_device(device or cfg.device)
    model, ckpt = load_model(ckpt_path, dev)
    classes = LabelMap.from_dict(ckpt["label_map"]).known
    k = max(1, min(int(top_k or cfg.trace.top_k), len(classes)))
    # The checkpoint's feature-store settings are what the model was trained on; the config is the fallback.
    store_meta = dict(ckpt.get("feature_store") or {})
    frontend_cfg = dict(store_meta.get("frontend") or cfg.frontend)
    if frontend_settings(frontend_cfg) != frontend_settings(cfg.frontend):
        print(
            f"warning: the checkpoint's front end {frontend_settings(frontend_cfg)} differs from "
            f"{exp}/config.yaml's; using the checkpoint's"
        )
    sr = int(store_meta.get("sample_rate", cfg.data.sample_rate))
    num_samples = int(store_meta.get("num_samples", clip_samples(cfg)))
    frontend = build_frontend(frontend_cfg, dev, sample_rate=sr)

    rows: list[dict] = []
    for start in tqdm(range(0, len(files), batch_size), desc="tracing", unit="batch", leave=False):
        batch, waves = [], []
        for f in files[start : start + batch_size]:
            try:
                waves.append(crop_or_pad(load_audio(f, sr), num_samples))
                batch.append(f)
            except Exception as err:  # noqa: BLE001 - any unreadable file becomes an error row
                rows.append(
                    {
                        "path": str(f),
                        "status": "error",
                        "scorer": name,
                        "threshold": threshold,
                        "error": str(err),
                    }
                )
        if not batch:
            continue
        with torch.no_grad():
            logits, emb = model(store_like_features(frontend, np.stack(waves), dev))
        logits_np = logits.float().cpu().numpy()
        emb_np = emb.float().reshape(len(batch), -1).cpu().numpy()
        probs = torch.softmax(torch.from_numpy(logits_np), dim=1).numpy()
        ood = scorer.score(emb_np, logits_np)
        for i, f in enumerate(batch):
            order = np.argsort(-probs[i])[:k]
            rows.append(
                {
                    "path": str(f),
                    "status": "ok",
                    "predicted": classes[order[0]],
                    "probability": float(probs[i, order[0]]),
                    "top_k": "; ".join(f"{classes[j]}:{probs[i, j]:.3f}" for j in order),
                    "scorer": name,
                    "ood_score": float(ood[i]),
                    "threshold": threshold,
                    "decision": "unknown" if ood[i] >= threshold else "known",
                    "error": "",
                }
            )
    order = {str(f): i for i, f in enumerate(files)}
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return df.sort_values("path", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--exp", required=True, type=Path, help="experiment folder (exp/<name>)")
    parser.add_argument("inputs", nargs="+", help="audio files or folders (searched recursively)")
    parser.add_argument(
        "--top-k", type=int, default=None, help="systems listed per clip (default: trace.top_k)"
    )
    parser.add_argument("--scorer", default=None, help="OOD scorer (default: the OOD step's default)")
    parser.add_argument("--out", type=Path, default=None, help="CSV file (default: <exp>/trace_results.csv)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    files = find_audio(args.inputs)
    if not files:
        print("no audio files found in the given inputs", file=sys.stderr)
        return 2
    try:
        df = trace_files(args.exp, files, args.top_k, args.scorer, args.device, args.batch_size)
    except TraceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    out = args.out or args.exp / "trace_results.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    show = df[["path", "predicted", "probability", "ood_score", "decision", "top_k", "error"]].copy()
    show["path"] = show["path"].map(lambda p: p if len(p) <= 40 else "..." + p[-37:])
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(show.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
    n_err = int((df["status"] == "error").sum())
    print(f"{len(df) - n_err} clip(s) traced, {n_err} error(s); results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
