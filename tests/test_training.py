"""Training on a tiny synthetic feature store: learning, checkpoints, resume, determinism, DDP."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from sourcetracing.config import load_config
from sourcetracing.data.protocols import LabelMap, ProtocolError
from sourcetracing.training import refd
from sourcetracing.training.checkpoint import load_model
from toy_store import make_toy_store

ROOT = Path(__file__).resolve().parents[1]
MODEL = [
    "model.in_proj_dim=12",
    "model.first_pool=[2,2]",
    "model.filts=[[1,4],[4,8]]",
    "model.gat_dims=[8,8]",
    "model.embedding_dim=16",
    "model.dropout=0.2",
]


def toy_config(tmp: Path, name: str, *extra: str):
    """A tiny experiment in ``tmp/<name>`` that shares the feature store in ``tmp/features``."""
    return load_config(
        None,
        [
            f"name={name}",
            f"exp_dir={tmp / name}",
            f"features.dir={tmp / 'features'}",
            "frontend.name=lfcc",
            "device=cpu",
            "train.epochs=2",
            "train.batch_size=16",
            "train.lr=0.01",
            "train.lr_step=2",
            *MODEL,
            *extra,
        ],
    )


def write_yaml(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not stall on a busy shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy(tmp_path_factory, one_thread):
    """The toy store, plus one straight 2-epoch run ``a`` every test may read (not modify)."""
    tmp = tmp_path_factory.mktemp("train")
    cfg = toy_config(tmp, "a")
    make_toy_store(cfg, train_per_class=16)
    refd.train(cfg)
    return tmp, cfg


def test_training_learns_and_writes_files(toy) -> None:
    tmp, _ = toy
    cfg = toy_config(tmp, "learn", "train.epochs=4", "train.select_by=dev_macro_f1")
    best = refd.train(cfg)
    out = Path(cfg.exp_dir) / "trained_models"
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png"):
        assert (out / name).is_file(), name
    assert (Path(cfg.exp_dir) / "label_map.csv").is_file() and (Path(cfg.exp_dir) / "config.yaml").is_file()
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == refd.METRIC_COLUMNS
    assert metrics["epoch"].tolist() == [1, 2, 3, 4]
    assert metrics["lr"].tolist() == pytest.approx([0.01, 0.01, 0.005, 0.005])  # StepLR every 2 epochs
    assert metrics["dev_acc"].max() >= 0.75  # 4 separable classes, chance 0.25
    assert metrics["train_acc"].iloc[-1] > metrics["train_acc"].iloc[0]
    assert best["key"] == "dev_macro_f1" and best["value"] == pytest.approx(metrics["dev_macro_f1"].max())


def test_checkpoint_plain_data_with_label_map(toy) -> None:
    tmp, cfg = toy
    path = Path(cfg.exp_dir) / "trained_models" / "best.pt"
    ckpt = torch.load(path, weights_only=True)
    for key in ("model_state", "model_config", "input_dim", "label_map", "feature_store", "epoch", "metrics"):
        assert key in ckpt
    assert ckpt["label_map"]["known"] == ["sys_k0", "sys_k1", "sys_k2", "sys_k3"]
    assert ckpt["feature_store"]["shape"] == [20, 12]
    last = torch.load(path.with_name("last.pt"), weights_only=True)
    assert {"optimizer", "scheduler", "rng", "best"} <= set(last)
    model, _ = load_model(path, "cpu", expected_label_map=LabelMap.from_dict(ckpt["label_map"]))
    assert not model.training
    logits, emb = model(torch.randn(2, 20, 12))
    assert logits.shape == (2, 4) and emb.shape == (2, 16)


def test_label_map_mismatch_is_clear(toy) -> None:
    _, cfg = toy
    other = LabelMap(known=["sys_k0", "sys_k1", "sys_zz"])
    with pytest.raises(ProtocolError, match="label map mismatch"):
        load_model(Path(cfg.exp_dir) / "trained_models" / "best.pt", "cpu", expected_label_map=other)


def test_missing_features_names_the_step(tmp_path, capsys) -> None:
    cfg = toy_config(tmp_path, "nofeat")
    code = refd.main(["--config", str(write_yaml(cfg, tmp_path / "c.yaml"))])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error:") and "preprocess_dataset.py" in err and len(err.strip().splitlines()) == 1


def test_resume_equals_uninterrupted_and_seed_repeats(toy) -> None:
    tmp, cfg_a = toy
    cfg_b = toy_config(tmp, "b", "train.epochs=1")
    refd.train(cfg_b)
    cfg_b2 = toy_config(tmp, "b", "train.epochs=2")
    refd.train(cfg_b2, resume=True)
    a = torch.load(Path(cfg_a.exp_dir) / "trained_models" / "last.pt", weights_only=True)
    b = torch.load(Path(cfg_b.exp_dir) / "trained_models" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    assert a["model_state"].keys() == b["model_state"].keys()
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k]), k
    # same seed, same metrics (apart from the wall-clock seconds); the resumed run's csv too
    ma = pd.read_csv(Path(cfg_a.exp_dir) / "trained_models" / "metrics.csv").drop(columns="seconds")
    mb = pd.read_csv(Path(cfg_b.exp_dir) / "trained_models" / "metrics.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(ma, mb)


def test_same_seed_same_metrics(toy) -> None:
    tmp, cfg_a = toy
    cfg_c = toy_config(tmp, "c")
    refd.train(cfg_c)
    ma = pd.read_csv(Path(cfg_a.exp_dir) / "trained_models" / "metrics.csv").drop(columns="seconds")
    mc = pd.read_csv(Path(cfg_c.exp_dir) / "trained_models" / "metrics.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(ma, mc)


def test_bce_loss_and_no_mixup_run(toy) -> None:
    tmp, _ = toy
    for name, extra in (("bce", "train.loss=bce"), ("nomix", "train.mixup_alpha=0")):
        cfg = toy_config(tmp, name, "train.epochs=1", extra, "train.versions=[original]")
        refd.train(cfg)
        row = pd.read_csv(Path(cfg.exp_dir) / "trained_models" / "metrics.csv").iloc[0]
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["dev_loss"])


def test_mixup_step_on_cpu() -> None:
    torch.manual_seed(0)
    calls = []

    def model(x):
        calls.append(x.shape[0])
        return x.mean(dim=1)[:, :3], x.mean(dim=1)

    x, y = torch.randn(6, 5, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    ce = refd.loss_fn("ce", 3)
    loss, logits = refd.mixup_step(model, x, y, 0.5, np.random.default_rng(0), ce)
    assert calls == [12] and logits.shape == (6, 3) and loss.device.type == "cpu"
    loss0, _ = refd.mixup_step(model, x, y, 0.0, np.random.default_rng(0), ce)
    assert loss0.item() == pytest.approx(ce(x.mean(dim=1)[:, :3], y).item())
    bce = refd.loss_fn("bce", 3)
    assert torch.isfinite(refd.mixup_step(model, x, y, 0.5, np.random.default_rng(0), bce)[0])


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(toy) -> None:
    tmp, _ = toy
    cfg = toy_config(tmp, "ddp", "train.epochs=1")
    config = write_yaml(cfg, tmp / "ddp.yaml")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "train_refd.py"),
        "--config",
        str(config),
    ]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(cfg.exp_dir) / "trained_models"
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 1 and math.isfinite(metrics["dev_loss"].iloc[0])
    assert (out / "best.pt").is_file()
    assert proc.stdout.count("epoch   1/1") == 1  # only rank 0 logs
