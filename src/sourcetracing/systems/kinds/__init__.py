"""The system kinds: one module per kind, each registering one :class:`~sourcetracing.systems.handle.SystemKind`
in :data:`~sourcetracing.components.SYSTEM_KINDS`. Every module of this package is loaded the first
time the registry is asked for a kind, so a new kind is one new file here (plus its config section)."""

from __future__ import annotations

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
