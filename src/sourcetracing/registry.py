"""Registries: every component kind (front ends, models, GE2E encoders, OOD scorers, systems,
robustness conditions) is looked up by name, each entry with its default settings.

A new component is one decorated definition in one new file plus its config section::

    from sourcetracing.features.frontends import FRONTENDS

    @FRONTENDS.register("myfeat", defaults={"n_bins": 64})
    def build_myfeat(settings, device, sample_rate): ...

The config then accepts ``frontend.name: myfeat`` and ``frontend.myfeat.n_bins: 32``. Built-in
entries live in modules that a registry imports the first time it is asked for anything.
"""

from __future__ import annotations

import copy
import difflib
import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sourcetracing.errors import ConfigError


@dataclass
class Entry:
    """One registered component: the object (a class or factory), its defaults and a description."""

    name: str
    obj: Any
    defaults: dict[str, Any] = field(default_factory=dict)
    doc: str = ""


class Registry:
    """Name -> component, with default settings per entry; built-ins load lazily from ``builtins``."""

    def __init__(self, kind: str, config_key: str, builtins: Sequence[str] = ()):
        self.kind = kind
        self.config_key = config_key  # where the choice lives in the config, for messages
        self._builtins = tuple(builtins)
        self._loaded = False
        self._entries: dict[str, Entry] = {}

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._builtins:
                importlib.import_module(module)

    def register(
        self, name: str, defaults: dict[str, Any] | None = None, doc: str = ""
    ) -> Callable[[Any], Any]:
        """Decorator adding ``obj`` under ``name``; registering a name twice is an error."""

        def wrap(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            summary = doc or next(iter((obj.__doc__ or "").strip().splitlines()), "")
            self._entries[name] = Entry(name, obj, dict(defaults or {}), summary)
            if isinstance(obj, type):
                obj.registry_name = name
            return obj

        return wrap

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register temporary components clean up with this)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def entry(self, name: str) -> Entry:
        self._load()
        if name not in self._entries:
            close = difflib.get_close_matches(str(name), list(self._entries), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown {self.kind} '{name}' in {self.config_key}{hint}; choose from: {', '.join(self.names())}"
            )
        return self._entries[name]

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def defaults(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.entry(name).defaults)

    def all_defaults(self) -> dict[str, dict[str, Any]]:
        """``{name: defaults}`` of every entry (the config sections of this kind)."""
        return {name: self.defaults(name) for name in self.names()}
