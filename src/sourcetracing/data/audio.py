"""Audio input: decode any file to 16 kHz mono float32, reject unusable clips, crop or wrap-pad.

>>> import numpy as np
>>> crop_or_pad(np.arange(5, dtype=np.float32), 8).tolist()
[0.0, 1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 2.0]
>>> crop_or_pad(np.arange(5, dtype=np.float32), 3).tolist()
[0.0, 1.0, 2.0]
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from sourcetracing.errors import DataError

SILENCE_PEAK = 1e-5  # a clip whose peak is below this (-100 dBFS) counts as silent


class AudioError(DataError):
    """A clip cannot be used; ``reason`` is a short machine-friendly cause (``unreadable``, ``empty``, ...)."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@lru_cache(maxsize=65536)
def audio_info(path: str) -> tuple[int, int]:
    """``(sample_rate, frames)`` of a file, cached (used to pick random segments of long noise files)."""
    import soundfile as sf

    try:
        info = sf.info(path)
    except Exception as err:  # noqa: BLE001 - soundfile raises several types
        raise AudioError("unreadable", describe_unreadable(path)) from err
    return int(info.samplerate), int(info.frames)


def describe_unreadable(path: str | Path) -> str:
    """Why a file cannot be decoded, in words (libsndfile says "does not exist" for any bad file).

    >>> describe_unreadable("/no/such/file.wav")
    '/no/such/file.wav: no such file'
    """
    p = Path(path)
    if not p.exists():
        return f"{p}: no such file"
    if not p.is_file():
        return f"{p}: not a regular file"
    size = p.stat().st_size
    if size == 0:
        return f"{p}: empty file (0 bytes)"
    with open(p, "rb") as fh:
        head = fh.read(512)
    if head[:4] == b"RIFF":
        kind = "a RIFF/WAV header but undecodable audio data (truncated or corrupt?)"
    elif head[:4] in (b"fLaC", b"OggS") or head[:3] == b"ID3" or head[:2] in (b"\xff\xfb", b"\xff\xf3"):
        kind = "an audio header but undecodable data (truncated or corrupt?)"
    elif all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        kind = "text, not audio"
    else:
        kind = "not a decodable audio file"
    return f"{p}: {kind} ({size} bytes)"


def _read(path: str, start: int, frames: int) -> tuple[np.ndarray, int]:
    """Decode (part of) a file as float32 ``[samples, channels]`` with soundfile, librosa as fallback."""
    import soundfile as sf

    try:
        data, sr = sf.read(path, start=start, frames=frames, dtype="float32", always_2d=True)
        return data, int(sr)
    except Exception as sf_err:  # noqa: BLE001 - fall back to audioread-backed decoders (m4a, aac...)
        if not Path(path).is_file() or (
            Path(path).suffix.lstrip(".").upper() in sf.available_formats()
            or Path(path).suffix.lower() == ".mp3"
        ):  # missing, or a format libsndfile knows: broken
            raise AudioError("unreadable", describe_unreadable(path)) from sf_err
        try:
            import librosa

            data, sr = librosa.load(path, sr=None, mono=False)
        except Exception as err:  # noqa: BLE001
            raise AudioError("unreadable", describe_unreadable(path)) from err
        data = np.atleast_2d(np.asarray(data, dtype=np.float32)).T
        end = None if frames < 0 else start + frames
        return data[start:end], int(sr)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Band-limited resampling (soxr, high quality) of a mono float32 array."""
    if orig_sr == target_sr:
        return wave
    import soxr

    return soxr.resample(wave, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | Path,
    sample_rate: int = 16000,
    offset_s: float = 0.0,
    duration_s: float | None = None,
    min_len_s: float = 0.0,
) -> np.ndarray:
    """Read a clip as float32 mono at ``sample_rate``; stereo is averaged, other rates resampled.

    ``offset_s``/``duration_s`` read only a segment (in seconds of the file). Raises ``AudioError``
    with reason ``unreadable``, ``empty``, ``nan_or_inf``, ``silent`` or ``too_short`` (shorter
    than ``min_len_s``).
    """
    path = str(path)
    start = 0
    frames = -1
    if offset_s or duration_s is not None:
        file_sr, _ = audio_info(path)
        start = int(round(offset_s * file_sr))
        frames = -1 if duration_s is None else max(1, int(round(duration_s * file_sr)))
    data, sr = _read(path, start, frames)
    if data.size == 0 or data.shape[0] == 0:
        raise AudioError("empty", path)
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(wave).all():
        raise AudioError("nan_or_inf", path)
    if float(np.max(np.abs(wave))) < SILENCE_PEAK:
        raise AudioError("silent", path)
    wave = resample(np.ascontiguousarray(wave, dtype=np.float32), sr, sample_rate)
    if wave.size == 0:
        raise AudioError("empty", f"{path} (shorter than one sample after resampling)")
    if wave.size < min_len_s * sample_rate:
        raise AudioError(
            "too_short", f"{path}: {wave.size / sample_rate:.3f} s, shorter than data.min_len_s={min_len_s}"
        )
    return wave


def clip_samples(cfg) -> int:
    """The crop length in samples: ``data.max_len_s`` at ``data.sample_rate``."""
    return int(round(float(cfg.data.max_len_s) * int(cfg.data.sample_rate)))


def crop_or_pad(wave: np.ndarray, num_samples: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Exactly ``num_samples`` samples: a crop (random with ``rng``, else from the start) or wrap padding.

    Wrap padding tiles the clip (``np.resize``) as the original baseline did, so no silence is added.
    """
    n = len(wave)
    if n == 0:
        raise AudioError("empty", "cannot crop an empty wave")
    if n < num_samples:
        return np.resize(wave, num_samples).astype(np.float32, copy=False)
    start = 0 if rng is None or n == num_samples else int(rng.integers(0, n - num_samples + 1))
    return np.ascontiguousarray(wave[start : start + num_samples], dtype=np.float32)
