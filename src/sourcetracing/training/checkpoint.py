"""Checkpoints as plain data, loadable with ``torch.load(path, weights_only=True)``, one layout for every task.

Every checkpoint holds::

    format        1
    task          "classifier" (AASIST & co.: forward -> (logits, embedding)) or "ge2e" (forward -> embedding)
    model_config  {"name": <registered model or encoder>, ...its settings}
    model_state   the module's state dict (CPU tensors)
    extra_state   task-specific trained state besides the model (the GE2E loss's w and b)
    label_map     {"known": [...], "ood": [...]}
    input_dim     feature dimension (None for raw-audio encoders)
    provenance    {"store_id": ..., "label_map": digest of the known systems}
    epoch, metrics, config, best

``last.pt`` adds ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (torch, CUDA, numpy and python
states) and ``history`` so ``--resume`` continues exactly.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sourcetracing.data.protocols import LabelMap
from sourcetracing.errors import MissingInputError

FORMAT = 1


def plain(value: Any) -> Any:
    """A JSON-like copy (dicts, lists, str, numbers, None) of config sections and metadata."""
    return json.loads(json.dumps(value, default=str))


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)


def trained_kinds() -> list[str]:
    """The system kinds a checkpoint can hold (its ``task``): those made from a checkpoint."""
    from sourcetracing.systems.handle import all_kinds

    return [k.name for k in all_kinds() if k.trained]


def build_model(task: str, model_config: Mapping, input_dim: int | None, num_classes: int) -> nn.Module:
    """The network a checkpoint describes, built by its kind (the checkpoint's ``task``): a registered
    classifier or a registered GE2E encoder."""
    from sourcetracing.systems.handle import kind

    if task not in trained_kinds():
        raise ValueError(f"unknown checkpoint task {task!r}; expected one of {trained_kinds()}")
    return kind(task).build_network(model_config, input_dim, num_classes)


def rng_state() -> dict:
    """The torch (CPU and CUDA), numpy and python ``random`` global states as plain data."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_state[0]),
            "state": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss_next": py_state[2],
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping) -> None:
    """Restore what :func:`rng_state` captured."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, payload: Mapping) -> Path:
    """Write a checkpoint atomically (``.<name>.tmp-<pid>``, then rename; leftovers of dead writers go first)."""
    from sourcetracing.provenance import clean_leftovers

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(dict(payload, format=FORMAT), tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path, step: str = "the training step") -> dict:
    """``torch.load(path, weights_only=True)`` on the CPU, with a hint naming ``step`` when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"checkpoint not found: {path} (run {step} first)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("format") != FORMAT or ckpt.get("task") not in trained_kinds():
        raise MissingInputError(
            f"{path} is not a checkpoint of this toolkit's format {FORMAT}: retrain ({step})"
        )
    return ckpt


def checkpoint_id(path: str | Path) -> str:
    """The identity of a checkpoint file (a content digest), recorded by everything made from it."""
    from sourcetracing.provenance import file_digest

    return file_digest(path)


def load_model(
    path: str | Path,
    device: torch.device | str = "cpu",
    expected_label_map: LabelMap | None = None,
    step: str = "the training step",
) -> tuple[nn.Module, dict]:
    """The checkpoint's network (eval mode, on ``device``) and the checkpoint dict.

    With ``expected_label_map``, a checkpoint trained on other known systems is a clear error.
    """
    ckpt = read_checkpoint(path, step)
    label_map = LabelMap.from_dict(ckpt["label_map"])
    if expected_label_map is not None:
        expected_label_map.check_same_known(label_map, what=f"checkpoint {path}")
    model = build_model(ckpt["task"], ckpt["model_config"], ckpt.get("input_dim"), label_map.num_classes)
    model.load_state_dict(ckpt["model_state"])
    model.to(device).eval()
    return model, ckpt
