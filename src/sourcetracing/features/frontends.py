"""Front ends: waveforms ``[B, samples]`` (float32, 16 kHz) -> frame features ``[B, T, D]`` (float32).

Each front end is registered in :data:`sourcetracing.components.FRONTENDS` with its default
settings and chosen by ``frontend.name``; its settings live in ``frontend.<name>``. Built-ins:

- ``hf_ssl`` (:mod:`.hf_ssl`): a Hugging Face audio encoder (wav2vec2, HuBERT, WavLM, ...) by hub
  name or local path; ``layer: k`` returns exactly the model's ``hidden_states[k]`` while running
  only the first k transformer layers.
- ``lfcc`` and ``logmel`` (:mod:`.spectral`): linear-frequency cepstra (+ deltas) and log mel
  energies, in torch, no weights needed.

A new front end is one file with a registered builder ``build(settings, device, sample_rate)``
returning a :class:`FrontEnd`, plus its section in the config.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from sourcetracing.components import FRONTENDS
from sourcetracing.config import component_settings
from sourcetracing.errors import ConfigError

PRECISIONS = ("auto", "float32", "bf16", "fp16")


class FrontEndError(ConfigError):
    """A front end cannot be built with the given settings."""


class FrontEnd:
    """Interface: ``__call__(waves [B, S]) -> [B, T, D]`` and ``output_shape(S) -> (T, D)``."""

    name = "frontend"
    device = torch.device("cpu")

    def __call__(self, waves: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def output_shape(self, num_samples: int) -> tuple[int, int]:  # pragma: no cover - interface
        raise NotImplementedError


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = plain float32). ``auto``: float32 on CPU, bf16 on CUDA."""
    if precision not in PRECISIONS:
        raise FrontEndError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "float32"
    if precision == "float32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise FrontEndError("precision fp16 needs a CUDA device; use bf16 or float32 on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def frontend_settings(frontend_section: Mapping) -> dict:
    """The chosen front end's name and settings only, defaults filled in (what the store hash covers).

    Accepts the config's ``frontend`` section or an already flat ``{name, ...settings}`` dict.
    """
    name = frontend_section["name"]
    settings = FRONTENDS.defaults(name)
    if isinstance(frontend_section.get(name), Mapping):
        settings.update(component_settings(frontend_section))
    else:
        settings.update(frontend_section)
    settings.pop("name", None)
    return {"name": name, **settings}


def build_frontend(
    frontend_section: Mapping, device: torch.device | str = "cpu", sample_rate: int = 16000
) -> FrontEnd:
    """The front end named by ``frontend_section['name']``, on ``device``."""
    settings = frontend_settings(frontend_section)
    builder = FRONTENDS.get(settings["name"])
    options = {k: v for k, v in settings.items() if k != "name"}
    return builder(options, torch.device(device), int(sample_rate))


__all__ = ["FrontEnd", "FrontEndError", "build_frontend", "frontend_settings", "resolve_precision"]
