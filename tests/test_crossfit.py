"""Train-side cross-fitting: known systems held out of a refit in turn as pseudo-unseen evidence."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sourcetracing.ood.crossfit import COLUMNS, aurocs_of, crossfit_table, folds, mean_auroc
from sourcetracing.ood.tuning import tune


def _clustered(n_classes: int = 5, per_class: int = 12, versions: int = 2, seed: int = 0):
    """Class clusters in 6-D; each clip has ``versions`` rows (the original first)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(n_classes, 6))
    rows, xs = [], []
    for c in range(n_classes):
        for i in range(per_class):
            clip = 0.3 * rng.normal(size=6)
            for v in range(versions):
                xs.append(centres[c] + clip + 0.1 * rng.normal(size=6))
                rows.append(
                    {"clip_id": f"c{c}_{i}", "label": c, "version": "original" if v == 0 else "codec"}
                )
    return np.asarray(xs), pd.DataFrame(rows)


def test_folds_hold_each_known_system_and_its_copies_out_of_the_fit_deterministically() -> None:
    x, rows = _clustered()
    labels, ids = rows["label"].to_numpy(), rows["clip_id"].to_numpy()
    original = (rows["version"] == "original").to_numpy()
    first = list(folds(labels, ids, original, seed=3))
    again = list(folds(labels, ids, original, seed=3))
    assert [f.held_out for f in first] == [0, 1, 2, 3, 4]  # every known system unseen once
    for a, b in zip(first, again, strict=True):
        assert (a.fit == b.fit).all() and (a.known == b.known).all()
    for fold in first:
        assert not (fold.fit & (labels == fold.held_out)).any()  # no version of the held-out system
        assert not (fold.fit & fold.known).any()  # the pseudo-known clips are out of the fit too
        fitted_clips = set(ids[fold.fit])
        assert not fitted_clips & set(ids[fold.known])  # ... with every version of them
        assert fold.unseen.sum() == 12 and original[fold.unseen].all() and original[fold.known].all()
        assert set(labels[fold.known]) <= set(labels[fold.fit])


def test_the_table_scores_every_setting_on_every_held_out_system_and_the_refit_never_sees_it() -> None:
    from sourcetracing.systems.mfcc import ReferenceModel

    x, rows = _clustered()
    seen: list[set[int]] = []
    marker = rows["label"].to_numpy()

    def fit_apply(x_fit, y_fit, rows_fit):
        seen.append({int(m) for m in x_fit[:, -1]})  # the class marker column of what is fitted
        assert (rows_fit["label"].to_numpy() == x_fit[:, -1]).all()  # the rows fitted, row-aligned
        model = ReferenceModel.fit(
            x_fit[:, :-1], y_fit, [str(i) for i in range(y_fit.max() + 1)], {"projection": "none"}
        )
        return lambda z: model.apply(z[:, :-1])

    names = [f"sys{c}" for c in range(5)]
    grid = {"knn": [{"k": 1}, {"k": 5}], "msp": [{}]}
    table = crossfit_table(fit_apply, np.column_stack([x, marker]), rows, grid, names, seed=0)
    assert list(table.columns) == COLUMNS
    assert len(table) == 5 * 3 and set(table["held_out"]) == set(names)
    for fold_index, classes in enumerate(seen):
        assert fold_index not in classes and len(classes) == 4
    # well-separated clusters: every held-out system stands out from the pseudo-known clips
    assert table.loc[table["scorer"] == "knn", "auroc"].min() > 0.9
    assert (table["n_unseen"] == 12).all() and (table["n_known"] > 0).all()
    values = aurocs_of(table, "knn", {"k": 5, "chunk_size": 4096})
    assert set(values) == set(names) and mean_auroc(values) == pytest.approx(np.mean(list(values.values())))
    assert aurocs_of(table, "knn", {"k": 3}) == {} and aurocs_of(None, "knn", {"k": 5}) == {}


def test_crossfit_tuning_keeps_the_best_mean_held_out_auroc_and_falls_back_to_holdout() -> None:
    from sourcetracing.systems.outputs import SplitOutputs

    table = pd.DataFrame(
        [
            {
                "scorer": "knn",
                "setting": json.dumps({"k": k}),
                "held_out": h,
                "auroc": a,
                "n_unseen": 4,
                "n_known": 4,
            }
            for k, aurocs in {1: (0.6, 0.7), 5: (0.9, 0.8), 10: (0.95, 0.5)}.items()
            for h, a in zip(("a", "b"), aurocs, strict=True)
        ]
    )
    x, rows = _clustered(n_classes=3, versions=1)
    train = SplitOutputs(rows.assign(known=True), embeddings=x)
    options, candidates = tune("knn", {"k": 2, "chunk_size": 64}, "crossfit", train, None, crossfit=table)
    assert options["k"] == 5 and options["chunk_size"] == 64
    assert {r["k"]: r["crossfit_auroc"] for r in candidates}[5] == pytest.approx(0.85)
    # no evidence for this system: the embedding hold-out decides, as ood.tune holdout does
    options, candidates = tune("knn", {"k": 2, "chunk_size": 64}, "crossfit", train, None, crossfit=None)
    assert candidates and "holdout_auroc" in candidates[0]


def test_statistics_systems_export_the_evidence_and_the_ood_step_counts_it(tmp_path) -> None:
    from test_reference import _corpus

    from sourcetracing.config import load_config
    from sourcetracing.judge import judge_system
    from sourcetracing.ood.report import select_on_dev
    from sourcetracing.summary import dev_selected, experiment_rows
    from sourcetracing.systems.outputs import SystemOutputs
    from sourcetracing.systems.stats import export_stats

    root = tmp_path / "data"
    proto = _corpus(root, np.random.default_rng(0))
    overrides = [
        f"exp_dir={tmp_path / 'exp'}", f"data.root={root}", f"data.protocols={proto}", "stats.jobs=1",
        "stats.augment=[codec]", "ood.tune=crossfit", "ood.select=unseen_auroc",
    ]  # fmt: skip
    cfg = load_config(None, overrides)
    export_stats(cfg)
    outputs = SystemOutputs.read(tmp_path / "exp" / "stats" / "outputs")
    assert outputs.crossfit is not None and set(outputs.crossfit["held_out"]) == set(outputs.class_names)
    judge_system(cfg, "stats")
    info = json.loads((tmp_path / "exp" / "stats" / "ood_step" / "thresholds.json").read_text())
    assert info["select"] == "unseen_auroc"
    knn = info["scorers"]["knn"]
    assert knn["tuning"]["mode"] == "crossfit" and "crossfit_auroc" in knn["tuning"]["candidates"][0]
    assert set(knn["crossfit_aurocs"]) == set(outputs.class_names)
    assert knn["unseen_systems"] == {"dev": 1, "train_held_out": 3}
    # every unseen system weighs the same: dev's one and the three held out of a refit
    summary = pd.read_csv(tmp_path / "exp" / "stats" / "ood_step" / "ood_summary.csv")
    dev_unseen = summary[(summary.split == "dev") & summary.subset.str.startswith("unseen_system:")]
    per_system = [*dev_unseen.loc[dev_unseen.scorer == "knn", "auroc"], *knn["crossfit_aurocs"].values()]
    assert knn["unseen_auroc"] == pytest.approx(np.mean(per_system))
    assert info["default"] == select_on_dev(info["scorers"], "unseen_auroc")
    rows, _ = experiment_rows(tmp_path / "exp")
    assert dev_selected(rows) == ("stats", info["default"])
    # nothing of eval feeds the evidence: other eval audio, the same table
    before = outputs.crossfit.copy()
    import shutil

    for wav in sorted((root / "fake").rglob("eval_*.wav"))[:6]:
        wav.write_bytes((root / "fake" / "en" / "sys_a" / "broken.wav").read_bytes())
    shutil.rmtree(tmp_path / "exp" / "stats" / "cache")  # computed again from the changed audio
    export_stats(cfg)
    assert len(SystemOutputs.read(tmp_path / "exp" / "stats" / "outputs").split("eval").rows) < 20
    pd.testing.assert_frame_equal(SystemOutputs.read(tmp_path / "exp" / "stats" / "outputs").crossfit, before)
    judge_system(cfg, "stats")  # ... and the same choice with the same evidence behind it
    again = json.loads((tmp_path / "exp" / "stats" / "ood_step" / "thresholds.json").read_text())
    assert again["default"] == info["default"]
    for name, entry in info["scorers"].items():
        assert again["scorers"][name]["unseen_auroc"] == pytest.approx(entry["unseen_auroc"], nan_ok=True)
        assert again["scorers"][name]["tuning"]["settings"] == entry["tuning"]["settings"]
