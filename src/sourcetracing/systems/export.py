"""Export a trained system's outputs once: run its network over every split, write the file contract.

    python scripts/export_outputs.py --config X [--system aasist|ge2e|mfcc|plain_mfcc|stats|fusion] [--checkpoint PATH]

The training steps call this at their end; the script re-exports (another checkpoint, say) through
:func:`sourcetracing.systems.handle.export_system`, which routes each system to its own kind's
exporter or refuses with the reason. The outputs record the checkpoint, the feature store and the
label map they were made from, so a judge reading them after a retraining stops with a clear line
instead of mixing the two (:func:`sourcetracing.systems.handle.open_system`).

Each run over a split is logged to the file named by ``SOURCETRACING_PASS_LOG`` when it is set
(``system<TAB>split<TAB>rows`` per line): the tests use it to check that no trained model runs twice
over the same split in a pipeline run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sourcetracing.config import Config, resolve_device
from sourcetracing.errors import ConfigError
from sourcetracing.features.store import FeatureStore
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


__all__ = [
    "export_classifier",
    "export_ge2e",
    "np",
    "output_rows",
    "record_pass",
]
