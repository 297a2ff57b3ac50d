"""Front ends: waveforms ``[B, samples]`` (float32, 16 kHz) -> frame features ``[B, T, D]`` (float32).

Each front end is registered in :data:`sourcetracing.components.FRONTENDS` with its default
settings and chosen by ``frontend.name``; its settings live in ``frontend.<name>``. Built-ins:

- ``hf_ssl`` (:mod:`.hf_ssl`): a Hugging Face audio encoder by hub name or local path: waveform
  models (wav2vec2, XLS-R, HuBERT, WavLM) and w2v-BERT 2.0, whose filter-bank input is computed
  in torch; ``layer: k`` returns exactly the model's ``hidden_states[k]`` while running only the
  first k transformer layers.
- ``lfcc`` and ``logmel`` (:mod:`.spectral`): linear-frequency cepstra (+ deltas) and log mel
  energies, in torch, no weights needed.

A new front end is one file with a registered builder ``build(settings, device, sample_rate)``
returning a :class:`FrontEnd`, plus its section in the config.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch

from sourcetracing.components import FRONTENDS
from sourcetracing.config import component_settings
from sourcetracing.errors import ConfigError

PRECISIONS = ("auto", "float32", "tf32", "bf16", "fp16")


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
    """The autocast dtype (None = float32 math). ``auto``: float32 on CPU, bf16 on CUDA.

    ``tf32`` (CUDA only) keeps float32 tensors but lets matrix products and convolutions use
    TensorFloat-32 (see :func:`cuda_math`); it returns None like ``float32``.
    """
    if precision not in PRECISIONS:
        raise FrontEndError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "float32"
    if precision in ("fp16", "tf32") and device.type != "cuda":
        raise FrontEndError(f"precision {precision} needs a CUDA device; use bf16 or float32 on CPU")
    if precision in ("float32", "tf32"):
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16


@contextlib.contextmanager
def fp32_math(tf32: bool) -> Iterator[None]:
    """For the block: CUDA float32 matrix products and cuDNN convolutions in IEEE float32 (or TF32
    when ``tf32``), with cuDNN autotuning; the previous settings come back afterwards.

    Matrix products go through ``torch.set_float32_matmul_precision`` (``highest`` / ``high``),
    which keeps PyTorch's old and new TF32 switches in agreement (cuBLAS refuses to run when they
    disagree); convolutions through ``torch.backends.cudnn.conv.fp32_precision``.
    """
    conv, cudnn = torch.backends.cudnn.conv, torch.backends.cudnn
    before = (torch.get_float32_matmul_precision(), conv.fp32_precision, cudnn.benchmark)
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    conv.fp32_precision = "tf32" if tf32 else "ieee"
    cudnn.benchmark = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before[0])
        conv.fp32_precision, cudnn.benchmark = before[1], before[2]


@contextlib.contextmanager
def cuda_math(device: torch.device, tf32: bool) -> Iterator[None]:
    """:func:`fp32_math` on CUDA, nothing on CPU.

    PyTorch lets cuDNN convolutions use TF32 by default, which would make a ``float32`` front end
    differ from the CPU's by ~1e-3; a front end that says float32 computes in float32.
    """
    if device.type != "cuda":
        yield
        return
    with fp32_math(tf32):
        yield


def to_device(waves: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Waves as float32 on ``device``; a CPU batch bound for CUDA goes through pinned memory without
    blocking, so the host prepares the next batch while this one is copied and computed."""
    waves = waves.to(torch.float32)
    if device.type == "cuda" and waves.device.type == "cpu":
        return waves.pin_memory().to(device, non_blocking=True)
    return waves.to(device)


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


__all__ = [
    "FrontEnd",
    "FrontEndError",
    "build_frontend",
    "cuda_math",
    "fp32_math",
    "frontend_settings",
    "resolve_precision",
    "to_device",
]
