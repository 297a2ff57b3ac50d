"""Tests of the resource downloader against a loopback HTTP server (Range, cut transfers, bad bytes)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sourcetracing_tools.download import archives, checksums, cli, install, resources, transfer

REPO = Path(__file__).resolve().parents[1]
HAVE_SPLIT_TOOLS = shutil.which("zip") is not None and archives.find_7z() is not None


# ------------------------------------------------------------------------------------------------------
# Loopback server
# ------------------------------------------------------------------------------------------------------


class FileServer:
    """Serves in-memory files; can cut a transfer after N bytes, ignore Range, or corrupt bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (file name, Range header)
        self.cut_after: dict[str, list[int]] = {}  # name -> byte counts for the next GETs
        self.ignore_range: set[str] = set()
        self.corrupt: dict[str, int] = {}  # name -> number of next GETs served with a flipped byte
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server naming
                name = self.path.lstrip("/")
                range_header = self.headers.get("Range")
                with server.lock:
                    server.requests.append((name, range_header))
                    data = server.files.get(name)
                    cuts = server.cut_after.get(name)
                    cut = cuts.pop(0) if cuts else None
                    bad = server.corrupt.get(name, 0) > 0
                    if bad:
                        server.corrupt[name] -= 1
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                if bad:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if match and name not in server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body = data[start:]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if cut is not None:  # announce everything, send part, hang up
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def gets(self, name: str | None = None) -> list[tuple[str, str | None]]:
        """Requests seen so far (for one file name, or all)."""
        with self.lock:
            return [r for r in self.requests if name is None or r[0] == name]


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()


# ------------------------------------------------------------------------------------------------------
# Small archives in the real layouts
# ------------------------------------------------------------------------------------------------------


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


PROTOCOL_CSV = "path,model_name\n./fake/en/tts_models_en_ljspeech_vits/a.wav,tts_models/en/ljspeech/vits\n"
MUSAN_MEMBERS = {
    "musan/README": b"musan",
    "musan/music/fma/music-fma-0000.wav": b"RIFFmusic",
    "musan/noise/free-sound/noise-free-sound-0000.wav": b"RIFFnoise",
    "musan/speech/librivox/speech-librivox-0000.wav": b"RIFFspeech",
}
RIRS_MEMBERS = {
    "RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav": b"RIFFrir",
    "RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_near_angla.wav": b"RIFFreal",
    "RIRS_NOISES/pointsource_noises/noise-free-sound-0001.wav": b"RIFFpoint",
}


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def mlaad_parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A real split zip ``mlaad_v5.z01..z10 + .zip`` (made with ``zip -s``) plus its md5 list."""
    if not HAVE_SPLIT_TOOLS:
        pytest.skip("needs `zip` and 7-Zip to build and unpack a split archive")
    src = tmp_path_factory.mktemp("mlaad_src")
    rng = __import__("random").Random(0)
    sizes = {
        "en/tts_models_en_ljspeech_vits/clip_0.wav": 400_000,
        "de/facebook_mms-tts-deu/clip_1.wav": 300_000,
    }
    for rel, size in sizes.items():
        path = src / "mlaad_v5" / "fake" / rel
        path.parent.mkdir(parents=True)
        path.write_bytes(rng.randbytes(size))  # incompressible: part count is predictable
    subprocess.run(["zip", "-q", "-0", "-r", "-s", "64k", "mlaad_v5.zip", "mlaad_v5"], cwd=src, check=True)
    names = [f"mlaad_v5.z{i:02d}" for i in range(1, 11)] + ["mlaad_v5.zip"]
    assert sorted(p.name for p in src.glob("mlaad_v5.z*")) == sorted(names)
    parts = {name: (src / name).read_bytes() for name in names}
    parts["mlaad_v5.zip.md5"] = "".join(f"{_md5(d)}  {n}\n" for n, d in parts.items()).encode()
    parts["__clips__"] = (src / "mlaad_v5/fake/en/tts_models_en_ljspeech_vits/clip_0.wav").read_bytes()
    return parts


def _serve_corpora(srv: FileServer, mlaad: dict[str, bytes] | None) -> dict[str, resources.Resource]:
    """Put the four test corpora on the server; return a registry whose OpenSLR md5s match them."""
    srv.files["mlaad4sourcetracing.zip"] = _zip_bytes(
        {f"mlaad_for_sourcetracing/{split}.csv": PROTOCOL_CSV.encode() for split in ("train", "dev", "eval")}
    )
    srv.files["musan.tar.gz"] = _tar_bytes(MUSAN_MEMBERS)
    srv.files["rirs_noises.zip"] = _zip_bytes(RIRS_MEMBERS)
    if mlaad:
        srv.files.update({k: v for k, v in mlaad.items() if not k.startswith("__")})
    registry = dict(resources.REGISTRY)
    for name, file_name in (("musan", "musan.tar.gz"), ("rirs", "rirs_noises.zip")):
        res = registry[name]
        remote = dataclasses.replace(res.files[0], md5=_md5(srv.files[file_name]))
        registry[name] = dataclasses.replace(res, files=(remote,))
    return registry


def _names() -> str:
    return "mlaad,protocols,musan,rirs" if HAVE_SPLIT_TOOLS else "protocols,musan,rirs"


def _main(srv: FileServer, registry: dict[str, resources.Resource], data: Path, *extra: str) -> int:
    only = [] if "--only" in extra else ["--only", _names()]  # a repeated --only adds to the list
    argv = ["--data-dir", str(data), "--base-url", srv.url, "--no-progress", *only, *extra]
    return cli.main(argv, registry=registry)


# ------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------


def test_full_download_and_layout(server: FileServer, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    mlaad = request.getfixturevalue("mlaad_parts") if HAVE_SPLIT_TOOLS else None
    registry = _serve_corpora(server, mlaad)
    data = tmp_path / "data"
    assert _main(server, registry, data) == 0

    for split in ("train", "dev", "eval"):
        assert (data / "MLAAD_v5_protocols" / f"{split}.csv").read_text() == PROTOCOL_CSV
    for sub in ("music", "noise", "speech"):
        assert (data / "musan" / sub).is_dir()
    assert (data / "musan/speech/librivox/speech-librivox-0000.wav").read_bytes() == b"RIFFspeech"
    for sub in ("simulated_rirs", "real_rirs_isotropic_noises", "pointsource_noises"):
        assert (data / "RIRS_NOISES" / sub).is_dir()
    assert (
        data / "RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav"
    ).read_bytes() == b"RIFFrir"
    if mlaad:
        clip = data / "MLAAD_v5/fake/en/tts_models_en_ljspeech_vits/clip_0.wav"
        assert clip.read_bytes() == mlaad["__clips__"]
        assert (data / "MLAAD_v5/fake/de/facebook_mms-tts-deu/clip_1.wav").is_file()
        assert not (data / "MLAAD_v5/mlaad_v5").exists()
    for res in _names().split(","):
        assert (data / registry[res].target / registry[res].marker_name()).is_file()
    assert not list(data.glob(".staging-*"))
    assert not list((data / "downloads").glob("*.part"))
    names = [name for name, _ in server.gets()]
    assert sorted(names) == sorted(set(names))  # every file fetched exactly once


def test_second_run_downloads_nothing(
    server: FileServer, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    mlaad = request.getfixturevalue("mlaad_parts") if HAVE_SPLIT_TOOLS else None
    registry = _serve_corpora(server, mlaad)
    data = tmp_path / "data"
    assert _main(server, registry, data) == 0
    first = len(server.gets())
    capsys.readouterr()

    assert _main(server, registry, data) == 0
    assert len(server.gets()) == first
    out = capsys.readouterr().out
    assert out.count("already extracted") == len(_names().split(","))

    # Marker gone, archives still there and verified: unpack again without any request.
    (data / "musan" / ".extracted-musan").unlink()
    shutil.rmtree(data / "musan" / "music")
    assert _main(server, registry, data, "--only", "musan") == 0
    assert len(server.gets()) == first
    assert (data / "musan/music/fma/music-fma-0000.wav").read_bytes() == b"RIFFmusic"


def test_no_extract_is_idempotent(server: FileServer, tmp_path: Path) -> None:
    registry = _serve_corpora(server, None)
    data = tmp_path / "data"
    args = ("--only", "protocols,musan,rirs", "--no-extract")
    assert _main(server, registry, data, *args) == 0
    assert (data / "downloads" / "musan.tar.gz").read_bytes() == server.files["musan.tar.gz"]
    assert not (data / "musan").exists()
    count = len(server.gets())
    assert count == 3
    assert _main(server, registry, data, *args) == 0
    assert len(server.gets()) == count


def test_cut_transfer_resumes_with_range(server: FileServer, tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    server.files["big.bin"] = payload
    server.cut_after["big.bin"] = [120_000]
    dest = tmp_path / "big.bin"
    with pytest.raises(transfer.DownloadError, match="cut at 120000 of 300000"):
        transfer.fetch(f"{server.url}/big.bin", dest, retries=0, progress=False)
    part = tmp_path / "big.bin.part"
    assert part.stat().st_size == 120_000 and not dest.exists()

    transfer.fetch(f"{server.url}/big.bin", dest, retries=0, progress=False)
    assert server.gets("big.bin")[-1] == ("big.bin", "bytes=120000-")
    assert dest.read_bytes() == payload
    assert not part.exists()


def test_cut_transfer_retried_within_one_call(server: FileServer, tmp_path: Path) -> None:
    payload = os.urandom(200_000)
    server.files["big.bin"] = payload
    server.cut_after["big.bin"] = [50_000, 70_000]
    dest = tmp_path / "big.bin"
    transfer.fetch(f"{server.url}/big.bin", dest, retries=3, backoff_s=0, progress=False)
    assert [r for _, r in server.gets("big.bin")] == [None, "bytes=50000-", "bytes=120000-"]
    assert dest.read_bytes() == payload


def test_server_ignoring_range_restarts_from_zero(server: FileServer, tmp_path: Path) -> None:
    payload = os.urandom(100_000)
    server.files["big.bin"] = payload
    server.ignore_range.add("big.bin")
    dest = tmp_path / "big.bin"
    (tmp_path / "big.bin.part").write_bytes(b"x" * 1000)  # stale prefix: appending would corrupt the file
    transfer.fetch(f"{server.url}/big.bin", dest, retries=0, progress=False)
    assert server.gets("big.bin") == [("big.bin", "bytes=1000-")]
    assert dest.read_bytes() == payload


def test_complete_part_file_is_finished_on_416(server: FileServer, tmp_path: Path) -> None:
    payload = os.urandom(10_000)
    server.files["big.bin"] = payload
    (tmp_path / "big.bin.part").write_bytes(payload)
    transfer.fetch(f"{server.url}/big.bin", tmp_path / "big.bin", retries=0, progress=False)
    assert (tmp_path / "big.bin").read_bytes() == payload


def test_corrupted_download_is_fetched_again_once(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _serve_corpora(server, None)
    server.corrupt["musan.tar.gz"] = 1
    data = tmp_path / "data"
    assert _main(server, registry, data, "--only", "musan") == 0
    assert len(server.gets("musan.tar.gz")) == 2
    assert "md5 mismatch" in capsys.readouterr().out
    assert (data / "musan/noise/free-sound/noise-free-sound-0000.wav").read_bytes() == b"RIFFnoise"


def test_corrupted_download_fails_clearly(server: FileServer, tmp_path: Path) -> None:
    registry = _serve_corpora(server, None)
    server.corrupt["rirs_noises.zip"] = 99
    good = _md5(server.files["rirs_noises.zip"])
    bad = _md5(bytes([server.files["rirs_noises.zip"][0] ^ 0xFF]) + server.files["rirs_noises.zip"][1:])
    resource = resources.with_base_url(registry["rirs"], server.url)
    with pytest.raises(checksums.ChecksumError) as info:
        install.install_resource(resource, tmp_path / "data", progress=False, retries=0)
    message = str(info.value)
    assert "rirs_noises.zip" in message and good in message and bad in message
    assert len(server.gets("rirs_noises.zip")) == 2
    assert not (tmp_path / "data/downloads/rirs_noises.zip").exists()
    assert not (tmp_path / "data/RIRS_NOISES").exists()
    # Through the CLI: a failed resource gives exit status 1 and a summary line.
    assert _main(server, registry, tmp_path / "data", "--only", "rirs") == 1


def test_mlaad_md5_list_is_used(server: FileServer, tmp_path: Path, mlaad_parts: dict[str, bytes]) -> None:
    registry = _serve_corpora(server, mlaad_parts)
    server.corrupt["mlaad_v5.z03"] = 1
    data = tmp_path / "data"
    assert _main(server, registry, data, "--only", "mlaad") == 0
    assert len(server.gets("mlaad_v5.z03")) == 2
    assert len(server.gets("mlaad_v5.z04")) == 1
    assert (data / "MLAAD_v5/fake/en/tts_models_en_ljspeech_vits/clip_0.wav").is_file()


def test_split_zip_without_7z_names_the_package(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = {f"mlaad_v5.z{i:02d}": b"part %d" % i for i in range(1, 11)}
    parts["mlaad_v5.zip"] = b"last part"
    parts["mlaad_v5.zip.md5"] = "".join(f"{_md5(d)}  {n}\n" for n, d in parts.items()).encode()
    server.files.update(parts)
    empty = tmp_path / "empty_bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    resource = resources.with_base_url(resources.REGISTRY["mlaad"], server.url)
    with pytest.raises(archives.MissingToolError) as info:
        install.install_resource(resource, tmp_path / "data", progress=False)
    assert "p7zip-full" in str(info.value) and "7z x" in str(info.value)
    assert (tmp_path / "data/downloads/mlaad_v5.z10").is_file()
    assert not (tmp_path / "data/MLAAD_v5").exists()


def _evil_tar(path: Path, kind: str, outside: Path) -> str:
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo("musan/ok.txt")
        ok.size = 2
        tf.addfile(ok, io.BytesIO(b"ok"))
        if kind == "dotdot":
            info = tarfile.TarInfo("musan/../../evil")
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
            return info.name
        if kind == "absolute":
            info = tarfile.TarInfo(str(outside / "evil"))
            info.size = 4
            tf.addfile(info, io.BytesIO(b"evil"))
            return info.name
        link = tarfile.TarInfo("musan/escape")
        link.type = tarfile.SYMTYPE
        link.linkname = str(outside) if kind == "symlink-abs" else "../../outside"
        tf.addfile(link)
        through = tarfile.TarInfo("musan/escape/evil")
        through.size = 4
        tf.addfile(through, io.BytesIO(b"evil"))
        return link.name


def _evil_zip(path: Path, kind: str, outside: Path) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("RIRS_NOISES/ok.txt", b"ok")
        if kind == "dotdot":
            name = "RIRS_NOISES/../../evil"
            zf.writestr(zipfile.ZipInfo(name), b"evil")
        elif kind == "absolute":
            name = str(outside / "evil")
            zf.writestr(zipfile.ZipInfo(name), b"evil")
        else:
            name = "RIRS_NOISES/escape"
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (0o120777 << 16) & 0xFFFF0000
            zf.writestr(info, str(outside) if kind == "symlink-abs" else "../../outside")
            zf.writestr("RIRS_NOISES/escape/evil", b"evil")
    return name


@pytest.mark.parametrize("fmt", ["tar", "zip"])
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink-rel", "symlink-abs"])
def test_path_traversal_refused(tmp_path: Path, fmt: str, kind: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = tmp_path / f"evil.{'tar.gz' if fmt == 'tar' else 'zip'}"
    member = (_evil_tar if fmt == "tar" else _evil_zip)(archive, kind, outside)
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises(archives.UnsafeArchiveError) as info:
        archives.extract_archive(archive, dest, fmt, progress=False)
    assert repr(member) in str(info.value)
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists()
    assert not any(p.is_symlink() for p in dest.rglob("*")) if dest.exists() else True


def test_chained_symlinks_refused(tmp_path: Path) -> None:
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tf:
        for name, target in (("b", "a/.."), ("a", ".")):  # b looks inside until a points at the root
            link = tarfile.TarInfo(name)
            link.type = tarfile.SYMTYPE
            link.linkname = target
            tf.addfile(link)
        through = tarfile.TarInfo("b/evil")  # would be written through the escaping chain
        through.size = 4
        tf.addfile(through, io.BytesIO(b"evil"))
    with pytest.raises(archives.UnsafeArchiveError, match="b/evil"):
        archives.extract_archive(archive, tmp_path / "dest", "tar", progress=False)
    assert not (tmp_path / "evil").exists()


@pytest.mark.skipif(not HAVE_SPLIT_TOOLS, reason="needs `zip` and 7-Zip")
def test_split_zip_traversal_refused(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "whole.zip", "w") as zf:
        zf.writestr("mlaad_v5/fake/a.wav", os.urandom(100_000))
        zf.writestr("../evil", b"evil")
    subprocess.run(["zip", "-q", "-s", "64k", "whole.zip", "--out", "split.zip"], cwd=tmp_path, check=True)
    assert (tmp_path / "split.z01").is_file()
    dest = tmp_path / "x" / "dest"
    with pytest.raises(archives.UnsafeArchiveError, match="'../evil'"):
        archives.extract_archive(tmp_path / "split.zip", dest, "split-zip", progress=False)
    assert not (tmp_path / "x" / "evil").exists() and not dest.exists()


def test_unsafe_archive_leaves_no_target(server: FileServer, tmp_path: Path) -> None:
    registry = _serve_corpora(server, None)
    server.files["mlaad4sourcetracing.zip"] = _zip_bytes({"x/train.csv": b"", "../evil.csv": b"evil"})
    data = tmp_path / "data"
    assert _main(server, registry, data, "--only", "protocols") == 1
    assert not (data / "MLAAD_v5_protocols").exists()
    assert not (tmp_path / "evil.csv").exists() and not list(data.glob(".staging-*"))


def test_broken_archive_is_reported(
    server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _serve_corpora(server, None)
    server.files["mlaad4sourcetracing.zip"] = b"<html>Service unavailable</html>"
    assert _main(server, registry, tmp_path / "data", "--only", "protocols") == 1
    out = capsys.readouterr().out
    assert "[protocols] FAILED" in out and "mlaad4sourcetracing.zip could not be read" in out


def test_http_and_network_errors_are_clear(server: FileServer, tmp_path: Path) -> None:
    with pytest.raises(transfer.DownloadError, match=r"HTTP 404 .*127\.0\.0\.1.*/missing\.bin"):
        transfer.fetch(f"{server.url}/missing.bin", tmp_path / "missing.bin", retries=0, progress=False)
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_address[1]
    closed.server_close()
    with pytest.raises(transfer.DownloadError, match="network error"):
        transfer.fetch(f"http://127.0.0.1:{port}/x", tmp_path / "x", retries=1, backoff_s=0, progress=False)
    # A dead mirror is skipped for the next one.
    server.files["ok.bin"] = b"hello"
    transfer.fetch_any(
        [f"{server.url}/nope/ok.bin", f"{server.url}/ok.bin"], tmp_path / "ok.bin", retries=0, progress=False
    )
    assert (tmp_path / "ok.bin").read_bytes() == b"hello"


def test_not_enough_disk_space(server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["big.bin"] = b"x" * 1000
    monkeypatch.setattr(transfer.shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10, 10, 10))  # type: ignore[attr-defined]
    with pytest.raises(transfer.NoSpaceError, match="not enough disk space"):
        transfer.fetch(f"{server.url}/big.bin", tmp_path / "big.bin", retries=0, progress=False)


def test_base_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCETRACING_BASE_URL", "http://env-all")
    monkeypatch.setenv("SOURCETRACING_MUSAN_URL", "http://env-musan")
    urls = resources.resolve_base_urls([], resources.REGISTRY)
    assert urls["musan"] == "http://env-musan" and urls["rirs"] == "http://env-all"
    urls = resources.resolve_base_urls(["http://cli-all", "rirs=http://cli-rirs"], resources.REGISTRY)
    assert urls == {
        "mlaad": "http://cli-all",
        "protocols": "http://cli-all",
        "musan": "http://cli-all",
        "rirs": "http://cli-rirs",
    }
    res = resources.with_base_url(resources.REGISTRY["mlaad"], "http://h/x/")
    assert res.files[0].urls == ("http://h/x/mlaad_v5.z01",)


def test_parse_checksum_file() -> None:
    text = (
        "# sums\nD41D8CD98F00B204E9800998ECF8427E *sub/mlaad_v5.z01\r\nMD5 (mlaad_v5.zip) = "
        + "0" * 32
        + "\n"
    )
    assert checksums.parse_checksum_file(text) == {
        "mlaad_v5.z01": "d41d8cd98f00b204e9800998ecf8427e",
        "mlaad_v5.zip": "0" * 32,
    }


def test_script_help() -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/download_resources.py"), "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0 and "--only" in result.stdout and "--base-url" in result.stdout
