"""The utterance-statistics system: whole-clip statistics (MFCC, prosody, long-term spectrum) with a
discriminant projection learned on the known systems.

Each clean clip is summarised by the groups of :mod:`sourcetracing.systems.utterance_features`
named in ``stats.features`` (whole clip by default, no wrap padding). A standardiser is fitted on
train; with ``stats.projection: lda`` a shrinkage linear discriminant analysis (scikit-learn,
``solver="eigen", shrinkage="auto"``) is fitted on the train clips of the known systems and the
statistics are projected onto its ``K - 1`` discriminant directions, which weigh each statistic
by how well it separates systems relative to how much it varies within one (channel, text); the
exported *embeddings* are these projections (``projection: none`` keeps the standardised
statistics) and the *logits* the log-probabilities of a logistic regression on them. Every
applicable OOD scorer then judges it like any system.

    python scripts/stats_system.py --config configs/demo_hard.yaml
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sourcetracing.config import Config
from sourcetracing.data.protocols import prepare_splits, protocol_digest
from sourcetracing.errors import DataError
from sourcetracing.layout import ExperimentLayout
from sourcetracing.provenance import data_digest, step_lock
from sourcetracing.systems.export import output_rows, record_pass
from sourcetracing.systems.mfcc import split_features
from sourcetracing.systems.outputs import SplitOutputs, SystemOutputs

SYSTEM = "stats"


def fit_projection(z_train: np.ndarray, y_train: np.ndarray, projection: str):
    """A fitted ``transform`` (identity or shrinkage LDA) for standardised statistics."""
    if projection == "none":
        return lambda z: z
    if projection != "lda":
        raise DataError(f"stats.projection must be lda or none, got {projection!r}")
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    k = len(np.unique(y_train))
    lda = LinearDiscriminantAnalysis(
        solver="eigen", shrinkage="auto", n_components=min(k - 1, z_train.shape[1])
    )
    lda.fit(z_train, y_train)
    return lda.transform


def export_stats(cfg: Config, n_jobs: int | None = None) -> Path:
    """Compute the statistics, fit standardiser, projection and classifier on train, export every split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    s = cfg.stats
    splits, label_map = prepare_splits(cfg)
    layout = ExperimentLayout.of(cfg)
    system = layout.system(SYSTEM)
    settings = {
        "groups": list(s.features), "n_mfcc": int(s.n_mfcc), "crop": bool(s.crop),
        "sample_rate": int(cfg.data.sample_rate), "max_len_s": float(cfg.data.max_len_s),
        "min_len_s": float(cfg.data.min_len_s),
    }  # fmt: skip
    jobs = int(n_jobs or s.jobs or max(1, cfg.features.num_workers))
    with step_lock(layout.locks / f"export-{SYSTEM}.lock", "the outputs of stats"):
        feats = {}
        for split, df in splits.items():
            x, kept, bad = split_features(
                df, cfg.data.root, settings, jobs, cache=system.root / "cache" / f"{split}.npz"
            )
            record_pass(SYSTEM, split, len(df))
            if split == "train":
                keep = kept["label"].to_numpy() >= 0
                x, kept = x[keep], kept[keep].reset_index(drop=True)
            feats[split] = (x, kept)
            if len(bad):
                print(
                    f"{split}: {len(bad)} unusable clip(s) left out (first: {bad['path'].iloc[0]}: {bad['reason'].iloc[0]})"
                )
        x_train, train_rows = feats["train"]
        y_train = train_rows["label"].to_numpy(int)
        if len(np.unique(y_train)) < 2:
            raise DataError("the statistics system needs at least two known systems in train")
        scaler = StandardScaler().fit(x_train)
        project = fit_projection(scaler.transform(x_train), y_train, str(s.projection))
        e_train = project(scaler.transform(x_train))
        clf = LogisticRegression(max_iter=3000).fit(e_train, y_train)
        names = list(label_map.known)
        out = {}
        for split, (x, rows) in feats.items():
            e = project(scaler.transform(x)) if len(x) else np.zeros((0, e_train.shape[1]))
            logits = np.full((len(e), len(names)), -30.0, dtype=np.float32)
            if len(e):
                logits[:, clf.classes_] = np.log(np.clip(clf.predict_proba(e), 1e-13, None))
            out[split] = SplitOutputs(output_rows(rows), embeddings=np.asarray(e, np.float32), logits=logits)
        outputs = SystemOutputs(
            SYSTEM, names, out,
            meta={"task": "statistics", "settings": {**settings, "projection": str(s.projection)},
                  "description": f"utterance statistics ({', '.join(settings['groups'])}), {s.projection} projection"},
        )  # fmt: skip
        inputs = {
            "protocols": data_digest({k: protocol_digest(df) for k, df in splits.items()}),
            "label_map": label_map.digest(), "settings": data_digest([settings, str(s.projection)]),
        }  # fmt: skip
        outputs.write(system.outputs, inputs)
    print(f"stats outputs written to {system.outputs}")
    return system.outputs
