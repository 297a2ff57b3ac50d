"""A local web page that traces uploaded clips with a tracer bundle (``scripts/serve.py``).

The page (one HTML file, inline CSS and JavaScript, nothing fetched from the internet) sends each
chosen or dropped clip to ``POST /api/trace`` and shows, per clip, the predicted system, the top-k
with probabilities, the calibrated probability of an unseen system with the decision and its
threshold, and the clip's place on a 2-D map of the known systems when the bundle holds their
centroids. ``GET /card`` is the bundle's model card. Decisions are :meth:`Tracer.trace`'s on the
uploaded file, the same as ``scripts/trace.py --bundle``.

Every upload is written under a fresh temporary folder of its request, named by position (never
by the client's file name), and the folder is removed when the request ends. The tracer is
shared read-only between requests; everything else a request computes is local to it.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from flask import Flask, Response, jsonify, request

from sourcetracing.trace import AUDIO_EXTENSIONS, RESULT_COLUMNS, Tracer

MB = 1 << 20
MAX_FILES = 20  # clips per request


@dataclass(frozen=True)
class Limits:
    """Upload limits: bytes per file and seconds of audio per file."""

    max_mb: float = 20.0
    max_seconds: float = 60.0


@dataclass(frozen=True)
class SystemMap:
    """A 2-D map of the known systems: their unit-length centroids projected on two principal axes."""

    names: list[str]
    points: np.ndarray  # [systems, 2]
    mean: np.ndarray  # [E]
    axes: np.ndarray  # [E, 2]

    @classmethod
    def of(cls, tracer: Tracer) -> SystemMap | None:
        """The map from the bundle's class centroids (or its centroid scorer's), None without them."""
        cents = tracer.centroids
        if cents is None:
            cents = getattr(tracer.scorer, "centroids", None)
        if cents is None or len(cents) != len(tracer.classes) or len(cents) < 2:
            return None
        unit = _unit(np.asarray(cents, dtype=np.float64))
        mean = unit.mean(axis=0)
        _, _, vt = np.linalg.svd(unit - mean, full_matrices=False)
        axes = np.zeros((unit.shape[1], 2))
        axes[:, : min(2, len(vt))] = vt[:2].T
        return cls(list(tracer.classes), (unit - mean) @ axes, mean, axes)

    def place(self, embedding: np.ndarray) -> list[float]:
        """The 2-D point of one clip embedding."""
        point = (_unit(embedding[None].astype(np.float64)) - self.mean) @ self.axes
        return [float(v) for v in point[0]]

    def as_dict(self) -> dict:
        """The known systems' points, as the page draws them."""
        return {
            "systems": [
                {"name": n, "x": float(p[0]), "y": float(p[1])}
                for n, p in zip(self.names, self.points, strict=True)
            ]
        }


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def display_name(name: str | None, index: int) -> str:
    """The clip's name as shown and written in the CSV: the last part of the client's name, printable."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip()[:200]
    return base or f"clip {index + 1}"


def stored_name(name: str | None, index: int) -> str:
    """The file name an upload is stored under: its position and a known audio extension only."""
    suffix = Path(display_name(name, index)).suffix.lower()
    return f"clip_{index:03d}{suffix if suffix in AUDIO_EXTENSIONS else '.bin'}"


def check_clip(path: Path, size: int, tracer: Tracer, limits: Limits) -> str | None:
    """Why an uploaded file cannot be traced (empty, too large, not audio, too short or too long), or None."""
    from sourcetracing.data.audio import load_audio

    if size == 0:
        return "empty file"
    if size > limits.max_mb * MB:
        return f"file too large: {size / MB:.1f} MB, the limit is {limits.max_mb:g} MB"
    try:
        wave = load_audio(path, tracer.sample_rate)
    except Exception as err:  # noqa: BLE001 - every decoder failure is the same answer to the user
        reason = getattr(err, "reason", "")
        if reason in ("empty", "silent", "nan_or_inf"):
            return {"empty": "no audio samples", "silent": "silent clip", "nan_or_inf": "invalid samples"}[
                reason
            ]
        return "not a readable audio file"
    seconds = wave.size / tracer.sample_rate
    if seconds < tracer.min_len_s:
        return f"too short: {seconds:.2f} s, the tracer needs at least {tracer.min_len_s:g} s"
    if seconds > limits.max_seconds:
        return f"too long: {seconds:.1f} s, the limit is {limits.max_seconds:g} s"
    return None


def trace_uploads(tracer: Tracer, system_map: SystemMap | None, uploads: list, limits: Limits) -> list[dict]:
    """One result row per upload (``RESULT_COLUMNS`` plus ``map``), traced in a temporary folder removed after."""
    work = Path(tempfile.mkdtemp(prefix="sourcetracing-web-"))
    try:
        rows: list[dict | None] = []
        good: list[tuple[int, Path]] = []
        for i, upload in enumerate(uploads):
            name = display_name(upload.filename, i)
            path = work / stored_name(upload.filename, i)
            upload.save(path)
            problem = check_clip(path, path.stat().st_size, tracer, limits)
            if problem:
                rows.append(_error_row(name, problem, tracer))
            else:
                rows.append(None)
                good.append((i, path))
        if good:
            paths = [p for _, p in good]
            df = tracer.trace(paths)
            embeddings = {}
            if system_map is not None:
                done, emb, _ = tracer.embed(paths)
                embeddings = {str(p): e for p, e in zip(done, emb, strict=True)}
            by_path = {str(row["path"]): row for _, row in df.iterrows()}
            for i, path in good:
                row = by_path[str(path)]
                out = {c: _plain(row[c]) for c in RESULT_COLUMNS}
                out["path"] = display_name(uploads[i].filename, i)
                if out["status"] != "ok":
                    out["error"] = "not a readable audio file"
                if str(path) in embeddings:
                    out["map"] = system_map.place(embeddings[str(path)])
                rows[i] = out
        return [r for r in rows if r is not None]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _error_row(name: str, problem: str, tracer: Tracer) -> dict:
    row = {c: "" for c in RESULT_COLUMNS}
    row.update(
        path=name, status="error", scorer=tracer.scorer_name, threshold=tracer.threshold, error=problem
    )
    return row


def _plain(value: object) -> object:
    """A JSON-ready cell: numpy scalars as Python ones, missing numbers as None."""
    if isinstance(value, (np.floating, float)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return "" if value is None else value


def to_csv(rows: list[dict]) -> str:
    """The rows as ``scripts/trace.py`` writes its CSV (same columns)."""
    import pandas as pd

    buf = io.StringIO()
    pd.DataFrame(rows, columns=RESULT_COLUMNS).to_csv(buf, index=False)
    return buf.getvalue()


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self' blob:; img-src 'self' data: blob:; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_app(bundle: str | Path, limits: Limits | None = None, device: str | None = "cpu") -> Flask:
    """The Flask app of one bundle: the page, ``/api/trace`` (JSON, or CSV with ``?format=csv``) and ``/card``."""
    from sourcetracing.bundle import CARD, unpack

    limits = limits or Limits()
    folder = unpack(bundle)
    tracer = Tracer.from_bundle(folder, device)
    system_map = SystemMap.of(tracer)
    card = (folder / CARD).read_text(encoding="utf-8")
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(limits.max_mb * MB * MAX_FILES + MB)
    info = {
        "system": tracer.system,
        "scorer": tracer.scorer_name,
        "threshold": tracer.threshold,
        "classes": list(tracer.classes),
        "level": tracer.level,
        "max_mb": limits.max_mb,
        "max_seconds": limits.max_seconds,
        "min_seconds": tracer.min_len_s,
        "max_files": MAX_FILES,
        "columns": RESULT_COLUMNS,
        "map": system_map.as_dict() if system_map else None,
    }

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.update(SECURITY_HEADERS)
        return resp

    @app.errorhandler(413)
    def _too_large(_err: Exception) -> tuple[Response, int]:
        return jsonify(
            error=f"request too large: at most {MAX_FILES} files of {limits.max_mb:g} MB each"
        ), 413

    @app.get("/")
    def page() -> Response:
        return Response(PAGE, mimetype="text/html")

    @app.get("/api/info")
    def api_info() -> Response:
        return jsonify(info)

    @app.get("/card")
    def model_card() -> Response:
        return Response(card, mimetype="text/plain")

    @app.post("/api/trace")
    def api_trace() -> Response | tuple[Response, int]:
        uploads = request.files.getlist("clips")
        if not uploads:
            return jsonify(error="no clips: send one or more files in the form field 'clips'"), 400
        if len(uploads) > MAX_FILES:
            return jsonify(error=f"too many clips: at most {MAX_FILES} per request"), 400
        rows = trace_uploads(tracer, system_map, uploads, limits)
        if request.args.get("format") == "csv":
            return Response(
                to_csv(rows),
                mimetype="text/csv",
                headers={"Content-Disposition": "attachment; filename=trace.csv"},
            )
        return jsonify(results=rows)

    return app


PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Source tracing</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#222}
h1{font-size:1.4em;margin:.2em 0}.muted{color:#666}
#drop{border:2px dashed #89a;border-radius:8px;padding:1.2em;text-align:center;margin:1em 0;background:#f7f9fb}
#drop.over{background:#e6f0ff}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top;word-break:break-word}
.known{color:#16602b;font-weight:600}.unknown{color:#a3261b;font-weight:600}.error{color:#a3261b}
.tracing{color:#555;font-style:italic}svg{background:#fafafa;border:1px solid #ddd}
a.button,button{display:inline-block;padding:.3em .8em;border:1px solid #89a;border-radius:4px;background:#fff;color:#124;text-decoration:none;cursor:pointer}
</style></head><body>
<h1>Source tracing</h1>
<p class="muted" id="about">Loading the tracer…</p>
<p><a class="button" id="card" href="/card" target="_blank">Model card</a>
<a class="button" id="csv" href="#" download="trace.csv" style="display:none">Download CSV</a></p>
<div id="drop"><p>Drop audio clips here, or <input type="file" id="files" multiple accept="audio/*,.wav,.flac,.mp3,.ogg,.opus,.m4a"></p>
<p class="muted" id="limits"></p></div>
<table id="results"><thead><tr><th>Clip</th><th>Predicted</th><th>Top-k</th><th>P(unseen)</th><th>Decision</th><th>Map</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
let info = null; const rows = []; let queue = Promise.resolve();
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; };
const fmt = v => (v === null || v === "" || v === undefined) ? "n/a" : Number(v).toFixed(3);
function svg(tag, attrs) { const e = document.createElementNS("http://www.w3.org/2000/svg", tag); for (const k in attrs) e.setAttribute(k, attrs[k]); return e; }
function drawMap(point) {
  if (!info.map) return el("span", "muted map-missing", "map not available for this bundle");
  const pts = info.map.systems.concat([{name: "this clip", x: point[0], y: point[1]}]);
  const xs = pts.map(p => p.x), ys = pts.map(p => p.y), W = 230, H = 140, pad = 14;
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = x => pad + (W - 8 * pad) * (x - x0) / ((x1 - x0) || 1), sy = y => H - pad - (H - 2 * pad) * (y - y0) / ((y1 - y0) || 1);
  const s = svg("svg", {width: W, height: H, class: "map"});
  pts.forEach((p, i) => {
    const me = i === pts.length - 1;
    s.appendChild(svg("circle", {cx: sx(p.x), cy: sy(p.y), r: me ? 5 : 3.5, fill: me ? "#d62" : "#357"}));
    const t = svg("text", {x: sx(p.x) + 5, y: sy(p.y) - 4, "font-size": 10, fill: me ? "#d62" : "#333"}); t.textContent = p.name.split("/").pop(); s.appendChild(t);
  });
  return s;
}
function csvCell(v) { v = (v === null || v === undefined) ? "" : String(v); return /[",\n\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
function refreshCsv() {
  const lines = [info.columns.join(",")].concat(rows.map(r => info.columns.map(c => csvCell(r[c])).join(",")));
  const a = document.getElementById("csv"); if (a.href.startsWith("blob:")) URL.revokeObjectURL(a.href);
  a.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], {type: "text/csv"})); a.style.display = "inline-block";
}
function show(tr, r) {
  tr.replaceChildren(); tr.dataset.status = r.status; tr.appendChild(el("td", "clip", r.path));
  if (r.status !== "ok") { const td = el("td", "error", "error: " + r.error); td.colSpan = 5; tr.appendChild(td); return; }
  tr.appendChild(el("td", "predicted", r.predicted + " (" + fmt(r.probability) + ")"));
  const top = el("td", "topk"); r.top_k.split("; ").forEach(t => top.appendChild(el("div", "", t.replace(":", ": ")))); tr.appendChild(top);
  tr.appendChild(el("td", "p_unseen", fmt(r.p_unseen)));
  const d = el("td", "decision"); d.appendChild(el("span", r.decision + " verdict", r.decision));
  d.appendChild(el("div", "muted", r.scorer + " score " + fmt(r.ood_score) + (r.decision === "unknown" ? " ≥ " : " < ") + "threshold " + fmt(r.threshold)));
  tr.appendChild(d); const m = el("td", "map-cell"); m.appendChild(drawMap(r.map || [0, 0])); tr.appendChild(m);
}
function traceOne(file) {
  const tr = el("tr", "row"); tr.dataset.status = "tracing"; tr.appendChild(el("td", "clip", file.name));
  const td = el("td", "tracing", "tracing…"); td.colSpan = 5; tr.appendChild(td);
  document.querySelector("#results tbody").appendChild(tr);
  queue = queue.then(async () => {
    const body = new FormData(); body.append("clips", file, file.name);
    let r;
    try {
      const resp = await fetch("/api/trace", {method: "POST", body});
      const data = await resp.json();
      r = resp.ok ? data.results[0] : {path: file.name, status: "error", error: data.error};
    } catch (e) { r = {path: file.name, status: "error", error: "the server did not answer (" + e + ")"}; }
    r.path = file.name; rows.push(r); show(tr, r); refreshCsv();
  });
}
function addFiles(list) { for (const f of list) traceOne(f); }
document.getElementById("files").addEventListener("change", e => { addFiles(e.target.files); e.target.value = ""; });
const drop = document.getElementById("drop");
["dragenter", "dragover"].forEach(t => drop.addEventListener(t, e => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach(t => drop.addEventListener(t, e => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", e => addFiles(e.dataTransfer.files));
fetch("/api/info").then(r => r.json()).then(i => {
  info = i;
  document.getElementById("about").textContent = "Tracer: " + i.system + " / " + i.scorer + ", threshold " + fmt(i.threshold) +
    ", " + i.classes.length + " known " + i.level + "s: " + i.classes.join(", ") + (i.map ? "" : " (map not available for this bundle)");
  document.getElementById("limits").textContent = "Up to " + i.max_mb + " MB and " + i.max_seconds + " s per clip, at least " + i.min_seconds + " s.";
  document.body.dataset.ready = "1";
});
</script></body></html>
"""
