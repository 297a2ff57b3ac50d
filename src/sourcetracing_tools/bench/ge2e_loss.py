"""Benchmark: the vectorised GE2E loss vs a straightforward loop over systems and clips.

    python scripts/benchmark.py ge2e-loss [--systems 10 --clips 4 --dim 256 --repeats 50]

Both compute forward + backward of the same loss (checked equal first); prints ms per call and
the speed-up for the softmax and contrast variants.

:func:`ge2e_loss_loop` is the REFERENCE implementation: the formulas of Wan et al. (2018) written
one clip at a time, for the tests and this benchmark. Training uses
:class:`sourcetracing.models.ge2e.GE2ELoss`.
"""

from __future__ import annotations

import argparse
import functools
import time

import torch

from sourcetracing.models.ge2e import W_MIN, GE2ELoss


def _cos(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return torch.dot(a, b) / (torch.clamp(a.norm(), min=eps) * torch.clamp(b.norm(), min=eps))


def ge2e_loss_loop(
    emb: torch.Tensor, w: torch.Tensor, b: torch.Tensor, variant: str = "softmax", reduction: str = "mean"
) -> torch.Tensor:
    """REFERENCE GE2E loss, one clip at a time (``emb`` is ``[N, M, D]``; ``w`` is clamped to >= 1e-6).

    ``S[j,i,k] = w cos(e_ji, c_k) + b``, with ``c_j^(-i)`` (the centroid without ``e_ji``) when
    ``k == j``; softmax: ``-S[j,i,j] + log sum_k exp S[j,i,k]``; contrast:
    ``1 - sigmoid(S[j,i,j]) + max_{k != j} sigmoid(S[j,i,k])``.

    >>> e = torch.randn(3, 4, 5, dtype=torch.float64)
    >>> w, b = torch.tensor(10.0, dtype=torch.float64), torch.tensor(-5.0, dtype=torch.float64)
    >>> torch.allclose(ge2e_loss_loop(e, w, b), GE2ELoss()(e).to(torch.float64))
    True
    """
    n_sys, n_clips, _ = emb.shape
    w = w.clamp(min=W_MIN)
    centroids = [emb[k].mean(dim=0) for k in range(n_sys)]
    losses = []
    for j in range(n_sys):
        for i in range(n_clips):
            e = emb[j, i]
            sims = []
            for k in range(n_sys):
                if k == j:
                    others = [emb[j, m] for m in range(n_clips) if m != i]
                    centre = torch.stack(others).mean(dim=0)
                else:
                    centre = centroids[k]
                sims.append(w * _cos(e, centre) + b)
            s = torch.stack(sims)
            if variant == "softmax":
                losses.append(-s[j] + torch.log(torch.exp(s).sum()))
            elif variant == "contrast":
                neg = torch.stack([torch.sigmoid(s[k]) for k in range(n_sys) if k != j]).max()
                losses.append(1.0 - torch.sigmoid(s[j]) + neg)
            else:
                raise ValueError(f"unknown variant {variant!r}")
    total = torch.stack(losses).sum()
    return total / (n_sys * n_clips) if reduction == "mean" else total


def _step_vectorised(loss_fn: GE2ELoss, emb: torch.Tensor) -> float:
    loss = loss_fn(emb)
    loss.backward()
    return loss.detach().item()


def _step_loop(loss_fn: GE2ELoss, emb: torch.Tensor) -> float:
    loss = ge2e_loss_loop(emb, loss_fn.w, loss_fn.b, loss_fn.variant, loss_fn.reduction)
    loss.backward()
    return loss.detach().item()


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark.py ge2e-loss", description="GE2E loss: vectorised vs loop (forward + backward)"
    )
    parser.add_argument("--classes", type=int, default=10, help="classes (systems) per batch, N (default 10)")
    parser.add_argument("--clips", type=int, default=4, help="clips per class, M (default 4)")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension, D (default 256)")
    parser.add_argument("--repeats", type=int, default=50, help="timed repetitions (default 50)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n, m, d = args.classes, args.clips, args.dim
    print(
        f"GE2E loss, N={n} systems x M={m} clips, D={d}, forward+backward, CPU threads={torch.get_num_threads()}"
    )
    print(f"{'variant':10s} {'loop ms':>10s} {'vectorised ms':>14s} {'speed-up':>9s}  |loss diff|")
    for variant in ("softmax", "contrast"):
        emb = torch.randn(n, m, d, requires_grad=True)
        loss_fn = GE2ELoss(10.0, -5.0, variant=variant)
        vec = functools.partial(_step_vectorised, loss_fn, emb)
        loop = functools.partial(_step_loop, loss_fn, emb)
        diff = abs(vec() - loop())
        t_vec = _time(vec, args.repeats)
        t_loop = _time(loop, max(3, args.repeats // 10))
        print(f"{variant:10s} {t_loop:10.2f} {t_vec:14.3f} {t_loop / t_vec:8.1f}x  {diff:.2e}")
    return 0
