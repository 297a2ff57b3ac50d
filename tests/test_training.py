"""The one training loop, for both tasks (the classifier and GE2E), on a tiny synthetic store:
learning, one checkpoint layout, exact resume, determinism, no silent overwrite, mixed precision, DDP."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from toy_store import write_toy_experiment

from sourcetracing.config import load_config
from sourcetracing.data.protocols import LabelMap, ProtocolError
from sourcetracing.errors import WouldOverwriteError
from sourcetracing.layout import ExperimentLayout
from sourcetracing.training import classifier
from sourcetracing.training.checkpoint import load_model, read_checkpoint
from sourcetracing.training.ge2e import train_ge2e

ROOT = Path(__file__).resolve().parents[1]
TASKS = {
    "classifier": (lambda cfg, **kw: classifier.train_classifier(cfg, **kw), "aasist", "train"),
    "ge2e": (lambda cfg, **kw: train_ge2e(cfg, **kw), "ge2e", "ge2e"),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not stall on a busy shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy(tmp_path_factory, one_thread):
    """A toy experiment config; tests write their own exp_dir beside the shared store."""
    root = tmp_path_factory.mktemp("train")
    path = write_toy_experiment(root, {"features": {"dir": str(root / "features")}})
    return root, path


def config(toy, name: str, *extra: str):
    root, path = toy
    cfg = load_config(path, [f"exp_dir={root / name}", *extra])
    LabelMap.read(root / "exp").write(cfg.exp_dir)  # each experiment folder gets the label map
    return cfg


def train(task: str, cfg, **kw):
    fn, system, _ = TASKS[task]
    fn(cfg, **kw)
    return ExperimentLayout.of(cfg).system(system)


@pytest.mark.parametrize("task", list(TASKS))
def test_one_checkpoint_layout_metrics_and_exported_outputs(toy, task) -> None:
    cfg = config(toy, f"layout-{task}")
    system = train(task, cfg)
    for path in (system.best, system.last, system.metrics, system.curves):
        assert path.is_file(), path
    best, last = read_checkpoint(system.best), read_checkpoint(system.last)
    common = {
        "format",
        "task",
        "model_config",
        "model_state",
        "extra_state",
        "label_map",
        "input_dim",
        "provenance",
        "epoch",
        "metrics",
        "config",
        "best",
    }
    assert common <= set(best) and common <= set(last)
    assert {"optimizer", "scheduler", "scaler", "rng", "history"} <= set(last)
    assert best["task"] == task and best["label_map"]["known"] == ["sys_k0", "sys_k1", "sys_k2", "sys_k3"]
    assert best["provenance"]["store_id"]
    metrics = pd.read_csv(system.metrics)
    assert metrics["epoch"].tolist() == [1, 2] and metrics["train_loss"].notna().all()
    # the training step ends by exporting the outputs every later step reads
    assert (system.outputs / "meta.json").is_file() and (system.outputs / "manifest.json").is_file()
    model, _ = load_model(system.best, "cpu", expected_label_map=LabelMap.from_dict(best["label_map"]))
    assert not model.training


def test_classifier_learns_with_the_step_schedule(toy) -> None:
    cfg = config(toy, "learn", "train.epochs=4", "train.select_by=dev_macro_f1")
    best = classifier.train_classifier(cfg)
    metrics = pd.read_csv(ExperimentLayout.of(cfg).system("aasist").metrics)
    assert metrics["lr"].tolist() == pytest.approx([0.01, 0.01, 0.005, 0.005])  # StepLR every 2 epochs
    assert metrics["dev_acc"].max() >= 0.75  # 4 separable classes, chance 0.25
    assert best["key"] == "dev_macro_f1" and best["value"] == pytest.approx(metrics["dev_macro_f1"].max())


def test_ge2e_trains_w_and_reports_b(toy) -> None:
    cfg = config(toy, "ge2e-wb", "ge2e.loss=contrast")
    system = train("ge2e", cfg)
    last = read_checkpoint(system.last)
    assert abs(last["extra_state"]["w"].item() - 10.0) > 1e-4  # w is trained
    assert abs(last["extra_state"]["b"].item() + 5.0) > 1e-4  # b too, in the contrast variant
    assert {"w", "b", "dev_macro_f1"} <= set(pd.read_csv(system.metrics).columns)


@pytest.mark.parametrize("task", list(TASKS))
def test_resume_equals_uninterrupted_and_seed_repeats(toy, task) -> None:
    _, _, section = TASKS[task]
    straight = train(task, config(toy, f"straight-{task}"))
    half = config(toy, f"resumed-{task}", f"{section}.epochs=1")
    train(task, half)
    resumed = train(task, config(toy, f"resumed-{task}"), resume=True)
    again = train(task, config(toy, f"again-{task}"))
    a, b, c = (read_checkpoint(s.last) for s in (straight, resumed, again))
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model_state"]:
        assert torch.equal(a["model_state"][k], b["model_state"][k]), k
        assert torch.equal(a["model_state"][k], c["model_state"][k]), k
    frames = [pd.read_csv(s.metrics).drop(columns="seconds") for s in (straight, resumed, again)]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    pd.testing.assert_frame_equal(frames[0], frames[2])


@pytest.mark.parametrize("task", list(TASKS))
def test_rerun_without_resume_refuses_and_force_starts_over(toy, task) -> None:
    cfg = config(toy, f"rerun-{task}")
    system = train(task, cfg)
    before = system.best.read_bytes()
    rows = len(pd.read_csv(system.metrics))
    with pytest.raises(WouldOverwriteError, match="--resume.*--force"):
        train(task, cfg)
    assert system.best.read_bytes() == before and len(pd.read_csv(system.metrics)) == rows  # nothing lost
    train(task, cfg, force=True)
    assert read_checkpoint(system.last)["epoch"] == 2


@pytest.mark.parametrize("task", list(TASKS))
def test_bf16_training_runs_and_stays_close_to_float32(toy, task) -> None:
    _, _, section = TASKS[task]
    f32 = train(task, config(toy, f"f32-{task}"))
    bf16 = train(task, config(toy, f"bf16-{task}", f"{section}.precision=bf16"))
    a, b = (pd.read_csv(s.metrics)["train_loss"].to_numpy() for s in (f32, bf16))
    assert np.isfinite(b).all()
    assert np.allclose(a, b, rtol=0.15, atol=0.05), (a, b)


def test_mixup_loss_is_the_original_formula() -> None:
    torch.manual_seed(0)
    calls = []

    def model(x):
        calls.append(x.shape[0])
        return x.mean(dim=1)[:, :3], x.mean(dim=1)

    x, y = torch.randn(6, 5, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    ce = classifier.criterion("ce", 3)
    loss, logits = classifier.mixup_step(model, x, y, 0.5, np.random.default_rng(0), ce)
    # recompute: lam and perm are the first two draws of the same generator
    rng = np.random.default_rng(0)
    lam = float(rng.beta(0.5, 0.5))
    perm = torch.from_numpy(rng.permutation(6))
    out = model(torch.cat([x, lam * x + (1 - lam) * x[perm]]))[0]
    expected = lam * torch.nn.functional.cross_entropy(out, torch.cat([y, y])) + (
        1 - lam
    ) * torch.nn.functional.cross_entropy(out, torch.cat([y, y[perm]]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert calls[0] == 12 and logits.shape == (6, 3) and loss.device.type == "cpu"
    loss0, _ = classifier.mixup_step(model, x, y, 0.0, np.random.default_rng(0), ce)
    assert loss0.item() == pytest.approx(ce(x.mean(dim=1)[:, :3], y).item())
    bce = classifier.criterion("bce", 3)
    assert torch.isfinite(classifier.mixup_step(model, x, y, 0.5, np.random.default_rng(0), bce)[0])


def test_label_map_mismatch_is_clear(toy) -> None:
    cfg = config(toy, "mismatch")
    system = train("classifier", cfg)
    other = LabelMap(known=["sys_k0", "sys_k1", "sys_zz"])
    with pytest.raises(ProtocolError, match="label map mismatch"):
        load_model(system.best, "cpu", expected_label_map=other)


def script_main(path: str):
    """The ``main`` of a step script (what ``python <path>`` runs), loaded in this process."""
    spec = importlib.util.spec_from_file_location(f"step_{Path(path).stem}", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_missing_features_names_the_step(tmp_path, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"exp_dir: {tmp_path / 'e'}\nfrontend: {{name: lfcc}}\ndevice: cpu\n")
    code = script_main("train_refd.py")(["--config", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error:") and "preprocess_dataset.py" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize(("task", "script"), [("classifier", "train_refd.py"), ("ge2e", "train_ge2e.py")])
def test_ddp_two_processes_on_cpu(toy, task, script) -> None:
    root, path = toy
    _, system, section = TASKS[task]
    exp = root / f"ddp-{task}"
    LabelMap.read(root / "exp").write(exp)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / script),
        "--config", str(path), f"exp_dir={exp}", f"{section}.epochs=1",
    ]  # fmt: skip
    if task == "ge2e":
        cmd.append("--no-eval")
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = pd.read_csv(exp / system / "trained_models" / "metrics.csv")
    assert len(metrics) == 1 and math.isfinite(metrics["train_loss"].iloc[0])
    assert read_checkpoint(exp / system / "trained_models" / "best.pt")["epoch"] == 1
    assert proc.stdout.count("epoch   1/1") == 1  # only rank 0 logs
