"""GE2E evaluation: nearest-centroid source tracing on known systems, and OOD detection.

One centroid per known system from the train embeddings (clean 'original' rows). Known clips of
dev/eval are classified by the nearest centroid (cosine); the OOD score of every clip is

* ``centroid``: ``1 - max_k cos(e, c_k)``;
* ``knn``: the cosine distance to the k-th nearest train embedding (the OOD registry's ``knn`` scorer,
  the same one the REFD OOD step uses).

Higher = more OOD for both. The thresholds are fitted at the dev EER and applied to eval by
:func:`sourcetracing.ood.report.write_ood_report`, which writes the same files as the REFD OOD step
(``OOD_eval_results.txt``, ``ood_summary.csv``, ``scores_{dev,eval}.tsv``, ROC/DET plots).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from sourcetracing.config import Config, add_config_args, config_from_args, resolve_device
from sourcetracing.data.protocols import LabelMap
from sourcetracing.ge2e.data import FRAME_COLUMNS, ClipSource, build_source
from sourcetracing.models.ge2e import build_encoder

log = logging.getLogger(__name__)


def ge2e_dir(cfg: Config) -> Path:
    return Path(cfg.exp_dir) / "ge2e"


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero).

    >>> l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def class_centroids(emb: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Unit-length mean of the unit-length embeddings of each class ``[K, E]`` (NaN row for a class with no rows)."""
    emb = l2_normalise(np.asarray(emb, dtype=np.float64))
    out = np.full((num_classes, emb.shape[1]), np.nan)
    for k in range(num_classes):
        sel = labels == k
        if sel.any():
            mean = emb[sel].mean(axis=0)
            out[k] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return out


def centroid_similarities(emb: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Cosine similarity ``[n, K]`` to each centroid (``-inf`` for classes without a centroid)."""
    sim = l2_normalise(np.asarray(emb, dtype=np.float64)) @ np.nan_to_num(centroids).T
    return np.where(np.isnan(centroids).any(axis=1)[None, :], -np.inf, sim)


class CentroidScorer:
    """OOD score ``1 - max cosine to the class centroids`` (higher = more OOD)."""

    name = "centroid"

    def fit(
        self, train_emb: np.ndarray, train_logits: np.ndarray | None, train_labels: np.ndarray
    ) -> CentroidScorer:
        labels = np.asarray(train_labels).astype(int)
        self.centroids = class_centroids(train_emb, labels, int(labels.max()) + 1)
        return self

    def score(self, emb: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
        return 1.0 - centroid_similarities(emb, self.centroids).max(axis=1)


# ----------------------------------------------------------------------------------------------
# Embeddings


def load_checkpoint(path: str | Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """A GE2E checkpoint's encoder (eval mode, on ``device``) and the checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GE2E checkpoint not found: {path} (run train_ge2e.py first)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    encoder = build_encoder(ckpt["encoder_config"])
    encoder.load_state_dict(ckpt["model_state"])
    return encoder.to(device).eval(), ckpt


def _collate(batch):
    xs, labels = zip(*batch, strict=True)
    return torch.stack(xs), torch.tensor(labels)


@torch.no_grad()
def embed_rows(
    encoder: torch.nn.Module,
    source: ClipSource,
    rows: pd.DataFrame,
    device: torch.device,
    batch_size: int,
    num_workers: int = 0,
    desc: str = "embeddings",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings ``[n_valid, E]`` of the rows and the boolean mask of rows kept (unreadable audio is dropped)."""
    was_training = encoder.training
    encoder.eval()
    loader = DataLoader(
        source.dataset(rows, train=False),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    parts, valid = [], []
    for x, _ in tqdm(loader, desc=desc, leave=False, disable=not progress):
        ok = ~torch.isnan(x.flatten(1)).any(dim=1)
        valid.append(ok.numpy())
        if ok.any():
            parts.append(encoder(x[ok].to(device)).float().cpu().numpy())
    encoder.train(was_training)
    dim = getattr(encoder, "embedding_dim", 0)
    emb = np.concatenate(parts) if parts else np.zeros((0, dim), dtype=np.float32)
    mask = np.concatenate(valid) if valid else np.zeros(0, dtype=bool)
    return emb.astype(np.float32), mask


def split_embeddings(
    cfg: Config, encoder: torch.nn.Module, source: ClipSource, device: torch.device
) -> dict[str, tuple[np.ndarray, pd.DataFrame]]:
    """``split -> (embeddings, rows)`` for the clean rows of every split (dropped rows removed)."""
    out = {}
    for split, rows in source.frames.items():
        emb, mask = embed_rows(
            encoder, source, rows, device, cfg.ge2e.batch_size, cfg.ge2e.num_workers, split
        )
        if (~mask).any():
            log.warning("%s: %d unreadable clip(s) left out", split, int((~mask).sum()))
        out[split] = (emb, rows[mask].reset_index(drop=True))
    return out


# ----------------------------------------------------------------------------------------------
# Evaluation


def evaluate(cfg: Config, checkpoint: str | Path | None = None, device: torch.device | None = None) -> dict:
    """Embed, classify by nearest centroid, score OOD, write ``results/`` and ``ood_step/``; returns a summary."""
    from sourcetracing.metrics import write_classification_outputs
    from sourcetracing.ood.report import write_ood_report
    from sourcetracing.ood.scorers import build_scorer

    device = device or resolve_device(cfg.device)
    out = ge2e_dir(cfg)
    checkpoint = Path(checkpoint) if checkpoint else out / "best.pt"
    encoder, ckpt = load_checkpoint(checkpoint, device)
    source = build_source(cfg)
    LabelMap.from_dict(ckpt["label_map"]).check_same_known(source.label_map, "experiment's data")
    label_map = source.label_map
    class_names = list(label_map.known)

    embs = split_embeddings(cfg, encoder, source, device)
    if "train" not in embs or embs["train"][0].shape[0] == 0:
        raise ValueError("no train embeddings: the train split is empty")
    train_emb, train_rows = embs["train"]
    train_labels = train_rows["label"].to_numpy().astype(int)
    centroids = class_centroids(train_emb, train_labels, label_map.num_classes)
    scorers = {
        "centroid": CentroidScorer().fit(train_emb, None, train_labels),
        "knn": build_scorer("knn", k=min(cfg.ge2e.knn_k, len(train_emb)), chunk_size=cfg.ood.chunk_size).fit(
            train_emb, None, train_labels
        ),
    }

    results_dir = out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {"checkpoint": str(checkpoint), "epoch": ckpt.get("epoch"), "known": {}}
    scores: dict[str, dict[str, np.ndarray]] = {name: {} for name in scorers}
    frames: dict[str, pd.DataFrame] = {}
    preds: dict[str, np.ndarray] = {}
    for split in [s for s in embs if s != "train"]:
        emb, rows = embs[split]
        if len(rows) == 0:
            continue
        pred = centroid_similarities(emb, centroids).argmax(axis=1)
        known = rows["known"].to_numpy().astype(bool)
        if known.any():
            metrics = write_classification_outputs(
                results_dir, split, rows["label"].to_numpy()[known].astype(int), pred[known], class_names
            )
            summary["known"][split] = {k: _plain(v) for k, v in dict(metrics).items()}
        frames[split] = rows[FRAME_COLUMNS].reset_index(drop=True)
        preds[split] = pred
        for name, scorer in scorers.items():
            scores[name][split] = scorer.score(emb, None)
    (results_dir / "metrics.json").write_text(json.dumps(summary["known"], indent=2))

    ood_dir = out / "ood_step"
    if {"dev", "eval"} <= set(frames):
        table = write_ood_report(ood_dir, scores, frames, preds, class_names, "centroid")
        summary["ood"] = table
    else:
        log.warning("OOD report needs both dev and eval splits; found %s", sorted(frames))
    return summary


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def print_summary(summary: dict) -> None:
    print(f"GE2E evaluation of {summary['checkpoint']} (epoch {summary.get('epoch')})")
    for split, m in summary.get("known", {}).items():
        acc, f1 = m.get("accuracy", float("nan")), m.get("macro_f1", float("nan"))
        print(
            f"  {split:5s} known systems, nearest centroid: accuracy {acc:.4f}  macro-F1 {f1:.4f}  (n={m.get('n')})"
        )
    table = summary.get("ood")
    if isinstance(table, pd.DataFrame) and not table.empty:
        from sourcetracing.ood.detector import summary_table

        with pd.option_context("display.width", 160, "display.max_columns", 20, "display.precision", 4):
            print("  OOD detection (threshold at the dev EER; higher score = more OOD):")
            print(summary_table(table).to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Evaluate GE2E embeddings: nearest-centroid tracing + OOD detection"
    )
    add_config_args(parser)
    parser.add_argument("--checkpoint", default=None, help="default: <exp_dir>/ge2e/best.pt")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = evaluate(cfg, args.checkpoint)
    print_summary(summary)
    print(f"results in {ge2e_dir(cfg) / 'results'} and {ge2e_dir(cfg) / 'ood_step'}")
    return 0
