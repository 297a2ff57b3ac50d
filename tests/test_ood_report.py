"""The OOD report files (subsets, per unseen system and language, calibration) and model outputs without padding rows.

(The OOD step on exported outputs: tests/test_judge.py.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from toy_store import write_store

from sourcetracing.config import load_config
from sourcetracing.features.store import FeatureStore, store_dir
from sourcetracing.ood.report import SUMMARY_COLUMNS, write_ood_report
from sourcetracing.training.data import predict

KNOWN = ["sys_a", "sys_b", "sys_c"]
T, D = 6, 8


class StandIn(torch.nn.Module):
    """A tiny model with the AASIST interface: ``forward(x [B,T,D]) -> (logits, embedding)``."""

    def __init__(self, dim: int = D, emb: int = 5, classes: int = len(KNOWN)):
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(dim, emb)
        self.head = torch.nn.Linear(emb, classes)

    def forward(self, x: torch.Tensor):
        e = torch.tanh(self.proj(x.mean(dim=1)))
        return self.head(e), e


def _frame(split: str, n_known: int, n_ood: int, rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for i in range(n_known + n_ood):
        known = i < n_known
        model = KNOWN[i % len(KNOWN)] if known else f"unseen_{i % 2}"
        lang = "en" if i % 3 else "xx"
        lang_seen = lang == "en"
        rows.append(
            {
                "clip_id": f"fake/{lang}/{model}/{split}_{i}.wav",
                "split": split,
                "model_name": model,
                "label": KNOWN.index(model) if known else -1,
                "known": known,
                "language": lang,
                "language_seen": lang_seen,
                "cell": f"{'seen' if lang_seen else 'unseen'}_lang/{'seen' if known else 'unseen'}_model",
                "version": "original",
                "path": f"./fake/{lang}/{model}/{split}_{i}.wav",
            }
        )
    return pd.DataFrame(rows)


def make_store(cfg, counts: dict[str, tuple[int, int]], seed: int = 0) -> FeatureStore:
    """A finished store with class-dependent synthetic features (known systems separable)."""
    rng = np.random.default_rng(seed)
    means = {m: rng.normal(0, 2, D) for m in KNOWN + ["unseen_0", "unseen_1"]}
    parts = []
    for split, (n_known, n_ood) in counts.items():
        df = _frame(split, n_known, n_ood, rng)
        feats = np.stack([means[m] + rng.normal(0, 0.5, (T, D)) for m in df["model_name"]])
        parts.append((split, df.to_dict("records"), feats))
    return FeatureStore(write_store(store_dir(cfg), parts, {"shape": [T, D], "frontend": {"name": "lfcc"}}))


@pytest.fixture()
def cfg(tmp_path):
    return load_config(
        None, [f"exp_dir={tmp_path / 'exp'}", "frontend.name=lfcc", "device=cpu", "ood.chunk_size=16"]
    )


def test_model_outputs_one_row_per_clip(cfg) -> None:
    store = make_store(cfg, {"dev": (7, 6)})
    rows = store.select(split="dev")
    model = StandIn().eval()
    logits, emb = predict(
        model, store, rows, torch.device("cpu"), batch_size=4
    )  # 13 rows, batch 4: no padding
    assert logits.shape == (13, len(KNOWN)) and emb.shape == (13, 5)
    with torch.no_grad():
        ref_logits, ref_emb = model(torch.from_numpy(store.load(rows).astype(np.float32)))
    np.testing.assert_allclose(logits, ref_logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(emb, ref_emb.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.any(np.all(emb == 0, axis=1))


def _report_inputs(rng: np.random.Generator):
    frames = {"dev": _frame("dev", 30, 20, rng), "eval": _frame("eval", 40, 40, rng)}
    scores, preds = {}, {}
    for name, sep in (("good", 3.0), ("weak", 0.5)):
        scores[name] = {
            s: rng.normal(0, 1, len(f)) + sep * (~f["known"]).to_numpy() for s, f in frames.items()
        }
    for s, f in frames.items():
        preds[s] = np.where(f["known"], f["label"], rng.integers(0, len(KNOWN), len(f)))
    return scores, frames, preds


def test_report_files_and_cells(tmp_path) -> None:
    rng = np.random.default_rng(0)
    scores, frames, preds = _report_inputs(rng)
    summary = write_ood_report(tmp_path, scores, frames, preds, KNOWN, "good")
    for f in (
        "OOD_eval_results.txt",
        "ood_summary.csv",
        "scores_dev.tsv",
        "scores_eval.tsv",
        "thresholds.json",
        "roc_dev.png",
        "roc_eval.png",
        "det_dev.png",
        "det_eval.png",
    ):
        assert (tmp_path / f).is_file() and (tmp_path / f).stat().st_size > 0, f
    assert list(summary.columns) == SUMMARY_COLUMNS
    on_disk = pd.read_csv(tmp_path / "ood_summary.csv")
    assert list(on_disk.columns) == SUMMARY_COLUMNS and len(on_disk) == len(summary)
    subsets = set(summary["subset"])
    assert {"all", "seen_lang", "unseen_lang", "seen_lang/seen_model", "unseen_lang/unseen_model"} <= subsets

    good = summary[(summary.scorer == "good") & (summary.subset == "all")].set_index("split")
    weak = summary[(summary.scorer == "weak") & (summary.subset == "all")].set_index("split")
    assert good.loc["eval", "eer"] < weak.loc["eval", "eer"]
    assert good.loc["eval", "auroc"] > 0.9
    assert good.loc["eval", "n"] == 80 and good.loc["eval", "n_ood"] == 40

    # a cell of known clips only: no EER/AUROC, but an error rate (= FPR) at the dev threshold
    cell = summary[
        (summary.scorer == "good") & (summary.split == "eval") & (summary.subset == "seen_lang/seen_model")
    ]
    row = cell.iloc[0]
    assert math.isnan(row["eer"]) and math.isnan(row["auroc"]) and math.isnan(row["fnr"])
    assert row["error_rate"] == pytest.approx(row["fpr"]) and not math.isnan(row["open_set_macro_f1"])

    thr = json.loads((tmp_path / "thresholds.json").read_text())
    assert thr["default"] == "good" and set(thr["scorers"]) == {"good", "weak"}
    assert thr["scorers"]["good"]["threshold"] == pytest.approx(good.loc["eval", "threshold"])
    # the dev threshold reproduces the dev EER's error rates
    assert good.loc["dev", "eer"] == pytest.approx(thr["scorers"]["good"]["dev_eer"])

    tsv = pd.read_csv(tmp_path / "scores_eval.tsv", sep="\t")
    assert list(tsv.columns[:4]) == ["clip_id", "model_name", "known", "cell"]
    assert {"good", "weak"} <= set(tsv.columns) and len(tsv) == 80
    np.testing.assert_allclose(tsv["good"], scores["good"]["eval"], rtol=1e-5)

    text = (tmp_path / "OOD_eval_results.txt").read_text()
    assert "Dev EER" in text and "Eval EER" in text and "OOD" in text and "known" in text

    # one subset per unseen system (its clips against every known clip) and per language
    per_system = summary[
        (summary.scorer == "good")
        & (summary.split == "eval")
        & summary.subset.str.startswith("unseen_system:")
    ]
    assert set(per_system["subset"]) == {"unseen_system:unseen_0", "unseen_system:unseen_1"}
    assert (per_system["n_known"] == 40).all() and (per_system["n_ood"] == 20).all()
    assert (per_system["auroc"] > 0.9).all()
    assert {"language:en", "language:xx"} <= subsets

    # calibration fitted on dev: Cllr reported beside the best achievable (min Cllr)
    assert good.loc["eval", "min_cllr"] <= good.loc["eval", "cllr"] + 1e-9
    assert good.loc["eval", "cllr"] < weak.loc["eval", "cllr"] and good.loc["eval", "cllr"] < 1.0
    assert thr["scorers"]["good"]["calibration"]["type"] == "LogisticCalibration"


def test_report_rejects_misaligned_and_bad_dev(tmp_path) -> None:
    rng = np.random.default_rng(1)
    scores, frames, preds = _report_inputs(rng)
    scores["good"]["eval"] = scores["good"]["eval"][:-1]
    with pytest.raises(ValueError, match="clips"):
        write_ood_report(tmp_path, scores, frames, preds, KNOWN, "good", plots=False)
    scores, frames, preds = _report_inputs(rng)
    frames["dev"] = frames["dev"][frames["dev"]["known"]].reset_index(drop=True)
    scores = {n: {"dev": v["dev"][: len(frames["dev"])], "eval": v["eval"]} for n, v in scores.items()}
    preds["dev"] = preds["dev"][: len(frames["dev"])]
    with pytest.raises(ValueError, match="both known and OOD"):
        write_ood_report(tmp_path, scores, frames, preds, KNOWN, "good", plots=False)
