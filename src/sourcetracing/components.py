"""The registries of every component kind, in one light module (no heavy imports here).

Built-in components register themselves in the modules listed per registry; those modules are
imported the first time a registry is asked for a name or its defaults.
"""

from __future__ import annotations

from sourcetracing.registry import Registry

FRONTENDS = Registry(
    "front end",
    "frontend.name",
    ["sourcetracing.features.spectral", "sourcetracing.features.hf_ssl"],
)
MODELS = Registry("model", "model.name", ["sourcetracing.models.aasist"])
ENCODERS = Registry("GE2E encoder", "ge2e.encoder.name", ["sourcetracing.models.ge2e"])
SCORERS = Registry("OOD scorer", "ood.scorers", ["sourcetracing.ood.scorers"])
# one class per system kind (sourcetracing.systems.handle.SystemKind), one file each in systems/kinds/;
# a system's kind is the ``task`` its outputs' meta.json records
SYSTEM_KINDS = Registry("system kind", "the outputs' meta.json 'task'", ["sourcetracing.systems.kinds"])

__all__ = ["ENCODERS", "FRONTENDS", "MODELS", "SCORERS", "SYSTEM_KINDS"]
