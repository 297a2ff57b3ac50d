"""Enrolling a new known system from a few of its clips, without retraining.

    python scripts/enroll.py --config X --add NAME clip.wav more_clips/ ...   # into every system with embeddings
    python scripts/enroll.py --config X --remove NAME
    python scripts/enroll.py --config X --list
    python scripts/enroll.py --config X --refresh       # re-embed the recorded clips (after a retraining)
    python scripts/enroll.py --config X --measure [--systems aasist] [--sizes 1,3,5,10] [--repeats 5]

The clips go through each trained system that exports embeddings (AASIST's penultimate layer, the
GE2E encoder), exactly as ``trace.py`` computes them (the system's runner,
:meth:`sourcetracing.systems.handle.SystemHandle.runner`). Their
embeddings are kept in ``<exp>/<system>/enrolled/<name>-<digest>.npz`` (with the checkpoint they
came from), the clips used and the time in ``<exp>/enrolled.json``, and ``label_map.csv`` gets a
row with status ``enrolled`` (which :meth:`LabelMap.read` ignores: the trained classes do not change).

The decision rule once at least one system is enrolled (``trace.py``)
--------------------------------------------------------------------
Let ``e`` be the clip's embedding.

1. **Centroids.** Each trained known system has the centroid of its train clips' embeddings (the
   unit-length mean of unit-length embeddings, from the exported outputs); each enrolled system
   the centroid of its enrolment clips, computed the same way.
2. **Closed set.** The clip is attributed to the system whose centroid has the highest cosine with
   ``e``, over trained and enrolled systems alike (for AASIST this replaces the arg-max of the
   logits, which know no enrolled class). The probabilities are the softmax of these cosines
   divided by a temperature fitted on the dev clips of the known systems.
3. **OOD score.** The system's embedding scorer with its fitted state extended by the enrolment
   embeddings: ``centroid`` (1 - the highest cosine over the trained *and* enrolled centroids) or
   ``knn`` (1 - the k-th highest cosine to the bank of train clips *plus* every enrolment clip).
   The scorer is the OOD step's default when that is one of the two, else the one of the two with
   the lower dev EER; ``--scorer`` / ``trace.scorer`` may name either.
4. **Decision.** ``unknown`` when the score is at or above that scorer's threshold from the OOD step
   (the dev EER threshold, unchanged), else the closed-set system, which may be an enrolled one.
   P(unseen) is the scorer's dev-fitted calibration, unchanged.

Nothing is refitted: removing every enrolled system restores the previous decisions exactly. With
``knn`` an enrolled system's clips find at most ``n`` neighbours among its ``n`` enrolment clips, so
fewer than ``k`` clips can only help through the neighbours they share with the train bank.

**Measurement** (``--measure``; exported outputs only, no model runs): each dev-unseen system in
turn is enrolled from ``n`` of its dev clips (a seeded permutation per repeat; the first ``n``),
then ``recall`` is the share of its other dev clips attributed to it and not flagged unseen, and
``false_attribution`` the share of the other systems' eval clips (known and unseen) attributed to
it and not flagged. Written to ``<exp>/<system>/enrolment/enrolment.csv`` and
``enrolment_curve.png`` (one line per system and the mean).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.config import Config
from sourcetracing.data.clips import find_audio
from sourcetracing.errors import DataError, MissingInputError
from sourcetracing.layout import ExperimentLayout
from sourcetracing.ood.scorers import Scorer, centroid_similarities, class_centroids
from sourcetracing.ood.step import OODStep
from sourcetracing.provenance import atomic_dir, atomic_write_text, require_same, step_lock
from sourcetracing.systems.handle import SystemHandle, kind_of_outputs, open_system
from sourcetracing.systems.outputs import OutputsMeta, SystemOutputs

log = logging.getLogger(__name__)

EMBEDDING_SCORERS = ("centroid", "knn")
SIZES = (1, 3, 5, 10)
ENROLLED_STATUS = "enrolled"
MEAN = "mean over systems"
NO_MODEL = "it has no checkpoint to embed clips with"


# ---------------------------------------------------------------------------------------------
# The record: enrolled.json, the embedding files, the label map rows


def read_record(layout: ExperimentLayout) -> dict:
    """``{"systems": {name: {"clips", "enrolled_at", "into": {system: {"file", "checkpoint", "n_clips"}}}}}``."""
    if not layout.enrolled.is_file():
        return {"systems": {}}
    return json.loads(layout.enrolled.read_text())


def _write_record(layout: ExperimentLayout, record: dict) -> None:
    atomic_write_text(layout.enrolled, json.dumps(record, indent=2) + "\n")
    _write_label_map_rows(layout, list(record["systems"]))


def _write_label_map_rows(layout: ExperimentLayout, names: list[str]) -> None:
    """``label_map.csv`` with one ``enrolled`` row per enrolled system (label: its class id after the known)."""
    if not layout.label_map.is_file():
        return
    table = pd.read_csv(layout.label_map, keep_default_na=False, dtype=str)
    table = table[table["status"] != ENROLLED_STATUS]
    n_known = int((table["status"] == "known").sum())
    next_id = max([int(v) for v in table["system_id"]] + [-1]) + 1
    rows = [
        {"system": name, "system_id": str(next_id + j), "label": str(n_known + j), "status": ENROLLED_STATUS}
        for j, name in enumerate(names)
    ]
    table = pd.concat([table, pd.DataFrame(rows, columns=table.columns)], ignore_index=True)
    atomic_write_text(layout.label_map, table.to_csv(index=False))


def _file_stem(name: str) -> str:
    """A file name for a system name (slashes and the like replaced, a digest against collisions)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "system"
    return f"{safe[:80]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"


def embedding_scorers(step: OODStep) -> list[str]:
    """The embedding scorers (centroid, knn) the OOD step fitted and saved."""
    saved = step.saved
    return [n for n in EMBEDDING_SCORERS if n in saved]


def choose_scorer(step: OODStep, available: Sequence[str], requested: str | None = None) -> str:
    """The OOD scorer once systems are enrolled: ``requested``, else the OOD step's default when it is an
    embedding scorer, else the available one with the lowest dev EER."""
    if not available:
        raise MissingInputError(
            "enrolled systems need an embedding scorer (centroid or knn) fitted by the OOD step: rerun "
            "python scripts/ood_detector.py --config <your config> with one of them in ood.scorers"
        )
    if requested:
        if requested not in available:
            raise DataError(
                f"with enrolled systems the OOD score must come from {list(available)} (the embedding scorers "
                f"the OOD step fitted), not '{requested}'; remove them with scripts/enroll.py --remove to use it"
            )
        return requested
    return step.best_of(list(available))


def eligible(layout: ExperimentLayout, system: str) -> str | None:
    """Why ``system`` cannot take enrolled systems (None when it can)."""
    sys_layout = layout.system(system)
    meta = OutputsMeta.of(sys_layout)
    if meta is None or "embeddings" not in meta.has:
        return "it has no exported outputs with embeddings"
    kind = kind_of_outputs(meta)
    if not kind.takes_enrolled or kind.why_not_runnable(None, sys_layout, meta) is not None:
        return NO_MODEL
    step = OODStep.find(sys_layout)
    if step is None:
        return "it has no OOD step yet (scripts/ood_detector.py)"
    if not embedding_scorers(step):
        return "its OOD step fitted neither centroid nor knn"
    return None


def eligible_systems(layout: ExperimentLayout) -> tuple[list[str], dict[str, str]]:
    """(systems that can take enrolled systems, {other system: why not})."""
    ok, skipped = [], {}
    for sys_layout in layout.systems():
        why = eligible(layout, sys_layout.name)
        if why is None:
            ok.append(sys_layout.name)
        else:
            skipped[sys_layout.name] = why
    return ok, skipped


# ---------------------------------------------------------------------------------------------
# The rule


def centroid_temperature(outputs: SystemOutputs, centroids: np.ndarray) -> float:
    """Temperature of the cosine-to-centroid class scores, fitted on dev's known clips (1.0 without any)."""
    import warnings

    from sourcetracing.ood.calibration import TemperatureScaling

    if "dev" not in outputs.splits:
        return 1.0
    dev = outputs.splits["dev"]
    known = dev.rows["known"].to_numpy(bool)
    if known.sum() < 2:
        return 1.0
    sims = centroid_similarities(dev.embeddings[known], centroids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(TemperatureScaling().fit(sims, dev.rows["label"].to_numpy(int)[known]).temperature)


@dataclass
class Enrolment:
    """The systems enrolled into one trained system: names (class order) and enrolment embeddings."""

    system: str
    names: list[str]
    groups: list[np.ndarray]
    step: OODStep
    available: list[str]

    def scorer_name(self, requested: str | None = None) -> str:
        return choose_scorer(self.step, self.available, requested)

    def extend(
        self, centroids: np.ndarray, scorer: Scorer, outputs: SystemOutputs
    ) -> tuple[np.ndarray, Scorer, float]:
        """(trained + enrolled centroids, the scorer extended, the temperature of the cosine class scores)."""
        temperature = centroid_temperature(outputs, centroids)
        extra = [class_centroids(g, np.zeros(len(g), dtype=int), 1) for g in self.groups]
        return np.concatenate([centroids, *extra]), scorer.with_enrolled(self.groups), temperature


def enrolled_into(handle: SystemHandle, checkpoint: str) -> Enrolment | None:
    """The systems enrolled into an opened system whose model is ``checkpoint`` (its id); None when
    there are none or it cannot take them."""
    layout, system = ExperimentLayout.of(handle.cfg), handle.name
    record = read_record(layout)
    if not record["systems"]:
        return None
    why = eligible(layout, system)
    if why is not None:
        log.warning("%s: the enrolled systems are left out because %s", system, why)
        return None
    refresh = "python scripts/enroll.py --config <your config> --refresh"
    names, groups = [], []
    for name, entry in record["systems"].items():
        part = entry["into"].get(system)
        if part is None:
            raise MissingInputError(f"'{name}' was enrolled before '{system}' could take it: run {refresh}")
        require_same(part["checkpoint"], checkpoint, f"{layout.system(system).best}", refresh)
        path = layout.root / part["file"]
        if not path.is_file():
            raise MissingInputError(f"{path} not found (the embeddings of enrolled '{name}'): run {refresh}")
        with np.load(path, allow_pickle=False) as data:
            groups.append(np.asarray(data["embeddings"], dtype=np.float32))
        names.append(name)
    return Enrolment(system, names, groups, handle.ood, embedding_scorers(handle.ood))


# ---------------------------------------------------------------------------------------------
# Enrol, remove, refresh


def _known_systems(cfg: Config, layout: ExperimentLayout, systems: Sequence[str]) -> list[str]:
    from sourcetracing.data.protocols import LabelMap

    if layout.label_map.is_file():
        return LabelMap.read(cfg.exp_dir).known
    names: list[str] = []
    for system in systems:
        names += OutputsMeta.read(layout.system(system).outputs).class_names
    return sorted(set(names))


def _targets(layout: ExperimentLayout, into: Sequence[str] | None) -> list[str]:
    ok, skipped = eligible_systems(layout)
    if into:
        for system in into:
            why = eligible(layout, system)
            if why is not None:
                raise DataError(f"cannot enrol into '{system}': {why}")
        return list(into)
    if not ok:
        reasons = "; ".join(f"{s}: {w}" for s, w in skipped.items()) or "no system has exported outputs"
        raise MissingInputError(
            f"no trained system with embeddings and an OOD step to enrol into ({reasons})"
        )
    for system, why in skipped.items():
        print(f"note: not enrolled into {system}: {why}")
    return ok


def _embed(cfg: Config, system: str, files: list[Path], device: str | None) -> tuple[np.ndarray, str]:
    """The clips' embeddings as ``trace.py`` computes them (the system's runner), and the id of the
    checkpoint that made them."""
    runner = open_system(cfg, system).runner(device)
    _, emb, errors = runner.embed(files)
    if errors:
        listing = "; ".join(f"{f}: {e}" for f, e in errors[:3])
        raise DataError(f"{len(errors)} of {len(files)} enrolment clip(s) could not be read ({listing})")
    return emb, runner.model_id


def enrol(
    cfg: Config,
    name: str,
    inputs: Sequence[str | Path],
    into: Sequence[str] | None = None,
    replace: bool = False,
    device: str | None = None,
) -> dict:
    """Enrol ``name`` from the audio files and folders ``inputs``; returns its record entry."""
    layout = ExperimentLayout.of(cfg)
    name = name.strip()
    if not name:
        raise DataError("an enrolled system needs a non-empty name (--add NAME)")
    with step_lock(layout.locks / "enrol.lock", "the enrolment record"):
        record = read_record(layout)
        targets = _targets(layout, into)
        if name in _known_systems(cfg, layout, targets):
            raise DataError(f"'{name}' is a known (trained) system already; enrolment adds new ones")
        if name in record["systems"] and not replace:
            raise DataError(f"'{name}' is enrolled already: remove it first (--remove) or pass --replace")
        files = find_audio(inputs)
        if not files:
            raise DataError("no audio files found in the given clips or folders")
        entry = {
            "clips": [str(Path(f).resolve()) for f in files],
            "enrolled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "into": {},
        }
        embedded = {system: _embed(cfg, system, files, device) for system in targets}  # all before any write
        old = record["systems"].get(name, {}).get("into", {})
        for part in old.values():
            (layout.root / part["file"]).unlink(missing_ok=True)
        for system, (emb, checkpoint) in embedded.items():
            path = layout.system(system).enrolled / f"{_file_stem(name)}.npz"
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(
                path, embeddings=emb, clips=np.asarray(entry["clips"]), checkpoint=np.asarray(checkpoint)
            )
            entry["into"][system] = {
                "file": path.relative_to(layout.root).as_posix(),
                "checkpoint": checkpoint,
                "n_clips": len(emb),
            }
        record["systems"][name] = entry
        _write_record(layout, record)
    return entry


def remove(cfg: Config, name: str) -> None:
    """Remove an enrolled system: its embedding files, its record entry and its label map row."""
    layout = ExperimentLayout.of(cfg)
    with step_lock(layout.locks / "enrol.lock", "the enrolment record"):
        record = read_record(layout)
        if name not in record["systems"]:
            raise DataError(f"'{name}' is not enrolled; enrolled: {list(record['systems']) or 'none'}")
        for part in record["systems"].pop(name)["into"].values():
            (layout.root / part["file"]).unlink(missing_ok=True)
        _write_record(layout, record)


def refresh(cfg: Config, device: str | None = None) -> list[str]:
    """Re-embed every enrolled system's recorded clips with the current checkpoints (after a retraining)."""
    record = read_record(ExperimentLayout.of(cfg))
    for name, entry in record["systems"].items():
        enrol(cfg, name, entry["clips"], replace=True, device=device)
    return list(record["systems"])


# ---------------------------------------------------------------------------------------------
# Measurement (exported outputs only)


class _Extended:
    """The rule's decisions for fixed clips and one enrolled group at a time, the trained part computed once.

    Gives the same numbers as the extended centroids and ``scorer.with_enrolled([group])`` (tested):
    the enrolled system only adds one centroid, or clips to the k-NN bank.
    """

    def __init__(self, emb: np.ndarray, centroids: np.ndarray, scorer: Scorer, scorer_name: str):
        self.emb = emb
        sims = centroid_similarities(emb, centroids)
        self.best_known = sims.max(axis=1)
        self.scorer_name = scorer_name
        if scorer_name == "knn":
            self.top = scorer.top_similarities(emb)
            self.k = int(scorer.k)
        elif scorer_name == "centroid":
            self.nearest = centroid_similarities(emb, np.asarray(scorer.centroids)).max(axis=1)
        else:
            raise ValueError(f"no enrolment rule for the scorer '{scorer_name}'")

    def decide(self, group: np.ndarray, scorer: Scorer) -> tuple[np.ndarray, np.ndarray]:
        """(attributed to the enrolled system, OOD score) per clip."""
        centroid = class_centroids(group, np.zeros(len(group), dtype=int), 1)
        to_new = centroid_similarities(self.emb, centroid)[:, 0]
        attributed = to_new > self.best_known  # arg-max picks the first of ties: a trained class
        if self.scorer_name == "centroid":
            return attributed, 1.0 - np.maximum(self.nearest, to_new)
        # k-NN: the k highest of (the train bank's k highest, the similarities to the added clips)
        added = copy.copy(scorer.with_enrolled([group]))
        added.bank = added.bank[len(scorer.bank) :]
        added.k = len(group)
        merged = -np.sort(-np.concatenate([self.top, added.top_similarities(self.emb)], axis=1), axis=1)
        return attributed, 1.0 - merged[:, self.k - 1]


def measure_enrolment(
    cfg: Config,
    system: str,
    sizes: Sequence[int] = SIZES,
    repeats: int = 5,
    seed: int = 0,
    plot: bool = True,
) -> pd.DataFrame:
    """Enrol each dev-unseen system from ``n`` of its dev clips; recall on its other dev clips and the
    false-attribution rate on the other systems' eval clips. Writes ``<system>/enrolment/``."""
    from sourcetracing.provenance import write_manifest

    if repeats < 1 or not sizes or min(sizes) < 1:
        raise DataError(f"--sizes must be integers >= 1 and --repeats >= 1, got {list(sizes)} and {repeats}")
    handle = open_system(cfg, system)  # the outputs, checked, and the OOD step fitted on them
    sys_layout, outputs, step = handle.layout, handle.outputs, handle.ood
    if "embeddings" not in outputs.has:
        raise DataError(f"{system}: its outputs have no embeddings to enrol with")
    # the scorer trace.py would use once a system is enrolled (trace.scorer, else the rule's choice)
    scorer_name = choose_scorer(step, embedding_scorers(step), cfg.trace.scorer)
    scorer = step.load_scorer(scorer_name)
    threshold = step.threshold(scorer_name)
    train, dev, ev = outputs.split("train"), outputs.split("dev"), outputs.split("eval")
    centroids = class_centroids(train.embeddings, train.rows["label"].to_numpy(), len(outputs.class_names))
    dev_rule = _Extended(dev.embeddings, centroids, scorer, scorer_name)
    eval_rule = _Extended(ev.embeddings, centroids, scorer, scorer_name)
    dev_systems = dev.rows["model_name"].to_numpy()
    eval_systems = ev.rows["model_name"].to_numpy()
    eval_known = ev.rows["known"].to_numpy(bool)
    unseen = sorted(set(dev_systems[~dev.rows["known"].to_numpy(bool)]))
    if not unseen:
        raise DataError(f"{system}: no dev-unseen system to enrol")
    rows = []
    for name in unseen:
        clips = np.flatnonzero(dev_systems == name)
        others = eval_systems != name
        for n in sorted(set(int(v) for v in sizes)):
            draws = []
            for r in range(repeats if n < len(clips) else 0):
                rng = np.random.default_rng([seed, zlib.crc32(name.encode()), r])
                order = rng.permutation(clips)  # nested draws: the first n of one permutation per repeat
                chosen, rest = order[:n], order[n:]
                group = dev.embeddings[chosen]
                attributed, ood = dev_rule.decide(group, scorer)
                named = attributed & (ood < threshold)
                e_attr, e_ood = eval_rule.decide(group, scorer)
                wrong = e_attr & (e_ood < threshold)
                draws.append(
                    {
                        "recall": named[rest].mean(),
                        "nearest": attributed[rest].mean(),
                        "accepted": (ood[rest] < threshold).mean(),
                        "false_attribution": wrong[others].mean() if others.any() else np.nan,
                        "false_attribution_known": wrong[others & eval_known].mean()
                        if (others & eval_known).any()
                        else np.nan,
                        "false_attribution_unseen": wrong[others & ~eval_known].mean()
                        if (others & ~eval_known).any()
                        else np.nan,
                    }
                )
            row = {
                "system": name,
                "n": n,
                "repeats": len(draws),
                "dev_clips": len(clips),
                "eval_others": int(others.sum()),
            }
            frame = pd.DataFrame(draws)
            for col in (
                "recall",
                "nearest",
                "accepted",
                "false_attribution",
                "false_attribution_known",
                "false_attribution_unseen",
            ):
                row[col] = float(frame[col].mean()) if len(frame) else np.nan
            row["recall_sd"] = float(frame["recall"].std(ddof=0)) if len(frame) else np.nan
            rows.append(row)
    table = pd.DataFrame(rows)
    means = (
        table.groupby("n", as_index=False)[
            [
                "recall",
                "nearest",
                "accepted",
                "false_attribution",
                "false_attribution_known",
                "false_attribution_unseen",
            ]
        ]
        .mean()
        .assign(system=MEAN)
    )
    table = pd.concat([table, means], ignore_index=True)[
        ["system", "n", "repeats", "dev_clips", "eval_others", "recall", "recall_sd", "nearest", "accepted",
         "false_attribution", "false_attribution_known", "false_attribution_unseen"]
    ]  # fmt: skip
    table.insert(2, "scorer", scorer_name)
    with atomic_dir(sys_layout.enrolment) as tmp:
        table.to_csv(tmp / "enrolment.csv", index=False, float_format="%.6g")
        if plot:
            plot_enrolment(
                table, tmp / "enrolment_curve.png", f"{system}: enrolment from n dev clips ({scorer_name})"
            )
        write_manifest(
            tmp, "enrolment", {"outputs": outputs.outputs_id, "ood_step": step.id},
            system=system, sizes=list(sizes), repeats=repeats, seed=seed, threshold=threshold,
        )  # fmt: skip
    return table


def plot_enrolment(table: pd.DataFrame, path: Path, title: str) -> None:
    """Recall and false-attribution rate vs n: one thin line per system, the mean thick."""
    from sourcetracing.plots import plt, save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, col, label in (
        (axes[0], "recall", "recall on its other dev clips"),
        (axes[1], "false_attribution", "other systems' eval clips attributed to it"),
    ):
        for name, part in table.groupby("system", sort=False):
            part = part.dropna(subset=[col])
            if part.empty:
                continue
            if name == MEAN:
                ax.plot(part["n"], part[col], color="black", lw=2.5, marker="o", label=MEAN, zorder=5)
            else:
                ax.plot(part["n"], part[col], lw=1, marker=".", alpha=0.7, label=str(name))
        ax.set(xlabel="enrolment clips n", ylabel=label, ylim=(-0.02, 1.02))
        ax.set_xticks(sorted(set(table["n"])))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 0.78, 1))
    save_figure(fig, path)


def measurable_systems(layout: ExperimentLayout) -> list[str]:
    """Systems with embeddings and a centroid/knn OOD step (no checkpoint needed: outputs only)."""
    out = []
    for sys_layout in layout.systems():
        why = eligible(layout, sys_layout.name)
        if why is None or why == NO_MODEL:
            out.append(sys_layout.name)
    if not out:
        raise MissingInputError("no system with embeddings and a centroid or knn OOD step to measure")
    return out


__all__ = [
    "EMBEDDING_SCORERS",
    "Enrolment",
    "choose_scorer",
    "enrol",
    "eligible",
    "eligible_systems",
    "enrolled_into",
    "measurable_systems",
    "measure_enrolment",
    "read_record",
    "refresh",
    "remove",
]
