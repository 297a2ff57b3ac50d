"""The report of ``scripts/gpu_check.sh``: one Markdown file from the steps it ran and their outputs.

    python -m sourcetracing_tools.bench.gpu_check DIR

reads ``DIR/steps.tsv`` (one line per step: name, status, seconds, log file, summary) and the
benchmark reports ``DIR/extract.md`` and ``DIR/train.md`` when present, prints one combined table
(every step and every performance target) followed by the benchmark tables, and writes it all to
``DIR/gpu_check.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
from pathlib import Path

from sourcetracing_tools.bench.report import markdown_table

STEP_COLUMNS = ("step", "status", "seconds", "log", "summary")
TARGET_HEADER = "| target | measured | required | met |"
BENCHMARKS = ("extract.md", "train.md")  # the benchmark reports, in this order


def read_steps(path: Path) -> list[dict]:
    """The steps recorded by the script (tab-separated, no header)."""
    steps = []
    for line in path.read_text().splitlines():
        if line.strip():
            fields = line.split("\t") + [""] * len(STEP_COLUMNS)
            steps.append(dict(zip(STEP_COLUMNS, fields[: len(STEP_COLUMNS)], strict=True)))
    return steps


def target_rows(report: str) -> list[dict]:
    """The rows of the targets table of a benchmark report.

    >>> text = "x\\n| target | measured | required | met |\\n| --- | --- | --- | --- |\\n| a | 2.00× | ≥ 1.5× | yes |\\n"
    >>> target_rows(text)
    [{'target': 'a', 'measured': '2.00×', 'required': '≥ 1.5×', 'met': 'yes'}]
    """
    lines = report.splitlines()
    if TARGET_HEADER not in lines:
        return []
    rows = []
    for line in lines[lines.index(TARGET_HEADER) + 2 :]:
        if not line.startswith("| "):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows.append(dict(zip(("target", "measured", "required", "met"), cells, strict=False)))
    return rows


def build_report(directory: Path, cuda: str) -> str:
    """The combined report: a header, one table of steps and targets, then the benchmark tables."""
    steps = read_steps(directory / "steps.tsv") if (directory / "steps.tsv").is_file() else []
    table = [
        {
            "check": s["step"],
            "result": s["status"],
            "seconds": s["seconds"],
            "details": s["summary"],
            "log": s["log"],
        }
        for s in steps
    ]
    sections = []
    for name in BENCHMARKS:
        path = directory / name
        if not path.is_file():
            continue
        text = path.read_text().strip()
        sections.append(text)
        for row in target_rows(text):
            table.append(
                {
                    "check": f"target: {row['target']}",
                    "result": row["met"],
                    "details": f"measured {row['measured']}, required {row['required']}",
                    "log": name,
                }
            )
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    header = [
        "# GPU check",
        "",
        f"{when} on {platform.node()}; {cuda}",
        "",
        markdown_table(table, ["check", "result", "seconds", "details", "log"]),
    ]
    return "\n".join([*header, *(f"\n{s}" for s in sections)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "directory", type=Path, help="the folder of gpu_check.sh's logs; gpu_check.md is written there"
    )
    parser.add_argument("--cuda", default="", help="one line describing the CUDA device (or its absence)")
    args = parser.parse_args(argv)
    text = build_report(args.directory, args.cuda)
    (args.directory / "gpu_check.md").write_text(text)
    print(text)
    print(f"report written: {args.directory / 'gpu_check.md'} (logs beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
