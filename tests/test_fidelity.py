"""Where the toolkit says "as the original", this pins the original's behaviour: the recipes in
configs/refd_mlaad.yaml and configs/config_ge2e.yaml, the model they build, the learning-rate
schedule, and the original README's commands (run on tiny data)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sourcetracing.config import component_settings, load_config
from sourcetracing.models.aasist import AASIST_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL_AASIST_PARAMETERS = 418_016  # counted from the original's W2VAASIST(768, 24)


def test_refd_mlaad_config_is_the_original_recipe() -> None:
    cfg = load_config(ROOT / "configs" / "refd_mlaad.yaml")
    assert cfg.seed == 688  # train_refd.py's seed
    assert (cfg.data.sample_rate, cfg.data.max_len_s) == (16000, 4.0)
    assert component_settings(cfg.frontend) == {
        "name": "hf_ssl", "model": "facebook/wav2vec2-base", "layer": 5, "precision": "float32",
        **{k: v for k, v in cfg.frontend.hf_ssl.items() if k not in ("model", "layer", "precision")},
    }  # fmt: skip
    assert cfg.augment.versions == ["original", "reverb", "noise", "music", "speech"]
    assert cfg.augment.snr_noise == [0.0, 15.0] and cfg.augment.snr_music == [5.0, 15.0]
    assert cfg.augment.snr_speech == [13.0, 20.0] and cfg.augment.babble_speakers == [3, 8]
    t = cfg.train
    assert (t.epochs, t.batch_size, t.lr, t.betas, t.eps, t.weight_decay) == (
        30,
        128,
        5e-4,
        [0.9, 0.999],
        1e-8,
        5e-4,
    )
    assert (t.lr_step, t.lr_gamma, t.mixup_alpha, t.loss, t.select_by) == (10, 0.5, 0.5, "ce", "dev_loss")
    assert (t.grad_clip, t.precision) == (0.0, "float32")
    assert component_settings(cfg.model) == {"name": "aasist", **AASIST_DEFAULTS}
    assert cfg.ood.default == "nsd"
    assert cfg.outputs.train_versions == cfg.augment.versions  # NSD's bank: every train feature file


def test_the_original_recipe_builds_the_original_model() -> None:
    from sourcetracing.training.checkpoint import build_model

    cfg = load_config(ROOT / "configs" / "refd_mlaad.yaml")
    model = build_model("classifier", component_settings(cfg.model), input_dim=768, num_classes=24)
    assert sum(p.numel() for p in model.parameters()) == ORIGINAL_AASIST_PARAMETERS
    assert model.node_counts(199) == {"spectral": (42, 21, 10), "temporal": (66, 33, 16)}
    assert model(torch.randn(2, 199, 768))[0].shape == (2, 24)


def test_config_ge2e_is_the_original_ge2e_recipe() -> None:
    cfg = load_config(ROOT / "configs" / "config_ge2e.yaml")
    g = cfg.ge2e
    assert cfg.seed == 42
    assert component_settings(g.encoder) == {
        "name": "hf_ssl", "model": "facebook/wav2vec2-base-960h", "layer": -1, "hidden_dims": [256, 256],
        "freeze_feature_encoder": False,
    }  # fmt: skip
    assert (g.loss, g.init_w, g.init_b, g.n_systems, g.n_clips) == ("softmax", 10.0, -5.0, 10, 4)
    assert g.cos_floor == 1e-6  # the original's loss clamps the cosines at 1e-6
    assert (g.epochs, g.steps_per_epoch, g.lr, g.weight_decay, g.grad_clip) == (4, 0, 1e-4, 0.0, 0.0)
    assert (g.select_by, g.precision) == ("train_loss", "float32")
    assert (cfg.data.sample_rate, cfg.data.max_len_s) == (16000, 4.0)


def test_step_schedule_is_the_originals_halving_every_ten_epochs() -> None:
    """The original sets lr = lr0 * 0.5 ** (epoch // 10) at the start of each epoch."""
    cfg = load_config(ROOT / "configs" / "refd_mlaad.yaml")
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([param], lr=cfg.train.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.train.lr_step, gamma=cfg.train.lr_gamma)
    for epoch in range(cfg.train.epochs):
        assert opt.param_groups[0]["lr"] == pytest.approx(5e-4 * 0.5 ** (epoch // 10))
        opt.step()
        sched.step()


def _seed_layout(tmp_path: Path) -> Path:
    """A working folder laid out as the original README expects: data/ and configs/ beside the commands,
    the Hugging Face models as local folders under their hub names (tiny, random, offline)."""
    from corpus_fixtures import make_tiny_corpus, save_tiny_wav2vec2

    work = tmp_path / "work"
    corpus = make_tiny_corpus(tmp_path / "tiny", clips_per_system=4, dev_clips=2, eval_clips=2)
    data = work / "data"
    data.mkdir(parents=True)
    shutil.move(corpus.mlaad, data / "MLAAD_v5")
    shutil.move(corpus.protocols, data / "MLAAD_v5_protocols")
    shutil.move(corpus.musan, data / "musan")
    shutil.move(corpus.rirs, data / "RIRS_NOISES")
    shutil.copytree(ROOT / "configs", work / "configs")
    save_tiny_wav2vec2(work / "facebook" / "wav2vec2-base", num_layers=6)
    save_tiny_wav2vec2(work / "facebook" / "wav2vec2-base-960h", num_layers=2)
    return work


@pytest.mark.slow
def test_the_original_readme_commands_run_as_written(tmp_path) -> None:
    work = _seed_layout(tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")

    def run(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=1200
        )
        assert proc.returncode == 0, f"{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    run(str(ROOT / "scripts" / "preprocess_dataset.py"))
    # the default config (configs/refd_mlaad.yaml) as written, one epoch instead of 30 to keep the test short
    out = run(str(ROOT / "train_refd.py"), "train.epochs=1")
    assert "epoch   1/1" in out and "aasist outputs written" in out
    run(str(ROOT / "scripts" / "get_classification_metrics.py"))
    run(str(ROOT / "scripts" / "ood_detector.py"), "--feature_extraction_step")
    exp = work / "exp" / "refd_mlaad"
    assert (exp / "label_assignment.txt").is_file()
    assert (exp / "aasist" / "results" / "eval_in_domain_results.txt").is_file()
    assert "OOD detector: nsd" in (exp / "aasist" / "ood_step" / "OOD_eval_results.txt").read_text()
    out = run(str(ROOT / "train_ge2e.py"), "--config", "configs/config_ge2e.yaml")
    ge2e = work / "exp" / "ge2e_mlaad" / "ge2e"
    assert (ge2e / "trained_models" / "best.pt").is_file() and (
        ge2e / "ood_step" / "ood_summary.csv"
    ).is_file()
