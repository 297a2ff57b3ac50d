"""The cost of a run before the work: feature store size, time per stage and GPU memory per batch.

``preprocess_dataset.py --check`` prints :func:`cost_report`. Sizes come from the protocols, the
configured versions and the front end's ``output_shape`` (nothing is extracted). Times come from
rates measured on this machine by ``scripts/benchmark.py extract`` and ``train``, which save them to
:data:`RATES_FILE` keyed by :func:`sourcetracing.provenance.machine_description` and device type;
where nothing was measured the estimate says so instead of guessing.

Rates file layout::

    {"<machine description>": {"cuda": {"extract": {...}, "train": {...}}, "cpu": {...}}}

    extract: rows_per_s {precision: rows/s}, peak_gpu_mib {precision: MiB}, batch_size, model, measured
    train:   samples_per_s {precision: samples/s}, peak_gpu_mib {precision: MiB}, batch_size,
             frames, dim, measured
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sourcetracing.config import Config
from sourcetracing.errors import SourceTracingError

RATES_FILE = Path("exp/benchmarks/rates.json")
UNKNOWN = "unknown (run `make benchmarks` on this machine)"
STORE_BYTES = 2  # float16


@dataclass
class StoreSize:
    """Rows per split and the bytes of a store of ``rows x frames x dim`` float16 values."""

    rows: dict[str, int]
    frames: int
    dim: int

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    @property
    def bytes(self) -> int:
        return self.total_rows * self.frames * self.dim * STORE_BYTES


def human_bytes(n: float) -> str:
    """A byte count in binary units.

    >>> human_bytes(512), human_bytes(3 * 2**30)
    ('512 B', '3.0 GiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - unreachable


def human_seconds(s: float) -> str:
    """A duration as s, min or h.

    >>> human_seconds(42), human_seconds(600), human_seconds(9000)
    ('42 s', '10 min', '2.5 h')
    """
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def store_rows(cfg: Config, splits: Mapping[str, pd.DataFrame]) -> dict[str, int]:
    """Feature rows per split: clips x stored versions (augmented splits), or x test-time windows."""
    from sourcetracing.features.extract import split_versions

    return {name: len(df) * len(split_versions(cfg, name)) for name, df in splits.items()}


def frame_shape(cfg: Config) -> tuple[int, int]:
    """``(frames, dim)`` of one stored row, from the front end's ``output_shape`` (built on the CPU)."""
    from sourcetracing.data.audio import clip_samples
    from sourcetracing.features.frontends import build_frontend

    frontend = build_frontend(cfg.frontend, "cpu", sample_rate=int(cfg.data.sample_rate))
    frames, dim = frontend.output_shape(clip_samples(cfg))
    return int(frames), int(dim)


def store_size(cfg: Config, splits: Mapping[str, pd.DataFrame]) -> StoreSize:
    """The feature store's rows and size on disk, without extracting anything."""
    frames, dim = frame_shape(cfg)
    return StoreSize(store_rows(cfg, splits), frames, dim)


def read_rates(path: str | Path = RATES_FILE) -> dict:
    """Every machine's measured rates (``{}`` when the file is missing or unreadable)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def machine_rates(path: str | Path, machine: str, device_type: str) -> dict:
    """The rates measured on ``machine`` with a ``device_type`` device (``{}`` when none)."""
    entry = read_rates(path).get(machine, {})
    found = entry.get(device_type, {}) if isinstance(entry, dict) else {}
    return found if isinstance(found, dict) else {}


def save_rates(
    path: str | Path, machine: str, device_type: str, kind: str, values: Mapping[str, Any]
) -> Path:
    """Record one benchmark's rates (``kind``: extract | train) for this machine and device type."""
    from sourcetracing.provenance import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = read_rates(path)
    record = {**values, "measured": _dt.datetime.now().isoformat(timespec="seconds")}
    data.setdefault(machine, {}).setdefault(device_type, {})[kind] = record
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def _precision(name: str, device_type: str) -> str:
    """``auto`` resolved as the steps resolve it (bf16 on CUDA, float32 on CPU); tf32 runs as float32 storage."""
    if name == "auto":
        return "bf16" if device_type == "cuda" else "float32"
    return name


def _rate(measured: Mapping, key: str, precision: str) -> tuple[float | None, str]:
    """The rate at ``precision`` (else float32, said so), and a note."""
    rates = measured.get(key) or {}
    if precision in rates:
        return float(rates[precision]), ""
    if "float32" in rates:
        return float(rates["float32"]), f" (measured in float32, the config asks {precision})"
    return None, ""


def train_rows(cfg: Config, splits: Mapping[str, pd.DataFrame]) -> int:
    """Rows one training epoch reads: the train clips x the versions ``train.versions`` keeps."""
    from sourcetracing.features.extract import split_versions

    versions = split_versions(cfg, "train")
    if cfg.train.versions:
        versions = [v for v in versions if v in set(cfg.train.versions)]
    return len(splits["train"]) * len(versions) if "train" in splits else 0


def cost_lines(
    cfg: Config,
    splits: Mapping[str, pd.DataFrame],
    rates_path: str | Path = RATES_FILE,
    device_type: str | None = None,
    machine: str | None = None,
) -> list[str]:
    """The printed estimate: store size, stage times from measured rates, GPU memory per batch."""
    from sourcetracing.config import resolve_device
    from sourcetracing.provenance import machine_description

    device_type = device_type or resolve_device(cfg.device).type
    machine = machine or machine_description()
    lines = ["cost estimate (before any work):"]
    try:
        size = store_size(cfg, splits)
    except SourceTracingError as err:
        return lines + [f"  feature store: unknown (the front end cannot be built: {err})"]
    per_split = ", ".join(f"{k} {v:,}" for k, v in size.rows.items())
    lines.append(
        f"  feature store: {human_bytes(size.bytes)} on disk ({size.total_rows:,} rows of "
        f"{size.frames}x{size.dim} float16; rows per split: {per_split})"
    )
    measured = machine_rates(rates_path, machine, device_type)
    lines.append(
        f"  rates: {machine} ({device_type}); from {rates_path}"
        if measured
        else f"  rates: none measured for {machine} ({device_type}) in {rates_path}"
    )

    extract = measured.get("extract", {})
    precision = _precision(str(_frontend_precision(cfg)), device_type)
    rate, note = _rate(extract, "rows_per_s", precision)
    if cfg.frontend.name != "hf_ssl":
        stage1 = (
            f"unknown (the benchmark measures the hf_ssl front end; this config uses {cfg.frontend.name})"
        )
    elif rate:
        stage1 = (
            f"~{human_seconds(size.total_rows / rate)} at {rate:,.3g} rows/s{note} "
            f"(measured with {extract.get('model', 'the wav2vec2-base architecture')})"
        )
    else:
        stage1 = UNKNOWN
    lines.append(f"  stage 1 (features): {stage1}")

    train = measured.get("train", {})
    t_precision = _precision(str(cfg.train.precision), device_type)
    rate, note = _rate(train, "samples_per_s", t_precision)
    n_rows = train_rows(cfg, splits)
    epochs = int(cfg.train.epochs)
    if rate:
        shape = (int(train.get("frames", 0)), int(train.get("dim", 0)))
        scaled = rate * (shape[0] * shape[1]) / (size.frames * size.dim) if all(shape) else rate
        other = (
            ""
            if shape == (size.frames, size.dim) or not all(shape)
            else (f", scaled from {shape[0]}x{shape[1]} features")
        )
        stage2 = (
            f"~{human_seconds(epochs * n_rows / scaled)} for {epochs} epoch(s) of {n_rows:,} rows at "
            f"{scaled:,.3g} samples/s{note}{other} (training passes only)"
        )
    else:
        stage2 = UNKNOWN
    lines.append(f"  stage 2 (train {cfg.model.name}): {stage2}")
    lines.append(f"  GPU memory per batch: {gpu_memory(cfg, size, measured, device_type)}")
    return lines


def _frontend_precision(cfg: Config) -> str:
    """The front end's ``precision`` setting (``auto`` for front ends without one)."""
    from sourcetracing.features.frontends import frontend_settings

    return str(frontend_settings(cfg.frontend).get("precision", "auto"))


def gpu_memory(cfg: Config, size: StoreSize, measured: Mapping, device_type: str) -> str:
    """Peak GPU memory of the extraction and training batches: measured (scaled to the batch) or a bound."""
    if device_type != "cuda":
        return "n/a on CPU"
    parts = []
    for what, kind, batch, precision in (
        ("extraction", "extract", int(cfg.features.batch_size), _precision(_frontend_precision(cfg), "cuda")),
        ("training", "train", int(cfg.train.batch_size), _precision(str(cfg.train.precision), "cuda")),
    ):
        bench = measured.get(kind, {})
        peak = (bench.get("peak_gpu_mib") or {}).get(precision)
        if peak and bench.get("batch_size"):
            mib = float(peak) * batch / int(bench["batch_size"])
            parts.append(
                f"{what} ~{human_bytes(mib * 2**20)} at batch {batch} (measured {peak:,.0f} MiB at batch {bench['batch_size']}, scaled)"
            )
        elif kind == "train":
            floor = 2 * batch * size.frames * size.dim * 4  # the float32 batch and its mixed copy
            parts.append(
                f"{what} >= {human_bytes(floor)} for the batch alone at batch {batch}; peak {UNKNOWN}"
            )
        else:
            parts.append(f"{what} {UNKNOWN}")
    return "; ".join(parts)


__all__ = [
    "RATES_FILE",
    "StoreSize",
    "cost_lines",
    "machine_rates",
    "read_rates",
    "save_rates",
    "store_size",
]
