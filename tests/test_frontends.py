"""Front ends: hf_ssl truncation is exact, bf16 is close, spectral shapes and batch consistency."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_fixtures import save_tiny_wav2vec2

from sourcetracing.config import load_config
from sourcetracing.features.frontends import FrontEndError, build_frontend


@pytest.fixture(
    scope="module",
    params=[("wav2vec2", False), ("wav2vec2", True), ("hubert", False), ("wavlm", True)],
    ids=["wav2vec2-layernorm-first", "wav2vec2-stable-layernorm", "hubert", "wavlm"],
)
def tiny_model(request, tmp_path_factory) -> tuple[Path, bool]:
    architecture, stable = request.param
    path = save_tiny_wav2vec2(
        tmp_path_factory.mktemp("ssl") / "model", stable_layer_norm=stable, architecture=architecture
    )
    return path, stable


def _reference_hidden_states(path: Path, waves: torch.Tensor) -> tuple[torch.Tensor, ...]:
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    fe = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
    inputs = fe([w.numpy() for w in waves], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return model(inputs["input_values"], output_hidden_states=True).hidden_states


def _hf(path: Path, layer: int, precision: str = "float32", attention: str = "auto"):
    return build_frontend(
        {
            "name": "hf_ssl",
            "model": str(path),
            "layer": layer,
            "precision": precision,
            "attention": attention,
        },
        "cpu",
    )


def test_truncated_model_equals_full_hidden_states(tiny_model):
    path, _ = tiny_model
    waves = torch.randn(3, 16000, generator=torch.Generator().manual_seed(0))
    hidden = _reference_hidden_states(path, waves)
    assert len(hidden) == 5
    for k in range(5):
        fe = _hf(path, k)
        out = fe(waves)
        assert out.dtype == torch.float32
        assert tuple(out.shape[1:]) == fe.output_shape(16000) == tuple(hidden[k].shape[1:])
        assert len(fe.model.encoder.layers) == max(k, 1)  # the layers above k are gone
        torch.testing.assert_close(out, hidden[k], rtol=0, atol=1e-5)
    torch.testing.assert_close(_hf(path, -1)(waves), hidden[-1], rtol=0, atol=1e-5)


def test_batched_equals_one_by_one_and_bf16_close(tiny_model):
    path, _ = tiny_model
    waves = torch.randn(4, 8000, generator=torch.Generator().manual_seed(1))
    fe = _hf(path, 2)
    batched = fe(waves)
    single = torch.cat([fe(w[None]) for w in waves])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)
    low = _hf(path, 2, "bf16")(waves)
    assert low.dtype == torch.float32 and low.shape == batched.shape
    rel = float((low - batched).norm() / batched.norm())
    assert rel < 0.05, rel


def test_precision_and_loading_errors(tiny_model, tmp_path):
    path, _ = tiny_model
    assert _hf(path, 1, "auto").autocast_dtype is None  # auto = float32 on CPU
    with pytest.raises(FrontEndError, match="CUDA"):
        _hf(path, 1, "fp16")
    with pytest.raises(FrontEndError, match="tf32 needs a CUDA device"):
        _hf(path, 1, "tf32")
    with pytest.raises(FrontEndError, match="attention must be one of"):
        _hf(path, 1, attention="flash")
    with pytest.raises(FrontEndError, match="precision"):
        _hf(path, 1, "int8")
    with pytest.raises(FrontEndError, match="out of range"):
        _hf(path, 9)
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(FrontEndError, match="cannot load"):
        _hf(tmp_path / "empty_model", 1)


def _spectral(name: str, **overrides):
    return build_frontend({"name": name, **overrides}, "cpu")


@pytest.mark.parametrize(
    "name,overrides,dim",
    [("lfcc", {}, 60), ("lfcc", {"deltas": False}, 20), ("logmel", {"n_mels": 40}, 40)],
)
def test_spectral_shapes_and_batch_consistency(name, overrides, dim):
    fe = _spectral(name, **overrides)
    waves = torch.randn(3, 16000, generator=torch.Generator().manual_seed(2)) * 0.1
    out = fe(waves)
    assert out.shape == (3, 101, dim)
    assert fe.output_shape(16000) == (101, dim)
    assert torch.isfinite(out).all()
    single = torch.cat([fe(w[None]) for w in waves])
    torch.testing.assert_close(out, single, rtol=1e-4, atol=1e-4)


def test_lfcc_first_coefficients_follow_the_filterbank_energies():
    fe = _spectral("lfcc", deltas=False)
    quiet = 0.01 * torch.randn(16000, generator=torch.Generator().manual_seed(3))
    loud = 10 * quiet
    c_quiet, c_loud = fe(torch.stack([quiet, loud]))
    # a 20 dB louder signal raises every log energy by log(100), i.e. c0 by log(100) * sqrt(n_filters)
    expected = torch.log(torch.tensor(100.0)) * 70**0.5
    assert float((c_loud[5:-5, 0] - c_quiet[5:-5, 0]).mean()) == pytest.approx(float(expected), rel=1e-3)
    torch.testing.assert_close(c_loud[:, 1:], c_quiet[:, 1:], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", ["lfcc", "logmel"])
def test_level_rms_makes_features_independent_of_the_input_level(name):
    speechlike = torch.randn(16000, generator=torch.Generator().manual_seed(4)) * torch.linspace(0, 1, 16000)
    speechlike[4000:6000] = 0.0  # a pause: the log floor is where plain features move most
    plain, levelled = _spectral(name), _spectral(name, level="rms")
    clean, quieter = torch.stack([0.1 * speechlike, 0.01 * speechlike])  # the second is 20 dB down
    torch.testing.assert_close(levelled(quieter[None]), levelled(clean[None]), rtol=1e-4, atol=1e-4)
    assert float((plain(quieter[None]) - plain(clean[None])).abs().max()) > 1.0
    with pytest.raises(FrontEndError, match="level must be one of"):
        _spectral(name, level="peak")


def test_unknown_frontend():
    from sourcetracing.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown front end 'mfcc'"):
        build_frontend({"name": "mfcc"}, "cpu")


def test_config_section_and_flat_settings_build_the_same_frontend():
    cfg = load_config(None, ["frontend.name=lfcc", "frontend.lfcc.n_coeffs=13"])
    waves = torch.randn(2, 8000, generator=torch.Generator().manual_seed(5))
    a = build_frontend(cfg.frontend, "cpu")(waves)
    b = build_frontend({"name": "lfcc", "n_coeffs": 13}, "cpu")(waves)
    assert a.shape == (2, 51, 39)
    torch.testing.assert_close(a, b)


def test_attention_sdpa_equals_eager_and_falls_back_where_missing(tiny_model):
    path, _ = tiny_model
    waves = torch.randn(2, 8000, generator=torch.Generator().manual_seed(6))
    eager = _hf(path, 3, attention="eager")
    assert eager.attention == "eager"
    auto = _hf(path, 3)
    if "wavlm" in str(eager.model.config.model_type):  # WavLM has no sdpa attention in transformers
        assert auto.attention == "eager"
        with pytest.raises(FrontEndError, match="attention=sdpa"):
            _hf(path, 3, attention="sdpa")
    else:
        assert auto.attention == "sdpa" == _hf(path, 3, attention="sdpa").attention
    torch.testing.assert_close(auto(waves), eager(waves), rtol=0, atol=1e-5)


def test_to_device_and_cuda_math_on_cpu():
    from sourcetracing.features.frontends import cuda_math, to_device

    waves = torch.ones(2, 10, dtype=torch.float64)
    moved = to_device(waves, torch.device("cpu"))
    assert moved.dtype == torch.float32 and moved.device.type == "cpu"
    before = torch.backends.cudnn.benchmark
    with cuda_math(torch.device("cpu"), tf32=True):
        assert torch.backends.cudnn.benchmark == before  # nothing changes on CPU


def _math_flags() -> tuple:
    return (
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.conv.fp32_precision,
        torch.backends.cudnn.benchmark,
    )


@pytest.mark.parametrize("tf32,matmul,conv", [(False, "highest", "ieee"), (True, "high", "tf32")])
def test_fp32_math_sets_consistent_switches_and_restores_them(tf32, matmul, conv):
    from sourcetracing.features.frontends import fp32_math

    before = _math_flags()
    with fp32_math(tf32):
        assert _math_flags() == (matmul, conv, True)
        # the old-style switch agrees with the new one (cuBLAS checks that before every product)
        assert torch.backends.cuda.matmul.allow_tf32 is tf32
        assert torch.backends.cuda.matmul.fp32_precision == ("tf32" if tf32 else "ieee")
    assert _math_flags() == before


def test_weight_loading_bars_are_silenced_off_a_terminal(monkeypatch) -> None:
    from transformers.utils import logging as hf_logging

    from sourcetracing.progress import library_bars_on_terminal_only

    hf_logging.enable_progress_bar()
    try:
        monkeypatch.setattr("sys.stderr.isatty", lambda: True)
        library_bars_on_terminal_only()
        assert hf_logging.is_progress_bar_enabled()  # a terminal keeps its bars
        monkeypatch.setattr("sys.stderr.isatty", lambda: False)
        library_bars_on_terminal_only()
        assert not hf_logging.is_progress_bar_enabled()  # a log file gets none
    finally:
        hf_logging.enable_progress_bar()
