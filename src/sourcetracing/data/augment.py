"""Data augmentation: reverberation (RIRS_NOISES), additive noise, music and babble (MUSAN), codecs.

Every version is made from the *clean* clip (the original baseline chained them, and added MUSAN
speech for "music" and "noise"). Randomness is seeded per clip and version, so a rerun
reproduces the same feature store::

    aug = Augmenter.from_config(cfg)
    rng = version_rng(cfg.seed, clip_id, "noise")
    noisy, info = aug.apply(clean, "noise", rng)   # info: the file(s), offsets and SNR used

Babble ("speech") sums 3-8 MUSAN speech segments, each at its own SNR drawn from the speech range
relative to the clean clip (the recipe the original followed); noise and music add one segment at
one SNR. "codec" encodes and decodes the clip with a random codec and setting (``codec_choices``,
through ``sourcetracing.data.codecs``); it needs no corpus.

Layouts read: ``<musan>/{noise,music,speech}/**/*.wav`` and ``<rirs>/simulated_rirs/**/*.wav``.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from sourcetracing.data.audio import AudioError, audio_info, crop_or_pad, load_audio
from sourcetracing.data.codecs import codec_roundtrip
from sourcetracing.errors import DataError

# Stable stream ids: the random draws of a version do not depend on the order of the version list.
# Append new versions with a new id; never renumber (stored features would silently change).
VERSION_IDS = {"original": 0, "reverb": 1, "noise": 2, "music": 3, "speech": 4, "codec": 5}
MUSAN_VERSIONS = ("noise", "music", "speech")
AUDIO_SUFFIXES = (".wav", ".flac")
CROP_STREAM = 100  # stream id of the crop draw
MAX_TRIES = 10  # unusable (silent, unreadable) noise files are redrawn this many times
# The "codec" version: a codec drawn uniformly, then each of its settings drawn from its list.
# Bumped whenever a version's recipe changes in code (it enters the feature-store hash, so a store
# made by an older recipe is never reused silently). 2: babble speakers each at their own SNR.
AUGMENT_RECIPE = 2

DEFAULT_CODEC_CHOICES: dict[str, dict[str, tuple[float, ...]]] = {
    "mp3": {"bitrate_kbps": (24, 32, 48, 64, 96, 128)},
    "opus": {"bitrate_kbps": (8, 12, 16, 24, 32, 48)},
    "vorbis": {"quality": (0, 2, 4, 6)},
}


class AugmentError(DataError):
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


def snr_db(clean: np.ndarray, added: np.ndarray) -> float:
    """The SNR of ``clean`` over ``added`` in dB (``inf`` when nothing was added)."""
    p_clean = float(np.mean(np.square(clean, dtype=np.float64)))
    p_added = float(np.mean(np.square(added, dtype=np.float64)))
    return float("inf") if p_added <= 0.0 else float(10.0 * np.log10(p_clean / p_added))


def mix_at_snr(
    clean: np.ndarray, sources: Sequence[np.ndarray], snrs_db: Sequence[float]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``clean`` plus every source scaled to its own SNR relative to ``clean``.

    Returns the float32 mixture and the scaled sources (what was added, one per source).

    >>> import numpy as np
    >>> x = np.ones(8, dtype=np.float32)
    >>> mix, added = mix_at_snr(x, [np.full(8, 3.0), np.full(8, -1.0)], [0.0, 20.0])
    >>> [round(snr_db(x, a), 6) for a in added], mix.tolist() == (x + added[0] + added[1]).tolist()
    ([0.0, 20.0], True)
    """
    if len(sources) != len(snrs_db):
        raise AugmentError(f"{len(sources)} sources but {len(snrs_db)} SNRs")
    clean = np.asarray(clean, dtype=np.float32)
    scaled = [
        (np.float32(snr_scale(clean, source, snr)) * np.asarray(source, dtype=np.float32)).astype(np.float32)
        for source, snr in zip(sources, snrs_db, strict=True)
    ]
    mixture = clean.copy()
    for source in scaled:
        mixture += source
    return mixture, scaled


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
    codec_choices: Mapping[str, Mapping[str, Sequence[float]]] = field(
        default_factory=lambda: DEFAULT_CODEC_CHOICES
    )

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
            codec_choices={k: dict(v) for k, v in a.codecs.items()},
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
            out, _, info = self.additive_parts(clean, version, rng)
            return out, info
        if version == "codec":
            return self._codec(clean, rng)
        raise AugmentError(f"unknown augmentation version '{version}'; known: {', '.join(VERSION_IDS)}")

    def make_versions(
        self, clean: np.ndarray, versions: list[str], seed: int, clip_id: str
    ) -> list[np.ndarray]:
        """All requested versions of one clip, each from the clean clip with its own seeded generator."""
        return [self.apply(clean, v, version_rng(seed, clip_id, v))[0] for v in versions]

    def draw_rir(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A random readable RIR from ``<rirs>/simulated_rirs/`` and its path."""
        files = self.files("reverb")
        for _ in range(MAX_TRIES):
            path = files[int(rng.integers(len(files)))]
            try:
                return load_audio(path, self.sample_rate), path
            except AudioError:
                continue
        raise AugmentError(f"no usable RIR found after {MAX_TRIES} draws under {self.rirs}")

    def _reverb(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        rir, path = self.draw_rir(rng)
        return reverberate(clean, rir), {"files": [path]}

    def _segment(self, path: str, num_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """A random ``num_samples`` segment of a noise file (wrap-padded when the file is shorter)."""
        file_sr, frames = audio_info(path)
        need_s = num_samples / self.sample_rate
        dur_s = frames / file_sr
        offset = float(rng.uniform(0.0, dur_s - need_s)) if dur_s > need_s else 0.0
        wave = load_audio(path, self.sample_rate, offset_s=offset, duration_s=min(need_s, dur_s))
        return crop_or_pad(wave, num_samples), offset

    def draw_segment(
        self, version: str, num_samples: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, str, float]:
        """A random non-silent ``num_samples`` segment of a random file of a MUSAN category:
        ``(segment, path, offset_s)``."""
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

    def additive_parts(
        self, clean: np.ndarray, version: str, rng: np.random.Generator
    ) -> tuple[np.ndarray, list[np.ndarray], dict]:
        """A MUSAN version as ``(mixture, added sources, info)``: noise and music add one segment at
        one SNR; babble ("speech") adds 3-8 speakers, each at its own SNR relative to the clean clip."""
        clean = np.asarray(clean, dtype=np.float32)
        lo, hi = self.snr[version]
        n_sources = (
            int(rng.integers(self.babble_speakers[0], self.babble_speakers[1] + 1))
            if version == "speech"
            else 1
        )
        segments, files, offsets, snrs = [], [], [], []
        for _ in range(n_sources):
            seg, path, offset = self.draw_segment(version, len(clean), rng)
            segments.append(seg)
            files.append(path)
            offsets.append(offset)
            snrs.append(float(rng.uniform(lo, hi)))
        out, added = mix_at_snr(clean, segments, snrs)
        info = {"files": files, "offsets": offsets, "snr_db": snrs[0]}
        if version == "speech":
            # the SNR of the whole babble, and the SNR each speaker was drawn at
            info["snr_db"] = snr_db(clean, np.sum(added, axis=0))
            info["speaker_snr_db"] = snrs
        return out, added, info

    def _codec(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
        """Encode and decode with a random codec (uniform), each setting drawn from its list."""
        codecs = sorted(self.codec_choices)
        if not codecs:
            raise AugmentError("augmentation 'codec' needs at least one codec in codec_choices")
        codec = codecs[int(rng.integers(len(codecs)))]
        setting = {}
        for name, values in sorted(self.codec_choices[codec].items()):
            if not len(values):
                raise AugmentError(f"codec_choices['{codec}']['{name}'] is empty")
            setting[name] = values[int(rng.integers(len(values)))]
        return codec_roundtrip(clean, self.sample_rate, codec, **setting), {"codec": codec, **setting}


def reverberate(clean: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with an energy-normalised RIR and trim to the input length."""
    rir = np.asarray(rir, dtype=np.float64)
    energy = float(np.sqrt(np.sum(rir**2)))
    if energy <= 0.0:
        raise AudioError("silent", "RIR has no energy")
    out = fftconvolve(np.asarray(clean, dtype=np.float64), rir / energy)[: len(clean)]
    return out.astype(np.float32)
