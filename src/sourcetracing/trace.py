"""Trace new clips with a trained experiment.

For every clip: the predicted system, the top-k systems with probabilities, the OOD score of the
chosen scorer, its calibrated probability of coming from an unseen system, and the known/unknown
decision at the threshold fitted on dev by the OOD step.

    python scripts/trace.py --config configs/demo.yaml clip.wav folder/ [--system aasist] [--top-k 3]
    python scripts/trace.py --exp exp/demo clip.wav                       # the experiment's saved config
    python scripts/trace.py --config configs/demo.yaml --sample-eval 20 [--seed 0]   # eval clips of the protocols

Before anything runs, the parts are checked to belong together: the OOD step must have been made
from the system's current outputs, the outputs from the current checkpoint, and the checkpoint's
known systems must be the experiment's; a mismatch is one line naming the step to rerun.

Without ``--system`` the system and scorer are the ones chosen on dev alone (the summary's choice,
:mod:`sourcetracing.trace_select`; the run prints which and why): the fusion is traced through its
members with its saved weights and scaling, and a chosen system that cannot run on audio gives way
to the best one on dev that can. ``--bundle DIR`` traces with a portable bundle alone
(:mod:`sourcetracing.bundle`; ``scripts/export_bundle.py`` writes it), from any working directory.

Any system with a model that runs on audio can trace (``--system``; ``trace.system`` when nothing
is judged yet): the
classifier and GE2E through their best checkpoint, the MFCC reference and the statistics system
(``mfcc``, ``stats``) through their saved standardiser, projection and regression on the
statistics of the whole clip. Features are computed as the feature store computes them: the
experiment's front end on the deterministic crop (``crop_or_pad`` without a random generator),
cast through float16. Folders are
searched recursively for audio files; a file that cannot be read gives a row with the error
instead of stopping the run. Each run writes a new ``<exp_dir>/trace/trace_<time>.csv`` (or
``--out``, which must not exist yet: no earlier results file is ever replaced); the exit code is 1
when no clip could be traced.

Systems enrolled with ``scripts/enroll.py`` (a few clips, no retraining) join the known ones:
the closed-set decision becomes the nearest class centroid (cosine) over the trained and enrolled
systems, and the OOD score the centroid or k-NN scorer with the enrolment embeddings added, at
its unchanged dev threshold (the rule in :mod:`sourcetracing.enrol`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sourcetracing.config import Config
from sourcetracing.data.clips import (
    AUDIO_EXTENSIONS,
    ClipInput,
    Waveform,
    as_clips,
    clip_name,
    find_audio,
)
from sourcetracing.data.protocols import label_level
from sourcetracing.enrol import enrolled_into
from sourcetracing.errors import DataError, MissingInputError, WouldOverwriteError
from sourcetracing.ood.scorers import Scorer, build_scorer, centroid_similarities, class_centroids
from sourcetracing.progress import progress
from sourcetracing.systems.handle import Runner, SystemHandle, open_system, runner_from_bundle
from sourcetracing.trace_select import choose_system

RESULT_COLUMNS = [
    "path",
    "status",
    "predicted",
    "probability",
    "top_k",
    "scorer",
    "ood_score",
    "threshold",
    "p_unseen",
    "decision",
    "error",
]


class TraceError(MissingInputError):
    """The experiment is not ready for tracing (missing or mismatched step outputs)."""


def sample_eval_clips(cfg: Config, n: int, seed: int = 0) -> list[Path]:
    """``n`` clips of the eval protocol drawn with ``seed`` (every clip when it has fewer), in path order."""
    from sourcetracing.data.protocols import check_inside_root, read_protocol

    name = cfg.data.splits.get("eval")
    if not name:
        raise DataError(f"data.splits names no eval split ({sorted(cfg.data.splits)}) to draw clips from")
    rows = read_protocol(Path(cfg.data.protocols) / name)
    check_inside_root(rows, cfg.data.root, "eval split")
    paths = sorted(set(rows["path"]))
    if not paths:
        raise DataError(f"{Path(cfg.data.protocols) / name}: the eval split has no clips to draw from")
    chosen = np.random.default_rng(seed).choice(len(paths), size=min(n, len(paths)), replace=False)
    return [Path(cfg.data.root) / paths[i] for i in sorted(chosen)]


@dataclass
class Tracer:
    """A trained system with its OOD scorer, threshold and calibrations, ready to trace clips.

    The model, its crop and front end are the system's :class:`~sourcetracing.systems.handle.Runner`;
    ``handle`` is the opened system (None for a tracer read from a bundle)."""

    system: str
    runner: Runner
    classes: list[str]
    scorer_name: str
    scorer: Scorer
    threshold: float
    calibration: object
    temperature: float
    centroids: np.ndarray | None  # class centroids: the closed-set decision is the nearest (cosine)
    prior: float = 0.5
    # systems enrolled without retraining (sourcetracing.enrol), class ids after the known ones
    enrolled: tuple[str, ...] = ()
    top_k: int = 3  # systems listed per clip unless trace() is given another count
    level: str = "system"  # what a class is (data.label): a system or an architecture
    handle: SystemHandle | None = None

    @property
    def cfg(self) -> Config | None:
        return self.handle.cfg if self.handle is not None else None

    @property
    def model(self):
        return self.runner.model

    @property
    def task(self) -> str:
        """The system's kind (the registered name its outputs record)."""
        return self.runner.task

    @property
    def frontend(self):
        return self.runner.frontend

    @property
    def sample_rate(self) -> int:
        return self.runner.sample_rate

    @property
    def num_samples(self) -> int:
        return self.runner.num_samples

    @property
    def min_len_s(self) -> float:
        return self.runner.min_len_s

    @property
    def windows(self) -> int:
        """Test-time windows per clip (``features.test_windows``), averaged as the exporters average them."""
        return self.runner.windows

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @classmethod
    def load(
        cls,
        cfg: Config,
        system: str | None = None,
        scorer: str | None = None,
        device: str | None = None,
        enrolled: bool = True,
    ) -> Tracer:
        """The system's parts, checked to belong together (:func:`~sourcetracing.systems.handle.open_system`);
        with ``enrolled`` the systems enrolled into it join the known ones (the rule of :mod:`sourcetracing.enrol`)."""
        return cls.of(open_system(cfg, system or cfg.trace.system), scorer, device, enrolled)

    @classmethod
    def of(
        cls, handle: SystemHandle, scorer: str | None = None, device: str | None = None, enrolled: bool = True
    ) -> Tracer:
        """The tracer of an opened system: its runner, the chosen scorer's state, threshold and calibration."""
        cfg = handle.cfg
        runner = handle.runner(device)
        ood = handle.ood
        requested = scorer or cfg.trace.scorer
        enrolment = (
            enrolled_into(handle, runner.model_id) if enrolled and handle.kind.takes_enrolled else None
        )
        chosen = enrolment.scorer_name(requested) if enrolment else requested or ood.default
        entry = ood.entry(chosen)
        fitted = ood.load_scorer(chosen)
        temperature = handle.temperature
        classes = list(runner.label_map.known)
        centroids = None
        if "logits" not in handle.meta.has or enrolment:  # decided by the nearest class centroid
            outputs = handle.outputs
            train = outputs.split("train")
            centroids = class_centroids(train.embeddings, train.rows["label"].to_numpy(), len(classes))
            if enrolment:  # nearest centroid over known + enrolled, the scorer's state extended
                centroids, fitted, temperature = enrolment.extend(centroids, fitted, outputs)
                classes += enrolment.names
        return cls(
            handle.name, runner, classes, chosen, fitted, entry.threshold, entry.calibration, temperature,
            centroids, prior=ood.prior, enrolled=tuple(enrolment.names if enrolment else ()),
            top_k=int(cfg.trace.top_k), level=label_level(cfg), handle=handle,
        )  # fmt: skip

    @classmethod
    def from_bundle(cls, folder: str | Path, device: str | None = None) -> Tracer:
        """The tracer a bundle holds (:mod:`sourcetracing.bundle`), verified first; no experiment
        folder, corpus or config is read."""
        from sourcetracing.bundle import read_bundle, unpack
        from sourcetracing.config import resolve_device

        return tracer_from_bundle(read_bundle(unpack(folder)), resolve_device(device or "auto"))

    def outputs(self, waves: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """``(logits or None, embeddings, class scores)`` of ``[B, samples]`` waves (a list of waves of
        any length for the statistics systems)."""
        logits, emb = self.runner.forward(waves)
        if self.centroids is None:  # the system's own decision: its logits
            return logits, emb, logits
        return logits, emb, centroid_similarities(emb, self.centroids)

    def read_waves(
        self, files: Sequence[ClipInput]
    ) -> tuple[list[ClipInput], np.ndarray, list[tuple[str, str]]]:
        """``(readable files, their waves, [(file, error), ...])`` as the runner reads them
        (:meth:`~sourcetracing.systems.handle.Runner.read_waves`)."""
        return self.runner.read_waves(files)

    def embed(
        self, files: Sequence[str | Path], batch_size: int = 16
    ) -> tuple[list[str | Path], np.ndarray, list[tuple[str, str]]]:
        """Embeddings of the readable files as the system computes them: ``(files, [n, E], errors)``."""
        return self.runner.embed(files, batch_size)

    def trace(
        self, files: ClipInput | Sequence[ClipInput], top_k: int | None = None, batch_size: int = 16
    ) -> pd.DataFrame:
        """One result row per clip (errors included), in input order: ``files`` is a path, a waveform
        (see :meth:`read_waves`) or a sequence of them; a waveform's row is named ``<waveform i>``."""
        files = as_clips(files)
        k = max(1, min(int(top_k or self.top_k), len(self.classes)))
        rows: list[dict] = []
        for start in progress(range(0, len(files), batch_size), desc="tracing", unit="batch", leave=False):
            batch, waves, errors = self.read_waves(files[start : start + batch_size])
            for f, err in errors:  # an unreadable file becomes an error row
                rows.append(
                    {
                        "path": f,
                        "status": "error",
                        "scorer": self.scorer_name,
                        "threshold": self.threshold,
                        "error": err,
                    }
                )
            if not batch:
                continue
            logits, emb, class_scores = self.outputs(waves)
            probs = torch.softmax(torch.from_numpy(class_scores / self.temperature), dim=1).numpy()
            ood = self.scorer.score(emb, logits)
            p_unseen = (
                self.calibration.probability(ood, self.prior)
                if self.calibration is not None
                else np.full(len(ood), np.nan)
            )
            rows += result_rows(
                batch, probs, self.classes, k, self.scorer_name, ood, self.threshold, p_unseen
            )
        return in_input_order(rows, files)


def result_rows(
    batch: Sequence[str | Path | Waveform],
    probs: np.ndarray,
    classes: Sequence[str],
    k: int,
    scorer_name: str,
    ood: np.ndarray,
    threshold: float,
    p_unseen: np.ndarray,
) -> list[dict]:
    """The ``ok`` result rows of traced clips: top-k classes, OOD score, P(unseen) and the decision."""
    rows = []
    for i, f in enumerate(batch):
        order = np.argsort(-probs[i])[:k]
        rows.append(
            {
                "path": clip_name(f),
                "status": "ok",
                "predicted": classes[order[0]],
                "probability": float(probs[i, order[0]]),
                "top_k": "; ".join(f"{classes[j]}:{probs[i, j]:.3f}" for j in order),
                "scorer": scorer_name,
                "ood_score": float(ood[i]),
                "threshold": threshold,
                "p_unseen": float(p_unseen[i]),
                "decision": "unknown" if ood[i] >= threshold else "known",
                "error": "",
            }
        )
    return rows


def in_input_order(rows: list[dict], files: Sequence[str | Path | Waveform]) -> pd.DataFrame:
    """The result table, one row per clip in the order the clips were given."""
    order = {clip_name(f): i for i, f in enumerate(files)}
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return df.sort_values("path", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def tracer_from_bundle(bundle, device: torch.device) -> Tracer:
    """A :class:`Tracer` rebuilt from a verified :class:`~sourcetracing.bundle.Bundle` (its kind
    rebuilds the model from the bundled settings and weights)."""
    from sourcetracing.ood.calibration import LogisticCalibration

    st = bundle.settings
    labels, decision = st["labels"], st["decision"]
    runner = runner_from_bundle(st, bundle.weights, device)
    scorer = build_scorer(st["scorer"]["type"], **st["scorer"]["options"])
    for key in scorer.state_keys:
        setattr(scorer, key, bundle.state[f"scorer.{key}"])
    calibration = (
        LogisticCalibration.from_dict(decision["calibration"]) if decision.get("calibration") else None
    )
    return Tracer(
        st["system"], runner, list(labels["classes"]), st["scorer"]["name"], scorer,
        float(decision["threshold"]), calibration, float(decision["temperature"]),
        bundle.state.get("centroids"), prior=float(decision["prior"]),
        enrolled=tuple(labels.get("enrolled", ())), top_k=int(decision["top_k"]),
        level=str(labels.get("level", "system")),
    )  # fmt: skip


@dataclass
class FusionTracer:
    """The score fusion traced through its members: each member system runs on the clip, each member
    score is standardised with the fusion's dev scaling and combined with its saved weights and
    intercept; the closed-set decision is the member's the fusion takes it from (``closed_set_from``)."""

    system: str
    members: list[str]  # "system:scorer", in the fusion's order
    tracers: dict[str, Tracer]  # one per member system (without enrolled systems, as fitted)
    scorers: dict[str, object]  # "system:scorer" -> its fitted scorer
    weights: np.ndarray
    intercept: float
    mean: np.ndarray
    std: np.ndarray
    source: str
    scorer_name: str
    threshold: float
    calibration: object
    prior: float = 0.5
    top_k: int = 3
    level: str = "system"

    @property
    def classes(self) -> list[str]:
        return self.tracers[self.source].classes

    @classmethod
    def load(
        cls, cfg: Config, system: str = "fusion", scorer: str | None = None, device: str | None = None
    ) -> FusionTracer:
        """The fusion's saved weights and scaling and its members' tracers, checked to belong together."""
        return cls.of(open_system(cfg, system), scorer, device)

    @classmethod
    def of(cls, handle: SystemHandle, scorer: str | None = None, device: str | None = None) -> FusionTracer:
        """The tracer of an opened fusion (its members' OOD steps checked to be the ones it was fitted on)."""
        cfg = handle.cfg
        fused = handle.kind.fused(handle)
        tracers = {name: Tracer.load(cfg, name, device=device, enrolled=False) for name in fused.systems}
        scorers = {}
        for member in fused.members:
            name, member_scorer = member.split(":", 1)
            scorers[member] = tracers[name].handle.ood.load_scorer(member_scorer)
        chosen = scorer or handle.ood.default
        entry = handle.ood.entry(chosen)
        return cls(
            handle.name, fused.members, tracers, scorers, fused.weights, fused.intercept, fused.mean,
            fused.std, fused.closed_set_from, chosen, entry.threshold, entry.calibration,
            prior=handle.ood.prior, top_k=int(cfg.trace.top_k), level=label_level(cfg),
        )  # fmt: skip

    def trace(
        self, files: ClipInput | Sequence[ClipInput], top_k: int | None = None, batch_size: int = 16
    ) -> pd.DataFrame:
        """One result row per clip (errors included), in input order, as :meth:`Tracer.trace`."""
        files = as_clips(files)
        source = self.tracers[self.source]
        k = max(1, min(int(top_k or self.top_k), len(self.classes)))
        rows: list[dict] = []
        for start in progress(range(0, len(files), batch_size), desc="tracing", unit="batch", leave=False):
            batch = files[start : start + batch_size]
            outputs, failed = {}, {}
            for name, tracer in self.tracers.items():
                ok, waves, errors = tracer.read_waves(batch)
                for f, err in errors:
                    failed.setdefault(f, err)
                if ok:
                    outputs[name] = ({clip_name(f): i for i, f in enumerate(ok)}, *tracer.outputs(waves))
            for f, err in failed.items():
                rows.append(
                    {
                        "path": f,
                        "status": "error",
                        "scorer": self.scorer_name,
                        "threshold": self.threshold,
                        "error": err,
                    }
                )
            good = [f for f in batch if clip_name(f) not in failed]
            if not good:
                continue

            columns = [
                self.scorers[m].score(
                    _take(outputs[m.split(":", 1)[0]], 1, good), _take(outputs[m.split(":", 1)[0]], 0, good)
                )
                for m in self.members
            ]
            ood = ((np.stack(columns, axis=1) - self.mean) / self.std) @ self.weights + self.intercept
            class_scores = _take(outputs[self.source], 2, good)
            probs = torch.softmax(torch.from_numpy(class_scores / source.temperature), dim=1).numpy()
            p_unseen = (
                self.calibration.probability(ood, self.prior)
                if self.calibration is not None
                else np.full(len(ood), np.nan)
            )
            rows += result_rows(good, probs, self.classes, k, self.scorer_name, ood, self.threshold, p_unseen)
        return in_input_order(rows, files)


def _take(output: tuple, part: int, clips: list) -> np.ndarray | None:
    """Rows of ``clips`` in one of a member's ``(index, logits, embeddings, class scores)`` arrays."""
    index, *arrays = output
    value = arrays[part]
    return None if value is None else value[[index[clip_name(f)] for f in clips]]


def open_tracer(
    cfg: Config, system: str, scorer: str | None = None, device: str | None = None
) -> Tracer | FusionTracer:
    """The tracer of ``system``: a fusion through its members, any other system through its model."""
    handle = open_system(cfg, system)
    if handle.kind.fuses_members:
        return FusionTracer.of(handle, scorer, device)
    return Tracer.of(handle, scorer, device)


def tracer_for(
    cfg: Config, system: str | None = None, scorer: str | None = None, device: str | None = None
) -> tuple[Tracer | FusionTracer, str]:
    """The tracer of ``system`` (``--system``), else of the system chosen on dev; and why it was used."""
    if system:
        return open_tracer(cfg, system, scorer, device), "--system"
    choice = choose_system(cfg)
    return open_tracer(cfg, choice.system, scorer, device), choice.reason


def new_results_path(folder: Path) -> Path:
    """``trace_<date-time>.csv`` in ``folder``, with a counter when that name is taken."""
    stem = f"trace_{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = folder / f"{stem}.csv", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}_{n}.csv"
    return path


def write_results(df: pd.DataFrame, out: Path | None, folder: Path) -> Path:
    """Write ``df`` to a file that did not exist before: ``out``, else a new ``trace_<time>.csv`` in ``folder``.

    The file is created exclusively, so neither an earlier run's file nor one written at the same
    moment by another run is ever replaced; an existing ``out`` is :class:`WouldOverwriteError`.
    """
    while True:
        path = out or new_results_path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x", newline="") as fh:
                df.to_csv(fh, index=False)
            return path
        except FileExistsError:
            if out is not None:
                raise WouldOverwriteError(f"{out} exists; choose another --out") from None


__all__ = [
    "AUDIO_EXTENSIONS",
    "RESULT_COLUMNS",
    "ClipInput",
    "FusionTracer",
    "TraceError",
    "Tracer",
    "Waveform",
    "as_clips",
    "clip_name",
    "find_audio",
    "in_input_order",
    "new_results_path",
    "open_tracer",
    "result_rows",
    "sample_eval_clips",
    "tracer_for",
    "tracer_from_bundle",
    "write_results",
]
