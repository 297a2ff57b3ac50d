#!/usr/bin/env python
"""Write a portable tracer bundle: one folder (and with --archive one .tar.gz or .zip) that traces
clips from any working directory, without the experiment folder or the corpus.

python scripts/export_bundle.py --config configs/demo.yaml --out bundles/demo [--system stats] [--archive [zip]]
python scripts/trace.py --bundle bundles/demo clip.wav more_clips/

Without --system the bundle holds the system chosen on dev (as trace.py uses it), else the best
on dev that a bundle can hold. What a bundle holds, what it supports and what not:
src/sourcetracing/bundle.py and src/sourcetracing/bundle_export.py.
"""

import sys

try:
    from sourcetracing.cli import run, step_parser
except ModuleNotFoundError as err:
    sys.exit(
        f"error: {err.name} is not importable from {sys.executable}; run `make install` and use "
        ".venv/bin/python (or ./run.sh, which finds it)"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse the options, write the bundle and say what it holds."""
    from pathlib import Path

    from sourcetracing.bundle_export import export_bundle

    parser = step_parser("export_bundle.py", __doc__)
    parser.add_argument(
        "--out", type=Path, required=True, help="the bundle folder to create (must not exist)"
    )
    parser.add_argument(
        "--system", default=None, help="trained system to bundle (default: the one chosen on dev)"
    )
    parser.add_argument(
        "--archive",
        nargs="?",
        const="tar.gz",
        default=None,
        choices=["tar.gz", "zip"],
        help="also write one archive of the folder beside it (default format tar.gz)",
    )

    def body(cfg, args) -> int:
        folder, packed, choice = export_bundle(cfg, args.out, args.system, args.archive)
        print(f"bundle of {choice.system} ({choice.reason}) written to {folder}")
        if packed:
            print(f"archive: {packed}")
        print(f"trace with: python scripts/trace.py --bundle {packed or folder} CLIPS")
        return 0

    return run(parser, argv, body)


if __name__ == "__main__":
    sys.exit(main())
