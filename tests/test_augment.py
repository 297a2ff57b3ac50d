"""Augmentation: every version from the clean clip, the right MUSAN folder, SNR within range, seeding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import fftconvolve

from sourcetracing.config import load_config
from sourcetracing.data.audio import load_audio
from sourcetracing.data.augment import Augmenter, AugmentError, list_audio_files, version_rng

SR = 16000
MARKERS = {"noise": 500.0, "music": 1500.0, "speech": 3000.0}  # one pure tone per MUSAN category


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("aug")
    rng = np.random.default_rng(0)
    for category, freq in MARKERS.items():
        for k in range(4):
            seconds = 0.5 + k  # shorter and longer than the clips
            t = np.arange(int(SR * seconds)) / SR
            tone = (0.1 + 0.1 * k) * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
            path = root / "musan" / category / "sub" / f"{category}-{k}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone.astype(np.float32), SR, subtype="FLOAT")
    for k in range(3):
        rir = np.exp(-np.arange(800) / (100.0 * (k + 1))) * rng.standard_normal(800)
        path = root / "RIRS_NOISES" / "simulated_rirs" / "smallroom" / f"Room{k:03d}" / "r.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, rir.astype(np.float32), SR, subtype="FLOAT")
    list_audio_files.cache_clear()
    return root / "musan", root / "RIRS_NOISES"


@pytest.fixture()
def augmenter(corpora) -> Augmenter:
    musan, rirs = corpora
    cfg = load_config(None, [f"augment.musan={musan}", f"augment.rirs={rirs}"])
    return Augmenter.from_config(cfg)


def _clean(seed: int = 0, n: int = SR) -> np.ndarray:
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _peak_hz(wave: np.ndarray) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(wave))) * SR / len(wave))


@pytest.mark.parametrize("version", ["noise", "music", "speech"])
def test_each_category_draws_from_its_own_folder(augmenter, version):
    clean = _clean()
    for i in range(5):
        out, info = augmenter.apply(clean, version, version_rng(0, f"c{i}.wav", version))
        assert all(f"/musan/{version}/" in f for f in info["files"])
        # the added signal is the category's marker tone
        assert abs(_peak_hz(out - clean) - MARKERS[version]) < 2.0


@pytest.mark.parametrize(
    "version,key", [("noise", "snr_noise"), ("music", "snr_music"), ("speech", "snr_speech")]
)
def test_measured_snr_within_configured_range(augmenter, version, key):
    lo, hi = load_config(None)["augment"][key]
    clean = _clean(1)
    snrs = []
    for i in range(12):
        out, info = augmenter.apply(clean, version, version_rng(0, f"clip{i}.wav", version))
        added = out.astype(np.float64) - clean
        measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(added**2))
        assert lo - 1e-3 <= measured <= hi + 1e-3
        assert measured == pytest.approx(info["snr_db"], abs=1e-3)
        snrs.append(measured)
        if version == "speech":
            assert 3 <= len(info["files"]) <= 8  # babble speakers
    assert max(snrs) - min(snrs) > 0.2 * (hi - lo)  # drawn, not constant


def test_reverb_is_the_rir_convolution_of_the_clean_clip(augmenter):
    clean = _clean(2)
    out, info = augmenter.apply(clean, "reverb", version_rng(0, "x.wav", "reverb"))
    assert "/simulated_rirs/" in info["files"][0]
    rir = load_audio(info["files"][0], SR).astype(np.float64)
    expected = fftconvolve(clean.astype(np.float64), rir / np.sqrt(np.sum(rir**2)))[: len(clean)]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert len(out) == len(clean) and out.dtype == np.float32


def test_every_version_is_made_from_the_clean_clip(augmenter):
    """Versions do not depend on each other: each equals the version made alone from the clean clip."""
    clean = _clean(3)
    versions = ["original", "reverb", "noise", "music", "speech"]
    all_at_once = augmenter.make_versions(clean, versions, 0, "clip.wav")
    np.testing.assert_array_equal(all_at_once[0], clean)
    for v, wave in zip(versions, all_at_once, strict=True):
        alone = augmenter.make_versions(clean, [v], 0, "clip.wav")[0]
        np.testing.assert_array_equal(wave, alone)
        redo, _ = augmenter.apply(clean, v, version_rng(0, "clip.wav", v))
        np.testing.assert_array_equal(wave, redo)
    reverse = augmenter.make_versions(clean, versions[::-1], 0, "clip.wav")[::-1]
    for a, b in zip(all_at_once, reverse, strict=True):
        np.testing.assert_array_equal(a, b)
    # an additive version minus the clean clip is pure (scaled) marker signal: no reverb, no other noise
    noise_only = all_at_once[2] - clean
    spec = np.abs(np.fft.rfft(noise_only))
    assert spec.max() > 50 * np.median(spec)


def test_seeded_per_clip(augmenter):
    clean = _clean(4)
    a = augmenter.make_versions(clean, ["noise", "reverb"], 0, "a.wav")
    b = augmenter.make_versions(clean, ["noise", "reverb"], 0, "a.wav")
    c = augmenter.make_versions(clean, ["noise", "reverb"], 0, "b.wav")
    d = augmenter.make_versions(clean, ["noise", "reverb"], 1, "a.wav")
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[0], d[0])


def test_missing_corpus_is_a_clear_error(tmp_path):
    aug = Augmenter(musan=str(tmp_path / "nope"), rirs=str(tmp_path / "nope"))
    with pytest.raises(AugmentError, match="MUSAN layout"):
        aug.apply(_clean(), "music", version_rng(0, "a", "music"))
    with pytest.raises(AugmentError, match="RIRS_NOISES"):
        aug.apply(_clean(), "reverb", version_rng(0, "a", "reverb"))
    with pytest.raises(AugmentError, match="unknown augmentation"):
        aug.apply(_clean(), "chorus", np.random.default_rng(0))
