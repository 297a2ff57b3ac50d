"""The GPU check and the device benchmarks, as far as a machine without CUDA can run them: the report
assembly, target verdicts, ``scripts/gpu_check.sh`` with CUDA absent, and both benchmarks on the
CPU at smoke-test sizes (their numbers are not checked, their tables are)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sourcetracing_tools.bench import extract as extract_bench
from sourcetracing_tools.bench import train as train_bench
from sourcetracing_tools.bench.gpu_check import build_report, target_rows
from sourcetracing_tools.bench.report import Target, pick_device, targets_table

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def keep_threads():
    """The benchmarks' --threads sets torch's thread count for the whole process: restore it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_target_verdicts():
    assert Target("a", 12.0, 10.0).row()["met"] == "yes"
    assert Target("a", 9.0, 10.0).row()["met"] == "NO"
    assert Target("a", 9.0, 10.0, applies=False).row()["met"] == "NO (target is for CUDA)"
    assert Target("a", math.nan, 1.5).row() == {
        "target": "a",
        "measured": "–",
        "required": "≥ 1.5×",
        "met": "not measured",
    }
    share = Target("share", 0.61, 0.5, percent=True).row()
    assert (share["measured"], share["required"], share["met"]) == ("61 %", "≥ 50 %", "yes")


def test_report_combines_steps_and_every_target(tmp_path):
    (tmp_path / "steps.tsv").write_text(
        "CUDA tests (pytest -m cuda)\tpassed\t41\ttests.log\t21 passed in 40.1s\n"
        "extraction benchmark\ttimed out after 210 s\t210\textract.log\t\n"
    )
    (tmp_path / "extract.md").write_text(
        "## Feature extraction\n\n| method |\n| --- |\n| x |\n\n"
        + targets_table(
            [Target("full path vs original", 14.2, 10.0), Target("share", 0.3, 0.5, percent=True)]
        )
    )
    (tmp_path / "train.md").write_text(
        "## Training\n\n" + targets_table([Target("bf16 vs float32", 1.2, 1.5)])
    )
    report = build_report(tmp_path, "CUDA: 1 x Test GPU")
    lines = report.splitlines()
    assert lines[0] == "# GPU check" and "CUDA: 1 x Test GPU" in lines[2]
    assert "| CUDA tests (pytest -m cuda) | passed | 41 | 21 passed in 40.1s | tests.log |" in lines
    assert "| extraction benchmark | timed out after 210 s | 210 |  | extract.log |" in lines
    assert (
        "| target: full path vs original | yes | – | measured 14.20×, required ≥ 10× | extract.md |" in lines
    )
    assert "| target: share | NO | – | measured 30 %, required ≥ 50 % | extract.md |" in lines
    assert "| target: bf16 vs float32 | NO | – | measured 1.20×, required ≥ 1.5× | train.md |" in lines
    assert "## Feature extraction" in report and "## Training" in report  # the full tables follow
    assert target_rows("no targets here") == []


def test_cuda_device_without_cuda_is_a_clear_error():
    if pick_device("auto").type == "cuda":
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="no CUDA device"):
        pick_device("cuda")


def _env(**extra: str) -> dict:
    path = os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1", **extra)


@pytest.mark.slow
def test_gpu_check_without_cuda_reports_it_and_exits_0(tmp_path):
    out = tmp_path / "gpu_check"
    env = _env(PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="", GPU_CHECK_TESTS="tests/test_cuda.py")
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (out / "gpu_check.md").read_text()
    assert "CUDA absent" in report and report in proc.stdout
    assert "| CUDA tests (pytest -m cuda) | passed (all skipped: CUDA absent) |" in report
    assert "| extraction benchmark | skipped | 0 | CUDA absent;" in report
    assert "| training benchmark | skipped | 0 | CUDA absent;" in report
    assert "skipped" in (out / "tests.log").read_text() and "failed" not in (out / "tests.log").read_text()
    assert not (out / "extract.md").exists()


def test_gpu_check_rejects_unknown_arguments(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--fast"], capture_output=True, text=True, env=_env()
    )
    assert proc.returncode == 2 and "unknown argument --fast" in proc.stderr


@pytest.mark.slow
def test_extraction_benchmark_tables_on_cpu(tmp_path, keep_threads):
    out = tmp_path / "extract.md"
    args = ["--device", "cpu", "--tiny", "--clips", "4", "--ref-clips", "2", "--full-clips", "5"]
    args += [
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--threads",
        "1",
        "--dir",
        str(tmp_path),
        "--out",
        str(out),
    ]
    assert extract_bench.main(args) == 0
    report = out.read_text()
    rows = [line for line in report.splitlines() if line.startswith("| ")]
    methods = [r.split(" | ")[0].lstrip("| ") for r in rows[2:]]
    assert methods[:4] == [
        "original style (batch 1, full model, one .pt per clip)",
        "toolkit model-only ceiling (batches on the device)",
        "LFCC front end (the demo's), model only",
        "toolkit full path (decode + augment + model + store)",
    ]
    ceiling = rows[3].split(" | ")
    assert ceiling[1:3] == ["float32", "2"] and ceiling[-1].rstrip(" |") == "0.0e+00"  # the reference itself
    full = rows[5].split(" | ")
    assert float(full[5].replace(",", "")) > 0  # % of the ceiling
    assert [r["target"] for r in target_rows(report)] == [
        "full path (float32) vs original style",
        "full path (float32) / model-only ceiling",
    ]
    assert all(r["met"].endswith("(target is for CUDA)") for r in target_rows(report))
    assert list(tmp_path.iterdir()) == [out]  # the scratch folder is gone


@pytest.mark.slow
def test_training_benchmark_tables_on_cpu(tmp_path, keep_threads):
    out = tmp_path / "train.md"
    args = [
        "--device",
        "cpu",
        "--precisions",
        "float32",
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--frames",
        "60",
    ]
    args += ["--dim", "32", "--threads", "1", "--out", str(out)]
    assert train_bench.main(args) == 0
    report = out.read_text()
    rows = [
        line.split(" | ")
        for line in report.splitlines()
        if line.startswith("| step") or line.startswith("| full")
    ]
    assert [(r[0], r[1]) for r in rows] == [("| step", "float32"), ("| full", "float32")]
    assert all(float(r[3].replace(",", "")) > 0 and r[4] == "1.00" for r in rows)
    (target,) = target_rows(report)
    assert target["target"] == "bf16 training step vs float32" and target["met"] == "not measured"
