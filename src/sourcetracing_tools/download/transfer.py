"""HTTP download of one file: resume through ``<file>.part`` with a ``Range`` request, retries, mirrors."""

from __future__ import annotations

import http.client
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from sourcetracing_tools.download.progress import byte_bar, say

USER_AGENT = "sourcetracing-downloader/0.1 (+https://github.com/; python-urllib)"
RETRY_HTTP_CODES = frozenset({408, 425, 429, 500, 502, 503, 504})
DISK_MARGIN_BYTES = 64 << 20


class DownloadError(RuntimeError):
    """A file could not be downloaded (HTTP error, network failure, truncated transfer, no disk space)."""


class NoSpaceError(DownloadError):
    """Not enough free disk space for a download."""


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
                say(f"  {dest.name}: server ignored the Range request; restarting from zero")
            offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
        else:
            raise DownloadError(f"unexpected HTTP {status} for {url}")
        if total is not None:
            _check_space(part.parent, total - offset)
        received = offset
        with open(part, mode) as fh, byte_bar(dest.name, total, initial=offset, enabled=progress) as bar:
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
            say(f"  {dest.name}: {err}; retry {attempt}/{retries} from byte {done}")
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
                say(f"  {dest.name}: {err}; trying the next mirror")
    raise DownloadError("; ".join(errors) if errors else f"{dest.name}: no URL to download from")
