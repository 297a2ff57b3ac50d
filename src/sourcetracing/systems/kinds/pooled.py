"""The pooled kind (``pooled.enabled``): pooled front-end frames of the whole clip and a k-NN vote,
judged on its exported outputs (its model does not run on new audio here)."""

from __future__ import annotations

from sourcetracing.components import SYSTEM_KINDS
from sourcetracing.config import Config
from sourcetracing.systems.handle import Made, SystemKind


@SYSTEM_KINDS.register("pooled")
class PooledKind(SystemKind):
    """The pooled-frames k-NN system (scripts/pooled_system.py), judged with its own k-NN scorer."""

    order = 5

    def systems(self, cfg: Config) -> dict[str, Made]:
        if not cfg.pooled.enabled:
            return {}
        from sourcetracing.systems import pooled

        def run(checkpoint=None, n_jobs=None):
            return pooled.export_pooled(cfg, n_jobs)

        return {pooled.SYSTEM: Made(pooled.pooled_config(cfg), "python scripts/pooled_system.py", run)}

    def refusal(self, cfg: Config, system: str, meta) -> str | None:
        return (
            "its outputs come from the pooled system, which this config leaves off (add pooled.enabled=true)"
        )
