"""Front ends: waveforms ``[B, samples]`` (float32, 16 kHz) -> frame features ``[B, T, D]`` (float32).

``build_frontend(cfg.frontend, device)`` picks one by name:

- ``hf_ssl``: a Hugging Face audio encoder (wav2vec2, HuBERT, WavLM, ...) by hub name or local
  path; ``layer: k`` returns exactly the model's ``hidden_states[k]`` while running only the
  first k transformer layers.
- ``lfcc``: linear-frequency cepstral coefficients (+ deltas and delta-deltas).
- ``logmel``: log mel filterbank energies.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "bf16", "fp16")


class FrontEndError(ValueError):
    """A front end cannot be built with the given settings."""


class FrontEnd:
    """Interface: ``__call__(waves [B, S]) -> [B, T, D]`` and ``output_shape(S) -> (T, D)``."""

    name = "frontend"
    device = torch.device("cpu")

    def __call__(self, waves: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def output_shape(self, num_samples: int) -> tuple[int, int]:  # pragma: no cover - interface
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Spectral front ends
# ---------------------------------------------------------------------------------------------
def linear_filterbank(n_filters: int, n_fft: int) -> torch.Tensor:
    """Triangular filters equally spaced on a linear frequency axis: ``[n_filters, n_fft // 2 + 1]``."""
    n_bins = n_fft // 2 + 1
    edges = np.linspace(0.0, n_bins - 1, n_filters + 2)
    bins = np.arange(n_bins, dtype=np.float64)[None, :]
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins - left) / np.maximum(centre - left, 1e-9)
    down = (right - bins) / np.maximum(right - centre, 1e-9)
    return torch.from_numpy(np.clip(np.minimum(up, down), 0.0, None)).float()


def dct_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """Orthonormal DCT-II as a matrix ``[n_in, n_out]`` (``x @ M`` = the first ``n_out`` coefficients)."""
    n = np.arange(n_in)[:, None]
    k = np.arange(n_out)[None, :]
    mat = np.cos(np.pi / n_in * (n + 0.5) * k) * np.sqrt(2.0 / n_in)
    mat[:, 0] /= np.sqrt(2.0)
    return torch.from_numpy(mat).float()


def deltas(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """Regression deltas along time of ``[B, T, D]`` (edges replicated), as in HTK/Kaldi.

    >>> deltas(torch.arange(6.0).view(1, 6, 1))[0, 2:4, 0].tolist()
    [1.0, 1.0]
    """
    padded = torch.cat([x[:, :1].expand(-1, width, -1), x, x[:, -1:].expand(-1, width, -1)], dim=1)
    t = x.shape[1]
    num = sum(
        n * (padded[:, width + n : width + n + t] - padded[:, width - n : width - n + t])
        for n in range(1, width + 1)
    )
    return num / (2 * sum(n * n for n in range(1, width + 1)))


class SpectralFrontEnd(FrontEnd):
    """Power spectrum -> filterbank -> log [-> DCT (+ deltas)], batched with torch."""

    def __init__(
        self,
        name: str,
        filterbank: torch.Tensor,
        n_fft: int,
        win_length: int,
        hop_length: int,
        n_coeffs: int | None,
        use_deltas: bool,
        device: torch.device,
    ):
        if win_length > n_fft:
            raise FrontEndError(
                f"frontend.win_length ({win_length}) must not exceed frontend.n_fft ({n_fft})"
            )
        self.name = name
        self.device = device
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.window = torch.hann_window(win_length).to(device)
        self.filterbank = filterbank.to(device)
        self.dct = dct_matrix(filterbank.shape[0], n_coeffs).to(device) if n_coeffs else None
        self.use_deltas = use_deltas and n_coeffs is not None

    @property
    def dim(self) -> int:
        base = self.dct.shape[1] if self.dct is not None else self.filterbank.shape[0]
        return base * 3 if self.use_deltas else base

    def output_shape(self, num_samples: int) -> tuple[int, int]:
        return 1 + num_samples // self.hop_length, self.dim

    @torch.inference_mode()
    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        waves = waves.to(self.device, torch.float32)
        spec = torch.stft(
            waves,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect" if waves.shape[-1] > self.n_fft // 2 else "constant",
            return_complex=True,
        )
        power = spec.real**2 + spec.imag**2  # [B, F, T]
        feats = torch.log(torch.matmul(self.filterbank, power) + 1e-8).transpose(1, 2)  # [B, T, n_filters]
        if self.dct is not None:
            feats = feats @ self.dct
            if self.use_deltas:
                d1 = deltas(feats)
                feats = torch.cat([feats, d1, deltas(d1)], dim=-1)
        return feats.contiguous()


def build_lfcc(fcfg: Mapping, device: torch.device) -> SpectralFrontEnd:
    n_fft = int(fcfg["n_fft"])
    fb = linear_filterbank(int(fcfg["n_filters"]), n_fft)
    return SpectralFrontEnd(
        "lfcc", fb, n_fft, int(fcfg["win_length"]), int(fcfg["hop_length"]),
        int(fcfg["n_coeffs"]), bool(fcfg["deltas"]), device,
    )  # fmt: skip


def build_logmel(fcfg: Mapping, device: torch.device, sample_rate: int) -> SpectralFrontEnd:
    import librosa

    n_fft = int(fcfg["n_fft"])
    fb = torch.from_numpy(
        librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=int(fcfg["n_filters"]))
    ).float()
    return SpectralFrontEnd(
        "logmel", fb, n_fft, int(fcfg["win_length"]), int(fcfg["hop_length"]), None, False, device
    )


# ---------------------------------------------------------------------------------------------
# Hugging Face SSL encoders
# ---------------------------------------------------------------------------------------------
class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the wanted hidden state exists."""


def find_layer_list(model: nn.Module, num_layers: int) -> tuple[nn.Module, str]:
    """The ``nn.ModuleList`` of transformer layers (``encoder.layers`` for wav2vec2/HuBERT/WavLM)."""
    candidates = [
        (name, mod) for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) == num_layers and name.split(".")[-1] in ("layers", "layer")
    ]  # fmt: skip
    if not candidates:
        raise FrontEndError(f"cannot find the {num_layers} transformer layers of {type(model).__name__}")
    name, _ = min(candidates, key=lambda c: c[0].count("."))  # the outermost one
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None = plain float32). ``auto``: float32 on CPU, bf16 on CUDA."""
    if precision not in PRECISIONS:
        raise FrontEndError(f"frontend.precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "float32"
    if precision == "float32":
        return None
    if precision == "fp16" and device.type != "cuda":
        raise FrontEndError("frontend.precision=fp16 needs a CUDA device; use bf16 or float32 on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


class _PerClip(nn.Module):
    """Runs a module one clip at a time and stacks the results.

    The convolutional feature encoder of wav2vec2-style models produces a 512 x 16k activation per
    4 s clip; batched on a CPU these no longer fit the caches and the encoder runs slower than one
    clip at a time. Each clip's output is the same either way (convolutions and group norms act
    per clip).
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= 1:
            return self.inner(x)
        return torch.cat([self.inner(clip) for clip in x.split(1)], dim=0)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)


class HFSSLFrontEnd(FrontEnd):
    """``hidden_states[layer]`` of a Hugging Face audio encoder, computing only the layers it needs.

    ``hidden_states[0]`` is the input of the first transformer layer and ``hidden_states[k]`` the
    output of layer k (transformers 5 records them with hooks on the layers). We keep only the
    first ``max(k, 1)`` layers and hook the one that produces the wanted state, so the final
    encoder layer norm of stable-layer-norm models (applied after the last layer, not part of
    ``hidden_states[k]``) and every layer above k are never run.
    """

    name = "hf_ssl"

    def __init__(self, model_name: str, layer: int, precision: str, device: torch.device):
        from transformers import AutoConfig, AutoModel

        local = Path(model_name).exists()
        try:
            config = AutoConfig.from_pretrained(model_name, local_files_only=local)
            model = AutoModel.from_pretrained(model_name, local_files_only=local)
        except (OSError, ValueError) as err:
            raise FrontEndError(
                f"cannot load Hugging Face model '{model_name}' ({err}); give a local path or make sure the hub "
                "is reachable (or the model is in the HF cache)"
            ) from err
        num_layers = int(config.num_hidden_layers)
        k = layer if layer >= 0 else num_layers + 1 + layer
        if not 0 <= k <= num_layers:
            raise FrontEndError(f"frontend.layer={layer} out of range for a model with {num_layers} layers")
        self.layer, self.num_layers = k, num_layers
        self.model_name = model_name
        self.do_normalize = self._read_do_normalize(model_name, local)
        parent, attr = find_layer_list(model, num_layers)
        layers = getattr(parent, attr)
        setattr(parent, attr, nn.ModuleList(list(layers)[: max(k, 1)]))
        model.config.num_hidden_layers = max(k, 1)
        target = getattr(parent, attr)[max(k, 1) - 1]
        if k == 0:
            target.register_forward_pre_hook(self._capture_input, with_kwargs=True)
        else:
            target.register_forward_hook(self._capture_output)
        if device.type == "cpu" and isinstance(getattr(model, "feature_extractor", None), nn.Module):
            model.feature_extractor = _PerClip(model.feature_extractor)
        self.model = model.eval().to(device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = device
        self.precision = precision
        self.autocast_dtype = resolve_precision(precision, device)
        self.hidden_size = int(config.hidden_size)
        self.conv_layers = (
            list(zip(config.conv_kernel, config.conv_stride, strict=True))
            if hasattr(config, "conv_kernel")
            else None
        )
        self._captured: torch.Tensor | None = None

    @staticmethod
    def _read_do_normalize(model_name: str, local: bool) -> bool:
        from transformers import AutoFeatureExtractor

        try:
            fe = AutoFeatureExtractor.from_pretrained(model_name, local_files_only=local)
            return bool(getattr(fe, "do_normalize", True))
        except (OSError, ValueError) as err:
            log.warning(
                "no feature extractor config for %s (%s): normalising each utterance", model_name, err
            )
            return True

    def _capture_output(self, module, args, output):
        self._captured = output[0] if isinstance(output, tuple) else output
        raise _Captured

    def _capture_input(self, module, args, kwargs):
        self._captured = args[0] if args else kwargs["hidden_states"]
        raise _Captured

    def normalize(self, waves: torch.Tensor) -> torch.Tensor:
        """Zero mean, unit variance per utterance (the feature extractor's ``do_normalize``)."""
        if not self.do_normalize:
            return waves
        mean = waves.mean(dim=-1, keepdim=True)
        var = waves.var(dim=-1, keepdim=True, unbiased=False)
        return (waves - mean) / torch.sqrt(var + 1e-7)

    def output_shape(self, num_samples: int) -> tuple[int, int]:
        if self.conv_layers is None:
            with torch.inference_mode():
                return tuple(self(torch.zeros(1, num_samples) + 1e-3).shape[1:])  # type: ignore[return-value]
        t = num_samples
        for kernel, stride in self.conv_layers:
            t = (t - kernel) // stride + 1
        return t, self.hidden_size

    @torch.inference_mode()
    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        waves = self.normalize(waves.to(self.device, torch.float32))
        ctx = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        self._captured = None
        with ctx:
            try:
                self.model(waves)
            except _Captured:
                pass
        out, self._captured = self._captured, None
        if out is None:
            raise FrontEndError(f"hidden state {self.layer} of {self.model_name} was not produced")
        return out.float()


def build_frontend(
    frontend_cfg: Mapping, device: torch.device | str = "cpu", sample_rate: int = 16000
) -> FrontEnd:
    """The front end named by ``frontend_cfg['name']`` (``cfg.frontend``), on ``device``."""
    device = torch.device(device)
    name = frontend_cfg["name"]
    if name == "hf_ssl":
        return HFSSLFrontEnd(
            str(frontend_cfg["model"]),
            int(frontend_cfg["layer"]),
            str(frontend_cfg.get("precision", "auto")),
            device,
        )
    if name == "lfcc":
        return build_lfcc(frontend_cfg, device)
    if name == "logmel":
        return build_logmel(frontend_cfg, device, sample_rate)
    raise FrontEndError(f"unknown frontend.name {name!r}; choose hf_ssl, lfcc or logmel")


def frontend_settings(frontend_cfg: Mapping) -> dict:
    """The settings that matter for a front end (stored in the feature store's meta.json)."""
    name = frontend_cfg["name"]
    if name == "hf_ssl":
        keys = ("name", "model", "layer", "precision")
    elif name == "lfcc":
        keys = ("name", "n_fft", "win_length", "hop_length", "n_filters", "n_coeffs", "deltas")
    else:
        keys = ("name", "n_fft", "win_length", "hop_length", "n_filters")
    return {k: frontend_cfg[k] for k in keys}


__all__ = [
    "FrontEnd",
    "FrontEndError",
    "HFSSLFrontEnd",
    "SpectralFrontEnd",
    "build_frontend",
    "frontend_settings",
]
