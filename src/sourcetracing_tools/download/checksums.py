"""Checksum verification: published md5 lists, file digests, verification stamps, fetch-and-verify."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path, PurePosixPath

from sourcetracing_tools.download.progress import byte_bar, say
from sourcetracing_tools.download.resources import RemoteFile
from sourcetracing_tools.download.transfer import DownloadError, fetch_any

_BAR_MIN_BYTES = 64 << 20  # hashing smaller files is too quick to deserve a progress bar


class ChecksumError(DownloadError):
    """A downloaded file does not match its published checksum, even after one re-download."""


def file_digest(path: Path, algorithm: str = "md5", *, progress: bool = True) -> str:
    """Hex digest of a file, read in 4 MiB blocks."""
    digest = hashlib.new(algorithm)
    size = path.stat().st_size
    enabled = progress and size >= _BAR_MIN_BYTES
    with (
        open(path, "rb") as fh,
        byte_bar(f"{algorithm} {path.name}", size, enabled=enabled, leave=False) as bar,
    ):
        while block := fh.read(4 << 20):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def parse_checksum_file(text: str) -> dict[str, str]:
    """Map file names to md5 sums from ``md5sum`` output (``HASH  name``) or BSD style (``MD5 (name) = HASH``).

    >>> parse_checksum_file("d41d8cd98f00b204e9800998ecf8427e  ./mlaad_v5.z01\\nMD5 (mlaad_v5.zip) = ABC0"
    ...                     "0000000000000000000000000000\\n")
    {'mlaad_v5.z01': 'd41d8cd98f00b204e9800998ecf8427e', 'mlaad_v5.zip': 'abc00000000000000000000000000000'}
    """
    sums: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip().lstrip("\ufeff")
        if not line or line.startswith("#"):
            continue
        gnu = re.match(r"^\\?([0-9a-fA-F]{32})\s+[ *]?(.+)$", line)
        bsd = re.match(r"^MD5\s*\((.+)\)\s*=\s*([0-9a-fA-F]{32})$", line)
        if gnu:
            digest, name = gnu.group(1), gnu.group(2)
        elif bsd:
            name, digest = bsd.group(1), bsd.group(2)
        else:
            continue
        sums[PurePosixPath(name.strip().replace("\\", "/")).name] = digest.lower()
    return sums


def _stamp(path: Path) -> Path:
    """The file recording that ``path`` was verified (size, mtime and digest), next to it."""
    return path.with_name(f".{path.name}.verified")


def _stamp_matches(path: Path, algorithm: str, expected: str) -> bool:
    try:
        saved = json.loads(_stamp(path).read_text())
        info = path.stat()
    except (OSError, ValueError):
        return False
    return saved == {
        "algorithm": algorithm,
        "digest": expected,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
    }


def _write_stamp(path: Path, algorithm: str, digest: str) -> None:
    info = path.stat()
    record = {"algorithm": algorithm, "digest": digest, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    _stamp(path).write_text(json.dumps(record))


def remove_verified(path: Path) -> None:
    """Delete a downloaded file and its verification stamp (either may be missing)."""
    path.unlink(missing_ok=True)
    _stamp(path).unlink(missing_ok=True)


def ensure_file(remote: RemoteFile, folder: Path, *, progress: bool = True, **fetch_kwargs: object) -> bool:
    """Make ``folder/remote.name`` present and verified; return True when something was downloaded.

    A file already present and verified (a stamp records size, mtime and digest, so big files are hashed
    once) is kept. A checksum mismatch deletes the file and downloads it once more; a second mismatch raises
    :class:`ChecksumError` naming the file and both sums.
    """
    dest = folder / remote.name
    checksum = remote.checksum()
    downloaded = False
    for attempt in (1, 2):
        if not dest.exists():
            fetch_any(remote.urls, dest, progress=progress, **fetch_kwargs)
            downloaded = True
        if checksum is None:
            return downloaded
        algorithm, expected = checksum
        if _stamp_matches(dest, algorithm, expected):
            return downloaded
        actual = file_digest(dest, algorithm, progress=progress)
        if actual == expected:
            _write_stamp(dest, algorithm, actual)
            return downloaded
        remove_verified(dest)
        if attempt == 2:
            raise ChecksumError(
                f"{remote.name}: {algorithm} mismatch after a re-download: expected {expected}, got {actual} "
                f"(the file was deleted; check the URL/mirror {remote.urls[0]} or the published checksum)"
            )
        say(
            f"  {remote.name}: {algorithm} mismatch (expected {expected}, got {actual}); deleted, downloading again"
        )
    return downloaded  # pragma: no cover - the loop always returns or raises
