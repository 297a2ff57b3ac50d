"""The fusion kind: a logistic regression of other systems' OOD scores fitted on dev; it runs on
audio through its members (each member system's model and saved scorer, its saved weights and scaling)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sourcetracing.components import SYSTEM_KINDS
from sourcetracing.config import Config
from sourcetracing.layout import ExperimentLayout
from sourcetracing.ood.step import OODStep
from sourcetracing.provenance import require_same
from sourcetracing.systems.handle import Made, SystemHandle, SystemKind

REFIT = "python scripts/fusion.py --config <your config>"


@dataclass(frozen=True)
class Fused:
    """What a fusion recorded: its members (``system:scorer``, in order), weights, intercept, dev scaling
    and the member whose closed-set decision it takes."""

    members: list[str]
    weights: np.ndarray
    intercept: float
    mean: np.ndarray
    std: np.ndarray
    closed_set_from: str

    @property
    def systems(self) -> list[str]:
        """The member systems, each once, in the fusion's order."""
        return list(dict.fromkeys(m.split(":", 1)[0] for m in self.members))


@SYSTEM_KINDS.register("fusion")
class FusionKind(SystemKind):
    """Score-level fusion of judged systems (scripts/fusion.py)."""

    order = 3
    fuses_members = True

    def systems(self, cfg: Config) -> dict[str, Made]:
        from sourcetracing.systems import fusion

        def run(checkpoint=None, n_jobs=None):
            return fusion.export_fusion(cfg)

        return {fusion.SYSTEM: Made(cfg, "python scripts/fusion.py", run)}

    def fused(self, handle: SystemHandle) -> Fused:
        """The fusion's record, its member systems' OOD steps checked to be the ones it was fitted on."""
        layout = ExperimentLayout.of(handle.cfg)
        meta = handle.meta
        members = [str(m) for m in meta.get("members", [])]
        fused = Fused(
            members, np.asarray([meta.get("weights")[m] for m in members], dtype=np.float64),
            float(meta.get("intercept")),
            np.asarray([meta.get("scaling")["mean"][m] for m in members], dtype=np.float64),
            np.asarray([meta.get("scaling")["std"][m] for m in members], dtype=np.float64), "",
        )  # fmt: skip
        for name in fused.systems:
            member = OODStep.find(layout.system(name))
            if member is None:
                OODStep.read(layout.system(name))  # the missing step's one line
            require_same(handle.inputs.get(name), member.id, f"the OOD step of '{name}'", REFIT)
        source = str(meta.get("closed_set_from") or fused.systems[0])
        return Fused(fused.members, fused.weights, fused.intercept, fused.mean, fused.std, source)
