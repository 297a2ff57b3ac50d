"""Every script's command line follows one style (checked on the parsers the scripts build).

1. Every option and positional has help text.
2. Flags are hyphenated; an underscore spelling exists only as a hidden alias of a hyphenated flag
   (:func:`sourcetracing.cli.add_alias`), declared in ``ORIGINAL_SPELLINGS`` with the original
   command that needs it (``ood_detector.py --feature_extraction_step``).
3. Every list option is a :class:`~sourcetracing.cli.ListOption` whose help says
   "comma-separated", and ``--x a,b``, ``--x a b`` and ``--x a --x b`` parse alike; a ``key=value``
   after a list option stays an override, a clip after ``enroll.py --systems`` stays a clip.
4. A flag name used by two or more scripts means one thing everywhere (``SHARED``: its
   destination, the kind of value and a word its help must use).
5. Every script that takes ``--config`` takes ``--print-config``: it prints the resolved config as
   YAML (read back here, with the override's ``exp_dir``) and exits 0 without work; a bad
   override key exits with 2 from every one of them, as the README's exit-code table says.

The parsers are captured without running the scripts, as ``tests/test_docs.py`` does.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import functools
import importlib.util
import io
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_docs import script_parser

from sourcetracing import errors
from sourcetracing.cli import ListOption, hidden_aliases

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO / "configs" / "demo.yaml"

# hidden underscore spellings, each needed by a command of the original baseline
ORIGINAL_SPELLINGS = {
    (
        "ood_detector.py",
        "--feature_extraction_step",
    ): "python scripts/ood_detector.py --feature_extraction_step",
}
# options without help text on purpose
UNDOCUMENTED = {("benchmark.py ood", "--child"): "the benchmark's own subprocess call"}
# options that take several values but are no ListOption
NOT_LISTS = {
    ("download_resources.py", "--base-url"): "each value is [NAME=]URL and a URL may hold commas: repeat it",
    ("robustness.py", "--compare"): "exactly two experiments, BASE and OTHER",
}

# flag -> (destination, kind of value, a word its help uses in every script)
SHARED = {
    "--system": ("system", "value", "trained system"),
    "--systems": ("systems", "list", "trained systems"),
    "--exp": ("exp", "value|list", "experiment folder"),
    "--config": ("config", "value", "experiment YAML"),
    "--print-config": ("print_config", "switch", "resolved configuration"),
    "--out": ("out", "value", ""),  # where the result goes: a file or folder, per script
    "--seed": ("seed", "int", "seed"),
    "--device": ("device", "value", "cpu"),
    "--jobs": ("jobs", "int", "workers|threads|processes"),
    "--workers": ("workers", "int", "workers"),
    "--threads": ("threads", "int", "threads"),
    "--force": ("force", "switch", ""),  # replace what an earlier run wrote
    "--resume": ("resume", "switch", "last.pt"),
    "--splits": ("splits", "list", "splits"),
    "--precisions": ("precisions", "list", "precision"),
    "--check": ("check", "switch", ""),  # check only, do no work
    "--list": ("list", "switch", "list"),
    "--no-progress": ("no_progress", "switch", "progress"),
    "--checkpoint": ("checkpoint", "value", "best.pt"),
    "--bundle": ("bundle", "value", "bundle"),
    "--rates": ("rates", "value", "rates|rows/s|samples/s"),
    "--batch-size": ("batch_size", "int", "batch"),
    "--dir": ("dir", "value", "folder"),
    "--dim": ("dim", "int", "dimension"),
    "--frames": ("frames", "int", "frames"),
    "--clips": ("clips", "int", "clips"),
    "--classes": ("classes", "int", "classes"),
    "--repeats": ("repeats", "int", "repetitions|draws"),
}


# ---------------------------------------------------------------------------------------------
# The parsers


def script_paths() -> list[Path]:
    return [*sorted((REPO / "scripts").glob("*.py")), REPO / "train_refd.py", REPO / "train_ge2e.py"]


@functools.cache
def parsers() -> dict[str, argparse.ArgumentParser | str]:
    """Script name (``benchmark.py extract`` for a subcommand) -> its parser, or why none was built."""
    found: dict[str, argparse.ArgumentParser | str] = {}
    for path in script_paths():
        if path.name == "benchmark.py":  # a dispatcher: each benchmark has its own parser
            benchmarks = runpy.run_path(str(path), run_name="benchmark")["BENCHMARKS"]
            for name in benchmarks:
                found[f"benchmark.py {name}"] = script_parser(path, (name,))
        else:
            found[path.name] = script_parser(path, ())
    return found


def built() -> dict[str, argparse.ArgumentParser]:
    return {name: p for name, p in parsers().items() if not isinstance(p, str)}


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def kind(action: argparse.Action) -> str:
    if isinstance(action, ListOption):
        return "list"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        return "switch"
    if getattr(action.type, "__name__", "") in ("int", "positive_count"):
        return "int"
    return "value"


def config_scripts() -> list[str]:
    return sorted(n for n, p in built().items() if "--config" in p._option_string_actions)


# ---------------------------------------------------------------------------------------------
# The style


def test_every_script_builds_its_parser():
    broken = {n: p for n, p in parsers().items() if isinstance(p, str)}
    assert not broken, broken
    assert len(built()) >= 30 and "benchmark.py ge2e-loss" in built()


def test_every_option_has_help_text():
    missing = [
        f"{name}: {action.option_strings[0] if action.option_strings else action.dest}"
        for name, parser in built().items()
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction)
        and (not (action.help or "").strip() or action.help == argparse.SUPPRESS)
        and (name, (action.option_strings or [""])[0]) not in UNDOCUMENTED
    ]
    assert not missing, "options without help text:\n  " + "\n  ".join(missing)


def test_flags_are_hyphenated_and_underscores_only_hidden_original_aliases():
    problems = []
    for name, parser in built().items():
        aliases = hidden_aliases(parser)
        for flag in parser._option_string_actions:
            if "_" in flag and flag not in aliases:
                problems.append(f"{name}: {flag} has an underscore (hyphenate it)")
        for alias, of in aliases.items():
            if (name, alias) not in ORIGINAL_SPELLINGS:
                problems.append(f"{name}: hidden alias {alias} of {of} is not an original spelling")
            if "_" in of:
                problems.append(f"{name}: {alias} is an alias of {of}, itself not hyphenated")
    assert not problems, "\n  ".join(problems)
    assert set(ORIGINAL_SPELLINGS) <= {(n, a) for n, p in built().items() for a in hidden_aliases(p)}


def test_the_original_feature_extraction_step_spelling_still_works():
    parser = built()["ood_detector.py"]
    assert parser.parse_args(["--feature_extraction_step"]).feature_extraction_step
    assert parser.parse_args(["--feature-extraction-step"]).feature_extraction_step
    assert not parser.parse_args([]).feature_extraction_step
    usage = parser.format_usage()  # the hidden alias is not offered
    assert "--feature-extraction-step" in usage and "--feature_extraction_step" not in usage


def sample(action: ListOption) -> tuple[str, str]:
    """Two values the list option accepts."""
    if action.item_choices:
        return str(action.item_choices[0]), str(action.item_choices[-1])
    if action.item in (int, float) or getattr(action.item, "__name__", "") == "positive_count":
        return "1", "3"
    return "first", "second"


def test_list_options_take_commas_spaces_and_repeats_alike():
    lists, problems = 0, []
    for name, parser in built().items():
        for action in options(parser):
            flag = action.option_strings[0]
            several = action.nargs in ("+", "*") or isinstance(action.nargs, int) and action.nargs > 1
            several |= isinstance(action, (argparse._AppendAction, argparse._ExtendAction))
            if not isinstance(action, ListOption):
                if (several or "comma" in (action.help or "")) and (name, flag) not in NOT_LISTS:
                    problems.append(f"{name}: {flag} takes several values but is no ListOption")
                continue
            lists += 1
            if "comma-separated" not in action.help:
                problems.append(f"{name}: {flag}: its help does not say 'comma-separated'")
            alone = argparse.ArgumentParser(add_help=False)
            alone._add_action(copy.copy(action))
            a, b = sample(action)
            forms = [[flag, f"{a},{b}"], [flag, a, b], [flag, a, flag, b]]
            parsed = [getattr(alone.parse_args(form), action.dest) for form in forms]
            if not parsed[0] == parsed[1] == parsed[2] == [action.item(a), action.item(b)]:
                problems.append(f"{name}: {flag}: {forms} parse to {parsed}")
    assert not problems, "\n  ".join(problems)
    assert lists >= 18  # --scorers, --conditions, --systems, --splits, --exp, --only, --precisions, ...


def test_a_key_value_after_a_list_option_stays_an_override_and_a_clip_a_clip(tmp_path):
    robustness = built()["robustness.py"]
    args = robustness.parse_args(
        ["a.b=1", "--systems", "aasist", "mfcc", "train.epochs=3", "--conditions", "clean"]
    )
    assert args.systems == ["aasist", "mfcc"] and args.conditions == ["clean"]
    assert args.overrides == ["a.b=1", "train.epochs=3"]
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"")
    enroll = built()["enroll.py"]
    args = enroll.parse_intermixed_args(["--add", "new", "--systems", "aasist,ge2e", str(clip), "seed=3"])
    assert args.systems == ["aasist", "ge2e"] and args.inputs == [str(clip), "seed=3"]


def test_a_flag_name_means_one_thing_in_every_script():
    uses: dict[str, list[tuple[str, argparse.Action]]] = collections.defaultdict(list)
    for name, parser in built().items():
        for action in options(parser):
            for flag in action.option_strings:
                uses[flag].append((name, action))
    problems = []
    for flag, found in sorted(uses.items()):
        if len(found) < 2:
            continue
        if flag not in SHARED:
            scripts = ", ".join(n for n, _ in found)
            problems.append(f"{flag} is used by {scripts}: add its one meaning to SHARED")
            continue
        dest, kinds, word = SHARED[flag]
        for name, action in found:
            if action.dest != dest or kind(action) not in kinds.split("|"):
                problems.append(f"{name}: {flag} is {action.dest}/{kind(action)}, elsewhere {dest}/{kinds}")
            if word and not re.search(word, action.help or "", re.IGNORECASE):
                problems.append(f"{name}: {flag}: its help does not say '{word}': {action.help!r}")
    assert not problems, "\n  ".join(problems)


def test_every_config_script_takes_print_config():
    scripts = config_scripts()
    assert len(scripts) >= 20 and "trace.py" in scripts and "summarize_results.py" in scripts
    missing = [n for n in scripts if "--print-config" not in built()[n]._option_string_actions]
    assert not missing, missing


# ---------------------------------------------------------------------------------------------
# --print-config and the exit codes, run


def script_main(name: str):
    path = (REPO / "scripts" / name) if (REPO / "scripts" / name).is_file() else REPO / name
    spec = importlib.util.spec_from_file_location(f"command_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def call(name: str, argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` of a script in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = script_main(name)(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("script", config_scripts())
def test_print_config_prints_the_resolved_config_and_a_bad_key_exits_2(script, tmp_path):
    exp = tmp_path / "exp"
    code, out, err = call(script, ["--config", str(DEMO_CONFIG), "--print-config", f"exp_dir={exp}"])
    assert code == 0, err
    printed = yaml.safe_load(out)
    assert printed["exp_dir"] == str(exp) and printed["name"] == "demo"
    assert not exp.exists()  # no work done
    code, out, err = call(script, ["--config", str(DEMO_CONFIG), "--print-config", "train.epoch=3"])
    assert (
        code == 2 and err.strip() == "error: unknown config key 'train.epoch' (did you mean 'train.epochs'?)"
    )


def test_print_config_as_a_command(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "robustness.py"), "--config", str(DEMO_CONFIG),
         "--systems", "aasist", "train.epochs=2", "--print-config", f"exp_dir={tmp_path / 'x'}"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["exp_dir"] == str(tmp_path / "x") and printed["train"]["epochs"] == 2


def test_print_config_of_a_saved_experiment(tmp_path):
    from sourcetracing.config import load_config, save_resolved

    cfg = load_config(DEMO_CONFIG, [f"exp_dir={tmp_path}", "seed=7"])
    save_resolved(cfg)
    code, out, _ = call("trace.py", ["--exp", str(tmp_path), "--print-config"])
    assert code == 0 and yaml.safe_load(out)["seed"] == 7
    code, out, _ = call("summarize_results.py", ["--exp", str(tmp_path), "--print-config", "seed=8"])
    assert code == 0 and yaml.safe_load(out)["seed"] == 8


def test_usage_errors_exit_2_and_renamed_enrolment_flags_say_their_new_name():
    code, _, err = call("fusion.py", ["--config", str(DEMO_CONFIG), "--no-such-flag"])
    assert code == 2 and "unrecognized arguments: --no-such-flag" in err
    code, _, err = call("enroll.py", ["--config", str(DEMO_CONFIG), "--system", "x", "clip.wav"])
    assert code == 2 and "--system is now --add NAME" in err
    code, _, err = call("enroll.py", ["--config", str(DEMO_CONFIG), "--measure", "--into", "ge2e"])
    assert code == 2 and "--into is now --systems" in err


def test_the_readme_exit_code_table_is_what_the_errors_exit_with():
    text = (REPO / "README.md").read_text()
    section = text.split("## Exit codes and troubleshooting", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            rows[int(cells[0])] = cells[1]
    documented = {
        1: (errors.DataError, "data"),
        2: (errors.ConfigError, "config"),
        3: (errors.StaleInputError, "stale input"),
        4: (errors.WouldOverwriteError, "would overwrite"),
        5: (errors.LockedError, "locked"),
    }
    assert sorted(rows) == [0, 1, 2, 3, 4, 5, 130], rows
    for code, (error, meaning) in documented.items():
        assert error.exit_code == code and rows[code].startswith(meaning), (code, rows[code])
    assert errors.MissingInputError.exit_code == 1 and rows[0] == "done"
    assert rows[130].startswith("interrupted")
