"""Score fusion fitted on dev only, and the utterance-statistics system."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_judge import write_outputs

from sourcetracing.config import load_config
from sourcetracing.errors import DataError
from sourcetracing.judge import judge_system
from sourcetracing.systems.fusion import export_fusion, out_of_fold_scores
from sourcetracing.systems.outputs import SystemOutputs


@pytest.fixture()
def judged(tmp_path):
    cfg = load_config(
        None, [f"exp_dir={tmp_path / 'exp'}", "ood.knn.k=3", "ood.scorers=[knn, mahalanobis, msp]"]
    )
    exp = Path(cfg.exp_dir)
    write_outputs(exp, "one", with_logits=True, seed=0)
    write_outputs(exp, "two", with_logits=False, seed=1)
    for system in ("one", "two"):
        judge_system(cfg, system)
    return cfg


def _shuffle_eval_member_scores(exp: Path, seed: int) -> None:
    """Permute every member score of eval's score files (what no dev-side fit may read)."""
    for system in ("one", "two"):
        path = exp / system / "ood_step" / "scores_eval.tsv"
        table = pd.read_csv(path, sep="\t")
        for col in ("knn", "mahalanobis", "msp"):
            if col in table:
                table[col] = np.random.default_rng(seed).permutation(table[col].to_numpy())
        table.to_csv(path, sep="\t", index=False)


def test_fusion_is_fitted_on_dev_only_and_judged_like_any_system(judged) -> None:
    cfg = judged
    exp = Path(cfg.exp_dir)
    export_fusion(cfg)
    meta = json.loads((exp / "fusion" / "outputs" / "meta.json").read_text())
    assert 1 <= len(meta["members"]) <= 4 and set(meta["weights"]) == set(meta["members"])
    assert meta["selection"][0]["member"] == meta["members"][0]
    outputs = SystemOutputs.read(exp / "fusion" / "outputs")
    assert set(outputs.splits) == {"dev", "eval"} and outputs.has == {"scores"}
    # nothing in the fit reads eval: changing eval's member scores changes no weight
    _shuffle_eval_member_scores(exp, seed=5)
    export_fusion(cfg)
    again = json.loads((exp / "fusion" / "outputs" / "meta.json").read_text())
    assert again["members"] == meta["members"] and again["weights"] == pytest.approx(meta["weights"])
    results, summary = judge_system(cfg, "fusion")
    assert set(summary["scorer"]) == {"fused"} and results["eval"]["n"] == 18


def test_out_of_fold_scores_never_see_their_unseen_system(monkeypatch) -> None:
    from sourcetracing.systems import fusion

    rng = np.random.default_rng(0)
    groups = np.array(["k"] * 40 + ["u1"] * 10 + ["u2"] * 10 + ["u3"] * 10)
    is_ood = groups != "k"
    x = rng.normal(size=(70, 2)) + is_ood[:, None] * 2.0
    x[:, 1] = np.arange(70)  # a clip id in the features: lets the fake fit see which clips it got
    seen: list[set] = []
    real_fit = fusion._fit

    def recording_fit(xs, ys, **kw):
        seen.append({groups[int(i)] for i in xs[:, 1]})
        return real_fit(xs, ys, **kw)

    monkeypatch.setattr(fusion, "_fit", recording_fit)
    oof = out_of_fold_scores(x, is_ood, groups)
    assert oof.shape == (70,) and np.isfinite(oof).all()
    assert len(seen) == 3 and all(
        len(s & {"u1", "u2", "u3"}) == 2 and "k" in s for s in seen
    )  # one unseen left out each
    single = out_of_fold_scores(x[:50], is_ood[:50], groups[:50])  # one unseen system: random folds
    assert single.shape == (50,)


def test_nonnegative_fusion_weights_match_the_free_fit_or_clip_a_negative_one() -> None:
    from sklearn.linear_model import LogisticRegression

    from sourcetracing.systems.fusion import NonNegativeLogistic

    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.3
    good = rng.normal(size=300) + 1.5 * y
    also = rng.normal(size=300) + 0.8 * y
    x = np.c_[good, also]
    free = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(x, y)
    assert (free.coef_ > 0).all()
    nonneg = NonNegativeLogistic(C=1.0).fit(x, y)  # the same objective: the same model
    np.testing.assert_allclose(nonneg.coef_, free.coef_, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(nonneg.intercept_, free.intercept_, rtol=1e-3, atol=1e-4)
    # a score that says "lower = more OOD": the free fit weighs it negatively, the constrained one at 0
    flipped = np.c_[good, -also]
    assert LogisticRegression(C=1.0, class_weight="balanced").fit(flipped, y).coef_[0, 1] < -0.1
    clipped = NonNegativeLogistic(C=1.0).fit(flipped, y)
    assert clipped.coef_[0, 0] > 0.5 and abs(clipped.coef_[0, 1]) < 1e-6
    alone = LogisticRegression(C=1.0, class_weight="balanced").fit(good[:, None], y)
    np.testing.assert_allclose(clipped.coef_[0, 0], alone.coef_[0, 0], rtol=1e-3)


def test_stats_system_with_lda_projection_and_augmented_train_copies(tmp_path) -> None:
    from test_reference import _corpus

    from sourcetracing.systems.stats import export_stats

    root = tmp_path / "data"
    proto = _corpus(root, np.random.default_rng(0))
    base = [
        f"exp_dir={tmp_path / 'exp'}",
        f"data.root={root}",
        f"data.protocols={proto}",
        "ood.knn.k=3",
        "stats.jobs=1",
    ]
    with pytest.raises(DataError, match="needs audio files under"):  # no MUSAN / RIRS folder: one clear error
        export_stats(load_config(None, base))
    cfg = load_config(None, [*base, "stats.augment=[codec]"])  # the codec version needs no corpus
    export_stats(cfg)
    outputs = SystemOutputs.read(tmp_path / "exp" / "stats" / "outputs")
    train = outputs.split("train")
    assert train.embeddings.shape[1] == 2  # K - 1 discriminant directions for 3 systems
    assert len(train.rows) == 2 * 18 and set(train.rows["version"]) == {"original", "codec"}
    assert len(outputs.split("eval").rows) == 20 and "version" not in outputs.split("eval").rows
    settings = json.loads((tmp_path / "exp" / "stats" / "outputs" / "meta.json").read_text())["settings"]
    assert settings["groups"] == ["mfcc", "prosody", "spectrum"] and settings["augment"] == ["codec"]
    results, summary = judge_system(cfg, "stats")
    assert results["eval"]["accuracy"] >= 0.9
    # the saved model gives the exported numbers again (what robustness and tracing apply to new audio)
    from sourcetracing.systems.mfcc import ReferenceModel, model_path, split_features

    model = ReferenceModel.load(model_path(cfg, "stats"))
    dev = outputs.split("dev")
    from sourcetracing.data.protocols import prepare_splits

    x, kept, _ = split_features(prepare_splits(cfg)[0]["dev"], root, model.settings, 1)
    np.testing.assert_allclose(model.apply(x)[0], dev.embeddings, rtol=1e-5, atol=1e-5)


def test_stats_variants_are_exported_and_judged_as_systems_of_their_own(tmp_path, capsys) -> None:
    import yaml
    from test_faults import call, script_main
    from test_reference import _corpus

    from sourcetracing.layout import ExperimentLayout
    from sourcetracing.summary import experiment_rows

    root = tmp_path / "data"
    proto = _corpus(root, np.random.default_rng(0))
    config = {
        "exp_dir": str(tmp_path / "exp"),
        "data": {"root": str(root), "protocols": str(proto)},
        "ood": {"knn": {"k": 3}},
        "stats": {
            "jobs": 1,
            "augment": ["codec"],
            "variants": {"stats_rate": {"features": ["mfcc", "duration"], "projection": "none"}},
        },
    }
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    code, err, _ = call(script_main("stats_system.py"), ["--config", path], capsys)
    assert code == 0, err
    exp = tmp_path / "exp"
    base = json.loads((exp / "stats" / "outputs" / "meta.json").read_text())["settings"]
    variant = json.loads((exp / "stats_rate" / "outputs" / "meta.json").read_text())["settings"]
    assert base["groups"] == ["mfcc", "prosody", "spectrum"] and base["projection"] == "lda"
    assert variant["groups"] == ["mfcc", "duration"] and variant["projection"] == "none"
    assert variant["augment"] == ["codec"]  # what the variant does not override comes from stats
    # no projection: the embeddings are the standardised statistics (4 * 20 MFCC values + 2 durations)
    assert SystemOutputs.read(exp / "stats_rate" / "outputs").split("dev").embeddings.shape[1] == 82
    cfg = load_config(path)
    assert [s.root.name for s in ExperimentLayout.of(cfg).systems()] == ["stats", "stats_rate"]
    rows, _ = experiment_rows(exp)  # the summary (and so the dev-chosen system) sees both
    assert set(rows["system"]) == {"stats", "stats_rate"}
    from sourcetracing.systems.fusion import candidate_scores

    candidates = candidate_scores(cfg, "dev").columns  # and so does the fusion
    assert {c.split(":")[0] for c in candidates} == {"stats", "stats_rate"}
    # one pass over the audio served both (they differ only in groups and projection) ...
    assert (exp / "stats_shared").is_dir() and not (exp / "stats" / "cache").exists()
    assert not (exp / "stats_rate" / "cache").exists()
    # ... and gave each the numbers a pass of its own gives
    from sourcetracing.systems.stats import export_stats, stats_systems

    for name, system_cfg in stats_systems(cfg).items():
        export_stats(system_cfg, 1, system=f"{name}_alone")
        alone = SystemOutputs.read(exp / f"{name}_alone" / "outputs")
        shared = SystemOutputs.read(exp / name / "outputs")
        for split in ("train", "dev", "eval"):
            assert alone.split(split).rows["clip_id"].tolist() == shared.split(split).rows["clip_id"].tolist()
            np.testing.assert_allclose(
                alone.split(split).embeddings, shared.split(split).embeddings, rtol=1e-5, atol=1e-6
            )


def _noise_system(exp: Path, name: str, n_columns: int, seed: int) -> None:
    """A judged-later system whose only outputs are ``n_columns`` OOD scores of pure noise."""
    from sourcetracing.systems.outputs import SplitOutputs

    real = SystemOutputs.read(exp / "one" / "outputs")
    rng = np.random.default_rng(seed)
    splits = {}
    for split, part in real.splits.items():
        rows = part.rows.copy()
        rows["predicted"] = real.class_names[0]  # a closed-set decision, always the same class
        if split != "train":
            for i in range(n_columns):
                rows[f"score_n{i}"] = rng.normal(size=len(rows))
        splits[split] = SplitOutputs(rows)
    SystemOutputs(name, real.class_names, splits).write(exp / name / "outputs")


def test_a_fusion_of_noise_is_near_chance_out_of_fold_and_never_chosen_over_a_real_system(tmp_path) -> None:
    from sourcetracing.summary import dev_selected, experiment_rows

    cfg = load_config(
        None,
        [f"exp_dir={tmp_path / 'exp'}", "ood.knn.k=3", "ood.scorers=[knn, msp]",
         "fusion.members=[noise:n0, noise:n1, noise:n2, noise:n3, noise:n4, noise:n5]"],
    )  # fmt: skip
    exp = Path(cfg.exp_dir)
    write_outputs(exp, "one", with_logits=True, seed=0)
    _noise_system(exp, "noise", 6, seed=7)
    for system in ("one", "noise"):
        judge_system(cfg, system)
    export_fusion(cfg)
    _, summary = judge_system(cfg, "fusion")
    dev = summary[(summary.split == "dev") & (summary.subset == "all")].iloc[0]
    assert dev["eer"] > 0.25  # six noise columns fitted on dev: out of fold, no better than chance
    frame, _ = experiment_rows(exp)
    assert dev_selected(frame) == ("one", frame[(frame.system == "one") & frame.default].scorer.iloc[0])


def test_fusion_dev_scores_are_out_of_fold_not_the_dev_fit_predictions(judged) -> None:
    from sourcetracing.systems.fusion import _standardise, candidate_scores

    cfg = judged
    exp = Path(cfg.exp_dir)
    export_fusion(cfg)
    meta = json.loads((exp / "fusion" / "outputs" / "meta.json").read_text())
    assert meta["dev_scores"] == "out-of-fold"
    dev = SystemOutputs.read(exp / "fusion" / "outputs").split("dev")
    members = meta["members"]
    table = candidate_scores(cfg, "dev").loc[dev.rows["clip_id"]]
    x, _, _ = _standardise(table[members], table[members])
    in_sample = x @ np.array([meta["weights"][m] for m in members]) + meta["intercept"]
    exported = dev.scores["fused"]
    assert np.max(np.abs(exported - in_sample)) > 1e-3  # not the dev fit's own predictions
    is_ood = dev.is_ood
    groups = dev.rows["model_name"].to_numpy()
    again = out_of_fold_scores(x, is_ood, groups, nonnegative=meta["weight_rule"] == "nonnegative")
    np.testing.assert_allclose(exported, again, rtol=1e-6, atol=1e-9)  # exactly the cross-fitted scores
    # eval's member scores are not read for dev: permuting them leaves every dev score as it was
    _shuffle_eval_member_scores(exp, seed=3)
    export_fusion(cfg)
    np.testing.assert_array_equal(
        SystemOutputs.read(exp / "fusion" / "outputs").split("dev").scores["fused"], exported
    )
