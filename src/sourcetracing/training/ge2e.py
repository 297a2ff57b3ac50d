"""Stage 5: train the GE2E embedding baseline on the TRAIN split only, export its embeddings, evaluate them.

    python train_ge2e.py [--config configs/demo.yaml] [--resume | --force] [--no-eval] [ge2e.epochs=5 ...]
    torchrun --nproc_per_node=2 train_ge2e.py --config configs/demo.yaml   # DDP (gloo on CPU)

Batches hold ``ge2e.n_systems`` systems x ``ge2e.n_clips`` clips. The loss's scale ``w`` is trained
with the encoder (and its bias ``b`` for the contrast variant; it cancels in the softmax one).
After each epoch the encoder is checked on dev's known systems: macro-F1 of the nearest train
centroid (``select_by: dev_macro_f1``), the GE2E loss on dev batches (``dev_loss``) or the train
loss (``train_loss``, the original's choice). The same training loop as the classifier writes
``<exp_dir>/ge2e/trained_models/``; then the embeddings are exported to ``ge2e/outputs/`` and,
unless ``--no-eval``, judged like every system (known-class metrics and the OOD step).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.data import DataLoader

from sourcetracing.config import Config, component_settings, resolve_device, save_resolved
from sourcetracing.data.samplers import ClassBalancedBatchSampler
from sourcetracing.distributed import DistInfo, cleanup, die_with_parent, init_distributed, rank_device
from sourcetracing.layout import ExperimentLayout
from sourcetracing.models.ge2e import GE2ELoss, GE2EModel, build_encoder, build_loss, encoder_config
from sourcetracing.ood.scorers import centroid_similarities, class_centroids
from sourcetracing.provenance import step_lock
from sourcetracing.systems.export import export_ge2e
from sourcetracing.training.ge2e_data import (
    SYSTEM,
    ClipSource,
    build_source,
    collate_pairs,
    embed_rows,
    subsample_per_system,
)
from sourcetracing.training.loop import Recipe, Task, Trainer

log = logging.getLogger(__name__)

DEV_LOSS_STEPS = 10


class GE2ETask(Task):
    """An encoder trained with the GE2E loss on class-balanced batches."""

    name = "ge2e"
    metric_columns = ("train_loss", "w", "b", "dev_loss", "dev_accuracy", "dev_macro_f1")
    curve_extras = ("w", "b")

    def __init__(self, cfg: Config, source: ClipSource, info: DistInfo):
        g = cfg.ge2e
        self.cfg, self.source, self.info = cfg, source, info
        self.label_map = source.label_map
        self.input_dim = source.input_dim
        self.model_config = encoder_config(cfg, source.input_dim)
        self.provenance = dict(source.provenance)
        encoder = build_encoder(self.model_config)
        loss = build_loss(
            g.loss,
            self.label_map.num_classes,
            int(encoder.embedding_dim),
            g.init_w,
            g.init_b,
            g.aam_margin,
            g.aam_scale,
            g.cos_floor,
        )
        self.model = GE2EModel(encoder, loss)
        self.find_unused_parameters = source.kind == "audio"
        rows = source.train_rows
        self.sampler = ClassBalancedBatchSampler(
            rows["label"].to_numpy(), g.n_systems, g.n_clips, g.steps_per_epoch, seed=cfg.seed,
            groups=rows["clip_id"].to_numpy(), rank=info.rank, world_size=info.world_size,
            names=dict(enumerate(self.label_map.known)),
        )  # fmt: skip
        self._init_dev_check()

    def net(self):
        return self.model.encoder

    def extra_state(self) -> dict:
        return dict(self.model.loss.state_dict())

    def load_extra_state(self, state: Mapping) -> None:
        if state:
            self.model.loss.load_state_dict(dict(state))

    def describe(self) -> str:
        g = self.cfg.ge2e
        return (
            f"GE2E ({g.encoder.name} encoder, {g.loss} loss) on {len(self.source.train_rows)} train rows, "
            f"{len(self.sampler.systems)} systems; batches {self.sampler.n_systems} x {self.sampler.n_clips}"
        )

    def batches(self, epoch: int, info: DistInfo) -> Iterable:
        self.sampler.set_epoch(epoch)
        workers = int(self.cfg.ge2e.num_workers)
        return DataLoader(
            self.source.dataset(self.source.train_rows, train=True),
            batch_sampler=self.sampler,
            num_workers=workers,
            worker_init_fn=die_with_parent if workers else None,
            collate_fn=collate_pairs,
        )

    def step(self, model, batch, rng, device):
        x, labels = batch
        loss = model(
            x.to(device, non_blocking=True), self.sampler.n_systems, labels.to(device, non_blocking=True)
        )
        return loss, {"loss": loss.detach().float(), "n": 1}

    def epoch_stats(self, sums):
        n = max(sums.get("n", 0.0), 1.0)
        loss_fn = self.model.loss
        if not isinstance(loss_fn, GE2ELoss):  # AAM softmax: no similarity scale or bias
            return {"train_loss": sums.get("loss", 0.0) / n, "w": float("nan"), "b": float("nan")}
        return {"train_loss": sums.get("loss", 0.0) / n, "w": loss_fn.scale().item(), "b": loss_fn.b.item()}

    # -- dev check ----------------------------------------------------------------------------
    def _init_dev_check(self) -> None:
        g = self.cfg.ge2e
        per = int(g.select_clips_per_system)
        self.check_train = subsample_per_system(self.source.frames["train"], per, self.cfg.seed)
        self.check_train = self.check_train[self.check_train["label"] >= 0]
        dev = self.source.frames.get("dev")
        self.dev_rows = (
            None if dev is None else subsample_per_system(dev[dev["label"] >= 0], per, self.cfg.seed)
        )
        self.loss_sampler = None
        if self.dev_rows is not None and len(self.dev_rows):
            fewest = int(self.dev_rows.groupby("label")["clip_id"].nunique().min())
            try:
                self.loss_sampler = ClassBalancedBatchSampler(
                    self.dev_rows["label"].to_numpy(), g.n_systems, max(2, min(int(g.n_clips), fewest)),
                    DEV_LOSS_STEPS, seed=self.cfg.seed, groups=self.dev_rows["clip_id"].to_numpy(),
                    names=dict(enumerate(self.label_map.known)),
                )  # fmt: skip
            except ValueError as err:
                log.warning("no dev GE2E loss: %s", err)

    @torch.no_grad()
    def evaluate(self, device: torch.device) -> dict:
        out = {"dev_loss": math.nan, "dev_accuracy": math.nan, "dev_macro_f1": math.nan}
        if self.dev_rows is None or not len(self.dev_rows):
            return out
        encoder, g = self.model.encoder, self.cfg.ge2e
        train_emb, train_ok = embed_rows(
            encoder, self.source, self.check_train, device, g.batch_size, show_progress=False
        )
        dev_emb, dev_ok = embed_rows(
            encoder, self.source, self.dev_rows, device, g.batch_size, show_progress=False
        )
        labels = self.check_train["label"].to_numpy()[train_ok]
        centroids = class_centroids(train_emb, labels, self.label_map.num_classes)
        y_true = self.dev_rows["label"].to_numpy()[dev_ok]
        y_pred = centroid_similarities(dev_emb, centroids).argmax(axis=1)
        out["dev_accuracy"] = float(accuracy_score(y_true, y_pred))
        out["dev_macro_f1"] = float(
            f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0)
        )
        if self.loss_sampler is not None:
            was_training = self.model.training
            self.model.eval()
            loader = DataLoader(
                self.source.dataset(self.dev_rows, train=False),
                batch_sampler=self.loss_sampler,
                collate_fn=collate_pairs,
            )
            losses = [
                float(self.model(x.to(device), self.loss_sampler.n_systems, y.to(device))) for x, y in loader
            ]
            self.model.train(was_training)
            out["dev_loss"] = float(np.mean(losses))
        return out


def recipe_of(g) -> Recipe:
    """A :class:`Recipe` from the ``ge2e`` config section (Adam, constant lr)."""
    return Recipe(
        epochs=int(g.epochs),
        lr=float(g.lr),
        weight_decay=float(g.weight_decay),
        grad_clip=float(g.grad_clip),
        precision=str(g.precision),
        select_by=str(g.select_by),
    )


def train_ge2e(cfg: Config, resume: bool = False, force: bool = False, export: bool = True) -> dict:
    """Train (or resume) GE2E, export its embeddings; returns the best epoch's record."""
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    layout = ExperimentLayout.of(cfg)
    system = layout.system(SYSTEM)
    try:
        with contextlib.ExitStack() as locks:
            if info.is_main:
                locks.enter_context(
                    step_lock(layout.locks / f"train-{SYSTEM}.lock", "the training folder of ge2e")
                )
            device = rank_device(device, info)
            torch.manual_seed(cfg.seed + info.rank)
            source = build_source(cfg)
            if source.store is not None:
                locks.enter_context(source.store.read_lock())
            task = GE2ETask(cfg, source, info)
            select_by = cfg.ge2e.select_by
            no_dev = task.dev_rows is None or not len(task.dev_rows)
            if select_by != "train_loss" and (
                no_dev or (select_by == "dev_loss" and task.loss_sampler is None)
            ):
                log.warning("dev has no usable known clips: the best epoch is chosen by the train loss")
                cfg.ge2e.select_by = "train_loss"
            title = f"{cfg.name}: GE2E training"
            trainer = Trainer(task, recipe_of(cfg.ge2e), system, info, device, cfg.seed, cfg, title)
            trainer.prepare(resume, force)
            if info.is_main:
                save_resolved(cfg)
                if not layout.label_map.is_file():
                    task.label_map.write(cfg.exp_dir)
            best = trainer.run()
            if export and info.is_main:
                export_ge2e(cfg, device=device)
            return best
    finally:
        cleanup(info)


__all__ = ["SYSTEM", "GE2ETask", "component_settings", "embed_rows", "train_ge2e"]
