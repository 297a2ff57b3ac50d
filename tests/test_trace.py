"""Tracing new clips: the same numbers as the pipeline, calibrated probabilities, error rows, and
refusing to mix parts that do not belong together (a retrained model, a stale OOD step)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from corpus_fixtures import make_tiny_corpus
from step_scripts import trace_main
from toy_store import SMALL_AASIST, SMALL_GE2E

from sourcetracing import trace
from sourcetracing.config import load_config
from sourcetracing.errors import StaleInputError
from sourcetracing.features.extract import run_extraction
from sourcetracing.judge import judge_system
from sourcetracing.layout import ExperimentLayout
from sourcetracing.systems.export import export_classifier
from sourcetracing.systems.mfcc import export_mfcc
from sourcetracing.systems.stats import export_stats
from sourcetracing.training.classifier import train_classifier
from sourcetracing.training.ge2e import train_ge2e


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny corpus, its features, a 1-epoch classifier and GE2E, both judged."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("trace")
    corpus = make_tiny_corpus(
        root / "c", clips_per_system=5, dev_clips=3, eval_clips=3,
        overrides={
            "model": {"aasist": SMALL_AASIST}, "train": {"epochs": 1, "batch_size": 8},
            "ge2e": {**SMALL_GE2E, "n_clips": 2, "epochs": 1}, "ood": {"knn": {"k": 2}},
            "augment": {"versions": ["original", "noise"]}, "stats": {"augment": ["noise"]},
        },
    )  # fmt: skip
    cfg = corpus.cfg
    run_extraction(cfg)
    from sourcetracing.data.check import run_check

    run_check(cfg)
    train_classifier(cfg)
    judge_system(cfg, "aasist")
    train_ge2e(cfg)
    judge_system(cfg, "ge2e")
    export_mfcc(cfg, 1)
    judge_system(cfg, "mfcc")
    export_stats(cfg, 1)
    judge_system(cfg, "stats")
    return corpus, cfg


def test_find_audio_recursive(tmp_path) -> None:
    for rel in ("a/x.wav", "a/b/y.FLAC", "a/b/c/z.mp3", "a/notes.txt", "w.ogg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    found = trace.find_audio([tmp_path / "a", tmp_path / "w.ogg", tmp_path / "missing.wav"])
    assert [p.name for p in found] == ["z.mp3", "y.FLAC", "x.wav", "w.ogg", "missing.wav"]


@pytest.mark.parametrize("system", ["aasist", "ge2e", "mfcc", "stats"])
def test_trace_reproduces_the_pipeline_scores_of_dev_clips(experiment, system) -> None:
    corpus, cfg = experiment
    sys_layout = ExperimentLayout.of(cfg).system(system)
    scores = pd.read_csv(sys_layout.ood / "scores_dev.tsv", sep="\t")
    tracer = trace.Tracer.load(cfg, system)
    files = [corpus.mlaad / ("./" + c) for c in scores["clip_id"]]
    df = tracer.trace(files, top_k=2)
    assert (df["status"] == "ok").all() and len(df) == len(scores)
    np.testing.assert_allclose(df["ood_score"], scores[tracer.scorer_name], rtol=1e-4, atol=1e-4)
    assert (df["predicted"] == scores["predicted"]).all()
    assert df["p_unseen"].between(0, 1).all()
    assert ((df["ood_score"] >= tracer.threshold) == (df["decision"] == "unknown")).all()
    # the probability is the dev-fitted calibration of the score: monotone in it
    order = np.argsort(df["ood_score"].to_numpy())
    assert (np.diff(df["p_unseen"].to_numpy()[order]) >= -1e-12).all()
    assert all(len(t.split("; ")) == 2 for t in df["top_k"])


def test_script_rows_errors_new_file_per_run_and_exit_codes(experiment, tmp_path, capsys) -> None:
    corpus, cfg = experiment
    clips = tmp_path / "clips"
    clips.mkdir()
    good = next(corpus.mlaad.rglob("eval_000.wav"))
    shutil.copy(good, clips / "one.wav")
    (clips / "broken.wav").write_bytes(b"not audio at all")
    exp = str(cfg.exp_dir)
    assert trace_main(["--exp", exp, str(clips)]) == 0
    assert trace_main(["--exp", exp, str(clips)]) == 0
    runs = sorted((Path(exp) / "trace").glob("trace_*.csv"))
    assert len(runs) >= 2  # a new results file per run, nothing overwritten
    df = pd.read_csv(runs[-1], keep_default_na=False)
    assert list(df.columns) == trace.RESULT_COLUMNS
    bad = df[df["path"].str.endswith("broken.wav")].iloc[0]
    assert bad["status"] == "error" and "text, not audio" in bad["error"]
    out = tmp_path / "only_bad.csv"
    assert trace_main(["--exp", exp, str(clips / "broken.wav"), "--out", str(out)]) == 1  # nothing traced
    assert (
        trace_main(["--exp", exp, str(clips / "broken.wav"), "--out", str(out)]) == 4
    )  # refuses to overwrite
    assert "exists" in capsys.readouterr().err


def _copy_of_experiment(corpus, cfg, tmp_path: Path):
    """The config of a copy of the trained experiment (sharing its feature store) that a test may alter."""
    copy = tmp_path / "exp"
    shutil.copytree(cfg.exp_dir, copy)
    return load_config(
        corpus.config_path, [f"exp_dir={copy}", f"features.dir={Path(cfg.exp_dir) / 'features'}"]
    )


def test_a_retrained_model_or_a_stale_ood_step_is_refused(experiment, tmp_path) -> None:
    corpus, cfg = experiment
    cfg2 = _copy_of_experiment(corpus, cfg, tmp_path)
    clip = next(corpus.mlaad.rglob("eval_000.wav"))
    system = ExperimentLayout.of(cfg2).system("aasist")
    # a retrained (other) checkpoint: the outputs no longer come from it
    cfg2.train.lr = 3e-3
    train_classifier(cfg2, force=True, export=False)
    with pytest.raises(StaleInputError, match="feature-extraction-step"):
        trace.Tracer.load(cfg2, "aasist")
    # re-exported outputs but an old OOD step
    export_classifier(cfg2)
    with pytest.raises(StaleInputError, match="ood_detector.py"):
        trace.Tracer.load(cfg2, "aasist")
    judge_system(cfg2, "aasist")
    assert (trace.Tracer.load(cfg2, "aasist").trace([clip])["status"] == "ok").all()
    assert system.best.is_file()


def test_a_statistics_model_refitted_after_its_export_is_refused(experiment, tmp_path) -> None:
    from sourcetracing.systems.mfcc import ReferenceModel, model_path

    corpus, cfg = experiment
    cfg2 = _copy_of_experiment(corpus, cfg, tmp_path)
    path = model_path(cfg2, "mfcc")
    model = ReferenceModel.load(path)
    model.coef = model.coef * 1.5  # another fit than the one the outputs and OOD step came from
    model.save(path)
    with pytest.raises(StaleInputError, match="the step that exports 'mfcc'"):
        trace.Tracer.load(cfg2, "mfcc")


def _make_dev_choice(exp_dir: Path, chosen: str) -> None:
    """Rewrite the dev numbers of a copied experiment so that ``chosen`` has the lowest dev EER."""
    from sourcetracing.layout import SystemLayout

    for folder in Path(exp_dir).iterdir():
        path = SystemLayout(folder).ood_summary
        if not path.is_file():
            continue
        summary = pd.read_csv(path)
        dev = summary["split"] == "dev"
        summary.loc[dev, "eer"] = 0.0 if folder.name == chosen else 0.4
        summary.loc[dev, "auroc"] = 1.0 if folder.name == chosen else 0.6
        summary.to_csv(path, index=False)


def _traced(corpus, cfg, args: list[str], out: Path, capsys) -> tuple[pd.DataFrame, str]:
    """trace.py's table and printed lines on a copied experiment (its config and folders)."""
    overrides = [f"exp_dir={cfg.exp_dir}", f"features.dir={cfg.features.dir}"]
    assert trace_main(["--config", str(corpus.config_path), *overrides, *args, "--out", str(out)]) == 0
    return pd.read_csv(out, keep_default_na=False), capsys.readouterr().out


def test_trace_without_system_uses_the_system_chosen_on_dev(experiment, tmp_path, capsys) -> None:
    from sourcetracing.summary import dev_selected, experiment_rows

    corpus, cfg = experiment
    cfg2 = _copy_of_experiment(corpus, cfg, tmp_path)
    _make_dev_choice(cfg2.exp_dir, "ge2e")
    system, scorer = dev_selected(experiment_rows(cfg2.exp_dir)[0])
    assert system == "ge2e" != cfg2.trace.system
    clip = next(corpus.mlaad.rglob("eval_000.wav"))
    df, printed = _traced(corpus, cfg2, [str(clip)], tmp_path / "a.csv", capsys)
    assert f"tracing with ge2e / {scorer}: chosen on dev: lowest dev EER" in printed
    expected = trace.Tracer.load(cfg2, "ge2e").trace([clip])
    assert (df["scorer"] == scorer).all() and (df["predicted"] == expected["predicted"]).all()
    np.testing.assert_allclose(df["ood_score"], expected["ood_score"], rtol=1e-6)
    # --system still decides
    df, printed = _traced(corpus, cfg2, [str(clip), "--system", "aasist"], tmp_path / "b.csv", capsys)
    assert "tracing with aasist / " in printed and "--system" in printed


def test_a_chosen_system_without_a_model_gives_way_to_the_best_runnable_one(
    experiment, tmp_path, capsys
) -> None:
    corpus, cfg = experiment
    cfg2 = _copy_of_experiment(corpus, cfg, tmp_path)
    exp = Path(cfg2.exp_dir)
    shutil.copytree(exp / "ge2e", exp / "scores_only", ignore=shutil.ignore_patterns("trained_models"))
    meta_path = exp / "scores_only" / "outputs" / "meta.json"
    meta_path.write_text(meta_path.read_text().replace('"task": "ge2e"', '"task": "scores"'))
    _make_dev_choice(exp, "scores_only")
    summary = pd.read_csv(exp / "stats" / "ood_step" / "ood_summary.csv")  # the runner-up on dev
    summary.loc[summary["split"] == "dev", "eer"] = 0.1
    summary.to_csv(exp / "stats" / "ood_step" / "ood_summary.csv", index=False)
    clip = next(corpus.mlaad.rglob("eval_000.wav"))
    df, printed = _traced(corpus, cfg2, [str(clip)], tmp_path / "a.csv", capsys)
    assert "tracing with stats / " in printed
    assert "'scores_only'" in printed and "no model that runs on audio" in printed
    assert (df["status"] == "ok").all()


def test_the_fusion_chosen_on_dev_is_traced_through_its_members(experiment, tmp_path, capsys) -> None:
    from sourcetracing.systems.fusion import export_fusion

    corpus, cfg = experiment
    cfg2 = _copy_of_experiment(corpus, cfg, tmp_path)
    export_fusion(cfg2)
    judge_system(cfg2, "fusion")
    exp = Path(cfg2.exp_dir)
    _make_dev_choice(exp, "fusion")
    scores = pd.read_csv(exp / "fusion" / "ood_step" / "scores_eval.tsv", sep="\t")
    files = [corpus.mlaad / c for c in scores["clip_id"]]
    df, printed = _traced(corpus, cfg2, [str(f) for f in files], tmp_path / "a.csv", capsys)
    assert "tracing with fusion / fused: chosen on dev" in printed and "members" in printed
    assert (df["status"] == "ok").all() and len(df) == len(scores)
    # eval's fused scores come from the fit on all of dev: the traced clips reproduce them
    np.testing.assert_allclose(df["ood_score"], scores["fused"], rtol=1e-4, atol=1e-4)
    assert (df["predicted"] == scores["predicted"]).all()
    assert ((df["ood_score"] >= df["threshold"]) == (df["decision"] == "unknown")).all()
