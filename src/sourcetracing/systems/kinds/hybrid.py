"""The hybrid kind (``hybrid.enabled``, named ``hybrid.name``): pooled frame features and utterance
statistics in one network, judged on its exported outputs (its model does not run on new audio here)."""

from __future__ import annotations

from sourcetracing.components import SYSTEM_KINDS
from sourcetracing.config import Config
from sourcetracing.provenance import file_digest, require_same
from sourcetracing.systems.handle import Made, SystemHandle, SystemKind


@SYSTEM_KINDS.register("hybrid")
class HybridKind(SystemKind):
    """The hybrid system of frame features and statistics (scripts/hybrid_system.py)."""

    order = 4

    def systems(self, cfg: Config) -> dict[str, Made]:
        if not cfg.hybrid.enabled:
            return {}
        from sourcetracing.systems import hybrid

        def run(checkpoint=None, n_jobs=None):
            return hybrid.export_hybrid(cfg, n_jobs)

        return {hybrid.system_name(cfg): Made(cfg, "python scripts/hybrid_system.py", run)}

    def refusal(self, cfg: Config, system: str, meta) -> str | None:
        if cfg.hybrid.enabled:
            return (
                f"its outputs come from a hybrid system, and this config's is hybrid.name={cfg.hybrid.name}"
            )
        return (
            "its outputs come from the hybrid system, which this config leaves off (add hybrid.enabled=true)"
        )

    def check(self, handle: SystemHandle) -> None:
        from sourcetracing.systems.hybrid import MODEL_FILE

        path = handle.layout.models / MODEL_FILE
        if path.is_file() and handle.inputs.get("model"):
            require_same(
                handle.inputs["model"], file_digest(path), str(path), f"the step that exports '{handle.name}'"
            )
