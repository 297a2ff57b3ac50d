"""Download and unpack the corpora of the pipeline: MLAAD v5, its source-tracing protocols, MUSAN, RIRS_NOISES.

Every resource is an entry of :data:`REGISTRY` (files with their URLs and published checksums, the archive to
unpack, and the folder it lands in). The steps are safe to re-run:

* downloads go to ``<file>.part`` and resume with an HTTP ``Range`` request after an interruption;
* checksums are verified where one is published (MLAAD ships an md5 list, OpenSLR publishes md5 sums); a
  mismatch deletes the file and downloads it once more, then fails with both sums in the message;
* archives are unpacked into a staging folder, checked member by member (no absolute paths, no ``..``, no
  links that leave the folder), then moved into the layout the configs expect, and a marker file
  ``.extracted-<name>`` is written; a resource with a marker is not downloaded or unpacked again.

Final layout under ``data/`` (the configs' defaults)::

    data/MLAAD_v5/fake/<lang>/<model_dir>/*.wav
    data/MLAAD_v5_protocols/{train,dev,eval}.csv
    data/musan/{music,noise,speech}/
    data/RIRS_NOISES/{simulated_rirs,real_rirs_isotropic_noises,pointsource_noises}/
    data/downloads/            # the archives themselves (``--delete-archives`` removes them)

URLs can be redirected to a mirror with ``--base-url [name=]URL`` or the environment variables
``SOURCETRACING_BASE_URL`` (all resources) and ``SOURCETRACING_<NAME>_URL`` (one resource); a base URL
is joined with each file name.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

USER_AGENT = "sourcetracing-downloader/0.1 (+https://github.com/; python-urllib)"
RETRY_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})
SEVEN_ZIP_TOOLS = ("7zz", "7z", "7za")
ENV_BASE_URL = "SOURCETRACING_BASE_URL"
DISK_MARGIN_BYTES = 64 << 20


class DownloadError(RuntimeError):
    """A file could not be downloaded (HTTP error, network failure, truncated transfer, no disk space)."""


class NoSpaceError(DownloadError):
    """Not enough free disk space for a download."""


class ChecksumError(DownloadError):
    """A downloaded file does not match its published checksum, even after one re-download."""


class ExtractError(RuntimeError):
    """An archive could not be unpacked into the expected layout."""


class UnsafeArchiveError(ExtractError):
    """An archive member would land outside the destination folder (path traversal, escaping link)."""


class MissingToolError(ExtractError):
    """An external tool needed to unpack an archive (7-Zip) is not installed."""


# --------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One downloadable file: its local name, mirror URLs tried in order, and an optional checksum."""

    name: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None

    def checksum(self) -> tuple[str, str] | None:
        """The strongest published checksum as ``(algorithm, hex digest)``, or None."""
        if self.sha256:
            return "sha256", self.sha256.lower()
        if self.md5:
            return "md5", self.md5.lower()
        return None


@dataclass(frozen=True)
class Resource:
    """A corpus: the files to fetch, which of them to unpack, and where its contents land.

    ``kind`` is ``zip``, ``tar`` (any compression) or ``split-zip`` (``.z01``... + ``.zip``, unpacked with
    7-Zip). After unpacking, the folder that holds every entry of ``expect`` is looked up (``inner_dir``
    first, else the shallowest match) and its contents are moved into ``<data_dir>/<target>``.
    ``checksum_file`` names a file of the resource holding md5 sums (``md5sum`` or BSD format) for others.
    """

    name: str
    description: str
    files: tuple[RemoteFile, ...]
    kind: str
    archive: str | None
    target: str
    inner_dir: str | None = None
    expect: tuple[str, ...] = ()
    checksum_file: str | None = None
    homepage: str = ""

    def marker_name(self) -> str:
        """Name of the file written into the target folder after a successful extraction."""
        return f".extracted-{self.name}"


_MLAAD_SHARE = "https://owncloud.fraunhofer.de/index.php/s/tL2Y1FKrWiX4ZtP/download?path=%2Fv5&files="
_MLAAD_NAMES = tuple(f"mlaad_v5.z{i:02d}" for i in range(1, 11)) + ("mlaad_v5.zip", "mlaad_v5.zip.md5")
_OPENSLR_MIRRORS = ("https://www.openslr.org", "https://us.openslr.org", "https://openslr.elda.org")


def _openslr(resource_id: int, name: str, md5: str) -> RemoteFile:
    urls = tuple(f"{host}/resources/{resource_id}/{name}" for host in _OPENSLR_MIRRORS)
    return RemoteFile(name, urls, md5=md5)


REGISTRY: dict[str, Resource] = {
    "mlaad": Resource(
        name="mlaad",
        description="MLAAD v5 audio (split zip, ~12 files)",
        files=tuple(RemoteFile(n, (_MLAAD_SHARE + n,)) for n in _MLAAD_NAMES),
        kind="split-zip",
        archive="mlaad_v5.zip",
        target="MLAAD_v5",
        inner_dir="mlaad_v5",
        expect=("fake",),
        checksum_file="mlaad_v5.zip.md5",
        homepage="https://deepfake-total.com/mlaad",
    ),
    "protocols": Resource(
        name="protocols",
        description="MLAAD v5 source-tracing protocols (train/dev/eval CSV)",
        files=(
            RemoteFile(
                "mlaad4sourcetracing.zip", ("https://deepfake-total.com/data/mlaad4sourcetracing.zip",)
            ),
        ),
        kind="zip",
        archive="mlaad4sourcetracing.zip",
        target="MLAAD_v5_protocols",
        inner_dir=None,  # not published: the folder holding the three CSVs is found after unpacking
        expect=("train.csv", "dev.csv", "eval.csv"),
        homepage="https://deepfake-total.com/sourcetracing",
    ),
    "musan": Resource(
        name="musan",
        description="MUSAN music/noise/speech (OpenSLR 17, ~11 GB)",
        files=(_openslr(17, "musan.tar.gz", "0c472d4fc0c5141eca47ad1ffeb2a7df"),),
        kind="tar",
        archive="musan.tar.gz",
        target="musan",
        inner_dir="musan",
        expect=("music", "noise", "speech"),
        homepage="https://www.openslr.org/17/",
    ),
    "rirs": Resource(
        name="rirs",
        description="RIRS_NOISES room impulse responses (OpenSLR 28, ~1.3 GB)",
        files=(_openslr(28, "rirs_noises.zip", "e6f48e257286e05de56413b4779d8ffb"),),
        kind="zip",
        archive="rirs_noises.zip",
        target="RIRS_NOISES",
        inner_dir="RIRS_NOISES",
        expect=("simulated_rirs", "real_rirs_isotropic_noises", "pointsource_noises"),
        homepage="https://www.openslr.org/28/",
    ),
}


def with_base_url(resource: Resource, base_url: str) -> Resource:
    """A copy of ``resource`` whose files are fetched from ``<base_url>/<file name>`` only."""
    base = base_url.rstrip("/")
    files = tuple(dataclasses.replace(f, urls=(f"{base}/{f.name}",)) for f in resource.files)
    return dataclasses.replace(resource, files=files)


def env_var_for(name: str) -> str:
    """Environment variable that redirects one resource, e.g. ``SOURCETRACING_MUSAN_URL``."""
    return f"SOURCETRACING_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}_URL"


# --------------------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------------------


def _say(message: str) -> None:
    tqdm.write(message)


class _Transient(Exception):
    """A failure worth retrying (network error, cut transfer, 5xx)."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` (or ``bytes */TOTAL``) into ``(start, total)``."""
    if not value:
        return None, None
    match = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*$", value)
    if not match:
        return None, None
    start = int(match.group(1)) if match.group(1) is not None else None
    total = int(match.group(2)) if match.group(2) != "*" else None
    return start, total


def _check_space(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed + DISK_MARGIN_BYTES > free:
        raise NoSpaceError(
            f"not enough disk space in {folder}: {needed / 2**30:.2f} GiB still to download, "
            f"{free / 2**30:.2f} GiB free"
        )


def _fetch_once(
    url: str, dest: Path, part: Path, *, timeout_s: float, chunk_size: int, progress: bool
) -> None:
    """One HTTP request: resume ``part`` if it exists, rename it to ``dest`` when complete."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        code, reason = err.code, err.reason
        content_range = err.headers.get("Content-Range") if err.headers else None
        err.close()
        if code == 416 and offset:
            _, total = _content_range(content_range)
            if total == offset:  # the partial file was already complete
                part.replace(dest)
                return
            part.unlink()
            raise _Transient(f"server refused to resume at byte {offset}; restarting from zero") from None
        if code in RETRY_HTTP_CODES:
            raise _Transient(f"HTTP {code} {reason} for {url}") from None
        raise DownloadError(f"HTTP {code} {reason} for {url}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", None) or err
        raise _Transient(f"network error for {url}: {reason}") from err

    with response:
        status = response.status
        if status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"server resumed at byte {start} instead of {offset}; restarting from zero")
            mode = "ab"
        elif status == 200:
            if offset:
                _say(f"  {dest.name}: server ignored the Range request; restarting from zero")
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        else:
            raise DownloadError(f"unexpected HTTP {status} for {url}")
        if total is not None:
            _check_space(part.parent, total - offset)
        received = offset
        with (
            open(part, mode) as fh,
            tqdm(
                total=total,
                initial=offset,
                desc=dest.name,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=not progress,
            ) as bar,
        ):
            while True:
                try:
                    chunk = response.read(chunk_size)
                except (OSError, http.client.HTTPException) as err:
                    raise _Transient(f"connection lost after {received} bytes of {url}: {err}") from err
                if not chunk:
                    break
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise _Transient(f"transfer of {url} cut at {received} of {total} bytes")
    if total is not None and received > total:
        part.unlink()
        raise DownloadError(
            f"{url} sent {received} bytes but announced {total}; the partial file was deleted"
        )
    part.replace(dest)


def fetch(
    url: str,
    dest: Path,
    *,
    retries: int = 3,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming it and retrying transient failures.

    A 206 reply is appended to the partial file; a 200 reply to a Range request restarts from zero. The file
    is renamed to ``dest`` once its size matches Content-Length / Content-Range. After ``retries`` failed
    attempts the partial file is kept (the next call resumes it) and :class:`DownloadError` is raised.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt = 0
    while True:
        try:
            _fetch_once(url, dest, part, timeout_s=timeout_s, chunk_size=chunk_size, progress=progress)
            return
        except _Transient as err:
            if attempt >= retries:
                kept = f"; {part} is kept and the next run resumes it" if part.exists() else ""
                raise DownloadError(
                    f"{dest.name}: {err} (gave up after {attempt + 1} attempt(s){kept})"
                ) from None
            attempt += 1
            done = part.stat().st_size if part.exists() else 0
            _say(f"  {dest.name}: {err}; retry {attempt}/{retries} from byte {done}")
            time.sleep(backoff_s * 2 ** (attempt - 1))


def fetch_any(urls: Sequence[str], dest: Path, **kwargs: object) -> None:
    """Try each mirror in turn until one delivers ``dest``; the error names every failed URL."""
    errors: list[str] = []
    for i, url in enumerate(urls):
        try:
            fetch(url, dest, **kwargs)  # type: ignore[arg-type]
            return
        except NoSpaceError:
            raise
        except DownloadError as err:
            errors.append(str(err))
            if i + 1 < len(urls):
                _say(f"  {dest.name}: {err}; trying the next mirror")
    raise DownloadError("; ".join(errors) if errors else f"{dest.name}: no URL to download from")


def file_digest(path: Path, algorithm: str = "md5", *, progress: bool = True) -> str:
    """Hex digest of a file, read in 4 MiB blocks."""
    digest = hashlib.new(algorithm)
    size = path.stat().st_size
    with (
        open(path, "rb") as fh,
        tqdm(
            total=size,
            desc=f"{algorithm} {path.name}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            disable=not progress or size < (64 << 20),
            leave=False,
        ) as bar,
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
        dest.unlink()
        _stamp(dest).unlink(missing_ok=True)
        if attempt == 2:
            raise ChecksumError(
                f"{remote.name}: {algorithm} mismatch after a re-download: expected {expected}, got {actual} "
                f"(the file was deleted; check the URL/mirror {remote.urls[0]} or the published checksum)"
            )
        _say(
            f"  {remote.name}: {algorithm} mismatch (expected {expected}, got {actual}); deleted, downloading again"
        )
    return downloaded  # pragma: no cover - the loop always returns or raises


# --------------------------------------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------------------------------------


def _safe_relpath(name: str, archive: Path) -> PurePosixPath:
    """The member's path relative to the destination; refuses absolute paths and ``..`` components."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{archive.name}: refusing member {name!r}: absolute path")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(
            f"{archive.name}: refusing member {name!r}: '..' would leave the destination"
        )
    return PurePosixPath(*parts) if parts else PurePosixPath(".")


def _inside(root: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == root or real.startswith(root + os.sep)


def _check_link(
    root: str, member: str, rel: PurePosixPath, target: str, archive: Path, *, hard: bool
) -> None:
    """Refuse a link member whose target is absolute or resolves outside ``root``."""
    kind = "hard link" if hard else "symlink"
    if not target or target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise UnsafeArchiveError(f"{archive.name}: refusing {kind} {member!r} -> {target!r}: absolute target")
    base = root if hard else os.path.join(root, str(rel.parent))
    if not _inside(root, os.path.join(base, target)):
        raise UnsafeArchiveError(f"{archive.name}: refusing {kind} {member!r} -> {target!r}: points outside")


def _check_tree_links(root: Path, archive: Path) -> None:
    """After unpacking: every symlink in ``root`` must resolve inside it (catches chains of links)."""
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        for entry in dirs + files:
            path = os.path.join(folder, entry)
            if os.path.islink(path) and not _inside(real_root, path):
                rel = os.path.relpath(path, root)
                raise UnsafeArchiveError(
                    f"{archive.name}: refusing symlink {rel!r}: it resolves outside the destination"
                )


def _zip_is_symlink(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def extract_zip(archive: Path, dest: Path, *, progress: bool = True) -> None:
    """Unpack a zip with the standard library after checking every member; links are created last."""
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        links: dict[str, tuple[PurePosixPath, str]] = {}
        for info in infos:
            rel = _safe_relpath(info.filename, archive)
            if not _inside(root, os.path.join(root, str(rel))):
                raise UnsafeArchiveError(
                    f"{archive.name}: refusing member {info.filename!r}: it leaves the destination"
                )
            if _zip_is_symlink(info):
                target = zf.read(info).decode("utf-8", "replace")
                _check_link(root, info.filename, rel, target, archive, hard=False)
                links[info.filename] = (rel, target)
        link_paths = {rel for rel, _ in links.values()}
        for info in infos:
            rel = _safe_relpath(info.filename, archive)
            if any(parent in link_paths for parent in rel.parents):
                raise UnsafeArchiveError(
                    f"{archive.name}: refusing member {info.filename!r}: it lies under a symlink"
                )
        with tqdm(
            total=sum(i.file_size for i in infos),
            desc=f"unzip {archive.name}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            disable=not progress,
        ) as bar:
            for info in infos:
                if info.filename not in links:
                    zf.extract(info, dest)
                bar.update(info.file_size)
    for rel, target in links.values():
        path = dest / str(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        os.symlink(target, path)
    _check_tree_links(dest, archive)


def extract_tar(archive: Path, dest: Path, *, progress: bool = True) -> None:
    """Unpack a tar (any compression) member by member, refusing any member that would leave ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    data_filter = getattr(tarfile, "data_filter", None)
    filter_error: type[Exception] | tuple[()] = getattr(tarfile, "FilterError", ())
    with (
        open(archive, "rb") as raw,
        tarfile.open(fileobj=raw, mode="r:*") as tf,
        tqdm(
            total=archive.stat().st_size,
            desc=f"untar {archive.name}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            disable=not progress,
        ) as bar,
    ):
        for member in tf:
            rel = _safe_relpath(member.name, archive)
            if not _inside(root, os.path.join(root, str(rel))):
                raise UnsafeArchiveError(
                    f"{archive.name}: refusing member {member.name!r}: it leaves the destination"
                )
            if member.issym() or member.islnk():
                _check_link(root, member.name, rel, member.linkname, archive, hard=member.islnk())
            elif not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(
                    f"{archive.name}: refusing member {member.name!r}: special file (device/fifo)"
                )
            try:
                if data_filter is not None:
                    tf.extract(member, dest, set_attrs=not member.isdir(), filter="data")
                else:  # Python without extraction filters: our checks above are the guard
                    tf.extract(member, dest, set_attrs=not member.isdir())
            except filter_error as err:
                raise UnsafeArchiveError(f"{archive.name}: refusing member {member.name!r}: {err}") from err
            bar.update(raw.tell() - bar.n)
    _check_tree_links(dest, archive)


def find_7z() -> str | None:
    """Path of a 7-Zip executable on PATH (``7zz``, ``7z`` or ``7za``), or None."""
    for tool in SEVEN_ZIP_TOOLS:
        found = shutil.which(tool)
        if found:
            return found
    return None


def _parse_7z_listing(text: str) -> list[dict[str, str]]:
    """Entries of ``7z l -slt`` output (the blocks after the ``----------`` line)."""
    _, sep, body = text.partition("\n----------\n")
    if not sep:
        return []
    entries: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in body.splitlines():
        if not line.strip():
            if current:
                entries.append(current)
                current = {}
            continue
        key, eq, value = line.partition(" = ")
        if eq:
            current[key.strip()] = value
    if current:
        entries.append(current)
    return [e for e in entries if "Path" in e]


def extract_split_zip(archive: Path, dest: Path, *, progress: bool = True) -> None:
    """Unpack a split zip (``.z01``... next to ``archive``) with 7-Zip, after checking its listing.

    Symlink members are refused outright (the corpora have none, and 7-Zip could write through them).
    """
    tool = find_7z()
    if tool is None:
        raise MissingToolError(
            f"{archive.name} is a split zip archive and unpacking it needs 7-Zip, but none of "
            f"{', '.join(SEVEN_ZIP_TOOLS)} is on PATH. Install it (Debian/Ubuntu: `sudo apt-get install "
            f"p7zip-full`) and run this script again, or unpack by hand: 7z x {archive} -o{dest}"
        )
    listing = subprocess.run(
        [tool, "l", "-slt", str(archive)], capture_output=True, text=True, errors="replace"
    )
    if listing.returncode != 0:
        tail = (listing.stderr or listing.stdout).strip()[-500:]
        raise ExtractError(f"7-Zip could not list {archive} (exit code {listing.returncode}): {tail}")
    entries = _parse_7z_listing(listing.stdout)
    if not entries:
        raise ExtractError(f"7-Zip listed no members in {archive}; is the archive complete?")
    for entry in entries:
        _safe_relpath(entry["Path"], archive)
        mode = re.search(r"(?<!\S)([-dlcbps][-rwxsStT]{9})(?!\S)", entry.get("Attributes", ""))
        if mode and mode.group(1).startswith("l"):
            raise UnsafeArchiveError(
                f"{archive.name}: refusing symlink member {entry['Path']!r} in a split archive"
            )
    dest.mkdir(parents=True, exist_ok=True)
    command = [tool, "x", "-y", f"-o{dest}", str(archive)]
    if not progress:
        command.insert(2, "-bd")
    result = subprocess.run(command, stdout=None if progress else subprocess.DEVNULL)
    if result.returncode != 0:
        raise ExtractError(f"7-Zip failed on {archive} (exit code {result.returncode}): {' '.join(command)}")
    _check_tree_links(dest, archive)


def extract_archive(archive: Path, dest: Path, kind: str, *, progress: bool = True) -> None:
    """Unpack ``archive`` into ``dest`` according to ``kind`` (``zip``, ``tar`` or ``split-zip``)."""
    if kind == "zip":
        extract_zip(archive, dest, progress=progress)
    elif kind == "tar":
        extract_tar(archive, dest, progress=progress)
    elif kind == "split-zip":
        extract_split_zip(archive, dest, progress=progress)
    else:
        raise ExtractError(f"unknown archive kind {kind!r} for {archive}")


def find_root(staging: Path, inner_dir: str | None, expect: Sequence[str], *, max_depth: int = 3) -> Path:
    """The folder of an unpacked archive whose contents form the resource (see :class:`Resource`)."""

    def holds(folder: Path) -> bool:
        return all((folder / name).exists() for name in expect)

    if inner_dir and (staging / inner_dir).is_dir() and holds(staging / inner_dir):
        return staging / inner_dir
    if not expect:
        entries = [p for p in staging.iterdir() if p.name != "__MACOSX"]
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
            if child.is_dir() and not child.is_symlink() and child.name != "__MACOSX"
        ]
    top = sorted(p.name for p in staging.iterdir())
    raise ExtractError(
        f"no folder holding {list(expect)} found in the unpacked archive; top-level entries: {top}"
    )


def move_contents(src: Path, dst: Path) -> None:
    """Move every entry of ``src`` into ``dst``, merging folders and replacing files that already exist."""
    dst.mkdir(parents=True, exist_ok=True)
    for child in sorted(src.iterdir()):
        if child.name == "__MACOSX":
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


# --------------------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------------------


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
    files = sorted(resource.files, key=lambda f: f.name != resource.checksum_file)
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
                _say(f"  {resource.name}: no published checksum for {', '.join(missing)}")

    if not extract or resource.archive is None:
        return report
    staging = data_dir / f".staging-{resource.name}"
    if staging.exists():
        shutil.rmtree(staging)
    archive = download_dir / resource.archive
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
    record = {
        "resource": resource.name,
        "archive": resource.archive,
        "files": [f.name for f in files],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    marker.write_text(json.dumps(record, indent=1) + "\n")
    report.extracted = True
    if delete_archives:
        for remote in files:
            (download_dir / remote.name).unlink(missing_ok=True)
            _stamp(download_dir / remote.name).unlink(missing_ok=True)
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
        resource = registry[name]
        base = base_urls.get(name) or base_urls.get("*")
        if base:
            resource = with_base_url(resource, base)
        try:
            report = install_resource(resource, Path(data_dir), **kwargs)  # type: ignore[arg-type]
        except (DownloadError, ExtractError, OSError, zipfile.BadZipFile, tarfile.TarError) as err:
            report = ResourceReport(name, Path(data_dir) / resource.target, error=str(err))
        _say(report.line())
        reports.append(report)
    return reports


# --------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------


def build_parser(registry: Mapping[str, Resource] | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``scripts/download_resources.py``."""
    registry = REGISTRY if registry is None else registry
    names = ",".join(registry)
    parser = argparse.ArgumentParser(
        description="Download and unpack MLAAD v5, its source-tracing protocols, MUSAN and RIRS_NOISES. "
        "Safe to re-run: partial downloads resume, verified files and extracted resources are skipped.",
        epilog=f"Environment: {ENV_BASE_URL} redirects every resource, SOURCETRACING_<NAME>_URL one resource "
        "(e.g. SOURCETRACING_MUSAN_URL); a base URL is joined with each file name.",
    )
    parser.add_argument(
        "--only", default=names, help=f"comma-separated resources to fetch (default: {names})"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data"), help="root of the data layout (default: data)"
    )
    parser.add_argument(
        "--download-dir", type=Path, default=None, help="where archives go (default: DATA_DIR/downloads)"
    )
    parser.add_argument("--no-extract", action="store_true", help="download and verify only")
    parser.add_argument(
        "--force-extract", action="store_true", help="unpack again even if a marker says done"
    )
    parser.add_argument("--delete-archives", action="store_true", help="delete the archives after unpacking")
    parser.add_argument(
        "--base-url",
        action="append",
        default=[],
        metavar="[NAME=]URL",
        help="fetch files from URL/<file name> instead (a mirror or a local server); NAME= limits it to one "
        "resource; repeatable",
    )
    parser.add_argument(
        "--retries", type=int, default=3, help="retries per URL after a network failure (default: 3)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds (default: 60)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--list", action="store_true", help="list the resources, their URLs and targets, and exit"
    )
    return parser


def _base_urls(values: Sequence[str], registry: Mapping[str, Resource]) -> dict[str, str]:
    """Base URL per resource: ``--base-url NAME=`` > ``--base-url`` > ``SOURCETRACING_<NAME>_URL`` > global env."""
    cli_all: str | None = None
    cli: dict[str, str] = {}
    for value in values:
        prefix, eq, rest = value.partition("=")
        if eq and prefix in registry:
            cli[prefix] = rest
        else:
            cli_all = value
    env_all = os.environ.get(ENV_BASE_URL)
    urls: dict[str, str] = {}
    for name in registry:
        url = cli.get(name) or cli_all or os.environ.get(env_var_for(name)) or env_all
        if url:
            urls[name] = url
    return urls


def main(argv: Sequence[str] | None = None, registry: Mapping[str, Resource] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 when every resource succeeded)."""
    registry = REGISTRY if registry is None else registry
    parser = build_parser(registry)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in registry]
    if unknown:
        parser.error(f"unknown resource(s) {', '.join(unknown)}; choose from {', '.join(registry)}")
    base_urls = _base_urls(args.base_url, registry)
    if args.list:
        for name in names:
            res = registry[name]
            res = with_base_url(res, base_urls[name]) if name in base_urls else res
            print(f"{name}: {res.description} -> {args.data_dir / res.target}  ({res.homepage})")
            for remote in res.files:
                check = remote.checksum()
                if check:
                    note = f"{check[0]} {check[1]}"
                elif res.checksum_file and remote.name != res.checksum_file:
                    note = f"md5 from {res.checksum_file}"
                else:
                    note = "no published checksum"
                print(f"    {remote.name}  ({note})")
                for url in remote.urls:
                    print(f"        {url}")
        return 0
    reports = run(
        names,
        args.data_dir,
        registry=registry,
        base_urls=base_urls,
        download_dir=args.download_dir,
        extract=not args.no_extract,
        force_extract=args.force_extract,
        delete_archives=args.delete_archives,
        progress=not args.no_progress,
        retries=args.retries,
        timeout_s=args.timeout,
    )
    failed = [r for r in reports if not r.ok]
    print("\nSummary:")
    for report in reports:
        state = "FAILED" if report.error else "ok"
        print(f"  {report.name:<10} {state:<7} {report.target}")
    if failed:
        print(f"{len(failed)} of {len(reports)} resource(s) failed; run again to resume.")
        return 1
    print("All resources ready.")
    return 0
