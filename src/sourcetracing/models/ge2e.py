"""GE2E: the generalized end-to-end loss (Wan et al., 2018) and the encoders trained with it.

The loss takes a batch of ``N`` systems x ``M`` clips embeddings ``e[j, i]`` and builds

* centroids ``c_k = mean_i e[k, i]``, and for the clip's own system the *exclusive* centroid
  ``c_j^(-i) = (sum_m e[j, m] - e[j, i]) / (M - 1)`` (the clip left out);
* the similarity matrix ``S[j, i, k] = w * cos(e[j, i], c_k) + b`` (``c_j^(-i)`` when ``k == j``),
  with a learnable scale ``w`` (kept positive) and bias ``b``. In the **softmax** variant ``b``
  shifts every entry of a row equally and cancels in the softmax: it has no effect, gets no
  gradient in exact arithmetic and is therefore a fixed buffer there, not a trained parameter.
  Only the **contrast** variant (sigmoids) trains ``b``;
* per clip, the **softmax** loss ``-S[j,i,j] + log sum_k exp S[j,i,k]`` or the **contrast** loss
  ``1 - sigmoid(S[j,i,j]) + max_{k != j} sigmoid(S[j,i,k])``.

Everything is computed for the whole batch at once (no Python loop over systems or clips); the
loop version of these formulas lives in :mod:`sourcetracing_tools.bench.ge2e_loss` as the reference.

The encoders are registered in :data:`sourcetracing.components.ENCODERS` (``ge2e.encoder.name``,
settings in ``ge2e.encoder.<name>``).

Encoders (chosen by ``cfg.ge2e.encoder``):

* ``features``: a small network over the cached frame features ``[B, T, D]`` of the feature store
  (input batch-norm, two 1-D conv blocks, attentive or mean statistics pooling, MLP).
* ``hf_ssl``: a Hugging Face SSL model (wav2vec2/HuBERT/WavLM, hub name or local path) fine-tuned
  on raw 16 kHz waveforms ``[B, samples]``; ``hidden_states[layer]`` mean-pooled over time, then MLP.

>>> import torch
>>> loss_fn = GE2ELoss(init_w=10.0, init_b=-5.0, variant="softmax")
>>> emb = torch.randn(3, 4, 8)  # 3 systems x 4 clips x 8 dims
>>> loss_fn(emb).shape
torch.Size([])
>>> sorted(name for name, _ in loss_fn.named_parameters())  # b cancels in the softmax variant
['w']
>>> sorted(name for name, _ in GE2ELoss(variant="contrast").named_parameters())
['b', 'w']
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sourcetracing.components import ENCODERS
from sourcetracing.errors import ConfigError

LOSS_VARIANTS = ("softmax", "contrast")
LOSSES = (*LOSS_VARIANTS, "aam")
W_MIN = 1e-6


def similarity_matrix(
    emb: torch.Tensor, w: torch.Tensor, b: torch.Tensor, eps: float = 1e-8, cos_floor: float | None = None
) -> torch.Tensor:
    """The GE2E similarity ``S [N, M, N]`` of every clip to every system centroid (exclusive for its own).

    ``emb`` is ``[N, M, D]`` (system-major). ``w`` is used as given (clamp it before calling).
    ``cos_floor`` clamps the cosines from below first (the original recipe clamps at 1e-6, which
    stops every gradient through a negative cosine); None keeps them as they are.
    """
    n_sys, n_clips, _ = emb.shape
    if n_clips < 2:
        raise ValueError("GE2E needs at least 2 clips per system (the exclusive centroid leaves one out)")
    total = emb.sum(dim=1, keepdim=True)  # [N, 1, D]
    centroids = total.squeeze(1) / n_clips  # [N, D]
    exclusive = (total - emb) / (n_clips - 1)  # [N, M, D]: own centroid without the clip itself
    emb_n = F.normalize(emb, dim=-1, eps=eps)
    cos_all = torch.einsum("jmd,kd->jmk", emb_n, F.normalize(centroids, dim=-1, eps=eps))  # [N, M, N]
    cos_own = (emb_n * F.normalize(exclusive, dim=-1, eps=eps)).sum(-1)  # [N, M]
    own = torch.eye(n_sys, dtype=torch.bool, device=emb.device).unsqueeze(1)  # [N, 1, N]
    cos = torch.where(own, cos_own.unsqueeze(-1), cos_all)
    if cos_floor is not None:
        cos = cos.clamp(min=cos_floor)
    return w * cos + b


def ge2e_per_clip(sim: torch.Tensor, variant: str) -> torch.Tensor:
    """Per-clip GE2E loss ``[N, M]`` from the similarity matrix ``[N, M, N]``."""
    n_sys, n_clips, _ = sim.shape
    target = torch.arange(n_sys, device=sim.device)
    own = torch.eye(n_sys, dtype=torch.bool, device=sim.device).unsqueeze(1)  # [N, 1, N]
    pos = sim.gather(2, target.view(n_sys, 1, 1).expand(n_sys, n_clips, 1)).squeeze(-1)  # S[j, i, j]
    if variant == "softmax":
        return torch.logsumexp(sim, dim=-1) - pos
    if variant == "contrast":
        # sigmoid is monotone: the max of sigmoids is the sigmoid of the max (same value and gradient)
        hardest = sim.masked_fill(own, float("-inf")).amax(dim=-1)
        return 1.0 - torch.sigmoid(pos) + torch.sigmoid(hardest)
    raise ConfigError(f"unknown GE2E loss variant {variant!r}; choose one of {LOSS_VARIANTS}")


class GE2ELoss(nn.Module):
    """GE2E loss with a learnable scale ``w`` (clamped to >= 1e-6) and bias ``b``.

    ``b`` is an ``nn.Parameter`` only for the ``contrast`` variant; for ``softmax`` it cancels
    exactly and is kept as a fixed buffer (so no optimiser claims to train it).

    ``forward(emb)`` takes ``[N, M, D]`` embeddings, or ``[N*M, D]`` with ``n_systems`` given
    (system-major order, as :class:`sourcetracing.data.samplers.ClassBalancedBatchSampler` yields).
    ``reduction`` is ``mean`` (over the N*M clips; default, so the scale does not depend on the batch
    shape) or ``sum`` (the paper's ``L_G``).
    """

    def __init__(
        self,
        init_w: float = 10.0,
        init_b: float = -5.0,
        variant: str = "softmax",
        reduction: str = "mean",
        cos_floor: float | None = None,
    ):
        super().__init__()
        self.cos_floor = cos_floor
        if variant not in LOSS_VARIANTS:
            raise ConfigError(f"unknown GE2E loss variant {variant!r}; choose one of {LOSS_VARIANTS}")
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        if init_w <= 0:
            raise ConfigError(f"init_w must be positive, got {init_w}")
        self.variant = variant
        self.reduction = reduction
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        if variant == "contrast":
            self.b = nn.Parameter(torch.tensor(float(init_b)))
        else:
            self.register_buffer("b", torch.tensor(float(init_b)))

    def scale(self) -> torch.Tensor:
        """The positive scale actually used (``w`` clamped to >= 1e-6)."""
        return self.w.clamp(min=W_MIN)

    def similarity(self, emb: torch.Tensor) -> torch.Tensor:
        return similarity_matrix(emb, self.scale(), self.b, cos_floor=self.cos_floor)

    def forward(self, emb: torch.Tensor, n_systems: int | None = None) -> torch.Tensor:
        if emb.dim() == 2:
            if n_systems is None:
                raise ValueError("pass n_systems for flat [N*M, D] embeddings, or give [N, M, D]")
            if emb.shape[0] % n_systems:
                raise ValueError(f"{emb.shape[0]} embeddings do not split into {n_systems} systems")
            emb = emb.view(n_systems, emb.shape[0] // n_systems, emb.shape[1])
        if emb.dim() != 3:
            raise ValueError(f"expected [N, M, D] embeddings, got shape {tuple(emb.shape)}")
        if emb.shape[0] < 2:
            raise ValueError("GE2E needs at least 2 systems per batch")
        per_clip = ge2e_per_clip(self.similarity(emb), self.variant)
        return per_clip.mean() if self.reduction == "mean" else per_clip.sum()

    def extra_repr(self) -> str:
        return f"variant={self.variant}, reduction={self.reduction}"


# ----------------------------------------------------------------------------------------------
# Encoders


def mlp(in_dim: int, hidden_dims: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU in between (none after the last: it is the embedding)."""
    layers: list[nn.Module] = []
    dims = [in_dim, *hidden_dims]
    for i in range(len(hidden_dims)):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(hidden_dims) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class StatsPooling(nn.Module):
    """Mean + standard deviation over time, optionally weighted by a learned attention (``[B, C, T] -> [B, 2C]``)."""

    def __init__(self, channels: int, attentive: bool = True, attn_dim: int = 64):
        super().__init__()
        self.attention = (
            nn.Sequential(nn.Conv1d(channels, attn_dim, 1), nn.Tanh(), nn.Conv1d(attn_dim, channels, 1))
            if attentive
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attention is None:
            mean = x.mean(dim=-1)
            std = (x.var(dim=-1, unbiased=False) + 1e-5).sqrt()
        else:
            alpha = torch.softmax(self.attention(x), dim=-1)
            mean = (alpha * x).sum(-1)
            std = ((alpha * x * x).sum(-1) - mean * mean).clamp(min=1e-5).sqrt()
        return torch.cat([mean, std], dim=-1)


@ENCODERS.register("features", defaults={"hidden_dims": [256, 256], "channels": 128, "pooling": "attentive"})
class FeatureEncoder(nn.Module):
    """Embeds cached frame features ``[B, T, D]`` into ``[B, hidden_dims[-1]]``; fast on CPU."""

    needs = "features"

    def __init__(
        self,
        input_dim: int,
        hidden_dims: Sequence[int] = (256, 256),
        channels: int = 128,
        pooling: str = "attentive",
    ):
        super().__init__()
        if pooling not in ("attentive", "mean"):
            raise ConfigError(f"ge2e.pooling must be 'attentive' or 'mean', got {pooling!r}")
        self.input_norm = nn.BatchNorm1d(input_dim)
        self.convs = nn.Sequential(
            nn.Conv1d(input_dim, channels, kernel_size=5, padding=2),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
            nn.Conv1d(channels, channels, kernel_size=3, padding=2, dilation=2),
            nn.BatchNorm1d(channels),
            nn.ReLU(),
        )
        self.pool = StatsPooling(channels, attentive=pooling == "attentive")
        self.head = mlp(2 * channels, hidden_dims)
        self.embedding_dim = int(hidden_dims[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"features encoder expects [B, T, D] frames, got shape {tuple(x.shape)}")
        h = self.convs(self.input_norm(x.transpose(1, 2)))
        return self.head(self.pool(h))


@ENCODERS.register(
    "hf_ssl",
    defaults={
        "model": "facebook/wav2vec2-base-960h",
        "layer": -1,
        "hidden_dims": [256, 256],
        "freeze_feature_encoder": True,
    },
)
class HFSSLEncoder(nn.Module):
    """A Hugging Face SSL model on raw waveforms ``[B, samples]`` -> mean-pooled ``hidden_states[layer]`` -> MLP.

    The waveform of each clip is normalised to zero mean and unit variance first (as the wav2vec2
    feature extractor does). ``freeze_feature_encoder`` keeps the convolutional front of the SSL
    model fixed (the usual fine-tuning recipe; saves memory; the original fine-tuned it too).
    """

    needs = "audio"

    def __init__(
        self,
        model: str,
        layer: int = -1,
        hidden_dims: Sequence[int] = (256, 256),
        freeze_feature_encoder: bool = True,
    ):
        super().__init__()
        from transformers import AutoModel

        from sourcetracing.progress import library_bars_on_terminal_only

        library_bars_on_terminal_only()
        try:
            self.ssl = AutoModel.from_pretrained(model)
        except OSError as err:
            raise OSError(
                f"could not load the Hugging Face model {model!r} for the GE2E hf_ssl encoder "
                f"(no internet? give a local folder saved with save_pretrained): {err}"
            ) from err
        n_layers = int(getattr(self.ssl.config, "num_hidden_layers", 0))
        if not -(n_layers + 1) <= layer <= n_layers:
            raise ValueError(
                f"ge2e.layer={layer} is out of range for {model} (hidden_states has {n_layers + 1} entries)"
            )
        self.layer = layer
        if freeze_feature_encoder and hasattr(self.ssl, "freeze_feature_encoder"):
            self.ssl.freeze_feature_encoder()
        self.head = mlp(int(self.ssl.config.hidden_size), hidden_dims)
        self.embedding_dim = int(hidden_dims[-1])

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.dim() != 2:
            raise ValueError(f"hf_ssl encoder expects [B, samples] waveforms, got shape {tuple(waves.shape)}")
        waves = (waves - waves.mean(dim=1, keepdim=True)) / (waves.std(dim=1, keepdim=True) + 1e-7)
        out = self.ssl(waves, output_hidden_states=True)
        hidden = out.hidden_states[self.layer]  # [B, frames, H]
        return self.head(hidden.mean(dim=1))


def encoder_config(cfg, input_dim: int | None = None) -> dict:
    """The plain-data settings that rebuild the configured encoder (stored in checkpoints)."""
    from sourcetracing.config import component_settings

    settings = component_settings(cfg.ge2e.encoder)
    if ENCODERS.get(settings["name"]).needs == "features":
        if input_dim is None:
            raise ValueError("the features encoder needs the feature dimension (input_dim)")
        settings["input_dim"] = int(input_dim)
    return settings


def build_encoder(config: dict) -> nn.Module:
    """Build an encoder from :func:`encoder_config`'s dict."""
    kwargs = {k: v for k, v in config.items() if k != "name"}
    return ENCODERS.get(config["name"])(**kwargs)


class AAMSoftmaxLoss(nn.Module):
    """Additive angular margin softmax (ArcFace, Deng et al. 2019) over the known systems.

    ``cos(theta_y + margin)`` replaces the target class's cosine before the scaled softmax, so each
    system's embeddings are pulled into a tight cone with a margin to every other system: room
    that clips of unseen systems fall into, away from every known centroid. The class directions
    are learned with the encoder. ``forward(emb, labels=...)`` takes ``[B, D]`` (or ``[N, M, D]``).
    """

    def __init__(self, num_classes: int, dim: int, margin: float = 0.2, scale: float = 30.0):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"AAM softmax needs at least 2 classes, got {num_classes}")
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.xavier_normal_(self.weight)
        self.margin, self.scale = float(margin), float(scale)

    def forward(
        self, emb: torch.Tensor, n_systems: int | None = None, labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        if labels is None:
            raise ValueError("the aam loss needs the class labels of the batch")
        emb = emb.reshape(-1, emb.shape[-1])
        cos = F.normalize(emb, dim=-1) @ F.normalize(self.weight, dim=-1).t()
        target = cos.gather(1, labels.view(-1, 1)).clamp(-1 + 1e-7, 1 - 1e-7)
        with_margin = torch.cos(torch.acos(target) + self.margin)
        logits = cos.scatter(1, labels.view(-1, 1), with_margin) * self.scale
        return F.cross_entropy(logits, labels)


def build_loss(
    name: str,
    num_classes: int,
    dim: int,
    init_w: float = 10.0,
    init_b: float = -5.0,
    margin: float = 0.2,
    scale: float = 30.0,
    cos_floor: float | None = None,
) -> nn.Module:
    """The embedding loss ``ge2e.loss`` names: GE2E (softmax / contrast) or AAM softmax."""
    if name == "aam":
        return AAMSoftmaxLoss(num_classes, dim, margin, scale)
    return GE2ELoss(init_w, init_b, variant=name, cos_floor=cos_floor)


class GE2EModel(nn.Module):
    """Encoder + loss in one module, so that DDP wraps both (the loss's parameters are all-reduced too).

    ``forward(x, n_systems, labels)`` returns the loss; ``embed(x)`` the embeddings.
    """

    def __init__(self, encoder: nn.Module, loss: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.loss = loss

    def forward(self, x: torch.Tensor, n_systems: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(self.loss, AAMSoftmaxLoss):
            return self.loss(self.encoder(x), labels=labels)
        return self.loss(self.encoder(x), n_systems=n_systems)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)
