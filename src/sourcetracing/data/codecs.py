"""Codecs run in memory through libsndfile (``soundfile``): MP3, Opus and Vorbis.

:func:`codec_roundtrip` encodes and decodes a mono float32 wave; the output has exactly the input's
length, rate and alignment. The channel transforms (:mod:`sourcetracing.data.transforms`) and the
codec augmentation (:mod:`sourcetracing.data.augment`) both use it. MP3 is constant bit rate (LAME);
Opus is libopus' default VBR, whose real rate follows the target closely; Vorbis is quality-based VBR.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import soundfile as sf
from scipy.signal import correlate

from sourcetracing.data.audio import resample

# libsndfile's encoders accept these input rates; other rates are resampled to the next one up.
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class TransformError(ValueError):
    """A transform or condition is unknown, misconfigured or given an unusable wave."""


def check_wave(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """The wave as a contiguous float32 vector; a clear error for anything else."""
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise TransformError(f"expected a mono wave (1-D array), got shape {wave.shape}")
    if wave.size == 0:
        raise TransformError("the wave is empty")
    if not np.issubdtype(wave.dtype, np.floating):
        raise TransformError(f"expected a float wave in [-1, 1], got dtype {wave.dtype}")
    if not np.isfinite(wave).all():
        raise TransformError("the wave contains NaN or infinite samples")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise TransformError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    return np.ascontiguousarray(wave, dtype=np.float32)


def _mp3_settings(sample_rate: int, bitrate_kbps: float) -> dict:
    """Constant bit rate MP3: libsndfile maps compression_level c linearly onto the LAME bit rate.

    The range depends on the MPEG version the rate implies: [32, 320] kbit/s from 32 kHz (MPEG-1),
    [8, 160] from 16 kHz (MPEG-2), [8, 64] below (MPEG-2.5); libsndfile truncates
    ``high - c * (high - low)`` to an integer and LAME snaps it to a standard rate.
    """
    low, high = (32, 320) if sample_rate >= 32000 else (8, 160) if sample_rate >= 16000 else (8, 64)
    if not low <= bitrate_kbps <= high:
        raise TransformError(
            f"MP3 at {sample_rate} Hz supports {low}-{high} kbit/s, got bitrate_kbps={bitrate_kbps}"
        )
    # half a kbit/s above the target so that the truncation lands on it
    level = min(max((high - bitrate_kbps - 0.5) / (high - low), 0.0), 1.0)
    return {
        "format": "MP3",
        "subtype": "MPEG_LAYER_III",
        "compression_level": level,
        "bitrate_mode": "CONSTANT",
    }


def _opus_settings(sample_rate: int, bitrate_kbps: float) -> dict:
    """Opus (VBR): libsndfile sets the target bit rate ``6 + (1 - c) * 250`` kbit/s per channel."""
    if not 6 <= bitrate_kbps <= 256:
        raise TransformError(f"Opus supports 6-256 kbit/s, got bitrate_kbps={bitrate_kbps}")
    level = 1.0 - (bitrate_kbps - 6.0) / 250.0
    return {"format": "OGG", "subtype": "OPUS", "compression_level": level}


def _vorbis_settings(sample_rate: int, quality: float) -> dict:
    """Vorbis VBR at ``quality`` on the usual ``-q`` scale 0-10 (libsndfile: compression 1 - q/10)."""
    if not 0 <= quality <= 10:
        raise TransformError(f"Vorbis quality must lie in 0-10, got quality={quality}")
    return {"format": "OGG", "subtype": "VORBIS", "compression_level": 1.0 - quality / 10.0}


CODECS: dict[str, tuple[Callable[..., dict], tuple[int, ...] | None]] = {
    "mp3": (_mp3_settings, MP3_RATES),
    "opus": (_opus_settings, OPUS_RATES),
    "vorbis": (_vorbis_settings, None),
}


def _coding_rate(codec: str, sample_rate: int) -> int:
    """The rate the codec runs at: the input's, else the next supported rate up (or the highest)."""
    rates = CODECS[codec][1]
    if rates is None or sample_rate in rates:
        return sample_rate
    return next((r for r in rates if r >= sample_rate), rates[-1])


def encode(wave: np.ndarray, sample_rate: int, codec: str, **setting: float) -> tuple[bytes, int]:
    """The encoded file (bytes, in memory) and the rate it was coded at.

    ``setting`` is ``bitrate_kbps`` for mp3 and opus, ``quality`` (0-10) for vorbis.
    """
    if codec not in CODECS:
        raise TransformError(f"unknown codec '{codec}'; known: {', '.join(CODECS)}")
    wave = check_wave(wave, sample_rate)
    rate = _coding_rate(codec, int(sample_rate))
    options = CODECS[codec][0](rate, **setting)
    buffer = io.BytesIO()
    sf.write(buffer, resample(wave, int(sample_rate), rate), rate, **options)
    return buffer.getvalue(), rate


def encoded_bitrate_kbps(wave: np.ndarray, sample_rate: int, codec: str, **setting: float) -> float:
    """The real bit rate of the encoded file: bytes x 8 / duration (container and tags included)."""
    data, _ = encode(wave, sample_rate, codec, **setting)
    return len(data) * 8 / (len(wave) / sample_rate) / 1000.0


def align_to(decoded: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``decoded`` cut to ``reference``'s length, after removing a leading codec delay.

    The decoder may return extra samples (encoder priming and decoder delay when the file carries
    no gapless information, plus end padding). The delay is the lag in ``[0, extra]`` that best
    cross-correlates with the reference; a short decode is zero-padded at the end.
    """
    extra = len(decoded) - len(reference)
    lag = 0
    if extra > 0:
        scores = correlate(
            decoded.astype(np.float64), reference.astype(np.float64), mode="valid", method="fft"
        )
        lag = int(np.argmax(scores))
    return fit_length(decoded[lag:], len(reference))


def fit_length(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """The first ``num_samples`` of ``wave``, zero-padded at the end when it is shorter (float32)."""
    out = np.zeros(num_samples, dtype=np.float32)
    out[: min(num_samples, len(wave))] = wave[:num_samples]
    return out


def codec_roundtrip(wave: np.ndarray, sample_rate: int, codec: str, **setting: float) -> np.ndarray:
    """Encode and decode in memory; same length, rate and alignment as the input."""
    wave = check_wave(wave, sample_rate)
    data, rate = encode(wave, sample_rate, codec, **setting)
    decoded, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    decoded = resample(np.ascontiguousarray(decoded[:, 0]), rate, int(sample_rate))
    return align_to(decoded, wave)
