"""Console output of the downloader: messages that do not break progress bars, and byte progress bars."""

from __future__ import annotations

from tqdm import tqdm


def say(message: str) -> None:
    """Print one line without tearing an active progress bar."""
    tqdm.write(message)


def byte_bar(desc: str, total: int | None, *, enabled: bool, initial: int = 0, leave: bool = True) -> tqdm:
    """A progress bar counting bytes (KiB/MiB/GiB units); a no-op bar when ``enabled`` is False."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        disable=None if enabled else True,  # on a terminal only: no carriage returns in logs
        leave=leave,
    )
