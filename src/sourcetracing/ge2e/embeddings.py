"""Embedding export and 2-D maps, for the GE2E encoder and the REFD/AASIST penultimate layer.

Export (``scripts/generate_embeddings.py``), per split, under ``<exp_dir>/<model>/embeddings/``:

* ``<split>.npz``: ``embeddings`` float32 ``[n, E]``, ``labels`` (class id, -1 = OOD),
  ``system_ids`` (label_map.csv's id: the class id, or the OOD system's id), and ``logits`` (refd);
* ``<split>.csv``: the row index (clip_id, model_name, label, system_id, known, language, cell);
* with ``--layout original``, also the original baseline's layout
  ``<root>/<split>/<system_id>/<file>.npy`` (one float32 vector per clip).

Map (``scripts/plot_embeddings.py``): UMAP when ``umap-learn`` is installed, t-SNE otherwise;
colour per system, marker per split, unseen systems outlined in black.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from sourcetracing.config import Config, add_config_args, config_from_args, resolve_device
from sourcetracing.data.protocols import LabelMap, ProtocolError

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["clip_id", "model_name", "label", "system_id", "known", "language", "cell"]
SPLIT_MARKERS = {"train": "o", "dev": "^", "eval": "s"}


def system_ids(models: pd.Series, label_map: LabelMap) -> np.ndarray:
    """label_map.csv's ``system_id`` of each system: the class id (known) or ``num_classes + i`` (OOD); -1 if absent.

    >>> lm = LabelMap(known=["a", "b"], ood=["x", "y"])
    >>> system_ids(pd.Series(["b", "y", "q"]), lm).tolist()
    [1, 3, -1]
    """
    ids = {name: i for i, name in enumerate(label_map.known)}
    ids.update({name: label_map.num_classes + i for i, name in enumerate(label_map.ood)})
    return np.array([ids.get(m, -1) for m in models], dtype=int)


def write_split(
    out_dir: Path,
    split: str,
    emb: np.ndarray,
    rows: pd.DataFrame,
    label_map: LabelMap,
    logits: np.ndarray | None = None,
) -> pd.DataFrame:
    """Write ``<split>.npz`` + ``<split>.csv``; returns the index frame."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = rows.reset_index(drop=True).copy()
    index["system_id"] = system_ids(index["model_name"], label_map)
    missing = sorted(set(index.loc[index["system_id"] < 0, "model_name"]))
    if missing:
        log.warning("%s: system(s) not in the label map get system_id -1: %s", split, missing[:10])
    arrays = {
        "embeddings": np.asarray(emb, dtype=np.float32),
        "labels": index["label"].to_numpy(dtype=int),
        "system_ids": index["system_id"].to_numpy(dtype=int),
    }
    if logits is not None:
        arrays["logits"] = np.asarray(logits, dtype=np.float32)
    np.savez(out_dir / f"{split}.npz", **arrays)
    index[INDEX_COLUMNS].to_csv(out_dir / f"{split}.csv", index=False)
    return index


def write_original_layout(root: Path, split: str, emb: np.ndarray, index: pd.DataFrame) -> int:
    """``<root>/<split>/<system_id>/<file>.npy``, the original baseline's layout; returns the file count.

    The file name is the clip's file stem; a stem seen twice in one folder gets the flattened clip id.
    """
    used: set[Path] = set()
    for vec, clip_id, sys_id in zip(emb, index["clip_id"], index["system_id"], strict=True):
        folder = root / split / str(int(sys_id))
        path = folder / f"{PurePosixPath(str(clip_id)).stem}.npy"
        if path in used:
            path = folder / (str(clip_id).replace("/", "__").rsplit(".", 1)[0] + ".npy")
        used.add(path)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(vec, dtype=np.float32))
    return len(used)


def _exp_label_map(cfg: Config, fallback: dict | None) -> LabelMap:
    try:
        return LabelMap.read(cfg.exp_dir)
    except ProtocolError:
        if fallback is None:
            raise
        return LabelMap.from_dict(fallback)


def ge2e_embeddings(cfg: Config, checkpoint: Path | None, device) -> tuple[dict, LabelMap, dict]:
    """``split -> (embeddings, rows, None)`` from a GE2E checkpoint."""
    from sourcetracing.ge2e.data import build_source
    from sourcetracing.ge2e.evaluate import ge2e_dir, load_checkpoint, split_embeddings

    checkpoint = checkpoint or ge2e_dir(cfg) / "best.pt"
    encoder, ckpt = load_checkpoint(checkpoint, device)
    source = build_source(cfg)
    LabelMap.from_dict(ckpt["label_map"]).check_same_known(source.label_map, "experiment's data")
    out = {s: (e, r, None) for s, (e, r) in split_embeddings(cfg, encoder, source, device).items()}
    return (
        out,
        _exp_label_map(cfg, ckpt["label_map"]),
        {"checkpoint": str(checkpoint), "epoch": ckpt.get("epoch")},
    )


def refd_embeddings(cfg: Config, checkpoint: Path | None, device) -> tuple[dict, LabelMap, dict]:
    """``split -> (embeddings, rows, logits)``: the AASIST penultimate layer on the clean store rows."""
    from sourcetracing.features.store import FeatureStore
    from sourcetracing.ood.embeddings import model_outputs
    from sourcetracing.training.checkpoint import best_checkpoint, load_experiment_model

    checkpoint = checkpoint or best_checkpoint(cfg.exp_dir)
    model, ckpt = load_experiment_model(cfg.exp_dir, device, checkpoint)
    store = FeatureStore.for_config(cfg)
    out = {}
    for split in sorted(
        store.index["split"].unique(), key=lambda s: ({"train": 0, "dev": 1, "eval": 2}.get(s, 3), s)
    ):
        rows = store.select(split=split, versions=["original"]).reset_index(drop=True)
        if rows.empty:
            continue
        logits, emb = model_outputs(model, store, rows, device, cfg.ood.batch_size, desc=split)
        out[split] = (emb, rows, logits)
    label_map = _exp_label_map(cfg, ckpt["label_map"])
    return out, label_map, {"checkpoint": str(checkpoint), "epoch": ckpt.get("epoch")}


def embeddings_dir(cfg: Config, model: str) -> Path:
    if model == "ge2e" and cfg.ge2e.embeddings_dir:
        return Path(cfg.ge2e.embeddings_dir)
    return Path(cfg.exp_dir) / model / "embeddings"


def generate_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the embeddings of every split (GE2E or REFD/AASIST)")
    add_config_args(parser)
    parser.add_argument("--model", choices=["ge2e", "refd"], default="ge2e")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the experiment's best.pt")
    parser.add_argument("--out", type=Path, default=None, help="default: <exp_dir>/<model>/embeddings")
    parser.add_argument(
        "--layout",
        choices=["npz", "original"],
        default="npz",
        help="'original' also writes <root>/<split>/<system_id>/<file>.npy",
    )
    parser.add_argument(
        "--layout-root", type=Path, default=None, help="root of the original layout (default <out>/original)"
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    device = resolve_device(cfg.device)
    fn = ge2e_embeddings if args.model == "ge2e" else refd_embeddings
    per_split, label_map, info = fn(cfg, args.checkpoint, device)
    out = args.out or embeddings_dir(cfg, args.model)
    root = args.layout_root or out / "original"
    counts = {}
    for split, (emb, rows, logits) in per_split.items():
        index = write_split(out, split, emb, rows, label_map, logits)
        counts[split] = len(index)
        if args.layout == "original":
            write_original_layout(root, split, emb, index)
        print(f"{split}: {len(index)} embeddings of dim {emb.shape[1] if emb.ndim == 2 else 0}")
    meta = {"model": args.model, **info, "splits": counts, "class_names": list(label_map.known)}
    (out / "info.json").write_text(json.dumps(meta, indent=2))
    print(f"embeddings in {out}" + (f"; original layout in {root}" if args.layout == "original" else ""))
    return 0


# ----------------------------------------------------------------------------------------------
# 2-D map


def load_embeddings(directory: Path) -> tuple[np.ndarray, pd.DataFrame]:
    """All ``<split>.npz`` + ``<split>.csv`` pairs in a folder, stacked, with a ``split`` column."""
    embs, frames = [], []
    order = {"train": 0, "dev": 1, "eval": 2}
    for npz in sorted(Path(directory).glob("*.npz"), key=lambda p: (order.get(p.stem, 3), p.stem)):
        csv = npz.with_suffix(".csv")
        if not csv.is_file():
            continue
        emb = np.load(npz)["embeddings"]
        frame = pd.read_csv(csv, keep_default_na=False)
        if len(frame) != len(emb):
            raise ValueError(f"{npz}: {len(emb)} embeddings but {len(frame)} index rows")
        frame["split"] = npz.stem
        frame["known"] = frame["known"].astype(str).str.lower() == "true"
        embs.append(emb)
        frames.append(frame)
    if not embs:
        raise FileNotFoundError(
            f"no <split>.npz + <split>.csv embeddings in {directory}: run scripts/generate_embeddings.py"
        )
    return np.concatenate(embs).astype(np.float32), pd.concat(frames, ignore_index=True)


def project_2d(emb: np.ndarray, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D coordinates by UMAP (when installed) or t-SNE (scikit-learn), on unit-length embeddings."""
    x = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    if method in ("auto", "umap"):
        try:
            import umap  # type: ignore[import-not-found]

            reducer = umap.UMAP(
                n_components=2, metric="cosine", random_state=seed, n_neighbors=min(15, len(x) - 1)
            )
            return reducer.fit_transform(x), "umap"
        except ImportError:
            if method == "umap":
                raise ImportError(
                    "--method umap needs umap-learn (pip install umap-learn); or use --method tsne"
                ) from None
    if method not in ("auto", "umap", "tsne"):
        raise ValueError(f"unknown method {method!r}; choose auto, umap or tsne")
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", metric="cosine", random_state=seed)
    return tsne.fit_transform(x), "tsne"


def plot_map(
    emb: np.ndarray,
    frame: pd.DataFrame,
    out: Path,
    method: str = "auto",
    max_points: int = 3000,
    seed: int = 0,
    title: str | None = None,
) -> Path:
    """Draw the 2-D map as a PNG; subsamples to ``max_points`` (seeded)."""
    from matplotlib.lines import Line2D

    from sourcetracing.plots import plt, save_figure

    rng = np.random.default_rng(seed)
    if len(emb) > max_points:
        keep = np.sort(rng.choice(len(emb), size=max_points, replace=False))
        emb, frame = emb[keep], frame.iloc[keep].reset_index(drop=True)
    if len(emb) < 4:
        raise ValueError(f"need at least 4 points to draw a map, got {len(emb)}")
    xy, used = project_2d(emb, method, seed)

    systems = sorted(
        frame["model_name"].unique(), key=lambda s: (not frame.loc[frame.model_name == s, "known"].iloc[0], s)
    )
    cmap = plt.get_cmap("tab20")
    colour = {s: cmap(i % 20) for i, s in enumerate(systems)}
    fig, ax = plt.subplots(figsize=(11, 8))
    for split in dict.fromkeys(frame["split"]):
        marker = SPLIT_MARKERS.get(split, "D")
        for known in (True, False):
            sel = ((frame["split"] == split) & (frame["known"] == known)).to_numpy()
            if not sel.any():
                continue
            ax.scatter(
                xy[sel, 0],
                xy[sel, 1],
                s=22 if known else 34,
                marker=marker,
                alpha=0.75,
                c=[colour[m] for m in frame.loc[sel, "model_name"]],
                edgecolors="black" if not known else "none",
                linewidths=0.9 if not known else 0.0,
            )
    handles = [
        Line2D([], [], marker=SPLIT_MARKERS.get(s, "D"), ls="", color="grey", label=s)
        for s in dict.fromkeys(frame["split"])
    ]
    handles.append(
        Line2D(
            [],
            [],
            marker="o",
            ls="",
            color="white",
            markeredgecolor="black",
            label="unseen system (outlined)",
        )
    )
    if len(systems) <= 30:
        handles += [
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                color=colour[s],
                label=s + ("" if frame.loc[frame.model_name == s, "known"].iloc[0] else " (unseen)"),
            )
            for s in systems
        ]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title or f"embeddings ({used}, {len(emb)} points)")
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, out)


def plot_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="2-D map (UMAP or t-SNE) of exported embeddings")
    parser.add_argument(
        "--embeddings", type=Path, required=True, help="folder written by scripts/generate_embeddings.py"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="PNG path (default <embeddings>/embedding_map.png)"
    )
    parser.add_argument("--method", choices=["auto", "umap", "tsne"], default="auto")
    parser.add_argument("--max-points", type=int, default=3000)
    parser.add_argument("--splits", nargs="*", default=None, help="only these splits (default: all found)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    emb, frame = load_embeddings(args.embeddings)
    if args.splits:
        sel = frame["split"].isin(args.splits).to_numpy()
        emb, frame = emb[sel], frame[sel].reset_index(drop=True)
    out = args.out or args.embeddings / "embedding_map.png"
    plot_map(emb, frame, out, args.method, args.max_points, args.seed)
    print(f"map written to {out}")
    return 0
