"""Channel transforms: each is seeded, keeps what it should, and really does what its name says."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
from corpus_fixtures import write_musan, write_rirs

from sourcetracing.data import transforms
from sourcetracing.data.augment import Augmenter, reverberate, snr_db
from sourcetracing.data.codecs import align_to, encode, encoded_bitrate_kbps
from sourcetracing.data.transforms import (
    DEFAULT_CONDITIONS,
    TRANSFORMS,
    Condition,
    TransformError,
    build_conditions,
    codec_roundtrip,
    condition_rng,
    register_transform,
)

SR = 16000
CODEC_CONDITIONS = ["mp3_32k", "mp3_64k", "mp3_128k", "opus_12k", "opus_32k", "vorbis_q0", "vorbis_q6"]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("transforms")
    return {"musan": str(write_musan(root / "musan")), "rirs": str(write_rirs(root / "RIRS_NOISES"))}


@pytest.fixture(scope="module")
def conditions(corpora) -> dict[str, Condition]:
    return build_conditions(None, **corpora)


def speechlike(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A voiced, amplitude-modulated harmonic tone with a little noise (broadband, speech-like level)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140.0 * (1 + 0.05 * np.sin(2 * np.pi * 2 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(0.7**h * np.sin(h * phase) for h in range(1, 25))
    wave = voiced * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(len(t))
    return (0.3 * wave / np.max(np.abs(wave))).astype(np.float32)


def white_noise(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def fraction_above(wave: np.ndarray, hz: float) -> float:
    """The fraction of the wave's energy above ``hz`` (FFT)."""
    power = np.abs(np.fft.rfft(wave.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(wave), 1 / SR)
    return float(power[freqs > hz].sum() / power.sum())


def best_lag(out: np.ndarray, ref: np.ndarray, max_lag: int = 400) -> int:
    """The shift of ``out`` against ``ref`` with the highest cross-correlation, within +-max_lag."""
    lags = range(-max_lag, max_lag + 1)
    scores = [float(np.dot(np.roll(out, -lag)[max_lag:-max_lag], ref[max_lag:-max_lag])) for lag in lags]
    return list(lags)[int(np.argmax(scores))]


# -- every condition ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DEFAULT_CONDITIONS))
def test_condition_is_deterministic_keeps_input_and_length(conditions, name):
    wave = speechlike(2.5)
    before = wave.copy()
    a = conditions[name](wave, SR, condition_rng(0, "clip.wav", name))
    b = conditions[name](wave, SR, condition_rng(0, "clip.wav", name))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(wave, before)  # the input is never modified
    assert a.dtype == np.float32 and a.ndim == 1 and np.isfinite(a).all()
    if not name.startswith("first_"):
        assert len(a) == len(wave)


@pytest.mark.parametrize("name", ["noise_10db", "reverb"])
def test_random_conditions_follow_the_generator(conditions, name):
    wave = speechlike()
    outputs = [conditions[name](wave, SR, condition_rng(0, f"clip{i}.wav", name)) for i in range(6)]
    assert any(not np.array_equal(outputs[0], other) for other in outputs[1:])


def test_condition_rng_is_per_clip_and_condition():
    first = condition_rng(0, "a.wav", "noise_10db").random()
    assert first == condition_rng(0, "a.wav", "noise_10db").random()
    assert first != condition_rng(0, "b.wav", "noise_10db").random()
    assert first != condition_rng(0, "a.wav", "noise_0db").random()
    assert first != condition_rng(1, "a.wav", "noise_10db").random()


# -- codecs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CODEC_CONDITIONS)
def test_codec_really_encodes_and_stays_aligned(conditions, name):
    wave = speechlike(1.5)
    out = conditions[name](wave, SR, np.random.default_rng(0))
    assert len(out) == len(wave)
    error_db = snr_db(wave, out - wave)
    assert error_db < 45.0  # changed by the codec, far above float rounding
    assert error_db > 3.0  # still the same signal: decoded and aligned, not noise or shifted
    assert best_lag(out, wave) == 0


def test_lower_bit_rate_means_larger_error(conditions):
    wave = speechlike(1.5)
    rng = np.random.default_rng(0)
    for low, high in (("mp3_32k", "mp3_128k"), ("opus_12k", "opus_32k"), ("vorbis_q0", "vorbis_q6")):
        low_db = snr_db(wave, conditions[low](wave, SR, rng) - wave)
        high_db = snr_db(wave, conditions[high](wave, SR, rng) - wave)
        assert low_db < high_db - 2.0, (low, low_db, high, high_db)


def test_encoded_files_are_what_they_say():
    wave = speechlike(2.0)
    data, rate = encode(wave, SR, "mp3", bitrate_kbps=64)
    assert rate == SR and sf.info(io.BytesIO(data)).format == "MP3"
    info = sf.info(io.BytesIO(encode(wave, SR, "opus", bitrate_kbps=24)[0]))
    assert (info.format, info.subtype) == ("OGG", "OPUS")
    info = sf.info(io.BytesIO(encode(wave, SR, "vorbis", quality=4)[0]))
    assert (info.format, info.subtype) == ("OGG", "VORBIS")


@pytest.mark.parametrize("kbps", [32, 64, 128])
def test_mp3_bit_rate_is_the_named_constant_rate(kbps):
    measured = encoded_bitrate_kbps(speechlike(3.0), SR, "mp3", bitrate_kbps=kbps)
    assert kbps <= measured <= 1.1 * kbps  # CBR plus priming, padding and the Info frame


@pytest.mark.parametrize("kbps", [12, 32])
def test_opus_bit_rate_follows_the_target(kbps):
    measured = encoded_bitrate_kbps(speechlike(3.0), SR, "opus", bitrate_kbps=kbps)
    assert 0.7 * kbps <= measured <= 1.3 * kbps


def test_vorbis_quality_raises_the_bit_rate():
    wave = speechlike(3.0)
    rates = [encoded_bitrate_kbps(wave, SR, "vorbis", quality=q) for q in (0, 3, 6)]
    assert rates[0] < rates[1] < rates[2]


def test_mp3_delay_without_gapless_info_is_removed():
    """At 32 kbit/s LAME writes no Info frame, so the decoder returns the codec delay and padding."""
    wave = speechlike(1.5)
    data, _ = encode(wave, SR, "mp3", bitrate_kbps=32)
    raw, _ = sf.read(io.BytesIO(data), dtype="float32")
    assert len(raw) > len(wave) + 500
    assert best_lag(raw[: len(wave)], wave, max_lag=1500) > 500
    assert best_lag(codec_roundtrip(wave, SR, "mp3", bitrate_kbps=32), wave) == 0


def test_align_to_removes_a_known_delay():
    wave = speechlike(0.5)
    delayed = np.concatenate([np.zeros(321, np.float32), wave, np.zeros(77, np.float32)])
    np.testing.assert_array_equal(align_to(delayed, wave), wave)
    short = align_to(wave[:-10], wave)
    assert len(short) == len(wave) and not short[-10:].any()


@pytest.mark.parametrize("codec,setting", [("opus", {"bitrate_kbps": 24}), ("mp3", {"bitrate_kbps": 64})])
def test_codec_at_a_rate_it_does_not_support(codec, setting):
    rate = 22050 if codec == "opus" else 20000
    t = np.arange(rate) / rate
    wave = (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    out = codec_roundtrip(wave, rate, codec, **setting)
    assert len(out) == len(wave) and snr_db(wave, out - wave) > 10.0


def test_codec_settings_out_of_range_are_clear_errors():
    wave = speechlike(0.2)
    with pytest.raises(TransformError, match="8-160 kbit/s"):
        encode(wave, SR, "mp3", bitrate_kbps=320)
    with pytest.raises(TransformError, match="6-256"):
        encode(wave, SR, "opus", bitrate_kbps=2)
    with pytest.raises(TransformError, match="0-10"):
        encode(wave, SR, "vorbis", quality=11)
    with pytest.raises(TransformError, match="unknown codec 'aac'"):
        encode(wave, SR, "aac", bitrate_kbps=64)


# -- band limits ------------------------------------------------------------------------------------


def test_telephone_band_removes_energy_above_4k(conditions):
    noise = white_noise()
    assert fraction_above(noise, 4100.0) > 0.4
    out = conditions["telephone_8k"](noise, SR, np.random.default_rng(0))
    assert fraction_above(out, 4100.0) < 1e-4
    assert snr_db(noise, out) == pytest.approx(10 * np.log10(2), abs=0.3)  # the lower half stays


@pytest.mark.parametrize("cutoff", [1000.0, 5000.0])
def test_lowpass_removes_energy_above_its_cutoff(cutoff):
    noise = white_noise(seed=1)
    condition = build_conditions({"lp": {"transform": "lowpass", "cutoff_hz": cutoff}})["lp"]
    out = condition(noise, SR, np.random.default_rng(0))
    assert fraction_above(noise, 1.2 * cutoff) > 0.25
    assert fraction_above(out, 1.2 * cutoff) < 1e-3
    # the pass band is kept: energy below 0.8 x cutoff is unchanged within 5%
    below = np.fft.rfftfreq(len(noise), 1 / SR) < 0.8 * cutoff
    kept = np.sum(np.abs(np.fft.rfft(out))[below] ** 2) / np.sum(np.abs(np.fft.rfft(noise))[below] ** 2)
    assert kept == pytest.approx(1.0, abs=0.05)
    assert best_lag(out, noise) == 0  # zero phase
    # at the cutoff: the Butterworth -3 dB point, passed forward and backward, so -6 dB (half amplitude)
    t = np.arange(SR) / SR
    tone = np.sin(2 * np.pi * cutoff * t).astype(np.float32)
    middle = slice(SR // 4, 3 * SR // 4)
    ratio = np.std(condition(tone, SR, np.random.default_rng(0))[middle]) / np.std(tone[middle])
    assert ratio == pytest.approx(0.5, abs=0.01)


def test_lowpass_cutoff_must_be_below_nyquist():
    condition = build_conditions({"lp": {"transform": "lowpass", "cutoff_hz": 9000.0}})["lp"]
    with pytest.raises(TransformError, match="cutoff_hz must lie in"):
        condition(white_noise(), SR, np.random.default_rng(0))


# -- noise and reverberation ----------------------------------------------------------------------


@pytest.mark.parametrize("name,target", [("noise_20db", 20.0), ("noise_10db", 10.0), ("noise_0db", 0.0)])
def test_noise_lies_at_its_snr(conditions, name, target):
    wave = speechlike(1.0, seed=3)
    for i in range(3):
        out = conditions[name](wave, SR, condition_rng(0, f"c{i}.wav", name))
        added = out.astype(np.float64) - wave
        assert float(np.max(np.abs(added))) > 1e-3
        assert snr_db(wave, added) == pytest.approx(target, abs=0.5)


def test_reverb_convolves_with_a_drawn_rir(conditions, corpora):
    wave = speechlike(1.0, seed=4)
    out = conditions["reverb"](wave, SR, condition_rng(0, "x.wav", "reverb"))
    rir, path = Augmenter(musan="", rirs=corpora["rirs"]).draw_rir(condition_rng(0, "x.wav", "reverb"))
    assert "/simulated_rirs/" in path
    np.testing.assert_array_equal(out, reverberate(wave, rir))
    assert snr_db(wave, out - wave) < 30.0


def test_conditions_that_need_a_corpus_say_so():
    with pytest.raises(TransformError, match="needs musan=<folder>"):
        build_conditions(["noise_10db"])
    with pytest.raises(TransformError, match="needs rirs=<folder>"):
        build_conditions(["reverb"], musan="unused")
    assert set(build_conditions(["clean", "mp3_32k"], musan="m", rirs="r")["mp3_32k"].params) == {
        "bitrate_kbps"
    }


# -- level, clipping, length -----------------------------------------------------------------------


def test_level_change_is_exact(conditions):
    wave = speechlike()
    out = conditions["level_-20db"](wave, SR, np.random.default_rng(0))
    assert 20 * np.log10(np.linalg.norm(out) / np.linalg.norm(wave)) == pytest.approx(-20.0, abs=1e-4)


@pytest.mark.parametrize("fraction", [0.5, 0.2])
def test_clipping_bounds_the_peak(fraction):
    wave = speechlike()
    condition = build_conditions({"c": {"transform": "clip", "fraction": fraction}})["c"]
    out = condition(wave, SR, np.random.default_rng(0))
    limit = fraction * float(np.max(np.abs(wave)))
    assert float(np.max(np.abs(out))) == pytest.approx(limit, rel=1e-6)
    inside = np.abs(wave) < limit
    np.testing.assert_array_equal(out[inside], wave[inside])
    assert np.count_nonzero(~inside) > 0.01 * len(wave)


@pytest.mark.parametrize("name,samples", [("first_1s", SR), ("first_2s", 2 * SR)])
def test_short_clips_have_the_exact_length(conditions, name, samples):
    wave = speechlike(3.3)
    out = conditions[name](wave, SR, np.random.default_rng(0))
    assert len(out) == samples
    np.testing.assert_array_equal(out, wave[:samples])
    short = speechlike(0.5)
    np.testing.assert_array_equal(conditions[name](short, SR, np.random.default_rng(0)), short)


# -- registry and plain-data conditions -------------------------------------------------------------


def test_conditions_from_plain_data_round_trip():
    spec = {
        "mp3_24k": {"transform": "mp3", "bitrate_kbps": 24},
        "quiet": {"transform": "gain", "gain_db": -6},
    }
    built = build_conditions(spec)
    assert built["mp3_24k"] == Condition("mp3_24k", "mp3", {"bitrate_kbps": 24})
    rebuilt = build_conditions({name: c.describe() for name, c in built.items()})
    assert rebuilt == built
    assert set(build_conditions(None, musan="m", rirs="r")) == set(DEFAULT_CONDITIONS)


def test_bad_condition_specs_are_clear_errors():
    with pytest.raises(TransformError, match="unknown transform 'chorus'"):
        build_conditions({"x": {"transform": "chorus"}})
    with pytest.raises(TransformError, match="has no parameter"):
        build_conditions({"x": {"transform": "gain", "gain": -3}})
    with pytest.raises(TransformError, match="'transform' key"):
        build_conditions({"x": {"gain_db": -3}})
    with pytest.raises(TransformError, match="unknown condition"):
        build_conditions(["mp3_8k"])


def test_register_a_transform(monkeypatch):
    monkeypatch.setattr(transforms, "TRANSFORMS", dict(TRANSFORMS))

    @register_transform("invert")
    def invert(wave, sample_rate, rng, *, scale: float = 1.0):
        return (-scale * wave).astype(np.float32)

    condition = build_conditions({"inverted": {"transform": "invert"}})["inverted"]
    wave = speechlike(0.1)
    np.testing.assert_array_equal(condition(wave, SR, np.random.default_rng(0)), -wave)
    with pytest.raises(TransformError, match="registered twice"):
        register_transform("invert")(invert)


@pytest.mark.parametrize(
    "wave,message",
    [
        (np.zeros((2, 100), np.float32), "mono wave"),
        (np.zeros(0, np.float32), "empty"),
        (np.arange(100, dtype=np.int16), "float wave"),
        (np.array([0.1, np.nan], np.float32), "NaN"),
    ],
)
def test_bad_waves_are_clear_errors(conditions, wave, message):
    with pytest.raises(TransformError, match=message):
        conditions["mp3_64k"](wave, SR, np.random.default_rng(0))
