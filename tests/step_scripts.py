"""The ``main`` of the step scripts in ``scripts/``, loaded in this process (what ``python scripts/<name>`` runs)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import cache
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@cache
def script_main(name: str) -> Callable[[list[str] | None], int]:
    """``scripts/<name>``'s ``main``."""
    spec = importlib.util.spec_from_file_location(f"script_{Path(name).stem}", SCRIPTS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def trace_main(argv: list[str] | None = None) -> int:
    """``scripts/trace.py``."""
    return script_main("trace.py")(argv)


def enroll_main(argv: list[str] | None = None) -> int:
    """``scripts/enroll.py``."""
    return script_main("enroll.py")(argv)
