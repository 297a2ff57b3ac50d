"""Step 5: the OOD detector. Fit every configured scorer on the training clips' model outputs,
fit thresholds at the dev EER, apply them to eval and write ``<exp_dir>/ood_step/``.

    python scripts/ood_detector.py --config configs/demo.yaml
    python scripts/ood_detector.py --config configs/demo.yaml --scorers nsd,knn --checkpoint path/best.pt

Besides the report (see :mod:`sourcetracing.ood.report`) it saves, in ``ood_step/``, the model
outputs as ``.npy`` (``{train,dev,eval}_{logits,embeddings,labels}.npy``), the clip lists
(``{split}_clips.csv``) and each fitted scorer (``scorer_<name>.npz``) that ``trace.py`` reuses
with the thresholds in ``thresholds.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.config import Config, add_config_args, config_from_args, resolve_device
from sourcetracing.data.protocols import LabelMap, ProtocolError
from sourcetracing.features.store import FeatureStore, MissingFeaturesError
from sourcetracing.ood.embeddings import model_outputs
from sourcetracing.ood.report import write_ood_report
from sourcetracing.ood.scorers import SCORERS, build_scorer, scorer_options

FRAME_COLUMNS = ["clip_id", "model_name", "label", "known", "language", "language_seen", "cell"]


def parse_scorers(text: str | None, cfg: Config) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()] if text else list(cfg.ood.scorers)
    unknown = [n for n in names if n not in SCORERS]
    if unknown:
        raise SystemExit(f"unknown OOD scorer(s) {unknown}; choose from: {', '.join(sorted(SCORERS))}")
    if not names:
        raise SystemExit("no OOD scorer selected")
    return names


def load_trained(cfg: Config, checkpoint: Path | None, device):
    """The trained model and its checkpoint, checked against the experiment's label map."""
    from sourcetracing.training.checkpoint import load_experiment_model

    try:
        return load_experiment_model(cfg.exp_dir, device, checkpoint)
    except (FileNotFoundError, ProtocolError) as err:
        raise SystemExit(f"error: {err}") from None


def _select(store: FeatureStore, split: str, versions: list[str], known: bool | None = None) -> pd.DataFrame:
    rows = store.select(split=split, versions=versions, known=known)
    return rows.reset_index(drop=True)


def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The compact per-scorer table printed at the end (percentages for rates)."""
    allrows = summary[summary["subset"] == "all"]
    out = []
    for name in dict.fromkeys(allrows["scorer"]):
        dev = allrows[(allrows.scorer == name) & (allrows.split == "dev")]
        ev = allrows[(allrows.scorer == name) & (allrows.split == "eval")]

        def val(df: pd.DataFrame, col: str, scale: float = 1.0) -> float:
            return float(df[col].iloc[0]) * scale if len(df) else float("nan")

        out.append(
            {
                "scorer": name,
                "dev_eer_%": val(dev, "eer", 100),
                "eval_eer_%": val(ev, "eer", 100),
                "eval_auroc": val(ev, "auroc"),
                "eval_f1": val(ev, "f1"),
                "eval_open_set_f1": val(ev, "open_set_macro_f1"),
            }
        )
    return pd.DataFrame(out)


def run_ood(
    cfg: Config, checkpoint: Path | None = None, scorer_names: list[str] | None = None
) -> pd.DataFrame:
    """The whole step; returns the summary frame."""
    device = resolve_device(cfg.device)
    names = scorer_names or list(cfg.ood.scorers)
    default = cfg.ood.default if cfg.ood.default in [*names, "auto"] else names[0]
    if default != cfg.ood.default:
        print(
            f"note: default scorer '{cfg.ood.default}' not selected; using '{default}' for OOD_eval_results.txt"
        )
    try:
        store = FeatureStore.for_config(cfg)
    except MissingFeaturesError as err:
        raise SystemExit(f"error: {err}") from None
    model, ckpt = load_trained(cfg, checkpoint, device)
    class_names = LabelMap.from_dict(ckpt["label_map"]).known
    in_dim = ckpt.get("input_dim")
    if in_dim is not None and int(in_dim) != int(store.frame_shape[1]):
        raise SystemExit(
            f"error: the checkpoint expects {in_dim}-dim features but the store holds {store.frame_shape[1]}: "
            "was it trained with another front end?"
        )

    out = Path(cfg.exp_dir) / "ood_step"
    out.mkdir(parents=True, exist_ok=True)
    rows = {
        "train": _select(store, "train", list(cfg.ood.train_versions), known=True),
        "dev": _select(store, "dev", ["original"]),
        "eval": _select(store, "eval", ["original"]),
    }
    if rows["train"].empty:
        raise SystemExit(
            f"error: no train clips of versions {list(cfg.ood.train_versions)} in {store.directory}"
        )
    if rows["dev"].empty:
        raise SystemExit(f"error: no clean ('original') dev clips in {store.directory}")
    if rows["eval"].empty:
        print("note: no eval clips in the store; reporting dev only")
        del rows["eval"]

    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, df in rows.items():
        logits, emb = model_outputs(
            model, store, df, device, int(cfg.ood.batch_size), desc=f"{split} outputs"
        )
        outputs[split] = (logits, emb)
        np.save(out / f"{split}_logits.npy", logits)
        np.save(out / f"{split}_embeddings.npy", emb)
        np.save(out / f"{split}_labels.npy", df["label"].to_numpy(np.int64))
        df[[c for c in ["clip_id", "model_name", "label", "known", "cell", "version"] if c in df]].to_csv(
            out / f"{split}_clips.csv", index=False
        )

    train_logits, train_emb = outputs["train"]
    train_labels = rows["train"]["label"].to_numpy(int)
    options = scorer_options(cfg.ood)
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name in names:
        scorer = build_scorer(name, **options).fit(train_emb, train_logits, train_labels)
        scorer.save(out / f"scorer_{name}.npz")
        scores[name] = {
            split: scorer.score(outputs[split][1], outputs[split][0]) for split in rows if split != "train"
        }

    eval_splits = [s for s in rows if s != "train"]
    frames = {s: rows[s][FRAME_COLUMNS] for s in eval_splits}
    preds = {s: outputs[s][0].argmax(axis=1) for s in eval_splits}
    summary = write_ood_report(out, scores, frames, preds, class_names, default)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_args(parser)
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default: <exp_dir>/trained_models/best.pt"
    )
    parser.add_argument(
        "--scorers", default=None, help=f"comma-separated subset of: {', '.join(sorted(SCORERS))}"
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    names = parse_scorers(args.scorers, cfg)
    summary = run_ood(cfg, args.checkpoint, names)
    table = summary_table(summary)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"OOD report written to {Path(cfg.exp_dir) / 'ood_step'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
