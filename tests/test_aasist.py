"""AASIST over frame features: the baseline's W2V-AASIST by default, options, shapes, learning, layout."""

from __future__ import annotations

import hashlib
import inspect

import pytest
import torch

from sourcetracing.config import load_config
from sourcetracing.data.protocols import LabelMap
from sourcetracing.models.aasist import (
    AASIST,
    AASIST_DEFAULTS,
    AASIST_SETTINGS_HELP,
    state_dict_from_original,
    state_dict_to_original,
)
from sourcetracing.training.checkpoint import build_model

TINY = dict(in_proj_dim=12, first_pool=[2, 2], filts=[[1, 4], [4, 8]], gat_dims=[8, 6], embedding_dim=16)

# The baseline's W2VAASIST(feature_dim=768, num_labels=24), counted from its definition.
ORIGINAL_PARAMETERS = 418_016
# Its state dict: 245 entries; sha256 of the sorted "name [shape]" lines, one per entry.
ORIGINAL_STATE_KEYS = 245
ORIGINAL_LAYOUT_SHA256 = "cca9753a4719c39ca2b99877b7f467a8a2ae8cf934841e4f86aa5bcd463b4241"


def default_model(num_classes: int = 24, input_dim: int = 768) -> AASIST:
    return AASIST(input_dim=input_dim, num_classes=num_classes, **AASIST_DEFAULTS)


@pytest.mark.parametrize("frames,dim", [(20, 12), (5, 60), (37, 3), (2, 7)])
def test_shapes_any_dim_and_frames(frames: int, dim: int) -> None:
    model = AASIST(input_dim=dim, num_classes=5, **TINY)
    logits, emb = model(torch.randn(3, frames, dim))
    assert logits.shape == (3, 5)
    assert emb.shape == (3, 16)
    assert torch.isfinite(logits).all()


def test_demo_shape_lfcc_60_by_401() -> None:
    """The demo's 60-d LFCC with 401 frames; the positional embedding follows the projection size."""
    model = AASIST(
        input_dim=60, num_classes=7, **{**AASIST_DEFAULTS, "in_proj_dim": 24, "first_pool": [3, 4]}
    )
    assert model.pos_spectral.shape == (1, 8, 64)
    assert model.node_counts(401) == {"spectral": (8, 4, 2), "temporal": (100, 50, 25)}
    model.eval()
    with torch.no_grad():
        logits, emb = model(torch.randn(2, 401, 60))
    assert logits.shape == (2, 7) and emb.shape == (2, 160)


def test_default_has_the_original_parameter_count_and_node_counts() -> None:
    model = default_model()
    assert sum(p.numel() for p in model.parameters()) == ORIGINAL_PARAMETERS
    expected = {"spectral": (42, 21, 10), "temporal": (66, 33, 16)}
    assert model.node_counts(199) == expected

    # the node counts the forward pass really sees, stage by stage
    seen: dict[str, int] = {}

    def record(name: str, take_input: bool):
        def hook(module, inputs, output):
            nodes = inputs[0] if take_input else output
            seen[name] = (nodes[0] if isinstance(nodes, tuple) else nodes).size(1)

        return hook

    for name, module, take_input in [
        ("spectral_in", model.gat_spectral, True),
        ("temporal_in", model.gat_temporal, True),
        ("spectral_gal", model.pool_spectral, False),
        ("temporal_gal", model.pool_temporal, False),
        ("spectral_hs1", model.pool_hs1, False),
        ("temporal_hs1", model.pool_ht1, False),
        ("spectral_hs2", model.pool_hs2, False),
        ("temporal_hs2", model.pool_ht2, False),
    ]:
        module.register_forward_hook(record(name, take_input))
    model.eval()
    with torch.no_grad():
        logits, emb = model(torch.randn(2, 199, 768))
    assert logits.shape == (2, 24) and emb.shape == (2, 160)
    for kind in ("spectral", "temporal"):
        stages = (seen[f"{kind}_in"], seen[f"{kind}_gal"], seen[f"{kind}_hs1"])
        assert stages == expected[kind] and seen[f"{kind}_hs2"] == expected[kind][2]


def test_default_structure_is_the_original() -> None:
    model = default_model()
    assert (model.in_proj.in_features, model.in_proj.out_features) == (768, 128)
    assert model.first_pool == (3, 3) and model.first_bn.num_features == 1
    blocks = list(model.encoder)
    channels = [(b.conv1.in_channels, b.conv1.out_channels) for b in blocks]
    assert channels == [(1, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 64)]
    assert all(b.pool is None and not b.preact for b in blocks)
    assert blocks[0].bn1 is None and all(b.bn1 is not None for b in blocks[1:])
    assert model.encoder_bn.num_features == 64
    convs = [m for m in model.node_attention if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (64, 128, (1, 1)),
        (128, 64, (1, 1)),
    ]
    assert [type(m).__name__ for m in model.node_attention] == ["Conv2d", "SELU", "BatchNorm2d", "Conv2d"]
    assert model.pos_spectral.shape == (1, 42, 64)
    gal = (
        model.gat_spectral,
        model.gat_temporal,
        model.hs_gal11,
        model.hs_gal12,
        model.hs_gal21,
        model.hs_gal22,
    )
    assert [g.temperature for g in gal] == [2.0, 2.0, 100.0, 100.0, 100.0, 100.0]
    pools = (
        model.pool_spectral,
        model.pool_temporal,
        model.pool_hs1,
        model.pool_ht1,
        model.pool_hs2,
        model.pool_ht2,
    )
    assert [p.ratio for p in pools] == [0.5] * 6
    assert model.drop.p == 0.5 and model.drop_way.p == 0.2
    assert isinstance(model.embed, torch.nn.Identity) and model.out_layer.in_features == 160


def test_defaults_equal_the_original_hyperparameters() -> None:
    assert AASIST_DEFAULTS["in_proj_dim"] == 128
    assert AASIST_DEFAULTS["first_pool"] == [3, 3]
    assert AASIST_DEFAULTS["filts"] == [[1, 32], [32, 32], [32, 64], [64, 64], [64, 64], [64, 64]]
    assert AASIST_DEFAULTS["block_pool"] == [1, 1]
    assert AASIST_DEFAULTS["gat_dims"] == [64, 32]
    assert AASIST_DEFAULTS["pool_ratios"] == [0.5, 0.5, 0.5, 0.5]
    assert AASIST_DEFAULTS["temperatures"] == [2.0, 2.0, 100.0, 100.0]
    assert AASIST_DEFAULTS["node_attention_dim"] == 128
    assert AASIST_DEFAULTS["dropout"] == 0.5 and AASIST_DEFAULTS["branch_dropout"] == 0.2
    assert AASIST_DEFAULTS["residual"] == "original" and AASIST_DEFAULTS["node_pooling"] == "attention"
    assert AASIST_DEFAULTS["embedding_dim"] is None


def test_defaults_are_documented_and_match_the_constructor() -> None:
    assert set(AASIST_SETTINGS_HELP) == set(AASIST_DEFAULTS)
    assert all(isinstance(text, str) and text for text in AASIST_SETTINGS_HELP.values())

    def as_lists(value):
        return [as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value

    signature = inspect.signature(AASIST.__init__).parameters
    constructor = {k: as_lists(p.default) for k, p in signature.items() if k in AASIST_DEFAULTS}
    assert set(signature) - {"self", "input_dim", "num_classes", "name"} == set(AASIST_DEFAULTS)
    assert constructor == AASIST_DEFAULTS


def test_state_dict_layout_is_the_originals() -> None:
    """Renamed to the original's names, the default model's state dict is the original's, key for key."""
    model = default_model()
    ours = model.state_dict()
    theirs = state_dict_to_original(ours)
    assert len(theirs) == ORIGINAL_STATE_KEYS
    assert {k.split(".")[0] for k in theirs} >= {"LL", "first_bn1", "attention", "pos_S", "GAT_layer_S"}
    listing = "\n".join(f"{k} {list(v.shape)}" for k, v in sorted(theirs.items()))
    assert hashlib.sha256(listing.encode()).hexdigest() == ORIGINAL_LAYOUT_SHA256

    back = state_dict_from_original(theirs)
    assert back.keys() == ours.keys()
    fresh = default_model()
    fresh.load_state_dict(back, strict=True)
    x = torch.randn(2, 30, 768)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], fresh(x)[0])


def test_original_layout_only_for_the_original_architecture() -> None:
    with pytest.raises(ValueError, match="embedding projection"):
        state_dict_to_original(AASIST(768, 24, **{**AASIST_DEFAULTS, "embedding_dim": 64}).state_dict())
    with pytest.raises(ValueError, match="node_pooling"):
        state_dict_to_original(AASIST(768, 24, **{**AASIST_DEFAULTS, "node_pooling": "max"}).state_dict())
    theirs = state_dict_to_original(default_model(num_classes=24).state_dict())
    with pytest.raises(RuntimeError, match="out_layer"):
        default_model(num_classes=5).load_state_dict(state_dict_from_original(theirs), strict=True)


@pytest.mark.parametrize("node_pooling", ["attention", "max"])
@pytest.mark.parametrize("residual", ["original", "preact"])
def test_options_run_and_train(node_pooling: str, residual: str) -> None:
    torch.manual_seed(0)
    model = AASIST(input_dim=12, num_classes=4, **TINY, node_pooling=node_pooling, residual=residual)
    assert (model.node_attention is not None) == (node_pooling == "attention")
    logits, emb = model(torch.randn(4, 20, 12))
    assert logits.shape == (4, 4) and emb.shape == (4, 16)
    logits.sum().backward()
    bn1 = model.encoder[1].bn1
    if residual == "preact":  # BN -> SELU feeds conv1: trained
        assert bn1.weight.requires_grad and bn1.weight.grad is not None
    else:  # kept for the parameter count and checkpoint layout, unused: frozen
        assert not bn1.weight.requires_grad and bn1.weight.grad is None
    trained = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trained)  # DDP needs every trained parameter used


def test_residual_original_ignores_bn1_and_preact_uses_it() -> None:
    x = torch.randn(2, 20, 12)
    for residual, changes in (("original", False), ("preact", True)):
        torch.manual_seed(0)
        model = AASIST(input_dim=12, num_classes=4, **TINY, residual=residual).eval()
        with torch.no_grad():
            before = model(x)[0]
            model.encoder[1].bn1.weight.fill_(3.0)
            model.encoder[1].bn1.bias.fill_(-1.0)
            after = model(x)[0]
        assert torch.equal(before, after) != changes, residual


def test_training_step_reduces_loss_on_a_separable_batch() -> None:
    torch.manual_seed(0)
    labels = torch.arange(4).repeat(4)
    x = torch.randn(16, 20, 12) * 0.3 + 3.0 * torch.nn.functional.one_hot(labels, 12)[:, None, :].float()
    model = AASIST(input_dim=12, num_classes=4, **TINY)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x)[0], labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    model.eval()
    with torch.no_grad():
        assert (model(x)[0].argmax(1) == labels).float().mean() > 0.5  # chance: 0.25


def test_eval_determinism() -> None:
    torch.manual_seed(0)
    model = AASIST(input_dim=12, num_classes=4, **TINY)
    x = torch.randn(4, 20, 12)
    model(x)[0].sum().backward()
    assert all(p.grad is not None for p in model.in_proj.parameters())
    model.eval()
    with torch.no_grad():
        a, ea = model(x)
        b, eb = model(x)
    assert torch.equal(a, b) and torch.equal(ea, eb)


def test_build_model_from_the_defaults_and_label_map() -> None:
    from sourcetracing.config import component_settings

    model = build_model("classifier", {"name": "aasist", **AASIST_DEFAULTS}, input_dim=768, num_classes=24)
    assert sum(p.numel() for p in model.parameters()) == ORIGINAL_PARAMETERS
    # the config's defaults are the model's: the default config builds the original model
    default_cfg = load_config(None)
    assert component_settings(default_cfg.model) == {"name": "aasist", **AASIST_DEFAULTS}
    label_map = LabelMap(known=["a", "b", "c"], ood=["x"])
    cfg = load_config(None, [f"model.aasist.{k}={v}" for k, v in TINY.items()])
    model = build_model(
        "classifier", component_settings(cfg.model), input_dim=12, num_classes=label_map.num_classes
    )
    assert model(torch.randn(2, 20, 12))[0].shape == (2, 3)


def test_too_short_inputs_are_clear_errors() -> None:
    model = default_model()
    assert model.min_frames == 3
    with pytest.raises(ValueError, match="at least 3 frames"):
        model(torch.randn(1, 2, 768))
    with pytest.raises(ValueError, match="at least 3 frames"):
        model.node_counts(2)
    pooled = AASIST(input_dim=12, num_classes=4, **{**TINY, "block_pool": [1, 2]})
    assert pooled.min_frames == 2 * 2 * 2 and pooled.node_counts(8)["temporal"][0] == 1
    with pytest.raises(ValueError, match="at least 8 frames"):
        pooled(torch.randn(1, 7, 12))
    with pytest.raises(ValueError, match="in_proj_dim=2 is too small"):
        AASIST(input_dim=12, num_classes=4, **{**TINY, "in_proj_dim": 2, "first_pool": [3, 3]})


def test_bad_settings_are_clear() -> None:
    with pytest.raises(ValueError, match="input channel"):
        AASIST(input_dim=12, num_classes=4, **{**TINY, "filts": [[2, 4]]})
    with pytest.raises(ValueError, match="channels the previous one gives"):
        AASIST(input_dim=12, num_classes=4, **{**TINY, "filts": [[1, 4], [8, 8]]})
    with pytest.raises(ValueError, match="pool ratio"):
        AASIST(input_dim=12, num_classes=4, **{**TINY, "pool_ratios": [0.5, 0.0, 0.5, 0.5]})
    with pytest.raises(ValueError, match="model.residual must be one of original, preact"):
        AASIST(input_dim=12, num_classes=4, **TINY, residual="post")
    with pytest.raises(ValueError, match="model.node_pooling must be one of attention, max"):
        AASIST(input_dim=12, num_classes=4, **TINY, node_pooling="mean")
    with pytest.raises(ValueError, match="model.first_pool must be two positive sizes"):
        AASIST(input_dim=12, num_classes=4, **{**TINY, "first_pool": [0, 2]})
    model = AASIST(input_dim=12, num_classes=4, **TINY)
    with pytest.raises(ValueError, match=r"\[batch, frames, 12\]"):
        model(torch.randn(2, 20, 13))
