"""The offline demo corpus: real synthesizers laid out like MLAAD v5 and its source-tracing protocols.

Layout under ``out``::

    MLAAD_v5/fake/<lang>/<model_dir>/<model_dir>_<split>_<NNNN>.wav   16 kHz mono PCM16
    protocols/{train,dev,eval}.csv                                       path,model_name
    musan/{noise,music,speech}/<subset>/*.wav                            MUSAN stand-in
    RIRS_NOISES/simulated_rirs/{small,medium,large}room/RoomNNN/*.wav    RIRS_NOISES stand-in
    clips.csv                                                            path,system,split,channel
    corpus_summary.csv  corpus_config.json

``PLAN`` below is the whole design of the default corpus: which system is made by which engine
and voice, in which languages, and whether it is *known* (in train, dev and eval) or *unseen* in
dev or in eval only. ``HARD_PLAN`` (``--plan hard``) adds near-twin systems (``twin_of``: one
engine, model or voice with other ``settings`` or another voice) and sends a share of every
system's clips through a channel (``channel.apply_channel``). ``PLANS`` names both. In each plan
the pip-only systems satisfy every structural rule by themselves (see ``check_structure``); the
Debian engines (flite, festival), when installed, add more known and unseen systems.

Everything is deterministic for a seed: texts, chunks of work and their random seeds never depend
on the number of worker processes, ONNX models run single-threaded, and a rerun skips the files
that exist and rewrites the protocols byte for byte.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import soundfile as sf

from sourcetracing.progress import progress as progress_bar

from . import texts
from .channel import apply_channel, describe_channel
from .engines import ENGINES, Engine, EngineError, EspeakEngine, create_engine, resolve_engines

SPLITS: tuple[str, ...] = ("train", "dev", "eval")
ROLES: tuple[str, ...] = ("known", "dev-unseen", "eval-unseen")
SAMPLE_RATE = 16000
MIN_SPEECH_S = 2.0
MAX_SPEECH_S = 6.0
TARGET_RMS = 0.08  # about -22 dBFS
PEAK_LIMIT = 0.95
CHUNK_CLIPS = 30  # clips per unit of work; fixed so that seeds do not depend on --jobs
N_SPARE = 3  # replacement sentences per clip when a rendering is too short, long or silent
FORMAT_VERSION = 1

MLAAD_DIR = "MLAAD_v5"
PROTOCOL_DIR = "protocols"
MUSAN_DIR = "musan"
RIRS_DIR = "RIRS_NOISES"


class CorpusError(RuntimeError):
    """The corpus cannot be built as asked."""


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class SystemSpec:
    """One synthetic "system" (a class of the source-tracing task)."""

    name: str  # MLAAD-style model_name, with slashes
    engine: str  # key of engines.ENGINES
    voice: str  # engine voice; eSpeak "+variant" takes the language's default voice
    family: str  # synthesis family (architecture)
    langs: tuple[str, ...]  # languages spoken in every split the system appears in
    role: str  # "known" | "dev-unseen" | "eval-unseen"
    heldout_langs: tuple[str, ...] = ()  # known systems: extra languages heard in dev/eval only
    settings: tuple[tuple[str, float], ...] = ()  # engine settings (see the engine's setting_names)
    twin_of: tuple[str, ...] = ()  # known systems this one is a near-twin of (same model or voice)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"{self.name}: role must be one of {ROLES}, not {self.role!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"{self.name}: unknown engine {self.engine!r}")
        if self.heldout_langs and self.role != "known":
            raise ValueError(f"{self.name}: only known systems have held-out languages")
        try:
            ENGINES[self.engine].validate_settings(dict(self.settings))
        except ValueError as err:
            raise ValueError(f"{self.name}: {err}") from None
        if self.name in self.twin_of:
            raise ValueError(f"{self.name}: a system is not its own near-twin")

    @property
    def model_dir(self) -> str:
        """The MLAAD folder name: the model name with ``/`` replaced by ``_``."""
        return self.name.replace("/", "_")

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this system appears in."""
        return {"known": SPLITS, "dev-unseen": ("dev",), "eval-unseen": ("eval",)}[self.role]

    def langs_in(self, split: str) -> tuple[str, ...]:
        """Languages of this system in ``split`` (held-out ones only outside train)."""
        if split not in self.splits:
            return ()
        return self.langs if split == "train" else self.langs + self.heldout_langs


def _s(
    name: str, engine: str, voice: str, family: str, langs: str, role: str, heldout: str = ""
) -> SystemSpec:
    return SystemSpec(name, engine, voice, family, tuple(langs.split()), role, tuple(heldout.split()))


# fmt: off
PLAN: tuple[SystemSpec, ...] = (
    #  model_name                    engine      voice                    family          langs    role           held-out langs
    # -- pip-only engines: these alone satisfy every structural rule --
    _s("espeak-ng/en-us/default",     "espeak",   "en-us",                 "formant",      "en",    "known"),
    _s("espeak-ng/en-us/klatt",       "espeak",   "en-us+klatt",           "formant",      "en",    "known"),
    _s("espeak-ng/de/m3",             "espeak",   "de+m3",                 "formant",      "de",    "known"),
    _s("espeak-ng/fr/f2",             "espeak",   "fr+f2",                 "formant",      "fr",    "known"),
    _s("espeak-ng/multilingual/m7",   "espeak",   "+m7",                   "formant",      "es de", "known",       "it nl"),
    _s("piper/en_US-joe/medium",      "piper",    "en_US-joe-medium",      "VITS",         "en",    "known"),
    _s("sam/default",                 "sam",      "default",               "formant-8bit", "en",    "known"),
    _s("espeak-ng/en-gb/f4",          "espeak",   "en+f4",                 "formant",      "en",    "dev-unseen"),
    _s("espeak-ng/it/m2",             "espeak",   "it+m2",                 "formant",      "it",    "dev-unseen"),
    _s("sam/elf",                     "sam",      "elf",                   "formant-8bit", "en",    "dev-unseen"),
    _s("kokoro/jf_alpha",             "kokoro",   "jf_alpha",              "StyleTTS2",    "en",    "eval-unseen"),
    _s("kokoro/jm_kumo",              "kokoro",   "jm_kumo",               "StyleTTS2",    "en",    "eval-unseen"),
    _s("espeak-ng/nl/f3",             "espeak",   "nl+f3",                 "formant",      "nl",    "eval-unseen"),
    _s("sam/little-robot",            "sam",      "little-robot",          "formant-8bit", "en",    "eval-unseen"),
    # -- Debian engines, used when installed (flite kal16 / festival kal share one diphone database: neither is used) --
    _s("flite/slt",                   "flite",    "slt",                   "clustergen",   "en",    "known"),
    _s("flite/awb",                   "flite",    "awb",                   "clustergen",   "en",    "known"),
    _s("festival/ked_diphone",        "festival", "ked_diphone",           "diphone",      "en",    "known"),
    _s("flite/rms",                   "flite",    "rms",                   "clustergen",   "en",    "dev-unseen"),
    _s("festival/us_slt_hts",         "festival", "cmu_us_slt_arctic_hts", "HTS",          "en",    "eval-unseen"),
)
# fmt: on

# Babble sources for the MUSAN "speech" stand-in: eSpeak voices in languages no system speaks.
BABBLE_VOICES: tuple[tuple[str, str], ...] = (
    ("pt+m4", "pt"),
    ("sv+f2", "sv"),
    ("pt+f5", "pt"),
    ("sv+m6", "sv"),
)


def _h(
    name: str,
    engine: str,
    voice: str,
    family: str,
    langs: str,
    role: str,
    settings: str = "",
    twin_of: str = "",
    heldout: str = "",
) -> SystemSpec:
    """A system of the hard plan; ``settings`` reads ``"key=value key=value"``."""
    pairs = tuple((k, float(v)) for k, v in (item.split("=") for item in settings.split()))
    return SystemSpec(
        name,
        engine,
        voice,
        family,
        tuple(langs.split()),
        role,
        tuple(heldout.split()),
        pairs,
        tuple(twin_of.split()),
    )


# The hard plan: near-twin systems (one engine or model with different settings or voices) among
# the known systems and in both unseen splits, plus unseen systems that are nobody's twin; a share
# of every system's clips goes through a channel (codec, low sample rate, level, noise). eSpeak
# ``rate`` is in words/min (default 175), ``pitch`` 0-100 (default 50); Piper's defaults are
# noise_scale 0.667, length_scale 1, noise_w_scale 0.8; SAM (speed, pitch, mouth, throat)
# defaults to 72, 64, 128, 128 (a lower pitch value is a higher voice).
# One Piper system is known: a second known one with the same voice at other sampling settings
# (noise 0.33, length 1.15, duration noise 0.4) was indistinguishable from it for every statistic
# and model tried (logistic regression on the statistics 0.65-0.73 accuracy, frame-level GMMs at
# chance), so it capped every method's known-class F1 without ranking any; the Piper near-twins
# are the unseen ones, one per split, mirror images of each other: faster and livelier in dev
# (length 0.77 = 1 / 1.3), slower and calmer in eval (length 1.3). An earlier dev twin at length
# 0.92 was at chance against the known voice for every statistic (scripts/separability.py on train
# and dev), so dev could not tell a method that sees tempo from one that does not.
# fmt: off
HARD_PLAN: tuple[SystemSpec, ...] = (
    #  model_name                       engine      voice                    family        langs    role           settings                                           twin_of
    # -- pip-only engines: these alone satisfy every structural rule --
    _h("espeak-ng/en-us/m3",             "espeak",   "en-us+m3",              "formant",    "en",    "known",       "",                                                "espeak-ng/en-us/m3-slow"),
    _h("espeak-ng/en-us/m3-slow",        "espeak",   "en-us+m3",              "formant",    "en",    "known",       "rate=150 pitch=40",                               "espeak-ng/en-us/m3"),
    _h("espeak-ng/en-us/klatt",          "espeak",   "en-us+klatt",           "formant",    "en",    "known"),
    _h("espeak-ng/multilingual/f2",      "espeak",   "+f2",                   "formant",    "es de", "known",       heldout="it"),
    _h("piper/en_US-joe/medium",         "piper",    "en_US-joe-medium",      "VITS",       "en",    "known"),
    _h("kokoro/jf_alpha",                "kokoro",   "jf_alpha",              "StyleTTS2",  "en",    "known",       "",                                                "kokoro/jf_gongitsune"),
    _h("kokoro/jf_gongitsune",           "kokoro",   "jf_gongitsune",         "StyleTTS2",  "en",    "known",       "",                                                "kokoro/jf_alpha"),
    _h("espeak-ng/en-us/m3-fast",        "espeak",   "en-us+m3",              "formant",    "en",    "dev-unseen",  "rate=200 pitch=58",                               "espeak-ng/en-us/m3 espeak-ng/en-us/m3-slow"),
    _h("piper/en_US-joe/medium-fast",    "piper",    "en_US-joe-medium",      "VITS",       "en",    "dev-unseen",  "noise_scale=0.9 length_scale=0.77 noise_w_scale=1.0", "piper/en_US-joe/medium"),
    _h("kokoro/jf_nezumi",               "kokoro",   "jf_nezumi",             "StyleTTS2",  "en",    "dev-unseen",  "",                                                "kokoro/jf_alpha kokoro/jf_gongitsune"),
    _h("espeak-ng/it/m2",                "espeak",   "it+m2",                 "formant",    "it",    "dev-unseen"),
    _h("sam/elf",                        "sam",      "elf",                   "formant-8bit", "en",  "dev-unseen"),
    _h("espeak-ng/en-us/m3-bright",      "espeak",   "en-us+m3",              "formant",    "en",    "eval-unseen", "rate=165 pitch=68 range=80",                      "espeak-ng/en-us/m3 espeak-ng/en-us/m3-slow"),
    _h("piper/en_US-joe/medium-slow",    "piper",    "en_US-joe-medium",      "VITS",       "en",    "eval-unseen", "noise_scale=0.5 length_scale=1.3 noise_w_scale=0.2", "piper/en_US-joe/medium"),
    _h("kokoro/jf_tebukuro",             "kokoro",   "jf_tebukuro",           "StyleTTS2",  "en",    "eval-unseen", "",                                                "kokoro/jf_alpha kokoro/jf_gongitsune"),
    _h("espeak-ng/nl/f3",                "espeak",   "nl+f3",                 "formant",    "nl",    "eval-unseen"),
    _h("sam/little-robot",               "sam",      "little-robot",          "formant-8bit", "en",  "eval-unseen"),
    # -- Debian engines, used when installed (flite kal16 and festival kal share one diphone database) --
    _h("flite/slt",                      "flite",    "slt",                   "clustergen", "en",    "known"),
    _h("flite/awb",                      "flite",    "awb",                   "clustergen", "en",    "known"),
    _h("flite/kal16",                    "flite",    "kal16",                 "diphone",    "en",    "known"),
    _h("festival/ked_diphone",           "festival", "ked_diphone",           "diphone",    "en",    "known"),
    _h("flite/slt-slow",                 "flite",    "slt",                   "clustergen", "en",    "dev-unseen",  "duration_stretch=1.2 f0_mean=190",                "flite/slt"),
    _h("festival/kal_diphone",           "festival", "kal_diphone",           "diphone",    "en",    "dev-unseen",  "",                                                "flite/kal16 festival/ked_diphone"),
    _h("flite/rms",                      "flite",    "rms",                   "clustergen", "en",    "eval-unseen", "",                                                "flite/awb flite/slt"),
    _h("festival/us_slt_hts",            "festival", "cmu_us_slt_arctic_hts", "HTS",        "en",    "eval-unseen"),
)
# fmt: on

# Engines whose clips use the short sentences (subject, verb, object): slow speakers or slow models.
SHORT_TEXT_ENGINES: frozenset[str] = frozenset({"sam", "kokoro"})


@dataclass(frozen=True)
class CorpusSize:
    """How many clips and augmentation files to make."""

    name: str
    known: tuple[int, int, int]  # clips per known system in train, dev, eval (shared by its languages)
    unseen: int  # clips per unseen system in its split
    heldout: int  # clips per held-out language of a known system, in dev and in eval
    # engine -> max clips per system and split, or per split (train, dev, eval)
    caps: dict[str, int | tuple[int, int, int]] = field(default_factory=dict)
    musan: tuple[int, int, int] = (12, 8, 8)  # noise, music, speech files
    rooms: int = 3  # rooms per room type
    rirs_per_room: int = 3

    def clips(self, spec: SystemSpec, split: str, lang: str) -> int:
        """Clips of ``spec`` in ``split`` and ``lang``."""
        if lang not in spec.langs_in(split):
            return 0
        if lang in spec.heldout_langs:
            n = self.heldout
        else:
            total = self.known[SPLITS.index(split)] if spec.role == "known" else self.unseen
            n = _share(total, len(spec.langs), spec.langs.index(lang))
        cap = self.caps.get(spec.engine, n)
        return min(n, cap[SPLITS.index(split)] if isinstance(cap, tuple) else cap)


def _share(total: int, parts: int, index: int) -> int:
    """Part ``index`` of ``total`` dealt as evenly as possible over ``parts``."""
    return total // parts + (1 if index < total % parts else 0)


SIZES: dict[str, CorpusSize] = {
    "default": CorpusSize(
        "default", known=(60, 15, 25), unseen=20, heldout=8, caps={"kokoro": 10}, musan=(12, 8, 8), rooms=3
    ),
    "small": CorpusSize(
        "small",
        known=(8, 3, 4),
        unseen=3,
        heldout=2,
        caps={"kokoro": 1},
        musan=(4, 2, 2),
        rooms=1,
        rirs_per_room=2,
    ),
}


HARD_SIZES: dict[str, CorpusSize] = {
    "default": CorpusSize(
        "default",
        known=(45, 15, 20),
        unseen=20,
        heldout=6,
        caps={"kokoro": (20, 8, 10)},
        musan=(12, 8, 8),
        rooms=3,
    ),
    "small": CorpusSize(
        "small",
        known=(8, 3, 4),
        unseen=3,
        heldout=2,
        caps={"kokoro": 1},
        musan=(4, 2, 2),
        rooms=1,
        rirs_per_room=2,
    ),
}


@dataclass(frozen=True)
class CorpusPlan:
    """A whole corpus design: its systems, its sizes and the share of clips sent through a channel."""

    name: str
    systems: tuple[SystemSpec, ...]
    sizes: dict[str, CorpusSize]
    channel_share: float = 0.0  # per system, split and language: this share of clips gets a channel
    description: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.channel_share <= 1.0:
            raise ValueError(f"plan {self.name}: channel_share must be in [0, 1], not {self.channel_share}")
        names = [s.name for s in self.systems]
        if len(set(names)) != len(names):
            raise ValueError(f"plan {self.name}: duplicate system names")
        roles = {s.name: s.role for s in self.systems}
        for spec in self.systems:
            bad = [t for t in spec.twin_of if roles.get(t) != "known"]
            if bad:
                raise ValueError(
                    f"plan {self.name}: {spec.name} is a twin of {bad}, which are no known systems"
                )

    def size(self, size: str | CorpusSize) -> CorpusSize:
        """A size of this plan by name (``default``, ``small``), or ``size`` itself."""
        if isinstance(size, CorpusSize):
            return size
        if size not in self.sizes:
            raise ValueError(f"plan {self.name} has no size {size!r}; choose from {sorted(self.sizes)}")
        return self.sizes[size]


PLANS: dict[str, CorpusPlan] = {
    "default": CorpusPlan("default", PLAN, SIZES, description="distinct systems, clean clips"),
    "hard": CorpusPlan(
        "hard",
        HARD_PLAN,
        HARD_SIZES,
        channel_share=0.4,
        description="near-twin systems, 40% of every system's clips through a channel",
    ),
}


def resolve_plan(plan: str | CorpusPlan | Sequence[SystemSpec]) -> CorpusPlan:
    """A plan by name, a plan, or a bare list of systems (default sizes, no channel)."""
    if isinstance(plan, CorpusPlan):
        return plan
    if isinstance(plan, str):
        if plan not in PLANS:
            raise ValueError(f"unknown plan {plan!r}; choose from {sorted(PLANS)}")
        return PLANS[plan]
    systems = tuple(plan)
    return PLANS["default"] if systems == PLAN else CorpusPlan("custom", systems, SIZES)


# ---------------------------------------------------------------------------------------------
# Units of work


@dataclass(frozen=True)
class Clip:
    """One clip of the corpus."""

    system: str
    lang: str
    split: str
    relpath: str  # relative to MLAAD_v5: fake/<lang>/<model_dir>/<file>.wav
    text: str
    spares: tuple[str, ...]
    channel_seed: int | None = None  # seed of the clip's channel (None: the clip stays clean)
    channel: str = "none"  # what the channel does (channel.describe_channel(channel_seed))


@dataclass(frozen=True)
class SpeechTask:
    """A run of clips of one system, split and language, rendered by one engine instance in order."""

    system: str
    engine: str
    voice: str
    lang: str
    seed: int
    clips: tuple[Clip, ...]
    settings: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class AugTask:
    """One MUSAN file or one simulated room (several RIRs)."""

    kind: str  # "noise" | "music" | "speech" | "room"
    relpaths: tuple[str, ...]  # relative to the corpus root
    seed: int
    params: tuple[tuple[str, object], ...] = ()


def plan_clips(
    systems: Iterable[SystemSpec], size: CorpusSize, seed: int, channel_share: float = 0.0
) -> list[Clip]:
    """Every clip of the given systems, in protocol order (system, split, language, index).

    With ``channel_share`` > 0, that share of each system's clips per split and language (rounded)
    is chosen at random and given a channel seed of its own.
    """
    clips: list[Clip] = []
    for spec in systems:
        short = spec.engine in SHORT_TEXT_ENGINES
        for split in SPLITS:
            for lang in spec.langs_in(split):
                n = size.clips(spec, split, lang)
                key = spec.name
                primary = texts.draw_sentences(lang, split, key, n, seed=seed, short=short)
                altered = _channel_picks(seed, key, split, lang, n, channel_share)
                for i, text in enumerate(primary):
                    spares = texts.spare_sentences(lang, split, key, i, N_SPARE, seed=seed, short=short)
                    name = f"{spec.model_dir}_{split}_{i:04d}.wav"
                    relpath = f"fake/{lang}/{spec.model_dir}/{name}"
                    clip = Clip(spec.name, lang, split, relpath, text, tuple(spares))
                    if i in altered:
                        channel_seed = texts.stable_hash(seed, "channel", relpath) & 0x7FFFFFFF
                        clip = replace(
                            clip, channel_seed=channel_seed, channel=describe_channel(channel_seed)
                        )
                    clips.append(clip)
    return clips


def _channel_picks(seed: int, system: str, split: str, lang: str, n: int, share: float) -> set[int]:
    """Indices of the ``round(share * n)`` clips of a (system, split, language) run that get a channel."""
    count = int(np.floor(share * n + 0.5))
    if count == 0:
        return set()
    rng = np.random.default_rng([seed, texts.stable_hash("channel-picks", system, split, lang)])
    return {int(i) for i in rng.choice(n, size=count, replace=False)}


def plan_speech_tasks(systems: Iterable[SystemSpec], clips: Sequence[Clip], seed: int) -> list[SpeechTask]:
    """Group clips into fixed chunks, each with its own seed."""
    by_system = {s.name: s for s in systems}
    groups: dict[tuple[str, str, str], list[Clip]] = {}
    for clip in clips:
        groups.setdefault((clip.system, clip.split, clip.lang), []).append(clip)
    tasks = []
    for (system, split, lang), members in groups.items():
        spec = by_system[system]
        for start in range(0, len(members), CHUNK_CLIPS):
            chunk = tuple(members[start : start + CHUNK_CLIPS])
            task_seed = texts.stable_hash(seed, system, split, lang, start) & 0x7FFFFFFF
            tasks.append(SpeechTask(system, spec.engine, spec.voice, lang, task_seed, chunk, spec.settings))
    return tasks


# Room types of RIRS_NOISES/simulated_rirs: (length/width range m, height range m, RT60 range s)
ROOM_TYPES: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "smallroom": ((3.0, 6.0), (2.5, 3.2), (0.15, 0.35)),
    "mediumroom": ((7.0, 12.0), (3.0, 4.0), (0.25, 0.45)),
    "largeroom": ((14.0, 22.0), (4.0, 6.0), (0.35, 0.6)),
}
NOISE_COLOURS: tuple[str, ...] = ("white", "pink", "brown", "band")
MUSAN_SUBSETS: dict[str, tuple[str, ...]] = {
    "noise": ("free-sound", "sound-bible"),
    "music": ("fma", "jamendo"),
    "speech": ("librivox", "us-gov"),
}


def plan_aug_tasks(size: CorpusSize, seed: int, with_speech: bool = True) -> list[AugTask]:
    """The MUSAN and RIRS_NOISES stand-in files."""
    tasks = []
    counts = dict(zip(("noise", "music", "speech"), size.musan, strict=True))
    if not with_speech:
        counts["speech"] = 0
    for kind, count in counts.items():
        for i in range(count):
            subsets = MUSAN_SUBSETS[kind]
            subset = subsets[i % len(subsets)]
            index = i // len(subsets)
            relpath = f"{MUSAN_DIR}/{kind}/{subset}/{kind}-{subset}-{index:04d}.wav"
            params: tuple[tuple[str, object], ...] = ()
            if kind == "noise":
                params = (("colour", NOISE_COLOURS[i % len(NOISE_COLOURS)]),)
            elif kind == "speech":
                voice, lang = BABBLE_VOICES[i % len(BABBLE_VOICES)]
                params = (("voice", voice), ("lang", lang), ("key", f"babble-{i}"), ("seed", seed))
            tasks.append(AugTask(kind, (relpath,), texts.stable_hash(seed, kind, i) & 0x7FFFFFFF, params))
    for room_type in ROOM_TYPES:
        for r in range(1, size.rooms + 1):
            room = f"Room{r:03d}"
            rel = [
                f"{RIRS_DIR}/simulated_rirs/{room_type}/{room}/{room}-{k:05d}.wav"
                for k in range(1, size.rirs_per_room + 1)
            ]
            room_seed = texts.stable_hash(seed, room_type, r) & 0x7FFFFFFF
            tasks.append(AugTask("room", tuple(rel), room_seed, (("room_type", room_type),)))
    return tasks


# ---------------------------------------------------------------------------------------------
# Audio helpers


def _frame_rms(x: np.ndarray, frame: int) -> np.ndarray:
    n = len(x) // frame
    if n == 0:
        return np.sqrt(np.mean(x**2, keepdims=True)) if len(x) else np.zeros(1)
    return np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))


def trim_silence(x: np.ndarray, rate: int, margin_s: float = 0.1, floor_db: float = -40.0) -> np.ndarray:
    """Cut leading and trailing silence (frames ``floor_db`` below the loudest), keeping a margin."""
    frame = max(1, int(0.01 * rate))
    energy = _frame_rms(x, frame)
    threshold = max(float(energy.max()) * 10 ** (floor_db / 20), 1e-4)
    active = np.flatnonzero(energy > threshold)
    if active.size == 0:
        return x[:0]
    margin = int(margin_s * rate)
    start = max(0, active[0] * frame - margin)
    stop = min(len(x), (active[-1] + 1) * frame + margin)
    return x[start:stop]


def to_corpus_audio(audio: np.ndarray, rate: int) -> np.ndarray:
    """Native engine audio -> trimmed, 16 kHz, RMS-normalised float32 with a peak limit."""
    import soxr

    x = np.asarray(audio, np.float64).ravel()
    x = x - x.mean() if x.size else x
    x = trim_silence(x, rate)
    if x.size == 0:
        return np.zeros(0, np.float32)
    x = soxr.resample(x, rate, SAMPLE_RATE, quality="HQ")
    return normalise(x)


def normalise(x: np.ndarray, target_rms: float = TARGET_RMS, peak: float = PEAK_LIMIT) -> np.ndarray:
    """Scale to ``target_rms``, then down so that no sample exceeds ``peak``."""
    x = np.asarray(x, np.float64)
    rms = float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    if rms < 1e-6:
        return x.astype(np.float32)
    x = x * (target_rms / rms)
    top = float(np.abs(x).max())
    if top > peak:
        x = x * (peak / top)
    return x.astype(np.float32)


def _fade_crop(x: np.ndarray, seconds: float, fade_s: float = 0.05) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    if len(x) <= n:
        return x
    x = x[:n].copy()
    fade = int(fade_s * SAMPLE_RATE)
    x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=x.dtype)
    return x


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM mono atomically (a half-written file never has the final name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    sf.write(str(tmp), np.asarray(audio, np.float32), rate, subtype="PCM_16", format="WAV")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Workers (run in subprocesses; everything they need comes in the task)


def _acceptable(x: np.ndarray) -> bool:
    return MIN_SPEECH_S <= len(x) / SAMPLE_RATE <= MAX_SPEECH_S


def _render_clip(engine: Engine, clip: Clip, voice: str, first: tuple[np.ndarray, int] | None) -> np.ndarray:
    """Render one clip, trying its spare sentences when the result is too short, long or silent."""
    candidates: list[np.ndarray] = []
    for attempt, text in enumerate((clip.text, *clip.spares)):
        raw = first if attempt == 0 and first is not None else engine.synthesize(text, voice, clip.lang)
        x = to_corpus_audio(*raw)
        if _acceptable(x):
            return x
        candidates.append(x)
    usable = [c for c in candidates if len(c) >= 0.5 * SAMPLE_RATE]
    if not usable:
        raise EngineError(f"{clip.system}: no usable audio for {clip.relpath}")
    target = 0.5 * (MIN_SPEECH_S + MAX_SPEECH_S) * SAMPLE_RATE
    best = min(usable, key=lambda c: abs(len(c) - target))
    return _fade_crop(best, MAX_SPEECH_S)


def run_speech_task(task: SpeechTask, mlaad_root: str) -> tuple[str, int, list[float]]:
    """Render the missing clips of a task; returns (system, files written, their durations)."""
    root = Path(mlaad_root)
    missing = [not (root / c.relpath).is_file() for c in task.clips]
    if not any(missing):
        return task.system, 0, []
    engine = create_engine(task.engine, seed=task.seed, settings=dict(task.settings))
    try:
        if engine.stateful:
            # replay the fixed order up to the last missing clip so that it matches a fresh build
            todo = list(range(max(i for i, m in enumerate(missing) if m) + 1))
        else:
            todo = [i for i, m in enumerate(missing) if m]
        firsts: list[tuple[np.ndarray, int] | None] = [None] * len(todo)
        if engine.batched:
            firsts = list(engine.synthesize_many([task.clips[i].text for i in todo], task.voice, task.lang))
        durations = []
        for i, first in zip(todo, firsts, strict=True):
            clip = task.clips[i]
            x = _render_clip(engine, clip, task.voice, first)
            if missing[i]:
                if clip.channel_seed is not None:
                    x, description = apply_channel(x, SAMPLE_RATE, np.random.default_rng(clip.channel_seed))
                    if description != clip.channel:
                        raise EngineError(
                            f"{clip.relpath}: channel {description!r}, planned {clip.channel!r}"
                        )
                write_wav(root / clip.relpath, x)
                durations.append(len(x) / SAMPLE_RATE)
        return task.system, len(durations), durations
    finally:
        engine.close()


def _coloured_noise(rng: np.random.Generator, colour: str, n: int) -> np.ndarray:
    white = rng.standard_normal(n)
    if colour == "white":
        return white
    if colour == "band":
        from scipy.signal import butter, sosfilt

        low = rng.uniform(100.0, 1000.0)
        high = rng.uniform(max(low * 1.5, 1500.0), 6500.0)
        sos = butter(4, [low, high], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        return sosfilt(sos, white)
    exponent = {"pink": 1.0, "brown": 2.0}[colour]
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    freqs[0] = freqs[1]
    spectrum /= freqs ** (exponent / 2)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def _tone(rng: np.random.Generator, freq: float, dur: float, n_harm: int, pluck: bool) -> np.ndarray:
    """A harmonic tone with an ADSR (pad) or exponential (plucked) envelope."""
    n = max(1, int(dur * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    tilt = rng.uniform(0.6, 1.4)
    x = np.zeros(n)
    for k in range(1, n_harm + 1):
        if freq * k >= 0.45 * SAMPLE_RATE:
            break
        x += np.sin(2 * np.pi * freq * k * t + rng.uniform(0, 2 * np.pi)) / k**tilt
    if pluck:
        env = np.exp(-t * rng.uniform(3.0, 8.0))
        attack = min(n, int(0.005 * SAMPLE_RATE))
    else:
        env = np.ones(n)
        attack = min(n, int(rng.uniform(0.03, 0.15) * SAMPLE_RATE))
        release = min(n - attack, int(0.25 * SAMPLE_RATE))
        if release > 0:
            env[n - release :] = np.linspace(1.0, 0.0, release)
        env *= 0.8 + 0.2 * np.cos(2 * np.pi * rng.uniform(3, 6) * t)  # tremolo
    if attack > 0:
        env[:attack] *= np.linspace(0.0, 1.0, attack)
    return x * env


def _music(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Chords, a bass line and a melody of harmonic tones in a random key and tempo."""
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n + SAMPLE_RATE)
    beat = 60.0 / rng.uniform(70, 140)
    root = int(rng.integers(45, 58))
    scale = [0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.5 else [0, 2, 3, 5, 7, 8, 10]
    progression = rng.choice([[0, 3, 4, 0], [0, 5, 3, 4], [0, 4, 5, 3], [5, 3, 0, 4]])

    def hz(midi: float) -> float:
        return 440.0 * 2 ** ((midi - 69) / 12)

    def note(degree: int, octave: int) -> int:
        return root + 12 * (octave + degree // 7) + scale[degree % 7]

    def add(x: np.ndarray, start: float, gain: float) -> None:
        i = int(start * SAMPLE_RATE)
        if i < n:
            seg = x[: len(out) - i]
            out[i : i + len(seg)] += gain * seg

    pad_harm, lead_harm = int(rng.integers(3, 7)), int(rng.integers(4, 10))
    t, bar = 0.0, 0
    while t < seconds:
        degree = int(progression[bar % len(progression)])
        bar_len = 4 * beat
        for third in (0, 2, 4):
            add(_tone(rng, hz(note(degree + third, 0)), bar_len, pad_harm, pluck=False), t, 0.15)
        for b in range(4):
            add(_tone(rng, hz(note(degree, -1)), beat * 0.9, 3, pluck=True), t + b * beat, 0.3)
        step = beat / float(rng.choice([1, 2]))
        m = 0.0
        while m < bar_len - 1e-6:
            if rng.random() < 0.85:
                deg = degree + int(rng.choice([0, 2, 4, 5, 7]))
                add(_tone(rng, hz(note(deg, 1)), step * 1.5, lead_harm, pluck=True), t + m, 0.25)
            m += step
        t += bar_len
        bar += 1
    return out[:n]


def _babble_speech(params: dict, rng: np.random.Generator, seconds: float) -> np.ndarray:
    """One speaker reading sentences with short pauses, from a voice no system uses."""
    engine = EspeakEngine()
    pieces: list[np.ndarray] = []
    total = 0
    sentences = texts.draw_sentences(params["lang"], "babble", params["key"], 12, seed=int(params["seed"]))
    try:
        for text in sentences:
            audio, rate = engine.synthesize(text, params["voice"], params["lang"])
            x = to_corpus_audio(audio, rate)
            pause = np.zeros(int(rng.uniform(0.2, 0.5) * SAMPLE_RATE), np.float32)
            pieces += [x, pause]
            total += len(x) + len(pause)
            if total >= seconds * SAMPLE_RATE:
                break
    finally:
        engine.close()
    return _fade_crop(normalise(np.concatenate(pieces)), seconds)


def _room_rirs(rng: np.random.Generator, room_type: str, count: int) -> list[np.ndarray]:
    """``count`` RIRs of one ShoeBox room (image-source method) with random source/mic positions."""
    import pyroomacoustics as pra

    side, height, rt60_range = ROOM_TYPES[room_type]
    dims = np.array([rng.uniform(*side), rng.uniform(*side), rng.uniform(*height)])
    rt60 = rng.uniform(*rt60_range)
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    rirs = []
    for _ in range(count):
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(absorption), max_order=max_order)
        while True:
            src = rng.uniform(0.5, dims - 0.5)
            mic = rng.uniform(0.5, dims - 0.5)
            if np.linalg.norm(src - mic) >= 1.0:
                break
        room.add_source(src)
        room.add_microphone(mic)
        room.compute_rir()
        rir = np.asarray(room.rir[0][0], np.float64)
        above = np.flatnonzero(np.abs(rir) > np.abs(rir).max() * 1e-4)
        rir = rir[: above[-1] + 1]
        rirs.append((0.9 * rir / np.abs(rir).max()).astype(np.float32))
    return rirs


def run_aug_task(task: AugTask, out_root: str) -> tuple[str, int, list[float]]:
    """Make one MUSAN stand-in file or one room's RIRs (skipping files that exist)."""
    root = Path(out_root)
    paths = [root / p for p in task.relpaths]
    if all(p.is_file() for p in paths):
        return task.kind, 0, []
    rng = np.random.default_rng(task.seed)
    params = dict(task.params)
    if task.kind == "room":
        audios = _room_rirs(rng, str(params["room_type"]), len(paths))
    else:
        seconds = float(rng.uniform(5.0, 10.0))
        if task.kind == "noise":
            x = _coloured_noise(rng, str(params["colour"]), int(seconds * SAMPLE_RATE))
            audios = [normalise(x, target_rms=0.05)]
        elif task.kind == "music":
            audios = [normalise(_music(rng, seconds), target_rms=0.06)]
        elif task.kind == "speech":
            audios = [_babble_speech(params, rng, seconds)]
        else:
            raise ValueError(f"unknown augmentation task {task.kind!r}")
    written = 0
    for path, audio in zip(paths, audios, strict=True):
        if not path.is_file():
            write_wav(path, audio)
            written += 1
    return task.kind, written, []


def _run_task(task: SpeechTask | AugTask, root: str) -> tuple[str, int, list[float]]:
    if isinstance(task, SpeechTask):
        return run_speech_task(task, str(Path(root) / MLAAD_DIR))
    return run_aug_task(task, root)


# ---------------------------------------------------------------------------------------------
# Checks, protocols, summary


@dataclass
class SystemRow:
    """One line of the summary."""

    system: str
    engine: str
    family: str
    role: str
    languages: tuple[str, ...]
    unseen_languages: tuple[str, ...]
    clips: dict[str, int]
    twin_of: tuple[str, ...] = ()  # known systems (present in the corpus) this one is a near-twin of


@dataclass
class CorpusReport:
    """What ``build_corpus`` made."""

    out: Path
    rows: list[SystemRow]
    skipped: dict[str, str]  # engine or system -> reason
    problems: list[str]  # structural rules not met
    written: int
    seconds: float
    protocols: dict[str, Path]


def check_availability(systems: Sequence[SystemSpec], engine_names: Sequence[str]) -> dict[str, str]:
    """Which engines / systems cannot run here, with the reason (one check per engine, then per voice)."""
    skipped: dict[str, str] = {}
    for name in engine_names:
        mine = [s for s in systems if s.engine == name]
        if not mine and name != "espeak":  # eSpeak also voices the MUSAN babble
            continue
        engine = create_engine(name)
        try:
            reason = engine.check(())
            if reason:
                skipped[name] = reason
                continue
            for spec in mine:
                voices = (
                    [EspeakEngine.voice_name(spec.voice, lang) for lang in _all_langs(spec)]
                    if name == "espeak"
                    else [spec.voice]
                )
                reason = engine.check(voices)
                if reason:
                    skipped[spec.name] = reason
        finally:
            engine.close()
    return skipped


def _all_langs(spec: SystemSpec) -> tuple[str, ...]:
    return tuple(dict.fromkeys(lang for split in SPLITS for lang in spec.langs_in(split)))


def summary_rows(systems: Sequence[SystemSpec], clips: Sequence[Clip]) -> list[SystemRow]:
    """Per-system counts and languages (those unseen in train marked) and near-twins present."""
    train_langs = {c.lang for c in clips if c.split == "train"}
    in_train = {c.system for c in clips if c.split == "train"}
    rows = []
    for spec in systems:
        mine = [c for c in clips if c.system == spec.name]
        langs = tuple(dict.fromkeys(c.lang for c in mine))
        counts = {split: sum(c.split == split for c in mine) for split in SPLITS}
        unseen = tuple(lang for lang in langs if lang not in train_langs)
        twins = tuple(t for t in spec.twin_of if t in in_train)
        rows.append(SystemRow(spec.name, spec.engine, spec.family, spec.role, langs, unseen, counts, twins))
    return rows


def check_structure(rows: Sequence[SystemRow], twins: bool = False) -> list[str]:
    """The MLAAD-like rules the corpus should meet; returns the ones it breaks.

    Known systems are in train, dev and eval; dev and eval both hold unseen systems, different
    ones; some eval system belongs to a family absent from train; some dev/eval language is
    absent from train. With ``twins`` (the hard plan), also the rules of ``check_twins``.
    """
    problems = []
    in_split = {split: {r.system for r in rows if r.clips[split]} for split in SPLITS}
    known = in_split["train"]
    if len(known) < 2:
        problems.append(f"only {len(known)} known system(s) in train")
    for split in ("dev", "eval"):
        if not known <= in_split[split]:
            problems.append(f"known systems missing from {split}: {sorted(known - in_split[split])}")
    dev_unseen, eval_unseen = in_split["dev"] - known, in_split["eval"] - known
    if not dev_unseen:
        problems.append("dev has no unseen system")
    if not eval_unseen:
        problems.append("eval has no unseen system")
    if dev_unseen and dev_unseen == eval_unseen:
        problems.append("dev and eval have the same unseen systems")
    train_families = {r.family for r in rows if r.system in known}
    if not any(r.family not in train_families for r in rows if r.system in eval_unseen):
        problems.append("no eval system of a synthesis family unseen in train")
    if not any(r.unseen_languages for r in rows):
        problems.append("no language in dev/eval that is absent from train")
    if twins:
        problems += check_twins(rows)
    return problems


def check_twins(rows: Sequence[SystemRow]) -> list[str]:
    """The near-twin rules of the hard plan; returns the ones it breaks.

    Every ``twin_of`` entry is a known system of the same family (one engine, or one voice
    database shared by two engines); some known system has a known twin; dev and eval both hold
    unseen near-twins and unseen systems that are nobody's twin.
    """
    problems = []
    known = {r.system: r for r in rows if r.clips["train"]}
    for r in rows:
        for twin in r.twin_of:
            if twin not in known:
                problems.append(f"{r.system}: twin {twin} is not a known system")
            elif known[twin].family != r.family:
                problems.append(f"{r.system}: twin {twin} is of family {known[twin].family}, not {r.family}")
    if not any(r.twin_of for r in known.values()):
        problems.append("no near-twins among the known systems")
    for split in ("dev", "eval"):
        unseen = [r for r in rows if r.clips[split] and r.system not in known]
        if not any(r.twin_of for r in unseen):
            problems.append(f"{split} has no unseen near-twin of a known system")
        if not any(not r.twin_of for r in unseen):
            problems.append(f"{split} has no unseen system that is nobody's near-twin")
    return problems


def write_protocols(out: Path, clips: Sequence[Clip]) -> dict[str, Path]:
    """``protocols/{train,dev,eval}.csv`` with ``path,model_name`` rows in plan order."""
    folder = out / PROTOCOL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in SPLITS:
        path = folder / f"{split}.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["path", "model_name"])
            writer.writerows([f"./{c.relpath}", c.system] for c in clips if c.split == split)
        paths[split] = path
    return paths


def write_manifest(out: Path, clips: Sequence[Clip]) -> Path:
    """``clips.csv``: one row per clip (protocol path, system, split, channel or ``none``), in the
    order of the protocols train, dev, eval."""
    path = out / "clips.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["path", "system", "split", "channel"])
        for split in SPLITS:
            writer.writerows(
                [f"./{c.relpath}", c.system, c.split, c.channel] for c in clips if c.split == split
            )
    return path


def write_summary(out: Path, rows: Sequence[SystemRow]) -> Path:
    """``corpus_summary.csv``: system, engine, family, role, languages, unseen languages, counts,
    near-twins (space-separated known systems; empty when none)."""
    path = out / "corpus_summary.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(
            ["system", "engine", "family", "role", "languages", "unseen_languages", *SPLITS, "twin_of"]
        )
        for r in rows:
            writer.writerow(
                [r.system, r.engine, r.family, r.role, " ".join(r.languages), " ".join(r.unseen_languages)]
                + [r.clips[s] for s in SPLITS]
                + [" ".join(r.twin_of)]
            )
    return path


def format_summary(rows: Sequence[SystemRow]) -> str:
    """The summary as an aligned text table (unseen languages marked with ``*``; a ``twin of``
    column when some system has near-twins)."""
    with_twins = any(r.twin_of for r in rows)
    header = ["system", "engine", "family", "languages", "role", *SPLITS] + (
        ["twin of"] if with_twins else []
    )
    body = [
        [
            r.system,
            r.engine,
            r.family,
            " ".join(lang + ("*" if lang in r.unseen_languages else "") for lang in r.languages),
            r.role,
            *(str(r.clips[s]) for s in SPLITS),
        ]
        + ([", ".join(r.twin_of)] if with_twins else [])
        for r in rows
    ]
    totals = ["total", "", "", "", "", *(str(sum(r.clips[s] for r in rows)) for s in SPLITS)]
    totals += [""] if with_twins else []
    table = [header, *body, totals]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    numeric = set(range(5, 5 + len(SPLITS)))

    def fmt(line: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )

    rule = "-" * len(fmt(header))
    lines = [fmt(header), rule, *(fmt(line) for line in body), rule, fmt(totals)]
    return "\n".join(lines) + "\n(* = language absent from train)"


def _check_config(out: Path, seed: int, plan: str) -> None:
    path = out / "corpus_config.json"
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        before = previous.get("plan", "default")
        if previous.get("seed") != seed or previous.get("format") != FORMAT_VERSION or before != plan:
            raise CorpusError(
                f"{out} holds a corpus of plan {before!r} built with seed {previous.get('seed')} (format "
                f"{previous.get('format')}); rebuild with that plan and seed or choose another --out"
            )


# ---------------------------------------------------------------------------------------------
# Building


def _complete(task: SpeechTask | AugTask, out: Path) -> bool:
    """Whether every file of a task exists already."""
    if isinstance(task, SpeechTask):
        return all((out / MLAAD_DIR / c.relpath).is_file() for c in task.clips)
    return all((out / p).is_file() for p in task.relpaths)


def _task_cost(task: SpeechTask | AugTask) -> float:
    if isinstance(task, AugTask):
        return 0.2 * len(task.relpaths)
    per_clip = {"kokoro": 4.0, "piper": 0.5, "festival": 0.3, "flite": 0.15, "sam": 0.15}.get(
        task.engine, 0.03
    )
    load = {"kokoro": 2.0, "piper": 1.0, "festival": 0.3}.get(task.engine, 0.0)
    return load + per_clip * len(task.clips)


def _execute(
    tasks: Sequence[SpeechTask | AugTask],
    root: Path,
    jobs: int,
    progress: bool,
    on_error: Callable[[SpeechTask | AugTask, BaseException], None],
) -> int:
    """Run the tasks (largest first) on ``jobs`` processes; returns the number of files written."""
    order = sorted(range(len(tasks)), key=lambda i: (-_task_cost(tasks[i]), i))
    total_units = sum(len(t.clips) if isinstance(t, SpeechTask) else len(t.relpaths) for t in tasks)
    written = 0
    with progress_bar(total=total_units, desc="demo corpus", unit="file", show=progress) as bar:

        def done(task: SpeechTask | AugTask, result: tuple[str, int, list[float]] | None) -> None:
            nonlocal written
            written += result[1] if result else 0
            bar.update(len(task.clips) if isinstance(task, SpeechTask) else len(task.relpaths))

        if jobs <= 1:
            for i in order:
                try:
                    done(tasks[i], _run_task(tasks[i], str(root)))
                except Exception as err:  # a failing system is reported and left out
                    on_error(tasks[i], err)
                    done(tasks[i], None)
            return written
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            pending: dict[Future, SpeechTask | AugTask] = {
                pool.submit(_run_task, tasks[i], str(root)): tasks[i] for i in order
            }
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        task = pending.pop(future)
                        try:
                            done(task, future.result())
                        except Exception as err:  # a failing system is reported and left out
                            on_error(task, err)
                            done(task, None)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    return written


def build_corpus(
    out: str | Path,
    size: str | CorpusSize = "default",
    seed: int = 0,
    engines: str | Sequence[str] | None = "all",
    jobs: int | None = None,
    progress: bool = True,
    verbose: bool = True,
    plan: str | CorpusPlan | Sequence[SystemSpec] = "default",
) -> CorpusReport:
    """Build (or complete) the demo corpus of ``plan`` (``default``, ``hard``; see ``PLANS``)
    under ``out`` and return what was made.

    Engines that are missing or fail to initialise are skipped (reported in one line); the
    protocols, ``clips.csv``, ``corpus_summary.csv`` and ``corpus_config.json`` are rewritten on
    every run.
    """
    started = time.perf_counter()
    out = Path(out)
    corpus_plan = resolve_plan(plan)
    size = corpus_plan.size(size)
    jobs = max(1, int(jobs or os.cpu_count() or 1))
    engine_names = resolve_engines(engines)
    _check_config(out, seed, corpus_plan.name)

    requested = [s for s in corpus_plan.systems if s.engine in engine_names]
    skipped = check_availability(requested, engine_names)
    babble = "espeak" in engine_names and "espeak" not in skipped
    if babble:
        probe = EspeakEngine()
        reason = probe.check([v for v, _ in BABBLE_VOICES])
        probe.close()
        if reason:
            skipped["musan/speech"] = reason
            babble = False
    systems = [s for s in requested if s.engine not in skipped and s.name not in skipped]
    if verbose:
        if skipped:
            print("skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
        else:
            print(f"engines: all of {', '.join(engine_names)} available")

    clips = plan_clips(systems, size, seed, corpus_plan.channel_share)
    tasks: list[SpeechTask | AugTask] = [*plan_speech_tasks(systems, clips, seed)]
    tasks += plan_aug_tasks(size, seed, with_speech=babble)
    out.mkdir(parents=True, exist_ok=True)

    failed: dict[str, str] = {}

    def on_error(task: SpeechTask | AugTask, err: BaseException) -> None:
        key = task.system if isinstance(task, SpeechTask) else f"{task.kind}:{task.relpaths[0]}"
        failed.setdefault(key, f"{type(err).__name__}: {err}")

    todo = [t for t in tasks if not _complete(t, out)]
    written = _execute(todo, out, jobs, progress, on_error) if todo else 0
    if failed:
        skipped.update({k: f"failed: {v}" for k, v in failed.items()})
        if verbose:
            print("failed: " + "; ".join(f"{k} ({v})" for k, v in failed.items()))
    systems = [s for s in systems if s.name not in failed]
    clips = [c for c in clips if c.system not in failed]

    protocols = write_protocols(out, clips)
    write_manifest(out, clips)
    rows = summary_rows(systems, clips)
    write_summary(out, rows)
    _write_rir_lists(out, size)
    config = {
        "format": FORMAT_VERSION,
        "plan": corpus_plan.name,
        "seed": seed,
        "size": size.name,
        "channel_share": corpus_plan.channel_share,
        "systems": [s.name for s in systems],
    }
    (out / "corpus_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    problems = check_structure(rows, twins=any(s.twin_of for s in corpus_plan.systems))
    seconds = time.perf_counter() - started
    if verbose:
        print(format_summary(rows))
        for problem in problems:
            print(f"warning: {problem}")
        stale = stale_folders(out, clips)
        if stale:
            print(
                f"note: {len(stale)} folder(s) under {MLAAD_DIR} hold no clip of this build (left by an "
                f"earlier one; not in the protocols, left in place): {', '.join(stale)}"
            )
        print(f"{written} new files in {seconds:.1f} s; protocols in {out / PROTOCOL_DIR}")
    return CorpusReport(out, rows, skipped, problems, written, seconds, protocols)


def stale_folders(out: Path, clips: Sequence[Clip]) -> list[str]:
    """System folders (``fake/<lang>/<system>``) under the corpus's audio root that hold no clip of
    ``clips``: what an earlier build with another plan or other engines left behind."""
    root = Path(out) / MLAAD_DIR
    used = {str(Path(c.relpath).parent) for c in clips}
    found = sorted(str(p.relative_to(root)) for p in root.glob("fake/*/*") if p.is_dir())
    return [f for f in found if f not in used]


def _write_rir_lists(out: Path, size: CorpusSize) -> None:
    """``simulated_rirs/<type>/rir_list`` in the RIRS_NOISES format (one line per RIR)."""
    for room_type in ROOM_TYPES:
        folder = out / RIRS_DIR / "simulated_rirs" / room_type
        lines = []
        for r in range(1, size.rooms + 1):
            room = f"Room{r:03d}"
            for k in range(1, size.rirs_per_room + 1):
                rel = f"{RIRS_DIR}/simulated_rirs/{room_type}/{room}/{room}-{k:05d}.wav"
                if (out / rel).is_file():
                    lines.append(f"--rir-id {room_type}-{room}-{k:05d} --room-id {room_type}-{room} {rel}\n")
        if lines:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "rir_list").write_text("".join(lines), encoding="utf-8")
