"""Which system ``trace.py`` uses when ``--system`` is not given: the one chosen on dev alone.

The choice is the summary's (:func:`sourcetracing.summary.dev_selected` over the experiment's judged
systems: among each system's dev-chosen scorer, the one the experiment's dev-only rule ``ood.select``
picks; reference systems never). A chosen system must run on audio: the fusion does through its
members when every member can; any other that cannot (a drop-in score file, the hybrid or pooled
systems) gives way to the best system on dev that can, and the reason is said.
"""

from __future__ import annotations

from dataclasses import dataclass

from sourcetracing.config import Config
from sourcetracing.errors import MissingInputError
from sourcetracing.ood.report import RULE_DESCRIPTIONS
from sourcetracing.summary import dev_selected, experiment_rows
from sourcetracing.systems.handle import fuses_members, why_not_traceable

RULES = RULE_DESCRIPTIONS


@dataclass(frozen=True)
class TraceChoice:
    """The system to trace with, its scorer (None: the system's own default) and why."""

    system: str
    scorer: str | None
    reason: str


def choose_system(cfg: Config, fusion: bool = True) -> TraceChoice:
    """The system and scorer chosen on dev alone, or the best one on dev that runs on audio (with
    ``fusion=False`` the fusion counts as not runnable); ``trace.system`` when nothing is judged yet."""
    frame, _ = experiment_rows(cfg.exp_dir)
    pick = dev_selected(frame) if len(frame) else None
    if pick is None:
        return TraceChoice(
            str(cfg.trace.system), None, f"no judged system in {cfg.exp_dir} to choose on dev: trace.system"
        )
    rule = RULES.get(str(frame["select"].iloc[0]) if "select" in frame else "dev_eer", "the dev-only rule")
    system, scorer = pick
    why = why_not_traceable(cfg, system, fusion)
    if why is None:
        how = (
            " (traced through its members with its saved weights and scaling)"
            if fuses_members(cfg, system)
            else ""
        )
        return TraceChoice(system, scorer, f"chosen on dev: {rule}{how}")
    runnable = frame[[why_not_traceable(cfg, s, fusion) is None for s in frame["system"]]]
    alt = dev_selected(runnable) if len(runnable) else None
    if alt is None:
        raise MissingInputError(
            f"'{system}' was chosen on dev but cannot trace ({why}), and no other judged system can: "
            "pass --system"
        )
    return TraceChoice(
        alt[0], alt[1],
        f"'{system}' ({scorer}) was chosen on dev but {why}; {alt[0]} is the best on dev that runs on audio ({rule})",
    )  # fmt: skip


__all__ = ["TraceChoice", "choose_system", "why_not_traceable"]
