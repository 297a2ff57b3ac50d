"""Command line of ``scripts/download_resources.py``: argument parsing, ``--list``, the run and its summary."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from sourcetracing.cli import ListOption
from sourcetracing_tools.download.install import run
from sourcetracing_tools.download.resources import (
    ENV_BASE_URL,
    REGISTRY,
    RemoteFile,
    Resource,
    redirected,
    resolve_base_urls,
)


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
        "--only",
        action=ListOption,
        default=list(registry),
        metavar="RESOURCE",
        help=f"resources to fetch, comma-separated (default: {names})",
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


def _checksum_note(resource: Resource, remote: RemoteFile) -> str:
    """How ``remote`` is verified: its published sum, the resource's md5 list, or not at all."""
    check = remote.checksum()
    if check:
        return f"{check[0]} {check[1]}"
    if resource.checksum_file and remote.name != resource.checksum_file:
        return f"md5 from {resource.checksum_file}"
    return "no published checksum"


def print_listing(resources: Sequence[tuple[str, Resource]], data_dir: Path) -> None:
    """Print each ``(name, resource)`` with its target folder, files, checksums and URLs (``--list``)."""
    for name, res in resources:
        print(f"{name}: {res.description} -> {data_dir / res.target}  ({res.homepage})")
        for remote in res.files:
            print(f"    {remote.name}  ({_checksum_note(res, remote)})")
            for url in remote.urls:
                print(f"        {url}")


def main(argv: Sequence[str] | None = None, registry: Mapping[str, Resource] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 when every resource succeeded)."""
    registry = REGISTRY if registry is None else registry
    parser = build_parser(registry)
    args = parser.parse_args(argv)
    names = list(args.only)
    unknown = [n for n in names if n not in registry]
    if unknown:
        parser.error(f"unknown resource(s) {', '.join(unknown)}; choose from {', '.join(registry)}")
    base_urls = resolve_base_urls(args.base_url, registry)
    if args.list:
        print_listing([(name, redirected(name, registry[name], base_urls)) for name in names], args.data_dir)
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
