#!/usr/bin/env python
"""Stage 10: every system and OOD scorer in one table, from the files the judging steps wrote.

python scripts/summarize_results.py --config configs/demo.yaml              # -> <exp_dir>/summary.md
python scripts/summarize_results.py --exp exp/demo_s0 exp/demo_s1 exp/demo_s2 --out exp/seeds.md   # mean ± sd
"""

import sys
from pathlib import Path

try:
    from sourcetracing import summary
    from sourcetracing.cli import (
        ListOption,
        announce_config,
        config_for,
        parse_command,
        print_config,
        report_error,
        step_parser,
    )
    from sourcetracing.errors import SourceTracingError
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = step_parser("summarize_results.py", summary.__doc__)
    parser.add_argument(
        "--exp",
        action=ListOption,
        default=None,
        metavar="DIR",
        help="experiment folder(s) to summarise instead of --config's exp_dir, comma-separated; "
        "several = mean ± sd",
    )
    parser.add_argument("--out", type=Path, default=None, help="markdown file (default <exp_dir>/summary.md)")
    parser.add_argument(
        "--twins", type=Path, default=None,
        help="a demo corpus's corpus_summary.csv: adds the near-twin table (default: the one beside data.root, if any)",
    )  # fmt: skip
    args = parse_command(parser, argv)
    if args.print_config and args.exp and len(args.exp) > 1:
        parser.error("--print-config prints one configuration: give one --exp folder (or --config)")
    try:
        twins_file = args.twins
        if args.print_config:
            return print_config(config_for(args.config, args.exp[0] if args.exp else None, args.overrides))
        if args.exp:
            dirs = [Path(e) for e in args.exp]
        else:
            cfg = config_for(args.config, None, args.overrides)
            announce_config(cfg, args.config, args.overrides)
            dirs = [Path(cfg.exp_dir)]
            beside = Path(cfg.data.root).parent / "corpus_summary.csv"
            twins_file = twins_file or (beside if beside.is_file() else None)
        out = args.out or (dirs[0] / "summary.md" if len(dirs) == 1 else None)
        table, text = summary.summarize(dirs, out, summary.read_twins(twins_file) if twins_file else None)
    except SourceTracingError as err:
        return report_error(err)
    print(text)
    if table.empty:
        return 1
    if out:
        print(f"summary written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
