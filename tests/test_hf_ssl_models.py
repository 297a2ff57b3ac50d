"""hf_ssl by model class: wav2vec2, XLS-R, HuBERT, WavLM (waveform) and w2v-BERT 2.0 (filter banks).

Each model is a tiny randomly initialised instance of the real transformers class, saved with
``save_pretrained`` and loaded by path; the front end's output is compared with the full model's
``hidden_states[layer]`` fed by the model's own feature extractor.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sourcetracing.features.frontends import FrontEndError, build_frontend
from sourcetracing.features.hf_ssl import FilterBankSettings, KaldiFilterBank

# KaldiFilterBank vs SeamlessM4TFeatureExtractor (see its docstring): log-mel energies within 2e-6
# (the extractor rounds them to float32), normalised features within 5e-5 on speech-like and noise
# clips (the extractor normalises in float32, we in float64).
LOG_MEL_ATOL = 2e-6
FEATURE_ATOL = 5e-5

TINY = dict(hidden_size=32, num_attention_heads=2, num_hidden_layers=3, intermediate_size=64)
CONV = dict(conv_dim=(16, 16, 16, 16), conv_kernel=(10, 3, 3, 2), conv_stride=(5, 4, 4, 4))
POS_CONV = dict(num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def _speech_like(num_samples: int, seed: int) -> torch.Tensor:
    """A harmonic tone with a wandering pitch and a syllable-rate envelope, plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples, dtype=torch.float64) / 16000
    f0 = 110 + 40 * seed % 90 + 25 * torch.sin(2 * math.pi * 3 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / 16000
    voiced = sum(torch.sin(h * phase) / h for h in range(1, 25))
    envelope = 0.55 + 0.45 * torch.sin(2 * math.pi * 2.5 * t)
    wave = 0.1 * voiced * envelope + 0.002 * torch.randn(num_samples, generator=g, dtype=torch.float64)
    return wave.float()


def _clips() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [
        _speech_like(16000 + 123, 1),
        0.2 * torch.randn(9_001, generator=g),
        torch.cat([torch.zeros(4000), _speech_like(8_000, 2)]),  # leading digital silence
        _speech_like(12_345, 3) * 0.01,  # quiet
        _speech_like(16_800, 4),  # the longest: 103 frames, padded to 104 (52 feature vectors)
    ]


def _padded(clips: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    waves = torch.zeros(len(clips), max(len(c) for c in clips))
    for i, clip in enumerate(clips):
        waves[i, : len(clip)] = clip
    return waves, torch.tensor([len(c) for c in clips])


@pytest.mark.parametrize("padding_value", [0.0, 1.0])
def test_filter_bank_equals_seamless_m4t_feature_extractor(padding_value):
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor(padding_value=padding_value)
    bank = KaldiFilterBank(FilterBankSettings(padding_value=padding_value))
    np.testing.assert_allclose(bank.mel_filters.numpy(), extractor.mel_filters, rtol=0, atol=1e-12)
    np.testing.assert_allclose(bank.window.numpy(), extractor.window, rtol=0, atol=1e-12)

    clips = _clips()
    ref = extractor([c.numpy() for c in clips], sampling_rate=16000, return_tensors="pt")
    features, mask = bank(*_padded(clips))
    assert features.dtype == torch.float32 and features.shape == ref["input_features"].shape == (5, 52, 160)
    assert torch.equal(mask, ref["attention_mask"])
    assert mask.sum(1).tolist() == [49, 27, 36, 37, 51]  # a vector whose second frame is padding is masked
    torch.testing.assert_close(features, ref["input_features"], rtol=0, atol=FEATURE_ATOL)
    # the padding frames hold the configured padding value
    assert torch.all(features[1, 28:] == padding_value)

    plain = extractor(
        [c.numpy() for c in clips], sampling_rate=16000, return_tensors="pt", do_normalize_per_mel_bins=False
    )["input_features"].reshape(5, -1, 80)
    log_mel = bank.log_mel(_padded(clips)[0]).float()
    for i, clip in enumerate(clips):
        n = bank.num_frames(len(clip))
        torch.testing.assert_close(log_mel[i, :n], plain[i, :n], rtol=0, atol=LOG_MEL_ATOL)


def test_filter_bank_one_clip_at_a_time_and_frame_counts():
    from transformers import SeamlessM4TFeatureExtractor

    extractor = SeamlessM4TFeatureExtractor()
    bank = KaldiFilterBank(FilterBankSettings())
    for clip in _clips():
        ref = extractor(clip.numpy(), sampling_rate=16000, return_tensors="pt")
        features, mask = bank(clip[None])
        assert features.shape[1] == bank.num_output_frames(len(clip)) == ref["input_features"].shape[1]
        assert torch.equal(mask, ref["attention_mask"])
        torch.testing.assert_close(features, ref["input_features"], rtol=0, atol=FEATURE_ATOL)
    assert bank.num_output_frames(64000) == 199  # 4 s: 398 frames of 10 ms, two per feature vector
    with pytest.raises(FrontEndError, match="too short"):
        bank(torch.zeros(1, 500))
    with pytest.raises(FrontEndError, match="lengths must lie"):
        bank(torch.zeros(2, 16000), torch.tensor([16000, 300]))


def _save(kind: str, path: Path, **feature_extractor: object) -> Path:
    """A tiny random model of ``kind`` and its feature extractor, saved with ``save_pretrained``."""
    import transformers

    torch.manual_seed(0)
    if kind == "w2v-bert":
        config = transformers.Wav2Vec2BertConfig(
            **TINY,
            conv_depthwise_kernel_size=5,
            left_max_position_embeddings=16,
            right_max_position_embeddings=4,
        )
        model = transformers.Wav2Vec2BertModel(config)
        extractor = transformers.SeamlessM4TFeatureExtractor(**{"padding_value": 1.0, **feature_extractor})
    else:
        classes = {"wav2vec2": "Wav2Vec2", "xls-r": "Wav2Vec2", "hubert": "Hubert", "wavlm": "WavLM"}[kind]
        if kind == "xls-r":  # XLS-R's layout: stable layer norm, layer-normed conv stack with bias, 7 convs
            extra = dict(
                do_stable_layer_norm=True,
                feat_extract_norm="layer",
                conv_bias=True,
                conv_dim=(8,) * 7,
                conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                conv_stride=(5, 2, 2, 2, 2, 2, 2),
            )
        else:
            extra = CONV
        config = getattr(transformers, f"{classes}Config")(**TINY, **POS_CONV, **extra)
        model = getattr(transformers, f"{classes}Model")(config)
        extractor = transformers.Wav2Vec2FeatureExtractor(
            **{
                "do_normalize": kind != "hubert",
                "return_attention_mask": kind == "xls-r",
                **feature_extractor,
            }
        )
    model.eval().save_pretrained(path)
    extractor.save_pretrained(path)
    return path


KINDS = ["wav2vec2", "xls-r", "hubert", "wavlm", "w2v-bert"]


@pytest.fixture(scope="module", params=KINDS)
def saved_model(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, _save(request.param, tmp_path_factory.mktemp("hf") / request.param)


def _frontend(path: Path, layer: int, **settings: object):
    return build_frontend(
        {"name": "hf_ssl", "model": str(path), "layer": layer, "precision": "float32", **settings}
    )


def _reference(path: Path, waves: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """All hidden states of the full model, fed by its own feature extractor."""
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    extractor = AutoFeatureExtractor.from_pretrained(path, local_files_only=True)
    inputs = extractor([w.numpy() for w in waves], sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        return model(**inputs, output_hidden_states=True).hidden_states


def test_truncated_output_equals_full_hidden_states(saved_model):
    kind, path = saved_model
    waves = torch.stack(
        [_speech_like(16_160, 5), 0.3 * torch.randn(16_160, generator=torch.Generator().manual_seed(8))]
    )
    hidden = _reference(path, waves)
    assert len(hidden) == 4
    atol = 1e-4 if kind == "w2v-bert" else 1e-5  # filter banks within FEATURE_ATOL, through 3 layers
    for k in range(4):
        fe = _frontend(path, k)
        assert (fe.filter_bank is not None) == (kind == "w2v-bert")
        out = fe(waves)
        assert out.dtype == torch.float32
        assert tuple(out.shape[1:]) == fe.output_shape(16_160) == tuple(hidden[k].shape[1:])
        assert len(fe.model.encoder.layers) == max(k, 1)  # the layers above k are gone
        torch.testing.assert_close(out, hidden[k], rtol=0, atol=atol)
    if kind == "w2v-bert":
        assert fe.output_shape(16_160) == (50, 32)  # 99 frames, padded to 100, two per vector
        assert fe.output_shape(64_000) == (199, 32) == tuple(fe(torch.randn(1, 64_000)).shape[1:])


def test_attention_implementations_agree(saved_model):
    kind, path = saved_model
    waves = torch.randn(2, 12_000, generator=torch.Generator().manual_seed(9)) * 0.2
    eager = _frontend(path, 2, attention="eager")
    auto = _frontend(path, 2)
    assert eager.attention == "eager"
    assert auto.attention == ("eager" if kind == "wavlm" else "sdpa")
    torch.testing.assert_close(auto(waves), eager(waves), rtol=0, atol=1e-4)
    low = _frontend(path, 2, precision="bf16")(waves)
    ref = eager(waves)
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert float((low - ref).norm() / ref.norm()) < 0.05


def test_w2v_bert_reads_its_feature_extractor_settings(tmp_path):
    path = _save("w2v-bert", tmp_path / "m", num_mel_bins=40, feature_size=40, stride=4, padding_value=0.5)
    fe = _frontend(path, 2)
    assert fe.filter_bank.settings == FilterBankSettings(16000, 40, 40, 4, 0.5)
    waves = torch.stack([_speech_like(20_000, 6), _speech_like(20_000, 7)])
    hidden = _reference(path, waves)
    out = fe(waves)
    assert tuple(out.shape[1:]) == fe.output_shape(20_000) == tuple(hidden[2].shape[1:]) == (31, 32)
    torch.testing.assert_close(out, hidden[2], rtol=0, atol=1e-4)


def test_w2v_bert_feature_size_mismatch_and_sample_rate_are_checked(tmp_path):
    path = _save("w2v-bert", tmp_path / "m", num_mel_bins=64, feature_size=64)
    with pytest.raises(FrontEndError, match="takes 160 features per frame"):
        _frontend(path, 1)
    path = _save("w2v-bert", tmp_path / "ok")
    with pytest.raises(FrontEndError, match="expects 16000 Hz audio"):
        build_frontend({"name": "hf_ssl", "model": str(path), "layer": 1}, "cpu", sample_rate=8000)


def test_w2v_bert_without_a_preprocessor_config_uses_the_extractor_defaults(tmp_path):
    path = _save("w2v-bert", tmp_path / "m")
    (path / "preprocessor_config.json").unlink()
    fe = _frontend(path, 1)
    assert fe.filter_bank.settings == FilterBankSettings()
    assert fe(torch.randn(1, 16_000)).shape == (1, 49, 32)


def test_whisper_style_input_is_refused_with_the_supported_kinds(tmp_path):
    import transformers

    config = transformers.WhisperConfig(
        vocab_size=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,
        max_target_positions=32,
    )
    transformers.WhisperModel(config).save_pretrained(tmp_path)
    transformers.WhisperFeatureExtractor().save_pretrained(tmp_path)
    with pytest.raises(
        FrontEndError, match="WhisperModel takes input_features from a WhisperFeatureExtractor"
    ):
        _frontend(tmp_path, 1)
