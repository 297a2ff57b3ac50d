"""Utterance-statistics systems: the MFCC reference (``mfcc``) and the statistics system (``stats``).

Both summarise each clip by utterance-level statistics (:mod:`sourcetracing.systems.utterance_features`)
computed on the **whole clip** by default (``crop: false``; wrap-padding a short clip to 4 s repeats
content and distorts the statistics), or on the same 4 s crop the feature store uses (``crop: true``),
fit a standardiser, an optional discriminant projection and a multinomial logistic regression on
train, and export the (projected) statistics as *embeddings* and the log-probabilities as *logits*;
every applicable OOD scorer then judges them like any other system.

- ``mfcc`` (the reference, ``mfcc`` config section): MFCC means and spread only, no projection, no
  augmentation: a strong but plain baseline (standardised statistics + k-NN cosine, Mahalanobis,
  ...), reported with the scorer chosen on dev.
- ``stats`` (``stats`` section): MFCC, prosody and long-term-spectrum statistics, a shrinkage LDA on
  the known systems, and (``augment``) the statistics of augmented copies of the train clips (the
  feature store's versions: reverb, noise, music, babble, codec) in the fit and in the reference
  bank, so that a degraded channel does not look like an unseen system.

The fitted standardiser, projection and regression are saved as plain arrays in
``<exp>/<system>/trained_models/reference.npz`` (:class:`ReferenceModel`) with the statistics'
settings and the class names; the outputs record its digest. The export itself goes through the
saved model, so applying it to new (or transformed) audio gives exactly the exported numbers.

    python scripts/reference_baseline.py --config configs/demo.yaml   # mfcc
    python scripts/stats_system.py --config configs/demo_hard.yaml   # stats
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
from sourcetracing.ood.scorers import LOG_PROBABILITIES
from sourcetracing.progress import progress
from sourcetracing.provenance import data_digest, file_digest, step_lock
from sourcetracing.systems.outputs import SplitOutputs, SystemOutputs, output_rows, record_pass
from sourcetracing.systems.utterance_features import clip_statistics, statistic_names

SYSTEM = "mfcc"
MODEL_FILE = "reference.npz"  # in <exp>/<system>/trained_models/
PROJECTIONS = ("none", "lda")


def model_path(cfg: Config, system: str = SYSTEM) -> Path:
    """Where the fitted model of a statistics system of this experiment is saved."""
    return ExperimentLayout.of(cfg).system(system).models / MODEL_FILE


def lda_projection(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A shrinkage LDA of standardised vectors ``z`` (scikit-learn, ``solver="eigen"``,
    ``shrinkage="auto"``) as ``(mean, matrix)``: the projection is ``(z - mean) @ matrix``, onto at
    most ``classes - 1`` discriminant directions."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    k = len(np.unique(y))
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto").fit(z, y)
    # the eigen solver's transform is z @ scalings_ (no centring); keep one form for every user
    mean = getattr(lda, "xbar_", np.zeros(z.shape[1]))
    return mean, lda.scalings_[:, : min(k - 1, z.shape[1])]


@dataclass
class ReferenceModel:
    """Standardiser, optional linear projection and multinomial logistic regression, as plain arrays.

    ``apply(x)`` gives ``(embeddings, logits)``: the standardised (then projected) statistics and
    the clipped log-probabilities (-30 for a class the regression never saw), through
    scikit-learn's own ``transform`` and ``predict_proba`` on objects rebuilt from the arrays.
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
    proj_mean: np.ndarray | None = None  # projection: (z - proj_mean) @ proj_matrix
    proj_matrix: np.ndarray | None = None

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, class_names: list[str], settings: dict) -> ReferenceModel:
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        projection = settings.get("projection", "none")
        if projection not in PROJECTIONS:
            raise DataError(f"projection must be one of {PROJECTIONS}, got {projection!r}")
        scaler = StandardScaler().fit(x)
        z = scaler.transform(x)
        proj_mean = proj_matrix = None
        if projection == "lda":
            proj_mean, proj_matrix = lda_projection(z, y)
            z = (z - proj_mean) @ proj_matrix
        clf = LogisticRegression(max_iter=3000).fit(z, y)
        return cls(
            scaler.mean_, scaler.scale_, scaler.var_, int(scaler.n_samples_seen_), clf.coef_, clf.intercept_,
            clf.classes_, list(class_names), dict(settings), proj_mean, proj_matrix,
        )  # fmt: skip

    def apply(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings float32 [n, E], log-probabilities float32 [n, K])``."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler()
        scaler.mean_, scaler.scale_, scaler.var_ = self.mean, self.scale, self.var
        scaler.n_samples_seen_, scaler.n_features_in_ = self.n_samples_seen, len(self.mean)
        clf = LogisticRegression()
        clf.coef_, clf.intercept_, clf.classes_ = self.coef, self.intercept, self.classes
        clf.n_features_in_ = self.coef.shape[1]
        z = scaler.transform(x) if len(x) else np.zeros((0, len(self.mean)))
        if self.proj_matrix is not None:
            z = (z - self.proj_mean) @ self.proj_matrix
        logits = np.full((len(z), len(self.class_names)), -30.0, dtype=np.float32)
        if len(z):
            logits[:, self.classes] = np.log(np.clip(clf.predict_proba(z), 1e-13, None))
        return z.astype(np.float32), logits

    def save(self, path: str | Path) -> Path:
        """Write the arrays, class names and settings to an ``.npz`` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
        projection = {}
        if self.proj_matrix is not None:
            projection = {"proj_mean": self.proj_mean, "proj_matrix": self.proj_matrix}
        np.savez(
            tmp, mean=self.mean, scale=self.scale, var=self.var, n_samples_seen=np.asarray(self.n_samples_seen),
            coef=self.coef, intercept=self.intercept, classes=self.classes,
            class_names=np.asarray(self.class_names, dtype=str), settings=np.asarray(json.dumps(self.settings)),
            **projection,
        )  # fmt: skip
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ReferenceModel:
        """Read a model saved by :meth:`save`; a clear error naming the step when it is missing."""
        path = Path(path)
        if not path.is_file():
            raise MissingInputError(f"{path} not found: run the statistics system's step first")
        with np.load(path, allow_pickle=False) as data:
            projection = (
                (data["proj_mean"], data["proj_matrix"]) if "proj_matrix" in data.files else (None, None)
            )
            return cls(
                data["mean"], data["scale"], data["var"], int(data["n_samples_seen"]), data["coef"],
                data["intercept"], data["classes"], [str(c) for c in data["class_names"]],
                json.loads(str(data["settings"])), *projection,
            )  # fmt: skip


def wave_statistics(wave: np.ndarray, sample_rate: int, settings: dict) -> np.ndarray:
    """The statistics vector a statistics system computes of one (already loaded) clip."""
    return clip_statistics(
        wave, sample_rate, settings.get("groups", ["mfcc"]), n_mfcc=int(settings["n_mfcc"])
    )[0]


def load_checked(cfg: Config, system: str, recorded_id: str | None) -> ReferenceModel:
    """A statistics system's saved model, checked to be the one its outputs record (``recorded_id``)."""
    from sourcetracing.provenance import file_digest, require_same

    path = model_path(cfg, system)
    model = ReferenceModel.load(path)
    require_same(recorded_id, file_digest(path), str(path), f"the step that exports '{system}'")
    return model


def mfcc_stats(wave: np.ndarray, sample_rate: int, n_mfcc: int = 20) -> np.ndarray:
    """Mean and std over time of MFCCs and their deltas: a ``4 * n_mfcc`` vector (float32)."""
    return clip_statistics(wave, sample_rate, ["mfcc"], n_mfcc=n_mfcc)[0]


@dataclass(frozen=True)
class TrainVersions:
    """The augmented copies whose statistics join the train clips' (the store's ``Augmenter``)."""

    augmenter: object  # sourcetracing.data.augment.Augmenter
    versions: tuple[str, ...]
    seed: int


def _clip_features(
    path: str,
    sample_rate: int,
    crop_samples: int | None,
    settings: dict,
    condition: StoreCondition | None = None,
    clip_id: str = "",
    train_versions: TrainVersions | None = None,
):
    """``(list of statistics vectors: the clip, then its augmented copies; "")`` or ``(None, reason)``."""
    from sourcetracing.data.audio import crop_or_pad, load_audio
    from sourcetracing.data.augment import version_rng

    try:
        wave = load_audio(path, sample_rate, min_len_s=float(settings["min_len_s"]))
        if condition is not None:
            wave = condition.apply(wave, sample_rate, clip_id)
        if crop_samples and settings["crop"] == "head":  # the first seconds, never padded
            wave = wave[:crop_samples]
        elif crop_samples:
            wave = crop_or_pad(wave, crop_samples)
        waves = [wave]
        if train_versions is not None:
            for v in train_versions.versions:
                rng = version_rng(train_versions.seed, clip_id, v)
                waves.append(train_versions.augmenter.apply(wave, v, rng)[0])
        return [wave_statistics(w, sample_rate, settings) for w in waves], ""
    except Exception as err:  # noqa: BLE001 - unusable clips are reported and skipped
        return None, str(err)


def split_features(
    df: pd.DataFrame,
    root: str | Path,
    settings: dict,
    n_jobs: int = 1,
    cache: Path | None = None,
    condition: StoreCondition | None = None,
    train_versions: TrainVersions | None = None,
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Statistics of the clips of one annotated split: ``(X, kept rows, skipped rows with reason)``.

    With ``cache`` (an ``.npz`` path) the result is saved and reused while the clip list and settings
    stay. With ``condition`` every clip passes through it (seeded per clip) before the statistics.
    With ``train_versions`` each clip also gives the statistics of its augmented copies (seeded per
    clip and version): the kept rows then repeat per version, with a ``version`` column.
    """
    from joblib import Parallel, delayed

    df = df.reset_index(drop=True)
    versions = ("original", *(train_versions.versions if train_versions else ()))
    key = data_digest(
        [df["clip_id"].tolist(), settings, list(versions), train_versions.seed if train_versions else None]
        + ([condition.settings()] if condition else [])
    )
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["key"]) == key:
                ok = data["ok"]
                return (
                    data["features"],
                    _expand(df[ok], versions),
                    df[~ok].assign(reason=data["reasons"][~ok]),
                )
    sr = int(settings["sample_rate"])
    crop = int(round(settings["max_len_s"] * sr)) if settings["crop"] else None
    paths = [str(Path(root) / p) for p in df["path"]]
    jobs = (
        delayed(_clip_features)(p, sr, crop, settings, condition, c, train_versions)
        for p, c in zip(paths, df["clip_id"], strict=True)
    )
    results = list(
        progress(
            Parallel(n_jobs=n_jobs, batch_size=16, return_as="generator")(jobs),
            total=len(paths), desc=f"statistics ({len(paths)} clips x {len(versions)})", leave=False,
        )
    )  # fmt: skip
    ok = np.array([r[0] is not None for r in results], dtype=bool)
    reasons = np.array([r[1] for r in results], dtype=str)
    if ok.any():
        feats = np.stack([v for r in results if r[0] is not None for v in r[0]])
    else:  # nothing usable: an empty array of the right width
        width = len(statistic_names(sr, settings.get("groups", ["mfcc"]), int(settings["n_mfcc"])))
        feats = np.zeros((0, width), np.float32)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=np.asarray(key), ok=ok, reasons=reasons, features=feats)
    return feats, _expand(df[ok], versions), df[~ok].assign(reason=reasons[~ok])


def _expand(rows: pd.DataFrame, versions: tuple[str, ...]) -> pd.DataFrame:
    """Each row repeated per version, in the order the statistics were stacked (clip-major)."""
    rows = rows.reset_index(drop=True)
    if len(versions) == 1:
        return rows
    out = rows.loc[rows.index.repeat(len(versions))].reset_index(drop=True)
    out["version"] = list(versions) * len(rows)
    return out


def mfcc_settings(cfg: Config) -> dict:
    """What the MFCC reference's statistics depend on (besides the clips)."""
    return {
        "groups": ["mfcc"], "n_mfcc": int(cfg.mfcc.n_mfcc), "crop": bool(cfg.mfcc.crop),
        "sample_rate": int(cfg.data.sample_rate), "max_len_s": float(cfg.data.max_len_s),
        "min_len_s": float(cfg.data.min_len_s), "projection": "none",
    }  # fmt: skip


def mfcc_jobs(cfg: Config, n_jobs: int | None = None) -> int:
    """Parallel audio workers: ``n_jobs``, else ``mfcc.jobs``, else ``features.num_workers`` (at least 1)."""
    return int(n_jobs or cfg.mfcc.jobs or max(1, cfg.features.num_workers))


SplitStatistics = dict[str, tuple[np.ndarray, pd.DataFrame, pd.DataFrame]]  # split -> (X, kept, skipped)


def train_versions_of(cfg: Config, augment: tuple[str, ...]) -> TrainVersions | None:
    """The augmented train copies a statistics system fits on (None without ``augment``)."""
    from sourcetracing.data.augment import Augmenter

    if not augment:
        return None
    augmenter = Augmenter.from_config(cfg)
    for version in augment:  # a missing MUSAN / RIRS folder is one clear error, not every clip skipped
        if version in ("reverb", "noise", "music", "speech"):
            augmenter.files(version)
    return TrainVersions(augmenter, tuple(augment), int(cfg.seed))


def compute_statistics(
    cfg: Config,
    settings: dict,
    n_jobs: int,
    augment: tuple[str, ...],
    cache_dir: Path,
    splits: dict[str, pd.DataFrame] | None = None,
) -> SplitStatistics:
    """The statistics of every split's clips (train with its augmented copies), cached in ``cache_dir``;
    ``splits``: the annotated splits when the caller has them (else read from the protocols)."""
    if splits is None:
        splits, _ = prepare_splits(cfg)
    train_versions = train_versions_of(cfg, augment)
    out: SplitStatistics = {}
    for split, df in splits.items():
        extra = train_versions if split == "train" else None
        cache = cache_dir / f"{split}.npz"
        out[split] = split_features(df, cfg.data.root, settings, n_jobs, cache, train_versions=extra)
    return out


def group_columns(sample_rate: int, groups: list[str], wanted: list[str], n_mfcc: int) -> np.ndarray:
    """Column indices of the ``wanted`` groups' statistics in a matrix of the ``groups``' statistics.

    >>> group_columns(16000, ["mfcc", "duration"], ["duration"], n_mfcc=20).tolist()
    [80, 81]
    """
    widths = {g: len(statistic_names(sample_rate, [g], n_mfcc)) for g in dict.fromkeys(groups)}
    start = dict(zip(widths, np.cumsum([0, *widths.values()])[:-1].tolist(), strict=True))
    missing = [g for g in wanted if g not in widths]
    if missing:
        raise ValueError(f"groups {missing} are not among the computed ones {list(widths)}")
    return np.concatenate([np.arange(start[g], start[g] + widths[g]) for g in wanted])


def export_statistics(
    cfg: Config,
    system_name: str,
    settings: dict,
    n_jobs: int,
    augment: tuple[str, ...] = (),
    description: str = "",
    computed: SplitStatistics | None = None,
    extra_meta: dict | None = None,
) -> Path:
    """Compute the statistics (or take them ``computed``, e.g. shared by several systems), fit, save
    and apply the model, and export a statistics system's outputs."""
    splits, label_map = prepare_splits(cfg)
    layout = ExperimentLayout.of(cfg)
    system = layout.system(system_name)
    with step_lock(layout.locks / f"export-{system_name}.lock", f"the outputs of {system_name}"):
        if computed is None:
            computed = compute_statistics(cfg, settings, n_jobs, augment, system.root / "cache", splits)
        feats: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}
        for split, df in splits.items():
            x, kept, bad = computed[split]
            record_pass(system_name, split, len(df))
            if split == "train":
                keep = kept["label"].to_numpy() >= 0
                x, kept = x[keep], kept[keep].reset_index(drop=True)
            feats[split] = (x, kept)
            if len(bad):
                first = f"{bad['path'].iloc[0]}: {bad['reason'].iloc[0]}"
                print(f"{split}: {len(bad)} unusable clip(s) left out (first: {first})")
        x_train, train_rows = feats["train"]
        y_train = train_rows["label"].to_numpy(int)
        if len(np.unique(y_train)) < 2:
            raise DataError(f"the {system_name} system needs at least two known systems in train")
        names = list(label_map.known)
        fitted = {**settings, "augment": list(augment)}
        crossfit = (
            statistics_crossfit(cfg, x_train, train_rows, names, fitted) if crossfit_wanted(cfg) else None
        )
        path = ReferenceModel.fit(x_train, y_train, names, fitted).save(system.models / MODEL_FILE)
        model = ReferenceModel.load(path)  # the export runs the saved model, as any later use will
        out = {}
        for split, (x, rows) in feats.items():
            z, logits = model.apply(x)
            out[split] = SplitOutputs(output_rows(rows), embeddings=z, logits=logits)
        meta = {
            "task": "reference",
            "description": description,
            "settings": fitted,
            "logits": LOG_PROBABILITIES,
            **(extra_meta or {}),
        }
        outputs = SystemOutputs(system_name, names, out, meta=meta, crossfit=crossfit)
        inputs = {
            "protocols": data_digest({s: protocol_digest(df) for s, df in splits.items()}),
            "label_map": label_map.digest(), "settings": data_digest(fitted), "model": file_digest(path),
        }  # fmt: skip
        outputs.write(system.outputs, inputs)
    print(f"{system_name} outputs written to {system.outputs}")
    return system.outputs


def crossfit_wanted(cfg: Config) -> bool:
    """Whether the OOD step will use train-side cross-fitted evidence (``ood.tune: crossfit`` or
    ``ood.select: unseen_auroc``), so the statistics export computes it."""
    return str(cfg.ood.tune) == "crossfit" or str(cfg.ood.select) == "unseen_auroc"


def statistics_crossfit(
    cfg: Config, x: np.ndarray, rows: pd.DataFrame, class_names: list[str], settings: dict
) -> pd.DataFrame:
    """Every applicable OOD scorer's candidate settings judged on known systems held out of a refit
    of this statistics system in turn (:mod:`sourcetracing.ood.crossfit`)."""
    from sourcetracing.ood.crossfit import crossfit_scorers, crossfit_table

    def fit_apply(x_fit: np.ndarray, y_fit: np.ndarray, rows_fit: pd.DataFrame):
        fold_names = [str(i) for i in range(int(y_fit.max()) + 1)]
        return ReferenceModel.fit(x_fit, y_fit, fold_names, settings).apply

    scorers = crossfit_scorers(cfg.ood, LOG_PROBABILITIES)
    return crossfit_table(fit_apply, x, rows, scorers, class_names, seed=int(cfg.seed))


def export_mfcc(cfg: Config, n_jobs: int | None = None) -> Path:
    """The MFCC reference system: MFCC statistics, standardised, no projection, no augmentation."""
    description = "MFCC statistics, standardised (embeddings) + logistic regression (logits)"
    return export_statistics(cfg, SYSTEM, mfcc_settings(cfg), mfcc_jobs(cfg, n_jobs), (), description)
