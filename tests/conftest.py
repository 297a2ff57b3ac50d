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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` are skipped, with the reason, where torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: torch.cuda.is_available() is False on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
