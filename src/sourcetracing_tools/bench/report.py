"""Shared pieces of the device benchmarks: the machine line, timing with device synchronisation,
peak GPU memory, target checks and Markdown tables (printed and optionally written with ``--out``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from sourcetracing.provenance import cpu_name, cpu_vector_support


def pick_device(name: str) -> torch.device:
    """``auto`` = CUDA when present, else CPU; ``cuda`` without CUDA is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda, but torch sees no CUDA device on this machine")
    return device


def machine_line(device: torch.device) -> str:
    """One line naming the machine a table was measured on."""
    cpus = f"{cpu_name()}, {os.cpu_count()} CPU(s) ({cpu_vector_support()}), load average {os.getloadavg()[0]:.1f}"
    text = f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s); CPU: {cpus}"
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda})"
        return f"GPU: {gpu}; {text}"
    return f"device: CPU; {text}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes, the device's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


@dataclass
class PeakMemory:
    """Peak GPU memory allocated by tensors inside a :func:`peak_memory` block (NaN on CPU)."""

    mib: float = math.nan


@contextmanager
def peak_memory(device: torch.device) -> Iterator[PeakMemory]:
    """Measure ``torch.cuda.max_memory_allocated`` over the block (what was already allocated counts)."""
    result = PeakMemory()
    if device.type != "cuda":
        yield result
        return
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield result
    finally:
        synchronize(device)
        result.mib = torch.cuda.max_memory_allocated(device) / 2**20


def free_device_memory(device: torch.device) -> None:
    """Return cached GPU blocks so the next measurement starts from what is really held."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fmt_rate(value: float) -> str:
    """A speed with three significant digits below 100 and thousands separators above.

    >>> fmt_rate(0.0412), fmt_rate(12.345), fmt_rate(2345.6)
    ('0.0412', '12.3', '2,346')
    """
    return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"


def _cell(value: object, fmt: str | Callable[[float], str] | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        return fmt(value) if callable(fmt) else format(value, fmt)
    return str(value).replace("|", "\\|")  # a bar inside a cell would end it


def markdown_table(
    rows: Sequence[dict], columns: Sequence[str], formats: dict[str, str] | None = None
) -> str:
    """A Markdown table of ``rows`` (dicts) in the order of ``columns``; NaN and None print as ``–``.

    >>> print(markdown_table([{"a": 1.23456, "b": None}, {"a": "x|y"}], ["a", "b"], {"a": ".2f"}))
    | a | b |
    | --- | --- |
    | 1.23 | – |
    | x\\|y | – |
    """
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c), formats.get(c)) for c in columns) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """A performance target: ``measured`` must reach ``required`` (a ratio, or a share shown in %)."""

    name: str
    measured: float
    required: float
    applies: bool = True  # False: measured where the target does not apply (a CPU run)
    percent: bool = False

    def _show(self, value: float) -> str:
        return f"{100 * value:.0f} %" if self.percent else f"{value:.2f}×"

    @property
    def met(self) -> bool:
        return math.isfinite(self.measured) and self.measured >= self.required

    def row(self) -> dict:
        verdict = "yes" if self.met else "NO"
        if not math.isfinite(self.measured):
            verdict = "not measured"
        elif not self.applies:
            verdict += " (target is for CUDA)"
        return {
            "target": self.name,
            "measured": self._show(self.measured) if math.isfinite(self.measured) else "–",
            "required": f"≥ {100 * self.required:.0f} %" if self.percent else f"≥ {self.required:g}×",
            "met": verdict,
        }


def targets_table(targets: Sequence[Target]) -> str:
    return markdown_table([t.row() for t in targets], ["target", "measured", "required", "met"])


def emit(text: str, out: Path | None) -> None:
    """Print the report and write it to ``out`` (folders made as needed)."""
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"written: {out}")
