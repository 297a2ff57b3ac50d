"""A tiny MLAAD-layout corpus (plus MUSAN and RIRS_NOISES stand-ins) for tests, written in seconds.

Usage in a test (pytest puts ``tests/`` on the path, see pyproject.toml)::

    corpus = make_tiny_corpus(tmp_path)                 # lfcc front end, 1 s crops, no workers
    corpus.cfg.features.batch_size                      # a loaded Config
    subprocess.run([sys.executable, "scripts/preprocess_dataset.py", "--config", str(corpus.config_path)])

Layout under ``root``::

    MLAAD_v5/fake/<lang>/<model_dir>/<split>_<n>.wav   short harmonic "voices", one timbre per system,
                                                       at 8-44.1 kHz, some stereo
    protocols/{train,dev,eval}.csv                    path,model_name (paths like ./fake/en/.../x.wav)
    musan/{noise,music,speech}/<subset>/*.wav         coloured noise, tone chords, modulated "babble"
    RIRS_NOISES/simulated_rirs/<room>/RoomNNN/*.wav   exponentially decaying impulse responses
    config.yaml                                       everything above wired together, exp_dir root/exp

Systems: train has the ``KNOWN`` systems; dev adds one unseen system (an unseen language), eval
adds it and one more, so OOD code finds both kinds of clips in dev and eval.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from sourcetracing.config import Config, load_config

KNOWN = {  # system name -> language
    "tts_models/en/ljspeech/vits": "en",
    "tts_models/de/thorsten/tacotron2-DDC": "de",
    "griffin_lim": "en",
}
UNSEEN_DEV = {"tts_models/fr/mai/tacotron2-DDC": "fr"}
UNSEEN_EVAL = {"tts_models/es/css10/vits": "es"}
RATES = (16000, 22050, 24000, 8000, 44100)


@dataclass
class TinyCorpus:
    """Paths of a written tiny corpus and its loaded config."""

    root: Path
    config_path: Path
    cfg: Config
    protocols: Path
    mlaad: Path
    musan: Path
    rirs: Path


def model_dir(name: str) -> str:
    """MLAAD folder name of a system (slashes become underscores)."""
    return name.replace("/", "_")


def voice(
    system_index: int, n: int, duration_s: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """A harmonic tone with vibrato whose pitch and timbre depend on the system, plus a little noise."""
    t = np.arange(int(duration_s * sample_rate)) / sample_rate
    f0 = 110.0 + 45.0 * system_index + 5.0 * rng.standard_normal()
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * (3 + system_index) * t))) / sample_rate
    tilt = 0.5 + 0.4 * (system_index % 3)
    wave = sum(tilt**h * np.sin(h * phase) for h in range(1, 6))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * np.minimum(t / duration_s, 1.0)))
    wave = 0.3 * wave * envelope / np.max(np.abs(wave)) + 0.005 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


def _write(path: Path, wave: np.ndarray, sample_rate: int, stereo: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([wave, 0.8 * wave], axis=1) if stereo else wave
    sf.write(str(path), data, sample_rate, subtype="PCM_16")


def write_musan(root: Path, n_files: int = 3, seed: int = 1) -> Path:
    """MUSAN-layout stand-ins at 16 kHz: white/brown noise, tone chords, modulated harmonic babble."""
    rng = np.random.default_rng(seed)
    sr = 16000
    for k in range(n_files):
        n = int(sr * (1.5 + k))
        t = np.arange(n) / sr
        white = rng.standard_normal(n)
        noise = white if k % 2 == 0 else np.cumsum(white) / 30
        _write(
            root / "noise" / "free-sound" / f"noise-{k:04d}.wav",
            (0.2 * noise / np.max(np.abs(noise))).astype(np.float32),
            sr,
        )
        chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0 * (k + 1), 277.2 * (k + 1), 329.6 * (k + 1)))
        _write(root / "music" / "fma" / f"music-{k:04d}.wav", (0.2 * chord / 3).astype(np.float32), sr)
        babble = np.sin(2 * np.pi * (150 + 30 * k) * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
        _write(root / "speech" / "librivox" / f"speech-{k:04d}.wav", (0.2 * babble).astype(np.float32), sr)
    return root


def write_rirs(root: Path, n_files: int = 3, seed: int = 2) -> Path:
    """RIRS_NOISES-layout impulse responses: a direct path and an exponentially decaying tail."""
    rng = np.random.default_rng(seed)
    sr = 16000
    for k in range(n_files):
        n = int(sr * (0.05 + 0.05 * k))
        tail = rng.standard_normal(n) * np.exp(-np.arange(n) / (sr * (0.01 + 0.01 * k)))
        tail[0] = 1.0
        room = ("smallroom", "mediumroom", "largeroom")[k % 3]
        _write(
            root / "simulated_rirs" / room / f"Room{k + 1:03d}" / f"Room{k + 1:03d}-00001.wav",
            (0.5 * tail / np.max(np.abs(tail))).astype(np.float32),
            sr,
        )
    return root


def make_tiny_corpus(
    root: str | Path,
    clips_per_system: int = 3,
    dev_clips: int = 2,
    eval_clips: int = 2,
    max_len_s: float = 1.0,
    frontend: str = "lfcc",
    overrides: dict | None = None,
    seed: int = 0,
) -> TinyCorpus:
    """Write the corpus, protocols, MUSAN/RIRS trees and ``config.yaml`` under ``root``.

    ``overrides`` is a nested dict merged into the written config (e.g. ``{"features": {"num_workers": 2}}``).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    mlaad = root / "MLAAD_v5"
    systems = {**KNOWN, **UNSEEN_DEV, **UNSEEN_EVAL}
    index = {name: i for i, name in enumerate(systems)}
    plan = {
        "train": [(s, clips_per_system) for s in KNOWN],
        "dev": [(s, dev_clips) for s in KNOWN] + [(s, dev_clips) for s in UNSEEN_DEV],
        "eval": [(s, eval_clips) for s in {**KNOWN, **UNSEEN_DEV, **UNSEEN_EVAL}],
    }
    protocols = root / "protocols"
    protocols.mkdir(parents=True, exist_ok=True)
    counter = 0
    for split, entries in plan.items():
        lines = ["path,model_name"]
        for system, count in entries:
            for n in range(count):
                rate = RATES[counter % len(RATES)]
                rel = f"./fake/{systems[system]}/{model_dir(system)}/{split}_{n:03d}.wav"
                duration = float(rng.uniform(0.4, 1.6)) * max_len_s
                _write(
                    mlaad / rel, voice(index[system], n, duration, rate, rng), rate, stereo=counter % 4 == 3
                )
                lines.append(f"{rel},{system}")
                counter += 1
        (protocols / f"{split}.csv").write_text("\n".join(lines) + "\n")
    musan = write_musan(root / "musan")
    rirs = write_rirs(root / "RIRS_NOISES")
    config = {
        "name": "tiny",
        "exp_dir": str(root / "exp"),
        "seed": 0,
        "device": "cpu",
        "data": {"root": str(mlaad), "protocols": str(protocols), "max_len_s": max_len_s},
        "augment": {"musan": str(musan), "rirs": str(rirs)},
        "frontend": {"name": frontend},
        "features": {"shard_size": 10, "batch_size": 4, "num_workers": 0},
    }
    for section, values in (overrides or {}).items():
        if isinstance(values, dict):
            config.setdefault(section, {}).update(values)
        else:
            config[section] = values
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return TinyCorpus(root, config_path, load_config(config_path), protocols, mlaad, musan, rirs)


def add_bad_clips(
    corpus: TinyCorpus, split: str = "train", kinds=("unreadable", "empty", "silent", "nan")
) -> dict[str, str]:
    """Append one unusable clip per kind to a split's protocol (a known system); returns clip_id -> kind."""
    system = next(iter(KNOWN))
    folder = corpus.mlaad / "fake" / KNOWN[system] / model_dir(system)
    folder.mkdir(parents=True, exist_ok=True)
    added = {}
    lines = []
    for kind in kinds:
        name = f"bad_{split}_{kind}.wav"
        path = folder / name
        if kind == "unreadable":
            path.write_bytes(b"this is not audio" * 10)
        elif kind == "empty":
            sf.write(str(path), np.zeros(0, dtype=np.float32), 16000)
        elif kind == "silent":
            sf.write(str(path), np.zeros(8000, dtype=np.float32), 16000)
        elif kind == "nan":
            wave = np.full(8000, 0.1, dtype=np.float32)
            wave[100] = np.nan
            sf.write(str(path), wave, 16000, subtype="FLOAT")
        else:
            raise ValueError(kind)
        rel = f"./fake/{KNOWN[system]}/{model_dir(system)}/{name}"
        lines.append(f"{rel},{system}")
        added[rel.removeprefix("./")] = kind
    csv = corpus.protocols / f"{split}.csv"
    csv.write_text(csv.read_text() + "\n".join(lines) + "\n")
    return added


def save_tiny_wav2vec2(
    path: str | Path,
    stable_layer_norm: bool = False,
    num_layers: int = 4,
    seed: int = 0,
    architecture: str = "wav2vec2",
) -> Path:
    """A randomly initialised, tiny wav2vec2 (32 dims, 2 heads) + feature extractor saved with ``save_pretrained``.

    Its conv encoder has the base model's total stride (320), so 1 s at 16 kHz gives 50 frames.
    ``architecture`` may also be ``hubert`` or ``wavlm`` (same sizes, their own model classes).
    """
    import torch
    import transformers
    from transformers import Wav2Vec2FeatureExtractor

    config_cls, model_cls = {
        "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
        "hubert": ("HubertConfig", "HubertModel"),
        "wavlm": ("WavLMConfig", "WavLMModel"),
    }[architecture]
    config_class, model_class = getattr(transformers, config_cls), getattr(transformers, model_cls)

    torch.manual_seed(seed)
    config = config_class(
        hidden_size=32,
        num_attention_heads=2,
        num_hidden_layers=num_layers,
        intermediate_size=64,
        conv_dim=(16, 16, 16, 16),
        conv_kernel=(10, 3, 3, 2),
        conv_stride=(5, 4, 4, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=stable_layer_norm,
        feat_extract_norm="layer" if stable_layer_norm else "group",
    )
    path = Path(path)
    model_class(config).eval().save_pretrained(path)
    Wav2Vec2FeatureExtractor(do_normalize=True).save_pretrained(path)
    return path
