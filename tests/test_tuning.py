"""Scorer settings chosen on dev or by holding out known systems, never on eval."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sourcetracing.ood.metrics import eer
from sourcetracing.ood.scorers import build_scorer
from sourcetracing.ood.tuning import candidates, tune
from sourcetracing.systems.outputs import SplitOutputs


def _split(rng, n_per: int, systems: list[int], spread: float = 1.0) -> SplitOutputs:
    labels = np.repeat(systems, n_per)
    centres = {s: np.eye(12)[s % 12] * 6 for s in set(systems)}
    emb = np.stack([centres[s] + rng.normal(0, spread, 12) for s in labels])
    rows = pd.DataFrame(
        {"clip_id": [f"c{i}" for i in range(len(labels))], "model_name": [f"s{s}" for s in labels]}
    )
    rows["label"] = np.where(labels < 6, labels, -1)
    rows["known"] = rows["label"] >= 0
    return SplitOutputs(rows, embeddings=emb, logits=rng.normal(size=(len(labels), 6)))


def test_candidates_cover_the_grid_on_top_of_the_options() -> None:
    grid = candidates("knn", {"k": 5, "chunk_size": 64})
    assert [g["k"] for g in grid] == [1, 2, 3, 5, 10, 20] and all(g["chunk_size"] == 64 for g in grid)
    assert candidates("msp", {"chunk_size": 64}) == [{"chunk_size": 64}]


def test_dev_mode_keeps_the_lowest_dev_eer_and_reads_nothing_else() -> None:
    rng = np.random.default_rng(0)
    train, dev = _split(rng, 30, list(range(6))), _split(rng, 10, [0, 1, 2, 3, 4, 5, 7, 8])
    options, table = tune("knn", {"k": 5, "chunk_size": 64}, "dev", train, dev)
    assert len(table) == 6 and options["k"] in (1, 2, 3, 5, 10, 20)
    best = min(table, key=lambda r: (r["dev_eer"], -r["dev_auroc"]))
    assert [r["k"] for r in table] == [1, 2, 3, 5, 10, 20]  # every row names its k, the options' too
    assert options["k"] == best["k"]
    scorer = build_scorer("knn", **options).fit(train.embeddings, None, train.rows["label"].to_numpy())
    assert eer(scorer.score(dev.embeddings, None), dev.is_ood)[0] == best["dev_eer"]


def test_holdout_mode_needs_no_dev_and_leaves_logit_scorers_alone() -> None:
    rng = np.random.default_rng(1)
    train = _split(rng, 25, list(range(6)))
    options, table = tune("mahalanobis", {"reg": 1e-6, "chunk_size": 64}, "holdout", train, None)
    assert len(table) == 4 and all(0.5 <= r["holdout_auroc"] <= 1.0 for r in table)
    assert options["reg"] == max(table, key=lambda r: r["holdout_auroc"])["reg"]
    assert tune("msp", {"chunk_size": 64}, "holdout", train, None) == ({"chunk_size": 64}, [])
    assert tune("knn", {"k": 5}, "none", train, None) == ({"k": 5}, [])
