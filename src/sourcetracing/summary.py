"""One table comparing the systems of an experiment, read from the files their steps wrote.

Rows: the AASIST/REFD model (``results/`` + ``ood_step/``), the GE2E baseline (``ge2e/``) and the
MFCC reference (``reference/``), each with its known-class metrics and, for every OOD scorer, the
dev/eval EER and AUROC. Missing steps are left out with a note, so it works on partial runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from sourcetracing.config import add_config_args, config_from_args

SYSTEMS = {
    "AASIST (REFD)": ("results", "ood_step"),
    "GE2E": ("ge2e/results", "ge2e/ood_step"),
    "MFCC + logistic regression (reference)": ("reference", "reference"),
}


def system_rows(exp_dir: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Per system and OOD scorer: known-class eval accuracy/macro-F1 and dev/eval EER, AUROC, F1."""
    exp_dir = Path(exp_dir)
    rows, notes = [], []
    for system, (results, ood) in SYSTEMS.items():
        metrics_path = exp_dir / results / "metrics.json"
        summary_path = exp_dir / ood / "ood_summary.csv"
        if not metrics_path.is_file() or not summary_path.is_file():
            notes.append(
                f"{system}: not run yet ({metrics_path if not metrics_path.is_file() else summary_path})"
            )
            continue
        known = json.loads(metrics_path.read_text())
        summary = pd.read_csv(summary_path)
        default = json.loads((exp_dir / ood / "thresholds.json").read_text()).get("default")
        everything = summary[summary["subset"] == "all"]
        for scorer, part in everything.groupby("scorer", sort=False):
            dev = part[part["split"] == "dev"].iloc[0]
            ev = part[part["split"] == "eval"].iloc[0]
            rows.append(
                {
                    "system": system,
                    "scorer": scorer + (" *" if scorer == default else ""),
                    "eval_acc": known["eval"]["accuracy"],
                    "eval_macro_f1": known["eval"]["macro_f1"],
                    "dev_eer_%": 100 * dev["eer"],
                    "eval_eer_%": 100 * ev["eer"],
                    "eval_auroc": ev["auroc"],
                    "eval_ood_f1": ev["f1"],
                    "eval_open_set_f1": ev["open_set_macro_f1"],
                }
            )
    return pd.DataFrame(rows), notes


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-markdown table with rounded numbers."""
    header = "| " + " | ".join(df.columns) + " |"
    rule = "| " + " | ".join("---" for _ in df.columns) + " |"
    lines = [header, rule]
    for _, row in df.iterrows():
        cells = [
            f"{v:.3f}"
            if isinstance(v, float) and not k.endswith("%")
            else (f"{v:.1f}" if isinstance(v, float) else str(v))
            for k, v in row.items()
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    df, notes = system_rows(cfg.exp_dir)
    for note in notes:
        print(f"note: {note}")
    if df.empty:
        print("nothing to summarise yet")
        return 1
    text = to_markdown(df)
    out = Path(cfg.exp_dir) / "summary.md"
    out.write_text(
        "Known-class metrics on eval's known systems; OOD threshold fitted at the dev EER. "
        "* = the experiment's default scorer.\n\n" + text + "\n"
    )
    print(text)
    print(f"\nsummary written to {out}")
    return 0
