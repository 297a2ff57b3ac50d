"""Spectral front ends in torch (no weights): ``lfcc`` (linear-frequency cepstra + deltas) and ``logmel``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from sourcetracing.components import FRONTENDS
from sourcetracing.features.frontends import FrontEnd, FrontEndError, to_device

STFT_DEFAULTS = {"n_fft": 512, "win_length": 320, "hop_length": 160, "level": "none"}
LEVELS = ("none", "rms")
TARGET_RMS = 0.05  # about -26 dBFS: the level every clip is brought to with ``level: rms``


def normalise_level(waves: torch.Tensor, target_rms: float = TARGET_RMS) -> torch.Tensor:
    """Each waveform scaled to the same root-mean-square level (silent rows are left as they are).

    A clip played 20 dB quieter gives the same features afterwards:

    >>> w = torch.randn(1, 1600)
    >>> bool(torch.allclose(normalise_level(w), normalise_level(0.1 * w), atol=1e-6))
    True
    """
    rms = waves.pow(2).mean(dim=-1, keepdim=True).sqrt()
    return torch.where(rms > 1e-8, waves * (target_rms / rms.clamp_min(1e-8)), waves)


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
        level: str = "none",
    ):
        if level not in LEVELS:
            raise FrontEndError(f"frontend.{name}.level must be one of {LEVELS}, got {level!r}")
        if win_length > n_fft:
            raise FrontEndError(
                f"frontend.{name}.win_length ({win_length}) must not exceed frontend.{name}.n_fft ({n_fft})"
            )
        self.name = name
        self.device = device
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.window = torch.hann_window(win_length).to(device)
        self.filterbank = filterbank.to(device)
        self.dct = dct_matrix(filterbank.shape[0], n_coeffs).to(device) if n_coeffs else None
        self.use_deltas = use_deltas and n_coeffs is not None
        self.level = level

    @property
    def dim(self) -> int:
        base = self.dct.shape[1] if self.dct is not None else self.filterbank.shape[0]
        return base * 3 if self.use_deltas else base

    def output_shape(self, num_samples: int) -> tuple[int, int]:
        return 1 + num_samples // self.hop_length, self.dim

    @torch.inference_mode()
    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        waves = to_device(waves, self.device)
        if self.level == "rms":
            waves = normalise_level(waves)
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


@FRONTENDS.register("lfcc", defaults={**STFT_DEFAULTS, "n_filters": 70, "n_coeffs": 20, "deltas": True})
def build_lfcc(settings: Mapping, device: torch.device, sample_rate: int) -> SpectralFrontEnd:
    """Linear-frequency cepstral coefficients with deltas and delta-deltas."""
    n_fft = int(settings["n_fft"])
    fb = linear_filterbank(int(settings["n_filters"]), n_fft)
    return SpectralFrontEnd(
        "lfcc", fb, n_fft, int(settings["win_length"]), int(settings["hop_length"]),
        int(settings["n_coeffs"]), bool(settings["deltas"]), device, str(settings["level"]),
    )  # fmt: skip


@FRONTENDS.register("logmel", defaults={**STFT_DEFAULTS, "n_mels": 80})
def build_logmel(settings: Mapping, device: torch.device, sample_rate: int) -> SpectralFrontEnd:
    """Log mel filterbank energies."""
    import librosa

    n_fft = int(settings["n_fft"])
    fb = torch.from_numpy(
        librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=int(settings["n_mels"]))
    ).float()
    return SpectralFrontEnd(
        "logmel", fb, n_fft, int(settings["win_length"]), int(settings["hop_length"]), None, False, device,
        str(settings["level"]),
    )  # fmt: skip
