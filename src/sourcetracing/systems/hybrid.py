"""The hybrid system (``hybrid``): learned frame features and utterance statistics in one network.

Per clip it takes the feature store's frame features (the front end's output: wav2vec2 layer 5 on
MLAAD, LFCC in the offline demos) pooled over time (mean and standard deviation) and the clip's
whole-clip utterance statistics (``hybrid.features`` groups), both standardised on train, and
trains :class:`~sourcetracing.models.hybrid.GatedHybrid` on the train clips and their augmented
copies (the store's versions that the statistics pass also made: reverb, noise, music, babble,
codec), with ``hybrid.loss`` (``ce`` or ``proxy_anchor``) and, with ``hybrid.outliers``, outlier
exposure on copies of the train clips synthesised to sound like *other* synthesizers — pitch
shifted (``pitch_up``, ``pitch_down``: ±3 semitones) or time-stretched (``faster`` ×1.25,
``slower`` ×0.8) — and on the user's own outlier clips (``hybrid.outlier_clips``: a CSV
``path,model_name``, e.g. an auxiliary corpus, refused when one of its systems is in any split);
never clips of dev's or eval's unseen systems. Nothing is chosen on dev: the
model of the last epoch is kept. With ``hybrid.anchor: lda`` the statistics' shrinkage LDA stays
fixed in the embedding beside the learned part (:mod:`sourcetracing.models.hybrid`). When the OOD
step uses train-side cross-fitted evidence (``ood.tune: crossfit`` or ``ood.select:
unseen_auroc``), the network is retrained once per known system held out and every scorer setting
judged on that system's clips (``outputs/crossfit.csv``).

It exports, like every system, embeddings (the L2-normalised embedding) and logits (``scale *
cosine`` to each class proxy) for train (every version), dev and eval; every OOD scorer then
judges it. The fitted standardisers and weights are saved in ``<exp>/hybrid/trained_models/``.

    python scripts/stats_system.py --config configs/demo_hard.yaml hybrid.enabled=true
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sourcetracing.config import Config
from sourcetracing.data.protocols import prepare_splits, protocol_digest
from sourcetracing.errors import ConfigError, DataError
from sourcetracing.features.store import FeatureStore
from sourcetracing.layout import ExperimentLayout
from sourcetracing.models.hybrid import GatedHybrid, hybrid_loss
from sourcetracing.progress import progress
from sourcetracing.provenance import data_digest, file_digest, step_lock
from sourcetracing.systems.mfcc import compute_statistics, crossfit_wanted, lda_projection
from sourcetracing.systems.outputs import SplitOutputs, SystemOutputs, output_rows, record_pass
from sourcetracing.systems.stats import stats_settings

SYSTEM = "hybrid"  # the default name (``hybrid.name``)
MODEL_FILE = "hybrid.pt"
LOGITS = "scaled_cosine"  # the kind of its exported logits (scale * cosine to each class proxy)
OUTLIERS = {
    "pitch_up": ("pitch", 3.0),
    "pitch_down": ("pitch", -3.0),
    "faster": ("tempo", 1.25),
    "slower": ("tempo", 0.8),
}


def synthesise_outlier(wave: np.ndarray, sample_rate: int, kind: str) -> np.ndarray:
    """A copy of a train clip that sounds like another synthesizer (``OUTLIERS``)."""
    import librosa

    what, amount = OUTLIERS[kind]
    if what == "pitch":
        return librosa.effects.pitch_shift(wave, sr=sample_rate, n_steps=amount).astype(np.float32)
    return librosa.effects.time_stretch(wave, rate=amount).astype(np.float32)


def pooled_frames(store: FeatureStore, rows: pd.DataFrame, chunk: int = 512) -> np.ndarray:
    """Mean and standard deviation over time of the stored frame features of ``rows`` ``[n, 2 D]``."""
    out = []
    for start in range(0, len(rows), chunk):
        x = store.load(rows.iloc[start : start + chunk]).astype(np.float32)
        out.append(np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2 * store.frame_shape[1]), np.float32)


def _settings(cfg: Config) -> dict:
    return {**stats_settings(cfg), "groups": list(cfg.hybrid.features), "projection": "none"}


def system_name(cfg: Config) -> str:
    """The hybrid system's name in this experiment (``hybrid.name``, so several can be compared)."""
    return str(cfg.hybrid.name)


def assemble(cfg: Config, n_jobs: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray, pd.DataFrame]]:
    """Per split ``(pooled frame features, statistics, rows)`` of the clips both the store and the
    statistics pass have (train: every version both made; dev/eval: the original clips)."""
    splits, _ = prepare_splits(cfg)
    layout = ExperimentLayout.of(cfg)
    stats = compute_statistics(
        cfg,
        _settings(cfg),
        n_jobs,
        tuple(cfg.stats.augment),
        layout.root / "hybrid_shared" / "statistics",
        splits,
    )  # shared by every hybrid system of the experiment (cached while the clips and settings stay)
    store = FeatureStore.for_config(cfg)
    out = {}
    for split in splits:
        x, kept, _ = stats[split]
        kept = kept.reset_index(drop=True)
        if "version" not in kept:
            kept = kept.assign(version="original")
        index = store.index[store.index["split"] == split].set_index(["clip_id", "version"])
        keys = pd.MultiIndex.from_arrays([kept["clip_id"], kept["version"]])
        present = keys.isin(index.index)
        if split == "train":
            present &= kept["label"].to_numpy() >= 0
        if not present.any():
            raise DataError(f"hybrid: no {split} clip is in both the feature store and the statistics pass")
        rows = kept[present].reset_index(drop=True)
        frames = pooled_frames(store, index.loc[keys[present]].reset_index())
        out[split] = (frames, x[present], rows)
    return out


def user_outlier_paths(cfg: Config) -> list[str]:
    """Audio paths of the user's outlier clips (``hybrid.outlier_clips``: a CSV ``path,model_name``
    relative to ``data.root``); refused when one of their systems is in any protocol split."""
    from sourcetracing.data.protocols import read_protocol

    if not cfg.hybrid.outlier_clips:
        return []
    table = read_protocol(cfg.hybrid.outlier_clips)
    splits, _ = prepare_splits(cfg)
    for split, df in splits.items():
        clash = sorted(set(table["model_name"]) & set(df["model_name"]))
        if clash:
            raise DataError(
                f"hybrid.outlier_clips: {clash[0]} is a system of the {split} split; outliers must come "
                "from systems outside train, dev and eval (else they teach the model the answers)"
            )
    return [str(Path(cfg.data.root) / p) for p in table["path"]]


def outlier_features(cfg: Config, rows: pd.DataFrame, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pooled frame features and statistics of the outliers: the synthesised copies of the train
    originals (``hybrid.outliers``) and the user's outlier clips as they are (``hybrid.outlier_clips``)."""
    from joblib import Parallel, delayed

    from sourcetracing.data.audio import crop_or_pad, load_audio
    from sourcetracing.features.frontends import build_frontend
    from sourcetracing.systems.utterance_features import clip_statistics

    kinds = list(cfg.hybrid.outliers)
    sr = int(cfg.data.sample_rate)
    settings = _settings(cfg)
    originals = rows[rows["version"] == "original"]
    jobs = [(str(Path(cfg.data.root) / p), kinds) for p in originals["path"]] if kinds else []
    jobs += [(p, ["as_is"]) for p in user_outlier_paths(cfg)]
    key = data_digest([jobs, settings, dict(cfg.frontend), float(cfg.data.max_len_s)])
    cache = ExperimentLayout.of(cfg).root / "hybrid_shared" / f"outliers-{key[:16]}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as saved:
            return saved["frames"], saved["stats"]

    def one(path: str, todo: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        wave = load_audio(path, sr)
        made = []
        for kind in todo:
            w = wave if kind == "as_is" else synthesise_outlier(wave, sr, kind)
            s = clip_statistics(w, sr, settings["groups"], n_mfcc=int(settings["n_mfcc"]))[0]
            made.append((s, crop_or_pad(w, int(round(float(cfg.data.max_len_s) * sr)))))
        return made

    made = [
        m
        for clip in progress(
            Parallel(n_jobs=n_jobs, batch_size=8, return_as="generator")(delayed(one)(p, k) for p, k in jobs),
            total=len(jobs),
            desc=f"outliers ({len(jobs)} clips)",
            leave=False,
        )  # fmt: skip
        for m in clip
    ]
    frontend = build_frontend(cfg.frontend, "cpu", sr)
    frames = []
    with torch.inference_mode():
        for start in range(0, len(made), 32):
            waves = torch.from_numpy(np.stack([w for _, w in made[start : start + 32]]))
            x = frontend(waves).float().numpy()
            frames.append(np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1))
    result = np.concatenate(frames), np.stack([s for s, _ in made]).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, frames=result[0], stats=result[1])
    return result


def outlier_sources(cfg: Config, rows: pd.DataFrame) -> np.ndarray:
    """The train clip each row of :func:`outlier_features` was synthesised from (``""``: a user's
    outlier clip), so that a refit without some clips leaves their copies out too."""
    kinds = list(cfg.hybrid.outliers)
    originals = rows.loc[rows["version"] == "original", "clip_id"].astype(str).to_numpy() if kinds else []
    return np.concatenate([np.repeat(originals, len(kinds)), np.full(len(user_outlier_paths(cfg)), "")])


def hybrid_crossfit(
    cfg: Config,
    frames: np.ndarray,
    stats: np.ndarray,
    rows: pd.DataFrame,
    class_names: list[str],
    outliers: tuple[np.ndarray, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Every applicable OOD scorer's candidate settings judged on known systems held out of a retrained
    network in turn (:mod:`sourcetracing.ood.crossfit`); each fold trains on the outliers made from
    its own fitted clips (and the user's outlier clips) only."""
    from sourcetracing.ood.crossfit import crossfit_scorers, crossfit_table

    n_frames = frames.shape[1]
    sources = outlier_sources(cfg, rows) if outliers is not None else None

    def fit_apply(x_fit: np.ndarray, y_fit: np.ndarray, rows_fit: pd.DataFrame):
        fold_outliers = None
        if outliers is not None:
            keep = np.isin(sources, rows_fit["clip_id"].astype(str).to_numpy()) | (sources == "")
            fold_outliers = outliers[0][keep], outliers[1][keep]
        classes = int(y_fit.max()) + 1
        fold_cfg = cfg
        if int(cfg.hybrid.held_out_classes) > classes - 2:  # a fold has one known system fewer
            fold_cfg = cfg.clone()
            fold_cfg.hybrid.held_out_classes = max(0, classes - 2)
        model, sf, ss, _ = train_hybrid(
            fold_cfg, x_fit[:, :n_frames], x_fit[:, n_frames:], y_fit, classes, fold_outliers
        )

        def apply(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            with torch.inference_mode():
                emb, scores = model(sf(z[:, :n_frames]), ss(z[:, n_frames:]))
            return emb.numpy(), scores.numpy()

        return apply

    x = np.concatenate([frames, stats], axis=1)
    scorers = crossfit_scorers(cfg.ood, LOGITS)
    return crossfit_table(fit_apply, x, rows, scorers, class_names, seed=int(cfg.seed))


class _Standardiser:
    def __init__(self, x: np.ndarray):
        self.mean = x.mean(axis=0)
        self.std = np.where(x.std(axis=0) > 1e-8, x.std(axis=0), 1.0)

    @classmethod
    def of(cls, mean: np.ndarray, std: np.ndarray) -> _Standardiser:
        out = cls.__new__(cls)
        out.mean, out.std = np.asarray(mean), np.asarray(std)
        return out

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - self.mean) / self.std).astype(np.float32))


def build_model(h, frame_dim: int, stats_dim: int, num_classes: int, anchor_dim: int = 0) -> GatedHybrid:
    """The network of the ``hybrid`` settings ``h`` (a config section or a saved copy of it)."""
    return GatedHybrid(
        frame_dim, stats_dim, num_classes, int(h["hidden"]), int(h["embedding_dim"]), str(h["fusion"]),
        str(h["inputs"]), float(h["dropout"]), float(h["scale"]), anchor_dim, float(h.get("anchor_weight", 0.5)),
    )  # fmt: skip


def train_hybrid(
    cfg: Config,
    frames: np.ndarray,
    stats: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    outliers: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[GatedHybrid, _Standardiser, _Standardiser, list[float]]:
    """Train the network on the (standardised) train vectors; returns it, the standardisers and the
    per-epoch training loss."""
    h = cfg.hybrid
    torch.manual_seed(int(cfg.seed))
    rng = np.random.default_rng(int(cfg.seed))
    sf, ss = _Standardiser(frames), _Standardiser(stats)
    xf, xs, y = sf(frames), ss(stats), torch.from_numpy(labels.astype(np.int64))
    of = os_ = None
    if outliers is not None and len(outliers[0]):
        of, os_ = sf(outliers[0]), ss(outliers[1])
    anchor = None
    if str(h.anchor) == "lda":  # the statistics system's shrinkage LDA, fitted once and kept fixed
        mean, matrix = lda_projection(xs.numpy().astype(np.float64), labels)
        anchor = torch.from_numpy(mean.astype(np.float32)), torch.from_numpy(matrix.astype(np.float32))
    model = build_model(
        h, frames.shape[1], stats.shape[1], num_classes, 0 if anchor is None else anchor[1].shape[1]
    )
    if anchor is not None:
        model.set_anchor(*anchor)
    opt = torch.optim.AdamW(model.parameters(), lr=float(h.lr), weight_decay=float(h.weight_decay))
    batch = int(h.batch_size)
    n_held = int(h.held_out_classes)
    if n_held and num_classes - n_held < 2:
        raise ConfigError(
            f"hybrid.held_out_classes={n_held} leaves fewer than 2 of the {num_classes} known systems per step"
        )
    history = []
    for _ in progress(range(int(h.epochs)), desc="hybrid epochs", leave=False):
        model.train()
        order = rng.permutation(len(y))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = torch.from_numpy(order[start : start + batch])
            _, scores = model(xf[idx], xs[idx])
            out_scores = None
            if of is not None:
                pick = torch.from_numpy(rng.integers(0, len(of), size=max(1, len(idx) // 2)))
                out_scores = model(of[pick], os_[pick])[1]
            held = None
            if n_held:
                held = torch.zeros(num_classes, dtype=torch.bool)
                held[torch.from_numpy(rng.choice(num_classes, n_held, replace=False))] = True
            loss = hybrid_loss(
                model, scores, y[idx], str(h.loss), out_scores, str(h.outlier_loss), float(h.outlier_weight),
                held_out=held,
            )  # fmt: skip
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / len(y))
    model.eval()
    return model, sf, ss, history


@dataclass
class SavedHybrid:
    """A saved hybrid network with its standardisers, its statistics settings and class names."""

    model: GatedHybrid
    frames: _Standardiser
    stats: _Standardiser
    hybrid: dict  # the hybrid section it was trained with
    settings: dict  # the statistics settings of its statistics branch (and anchor)
    class_names: list[str]

    @classmethod
    def load(cls, path: str | Path) -> SavedHybrid:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        state = saved["state_dict"]
        anchor_dim = int(state["anchor_matrix"].shape[1]) if "anchor_matrix" in state else 0
        frames, stats = (
            _Standardiser.of(saved["frames_mean"], saved["frames_std"]),
            _Standardiser.of(saved["stats_mean"], saved["stats_std"]),
        )
        model = build_model(
            saved["settings"], len(frames.mean), len(stats.mean), len(saved["class_names"]), anchor_dim
        )
        model.load_state_dict(state)
        model.eval()
        return cls(model, frames, stats, dict(saved["settings"]), dict(saved.get("statistics") or {}),
                   list(saved["class_names"]))  # fmt: skip

    @property
    def runs_on_statistics_alone(self) -> bool:
        """Whether it needs nothing but the clip's statistics (``inputs: stats``), so it runs on audio."""
        return self.hybrid.get("inputs") == "stats" and bool(self.settings)

    @torch.inference_mode()
    def apply(self, stats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(embeddings, logits)`` of clips' statistics (a statistics-only network)."""
        if not self.runs_on_statistics_alone:
            raise DataError(
                "this hybrid network takes frame features too: it runs on its exported outputs only"
            )
        x = self.stats(stats.astype(np.float32))
        emb, scores = self.model(torch.zeros(len(x), len(self.frames.mean)), x)
        return emb.numpy(), scores.numpy()


def export_hybrid(cfg: Config, n_jobs: int | None = None) -> Path:
    """Assemble the inputs, train, save and export the hybrid system's outputs."""
    jobs = int(n_jobs or cfg.stats.jobs or max(1, cfg.features.num_workers))
    _, label_map = prepare_splits(cfg)
    layout = ExperimentLayout.of(cfg)
    name = system_name(cfg)
    system = layout.system(name)
    with step_lock(layout.locks / f"export-{name}.lock", f"the outputs of {name}"):
        data = assemble(cfg, jobs)
        frames, stats, rows = data["train"]
        labels = rows["label"].to_numpy(int)
        if len(np.unique(labels)) < 2:
            raise DataError("the hybrid system needs at least two known systems in train")
        wanted = list(cfg.hybrid.outliers) or cfg.hybrid.outlier_clips
        outliers = outlier_features(cfg, rows, jobs) if wanted else None
        model, sf, ss, history = train_hybrid(cfg, frames, stats, labels, len(label_map.known), outliers)
        crossfit = None
        if crossfit_wanted(cfg):  # the network retrained once per known system held out
            crossfit = hybrid_crossfit(cfg, frames, stats, rows, list(label_map.known), outliers)
        system.models.mkdir(parents=True, exist_ok=True)
        path = system.models / MODEL_FILE
        torch.save(
            {"state_dict": model.state_dict(), "frames_mean": sf.mean, "frames_std": sf.std,
             "stats_mean": ss.mean, "stats_std": ss.std, "settings": dict(cfg.hybrid),
             "statistics": _settings(cfg), "class_names": list(label_map.known), "train_loss": history},
            path,
        )  # fmt: skip
        out = {}
        with torch.inference_mode():
            for split, (f, s, r) in data.items():
                record_pass(name, split, len(r))
                emb, scores = model(sf(f), ss(s))
                out[split] = SplitOutputs(output_rows(r), embeddings=emb.numpy(), logits=scores.numpy())
        meta = {
            "task": "hybrid",
            "description": (
                f"{cfg.hybrid.fusion} hybrid of pooled {cfg.frontend.name} frames and statistics "
                f"({', '.join(cfg.hybrid.features)}), loss {cfg.hybrid.loss}, "
                f"outliers {list(cfg.hybrid.outliers) or 'none'}"
                + (
                    f", anchored on the statistics' LDA (learned part weighted {cfg.hybrid.anchor_weight})"
                    if cfg.hybrid.anchor == "lda"
                    else ""
                )
            ),
            "settings": json.loads(json.dumps(dict(cfg.hybrid))),
            "logits": LOGITS,
            "final_train_loss": history[-1] if history else None,
        }
        splits, _ = prepare_splits(cfg)
        inputs = {
            "protocols": data_digest({k: protocol_digest(v) for k, v in splits.items()}),
            "label_map": label_map.digest(), "store_id": FeatureStore.for_config(cfg).store_id,
            "settings": data_digest(meta["settings"]), "model": file_digest(path),
        }  # fmt: skip
        SystemOutputs(name, list(label_map.known), out, meta=meta, crossfit=crossfit).write(
            system.outputs, inputs
        )
    print(f"{name} outputs written to {system.outputs} (final train loss {history[-1]:.4f})")
    return system.outputs


__all__ = [
    "OUTLIERS",
    "SYSTEM",
    "SavedHybrid",
    "assemble",
    "build_model",
    "hybrid_crossfit",
    "outlier_sources",
    "export_hybrid",
    "synthesise_outlier",
    "system_name",
    "train_hybrid",
]
