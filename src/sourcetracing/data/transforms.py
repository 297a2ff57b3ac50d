"""Channel transforms: codecs, band limits, noise, reverberation, level, clipping and short clips.

A *transform* is a registered function ``f(wave, sample_rate, rng, **params) -> wave`` of a mono
float32 wave; it is deterministic for a given ``numpy.random.Generator`` state and never touches
files other than reading noise or RIR files. A *condition* is a named transform with its
parameters, built from plain data (a config section, a YAML file)::

    conditions = build_conditions({"mp3_32k": {"transform": "mp3", "bitrate_kbps": 32}})
    conditions = build_conditions(["clean", "mp3_64k", "noise_10db"], musan="data/musan")
    degraded = conditions["noise_10db"](wave, 16000, condition_rng(0, clip_id, "noise_10db"))

``DEFAULT_CONDITIONS`` lists the conditions the toolkit offers. Codecs run through libsndfile
(``soundfile``) entirely in memory (:mod:`sourcetracing.data.codecs`); their output has exactly the
input's length and alignment. MP3 is constant bit rate (LAME); Opus is libopus' default VBR, whose
real rate follows the target closely; Vorbis is quality-based VBR, so its conditions are named by
quality (``-q`` scale).
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.signal import butter, sosfiltfilt

from sourcetracing.data.audio import resample
from sourcetracing.data.augment import Augmenter, mix_at_snr, reverberate
from sourcetracing.data.codecs import TransformError, check_wave, codec_roundtrip, fit_length

Transform = Callable[..., np.ndarray]
TRANSFORMS: dict[str, Transform] = {}
CONDITION_STREAM = 200  # seeds condition generators apart from the augmentation streams
# Bumped whenever a transform's output changes in code: it enters the hash of feature stores made
# under conditions (robustness), so a store made by older transform code is never reused silently.
TRANSFORM_RECIPE = 1


def register_transform(name: str) -> Callable[[Transform], Transform]:
    """Register ``f(wave, sample_rate, rng, *, **params)``; its keyword-only defaults are the defaults."""

    def decorator(fn: Transform) -> Transform:
        if name in TRANSFORMS:
            raise TransformError(f"transform '{name}' is registered twice")
        TRANSFORMS[name] = fn
        return fn

    return decorator


def transform_params(name: str) -> dict[str, Any]:
    """The parameters of a transform and their defaults (``inspect.Parameter.empty`` when required)."""
    if name not in TRANSFORMS:
        raise TransformError(f"unknown transform '{name}'; known: {', '.join(sorted(TRANSFORMS))}")
    signature = inspect.signature(TRANSFORMS[name])
    return {
        p.name: p.default for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }


def condition_rng(seed: int, clip_id: str, condition: str) -> np.random.Generator:
    """The generator of one condition of one clip: reproducible, independent per clip and condition."""
    return np.random.default_rng(
        [int(seed), zlib.crc32(clip_id.encode()), CONDITION_STREAM, zlib.crc32(condition.encode())]
    )


# -- codecs ---------------------------------------------------------------------------------------


@register_transform("mp3")
def mp3(
    wave: np.ndarray, sample_rate: int, rng: np.random.Generator, *, bitrate_kbps: int = 64
) -> np.ndarray:
    """MP3 (LAME, constant bit rate) encode and decode."""
    return codec_roundtrip(wave, sample_rate, "mp3", bitrate_kbps=bitrate_kbps)


@register_transform("opus")
def opus(
    wave: np.ndarray, sample_rate: int, rng: np.random.Generator, *, bitrate_kbps: int = 24
) -> np.ndarray:
    """Opus (libopus VBR at a target bit rate) encode and decode."""
    return codec_roundtrip(wave, sample_rate, "opus", bitrate_kbps=bitrate_kbps)


@register_transform("vorbis")
def vorbis(
    wave: np.ndarray, sample_rate: int, rng: np.random.Generator, *, quality: float = 4.0
) -> np.ndarray:
    """Ogg Vorbis (quality-based VBR, ``-q`` scale 0-10) encode and decode."""
    return codec_roundtrip(wave, sample_rate, "vorbis", quality=quality)


# -- band limits, level, clipping, length --------------------------------------------------------


@register_transform("identity")
def identity(wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """The wave unchanged (a copy)."""
    return check_wave(wave, sample_rate).copy()


@register_transform("resample")
def resample_roundtrip(
    wave: np.ndarray, sample_rate: int, rng: np.random.Generator, *, via_rate: int = 8000
) -> np.ndarray:
    """Down to ``via_rate`` and back (soxr): removes everything above ``via_rate / 2`` (telephone band)."""
    wave = check_wave(wave, sample_rate)
    if not 0 < via_rate:
        raise TransformError(f"via_rate must be positive, got {via_rate}")
    back = resample(resample(wave, int(sample_rate), int(via_rate)), int(via_rate), int(sample_rate))
    return fit_length(back, len(wave))  # soxr compensates its own delay: only rounding of the length


@register_transform("lowpass")
def lowpass(
    wave: np.ndarray, sample_rate: int, rng: np.random.Generator, *, cutoff_hz: float = 4000.0, order: int = 8
) -> np.ndarray:
    """Zero-phase Butterworth low-pass (forward-backward, so the attenuation is that of order 2 x order)."""
    wave = check_wave(wave, sample_rate)
    if not 0 < cutoff_hz < sample_rate / 2:
        raise TransformError(f"cutoff_hz must lie in (0, {sample_rate / 2:g}), got {cutoff_hz}")
    sos = butter(int(order), cutoff_hz, btype="lowpass", fs=sample_rate, output="sos")
    padlen = min(3 * (2 * len(sos) + 1), len(wave) - 1)
    return sosfiltfilt(sos, wave.astype(np.float64), padlen=padlen).astype(np.float32)


@register_transform("gain")
def gain(
    wave: np.ndarray, sample_rate: int, rng: np.random.Generator, *, gain_db: float = -20.0
) -> np.ndarray:
    """The level changed by ``gain_db`` decibels."""
    return (check_wave(wave, sample_rate) * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)


@register_transform("clip")
def hard_clip(
    wave: np.ndarray, sample_rate: int, rng: np.random.Generator, *, fraction: float = 0.5
) -> np.ndarray:
    """Hard clipping at ``fraction`` of the wave's peak (0 < fraction <= 1)."""
    wave = check_wave(wave, sample_rate)
    if not 0 < fraction <= 1:
        raise TransformError(f"fraction must lie in (0, 1], got {fraction}")
    limit = np.float32(fraction * float(np.max(np.abs(wave))))
    return np.clip(wave, -limit, limit)


@register_transform("first_seconds")
def first_seconds(
    wave: np.ndarray, sample_rate: int, rng: np.random.Generator, *, seconds: float = 1.0
) -> np.ndarray:
    """The first ``seconds`` of the wave (all of it when it is shorter)."""
    wave = check_wave(wave, sample_rate)
    if not seconds > 0:
        raise TransformError(f"seconds must be positive, got {seconds}")
    return wave[: max(1, int(round(seconds * sample_rate)))].copy()


# -- noise and reverberation (MUSAN / RIRS_NOISES layouts) ---------------------------------------


@register_transform("noise")
def additive_noise(
    wave: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
    *,
    musan: str,
    snr_db: float = 10.0,
    category: str = "noise",
) -> np.ndarray:
    """A random segment of a random file under ``<musan>/<category>/`` added at ``snr_db``."""
    wave = check_wave(wave, sample_rate)
    augmenter = Augmenter(musan=str(musan), rirs="", sample_rate=int(sample_rate))
    segment, _, _ = augmenter.draw_segment(category, len(wave), rng)
    return mix_at_snr(wave, [segment], [snr_db])[0]


@register_transform("reverb")
def reverb(wave: np.ndarray, sample_rate: int, rng: np.random.Generator, *, rirs: str) -> np.ndarray:
    """Convolution with a random RIR from ``<rirs>/simulated_rirs/`` (same length as the input)."""
    wave = check_wave(wave, sample_rate)
    rir, _ = Augmenter(musan="", rirs=str(rirs), sample_rate=int(sample_rate)).draw_rir(rng)
    return reverberate(wave, rir)


# -- conditions -----------------------------------------------------------------------------------

DEFAULT_CONDITIONS: dict[str, dict[str, Any]] = {
    "clean": {"transform": "identity"},
    "mp3_32k": {"transform": "mp3", "bitrate_kbps": 32},
    "mp3_64k": {"transform": "mp3", "bitrate_kbps": 64},
    "mp3_128k": {"transform": "mp3", "bitrate_kbps": 128},
    "opus_12k": {"transform": "opus", "bitrate_kbps": 12},
    "opus_32k": {"transform": "opus", "bitrate_kbps": 32},
    "vorbis_q0": {"transform": "vorbis", "quality": 0},
    "vorbis_q6": {"transform": "vorbis", "quality": 6},
    "telephone_8k": {"transform": "resample", "via_rate": 8000},
    "lowpass_5k": {"transform": "lowpass", "cutoff_hz": 5000.0},
    "noise_20db": {"transform": "noise", "snr_db": 20.0},
    "noise_10db": {"transform": "noise", "snr_db": 10.0},
    "noise_0db": {"transform": "noise", "snr_db": 0.0},
    "reverb": {"transform": "reverb"},
    "level_-20db": {"transform": "gain", "gain_db": -20.0},
    "clip_50pct": {"transform": "clip", "fraction": 0.5},
    "first_1s": {"transform": "first_seconds", "seconds": 1.0},
    "first_2s": {"transform": "first_seconds", "seconds": 2.0},
}


@dataclass(frozen=True)
class Condition:
    """A named transform with its parameters; call it like the transform, without the parameters."""

    name: str
    transform: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
        return TRANSFORMS[self.transform](wave, sample_rate, rng, **self.params)

    def describe(self) -> dict[str, Any]:
        """Plain data that rebuilds this condition (``build_conditions({name: describe()})``)."""
        return {"transform": self.transform, **self.params}


def make_condition(name: str, spec: Mapping[str, Any], **shared: Any) -> Condition:
    """One condition from ``{"transform": ..., **params}``; ``shared`` fills parameters it does not set
    (e.g. ``musan=``, ``rirs=``) when its transform takes them."""
    if not isinstance(spec, Mapping) or "transform" not in spec:
        raise TransformError(f"condition '{name}' needs a mapping with a 'transform' key, got {spec!r}")
    transform = str(spec["transform"])
    accepted = transform_params(transform)
    params = {k: v for k, v in spec.items() if k != "transform"}
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise TransformError(
            f"condition '{name}': transform '{transform}' has no parameter(s) {unknown}; "
            f"it takes: {', '.join(accepted) or 'none'}"
        )
    for key, value in shared.items():
        if key in accepted and key not in params and value is not None:
            params[key] = value
    missing = [k for k, default in accepted.items() if default is inspect.Parameter.empty and k not in params]
    if missing:
        raise TransformError(
            f"condition '{name}' (transform '{transform}') needs {', '.join(f'{k}=<folder>' for k in missing)}"
        )
    return Condition(name, transform, params)


def build_conditions(
    spec: Mapping[str, Mapping[str, Any]] | Iterable[str] | None = None, **shared: Any
) -> dict[str, Condition]:
    """Named conditions from plain data: a mapping name -> ``{"transform": ..., **params}``, or a list
    of names from ``DEFAULT_CONDITIONS`` (``None``: all of them). ``shared`` as in ``make_condition``.

    >>> sorted(build_conditions(["clean", "mp3_32k"]))
    ['clean', 'mp3_32k']
    >>> build_conditions({"x": {"transform": "mp3", "kbps": 3}})
    Traceback (most recent call last):
    ...
    sourcetracing.data.codecs.TransformError: condition 'x': transform 'mp3' has no parameter(s) ['kbps']; it takes: bitrate_kbps
    """
    if spec is None:
        spec = DEFAULT_CONDITIONS
    if not isinstance(spec, Mapping):
        names = [spec] if isinstance(spec, str) else list(spec)
        unknown = [n for n in names if n not in DEFAULT_CONDITIONS]
        if unknown:
            raise TransformError(
                f"unknown condition(s) {unknown}; defaults: {', '.join(DEFAULT_CONDITIONS)} "
                "(or give a mapping name -> {'transform': ..., params})"
            )
        spec = {n: DEFAULT_CONDITIONS[n] for n in names}
    return {str(name): make_condition(str(name), entry, **shared) for name, entry in spec.items()}
