"""The one training loop, shared by every task (the closed-set classifier, GE2E), single process or DDP.

A :class:`Task` supplies the network, the batches of an epoch, one step's loss and the per-epoch
dev check; :class:`Trainer` does everything else once: optimiser (Adam) and step schedule,
mixed precision (``precision: float32 | bf16 | fp16 | auto``, a gradient scaler for fp16),
gradient clipping, DDP, best/last checkpoints in one layout, ``metrics.csv`` and ``curves.png``,
exact ``--resume``, and refusing to overwrite a finished run without ``--force``.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from sourcetracing.data.protocols import LabelMap
from sourcetracing.distributed import DistInfo, barrier
from sourcetracing.errors import ConfigError, StaleInputError, WouldOverwriteError
from sourcetracing.layout import SystemLayout
from sourcetracing.progress import progress
from sourcetracing.provenance import atomic_write_text, clean_leftovers
from sourcetracing.training.checkpoint import (
    plain,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)

SELECT_MODES = {"dev_loss": "min", "dev_macro_f1": "max", "train_loss": "min"}


@dataclass
class Recipe:
    """Optimiser, schedule and precision of one training run (from a config section)."""

    epochs: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    lr_step: int | None = None  # StepLR period in epochs (None = constant lr)
    lr_gamma: float = 1.0
    grad_clip: float = 0.0
    precision: str = "float32"
    select_by: str = "dev_loss"
    log_every: int = 50


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a training precision (None = plain float32); ``auto``: bf16 on CUDA, float32 on CPU."""
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "float32"
    if precision == "float32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("precision fp16 needs a CUDA device; use bf16 or float32 on CPU")
        return torch.float16
    raise ConfigError(f"precision must be float32, bf16, fp16 or auto, got {precision!r}")


class Task:
    """What a training task provides to the :class:`Trainer` (override the methods)."""

    name = "task"  # checkpoint "task" field: classifier | ge2e
    metric_columns: tuple[str, ...] = ()
    curve_extras: tuple[str, ...] = ()  # extra per-epoch values drawn in the third panel (besides lr)

    model: nn.Module  # the trained module (everything with parameters: encoder and loss for GE2E)
    label_map: LabelMap
    model_config: dict
    input_dim: int | None
    provenance: dict
    find_unused_parameters: bool = False

    def net(self) -> nn.Module:
        """The network saved as ``model_state`` (the encoder for GE2E, the whole model otherwise)."""
        return self.model

    def extra_state(self) -> dict:
        """Trained state outside :meth:`net` (the GE2E loss's w and b)."""
        return {}

    def load_extra_state(self, state: Mapping) -> None:
        pass

    def batches(self, epoch: int, info: DistInfo) -> Iterable:
        raise NotImplementedError

    def step(
        self, model: nn.Module, batch: Any, rng: np.random.Generator, device: torch.device
    ) -> tuple[torch.Tensor, dict]:
        """One step: ``(loss, sums)`` where ``sums`` holds additive per-step statistics (``n`` included)."""
        raise NotImplementedError

    def epoch_stats(self, sums: Mapping[str, float]) -> dict:
        """Per-epoch train statistics from the summed step statistics (``train_loss`` at least)."""
        n = max(sums.get("n", 0.0), 1.0)
        return {"train_loss": sums["loss"] / n}

    def evaluate(self, device: torch.device) -> dict:
        """The dev check after each epoch (rank 0 only); NaN values when dev cannot measure."""
        return {}

    def describe(self) -> str:
        return self.name


class Trainer:
    """Runs a :class:`Task` with a :class:`Recipe`; writes ``<system>/trained_models/``."""

    def __init__(
        self,
        task: Task,
        recipe: Recipe,
        system: SystemLayout,
        info: DistInfo,
        device: torch.device,
        seed: int,
        config: Mapping,
        title: str = "",
    ):
        if recipe.select_by not in SELECT_MODES:
            raise ConfigError(f"select_by must be one of {list(SELECT_MODES)}, got {recipe.select_by!r}")
        self.task, self.recipe, self.system, self.info, self.device = task, recipe, system, info, device
        self.seed, self.config, self.title = seed, config, title or system.name
        self.model = task.model.to(device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            params, lr=recipe.lr, betas=tuple(recipe.betas), eps=recipe.eps, weight_decay=recipe.weight_decay
        )
        self.scheduler = (
            torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=recipe.lr_step, gamma=recipe.lr_gamma)
            if recipe.lr_step
            else None
        )
        self.amp_dtype = autocast_dtype(recipe.precision, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.start_epoch = 1
        self.best: dict = {"key": recipe.select_by, "value": None, "epoch": None, "tiebreak": None}
        self.history: list[dict] = []

    # -- logging ---------------------------------------------------------------------------
    def log(self, text: str) -> None:
        if self.info.is_main:
            print(text, flush=True)

    # -- checkpoints -----------------------------------------------------------------------
    def _payload(self, epoch: int, metrics: Mapping) -> dict:
        net = unwrap(self.task.net())
        return {
            "task": self.task.name,
            "model_config": plain(self.task.model_config),
            "model_state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "extra_state": {k: v.detach().cpu() for k, v in self.task.extra_state().items()},
            "label_map": self.task.label_map.to_dict(),
            "input_dim": self.task.input_dim,
            "provenance": plain(self.task.provenance),
            "epoch": int(epoch),
            "metrics": plain(dict(metrics)),
            "config": plain(self.config),
            "best": plain(self.best),
        }

    def _save(self, path: Path, epoch: int, metrics: Mapping, full: bool) -> None:
        payload = self._payload(epoch, metrics)
        if full:
            payload.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict() if self.scheduler else {},
                scaler=self.scaler.state_dict(),
                rng=rng_state(),
                history=[plain(h) for h in self.history],
            )
        save_checkpoint(path, payload)

    def prepare(self, resume: bool, force: bool) -> None:
        """Resume from ``last.pt``, or make sure starting over loses nothing without ``--force``."""
        last = self.system.last
        if self.info.is_main:
            for path in (self.system.best, last, self.system.metrics):
                clean_leftovers(path)  # temporary files of a killed run
        if resume:
            if last.is_file():
                self._resume(last)
            else:
                self.log(f"--resume: {last} not found, starting from epoch 1")
            return
        if self.system.models.is_dir() and any(self.system.models.glob("*.pt")):
            if not force:
                done = ""
                with contextlib.suppress(Exception):
                    ckpt = read_checkpoint(last)
                    done = f" (epoch {ckpt['epoch']} done)"
                raise WouldOverwriteError(
                    f"{self.system.models} already holds a training run{done}: use --resume to continue it, "
                    "--force to start over (deletes it), or another exp_dir"
                )
            if self.info.is_main:
                shutil.rmtree(self.system.models)
        barrier(self.info)

    def _resume(self, path: Path) -> None:
        ckpt = read_checkpoint(path)
        trained, now = LabelMap.from_dict(ckpt["label_map"]).known, self.task.label_map.known
        if trained != now:
            gone, added = sorted(set(trained) - set(now))[:3], sorted(set(now) - set(trained))[:3]
            raise StaleInputError(
                f"the label map changed since {path} was written (no longer known: {gone}, new: {added}): "
                "the run cannot be resumed; use --force to retrain"
            )
        if ckpt["task"] != self.task.name or ckpt["model_config"] != plain(self.task.model_config):
            raise StaleInputError(
                f"{path} was trained with another model ({ckpt['model_config']}); cannot resume with "
                f"{plain(self.task.model_config)}: use --force to start over"
            )
        recorded = ckpt.get("provenance", {}).get("store_id")
        current = self.task.provenance.get("store_id")
        if recorded and current and recorded != current:
            raise StaleInputError(
                f"the feature store changed since {path} was written: the run cannot be resumed; use --force to retrain"
            )
        unwrap(self.task.net()).load_state_dict(ckpt["model_state"])
        self.task.load_extra_state(ckpt.get("extra_state", {}))
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler and ckpt.get("scheduler"):
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.best = dict(ckpt["best"])
        self.history = [dict(h) for h in ckpt.get("history", [])]
        set_rng_state(ckpt["rng"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.log(
            f"resumed from {path} (epoch {ckpt['epoch']} done; best {self.best['key']} = {self.best['value']})"
        )

    # -- the loop ---------------------------------------------------------------------------
    def _wrap_ddp(self) -> nn.Module:
        if not self.info.enabled:
            return self.model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.model, device_ids=ids, find_unused_parameters=self.task.find_unused_parameters)

    def train_epoch(self, epoch: int, model: nn.Module) -> dict:
        model.train()
        rng = np.random.default_rng([self.seed, epoch, self.info.rank])
        sums: dict[str, torch.Tensor] = {}
        bar = progress(
            self.task.batches(epoch, self.info),
            desc=f"epoch {epoch}/{self.recipe.epochs}",
            leave=False,
            show=self.info.is_main,
            dynamic_ncols=True,
        )
        ctx = (
            (lambda: torch.autocast(self.device.type, dtype=self.amp_dtype))
            if self.amp_dtype is not None
            else contextlib.nullcontext
        )
        for k, batch in enumerate(bar, 1):
            with ctx():
                loss, stats = self.task.step(model, batch, rng, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss.float()).backward()
            if self.recipe.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            for key, value in stats.items():
                value = torch.as_tensor(value, dtype=torch.float64, device=self.device).detach()
                sums[key] = sums[key] + value if key in sums else value.clone()
            if self.info.is_main and (k % self.recipe.log_every == 0 or k == 1):
                shown = self.task.epoch_stats({key: float(v) for key, v in sums.items()})
                bar.set_postfix({key: f"{v:.3f}" for key, v in shown.items()})
        keys = sorted(sums)
        if self.info.enabled:
            packed = torch.stack([sums[key] for key in keys]) if keys else torch.zeros(0, device=self.device)
            torch.distributed.all_reduce(packed)
            sums = dict(zip(keys, packed, strict=True))
        return self.task.epoch_stats({key: float(v) for key, v in sums.items()})

    def _improved(self, value: float, tiebreak: float) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.best["value"] is None:
            return True
        mode = SELECT_MODES[self.recipe.select_by]
        better = value < self.best["value"] if mode == "min" else value > self.best["value"]
        previous = self.best.get("tiebreak")
        tie = value == self.best["value"] and tiebreak < (math.inf if previous is None else previous)
        return better or tie  # ties (a saturated dev macro-F1, say) go to the lower train loss

    def write_metrics(self) -> None:
        from sourcetracing.plots import plot_training_curves

        columns = ["epoch", "lr", *self.task.metric_columns, "seconds"]
        frame = pd.DataFrame(self.history, columns=columns)
        atomic_write_text(self.system.metrics, frame.to_csv(index=False, float_format="%.6g"))
        plot_training_curves(frame, self.system.curves, title=self.title, extras=self.task.curve_extras)

    def run(self) -> dict:
        """Train from ``start_epoch`` to ``recipe.epochs``; returns the best epoch's record."""
        model = self._wrap_ddp()
        self.log(
            f"{self.task.describe()}, device {self.device}"
            + (f", {self.info.world_size} processes" if self.info.enabled else "")
        )
        for epoch in range(self.start_epoch, self.recipe.epochs + 1):
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train = self.train_epoch(epoch, model)
            if self.scheduler:
                self.scheduler.step()
            if self.info.is_main:
                dev = self.task.evaluate(self.device)
                row = {"epoch": epoch, "lr": lr, **train, **dev}
                row["seconds"] = round(time.perf_counter() - t0, 3)
                self.history.append(row)
                key = self.recipe.select_by
                value = row.get(key, math.nan)
                tag = ""
                if self._improved(value, row["train_loss"]):
                    self.best = {
                        "key": key,
                        "value": float(value),
                        "epoch": epoch,
                        "tiebreak": float(row["train_loss"]),
                    }
                    self._save(self.system.best, epoch, row, full=False)
                    tag = "  *best*"
                self._save(self.system.last, epoch, row, full=True)
                self.write_metrics()
                shown = "  ".join(
                    f"{k} {v:.4f}"
                    for k, v in row.items()
                    if k not in ("epoch", "lr", "seconds")
                    and isinstance(v, float)
                    and not (k in self.task.curve_extras and math.isnan(v))  # e.g. no w, b with AAM
                )
                self.log(
                    f"epoch {epoch:3d}/{self.recipe.epochs}  lr {lr:.2e}  {shown}  ({row['seconds']:.1f} s){tag}"
                )
            barrier(self.info)
        if self.info.is_main and not self.system.best.is_file() and self.system.last.is_file():
            # every selection value was NaN: the last epoch is the best one
            ckpt = read_checkpoint(self.system.last)
            keep = {
                k: v
                for k, v in ckpt.items()
                if k not in ("optimizer", "scheduler", "scaler", "rng", "history")
            }
            save_checkpoint(self.system.best, keep)
            self.best = {
                "key": self.recipe.select_by,
                "value": None,
                "epoch": int(ckpt["epoch"]),
                "tiebreak": None,
            }
        barrier(self.info)
        self.log(
            f"best epoch {self.best['epoch']} ({self.best['key']} = {self.best['value']}); "
            f"checkpoints, metrics.csv and curves.png in {self.system.models}"
        )
        return dict(self.best)
