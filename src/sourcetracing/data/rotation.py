"""Protocol rotation: K seeded re-partitions of a corpus's systems into known / dev-unseen / eval-unseen.

One fixed split can be tuned to, knowingly or not; a method is better when it wins over many
partitions of the systems. :func:`rotate` pools every system's clips from a protocol folder (the
``train/dev/eval.csv`` files) and draws ``k`` partitions:

- each rotation has as many known, dev-unseen and eval-unseen systems as the source protocols
  (or the counts asked for); dev-unseen and eval-unseen are disjoint;
- the systems unseen least often so far are drawn first (ties at random), so every system is
  unseen in at least one rotation once ``k * unseen`` covers them;
- near-twin families (systems linked by ``twin_of`` in a corpus summary) are spread over known and
  unseen as the hard demo's plan is: a family keeps at least one known member and, when it has two
  or more, at least one unseen member;
- a system known in the source keeps its clips' own splits when it is known again (so a language
  held out of train stays out); a system unseen in the source that becomes known has its clips
  dealt over train/dev/eval in the source's known proportions; an unseen system contributes at most
  ``max_unseen_clips`` clips (default: the source's median per unseen system), drawn at random.

Everything is seeded: one seed gives byte-identical protocol files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.data.protocols import ProtocolError, read_protocol

SPLITS = ("train", "dev", "eval")
ROLES = ("known", "dev-unseen", "eval-unseen")


@dataclass(frozen=True)
class Rotation:
    """One partition: each system's role, and the protocol rows of each split."""

    index: int
    roles: dict[str, str]  # system -> known | dev-unseen | eval-unseen
    splits: dict[str, pd.DataFrame]  # split -> rows (path, model_name)

    def write(self, out: Path) -> Path:
        """``out/{train,dev,eval}.csv`` (``path,model_name``) and ``out/roles.csv``; returns ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        for split, rows in self.splits.items():
            rows[["path", "model_name"]].to_csv(out / f"{split}.csv", index=False)
        roles = pd.DataFrame(sorted(self.roles.items()), columns=["system", "role"])
        roles.to_csv(out / "roles.csv", index=False)
        return out


def twin_families(corpus_summary: str | Path) -> dict[str, int]:
    """System -> family id for the near-twin families of a demo corpus summary (``twin_of`` links;
    a system without twins gets no entry)."""
    table = pd.read_csv(corpus_summary, keep_default_na=False, dtype=str)
    if "system" not in table or "twin_of" not in table:
        raise ProtocolError(f"{corpus_summary}: needs the columns system and twin_of")
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            a = parent[a]
        return a

    for system, twins in zip(table["system"], table["twin_of"], strict=True):
        for twin in twins.split():
            parent[find(system)] = find(twin)
    roots = sorted({find(s) for s in parent})
    return {s: roots.index(find(s)) for s in sorted(parent)}


def _pool(protocols: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Every row of the three splits (column ``split``), and each system's source role."""
    frames = []
    for split in SPLITS:
        df = read_protocol(protocols / f"{split}.csv")[["path", "model_name"]]
        frames.append(df.assign(split=split))
    rows = pd.concat(frames, ignore_index=True)
    train = set(rows.loc[rows["split"] == "train", "model_name"])
    roles = {}
    for system, part in rows.groupby("model_name", sort=True):
        if system in train:
            roles[system] = "known"
        else:
            roles[system] = "dev-unseen" if (part["split"] == "dev").any() else "eval-unseen"
    return rows, roles


def _family_ok(unseen: set[str], families: Mapping[str, int], systems: Sequence[str]) -> bool:
    """Every family keeps a known member."""
    members: dict[int, list[str]] = {}
    for s in systems:
        if s in families:
            members.setdefault(families[s], []).append(s)
    return all(any(m not in unseen for m in group) for group in members.values())


def _draw_unseen(
    systems: list[str],
    n_unseen: int,
    times_unseen: dict[str, int],
    families: Mapping[str, int],
    rng: np.random.Generator,
) -> set[str]:
    """The unseen systems of one rotation: least often unseen first, every family spread."""
    ties = rng.permutation(len(systems))
    order = sorted(range(len(systems)), key=lambda i: (times_unseen[systems[i]], ties[i]))
    unseen: set[str] = set()
    # first one unseen member per family of two or more (its least-unseen member)
    groups: dict[int, list[str]] = {}
    for i in order:
        if systems[i] in families:
            groups.setdefault(families[systems[i]], []).append(systems[i])
    for fam in sorted(groups, key=lambda f: rng.random()):
        if len(groups[fam]) >= 2 and len(unseen) < n_unseen:
            unseen.add(groups[fam][0])
    for i in order:
        if len(unseen) >= n_unseen:
            break
        s = systems[i]
        if s not in unseen and _family_ok(unseen | {s}, families, systems):
            unseen.add(s)
    if len(unseen) < n_unseen:
        raise ProtocolError(
            f"cannot draw {n_unseen} unseen systems while every near-twin family keeps a known member"
        )
    return unseen


def _deal(n: int, shares: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """A split index per clip (0 train, 1 dev, 2 eval), ``shares`` of ``n``; with 3 clips or more,
    at least one in each split (a known system is in train, dev and eval)."""
    counts = np.floor(np.asarray(shares) / np.sum(shares) * n).astype(int)
    if n >= 3:
        counts[1:] = np.maximum(counts[1:], 1)
    counts[0] = n - counts[1:].sum()
    return rng.permutation(np.repeat(np.arange(3), counts))


def rotate(
    protocols: str | Path,
    k: int,
    seed: int = 0,
    n_dev_unseen: int | None = None,
    n_eval_unseen: int | None = None,
    families: Mapping[str, int] | None = None,
    max_unseen_clips: int | None = None,
) -> list[Rotation]:
    """``k`` seeded partitions of the systems of ``protocols`` (see the module docstring)."""
    if k < 1:
        raise ProtocolError(f"k must be at least 1, got {k}")
    rows, source = _pool(Path(protocols))
    systems = sorted(source)
    families = {s: f for s, f in (families or {}).items() if s in source}
    n_dev = n_dev_unseen if n_dev_unseen is not None else sum(r == "dev-unseen" for r in source.values())
    n_eval = n_eval_unseen if n_eval_unseen is not None else sum(r == "eval-unseen" for r in source.values())
    if n_dev < 2 or n_eval < 1 or len(systems) - n_dev - n_eval < 2:
        raise ProtocolError(
            f"{len(systems)} systems cannot give >= 2 known, >= 2 dev-unseen and >= 1 eval-unseen "
            f"(asked {n_dev} dev-unseen, {n_eval} eval-unseen)"
        )
    known_src = rows[rows["model_name"].map(source) == "known"]
    shares = [float((known_src["split"] == s).sum()) for s in SPLITS]
    if max_unseen_clips is None:
        unseen_counts = rows[rows["model_name"].map(source) != "known"].groupby("model_name").size()
        max_unseen_clips = int(unseen_counts.median()) if len(unseen_counts) else None
    rng = np.random.default_rng(seed)
    times_unseen = dict.fromkeys(systems, 0)
    rotations = []
    for r in range(k):
        unseen = _draw_unseen(systems, n_dev + n_eval, times_unseen, families, rng)
        for s in unseen:
            times_unseen[s] += 1
        # dev / eval: family members alternate between the two, the rest at random
        # sorted first: the draw must not depend on set order (string hashes differ per process)
        ordered = sorted(sorted(unseen), key=lambda s: (families.get(s, -1 - systems.index(s)), rng.random()))
        ordered = [s for s in ordered if s in families] + list(
            rng.permutation([s for s in ordered if s not in families])
        )
        dev_set: set[str] = set()
        for i, s in enumerate(ordered):
            if i % 2 == 0 and len(dev_set) < n_dev:
                dev_set.add(s)
        rest = [s for s in ordered if s not in dev_set]
        while len(dev_set) < n_dev:
            dev_set.add(rest.pop(int(rng.integers(len(rest)))))
        roles = {
            s: ("dev-unseen" if s in dev_set else "eval-unseen" if s in unseen else "known") for s in systems
        }
        out = {split: [] for split in SPLITS}
        for s in systems:
            part = rows[rows["model_name"] == s].sort_values("path", kind="stable")
            if roles[s] == "known":
                if source[s] == "known":
                    for split in SPLITS:
                        out[split].append(part[part["split"] == split])
                else:
                    where = _deal(len(part), shares, rng)
                    for i, split in enumerate(SPLITS):
                        out[split].append(part[where == i])
            else:
                if max_unseen_clips and len(part) > max_unseen_clips:
                    part = part.iloc[np.sort(rng.choice(len(part), max_unseen_clips, replace=False))]
                out["dev" if roles[s] == "dev-unseen" else "eval"].append(part)
        splits = {
            split: pd.concat(frames, ignore_index=True)[["path", "model_name"]]
            for split, frames in out.items()
        }
        rotations.append(Rotation(r, roles, splits))
    never = [s for s, n in times_unseen.items() if n == 0]
    if never:
        raise ProtocolError(
            f"{len(never)} system(s) never unseen in {k} rotations (e.g. {never[0]}): ask for more rotations"
        )
    return rotations


def rotation_summary(rotations: Sequence[Rotation], families: Mapping[str, int] | None = None) -> str:
    """A markdown table: one row per system, its role in each rotation."""
    systems = sorted(rotations[0].roles)
    short = {"known": "known", "dev-unseen": "dev", "eval-unseen": "eval"}
    head = ["system", "twin family", *[f"rot{r.index}" for r in rotations]]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for s in systems:
        fam = str((families or {}).get(s, "")) if families and s in families else ""
        lines.append("| " + " | ".join([s, fam, *[short[r.roles[s]] for r in rotations]]) + " |")
    counts = []
    for r in rotations:
        n = {split: len(df) for split, df in r.splits.items()}
        counts.append(f"rot{r.index}: train {n['train']}, dev {n['dev']}, eval {n['eval']} clips")
    return "\n".join(lines) + "\n\n" + "; ".join(counts) + "\n"
