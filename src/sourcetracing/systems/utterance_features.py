"""Utterance-level statistics of a whole clip, in feature groups, for the statistics systems.

Groups (``numpy`` / ``librosa``, no model):

- ``mfcc``: mean and standard deviation over time of ``n_mfcc`` MFCCs and their deltas;
- ``prosody``: the voice's pitch and rhythm: log-F0 statistics (cepstral pitch over voiced
  frames: mean, spread, percentiles, frame-to-frame change), cepstral peak prominence (voice
  quality), voiced and pause fractions, the rate of energy peaks (a syllable-rate proxy) and the
  modulation spectrum of the energy envelope (1–20 Hz);
- ``spectrum``: the long-term average spectrum of the speech frames in log-spaced bands (level
  removed), spectral flatness and centroid statistics;
- ``duration``: how long the clip and its speech frames last (log seconds): with texts of similar
  length, the one global trace of a voice's speaking-rate setting that survives any channel.

Near-twin synthesizers (one engine at another rate or pitch, one neural voice with other sampling
settings) differ mostly in exactly these global properties, which a 4 s crop of frame features
sees only partly.

>>> import numpy as np
>>> t = np.arange(32000) / 16000
>>> wave = (0.3 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 4 * t))).astype(np.float32)
>>> x, names = clip_statistics(wave, 16000, ["prosody"])
>>> len(x) == len(names), bool(abs(np.exp(x[names.index("logf0_median")]) - 150) < 10)
(True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

FRAME = 640  # 40 ms at 16 kHz: two periods of 50 Hz
HOP = 160  # 10 ms
FMIN, FMAX = 60.0, 400.0
SPEECH_DB = 35.0  # frames within this many dB of the loudest are speech
N_BANDS = 24


def _frames(wave: np.ndarray, frame: int = FRAME, hop: int = HOP) -> np.ndarray:
    if len(wave) < frame:
        wave = np.pad(wave, (0, frame - len(wave)))
    n = 1 + (len(wave) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    return wave[idx] * np.hanning(frame)[None, :]


def _pct(x: np.ndarray, qs: Sequence[float]) -> list[float]:
    return [float(v) for v in np.percentile(x, qs)] if len(x) else [0.0] * len(qs)


def _stats(x: np.ndarray) -> list[float]:
    return [float(np.mean(x)), float(np.std(x))] if len(x) else [0.0, 0.0]


def mfcc_group(wave: np.ndarray, sr: int, n_mfcc: int = 20) -> tuple[list[float], list[str]]:
    """Mean and std over time of MFCCs and their deltas (``4 * n_mfcc`` values)."""
    import librosa

    n_fft = (
        2048 if len(wave) >= 2048 else 2 ** max(6, int(np.log2(max(len(wave), 2))))
    )  # short clips: a shorter window
    mfcc = librosa.feature.mfcc(y=wave, sr=sr, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=min(512, n_fft // 4))
    delta = librosa.feature.delta(mfcc, mode="nearest")
    both = np.concatenate([mfcc, delta], axis=0)
    names = [f"mfcc{i}" for i in range(n_mfcc)] + [f"dmfcc{i}" for i in range(n_mfcc)]
    values = np.concatenate([both.mean(axis=1), both.std(axis=1)])
    return values.tolist(), [f"{n}_mean" for n in names] + [f"{n}_std" for n in names]


def plain_mfcc_group(wave: np.ndarray, sr: int, n_mfcc: int = 30) -> tuple[list[float], list[str]]:
    """Mean and std over time of ``n_mfcc`` MFCCs, no deltas (``2 * n_mfcc`` values; librosa's
    default analysis: 2048-sample window, hop 512, 128 mel bands), the plain reference's statistics."""
    import librosa

    n_fft = 2048 if len(wave) >= 2048 else 2 ** max(6, int(np.log2(max(len(wave), 2))))
    mfcc = librosa.feature.mfcc(y=wave, sr=sr, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=min(512, n_fft // 4))
    names = [f"mfcc{i}" for i in range(n_mfcc)]
    values = np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)])
    return values.tolist(), [f"{n}_mean" for n in names] + [f"{n}_std" for n in names]


def _speech_mask(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    energy = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    return energy, energy > energy.max() - SPEECH_DB


def prosody_group(wave: np.ndarray, sr: int, **_: object) -> tuple[list[float], list[str]]:
    """Pitch, voice quality and rhythm statistics of the whole clip."""
    frames = _frames(wave)
    energy, speech = _speech_mask(frames)
    spectrum = np.abs(np.fft.rfft(frames, n=1024, axis=1)) + 1e-9
    cepstrum = np.fft.irfft(np.log(spectrum), axis=1)
    q_lo, q_hi = int(sr / FMAX), min(int(sr / FMIN), cepstrum.shape[1] // 2 - 1)
    band = cepstrum[:, q_lo:q_hi]
    peak = band.argmax(axis=1)
    height = band[np.arange(len(band)), peak]
    # cepstral peak prominence: the peak above the regression line of the quefrency band
    q = np.arange(q_lo, q_hi, dtype=np.float64)
    slope, intercept = np.polyfit(q, band.T, 1)
    cpp = height - (slope * (peak + q_lo) + intercept)
    voiced = speech & (cpp > np.percentile(cpp[speech], 40) if speech.any() else speech)
    logf0 = np.log(sr / (peak + q_lo))[voiced]
    dlogf0 = np.abs(np.diff(logf0)) if len(logf0) > 1 else np.zeros(1)
    # rhythm: the energy envelope's peaks and modulation spectrum over the speech region
    env = np.where(speech, energy, energy[speech].min() if speech.any() else energy.min())
    env = env - env.mean()
    frame_rate = sr / HOP
    from scipy.signal import find_peaks

    peaks, _ = find_peaks(env, prominence=4.0, distance=int(0.08 * frame_rate))
    duration = max(speech.sum() / frame_rate, 1e-3)
    mod = np.abs(np.fft.rfft(env * np.hanning(len(env)))) ** 2
    freqs = np.fft.rfftfreq(len(env), d=1 / frame_rate)
    bands = [(1, 3), (3, 6), (6, 10), (10, 20)]
    total = mod[(freqs >= 1) & (freqs < 20)].sum() + 1e-12
    mod_bands = [float(mod[(freqs >= lo) & (freqs < hi)].sum() / total) for lo, hi in bands]
    values = [
        *_stats(logf0), *_pct(logf0, (10, 50, 90)), float(np.mean(dlogf0)), float(np.std(dlogf0)),
        *_stats(cpp[voiced]), float(voiced.sum() / max(speech.sum(), 1)), float(1 - speech.mean()),
        float(len(peaks) / duration), float(np.std(energy[speech])) if speech.any() else 0.0, *mod_bands,
    ]  # fmt: skip
    names = [
        "logf0_mean", "logf0_std", "logf0_p10", "logf0_median", "logf0_p90", "dlogf0_mean", "dlogf0_std",
        "cpp_mean", "cpp_std", "voiced_fraction", "pause_fraction", "energy_peak_rate", "energy_std",
        *[f"modulation_{lo}_{hi}hz" for lo, hi in bands],
    ]  # fmt: skip
    return values, names


def spectrum_group(wave: np.ndarray, sr: int, **_: object) -> tuple[list[float], list[str]]:
    """Long-term average spectrum of the speech frames (log bands, level removed), flatness, centroid."""
    frames = _frames(wave, frame=512, hop=256)
    _, speech = _speech_mask(frames)
    power = np.abs(np.fft.rfft(frames[speech] if speech.any() else frames, axis=1)) ** 2 + 1e-12
    freqs = np.fft.rfftfreq(512, d=1 / sr)
    edges = np.round(np.geomspace(3, len(freqs) - 1, N_BANDS + 1)).astype(int)  # FFT bins, ~94 Hz up
    for k in range(1, len(edges)):  # at least one bin per band
        edges[k] = max(edges[k], edges[k - 1] + 1)
    ltas = np.array([power[:, lo:hi].mean() for lo, hi in zip(edges[:-1], edges[1:], strict=True)])
    ltas_db = 10 * np.log10(ltas + 1e-12)
    ltas_db -= ltas_db.mean()
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    centroid = (power * freqs).sum(axis=1) / power.sum(axis=1)
    values = [*ltas_db.tolist(), *_stats(np.log(flatness)), *_stats(centroid / 1000.0)]
    names = [f"ltas_{i}" for i in range(N_BANDS)] + [
        "log_flatness_mean",
        "log_flatness_std",
        "centroid_khz_mean",
        "centroid_khz_std",
    ]
    return values, names


def duration_group(wave: np.ndarray, sr: int, **_: object) -> tuple[list[float], list[str]]:
    """Log duration of the whole clip and of its speech frames (seconds)."""
    _, speech = _speech_mask(_frames(wave))
    speech_s = max(float(speech.sum()) * HOP / sr, HOP / sr)
    return [float(np.log(max(len(wave), 1) / sr)), float(np.log(speech_s))], ["log_clip_s", "log_speech_s"]


GROUPS: dict[str, Callable[..., tuple[list[float], list[str]]]] = {
    "mfcc": mfcc_group,
    "prosody": prosody_group,
    "spectrum": spectrum_group,
    "duration": duration_group,
    "mfcc_plain": plain_mfcc_group,
}


def clip_statistics(
    wave: np.ndarray, sample_rate: int, groups: Sequence[str], n_mfcc: int = 20
) -> tuple[np.ndarray, list[str]]:
    """The chosen groups' statistics of one clip, concatenated (float32), and their names."""
    values: list[float] = []
    names: list[str] = []
    for group in groups:
        if group not in GROUPS:
            raise ValueError(f"unknown statistics group '{group}'; choose from {sorted(GROUPS)}")
        v, n = GROUPS[group](np.asarray(wave, dtype=np.float32), sample_rate, n_mfcc=n_mfcc)
        values += v
        names += n
    return np.asarray(values, dtype=np.float32), names


def statistic_names(sample_rate: int, groups: Sequence[str], n_mfcc: int = 20) -> list[str]:
    """The names of the chosen groups' statistics, in :func:`clip_statistics` order (no clip needed)."""
    return clip_statistics(np.full(sample_rate, 1e-3, np.float32), sample_rate, groups, n_mfcc)[1]
