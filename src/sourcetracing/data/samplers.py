"""Batch samplers.

:class:`ClassBalancedBatchSampler` yields GE2E batches: ``N`` distinct systems x ``M`` distinct
clips each, in system-major order (the ``M`` items of system 0, then system 1, ...), so the
encoder's output reshapes to ``[N, M, D]``. Items that are versions of one clip (the original
and its augmented copies in the feature store) share a *group*: the ``M`` items of a system come
from ``M`` different groups, one random version each.

>>> import numpy as np
>>> labels = np.repeat([0, 1, 2], 5)
>>> sampler = ClassBalancedBatchSampler(labels, n_systems=2, n_clips=3, steps_per_epoch=4, seed=1)
>>> batches = list(sampler)
>>> len(batches), len(batches[0])
(4, 6)
>>> all(len(set(labels[[i for i, _ in b]])) == 2 for b in batches)
True
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

log = logging.getLogger(__name__)


class ClassBalancedBatchSampler:
    """Seeded, DDP-aware sampler of ``n_systems x n_clips`` batches over labelled items.

    Each batch is a list of ``(position, crop_seed)`` pairs: ``position`` indexes ``labels``;
    ``crop_seed`` is a per-item seed (datasets that crop raw audio use it for a reproducible random
    crop; others ignore it). Call :meth:`set_epoch` before each epoch. Under DDP every rank draws
    different batches (its generator is seeded by ``(seed, epoch, rank)``).

    Systems with fewer than ``n_clips`` groups are left out (one warning lists them);
    ``n_systems`` is capped at the number of eligible systems (with a warning). ``labels < 0``
    (OOD rows) are ignored.

    ``steps_per_epoch = 0`` gives the original's epoch: every system's groups are shuffled once per
    epoch and used without replacement, and the epoch ends as soon as a drawn system has fewer
    than ``n_clips`` groups left. The batches of such an epoch are drawn once (seeded by seed and
    epoch) and dealt out to the DDP ranks, so every rank runs the same number of steps.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        n_systems: int,
        n_clips: int,
        steps_per_epoch: int,
        seed: int = 0,
        groups: Sequence | np.ndarray | None = None,
        rank: int = 0,
        world_size: int = 1,
        names: dict[int, str] | None = None,
    ):
        labels = np.asarray(labels).astype(int)
        if n_clips < 2:
            raise ValueError(f"n_clips must be >= 2 for GE2E (got {n_clips})")
        if steps_per_epoch < 0:
            raise ValueError(f"steps_per_epoch must be >= 0 (got {steps_per_epoch})")
        groups_arr = np.arange(len(labels)) if groups is None else np.asarray(groups)
        if len(groups_arr) != len(labels):
            raise ValueError("groups and labels differ in length")
        self.n_clips = int(n_clips)
        self.steps_per_epoch = int(steps_per_epoch)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0
        self._exhaust_cache: tuple[int, list] | None = None

        # system -> list of groups -> array of item positions (the group's versions)
        self.systems: list[int] = []
        self.members: list[list[np.ndarray]] = []
        small: list[str] = []
        for label in sorted(set(labels[labels >= 0].tolist())):
            pos = np.flatnonzero(labels == label)
            _, inverse = np.unique(groups_arr[pos], return_inverse=True)
            by_group = [pos[inverse == g] for g in range(inverse.max() + 1)]
            if len(by_group) < self.n_clips:
                name = names.get(label, str(label)) if names else str(label)
                small.append(f"{name} ({len(by_group)})")
                continue
            self.systems.append(label)
            self.members.append(by_group)
        if small:
            log.warning(
                "GE2E sampler: %d system(s) have fewer than %d clips and are left out: %s",
                len(small),
                self.n_clips,
                ", ".join(small),
            )
        if len(self.systems) < 2:
            raise ValueError(
                f"GE2E needs at least 2 systems with >= {self.n_clips} clips each; found {len(self.systems)}"
            )
        if n_systems > len(self.systems):
            log.warning(
                "GE2E sampler: n_systems=%d capped at the %d eligible systems", n_systems, len(self.systems)
            )
        self.n_systems = int(min(n_systems, len(self.systems)))

    @property
    def batch_size(self) -> int:
        return self.n_systems * self.n_clips

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._exhaust_cache: tuple[int, list] | None = None

    def __len__(self) -> int:
        return self.steps_per_epoch if self.steps_per_epoch else len(self._exhaust_batches())

    def _pick(self, rng: np.random.Generator, s: int, groups_idx) -> list[tuple[int, int]]:
        out = []
        for g in groups_idx:
            versions = self.members[s][g]
            pos = versions[rng.integers(len(versions))] if len(versions) > 1 else versions[0]
            out.append((int(pos), int(rng.integers(2**31 - 1))))
        return out

    def _exhaust_batches(self) -> list[list[tuple[int, int]]]:
        cache = getattr(self, "_exhaust_cache", None)
        if cache is not None and cache[0] == self.epoch:
            return cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        orders = [rng.permutation(len(groups)) for groups in self.members]
        used = [0] * len(self.systems)
        batches = []
        while True:
            chosen = rng.choice(len(self.systems), size=self.n_systems, replace=False)
            if any(used[s] + self.n_clips > len(orders[s]) for s in chosen):
                break
            batch: list[tuple[int, int]] = []
            for s in chosen:
                batch += self._pick(rng, s, orders[s][used[s] : used[s] + self.n_clips])
                used[s] += self.n_clips
            batches.append(batch)
        usable = len(batches) // self.world_size * self.world_size
        mine = batches[:usable][self.rank :: self.world_size]
        self._exhaust_cache = (self.epoch, mine)
        return mine

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if not self.steps_per_epoch:
            yield from self._exhaust_batches()
            return
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, self.world_size])
        for _ in range(self.steps_per_epoch):
            batch: list[tuple[int, int]] = []
            for s in rng.choice(len(self.systems), size=self.n_systems, replace=False):
                batch += self._pick(
                    rng, s, rng.choice(len(self.members[s]), size=self.n_clips, replace=False)
                )
            yield batch
