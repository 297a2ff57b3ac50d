"""Export a trained system's outputs once: run its network over every split, write the file contract.

    python scripts/export_outputs.py --config X [--system aasist|ge2e|mfcc|plain_mfcc|stats|fusion] [--checkpoint PATH]

The training steps call this at their end; the script re-exports (another checkpoint, say) through
:func:`export_system`, which routes each system to its own exporter or refuses with the reason. The
outputs record the checkpoint, the feature store and the label map they were made from, so a
judge reading them after a retraining stops with a clear line instead of mixing the two.

Each run over a split is logged to the file named by ``SOURCETRACING_PASS_LOG`` when it is set
(``system<TAB>split<TAB>rows`` per line): the tests use it to check that no trained model runs twice
over the same split in a pipeline run.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sourcetracing.config import Config, resolve_device
from sourcetracing.errors import ConfigError
from sourcetracing.features.store import FeatureStore, store_dir
from sourcetracing.features.windows import average_over_windows, stored_windows
from sourcetracing.layout import ExperimentLayout
from sourcetracing.provenance import require_same, step_lock
from sourcetracing.systems.outputs import (
    SplitOutputs,
    SystemOutputs,
    output_rows,
    record_pass,
    split_order,
)
from sourcetracing.training.checkpoint import checkpoint_id, load_model
from sourcetracing.training.data import experiment_label_map, labelled, predict


def _store_splits(cfg: Config, store: FeatureStore, label_map) -> dict[str, pd.DataFrame]:
    """The rows every system exports: clean train rows of the known systems (the reference bank), clean dev/eval."""
    out = {}
    for split in split_order(store.index["split"].unique()):
        if split == "train":
            rows = labelled(store.select(split="train", versions=list(cfg.outputs.train_versions)), label_map)
            rows = rows[rows["label"] >= 0]
        else:
            rows = labelled(store.select(split=split, versions=stored_windows(store.meta, split)), label_map)
        if len(rows):
            out[split] = rows.reset_index(drop=True)
    if "train" not in out:
        raise ConfigError(
            f"no train rows of versions {list(cfg.outputs.train_versions)} in {store.directory}"
        )
    return out


def export_classifier(
    cfg: Config, device: torch.device | None = None, checkpoint: str | Path | None = None
) -> Path:
    """Logits and penultimate embeddings of the trained classifier for every split."""
    device = device or resolve_device(cfg.device)
    layout = ExperimentLayout.of(cfg)
    system = layout.system(cfg.model.name)
    store = FeatureStore.for_config(cfg)
    label_map = experiment_label_map(cfg, store)
    path = Path(checkpoint) if checkpoint else system.best
    model, ckpt = load_model(path, device, expected_label_map=label_map, step="python train_refd.py")
    require_same(
        ckpt.get("provenance", {}).get("store_id"), store.store_id, "the feature store",
        "python train_refd.py --force (the model was trained on other features)",
    )  # fmt: skip
    splits = {}
    with (
        step_lock(layout.locks / f"export-{system.name}.lock", f"the outputs of {system.name}"),
        store.read_lock(),
    ):
        for split, rows in _store_splits(cfg, store, label_map).items():
            logits, emb = predict(
                model,
                store,
                rows,
                device,
                int(cfg.outputs.batch_size),
                show_progress=True,
                desc=f"{split} outputs",
            )
            record_pass(system.name, split, len(rows))
            if split != "train":  # test-time windows of a clip: one row with their mean
                rows, (logits, emb) = average_over_windows(rows, logits, emb)
            splits[split] = SplitOutputs(output_rows(rows), embeddings=emb, logits=logits)
        outputs = SystemOutputs(
            system.name, label_map.known, splits,
            meta={"task": "classifier", "description": f"{cfg.model.name} classifier (logits, penultimate embeddings)",
                  "epoch": int(ckpt["epoch"])},
        )  # fmt: skip
        inputs = {
            "checkpoint": checkpoint_id(path),
            "store_id": store.store_id,
            "label_map": label_map.digest(),
        }
        outputs.write(system.outputs, inputs)
    print(
        f"{system.name} outputs written to {system.outputs} ({', '.join(f'{s}: {len(p.rows)}' for s, p in splits.items())})"
    )
    return system.outputs


def export_ge2e(
    cfg: Config, device: torch.device | None = None, checkpoint: str | Path | None = None
) -> Path:
    """Embeddings of the trained GE2E encoder for every split (clean clips; train: the known systems)."""
    from sourcetracing.training.ge2e_data import SYSTEM, build_source, embed_rows

    device = device or resolve_device(cfg.device)
    layout = ExperimentLayout.of(cfg)
    system = layout.system(SYSTEM)
    source = build_source(cfg)
    path = Path(checkpoint) if checkpoint else system.best
    encoder, ckpt = load_model(path, device, expected_label_map=source.label_map, step="python train_ge2e.py")
    require_same(
        ckpt.get("provenance", {}).get("store_id"), source.provenance.get("store_id"), "the feature store",
        "python train_ge2e.py --force (the encoder was trained on other features)",
    )  # fmt: skip
    splits = {}
    with (
        step_lock(layout.locks / f"export-{SYSTEM}.lock", "the outputs of ge2e"),
        contextlib.ExitStack() as locks,
    ):
        if source.store is not None:
            locks.enter_context(source.store.read_lock())
        for split, rows in source.frames.items():
            if split == "train":
                rows = rows[rows["label"] >= 0]
            elif source.store is not None and len(windows := stored_windows(source.store.meta, split)) > 1:
                rows = labelled(source.store.select(split=split, versions=windows), source.label_map)
            emb, ok = embed_rows(
                encoder, source, rows, device, int(cfg.ge2e.batch_size), int(cfg.ge2e.num_workers), split
            )
            record_pass(SYSTEM, split, len(rows))
            if (~ok).any():
                print(f"{split}: {int((~ok).sum())} unreadable clip(s) left out")
            kept, (emb,) = average_over_windows(rows.reset_index(drop=True)[ok], emb)
            splits[split] = SplitOutputs(output_rows(kept), embeddings=emb)
        outputs = SystemOutputs(
            SYSTEM, source.label_map.known, splits,
            meta={"task": "ge2e", "description": f"GE2E {cfg.ge2e.encoder.name} encoder (embeddings)",
                  "epoch": int(ckpt["epoch"])},
        )  # fmt: skip
        outputs.write(system.outputs, {"checkpoint": checkpoint_id(path), **source.provenance})
    print(
        f"ge2e outputs written to {system.outputs} ({', '.join(f'{s}: {len(p.rows)}' for s, p in splits.items())})"
    )
    return system.outputs


TRAINED_KINDS = ("classifier", "ge2e")  # kinds whose export runs a checkpoint (--checkpoint applies)


def system_kind(cfg: Config, system: str) -> str:
    """How ``system`` is exported under this config: ``classifier`` (``model.name``), ``ge2e``,
    ``mfcc`` (the reference), ``plain_mfcc`` (the plain reference, with ``mfcc.plain``), ``stats``
    (``stats`` and each of ``stats.variants``), ``hybrid`` (with ``hybrid.enabled``), ``pooled`` (with
    ``pooled.enabled``) or ``fusion``.

    Any other name is :class:`ConfigError`, with the reason and the systems this config can export.
    """
    from sourcetracing.systems.fusion import SYSTEM as FUSION
    from sourcetracing.systems.mfcc import SYSTEM as MFCC
    from sourcetracing.systems.plain_reference import SYSTEM as PLAIN
    from sourcetracing.systems.stats import stats_systems

    kinds = {cfg.model.name: "classifier", "ge2e": "ge2e", MFCC: "mfcc", FUSION: "fusion"}
    if cfg.mfcc.plain:
        kinds[PLAIN] = "plain_mfcc"
    kinds.update({name: "stats" for name in stats_systems(cfg)})
    if cfg.hybrid.enabled:
        kinds[str(cfg.hybrid.name)] = "hybrid"
    if cfg.pooled.enabled:
        kinds["pooled"] = "pooled"
    if system in kinds:
        return kinds[system]
    known = ", ".join(kinds)
    meta_path = ExperimentLayout.of(cfg).system(system).outputs / "meta.json"
    task = json.loads(meta_path.read_text()).get("task") if meta_path.is_file() else None
    if task == "classifier":
        reason = (
            f"its outputs come from a classifier, and this config's classifier is "
            f"model.name={cfg.model.name} (add the override model.name={system})"
        )
    elif task == "pooled":
        reason = (
            "its outputs come from the pooled system, which this config leaves off (add pooled.enabled=true)"
        )
    elif meta_path.is_file():
        reason = f"no step of this config makes it (its outputs say task {task!r})"
    else:
        reason = "no such system in this config"
    raise ConfigError(f"cannot export '{system}': {reason}; this config exports {known}")


def system_config(cfg: Config, system: str) -> Config:
    """The config a system is made and judged with: a statistics variant's merged settings, the plain
    reference's or the pooled system's fixed OOD step, else ``cfg`` itself (raises like :func:`system_kind`)."""
    kind = system_kind(cfg, system)
    if kind == "stats":
        from sourcetracing.systems.stats import stats_systems

        return stats_systems(cfg)[system]
    if kind == "plain_mfcc":
        from sourcetracing.systems.plain_reference import plain_config

        return plain_config(cfg)
    if kind == "pooled":
        from sourcetracing.systems.pooled import pooled_config

        return pooled_config(cfg)
    return cfg


def export_system(
    cfg: Config, system: str, checkpoint: str | Path | None = None, n_jobs: int | None = None
) -> Path:
    """Export the outputs of ``system`` with its own exporter (see :func:`system_kind`); returns the folder.

    ``checkpoint`` applies to the trained systems (the classifier, GE2E) only; ``n_jobs`` to the
    statistics systems (audio workers).
    """
    kind = system_kind(cfg, system)
    if checkpoint is not None and kind not in TRAINED_KINDS:
        raise ConfigError(
            f"--checkpoint applies to the trained systems ({cfg.model.name}, ge2e); "
            f"'{system}' ({kind}) has no checkpoint"
        )
    if kind == "classifier":
        return export_classifier(cfg, checkpoint=checkpoint)
    if kind == "ge2e":
        return export_ge2e(cfg, checkpoint=checkpoint)
    if kind == "mfcc":
        from sourcetracing.systems.mfcc import export_mfcc

        return export_mfcc(cfg, n_jobs)
    if kind == "plain_mfcc":
        from sourcetracing.systems.plain_reference import export_plain

        return export_plain(cfg, n_jobs)
    if kind == "stats":
        from sourcetracing.systems.stats import export_stats

        return export_stats(system_config(cfg, system), n_jobs, system=system)
    if kind == "hybrid":
        from sourcetracing.systems.hybrid import export_hybrid

        return export_hybrid(cfg, n_jobs)
    if kind == "pooled":
        from sourcetracing.systems.pooled import export_pooled

        return export_pooled(cfg, n_jobs)
    from sourcetracing.systems.fusion import export_fusion

    return export_fusion(cfg)


def read_outputs(cfg: Config, system: str) -> SystemOutputs:
    """A system's outputs, checked against the current checkpoint and feature store when it has them."""
    outputs = SystemOutputs.read(ExperimentLayout.of(cfg).system(system).outputs, step=_producer(cfg, system))
    check_outputs_current(cfg, system, outputs.manifest.get("inputs", {}))
    return outputs


def current_store_id(cfg: Config) -> str | None:
    """The id of this config's finished feature store (read from its ``meta.json`` alone), None without one."""
    meta = store_dir(cfg) / "meta.json"
    if not meta.is_file():
        return None  # the store may live elsewhere: nothing to compare
    return json.loads(meta.read_text()).get("store_id")


def check_outputs_current(cfg: Config, system: str, inputs: dict) -> None:
    """Stop with a line naming the step to rerun when outputs no longer match what made them.

    ``inputs`` is the outputs manifest's record: the checkpoint (compared with the system's
    ``best.pt``), the feature store and the label map (compared with the experiment's).
    """
    layout = ExperimentLayout.of(cfg)
    sys_layout = layout.system(system)
    if inputs.get("checkpoint") and sys_layout.best.is_file():
        require_same(
            inputs["checkpoint"], checkpoint_id(sys_layout.best), f"{sys_layout.best}", _exporter(cfg, system)
        )
    if inputs.get("store_id"):
        require_same(inputs["store_id"], current_store_id(cfg), "the feature store", _retrainer(cfg, system))
    if layout.label_map.is_file() and inputs.get("label_map"):
        from sourcetracing.data.protocols import LabelMap

        require_same(
            inputs["label_map"], LabelMap.read(cfg.exp_dir).digest(), "the label map", _retrainer(cfg, system)
        )


def _producer(cfg: Config, system: str) -> str:
    return {
        "ge2e": "python train_ge2e.py",
        "mfcc": "python scripts/reference_baseline.py",
        "hybrid": "python scripts/hybrid_system.py",
        "pooled": "python scripts/pooled_system.py",
    }.get(
        system, "python train_refd.py" if system == cfg.model.name else f"the step that exports '{system}'"
    ) + " --config <your config>"


def _retrainer(cfg: Config, system: str) -> str:
    """The step that makes a system again from new features or labels (a trained one: with --force)."""
    step = _producer(cfg, system)
    return step + " --force" if system in ("ge2e", cfg.model.name) else step


def _exporter(cfg: Config, system: str) -> str:
    return f"python scripts/export_outputs.py --config <your config> --system {system}"


__all__ = [
    "check_outputs_current",
    "current_store_id",
    "export_classifier",
    "export_ge2e",
    "export_system",
    "np",
    "read_outputs",
    "record_pass",
    "system_config",
    "system_kind",
]
