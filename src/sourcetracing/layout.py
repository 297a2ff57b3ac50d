"""The experiment layout: every folder and file name the toolkit writes, named once.

::

    exp/<name>/
      config.yaml  label_assignment.txt  label_map.csv  summary.md
      key.tsv                                the evaluation key (scripts/write_key.py)
      enrolled.json                          systems enrolled without retraining (scripts/enroll.py)
      features/<frontend>-<hash>/            the feature store (features.dir overrides the root)
      features/conditions/<condition>-<frontend>-<hash>/   dev/eval through a channel condition (robustness)
      <system>/                              one folder per system (aasist, ge2e, mfcc, fusion, ...)
        trained_models/  best.pt last.pt metrics.csv curves.png      (systems that train)
        outputs/         meta.json {train,dev,eval}.tsv {train,dev,eval}.npz   (the file contract)
        results/         {dev,eval}_in_domain_results.txt metrics.json confusion_*.{csv,png}
        ood_step/        OOD_eval_results.txt ood_summary.csv scores_*.tsv thresholds.json
                         scorer_<name>.npz roc_*.png det_*.png manifest.json
        embeddings/      embedding_map.png (and exported per-split files)
        enrolled/        <name>-<digest>.npz: embeddings of each enrolled system's clips
        enrolment/       enrolment.csv enrolment_curve.png (scripts/enroll.py --measure)
      trace/             trace_<run id>.csv
      robustness/        robustness.csv card.md robustness_eer.png robustness_macro_f1.png
        <condition>/<system>/outputs/    per-condition outputs (dev, eval) in the file-contract format
      .locks/            one lock file per step
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
LABEL_ASSIGNMENT = "label_assignment.txt"
LABEL_MAP = "label_map.csv"
SUMMARY = "summary.md"
MANIFEST = "manifest.json"
KEY = "key.tsv"
ENROLLED = "enrolled.json"
# files inside a system's folders
THRESHOLDS = "thresholds.json"  # ood_step/: per scorer the dev threshold, calibration, the default
OOD_SUMMARY = "ood_summary.csv"  # ood_step/: one row per scorer x split x subset
KNOWN_METRICS = "metrics.json"  # results/: known-class metrics per split
OUTPUTS_META = "meta.json"  # outputs/: system, class names, what it exports
TEMPERATURE = "calibration.json"  # results/: the closed-set temperature fitted on dev
SCORER_STATE = "scorer_{}.npz"  # ood_step/: one fitted scorer's state (Scorer.save)


def scorer_state_file(scorer: str) -> str:
    """The file name of a fitted scorer's state inside an OOD step folder (``scorer_<name>.npz``)."""
    return SCORER_STATE.format(scorer)


@dataclass(frozen=True)
class SystemLayout:
    """The folders and files of one system inside an experiment."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def models(self) -> Path:
        return self.root / "trained_models"

    @property
    def best(self) -> Path:
        return self.models / "best.pt"

    @property
    def last(self) -> Path:
        return self.models / "last.pt"

    @property
    def metrics(self) -> Path:
        return self.models / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.models / "curves.png"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def outputs_meta(self) -> Path:
        return self.outputs / OUTPUTS_META

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def temperature(self) -> Path:
        return self.results / TEMPERATURE

    @property
    def known_metrics(self) -> Path:
        return self.results / KNOWN_METRICS

    @property
    def ood(self) -> Path:
        return self.root / "ood_step"

    @property
    def thresholds(self) -> Path:
        return self.ood / THRESHOLDS

    @property
    def ood_summary(self) -> Path:
        return self.ood / OOD_SUMMARY

    @property
    def ood_manifest(self) -> Path:
        return self.ood / MANIFEST

    def scorer_state(self, scorer: str) -> Path:
        """Where the OOD step saved the fitted state of ``scorer``."""
        return self.ood / scorer_state_file(scorer)

    def scorer_states(self) -> dict[str, Path]:
        """Every fitted scorer state the OOD step saved: scorer name -> file, sorted by name."""
        prefix, suffix = SCORER_STATE.split("{}")
        found = sorted(self.ood.glob(SCORER_STATE.format("*"))) if self.ood.is_dir() else []
        return {p.name[len(prefix) : len(p.name) - len(suffix)]: p for p in found}

    def scores(self, split: str) -> Path:
        """The OOD step's per-clip scores of one split (one column per scorer)."""
        return self.ood / f"scores_{split}.tsv"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def enrolled(self) -> Path:
        return self.root / "enrolled"

    @property
    def enrolment(self) -> Path:
        return self.root / "enrolment"


@dataclass(frozen=True)
class ExperimentLayout:
    """The folders and files of one experiment (``exp_dir``)."""

    root: Path
    features_root: Path

    @classmethod
    def of(cls, cfg) -> ExperimentLayout:
        root = Path(cfg.exp_dir)
        return cls(root, Path(cfg.features.dir) if cfg.features.dir else root / "features")

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def label_assignment(self) -> Path:
        return self.root / LABEL_ASSIGNMENT

    @property
    def label_map(self) -> Path:
        return self.root / LABEL_MAP

    @property
    def summary(self) -> Path:
        return self.root / SUMMARY

    @property
    def trace(self) -> Path:
        return self.root / "trace"

    @property
    def key(self) -> Path:
        return self.root / KEY

    @property
    def enrolled(self) -> Path:
        return self.root / ENROLLED

    @property
    def locks(self) -> Path:
        return self.root / ".locks"

    @property
    def robustness(self) -> Path:
        return self.root / "robustness"

    @property
    def shared_statistics(self) -> Path:
        """Statistics computed once for several statistics systems (``stats`` and its variants)."""
        return self.root / "stats_shared"

    def robustness_system(self, condition: str, system: str) -> SystemLayout:
        """A system's folders under one robustness condition (its ``outputs`` follow the file contract)."""
        return SystemLayout(self.robustness / condition / system)

    def system(self, name: str) -> SystemLayout:
        return SystemLayout(self.root / name)

    def systems(self) -> list[SystemLayout]:
        """Systems that exported outputs, in a stable order (sorted by name)."""
        if not self.root.is_dir():
            return []
        return [
            SystemLayout(p)
            for p in sorted(self.root.iterdir())
            if p.is_dir() and (SystemLayout(p).outputs / OUTPUTS_META).is_file()
        ]
