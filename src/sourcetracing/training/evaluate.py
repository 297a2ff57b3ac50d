"""Step 3: known-system (closed-set) metrics of the trained classifier on dev and eval.

    python scripts/get_classification_metrics.py --config configs/demo.yaml [--checkpoint PATH]

Only clean (``original`` version) clips of the systems seen in training are scored. Writes
``<exp_dir>/results/``: ``dev_in_domain_results.txt``, ``eval_in_domain_results.txt``,
``metrics.json`` and ``confusion_{dev,eval}.{csv,png}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sourcetracing.config import Config, ConfigError, add_config_args, config_from_args, resolve_device
from sourcetracing.data.protocols import ProtocolError
from sourcetracing.features.store import FeatureStore, MissingFeaturesError
from sourcetracing.metrics import write_classification_outputs, write_metrics_json
from sourcetracing.training.checkpoint import best_checkpoint, load_model
from sourcetracing.training.data import experiment_label_map, known_rows, predict


def evaluate_known(
    cfg: Config, checkpoint: str | Path | None = None, splits: tuple[str, ...] = ("dev", "eval")
) -> dict:
    """Score each split's known-system clips with the checkpoint and write the result files."""
    device = resolve_device(cfg.device)
    store = FeatureStore.for_config(cfg)
    label_map = experiment_label_map(cfg, store)
    checkpoint = Path(checkpoint) if checkpoint else best_checkpoint(cfg.exp_dir)
    model, ckpt = load_model(checkpoint, device, expected_label_map=label_map)
    out = Path(cfg.exp_dir) / "results"
    results: dict[str, dict] = {}
    for split in splits:
        rows = known_rows(store, label_map, split)
        if rows.empty:
            print(f"{split}: no known-system clips in the feature store, skipped")
            continue
        logits, _ = predict(model, store, rows, device, batch_size=2 * cfg.train.batch_size, progress=True)
        results[split] = write_classification_outputs(
            out, split, rows["label"].to_numpy(), logits.argmax(1), label_map.known
        )
    write_metrics_json(out / "metrics.json", results)
    print(f"checkpoint {checkpoint} (epoch {ckpt.get('epoch')}); known systems only, clean clips")
    print(f"{'split':6s} {'clips':>6s} {'accuracy':>9s} {'bal.acc':>8s} {'macro-F1':>9s}")
    for split, m in results.items():
        print(
            f"{split:6s} {m['n']:6d} {m['accuracy']:9.4f} {m['balanced_accuracy']:8.4f} {m['macro_f1']:9.4f}"
        )
    print(f"reports, confusion matrices and metrics.json in {out}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="get_classification_metrics.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(parser)
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default: <exp_dir>/trained_models/best.pt"
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    try:
        evaluate_known(cfg, args.checkpoint)
    except (MissingFeaturesError, ProtocolError, ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
