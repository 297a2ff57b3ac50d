"""The utterance-statistics system: whole-clip statistics (MFCC, prosody, long-term spectrum) with a
discriminant projection learned on the known systems, trained with augmented copies.

Each clean clip is summarised by the groups of :mod:`sourcetracing.systems.utterance_features`
named in ``stats.features`` (whole clip by default, no wrap padding). The train clips also give the
statistics of their augmented copies (``stats.augment``: the feature store's versions, drawn the
same seeded way), so the fit sees each known system through rooms, noise, babble and codecs. A
standardiser is fitted on train; with ``stats.projection: lda`` a shrinkage linear discriminant
analysis (scikit-learn, ``solver="eigen", shrinkage="auto"``) projects the statistics onto its
``K - 1`` discriminant directions, which weigh each statistic by how well it separates systems
relative to how much it varies within one (text, channel); the exported *embeddings* are these
projections of every clip (train: with its augmented copies, the reference bank of the OOD scorers)
and the *logits* the log-probabilities of a logistic regression on them. Every applicable OOD scorer
then judges it like any system. The machinery is shared with the MFCC reference
(:mod:`sourcetracing.systems.mfcc`).

``stats.variants`` adds more statistics systems (other groups, projection or augmentation), each
exported and judged under its own name beside ``stats``, so that the dev-only choices (the
dev-chosen system, the fusion's members) can pick among them.

    python scripts/stats_system.py --config configs/demo_hard.yaml
"""

from __future__ import annotations

from pathlib import Path

from sourcetracing.config import Config
from sourcetracing.systems.mfcc import export_statistics

SYSTEM = "stats"


def stats_settings(cfg: Config) -> dict:
    """What the statistics system's features and model depend on (besides the clips)."""
    s = cfg.stats
    return {
        "groups": list(s.features), "n_mfcc": int(s.n_mfcc), "crop": bool(s.crop),
        "sample_rate": int(cfg.data.sample_rate), "max_len_s": float(cfg.data.max_len_s),
        "min_len_s": float(cfg.data.min_len_s), "projection": str(s.projection),
    }  # fmt: skip


def stats_systems(cfg: Config) -> dict[str, Config]:
    """``stats`` and each of ``stats.variants``: system name -> the config it is made with (the
    variant's overrides merged into the ``stats`` section; ``variants`` emptied)."""
    systems = {SYSTEM: cfg}
    for name, overrides in cfg.stats.variants.items():
        variant = cfg.clone()
        variant.stats.update(Config(overrides).clone())
        variant.stats.variants = {}
        systems[name] = variant
    return systems


def export_stats(cfg: Config, n_jobs: int | None = None, system: str = SYSTEM) -> Path:
    """Compute the statistics (with augmented train copies), fit, save and export one system."""
    s = cfg.stats
    jobs = int(n_jobs or s.jobs or max(1, cfg.features.num_workers))
    description = f"utterance statistics ({', '.join(s.features)}), {s.projection} projection, train augmented with {list(s.augment)}"
    return export_statistics(cfg, system, stats_settings(cfg), jobs, tuple(s.augment), description)
