"""Fault injection: nothing stale, nothing half-written, nothing silently lost.

Each case ends in a clear error (one ``error: ...`` line and the exit code of its kind when run as a
script: 1 data, 2 config, 3 stale input, 4 would overwrite, 5 locked) or in an exact recomputation,
and no earlier result is lost or altered. One tiny real-audio experiment (lfcc front end, a tiny
AASIST trained for 2 epochs, every OOD scorer) is built once; every test works on a copy of it.
The tests marked slow kill step scripts with SIGKILL mid-way (see ``fault_injection.py``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from corpus_fixtures import KNOWN, make_tiny_corpus, model_dir
from fault_injection import kill_hard, kill_started, leftovers, start_paused, still_running
from step_scripts import trace_main
from toy_store import SMALL_AASIST

from sourcetracing import trace
from sourcetracing.config import Config, load_config
from sourcetracing.data.check import run_check
from sourcetracing.data.protocols import ProtocolError
from sourcetracing.errors import MissingInputError
from sourcetracing.features.extract import ExtractionError, run_extraction, summary_table
from sourcetracing.features.store import FeatureStore, MissingFeaturesError, store_dir
from sourcetracing.judge import judge_system
from sourcetracing.layout import ExperimentLayout, SystemLayout
from sourcetracing.provenance import clean_leftovers
from sourcetracing.systems.export import export_classifier
from sourcetracing.training import classifier
from sourcetracing.training.checkpoint import read_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "model": {"aasist": SMALL_AASIST},
    "train": {"epochs": 2, "batch_size": 8},
    "ood": {"knn": {"k": 2}},
    "augment": {"versions": ["original", "noise"]},
}
SYSTEM = "griffin_lim"  # a known system of the tiny corpus, renamed or relabelled below
FOLDER = f"./fake/{KNOWN[SYSTEM]}/{model_dir(SYSTEM)}"


@dataclass
class Experiment:
    """A tiny corpus with its config; ``exp_dir`` may hold a finished pipeline run."""

    root: Path
    config_path: Path

    @property
    def cfg(self) -> Config:
        return load_config(self.config_path)

    def with_(self, *overrides: str) -> Config:
        return load_config(self.config_path, list(overrides))

    @property
    def layout(self) -> ExperimentLayout:
        return ExperimentLayout.of(self.cfg)

    @property
    def aasist(self) -> SystemLayout:
        return self.layout.system("aasist")

    def protocol(self, split: str) -> Path:
        return self.root / "protocols" / f"{split}.csv"

    def audio(self, clip: str) -> Path:
        return self.root / "MLAAD_v5" / clip


@pytest.fixture(autouse=True)
def no_paused_child_outlives_its_test():
    yield
    kill_started()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Experiment:
    """The uninterrupted run: data check, features, a 2-epoch AASIST with its outputs, results and OOD step."""
    torch.set_num_threads(1)  # as the step scripts under test run (OMP_NUM_THREADS=1): identical numbers
    root = tmp_path_factory.mktemp("faults") / "reference"
    corpus = make_tiny_corpus(root, clips_per_system=5, dev_clips=3, eval_clips=3, overrides=SETTINGS)
    cfg = corpus.cfg
    assert run_check(cfg)[0] == []
    run_extraction(cfg)
    classifier.train_classifier(cfg)
    judge_system(cfg, "aasist")
    return Experiment(root, corpus.config_path)


def clone(reference: Experiment, dest: Path, with_results: bool = True) -> Experiment:
    """A copy of the corpus (file times kept, so its shards stay up to date) and, optionally, its results."""
    shutil.copytree(reference.root, dest, ignore=None if with_results else shutil.ignore_patterns("exp"))
    for config in (dest / "config.yaml", dest / "exp" / "config.yaml"):  # the second: what --exp reads
        if config.is_file():
            config.write_text(config.read_text().replace(str(reference.root), str(dest)))
    return Experiment(dest, dest / "config.yaml")


def script_env() -> dict[str, str]:
    """The environment of a step script run as a child process (one thread, as the reference run)."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def script_main(name: str) -> Callable[[list[str]], int]:
    """The ``main`` of a step script in ``scripts/`` (what ``python scripts/<name>`` runs)."""
    spec = importlib.util.spec_from_file_location(f"script_{Path(name).stem}", REPO / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def train_refd_main(argv: list[str]) -> int:
    """What ``python train_refd.py <argv>`` runs (the step script at the repository root), in this process."""
    spec = importlib.util.spec_from_file_location("step_train_refd", REPO / "train_refd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def call(main: Callable[[list[str]], int], argv: list, capsys) -> tuple[int, list[str], str]:
    """Run a script's ``main`` in this process: ``(exit code, stderr lines, stdout)``."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err.strip().splitlines(), captured.out


def one_error_line(err: list[str]) -> str:
    """The single ``error: ...`` line a failing step prints (no traceback, nothing else)."""
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def snapshot(*paths: Path) -> dict[str, tuple[int, str]]:
    """Modification time and content digest of every file under ``paths``."""
    out = {}
    for base in paths:
        for f in [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file()):
            out[str(f)] = (f.stat().st_mtime_ns, hashlib.sha1(f.read_bytes()).hexdigest())
    return out


def set_system(
    protocol: Path, new_name: str, clips: slice | None = None, old_name: str = SYSTEM
) -> list[str]:
    """Give rows of ``old_name`` (all, or the ``clips`` slice of them) another system name; returns their clip ids."""
    df = pd.read_csv(protocol, dtype=str, keep_default_na=False)
    rows = df.index[df["model_name"] == old_name][clips or slice(None)]
    df.loc[rows, "model_name"] = new_name
    df.to_csv(protocol, index=False)
    return [p.removeprefix("./") for p in df.loc[rows, "path"]]


def add_train_clips(exp: Experiment, clips: dict[str, bytes | np.ndarray]) -> list[str]:
    """Write files (bytes as they are, arrays as 16 kHz WAV) into a known system's folder and list them in train.csv."""
    lines = []
    for name, content in clips.items():
        path = exp.audio(f"{FOLDER}/{name}")
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            sf.write(path, content, 16000)
        lines.append(f"{FOLDER}/{name},{SYSTEM}\n")
    with open(exp.protocol("train"), "a") as fh:
        fh.writelines(lines)
    return [line.split(",")[0].removeprefix("./") for line in lines]


def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


UNUSABLE = {  # clip file -> (reason, what the skipped list must say it is)
    "short.wav": ("too_short", "0.050 s, shorter than data.min_len_s=0.1"),
    "notes.mp3": ("unreadable", "text, not audio"),
    "zeros.mp3": ("unreadable", "not a decodable audio file"),
}


def add_unusable_clips(exp: Experiment) -> dict[str, str]:
    """A 0.05 s clip, a text file and a binary non-audio file named .mp3, in train.csv; clip id -> file name."""
    content = {
        "short.wav": tone(0.05),
        "notes.mp3": b"<html><body>This page is not a recording.</body></html>\n" * 4,
        "zeros.mp3": b"\x89PNG\r\n\x1a\n" + bytes(512),
    }
    return dict(zip(add_train_clips(exp, content), content, strict=True))


def same_store(a: Path, b: Path) -> None:
    """Two feature stores are identical: index, skipped list, meta and every shard file, byte for byte."""
    for name in ("index.csv", "skipped.csv", "meta.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    names = sorted(p.name for p in (a / "shards").iterdir())
    assert names == sorted(p.name for p in (b / "shards").iterdir())
    for name in names:
        assert (a / "shards" / name).read_bytes() == (b / "shards" / name).read_bytes(), name


def same_training(a: SystemLayout, b: SystemLayout) -> None:
    """Identical weights, optimiser state and best-epoch record, and metrics.csv apart from the seconds column."""
    for name in ("best.pt", "last.pt"):
        x, y = read_checkpoint(a.models / name), read_checkpoint(b.models / name)
        assert x["epoch"] == y["epoch"] and x["best"] == y["best"], name
        assert x["model_state"].keys() == y["model_state"].keys()
        for key, value in x["model_state"].items():
            assert torch.equal(value, y["model_state"][key]), f"{name}: {key}"
    x, y = read_checkpoint(a.last)["optimizer"]["state"], read_checkpoint(b.last)["optimizer"]["state"]
    assert x.keys() == y.keys()
    for key in x:
        assert all(torch.equal(x[key][s], y[key][s]) for s in ("exp_avg", "exp_avg_sq")), key
    metrics = [pd.read_csv(m).drop(columns="seconds") for m in (a.metrics, b.metrics)]
    pd.testing.assert_frame_equal(*metrics, check_exact=True)


def same_ood_step(a: Path, b: Path) -> None:
    """Identical OOD step folders: every file byte for byte (manifest, thresholds, scorers, reports), PNGs aside."""
    names = sorted(p.name for p in a.iterdir() if p.suffix != ".png")
    assert names == sorted(p.name for p in b.iterdir() if p.suffix != ".png")
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def listed_file(message: str) -> Path:
    """The file a "too many unusable clips" message points to."""
    match = re.search(r"listed in (\S+?)\.(?:\s|$)", message)
    assert match, message
    return Path(match.group(1))


preprocess = script_main("preprocess_dataset.py")
ood_detector = script_main("ood_detector.py")


# ---------------------------------------------------------------------------------------------
# 1. A stale feature store


def test_a_new_shard_size_keeps_every_clip_and_the_summary_counts_stored_rows(reference, tmp_path) -> None:
    exp = clone(reference, tmp_path / "exp")
    before = FeatureStore.for_config(exp.cfg)
    features = before.load(before.index)
    resized = FeatureStore(run_extraction(exp.with_("features.shard_size=3")))
    assert resized.directory == before.directory  # the shard size does not change what is stored
    assert resized.index["shard"].nunique() > before.index["shard"].nunique()
    key = ["split", "clip_id", "version", "model_name", "label", "path"]
    pd.testing.assert_frame_equal(resized.index[key], before.index[key])
    np.testing.assert_array_equal(resized.load(resized.index), features)
    table = summary_table(resized.meta)
    assert table["rows"].to_dict() == resized.index.groupby("split").size().to_dict()
    assert table["stored_clips"].to_dict() == resized.index.groupby("split")["clip_id"].nunique().to_dict()
    assert table["clips"].to_dict() == {"train": 15, "dev": 12, "eval": 15}
    # back to the first size: exactly the uninterrupted run's store, nothing of the other plan left
    run_extraction(exp.cfg)
    same_store(store_dir(exp.cfg), store_dir(reference.cfg))


def test_corrected_labels_relabel_the_index_and_reuse_the_features(reference, tmp_path, capsys) -> None:
    exp = clone(reference, tmp_path / "exp")
    config, aasist = exp.config_path, exp.aasist
    store = store_dir(exp.cfg)
    arrays, trained = snapshot(*store.glob("shards/*.npy")), snapshot(aasist.root)
    old_index = FeatureStore(store).index
    corrected = set_system(exp.protocol("train"), "tts_models/en/ljspeech/vits", slice(0, 4))
    # training on the store built from the old labels names the step that relabels it
    code, err, _ = call(train_refd_main, ["--config", config, "--force"], capsys)
    line = one_error_line(err)
    assert code == 3 and "train.csv" in line and "preprocess_dataset.py" in line
    assert snapshot(aasist.root) == trained  # --force deleted nothing
    # the step relabels the index and reuses every feature
    code, _, out = call(preprocess, ["--config", config], capsys)
    assert code == 0 and "computes 0 of 7" in out
    assert snapshot(*store.glob("shards/*.npy")) == arrays
    index = FeatureStore(store).index
    moved = index["clip_id"].isin(corrected)
    assert moved.sum() == 4 * 2  # two versions of each train clip
    assert (index.loc[moved, "model_name"] == "tts_models/en/ljspeech/vits").all()
    label = index.loc[index["model_name"] == "tts_models/en/ljspeech/vits", "label"].iloc[0]
    assert (index.loc[moved, "label"] == label).all()
    pd.testing.assert_frame_equal(index[~moved], old_index[~moved])
    # what was made from the old labels is stale now: the OOD step and --resume name the step to rerun
    code, err, _ = call(ood_detector, ["--config", config], capsys)
    line = one_error_line(err)
    assert (
        code == 3
        and "feature store changed" in line
        and "train_refd.py --config <your config> --force" in line
    )
    code, err, _ = call(train_refd_main, ["--config", config, "--resume"], capsys)
    assert code == 3 and "--force" in one_error_line(err)
    assert snapshot(aasist.root) == trained


def test_a_renamed_system_reaches_the_index_and_label_map_and_training_names_the_step(
    reference, tmp_path, capsys
) -> None:
    exp = clone(reference, tmp_path / "exp")
    config, aasist, layout = exp.config_path, exp.aasist, exp.layout
    trained = snapshot(aasist.root)
    arrays = snapshot(*store_dir(exp.cfg).glob("shards/*.npy"))
    for split in ("train", "dev", "eval"):
        set_system(exp.protocol(split), "griffin_lim_v2")
    # the data check alone writes the new label map; training on the old store names the step
    assert call(preprocess, ["--config", config, "--check"], capsys)[0] == 0
    label_map = pd.read_csv(layout.label_map)
    assert "griffin_lim_v2" in set(label_map["system"]) and SYSTEM not in set(label_map["system"])
    assert "griffin_lim_v2" in layout.label_assignment.read_text()
    code, err, _ = call(train_refd_main, ["--config", config, "--force"], capsys)
    assert code == 3 and "preprocess_dataset.py" in one_error_line(err)
    # after the step the index holds the new name (and the features are reused)
    assert call(preprocess, ["--config", config], capsys)[0] == 0
    index = FeatureStore.for_config(exp.cfg).index
    assert "griffin_lim_v2" in set(index["model_name"]) and SYSTEM not in set(index["model_name"])
    assert snapshot(*store_dir(exp.cfg).glob("shards/*.npy")) == arrays
    # resuming the model trained on the old label map: refused, naming what to do
    code, err, _ = call(train_refd_main, ["--config", config, "--resume"], capsys)
    line = one_error_line(err)
    assert code == 3 and "label map changed" in line and "griffin_lim_v2" in line and "--force" in line
    assert snapshot(aasist.root) == trained


@pytest.mark.slow
def test_a_store_killed_while_its_shards_change_never_serves_the_old_index(
    reference, tmp_path, capsys
) -> None:
    exp = clone(reference, tmp_path / "exp")
    argv = [REPO / "scripts" / "preprocess_dataset.py", "--config", exp.config_path, "features.shard_size=3"]
    kill_hard(start_paused("shard-tmp", argv, tmp_path / "run"))
    # shards of the new plan replaced old ones: the old index must not be read over them
    with pytest.raises(MissingFeaturesError, match="preprocess_dataset.py"):
        FeatureStore.for_config(exp.cfg)
    code, err, _ = call(train_refd_main, ["--config", exp.config_path, "--resume"], capsys)
    assert code == 1 and "preprocess_dataset.py" in one_error_line(err)
    run_extraction(exp.cfg)  # the first shard size again: the uninterrupted run's store
    same_store(store_dir(exp.cfg), store_dir(reference.cfg))
    assert not leftovers(exp.root)


# ---------------------------------------------------------------------------------------------
# 2. Tracing with parts that do not belong together


def test_trace_refuses_parts_that_do_not_belong_together(reference, tmp_path, capsys) -> None:
    exp = clone(reference, tmp_path / "exp")
    aasist, layout = exp.aasist, exp.layout
    clip = exp.audio("fake/en/griffin_lim/eval_000.wav")
    runs = iter(range(100))

    def traced() -> tuple[int, str]:
        out = tmp_path / f"trace_{next(runs)}.csv"
        code, err, _ = call(trace_main, ["--exp", layout.root, clip, "--out", out], capsys)
        if code != 0:
            assert not out.exists()  # a refusal writes nothing
            return code, one_error_line(err)
        return code, ""

    assert traced() == (0, "")
    ckpt = read_checkpoint(aasist.best)
    ckpt["model_state"] = {
        k: v + 0.01 if v.is_floating_point() else v for k, v in ckpt["model_state"].items()
    }
    other = save_checkpoint(tmp_path / "other.pt", ckpt)
    backup = tmp_path / "backup"
    shutil.copytree(aasist.root, backup)

    # a swapped best.pt: the outputs were not made with it
    shutil.copy(other, aasist.best)
    code, line = traced()
    assert code == 3 and "best.pt" in line and "--feature-extraction-step" in line
    shutil.copy(backup / "trained_models" / "best.pt", aasist.best)
    # outputs of another checkpoint: the OOD step was not fitted on them
    export_classifier(exp.cfg, checkpoint=other)
    code, line = traced()
    assert code == 3 and "outputs changed" in line and "ood_detector.py" in line
    shutil.rmtree(aasist.outputs)
    shutil.copytree(backup / "outputs", aasist.outputs)
    # outputs without an OOD step
    aasist.ood.rename(tmp_path / "ood_step")
    code, line = traced()
    assert code == 1 and "ood_detector.py" in line
    (tmp_path / "ood_step").rename(aasist.ood)
    # a checkpoint (with its outputs and OOD step) of another label map than the experiment's
    for split in ("train", "dev", "eval"):
        set_system(exp.protocol(split), "griffin_lim_v2")
    run_check(exp.cfg)
    code, line = traced()
    assert (
        code == 3 and "label map changed" in line and "train_refd.py --config <your config> --force" in line
    )
    # put back together, the same parts trace again
    for split in ("train", "dev", "eval"):
        set_system(exp.protocol(split), SYSTEM, old_name="griffin_lim_v2")
    run_check(exp.cfg)
    assert traced() == (0, "")
    assert not (layout.trace).exists()  # every run wrote to its --out


# ---------------------------------------------------------------------------------------------
# 3. The OOD step is atomic


@pytest.mark.slow
def test_a_killed_ood_step_leaves_the_previous_complete_one(reference, tmp_path, capsys) -> None:
    exp = clone(reference, tmp_path / "exp")
    ood = exp.aasist.ood
    before = snapshot(ood)
    scores = pd.read_csv(ood / "scores_dev.tsv", sep="\t")
    clips = [exp.audio(c) for c in scores["clip_id"]]
    traced = trace.Tracer.load(exp.cfg).trace(clips)
    # another default scorer: had any of the killed run's files reached ood_step/, it would show
    chosen = json.loads((ood / "thresholds.json").read_text())["default"]  # chosen on dev: CPU-dependent
    other = "knn" if chosen != "knn" else "mahalanobis"
    argv = [REPO / "scripts" / "ood_detector.py", "--config", exp.config_path, f"ood.default={other}"]
    proc = start_paused("ood-report", argv, tmp_path / "run")
    assert list(ood.parent.glob(".ood_step.tmp-*"))  # killed mid-way: its temporary folder exists
    kill_hard(proc)
    assert snapshot(ood) == before
    tracer = trace.Tracer.load(exp.cfg)
    thresholds = json.loads((ood / "thresholds.json").read_text())
    assert tracer.scorer_name == thresholds["default"] == chosen
    assert tracer.threshold == thresholds["scorers"][tracer.scorer_name]["threshold"]
    pd.testing.assert_frame_equal(tracer.trace(clips), traced)
    # the rerun gives the uninterrupted run's files and removes the killed run's folder
    assert call(ood_detector, ["--config", exp.config_path], capsys)[0] == 0
    same_ood_step(ood, reference.aasist.ood)
    assert not leftovers(exp.root)


def test_a_swap_interrupted_between_its_two_renames_is_undone(tmp_path) -> None:
    target = tmp_path / "ood_step"
    dead = subprocess.Popen(["true"])
    dead.wait()
    old, new = tmp_path / f".ood_step.old-{dead.pid}", tmp_path / f".ood_step.tmp-{dead.pid}"
    old.mkdir()
    (old / "thresholds.json").write_text("previous, complete")
    new.mkdir()
    (new / "thresholds.json").write_text("new, never swapped in")
    clean_leftovers(target)
    assert (target / "thresholds.json").read_text() == "previous, complete"
    assert not leftovers(tmp_path)


# ---------------------------------------------------------------------------------------------
# 4. Rerunning training without --resume


@pytest.mark.slow
def test_rerunning_training_without_resume_refuses_and_keeps_the_run(reference, tmp_path) -> None:
    exp = clone(reference, tmp_path / "exp")
    kept = snapshot(exp.aasist.root)
    proc = subprocess.run(
        [sys.executable, str(REPO / "train_refd.py"), "--config", str(exp.config_path)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=script_env(),
    )  # fmt: skip
    assert proc.returncode == 4, proc.stderr[-2000:]
    line = one_error_line(proc.stderr.strip().splitlines())
    assert "already holds a training run (epoch 2 done)" in line
    assert all(option in line for option in ("--resume", "--force", "another exp_dir"))
    assert snapshot(exp.aasist.root) == kept  # best.pt, last.pt, metrics.csv, outputs, results, OOD step


# ---------------------------------------------------------------------------------------------
# 5. Protocol paths that leave the data root


@pytest.mark.parametrize(
    "escape",
    [
        "../musan/noise/free-sound/noise-0000.wav",
        "./fake/en/../../../musan/noise/free-sound/noise-0000.wav",
        "absolute",
    ],
)
def test_protocol_paths_outside_the_data_root_fail_the_check_and_extraction(
    reference, tmp_path, capsys, escape
) -> None:
    exp = clone(reference, tmp_path / "exp")
    outside = exp.root / "musan" / "noise" / "free-sound" / "noise-0000.wav"
    assert outside.is_file()  # a real file: only the root check can stop it
    path = str(outside) if escape == "absolute" else escape
    with open(exp.protocol("train"), "a") as fh:
        fh.write(f"{path},{SYSTEM}\n")
    kept = snapshot(exp.layout.root)
    code, err, _ = call(preprocess, ["--config", exp.config_path, "--check"], capsys)
    assert code == 1 and "point outside data.root" in "\n".join(err) and path in "\n".join(err)
    assert call(preprocess, ["--config", exp.config_path], capsys)[0] == 1
    with pytest.raises(ProtocolError, match="outside data.root"):
        run_extraction(exp.cfg)
    assert snapshot(exp.layout.root) == kept


# ---------------------------------------------------------------------------------------------
# 6. Smaller ones


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", "config key 'train.epochs' must be an integer >= 1, got 0"),
        ("train.epochs=-1", "config key 'train.epochs' must be an integer >= 1, got -1"),
        ("train.epochs=2.5", "config key 'train.epochs' expects an integer, got 2.5"),
        ("train.batch_size=0", "config key 'train.batch_size' must be an integer >= 1, got 0"),
        ("train.lr=-1", "config key 'train.lr' must be a number > 0, got -1"),
    ],
)
def test_bad_training_settings_are_one_line_naming_the_key(reference, tmp_path, capsys, override, message):
    argv = ["--config", reference.config_path, f"exp_dir={tmp_path / 'exp'}", override]
    code, err, _ = call(train_refd_main, argv, capsys)
    assert code == 2 and one_error_line(err).startswith(f"error: {message}")
    assert not (tmp_path / "exp").exists()


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ntrain:\n  epochs: 3\n lr: 2\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train_refd.py"), "--config", str(broken)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=script_env(),
    )  # fmt: skip
    assert proc.returncode == 2
    line = one_error_line(proc.stderr.strip().splitlines())
    assert line.startswith(f"error: {broken}, line 4 column 2: YAML syntax error")


def test_a_header_only_train_split_fails_the_check(reference, tmp_path, capsys) -> None:
    exp = clone(reference, tmp_path / "exp", with_results=False)
    exp.protocol("train").write_text("path,model_name\n")
    code, err, _ = call(preprocess, ["--config", exp.config_path, "--check"], capsys)
    assert code == 1 and "the train split has no rows" in "\n".join(err)
    assert not exp.layout.root.exists()  # no label map, no config written


def test_trace_exits_non_zero_when_nothing_is_traced_and_never_replaces_a_results_file(
    reference, tmp_path, capsys, monkeypatch
) -> None:
    exp = clone(reference, tmp_path / "exp")
    exp_dir, results = exp.layout.root, exp.layout.trace
    text, short = tmp_path / "notes.wav", tmp_path / "short.wav"
    text.write_text("not a recording\n")
    sf.write(short, tone(0.05), 16000)
    code, _, _ = call(trace_main, ["--exp", exp_dir, text, short], capsys)
    assert code == 1
    (first,) = results.glob("trace_*.csv")
    rows = pd.read_csv(first, keep_default_na=False).set_index("path")
    assert (rows["status"] == "error").all()
    assert "text, not audio" in rows.loc[str(text), "error"]
    assert rows.loc[str(short), "error"].startswith("too_short:")  # skipped, not tiled into 1 s
    kept = snapshot(first)
    good = exp.audio("fake/en/griffin_lim/eval_000.wav")
    for _ in range(2):  # two runs within the same second get files of their own
        assert call(trace_main, ["--exp", exp_dir, good], capsys)[0] == 0
    assert len(list(results.glob("trace_*.csv"))) == 3 and snapshot(first) == kept
    # an existing --out is refused before any work and keeps its content
    mine = tmp_path / "mine.csv"
    mine.write_text("my notes\n")
    monkeypatch.setattr(trace.Tracer, "load", lambda *a, **k: pytest.fail("traced although --out exists"))
    code, err, _ = call(trace_main, ["--exp", exp_dir, good, "--out", mine], capsys)
    assert code == 4 and "exists" in one_error_line(err) and mine.read_text() == "my notes\n"


def test_unusable_clips_are_skipped_as_what_they_are(reference, tmp_path) -> None:
    exp = clone(reference, tmp_path / "exp", with_results=False)
    added = add_unusable_clips(exp)
    store = FeatureStore(run_extraction(exp.with_("data.max_bad_fraction=0.2")))
    skipped = pd.read_csv(store.directory / "skipped.csv", keep_default_na=False).set_index("clip_id")
    assert sorted(skipped.index) == sorted(added)
    for clip, name in added.items():
        reason, what = UNUSABLE[name]
        assert skipped.loc[clip, "reason"] == reason and what in skipped.loc[clip, "detail"], name
        assert "does not exist" not in skipped.loc[clip, "detail"]
    assert not set(added) & set(store.index["clip_id"])  # the short clip was not tiled into the store
    train = summary_table(store.meta).loc["train"]
    assert (train["clips"], train["stored_clips"], train["rows"], train["skipped"]) == (18, 15, 30, 3)


def test_too_many_unusable_clips_name_a_file_that_lists_them(reference, tmp_path, capsys) -> None:
    exp = clone(reference, tmp_path / "exp", with_results=False)
    added = add_unusable_clips(exp)
    # stopped while extracting
    with pytest.raises(ExtractionError, match="max_bad_fraction") as stopped:
        run_extraction(exp.cfg)
    listed = listed_file(str(stopped.value))
    assert listed.is_file() and set(pd.read_csv(listed)["clip_id"]) <= set(added)
    # stopped after every shard was computed (a stricter setting on a finished store): the same promise
    run_extraction(exp.with_("data.max_bad_fraction=0.2"))
    code, err, _ = call(preprocess, ["--config", exp.config_path], capsys)
    line = one_error_line(err)
    assert code == 1 and "too many unusable clips" in line
    listed = listed_file(line)
    assert listed.is_file() and sorted(pd.read_csv(listed)["clip_id"]) == sorted(added)


# ---------------------------------------------------------------------------------------------
# Killed mid-way, rerun: the uninterrupted run's results, no temporary files, no processes


@pytest.mark.slow
def test_killed_steps_rerun_to_the_uninterrupted_results(reference, tmp_path, capsys) -> None:
    exp = clone(reference, tmp_path / "exp", with_results=False)
    config, cfg, aasist = exp.config_path, exp.cfg, exp.aasist

    # extraction with two DataLoader workers, killed while writing its second shard
    argv = [REPO / "scripts" / "preprocess_dataset.py", "--config", config, "features.num_workers=2"]
    proc = start_paused("shard-tmp", argv, tmp_path / "extract")
    started = time.monotonic()
    code, err, _ = call(preprocess, ["--config", config], capsys)  # a second extraction of the same store
    line = one_error_line(err)
    assert code == 5 and f"is being written by pid {proc.pid}" in line and time.monotonic() - started < 30
    workers = kill_hard(proc)
    assert len(workers) >= 2 and not still_running(workers)  # no orphaned decoding workers
    (half_written,) = leftovers(exp.root)  # the shard array it was writing
    assert half_written.parent.name == "shards" and ".npy.tmp" in half_written.name
    with pytest.raises(MissingFeaturesError):
        FeatureStore.for_config(cfg)
    assert call(preprocess, ["--config", config], capsys)[0] == 0
    same_store(store_dir(cfg), store_dir(reference.cfg))
    assert not leftovers(exp.root)

    # training, killed while writing last.pt of epoch 2, then resumed
    proc = start_paused("last-epoch2", [REPO / "train_refd.py", "--config", config], tmp_path / "train")
    assert not still_running(kill_hard(proc))
    (half_written,) = leftovers(exp.root)
    assert half_written.name.startswith(".last.pt.tmp")
    assert read_checkpoint(aasist.last)["epoch"] == 1
    assert call(train_refd_main, ["--config", config, "--resume"], capsys)[0] == 0
    same_training(aasist, reference.aasist)
    outputs_id = [
        json.loads((s.outputs / "manifest.json").read_text())["id"] for s in (aasist, reference.aasist)
    ]
    assert outputs_id[0] == outputs_id[1]  # the resumed run exported the same outputs
    assert not leftovers(exp.root)

    # the OOD step, killed inside its temporary folder, then rerun
    proc = start_paused(
        "ood-report", [REPO / "scripts" / "ood_detector.py", "--config", config], tmp_path / "ood"
    )
    assert not still_running(kill_hard(proc))
    assert [p.name for p in leftovers(exp.root) if p.is_dir()] == [f".ood_step.tmp-{proc.pid}"]
    with pytest.raises(MissingInputError, match="ood_detector.py"):
        trace.Tracer.load(cfg)
    assert call(ood_detector, ["--config", config], capsys)[0] == 0
    same_ood_step(aasist.ood, reference.aasist.ood)
    assert not leftovers(exp.root)
