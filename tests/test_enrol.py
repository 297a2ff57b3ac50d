"""Enrolling a held-back system from a few clips without retraining: trace.py names it, removing it
restores every decision, stale enrolments are refused, and the measurement writes sane files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from corpus_fixtures import UNSEEN_DEV, make_tiny_corpus
from step_scripts import enroll_main, trace_main
from toy_store import SMALL_AASIST, SMALL_GE2E

from sourcetracing import enrol, trace
from sourcetracing.config import load_config
from sourcetracing.data.protocols import LabelMap
from sourcetracing.errors import DataError, MissingInputError, StaleInputError
from sourcetracing.judge import judge_system
from sourcetracing.layout import ExperimentLayout
from sourcetracing.ood.scorers import build_scorer, centroid_similarities, class_centroids

HELD_BACK = next(iter(UNSEEN_DEV))  # a dev-unseen system (it reappears in eval)
NAME = "new/system"
SYSTEMS = ("aasist", "ge2e")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny corpus, its features, a 1-epoch classifier and GE2E, both judged."""
    from sourcetracing.data.check import run_check
    from sourcetracing.features.extract import run_extraction
    from sourcetracing.training.classifier import train_classifier
    from sourcetracing.training.ge2e import train_ge2e

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("enrol")
    corpus = make_tiny_corpus(
        root / "c", clips_per_system=6, dev_clips=8, eval_clips=4,
        overrides={
            "model": {"aasist": SMALL_AASIST}, "train": {"epochs": 1, "batch_size": 8},
            "ge2e": {**SMALL_GE2E, "n_clips": 2, "epochs": 1}, "ood": {"knn": {"k": 2}},
            "augment": {"versions": ["original", "noise"]},
        },
    )  # fmt: skip
    cfg = corpus.cfg
    run_check(cfg)
    run_extraction(cfg)
    train_classifier(cfg)
    judge_system(cfg, "aasist")
    train_ge2e(cfg)
    judge_system(cfg, "ge2e")
    folder = corpus.mlaad / "fake" / UNSEEN_DEV[HELD_BACK] / HELD_BACK.replace("/", "_")
    dev = sorted(folder.glob("dev_*.wav"))
    clips = {"enrol": dev[:5], "others": dev[5:] + sorted(folder.glob("eval_*.wav"))}
    clips["rest"] = sorted(
        p for p in corpus.mlaad.rglob("eval_*.wav") if p.parent != folder
    )  # other systems' eval clips
    return corpus, cfg, clips


def _copy(experiment, tmp_path):
    """A private copy of the experiment folder (tests that enrol must not disturb each other)."""
    corpus, cfg, clips = experiment
    shutil.copytree(cfg.exp_dir, tmp_path / "exp")
    config = load_config(corpus.config_path, [f"exp_dir={tmp_path / 'exp'}"])
    return config, clips


def test_enrolment_names_the_held_back_system_and_removing_it_restores_every_decision(
    experiment, tmp_path, capsys
) -> None:
    corpus, _, _ = experiment
    cfg, clips = _copy(experiment, tmp_path)
    layout = ExperimentLayout.of(cfg)
    label_map = LabelMap.read(cfg.exp_dir)
    every = clips["others"] + clips["rest"]
    before = {s: trace.Tracer.load(cfg, s).trace(every) for s in SYSTEMS}
    argv = ["--config", str(corpus.config_path), f"exp_dir={cfg.exp_dir}"]
    assert enroll_main([*argv, "--add", NAME, *map(str, clips["enrol"])]) == 0
    assert f"enrolled '{NAME}' into aasist (5 clips), ge2e (5 clips)" in capsys.readouterr().out

    record = json.loads(layout.enrolled.read_text())["systems"][NAME]
    assert record["clips"] == [str(p.resolve()) for p in clips["enrol"]] and record["enrolled_at"]
    for system in SYSTEMS:
        stored = np.load(layout.root / record["into"][system]["file"])
        assert stored["embeddings"].shape[0] == 5 and np.isfinite(stored["embeddings"]).all()
    table = pd.read_csv(layout.label_map, keep_default_na=False)
    assert table[table["status"] == "enrolled"]["system"].tolist() == [NAME]
    assert LabelMap.read(cfg.exp_dir) == label_map  # the trained classes do not change

    for system in SYSTEMS:
        tracer = trace.Tracer.load(cfg, system)
        info = json.loads((layout.system(system).ood / "thresholds.json").read_text())
        assert tracer.classes[-1] == NAME and tracer.enrolled == (NAME,)
        assert tracer.scorer_name in ("centroid", "knn")
        assert tracer.threshold == info["scorers"][tracer.scorer_name]["threshold"]  # from dev, unchanged
        df = tracer.trace(every)
        assert ((df["ood_score"] >= tracer.threshold) == (df["decision"] == "unknown")).all()
        assert df["p_unseen"].between(0, 1).all()
    # the script, with overrides before and clips after the options
    out = tmp_path / "traced.csv"
    assert trace_main([*argv, "--system", "ge2e", "--out", str(out), *map(str, clips["others"])]) == 0
    ge2e = pd.read_csv(out, keep_default_na=False)
    named = (ge2e["predicted"] == NAME) & (ge2e["decision"] == "known")
    assert named.mean() > 0.5, ge2e[["path", "predicted", "ood_score", "decision"]]

    assert enroll_main([*argv, "--list"]) == 0
    assert NAME in capsys.readouterr().out
    assert enroll_main([*argv, "--remove", NAME]) == 0
    assert json.loads(layout.enrolled.read_text())["systems"] == {}
    assert not list(layout.root.glob("*/enrolled/*.npz"))
    assert "enrolled" not in set(pd.read_csv(layout.label_map)["status"])
    for system in SYSTEMS:
        after = trace.Tracer.load(cfg, system).trace(every)
        pd.testing.assert_frame_equal(after, before[system])


def test_bad_enrolments_are_refused_with_one_line(experiment, tmp_path, capsys) -> None:
    corpus, _, _ = experiment
    cfg, clips = _copy(experiment, tmp_path)
    argv = ["--config", str(corpus.config_path), f"exp_dir={cfg.exp_dir}"]
    known = LabelMap.read(cfg.exp_dir).known[0]
    assert enroll_main([*argv, "--add", known, str(clips["enrol"][0])]) == 1
    assert "is a known (trained) system already" in capsys.readouterr().err
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio")
    assert enroll_main([*argv, "--add", NAME, str(clips["enrol"][0]), str(broken)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 of 2 enrolment clip(s) could not be read" in err[0]
    assert not ExperimentLayout.of(cfg).enrolled.exists()  # nothing written
    assert enroll_main([*argv, "--remove", NAME]) == 1
    assert "is not enrolled" in capsys.readouterr().err
    assert enroll_main([*argv, "--add", NAME, *map(str, clips["enrol"][:2])]) == 0
    assert enroll_main([*argv, "--add", NAME, str(clips["enrol"][0])]) == 1
    assert "--replace" in capsys.readouterr().err
    assert enroll_main([*argv, "--add", NAME, "--replace", *map(str, clips["enrol"][:3])]) == 0
    assert (
        json.loads(ExperimentLayout.of(cfg).enrolled.read_text())["systems"][NAME]["into"]["ge2e"]["n_clips"]
        == 3
    )
    assert enroll_main([*argv, "--add", "other", "--systems", "mfcc", str(clips["enrol"][0])]) == 1
    assert "cannot enrol into 'mfcc'" in capsys.readouterr().err
    with pytest.raises(DataError, match="must come from"):
        trace.Tracer.load(cfg, "ge2e", scorer="mahalanobis")


def test_a_stale_or_missing_enrolment_is_refused_until_refreshed(experiment, tmp_path) -> None:
    cfg, clips = _copy(experiment, tmp_path)
    layout = ExperimentLayout.of(cfg)
    enrol.enrol(cfg, NAME, clips["enrol"])
    record = json.loads(layout.enrolled.read_text())
    record["systems"][NAME]["into"]["aasist"]["checkpoint"] = "another checkpoint"
    del record["systems"][NAME]["into"]["ge2e"]  # as if ge2e had been trained after the enrolment
    layout.enrolled.write_text(json.dumps(record))
    with pytest.raises(StaleInputError, match="--refresh"):
        trace.Tracer.load(cfg, "aasist")
    with pytest.raises(MissingInputError, match="--refresh"):
        trace.Tracer.load(cfg, "ge2e")
    assert trace.Tracer.load(cfg, "ge2e", enrolled=False).enrolled == ()
    assert enrol.refresh(cfg) == [NAME]
    for system in SYSTEMS:
        assert trace.Tracer.load(cfg, system).enrolled == (NAME,)


def test_the_measurement_writes_the_table_and_the_curve(experiment, tmp_path, capsys) -> None:
    corpus, _, _ = experiment
    cfg, _ = _copy(experiment, tmp_path)
    argv = ["--config", str(corpus.config_path), f"exp_dir={cfg.exp_dir}"]
    assert enroll_main([*argv, "--measure", "--sizes", "1,3,5,10", "--repeats", "3"]) == 0
    assert "recall" in capsys.readouterr().out
    for system in SYSTEMS:
        folder = ExperimentLayout.of(cfg).system(system).enrolment
        table = pd.read_csv(folder / "enrolment.csv")
        assert (folder / "enrolment_curve.png").stat().st_size > 1000
        assert set(table["system"]) == {HELD_BACK, enrol.MEAN}
        assert table["n"].tolist() == [1, 3, 5, 10, 1, 3, 5, 10]
        done = table[table["system"] == HELD_BACK].set_index("n")
        assert done.loc[10, "repeats"] == 0 and np.isnan(done.loc[10, "recall"])  # only 8 dev clips
        assert (done.loc[[1, 3, 5], "repeats"] == 3).all()
        rates = done.loc[[1, 3, 5], ["recall", "nearest", "accepted", "false_attribution"]].to_numpy()
        assert ((rates >= 0) & (rates <= 1)).all()
        assert (done["eval_others"] == 16).all()  # 3 known x 4 + the eval-only unseen system x 4
    ge2e = pd.read_csv(ExperimentLayout.of(cfg).system("ge2e").enrolment / "enrolment.csv")
    assert ge2e[(ge2e["system"] == enrol.MEAN) & (ge2e["n"] == 5)]["recall"].iloc[0] > 0.5
    for scorer in ("centroid", "knn"):  # the scorer trace.py would use: trace.scorer when it is set
        assert (
            enroll_main([*argv, f"trace.scorer={scorer}", "--measure", "--systems", "ge2e", "--repeats", "1"])
            == 0
        )
        assert set(
            pd.read_csv(ExperimentLayout.of(cfg).system("ge2e").enrolment / "enrolment.csv")["scorer"]
        ) == {scorer}
    with pytest.raises(SystemExit):  # argparse: sizes must be >= 1
        enroll_main([*argv, "--measure", "--sizes", "0,2"])


@pytest.mark.parametrize("scorer_name", ["centroid", "knn"])
def test_the_measurement_rule_is_the_extended_scorer(scorer_name) -> None:
    """The measurement's shortcut (the trained part computed once) gives the extended scorer's numbers."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 2, (4, 6))
    labels = np.repeat(np.arange(3), 10)
    train = means[labels] + rng.normal(0, 1, (30, 6))
    clips = means[rng.integers(0, 4, 50)] + rng.normal(0, 1, (50, 6))
    group = means[3] + rng.normal(0, 1, (4, 6))
    scorer = build_scorer(scorer_name, k=3, chunk_size=7).fit(train, None, labels)
    centroids = class_centroids(train, labels, 3)
    attributed, ood = enrol._Extended(clips, centroids, scorer, scorer_name).decide(group, scorer)
    expected = scorer.with_enrolled([group]).score(clips, None)
    np.testing.assert_allclose(ood, expected, rtol=0, atol=1e-6)
    extended = np.concatenate([centroids, class_centroids(group, np.zeros(4, dtype=int), 1)])
    np.testing.assert_array_equal(attributed, centroid_similarities(clips, extended).argmax(axis=1) == 3)
    assert attributed.any() and not attributed.all()
    assert (ood <= scorer.score(clips, None) + 1e-6).all()  # enrolment can only make clips look less OOD


def test_only_embedding_scorers_take_enrolled_systems() -> None:
    with pytest.raises(NotImplementedError, match="cannot take enrolled systems"):
        build_scorer("nsd").with_enrolled([np.zeros((2, 3))])
    from sourcetracing.layout import SystemLayout
    from sourcetracing.ood.step import OODStep

    info = {"default": "mahalanobis", "scorers": {"knn": {"dev_eer": 0.3, "dev_auroc": 0.7},
                                                    "centroid": {"dev_eer": 0.2, "dev_auroc": 0.8}}}  # fmt: skip
    step = OODStep(SystemLayout(Path("exp/aasist")), info, {})
    assert enrol.choose_scorer(step, ["centroid", "knn"]) == "centroid"  # lower dev EER
    knn_default = OODStep(step.layout, {**info, "default": "knn"}, {})
    assert enrol.choose_scorer(knn_default, ["centroid", "knn"]) == "knn"  # the default
    assert enrol.choose_scorer(step, ["centroid", "knn"], "knn") == "knn"
    with pytest.raises(MissingInputError, match="embedding scorer"):
        enrol.choose_scorer(step, [])
