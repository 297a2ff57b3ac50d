"""The documentation checked against the code, so that it cannot go stale silently.

1. Every key of the config schema (static keys and every built-in component's section) has a
   description, and ``docs/configuration.md`` is exactly what ``scripts/config_reference.py``
   writes from the schema now.
2. Every command shown in README.md and docs/*.md exists as written: in fenced and indented code
   blocks and in inline code that starts with a command, each script named exists; each ``--flag``
   given to a Python script is an option of that script's argument parser (the parser is captured,
   not run: the script runs as ``__main__`` until it asks argparse to parse, wherever ``main`` and
   the parser live); ``make`` targets and variables exist in the Makefile; ``run.sh`` and other
   shell scripts' flags exist in their option parsers; dotted ``key.sub=value`` overrides (after
   ``--`` for run.sh, or among a step script's arguments) and inline config keys such as
   ``stats.features`` name real config keys.
3. Every relative link of README.md, docs/*.md and CHANGELOG.md leads to a file that exists and,
   with ``#anchor``, to a heading of that file.

A failure lists every problem with its file and line. ``test_the_checker_catches_planted_errors``
shows that the checker finds a nonexistent flag, target, script and config key.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from sourcetracing.config import DESCRIPTIONS, FREE_SECTIONS, _all_keys, schema

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

PYTHONS = re.compile(r"^(?:.*/)?(?:python3?(?:\.\d+)?|\$\(PY\)|\$PY|\$\{PY\})$")
SEPARATORS = {"&&", "||", ";", "|", "&"}
OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)*)=")
# inline code that names a config key: `stats.features`, `data.label=architecture`, `fusion.weights: free`
FILE_SUFFIXES = frozenset("py csv md json tsv txt png npz yaml yml pt sh wav gz zip".split())
# an option word: --flag, --flag=value, -h (not a quoted value such as "--plan hard", not -1)
OPTION = re.compile(r"^--?[A-Za-z][\w-]*(?:=.*)?$")
SHELL_OPTION = re.compile(r"^\s*((?:-{1,2}[A-Za-z0-9][\w-]*\|?)+)\)")


# ---------------------------------------------------------------------------------------------
# What the code defines


@functools.cache
def config_sections() -> frozenset[str]:
    return frozenset(k for k, v in schema().items() if isinstance(v, dict))


def config_key_problem(dotted: str) -> str | None:
    """None when ``dotted`` names a key of the schema (anything below a free section counts)."""
    node: object = schema()
    walked: list[str] = []
    for part in dotted.split("."):
        if ".".join(walked) in FREE_SECTIONS:
            return None
        if not isinstance(node, dict) or part not in node:
            return f"config key '{dotted}' does not exist"
        node = node[part]
        walked.append(part)
    return None


@functools.cache
def make_targets_and_variables() -> tuple[frozenset[str], frozenset[str]]:
    text = (REPO / "Makefile").read_text()
    targets, variables = set(), set()
    for line in text.splitlines():
        if line.startswith(("\t", "#")):
            continue
        assign = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?:\?|:|\+)?=", line)
        if assign:
            variables.add(assign.group(1))
            continue
        rule = re.match(r"^([^:=#\s][^:=#]*?)\s*:(?!=)", line)
        if rule:
            targets.update(t for t in rule.group(1).split() if not t.startswith("$"))
    return frozenset(targets), frozenset(variables)


@functools.cache
def shell_options(path: Path) -> frozenset[str]:
    """Options a shell script's ``case`` option parser accepts (``--config)``, ``-h|--help)``)."""
    options = set()
    for line in path.read_text().splitlines():
        match = SHELL_OPTION.match(line)
        if match:
            options.update(o for o in match.group(1).split("|") if o)
    return frozenset(options)


class _Captured(BaseException):
    """Raised in place of parsing: carries the parser a script built (BaseException: no script's
    ``except Exception`` swallows it)."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__()
        self.parser = parser


PARSE_METHODS = ("parse_args", "parse_known_args", "parse_intermixed_args", "parse_known_intermixed_args")


@contextlib.contextmanager
def capturing_parsers(argv: list[str], script_dir: Path):
    """While inside: asking any ArgumentParser to parse raises :class:`_Captured`; ``sys.argv`` is
    ``argv`` and the script's folder is importable, as when the script runs."""
    saved = {name: getattr(argparse.ArgumentParser, name) for name in PARSE_METHODS}

    def grab(self, *args, **kwargs):
        raise _Captured(self)

    old_argv, old_path = sys.argv, list(sys.path)
    for name in PARSE_METHODS:
        setattr(argparse.ArgumentParser, name, grab)
    sys.argv = argv
    sys.path.insert(0, str(script_dir))
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for name, method in saved.items():
            setattr(argparse.ArgumentParser, name, method)
        sys.argv, sys.path[:] = old_argv, old_path


@functools.cache
def script_parser(path: Path, leading: tuple[str, ...]) -> argparse.ArgumentParser | str:
    """The argument parser ``python <path> <leading...>`` builds, or why none was reached.

    ``leading`` are the command's words before its first option (a subcommand such as
    ``benchmark.py extract`` picks the parser)."""
    try:
        with capturing_parsers([str(path), *leading, "--help"], path.parent):
            runpy.run_path(str(path), run_name="__main__")
    except _Captured as captured:
        return captured.parser
    except SystemExit as err:
        return f"exited ({err.code}) before building an argument parser"
    except Exception as err:  # an import error in a half-moved module, ...
        return f"failed before building an argument parser: {type(err).__name__}: {err}"
    return "ran to the end without building an argument parser"


def parser_options(parser: argparse.ArgumentParser, words: list[str]) -> set[str]:
    """Option strings of ``parser``, plus those of a subcommand named in ``words``."""
    options = set(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for word in words:
                if word in action.choices:
                    options |= parser_options(action.choices[word], words)
    return options


def takes_positionals(parser: argparse.ArgumentParser) -> bool:
    return any(not a.option_strings for a in parser._actions)


# ---------------------------------------------------------------------------------------------
# What the documentation shows


def code_blocks(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of every fenced and indented code block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", lines[i])
        if fence:
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence.group(1)):
                body.append(lines[i])
                i += 1
            if fence.group(2) in ("", "bash", "sh", "shell", "console", "text"):
                blocks.append((start + 1, "\n".join(body)))
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            start, body = i, []
            while i < len(lines) and (lines[i].startswith("    ") or not lines[i].strip()):
                body.append(lines[i][4:])
                i += 1
            blocks.append((start + 1, "\n".join(body)))
            continue
        i += 1
    return blocks


def inline_spans(text: str) -> list[tuple[int, str]]:
    """(line number, text) of every inline code span outside code blocks."""
    spans, in_fence = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(r"^\s*(```|~~~)", line):
            in_fence = not in_fence
            continue
        if in_fence or line.startswith("    "):
            continue
        spans += [(number, m.group(1)) for m in re.finditer(r"(?<!`)`([^`\n]+)`(?!`)", line)]
    return spans


def logical_lines(block: str) -> list[tuple[int, str]]:
    """(offset, line) of a block, backslash continuations joined, prompts (``$ ``) dropped."""
    out, current, first = [], "", 0
    for offset, line in enumerate(block.splitlines()):
        if not current:
            first = offset
            line = re.sub(r"^\s*\$\s+", "", line)
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        out.append((first, current + line))
        current = ""
    if current:
        out.append((first, current))
    return out


def split_words(line: str) -> list[str]:
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError:  # unbalanced quotes: a prose fragment, not a command
        return []


def commands(words: list[str]) -> list[list[str]]:
    out, current = [], []
    for word in words:
        if word in SEPARATORS:
            out.append(current)
            current = []
        else:
            current.append(word)
    out.append(current)
    return [c for c in out if c]


def script_of(words: list[str]) -> tuple[str, str, list[str]] | None:
    """(kind, program, its arguments) of a command the checker knows, else None.

    kinds: ``python`` (a Python script), ``make``, ``shell`` (a shell script of the repository)."""
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # PYTHON=... PYTHONPATH=src
        words = words[1:]
    if not words:
        return None
    head, rest = words[0], words[1:]
    if head == "make":
        return "make", "make", rest
    if head == "torchrun":
        while rest and rest[0].startswith("-"):
            rest = rest[1:] if "=" in rest[0] else rest[2:]
        return script_of(rest) if rest else None
    if head == "bash" and rest:
        head, rest = rest[0], rest[1:]
    if PYTHONS.match(head):
        if not rest or rest[0].startswith("-"):  # python -c, python -m: not a repository script
            return None
        head, rest = rest[0], rest[1:]
        return ("python", head, rest) if head.endswith(".py") else None
    # without an interpreter: a script of scripts/, run.sh, or a script at the root (train_refd.py);
    # other paths in inline code (tests/test_web.py, training/loop.py) are mentions, not commands
    name = head.removeprefix("./")
    if (
        name.startswith("scripts/")
        or ("/" not in name and (REPO / name).is_file())
        or re.fullmatch(r"train_\w+\.py", name)
    ):
        if name.endswith(".py"):
            return "python", head, rest
        if name.endswith(".sh"):
            return "shell", head, rest
    return None


def check_command(words: list[str]) -> list[str]:
    """Problems of one command (empty when it is not one the checker knows, or when it is right)."""
    found = script_of(words)
    if found is None:
        return []
    kind, program, args = found
    if kind == "make":
        targets, variables = make_targets_and_variables()
        problems = []
        for arg in args:
            if arg.startswith("-"):
                continue
            if "=" in arg:
                name = arg.split("=", 1)[0]
                if name not in variables:
                    problems.append(f"make variable {name} is not defined in the Makefile")
            elif arg not in targets:
                problems.append(f"make target '{arg}' does not exist")
        return problems
    path = REPO / program.removeprefix("./")
    if not path.is_file():
        return [f"script {program} does not exist"]
    if kind == "shell":
        options, problems = shell_options(path), []
        own, overrides = (
            (args[: args.index("--")], args[args.index("--") + 1 :]) if "--" in args else (args, [])
        )
        for arg in own:
            if OPTION.match(arg):
                name = arg.split("=", 1)[0]
                if name not in options:
                    problems.append(f"{program}: option {name} is not in its option parser")
        for arg in overrides:
            match = OVERRIDE.match(arg)
            if match:
                problem = config_key_problem(match.group(1))
                if problem:
                    problems.append(f"{program} override {arg}: {problem}")
        return problems
    leading = []
    for arg in args:
        if arg.startswith("-"):
            break
        leading.append(arg)
    parser = script_parser(path, tuple(leading[:1]))
    if isinstance(parser, str):
        return [f"{program}: {parser}"]
    options, problems = parser_options(parser, args), []
    for arg in args:
        if arg == "--":
            continue
        if OPTION.match(arg):
            name = arg.split("=", 1)[0]
            if name not in options:
                problems.append(f"{program}: option {name} is not defined by its argument parser")
            continue
        match = OVERRIDE.match(arg)
        if match:
            if not takes_positionals(parser):
                problems.append(f"{program} takes no key=value overrides ({arg})")
                continue
            problem = config_key_problem(match.group(1))
            if problem:
                problems.append(f"{program} override {arg}: {problem}")
    return problems


def inline_config_key(span: str) -> str | None:
    """The config key an inline code span names (``stats.features``, ``data.label=architecture``)."""
    match = re.match(r"^([a-z_][a-z0-9_]*(?:\.[A-Za-z0-9_]+)+)(?:\s*[=:].*)?$", span.strip())
    if not match:
        return None
    key = match.group(1)
    if key.split(".")[0] not in config_sections() or key.rsplit(".", 1)[1] in FILE_SUFFIXES:
        return None
    return key


def doc_problems(text: str, name: str) -> list[str]:
    """Every problem of one markdown text, each as ``name:line: what``."""
    problems = []
    for start, block in code_blocks(text):
        for offset, line in logical_lines(block):
            for words in commands(split_words(line)):
                problems += [f"{name}:{start + offset}: {p}" for p in check_command(words)]
    for number, span in inline_spans(text):
        cleaned = re.sub(r"\\?\||[\[\]]", " ", span)
        words = split_words(cleaned)
        if words and script_of(words) is not None:
            problems += [f"{name}:{number}: {p}" for p in check_command(words)]
            continue
        keys = [inline_config_key(span)]
        keys += [m.group(1) for w in words if (m := OVERRIDE.match(w)) and "." in m.group(1)]
        for key in dict.fromkeys(k for k in keys if k and k.split(".")[0] in config_sections()):
            if problem := config_key_problem(key):
                problems.append(f"{name}:{number}: `{span}`: {problem}")
    return problems


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to hyphens."""
    text = (
        re.sub(r"[`*_]|<[^>]+>", "", heading.strip().lower()) if "`" in heading else heading.strip().lower()
    )
    text = re.sub(r"[^\w\- ]", "", text.replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text, found, in_fence = path.read_text(), set(), False
    for line in text.splitlines():
        if re.match(r"^\s*(```|~~~)", line):
            in_fence = not in_fence
        elif not in_fence and (match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            found.add(slug(match.group(1)))
    return found


def link_problems(path: Path) -> list[str]:
    """Relative links of a markdown file whose file or heading anchor does not exist."""
    problems, in_fence = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if re.match(r"^\s*(```|~~~)", line):
            in_fence = not in_fence
        if in_fence:
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(REPO).as_posix()}:{number}"
            if not linked.exists():
                problems.append(f"{where}: link to {target}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{where}: link to {target}: no heading with that anchor")
    return problems


# ---------------------------------------------------------------------------------------------
# The tests


def test_every_config_key_has_a_description():
    missing = [k for k in _all_keys(schema()) if not str(DESCRIPTIONS.get(k, "")).strip()]
    assert not missing, (
        "config keys without a description in sourcetracing/config.py DESCRIPTIONS "
        "(add one, then run python scripts/config_reference.py):\n  " + "\n  ".join(missing)
    )


def test_configuration_reference_is_current():
    generator = runpy.run_path(str(REPO / "scripts" / "config_reference.py"), run_name="config_reference")
    expected = generator["render"]()
    current = (REPO / "docs" / "configuration.md").read_text()
    assert current == expected, "docs/configuration.md is out of date: run python scripts/config_reference.py"


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_command_in_the_docs_exists(doc):
    problems = doc_problems(doc.read_text(), doc.relative_to(REPO).as_posix())
    assert not problems, "commands in the documentation that do not exist:\n  " + "\n  ".join(problems)


def test_the_checker_catches_planted_errors():
    planted = "\n".join(
        [
            "Run it:",
            "",
            "```bash",
            "python scripts/trace.py --config configs/demo.yaml --no-such-flag clip.wav",
            "./run.sh --config configs/demo.yaml --stage 2 --no-such-stage-flag -- train.epochz=3",
            "make no-such-target",
            "python scripts/no_such_script.py --help",
            "python train_refd.py --config configs/demo.yaml train.epochs=3 --resume",
            './run.sh --config configs/demo.yaml --corpus data/demo --corpus-args "--plan hard"',
            "python scripts/benchmark.py extract --no-such-bench-flag",
            "```",
            "",
            "Set `stats.no_such_key` or `data.label=architecture`; `make demo` works.",
        ]
    )
    problems = doc_problems(planted, "planted.md")
    text = "\n".join(problems)
    assert "planted.md:4: scripts/trace.py: option --no-such-flag is not defined" in text
    assert "option --no-such-stage-flag is not in its option parser" in text
    assert "config key 'train.epochz' does not exist" in text
    assert "make target 'no-such-target' does not exist" in text
    assert "script scripts/no_such_script.py does not exist" in text
    assert "config key 'stats.no_such_key' does not exist" in text
    assert "scripts/benchmark.py: option --no-such-bench-flag" in text  # a subcommand's own parser
    assert len(problems) == 7, text  # the correct commands and keys raise nothing


def test_every_link_in_the_docs_resolves():
    problems = [p for doc in [*DOC_FILES, REPO / "CHANGELOG.md"] for p in link_problems(doc)]
    assert not problems, "links in the documentation that lead nowhere:\n  " + "\n  ".join(problems)
