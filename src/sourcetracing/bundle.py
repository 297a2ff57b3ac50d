"""A tracer bundle: one folder holding everything one system needs to trace a clip, nothing pickled.

::

    <bundle>/
      tracer.json          format version, system, kind, front-end and model settings, crop, label
                           map (known and enrolled systems), scorer, threshold, calibration, prior
      weights.safetensors  the network's weights (classifier, GE2E) or the statistics model's arrays
      state.safetensors    the fitted OOD scorer's arrays (``scorer.<name>``) and class centroids
      README.md            the model card: data and protocol, dev/eval numbers and their machine,
                           calibration, intended use and limits
      manifest.json        the format version and the sha256 of every file above

This module writes and reads those files; :func:`sourcetracing.bundle_export.export_bundle` fills
them from an experiment and :meth:`sourcetracing.trace.Tracer.from_bundle` traces with them. A
bundle whose manifest, checksums or format version do not match is :class:`BundleError`, one line.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sourcetracing.errors import BundleError, WouldOverwriteError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TRACER = "tracer.json"
WEIGHTS = "weights.safetensors"
STATE = "state.safetensors"
CARD = "README.md"
FILES = (TRACER, WEIGHTS, STATE, CARD)
ARCHIVES = ("tar.gz", "zip")


def sha256(path: str | Path) -> str:
    """The sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A verified bundle's settings (``tracer.json``), weights and state arrays."""

    folder: Path
    settings: dict
    weights: dict[str, torch.Tensor]
    state: dict[str, np.ndarray]


def write_bundle(
    out: str | Path,
    settings: Mapping,
    weights: Mapping[str, torch.Tensor | np.ndarray],
    state: Mapping[str, np.ndarray],
    card: str,
) -> Path:
    """Write the bundle files and their manifest into the new folder ``out`` (refused when it exists)."""
    from safetensors.numpy import save_file
    from safetensors.torch import save_file as save_tensors

    out = Path(out)
    if out.exists():
        raise WouldOverwriteError(f"{out} exists; choose another --out")
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / TRACER).write_text(json.dumps({"format_version": FORMAT_VERSION, **settings}, indent=2) + "\n")
    tensors = {k: torch.as_tensor(v).detach().cpu().contiguous().clone() for k, v in weights.items()}
    save_tensors(tensors, str(tmp / WEIGHTS))
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp / STATE))
    (tmp / CARD).write_text(card)
    manifest = {"format_version": FORMAT_VERSION, "sha256": {f: sha256(tmp / f) for f in FILES}}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.rename(out)
    return out


def verify(folder: str | Path) -> dict:
    """The manifest of a bundle whose files all match it; :class:`BundleError` otherwise."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder} is not a tracer bundle: {MANIFEST} not found")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path} is not valid JSON ({err}): the bundle is damaged") from None
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{folder} is a bundle of format version {version!r}; this toolkit reads version {FORMAT_VERSION}"
        )
    listed = manifest.get("sha256", {})
    for name in FILES:
        if name not in listed or not (folder / name).is_file():
            raise BundleError(f"{folder}: {name} is missing from the bundle or its manifest")
        if sha256(folder / name) != listed[name]:
            raise BundleError(f"{folder / name} does not match its checksum: the bundle was altered")
    return manifest


def read_bundle(folder: str | Path) -> Bundle:
    """Verify a bundle and read its settings and arrays (safetensors only: nothing is unpickled)."""
    from safetensors.numpy import load_file
    from safetensors.torch import load_file as load_tensors

    folder = Path(folder)
    verify(folder)
    settings = json.loads((folder / TRACER).read_text())
    if settings.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{folder / TRACER} says format version {settings.get('format_version')!r}; "
            f"this toolkit reads version {FORMAT_VERSION}"
        )
    return Bundle(folder, settings, load_tensors(str(folder / WEIGHTS)), load_file(str(folder / STATE)))


def write_archive(folder: str | Path, fmt: str = "tar.gz") -> Path:
    """One archive of the bundle folder beside it (``<folder>.tar.gz`` or ``<folder>.zip``)."""
    folder = Path(folder)
    if fmt not in ARCHIVES:
        raise BundleError(f"archive format must be one of {ARCHIVES}, got {fmt!r}")
    target = folder.with_name(f"{folder.name}.{fmt}")
    if target.exists():
        raise WouldOverwriteError(f"{target} exists; choose another --out")
    names = [MANIFEST, *FILES]
    if fmt == "zip":
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in names:
                zf.write(folder / name, f"{folder.name}/{name}")
    else:
        with tarfile.open(target, "w:gz") as tf:
            for name in names:
                tf.add(folder / name, f"{folder.name}/{name}")
    return target


def unpack(path: str | Path) -> Path:
    """A bundle folder: ``path`` itself, or an archive's single folder unpacked into a temporary one."""
    path = Path(path)
    if path.is_dir():
        return path
    if not path.is_file():
        raise BundleError(f"{path} not found: give a bundle folder or its .tar.gz / .zip archive")
    dest = Path(tempfile.mkdtemp(prefix="tracer-bundle-"))
    atexit.register(shutil.rmtree, dest, True)
    names = {MANIFEST, *FILES}
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if Path(m).name in names and len(Path(m).parts) == 2]
                for m in members:
                    (dest / Path(m).name).write_bytes(zf.read(m))
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as tf:
                for m in tf.getmembers():
                    if m.isfile() and Path(m.name).name in names and len(Path(m.name).parts) == 2:
                        (dest / Path(m.name).name).write_bytes(tf.extractfile(m).read())
        else:
            raise BundleError(f"{path} is neither a bundle folder nor a .tar.gz / .zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        raise BundleError(f"{path}: cannot read the archive ({err})") from None
    return dest
