"""One handle for a trained system: opened once, checked once, then its outputs, OOD step and model.

::

    handle = open_system(cfg, "aasist")        # every staleness check, once
    handle.outputs                              # the exported outputs (SystemOutputs, read on first use)
    handle.ood.default, handle.ood.threshold("knn"), handle.ood.load_scorer("knn")   # OODStep
    runner = handle.runner("cpu")               # kinds whose model runs on audio
    ok, waves, errors = runner.read_waves(["clip.wav"])
    logits, embeddings = runner.forward(waves)  # as the export computed them
    runner.run_rows(cfg, "eval", rows, store, condition)   # store rows or clips (robustness)

**System kinds.** What a system is (how it is made, checked, run on audio and bundled) is one
:class:`SystemKind` subclass registered in :data:`~sourcetracing.components.SYSTEM_KINDS`, one file
each in :mod:`sourcetracing.systems.kinds`; a new kind is one file there plus its config section.
The kind of an existing system is the ``task`` its outputs record (:class:`OutputsMeta`); the kind
that *makes* a system under a config is the one whose :meth:`SystemKind.systems` names it
(:func:`made_by`, :func:`export_system`). Nothing outside the kinds compares kind names: callers ask
a kind's capabilities (``runs_on_audio``, ``trained``, ``takes_enrolled``, ``fuses_members``).

**Staleness.** :func:`open_system` refuses, with one line naming the step to rerun, outputs whose
OOD step was fitted on other outputs, outputs made from another checkpoint or statistics model than
the saved one, from another feature store or label map than the experiment's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sourcetracing.components import SYSTEM_KINDS
from sourcetracing.config import Config, resolve_device
from sourcetracing.data.clips import ClipInput, checked_wave, clip_name
from sourcetracing.data.protocols import LabelMap
from sourcetracing.errors import ConfigError, DataError, MissingInputError
from sourcetracing.features.store import store_dir
from sourcetracing.layout import ExperimentLayout, SystemLayout, scorer_state_file
from sourcetracing.ood.step import OODStep, missing_ood_step, rerun_ood
from sourcetracing.provenance import require_same
from sourcetracing.systems.outputs import OutputsMeta, SplitOutputs, SystemOutputs

DROP_IN = "scores"  # the kind of outputs that record no task (a user's own) and of drop-in score files


# ---------------------------------------------------------------------------------------------
# Kinds


@dataclass(frozen=True)
class Made:
    """How a config makes one system: the config it is made and judged with, the command that makes
    it, and its exporter (``export(checkpoint=None, n_jobs=None) -> outputs folder``)."""

    config: Config
    step: str
    export: Callable[..., Path]


class SystemKind:
    """What one kind of system is: how a config makes it, how it is checked, run on audio and bundled.

    Subclasses set the capabilities and override what applies; one instance serves every system of
    the kind (kinds hold no state).
    """

    registry_name = "base"
    order = 100  # where its systems come in a config's list of systems
    runs_on_audio = False  # its model runs on new audio (a runner)
    trained = False  # made from a checkpoint (export --checkpoint applies; retrained with --force)
    takes_enrolled = False  # systems enrolled without retraining join its known ones
    fuses_members = False  # its scores combine other systems' (traced through its members)

    @property
    def name(self) -> str:
        return self.registry_name

    def __repr__(self) -> str:
        return f"<system kind {self.name}>"

    # -- making -------------------------------------------------------------------------------

    def systems(self, cfg: Config) -> dict[str, Made]:
        """The systems of this kind ``cfg`` makes, in their order."""
        return {}

    def refusal(self, cfg: Config, system: str, meta: OutputsMeta) -> str | None:
        """Why ``cfg`` makes no ``system`` though outputs of this kind exist under that name (None: no hint)."""
        return None

    # -- checking -----------------------------------------------------------------------------

    def check(self, handle: SystemHandle) -> None:
        """Kind-specific staleness checks of an opened system (its checkpoint or saved model)."""

    def why_not_runnable(self, cfg: Config | None, sys_layout: SystemLayout, meta: OutputsMeta) -> str | None:
        """Why the system's model cannot run on audio (None when it can); from its folders alone."""
        return f"its outputs ({meta.task or 'drop-in scores'}) come from no model that runs on audio"

    # -- running ------------------------------------------------------------------------------

    def open_runner(self, handle: SystemHandle, device: torch.device) -> Runner:
        raise MissingInputError(f"'{handle.name}' cannot run on audio: {handle.why_not_runnable()}")

    def forward(self, runner: Runner, waves: Any) -> tuple[np.ndarray | None, np.ndarray]:
        """``(logits or None, embeddings)`` of a batch of read waves (see :meth:`Runner.read_waves`)."""
        raise NotImplementedError(f"the {self.name} kind runs on no audio")

    def run_rows(
        self, runner: Runner, cfg: Config, split: str, rows: Any, store: Any, condition: Any, desc: str
    ) -> SplitOutputs:
        """The system over a split's rows: feature-store rows (``store``) or the rows' clips through
        ``condition`` (a :class:`~sourcetracing.features.store.StoreCondition`)."""
        raise NotImplementedError(f"the {self.name} kind runs on no audio")

    def build_network(self, model_config: dict, input_dim: int | None, num_classes: int) -> torch.nn.Module:
        """The network of a checkpoint of this kind (``model_config``: its registered name and settings)."""
        raise NotImplementedError(f"the {self.name} kind has no checkpoint")

    def fused(self, handle: SystemHandle) -> Any:
        """A fusion's record (members, weights, scaling), checked against its members' OOD steps."""
        raise DataError(f"'{handle.name}' ({self.name}) combines no other systems")

    # -- bundling -----------------------------------------------------------------------------

    def bundle_model(self, runner: Runner) -> tuple[dict, dict, dict | None]:
        """``(model settings, weights, front-end settings or None)`` a tracer bundle holds."""
        from sourcetracing.errors import BundleError

        raise BundleError(f"'{runner.system}' cannot be bundled: the {self.name} kind runs on no audio")

    def runner_from_bundle(
        self,
        system: str,
        model: dict,
        weights: dict,
        audio: dict,
        frontend: dict | None,
        device: torch.device,
    ) -> Runner:
        from sourcetracing.errors import BundleError

        raise BundleError(f"a bundle of the {self.name} kind cannot be traced")


def kind(name: str) -> SystemKind:
    """The registered kind ``name`` (:class:`ConfigError` naming the registered ones otherwise)."""
    return SYSTEM_KINDS.get(name)()


def all_kinds() -> list[SystemKind]:
    """Every registered kind, in their listing order."""
    return sorted((kind(n) for n in SYSTEM_KINDS.names()), key=lambda k: (k.order, k.name))


def kind_of_outputs(meta: OutputsMeta) -> SystemKind:
    """The kind of a system's exported outputs: the ``task`` they record; outputs that record none or
    a task no kind is registered for are judged as drop-ins (nothing of theirs runs on audio)."""
    name = meta.task or DROP_IN
    return kind(name if name in SYSTEM_KINDS else DROP_IN)


def made_systems(cfg: Config) -> dict[str, tuple[SystemKind, Made]]:
    """Every system ``cfg`` makes: name -> (its kind, how it is made), in the kinds' order."""
    out: dict[str, tuple[SystemKind, Made]] = {}
    for k in all_kinds():
        for name, made in k.systems(cfg).items():
            out.setdefault(name, (k, made))
    return out


def made_by(cfg: Config, system: str) -> tuple[SystemKind, Made]:
    """The kind that makes ``system`` under ``cfg`` and how; :class:`ConfigError` with the reason and the
    systems this config makes when none does."""
    made = made_systems(cfg)
    if system in made:
        return made[system]
    meta = OutputsMeta.of(ExperimentLayout.of(cfg).system(system))
    reason = "no such system in this config"
    if meta is not None:
        hint = kind_of_outputs(meta).refusal(cfg, system, meta)
        reason = hint or f"no step of this config makes it (its outputs say task {meta.task!r})"
    raise ConfigError(f"cannot export '{system}': {reason}; this config exports {', '.join(made)}")


def system_kind(cfg: Config, system: str) -> str:
    """The name of the kind that makes ``system`` under ``cfg`` (raises like :func:`made_by`)."""
    return made_by(cfg, system)[0].name


def system_config(cfg: Config, system: str) -> Config:
    """The config ``system`` is made and judged with: a statistics variant's merged settings, the plain
    reference's or the pooled system's fixed OOD step, else ``cfg`` itself (raises like :func:`made_by`)."""
    return made_by(cfg, system)[1].config


def export_system(
    cfg: Config, system: str, checkpoint: str | Path | None = None, n_jobs: int | None = None
) -> Path:
    """Export the outputs of ``system`` with its own kind's exporter; returns the outputs folder.

    ``checkpoint`` applies to the trained kinds only; ``n_jobs`` to those that read audio themselves.
    """
    k, made = made_by(cfg, system)
    if checkpoint is not None and not k.trained:
        trained = ", ".join(n for n, (other, _) in made_systems(cfg).items() if other.trained)
        raise ConfigError(
            f"--checkpoint applies to the trained systems ({trained}); '{system}' ({k.name}) has no checkpoint"
        )
    return made.export(checkpoint=checkpoint, n_jobs=n_jobs)


def producer(cfg: Config, system: str) -> str:
    """The command that makes ``system`` (for messages)."""
    made = made_systems(cfg).get(system)
    return f"{made[1].step} --config <your config>" if made else f"the step that exports '{system}'"


def retrainer(cfg: Config, system: str) -> str:
    """The command that makes ``system`` again from new features or labels (a trained one: with --force)."""
    made = made_systems(cfg).get(system)
    return producer(cfg, system) + (" --force" if made and made[0].trained else "")


# ---------------------------------------------------------------------------------------------
# The handle


@dataclass
class SystemHandle:
    """An opened system: checked outputs, its OOD step and (for kinds that run on audio) its runner."""

    cfg: Config  # the experiment's config
    name: str
    kind: SystemKind
    layout: SystemLayout
    meta: OutputsMeta
    ood_step: OODStep | None = None  # None: no OOD step fitted on these outputs

    @property
    def ood(self) -> OODStep:
        """The OOD step fitted on these outputs (:class:`MissingInputError` when there is none)."""
        if self.ood_step is None:
            raise missing_ood_step(self.layout)
        return self.ood_step

    @property
    def inputs(self) -> dict:
        """What the outputs record they were made from (checkpoint, feature store, label map, ...)."""
        return dict(self.meta.manifest.get("inputs", {}))

    @property
    def outputs_id(self) -> str:
        return str(self.meta.manifest.get("id", ""))

    @cached_property
    def outputs(self) -> SystemOutputs:
        """The exported outputs of every split (read once, on first use)."""
        return SystemOutputs.read(self.layout.outputs, step=producer(self.cfg, self.name))

    @property
    def config(self) -> Config:
        """The config the system is made and judged with (the experiment's when no step of it makes it)."""
        made = made_systems(self.cfg).get(self.name)
        return made[1].config if made else self.cfg

    @property
    def made_from_store(self) -> bool:
        """Whether the outputs were computed from a feature store (frame features), not from audio."""
        return bool(self.inputs.get("store_id"))

    @property
    def temperature(self) -> float:
        """The closed-set temperature fitted on dev (1.0 without one)."""
        path = self.layout.temperature
        if not path.is_file():
            return 1.0
        return float(json.loads(path.read_text()).get("temperature", {}).get("temperature", 1.0))

    def why_not_runnable(self) -> str | None:
        return self.kind.why_not_runnable(self.cfg, self.layout, self.meta)

    def runner(self, device: str | torch.device | None = None) -> Runner:
        """The system's model ready to run on audio, checked against the experiment's known systems."""
        why = self.why_not_runnable()
        if why is not None:
            raise MissingInputError(f"'{self.name}' cannot run on audio: {why}")
        if not isinstance(device, torch.device):
            device = resolve_device(device or self.cfg.device)
        runner = self.kind.open_runner(self, device)
        if runner.label_map is not None and list(runner.label_map.known) != self.meta.class_names:
            raise DataError(f"{self.name}: the model's known systems differ from its outputs' class names")
        return runner


def open_system(cfg: Config, name: str, ood: bool = True) -> SystemHandle:
    """Open a system of the experiment after every staleness check, once.

    With ``ood`` its OOD step must exist and have been fitted on the current outputs; without, an
    OOD step that was not is left out (``handle.ood_step`` None).
    """
    sys_layout = ExperimentLayout.of(cfg).system(name)
    meta = OutputsMeta.read(sys_layout.outputs, producer(cfg, name))
    handle = SystemHandle(cfg, name, kind_of_outputs(meta), sys_layout, meta, OODStep.find(sys_layout))
    step, outputs_id = handle.ood_step, meta.manifest.get("id")
    if ood:
        require_same(handle.ood.outputs_id, outputs_id, f"{name}'s outputs", rerun_ood(name))
    elif step is not None and None not in (step.outputs_id, outputs_id) and step.outputs_id != outputs_id:
        handle.ood_step = None  # fitted on other outputs: never served
    handle.kind.check(handle)
    check_outputs_current(handle)
    return handle


def read_outputs(cfg: Config, system: str) -> SystemOutputs:
    """A system's outputs, checked against its checkpoint or model, the feature store and the label map."""
    return open_system(cfg, system, ood=False).outputs


def current_store_id(cfg: Config) -> str | None:
    """The id of this config's finished feature store (read from its ``meta.json`` alone), None without one."""
    meta = store_dir(cfg) / "meta.json"
    if not meta.is_file():
        return None  # the store may live elsewhere: nothing to compare
    return json.loads(meta.read_text()).get("store_id")


def check_outputs_current(handle: SystemHandle) -> None:
    """Stop with a line naming the step to rerun when the outputs were made from another feature store
    or label map than the experiment's current ones."""
    cfg, inputs = handle.cfg, handle.inputs
    layout = ExperimentLayout.of(cfg)
    if inputs.get("store_id"):
        require_same(
            inputs["store_id"], current_store_id(cfg), "the feature store", retrainer(cfg, handle.name)
        )
    if layout.label_map.is_file() and inputs.get("label_map"):
        require_same(
            inputs["label_map"],
            LabelMap.read(cfg.exp_dir).digest(),
            "the label map",
            retrainer(cfg, handle.name),
        )


def experiment_known(cfg: Config) -> LabelMap | None:
    """The experiment's label map (None before the data check wrote one)."""
    return LabelMap.read(cfg.exp_dir) if ExperimentLayout.of(cfg).label_map.is_file() else None


def why_not_runnable(cfg: Config, name: str) -> str | None:
    """Why a system cannot run on audio with its OOD step's scorers (None when it can); no staleness
    check (that is :func:`open_system`'s)."""
    sys_layout = ExperimentLayout.of(cfg).system(name)
    meta = OutputsMeta.of(sys_layout)
    if meta is None:
        return f"it has no outputs in {sys_layout.outputs}: run its training or export step first"
    reason = kind_of_outputs(meta).why_not_runnable(cfg, sys_layout, meta)
    if reason:
        return reason
    step = OODStep.find(sys_layout)
    if step is None:
        return f"it has no OOD step in {sys_layout.ood}: run {rerun_ood(name)}"
    if not step.saved:
        return f"its OOD step saved no fitted scorer ({scorer_state_file('<name>')} in {sys_layout.ood})"
    return None


def why_not_traceable(cfg: Config, name: str, fusion: bool = True) -> str | None:
    """Why ``trace.py`` cannot run ``name`` on audio (None when it can): a fusion can when every member
    can with its saved scorer (``fusion=False``: never), any other system as :func:`why_not_runnable`."""
    meta = OutputsMeta.of(ExperimentLayout.of(cfg).system(name))
    if not (fusion and meta is not None and kind_of_outputs(meta).fuses_members):
        return why_not_runnable(cfg, name)
    members = [str(m) for m in meta.get("members", [])]
    for member in members:
        system, scorer = member.split(":", 1)
        reason = why_not_runnable(cfg, system)
        if reason is None and not ExperimentLayout.of(cfg).system(system).scorer_state(scorer).is_file():
            reason = f"its scorer '{scorer}' is a precomputed score"
        if reason:
            return f"its member '{member}' cannot run on audio ({reason})"
    return None if members else "it records no members"


def fuses_members(cfg: Config, name: str) -> bool:
    """Whether ``name``'s outputs combine other systems' scores (a fusion)."""
    meta = OutputsMeta.of(ExperimentLayout.of(cfg).system(name))
    return meta is not None and kind_of_outputs(meta).fuses_members


# ---------------------------------------------------------------------------------------------
# The runner


@dataclass
class Runner:
    """A system's model ready to run on audio: how it reads clips (rate, crop, windows, front end) and
    its kind's forward pass; ``model_id`` names the checkpoint or saved model it came from."""

    kind: SystemKind
    system: str
    model: Any
    device: torch.device
    sample_rate: int
    num_samples: int  # the crop (0: the whole clip)
    min_len_s: float
    windows: int = 1  # test-time windows per clip, averaged
    frontend: Any = None
    model_id: str = ""
    label_map: LabelMap | None = None
    settings: dict = field(default_factory=dict)  # what the kind keeps for bundling (checkpoint settings)

    @property
    def task(self) -> str:
        return self.kind.name

    @torch.no_grad()
    def forward(self, waves: Any) -> tuple[np.ndarray | None, np.ndarray]:
        """``(logits or None, embeddings)`` of waves read by :meth:`read_waves`."""
        return self.kind.forward(self, waves)

    def run_rows(
        self, cfg: Config, split: str, rows: Any, store: Any = None, condition: Any = None, desc: str = ""
    ) -> SplitOutputs:
        """The system over a split's store rows or clips (see :meth:`SystemKind.run_rows`)."""
        return self.kind.run_rows(self, cfg, split, rows, store, condition, desc or f"{self.system} {split}")

    def read_waves(self, files: Sequence[ClipInput]) -> tuple[list[ClipInput], Any, list[tuple[str, str]]]:
        """``(readable clips, their waves [n, samples] (``[n, windows, samples]`` with test-time
        windows; a list of whole clips without a crop), [(clip, error), ...])``, cropped as the store
        crops dev clips. A clip is a path or a :class:`~sourcetracing.data.clips.Waveform`."""
        from sourcetracing.data.audio import crop_or_pad, load_audio
        from sourcetracing.features.windows import window_crops

        ok, waves, errors = [], [], []
        for f in files:
            try:
                if isinstance(f, (str, Path)):
                    wave = load_audio(f, self.sample_rate, min_len_s=self.min_len_s)
                else:
                    wave = checked_wave(f, self.sample_rate, self.min_len_s)
                if not self.num_samples:
                    waves.append(wave)
                elif self.windows > 1:
                    waves.append(np.stack(window_crops(wave, self.num_samples, self.windows)))
                else:
                    waves.append(crop_or_pad(wave, self.num_samples))
                ok.append(f)
            except Exception as err:  # noqa: BLE001 - any unreadable clip is reported, not raised
                errors.append((clip_name(f), str(err)))
        if not self.num_samples:  # whole clips (statistics systems without a crop): their own lengths
            return ok, waves, errors
        empty = (0, self.windows, self.num_samples) if self.windows > 1 else (0, self.num_samples)
        stacked = np.stack(waves) if waves else np.zeros(empty, dtype=np.float32)
        return ok, stacked, errors

    def embed(
        self, files: Sequence[ClipInput], batch_size: int = 16
    ) -> tuple[list[ClipInput], np.ndarray, list[tuple[str, str]]]:
        """Embeddings of the readable clips as the system computes them: ``(clips, [n, E], errors)``."""
        done, parts, errors = [], [], []
        for start in range(0, len(files), batch_size):
            ok, waves, bad = self.read_waves(files[start : start + batch_size])
            errors += bad
            if ok:
                done += ok
                parts.append(self.forward(waves)[1])
        return done, (np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)), errors


def runner_from_bundle(settings: dict, weights: dict, device: torch.device) -> Runner:
    """The runner a tracer bundle's settings and weights describe (its kind rebuilds the model)."""
    k = kind(str(settings["task"]))
    return k.runner_from_bundle(
        str(settings["system"]),
        settings["model"],
        weights,
        settings["audio"],
        settings.get("frontend"),
        device,
    )


__all__ = [
    "DROP_IN",
    "Made",
    "Runner",
    "SystemHandle",
    "SystemKind",
    "all_kinds",
    "check_outputs_current",
    "current_store_id",
    "experiment_known",
    "export_system",
    "fuses_members",
    "kind",
    "kind_of_outputs",
    "made_by",
    "made_systems",
    "open_system",
    "producer",
    "read_outputs",
    "retrainer",
    "runner_from_bundle",
    "system_config",
    "system_kind",
    "why_not_runnable",
    "why_not_traceable",
]
