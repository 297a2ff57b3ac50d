"""The pooled-embedding system (``pooled``): a frozen front end pooled over the whole clip, k-NN decisions.

Training-free, after TADA (Stan et al., Interspeech 2025): every clip of every split goes through
the chosen front end (``pooled.frontend``, merged over the experiment's ``frontend`` section; e.g.
w2v-BERT 2.0 layer 4) **whole**, one clip at a time so that no padding enters the model or the
pooling (``pooled.crop: true`` takes the feature store's 4 s crop instead). Its frames are pooled
over time (``pooled.pooling``: ``mean``, or ``mean_std``: mean and standard deviation) into one
embedding per clip. Nothing is fitted:

- closed-set decision: a majority vote of the ``k`` train clips nearest by cosine similarity (ties
  go to the class whose voters are more similar). It is exported as log-probabilities (smoothed
  vote shares, the arg-max is the vote) and a ``predicted`` column, so the known-class metrics use
  the vote; a train clip votes without itself (leave one out);
- OOD score: cosine distance to the ``ood_k``-th nearest train clip (the ``knn`` scorer), the one
  scorer the OOD step runs for this system (:func:`pooled_config`).

``k`` (and ``ood_k``) ``auto`` is chosen on train alone by the ``holdout`` rule of
:mod:`sourcetracing.ood.tuning` (each known system held out in turn as pseudo-unseen; the
``knn`` candidates, best mean AUROC); dev and eval are never looked at. The choice and its table
are recorded in the outputs' ``meta.json`` (``k``). The train rows are the known systems' clean
clips (``pooled.augment`` adds augmented copies to the reference bank); the embeddings of each
split are cached in ``<exp>/pooled/cache/`` while the clip list and settings stay.

    python scripts/pooled_system.py --config configs/mlaad_tada.yaml
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sourcetracing.config import Config, resolve_device
from sourcetracing.errors import ConfigError, DataError
from sourcetracing.layout import ExperimentLayout
from sourcetracing.progress import progress
from sourcetracing.provenance import data_digest, step_lock
from sourcetracing.systems.outputs import (
    OutputsMeta,
    SplitOutputs,
    SystemOutputs,
    output_rows,
    record_pass,
)

SYSTEM = "pooled"
SCORER = "knn"
POOLINGS = ("mean", "mean_std")
VOTE_SMOOTHING = 1e-3  # added to each class's vote share before the log (finite log-probabilities)
HOLDOUT_RULE = "holdout on train: each known system held out in turn (sourcetracing.ood.tuning)"


def frontend_section(cfg: Config) -> dict:
    """The front-end section the system runs: the experiment's ``frontend``, ``pooled.frontend`` merged over it.

    ``pooled.frontend: {hf_ssl: {layer: 4}}`` changes the layer only; ``{name: lfcc}`` another front
    end (its settings from the experiment's section, else the defaults). Unknown keys are an error.
    """
    from sourcetracing.components import FRONTENDS

    section = cfg.frontend.to_dict()
    override = cfg.pooled.frontend or {}
    for key, value in override.items():
        if key == "name":
            FRONTENDS.entry(value)
            section["name"] = value
            continue
        if key not in FRONTENDS.names():
            raise ConfigError(
                f"pooled.frontend.{key}: not a front end; give name or a front end's section "
                f"({', '.join(FRONTENDS.names())})"
            )
        if not isinstance(value, Mapping):
            raise ConfigError(f"pooled.frontend.{key} must be a mapping of {key}'s settings, got {value!r}")
        unknown = sorted(set(value) - set(FRONTENDS.defaults(key)))
        if unknown:
            raise ConfigError(
                f"pooled.frontend.{key}: unknown setting(s) {unknown}; {key} takes {sorted(FRONTENDS.defaults(key))}"
            )
        section[key] = {**dict(section.get(key) or {}), **dict(value)}
    return section


def pooled_settings(cfg: Config) -> dict:
    """What the pooled embeddings depend on (besides the clips): front end, pooling, crop, audio, copies."""
    from sourcetracing.features.frontends import frontend_settings

    p = cfg.pooled
    settings = {
        "frontend": frontend_settings(frontend_section(cfg)), "pooling": str(p.pooling),
        "crop": bool(p.crop), "sample_rate": int(cfg.data.sample_rate), "min_len_s": float(cfg.data.min_len_s),
        "augment": list(p.augment),
    }  # fmt: skip
    if p.crop:
        settings["max_len_s"] = float(cfg.data.max_len_s)
    if p.augment:
        settings["seed"] = int(cfg.seed)
    return settings


def pool_frames(frames: torch.Tensor, pooling: str) -> np.ndarray:
    """``[T, D]`` frame features -> ``[D]`` (mean over time) or ``[2D]`` (mean, then standard deviation)."""
    if pooling not in POOLINGS:
        raise ConfigError(f"pooled.pooling must be one of {POOLINGS}, got {pooling!r}")
    frames = frames.to(torch.float64)
    mean = frames.mean(dim=0)
    if pooling == "mean":
        return mean.numpy().astype(np.float32)
    std = frames.std(dim=0, unbiased=False)
    return torch.cat([mean, std]).numpy().astype(np.float32)


def embed_wave(frontend, wave: np.ndarray, pooling: str) -> np.ndarray:
    """The pooled embedding of one clip (a batch of one: no padding reaches the model or the pooling)."""
    with torch.inference_mode():
        frames = frontend(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None])
    return pool_frames(frames[0].detach().cpu(), pooling)


def _load(path: str, clip_id: str, settings: dict, train_versions) -> tuple[list[np.ndarray] | None, str]:
    """The clip's waves (the clip, then its augmented copies), or ``(None, reason)``."""
    from sourcetracing.data.audio import crop_or_pad, load_audio
    from sourcetracing.data.augment import version_rng

    try:
        sr = int(settings["sample_rate"])
        wave = load_audio(path, sr, min_len_s=float(settings["min_len_s"]))
        if settings["crop"]:
            wave = crop_or_pad(wave, int(round(float(settings["max_len_s"]) * sr)))
        waves = [wave]
        if train_versions is not None:
            for version in train_versions.versions:
                rng = version_rng(train_versions.seed, clip_id, version)
                waves.append(train_versions.augmenter.apply(wave, version, rng)[0])
        return waves, ""
    except Exception as err:  # noqa: BLE001 - unusable clips are reported and skipped
        return None, str(err)


def _file_stamps(paths: list[str]) -> list[tuple[int, int]]:
    """Size and modification time of each file (-1 when missing): a changed clip is embedded again."""
    stamps = []
    for path in paths:
        try:
            st = os.stat(path)
            stamps.append((int(st.st_size), int(st.st_mtime_ns)))
        except OSError:
            stamps.append((-1, -1))
    return stamps


def split_embeddings(
    frontend_factory,
    df: pd.DataFrame,
    root: str | Path,
    settings: dict,
    n_jobs: int = 1,
    cache: Path | None = None,
    train_versions=None,
    desc: str = "pooled",
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Pooled embeddings of one annotated split's clips: ``(X, kept rows, skipped rows with reason)``.

    ``frontend_factory()`` gives the front end (called only when the ``cache`` misses). Audio is
    read by ``n_jobs`` threads ahead of the model. With ``train_versions`` each clip also gives its
    augmented copies (seeded per clip and version): the kept rows then repeat per version, with a
    ``version`` column. The cache is keyed by the clip list, each file's size and modification time,
    and the settings.
    """
    from sourcetracing.systems.mfcc import _expand

    df = df.reset_index(drop=True)
    versions = ("original", *(train_versions.versions if train_versions else ()))
    paths = [str(Path(root) / p) for p in df["path"]]
    key = data_digest([df["clip_id"].tolist(), _file_stamps(paths), settings, list(versions)])
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["key"]) == key:
                ok = data["ok"]
                return (
                    data["features"],
                    _expand(df[ok], versions),
                    df[~ok].assign(reason=data["reasons"][~ok]),
                )
    frontend = frontend_factory()
    ok = np.zeros(len(df), dtype=bool)
    reasons = np.full(len(df), "", dtype=object)
    feats: list[np.ndarray] = []
    block = max(1, 8 * n_jobs)
    bar = progress(total=len(df), desc=f"{desc} ({len(df)} clips x {len(versions)})", leave=False)
    with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool:
        for start in range(0, len(df), block):
            ids = df["clip_id"].iloc[start : start + block]
            loaded = pool.map(
                lambda a: _load(a[0], a[1], settings, train_versions),
                zip(paths[start : start + block], ids, strict=True),
            )
            for i, (waves, reason) in enumerate(loaded, start=start):
                bar.update(1)
                if waves is None:
                    reasons[i] = reason
                    continue
                try:
                    vectors = [embed_wave(frontend, w, settings["pooling"]) for w in waves]
                except Exception as err:  # noqa: BLE001 - e.g. a clip too short for the front end
                    reasons[i] = f"front end: {err}"
                    continue
                ok[i] = True
                feats.extend(vectors)
    bar.close()
    x = np.stack(feats).astype(np.float32) if feats else np.zeros((0, 0), np.float32)
    reasons = reasons.astype(str)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, key=np.asarray(key), ok=ok, reasons=reasons, features=x)
    return x, _expand(df[ok], versions), df[~ok].assign(reason=reasons[~ok])


def nearest(
    bank: np.ndarray,
    queries: np.ndarray,
    k: int,
    chunk_size: int = 4096,
    bank_groups: np.ndarray | None = None,
    query_groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities ``[n, k]`` (highest first) and bank indices ``[n, k]`` of each query's k nearest.

    With groups, a bank row of the query's own group never counts (leave one clip out, with its copies).
    """
    if k > len(bank):
        raise DataError(f"k-NN with k={k} needs at least {k} train clips, the bank has {len(bank)}")
    b = torch.nn.functional.normalize(torch.from_numpy(np.asarray(bank, np.float32)), dim=-1, eps=1e-10)
    sims = np.empty((len(queries), k), np.float32)
    idx = np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk_size):
        q = torch.nn.functional.normalize(
            torch.from_numpy(np.asarray(queries[start : start + chunk_size], np.float32)), dim=-1, eps=1e-10
        )
        s = q @ b.T
        if bank_groups is not None and query_groups is not None:
            same = query_groups[start : start + len(q), None] == bank_groups[None, :]
            s = s.masked_fill(torch.from_numpy(same), float("-inf"))
        top = torch.topk(s, k, dim=1)
        sims[start : start + len(q)] = top.values.numpy()
        idx[start : start + len(q)] = top.indices.numpy()
    return sims, idx


def vote_log_probabilities(
    sims: np.ndarray, idx: np.ndarray, bank_labels: np.ndarray, n_classes: int
) -> np.ndarray:
    """Log vote shares ``[n, K]`` of the k nearest clips: the arg-max is the majority class, a tie
    going to the class whose voters' similarities sum higher; smoothed by :data:`VOTE_SMOOTHING`."""
    n, k = idx.shape
    votes = np.zeros((n, n_classes))
    closeness = np.zeros((n, n_classes))
    labels = bank_labels[idx]
    rows = np.repeat(np.arange(n), k)
    valid = np.isfinite(
        sims.ravel()
    )  # a left-out neighbour (its own clip, when k covers the bank) has no vote
    np.add.at(votes, (rows, labels.ravel()), valid.astype(float))
    np.add.at(closeness, (rows, labels.ravel()), np.where(valid, np.clip(sims.ravel(), -1.0, 1.0), 0.0))
    # |closeness| <= votes, so closeness / (k + 1) only breaks ties: it never outweighs a vote
    weight = votes + closeness / (k + 1)
    share = (weight + VOTE_SMOOTHING) / (weight.sum(axis=1, keepdims=True) + n_classes * VOTE_SMOOTHING)
    return np.log(share).astype(np.float32)


def choose_k(cfg: Config, train: SplitOutputs) -> dict:
    """The vote's ``k`` and the OOD score's ``ood_k`` (fixed, or ``auto``: the holdout rule on train alone)
    and how they were chosen: ``{"k", "ood_k", "chosen_by", "candidates"}``."""
    from sourcetracing.ood.tuning import tune

    def setting(value) -> int | str:
        return "auto" if value in (None, "auto") else int(value)

    k_setting = setting(cfg.pooled.k)
    ood_setting = k_setting if cfg.pooled.ood_k is None else setting(cfg.pooled.ood_k)
    record: dict = {
        "k_setting": k_setting,
        "ood_k_setting": ood_setting,
        "chosen_by": "fixed",
        "candidates": [],
    }
    chosen = None
    if "auto" in (k_setting, ood_setting):
        originals = train
        if "version" in train.rows:
            keep = (train.rows["version"] == "original").to_numpy()
            originals = SplitOutputs(train.rows[keep], embeddings=train.embeddings[keep])
        options, table = tune(
            SCORER, {"k": 5, "chunk_size": int(cfg.ood.chunk_size)}, "holdout", originals, None
        )
        if not table or all(np.isnan(r["holdout_auroc"]) for r in table):
            raise DataError(
                "pooled.k=auto: the hold-out of known systems could not judge any k (it needs at least three "
                "known systems with several train clips each); give pooled.k an integer"
            )
        chosen = int(options["k"])
        record.update(chosen_by=HOLDOUT_RULE, candidates=table)
    record["k"] = chosen if k_setting == "auto" else k_setting
    record["ood_k"] = chosen if ood_setting == "auto" else ood_setting
    return record


def pooled_config(cfg: Config) -> Config:
    """The config the system is judged with: the ``knn`` scorer alone, at the ``ood_k`` its outputs
    record (before an export: the fixed ``ood_k``/``k``, else the holdout rule, which gives the same)."""
    out = cfg.clone()
    out.ood.scorers = [SCORER]
    out.ood.default = SCORER
    out.ood.tune = "none"
    meta = OutputsMeta.of(ExperimentLayout.of(cfg).system(SYSTEM))
    ood_k = meta.get("k", {}).get("ood_k") if meta is not None else None
    if ood_k is None:
        fixed = cfg.pooled.ood_k if cfg.pooled.ood_k is not None else cfg.pooled.k
        if fixed in (None, "auto"):
            out.ood.tune = "holdout"
        else:
            ood_k = int(fixed)
    if ood_k is not None:
        out.ood[SCORER] = Config({**dict(out.ood.get(SCORER, {})), "k": int(ood_k)})
    return out


def pooled_jobs(cfg: Config, n_jobs: int | None = None) -> int:
    """Audio reader threads: ``n_jobs``, else ``features.num_workers`` (at least 1)."""
    return int(n_jobs or max(1, cfg.features.num_workers))


def export_pooled(cfg: Config, n_jobs: int | None = None) -> Path:
    """Embed every split's clips, choose k on train, and export the pooled system's outputs."""
    from sourcetracing.data.protocols import prepare_splits, protocol_digest
    from sourcetracing.features.frontends import build_frontend
    from sourcetracing.ood.scorers import LOG_PROBABILITIES
    from sourcetracing.systems.mfcc import train_versions_of

    splits, label_map = prepare_splits(cfg)
    layout = ExperimentLayout.of(cfg)
    system = layout.system(SYSTEM)
    settings = pooled_settings(cfg)
    device = resolve_device(cfg.device)
    built: list = []

    def frontend():
        if not built:
            built.append(build_frontend(frontend_section(cfg), device, int(cfg.data.sample_rate)))
        return built[0]

    jobs = pooled_jobs(cfg, n_jobs)
    with step_lock(layout.locks / f"export-{SYSTEM}.lock", f"the outputs of {SYSTEM}"):
        embedded: dict[str, tuple[np.ndarray, pd.DataFrame]] = {}
        for split, df in splits.items():
            if split == "train":  # the reference bank: the known systems' clips
                df = df[df["label"] >= 0]
            versions = train_versions_of(cfg, tuple(cfg.pooled.augment)) if split == "train" else None
            x, kept, bad = split_embeddings(
                frontend, df, cfg.data.root, settings, jobs, system.root / "cache" / f"{split}.npz", versions, split
            )  # fmt: skip
            record_pass(SYSTEM, split, len(df))
            if len(bad):
                print(
                    f"{split}: {len(bad)} unusable clip(s) left out (first: {bad['path'].iloc[0]}: {bad['reason'].iloc[0]})"
                )
            if split == "train" and len(np.unique(kept["label"])) < 2:
                raise DataError(f"the {SYSTEM} system needs at least two known systems in train")
            embedded[split] = (x, kept.reset_index(drop=True))
        x_train, train_rows = embedded["train"]
        choice = choose_k(cfg, SplitOutputs(output_rows(train_rows), embeddings=x_train))
        bank_labels = train_rows["label"].to_numpy(int)
        bank_groups = train_rows["clip_id"].to_numpy(str)
        names = list(label_map.known)
        chunk = int(cfg.ood.chunk_size)
        out = {}
        for split, (x, rows) in embedded.items():
            groups = (bank_groups, rows["clip_id"].to_numpy(str)) if split == "train" else (None, None)
            sims, idx = nearest(x_train, x, choice["k"], chunk, *groups)
            logits = vote_log_probabilities(sims, idx, bank_labels, len(names))
            exported = output_rows(rows)
            exported["predicted"] = [names[i] for i in logits.argmax(axis=1)]
            out[split] = SplitOutputs(exported, embeddings=x, logits=logits)
        fe = settings["frontend"]
        meta = {
            "task": "pooled",
            "description": (
                f"{fe['name']} {fe.get('model', '')} layer {fe.get('layer', '-')} {settings['pooling']}-pooled over "
                f"{'the 4 s crop' if settings['crop'] else 'the whole clip'}; {choice['k']}-NN vote, "
                f"cosine distance to the {choice['ood_k']}-th nearest train clip"
            ),
            "settings": settings,
            "logits": LOG_PROBABILITIES,
            "k": choice,
        }
        outputs = SystemOutputs(SYSTEM, names, out, meta=meta)
        inputs = {
            "protocols": data_digest({s: protocol_digest(df) for s, df in splits.items()}),
            "label_map": label_map.digest(), "settings": data_digest(settings),
        }  # fmt: skip
        outputs.write(system.outputs, inputs)
    print(
        f"{SYSTEM} outputs written to {system.outputs} (k = {choice['k']}, OOD k = {choice['ood_k']}, "
        f"{choice['chosen_by']})"
    )
    return system.outputs
