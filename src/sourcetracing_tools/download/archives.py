"""Safe extraction of zip, tar and split-zip (7-Zip) archives.

Every member is checked before anything is written: absolute paths, ``..`` components, links whose target
leaves the destination and (tar) device files are refused with :class:`UnsafeArchiveError`; after unpacking,
every symlink in the destination must still resolve inside it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path, PurePosixPath

from sourcetracing_tools.download.progress import byte_bar

SEVEN_ZIP_TOOLS = ("7zz", "7z", "7za")


class ExtractError(RuntimeError):
    """An archive could not be unpacked into the expected layout."""


class UnsafeArchiveError(ExtractError):
    """An archive member would land outside the destination folder (path traversal, escaping link)."""


class MissingToolError(ExtractError):
    """An external tool needed to unpack an archive (7-Zip) is not installed."""


def _is_absolute(path: str) -> bool:
    """True for POSIX absolute paths and Windows drive paths (``C:...``)."""
    return path.startswith("/") or re.match(r"^[A-Za-z]:", path) is not None


def _safe_relpath(name: str, archive: Path) -> PurePosixPath:
    """The member's path relative to the destination; refuses absolute paths and ``..`` components."""
    norm = name.replace("\\", "/")
    if _is_absolute(norm):
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


def _member_path(name: str, archive: Path, root: str) -> PurePosixPath:
    """:func:`_safe_relpath`, also refusing a member whose path resolves outside ``root`` (the real dest)."""
    rel = _safe_relpath(name, archive)
    if not _inside(root, os.path.join(root, str(rel))):
        raise UnsafeArchiveError(f"{archive.name}: refusing member {name!r}: it leaves the destination")
    return rel


def _check_link(
    root: str, member: str, rel: PurePosixPath, target: str, archive: Path, *, hard: bool
) -> None:
    """Refuse a link member whose target is absolute or resolves outside ``root``."""
    kind = "hard link" if hard else "symlink"
    if not target or _is_absolute(target):
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
        rels: list[PurePosixPath] = []
        links: dict[str, tuple[PurePosixPath, str]] = {}
        for info in infos:
            rel = _member_path(info.filename, archive, root)
            rels.append(rel)
            if _zip_is_symlink(info):
                target = zf.read(info).decode("utf-8", "replace")
                _check_link(root, info.filename, rel, target, archive, hard=False)
                links[info.filename] = (rel, target)
        link_paths = {rel for rel, _ in links.values()}
        for info, rel in zip(infos, rels, strict=True):
            if any(parent in link_paths for parent in rel.parents):
                raise UnsafeArchiveError(
                    f"{archive.name}: refusing member {info.filename!r}: it lies under a symlink"
                )
        total = sum(i.file_size for i in infos)
        with byte_bar(f"unzip {archive.name}", total, enabled=progress) as bar:
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
        byte_bar(f"untar {archive.name}", archive.stat().st_size, enabled=progress) as bar,
    ):
        for member in tf:
            rel = _member_path(member.name, archive, root)
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
