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

One command style for every script: hyphenated flags (an original baseline's spelling such as
``--feature_extraction_step`` only as a hidden alias, :func:`add_alias`); list options through
:class:`ListOption` (``--systems a,b`` == ``--systems a b`` == ``--systems a --systems b``);
``--print-config`` on every script that takes ``--config`` (the resolved configuration as YAML,
exit 0, no work); a flag name means one thing in every script (``--system``: a trained system,
``--exp``: experiment folder(s), ``--out``: where the result goes, ``--jobs``: parallel workers).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from sourcetracing.config import DEFAULT_CONFIG, Config, add_config_args, config_from_args, load_config
from sourcetracing.errors import MissingInputError, SourceTracingError


def step_parser(prog: str, doc: str | None, config_required: bool = False) -> argparse.ArgumentParser:
    """An argument parser with ``--config``, ``--print-config`` and dotted overrides."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_args(parser, required=config_required)
    add_print_config(parser)
    return parser


def add_print_config(parser: argparse.ArgumentParser) -> None:
    """``--print-config``: print the resolved configuration and exit (:func:`run`, :func:`exp_config`)."""
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved configuration (defaults + --config file + overrides) as YAML and exit",
    )


def print_config(cfg: Config) -> int:
    """Print ``cfg`` as YAML (what ``<exp_dir>/config.yaml`` would hold); returns exit code 0."""
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="", flush=True)
    return 0


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


def parse_command(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None, intermixed: bool = False
) -> argparse.Namespace:
    """``parser.parse_args(argv)`` (``parse_intermixed_args`` with ``intermixed``); with
    ``--print-config`` the script's required options and option groups are not required: printing
    the configuration needs none of them."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parse = parser.parse_intermixed_args if intermixed else parser.parse_args
    if "--print-config" not in argv:
        return parse(argv)
    relaxed = [a for a in parser._actions if a.required and a.option_strings]
    groups = [g for g in parser._mutually_exclusive_groups if g.required]
    for item in (*relaxed, *groups):
        item.required = False
    try:
        return parse(argv)
    finally:
        for item in (*relaxed, *groups):
            item.required = True


def run(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    body: Callable[[Config, argparse.Namespace], Any],
) -> int:
    """Parse, load the config, run ``body``; toolkit errors become one line and an exit code."""
    args = parse_command(parser, argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from_args(args)
        if getattr(args, "print_config", False):
            return print_config(cfg)
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


def exp_parser(prog: str | None, doc: str | None, inputs_help: str) -> argparse.ArgumentParser:
    """A parser with ``--config``, ``--exp`` (an experiment folder: its saved config),
    ``--print-config`` and the positional ``inputs`` (clips, folders and ``key=value`` overrides, in
    any order; :func:`split_overrides` tells them apart). Parse with ``parse_intermixed_args``."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help=f"experiment YAML (default {DEFAULT_CONFIG})")
    parser.add_argument(
        "--exp", default=None, help="experiment folder: use the config.yaml saved there (instead of --config)"
    )
    add_print_config(parser)
    parser.add_argument(INPUTS, nargs="*", action="extend", default=[], help=inputs_help)
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
    """The config of ``--config``/``--exp`` and the overrides, announced (:func:`config_line`).

    With ``--print-config`` it prints the config and exits with 0 (``SystemExit``, as ``--help``
    does): the script does no work."""
    cfg = config_for(args.config, args.exp, overrides)
    if getattr(args, "print_config", False):
        raise SystemExit(print_config(cfg))
    announce_config(cfg, Path(args.exp) / "config.yaml" if args.exp else args.config, overrides)
    return cfg


def positive_count(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a count of at least 1, got {text}")
    return value


# ---------------------------------------------------------------------------------------------
# One list style and hidden aliases

INPUTS = "inputs"  # the positional of exp_parser scripts: clips, folders and key=value overrides
OVERRIDES = "overrides"  # the positional of step_parser scripts: key=value overrides
OVERRIDE_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*=")


class ListOption(argparse.Action):
    """A list option: ``--systems a,b``, ``--systems a b`` and ``--systems a --systems b`` all give
    ``["a", "b"]`` (the first use replaces the default, later ones add to it).

    ``item`` converts each value (``int``, ``float``, ``Path``, :func:`positive_count`; a
    ``ValueError`` or ``argparse.ArgumentTypeError`` is a usage error, exit 2), ``choices`` limits
    each value. The values end at the next option. A word among them that is a ``key=value``
    override (and names no file) goes to the script's overrides, as it would anywhere else on the
    command line; in a script whose positionals are clips (:func:`exp_parser`) so does a word that
    names an existing file or folder: ``enroll.py --add X --systems aasist clips/`` enrols from
    ``clips/``. Help texts say "comma-separated" once.
    """

    def __init__(self, option_strings, dest, nargs="+", item=str, choices=None, **kwargs):
        if nargs != "+":
            raise ValueError("a ListOption takes one or more values (nargs='+')")
        self.item = item
        self.item_choices = tuple(choices) if choices is not None else None
        if self.item_choices and kwargs.get("metavar") is None:
            kwargs["metavar"] = "{" + ",".join(map(str, self.item_choices)) + "}"
        super().__init__(option_strings, dest, nargs=nargs, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        positional = _catch_all_positional(parser)
        items, routed = [], []
        for word in values:
            if positional is not None and _belongs_to_positionals(word, positional.dest):
                routed.append(word)
                continue
            for part in word.split(","):
                if part.strip():
                    items.append(self._convert(part.strip()))
        if not items:
            raise argparse.ArgumentError(self, "expected at least one value")
        current = getattr(namespace, self.dest, None)
        if current is None or current is self.default:
            current = []
        setattr(namespace, self.dest, [*current, *items])
        if routed:
            setattr(namespace, positional.dest, [*(getattr(namespace, positional.dest, None) or []), *routed])

    def _convert(self, text: str):
        try:
            value = self.item(text)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
            detail = str(err) if isinstance(err, argparse.ArgumentTypeError) else ""
            raise argparse.ArgumentError(self, detail or f"invalid value '{text}'") from None
        if self.item_choices is not None and value not in self.item_choices:
            raise argparse.ArgumentError(
                self, f"invalid choice '{text}' (choose from {', '.join(map(str, self.item_choices))})"
            )
        return value


def _catch_all_positional(parser: argparse.ArgumentParser) -> argparse.Action | None:
    """The positional (``inputs`` or ``overrides``) that words routed off a list option join."""
    for action in parser._actions:
        if not action.option_strings and action.dest in (INPUTS, OVERRIDES):
            return action
    return None


def _belongs_to_positionals(word: str, dest: str) -> bool:
    """A ``key=value`` override (not a file), or for ``inputs`` an existing file or folder."""
    exists = Path(word).exists()
    return bool(OVERRIDE_WORD.match(word) and not exists) or (dest == INPUTS and exists)


def add_alias(parser: argparse.ArgumentParser, alias: str, of: str) -> None:
    """Make ``alias`` a hidden spelling of the option ``of``: it parses the same way, ``--help`` shows
    ``of`` only. For the original baseline's commands (``--feature_extraction_step``)."""
    parser._option_string_actions[alias] = parser._option_string_actions[of]


def hidden_aliases(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{alias: the option it spells}`` of ``parser`` (:func:`add_alias`)."""
    return {
        name: action.option_strings[0]
        for name, action in parser._option_string_actions.items()
        if name not in action.option_strings
    }
