"""Augmentation: every version from the clean clip, the right MUSAN folder, SNR within range, seeding,
babble speakers at their own SNRs, and the codec version."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import fftconvolve

from sourcetracing.config import load_config
from sourcetracing.data.audio import load_audio
from sourcetracing.data.augment import (
    VERSION_IDS,
    Augmenter,
    AugmentError,
    list_audio_files,
    mix_at_snr,
    snr_db,
    version_rng,
)
from sourcetracing.data.check import augmentation_problems
from sourcetracing.errors import ConfigError

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


@pytest.mark.parametrize("version,key", [("noise", "snr_noise"), ("music", "snr_music")])
def test_measured_snr_within_configured_range(augmenter, version, key):
    lo, hi = load_config(None)["augment"][key]
    clean = _clean(1)
    snrs = []
    for i in range(12):
        out, info = augmenter.apply(clean, version, version_rng(0, f"clip{i}.wav", version))
        measured = snr_db(clean, out.astype(np.float64) - clean)
        assert lo - 1e-3 <= measured <= hi + 1e-3
        assert measured == pytest.approx(info["snr_db"], abs=1e-3)
        assert len(info["files"]) == 1
        snrs.append(measured)
    assert max(snrs) - min(snrs) > 0.2 * (hi - lo)  # drawn, not constant


def test_babble_speakers_each_at_their_own_snr(augmenter):
    """Each babble speaker is scaled to its own SNR (drawn from the speech range) against the clean clip."""
    lo, hi = load_config(None)["augment"]["snr_speech"]
    clean = _clean(1)
    counts = set()
    for i in range(8):
        out, added, info = augmenter.additive_parts(clean, "speech", version_rng(0, f"clip{i}.wav", "speech"))
        applied, applied_info = augmenter.apply(clean, "speech", version_rng(0, f"clip{i}.wav", "speech"))
        np.testing.assert_array_equal(out, applied)  # apply adds exactly these sources
        assert applied_info == info
        assert 3 <= len(added) == len(info["files"]) == len(info["speaker_snr_db"]) <= 8
        counts.add(len(added))
        np.testing.assert_allclose(out, clean + np.sum(added, axis=0), atol=1e-6)
        p_clean = np.mean(clean.astype(np.float64) ** 2)
        for source, target in zip(added, info["speaker_snr_db"], strict=True):
            measured = 10 * np.log10(p_clean / np.mean(source.astype(np.float64) ** 2))
            assert measured == pytest.approx(target, abs=1e-3)
            assert lo - 1e-3 <= measured <= hi + 1e-3
        assert min(np.diff(sorted(info["speaker_snr_db"]))) > 1e-6  # each drew its own SNR
        assert info["snr_db"] == pytest.approx(snr_db(clean, out.astype(np.float64) - clean), abs=1e-3)
    assert len(counts) > 1  # the speaker count is drawn too


def test_mix_at_snr_scales_each_source_to_its_own_snr():
    rng = np.random.default_rng(5)
    clean = rng.standard_normal(4000).astype(np.float32)
    sources = [rng.uniform(0.01, 3.0) * rng.standard_normal(4000) for _ in range(4)]
    targets = [0.0, 7.5, 13.0, 20.0]
    mixture, scaled = mix_at_snr(clean, sources, targets)
    for source, target in zip(scaled, targets, strict=True):
        assert snr_db(clean, source) == pytest.approx(target, abs=1e-4)
    np.testing.assert_allclose(mixture, clean + np.sum(scaled, axis=0), atol=1e-5)
    with pytest.raises(AugmentError, match="2 sources but 1 SNRs"):
        mix_at_snr(clean, sources[:2], [3.0])


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


def test_codec_version_is_seeded_per_clip(augmenter):
    clean = _clean(5)
    draws = []
    for i in range(12):
        out, info = augmenter.apply(clean, "codec", version_rng(0, f"clip{i}.wav", "codec"))
        again, info_again = augmenter.apply(clean, "codec", version_rng(0, f"clip{i}.wav", "codec"))
        np.testing.assert_array_equal(out, again)
        assert info == info_again
        assert len(out) == len(clean) and out.dtype == np.float32
        assert snr_db(clean, out - clean) < 45.0  # really coded
        assert info["codec"] in ("mp3", "opus", "vorbis")
        draws.append(tuple(sorted(info.items())))
    assert len({d[0] for d in draws}) > 1 and len(set(draws)) > 3  # codecs and settings vary by clip
    # the codec version needs no corpus
    bare = Augmenter(musan="/nonexistent", rirs="/nonexistent")
    out_bare, _ = bare.apply(clean, "codec", version_rng(0, "clip0.wav", "codec"))
    out_full, _ = augmenter.apply(clean, "codec", version_rng(0, "clip0.wav", "codec"))
    np.testing.assert_array_equal(out_bare, out_full)


def test_codec_choices_are_respected():
    aug = Augmenter(musan="", rirs="", codec_choices={"mp3": {"bitrate_kbps": [32]}})
    for i in range(3):
        _, info = aug.apply(_clean(), "codec", version_rng(0, f"c{i}", "codec"))
        assert info == {"codec": "mp3", "bitrate_kbps": 32}
    with pytest.raises(AugmentError, match="at least one codec"):
        Augmenter(musan="", rirs="", codec_choices={}).apply(_clean(), "codec", np.random.default_rng(0))


def test_version_ids_are_stable():
    assert VERSION_IDS == {"original": 0, "reverb": 1, "noise": 2, "music": 3, "speech": 4, "codec": 5}


def test_check_accepts_the_codec_version_without_corpora(tmp_path):
    missing = [f"augment.musan={tmp_path / 'no-musan'}", f"augment.rirs={tmp_path / 'no-rirs'}"]
    cfg = load_config(None, [*missing, "augment.versions=[original, codec]"])
    assert augmentation_problems(cfg) == []
    cfg = load_config(None, [*missing, "augment.versions=[original, codec, noise]"])
    problems = augmentation_problems(cfg)
    assert any("needs audio files" in p and "no-musan" in p for p in problems)
    # an unknown version is a config error, before any data is looked at
    with pytest.raises(ConfigError, match=r"unknown augmentation version\(s\) \['chorus'\]; known: .*codec"):
        load_config(None, [*missing, "augment.versions=[original, codec, chorus]"])
