"""Shared fixtures: one small pip-only demo corpus per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory: pytest.TempPathFactory):
    """The ``--small`` demo corpus built with the pip-only engines: ``(folder, build report)``."""
    from sourcetracing_tools.demo.corpus import build_corpus

    out: Path = tmp_path_factory.mktemp("demo") / "demo"
    report = build_corpus(out, size="small", seed=0, engines="pip", jobs=2, progress=False, verbose=False)
    return out, report
