"""Provenance, atomic writes and locks: nothing stale, nothing half-written, nothing written twice at once.

* Every artifact folder (feature store, outputs, OOD step) carries a ``manifest.json`` with an
  ``id`` (a content digest of its files) and the ids of what it was made from; a checkpoint
  carries the same in its ``provenance`` entry. A step compares what it reads against what the
  upstream artifact is now and stops with :class:`StaleInputError` naming the step to rerun.
* :func:`atomic_dir` builds a folder under a temporary name and swaps it into place when complete,
  so an interrupted step leaves the previous complete result (or none); leftovers of a killed run
  are cleaned up by the next one.
* :func:`step_lock` holds an exclusive ``flock`` on a lock file for the duration of a step.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import platform
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sourcetracing.errors import LockedError, MissingInputError, StaleInputError

MANIFEST = "manifest.json"


# ---------------------------------------------------------------------------------------------
# Digests


def data_digest(value: Any) -> str:
    """A stable digest of plain data (dicts, lists, strings, numbers).

    >>> data_digest({"b": 1, "a": [1, 2]}) == data_digest({"a": [1, 2], "b": 1})
    True
    """
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha1 of a file's bytes."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def folder_digest(folder: str | Path, exclude: tuple[str, ...] = (MANIFEST,)) -> str:
    """A digest of every file under a folder (names and contents), ignoring ``exclude`` names."""
    folder = Path(folder)
    parts = []
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in exclude and not p.name.endswith(".png"):
            parts.append((p.relative_to(folder).as_posix(), file_digest(p)))
    return data_digest(parts)


# ---------------------------------------------------------------------------------------------
# Manifests


def write_manifest(folder: str | Path, kind: str, inputs: Mapping[str, str], **extra: Any) -> dict:
    """Write ``manifest.json`` (kind, id = digest of the folder's files, inputs, extra) and return it."""
    folder = Path(folder)
    manifest = {"kind": kind, "id": folder_digest(folder), "inputs": dict(inputs), **extra}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(folder / MANIFEST)
    return manifest


def read_manifest(folder: str | Path, what: str, step: str) -> dict:
    """The manifest of a finished artifact folder; a clear error naming ``step`` when absent."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise MissingInputError(f"{what} not found in {Path(folder)}: run {step} first")
    return json.loads(path.read_text())


def require_same(recorded: str | None, current: str | None, what: str, step: str) -> None:
    """Stop with a clear line when an artifact was made from another version of ``what``."""
    if recorded is not None and current is not None and recorded != current:
        raise StaleInputError(
            f"{what} changed since this result was made ({str(recorded)[:10]} -> {str(current)[:10]}): rerun {step}"
        )


# ---------------------------------------------------------------------------------------------
# Atomic folders


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(target: str | Path) -> None:
    """Remove temporary folders of dead writers of ``target``; restore a swapped-out old copy if needed."""
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return
    for p in parent.glob(f".{target.name}.*-*"):
        kind, _, pid = p.name.rpartition("-")
        if not pid.isdigit() or _alive(int(pid)) and int(pid) != os.getpid():
            continue
        if kind.endswith(".old") and not target.exists():
            p.replace(target)  # the swap was interrupted between its two renames
        elif p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it replaces ``target``, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_leftovers(target)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    if target.exists():
        target.replace(old)
    tmp.replace(target)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file under a temporary name, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


@functools.cache
def _cpuinfo() -> str:
    """The text of ``/proc/cpuinfo`` (Linux), or "" where there is none."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    """The CPU model from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` says."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_vector_support() -> str:
    """The CPU's vector instruction level as torch uses it, plus native bf16 (``AVX512 + BF16``, ``AVX2``).

    Two CPUs of one model name can differ here (a virtual machine may hide AVX-512), and results of
    one seed differ with it, so a result's machine line names it.
    """
    import torch

    level = torch.backends.cpu.get_cpu_capability()
    flags = set(_cpuinfo().split())
    if "amx_bf16" in flags:
        level += " + AMX"
    elif "avx512_bf16" in flags:
        level += " + BF16"
    return level


def machine_description() -> str:
    """One line naming the machine a result is computed on (CPU model, count and vector level, GPU if
    any, torch)."""
    import torch

    text = f"{cpu_name()} ({os.cpu_count()} CPUs, {cpu_vector_support()})"
    if torch.cuda.is_available():
        text = f"{torch.cuda.get_device_name(0)}; {text}"
    return f"{text}, torch {torch.__version__}"


# ---------------------------------------------------------------------------------------------
# Locks


def _only_readers_hold(fh) -> bool:
    """Whether the lock ``fh`` could not take exclusively is held by readers alone (shared locks)."""
    try:
        fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fh, fcntl.LOCK_UN)
    return True


@contextlib.contextmanager
def step_lock(lock_file: str | Path, what: str, shared: bool = False) -> Iterator[None]:
    """Hold a lock for ``what``: exclusive for a writer, ``shared`` for readers (several at once).

    A writer meets any other holder, and a reader meets a writer, with :class:`LockedError` at once.
    """
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fh = open(lock_file, "a+")
    try:
        try:
            fcntl.flock(fh, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            if shared or not _only_readers_hold(fh):
                fh.seek(0)
                holding = f"being written by {fh.read().strip() or 'another process'}"
            else:  # readers leave no pid behind: the file still names the last writer
                holding = "in use by reading processes (training, an export)"
            raise LockedError(f"{what} is {holding} (lock {lock_file}); wait for it or stop it") from None
        if not shared:
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}")
            fh.flush()
        yield
    finally:
        fh.close()  # closing releases the flock
