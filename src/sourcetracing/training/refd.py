"""Step 2: train the closed-set classifier (AASIST) on the feature store.

    python train_refd.py --config configs/demo.yaml [key.sub=value ...] [--resume]
    torchrun --nproc_per_node=N train_refd.py --config ...        # DDP (gloo on CPU, NCCL on GPUs)

Recipe (``train`` config section; the original's defaults): Adam (lr 5e-4, betas 0.9/0.999, weight
decay 5e-4), lr x0.5 every 10 epochs, 30 epochs, batch 128, mixup (alpha 0.5; every batch is the
originals plus their mixed copies), cross-entropy (or one-vs-rest BCE). The dev split's known
systems (clean versions) select the best epoch by ``train.select_by``.

Writes ``<exp_dir>/trained_models/``: ``best.pt``, ``last.pt`` (resumable), ``metrics.csv``,
``curves.png``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from sourcetracing.config import (
    Config,
    ConfigError,
    add_config_args,
    config_from_args,
    resolve_device,
    save_resolved,
)
from sourcetracing.data.protocols import LabelMap, ProtocolError
from sourcetracing.distributed import DistInfo, barrier, cleanup, init_distributed, rank_device
from sourcetracing.features.store import FeatureStore, MissingFeaturesError
from sourcetracing.metrics import classification_metrics
from sourcetracing.training.checkpoint import (
    build_model,
    models_dir,
    plain,
    read_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    unwrap,
)
from sourcetracing.training.data import (
    BatchedFeatureDataset,
    collate_batch,
    experiment_label_map,
    known_rows,
    predict,
    train_rows,
)

METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "dev_loss", "dev_acc", "dev_macro_f1", "seconds"]
SELECT_MODES = {"dev_loss": "min", "dev_macro_f1": "max"}


class TrainingError(RuntimeError):
    """A training run cannot start (bad settings or inconsistent inputs)."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def loss_fn(name: str, num_classes: int):
    """``ce``: cross-entropy; ``bce``: one-vs-rest binary cross-entropy with logits on one-hot targets."""
    if name == "ce":
        return lambda logits, y: F.cross_entropy(logits, y)
    if name == "bce":
        return lambda logits, y: F.binary_cross_entropy_with_logits(
            logits, F.one_hot(y, num_classes).to(logits.dtype)
        )
    raise TrainingError(f"unknown train.loss '{name}' (choose ce or bce)")


def mixup_step(model, x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator, criterion):
    """Forward the batch (plus its mixed copies when ``alpha > 0``); returns ``(loss, logits of the originals)``.

    Mixed copies: ``lam * x + (1 - lam) * x[perm]`` with ``lam ~ Beta(alpha, alpha)``; the loss is
    ``CE(originals, y) + lam * CE(mixed, y) + (1 - lam) * CE(mixed, y[perm])``. Everything stays on
    the batch's device.
    """
    if alpha <= 0:
        logits, _ = model(x)
        return criterion(logits, y), logits
    b = x.size(0)
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(rng.permutation(b)).to(x.device)
    mixed = lam * x + (1.0 - lam) * x[perm]
    logits, _ = model(torch.cat([x, mixed], dim=0))
    orig, mix = logits[:b], logits[b:]
    loss = criterion(orig, y) + lam * criterion(mix, y) + (1.0 - lam) * criterion(mix, y[perm])
    return loss, orig


def _improved(mode: str, value: float, best: float | None) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


class Trainer:
    """One training run of an experiment (single process or one DDP rank)."""

    def __init__(self, cfg: Config, info: DistInfo, device: torch.device):
        self.cfg = cfg
        self.info = info
        self.device = device
        self.out = models_dir(cfg.exp_dir)
        tcfg = cfg.train
        if tcfg.select_by not in SELECT_MODES:
            raise TrainingError(
                f"train.select_by must be one of {list(SELECT_MODES)}, got '{tcfg.select_by}'"
            )

        self.store = FeatureStore.for_config(cfg)
        self.label_map: LabelMap = experiment_label_map(cfg, self.store)
        self.train_rows = train_rows(self.store, self.label_map, tcfg.versions)
        self.dev_rows = known_rows(self.store, self.label_map, "dev")
        self.input_dim = int(self.store.frame_shape[1])
        k = self.label_map.num_classes

        seed_everything(cfg.seed)
        self.model = build_model(cfg.model, self.input_dim, k).to(device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=tcfg.lr, betas=tuple(tcfg.betas), weight_decay=tcfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=tcfg.lr_step, gamma=tcfg.lr_gamma
        )
        self.criterion = loss_fn(tcfg.loss, k)
        self.dataset = BatchedFeatureDataset(self.store, self.train_rows)
        self.start_epoch = 1
        self.best: dict = {"key": tcfg.select_by, "value": None, "epoch": None}
        self.history: list[dict] = []

    # -- checkpoints -------------------------------------------------------------------------
    def _common(self) -> dict:
        return {
            "model_config": plain(self.cfg.model),
            "input_dim": self.input_dim,
            "label_map": self.label_map,
            "feature_store": self.store.meta,
        }

    def save(self, name: str, epoch: int, metrics: Mapping, full: bool) -> None:
        extra = {"config": plain(self.cfg)}
        if full:
            extra.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
                best=dict(self.best),
                rng=rng_state(),
                history=[dict(h) for h in self.history],
            )
        save_checkpoint(
            self.out / name, self.model, epoch=epoch, metrics=metrics, extra=extra, **self._common()
        )

    def resume(self) -> None:
        path = self.out / "last.pt"
        if not path.is_file():
            self.log(f"--resume: {path} not found, starting from epoch 1")
            return
        ckpt = read_checkpoint(path)
        self.label_map.check_same_known(LabelMap.from_dict(ckpt["label_map"]), what=f"checkpoint {path}")
        if ckpt["model_config"] != plain(self.cfg.model) or ckpt["input_dim"] != self.input_dim:
            raise TrainingError(f"{path} was trained with another model config or feature dim; cannot resume")
        unwrap(self.model).load_state_dict(ckpt["model_state"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.best = dict(ckpt["best"])
        self.history = [dict(h) for h in ckpt.get("history", [])]
        set_rng_state(ckpt["rng"])
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.log(
            f"resumed from {path} (epoch {ckpt['epoch']} done; best {self.best['key']} = {self.best['value']})"
        )

    # -- loops -------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        if self.info.is_main:
            print(text, flush=True)

    def loader(self, epoch: int) -> DataLoader:
        """Shuffled batches; the order depends only on (seed, epoch), so resuming replays it exactly."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
        sampler = None
        if self.info.enabled:
            sampler = DistributedSampler(
                self.dataset,
                num_replicas=self.info.world_size,
                rank=self.info.rank,
                shuffle=True,
                seed=self.cfg.seed,
            )
            sampler.set_epoch(epoch)
        return DataLoader(
            self.dataset,
            batch_size=self.cfg.train.batch_size,
            shuffle=sampler is None,
            sampler=sampler,
            generator=gen,
            num_workers=self.cfg.train.num_workers,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            collate_fn=collate_batch,
        )

    def train_epoch(self, epoch: int, model) -> tuple[float, float]:
        from tqdm import tqdm

        model.train()
        rng = np.random.default_rng([self.cfg.seed, epoch, self.info.rank])
        sums = torch.zeros(
            3, dtype=torch.float64, device=self.device
        )  # loss * n, correct, n (no per-step sync)
        bar = tqdm(
            self.loader(epoch),
            desc=f"epoch {epoch}/{self.cfg.train.epochs}",
            leave=False,
            disable=not self.info.is_main,
            dynamic_ncols=True,
        )
        every = max(int(self.cfg.train.log_every), 1)
        for step, (x, y, _) in enumerate(bar, 1):
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            loss, logits = mixup_step(model, x, y, self.cfg.train.mixup_alpha, rng, self.criterion)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            b = y.size(0)
            sums[0] += loss.detach().double() * b
            sums[1] += (logits.detach().argmax(1) == y).sum()
            sums[2] += b
            if self.info.is_main and (step % every == 0 or step == 1):
                loss_avg, acc, _ = (sums / sums[2]).tolist()
                bar.set_postfix(loss=f"{loss_avg:.3f}", acc=f"{acc:.3f}")
        if self.info.enabled:
            torch.distributed.all_reduce(sums)
        n = max(sums[2].item(), 1.0)
        return sums[0].item() / n, sums[1].item() / n

    def evaluate_dev(self) -> dict:
        if self.dev_rows.empty:
            return {"dev_loss": float("nan"), "dev_acc": float("nan"), "dev_macro_f1": float("nan")}
        model = unwrap(self.model)
        logits, _ = predict(
            model, self.store, self.dev_rows, self.device, batch_size=2 * self.cfg.train.batch_size
        )
        y = self.dev_rows["label"].to_numpy()
        with torch.no_grad():
            loss = self.criterion(torch.from_numpy(logits), torch.tensor(y, dtype=torch.long)).item()
        m = classification_metrics(y, logits.argmax(1))
        return {"dev_loss": float(loss), "dev_acc": m["accuracy"], "dev_macro_f1": m["macro_f1"]}

    def write_metrics(self) -> None:
        from sourcetracing.plots import plot_training_curves

        frame = pd.DataFrame(self.history, columns=METRIC_COLUMNS)
        frame.to_csv(self.out / "metrics.csv", index=False, float_format="%.6g")
        plot_training_curves(frame, self.out / "curves.png", title=f"{self.cfg.name}: AASIST training")

    def run(self) -> dict:
        cfg = self.cfg
        barrier(self.info)  # every rank has read the label map before rank 0 may write it
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_resolved(cfg)
            if not (Path(cfg.exp_dir) / "label_map.csv").is_file():
                self.label_map.write(cfg.exp_dir)
        select_key = cfg.train.select_by
        if self.dev_rows.empty:
            self.log(
                "warning: no known-system dev rows in the feature store; selecting the best epoch by train loss"
            )
        self.log(
            f"training {cfg.model.name} on {len(self.train_rows)} rows ({self.label_map.num_classes} known systems, "
            f"features {tuple(self.store.frame_shape)}), dev {len(self.dev_rows)} rows, device {self.device}"
            + (f", {self.info.world_size} processes" if self.info.enabled else "")
        )
        model = self.model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DDP(self.model, device_ids=ids)

        for epoch in range(self.start_epoch, cfg.train.epochs + 1):
            t0 = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_loss, train_acc = self.train_epoch(epoch, model)
            self.scheduler.step()
            if self.info.is_main:
                dev = self.evaluate_dev()
                row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc, **dev}
                row["seconds"] = round(time.perf_counter() - t0, 3)
                self.history.append(row)
                value = row[select_key] if not self.dev_rows.empty else row["train_loss"]
                mode = SELECT_MODES[select_key] if not self.dev_rows.empty else "min"
                tag = ""
                if _improved(mode, value, self.best["value"]):
                    self.best = {"key": select_key, "value": float(value), "epoch": epoch}
                    self.save("best.pt", epoch, row, full=False)
                    tag = "  *best*"
                self.save("last.pt", epoch, row, full=True)
                self.write_metrics()
                self.log(
                    f"epoch {epoch:3d}/{cfg.train.epochs}  lr {lr:.2e}  train loss {train_loss:.4f} acc {train_acc:.3f}"
                    f"  | dev loss {dev['dev_loss']:.4f} acc {dev['dev_acc']:.3f} macro-F1 {dev['dev_macro_f1']:.3f}"
                    f"  ({row['seconds']:.1f} s){tag}"
                )
            barrier(self.info)
        if self.info.is_main:
            self.log(
                f"best epoch {self.best['epoch']} ({self.best['key']} = {self.best['value']}); "
                f"checkpoints, metrics.csv and curves.png in {self.out}"
            )
        return dict(self.best)


def train(cfg: Config, resume: bool = False) -> dict:
    """Train (or resume) the experiment's classifier; returns the best epoch's ``{key, value, epoch}``."""
    device = resolve_device(cfg.device)
    info = init_distributed(device)
    try:
        device = rank_device(device, info)
        trainer = Trainer(cfg, info, device)
        if resume:
            trainer.resume()
        return trainer.run()
    finally:
        cleanup(info)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="train_refd.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_args(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue from <exp_dir>/trained_models/last.pt"
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    try:
        train(cfg, resume=args.resume)
    except (MissingFeaturesError, ProtocolError, TrainingError, ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
