"""AASIST over frame features, by default exactly the W2V-AASIST of the source-tracing baseline.

The raw-waveform AASIST (Jung et al., ICASSP 2022) starts with a sinc filterbank; the SSL variant
the Interspeech 2025 source-tracing baseline trains (``W2VAASIST``, after REFD) starts with a linear
**input projection** ``input_dim -> in_proj_dim`` per frame, so any front end fits (wav2vec2 768-d
frames, 60-d LFCC, ...) with any number of frames. The projected frames are read as a one-channel
2-D map ``[feature, time]``:

1. max-pool (``first_pool``, floor rounding), batch norm, SELU; a stack of 2-D residual conv blocks
   (``filts``; no pooling inside by default); batch norm and SELU on the encoder output;
2. spectral nodes (pooled over time, plus a learned positional embedding) and temporal nodes
   (pooled over frequency), each refined by a graph attention layer (GAL) and graph pooling. The
   pooling is attention-weighted by default (a learned 1x1-conv attention map, softmax over the
   pooled axis, weighted sum); ``node_pooling="max"`` takes the absolute maximum instead, as the
   raw-waveform AASIST does;
3. two branches of heterogeneous stacking graph attention (HS-GAL, two layers each) over the union
   of temporal and spectral nodes and a master node; the branches are merged by element-wise
   maximum (max graph operation, MGO);
4. readout: max and mean of the temporal and spectral nodes and the master node, concatenated
   (``5 * gat_dims[-1]``, 160 by default), optionally projected to ``embedding_dim``; a linear layer
   gives the logits.

With :data:`AASIST_DEFAULTS` the model has the original's 418,016 parameters for 24 classes on
768-d features, and :func:`state_dict_from_original` / :func:`state_dict_to_original` translate
between its checkpoint layout and this one.

>>> import torch
>>> model = AASIST(input_dim=12, num_classes=4, in_proj_dim=12, filts=[[1, 4], [4, 8]], gat_dims=[8, 6])
>>> logits, emb = model(torch.randn(3, 20, 12))
>>> tuple(logits.shape), tuple(emb.shape)
((3, 4), (3, 30))
>>> model.node_counts(20)
{'spectral': (4, 2, 1), 'temporal': (6, 3, 1)}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from sourcetracing.components import MODELS
from sourcetracing.errors import ConfigError

#: The model's default settings: those of the baseline's W2V-AASIST (``model`` config section).
AASIST_DEFAULTS: dict = {
    "in_proj_dim": 128,
    "first_pool": [3, 3],
    "filts": [[1, 32], [32, 32], [32, 64], [64, 64], [64, 64], [64, 64]],
    "block_pool": [1, 1],
    "residual": "original",
    "node_pooling": "attention",
    "node_attention_dim": 128,
    "gat_dims": [64, 32],
    "pool_ratios": [0.5, 0.5, 0.5, 0.5],
    "temperatures": [2.0, 2.0, 100.0, 100.0],
    "dropout": 0.5,
    "branch_dropout": 0.2,
    "embedding_dim": None,
}

#: One line per setting of :data:`AASIST_DEFAULTS`.
AASIST_SETTINGS_HELP: dict[str, str] = {
    "in_proj_dim": "Linear(feature dim -> in_proj_dim) per frame, read as a 1-channel [feature, time] map",
    "first_pool": "max-pool (feature, time) before the residual encoder, floor rounding",
    "filts": "residual blocks, [in, out] channels each; the first takes 1 channel",
    "block_pool": "max-pool (feature, time) after each residual block ([1, 3] in raw-waveform AASIST)",
    "residual": "original: conv1 reads the block input, as the released AASIST runs it (the BN before "
    "it exists but its output is unused); preact: BN -> SELU -> conv1 (pre-activation)",
    "node_pooling": "attention: learned attention-weighted sums (W2V-AASIST); max: absolute maximum "
    "(raw-waveform AASIST)",
    "node_attention_dim": "hidden channels of the 1x1-conv attention map (node_pooling: attention)",
    "gat_dims": "graph attention (GAL) dim, heterogeneous (HS-GAL) dim",
    "pool_ratios": "graph pooling ratios: spectral GAL, temporal GAL, spectral HS-GAL, temporal HS-GAL",
    "temperatures": "attention temperatures: spectral GAL, temporal GAL, HS-GAL branch 1, branch 2",
    "dropout": "dropout before the output layer",
    "branch_dropout": "dropout on each HS-GAL branch's nodes before the branches are merged",
    "embedding_dim": "penultimate size (OOD embeddings); None keeps the 5 * gat_dims[1] readout, "
    "another value adds a Linear + SELU projection",
}

RESIDUAL_KINDS = ("original", "preact")
NODE_POOLINGS = ("attention", "max")


class GraphAttention(nn.Module):
    """Graph attention layer (GAL) over a fully connected graph of nodes ``[B, N, D]``.

    Edge weights come from the element-wise product of node pairs, projected and squashed
    (``tanh``), scored by a learned vector and normalised with a temperature softmax.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0, dropout: float = 0.2):
        super().__init__()
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_weight = nn.Parameter(torch.empty(out_dim, 1))
        nn.init.xavier_normal_(self.att_weight)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.drop = nn.Dropout(dropout)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(x)
        scores = _pair_scores(x, self.att_proj, self.att_weight.t()).squeeze(2)  # [B, N, N]
        att = F.softmax(scores / self.temperature, dim=-1)
        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        return F.selu(_batch_norm_nodes(self.bn, out))


class HeteroGraphAttention(nn.Module):
    """Heterogeneous graph attention (one HS-GAL layer): two node types plus a master node.

    Attention between nodes uses a separate scoring vector for type1-type1, type2-type2 and the
    cross-type pairs; the master node attends to all nodes and is updated from them.
    """

    def __init__(self, in_dim: int, out_dim: int, temperature: float = 1.0, dropout: float = 0.2):
        super().__init__()
        self.proj_type1 = nn.Linear(in_dim, in_dim)
        self.proj_type2 = nn.Linear(in_dim, in_dim)
        self.att_proj = nn.Linear(in_dim, out_dim)
        self.att_proj_master = nn.Linear(in_dim, out_dim)
        self.att_weight11 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weight22 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weight12 = nn.Parameter(torch.empty(out_dim, 1))
        self.att_weight_master = nn.Parameter(torch.empty(out_dim, 1))
        for w in (self.att_weight11, self.att_weight22, self.att_weight12, self.att_weight_master):
            nn.init.xavier_normal_(w)
        self.proj_with_att = nn.Linear(in_dim, out_dim)
        self.proj_without_att = nn.Linear(in_dim, out_dim)
        self.proj_with_att_master = nn.Linear(in_dim, out_dim)
        self.proj_without_att_master = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)
        self.drop = nn.Dropout(dropout)
        self.temperature = temperature

    def forward(
        self, x1: torch.Tensor, x2: torch.Tensor, master: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n1 = x1.size(1)
        x = torch.cat([self.proj_type1(x1), self.proj_type2(x2)], dim=1)  # [B, N1+N2, D]
        x = self.drop(x)

        # node-to-node attention with a scoring vector per pair of node types
        weights = torch.cat([self.att_weight11, self.att_weight22, self.att_weight12], dim=1).t()  # [3, H]
        s = _pair_scores(x, self.att_proj, weights)  # [B, N, 3, N]
        n = x.size(1)
        is1 = torch.arange(n, device=x.device) < n1
        same1 = is1[:, None] & is1[None, :]
        same2 = ~is1[:, None] & ~is1[None, :]
        scores = torch.where(same1, s[:, :, 0], torch.where(same2, s[:, :, 1], s[:, :, 2]))
        att = F.softmax(scores / self.temperature, dim=-1)

        # master node: attends to every node
        m_scores = torch.tanh(self.att_proj_master(x * master)) @ self.att_weight_master  # [B, N, 1]
        m_att = F.softmax(m_scores.squeeze(-1) / self.temperature, dim=-1).unsqueeze(1)  # [B, 1, N]
        master = self.proj_with_att_master(m_att @ x) + self.proj_without_att_master(master)

        out = self.proj_with_att(att @ x) + self.proj_without_att(x)
        out = F.selu(_batch_norm_nodes(self.bn, out))
        return out[:, :n1], out[:, n1:], master


class GraphPool(nn.Module):
    """Graph pooling: gate every node with a learned score and keep the top ``ratio`` of them."""

    def __init__(self, ratio: float, dim: int, dropout: float = 0.3):
        super().__init__()
        if not 0.0 < ratio <= 1.0:
            raise ConfigError(f"pool ratio must be in (0, 1], got {ratio}")
        self.ratio = ratio
        self.proj = nn.Linear(dim, 1)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.proj(self.drop(h)))  # [B, N, 1]
        h = h * scores
        idx = torch.topk(scores.squeeze(-1), kept_nodes(h.size(1), self.ratio), dim=1).indices
        return torch.gather(h, 1, idx.unsqueeze(-1).expand(-1, -1, h.size(-1)))


def kept_nodes(nodes: int, ratio: float) -> int:
    """Nodes a :class:`GraphPool` keeps out of ``nodes``: ``floor(nodes * ratio)``, at least one."""
    return max(int(nodes * ratio), 1)


class ResidualBlock(nn.Module):
    """2-D residual block: conv (2, 3) -> BN -> SELU -> conv (2, 3), plus a shortcut; optional max-pool.

    ``preact=False`` is the block as the released AASIST and W2V-AASIST run it: ``conv1`` reads the
    block input. Their non-first blocks also compute BN -> SELU on the input and discard it; that BN
    (``bn1``) is kept here with its parameters (same parameter count and checkpoint layout) but is
    frozen and skipped, which changes no output. ``preact=True`` feeds ``conv1`` with BN -> SELU of
    the input (pre-activation), a different model. The first block never has ``bn1``.
    """

    def __init__(
        self, in_ch: int, out_ch: int, first: bool = False, pool: Sequence[int] = (1, 1), preact: bool = False
    ):
        super().__init__()
        self.preact = preact
        self.bn1 = None if first else nn.BatchNorm2d(in_ch)
        if self.bn1 is not None and not preact:
            self.bn1.requires_grad_(False)  # unused: no gradient (DDP needs every trained parameter used)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=(2, 3), padding=(0, 1))
        self.downsample = (
            nn.Conv2d(in_ch, out_ch, kernel_size=(1, 3), padding=(0, 1)) if in_ch != out_ch else None
        )
        pool = tuple(int(p) for p in pool)
        self.pool = nn.MaxPool2d(pool) if pool != (1, 1) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.selu(self.bn1(x)) if self.preact and self.bn1 is not None else x
        out = self.conv2(F.selu(self.bn2(self.conv1(out))))
        out = out + identity
        return self.pool(out) if self.pool is not None else out


def _pair_scores(x: torch.Tensor, proj: nn.Linear, weights: torch.Tensor) -> torch.Tensor:
    """Edge scores ``w_k . tanh(W (x_i * x_j) + b)`` for all node pairs: ``[B, N, K, N]``.

    Computed as a batched matrix product, ``(x_i * W_h) . x_j``, instead of materialising the
    ``[B, N, N, D]`` pairwise products first (same numbers, less memory traffic).
    """
    b, n, d = x.shape
    h = proj.weight.size(0)
    xw = (x.unsqueeze(2) * proj.weight).reshape(b, n * h, d)  # rows (i, h): x_i * W_h
    pre = torch.bmm(xw, x.transpose(1, 2)).view(b, n, h, n)  # [B, N, H, N]
    hidden = torch.tanh(pre + proj.bias.view(1, 1, -1, 1))
    return weights @ hidden  # [K, H] @ [B, N, H, N] -> [B, N, K, N]


def _batch_norm_nodes(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """Batch norm over all nodes of all graphs: ``[B, N, D]`` viewed as ``[B*N, D]``."""
    shape = x.shape
    return bn(x.reshape(-1, shape[-1])).view(shape)


def _pairs(filts: Sequence) -> list[tuple[int, int]]:
    out = []
    for f in filts:
        if not isinstance(f, (list, tuple)) or len(f) != 2:
            raise ConfigError(f"model.filts must be a list of [in_channels, out_channels] pairs, got {f!r}")
        out.append((int(f[0]), int(f[1])))
    if not out or out[0][0] != 1:
        raise ConfigError(
            "model.filts: the first block must take 1 input channel, e.g. [[1, 32], [32, 32], ...]"
        )
    for (_, prev_out), (nxt_in, _) in pairwise(out):
        if nxt_in != prev_out:
            raise ConfigError(
                f"model.filts: each block must take the channels the previous one gives, got {filts!r}"
            )
    return out


def _pool_size(value: Sequence[int], name: str) -> tuple[int, int]:
    size = tuple(int(v) for v in value)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"model.{name} must be two positive sizes [feature, time], got {value!r}")
    return size  # type: ignore[return-value]


def _choice(value: str, allowed: Sequence[str], name: str) -> str:
    if value not in allowed:
        raise ConfigError(f"model.{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


class AASIST(nn.Module):
    """AASIST classifier over frame features ``[B, T, input_dim]`` (settings: :data:`AASIST_SETTINGS_HELP`).

    ``forward`` returns ``(logits [B, num_classes], embedding [B, embedding_dim])``; the embedding is
    the penultimate representation (graph readout, or its projection when ``embedding_dim`` differs).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        in_proj_dim: int = 128,
        first_pool: Sequence[int] = (3, 3),
        filts: Sequence = ((1, 32), (32, 32), (32, 64), (64, 64), (64, 64), (64, 64)),
        block_pool: Sequence[int] = (1, 1),
        residual: str = "original",
        node_pooling: str = "attention",
        node_attention_dim: int = 128,
        gat_dims: Sequence[int] = (64, 32),
        pool_ratios: Sequence[float] = (0.5, 0.5, 0.5, 0.5),
        temperatures: Sequence[float] = (2.0, 2.0, 100.0, 100.0),
        dropout: float = 0.5,
        branch_dropout: float = 0.2,
        embedding_dim: int | None = None,
        name: str = "aasist",
    ):
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if len(gat_dims) != 2 or len(pool_ratios) != 4 or len(temperatures) != 4:
            raise ConfigError(
                "model.gat_dims needs 2 values, model.pool_ratios and model.temperatures 4 each"
            )
        pairs = _pairs(filts)
        self.first_pool = _pool_size(first_pool, "first_pool")
        self.block_pool = _pool_size(block_pool, "block_pool")
        self.residual = _choice(residual, RESIDUAL_KINDS, "residual")
        self.node_pooling = _choice(node_pooling, NODE_POOLINGS, "node_pooling")
        self.pool_ratios = tuple(float(r) for r in pool_ratios)
        self.input_dim = int(input_dim)
        self.in_proj_dim = int(in_proj_dim)
        self.num_classes = int(num_classes)
        self._freq_pools = [self.first_pool[0]] + [self.block_pool[0]] * len(pairs)
        self._time_pools = [self.first_pool[1]] + [self.block_pool[1]] * len(pairs)
        n_freq = _pooled(self.in_proj_dim, self._freq_pools)
        if n_freq < 1:
            raise ConfigError(
                f"model.in_proj_dim={in_proj_dim} is too small for the feature pools {self._freq_pools} "
                f"(needs at least {math.prod(self._freq_pools)})"
            )
        channels = pairs[-1][1]
        g1, g2 = int(gat_dims[0]), int(gat_dims[1])

        self.in_proj = nn.Linear(self.input_dim, self.in_proj_dim)
        self.first_bn = nn.BatchNorm2d(1)
        self.encoder = nn.Sequential(
            *[
                ResidualBlock(i, o, first=(k == 0), pool=self.block_pool, preact=self.residual == "preact")
                for k, (i, o) in enumerate(pairs)
            ]
        )
        self.encoder_bn = nn.BatchNorm2d(channels)
        self.node_attention = (
            nn.Sequential(
                nn.Conv2d(channels, node_attention_dim, kernel_size=1),
                nn.SELU(),
                nn.BatchNorm2d(node_attention_dim),
                nn.Conv2d(node_attention_dim, channels, kernel_size=1),
            )
            if self.node_pooling == "attention"
            else None
        )
        self.pos_spectral = nn.Parameter(torch.randn(1, n_freq, channels))
        self.master1 = nn.Parameter(torch.randn(1, 1, g1))
        self.master2 = nn.Parameter(torch.randn(1, 1, g1))

        self.gat_spectral = GraphAttention(channels, g1, temperature=temperatures[0])
        self.gat_temporal = GraphAttention(channels, g1, temperature=temperatures[1])
        self.pool_spectral = GraphPool(pool_ratios[0], g1)
        self.pool_temporal = GraphPool(pool_ratios[1], g1)

        # pool_ratios: [spectral GAL, temporal GAL, spectral HS-GAL, temporal HS-GAL] (the two branches
        # keep the same node counts for the element-wise maximum); temperatures: [spectral GAL,
        # temporal GAL, HS-GAL branch 1, HS-GAL branch 2].
        self.hs_gal11 = HeteroGraphAttention(g1, g2, temperature=temperatures[2])
        self.hs_gal12 = HeteroGraphAttention(g2, g2, temperature=temperatures[2])
        self.hs_gal21 = HeteroGraphAttention(g1, g2, temperature=temperatures[3])
        self.hs_gal22 = HeteroGraphAttention(g2, g2, temperature=temperatures[3])
        self.pool_hs1 = GraphPool(pool_ratios[2], g2)
        self.pool_ht1 = GraphPool(pool_ratios[3], g2)
        self.pool_hs2 = GraphPool(pool_ratios[2], g2)
        self.pool_ht2 = GraphPool(pool_ratios[3], g2)

        readout = 5 * g2
        self.embed = (
            nn.Sequential(nn.Linear(readout, embedding_dim), nn.SELU())
            if embedding_dim and embedding_dim != readout
            else nn.Identity()
        )
        self.embedding_dim = int(embedding_dim) if embedding_dim else readout
        self.drop = nn.Dropout(dropout)
        self.drop_way = nn.Dropout(branch_dropout)
        self.out_layer = nn.Linear(self.embedding_dim, num_classes)

    @property
    def min_frames(self) -> int:
        """The fewest input frames the time pools leave at least one temporal node of."""
        return math.prod(self._time_pools)

    def node_counts(self, frames: int) -> dict[str, tuple[int, int, int]]:
        """Graph nodes per stage for an input of ``frames`` frames: encoder output, after the GAL pool
        and after the HS-GAL pool, for the ``spectral`` and the ``temporal`` nodes.

        >>> AASIST(input_dim=768, num_classes=24).node_counts(199)
        {'spectral': (42, 21, 10), 'temporal': (66, 33, 16)}
        """
        counts = {}
        for kind, nodes, gal_ratio, hs_ratio in (
            ("spectral", _pooled(self.in_proj_dim, self._freq_pools), *self.pool_ratios[0::2]),
            ("temporal", _pooled(int(frames), self._time_pools), *self.pool_ratios[1::2]),
        ):
            if nodes < 1:
                raise ConfigError(
                    f"AASIST needs at least {self.min_frames} frames (time pools {self._time_pools}), "
                    f"got {frames}"
                )
            after_gal = kept_nodes(nodes, gal_ratio)
            counts[kind] = (nodes, after_gal, kept_nodes(after_gal, hs_ratio))
        return counts

    def _nodes(self, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Spectral ``[B, F, C]`` and temporal ``[B, T, C]`` nodes from the encoder map ``[B, C, F, T]``."""
        if self.node_attention is None:
            return e.abs().amax(dim=3).transpose(1, 2), e.abs().amax(dim=2).transpose(1, 2)
        w = self.node_attention(e)
        spectral = (e * F.softmax(w, dim=3)).sum(dim=3)  # over time
        temporal = (e * F.softmax(w, dim=2)).sum(dim=2)  # over frequency
        return spectral.transpose(1, 2), temporal.transpose(1, 2)

    def _branch(
        self,
        t: torch.Tensor,
        s: torch.Tensor,
        master: torch.Tensor,
        first: nn.Module,
        second: nn.Module,
        pool_t: nn.Module,
        pool_s: nn.Module,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t, s, master = first(t, s, master)
        s, t = pool_s(s), pool_t(t)
        t_aug, s_aug, m_aug = second(t, s, master)
        return t + t_aug, s + s_aug, master + m_aug

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 3 or x.size(-1) != self.input_dim:
            raise ConfigError(
                f"AASIST expects [batch, frames, {self.input_dim}] features, got {tuple(x.shape)}"
            )
        if x.size(1) < self.min_frames:
            raise ConfigError(
                f"AASIST needs at least {self.min_frames} frames (time pools {self._time_pools}), "
                f"got {x.size(1)}"
            )
        x = self.in_proj(x).transpose(1, 2).unsqueeze(1)  # [B, 1, P, T]
        x = F.max_pool2d(x, self.first_pool)
        x = F.selu(self.first_bn(x))
        e = F.selu(self.encoder_bn(self.encoder(x)))  # [B, C, F, T']

        e_s, e_t = self._nodes(e)
        s = self.pool_spectral(self.gat_spectral(e_s + self.pos_spectral))
        t = self.pool_temporal(self.gat_temporal(e_t))

        b = x.size(0)
        t1, s1, m1 = self._branch(
            t, s, self.master1.expand(b, -1, -1), self.hs_gal11, self.hs_gal12, self.pool_ht1, self.pool_hs1
        )
        t2, s2, m2 = self._branch(
            t, s, self.master2.expand(b, -1, -1), self.hs_gal21, self.hs_gal22, self.pool_ht2, self.pool_hs2
        )
        t1, t2 = self.drop_way(t1), self.drop_way(t2)
        s1, s2 = self.drop_way(s1), self.drop_way(s2)
        m1, m2 = self.drop_way(m1), self.drop_way(m2)
        t, s, m = torch.maximum(t1, t2), torch.maximum(s1, s2), torch.maximum(m1, m2)

        readout = torch.cat(
            [t.abs().amax(dim=1), t.mean(dim=1), s.abs().amax(dim=1), s.mean(dim=1), m.squeeze(1)], dim=1
        )
        embedding = self.embed(readout)
        logits = self.out_layer(self.drop(embedding))
        return logits, embedding


def _pooled(length: int, pools: Sequence[int]) -> int:
    """``length`` after max-pools of the given sizes with floor rounding (as ``nn.MaxPool2d``)."""
    for p in pools:
        length //= p
    return length


# Checkpoint layout of the baseline's ``W2VAASIST``: module names there -> here. The encoder blocks
# there sit one level deeper (``encoder.<k>.0.``).
_ORIGINAL_NAMES = {
    "LL": "in_proj",
    "first_bn1": "encoder_bn",
    "attention": "node_attention",
    "pos_S": "pos_spectral",
    "GAT_layer_S": "gat_spectral",
    "GAT_layer_T": "gat_temporal",
    "HtrgGAT_layer_ST11": "hs_gal11",
    "HtrgGAT_layer_ST12": "hs_gal12",
    "HtrgGAT_layer_ST21": "hs_gal21",
    "HtrgGAT_layer_ST22": "hs_gal22",
    "pool_S": "pool_spectral",
    "pool_T": "pool_temporal",
    "pool_hS1": "pool_hs1",
    "pool_hT1": "pool_ht1",
    "pool_hS2": "pool_hs2",
    "pool_hT2": "pool_ht2",
    "att_projM": "att_proj_master",
    "att_weightM": "att_weight_master",
    "proj_with_attM": "proj_with_att_master",
    "proj_without_attM": "proj_without_att_master",
    "conv_downsample": "downsample",
}
_TO_ORIGINAL_NAMES = {ours: theirs for theirs, ours in _ORIGINAL_NAMES.items()}


def state_dict_from_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict of the baseline's ``W2VAASIST`` renamed for :class:`AASIST` with the default settings.

    Load it with ``model.load_state_dict(..., strict=True)``: a model whose settings differ from the
    checkpoint's then fails with the mismatching names and shapes.
    """
    out = {}
    for key, value in state.items():
        key = re.sub(r"^encoder\.(\d+)\.0\.", r"encoder.\1.", key)
        out[".".join(_ORIGINAL_NAMES.get(part, part) for part in key.split("."))] = value
    return out


def state_dict_to_original(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An :class:`AASIST` state dict in the layout of the baseline's ``W2VAASIST`` (its scripts load it).

    Only the original's architecture has that layout: attention node pooling and no embedding
    projection.
    """
    if any(key.startswith("embed.") for key in state):
        raise ConfigError("the original W2VAASIST has no embedding projection: use embedding_dim=None")
    if not any(key.startswith("node_attention.") for key in state):
        raise ConfigError("the original W2VAASIST pools nodes by attention: use node_pooling='attention'")
    out = {}
    for key, value in state.items():
        key = ".".join(_TO_ORIGINAL_NAMES.get(part, part) for part in key.split("."))
        out[re.sub(r"^encoder\.(\d+)\.", r"encoder.\1.0.", key)] = value
    return out


MODELS.register("aasist", defaults=AASIST_DEFAULTS)(AASIST)
