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
dev-chosen system, the fusion's members) can pick among them. Systems that differ only in their
groups or projection share one pass over the audio (:func:`export_stats_systems`): the union of
their groups is computed once (``<exp>/stats_shared/``) and each takes its own columns, the same
numbers a pass of its own would give.

    python scripts/stats_system.py --config configs/demo_hard.yaml
"""

from __future__ import annotations

from pathlib import Path

from sourcetracing.config import Config
from sourcetracing.layout import ExperimentLayout
from sourcetracing.provenance import data_digest, step_lock
from sourcetracing.systems.mfcc import SplitStatistics, compute_statistics, export_statistics, group_columns

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


def _jobs(cfg: Config, n_jobs: int | None) -> int:
    return int(n_jobs or cfg.stats.jobs or max(1, cfg.features.num_workers))


def export_stats(
    cfg: Config, n_jobs: int | None = None, system: str = SYSTEM, computed: SplitStatistics | None = None
) -> Path:
    """Compute the statistics (with augmented train copies; or take them ``computed``), fit, save and
    export one system."""
    s = cfg.stats
    description = f"utterance statistics ({', '.join(s.features)}), {s.projection} projection, train augmented with {list(s.augment)}"
    return export_statistics(
        cfg, system, stats_settings(cfg), _jobs(cfg, n_jobs), tuple(s.augment), description, computed
    )


def _audio_pass(cfg: Config) -> str:
    """What one pass over the audio depends on besides the groups: systems with the same share it."""
    settings = {k: v for k, v in stats_settings(cfg).items() if k not in ("groups", "projection")}
    return data_digest([settings, list(cfg.stats.augment), int(cfg.seed)])


def shared_statistics(systems: dict[str, Config], n_jobs: int | None = None) -> dict[str, SplitStatistics]:
    """For systems that need the same pass over the audio (all but groups and projection equal), the
    statistics of the union of their groups, computed once; each such system -> its own columns."""
    passes: dict[str, list[str]] = {}
    for name, cfg in systems.items():
        passes.setdefault(_audio_pass(cfg), []).append(name)
    out: dict[str, SplitStatistics] = {}
    for digest, names in passes.items():
        if len(names) < 2:
            continue
        first = systems[names[0]]
        union = list(dict.fromkeys(g for n in names for g in systems[n].stats.features))
        settings = {**stats_settings(first), "groups": union, "projection": "none"}
        layout = ExperimentLayout.of(first)
        with step_lock(layout.locks / "stats-shared.lock", "the shared statistics"):
            computed = compute_statistics(
                first, settings, _jobs(first, n_jobs), tuple(first.stats.augment),
                layout.shared_statistics / digest[:16],
            )  # fmt: skip
        sr, n_mfcc = int(settings["sample_rate"]), int(settings["n_mfcc"])
        for name in names:
            cols = group_columns(sr, union, list(systems[name].stats.features), n_mfcc)
            out[name] = {split: (x[:, cols], kept, bad) for split, (x, kept, bad) in computed.items()}
    return out


def export_stats_systems(cfg: Config, n_jobs: int | None = None) -> dict[str, Path]:
    """Export ``stats`` and each of ``stats.variants`` (one audio pass for those that can share it)."""
    systems = stats_systems(cfg)
    shared = shared_statistics(systems, n_jobs)
    return {
        name: export_stats(c, n_jobs, system=name, computed=shared.get(name)) for name, c in systems.items()
    }
