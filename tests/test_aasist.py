"""AASIST over frame features: shapes, any input dim / frame count, classes from the label map."""

from __future__ import annotations

import pytest
import torch

from sourcetracing.config import DEFAULTS, load_config
from sourcetracing.data.protocols import LabelMap
from sourcetracing.models.aasist import AASIST
from sourcetracing.training.checkpoint import build_model

TINY = dict(in_proj_dim=12, first_pool=[2, 2], filts=[[1, 4], [4, 8]], gat_dims=[8, 6], embedding_dim=16)


@pytest.mark.parametrize("frames,dim", [(20, 12), (5, 60), (37, 3), (1, 7)])
def test_shapes_any_dim_and_frames(frames: int, dim: int) -> None:
    model = AASIST(input_dim=dim, num_classes=5, **TINY)
    logits, emb = model(torch.randn(3, frames, dim))
    assert logits.shape == (3, 5)
    assert emb.shape == (3, 16)
    assert torch.isfinite(logits).all()


def test_default_config_at_wav2vec2_shape() -> None:
    """The defaults (the original's sizes) on wav2vec2-base frames [199, 768]; readout 5 * 32 = 160."""
    options = {k: v for k, v in DEFAULTS["model"].items()}
    model = build_model(options, input_dim=768, num_classes=24)
    model.eval()
    with torch.no_grad():
        logits, emb = model(torch.randn(2, 199, 768))
    assert logits.shape == (2, 24) and emb.shape == (2, 160)
    assert isinstance(model.embed, torch.nn.Identity)  # 160 = 5 * gat_dims[1]: no extra projection


def test_num_classes_from_label_map() -> None:
    label_map = LabelMap(known=["a", "b", "c"], ood=["x"])
    cfg = load_config(None, [f"model.{k}={v}" for k, v in TINY.items()])
    model = build_model(cfg.model, input_dim=12, num_classes=label_map.num_classes)
    assert model(torch.randn(2, 20, 12))[0].shape == (2, 3)


def test_backward_and_eval_determinism() -> None:
    torch.manual_seed(0)
    model = AASIST(input_dim=12, num_classes=4, **TINY)
    x = torch.randn(4, 20, 12)
    logits, _ = model(x)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.in_proj.parameters())
    model.eval()
    with torch.no_grad():
        a, ea = model(x)
        b, eb = model(x)
    assert torch.equal(a, b) and torch.equal(ea, eb)


def test_bad_settings_are_clear() -> None:
    with pytest.raises(ValueError, match="input channel"):
        AASIST(input_dim=12, num_classes=4, **{**TINY, "filts": [[2, 4]]})
    with pytest.raises(ValueError, match="pool ratio"):
        AASIST(input_dim=12, num_classes=4, **{**TINY, "pool_ratios": [0.5, 0.0, 0.5, 0.5]})
    model = AASIST(input_dim=12, num_classes=4, **TINY)
    with pytest.raises(ValueError, match=r"\[batch, frames, 12\]"):
        model(torch.randn(2, 20, 13))
