"""The MFCC reference system: utterance statistics of MFCCs, standardised, plus a logistic regression.

Each clean clip is summarised by the mean and standard deviation over time of ``mfcc.n_mfcc``
MFCCs and their deltas (``4 * n_mfcc`` numbers), computed on the **whole clip** by default
(``mfcc.crop: false``; wrap-padding a short clip to 4 s repeats content and distorts the
statistics), or on the same 4 s crop the feature store uses (``crop: true``). A standardiser is
fitted on train; the exported *embeddings* are the standardised statistics and the *logits* the
log-probabilities of a multinomial logistic regression trained on train. Every applicable OOD
scorer (k-NN cosine, Mahalanobis, centroid, MSP, ...) then judges it like any other system, and
``ood.default: auto`` picks its best scorer on dev.

The fitted standardiser and logistic regression are saved as plain arrays in
``<exp>/mfcc/trained_models/reference.npz`` (:class:`ReferenceModel`), with the statistics'
settings and the class names; the outputs record its digest. The export itself goes through the
saved model, so applying it to new (or transformed) audio gives exactly the exported numbers.

    python scripts/reference_baseline.py --config configs/demo.yaml
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.config import Config
from sourcetracing.data.protocols import prepare_splits, protocol_digest
from sourcetracing.errors import DataError, MissingInputError
from sourcetracing.features.store import StoreCondition
from sourcetracing.layout import ExperimentLayout
from sourcetracing.progress import progress
from sourcetracing.provenance import data_digest, file_digest, step_lock
from sourcetracing.systems.export import output_rows, record_pass
from sourcetracing.systems.outputs import SplitOutputs, SystemOutputs

SYSTEM = "mfcc"
MODEL_FILE = "reference.npz"  # in <exp>/mfcc/trained_models/


def model_path(cfg: Config) -> Path:
    """Where the fitted reference model of this experiment is saved."""
    return ExperimentLayout.of(cfg).system(SYSTEM).models / MODEL_FILE


@dataclass
class ReferenceModel:
    """The fitted standardiser and multinomial logistic regression, as plain arrays.

    ``apply(x)`` gives ``(embeddings, logits)``: the standardised statistics and the clipped
    log-probabilities (-30 for a class the regression never saw), through scikit-learn's own
    ``transform`` and ``predict_proba`` on objects rebuilt from the arrays.
    """

    mean: np.ndarray
    scale: np.ndarray
    var: np.ndarray
    n_samples_seen: int
    coef: np.ndarray
    intercept: np.ndarray
    classes: np.ndarray
    class_names: list[str]
    settings: dict

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, class_names: list[str], settings: dict) -> ReferenceModel:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(max_iter=3000).fit(scaler.transform(x), y)
        return cls(
            scaler.mean_, scaler.scale_, scaler.var_, int(scaler.n_samples_seen_), clf.coef_, clf.intercept_,
            clf.classes_, list(class_names), dict(settings),
        )  # fmt: skip

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(standardised statistics float32 [n, D], log-probabilities float32 [n, K])``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler()
        scaler.mean_, scaler.scale_, scaler.var_ = self.mean, self.scale, self.var
        scaler.n_samples_seen_, scaler.n_features_in_ = self.n_samples_seen, len(self.mean)
        clf = LogisticRegression()
        clf.coef_, clf.intercept_, clf.classes_ = self.coef, self.intercept, self.classes
        clf.n_features_in_ = self.coef.shape[1]
        z = scaler.transform(x) if len(x) else np.zeros((0, len(self.mean)))
        logits = np.full((len(z), len(self.class_names)), -30.0, dtype=np.float32)
        if len(z):
            logits[:, self.classes] = np.log(np.clip(clf.predict_proba(z), 1e-13, None))
        return z.astype(np.float32), logits

    def save(self, path: str | Path) -> Path:
        """Write the arrays, class names and settings to an ``.npz`` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
        np.savez(
            tmp, mean=self.mean, scale=self.scale, var=self.var, n_samples_seen=np.asarray(self.n_samples_seen),
            coef=self.coef, intercept=self.intercept, classes=self.classes,
            class_names=np.asarray(self.class_names, dtype=str), settings=np.asarray(json.dumps(self.settings)),
        )  # fmt: skip
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferenceModel:
        """Read a model saved by :meth:`save`; a clear error naming the step when it is missing."""
        path = Path(path)
        if not path.is_file():
            raise MissingInputError(
                f"{path} not found: run python scripts/reference_baseline.py --config <your config> first"
            )
        with np.load(path, allow_pickle=False) as data:
            return cls(
                data["mean"], data["scale"], data["var"], int(data["n_samples_seen"]), data["coef"],
                data["intercept"], data["classes"], [str(c) for c in data["class_names"]],
                json.loads(str(data["settings"])),
            )  # fmt: skip


def mfcc_stats(wave: np.ndarray, sample_rate: int, n_mfcc: int = 20) -> np.ndarray:
    """Mean and std over time of MFCCs and their deltas: a ``4 * n_mfcc`` vector (float32)."""
    import librosa

    n_fft = (
        2048 if len(wave) >= 2048 else 2 ** max(6, int(np.log2(max(len(wave), 2))))
    )  # short clips: a shorter window
    mfcc = librosa.feature.mfcc(
        y=wave, sr=sample_rate, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=min(512, n_fft // 4)
    )
    delta = librosa.feature.delta(mfcc, mode="nearest")
    both = np.concatenate([mfcc, delta], axis=0)
    return np.concatenate([both.mean(axis=1), both.std(axis=1)]).astype(np.float32)


def _clip_features(
    path: str,
    sample_rate: int,
    crop_samples: int | None,
    n_mfcc: int,
    min_len_s: float,
    condition: StoreCondition | None = None,
    clip_id: str = "",
):
    from sourcetracing.data.audio import crop_or_pad, load_audio

    try:
        wave = load_audio(path, sample_rate, min_len_s=min_len_s)
        if condition is not None:
            wave = condition.apply(wave, sample_rate, clip_id)
        if crop_samples:
            wave = crop_or_pad(wave, crop_samples)
        return mfcc_stats(wave, sample_rate, n_mfcc), ""
    except Exception as err:  # noqa: BLE001 - unusable clips are reported and skipped
        return None, str(err)


def split_features(
    df: pd.DataFrame,
    root: str | Path,
    settings: dict,
    n_jobs: int = 1,
    cache: Path | None = None,
    condition: StoreCondition | None = None,
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Statistics of the clips of one annotated split: ``(X, kept rows, skipped rows with reason)``.

    With ``cache`` (an ``.npz`` path) the result is saved and reused while the clip list and settings
    stay. With ``condition`` every clip passes through it (seeded per clip) before the statistics.
    """
    from joblib import Parallel, delayed

    df = df.reset_index(drop=True)
    key = data_digest([df["clip_id"].tolist(), settings] + ([condition.settings()] if condition else []))
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
    jobs = (
        delayed(_clip_features)(
            p, sr, crop, int(settings["n_mfcc"]), float(settings["min_len_s"]), condition, c
        )
        for p, c in zip(paths, df["clip_id"], strict=True)
    )
    results = list(
        progress(
            Parallel(n_jobs=n_jobs, batch_size=16, return_as="generator")(jobs),
            total=len(paths), desc=f"mfcc ({len(paths)} clips)", leave=False,
        )
    )  # fmt: skip
    ok = np.array([r[0] is not None for r in results], dtype=bool)
    reasons = np.array([r[1] for r in results], dtype=str)
    dim = 4 * int(settings["n_mfcc"])
    feats = (
        np.stack([r[0] for r in results if r[0] is not None]) if ok.any() else np.zeros((0, dim), np.float32)
    )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=np.asarray(key), ok=ok, reasons=reasons, features=feats)
    return feats, df[ok].reset_index(drop=True), df[~ok].assign(reason=reasons[~ok])


def mfcc_settings(cfg: Config) -> dict:
    """What the statistics depend on (besides the clips)."""
    return {
        "n_mfcc": int(cfg.mfcc.n_mfcc), "crop": bool(cfg.mfcc.crop), "sample_rate": int(cfg.data.sample_rate),
        "max_len_s": float(cfg.data.max_len_s), "min_len_s": float(cfg.data.min_len_s),
    }  # fmt: skip


def mfcc_jobs(cfg: Config, n_jobs: int | None = None) -> int:
    """Parallel audio workers: ``n_jobs``, else ``mfcc.jobs``, else ``features.num_workers`` (at least 1)."""
    return int(n_jobs or cfg.mfcc.jobs or max(1, cfg.features.num_workers))


def export_mfcc(cfg: Config, n_jobs: int | None = None) -> Path:
    """Compute, fit, save and export the MFCC reference system's outputs."""
    splits, label_map = prepare_splits(cfg)
    layout = ExperimentLayout.of(cfg)
    system = layout.system(SYSTEM)
    settings = mfcc_settings(cfg)
    jobs = mfcc_jobs(cfg, n_jobs)
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
        names = list(label_map.known)
        path = ReferenceModel.fit(x_train, y_train, names, settings).save(system.models / MODEL_FILE)
        model = ReferenceModel.load(path)  # the export runs the saved model, as any later use will
        out = {}
        for split, (x, rows) in feats.items():
            z, logits = model.apply(x)
            out[split] = SplitOutputs(output_rows(rows), embeddings=z, logits=logits)
        outputs = SystemOutputs(
            SYSTEM, names, out,
            meta={"task": "reference", "description": "MFCC statistics, standardised (embeddings) + logistic regression (logits)",
                  "settings": settings},
        )  # fmt: skip
        inputs = {"protocols": data_digest({s: protocol_digest(df) for s, df in splits.items()}),
                  "label_map": label_map.digest(), "settings": data_digest(settings), "model": file_digest(path)}  # fmt: skip
        outputs.write(system.outputs, inputs)
    print(f"mfcc outputs written to {system.outputs}")
    return system.outputs
