"""The robustness report card: the clean condition reproduces the normal report, condition stores are
cached and keyed by their settings, one output row per clip, every system x condition in the CSV,
heat maps, the MFCC reference applied through its saved model, and clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from corpus_fixtures import make_tiny_corpus
from toy_store import SMALL_AASIST, SMALL_GE2E

from sourcetracing import robustness
from sourcetracing.config import load_config
from sourcetracing.errors import ConfigError, MissingInputError
from sourcetracing.features.extract import run_extraction
from sourcetracing.features.store import FeatureStore, store_dir
from sourcetracing.judge import judge_system
from sourcetracing.layout import ExperimentLayout
from sourcetracing.systems.mfcc import ReferenceModel, export_mfcc, model_path
from sourcetracing.systems.outputs import SystemOutputs
from sourcetracing.training.classifier import train_classifier
from sourcetracing.training.ge2e import train_ge2e

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ("aasist", "ge2e", "mfcc")
CONDITIONS = ["clean", "mp3_32k", "noise_10db", "first_1s"]
PASS_LOG = "SOURCETRACING_PASS_LOG"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """A tiny corpus with 1-epoch AASIST and GE2E and the MFCC reference, all judged, then a card."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("robust")
    corpus = make_tiny_corpus(
        root / "c", clips_per_system=5, dev_clips=3, eval_clips=3,
        overrides={
            "model": {"aasist": SMALL_AASIST}, "train": {"epochs": 1, "batch_size": 8},
            "ge2e": {**SMALL_GE2E, "n_clips": 2, "epochs": 1}, "ood": {"knn": {"k": 2}},
            "augment": {"versions": ["original", "noise"]}, "mfcc": {"jobs": 1},
            "robustness": {"conditions": CONDITIONS},
        },
    )  # fmt: skip
    cfg = corpus.cfg
    run_extraction(cfg)
    train_classifier(cfg)
    judge_system(cfg, "aasist")
    train_ge2e(cfg)
    judge_system(cfg, "ge2e")
    export_mfcc(cfg)
    judge_system(cfg, "mfcc")
    table = robustness.run_robustness(cfg)
    first = root / "first_run"  # later tests rerun subsets, which rewrite the CSV, card and heat maps
    first.mkdir()
    for name in (robustness.CSV, robustness.CARD, robustness.EER_PNG, robustness.F1_PNG):
        shutil.copy(ExperimentLayout.of(cfg).robustness / name, first / name)
    return corpus, cfg, table, first


def _protocol(corpus, split: str) -> pd.DataFrame:
    return pd.read_csv(corpus.protocols / f"{split}.csv")


def test_clean_condition_reproduces_the_normal_report(experiment) -> None:
    _, cfg, _, first = experiment
    layout = ExperimentLayout.of(cfg)
    table = pd.read_csv(first / robustness.CSV)
    clean = table[table["condition"] == "clean"]
    pairs = {  # ood_summary column -> robustness column (at the clean-dev threshold)
        "eer": "eer", "auroc": "auroc", "fpr_at_95tpr": "fpr_at_95tpr", "fpr": "fpr_clean", "fnr": "fnr_clean",
        "f1": "ood_f1_clean", "open_set_macro_f1": "open_set_f1_clean", "threshold": "threshold_clean",
    }  # fmt: skip
    for system in SYSTEMS:
        summary = pd.read_csv(layout.system(system).ood / "ood_summary.csv")
        summary = summary[summary["subset"] == "all"].set_index(["scorer", "split"])
        metrics = json.loads((layout.system(system).results / "metrics.json").read_text())
        ours = clean[clean["system"] == system].set_index(["scorer", "split"])
        assert set(ours.index) == set(summary.index)  # every fitted scorer, dev and eval
        for key, row in ours.iterrows():
            for theirs, mine in pairs.items():
                assert row[mine] == summary.loc[key, theirs], (system, key, mine)
            np.testing.assert_allclose(row["cllr_clean"], summary.loc[key, "cllr"], rtol=1e-9)
            np.testing.assert_allclose(row["min_cllr"], summary.loc[key, "min_cllr"], rtol=1e-9)
            assert row["macro_f1"] == metrics[key[1]]["macro_f1"]
            assert row["accuracy"] == metrics[key[1]]["accuracy"]
            assert row["n_known"] == metrics[key[1]]["n"]
        dev = ours.xs("dev", level="split")  # the clean dev threshold is the condition's own on clean
        assert (dev["threshold_cond"] == dev["threshold_clean"]).all()
        # (FPR + FNR) / 2 from counts at that threshold is the dev EER (up to round-off: other formulas)
        np.testing.assert_allclose(dev["hter_cond"], summary.xs("dev", level="split").loc[dev.index, "eer"])


def test_csv_has_every_system_x_condition_and_the_card_and_heat_maps_exist(experiment, capsys) -> None:
    corpus, cfg, table, out = experiment
    on_disk = pd.read_csv(out / robustness.CSV)
    assert list(on_disk.columns) == robustness.COLUMNS and len(on_disk) == len(table)
    pairs = set(zip(on_disk["system"], on_disk["condition"], strict=True))
    assert pairs == {(s, c) for s in SYSTEMS for c in CONDITIONS}
    assert set(on_disk["split"]) == {"dev", "eval"}
    defaults = on_disk[on_disk["default"]].groupby(["system", "condition", "split"]).size()
    assert (defaults == 1).all() and len(defaults) == len(SYSTEMS) * len(CONDITIONS) * 2
    for png in (robustness.EER_PNG, robustness.F1_PNG):
        assert (out / png).stat().st_size > 5000
    card = (out / robustness.CARD).read_text()
    assert all(f"| {c} |" in card for c in CONDITIONS) and all(f"{s} (" in card for s in SYSTEMS)
    n_eval = len(_protocol(corpus, "eval"))
    assert (on_disk[on_disk["split"] == "eval"]["n"] == n_eval).all()
    # the codec and the noise change what the classifier sees: not every number stays the clean one
    aasist = on_disk[(on_disk["system"] == "aasist") & (on_disk["split"] == "eval")].set_index(
        ["condition", "scorer"]
    )
    assert not np.allclose(aasist.xs("clean")["auroc"], aasist.xs("noise_10db")["auroc"])


def test_per_condition_outputs_have_one_row_per_clip(experiment) -> None:
    corpus, cfg, _, _ = experiment
    layout = ExperimentLayout.of(cfg)
    for condition in CONDITIONS:
        for system in SYSTEMS:
            outputs = SystemOutputs.read(layout.robustness_system(condition, system).outputs)
            assert set(outputs.splits) == {"dev", "eval"}
            for split, part in outputs.splits.items():
                clips = _protocol(corpus, split)["path"].str.removeprefix("./")
                assert part.rows["clip_id"].tolist() == clips.tolist(), (condition, system, split)
                arrays = [a for a in (part.embeddings, part.logits) if a is not None]
                assert arrays and all(len(a) == len(clips) and np.isfinite(a).all() for a in arrays)


def test_condition_store_is_reused_on_a_rerun_and_changes_with_its_parameters(
    experiment, tmp_path, monkeypatch
) -> None:
    corpus, cfg, table, _ = experiment
    conds = robustness.store_conditions(cfg, robustness.resolve_conditions(cfg, ["mp3_32k"]))
    folder = store_dir(cfg, conds["mp3_32k"])
    stamps = {p: p.stat().st_mtime_ns for p in (folder / "shards").glob("*.npy")}
    outputs = ExperimentLayout.of(cfg).robustness_system("mp3_32k", "aasist").outputs / "manifest.json"
    manifest = outputs.read_text()
    log = tmp_path / "passes.tsv"
    monkeypatch.setenv(PASS_LOG, str(log))
    again = robustness.run_robustness(cfg, ["clean", "mp3_32k"])
    assert not log.exists()  # no model ran again: the per-condition outputs were reused
    assert {p: p.stat().st_mtime_ns for p in (folder / "shards").glob("*.npy")} == stamps and stamps
    assert outputs.read_text() == manifest
    pd.testing.assert_frame_equal(
        again.reset_index(drop=True),
        table[table["condition"].isin(["clean", "mp3_32k"])].reset_index(drop=True),
    )
    # the same name with another bit rate is another store with other features, and is recomputed
    cfg64 = load_config(
        corpus.config_path,
        ["robustness.conditions={mp3_32k: {transform: mp3, params: {bitrate_kbps: 64}}}"],
    )
    cond64 = robustness.store_conditions(cfg64, robustness.resolve_conditions(cfg64))["mp3_32k"]
    assert store_dir(cfg64, cond64) != folder
    robustness.run_robustness(cfg64, systems=["aasist"])
    assert {line.split("\t")[0] for line in log.read_text().splitlines()} == {"aasist@mp3_32k"}
    store32, store64 = FeatureStore(folder), FeatureStore(store_dir(cfg64, cond64))
    rows = store32.select(split="eval")
    assert not np.array_equal(store32.load(rows), store64.load(store64.select(split="eval")))
    assert json.loads((store64.directory / "meta.json").read_text())["settings"]["condition"]["params"] == {
        "bitrate_kbps": 64
    }


def test_mfcc_reference_runs_on_transformed_audio_with_its_saved_model(experiment) -> None:
    corpus, cfg, _, _ = experiment
    layout = ExperimentLayout.of(cfg)
    model = ReferenceModel.load(model_path(cfg))
    clean = SystemOutputs.read(layout.system("mfcc").outputs)
    assert model.class_names == clean.class_names
    # the clean condition recomputes the statistics and applies the saved model: the export's numbers
    for condition in ("clean", "first_1s"):
        part = SystemOutputs.read(layout.robustness_system(condition, "mfcc").outputs).split("eval")
        same = np.array_equal(part.logits, clean.split("eval").logits)
        assert same == (condition == "clean"), condition  # a 1 s clip has other whole-clip statistics
    from sourcetracing.features.store import StoreCondition
    from sourcetracing.systems.mfcc import split_features

    condition = robustness.resolve_conditions(cfg, ["first_1s"])["first_1s"]
    rows = pd.read_csv(layout.robustness_system("first_1s", "mfcc").outputs / "eval.tsv", sep="\t")
    frame = _protocol(corpus, "eval").assign(clip_id=rows["clip_id"])
    x, kept, _ = split_features(
        frame, cfg.data.root, model.settings, 1, None, StoreCondition(condition, 0, ("eval",))
    )
    emb, logits = model.apply(x)
    saved = SystemOutputs.read(layout.robustness_system("first_1s", "mfcc").outputs).split("eval")
    np.testing.assert_array_equal(logits, saved.logits)
    np.testing.assert_array_equal(emb, saved.embeddings)


def test_conditions_from_a_mapping_and_bad_settings_are_clear(experiment, tmp_path) -> None:
    corpus, cfg, _, _ = experiment
    mapped = load_config(
        corpus.config_path,
        [
            "robustness.conditions={tel: {transform: resample, params: {via_rate: 8000}}, hot: {transform: gain, gain_db: 6}}"
        ],
    )
    conditions = robustness.resolve_conditions(mapped)
    assert list(conditions) == ["tel", "hot"] and conditions["hot"].params == {"gain_db": 6}
    assert list(robustness.resolve_conditions(mapped, ["hot", "mp3_64k"])) == ["hot", "mp3_64k"]
    with pytest.raises(ConfigError, match="unknown condition 'nope'.*mp3_32k"):
        robustness.resolve_conditions(cfg, ["nope"])
    with pytest.raises(ConfigError, match="has no parameter"):
        robustness.resolve_conditions(
            load_config(None, ["robustness.conditions={x: {transform: mp3, kbps: 3}}"])
        )
    with pytest.raises(ConfigError, match="'noise_10db' cannot run.*MUSAN"):
        robustness.resolve_conditions(
            load_config(corpus.config_path, [f"augment.musan={tmp_path}"]), ["noise_10db"]
        )
    with pytest.raises(ConfigError, match="robustness.splits"):
        load_config(None, ["robustness.splits=[eval]"])
    elsewhere = load_config(corpus.config_path, [f"exp_dir={tmp_path}"])
    with pytest.raises(MissingInputError, match="'aasist' cannot be judged.*no outputs"):
        robustness.select_systems(elsewhere, ["aasist"])
    for part in ("outputs", "trained_models"):  # a trained, exported system not yet through its OOD step
        shutil.copytree(Path(cfg.exp_dir) / "aasist" / part, tmp_path / "aasist" / part)
    with pytest.raises(MissingInputError, match="no OOD step.*ood_detector.py"):
        robustness.select_systems(elsewhere, ["aasist"])
    with pytest.raises(MissingInputError, match="no system .* can be judged"):
        robustness.select_systems(elsewhere)


def test_the_script_lists_conditions_reports_errors_in_one_line_and_compares(experiment) -> None:
    corpus, cfg, _, first = experiment
    env = dict(os.environ, OMP_NUM_THREADS="1")
    script = [sys.executable, str(REPO / "scripts" / "robustness.py")]
    listed = subprocess.run(
        [*script, "--list-conditions"], capture_output=True, text=True, env=env, timeout=120
    )
    assert listed.returncode == 0 and "mp3_32k" in listed.stdout and "first_2s" in listed.stdout
    bad = subprocess.run(
        [*script, "--config", str(corpus.config_path), "--conditions", "clean,nope"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown condition 'nope'")
    assert "Traceback" not in bad.stderr
    csv = str(first / robustness.CSV)
    same = robustness.compare(csv, csv)
    assert len(same) == len(SYSTEMS) * len(CONDITIONS) and (same["eer_delta"] == 0).all()
    shown = subprocess.run(
        [*script, "--compare", csv, csv], capture_output=True, text=True, env=env, timeout=120
    )
    assert shown.returncode == 0 and "noise_10db" in shown.stdout
    missing = subprocess.run(
        [*script, "--compare", csv, str(first / "nothing")], capture_output=True, text=True, env=env, timeout=120
    )  # fmt: skip
    assert missing.returncode == 1 and missing.stderr.startswith("error: ") and "not found" in missing.stderr


def test_raw_audio_clips_go_through_the_condition_before_the_crop(experiment) -> None:
    from sourcetracing.data.audio import clip_samples
    from sourcetracing.features.store import StoreCondition
    from sourcetracing.training.ge2e_data import AudioClips

    corpus, cfg, _, _ = experiment
    rows = pd.read_csv(ExperimentLayout.of(cfg).system("aasist").outputs / "dev.tsv", sep="\t").head(4)
    rows["label"] = 0
    audio = {"root": cfg.data.root, "sample_rate": 16000, "num_samples": clip_samples(cfg), "train": False}
    plain = AudioClips(rows, **audio)
    for name, factor in (("clean", 1.0), ("level_-20db", 0.1)):
        condition = StoreCondition(robustness.resolve_conditions(cfg, [name])[name], 0, ("dev",))
        clips = robustness.ConditionedAudioClips(rows, condition=condition, **audio)
        for i in range(len(rows)):
            expected = plain[i][0].numpy() * np.float32(factor)
            np.testing.assert_allclose(clips[i][0].numpy(), expected, rtol=1e-6, atol=1e-9)


@pytest.mark.slow
def test_torchrun_shares_the_condition_store_extraction(experiment, tmp_path) -> None:
    corpus, cfg, _, _ = experiment
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(REPO / "scripts" / "robustness.py"), "--config", str(corpus.config_path),
        "--conditions", "clean,vorbis_q0", "--systems", "aasist,mfcc",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("robustness report written") == 1  # rank 0 alone judges and writes
    condition = robustness.store_conditions(cfg, robustness.resolve_conditions(cfg, ["vorbis_q0"]))[
        "vorbis_q0"
    ]
    store = FeatureStore(store_dir(cfg, condition))
    assert len(store.index) == len(_protocol(corpus, "dev")) + len(_protocol(corpus, "eval"))
    table = pd.read_csv(ExperimentLayout.of(cfg).robustness / robustness.CSV)
    assert set(zip(table["system"], table["condition"], strict=True)) == {
        (s, c) for s in ("aasist", "mfcc") for c in ("clean", "vorbis_q0")
    }


def test_cards_over_runs_average_each_system_and_condition_and_keep_the_largest_drop(tmp_path) -> None:
    from sourcetracing.robustness import over_runs

    def card(exp, f1s, eers):
        folder = tmp_path / exp / "robustness"
        folder.mkdir(parents=True)
        rows = []
        for (system, condition), f1 in f1s.items():
            for scorer, default in (("knn", True), ("msp", False)):
                rows.append(
                    {"system": system, "scorer": scorer, "default": default, "condition": condition,
                     "split": "eval", "macro_f1": f1 if default else 0.1, "eer": eers[system],
                     "hter_clean": 0.0, "fpr_clean": 0.0, "fnr_clean": 0.0}
                )  # fmt: skip
        pd.DataFrame(rows).to_csv(folder / "robustness.csv", index=False)
        return tmp_path / exp

    a = card("r0", {("s", "clean"): 1.0, ("s", "mp3"): 0.98}, {"s": 0.10})
    b = card("r1", {("s", "clean"): 0.96, ("s", "mp3"): 0.90}, {"s": 0.20})
    table = over_runs([a, b, tmp_path / "no_card"]).set_index(["system", "condition"])
    assert table.loc[("s", "clean"), "runs"] == 2
    assert table.loc[("s", "clean"), "known-class macro-F1"] == f"0.980 ± {np.std([1.0, 0.96], ddof=1):.3f}"
    # the change is from each run's own clean row: -0.02 and -0.06, mean -0.04, largest drop -0.06
    assert table.loc[("s", "mp3"), "F1 − clean (largest drop)"] == "-0.040 (-0.060)"
    assert table.loc[("s", "mp3"), "OOD EER (%)"].startswith("15.0 ± ")
    assert over_runs([tmp_path / "no_card"]).empty
