"""A network that combines a learned frame-level representation with utterance statistics.

:class:`GatedHybrid` takes two vectors per clip — the frame features of the feature store pooled
over time (mean and standard deviation: the learned or spectral representation) and the clip's
utterance statistics (:mod:`sourcetracing.systems.utterance_features`) — passes each through a
small MLP and merges them with a learned per-dimension gate, ``z = g * a + (1 - g) * b`` with
``g = sigmoid(W [a; b])`` (Khan, Uddin and Malik, Interspeech 2026, gate SSL embeddings and
handcrafted features the same way), or by a linear layer over the concatenation (``concat``). The
embedding is L2-normalised and the class scores are ``scale * cos(embedding, proxy_c)``, one
learned proxy per known system.

With an *anchor* (``anchor_dim > 0``: a fixed linear projection of the standardised statistics,
``(s - anchor_mean) @ anchor_matrix``, fitted before training — the statistics system's shrinkage
LDA — and kept as buffers, never trained), the embedding is
``normalise([normalise(anchor(s)); w * normalise(learned)])``: the network learns a residual beside
the statistics' own discriminant space instead of replacing it, so the within-class structure that
unseen systems show up in (a k-NN in the LDA space) is kept.

Objectives (:func:`hybrid_loss`):

- ``ce``: cross-entropy on the scaled cosine scores (a normalised-softmax classifier);
- ``proxy_anchor``: Kim et al. (CVPR 2020): for every proxy with positives in the batch,
  ``log(1 + sum_pos exp(-alpha (s - delta)))`` averaged over those proxies, plus for every proxy
  ``log(1 + sum_neg exp(alpha (s + delta)))`` averaged over all proxies (``s`` the cosine);

and, with outliers (clips synthesised from the training clips, never from an unseen system, or —
``held_out`` — the clips of known systems left out of the step's class set, a fresh draw per step,
so that the network learns to leave a system it was not given outside the others):

- ``uniform``: outlier exposure (Hendrycks et al. 2019): the cross-entropy of the outliers' class
  distribution to the uniform one;
- ``energy``: the energy margin (Liu et al. 2020), ``E = -logsumexp(scores)``:
  ``relu(E_in - m_in)^2 + relu(m_out - E_out)^2``, margins in units of ``scale``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

FUSIONS = ("gated", "concat")
INPUTS = ("both", "stats", "frames")
LOSSES = ("ce", "proxy_anchor")
OUTLIER_LOSSES = ("uniform", "energy")


def _mlp(d_in: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.GELU()
    )


class GatedHybrid(nn.Module):
    """Frame-feature and statistics branches, gated (or concatenated), cosine scores to class proxies."""

    def __init__(
        self,
        frame_dim: int,
        stats_dim: int,
        num_classes: int,
        hidden: int = 128,
        embedding_dim: int = 64,
        fusion: str = "gated",
        inputs: str = "both",
        dropout: float = 0.1,
        scale: float = 16.0,
        anchor_dim: int = 0,
        anchor_weight: float = 0.5,
    ):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if inputs not in INPUTS:
            raise ValueError(f"inputs must be one of {INPUTS}, got {inputs!r}")
        self.inputs, self.fusion, self.scale = inputs, fusion, float(scale)
        self.frames = _mlp(frame_dim, hidden, dropout) if inputs in ("both", "frames") else None
        self.stats = _mlp(stats_dim, hidden, dropout) if inputs in ("both", "stats") else None
        if inputs == "both":
            self.merge = nn.Linear(2 * hidden, hidden)  # the gate, or the concatenation's projection
        self.embed = nn.Linear(hidden, embedding_dim)
        self.anchor_weight = float(anchor_weight)
        self.register_buffer("anchor_mean", torch.zeros(stats_dim if anchor_dim else 0))
        self.register_buffer("anchor_matrix", torch.zeros(stats_dim if anchor_dim else 0, anchor_dim))
        self.proxies = nn.Parameter(torch.randn(num_classes, embedding_dim + anchor_dim) * 0.1)

    @property
    def anchored(self) -> bool:
        return self.anchor_matrix.shape[1] > 0

    def set_anchor(self, mean: torch.Tensor, matrix: torch.Tensor) -> None:
        """Fix the anchor projection (shapes ``[stats_dim]`` and ``[stats_dim, anchor_dim]``)."""
        if tuple(matrix.shape) != tuple(self.anchor_matrix.shape) or tuple(mean.shape) != tuple(
            self.anchor_mean.shape
        ):
            raise ValueError(
                f"anchor of shape {tuple(matrix.shape)} does not fit the network's {tuple(self.anchor_matrix.shape)}"
            )
        self.anchor_mean.copy_(mean)
        self.anchor_matrix.copy_(matrix)

    def embedding(self, frames: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings ``[B, E]``."""
        if self.inputs == "frames":
            z = self.frames(frames)
        elif self.inputs == "stats":
            z = self.stats(stats)
        else:
            a, b = self.frames(frames), self.stats(stats)
            both = torch.cat([a, b], dim=1)
            if self.fusion == "gated":
                g = torch.sigmoid(self.merge(both))
                z = g * a + (1.0 - g) * b
            else:
                z = F.gelu(self.merge(both))
        learned = F.normalize(self.embed(z), dim=1)
        if not self.anchored:
            return learned
        anchor = F.normalize((stats - self.anchor_mean) @ self.anchor_matrix, dim=1)
        return F.normalize(torch.cat([anchor, self.anchor_weight * learned], dim=1), dim=1)

    def cosines(self, emb: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each embedding to each class proxy ``[B, C]``."""
        return emb @ F.normalize(self.proxies, dim=1).T

    def forward(self, frames: torch.Tensor, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(embeddings [B, E], scores [B, C] = scale * cosine)``."""
        emb = self.embedding(frames, stats)
        return emb, self.scale * self.cosines(emb)


def proxy_anchor_loss(
    cos: torch.Tensor, labels: torch.Tensor, alpha: float = 32.0, delta: float = 0.1
) -> torch.Tensor:
    """The proxy-anchor loss of cosine similarities ``cos [B, C]`` and class ids ``labels [B]``."""
    positive = F.one_hot(labels, cos.shape[1]).bool()
    pos_exp = torch.where(positive, torch.exp(-alpha * (cos - delta)), torch.zeros_like(cos))
    neg_exp = torch.where(~positive, torch.exp(alpha * (cos + delta)), torch.zeros_like(cos))
    with_pos = positive.any(dim=0)
    pos_term = torch.log1p(pos_exp.sum(dim=0))[with_pos].sum() / with_pos.sum().clamp(min=1)
    neg_term = torch.log1p(neg_exp.sum(dim=0)).sum() / cos.shape[1]
    return pos_term + neg_term


def hybrid_loss(
    model: GatedHybrid,
    scores: torch.Tensor,
    labels: torch.Tensor,
    loss: str = "ce",
    outlier_scores: torch.Tensor | None = None,
    outlier_loss: str = "uniform",
    outlier_weight: float = 0.5,
    margins: tuple[float, float] = (-0.6, -0.2),
    held_out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training objective: ``loss`` on the known clips plus, with outliers, the outlier term.

    ``held_out`` (bool ``[C]``): classes left out of this step: their clips join the outliers and
    every clip is scored against the other classes only.
    """
    if held_out is not None and bool(held_out.any()):
        keep = ~held_out
        out_rows = held_out[labels]
        remap = torch.cumsum(keep.long(), dim=0) - 1
        extra = scores[out_rows][:, keep]
        if outlier_scores is not None and len(outlier_scores):
            extra = torch.cat([outlier_scores[:, keep], extra])
        scores, labels, outlier_scores = scores[~out_rows][:, keep], remap[labels[~out_rows]], extra
    if loss == "ce":
        value = F.cross_entropy(scores, labels)
    elif loss == "proxy_anchor":
        value = proxy_anchor_loss(scores / model.scale, labels)
    else:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if outlier_scores is None or not len(outlier_scores):
        return value
    if outlier_loss == "uniform":
        term = -F.log_softmax(outlier_scores, dim=1).mean(dim=1).mean()
    elif outlier_loss == "energy":
        m_in, m_out = (m * model.scale for m in margins)
        e_in, e_out = -torch.logsumexp(scores, dim=1), -torch.logsumexp(outlier_scores, dim=1)
        term = F.relu(e_in - m_in).pow(2).mean() + F.relu(m_out - e_out).pow(2).mean()
    else:
        raise ValueError(f"outlier_loss must be one of {OUTLIER_LOSSES}, got {outlier_loss!r}")
    return value + outlier_weight * term
