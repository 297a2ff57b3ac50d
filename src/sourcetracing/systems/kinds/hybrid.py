"""The hybrid kind (``hybrid.enabled``, named ``hybrid.name``): pooled frame features and utterance
statistics in one network. A statistics-only network (``hybrid.inputs: stats``, e.g. the anchored
residual on the statistics' LDA) runs on new audio like the statistics systems — the robustness
card, tracing — since it needs nothing but the clip's statistics; one that takes frame features is
judged on its exported outputs only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sourcetracing.components import SYSTEM_KINDS
from sourcetracing.config import Config
from sourcetracing.errors import BundleError, StaleInputError
from sourcetracing.layout import SystemLayout
from sourcetracing.systems.handle import Made, Runner, SystemHandle, producer
from sourcetracing.systems.kinds.reference import StatisticsKind
from sourcetracing.systems.outputs import OutputsMeta


@SYSTEM_KINDS.register("hybrid")
class HybridKind(StatisticsKind):
    """The hybrid system of frame features and statistics (scripts/hybrid_system.py); runs on audio
    through the statistics kind's path when it takes statistics alone."""

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

    @staticmethod
    def model_path(sys_layout: SystemLayout) -> Path:
        from sourcetracing.systems.hybrid import MODEL_FILE

        return sys_layout.models / MODEL_FILE

    def why_not_runnable(self, cfg: Config | None, sys_layout: SystemLayout, meta: OutputsMeta) -> str | None:
        inputs = (meta.get("settings") or {}).get("inputs")
        if inputs != "stats":
            return (
                f"its network takes frame features (hybrid.inputs={inputs}): it is judged on its exported "
                "outputs only (hybrid.inputs=stats runs on audio)"
            )
        return super().why_not_runnable(cfg, sys_layout, meta)

    def load_model(self, path: Path, handle: SystemHandle) -> Any:
        from sourcetracing.systems.hybrid import SavedHybrid

        model = SavedHybrid.load(path)
        if not model.runs_on_statistics_alone:
            raise StaleInputError(
                f"{path} holds no statistics settings: rerun {producer(handle.cfg, handle.name)}"
            )
        return model

    def bundle_model(self, runner: Runner) -> tuple[dict, dict, dict | None]:
        raise BundleError(
            f"'{runner.system}' cannot be bundled yet: tracer bundles hold statistics, classifier and GE2E systems"
        )

    def runner_from_bundle(self, system, model, weights, audio, frontend, device) -> Runner:
        raise BundleError("tracer bundles hold no hybrid systems")
