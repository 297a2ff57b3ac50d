"""The drop-in kind: scores or outputs made outside the toolkit (``scripts/evaluate_scores.py``,
a user's own ``outputs/`` folder): judged like every system, nothing of it runs on audio."""

from __future__ import annotations

from sourcetracing.components import SYSTEM_KINDS
from sourcetracing.systems.handle import DROP_IN, SystemKind


@SYSTEM_KINDS.register(DROP_IN)
class DropInKind(SystemKind):
    """Score files or outputs of a model outside the toolkit."""

    order = 9
