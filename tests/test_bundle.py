"""Tracer bundles: a bundle traces from another folder with the experiment's decisions; an altered
bundle or one of another format version is refused in one line; the model card names its numbers
and the machine they were computed on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from step_scripts import trace_main
from test_trace import experiment  # noqa: F401 - the tiny judged experiment (aasist, ge2e, mfcc, stats)

from sourcetracing import trace
from sourcetracing.bundle import MANIFEST, STATE, TRACER, WEIGHTS, sha256
from sourcetracing.bundle_export import export_bundle
from sourcetracing.errors import BundleError

REPO = Path(__file__).resolve().parents[1]
SAME = ["path", "status", "predicted", "top_k", "scorer", "decision"]


def _clips(corpus) -> list[Path]:
    """Eval clips of known and unseen systems."""
    return sorted(corpus.mlaad.rglob("eval_00[01].wav"))


def _assert_same_decisions(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert len(got) == len(want) and (got["status"] == "ok").all()
    pd.testing.assert_frame_equal(got[SAME], want[SAME])
    np.testing.assert_allclose(got["ood_score"], want["ood_score"], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got["threshold"], want["threshold"], rtol=0, atol=0)
    np.testing.assert_allclose(got["p_unseen"], want["p_unseen"], rtol=1e-6, atol=1e-9)


def test_a_bundle_traces_from_another_folder_as_the_experiment(experiment, tmp_path, capsys) -> None:  # noqa: F811
    corpus, cfg = experiment
    bundle = tmp_path / "bundle"
    made = subprocess.run(
        [sys.executable, str(REPO / "scripts/export_bundle.py"), "--config", str(corpus.config_path),
         "--out", str(bundle), "--archive"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    clips = [str(c) for c in _clips(corpus)]
    want_csv = tmp_path / "experiment.csv"
    assert trace_main(["--config", str(corpus.config_path), *clips, "--out", str(want_csv)]) == 0
    used = capsys.readouterr().out.split("tracing with ", 1)[1].split(" / ", 1)[0]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for source in (bundle, Path(f"{bundle}.tar.gz")):  # one thread, as this process: the same sums
        run = subprocess.run(
            [sys.executable, str(REPO / "scripts/trace.py"), "--bundle", str(source), *clips, "--out", "got.csv"],
            capture_output=True, text=True, cwd=elsewhere, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        want = pd.read_csv(want_csv, keep_default_na=False)
        _assert_same_decisions(pd.read_csv(elsewhere / "got.csv", keep_default_na=False), want)
        (elsewhere / "got.csv").unlink()
    # without --system both hold the system chosen on dev, and the model card says why
    assert json.loads((bundle / TRACER).read_text())["system"] == used
    assert "chosen on dev" in (bundle / "README.md").read_text()


@pytest.mark.parametrize("system", ["aasist", "ge2e", "mfcc", "stats"])
def test_from_bundle_gives_the_experiment_tracers_decisions(experiment, tmp_path, system) -> None:  # noqa: F811
    corpus, cfg = experiment
    folder, _, _ = export_bundle(cfg, tmp_path / system, system)
    clips = _clips(corpus)
    bundled = trace.Tracer.from_bundle(folder)
    _assert_same_decisions(bundled.trace(clips), trace.Tracer.load(cfg, system).trace(clips))
    # a waveform traces as its file does
    from sourcetracing.data.audio import load_audio

    one = bundled.trace(load_audio(clips[0], bundled.sample_rate))
    assert one["path"].iloc[0] == "<waveform 0>"
    pd.testing.assert_frame_equal(one[SAME[2:]], bundled.trace(clips[0])[SAME[2:]])


def _refused(bundle: Path, capsys) -> str:
    with pytest.raises(BundleError):
        trace.Tracer.from_bundle(bundle)
    assert trace_main(["--bundle", str(bundle), "clip.wav"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_an_altered_bundle_or_another_format_version_is_refused(experiment, tmp_path, capsys) -> None:  # noqa: F811
    import shutil

    corpus, cfg = experiment
    folder, _, _ = export_bundle(cfg, tmp_path / "b" / "ok", "aasist")
    for name in (WEIGHTS, STATE, TRACER):
        altered = tmp_path / "b" / f"altered_{name}"
        shutil.copytree(folder, altered)
        data = bytearray((altered / name).read_bytes())
        data[len(data) // 2] ^= 0x01  # one byte changed
        (altered / name).write_bytes(bytes(data))
        assert "does not match its checksum" in _refused(altered, capsys)
    newer = tmp_path / "b" / "newer"
    shutil.copytree(folder, newer)
    manifest = json.loads((newer / MANIFEST).read_text())
    (newer / MANIFEST).write_text(json.dumps({**manifest, "format_version": 99}))
    assert "format version 99" in _refused(newer, capsys)
    # tracer.json's own version, with a manifest rewritten to match it, is refused too
    relabelled = tmp_path / "b" / "relabelled"
    shutil.copytree(folder, relabelled)
    settings = json.loads((relabelled / TRACER).read_text())
    (relabelled / TRACER).write_text(json.dumps({**settings, "format_version": 2}))
    manifest["sha256"][TRACER] = sha256(relabelled / TRACER)
    (relabelled / MANIFEST).write_text(json.dumps(manifest))
    assert "format version 2" in _refused(relabelled, capsys)


def test_the_model_card_names_the_numbers_and_the_machine(experiment, tmp_path) -> None:  # noqa: F811
    corpus, cfg = experiment
    folder, _, _ = export_bundle(cfg, tmp_path / "stats", "stats")
    card = (folder / "README.md").read_text()
    sys_dir = Path(cfg.exp_dir) / "stats"
    machine = json.loads((sys_dir / "outputs" / "meta.json").read_text())["machine"]
    scorer = json.loads((folder / TRACER).read_text())["scorer"]["name"]
    summary = pd.read_csv(sys_dir / "ood_step" / "ood_summary.csv")
    for split in ("dev", "eval"):
        row = summary[
            (summary["scorer"] == scorer) & (summary["split"] == split) & (summary["subset"] == "all")
        ]
        assert f"| {split} |" in card and f"{100 * row['eer'].iloc[0]:.2f}%" in card
    assert f"computed on: {machine}" in card
    for part in ("## Data and protocol", "## Calibration", "## Intended use and limits", "--system"):
        assert part in card
    threshold = json.loads((sys_dir / "ood_step" / "thresholds.json").read_text())["scorers"][scorer][
        "threshold"
    ]
    assert f"{threshold:.6g}" in card
