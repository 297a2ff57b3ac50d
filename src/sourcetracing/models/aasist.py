"""AASIST over frame features: spectro-temporal graph attention (Jung et al., ICASSP 2022).

The raw-waveform AASIST starts with a sinc filterbank; like the SSL variants (wav2vec2 frames in,
Tak et al. 2022) this one starts with a linear **input projection** ``input_dim -> in_proj_dim`` so any
front end fits (wav2vec2 768-d frames, 60-d LFCC, ...) with any number of frames. The projected
frames are read as a one-channel 2-D map ``[feature, time]``:

1. max-pool (``first_pool``), batch norm, SELU; a stack of 2-D residual conv blocks (``filts``);
2. spectral nodes (max over time, plus a learned positional embedding) and temporal nodes
   (max over frequency), each refined by a graph attention layer (GAL) and graph pooling;
3. two branches of heterogeneous stacking graph attention (HS-GAL, two layers each) over the union
   of temporal and spectral nodes and a master node; the branches are merged by element-wise
   maximum (max graph operation, MGO);
4. readout: max and mean of the temporal and spectral nodes and the master node, concatenated
   (``5 * gat_dims[-1]``), optionally projected to ``embedding_dim``; a linear layer gives the logits.

>>> import torch
>>> model = AASIST(input_dim=12, num_classes=4, in_proj_dim=12, filts=[[1, 4], [4, 8]], gat_dims=[8, 6],
...                embedding_dim=None)
>>> logits, emb = model(torch.randn(3, 20, 12))
>>> tuple(logits.shape), tuple(emb.shape)
((3, 4), (3, 30))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


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
            raise ValueError(f"pool ratio must be in (0, 1], got {ratio}")
        self.ratio = ratio
        self.proj = nn.Linear(dim, 1)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.proj(self.drop(h)))  # [B, N, 1]
        h = h * scores
        k = max(int(h.size(1) * self.ratio), 1)
        idx = torch.topk(scores.squeeze(-1), k, dim=1).indices
        return torch.gather(h, 1, idx.unsqueeze(-1).expand(-1, -1, h.size(-1)))


class ResidualBlock(nn.Module):
    """Pre-activation 2-D residual block (BN-SELU-conv x2) with an optional max-pool at the end."""

    def __init__(self, in_ch: int, out_ch: int, first: bool = False, pool: Sequence[int] = (1, 1)):
        super().__init__()
        self.bn1 = None if first else nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, kernel_size=(2, 3), padding=(1, 1))
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, kernel_size=(2, 3), padding=(0, 1))
        self.downsample = (
            nn.Conv2d(in_ch, out_ch, kernel_size=(1, 3), padding=(0, 1)) if in_ch != out_ch else None
        )
        pool = tuple(int(p) for p in pool)
        self.pool = nn.MaxPool2d(pool, ceil_mode=True) if pool != (1, 1) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = x if self.bn1 is None else F.selu(self.bn1(x))
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
            raise ValueError(f"model.filts must be a list of [in_channels, out_channels] pairs, got {f!r}")
        out.append((int(f[0]), int(f[1])))
    if not out or out[0][0] != 1:
        raise ValueError(
            "model.filts: the first block must take 1 input channel, e.g. [[1, 32], [32, 32], ...]"
        )
    return out


class AASIST(nn.Module):
    """AASIST classifier over frame features ``[B, T, input_dim]``.

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
        gat_dims: Sequence[int] = (64, 32),
        pool_ratios: Sequence[float] = (0.5, 0.7, 0.5, 0.5),
        temperatures: Sequence[float] = (2.0, 2.0, 100.0, 100.0),
        dropout: float = 0.5,
        embedding_dim: int | None = 160,
        name: str = "aasist",
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if len(gat_dims) != 2 or len(pool_ratios) != 4 or len(temperatures) != 4:
            raise ValueError("model.gat_dims needs 2 values, model.pool_ratios and model.temperatures 4 each")
        pairs = _pairs(filts)
        self.first_pool = tuple(int(p) for p in first_pool)
        pool = tuple(int(p) for p in block_pool)
        n_freq = math.ceil(in_proj_dim / self.first_pool[0])
        for _ in pairs:
            n_freq = math.ceil(n_freq / pool[0])  # pools use ceil_mode: short inputs never vanish
        channels = pairs[-1][1]
        g1, g2 = int(gat_dims[0]), int(gat_dims[1])

        self.in_proj = nn.Linear(input_dim, in_proj_dim)
        self.first_bn = nn.BatchNorm2d(1)
        self.encoder = nn.Sequential(
            *[ResidualBlock(i, o, first=(k == 0), pool=pool) for k, (i, o) in enumerate(pairs)]
        )
        self.pos_spectral = nn.Parameter(torch.randn(1, n_freq, channels))
        self.master1 = nn.Parameter(torch.randn(1, 1, g1))
        self.master2 = nn.Parameter(torch.randn(1, 1, g1))

        self.gat_spectral = GraphAttention(channels, g1, temperature=temperatures[0])
        self.gat_temporal = GraphAttention(channels, g1, temperature=temperatures[1])
        self.pool_spectral = GraphPool(pool_ratios[0], g1)
        self.pool_temporal = GraphPool(pool_ratios[1], g1)

        # pool_ratios: [spectral GAL, temporal GAL, spectral HS-GAL, temporal HS-GAL] (the two branches
        # must keep the same node counts for the element-wise maximum); temperatures: [spectral GAL,
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
        self.drop_way = nn.Dropout(0.2)
        self.out_layer = nn.Linear(self.embedding_dim, num_classes)
        self.num_classes = num_classes
        self.input_dim = input_dim

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
            raise ValueError(
                f"AASIST expects [batch, frames, {self.input_dim}] features, got {tuple(x.shape)}"
            )
        x = self.in_proj(x).transpose(1, 2).unsqueeze(1)  # [B, 1, P, T]
        x = F.max_pool2d(x, self.first_pool, ceil_mode=True)
        x = F.selu(self.first_bn(x))
        e = self.encoder(x)  # [B, C, F, T']

        e_s = e.abs().amax(dim=3).transpose(1, 2) + self.pos_spectral  # [B, F, C]
        s = self.pool_spectral(self.gat_spectral(e_s))
        e_t = e.abs().amax(dim=2).transpose(1, 2)  # [B, T', C]
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
