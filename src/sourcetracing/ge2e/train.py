"""Train the GE2E embedding baseline (``train_ge2e.py``): encoder + GE2E loss on the TRAIN split only.

Batches hold ``ge2e.n_systems`` systems x ``ge2e.n_clips`` clips. The loss's ``w`` and ``b`` are
trained with the encoder. After each epoch the model is checked on dev (known systems): macro-F1
of the nearest train centroid (``select_by: dev_macro_f1``) or the GE2E loss on dev batches
(``dev_loss``); the best epoch is kept in ``<exp_dir>/ge2e/best.pt``, the latest in ``last.pt``
(``--resume`` continues from it). Per-epoch numbers go to ``metrics.csv`` and ``curves.png``.
At the end the embeddings are evaluated (``--no-eval`` skips it).

    python train_ge2e.py --config configs/demo.yaml
    torchrun --nproc_per_node=2 train_ge2e.py --config configs/demo.yaml   # DDP (gloo on CPU)
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sourcetracing.config import Config, add_config_args, config_from_args, resolve_device, save_resolved
from sourcetracing.data.protocols import LabelMap
from sourcetracing.data.samplers import ClassBalancedBatchSampler
from sourcetracing.distributed import DistInfo, barrier, cleanup, init_distributed, rank_device
from sourcetracing.ge2e.data import ClipSource, build_source, subsample_per_system
from sourcetracing.ge2e.evaluate import (
    _collate,
    centroid_similarities,
    class_centroids,
    embed_rows,
    ge2e_dir,
)
from sourcetracing.models.ge2e import GE2ELoss, GE2EModel, build_encoder, encoder_config

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "epoch",
    "train_loss",
    "w",
    "b",
    "lr",
    "dev_loss",
    "dev_accuracy",
    "dev_macro_f1",
    "score",
    "best",
    "time_s",
]
DEV_LOSS_STEPS = 10


class DevCheck:
    """The per-epoch model-selection check on dev's known systems (rank 0 only)."""

    def __init__(self, cfg: Config, source: ClipSource):
        g = cfg.ge2e
        self.cfg = cfg
        self.source = source
        per = int(g.select_clips_per_system)
        self.train_rows = subsample_per_system(source.frames["train"], per, cfg.seed)
        dev = source.frames.get("dev")
        self.dev_rows = None if dev is None else subsample_per_system(dev[dev["known"]], per, cfg.seed)
        self.loss_sampler = None
        if self.dev_rows is not None and len(self.dev_rows):
            # dev may hold fewer clips per system than training batches use: shrink M to fit (>= 2)
            fewest = int(self.dev_rows.groupby("label")["clip_id"].nunique().min())
            try:
                self.loss_sampler = ClassBalancedBatchSampler(
                    self.dev_rows["label"].to_numpy(),
                    g.n_systems,
                    max(2, min(int(g.n_clips), fewest)),
                    DEV_LOSS_STEPS,
                    seed=cfg.seed,
                    groups=self.dev_rows["clip_id"].to_numpy(),
                    names=dict(enumerate(source.label_map.known)),
                )
            except ValueError as err:
                log.warning("no dev GE2E loss: %s", err)
        self.select_by = g.select_by
        if self.select_by not in ("dev_macro_f1", "dev_loss"):
            raise ValueError(f"ge2e.select_by must be dev_macro_f1 or dev_loss, got {self.select_by!r}")
        has_dev = self.dev_rows is not None and len(self.dev_rows) > 0
        if not has_dev or (self.select_by == "dev_loss" and self.loss_sampler is None):
            log.warning("dev has no usable known clips: the best epoch is chosen by the train loss")
            self.select_by = "train_loss"

    @torch.no_grad()
    def run(self, model: GE2EModel, device: torch.device) -> dict:
        out: dict = {"dev_loss": math.nan, "dev_accuracy": math.nan, "dev_macro_f1": math.nan}
        if self.dev_rows is None or not len(self.dev_rows):
            return out
        encoder = model.encoder
        g = self.cfg.ge2e
        train_emb, train_ok = embed_rows(
            encoder,
            self.source,
            self.train_rows,
            device,
            g.batch_size,
            desc="dev check: train",
            progress=False,
        )
        dev_emb, dev_ok = embed_rows(
            encoder, self.source, self.dev_rows, device, g.batch_size, desc="dev check: dev", progress=False
        )
        labels = self.train_rows["label"].to_numpy()[train_ok]
        centroids = class_centroids(train_emb, labels, self.source.label_map.num_classes)
        y_true = self.dev_rows["label"].to_numpy()[dev_ok]
        y_pred = centroid_similarities(dev_emb, centroids).argmax(axis=1)
        out["dev_accuracy"] = float(accuracy_score(y_true, y_pred))
        out["dev_macro_f1"] = float(
            f1_score(y_true, y_pred, labels=np.unique(y_true), average="macro", zero_division=0)
        )
        if self.loss_sampler is not None:
            was_training = model.training
            model.eval()
            loader = DataLoader(
                self.source.dataset(self.dev_rows, train=False),
                batch_sampler=self.loss_sampler,
                collate_fn=_collate,
            )
            losses = [float(model(x.to(device), self.loss_sampler.n_systems)) for x, _ in loader]
            model.train(was_training)
            out["dev_loss"] = float(np.mean(losses))
        return out

    def score(self, row: dict) -> float:
        """Higher is better."""
        if self.select_by == "dev_macro_f1":
            return row["dev_macro_f1"]
        if self.select_by == "dev_loss":
            return -row["dev_loss"]
        return -row["train_loss"]


def _save(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def write_metrics(out: Path, history: list[dict]) -> None:
    with open(out / "metrics.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def plot_curves(out: Path, history: list[dict]) -> Path:
    """Loss, dev metrics and the loss's w/b per epoch as ``curves.png``."""
    from sourcetracing.plots import plt, save_figure

    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    axes[0].plot(ep, [h["dev_loss"] for h in history], "s-", label="dev (known)")
    axes[0].set_title("GE2E loss")
    axes[1].plot(ep, [h["dev_macro_f1"] for h in history], "o-", label="macro-F1")
    axes[1].plot(ep, [h["dev_accuracy"] for h in history], "s-", label="accuracy")
    axes[1].set_title("dev known systems, nearest train centroid")
    axes[2].plot(ep, [h["w"] for h in history], "o-", label="w")
    axes[2].plot(ep, [h["b"] for h in history], "s-", label="b")
    axes[2].set_title("similarity scale w and bias b")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    return save_figure(fig, out / "curves.png", dpi=100)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def train(cfg: Config, resume: bool = False, device: torch.device | None = None) -> Path:
    """Run GE2E training; returns ``<exp_dir>/ge2e``. Under torchrun only rank 0 writes files."""
    g = cfg.ge2e
    device = device or resolve_device(cfg.device)
    info: DistInfo = init_distributed(device)
    device = rank_device(device, info)
    torch.manual_seed(cfg.seed + info.rank)
    out = ge2e_dir(cfg)

    source = build_source(cfg)
    label_map: LabelMap = source.label_map
    train_rows = source.train_rows
    names = {i: n for i, n in enumerate(label_map.known)}
    sampler = ClassBalancedBatchSampler(
        train_rows["label"].to_numpy(),
        g.n_systems,
        g.n_clips,
        g.steps_per_epoch,
        seed=cfg.seed,
        groups=train_rows["clip_id"].to_numpy(),
        rank=info.rank,
        world_size=info.world_size,
        names=names,
    )
    loader = DataLoader(
        source.dataset(train_rows, train=True),
        batch_sampler=sampler,
        num_workers=g.num_workers,
        collate_fn=_collate,
    )

    enc_cfg = encoder_config(cfg, source.input_dim)
    model = GE2EModel(build_encoder(enc_cfg), GE2ELoss(g.init_w, g.init_b, variant=g.loss)).to(device)
    optimizer = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=g.lr, weight_decay=g.weight_decay
    )
    history: list[dict] = []
    best_score = -math.inf
    best_tie = -math.inf
    start_epoch = 1
    last_path = out / "last.pt"
    if resume:
        if last_path.is_file():
            ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
            if ckpt["encoder_config"] != enc_cfg:
                raise ValueError(
                    f"--resume: {last_path} was trained with encoder {ckpt['encoder_config']}, the config now says {enc_cfg}"
                )
            LabelMap.from_dict(ckpt["label_map"]).check_same_known(label_map, "experiment's data")
            model.encoder.load_state_dict(ckpt["model_state"])
            model.loss.load_state_dict(ckpt["loss_state"])
            optimizer.load_state_dict(ckpt["optimizer_state"])
            torch.set_rng_state(ckpt["rng_state"]["torch"])
            history = list(ckpt["history"])
            best_score = float(ckpt["best_score"])
            best_tie = float(ckpt.get("best_tiebreak", -math.inf))
            start_epoch = int(ckpt["epoch"]) + 1
            if info.is_main:
                print(f"resuming from {last_path} after epoch {ckpt['epoch']}")
        elif info.is_main:
            log.warning("--resume: %s not found, starting from scratch", last_path)

    check = DevCheck(cfg, source) if info.is_main else None
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg)
        if not (Path(cfg.exp_dir) / "label_map.csv").is_file():
            label_map.write(cfg.exp_dir)
        print(
            f"GE2E ({g.encoder} encoder, {g.loss} loss) on {len(train_rows)} train rows, "
            f"{len(sampler.systems)} systems; batches {sampler.n_systems} x {sampler.n_clips}"
            f"{f' x {info.world_size} ranks' if info.enabled else ''}, device {device}"
        )
    ddp = (
        DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=g.encoder == "hf_ssl",
        )
        if info.enabled
        else model
    )

    base = {
        "encoder_config": enc_cfg,
        "config": cfg.to_dict(),
        "label_map": label_map.to_dict(),
        "input_dim": source.input_dim,
        "feature_store": source.store_meta,
        "loss_variant": g.loss,
    }
    for epoch in range(start_epoch, g.epochs + 1):
        t0 = time.time()
        sampler.set_epoch(epoch)
        model.train()
        losses = []
        bar = tqdm(loader, desc=f"GE2E epoch {epoch}/{g.epochs}", disable=not info.is_main, leave=False)
        for x, _ in bar:
            loss = ddp(x.to(device, non_blocking=True), sampler.n_systems)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if g.grad_clip and g.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), g.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
            bar.set_postfix(
                loss=f"{losses[-1]:.3f}", w=f"{model.loss.w.item():.2f}", b=f"{model.loss.b.item():.2f}"
            )
        train_loss = float(np.mean(losses))
        if info.enabled:
            t = torch.tensor([train_loss], device=device)
            torch.distributed.all_reduce(t)
            train_loss = float(t) / info.world_size
        if info.is_main:
            assert check is not None
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "w": model.loss.scale().detach().item(),
                "b": model.loss.b.detach().item(),
                "lr": optimizer.param_groups[0]["lr"],
                **check.run(model, device),
            }
            row["score"] = check.score(row)
            # ties (a saturated dev macro-F1, say) go to the epoch with the lower train loss
            improved = not math.isnan(row["score"]) and (
                row["score"] > best_score or (row["score"] == best_score and -train_loss > best_tie)
            )
            if improved:
                best_score, best_tie = row["score"], -train_loss
            row["best"] = improved
            row["time_s"] = round(time.time() - t0, 2)
            history.append(row)
            payload = {
                **base,
                "model_state": {k: v.detach().cpu() for k, v in model.encoder.state_dict().items()},
                "loss_state": {k: v.detach().cpu() for k, v in model.loss.state_dict().items()},
                "epoch": epoch,
                "metrics": row,
                "best_score": best_score,
                "best_tiebreak": best_tie,
                "history": history,
            }
            if improved:
                _save(out / "best.pt", payload)
            _save(
                last_path,
                {**payload, "optimizer_state": optimizer.state_dict(), "rng_state": _rng_state(device)},
            )
            write_metrics(out, history)
            plot_curves(out, history)
            print(
                f"epoch {epoch}: loss {train_loss:.4f}  w {row['w']:.3f}  b {row['b']:.3f}  "
                f"dev loss {row['dev_loss']:.4f}  dev acc {row['dev_accuracy']:.4f}  "
                f"dev macro-F1 {row['dev_macro_f1']:.4f}{'  *best*' if improved else ''}  ({row['time_s']} s)"
            )
        barrier(info)
    if info.is_main and not (out / "best.pt").is_file() and last_path.is_file():
        # every selection score was NaN: keep the last epoch as the best one
        ckpt = torch.load(last_path, map_location="cpu", weights_only=True)
        _save(out / "best.pt", {k: v for k, v in ckpt.items() if k not in ("optimizer_state", "rng_state")})
    barrier(info)
    cleanup(info)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_args(parser)
    parser.add_argument("--resume", action="store_true", help="continue from <exp_dir>/ge2e/last.pt")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = train(cfg, resume=args.resume)
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"GE2E checkpoints, metrics.csv and curves.png in {out}")
    if not args.no_eval:
        from sourcetracing.ge2e.evaluate import evaluate, print_summary

        print_summary(evaluate(cfg))
        print(f"results in {out / 'results'} and {out / 'ood_step'}")
    return 0
