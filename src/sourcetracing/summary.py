"""One table comparing every system and OOD scorer, read from the files the judging steps wrote.

    python scripts/summarize_results.py --config configs/demo.yaml
    python scripts/summarize_results.py --exp exp/demo_s0 exp/demo_s1 exp/demo_s2 --out exp/demo_seeds.md

Rows: each system found in an experiment (a folder ``<exp>/<system>/`` with ``results/`` and
``ood_step/``) x each of its OOD scorers, with the known-class eval macro-F1 and the dev/eval OOD
metrics. With several experiment folders (the same config with other seeds, say) every number
is the mean ± standard deviation over them. Rows are ranked by eval OOD EER; the scorer each
experiment chose on dev (``ood.default``) is marked ``*``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.layout import ExperimentLayout, SystemLayout
from sourcetracing.ood.step import OODStep
from sourcetracing.systems.outputs import OutputsMeta

METRICS = {
    "eval_macro_f1": "known-class eval macro-F1",
    "dev_eer_%": "dev OOD EER (%)",
    "eval_eer_%": "eval OOD EER (%)",
    "eval_auroc": "eval AUROC",
    "eval_cllr": "eval Cllr (bits)",
    "eval_min_cllr": "eval min Cllr (bits)",
    "eval_open_set_f1": "eval open-set macro-F1",
    "worst_unseen_auroc": "lowest per-unseen-system eval AUROC",
}


def _system_dirs(exp_dir: Path) -> list[Path]:
    if not exp_dir.is_dir():
        return []
    return [
        p
        for p in sorted(exp_dir.iterdir())
        if SystemLayout(p).known_metrics.is_file() and SystemLayout(p).ood_summary.is_file()
    ]


def experiment_rows(exp_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Per system and OOD scorer of one experiment: the metrics of :data:`METRICS` plus ``default``."""
    exp_dir = Path(exp_dir)
    rows, notes = [], []
    layout = ExperimentLayout(exp_dir, exp_dir / "features")
    dirs = _system_dirs(exp_dir)
    if not dirs:
        notes.append(f"{exp_dir}: no judged system yet (results/ + ood_step/)")
    for folder in dirs:
        sys_layout = layout.system(folder.name)
        known = json.loads((sys_layout.known_metrics).read_text())
        summary = pd.read_csv(sys_layout.ood_summary)
        step = OODStep.read_folder(sys_layout.ood)
        default = step.default
        meta = OutputsMeta.of(sys_layout)
        reference = meta is not None and meta.reference
        for scorer, part in summary.groupby("scorer", sort=False):

            def pick(split: str, subset: str = "all", frame: pd.DataFrame = part) -> pd.Series | None:
                sel = frame[(frame["split"] == split) & (frame["subset"] == subset)]
                return sel.iloc[0] if len(sel) else None

            dev, ev = pick("dev"), pick("eval")
            per_system = part[(part["split"] == "eval") & part["subset"].str.startswith("unseen_system:")]
            rows.append(
                {
                    "system": folder.name,
                    "scorer": scorer,
                    "default": scorer == default,
                    "select": step.select,  # the dev-only rule of this run
                    "dev_worst_unseen_auroc": step.entry(scorer).dev_worst_unseen_auroc
                    if scorer in step.scorers
                    else np.nan,
                    # dev's unseen systems and the train-side held-out ones (ood.select unseen_auroc)
                    "unseen_auroc": step.entry(scorer).unseen_auroc if scorer in step.scorers else np.nan,
                    "reference": reference,  # reported against, never chosen
                    "eval_macro_f1": known.get("eval", {}).get("macro_f1", np.nan),
                    "dev_eer_%": 100 * dev["eer"] if dev is not None else np.nan,
                    "dev_auroc": dev["auroc"] if dev is not None else np.nan,  # the dev choice's tie-break
                    "eval_eer_%": 100 * ev["eer"] if ev is not None else np.nan,
                    "eval_auroc": ev["auroc"] if ev is not None else np.nan,
                    "eval_cllr": ev.get("cllr", np.nan) if ev is not None else np.nan,
                    "eval_min_cllr": ev.get("min_cllr", np.nan) if ev is not None else np.nan,
                    "eval_open_set_f1": ev["open_set_macro_f1"] if ev is not None else np.nan,
                    "worst_unseen_auroc": per_system["auroc"].min() if len(per_system) else np.nan,
                }
            )
    return pd.DataFrame(rows), notes


def machines(exp_dirs: Sequence[str | Path]) -> list[str]:
    """The machines the systems' outputs were computed on (``machine`` in each ``outputs/meta.json``)."""
    found = []
    for exp in exp_dirs:
        for folder in _system_dirs(Path(exp)):
            meta = OutputsMeta.of(SystemLayout(folder))
            name = meta.machine if meta is not None else None
            if name and name not in found:
                found.append(name)
    return found


def per_unseen_system(exp_dir: str | Path, system: str, scorer: str) -> pd.Series:
    """Eval AUROC of each unseen system (its clips against all known clips) for one system and scorer."""
    summary = pd.read_csv(SystemLayout(Path(exp_dir) / system).ood_summary)
    sel = summary[
        (summary["scorer"] == scorer)
        & (summary["split"] == "eval")
        & summary["subset"].str.startswith("unseen_system:")
    ]
    return pd.Series(
        sel["auroc"].to_numpy(),
        index=sel["subset"].str.removeprefix("unseen_system:").to_numpy(),
        name=f"{system}/{scorer}",
    )


def combine(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Mean and standard deviation (ddof 1) over experiments per system x scorer; ``n`` = experiments."""
    stacked = pd.concat([f.assign(run=i) for i, f in enumerate(frames) if len(f)], ignore_index=True)
    out = []
    for (system, scorer), part in stacked.groupby(["system", "scorer"], sort=False):
        row = {"system": system, "scorer": scorer, "n": len(part), "chosen": int(part["default"].sum())}
        for col in METRICS:
            values = part[col].astype(float)
            row[col] = values.mean()
            row[col + "_sd"] = values.std(ddof=1) if len(values) > 1 else np.nan
        out.append(row)
    return pd.DataFrame(out).sort_values("eval_eer_%", kind="stable").reset_index(drop=True)


def _cell(mean: float, sd: float, pct: bool) -> str:
    if np.isnan(mean):
        return "–"
    fmt = "{:.1f}" if pct else "{:.3f}"
    return fmt.format(mean) + ("" if np.isnan(sd) else " ± " + fmt.format(sd))


def to_markdown(table: pd.DataFrame, columns: Sequence[str] = tuple(METRICS)) -> str:
    """A GitHub-markdown table: system, scorer (``*`` = chosen on dev, with how often), mean ± sd cells."""
    header = ["system", "scorer", *[METRICS[c] for c in columns]]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for _, row in table.iterrows():
        mark = ""
        if row["chosen"]:
            mark = " *" if row["chosen"] == row["n"] else f" * ({row['chosen']}/{row['n']})"
        cells = [row["system"], row["scorer"] + mark]
        cells += [_cell(row[c], row[c + "_sd"], c.endswith("%")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dev_selected(frame: pd.DataFrame) -> tuple[str, str] | None:
    """The system and scorer the toolkit would pick on dev alone: among the systems' own dev-chosen
    scorers, the one the experiment's dev-only rule (``ood.select``; by default the lowest dev EER,
    ties broken by the higher dev AUROC) picks — the rule each system's own choice follows,
    :func:`sourcetracing.ood.report.select_on_dev` —, then by name; eval is never read. Reference
    systems (``reference`` true) are never picked.

    >>> frame = pd.DataFrame({"system": ["a", "b"], "scorer": ["knn", "knn"], "default": [True, True],
    ...                       "dev_eer_%": [9.5, 9.5], "dev_auroc": [0.96, 0.97]})
    >>> dev_selected(frame)
    ('b', 'knn')
    """
    from sourcetracing.ood.report import select_on_dev

    eligible = frame["default"] & ~frame.get("reference", pd.Series(False, index=frame.index)).astype(bool)
    chosen = frame[eligible].sort_values("system", kind="stable")  # the first of equals wins
    if chosen.empty:
        return None
    candidates = {
        (str(r["system"]), str(r["scorer"])): {
            "dev_eer": np.nan_to_num(r["dev_eer_%"], nan=np.inf),  # a run without dev numbers comes last
            "dev_auroc": np.nan_to_num(r["dev_auroc"], nan=-np.inf),
            "dev_worst_unseen_auroc": float(r.get("dev_worst_unseen_auroc", np.nan)),
            "unseen_auroc": float(r.get("unseen_auroc", np.nan)),
        }
        for _, r in chosen.iterrows()
    }
    rule = str(chosen["select"].iloc[0]) if "select" in chosen else "dev_eer"
    return select_on_dev(candidates, rule)


def twin_table(exp_dirs: Sequence[str | Path], twins: dict[str, str]) -> pd.DataFrame:
    """Eval AUROC of each near-twin unseen system (vs all known clips) for every system's dev-chosen scorer,
    mean and sd over the experiments; ``twins`` maps an unseen system to the known system(s) it twins."""
    rows = []
    for exp in exp_dirs:
        frame, _ = experiment_rows(exp)
        for _, r in frame[frame["default"]].iterrows():
            auc = per_unseen_system(exp, r["system"], r["scorer"])
            for unseen in twins:
                if unseen in auc.index:
                    rows.append(
                        {"system": f"{r['system']} ({r['scorer']})", "unseen": unseen, "auroc": auc[unseen]}
                    )
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    out = []
    for unseen, part in frame.groupby("unseen", sort=True):
        row = {"unseen system": unseen, "twin of": twins[unseen]}
        for system, values in part.groupby("system", sort=True)["auroc"]:
            row[system] = _cell(values.mean(), values.std(ddof=1) if len(values) > 1 else np.nan, False)
        out.append(row)
    return pd.DataFrame(out).fillna("–")


REFERENCE = "mfcc"  # the MFCC reference system, the baseline every method is held against
PLAIN_REFERENCE = "plain_mfcc"  # the plain MFCC 5-NN reference (sourcetracing.systems.plain_reference)


def chosen_table(
    exp_dirs: Sequence[str | Path], frames: Sequence[pd.DataFrame], twins: dict[str, str] | None = None
) -> pd.DataFrame:
    """Per run, the system and scorer chosen on dev alone with its numbers (known-class macro-F1,
    dev and eval OOD EER, each near-twin's eval AUROC), then their mean ± sd over the runs."""
    rows = []
    for exp, frame in zip(exp_dirs, frames, strict=True):
        pick = dev_selected(frame) if len(frame) else None
        if pick is None:
            continue
        r = frame[(frame["system"] == pick[0]) & (frame["scorer"] == pick[1])].iloc[0]
        row = {
            "run": str(exp), "chosen on dev": f"{pick[0]} ({pick[1]})",
            METRICS["eval_macro_f1"]: r["eval_macro_f1"], METRICS["dev_eer_%"]: r["dev_eer_%"],
            METRICS["eval_eer_%"]: r["eval_eer_%"],
        }  # fmt: skip
        reference = frame.loc[frame["system"] == REFERENCE, "eval_eer_%"]
        if len(reference):  # against the strongest MFCC reference scorer (reported, never a choice)
            row["÷ best mfcc eval EER"] = r["eval_eer_%"] / reference.min() if reference.min() > 0 else np.nan
        plain = frame.loc[frame["system"] == PLAIN_REFERENCE, "eval_eer_%"]
        if len(plain):  # against the plain MFCC 5-NN reference (fixed settings, one scorer)
            row[f"{PLAIN_REFERENCE} eval EER (%)"] = plain.iloc[0]
            row[f"÷ {PLAIN_REFERENCE} eval EER"] = (
                r["eval_eer_%"] / plain.iloc[0] if plain.iloc[0] > 0 else np.nan
            )
        row[METRICS["worst_unseen_auroc"]] = r["worst_unseen_auroc"]
        auc = per_unseen_system(exp, *pick)
        for unseen in twins or {}:
            if unseen in auc.index:  # eval's near-twins
                row[f"{unseen} AUROC"] = auc[unseen]
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    numeric = table.columns[2:]
    out = table.astype(object)
    for col in numeric:
        out[col] = [_cell(v, np.nan, "%" in col) for v in table[col]]
    if len(table) > 1:
        summary = {"run": "mean ± sd", "chosen on dev": ""}
        for col in numeric:
            summary[col] = _cell(table[col].mean(), table[col].std(ddof=1), "%" in col)
        out = pd.concat([out, pd.DataFrame([summary])], ignore_index=True)
    return out


def _dev_candidates(exp_dir: str | Path) -> pd.DataFrame:
    """Every non-reference system x scorer of one experiment with its dev-only evidence: pooled dev
    EER and AUROC, and the mean and lowest AUROC over dev's unseen systems (each against all known
    dev clips); plus its eval OOD EER, which only the report reads."""
    exp_dir = Path(exp_dir)
    frame, _ = experiment_rows(exp_dir)
    if frame.empty:
        return frame
    frame = frame[~frame["reference"].astype(bool)].copy()
    per_system = {}
    for system in frame["system"].unique():
        summary = pd.read_csv(SystemLayout(exp_dir / system).ood_summary)
        dev = summary[(summary["split"] == "dev") & summary["subset"].str.startswith("unseen_system:")]
        per_system[system] = dev.groupby("scorer")["auroc"].agg(["mean", "min"])
    frame["dev_unseen_mean_auroc"] = [
        per_system[r.system]["mean"].get(r.scorer, np.nan) for r in frame.itertuples()
    ]
    frame["dev_unseen_worst_auroc"] = [
        per_system[r.system]["min"].get(r.scorer, np.nan) for r in frame.itertuples()
    ]
    return frame


# dev-only rules for picking one system x scorer (higher key = better); eval is never read
SELECTION_RULES: dict[str, tuple[str, object]] = {
    "lowest dev EER (ties: dev AUROC)": ("dev_eer", lambda r: (-r["dev_eer_%"], r["dev_auroc"])),
    "highest dev AUROC": ("dev_auroc", lambda r: (r["dev_auroc"], -r["dev_eer_%"])),
    "highest mean AUROC over dev's unseen systems": (
        "dev_unseen_mean",
        lambda r: (r["dev_unseen_mean_auroc"], r["dev_auroc"]),
    ),
    "highest lowest AUROC over dev's unseen systems": (
        "dev_unseen_worst",
        lambda r: (r["dev_unseen_worst_auroc"], r["dev_auroc"]),
    ),
    "highest mean AUROC over dev's unseen and train-side held-out systems": (
        "unseen_auroc",
        lambda r: (r.get("unseen_auroc", np.nan), -r["dev_eer_%"], r["dev_auroc"]),
    ),
}


def rule_table(exp_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Per selection rule (:data:`SELECTION_RULES`, dev numbers only), the eval OOD EER of what it
    picks in each run, their mean ± sd, and how often it beats the plain reference: the table that
    justifies a selection rule on many runs (seeds or protocol rotations) instead of one."""
    runs = []
    for exp in exp_dirs:
        cands = _dev_candidates(exp)
        if cands.empty:
            continue
        frame, _ = experiment_rows(exp)
        plain = frame.loc[frame["system"] == PLAIN_REFERENCE, "eval_eer_%"]
        runs.append((cands, plain.iloc[0] if len(plain) else np.nan))
    rows = []
    for rule, (_, key) in SELECTION_RULES.items():
        picks, eers, wins = [], [], 0
        for cands, plain in runs:
            ordered = sorted(
                cands.sort_values(["system", "scorer"]).to_dict("records"),
                key=lambda r: tuple(np.nan_to_num(v, nan=-np.inf) for v in key(r)),
                reverse=True,
            )
            best = ordered[0]
            picks.append(f"{best['system']} ({best['scorer']})")
            eers.append(best["eval_eer_%"])
            wins += bool(best["eval_eer_%"] <= 0.5 * plain)
        if not eers:
            continue
        eers_a = np.asarray(eers, dtype=float)
        rows.append(
            {
                "rule (dev only)": rule,
                "eval OOD EER (%) per run": ", ".join(f"{e:.1f}" for e in eers_a),
                "mean ± sd": _cell(eers_a.mean(), eers_a.std(ddof=1) if len(eers_a) > 1 else np.nan, True),
                f"runs at ≤ ½ {PLAIN_REFERENCE}": f"{wins} of {len(eers_a)}",
                "picks": "; ".join(picks),
            }
        )
    plains = np.asarray([p for _, p in runs], dtype=float)
    if len(plains) and not np.isnan(plains).all():
        rows.append(
            {
                "rule (dev only)": f"{PLAIN_REFERENCE} (knn), the plain reference",
                "eval OOD EER (%) per run": ", ".join(f"{e:.1f}" for e in plains),
                "mean ± sd": _cell(
                    np.nanmean(plains), np.nanstd(plains, ddof=1) if len(plains) > 1 else np.nan, True
                ),
                f"runs at ≤ ½ {PLAIN_REFERENCE}": "–",
                "picks": "",
            }
        )
    return pd.DataFrame(rows)


def frame_markdown(frame: pd.DataFrame) -> str:
    """A plain GitHub-markdown rendering of a small frame of strings."""
    lines = [
        "| " + " | ".join(map(str, frame.columns)) + " |",
        "| " + " | ".join("---" for _ in frame.columns) + " |",
    ]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def read_twins(corpus_summary: str | Path) -> dict[str, str]:
    """Unseen system -> the known system(s) it is a near-twin of, from a demo corpus's ``corpus_summary.csv``."""
    table = pd.read_csv(corpus_summary, keep_default_na=False)
    if "twin_of" not in table:
        return {}
    unseen = table[(table["role"] != "known") & (table["twin_of"] != "")]
    return dict(zip(unseen["system"], unseen["twin_of"], strict=True))


def summarize(
    exp_dirs: Sequence[str | Path], out: str | Path | None = None, twins: dict[str, str] | None = None
) -> tuple[pd.DataFrame, str]:
    """The combined table of one or several experiments, written as markdown to ``out``; returns (table, text)."""
    frames, notes = [], []
    for exp in exp_dirs:
        frame, note = experiment_rows(exp)
        frames.append(frame)
        notes += note
    if not any(len(f) for f in frames):
        return pd.DataFrame(), "\n".join(notes)
    table = combine(frames)
    n = len([f for f in frames if len(f)])
    head = (
        f"Known-class metrics on eval's known systems; OOD thresholds fitted at the dev EER. "
        f"{'Mean ± sd over ' + str(n) + ' runs' if n > 1 else 'One run'} ({', '.join(str(e) for e in exp_dirs)}). "
        "Ranked by eval OOD EER; * = the scorer chosen on dev (ood.default)."
    )
    ran_on = machines(exp_dirs)
    if ran_on:
        head += f" Computed on: {'; '.join(ran_on)}."
    text = head + "\n\n" + to_markdown(table) + "\n"
    picks = [dev_selected(f) for f in frames if len(f)]
    if picks:
        from sourcetracing.ood.report import RULE_DESCRIPTIONS

        counts = pd.Series([f"{a} / {b}" for a, b in picks if a]).value_counts()
        rules = sorted({str(r) for f in frames if len(f) and "select" in f for r in f["select"].unique()})
        said = "; ".join(RULE_DESCRIPTIONS.get(r, r) for r in rules) or RULE_DESCRIPTIONS["dev_eer"]
        text += (
            f"\nChosen on dev alone ({said}): "
            + ", ".join(f"{k} ({v} of {len(picks)} runs)" for k, v in counts.items())
            + ".\n"
        )
        chosen = chosen_table(list(exp_dirs), frames, twins)
        if not chosen.empty:
            text += "\n" + frame_markdown(chosen) + "\n"
    if n > 1:
        rules = rule_table(list(exp_dirs))
        if not rules.empty:
            text += (
                "\nSelection rules compared (each picks one system and scorer from dev numbers alone, "
                "references excluded; its eval OOD EER in each run):\n\n" + frame_markdown(rules) + "\n"
            )
    if n > 1:
        from sourcetracing.robustness import over_runs

        cards = over_runs(list(exp_dirs))
        if not cards.empty:
            text += (
                "\nRobustness cards over the runs that have one (each system's dev-chosen scorer, eval; "
                "F1 − clean: the change from the same run's clean row, mean and largest drop):\n\n"
                + frame_markdown(cards) + "\n"
            )  # fmt: skip
    if twins:
        near = twin_table(exp_dirs, twins)
        if not near.empty:
            text += "\nNear-twin unseen systems: eval AUROC against all known clips (each system's dev-chosen scorer).\n\n"
            text += frame_markdown(near) + "\n"
    if notes:
        text += "\n" + "\n".join(f"note: {n_}" for n_ in notes) + "\n"
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return table, text
