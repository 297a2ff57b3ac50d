"""The bundle's web page: its decisions are ``trace.py --bundle``'s, uploads are checked against the
limits with a clear per-file error, nothing outlives a request's temporary folder, concurrent
requests keep their own results, and a real headless browser shows the same decisions."""

from __future__ import annotations

import io
import os
import shutil
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from step_scripts import trace_main
from test_trace import experiment  # noqa: F401 - the tiny judged experiment (aasist, ge2e, mfcc, stats)

from sourcetracing.bundle_export import export_bundle
from sourcetracing.trace import RESULT_COLUMNS
from sourcetracing.web import Limits, create_app

REPO = Path(__file__).resolve().parents[1]
SAME = ["status", "predicted", "top_k", "scorer", "decision"]


@pytest.fixture(scope="module")
def bundles(experiment, tmp_path_factory):  # noqa: F811
    """A GE2E bundle (it holds class centroids: a map) and a classifier bundle, with the eval clips."""
    corpus, cfg = experiment
    root = tmp_path_factory.mktemp("web")
    ge2e, _, _ = export_bundle(cfg, root / "ge2e", "ge2e")
    aasist, _, _ = export_bundle(cfg, root / "aasist", "aasist")
    clips = sorted(corpus.mlaad.rglob("eval_00[01].wav"))
    return ge2e, aasist, clips


def _expected(bundle: Path, clips: list[Path], out: Path) -> pd.DataFrame:
    """What ``trace.py --bundle`` decides on the clips."""
    assert trace_main(["--bundle", str(bundle), *map(str, clips), "--out", str(out)]) == 0
    return pd.read_csv(out, keep_default_na=False)


def _post(client, files: list[tuple[bytes, str]], query: str = ""):
    data = {"clips": [(io.BytesIO(b), name) for b, name in files]}
    return client.post(f"/api/trace{query}", data=data, content_type="multipart/form-data")


def _wav(seconds: float, sample_rate: int = 16000, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    sf.write(
        buf,
        (0.1 * rng.standard_normal(int(seconds * sample_rate))).astype(np.float32),
        sample_rate,
        format="WAV",
    )
    return buf.getvalue()


def _assert_same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert len(got) == len(want) and (got["status"] == "ok").all()
    pd.testing.assert_frame_equal(got[SAME].reset_index(drop=True), want[SAME].reset_index(drop=True))
    np.testing.assert_allclose(
        got["threshold"].astype(float), want["threshold"].astype(float), rtol=0, atol=0
    )
    np.testing.assert_allclose(
        got["ood_score"].astype(float), want["ood_score"].astype(float), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        got["p_unseen"].astype(float), want["p_unseen"].astype(float), rtol=1e-5, atol=1e-6
    )


def test_the_page_decides_as_trace_py_and_its_csv_says_the_same(bundles, tmp_path) -> None:
    ge2e, _, clips = bundles
    want = _expected(ge2e, clips, tmp_path / "want.csv")
    client = create_app(ge2e).test_client()
    uploads = [(c.read_bytes(), f"{c.parent.name}_{c.name}") for c in clips]
    resp = _post(client, uploads)
    assert resp.status_code == 200
    rows = resp.get_json()["results"]
    got = pd.DataFrame(rows)
    _assert_same(got, want)
    assert list(got["path"]) == [name for _, name in uploads]  # the client's names, never its paths
    known = set(create_app(ge2e).test_client().get("/api/info").get_json()["classes"])
    assert all(len(r["map"]) == 2 and np.isfinite(r["map"]).all() for r in rows)
    assert {r["predicted"] for r in rows} <= known
    csv = _post(client, uploads, "?format=csv")
    assert csv.status_code == 200 and csv.mimetype == "text/csv"
    table = pd.read_csv(io.BytesIO(csv.data), keep_default_na=False)
    assert list(table.columns) == RESULT_COLUMNS
    _assert_same(table, want)


def test_the_page_the_card_and_the_map_need_nothing_from_outside(bundles) -> None:
    ge2e, aasist, _ = bundles
    client = create_app(ge2e).test_client()
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "tracing…" in html and 'href="/card"' in html
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and "https://" not in html
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    card = client.get("/card")
    assert card.status_code == 200 and card.get_data(as_text=True) == (ge2e / "README.md").read_text()
    info = client.get("/api/info").get_json()
    assert [s["name"] for s in info["map"]["systems"]] == info["classes"]
    # a classifier bundle without class centroids has no map: none is invented
    plain = create_app(aasist).test_client()
    if plain.get("/api/info").get_json()["map"] is None:
        row = _post(plain, [(_wav(2.0), "a.wav")]).get_json()["results"][0]
        assert row["status"] == "ok" and "map" not in row
        assert "map not available for this bundle" in plain.get("/").get_data(as_text=True)


def test_each_bad_upload_gets_its_own_clear_error(bundles, tmp_path, monkeypatch) -> None:
    ge2e, _, clips = bundles
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    client = create_app(ge2e, Limits(max_mb=0.2, max_seconds=3.0)).test_client()
    uploads = [
        (b"", "empty.wav"),
        (b"this is not audio\n" * 20, "notes.wav"),
        (_wav(0.05), "short.wav"),
        (_wav(4.0), "long.wav"),
        (_wav(8.0, 44100), "../../../etc/big.wav"),
        (clips[0].read_bytes(), "uploads/../good.wav"),
    ]
    rows = _post(client, uploads).get_json()["results"]
    by = {r["path"]: r for r in rows}
    assert list(by) == ["empty.wav", "notes.wav", "short.wav", "long.wav", "big.wav", "good.wav"]
    assert by["empty.wav"]["error"] == "empty file"
    assert by["notes.wav"]["error"] == "not a readable audio file"
    assert by["short.wav"]["error"].startswith("too short: 0.05 s")
    assert by["long.wav"]["error"].startswith("too long: 4.0 s, the limit is 3 s")
    assert by["big.wav"]["error"].startswith("file too large") and "0.2 MB" in by["big.wav"]["error"]
    assert by["good.wav"]["status"] == "ok" and by["good.wav"]["error"] == ""
    assert all(r["status"] == "error" for r in rows[:5])
    assert not any(str(work) in str(r["error"]) for r in rows)  # no server path is told
    assert list(work.iterdir()) == []  # the request's folder is gone, nothing written beside it
    assert not (tmp_path / "etc").exists() and not (REPO / "etc").exists()
    assert _post(client, []).status_code == 400
    too_many = client.post(
        "/api/trace",
        data={"clips": [(io.BytesIO(b"x" * 300_000), f"{i}.wav") for i in range(20)]},
        content_type="multipart/form-data",
    )
    assert too_many.status_code == 413 and "request too large" in too_many.get_json()["error"]


def test_concurrent_requests_keep_their_own_results(bundles) -> None:
    ge2e, _, clips = bundles
    client = create_app(ge2e).test_client()
    alone = {
        c.name + c.parent.name: _post(client, [(c.read_bytes(), c.parent.name)]).get_json() for c in clips
    }

    def one(c: Path) -> tuple[str, dict]:
        return c.name + c.parent.name, _post(client, [(c.read_bytes(), c.parent.name)]).get_json()

    with ThreadPoolExecutor(4) as pool:
        together = dict(pool.map(one, clips * 2))
    for key, res in together.items():
        a, b = alone[key]["results"][0], res["results"][0]
        assert a["path"] == b["path"] and a["predicted"] == b["predicted"] and a["decision"] == b["decision"]
        assert a["ood_score"] == pytest.approx(b["ood_score"], rel=1e-5, abs=1e-6)


def _browser():
    """A headless Chromium driven by Debian's chromedriver, or a skip saying what is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("chromium or chromedriver not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium not installed")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_real_browser_shows_trace_pys_decisions(bundles, tmp_path) -> None:
    from werkzeug.serving import make_server

    ge2e, _, clips = bundles
    browser = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = make_server("127.0.0.1", _free_port(), create_app(ge2e), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        want = _expected(ge2e, clips, tmp_path / "want.csv")
        demo = tmp_path / "demo"
        demo.mkdir()
        names = []
        for c in clips:  # the clips under distinct names, as a user would pick them
            names.append(f"{c.parent.name}_{c.name}")
            shutil.copy(c, demo / names[-1])
        (demo / "notes.txt").write_text("not audio\n" * 50)
        browser.get(f"http://127.0.0.1:{server.port}/")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        picker = browser.find_element(By.ID, "files")
        picker.send_keys("\n".join(str(demo / n) for n in names))
        picker.send_keys(str(demo / "notes.txt"))

        def done(b) -> bool:
            rows = b.find_elements(By.CSS_SELECTOR, "#results tbody tr")
            return len(rows) == len(names) + 1 and all(
                r.get_attribute("data-status") != "tracing" for r in rows
            )

        wait.until(done)
        shown = {}
        for r in browser.find_elements(By.CSS_SELECTOR, "#results tbody tr"):
            clip = r.find_element(By.CLASS_NAME, "clip").text
            if r.get_attribute("data-status") == "ok":
                shown[clip] = (
                    r.find_element(By.CLASS_NAME, "predicted").text.split(" (")[0],
                    r.find_element(By.CLASS_NAME, "verdict").text,
                    float(r.find_element(By.CLASS_NAME, "p_unseen").text),
                )
                assert r.find_elements(By.CSS_SELECTOR, "svg.map circle")
            else:
                shown[clip] = r.find_element(By.CLASS_NAME, "error").text
        assert shown["notes.txt"] == "error: not a readable audio file"
        for name, (_, row) in zip(names, want.iterrows(), strict=True):
            assert shown[name][:2] == (row["predicted"], row["decision"])
            assert shown[name][2] == pytest.approx(float(row["p_unseen"]), abs=6e-4)
        browser.set_script_timeout(20)
        href = browser.find_element(By.ID, "csv").get_attribute("href")
        assert href.startswith("blob:")
        csv_text = browser.execute_async_script(
            "const done = arguments[1]; fetch(arguments[0]).then(r => r.text()).then(done);", href
        )
        table = pd.read_csv(io.StringIO(csv_text), keep_default_na=False)
        assert list(table.columns) == RESULT_COLUMNS and len(table) == len(names) + 1
        out = os.environ.get("SOURCETRACING_SCREENSHOT")
        if out:  # the README's picture: SOURCETRACING_SCREENSHOT=docs/images/web_page.png
            time.sleep(0.2)
            browser.save_screenshot(out)
    finally:
        browser.quit()
        server.shutdown()
        thread.join(5)
