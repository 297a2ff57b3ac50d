"""Dev-only selection rules compared over runs: picks from dev numbers alone, eval only reported."""

from __future__ import annotations

import pandas as pd
import pytest

from sourcetracing import summary


def _candidates(eval_a: float, eval_b: float) -> pd.DataFrame:
    # a: the best pooled dev EER but one dev-unseen system it misses; b: never fails badly on dev
    return pd.DataFrame(
        [
            {"system": "a", "scorer": "knn", "reference": False, "dev_eer_%": 5.0, "dev_auroc": 0.97,
             "dev_unseen_mean_auroc": 0.95, "dev_unseen_worst_auroc": 0.60, "eval_eer_%": eval_a},
            {"system": "b", "scorer": "knn", "reference": False, "dev_eer_%": 7.0, "dev_auroc": 0.96,
             "dev_unseen_mean_auroc": 0.94, "dev_unseen_worst_auroc": 0.85, "eval_eer_%": eval_b},
        ]
    )  # fmt: skip


def test_each_rule_picks_from_dev_numbers_and_reports_eval_against_the_plain_reference(monkeypatch) -> None:
    runs = {"r0": _candidates(20.0, 8.0), "r1": _candidates(30.0, 9.0)}
    plain = pd.DataFrame([{"system": summary.PLAIN_REFERENCE, "eval_eer_%": 20.0}])
    monkeypatch.setattr(summary, "_dev_candidates", lambda exp: runs[str(exp)])
    monkeypatch.setattr(summary, "experiment_rows", lambda exp: (plain, []))
    table = summary.rule_table(["r0", "r1"]).set_index("rule (dev only)")
    assert table.loc["lowest dev EER (ties: dev AUROC)", "picks"] == "a (knn); a (knn)"
    assert table.loc["lowest dev EER (ties: dev AUROC)", "eval OOD EER (%) per run"] == "20.0, 30.0"
    worst = table.loc["highest lowest AUROC over dev's unseen systems"]
    assert worst["picks"] == "b (knn); b (knn)" and worst["mean ± sd"] == "8.5 ± 0.7"
    assert worst[f"runs at ≤ ½ {summary.PLAIN_REFERENCE}"] == "2 of 2"
    # eval numbers never move a pick: swap them and every rule picks the same
    swapped = {k: v.assign(**{"eval_eer_%": v["eval_eer_%"].to_numpy()[::-1]}) for k, v in runs.items()}
    monkeypatch.setattr(summary, "_dev_candidates", lambda exp: swapped[str(exp)])
    again = summary.rule_table(["r0", "r1"]).set_index("rule (dev only)")
    assert (again["picks"] == table["picks"]).all()


def test_the_worst_unseen_rule_is_recorded_and_followed_by_the_ood_step(tmp_path) -> None:
    import json

    from test_judge import write_outputs

    from sourcetracing.config import load_config
    from sourcetracing.judge import judge_system
    from sourcetracing.ood.report import select_on_dev

    cfg = load_config(
        None, [f"exp_dir={tmp_path / 'exp'}", "ood.knn.k=3", "ood.select=dev_worst_unseen_auroc"]
    )
    write_outputs(tmp_path / "exp", "mine", with_logits=True, spread=1.5)
    _, summary = judge_system(cfg, "mine")
    info = json.loads((tmp_path / "exp" / "mine" / "ood_step" / "thresholds.json").read_text())
    assert info["select"] == "dev_worst_unseen_auroc"
    dev_unseen = summary[(summary.split == "dev") & summary.subset.str.startswith("unseen_system:")]
    for name, entry in info["scorers"].items():
        worst = dev_unseen.loc[dev_unseen.scorer == name, "auroc"].min()
        assert entry["dev_worst_unseen_auroc"] == pytest.approx(worst)
    assert info["default"] == select_on_dev(info["scorers"], "dev_worst_unseen_auroc")
    with pytest.raises(ValueError, match="selection rule"):
        select_on_dev(info["scorers"], "eval_eer")
