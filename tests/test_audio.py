"""Audio loading (resampling, mixdown, bad-input reasons) and crops."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from sourcetracing.data.audio import AudioError, crop_or_pad, load_audio
from sourcetracing.data.augment import crop_rng


def _tone(freq: float, sr: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(wave))
    return float(np.argmax(spec) * sr / len(wave))


@pytest.mark.parametrize("sr", [8000, 22050, 24000, 44100])
def test_load_resamples_to_16k(tmp_path, sr):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(440.0, sr), sr)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16000) <= 1
    assert abs(_peak_hz(wave, 16000) - 440.0) < 2.0


def test_stereo_is_mixed_down(tmp_path):
    x = _tone(300.0, 16000)
    sf.write(tmp_path / "s.wav", np.stack([x, 0.5 * x], axis=1), 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", 16000), 0.75 * x, atol=1e-6)


def test_segment_read(tmp_path):
    x = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    sf.write(tmp_path / "r.wav", x, 16000, subtype="FLOAT")
    seg = load_audio(tmp_path / "r.wav", 16000, offset_s=0.25, duration_s=0.5)
    np.testing.assert_array_equal(seg, x[4000:12000])


def test_bad_inputs_raise_with_reason(tmp_path):
    (tmp_path / "junk.wav").write_bytes(b"not audio at all" * 4)
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(1600, dtype=np.float32), 16000)
    nan = np.full(1600, 0.1, dtype=np.float32)
    nan[5] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = np.full(1600, 0.1, dtype=np.float32)
    inf[7] = np.inf
    sf.write(tmp_path / "inf.wav", inf, 16000, subtype="FLOAT")
    expected = {
        "junk.wav": "unreadable",
        "missing.wav": "unreadable",
        "empty.wav": "empty",
        "silent.wav": "silent",
        "nan.wav": "nan_or_inf",
        "inf.wav": "nan_or_inf",
    }
    for name, reason in expected.items():
        with pytest.raises(AudioError) as info:
            load_audio(tmp_path / name, 16000)
        assert info.value.reason == reason, name


def test_wrap_padding_tiles_the_clip():
    x = np.arange(7, dtype=np.float32)
    out = crop_or_pad(x, 20)
    np.testing.assert_array_equal(out, np.resize(x, 20))
    # a random generator does not change padding (there is nothing to choose)
    np.testing.assert_array_equal(crop_or_pad(x, 20, np.random.default_rng(3)), out)


def test_deterministic_crop_is_the_start():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(crop_or_pad(x, 300), x[:300])
    np.testing.assert_array_equal(crop_or_pad(x, 1000), x)


def test_seeded_random_crops():
    x = np.arange(10000, dtype=np.float32)

    def start(seed, clip):
        return int(crop_or_pad(x, 100, crop_rng(seed, clip))[0])

    assert start(0, "a.wav") == start(0, "a.wav")  # same seed and clip: same crop
    starts = {start(0, f"clip{i}.wav") for i in range(8)}
    assert len(starts) > 4  # different clips: different crops
    assert {start(s, "a.wav") for s in range(8)} != {start(0, "a.wav")}  # different seeds too
    assert all(0 <= s <= 9900 for s in starts)
