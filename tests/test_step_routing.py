"""How the step scripts are started and what they act on: the interpreter run.sh picks, the line a
script prints without the package, the config line of every step, re-export and re-scoring routed
to the named system's own exporter (or refused), stage 9 over every system with embeddings and
stage 11's seeded sample of eval clips from the protocols."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from corpus_fixtures import make_tiny_corpus

from sourcetracing.config import load_config

ROOT = Path(__file__).resolve().parents[1]
FAST = ["mfcc.jobs=1", "stats.jobs=1", "stats.augment=[]", "ood.knn.k=2"]


def script_main(path: str) -> Callable[[list[str]], int]:
    """The ``main`` of a step script (what ``python <path>`` runs), loaded in this process."""
    spec = importlib.util.spec_from_file_location(f"step_{Path(path).stem}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: modification time and content."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny corpus whose MFCC reference is exported and judged (outputs, results, OOD step)."""
    from sourcetracing.judge import judge_system
    from sourcetracing.systems.mfcc import export_mfcc

    corpus = make_tiny_corpus(tmp_path_factory.mktemp("routing"), dev_clips=2, eval_clips=2)
    cfg = load_config(corpus.config_path, FAST)
    export_mfcc(cfg, 1)
    judge_system(cfg, "mfcc")
    return corpus, cfg


def plant_classifier_outputs(cfg, name: str = "aasist") -> Path:
    """Outputs under ``<exp>/<name>/`` that claim to come from a classifier (a copy of mfcc's)."""
    exp = Path(cfg.exp_dir)
    target = exp / name / "outputs"
    if not target.is_dir():
        shutil.copytree(exp / "mfcc" / "outputs", target)
        meta = json.loads((target / "meta.json").read_text())
        (target / "meta.json").write_text(json.dumps({**meta, "task": "classifier", "system": name}))
    return target


# --- the interpreter ---------------------------------------------------------------------------

STEP_SCRIPTS = [
    "train_refd.py",
    "train_ge2e.py",
    *(
        f"scripts/{name}"
        for name in (
            "download_resources.py", "enroll.py", "evaluate_scores.py", "export_outputs.py", "fusion.py",
            "generate_embeddings.py", "get_classification_metrics.py", "make_demo_corpus.py",
            "make_protocols.py", "ood_detector.py", "plot_embeddings.py", "preprocess_dataset.py",
            "reference_baseline.py", "robustness.py", "rotate_protocols.py", "separability.py",
            "stats_system.py", "summarize_results.py", "trace.py", "write_key.py",
        )
    ),
]  # fmt: skip


@pytest.mark.parametrize("script", STEP_SCRIPTS)
def test_a_script_without_the_package_says_in_one_line_what_to_run(script) -> None:
    # -S -I: no site-packages (where the package is installed), no PYTHONPATH
    proc = subprocess.run(
        [sys.executable, "-S", "-I", str(ROOT / script), "--help"], capture_output=True, text=True, timeout=60
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].split()[1] in ("sourcetracing", "sourcetracing_tools", "pandas")  # the first import
    assert f"is not importable from {sys.executable}; run `make install`" in lines[0]
    assert ".venv/bin/python" in lines[0] and "./run.sh" in lines[0]


def stub(path: Path, log: Path) -> Path:
    """An executable that records its arguments (one line per call) in ``log`` and succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/usr/bin/env bash\necho "$0 $*" >> "{log}"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def run_sh(tmp_path):
    """run.sh copied into an empty checkout (it works from its own folder); runs it, returns the calls."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(ROOT / "run.sh", checkout / "run.sh")
    log = tmp_path / "calls.txt"
    path_bin = tmp_path / "bin"
    stub(path_bin / "python3", log)

    def call(*args: str, env: dict[str, str] | None = None) -> list[str]:
        log.unlink(missing_ok=True)
        environment = {"PATH": f"{path_bin}:/usr/bin:/bin", **(env or {})}
        proc = subprocess.run(
            ["bash", str(checkout / "run.sh"), "--config", "c.yaml", *args],
            capture_output=True, text=True, env=environment, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return log.read_text().splitlines() if log.is_file() else []

    return checkout, log, call


def test_run_sh_uses_the_projects_venv_python_when_it_exists(run_sh, tmp_path) -> None:
    checkout, log, call = run_sh
    calls = call("--stage", "3", "--stop-stage", "3")  # no .venv yet: python3 from PATH
    assert calls == [f"{tmp_path / 'bin' / 'python3'} scripts/get_classification_metrics.py --config c.yaml"]
    stub(checkout / ".venv" / "bin" / "python", log)
    calls = call("--stage", "3", "--stop-stage", "3")
    assert calls == [".venv/bin/python scripts/get_classification_metrics.py --config c.yaml"]
    other = stub(tmp_path / "other" / "python", log)
    calls = call("--stage", "3", "--stop-stage", "3", env={"PYTHON": str(other)})  # $PYTHON overrides
    assert calls[0].startswith(f"{other} scripts/get_classification_metrics.py")
    third = stub(tmp_path / "third" / "python", log)
    calls = call("--python", str(third), "--stage", "3", "--stop-stage", "3", env={"PYTHON": str(other)})
    assert calls[0].startswith(f"{third} scripts/get_classification_metrics.py")  # --python overrides both


def test_run_sh_help_names_the_interpreter_choice_and_the_trace_sample(run_sh) -> None:
    checkout, _, _ = run_sh
    proc = subprocess.run(["bash", str(checkout / "run.sh"), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--python PATH" in proc.stdout and ".venv/bin/python" in proc.stdout
    assert "--trace-sample N" in proc.stdout and "--trace" in proc.stdout
    assert "set -euo" not in proc.stdout  # the comment block only


def test_run_sh_maps_every_system_and_traces_a_sample_of_eval_clips(run_sh) -> None:
    checkout, log, call = run_sh
    stub(checkout / ".venv" / "bin" / "python", log)
    calls = call("--stage", "9", "--stop-stage", "11", "--", "exp_dir=e")
    assert calls == [
        ".venv/bin/python scripts/generate_embeddings.py --config c.yaml exp_dir=e --system all",
        ".venv/bin/python scripts/plot_embeddings.py --config c.yaml exp_dir=e --system all",
        ".venv/bin/python scripts/summarize_results.py --config c.yaml exp_dir=e",
        ".venv/bin/python scripts/trace.py --config c.yaml exp_dir=e --sample-eval 20",
    ]
    assert call("--stage", "11", "--trace-sample", "5")[-1].endswith("--sample-eval 5")
    assert call("--stage", "11", "--trace", "a.wav clips/")[-1].endswith("--config c.yaml a.wav clips/")


def test_make_demo_passes_demo_exp_to_run_sh() -> None:
    proc = subprocess.run(
        ["make", "-n", "-o", ".venv/.installed", "demo", "DEMO_EXP=exp/elsewhere"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run_line = next(line for line in proc.stdout.splitlines() if "./run.sh" in line)
    assert run_line.endswith("-- exp_dir=exp/elsewhere")


# --- the config line ---------------------------------------------------------------------------


def test_each_step_prints_the_config_it_loaded_and_where_it_writes(experiment, capsys) -> None:
    corpus, cfg = experiment
    main = script_main("scripts/get_classification_metrics.py")
    assert main(["--config", str(corpus.config_path), "--system", "mfcc", *FAST]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"config: {corpus.config_path} + {len(FAST)} override(s) (exp_dir {cfg.exp_dir})"


def test_a_step_without_config_says_it_uses_the_original_default(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(ROOT)  # the default config is named relative to the checkout, as the original's
    main = script_main("scripts/get_classification_metrics.py")
    code = main([f"exp_dir={tmp_path / 'exp'}"])  # no outputs there: the step stops after the line
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == (
        "config: configs/refd_mlaad.yaml, the default (no --config given) + 1 override(s) "
        f"(exp_dir {tmp_path / 'exp'})"
    )
    assert code == 1 and captured.err.startswith("error: ")


# --- re-export and re-scoring --------------------------------------------------------------------


@pytest.fixture
def recorded_exporters(monkeypatch):
    """Every exporter replaced by one that records ``(exporter, system)``."""
    import sourcetracing.systems.export as export
    import sourcetracing.systems.fusion as fusion
    import sourcetracing.systems.mfcc as mfcc
    import sourcetracing.systems.plain_reference as plain
    import sourcetracing.systems.stats as stats

    calls: list[tuple[str, str]] = []

    def record(name: str, system: Callable) -> Callable:
        def exporter(cfg, *args, **kwargs):
            calls.append((name, system(cfg, kwargs)))
            return Path(cfg.exp_dir)

        return exporter

    monkeypatch.setattr(export, "export_classifier", record("classifier", lambda c, kw: c.model.name))
    monkeypatch.setattr(export, "export_ge2e", record("ge2e", lambda c, kw: "ge2e"))
    monkeypatch.setattr(mfcc, "export_mfcc", record("mfcc", lambda c, kw: "mfcc"))
    monkeypatch.setattr(plain, "export_plain", record("plain", lambda c, kw: "plain_mfcc"))
    monkeypatch.setattr(
        stats, "export_stats", record("stats", lambda c, kw: f"{kw['system']}:{'+'.join(c.stats.features)}")
    )
    monkeypatch.setattr(fusion, "export_fusion", record("fusion", lambda c, kw: "fusion"))
    return calls


def test_every_system_kind_is_exported_by_its_own_exporter(recorded_exporters) -> None:
    from sourcetracing.systems.handle import export_system

    cfg = load_config(None, ["stats.variants={stats_dur: {features: [mfcc, duration]}}"])
    for system in ("aasist", "ge2e", "mfcc", "plain_mfcc", "stats", "stats_dur", "fusion"):
        export_system(cfg, system)
    assert recorded_exporters == [
        ("classifier", "aasist"),  # model.name
        ("ge2e", "ge2e"),
        ("mfcc", "mfcc"),
        ("plain", "plain_mfcc"),
        ("stats", "stats:mfcc+prosody+spectrum"),
        ("stats", "stats_dur:mfcc+duration"),  # the variant's own settings
        ("fusion", "fusion"),
    ]


def test_a_system_no_step_makes_is_refused_with_the_reason(experiment, recorded_exporters, capsys) -> None:
    corpus, cfg = experiment
    plant_classifier_outputs(cfg, "resnet")
    main = script_main("scripts/export_outputs.py")
    base = ["--config", str(corpus.config_path), *FAST]
    assert main([*base, "--system", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: cannot export 'nosuch': no such system in this config; "
        "this config exports aasist, ge2e, mfcc, plain_mfcc, stats, fusion"
    ]
    assert main([*base, "mfcc.plain=false", "--system", "plain_mfcc"]) == 2  # not made by this config
    assert "cannot export 'plain_mfcc': no such system in this config" in capsys.readouterr().err
    assert main([*base, "--system", "resnet"]) == 2  # a classifier's outputs, another model.name
    assert "add the override model.name=resnet" in capsys.readouterr().err
    assert main([*base, "--system", "mfcc", "--checkpoint", "best.pt"]) == 2
    assert "--checkpoint applies to the trained systems" in capsys.readouterr().err
    assert recorded_exporters == []  # nothing was exported


def test_export_outputs_for_stats_exports_stats_and_leaves_the_classifier_alone(experiment, capsys) -> None:
    corpus, cfg = experiment
    aasist = plant_classifier_outputs(cfg)
    before = snapshot(aasist)
    main = script_main("scripts/export_outputs.py")
    assert main(["--config", str(corpus.config_path), "--system", "stats", *FAST]) == 0
    out = capsys.readouterr().out
    assert "stats outputs written" in out and "aasist outputs" not in out
    stats_meta = json.loads((Path(cfg.exp_dir) / "stats" / "outputs" / "meta.json").read_text())
    assert stats_meta["system"] == "stats" and "embeddings" in stats_meta["has"]
    assert snapshot(aasist) == before


def test_ood_detector_re_exports_the_named_system_before_scoring(experiment, capsys) -> None:
    corpus, cfg = experiment
    exp = Path(cfg.exp_dir)
    aasist = plant_classifier_outputs(cfg)
    before = snapshot(aasist)
    manifest = exp / "mfcc" / "outputs" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    main = script_main("scripts/ood_detector.py")
    args = ["--config", str(corpus.config_path), "--system", "mfcc", "--feature_extraction_step", *FAST]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mfcc outputs written" in out and "aasist outputs" not in out
    assert manifest.stat().st_mtime_ns != stamp  # exported again, then scored
    assert (exp / "mfcc" / "ood_step" / "ood_summary.csv").is_file()
    assert snapshot(aasist) == before


def test_ood_detector_judges_the_plain_reference_with_its_own_fixed_scorer(experiment, capsys) -> None:
    corpus, cfg = experiment
    main = script_main("scripts/ood_detector.py")
    args = ["--config", str(corpus.config_path), "--system", "plain_mfcc", "--feature-extraction-step", *FAST]
    assert main(args) == 0
    assert "plain_mfcc outputs written" in capsys.readouterr().out
    summary = pd.read_csv(Path(cfg.exp_dir) / "plain_mfcc" / "ood_step" / "ood_summary.csv")
    assert set(summary["scorer"]) == {"knn"}  # k-NN, k = 5 only: not the config's list of scorers


# --- stage 9: every system with embeddings ---------------------------------------------------


def test_stage_9_maps_every_system_with_embeddings_whatever_its_name(experiment, capsys) -> None:
    from sourcetracing.layout import ExperimentLayout
    from sourcetracing.systems.outputs import SplitOutputs, SystemOutputs, systems_with

    corpus, cfg = experiment
    exp = Path(cfg.exp_dir)
    plant_classifier_outputs(cfg, "my_model")
    mfcc = SystemOutputs.read(exp / "mfcc" / "outputs")
    scored = {  # a system with scores only (as a fusion): nothing to map
        split: SplitOutputs(part.rows.assign(score_x=range(len(part.rows))))
        for split, part in mfcc.splits.items()
        if split != "train"
    }
    SystemOutputs("scores_only", mfcc.class_names, scored).write(exp / "scores_only" / "outputs")
    with_embeddings = [s.name for s in systems_with(ExperimentLayout.of(cfg), "embeddings")]
    assert "my_model" in with_embeddings and "mfcc" in with_embeddings
    assert "scores_only" not in with_embeddings and "scores_only" in [
        s.name for s in ExperimentLayout.of(cfg).systems()
    ]
    base = ["--config", str(corpus.config_path), "--system", "all", *FAST]
    assert script_main("scripts/generate_embeddings.py")(base) == 0
    assert script_main("scripts/plot_embeddings.py")([*base, "--method", "tsne"]) == 0
    capsys.readouterr()
    for system in with_embeddings:
        assert (exp / system / "embeddings" / "eval.npz").is_file(), system
        assert (exp / system / "embeddings" / "embedding_map.png").is_file(), system
    assert not (exp / "scores_only" / "embeddings").exists()


def test_stage_9_all_without_any_embeddings_says_what_to_run(tmp_path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"exp_dir: {tmp_path / 'exp'}\n")
    assert script_main("scripts/generate_embeddings.py")(["--config", str(config), "--system", "all"]) == 1
    assert "has exported embeddings: run the training or export steps first" in capsys.readouterr().err


# --- stage 11: a seeded sample of eval clips from the protocols -------------------------------


def test_the_eval_sample_comes_from_the_protocols_and_depends_only_on_the_seed(experiment) -> None:
    from sourcetracing.trace import sample_eval_clips

    corpus, cfg = experiment
    eval_paths = {str(corpus.mlaad / p) for p in pd.read_csv(corpus.protocols / "eval.csv")["path"]}
    first = sample_eval_clips(cfg, 4, seed=0)
    assert len(first) == 4 and {str(p) for p in first} <= eval_paths
    assert all(p.is_file() and "_eval_0000" not in p.name for p in first)  # no demo file names needed
    assert sample_eval_clips(cfg, 4, seed=0) == first
    assert any(sample_eval_clips(cfg, 4, seed=s) != first for s in (1, 2, 3))
    assert {str(p) for p in sample_eval_clips(cfg, 1000, seed=0)} == eval_paths  # fewer clips: all of them


def test_trace_sample_eval_traces_the_drawn_clips(experiment, capsys) -> None:
    from sourcetracing.trace import sample_eval_clips

    corpus, cfg = experiment
    main = script_main("scripts/trace.py")
    out_csv = Path(cfg.exp_dir) / "trace" / "sample.csv"
    args = ["--config", str(corpus.config_path), "--system", "mfcc", "--sample-eval", "3", "--seed", "5"]
    assert main([*args, "--out", str(out_csv), *FAST]) == 0
    assert capsys.readouterr().out.startswith(f"config: {corpus.config_path}")
    traced = pd.read_csv(out_csv)
    assert traced["path"].tolist() == [str(p) for p in sample_eval_clips(cfg, 3, seed=5)]
    assert (traced["status"] == "ok").all() and traced["decision"].isin(["known", "unknown"]).all()


def test_trace_without_clips_or_a_sample_says_what_to_give(experiment, capsys) -> None:
    corpus, _ = experiment
    assert script_main("scripts/trace.py")(["--config", str(corpus.config_path), *FAST]) == 2
    assert "give clips or folders, or --sample-eval N" in capsys.readouterr().err


def test_run_sh_names_its_interpreter_and_the_step_names_a_missing_config() -> None:
    """The real run.sh and step script, with this session's interpreter given by $PYTHON."""
    if not os.access(ROOT / "run.sh", os.X_OK):
        pytest.skip("run.sh is not executable in this checkout")
    proc = subprocess.run(
        [str(ROOT / "run.sh"), "--config", "nope.yaml", "--stage", "3", "--stop-stage", "3"],
        capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and f"run.sh: python {sys.executable}" in proc.stdout
    assert "config file not found: nope.yaml" in proc.stderr
