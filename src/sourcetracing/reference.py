"""A reference baseline: MFCC statistics + logistic regression, on the same splits and metrics.

Each clean clip is read, cropped deterministically to ``data.max_len_s`` exactly as the feature
store does, and summarised by the mean and standard deviation over time of 20 MFCCs and their
deltas (80 numbers). A standardiser + multinomial logistic regression is trained on the train
split; known-class metrics on dev/eval and an OOD report (MSP and 5-NN cosine on the
standardised features) go to ``<exp_dir>/reference/``.

    python scripts/reference_baseline.py --config configs/demo.yaml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.config import Config, add_config_args, config_from_args

N_MFCC = 20


def mfcc_stats(wave: np.ndarray, sample_rate: int, n_mfcc: int = N_MFCC) -> np.ndarray:
    """Mean and std over time of MFCCs and their deltas: a ``4 * n_mfcc`` vector (float32)."""
    import librosa

    mfcc = librosa.feature.mfcc(y=wave, sr=sample_rate, n_mfcc=n_mfcc)
    delta = librosa.feature.delta(mfcc, mode="nearest")
    both = np.concatenate([mfcc, delta], axis=0)
    return np.concatenate([both.mean(axis=1), both.std(axis=1)]).astype(np.float32)


def _clip_features(path: str, sample_rate: int, num_samples: int) -> tuple[np.ndarray | None, str]:
    from sourcetracing.data.audio import crop_or_pad, load_audio

    try:
        wave = crop_or_pad(load_audio(path, sample_rate), num_samples)
        return mfcc_stats(wave, sample_rate), ""
    except Exception as err:  # noqa: BLE001 - unusable clips are reported and skipped
        return None, str(err)


def split_features(
    df: pd.DataFrame,
    root: str | Path,
    sample_rate: int,
    max_len_s: float,
    n_jobs: int = 1,
    cache: Path | None = None,
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Features of the clips of one annotated split: ``(X, kept rows, skipped rows with reason)``.

    With ``cache`` (an ``.npz`` path) the result is saved and reused when the clip list is unchanged.
    """
    from joblib import Parallel, delayed
    from tqdm import tqdm

    df = df.reset_index(drop=True)
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if data["clip_ids"].tolist() == df["clip_id"].tolist() and float(data["max_len_s"]) == max_len_s:
                ok = data["ok"]
                skipped = df[~ok].assign(reason=data["reasons"][~ok])
                return data["features"], df[ok].reset_index(drop=True), skipped
    num_samples = int(round(max_len_s * sample_rate))
    paths = [str(Path(root) / p) for p in df["path"]]
    jobs = (delayed(_clip_features)(p, sample_rate, num_samples) for p in paths)
    results = list(
        tqdm(
            Parallel(n_jobs=n_jobs, batch_size=16, return_as="generator")(jobs),
            total=len(paths),
            desc=f"mfcc ({len(paths)} clips)",
            leave=False,
        )
    )
    ok = np.array([r[0] is not None for r in results], dtype=bool)
    reasons = np.array([r[1] for r in results], dtype=str)
    dim = 4 * N_MFCC
    feats = (
        np.stack([r[0] for r in results if r[0] is not None]) if ok.any() else np.zeros((0, dim), np.float32)
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cache,
            clip_ids=df["clip_id"].to_numpy(str),
            ok=ok,
            reasons=reasons,
            features=feats,
            max_len_s=np.asarray(max_len_s),
        )
    return feats, df[ok].reset_index(drop=True), df[~ok].assign(reason=reasons[~ok])


def run_reference(cfg: Config, n_jobs: int | None = None) -> tuple[dict, pd.DataFrame]:
    """Train and evaluate the reference baseline; returns (known-class metrics, OOD summary)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from sourcetracing.data.protocols import prepare_splits
    from sourcetracing.metrics import write_classification_outputs
    from sourcetracing.ood.detector import FRAME_COLUMNS, summary_table
    from sourcetracing.ood.report import write_ood_report
    from sourcetracing.ood.scorers import build_scorer

    splits, label_map = prepare_splits(cfg)
    names = list(label_map.known)
    out = Path(cfg.exp_dir) / "reference"
    out.mkdir(parents=True, exist_ok=True)
    jobs = int(n_jobs if n_jobs is not None else max(1, cfg.features.num_workers))
    feats: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}
    skipped = []
    for split in [s for s in ("train", "dev", "eval") if s in splits]:
        x, kept, bad = split_features(
            splits[split],
            cfg.data.root,
            int(cfg.data.sample_rate),
            float(cfg.data.max_len_s),
            jobs,
            cache=out / f"mfcc_stats_{split}.npz",
        )
        feats[split] = (x, kept)
        if len(bad):
            skipped.append(bad.assign(split=split)[["split", "clip_id", "path", "reason"]])
            print(f"{split}: skipped {len(bad)} unusable clip(s) (see reference/skipped.csv)")
    if skipped:
        pd.concat(skipped).to_csv(out / "skipped.csv", index=False)
    x_train, train_rows = feats["train"]
    y_train = train_rows["label"].to_numpy(int)
    if len(np.unique(y_train)) < 2:
        raise SystemExit("error: the reference baseline needs at least two known systems in train")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(x_train, y_train)
    lr_classes = clf.classes_

    def logits_of(x: np.ndarray) -> np.ndarray:
        """Log-probabilities over all known classes (a class absent from train gets -inf-like)."""
        full = np.full((len(x), len(names)), -30.0, dtype=np.float32)
        full[:, lr_classes] = np.log(np.clip(clf.predict_proba(x), 1e-13, None))
        return full

    scaler = clf.named_steps["standardscaler"]
    knn = build_scorer("knn", k=int(cfg.ood.knn_k), chunk_size=int(cfg.ood.chunk_size))
    knn.fit(scaler.transform(x_train), logits_of(x_train), y_train)
    msp = build_scorer("msp")

    known_metrics: dict[str, dict] = {}
    scores: dict[str, dict[str, np.ndarray]] = {"msp": {}, "knn": {}}
    frames, preds = {}, {}
    for split in [s for s in ("dev", "eval") if s in feats]:
        x, rows = feats[split]
        if not len(rows):
            continue
        logits = logits_of(x)
        pred = logits.argmax(axis=1)
        known = rows["known"].to_numpy(bool)
        if known.any():
            known_metrics[split] = write_classification_outputs(
                out, split, rows["label"].to_numpy(int)[known], pred[known], names
            )
        scores["msp"][split] = msp.score(x, logits)
        scores["knn"][split] = knn.score(scaler.transform(x), logits)
        frames[split], preds[split] = rows[FRAME_COLUMNS], pred
    (out / "metrics.json").write_text(json.dumps(known_metrics, indent=2))
    summary = write_ood_report(out, scores, frames, preds, names, "msp")
    print("reference baseline (MFCC stats + logistic regression), known-class metrics:")
    print(pd.DataFrame(known_metrics).T.to_string(float_format=lambda v: f"{v:.3f}"))
    print("OOD:")
    print(summary_table(summary).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"written to {out}")
    return known_metrics, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_args(parser)
    parser.add_argument(
        "--jobs", type=int, default=None, help="parallel audio workers (default: features.num_workers)"
    )
    args = parser.parse_args(argv)
    run_reference(config_from_args(args), args.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
