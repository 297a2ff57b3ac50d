"""Data augmentation: reverberation (RIRS_NOISES) and additive noise, music and babble (MUSAN).

Every version is made from the *clean* clip (the original baseline chained them, and added MUSAN
speech for "music" and "noise"). Randomness is seeded per clip and version, so a rerun
reproduces the same feature store::

    aug = Augmenter.from_config(cfg)
    rng = version_rng(cfg.seed, clip_id, "noise")
    noisy, info = aug.apply(clean, "noise", rng)   # info: the file(s), offsets and SNR used

Layouts read: ``<musan>/{noise,music,speech}/**/*.wav`` and ``<rirs>/simulated_rirs/**/*.wav``.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from sourcetracing.data.audio import AudioError, audio_info, crop_or_pad, load_audio

# Stable stream ids: the random draws of a version do not depend on the order of the version list.
VERSION_IDS = {"original": 0, "reverb": 1, "noise": 2, "music": 3, "speech": 4}
MUSAN_VERSIONS = ("noise", "music", "speech")
AUDIO_SUFFIXES = (".wav", ".flac")
CROP_STREAM = 100  # stream id of the crop draw
MAX_TRIES = 10  # unusable (silent, unreadable) noise files are redrawn this many times


class AugmentError(RuntimeError):
    """Augmentation cannot run (missing corpus, unusable files)."""


def clip_rng(seed: int, clip_id: str, stream: int) -> np.random.Generator:
    """A generator seeded by (experiment seed, clip id, stream): reproducible, independent per clip.

    >>> a = clip_rng(0, "fake/en/m/a.wav", 1).random()
    >>> a == clip_rng(0, "fake/en/m/a.wav", 1).random(), a == clip_rng(0, "fake/en/m/b.wav", 1).random()
    (True, False)
    """
    return np.random.default_rng([int(seed), zlib.crc32(clip_id.encode()), int(stream)])


def version_rng(seed: int, clip_id: str, version: str) -> np.random.Generator:
    """The generator of one augmentation version of one clip."""
    return clip_rng(seed, clip_id, VERSION_IDS[version])


def crop_rng(seed: int, clip_id: str) -> np.random.Generator:
    """The generator of a clip's random (train) crop."""
    return clip_rng(seed, clip_id, CROP_STREAM)


@lru_cache(maxsize=64)
def list_audio_files(folder: str) -> tuple[str, ...]:
    """Sorted audio files under a folder (cached per process, i.e. once per DataLoader worker)."""
    root = Path(folder)
    if not root.is_dir():
        return ()
    return tuple(
        sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    )


def snr_scale(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> float:
    """The factor that puts ``noise`` at ``snr_db`` below ``clean`` (power ratio).

    >>> import numpy as np
    >>> x = np.ones(100, dtype=np.float32); n = np.full(100, 2.0, dtype=np.float32)
    >>> round(float(10 * np.log10(np.mean(x**2) / np.mean((snr_scale(x, n, 6.0) * n) ** 2))), 4)
    6.0
    """
    p_clean = float(np.mean(np.square(clean, dtype=np.float64)))
    p_noise = float(np.mean(np.square(noise, dtype=np.float64)))
    if p_noise <= 0.0:
        raise AugmentError("noise segment has no energy")
    return float(np.sqrt(p_clean / (p_noise * 10.0 ** (snr_db / 10.0))))


@dataclass
class Augmenter:
    """Makes the augmented versions of a clean clip; the file lists are read lazily and cached."""

    musan: str
    rirs: str
    snr: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {"noise": (0.0, 15.0), "music": (5.0, 15.0), "speech": (13.0, 20.0)}
    )
    babble_speakers: tuple[int, int] = (3, 8)
    sample_rate: int = 16000

    @classmethod
    def from_config(cls, cfg) -> Augmenter:
        a = cfg.augment
        return cls(
            musan=str(a.musan),
            rirs=str(a.rirs),
            snr={
                "noise": tuple(a.snr_noise),
                "music": tuple(a.snr_music),
                "speech": tuple(a.snr_speech),
            },
            babble_speakers=(int(a.babble_speakers[0]), int(a.babble_speakers[1])),
            sample_rate=int(cfg.data.sample_rate),
        )

    # -- file lists -------------------------------------------------------------------------
    def files(self, version: str) -> tuple[str, ...]:
        """The audio files a version draws from (its own MUSAN category, or the simulated RIRs)."""
        folder = Path(self.rirs) / "simulated_rirs" if version == "reverb" else Path(self.musan) / version
        files = list_audio_files(str(folder))
        if not files:
            layout = "RIRS_NOISES" if version == "reverb" else "MUSAN"
            raise AugmentError(f"augmentation '{version}' needs audio files under {folder} ({layout} layout)")
        return files

    # -- versions -----------------------------------------------------------------------------
    def apply(self, clean: np.ndarray, version: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """One version of ``clean`` (same length, float32) and what was drawn (files, offsets, SNR)."""
        clean = np.asarray(clean, dtype=np.float32)
        if version == "original":
            return clean.copy(), {}
        if version == "reverb":
            return self._reverb(clean, rng)
        if version in MUSAN_VERSIONS:
            return self._additive(clean, version, rng)
        raise AugmentError(f"unknown augmentation version '{version}'; known: {', '.join(VERSION_IDS)}")

    def make_versions(
        self, clean: np.ndarray, versions: list[str], seed: int, clip_id: str
    ) -> list[np.ndarray]:
        """All requested versions of one clip, each from the clean clip with its own seeded generator."""
        return [self.apply(clean, v, version_rng(seed, clip_id, v))[0] for v in versions]

    def _reverb(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        files = self.files("reverb")
        for _ in range(MAX_TRIES):
            path = files[int(rng.integers(len(files)))]
            try:
                rir = load_audio(path, self.sample_rate)
            except AudioError:
                continue
            return reverberate(clean, rir), {"files": [path]}
        raise AugmentError(f"no usable RIR found after {MAX_TRIES} draws under {self.rirs}")

    def _segment(self, path: str, num_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """A random ``num_samples`` segment of a noise file (wrap-padded when the file is shorter)."""
        file_sr, frames = audio_info(path)
        need_s = num_samples / self.sample_rate
        dur_s = frames / file_sr
        offset = float(rng.uniform(0.0, dur_s - need_s)) if dur_s > need_s else 0.0
        wave = load_audio(path, self.sample_rate, offset_s=offset, duration_s=min(need_s, dur_s))
        return crop_or_pad(wave, num_samples), offset

    def _draw_segment(
        self, version: str, num_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, str, float]:
        files = self.files(version)
        for _ in range(MAX_TRIES):
            path = files[int(rng.integers(len(files)))]
            try:
                seg, offset = self._segment(path, num_samples, rng)
            except AudioError:
                continue
            if float(np.mean(np.square(seg))) > 0.0:
                return seg, path, offset
        raise AugmentError(
            f"no usable '{version}' file found after {MAX_TRIES} draws under {self.musan}/{version}"
        )

    def _additive(self, clean: np.ndarray, version: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        n = len(clean)
        lo, hi = self.snr[version]
        n_sources = (
            int(rng.integers(self.babble_speakers[0], self.babble_speakers[1] + 1))
            if version == "speech"
            else 1
        )
        noise = np.zeros(n, dtype=np.float32)
        files, offsets = [], []
        for _ in range(n_sources):
            seg, path, offset = self._draw_segment(version, n, rng)
            noise += seg
            files.append(path)
            offsets.append(offset)
        if float(np.mean(np.square(noise))) <= 0.0:  # babble segments that cancel out: vanishingly rare
            raise AugmentError(f"'{version}' noise has no energy ({files})")
        snr_db = float(rng.uniform(lo, hi))
        out = clean + np.float32(snr_scale(clean, noise, snr_db)) * noise
        return out.astype(np.float32, copy=False), {"files": files, "offsets": offsets, "snr_db": snr_db}


def reverberate(clean: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with an energy-normalised RIR and trim to the input length."""
    rir = np.asarray(rir, dtype=np.float64)
    energy = float(np.sqrt(np.sum(rir**2)))
    if energy <= 0.0:
        raise AudioError("silent", "RIR has no energy")
    out = fftconvolve(np.asarray(clean, dtype=np.float64), rir / energy)[: len(clean)]
    return out.astype(np.float32)
