"""What every step script shares: ``--config`` + overrides, one-line errors, exit codes, logging.

A step script is::

    def main(argv=None) -> int:
        parser = step_parser("train_refd.py", __doc__)
        parser.add_argument("--resume", action="store_true")
        return run(parser, argv, lambda cfg, args: train(cfg, resume=args.resume))

:func:`run` loads the config and maps every :class:`~sourcetracing.errors.SourceTracingError` to
``error: <one line>`` on stderr and its ``exit_code`` (1 data, 2 config, 3 stale input, 4 would
overwrite, 5 locked); Ctrl-C exits with 130. Before the work starts it prints one line naming the
config it loaded and the experiment folder it writes to (:func:`config_line`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sourcetracing.config import DEFAULT_CONFIG, Config, add_config_args, config_from_args, load_config
from sourcetracing.errors import MissingInputError, SourceTracingError


def step_parser(prog: str, doc: str | None, config_required: bool = False) -> argparse.ArgumentParser:
    """An argument parser with ``--config`` and dotted overrides."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_args(parser, required=config_required)
    return parser


def config_line(cfg: Config, path: str | os.PathLike | None, overrides: list[str] | None = None) -> str:
    """``config: <file> [+ N override(s)] (exp_dir <folder>)``; ``path`` None: the default config.

    >>> from types import SimpleNamespace
    >>> config_line(SimpleNamespace(exp_dir="exp/x"), None, ["exp_dir=exp/x"])
    'config: configs/refd_mlaad.yaml, the default (no --config given) + 1 override(s) (exp_dir exp/x)'
    """
    source = str(path) if path is not None else f"{DEFAULT_CONFIG}, the default (no --config given)"
    extra = f" + {len(overrides)} override(s)" if overrides else ""
    return f"config: {source}{extra} (exp_dir {cfg.exp_dir})"


def announce_config(cfg: Config, path: str | os.PathLike | None, overrides: list[str] | None = None) -> None:
    """Print :func:`config_line` once per run (on the first process only under torchrun)."""
    if os.environ.get("RANK", "0") == "0":
        print(config_line(cfg, path, overrides), flush=True)


def report_error(err: BaseException) -> int:
    """Print one line for a toolkit error and return its exit code."""
    if isinstance(err, SourceTracingError):
        print(f"error: {err}", file=sys.stderr)
        return int(err.exit_code)
    raise err


def run(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    body: Callable[[Config, argparse.Namespace], Any],
) -> int:
    """Parse, load the config, run ``body``; toolkit errors become one line and an exit code."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        announce_config(cfg, args.config, args.overrides)
        result = body(cfg, args)
    except SourceTracingError as err:
        return report_error(err)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


# ---------------------------------------------------------------------------------------------
# Scripts that also take an experiment folder (--exp) and clips mixed with overrides


def exp_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser with ``--config`` and ``--exp`` (an experiment folder: its saved config); the script
    adds its positional ``inputs`` (clips, folders and ``key=value`` overrides, in any order)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    parser.add_argument("--exp", default=None, help="an experiment folder: use its saved config.yaml")
    return parser


def split_overrides(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(inputs, overrides)``: an item with ``=`` that names no existing file is an override."""
    overrides = [a for a in items if "=" in a and not Path(a).exists()]
    return [a for a in items if a not in overrides], overrides


def config_for(config: str | None, exp: str | None, overrides: list[str]) -> Config:
    """``--config`` plus overrides, or the resolved config saved in an experiment folder (``--exp``)."""
    if exp:
        path = Path(exp) / "config.yaml"
        if not path.is_file():
            raise MissingInputError(
                f"{path} not found: is {exp} an experiment folder (run the pipeline steps first)?"
            )
        return load_config(path, overrides)
    return load_config(config or DEFAULT_CONFIG, overrides)


def exp_config(args: argparse.Namespace, overrides: list[str]) -> Config:
    """The config of ``--config``/``--exp`` and the overrides, announced (:func:`config_line`)."""
    cfg = config_for(args.config, args.exp, overrides)
    announce_config(cfg, Path(args.exp) / "config.yaml" if args.exp else args.config, overrides)
    return cfg


def positive_count(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a count of at least 1, got {text}")
    return value


def count_list(text: str) -> list[int]:
    """``1,3,5,10`` -> ``[1, 3, 5, 10]`` (an argparse type: integers of at least 1)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected integers >= 1, got '{text}'")
    return values
