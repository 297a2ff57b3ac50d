"""Clips given to a trained system: audio files found in folders, or waveforms given as samples.

>>> [clip_name(c) for c in as_clips([np.zeros(3), ("a.wav")])]
['<waveform 0>', 'a.wav']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sourcetracing.data.audio import SILENCE_PEAK, AudioError, resample

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")


@dataclass(frozen=True)
class Waveform:
    """A clip given as samples instead of a file: mono, at ``sample_rate`` (None: the tracer's)."""

    samples: np.ndarray
    sample_rate: int | None = None
    name: str = "<waveform>"


ClipInput = str | Path | Waveform | np.ndarray | tuple  # a path, a waveform, (waveform, rate)


def _is_one_clip(item: object) -> bool:
    if isinstance(item, (str, Path, Waveform)):
        return True
    if isinstance(item, np.ndarray):
        return item.ndim == 1
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], np.ndarray)
        and np.isscalar(item[1])
    )


def as_clips(items: ClipInput | Sequence[ClipInput]) -> list[str | Path | Waveform]:
    """Paths and :class:`Waveform` items: one clip or a sequence of clips, waveforms named by position."""
    items = [items] if _is_one_clip(items) else list(items)
    out: list[str | Path | Waveform] = []
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            out.append(Waveform(item, None, f"<waveform {i}>"))
        elif isinstance(item, tuple):
            out.append(Waveform(item[0], int(item[1]), f"<waveform {i}>"))
        else:
            out.append(item)
    return out


def clip_name(item: str | Path | Waveform) -> str:
    """The ``path`` column of a clip's result row."""
    return item.name if isinstance(item, Waveform) else str(item)


def checked_wave(item: Waveform, sample_rate: int, min_len_s: float) -> np.ndarray:
    """A waveform checked as :func:`~sourcetracing.data.audio.load_audio` checks a file, at ``sample_rate``."""
    wave = np.asarray(item.samples, dtype=np.float32)
    if wave.ndim != 1:
        raise AudioError(
            "unreadable", f"{item.name}: expected a mono waveform [samples], got shape {wave.shape}"
        )
    if wave.size == 0:
        raise AudioError("empty", item.name)
    if not np.isfinite(wave).all():
        raise AudioError("nan_or_inf", item.name)
    if float(np.max(np.abs(wave))) < SILENCE_PEAK:
        raise AudioError("silent", item.name)
    wave = resample(np.ascontiguousarray(wave), int(item.sample_rate or sample_rate), sample_rate)
    if wave.size < min_len_s * sample_rate:
        raise AudioError(
            "too_short", f"{item.name}: {wave.size / sample_rate:.3f} s, shorter than {min_len_s} s"
        )
    return wave


def find_audio(inputs: Iterable[str | Path]) -> list[Path]:
    """Files given directly plus audio files found recursively in folders (sorted, in input order)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            )
        else:
            out.append(p)  # a missing or odd file is reported as an error row later
    return out


__all__ = [
    "AUDIO_EXTENSIONS",
    "ClipInput",
    "Waveform",
    "as_clips",
    "checked_wave",
    "clip_name",
    "find_audio",
]
