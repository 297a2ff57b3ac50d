"""Benchmark: OOD scoring time and peak memory at MLAAD scale, the original's way vs this toolkit's.

    python scripts/benchmark.py ood                       # 55k train x 170k eval, dim 160
    python scripts/benchmark.py ood --n-train 5000 --n-eval 20000 --dense-rows 2000   # smaller

Methods, each run in its own subprocess on the same random embeddings/logits (seeded):

- ``original``: NSD through the dense eval x train cosine-similarity matrix. At full scale that
  matrix alone is n_eval x n_train x 4 bytes (~37 GB), so it is *measured on the first
  ``--dense-rows`` eval rows*; its full-scale time is *extrapolated linearly* and its full-scale
  memory *estimated* as the size of the float32 matrix;
- ``nsd``: this toolkit's NSD (a dot with the mean of the energy-scaled bank), full scale;
- ``knn``: this toolkit's k-NN cosine distance, chunked over eval and train rows, full scale.

Peak memory is the resident-set high-water mark of the subprocess (``VmHWM``, reset through
``/proc/self/clear_refs`` after the inputs are made) minus the resident size at that point, so it
counts numpy and torch allocations alike. The machine may be shared: times are indicative.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import numpy as np

from sourcetracing.cli import ListOption

METHODS = ("original", "nsd", "knn")


def _proc_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


class PeakRSS:
    """Peak resident memory above the level at ``start()``: VmHWM reset, else a sampling thread."""

    def __init__(self) -> None:
        self.reset_ok = False
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.base = _proc_kb("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.reset_ok = _proc_kb("VmHWM") <= self.base + 1024
        except OSError:
            self.reset_ok = False
        if not self.reset_ok:
            self._peak = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _proc_kb("VmRSS"))
            time.sleep(0.005)

    def stop_mb(self) -> float:
        if self.reset_ok:
            peak = _proc_kb("VmHWM")
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = self._peak
        return max(peak - self.base, 0) / 1024.0


def make_inputs(n_train: int, n_eval: int, dim: int, classes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    train_emb = rng.standard_normal((n_train, dim), dtype=np.float32)
    train_logits = rng.standard_normal((n_train, classes), dtype=np.float32) * 3
    train_labels = rng.integers(0, classes, n_train)
    eval_emb = rng.standard_normal((n_eval, dim), dtype=np.float32)
    eval_logits = rng.standard_normal((n_eval, classes), dtype=np.float32) * 3
    return train_emb, train_logits, train_labels, eval_emb, eval_logits


def dense_nsd(
    train_emb: np.ndarray, train_logits: np.ndarray, emb: np.ndarray, logits: np.ndarray
) -> np.ndarray:
    """The original's way: scaled bank, full [eval, train] similarity matrix, mean over train (OOD sign)."""
    import torch

    t = torch.nn.functional.normalize(torch.from_numpy(train_emb), dim=1, eps=1e-10)
    t = t * torch.logsumexp(torch.from_numpy(train_logits), dim=1)[:, None]
    q = torch.nn.functional.normalize(torch.from_numpy(emb), dim=1, eps=1e-10)
    sim = torch.mm(q, t.T)  # [n_eval, n_train]
    return (-(torch.logsumexp(torch.from_numpy(logits), dim=1) * sim.mean(dim=1))).numpy()


def child(args: argparse.Namespace) -> dict:
    """Run one method in this process; returns time, peak memory and a checksum."""
    from sourcetracing.ood.scorers import build_scorer

    tr, trl, trlab, ev, evl = make_inputs(args.n_train, args.n_eval, args.dim, args.classes)
    rows = len(ev)
    if args.method == "original":
        rows = min(args.dense_rows, len(ev))
        ev, evl = ev[:rows], evl[:rows]
    meter = PeakRSS()
    meter.start()
    t0 = time.perf_counter()
    if args.method == "original":
        scores = dense_nsd(tr, trl, ev, evl)
    else:
        scorer = build_scorer(args.method, k=args.k, chunk_size=args.chunk_size).fit(tr, trl, trlab)
        scores = scorer.score(ev, evl)
    seconds = time.perf_counter() - t0
    peak = meter.stop_mb()
    check = {}
    if args.method == "nsd":  # the mean-vector NSD equals the dense one on the first rows
        n = min(args.dense_rows, 2000)
        ref = dense_nsd(tr, trl, ev[:n], evl[:n])
        check = {"max_abs_diff_vs_dense": float(np.max(np.abs(ref - scores[:n])))}
    return {
        "method": args.method,
        "rows": rows,
        "seconds": seconds,
        "peak_mb": peak,
        "peak_method": "VmHWM" if meter.reset_ok else "sampled",
        **check,
    }


def _run_child(method: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "sourcetracing_tools.bench.ood",
        "--child",
        method,
        "--n-train",
        str(args.n_train),
        "--n-eval",
        str(args.n_eval),
        "--dim",
        str(args.dim),
        "--classes",
        str(args.classes),
        "--dense-rows",
        str(args.dense_rows),
        "--k",
        str(args.k),
        "--chunk-size",
        str(args.chunk_size),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child '{method}' failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark.py ood", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-train", type=int, default=55_000, help="train embeddings (default 55,000)")
    parser.add_argument("--n-eval", type=int, default=170_000, help="eval embeddings (default 170,000)")
    parser.add_argument("--dim", type=int, default=160, help="embedding dimension (default 160)")
    parser.add_argument("--classes", type=int, default=24, help="known classes (default 24)")
    parser.add_argument(
        "--dense-rows", type=int, default=5_000, help="eval rows the dense matrix is measured on"
    )
    parser.add_argument("--k", type=int, default=5, help="neighbours of the k-NN scorer (default 5)")
    parser.add_argument(
        "--chunk-size", type=int, default=4096, help="rows per chunk of the chunked scorers (default 4096)"
    )
    parser.add_argument(
        "--methods",
        action=ListOption,
        choices=METHODS,
        default=list(METHODS),
        metavar="METHOD",
        help=f"methods to run, comma-separated (default: {','.join(METHODS)})",
    )
    parser.add_argument("--child", choices=METHODS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.method = args.child
        print(json.dumps(child(args)))
        return 0

    methods = args.methods
    print(
        f"OOD scoring: {args.n_train:,} train x {args.n_eval:,} eval embeddings, dim {args.dim}, "
        f"{args.classes} classes; k={args.k}, chunk {args.chunk_size}"
    )
    results = {}
    for m in methods:
        print(f"running {m} ...", flush=True)
        results[m] = _run_child(m, args)

    rows = []
    if "original" in results:
        r = results["original"]
        scale = args.n_eval / r["rows"]
        dense_gb = args.n_eval * args.n_train * 4 / 1e9
        rows.append(["original dense NSD", f"{r['rows']:,} rows (measured)", r["seconds"], r["peak_mb"], ""])
        rows.append(
            [
                "original dense NSD",
                f"{args.n_eval:,} rows (ESTIMATED)",
                r["seconds"] * scale,
                dense_gb * 1e9 / 2**20,
                f"memory = the {args.n_eval:,}x{args.n_train:,} float32 matrix ({dense_gb:.1f} GB); time x{scale:.1f} linear",
            ]
        )
    for m in ("nsd", "knn"):
        if m in results:
            r = results[m]
            note = ""
            if "max_abs_diff_vs_dense" in r:
                note = f"max |diff| vs dense NSD {r['max_abs_diff_vs_dense']:.2e}"
            rows.append(
                [f"toolkit {m}", f"{args.n_eval:,} rows (measured)", r["seconds"], r["peak_mb"], note]
            )

    head = f"{'method':<20} {'scale':<28} {'time_s':>9} {'peak_MB':>10}  note"
    print()
    print(head)
    print("-" * len(head))
    for name, scale_txt, sec, mb, note in rows:
        print(f"{name:<20} {scale_txt:<28} {sec:>9.2f} {mb:>10.1f}  {note}")
    if "original" in results:
        est_s = results["original"]["seconds"] * args.n_eval / results["original"]["rows"]
        est_mb = args.n_eval * args.n_train * 4 / 2**20
        print()
        for m in ("nsd", "knn"):
            if m in results:
                r = results[m]
                print(
                    f"original (estimated, full scale) / toolkit {m}: time x{est_s / max(r['seconds'], 1e-9):.1f}, "
                    f"peak memory x{est_mb / max(r['peak_mb'], 1e-3):.1f}"
                )
    peaks = {r["peak_method"] for r in results.values()}
    print(
        f"(peak memory: resident-set high-water above the inputs, via {'/'.join(sorted(peaks))}; "
        "the original's full-scale figures are estimates, not measurements)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
