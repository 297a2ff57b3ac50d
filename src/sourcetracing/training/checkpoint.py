"""Checkpoints as plain data, loadable with ``torch.load(path, weights_only=True)``.

Every checkpoint holds ``model_state``, ``model_config`` (the ``model`` config section),
``input_dim``, ``label_map`` (``LabelMap.to_dict()``), ``feature_store`` (the store's meta: front end,
frame shape), ``epoch`` and ``metrics``; ``last.pt`` adds ``optimizer``, ``scheduler``, ``best`` and
``rng`` (torch, CUDA, numpy and python random states) so ``--resume`` continues exactly.
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


def plain(value: Any) -> Any:
    """A JSON-like copy (dicts, lists, str, numbers, None) of config sections and metadata."""
    return json.loads(json.dumps(value, default=str))


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside a DistributedDataParallel wrapper."""
    return getattr(model, "module", model)


def build_model(model_config: Mapping, input_dim: int, num_classes: int) -> nn.Module:
    """The classifier named by ``model_config['name']`` (only ``aasist`` for now)."""
    options = dict(model_config)
    name = options.pop("name", "aasist")
    if name != "aasist":
        raise ValueError(f"unknown model.name '{name}' (available: aasist)")
    from sourcetracing.models.aasist import AASIST

    return AASIST(input_dim=int(input_dim), num_classes=int(num_classes), **options)


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


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_config: Mapping,
    input_dim: int,
    label_map: LabelMap,
    feature_store: Mapping,
    epoch: int,
    metrics: Mapping | None = None,
    extra: Mapping | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, then rename); tensors are moved to the CPU."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    ckpt = {
        "model_state": state,
        "model_config": plain(dict(model_config)),
        "input_dim": int(input_dim),
        "num_classes": int(label_map.num_classes),
        "label_map": label_map.to_dict(),
        "feature_store": plain(dict(feature_store)),
        "epoch": int(epoch),
        "metrics": plain(dict(metrics or {})),
    }
    ckpt.update(extra or {})
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def models_dir(exp_dir: str | Path) -> Path:
    """``<exp_dir>/trained_models``: the AASIST checkpoints, ``metrics.csv`` and curves."""
    return Path(exp_dir) / "trained_models"


def best_checkpoint(exp_dir: str | Path) -> Path:
    return models_dir(exp_dir) / "best.pt"


def read_checkpoint(path: str | Path) -> dict:
    """``torch.load(path, weights_only=True)`` on the CPU, with a hint when the file is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: {path} (run `python train_refd.py --config <config>` first)"
        )
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(
    path: str | Path, device: torch.device | str = "cpu", expected_label_map: LabelMap | None = None
) -> tuple[nn.Module, dict]:
    """The checkpoint's model (eval mode, on ``device``) and the checkpoint dict.

    With ``expected_label_map``, a checkpoint trained on other known systems is a clear error.
    """
    ckpt = read_checkpoint(path)
    label_map = LabelMap.from_dict(ckpt["label_map"])
    if expected_label_map is not None:
        expected_label_map.check_same_known(label_map, what=f"checkpoint {path}")
    model = build_model(ckpt["model_config"], ckpt["input_dim"], label_map.num_classes)
    model.load_state_dict(ckpt["model_state"])
    model.to(device).eval()
    return model, ckpt


def load_experiment_model(
    exp_dir: str | Path, device: torch.device | str = "cpu", checkpoint: str | Path | None = None
) -> tuple[nn.Module, dict]:
    """``best.pt`` (or ``checkpoint``), checked against the experiment's ``label_map.csv`` when it exists."""
    exp_dir = Path(exp_dir)
    expected = LabelMap.read(exp_dir) if (exp_dir / "label_map.csv").is_file() else None
    return load_model(checkpoint or best_checkpoint(exp_dir), device, expected_label_map=expected)
