"""Transmission channels for the demo corpus: what happens to a clip between synthesizer and listener.

``apply_channel`` draws one channel from a random generator and applies it: a lossy codec (MP3,
Opus or Vorbis, encoded and decoded in memory with ``soundfile``), a detour through a low sample
rate (8 or 11.025 kHz and back), a level change, or mild added noise. The output has the input's
length and sample rate, and the same generator state gives the same audio and description.

Every system of the hard demo plan passes a share of its clips through a channel, so that a
channel never identifies a system. The codecs and the low-rate detour are the library's
transforms (:mod:`sourcetracing.data.transforms`), so the corpus and the toolkit's robustness
conditions degrade audio the same way.

>>> import numpy as np
>>> wave = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32) * 0.1
>>> out, text = apply_channel(wave, 16000, np.random.default_rng(12))
>>> out.shape == wave.shape, out.dtype, text
(True, dtype('float32'), 'resample 8000 Hz')
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sourcetracing.data.transforms import codec_roundtrip, resample_roundtrip

# codec -> (its setting, the range drawn from): low bit rates / qualities, as found in the wild
CODECS: dict[str, tuple[str, tuple[float, float]]] = {
    "mp3": ("bitrate_kbps", (24.0, 48.0)),
    "opus": ("bitrate_kbps", (8.0, 24.0)),
    "vorbis": ("quality", (0.0, 4.0)),
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
    value: float  # codec bit rate (kbit/s) or quality, low rate (Hz), gain (dB) or SNR (dB)
    colour: str = ""  # noise only

    @property
    def description(self) -> str:
        """A short human-readable name, e.g. ``mp3 32 kbit/s`` or ``noise pink 22 dB``."""
        if self.kind in CODECS:
            unit = " kbit/s" if CODECS[self.kind][0] == "bitrate_kbps" else " quality"
            return f"{self.kind} {self.value:g}{unit}"
        if self.kind == "resample":
            return f"resample {self.value:g} Hz"
        if self.kind == "gain":
            return f"gain {self.value:+.1f} dB"
        return f"noise {self.colour} {self.value:.0f} dB"


def draw_channel(rng: np.random.Generator) -> Channel:
    """Draw a channel (kinds equally likely); the first draws of ``rng`` are used."""
    kind = KINDS[int(rng.integers(len(KINDS)))]
    if kind in CODECS:
        low, high = CODECS[kind][1]
        return Channel(kind, float(round(rng.uniform(low, high))))
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
        y = codec_roundtrip(x, sample_rate, channel.kind, **{CODECS[channel.kind][0]: channel.value})
    elif channel.kind == "resample":
        y = resample_roundtrip(x, sample_rate, rng, via_rate=int(channel.value))
    elif channel.kind == "gain":
        y = x * np.float32(10 ** (channel.value / 20))
    else:
        y = x + _noise(rng, len(x), channel.colour, _rms(x) / 10 ** (channel.value / 20))
    return np.clip(y, -1.0, 1.0).astype(np.float32), channel.description


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


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
