"""The OOD step of one system as it was written, read back typed.

The OOD step (``scripts/ood_detector.py``, :func:`sourcetracing.judge.ood_step`) writes
``<exp>/<system>/ood_step/``: ``thresholds.json`` (per scorer the dev-EER threshold, dev EER and
AUROC and the dev-fitted calibration; the default scorer and the rule that chose it),
``scorer_<name>.npz`` (each fitted scorer's state) and ``manifest.json`` (the outputs it was fitted
on). :class:`OODStep` is the one reader of these files: nothing else parses ``thresholds.json`` or
builds a scorer file name (:mod:`sourcetracing.layout` owns the names).

    step = OODStep.read(ExperimentLayout.of(cfg).system("aasist"))
    step.default, step.threshold("knn"), step.calibration("knn"), step.load_scorer("knn")
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from sourcetracing.errors import MissingInputError
from sourcetracing.layout import THRESHOLDS, SystemLayout
from sourcetracing.ood.calibration import LogisticCalibration
from sourcetracing.ood.report import select_on_dev
from sourcetracing.ood.scorers import Scorer

PRIOR = 0.5  # the prior P(unseen) is stated at (p_unseen = sigmoid(llr + logit(prior)))


def rerun_ood(system: str) -> str:
    """The command that makes a system's OOD step again."""
    return f"python scripts/ood_detector.py --config <your config> --system {system}"


def missing_ood_step(sys_layout: SystemLayout) -> MissingInputError:
    """The one-line error for a system without a finished OOD step, naming the step to run."""
    return MissingInputError(
        f"the OOD step of '{sys_layout.name}' not found in {sys_layout.ood}: run {rerun_ood(sys_layout.name)} first"
    )


@dataclass(frozen=True)
class ScorerEntry:
    """One fitted scorer's line of ``thresholds.json``."""

    name: str
    threshold: float
    dev_eer: float
    dev_auroc: float
    dev_worst_unseen_auroc: float
    calibration: LogisticCalibration | None
    raw: dict
    unseen_auroc: float = math.nan  # mean over dev's unseen and the train-side held-out systems

    @classmethod
    def of(cls, name: str, raw: dict) -> ScorerEntry:
        cal = raw.get("calibration")
        worst, unseen = raw.get("dev_worst_unseen_auroc"), raw.get("unseen_auroc")
        return cls(
            name, float(raw["threshold"]), float(raw.get("dev_eer", math.nan)),
            float(raw.get("dev_auroc", math.nan)), math.nan if worst is None else float(worst),
            LogisticCalibration.from_dict(cal) if cal else None, dict(raw),
            math.nan if unseen is None else float(unseen),
        )  # fmt: skip


@dataclass(frozen=True)
class OODStep:
    """A system's finished OOD step: its thresholds, calibrations, default scorer and fitted states."""

    layout: SystemLayout
    info: dict  # thresholds.json as written
    manifest: dict

    @classmethod
    def read(cls, sys_layout: SystemLayout) -> OODStep:
        """The OOD step of a system; :class:`MissingInputError` naming the step when it has none."""
        found = cls.find(sys_layout)
        if found is None:
            raise missing_ood_step(sys_layout)
        return found

    @classmethod
    def find(cls, sys_layout: SystemLayout) -> OODStep | None:
        """The OOD step of a system, None when it has no finished one (no manifest or thresholds)."""
        if not sys_layout.ood_manifest.is_file() or not sys_layout.thresholds.is_file():
            return None
        return cls(
            sys_layout,
            json.loads(sys_layout.thresholds.read_text()),
            json.loads(sys_layout.ood_manifest.read_text()),
        )

    @classmethod
    def read_folder(cls, folder: str | Path) -> OODStep:
        """The OOD step written to ``folder`` itself (an ``ood_step`` folder, possibly still temporary)."""
        folder = Path(folder)
        if not (folder / THRESHOLDS).is_file():
            raise MissingInputError(f"{folder / THRESHOLDS} not found: run the OOD step first")
        sys_layout = SystemLayout(folder.parent)
        manifest = sys_layout.ood_manifest
        info = json.loads((folder / THRESHOLDS).read_text())
        return cls(sys_layout, info, json.loads(manifest.read_text()) if manifest.is_file() else {})

    @property
    def system(self) -> str:
        return self.layout.name

    @property
    def id(self) -> str:
        return str(self.manifest.get("id", ""))

    @property
    def outputs_id(self) -> str | None:
        """The id of the outputs the step was fitted on."""
        return self.manifest.get("inputs", {}).get("outputs")

    @property
    def default(self) -> str | None:
        """The scorer chosen on dev (``ood.default``, or the dev-only rule's pick)."""
        return self.info.get("default")

    @property
    def select(self) -> str:
        """The dev-only rule the default was chosen by."""
        return str(self.info.get("select", "dev_eer"))

    @property
    def prior(self) -> float:
        """The prior ``p_unseen`` is stated at."""
        return PRIOR

    @property
    def scorers(self) -> list[str]:
        """Every scorer the step fitted or read (precomputed scores included), in its order."""
        return list(self.info.get("scorers", {}))

    @property
    def saved(self) -> list[str]:
        """The scorers whose fitted state was saved (those that can score new clips), in the step's order."""
        return [n for n in self.scorers if self.layout.scorer_state(n).is_file()]

    def entry(self, name: str) -> ScorerEntry:
        if name not in self.info.get("scorers", {}):
            raise MissingInputError(
                f"scorer '{name}' was not fitted by the OOD step of '{self.system}'; available: {sorted(self.scorers)}"
            )
        return ScorerEntry.of(name, self.info["scorers"][name])

    def entries(self, names: list[str] | None = None) -> dict[str, ScorerEntry]:
        return {n: self.entry(n) for n in (self.scorers if names is None else names)}

    def threshold(self, name: str) -> float:
        return self.entry(name).threshold

    def calibration(self, name: str) -> LogisticCalibration | None:
        return self.entry(name).calibration

    def state_path(self, name: str) -> Path:
        return self.layout.scorer_state(name)

    def load_scorer(self, name: str) -> Scorer:
        """The fitted scorer ``name``; a clear error when the step saved no state of it (a precomputed score)."""
        self.entry(name)
        path = self.state_path(name)
        if not path.is_file():
            raise MissingInputError(
                f"{path} missing: '{name}' of '{self.system}' is a precomputed score that cannot score new clips; "
                f"rerun {rerun_ood(self.system)}"
            )
        return Scorer.load(path)

    def load_saved(self) -> dict[str, Scorer]:
        """Every saved fitted scorer, by name."""
        return {n: Scorer.load(self.state_path(n)) for n in self.saved}

    def best_of(self, names: list[str]) -> str:
        """The default when it is among ``names``, else the one with the lowest dev EER among them."""
        if self.default in names:
            return str(self.default)
        return select_on_dev({n: self.info["scorers"][n] for n in names})


def read_thresholds(folder: str | Path) -> dict:
    """``thresholds.json`` of an OOD step folder as written (the writer's own read-modify-write)."""
    return json.loads((Path(folder) / THRESHOLDS).read_text())


__all__ = ["PRIOR", "OODStep", "ScorerEntry", "read_thresholds", "rerun_ood"]
