"""Stage 2: train the closed-set classifier (AASIST by default) on the feature store, then export its outputs.

    python train_refd.py [--config configs/refd_mlaad.yaml] [key.sub=value ...] [--resume | --force]
    torchrun --nproc_per_node=N train_refd.py --config ...        # DDP (gloo on CPU, NCCL on GPUs)

Recipe (``train`` config section; the original's defaults): Adam (lr 5e-4, betas 0.9/0.999, weight
decay 5e-4), lr x0.5 every 10 epochs, 30 epochs, batch 128, mixup (alpha 0.5; every batch is the
originals plus their mixed copies), cross-entropy (or one-vs-rest BCE). The dev split's known
systems (clean versions) select the best epoch by ``train.select_by``.

Writes ``<exp_dir>/<model.name>/trained_models/`` (``best.pt``, ``last.pt``, ``metrics.csv``,
``curves.png``) and then the system's outputs (``<model.name>/outputs/``, see
:mod:`sourcetracing.systems.outputs`) that every later step reads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from sourcetracing.components import MODELS
from sourcetracing.config import Config, component_settings, resolve_device, save_resolved
from sourcetracing.distributed import DistInfo, cleanup, die_with_parent, init_distributed, rank_device
from sourcetracing.errors import ConfigError
from sourcetracing.features.store import FeatureDataset, FeatureStore, collate_batch
from sourcetracing.layout import ExperimentLayout
from sourcetracing.metrics import classification_metrics
from sourcetracing.provenance import step_lock
from sourcetracing.systems.export import export_classifier
from sourcetracing.training.data import experiment_label_map, known_rows, predict, train_rows
from sourcetracing.training.loop import Recipe, Task, Trainer


def criterion(name: str, num_classes: int):
    """``ce``: cross-entropy; ``bce``: one-vs-rest binary cross-entropy with logits on one-hot targets (means)."""
    if name == "ce":
        return lambda logits, y: F.cross_entropy(logits, y)
    if name == "bce":
        return lambda logits, y: F.binary_cross_entropy_with_logits(
            logits, F.one_hot(y, num_classes).to(logits.dtype)
        )
    raise ConfigError(f"unknown train.loss '{name}' (choose ce or bce)")


def mixup_step(model, x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator, loss_fn):
    """Forward the batch plus its mixed copies; returns ``(loss, logits of the originals)``.

    As the original: mixed copies ``lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha, alpha)``
    are appended to the batch (2B rows) and the loss is
    ``lam * L(out, [y; y]) + (1 - lam) * L(out, [y; y[perm]])``, each a mean over the 2B rows.
    ``alpha = 0`` trains on the originals alone. Everything stays on the batch's device.
    """
    if alpha <= 0:
        logits, _ = model(x)
        return loss_fn(logits, y), logits
    b = x.size(0)
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(b)).to(x.device)
    mixed = lam * x + (1.0 - lam) * x[perm]
    logits, _ = model(torch.cat([x, mixed], dim=0))
    targets_a = torch.cat([y, y])
    targets_b = torch.cat([y, y[perm]])
    loss = lam * loss_fn(logits, targets_a) + (1.0 - lam) * loss_fn(logits, targets_b)
    return loss, logits[:b]


class ClassifierTask(Task):
    """The closed-set classifier over stored frame features, trained with mixup."""

    name = "classifier"
    metric_columns = ("train_loss", "train_acc", "dev_loss", "dev_acc", "dev_macro_f1")

    def __init__(self, cfg: Config, store: FeatureStore):
        self.cfg = cfg
        self.store = store
        self.label_map = experiment_label_map(cfg, store)
        self.train_rows = train_rows(store, self.label_map, cfg.train.versions)
        self.dev_rows = known_rows(store, self.label_map, "dev")
        self.input_dim = int(store.frame_shape[1])
        self.model_config = component_settings(cfg.model)
        self.provenance = {**store.provenance(), "label_map": self.label_map.digest()}
        k = self.label_map.num_classes
        options = {key: v for key, v in self.model_config.items() if key != "name"}
        self.model = MODELS.get(cfg.model.name)(input_dim=self.input_dim, num_classes=k, **options)
        self.loss_fn = criterion(cfg.train.loss, k)
        self.dataset = FeatureDataset(store, self.train_rows)

    def describe(self) -> str:
        return (
            f"training {self.cfg.model.name} on {len(self.train_rows)} rows ({self.label_map.num_classes} known "
            f"systems, features {tuple(self.store.frame_shape)}), dev {len(self.dev_rows)} rows"
        )

    def batches(self, epoch: int, info: DistInfo) -> Iterable:
        """Shuffled batches; the order depends only on (seed, epoch), so resuming replays it exactly."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        sampler = None
        if info.enabled:
            sampler = DistributedSampler(
                self.dataset, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=self.cfg.seed
            )
            sampler.set_epoch(epoch)
        workers = int(self.cfg.train.num_workers)
        return DataLoader(
            self.dataset,
            batch_size=self.cfg.train.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=gen,
            num_workers=workers,
            worker_init_fn=die_with_parent if workers else None,
            pin_memory=torch.cuda.is_available(),
            collate_fn=collate_batch,
        )

    def step(self, model, batch, rng, device):
        x, y, _ = batch
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        loss, logits = mixup_step(model, x, y, self.cfg.train.mixup_alpha, rng, self.loss_fn)
        b = y.size(0)
        return loss, {
            "loss": loss.detach().float() * b,
            "correct": (logits.detach().argmax(1) == y).sum(),
            "n": b,
        }

    def epoch_stats(self, sums):
        n = max(sums.get("n", 0.0), 1.0)
        return {"train_loss": sums.get("loss", 0.0) / n, "train_acc": sums.get("correct", 0.0) / n}

    def evaluate(self, device: torch.device) -> dict:
        nan = float("nan")
        if self.dev_rows.empty:
            return {"dev_loss": nan, "dev_acc": nan, "dev_macro_f1": nan}
        logits, _ = predict(
            self.model, self.store, self.dev_rows, device, batch_size=2 * self.cfg.train.batch_size
        )
        y = self.dev_rows["label"].to_numpy()
        with torch.no_grad():
            loss = self.loss_fn(torch.from_numpy(logits), torch.tensor(y, dtype=torch.long)).item()
        m = classification_metrics(y, logits.argmax(1))
        return {"dev_loss": float(loss), "dev_acc": m["accuracy"], "dev_macro_f1": m["macro_f1"]}


def recipe_of(section) -> Recipe:
    """A :class:`Recipe` from the ``train`` config section."""
    return Recipe(
        epochs=int(section.epochs),
        lr=float(section.lr),
        betas=(float(section.betas[0]), float(section.betas[1])),
        eps=float(section.eps),
        weight_decay=float(section.weight_decay),
        lr_step=int(section.lr_step),
        lr_gamma=float(section.lr_gamma),
        grad_clip=float(section.grad_clip),
        precision=str(section.precision),
        select_by=str(section.select_by),
        log_every=int(section.log_every),
    )


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_classifier(cfg: Config, resume: bool = False, force: bool = False, export: bool = True) -> dict:
    """Train (or resume) the experiment's classifier, then export its outputs; returns the best epoch's record."""
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    layout = ExperimentLayout.of(cfg)
    system = layout.system(cfg.model.name)
    try:
        with contextlib.ExitStack() as locks:
            if info.is_main:
                locks.enter_context(
                    step_lock(
                        layout.locks / f"train-{system.name}.lock", f"the training folder of {system.name}"
                    )
                )
            device = rank_device(device, info)
            store = FeatureStore.for_config(cfg)
            locks.enter_context(store.read_lock())
            seed_everything(cfg.seed)
            task = ClassifierTask(cfg, store)
            if cfg.train.select_by == "dev_loss" and task.dev_rows.empty:
                cfg.train.select_by = "train_loss"
                if info.is_main:
                    print(
                        "warning: no known-system dev rows in the feature store; selecting the best epoch by train loss"
                    )
            title = f"{cfg.name}: {system.name} training"
            trainer = Trainer(task, recipe_of(cfg.train), system, info, device, cfg.seed, cfg, title)
            trainer.prepare(resume, force)
            if info.is_main:
                save_resolved(cfg)
                if not layout.label_map.is_file():
                    task.label_map.write(cfg.exp_dir)
            best = trainer.run()
            if export and info.is_main:
                export_classifier(cfg, device=device)
            return best
    finally:
        cleanup(info)
