"""The plain reference (``plain_mfcc``): a handcrafted open-set baseline that is not a straw man.

Exactly these settings, with nothing chosen on dev or tuned:

- 30 MFCCs (librosa's default analysis) of the clip's **first 4 s** (a shorter clip as it is, never
  padded), their mean and standard deviation over time: 60 values per clip;
- standardised with the train clips' mean and spread (originals only, no augmented copies);
- L2-normalised; OOD score = cosine distance to the **5th-nearest** train clip (``knn`` with k = 5).

It is exported through the file contract like any system (embeddings = the standardised
statistics, its closed-set decision a logistic regression on them) and judged with that one
scorer only. Its outputs say ``"reference": true``: the summary reports every system against it,
and no dev choice (the dev-chosen system, the fusion's members) ever picks it.

    python scripts/reference_baseline.py --config configs/demo_hard.yaml   # mfcc, then plain_mfcc
"""

from __future__ import annotations

from pathlib import Path

from sourcetracing.config import Config
from sourcetracing.layout import ExperimentLayout
from sourcetracing.systems.mfcc import export_statistics, mfcc_jobs
from sourcetracing.systems.outputs import OutputsMeta

SYSTEM = "plain_mfcc"
N_MFCC = 30
SECONDS = 4.0
K = 5
SCORER = "knn"


def plain_settings(cfg: Config) -> dict:
    """What the plain reference's statistics depend on (besides the clips)."""
    return {
        "groups": ["mfcc_plain"], "n_mfcc": N_MFCC, "crop": "head", "sample_rate": int(cfg.data.sample_rate),
        "max_len_s": SECONDS, "min_len_s": float(cfg.data.min_len_s), "projection": "none",
    }  # fmt: skip


def plain_config(cfg: Config) -> Config:
    """The experiment's config with the plain reference's fixed OOD step: k-NN, k = 5, nothing tuned."""
    out = cfg.clone()
    out.ood.scorers = [SCORER]
    out.ood.default = SCORER
    out.ood.tune = "none"
    out.ood[SCORER] = {**dict(out.ood.get(SCORER, {})), "k": K}
    return out


def export_plain(cfg: Config, n_jobs: int | None = None) -> Path:
    """Compute, fit (standardiser only matters) and export the plain reference's outputs."""
    description = (
        f"plain reference: {N_MFCC} MFCCs of the first {SECONDS:g} s, mean + std, standardised, {K}-NN cosine"
    )
    return export_statistics(
        cfg,
        SYSTEM,
        plain_settings(cfg),
        mfcc_jobs(cfg, n_jobs),
        (),
        description,
        extra_meta={"reference": True},
    )


def is_reference(layout: ExperimentLayout, system: str) -> bool:
    """Whether a system's outputs mark it as a reference (reported, never chosen)."""
    meta = OutputsMeta.of(layout.system(system))
    return meta is not None and meta.reference
