"""The registry of downloadable resources (files, URLs, checksums, targets) and the base-URL overrides."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ENV_BASE_URL = "SOURCETRACING_BASE_URL"


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


def redirected(name: str, resource: Resource, base_urls: Mapping[str, str]) -> Resource:
    """``resource`` fetched from ``base_urls[name]`` (else ``base_urls["*"]``) when one is given, else as is."""
    base = base_urls.get(name) or base_urls.get("*")
    return with_base_url(resource, base) if base else resource


def env_var_for(name: str) -> str:
    """Environment variable that redirects one resource, e.g. ``SOURCETRACING_MUSAN_URL``."""
    return f"SOURCETRACING_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}_URL"


def resolve_base_urls(values: Sequence[str], registry: Mapping[str, Resource]) -> dict[str, str]:
    """Base URL per resource: ``--base-url NAME=`` > ``--base-url`` > ``SOURCETRACING_<NAME>_URL`` > global env.

    ``values`` are the ``--base-url`` arguments (``URL`` or ``NAME=URL``); resources without any override
    are left out of the result.
    """
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
