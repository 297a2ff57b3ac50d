"""Progress bars (tqdm) on a terminal only: in a log file or a pipe they stay silent.

``progress(iterable, desc=..., show=False)`` hides the bar; otherwise it shows only where the
output is a terminal (tqdm's ``disable=None``), so logs never fill with carriage returns.
"""

from __future__ import annotations

from typing import Any

from tqdm import tqdm


def progress(iterable: Any = None, show: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar that is silent when ``show`` is false or when stderr is not a terminal."""
    kwargs.pop("disable", None)
    return tqdm(iterable, disable=None if show else True, **kwargs)


def library_bars_on_terminal_only() -> None:
    """Silence the bars transformers draws while loading weights when stderr is not a terminal."""
    import sys

    if not sys.stderr.isatty():
        from transformers.utils import logging

        logging.disable_progress_bar()
