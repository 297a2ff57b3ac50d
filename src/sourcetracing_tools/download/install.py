"""One resource end to end: download and verify its files, unpack, move into the data layout, mark as done."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import tarfile
import time
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sourcetracing_tools.download.archives import ExtractError, extract_archive
from sourcetracing_tools.download.checksums import ensure_file, parse_checksum_file, remove_verified
from sourcetracing_tools.download.progress import say
from sourcetracing_tools.download.resources import REGISTRY, RemoteFile, Resource, redirected
from sourcetracing_tools.download.transfer import DownloadError

_MACOS_METADATA = "__MACOSX"  # resource-fork folder macOS zip tools add; never part of a corpus


@dataclass
class ResourceReport:
    """What happened to one resource in a run."""

    name: str
    target: Path
    downloaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    extracted: bool = False
    skipped: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the resource ended without error."""
        return self.error is None

    def line(self) -> str:
        """One human-readable line."""
        if self.error:
            return f"[{self.name}] FAILED: {self.error}"
        if self.skipped:
            return f"[{self.name}] already extracted in {self.target}; nothing to do"
        done = f"downloaded {len(self.downloaded)} file(s), {len(self.present)} already present"
        if self.extracted:
            return f"[{self.name}] {done}; extracted into {self.target}"
        return f"[{self.name}] {done}; not extracted"


def find_root(staging: Path, inner_dir: str | None, expect: Sequence[str], *, max_depth: int = 3) -> Path:
    """The folder of an unpacked archive whose contents form the resource (see :class:`Resource`)."""

    def holds(folder: Path) -> bool:
        return all((folder / name).exists() for name in expect)

    if inner_dir and (staging / inner_dir).is_dir() and holds(staging / inner_dir):
        return staging / inner_dir
    if not expect:
        entries = [p for p in staging.iterdir() if p.name != _MACOS_METADATA]
        return entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
    level = [staging]
    for _ in range(max_depth + 1):
        matches = [folder for folder in level if holds(folder)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(str(m.relative_to(staging)) for m in matches)
            raise ExtractError(f"several folders in the archive hold {list(expect)}: {names}")
        level = [
            child
            for folder in level
            for child in sorted(folder.iterdir())
            if child.is_dir() and not child.is_symlink() and child.name != _MACOS_METADATA
        ]
    top = sorted(p.name for p in staging.iterdir())
    raise ExtractError(
        f"no folder holding {list(expect)} found in the unpacked archive; top-level entries: {top}"
    )


def move_contents(src: Path, dst: Path) -> None:
    """Move every entry of ``src`` into ``dst``, merging folders and replacing files that already exist."""
    dst.mkdir(parents=True, exist_ok=True)
    for child in sorted(src.iterdir()):
        if child.name == _MACOS_METADATA:
            continue
        target = dst / child.name
        if target.is_dir() and not target.is_symlink() and child.is_dir() and not child.is_symlink():
            move_contents(child, target)
            continue
        if target.is_symlink() or target.is_file():
            target.unlink()
        elif target.exists():
            shutil.rmtree(target)
        os.replace(child, target)


def _download_order(resource: Resource) -> list[RemoteFile]:
    """The files of ``resource`` with its md5 list (``checksum_file``) first, so it can verify the others."""
    return sorted(resource.files, key=lambda f: f.name != resource.checksum_file)


def _download_files(
    resource: Resource, download_dir: Path, report: ResourceReport, *, progress: bool, **fetch_kwargs: object
) -> None:
    """Fetch and verify every file of ``resource`` into ``download_dir``, recording each in ``report``."""
    files = _download_order(resource)
    published: dict[str, str] = {}
    for remote in files:
        if remote.checksum() is None and remote.name in published:
            remote = dataclasses.replace(remote, md5=published[remote.name])
        fresh = ensure_file(remote, download_dir, progress=progress, **fetch_kwargs)
        (report.downloaded if fresh else report.present).append(remote.name)
        if remote.name == resource.checksum_file:
            published = parse_checksum_file((download_dir / remote.name).read_text(errors="replace"))
            missing = [f.name for f in files if f.name != remote.name and f.name not in published]
            if missing:
                say(f"  {resource.name}: no published checksum for {', '.join(missing)}")


def _unpack(resource: Resource, archive: Path, staging: Path, target: Path, *, progress: bool) -> None:
    """Unpack ``archive`` into ``staging``, move the resource's folder into ``target``, drop ``staging``."""
    if staging.exists():
        shutil.rmtree(staging)
    try:
        try:
            extract_archive(archive, staging, resource.kind, progress=progress)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as err:
            raise ExtractError(
                f"{archive} could not be read as a {resource.kind} archive ({err}); it may be truncated or not "
                "an archive at all (an error page?): delete it and run again"
            ) from err
        root = find_root(staging, resource.inner_dir, resource.expect)
        move_contents(root, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def install_resource(
    resource: Resource,
    data_dir: Path,
    *,
    download_dir: Path | None = None,
    extract: bool = True,
    force_extract: bool = False,
    delete_archives: bool = False,
    progress: bool = True,
    **fetch_kwargs: object,
) -> ResourceReport:
    """Download (resuming, verifying) and unpack one resource; raises on failure."""
    data_dir = Path(data_dir)
    download_dir = Path(download_dir) if download_dir is not None else data_dir / "downloads"
    target = data_dir / resource.target
    report = ResourceReport(resource.name, target)
    marker = target / resource.marker_name()
    if marker.exists() and not force_extract:
        report.skipped = True
        return report

    download_dir.mkdir(parents=True, exist_ok=True)
    _download_files(resource, download_dir, report, progress=progress, **fetch_kwargs)
    if not extract or resource.archive is None:
        return report
    staging = data_dir / f".staging-{resource.name}"
    _unpack(resource, download_dir / resource.archive, staging, target, progress=progress)
    record = {
        "resource": resource.name,
        "archive": resource.archive,
        "files": [f.name for f in _download_order(resource)],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    marker.write_text(json.dumps(record, indent=1) + "\n")
    report.extracted = True
    if delete_archives:
        for remote in resource.files:
            remove_verified(download_dir / remote.name)
    return report


def run(
    names: Iterable[str],
    data_dir: Path,
    *,
    registry: Mapping[str, Resource] | None = None,
    base_urls: Mapping[str, str] | None = None,
    **kwargs: object,
) -> list[ResourceReport]:
    """Install each named resource, printing one line per resource; failures are reported, not raised.

    ``base_urls`` maps a resource name (or ``"*"`` for all) to a base URL that replaces its URLs.
    """
    registry = REGISTRY if registry is None else registry
    base_urls = base_urls or {}
    reports: list[ResourceReport] = []
    for name in names:
        resource = redirected(name, registry[name], base_urls)
        try:
            report = install_resource(resource, Path(data_dir), **kwargs)  # type: ignore[arg-type]
        except (DownloadError, ExtractError, OSError, zipfile.BadZipFile, tarfile.TarError) as err:
            report = ResourceReport(name, Path(data_dir) / resource.target, error=str(err))
        say(report.line())
        reports.append(report)
    return reports
