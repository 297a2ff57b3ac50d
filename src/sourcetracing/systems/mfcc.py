"""The MFCC reference system: utterance statistics of MFCCs, standardised, plus a logistic regression.

Each clean clip is summarised by the mean and standard deviation over time of ``mfcc.n_mfcc``
MFCCs and their deltas (``4 * n_mfcc`` numbers), computed on the **whole clip** by default
(``mfcc.crop: false``; wrap-padding a short clip to 4 s repeats content and distorts the
statistics), or on the same 4 s crop the feature store uses (``crop: true``). A standardiser is
fitted on train; the exported *embeddings* are the standardised statistics and the *logits* the
log-probabilities of a multinomial logistic regression trained on train. Every applicable OOD
scorer (k-NN cosine, Mahalanobis, centroid, MSP, ...) then judges it like any other system, and
``ood.default: auto`` picks its best scorer on dev.

    python scripts/reference_baseline.py --config configs/demo.yaml
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.config import Config
from sourcetracing.data.protocols import prepare_splits, protocol_digest
from sourcetracing.errors import DataError
from sourcetracing.layout import ExperimentLayout
from sourcetracing.progress import progress
from sourcetracing.provenance import data_digest, step_lock
from sourcetracing.systems.export import output_rows, record_pass
from sourcetracing.systems.outputs import SplitOutputs, SystemOutputs
from sourcetracing.systems.utterance_features import clip_statistics

SYSTEM = "mfcc"


def mfcc_stats(wave: np.ndarray, sample_rate: int, n_mfcc: int = 20) -> np.ndarray:
    """Mean and std over time of MFCCs and their deltas: a ``4 * n_mfcc`` vector (float32)."""
    return clip_statistics(wave, sample_rate, ["mfcc"], n_mfcc=n_mfcc)[0]


def _clip_features(path: str, sample_rate: int, crop_samples: int | None, settings: dict):
    from sourcetracing.data.audio import crop_or_pad, load_audio

    try:
        wave = load_audio(path, sample_rate, min_len_s=float(settings["min_len_s"]))
        if crop_samples:
            wave = crop_or_pad(wave, crop_samples)
        groups = settings.get("groups", ["mfcc"])
        return clip_statistics(wave, sample_rate, groups, n_mfcc=int(settings["n_mfcc"]))[0], ""
    except Exception as err:  # noqa: BLE001 - unusable clips are reported and skipped
        return None, str(err)


def split_features(
    df: pd.DataFrame, root: str | Path, settings: dict, n_jobs: int = 1, cache: Path | None = None
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Statistics of the clips of one annotated split: ``(X, kept rows, skipped rows with reason)``.

    With ``cache`` (an ``.npz`` path) the result is saved and reused while the clip list and settings stay.
    """
    from joblib import Parallel, delayed

    df = df.reset_index(drop=True)
    key = data_digest([df["clip_id"].tolist(), settings])
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["key"]) == key:
                ok = data["ok"]
                return (
                    data["features"],
                    df[ok].reset_index(drop=True),
                    df[~ok].assign(reason=data["reasons"][~ok]),
                )
    sr = int(settings["sample_rate"])
    crop = int(round(settings["max_len_s"] * sr)) if settings["crop"] else None
    paths = [str(Path(root) / p) for p in df["path"]]
    jobs = (delayed(_clip_features)(p, sr, crop, settings) for p in paths)
    results = list(
        progress(
            Parallel(n_jobs=n_jobs, batch_size=16, return_as="generator")(jobs),
            total=len(paths), desc=f"statistics ({len(paths)} clips)", leave=False,
        )
    )  # fmt: skip
    ok = np.array([r[0] is not None for r in results], dtype=bool)
    reasons = np.array([r[1] for r in results], dtype=str)
    if ok.any():
        feats = np.stack([r[0] for r in results if r[0] is not None])
    else:  # nothing usable: an empty array of the right width
        dummy = np.full(sr, 1e-3, np.float32)
        feats = np.zeros(
            (
                0,
                len(clip_statistics(dummy, sr, settings.get("groups", ["mfcc"]), int(settings["n_mfcc"]))[1]),
            ),
            np.float32,
        )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=np.asarray(key), ok=ok, reasons=reasons, features=feats)
    return feats, df[ok].reset_index(drop=True), df[~ok].assign(reason=reasons[~ok])


def export_mfcc(cfg: Config, n_jobs: int | None = None) -> Path:
    """Compute, fit and export the MFCC reference system's outputs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    splits, label_map = prepare_splits(cfg)
    layout = ExperimentLayout.of(cfg)
    system = layout.system(SYSTEM)
    settings = {
        "n_mfcc": int(cfg.mfcc.n_mfcc), "crop": bool(cfg.mfcc.crop), "sample_rate": int(cfg.data.sample_rate),
        "max_len_s": float(cfg.data.max_len_s), "min_len_s": float(cfg.data.min_len_s),
    }  # fmt: skip
    jobs = int(n_jobs or cfg.mfcc.jobs or max(1, cfg.features.num_workers))
    cache_dir = system.root / "cache"
    with step_lock(layout.locks / f"export-{SYSTEM}.lock", "the outputs of mfcc"):
        feats: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}
        for split, df in splits.items():
            x, kept, bad = split_features(df, cfg.data.root, settings, jobs, cache=cache_dir / f"{split}.npz")
            record_pass(SYSTEM, split, len(df))
            if split == "train":
                keep = kept["label"].to_numpy() >= 0
                x, kept = x[keep], kept[keep].reset_index(drop=True)
            feats[split] = (x, kept)
            if len(bad):
                print(
                    f"{split}: {len(bad)} unusable clip(s) left out (first: {bad['path'].iloc[0]}: {bad['reason'].iloc[0]})"
                )
        x_train, train_rows = feats["train"]
        y_train = train_rows["label"].to_numpy(int)
        if len(np.unique(y_train)) < 2:
            raise DataError("the MFCC reference needs at least two known systems in train")
        scaler = StandardScaler().fit(x_train)
        clf = LogisticRegression(max_iter=3000).fit(scaler.transform(x_train), y_train)
        names = list(label_map.known)
        out = {}
        for split, (x, rows) in feats.items():
            z = scaler.transform(x) if len(x) else np.zeros((0, x_train.shape[1]))
            logits = np.full((len(z), len(names)), -30.0, dtype=np.float32)
            if len(z):
                logits[:, clf.classes_] = np.log(np.clip(clf.predict_proba(z), 1e-13, None))
            out[split] = SplitOutputs(output_rows(rows), embeddings=z.astype(np.float32), logits=logits)
        outputs = SystemOutputs(
            SYSTEM, names, out,
            meta={"task": "reference", "description": "MFCC statistics, standardised (embeddings) + logistic regression (logits)",
                  "settings": settings},
        )  # fmt: skip
        inputs = {"protocols": data_digest({s: protocol_digest(df) for s, df in splits.items()}),
                  "label_map": label_map.digest(), "settings": data_digest(settings)}  # fmt: skip
        outputs.write(system.outputs, inputs)
    print(f"mfcc outputs written to {system.outputs}")
    return system.outputs
