"""Feature extraction into the store: round trip, resume, bad clips, workers and torchrun ranks."""

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
from corpus_fixtures import add_bad_clips, make_tiny_corpus, save_tiny_wav2vec2

from sourcetracing.config import load_config
from sourcetracing.data.audio import crop_or_pad, load_audio
from sourcetracing.data.augment import Augmenter, crop_rng
from sourcetracing.features import extract
from sourcetracing.features.extract import ExtractionError, run_extraction
from sourcetracing.features.frontends import build_frontend
from sourcetracing.features.store import FeatureStore, store_dir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def reference_store(corpus) -> Path:
    """An uninterrupted single-process extraction of the tiny corpus."""
    cfg = load_config(corpus.config_path, [f"features.dir={corpus.root / 'ref_features'}"])
    return run_extraction(cfg)


def _with(corpus, *overrides: str):
    return load_config(corpus.config_path, list(overrides))


def _assert_same_store(a: Path, b: Path, exact: bool = True) -> None:
    assert a.name == b.name
    for name in ("index.csv", "skipped.csv", "meta.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    names = sorted(p.name for p in (a / "shards").iterdir())
    assert names == sorted(p.name for p in (b / "shards").iterdir())
    for name in names:
        if exact or not name.endswith(".npy"):
            assert (a / "shards" / name).read_bytes() == (b / "shards" / name).read_bytes(), name
        else:
            np.testing.assert_allclose(
                np.load(a / "shards" / name).astype(np.float32), np.load(b / "shards" / name).astype(np.float32),
                rtol=2e-3, atol=2e-3,
            )  # fmt: skip


def test_store_layout_and_round_trip(corpus, reference_store):
    cfg = corpus.cfg
    store = FeatureStore(reference_store)
    meta = store.meta
    assert meta["shape"] == [101, 60] and meta["dtype"] == "float16" and meta["frontend"]["name"] == "lfcc"
    assert meta["versions"] == {
        "train": ["original", "reverb", "noise", "music", "speech"],
        "dev": ["original"],
        "eval": ["original"],
    }
    assert meta["counts"]["train"]["rows"] == 9 * 5 and meta["rows"] == 9 * 5 + 8 + 10
    idx = store.index
    assert list(idx["split"].unique()) == ["train", "dev", "eval"]
    # clips in protocol order, all versions of a clip together in one shard
    protocol = pd.read_csv(corpus.protocols / "train.csv")
    train = idx[idx["split"] == "train"]
    assert train["path"].iloc[::5].tolist() == protocol["path"].tolist()
    assert train.groupby("clip_id")["shard"].nunique().max() == 1
    assert (store.select(split="dev")["version"] == "original").all()
    assert set(idx.loc[idx["split"] == "eval", "label"]) >= {-1, 0, 1, 2}

    # recompute some rows independently: decode -> crop (random for train) -> augment -> front end
    fe = build_frontend(cfg.frontend, "cpu")
    aug = Augmenter.from_config(cfg)
    picks = pd.concat(
        [
            train.iloc[[0, 1, 2, 3, 4, 17, 33]],
            idx[idx["split"] == "dev"].iloc[[0, 5]],
            idx[idx["split"] == "eval"].iloc[[9]],
        ]
    )
    stored = store.load(picks).astype(np.float32)
    for i, (_, row) in enumerate(picks.iterrows()):
        wave = load_audio(corpus.mlaad / row["path"], 16000)
        rng = crop_rng(cfg.seed, row["clip_id"]) if row["split"] == "train" else None
        clean = crop_or_pad(wave, 16000, rng)
        version = aug.make_versions(clean, [row["version"]], cfg.seed, row["clip_id"])[0]
        expected = fe(torch.from_numpy(version[None]))[0].numpy()
        np.testing.assert_allclose(stored[i], expected, rtol=2e-3, atol=2e-2)


def test_dev_eval_crops_are_deterministic_and_train_crops_seeded(corpus, reference_store):
    store = FeatureStore(reference_store)
    dev = store.select(split="dev").iloc[0]
    wave = load_audio(corpus.mlaad / dev["path"], 16000)
    fe = build_frontend(corpus.cfg.frontend, "cpu")
    start = fe(torch.from_numpy(crop_or_pad(wave, 16000)[None]))[0].numpy()
    np.testing.assert_allclose(
        store.load(store.select(split="dev").iloc[[0]])[0].astype(np.float32), start, rtol=2e-3, atol=2e-2
    )
    # another seed changes train features (crops and augmentation) but not dev/eval
    cfg = _with(corpus, "seed=7", f"features.dir={corpus.root / 'seed7'}")
    other = FeatureStore(run_extraction(cfg))
    a, b = store.select(split="train"), other.select(split="train")
    assert not np.array_equal(store.load(a), other.load(b))
    np.testing.assert_array_equal(
        store.load(store.select(split="eval")), other.load(other.select(split="eval"))
    )


def test_resume_after_interruption_gives_identical_store(corpus, reference_store, monkeypatch):
    cfg = _with(corpus, f"features.dir={corpus.root / 'resume'}")
    real_write = extract.write_shard
    calls = []

    def crash_after_two(*args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        calls.append(args[1])
        real_write(*args, **kwargs)

    monkeypatch.setattr(extract, "write_shard", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_extraction(cfg)
    monkeypatch.setattr(extract, "write_shard", real_write)
    out = store_dir(cfg)
    assert not (out / "meta.json").exists() and not (out / "index.csv").exists()
    assert len(list((out / "shards").glob("*.npy"))) == 2
    # a shard that lost a file is redone as well
    (out / "shards" / f"{calls[0]}.skipped.csv").unlink()
    run_extraction(cfg)
    _assert_same_store(out, reference_store)
    # a finished store reruns as a no-op
    before = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    run_extraction(cfg)
    assert before == {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    _assert_same_store(out, reference_store)


def test_dataloader_workers_and_batch_size_do_not_change_the_store(corpus, reference_store):
    cfg = _with(corpus, f"features.dir={corpus.root / 'workers'}", "features.num_workers=2")
    _assert_same_store(run_extraction(cfg), reference_store)


def test_a_store_being_read_cannot_be_rewritten(corpus, reference_store):
    from sourcetracing.errors import LockedError

    store = FeatureStore(reference_store)
    before = (reference_store / "index.csv").read_bytes()
    cfg = load_config(corpus.config_path, [f"features.dir={corpus.root / 'ref_features'}"])
    with store.read_lock(), store.read_lock():  # several readers at once (training, export)
        with pytest.raises(LockedError, match="in use"):
            run_extraction(cfg)
    assert (reference_store / "index.csv").read_bytes() == before
    assert run_extraction(cfg) == reference_store  # once the readers are gone


def test_other_frontend_settings_get_their_own_store(corpus):
    assert store_dir(_with(corpus, "frontend.lfcc.n_filters=40")) != store_dir(corpus.cfg)
    # settings of a front end that is not chosen do not enter the hash
    assert store_dir(_with(corpus, "frontend.hf_ssl.layer=3")) == store_dir(corpus.cfg)
    assert store_dir(_with(corpus, "frontend.logmel.n_mels=40")) == store_dir(corpus.cfg)
    assert store_dir(_with(corpus, "augment.versions=[original, noise]")) != store_dir(corpus.cfg)


@pytest.fixture()
def bad_corpus(tmp_path):
    corpus = make_tiny_corpus(tmp_path, clips_per_system=4, dev_clips=1, eval_clips=1)
    added = add_bad_clips(corpus, "train")
    return corpus, added


def test_bad_clips_are_skipped_with_reasons(bad_corpus):
    corpus, added = bad_corpus
    cfg = _with(corpus, "data.max_bad_fraction=0.5", "augment.versions=[original, noise]")
    out = run_extraction(cfg)
    skipped = pd.read_csv(out / "skipped.csv")
    assert dict(zip(skipped["clip_id"], skipped["reason"], strict=True)) == {
        k: {"nan": "nan_or_inf"}.get(v, v) for k, v in added.items()
    }
    assert set(skipped["split"]) == {"train"}
    store = FeatureStore(out)
    assert not set(added) & set(store.index["clip_id"])
    assert store.meta["counts"]["train"] == {
        "clips": 16, "stored_clips": 12, "rows": 24, "skipped": 4,
        "skipped_reasons": {"empty": 1, "nan_or_inf": 1, "silent": 1, "unreadable": 1},
    }  # fmt: skip
    assert np.isfinite(store.load(store.index).astype(np.float32)).all()


def test_too_many_bad_clips_stop_before_the_index(bad_corpus):
    corpus, _ = bad_corpus
    cfg = _with(corpus, "data.max_bad_fraction=0.1", "augment.versions=[original]")
    with pytest.raises(ExtractionError, match="max_bad_fraction"):
        run_extraction(cfg)
    out = store_dir(cfg)
    assert not (out / "index.csv").exists() and not (out / "meta.json").exists()


def test_hf_ssl_store_records_layer(tmp_path):
    model = save_tiny_wav2vec2(tmp_path / "w2v")
    corpus = make_tiny_corpus(
        tmp_path / "c", clips_per_system=1, dev_clips=1, eval_clips=1,
        overrides={"frontend": {"name": "hf_ssl", "hf_ssl": {"model": str(model), "layer": 2}}, "augment": {"versions": ["original", "reverb"]}},
    )  # fmt: skip
    store = FeatureStore(run_extraction(corpus.cfg))
    assert (
        store.meta["frontend"]["layer"] == 2
        and store.meta["shape"] == [50, 32]
        and store.meta["frontend"]["model"] == str(model)
    )
    assert len(store.index) == 3 * 2 + 4 + 5


@pytest.mark.slow
def test_two_ranks_equal_one_process(corpus, reference_store, tmp_path):
    features = tmp_path / "ddp_features"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(REPO / "scripts" / "preprocess_dataset.py"), "--config", str(corpus.config_path),
        f"features.dir={features}", f"exp_dir={tmp_path / 'exp'}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("label assignment written") == 1  # only rank 0 prints the data check
    out = features / reference_store.name
    meta = json.loads((out / "meta.json").read_text())
    assert meta["shards"] == json.loads((reference_store / "meta.json").read_text())["shards"]
    # byte-equal here; compared at float16 precision since torchrun ranks run with another thread count
    _assert_same_store(out, reference_store, exact=False)
    shutil.rmtree(features)


@pytest.mark.slow
def test_script_reports_too_many_bad_clips(bad_corpus, tmp_path):
    corpus, _ = bad_corpus
    cmd = [
        sys.executable, str(REPO / "scripts" / "preprocess_dataset.py"), "--config", str(corpus.config_path),
        "data.max_bad_fraction=0.1", "augment.versions=[original]",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stderr.startswith("error: split 'train'") and "max_bad_fraction" in proc.stderr
    assert "Traceback" not in proc.stderr
    listed = Path(proc.stderr.split("listed in ")[1].split(". ")[0])  # the message names a file that exists
    assert listed.is_file() and len(pd.read_csv(listed)) == 2
    assert not list((corpus.root / "exp" / "features").glob("*/index.csv"))


def test_out_of_memory_names_a_smaller_batch_size(corpus, monkeypatch, tmp_path):
    def exhausted(self, waves):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(build_frontend({"name": "lfcc"})), "__call__", exhausted)
    cfg = _with(corpus, f"features.dir={tmp_path / 'oom'}", "features.batch_size=12")
    with pytest.raises(ExtractionError, match=r"features.batch_size=12 .*try features.batch_size=6"):
        run_extraction(cfg)


def test_extraction_reports_its_throughput(corpus, tmp_path, capsys):
    stats: list = []
    directory = run_extraction(_with(corpus, f"features.dir={tmp_path / 'timed'}"), stats=stats)
    (done,) = stats
    store = FeatureStore(directory)
    assert done.rows == len(store.index) and done.clips == store.index["clip_id"].nunique()
    assert done.seconds > 0 and done.rows_per_s == pytest.approx(done.rows / done.seconds)
    assert f"{done.rows} feature row(s)" in capsys.readouterr().out
    again: list = []
    run_extraction(_with(corpus, f"features.dir={tmp_path / 'timed'}"), stats=again)
    assert again == []  # every shard up to date: nothing extracted, nothing timed


def test_test_time_windows_are_stored_and_exported_as_their_mean(corpus, reference_store, tmp_path):
    """features.test_windows=3: dev/eval hold three crops spread over each clip (the first the
    one-crop store's crop), train is unchanged, and both exporters write one row per clip, the mean
    of its windows."""
    from toy_store import SMALL_AASIST, SMALL_GE2E

    from sourcetracing.features.windows import window_crops, window_versions
    from sourcetracing.layout import ExperimentLayout
    from sourcetracing.systems.outputs import SystemOutputs
    from sourcetracing.training.checkpoint import load_model
    from sourcetracing.training.classifier import train_classifier
    from sourcetracing.training.data import labelled, predict
    from sourcetracing.training.ge2e import embed_rows, train_ge2e
    from sourcetracing.training.ge2e_data import build_source

    overrides = [
        f"features.dir={tmp_path / 'features'}",
        "features.test_windows=3",
        f"exp_dir={tmp_path / 'exp'}",
    ]
    cfg = _with(corpus, *overrides)
    windowed = FeatureStore(run_extraction(cfg))
    one = FeatureStore(reference_store)
    assert windowed.directory.name != one.directory.name  # its own store; the default keeps its folder
    assert windowed.meta["versions"]["dev"] == window_versions(3) == windowed.meta["versions"]["eval"]
    assert windowed.meta["versions"]["train"] == one.meta["versions"]["train"]
    np.testing.assert_array_equal(
        windowed.load(windowed.select(split="train")), one.load(one.select(split="train"))
    )
    np.testing.assert_array_equal(
        windowed.load(windowed.select(split="eval", versions=["original"])),
        one.load(one.select(split="eval")),
    )
    # a dev clip longer than the window: its three windows are the front end of window_crops
    dev = windowed.select(split="dev")
    fe = build_frontend(cfg.frontend, "cpu")
    for _, rows in dev.groupby("clip_id", sort=False):
        wave = load_audio(corpus.mlaad / rows["path"].iloc[0], 16000)
        if len(wave) > 1.3 * 16000:
            break
    else:
        pytest.fail("the tiny corpus has no dev clip longer than 1.3 windows")
    crops = window_crops(wave, 16000, 3)
    assert not np.array_equal(crops[0], crops[2])
    expected = fe(torch.from_numpy(np.stack(crops))).numpy()
    np.testing.assert_allclose(windowed.load(rows).astype(np.float32), expected, rtol=2e-3, atol=2e-2)

    model_args = [f"model.aasist.{k}={json.dumps(v)}" for k, v in SMALL_AASIST.items()]
    ge2e_args = [f"ge2e.{k}={json.dumps(v)}" for k, v in SMALL_GE2E.items()]
    cfg = _with(corpus, *overrides, *model_args, *ge2e_args, "train.epochs=1", "train.batch_size=8")
    train_classifier(cfg)
    train_ge2e(cfg)
    layout = ExperimentLayout.of(cfg)
    outputs = SystemOutputs.read(layout.system("aasist").outputs)
    dev_out = outputs.split("dev")
    n_dev = windowed.select(split="dev")["clip_id"].nunique()
    assert len(dev_out.rows) == n_dev and dev_out.rows["clip_id"].is_unique
    assert "version" not in dev_out.rows
    model, _ = load_model(layout.system("aasist").best, "cpu")
    logits, emb = predict(model, windowed, dev, torch.device("cpu"))
    position = {c: i for i, c in enumerate(dev_out.rows["clip_id"])}
    codes = dev["clip_id"].map(position).to_numpy()

    def clip_means(a: np.ndarray) -> np.ndarray:
        return np.stack([a[codes == i].mean(axis=0) for i in range(n_dev)])

    np.testing.assert_allclose(dev_out.embeddings, clip_means(emb), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dev_out.logits, clip_means(logits), rtol=1e-4, atol=1e-5)
    # GE2E: the same rows, each the mean of its windows' embeddings
    source = build_source(cfg)
    encoder, _ = load_model(layout.system("ge2e").best, "cpu")
    ge2e_emb, ok = embed_rows(encoder, source, labelled(dev, source.label_map), torch.device("cpu"), 8)
    assert ok.all()
    ge2e_dev = SystemOutputs.read(layout.system("ge2e").outputs).split("dev")
    assert ge2e_dev.rows["clip_id"].tolist() == dev_out.rows["clip_id"].tolist()
    np.testing.assert_allclose(ge2e_dev.embeddings, clip_means(ge2e_emb), rtol=1e-4, atol=1e-5)
    # tracing a file averages the same windows: the pipeline's dev scores again
    from sourcetracing import trace
    from sourcetracing.judge import judge_system

    for system in ("aasist", "ge2e"):
        judge_system(cfg, system)
        scores = pd.read_csv(layout.system(system).ood / "scores_dev.tsv", sep="\t")
        tracer = trace.Tracer.load(cfg, system)
        assert tracer.windows == 3
        df = tracer.trace([corpus.mlaad / ("./" + c) for c in scores["clip_id"]])
        np.testing.assert_allclose(df["ood_score"], scores[tracer.scorer_name], rtol=1e-4, atol=1e-4)


def test_window_starts_cover_the_clip_and_the_mean_keeps_clip_order():
    from sourcetracing.features.windows import average_over_windows, window_crops, window_starts

    starts = window_starts(num_total=50000, num_samples=16000, windows=4)
    assert starts[0] == 0 and starts[-1] == 50000 - 16000 and starts == sorted(starts)
    wave = np.arange(50000, dtype=np.float32)
    crops = window_crops(wave, 16000, 4)
    assert [c[0] for c in crops] == starts and crops[-1][-1] == 49999
    rows = pd.DataFrame(
        {
            "clip_id": ["b", "b", "a", "a"],
            "version": ["original", "window1", "window1", "original"],
            "x": range(4),
        }
    )
    kept, (mean,) = average_over_windows(rows, np.array([[0.0], [2.0], [10.0], [20.0]]))
    assert kept["clip_id"].tolist() == ["b", "a"] and (kept["version"] == "original").all()
    assert kept["x"].tolist() == [0, 3]
    np.testing.assert_allclose(mean[:, 0], [1.0, 15.0])
    one = rows[rows["version"] == "original"]
    passed, (same,) = average_over_windows(one, np.ones((2, 1)))
    assert len(passed) == 2 and same.shape == (2, 1)
