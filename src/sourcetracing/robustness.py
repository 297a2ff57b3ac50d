"""The robustness report card: how every trained system holds up under codecs, channels and short clips.

    python scripts/robustness.py --config configs/demo.yaml [--conditions clean,mp3_32k] [--systems aasist,mfcc]

For each condition (``robustness.conditions``; the transforms and defaults of
:mod:`sourcetracing.data.transforms`):

1. the dev and eval clips (``robustness.splits``) pass through the condition on the fly (the files
   are never touched; each clip's draws come from ``robustness.seed``, the clip id and the
   condition name), and their features are computed exactly as the feature store computes them
   (same front end, deterministic crop, float16) by the extraction step itself into a *condition
   store* (:class:`~sourcetracing.features.store.StoreCondition`, under
   ``<features root>/conditions/``): cached per condition and settings, reused on a rerun, split
   over processes under ``torchrun``. The MFCC reference computes its statistics from the
   transformed clips, cached the same way;
2. each system runs as ``trace.py`` would run it (its best checkpoint; for the MFCC reference the
   saved standardiser and regression) and writes per-condition outputs in the file-contract format
   to ``<exp>/robustness/<condition>/<system>/outputs/``, reused while the model, the features and
   the condition stay the same;
3. every scorer the system's clean OOD step saved (``scorer_<name>.npz``) scores them, and the
   judge's metrics (:func:`sourcetracing.ood.report.subset_metrics`) are taken twice: at the
   threshold and calibration fitted on *clean* dev (the realistic case: the deployed threshold
   meets degraded audio) and at the condition's own dev EER threshold and dev calibration.

Files in ``<exp>/robustness/``: ``robustness.csv``, ``card.md`` (the printed card),
``robustness_eer.png`` and ``robustness_macro_f1.png`` (heat maps, conditions x systems, each
system's default OOD scorer, eval split).

``robustness.csv`` holds one row per system x scorer x condition x split:

- ``system, task, scorer, default`` (the scorer the clean OOD step chose), ``condition, split``,
  ``n, n_known, n_ood`` (clips scored);
- ``accuracy, macro_f1``: known-class (closed-set) metrics over the known clips;
- ``eer, auroc, fpr_at_95tpr, min_cllr``: threshold-free OOD metrics of the split under the condition;
- ``*_clean``: at the clean-dev threshold ``threshold_clean``: ``fpr`` (known clips flagged OOD),
  ``fnr`` (OOD clips accepted), ``hter`` = (FPR + FNR) / 2 (what the EER becomes when the
  threshold is not re-tuned), ``ood_f1``, ``open_set_f1`` ((K+1)-way macro-F1) and ``cllr`` (with the
  clean-dev calibration);
- ``*_cond``: the same at the condition's own dev EER threshold ``threshold_cond`` and with a
  calibration fitted on the condition's dev (on dev itself ``hter_cond`` is the dev EER).

The clean condition (``identity``) reproduces the normal report: its numbers equal
``<system>/ood_step/ood_summary.csv`` and ``<system>/results/metrics.json``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sourcetracing.config import Config, resolve_device
from sourcetracing.data.audio import AudioError
from sourcetracing.data.augment import AugmentError
from sourcetracing.data.protocols import LabelMap, prepare_splits, protocol_digest
from sourcetracing.data.transforms import (
    DEFAULT_CONDITIONS,
    Condition,
    TransformError,
    build_conditions,
    condition_rng,
)
from sourcetracing.distributed import DistInfo, init_distributed, rank_device
from sourcetracing.errors import ConfigError, DataError, MissingInputError
from sourcetracing.features.store import FeatureStore, StoreCondition, store_dir
from sourcetracing.judge import closed_set_predictions
from sourcetracing.layout import ExperimentLayout
from sourcetracing.metrics import classification_metrics
from sourcetracing.ood.calibration import cllr
from sourcetracing.ood.metrics import eer, open_set_macro_f1, rates_at_threshold
from sourcetracing.ood.report import fit_calibration, subset_metrics
from sourcetracing.ood.scorers import Scorer
from sourcetracing.provenance import atomic_write_text, data_digest
from sourcetracing.systems.conditioned import ConditionedAudioClips, ConditionedAudioSource
from sourcetracing.systems.handle import Runner, SystemHandle, open_system, why_not_runnable
from sourcetracing.systems.outputs import SystemOutputs, record_pass

CSV = "robustness.csv"
CARD = "card.md"
EER_PNG = "robustness_eer.png"
F1_PNG = "robustness_macro_f1.png"
AT_THRESHOLD = ("fpr", "fnr", "hter", "ood_f1", "open_set_f1", "cllr")
COLUMNS = [
    "system", "task", "scorer", "default", "condition", "split", "n", "n_known", "n_ood",
    "accuracy", "macro_f1", "eer", "auroc", "fpr_at_95tpr", "min_cllr",
    "threshold_clean", *[f"{m}_clean" for m in AT_THRESHOLD],
    "threshold_cond", *[f"{m}_cond" for m in AT_THRESHOLD],
]  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


# ---------------------------------------------------------------------------------------------
# Conditions


def condition_specs(cfg: Config) -> dict[str, dict[str, Any]]:
    """The configured conditions as ``name -> {"transform": ..., **params}`` (``robustness.conditions``).

    A mapping entry may hold its parameters inline or under ``params``.
    """
    spec = cfg.robustness.conditions
    if spec is None:
        return {name: dict(entry) for name, entry in DEFAULT_CONDITIONS.items()}
    if isinstance(spec, list):
        unknown = [n for n in spec if n not in DEFAULT_CONDITIONS]
        if unknown:
            raise ConfigError(
                f"robustness.conditions: unknown condition(s) {unknown}; the defaults are "
                f"{', '.join(DEFAULT_CONDITIONS)} (or give a mapping name -> {{transform: ..., <params>}})"
            )
        return {name: dict(DEFAULT_CONDITIONS[name]) for name in spec}
    out = {}
    for name, entry in spec.items():
        entry = dict(entry)
        params = entry.pop("params", None) or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"robustness.conditions.{name}.params must be a mapping, got {params!r}")
        out[str(name)] = {**entry, **params}
    return out


def resolve_conditions(cfg: Config, names: Sequence[str] | None = None) -> dict[str, Condition]:
    """The conditions to run: the configured ones, or ``names`` (configured or default names), built
    with the config's MUSAN and RIRS folders; each is tried once on a synthetic clip so that a bad
    setting or a missing corpus is a clear error before any work starts."""
    specs = condition_specs(cfg)
    if names:
        picked = {}
        for name in names:
            if name not in specs and name not in DEFAULT_CONDITIONS:
                raise ConfigError(
                    f"unknown condition '{name}': configured {', '.join(specs)}; "
                    f"defaults {', '.join(DEFAULT_CONDITIONS)}"
                )
            picked[name] = specs.get(name, DEFAULT_CONDITIONS.get(name))
        specs = picked
    bad = [n for n in specs if not _NAME.fullmatch(n)]
    if bad:
        raise ConfigError(f"condition names {bad} must be letters, digits and _ . + - (they name folders)")
    try:
        conditions = build_conditions(specs, musan=cfg.augment.musan, rirs=cfg.augment.rirs)
    except TransformError as err:
        raise ConfigError(f"robustness.conditions: {err}") from None
    sample_rate = int(cfg.data.sample_rate)
    t = np.arange(sample_rate, dtype=np.float32) / sample_rate
    probe = (0.3 * np.sin(2 * np.pi * 220.0 * t)).astype(np.float32)
    for name, condition in conditions.items():
        try:
            condition(probe, sample_rate, condition_rng(0, "probe", name))
        except (TransformError, AugmentError, AudioError) as err:
            raise ConfigError(f"robustness condition '{name}' cannot run: {err}") from None
    return conditions


def store_conditions(cfg: Config, conditions: Mapping[str, Condition]) -> dict[str, StoreCondition]:
    """Each condition with the robustness seed and splits (what names and fills a condition store)."""
    splits = tuple(cfg.robustness.splits)
    missing = [s for s in splits if s not in cfg.data.splits]
    if missing:
        raise ConfigError(
            f"robustness.splits {missing} are not among data.splits ({', '.join(cfg.data.splits)})"
        )
    return {
        name: StoreCondition(condition, int(cfg.robustness.seed), splits)
        for name, condition in conditions.items()
    }


# ---------------------------------------------------------------------------------------------
# Systems


def select_systems(cfg: Config, requested: Sequence[str] | None = None, notes: bool = True) -> list[str]:
    """The systems to judge: ``requested`` (else ``robustness.systems``; each must be runnable), else
    every system with outputs that can run on audio (the others are named in a note)."""
    requested = list(requested or cfg.robustness.systems or [])
    if requested:
        for name in requested:
            reason = why_not_runnable(cfg, name)
            if reason:
                raise MissingInputError(f"system '{name}' cannot be judged under conditions: {reason}")
        return requested
    names = []
    for sys_layout in ExperimentLayout.of(cfg).systems():
        reason = why_not_runnable(cfg, sys_layout.name)
        if reason:
            if notes:
                print(f"note: robustness skips '{sys_layout.name}': {reason}")
            continue
        names.append(sys_layout.name)
    if not names:
        raise MissingInputError(
            f"no system in {cfg.exp_dir} can be judged under conditions (outputs, a model that runs on "
            "audio and an OOD step are needed): run train_refd.py, train_ge2e.py or scripts/reference_baseline.py first"
        )
    return names


@dataclass
class SystemRunner:
    """A trained system ready to run on transformed clips, with its clean outputs and fitted scorers."""

    handle: SystemHandle
    runner: Runner
    scorers: dict[str, Scorer]

    @property
    def name(self) -> str:
        return self.handle.name

    @property
    def task(self) -> str:
        return self.handle.kind.name

    @property
    def clean(self) -> SystemOutputs:
        return self.handle.outputs

    @property
    def model(self) -> Any:
        return self.runner.model

    @property
    def model_id(self) -> str:
        return self.runner.model_id

    @property
    def label_map(self) -> LabelMap:
        return self.runner.label_map

    @property
    def uses_store(self) -> bool:
        """Whether the system reads frame features (a condition store) rather than audio: its outputs
        were made from a feature store (the classifier, a GE2E ``features`` encoder)."""
        return self.handle.made_from_store

    @property
    def default_scorer(self) -> str:
        """The clean OOD step's default scorer (the lowest dev EER among the loaded ones if it is not loadable)."""
        return self.handle.ood.best_of(list(self.scorers))


def load_runner(cfg: Config, name: str, device: torch.device) -> SystemRunner:
    """Open a system the way ``trace.py`` does (:func:`~sourcetracing.systems.handle.open_system`: every
    staleness check once), with its runner and every scorer its clean OOD step saved."""
    return runner_of(open_system(cfg, name), device)


def runner_of(handle: SystemHandle, device: torch.device) -> SystemRunner:
    """An opened system's runner and every scorer its clean OOD step saved."""
    scorers = handle.ood.load_saved()
    if not scorers:
        raise MissingInputError(
            f"the OOD step of '{handle.name}' saved no fitted scorer: rerun python scripts/ood_detector.py "
            f"--config <your config> --system {handle.name}"
        )
    return SystemRunner(handle, handle.runner(device), scorers)


# ---------------------------------------------------------------------------------------------
# Per-condition outputs


def _store_rows(store: FeatureStore, split: str, label_map: LabelMap) -> pd.DataFrame:
    from sourcetracing.training.data import labelled

    return labelled(store.select(split=split, versions=["original"]), label_map).reset_index(drop=True)


def _protocol_rows(cfg: Config) -> dict[str, pd.DataFrame]:
    splits, _ = prepare_splits(cfg)
    return {s: splits[s].reset_index(drop=True) for s in cfg.robustness.splits}


def condition_outputs(
    cfg: Config,
    runner: SystemRunner,
    condition: StoreCondition,
    store: FeatureStore | None,
    device: torch.device,
) -> SystemOutputs:
    """The system's outputs under a condition, from ``<exp>/robustness/<condition>/<system>/outputs/``
    when they were made from the same model, features and condition; computed and written otherwise."""
    folder = ExperimentLayout.of(cfg).robustness_system(condition.name, runner.name).outputs
    if store is not None:
        features = {"store_id": store.store_id}
    else:
        rows = _protocol_rows(cfg)
        features = {
            "protocols": data_digest({s: protocol_digest(df) for s, df in rows.items()}),
            "condition": data_digest(condition.settings()),
        }
    inputs = {"model": runner.model_id, "label_map": runner.label_map.digest(), **features}
    manifest = folder / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("inputs") == inputs:
        return SystemOutputs.read(folder)
    tag = f"{runner.name}@{condition.name}"
    if store is not None:  # the condition store's rows, batched exactly as the clean export was
        rows = {split: _store_rows(store, split, runner.label_map) for split in cfg.robustness.splits}
    else:  # the transformed clips of each split
        rows = _protocol_rows(cfg)
    splits = {}
    for split, part in rows.items():
        splits[split] = runner.runner.run_rows(cfg, split, part, store, condition, f"{tag} {split}")
        record_pass(tag, split, len(part))
    outputs = SystemOutputs(
        runner.name, runner.clean.class_names, splits,
        meta={"task": runner.task, "condition": condition.settings(),
              "description": f"{runner.name} under condition {condition.name} (dev/eval through "
                             f"{condition.condition.transform}); scorers from {runner.name}/ood_step"},
    )  # fmt: skip
    outputs.write(folder, inputs)
    return outputs


# ---------------------------------------------------------------------------------------------
# Judging


def _at_threshold(metrics: Mapping[str, float], suffix: str) -> dict[str, float]:
    return {
        f"fpr_{suffix}": metrics["fpr"],
        f"fnr_{suffix}": metrics["fnr"],
        f"hter_{suffix}": (metrics["fpr"] + metrics["fnr"]) / 2.0,
        f"ood_f1_{suffix}": metrics["f1"],
        f"open_set_f1_{suffix}": metrics["open_set_macro_f1"],
        f"cllr_{suffix}": metrics["cllr"],
    }


def judge_condition(runner: SystemRunner, condition: str, outputs: SystemOutputs) -> list[dict]:
    """Rows of ``robustness.csv`` for one system under one condition (every loaded scorer, every split)."""
    combined = SystemOutputs(
        runner.name, runner.clean.class_names, {"train": runner.clean.split("train"), **outputs.splits}
    )  # the clean train rows give the GE2E centroids, exactly as in the clean judge
    preds = closed_set_predictions(combined)
    dev_ood = outputs.split("dev").is_ood
    both_on_dev = bool(dev_ood.any()) and bool((~dev_ood).any())
    default = runner.default_scorer
    rows = []
    for name, scorer in runner.scorers.items():
        entry = runner.handle.ood.entry(name)
        clean_thr, clean_cal = entry.threshold, entry.calibration
        scores = {
            split: np.asarray(scorer.score(part.embeddings, part.logits), dtype=np.float64)
            for split, part in outputs.splits.items()
        }
        cond_thr, cond_cal = math.nan, None
        if both_on_dev:
            _, cond_thr = eer(scores["dev"], dev_ood)
            cond_cal = fit_calibration(scores["dev"], dev_ood)
        for split, part in outputs.splits.items():
            is_ood = part.is_ood
            labels = part.rows["label"].to_numpy(int)
            pred = np.asarray(preds[split]).astype(int)
            known = ~is_ood
            closed = classification_metrics(labels[known], pred[known])
            at_clean = subset_metrics(scores[split], is_ood, labels, pred, clean_thr, clean_cal)
            row = {
                "system": runner.name, "task": runner.task, "scorer": name, "default": name == default,
                "condition": condition, "split": split, "n": len(labels), "n_known": int(known.sum()),
                "n_ood": int(is_ood.sum()), "accuracy": closed["accuracy"], "macro_f1": closed["macro_f1"],
                "eer": at_clean["eer"], "auroc": at_clean["auroc"], "fpr_at_95tpr": at_clean["fpr_at_95tpr"],
                "min_cllr": at_clean["min_cllr"], "threshold_clean": clean_thr, **_at_threshold(at_clean, "clean"),
                "threshold_cond": cond_thr,
            }  # fmt: skip
            if not math.isnan(cond_thr):  # only what depends on the threshold and calibration
                at_cond = rates_at_threshold(scores[split], is_ood, cond_thr)
                at_cond["open_set_macro_f1"] = open_set_macro_f1(labels, pred, scores[split], cond_thr)
                both = bool(is_ood.any()) and bool(known.any())
                at_cond["cllr"] = cllr(cond_cal.llr(scores[split]), is_ood) if both else math.nan
                row.update(_at_threshold(at_cond, "cond"))
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# The whole step


def run_robustness(
    cfg: Config,
    conditions: Sequence[str] | None = None,
    systems: Sequence[str] | None = None,
    info: DistInfo | None = None,
) -> pd.DataFrame | None:
    """Build the condition stores, run and judge every system under every condition, write the card.

    Returns the ``robustness.csv`` frame (None on the non-main ranks of a ``torchrun`` launch, which
    only share the feature extraction).
    """
    from sourcetracing.features.extract import run_extraction
    from sourcetracing.provenance import step_lock

    device = resolve_device(cfg.device)
    info = info if info is not None else init_distributed(device)
    device = rank_device(device, info)
    conds = store_conditions(cfg, resolve_conditions(cfg, conditions))
    names = select_systems(cfg, systems, notes=info.is_main)
    handles = {n: open_system(cfg, n) for n in names}  # every staleness check, once, before any work
    needs_store = any(h.made_from_store for h in handles.values())
    if needs_store:
        FeatureStore.for_config(cfg)  # the clean store must exist: the models were trained on its features
        for condition in conds.values():
            run_extraction(cfg, info, condition)
    if not info.is_main:
        return None
    layout = ExperimentLayout.of(cfg)
    rows: list[dict] = []
    with step_lock(layout.locks / "robustness.lock", "the robustness report"):
        runners = [runner_of(handles[n], device) for n in names]
        for condition in conds.values():
            store = FeatureStore(store_dir(cfg, condition)) if needs_store else None
            for runner in runners:
                outputs = condition_outputs(
                    cfg, runner, condition, store if runner.uses_store else None, device
                )
                rows.extend(judge_condition(runner, condition.name, outputs))
        table = pd.DataFrame(rows, columns=COLUMNS)
        out = layout.robustness
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            out / CSV, table.to_csv(index=False)
        )  # full precision: the clean row equals the report
        card = format_card(table, title=f"Robustness card: {cfg.exp_dir}")
        atomic_write_text(out / CARD, card_markdown(table, title=f"Robustness card: {cfg.exp_dir}"))
        plot_heatmaps(table, out)
    print(card)
    print(f"robustness report written to {out} ({CSV}, {CARD}, {EER_PNG}, {F1_PNG})")
    return table


# ---------------------------------------------------------------------------------------------
# Card, heat maps, comparison


def card_table(table: pd.DataFrame, split: str = "eval") -> pd.DataFrame:
    """One row per condition x system (each system's default scorer, one split): EER, HTER at the
    clean threshold and macro-F1, conditions and systems in their table order."""
    part = table[(table["split"] == split) & table["default"].astype(bool)]
    keep = ["condition", "system", "scorer", "eer", "hter_clean", "fpr_clean", "fnr_clean", "macro_f1"]
    return part[keep].reset_index(drop=True)


def _pivot(card: pd.DataFrame, value: str) -> pd.DataFrame:
    conditions = list(dict.fromkeys(card["condition"]))
    systems = list(dict.fromkeys(card["system"]))
    return card.pivot(index="condition", columns="system", values=value).reindex(
        index=conditions, columns=systems
    )


def _scorer_of(card: pd.DataFrame) -> dict[str, str]:
    return dict(zip(card["system"], card["scorer"], strict=False))


def format_card(table: pd.DataFrame, title: str = "Robustness card", split: str = "eval") -> str:
    """The printed card: per condition and system, the OOD EER, the error at the clean-dev
    threshold and the known-class macro-F1 (default scorer, eval)."""
    card = card_table(table, split)
    if card.empty:
        return f"{title}: no rows"
    eer_, hter, f1 = _pivot(card, "eer"), _pivot(card, "hter_clean"), _pivot(card, "macro_f1")
    scorer = _scorer_of(card)
    width = max(12, *(len(c) for c in eer_.index))
    head = " " * width + "".join(f" | {f'{s} ({scorer[s]})':^21s}" for s in eer_.columns)
    sub = f"{'condition':{width}s}" + "".join(
        f" | {'EER%':>6s} {'@clean%':>7s} {'F1':>6s}" for _ in eer_.columns
    )
    lines = [
        f"{title} ({split}; each system's default OOD scorer)",
        "  EER = OOD equal error rate; @clean = (FPR+FNR)/2 at the threshold fitted on clean dev; "
        "F1 = known-class macro-F1",
        head,
        sub,
        "-" * len(sub),
    ]

    def pct(v: float) -> str:
        return f"{100 * v:6.1f}" if np.isfinite(v) else f"{'-':>6s}"

    for cond in eer_.index:
        cells = "".join(
            f" | {pct(eer_.at[cond, s])} {pct(hter.at[cond, s]):>7s} "
            + (f"{f1.at[cond, s]:6.3f}" if np.isfinite(f1.at[cond, s]) else f"{'-':>6s}")
            for s in eer_.columns
        )
        lines.append(f"{cond:{width}s}{cells}")
    return "\n".join(lines)


def card_markdown(table: pd.DataFrame, title: str = "Robustness card", split: str = "eval") -> str:
    """The card as a Markdown table (for a README)."""
    card = card_table(table, split)
    eer_, hter, f1 = _pivot(card, "eer"), _pivot(card, "hter_clean"), _pivot(card, "macro_f1")
    scorer = _scorer_of(card)
    header = ["condition"]
    for s in eer_.columns:
        header += [f"{s} ({scorer[s]}) EER %", f"{s} @clean %", f"{s} F1"]
    lines = [
        f"# {title}",
        "",
        f"{split} split, each system's default OOD scorer. EER: OOD equal error rate; @clean: (FPR+FNR)/2 "
        "at the threshold fitted on clean dev; F1: known-class macro-F1.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for cond in eer_.index:
        cells = [cond]
        for s in eer_.columns:
            cells += [
                f"{100 * eer_.at[cond, s]:.1f}",
                f"{100 * hter.at[cond, s]:.1f}",
                f"{f1.at[cond, s]:.3f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_heatmaps(table: pd.DataFrame, out_dir: str | Path, split: str = "eval") -> list[Path]:
    """``robustness_eer.png`` (EER and error at the clean-dev threshold) and ``robustness_macro_f1.png``:
    conditions x systems, each system's default scorer."""
    from sourcetracing.plots import plt, save_figure

    card = card_table(table, split)
    out_dir = Path(out_dir)
    scorer = _scorer_of(card)
    panels = {
        EER_PNG: [
            ("eer", f"OOD EER on {split} (%)"),
            ("hter_clean", "(FPR+FNR)/2 at the clean-dev threshold (%)"),
        ],
        F1_PNG: [("macro_f1", f"known-class macro-F1 on {split}")],
    }
    written = []
    for filename, entries in panels.items():
        n_cond = card["condition"].nunique()
        n_sys = max(1, card["system"].nunique())
        fig, axes = plt.subplots(
            1, len(entries), figsize=(1.6 + 1.5 * n_sys * len(entries), 1.4 + 0.38 * n_cond), squeeze=False
        )
        for ax, (value, title) in zip(axes[0], entries, strict=True):
            grid = _pivot(card, value)
            is_rate = value != "macro_f1"
            data = grid.to_numpy(dtype=float) * (100 if is_rate else 1)
            vmax = 50.0 if is_rate else 1.0
            im = ax.imshow(data, cmap="Reds" if is_rate else "Greens", vmin=0.0, vmax=vmax, aspect="auto")
            for (i, j), v in np.ndenumerate(data):
                if np.isfinite(v):
                    text = f"{v:.1f}" if is_rate else f"{v:.2f}"
                    dark = v > 0.6 * vmax
                    ax.text(
                        j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black"
                    )
            ax.set_xticks(range(len(grid.columns)), [f"{s}\n({scorer[s]})" for s in grid.columns], fontsize=8)
            ax.set_yticks(range(len(grid.index)), list(grid.index), fontsize=8)
            ax.set_title(title, fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        written.append(save_figure(fig, out_dir / filename))
    return written


def read_table(path: str | Path) -> pd.DataFrame:
    """``robustness.csv`` of an experiment folder (or the CSV itself)."""
    path = Path(path)
    csv = ExperimentLayout(path, path / "features").robustness / CSV if path.is_dir() else path
    if not csv.is_file():
        raise MissingInputError(f"{csv} not found: run python scripts/robustness.py --config <config> first")
    return pd.read_csv(csv)


def over_runs(exp_dirs: Sequence[str | Path], split: str = "eval") -> pd.DataFrame:
    """The default-scorer card of several runs (seeds, protocol rotations) as mean ± sd per system and
    condition: known-class macro-F1, its change from the same run's clean row (mean and the largest
    drop) and the OOD EER. Runs without a card are skipped; empty when none has one."""
    cards = []
    for exp in exp_dirs:
        try:
            card = card_table(read_table(exp), split)
        except MissingInputError:
            continue
        clean = card[card["condition"] == "clean"].set_index("system")["macro_f1"]
        cards.append(card.assign(run=str(exp), f1_change=card["macro_f1"] - card["system"].map(clean)))
    if not cards:
        return pd.DataFrame()
    both = pd.concat(cards, ignore_index=True)
    systems, conditions = list(dict.fromkeys(both["system"])), list(dict.fromkeys(both["condition"]))
    both["system"] = pd.Categorical(both["system"], systems)
    both["condition"] = pd.Categorical(both["condition"], conditions)
    rows = []
    for (system, condition), part in both.groupby(["system", "condition"], observed=True):
        f1, change, eer = part["macro_f1"], part["f1_change"], 100 * part["eer"]
        rows.append(
            {
                "system": system, "condition": condition, "runs": len(part),
                "known-class macro-F1": f"{f1.mean():.3f} ± {f1.std(ddof=1) if len(part) > 1 else 0.0:.3f}",
                "F1 − clean (largest drop)": "–" if condition == "clean" else f"{change.mean():+.3f} ({change.min():+.3f})",
                "OOD EER (%)": f"{eer.mean():.1f} ± {eer.std(ddof=1) if len(part) > 1 else 0.0:.1f}",
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def compare(base: str | Path, other: str | Path, split: str = "eval") -> pd.DataFrame:
    """Default-scorer card numbers of two experiments side by side (``other - base`` deltas), per
    condition and system: e.g. the demo trained without and with the ``codec`` augmentation."""
    a, b = card_table(read_table(base), split), card_table(read_table(other), split)
    merged = a.merge(b, on=["condition", "system"], suffixes=("_base", "_other"), how="inner", sort=False)
    if merged.empty:
        raise DataError(f"{base} and {other} share no condition x system rows")
    out = merged[["condition", "system", "scorer_base", "scorer_other"]].copy()  # each chose its own on dev
    for metric in ("eer", "hter_clean", "macro_f1"):
        out[f"{metric}_base"] = merged[f"{metric}_base"]
        out[f"{metric}_other"] = merged[f"{metric}_other"]
        out[f"{metric}_delta"] = merged[f"{metric}_other"] - merged[f"{metric}_base"]
    return out


__all__ = [
    "COLUMNS",
    "over_runs",
    "ConditionedAudioClips",
    "ConditionedAudioSource",
    "SystemRunner",
    "card_markdown",
    "compare",
    "condition_outputs",
    "condition_specs",
    "format_card",
    "judge_condition",
    "load_runner",
    "plot_heatmaps",
    "read_table",
    "resolve_conditions",
    "run_robustness",
    "select_systems",
    "store_conditions",
    "why_not_runnable",
]
