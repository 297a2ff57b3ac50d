"""A generated corpus in the real layouts for timing the full extraction path (decode, resample, crop,
augment, model, store) without any download: MLAAD-layout clips with protocols, MUSAN and
RIRS_NOISES stand-ins. The audio is speech-like test signals, not speech: only speed is measured.

Clips are stored at 22.05 and 24 kHz (as most MLAAD systems) so decoding includes resampling, and
vary in length around the crop length so both cropping and wrap padding happen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

RATES = (22050, 24000)
KNOWN = ("tts_models/en/bench/known_a", "tts_models/en/bench/known_b", "tts_models/de/bench/known_c")
UNSEEN = ("tts_models/en/bench/unseen_a", "tts_models/de/bench/unseen_b")


def speech_like(n: int, seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """``n`` speech-like test signals ``[n, samples]``: harmonic tones with vibrato (every third one a
    chirp), amplitude modulation and a little noise, peak 0.3."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    waves = []
    for i in range(n):
        f0 = rng.uniform(90, 260) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(2, 6) * t))
        if i % 3 == 2:
            f0 = f0 * (1 + t / seconds)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        wave = sum(rng.uniform(0.2, 1.0) / h * np.sin(h * phase) for h in range(1, 8))
        envelope = 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(1, 4) * t)
        wave = wave * envelope + 0.05 * rng.standard_normal(len(t))
        waves.append(0.3 * wave / np.max(np.abs(wave)))
    return np.stack(waves).astype(np.float32)


@dataclass(frozen=True)
class BenchCorpus:
    """Where the generated corpus lies, as config overrides for ``load_config``."""

    root: Path
    clips: dict[str, int]  # clips per split

    def overrides(self) -> list[str]:
        return [
            f"data.root={self.root / 'MLAAD_v5'}",
            f"data.protocols={self.root / 'protocols'}",
            f"augment.musan={self.root / 'musan'}",
            f"augment.rirs={self.root / 'RIRS_NOISES'}",
        ]


def _split_sizes(n_clips: int) -> dict[str, int]:
    """About MLAAD's proportions: a fifth train (augmented), a fifth dev, the rest eval; each >= 1."""
    train = max(1, round(0.2 * n_clips))
    dev = max(1, round(0.2 * n_clips))
    return {"train": train, "dev": dev, "eval": max(1, n_clips - train - dev)}


def _write(path: Path, wave: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, rate, subtype="PCM_16")


def write_bench_corpus(root: Path, n_clips: int, seconds: float = 4.0, seed: int = 0) -> BenchCorpus:
    """Write ``n_clips`` clips (0.6-1.6 x ``seconds`` long) with train/dev/eval protocols and the
    augmentation stand-ins under ``root``. Known systems are in every split, unseen ones in dev/eval."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    bases = {rate: speech_like(16, 1.7 * seconds, rate, seed=seed + rate) for rate in RATES}
    sizes = _split_sizes(n_clips)
    protocols = root / "protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    counter = 0
    for split, count in sizes.items():
        systems = KNOWN if split == "train" else KNOWN + UNSEEN
        lines = ["path,model_name"]
        for k in range(count):
            system = systems[k % len(systems)]
            language = system.split("/")[1]
            rate = RATES[counter % len(RATES)]
            base = bases[rate][counter % len(bases[rate])]
            length = int(rng.uniform(0.6, 1.6) * seconds * rate)
            start = int(rng.integers(0, len(base) - length + 1))
            wave = base[start : start + length] * rng.uniform(0.5, 1.0)
            rel = f"./fake/{language}/{system.replace('/', '_')}/{split}_{k:06d}.wav"
            _write(root / "MLAAD_v5" / rel, wave, rate)
            lines.append(f"{rel},{system}")
            counter += 1
        (protocols / f"{split}.csv").write_text("\n".join(lines) + "\n")
    _write_augmentation(root, seconds, rng)
    return BenchCorpus(root, sizes)


def _write_augmentation(root: Path, seconds: float, rng: np.random.Generator) -> None:
    """MUSAN noise/music/speech and simulated-RIR stand-ins at 16 kHz, in their real folder layouts."""
    sr = 16000
    n = int(4 * seconds * sr)
    t = np.arange(n) / sr
    for k in range(3):
        white = rng.standard_normal(n)
        noise = white if k != 1 else np.cumsum(white) / 40  # white and brown noise
        _write(
            root / "musan" / "noise" / "bench" / f"noise-{k:04d}.wav", 0.2 * noise / np.abs(noise).max(), sr
        )
        notes = rng.choice([196.0, 220.0, 261.6, 293.7, 329.6, 392.0], size=3, replace=False)
        chord = sum(np.sin(2 * np.pi * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.5 * t)) for f in notes)
        _write(root / "musan" / "music" / "bench" / f"music-{k:04d}.wav", 0.2 * chord / 3, sr)
    for k, wave in enumerate(speech_like(8, 4 * seconds, sr, seed=int(rng.integers(1 << 30)))):
        _write(root / "musan" / "speech" / "bench" / f"speech-{k:04d}.wav", wave, sr)
    for k in range(6):
        length = int(sr * (0.2 + 0.15 * k))
        tail = rng.standard_normal(length) * np.exp(-np.arange(length) / (sr * (0.03 + 0.03 * k)))
        tail[0] = 1.0
        room = ("smallroom", "mediumroom", "largeroom")[k % 3]
        path = (
            root / "RIRS_NOISES" / "simulated_rirs" / room / f"Room{k + 1:03d}" / f"Room{k + 1:03d}-00001.wav"
        )
        _write(path, 0.5 * tail / np.abs(tail).max(), sr)
