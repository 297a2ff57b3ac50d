"""Transmission channels for the demo corpus: what happens to a clip between synthesizer and listener.

``apply_channel`` draws one channel from a random generator and applies it: a lossy codec (MP3,
Opus or Vorbis, encoded and decoded in memory with ``soundfile``), a detour through a low sample
rate (8 or 11.025 kHz and back), a level change, or mild added noise. The output has the input's
length and sample rate, and the same generator state gives the same audio and description.

Every system of the hard demo plan passes a share of its clips through a channel, so that a
channel never identifies a system. The codecs will move to the library's
``sourcetracing.data.transforms`` when it exists; this module then calls it.

>>> import numpy as np
>>> wave = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32) * 0.1
>>> out, text = apply_channel(wave, 16000, np.random.default_rng(12))
>>> out.shape == wave.shape, out.dtype, text
(True, dtype('float32'), 'resample 8000 Hz')
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

# (soundfile format, subtype, range of compression_level: 0 = best quality, 1 = smallest file)
CODECS: dict[str, tuple[str, str, tuple[float, float]]] = {
    "mp3": ("MP3", "MPEG_LAYER_III", (0.6, 0.95)),  # about 48 down to 24 kbit/s at 16 kHz
    "opus": ("OGG", "OPUS", (0.75, 0.95)),
    "vorbis": ("OGG", "VORBIS", (0.5, 0.9)),
}
LOW_RATES: tuple[int, ...] = (8000, 11025)
GAIN_DB: tuple[float, float] = (-20.0, -6.0)
NOISE_SNR_DB: tuple[float, float] = (15.0, 30.0)
NOISE_COLOURS: tuple[str, ...] = ("white", "pink")
KINDS: tuple[str, ...] = (*CODECS, "resample", "gain", "noise")


@dataclass(frozen=True)
class Channel:
    """One drawn channel: its kind and its one setting."""

    kind: str  # one of KINDS
    value: float  # compression level, low rate (Hz), gain (dB) or SNR (dB)
    colour: str = ""  # noise only

    @property
    def description(self) -> str:
        """A short human-readable name, e.g. ``mp3 level 0.80`` or ``noise pink 22 dB``."""
        if self.kind in CODECS:
            return f"{self.kind} level {self.value:.2f}"
        if self.kind == "resample":
            return f"resample {self.value:g} Hz"
        if self.kind == "gain":
            return f"gain {self.value:+.1f} dB"
        return f"noise {self.colour} {self.value:.0f} dB"


def draw_channel(rng: np.random.Generator) -> Channel:
    """Draw a channel (kinds equally likely); the first draws of ``rng`` are used."""
    kind = KINDS[int(rng.integers(len(KINDS)))]
    if kind in CODECS:
        low, high = CODECS[kind][2]
        return Channel(kind, round(float(rng.uniform(low, high)), 2))
    if kind == "resample":
        return Channel(kind, float(LOW_RATES[int(rng.integers(len(LOW_RATES)))]))
    if kind == "gain":
        return Channel(kind, round(float(rng.uniform(*GAIN_DB)), 1))
    colour = NOISE_COLOURS[int(rng.integers(len(NOISE_COLOURS)))]
    return Channel(kind, round(float(rng.uniform(*NOISE_SNR_DB))), colour)


def describe_channel(seed: int) -> str:
    """The description ``apply_channel`` gives for a generator seeded with ``seed``."""
    return draw_channel(np.random.default_rng(seed)).description


def apply_channel(wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Pass mono ``wave`` through a channel drawn from ``rng``; returns (float32 audio, description).

    The result has the input's length and rate and lies in [-1, 1].
    """
    x = np.asarray(wave, np.float32)
    if x.ndim != 1:
        raise ValueError(f"apply_channel expects mono audio (1-D), got shape {x.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    channel = draw_channel(rng)
    if x.size == 0:
        return x.copy(), channel.description
    if channel.kind in CODECS:
        y = _codec(x, sample_rate, channel.kind, channel.value)
    elif channel.kind == "resample":
        y = _resample_detour(x, sample_rate, int(channel.value))
    elif channel.kind == "gain":
        y = x * np.float32(10 ** (channel.value / 20))
    else:
        y = x + _noise(rng, len(x), channel.colour, _rms(x) / 10 ** (channel.value / 20))
    return np.clip(y, -1.0, 1.0).astype(np.float32), channel.description


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _codec(x: np.ndarray, sample_rate: int, kind: str, level: float) -> np.ndarray:
    """Encode and decode in memory; a decoder that adds samples (MP3 priming) is re-aligned."""
    import soundfile as sf

    fmt, subtype, _ = CODECS[kind]
    buffer = io.BytesIO()
    sf.write(buffer, x, sample_rate, format=fmt, subtype=subtype, compression_level=level)
    buffer.seek(0)
    y, rate = sf.read(buffer, dtype="float32")
    if rate != sample_rate:
        raise RuntimeError(f"{kind} decoder returned {rate} Hz for {sample_rate} Hz audio")
    return _align(y.reshape(len(y), -1).mean(axis=1), x)


def _align(y: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``y`` cut (at its best-correlating lag) or zero-padded to the length of ``reference``."""
    n = len(reference)
    extra = len(y) - n
    if extra > 0:
        window = reference[: min(n, 8192)].astype(np.float64)
        scores = [float(np.dot(y[lag : lag + len(window)], window)) for lag in range(extra + 1)]
        lag = int(np.argmax(scores))
        return y[lag : lag + n]
    return np.pad(y, (0, -extra)) if extra < 0 else y


def _resample_detour(x: np.ndarray, sample_rate: int, low_rate: int) -> np.ndarray:
    import soxr

    down = soxr.resample(x, sample_rate, low_rate, quality="HQ")
    return _align(soxr.resample(down, low_rate, sample_rate, quality="HQ"), x)


def _noise(rng: np.random.Generator, n: int, colour: str, rms: float) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1] if n > 2 else 1.0
        spectrum /= np.sqrt(freqs)
        spectrum[0] = 0.0
        white = np.fft.irfft(spectrum, n)
    scale = rms / max(_rms(white), 1e-12)
    return (white * scale).astype(np.float32)
