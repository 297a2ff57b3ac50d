"""Trace new clips with a trained experiment.

For every clip: the predicted system, the top-k systems with probabilities, the OOD score of the
chosen scorer, its calibrated probability of coming from an unseen system, and the known/unknown
decision at the threshold fitted on dev by the OOD step.

    python scripts/trace.py --config configs/demo.yaml clip.wav folder/ [--system aasist] [--top-k 3]
    python scripts/trace.py --exp exp/demo clip.wav                       # the experiment's saved config
    python scripts/trace.py --config configs/demo.yaml --sample-eval 20 [--seed 0]   # eval clips of the protocols

Before anything runs, the parts are checked to belong together: the OOD step must have been made
from the system's current outputs, the outputs from the current checkpoint, and the checkpoint's
known systems must be the experiment's; a mismatch is one line naming the step to rerun.

Without ``--system`` the system and scorer are the ones chosen on dev alone (the summary's choice,
:mod:`sourcetracing.trace_select`; the run prints which and why): the fusion is traced through its
members with its saved weights and scaling, and a chosen system that cannot run on audio gives way
to the best one on dev that can. ``--bundle DIR`` traces with a portable bundle alone
(:mod:`sourcetracing.bundle`; ``scripts/export_bundle.py`` writes it), from any working directory.

Any system with a model that runs on audio can trace (``--system``; ``trace.system`` when nothing
is judged yet): the
classifier and GE2E through their best checkpoint, the MFCC reference and the statistics system
(``mfcc``, ``stats``) through their saved standardiser, projection and regression on the
statistics of the whole clip. Features are computed as the feature store computes them: the
experiment's front end on the deterministic crop (``crop_or_pad`` without a random generator),
cast through float16. Folders are
searched recursively for audio files; a file that cannot be read gives a row with the error
instead of stopping the run. Each run writes a new ``<exp_dir>/trace/trace_<time>.csv`` (or
``--out``, which must not exist yet: no earlier results file is ever replaced); the exit code is 1
when no clip could be traced.

Systems enrolled with ``scripts/enroll.py`` (a few clips, no retraining) join the known ones:
the closed-set decision becomes the nearest class centroid (cosine) over the trained and enrolled
systems, and the OOD score the centroid or k-NN scorer with the enrolment embeddings added, at
its unchanged dev threshold (the rule in :mod:`sourcetracing.enrol`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sourcetracing.config import Config, load_config, resolve_device
from sourcetracing.data.protocols import LabelMap, label_level
from sourcetracing.errors import (
    ConfigError,
    DataError,
    MissingInputError,
    SourceTracingError,
    WouldOverwriteError,
)
from sourcetracing.features.store import to_store_dtype
from sourcetracing.layout import OUTPUTS_META, ExperimentLayout
from sourcetracing.progress import progress
from sourcetracing.provenance import read_manifest, require_same
from sourcetracing.systems.export import check_outputs_current
from sourcetracing.trace_select import choose_system
from sourcetracing.training.checkpoint import checkpoint_id, load_model

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
RESULT_COLUMNS = [
    "path",
    "status",
    "predicted",
    "probability",
    "top_k",
    "scorer",
    "ood_score",
    "threshold",
    "p_unseen",
    "decision",
    "error",
]


class TraceError(MissingInputError):
    """The experiment is not ready for tracing (missing or mismatched step outputs)."""


@dataclass(frozen=True)
class Waveform:
    """A clip given as samples instead of a file: mono, at ``sample_rate`` (None: the tracer's)."""

    samples: np.ndarray
    sample_rate: int | None = None
    name: str = "<waveform>"


ClipInput = str | Path | Waveform | np.ndarray | tuple  # a path, a waveform, (waveform, rate)


def _is_one_clip(item: object) -> bool:
    if isinstance(item, (str, Path, Waveform)):
        return True
    if isinstance(item, np.ndarray):
        return item.ndim == 1
    return (
        isinstance(item, tuple)
        and len(item) == 2
        and isinstance(item[0], np.ndarray)
        and np.isscalar(item[1])
    )


def as_clips(items: ClipInput | Sequence[ClipInput]) -> list[str | Path | Waveform]:
    """Paths and :class:`Waveform` items: one clip or a sequence of clips, waveforms named by position."""
    items = [items] if _is_one_clip(items) else list(items)
    out: list[str | Path | Waveform] = []
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            out.append(Waveform(item, None, f"<waveform {i}>"))
        elif isinstance(item, tuple):
            out.append(Waveform(item[0], int(item[1]), f"<waveform {i}>"))
        else:
            out.append(item)
    return out


def clip_name(item: str | Path | Waveform) -> str:
    """The ``path`` column of a clip's result row."""
    return item.name if isinstance(item, Waveform) else str(item)


def _checked_wave(item: Waveform, sample_rate: int, min_len_s: float) -> np.ndarray:
    """A waveform checked as :func:`~sourcetracing.data.audio.load_audio` checks a file, at ``sample_rate``."""
    from sourcetracing.data.audio import SILENCE_PEAK, AudioError, resample

    wave = np.asarray(item.samples, dtype=np.float32)
    if wave.ndim != 1:
        raise AudioError(
            "unreadable", f"{item.name}: expected a mono waveform [samples], got shape {wave.shape}"
        )
    if wave.size == 0:
        raise AudioError("empty", item.name)
    if not np.isfinite(wave).all():
        raise AudioError("nan_or_inf", item.name)
    if float(np.max(np.abs(wave))) < SILENCE_PEAK:
        raise AudioError("silent", item.name)
    wave = resample(np.ascontiguousarray(wave), int(item.sample_rate or sample_rate), sample_rate)
    if wave.size < min_len_s * sample_rate:
        raise AudioError(
            "too_short", f"{item.name}: {wave.size / sample_rate:.3f} s, shorter than {min_len_s} s"
        )
    return wave


def sample_eval_clips(cfg: Config, n: int, seed: int = 0) -> list[Path]:
    """``n`` clips of the eval protocol drawn with ``seed`` (every clip when it has fewer), in path order."""
    from sourcetracing.data.protocols import check_inside_root, read_protocol

    name = cfg.data.splits.get("eval")
    if not name:
        raise DataError(f"data.splits names no eval split ({sorted(cfg.data.splits)}) to draw clips from")
    rows = read_protocol(Path(cfg.data.protocols) / name)
    check_inside_root(rows, cfg.data.root, "eval split")
    paths = sorted(set(rows["path"]))
    if not paths:
        raise DataError(f"{Path(cfg.data.protocols) / name}: the eval split has no clips to draw from")
    chosen = np.random.default_rng(seed).choice(len(paths), size=min(n, len(paths)), replace=False)
    return [Path(cfg.data.root) / paths[i] for i in sorted(chosen)]


def find_audio(inputs: Iterable[str | Path]) -> list[Path]:
    """Files given directly plus audio files found recursively in folders (sorted, in input order)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(
                sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            )
        else:
            out.append(p)  # a missing or odd file is reported as an error row later
    return out


@dataclass
class Tracer:
    """A trained system with its OOD scorer, threshold and calibrations, ready to trace clips."""

    cfg: Config | None  # None for a tracer read from a bundle
    system: str
    model: torch.nn.Module
    task: str
    classes: list[str]
    scorer_name: str
    scorer: object
    threshold: float
    calibration: object
    temperature: float
    centroids: np.ndarray | None
    frontend: object | None
    sample_rate: int
    num_samples: int
    min_len_s: float
    device: torch.device
    prior: float = 0.5
    # systems enrolled without retraining (sourcetracing.enrol), class ids after the known ones
    enrolled: tuple[str, ...] = ()
    # test-time windows per clip (features.test_windows), averaged as the exporters average them
    windows: int = 1
    top_k: int = 3  # systems listed per clip unless trace() is given another count
    level: str = "system"  # what a class is (data.label): a system or an architecture

    @classmethod
    def load(
        cls,
        cfg: Config,
        system: str | None = None,
        scorer: str | None = None,
        device: str | None = None,
        enrolled: bool = True,
    ) -> Tracer:
        """The system's parts, checked to belong together; with ``enrolled`` the systems enrolled into it
        join the known ones (the rule of :mod:`sourcetracing.enrol`)."""
        from sourcetracing.enrol import enrolled_into
        from sourcetracing.features.frontends import build_frontend
        from sourcetracing.ood.calibration import LogisticCalibration
        from sourcetracing.ood.scorers import Scorer

        layout = ExperimentLayout.of(cfg)
        name = system or cfg.trace.system
        sys_layout = layout.system(name)
        ood_manifest = read_manifest(
            sys_layout.ood, f"the OOD step of '{name}'", f"python scripts/ood_detector.py --system {name}"
        )
        out_manifest = read_manifest(
            sys_layout.outputs, f"the outputs of '{name}'", "the system's training step"
        )
        rerun_ood = f"python scripts/ood_detector.py --config <your config> --system {name}"
        require_same(
            ood_manifest["inputs"].get("outputs"), out_manifest.get("id"), f"{name}'s outputs", rerun_ood
        )
        meta = json.loads((sys_layout.outputs / OUTPUTS_META).read_text())
        dev = resolve_device(device or cfg.device)
        expected = LabelMap.read(cfg.exp_dir) if layout.label_map.is_file() else None
        statistics = meta.get("task") == "reference"  # the MFCC reference or the statistics system
        if not statistics:
            if not sys_layout.best.is_file():
                raise TraceError(f"{sys_layout.best} not found: '{name}' has no checkpoint to trace with")
            rerun_export = f"python scripts/ood_detector.py --config <your config> --system {name} --feature_extraction_step"
            require_same(
                out_manifest["inputs"].get("checkpoint"),
                checkpoint_id(sys_layout.best),
                f"{sys_layout.best}",
                rerun_export,
            )
        # the outputs (hence model and OOD step) must come from the experiment's current store and labels
        check_outputs_current(cfg, name, out_manifest.get("inputs", {}))
        if statistics:
            model, ckpt = _statistics_model(cfg, name, out_manifest, expected)
        else:
            model, ckpt = load_model(sys_layout.best, dev, expected_label_map=expected)
        info = json.loads((sys_layout.thresholds).read_text())
        requested = scorer or cfg.trace.scorer
        enrolment = None
        if enrolled and ckpt["task"] != "reference":
            enrolment = enrolled_into(layout, name, checkpoint_id(sys_layout.best), info)
        chosen = enrolment.scorer_name(requested) if enrolment else requested or info.get("default")
        if chosen not in info.get("scorers", {}):
            raise TraceError(
                f"scorer '{chosen}' was not fitted by the OOD step of '{name}'; available: {sorted(info.get('scorers', {}))}"
            )
        state = sys_layout.ood / f"scorer_{chosen}.npz"
        if not state.is_file():
            raise TraceError(
                f"{state} missing: '{chosen}' is a precomputed score that cannot be traced; rerun {rerun_ood}"
            )
        entry = info["scorers"][chosen]
        calibration = (
            LogisticCalibration.from_dict(entry["calibration"]) if entry.get("calibration") else None
        )
        temperature = 1.0
        cal_path = sys_layout.results / "calibration.json"
        if cal_path.is_file():
            temperature = float(
                json.loads(cal_path.read_text()).get("temperature", {}).get("temperature", 1.0)
            )
        prov = ckpt.get("provenance", {})
        frontend = None
        if prov.get("frontend"):
            frontend = build_frontend(prov["frontend"], dev, sample_rate=int(prov["sample_rate"]))
        centroids = None
        classes = list(ckpt["label_map"]["known"])
        fitted = Scorer.load(state)
        if ckpt["task"] == "ge2e" or enrolment:
            from sourcetracing.ood.scorers import class_centroids
            from sourcetracing.systems.outputs import SystemOutputs

            outputs = SystemOutputs.read(sys_layout.outputs)
            train = outputs.split("train")
            centroids = class_centroids(train.embeddings, train.rows["label"].to_numpy(), len(classes))
            if enrolment:  # nearest centroid over known + enrolled, the scorer's state extended
                centroids, fitted, temperature = enrolment.extend(centroids, fitted, outputs)
                classes += enrolment.names
        num_samples = int(prov.get("num_samples", 0)) or int(round(cfg.data.max_len_s * cfg.data.sample_rate))
        min_len_s = float(cfg.data.min_len_s)
        if ckpt["task"] == "reference":  # the statistics' own crop (0: the whole clip) and minimum length
            num_samples, min_len_s = (
                int(prov["num_samples"]),
                float(model.settings.get("min_len_s", min_len_s)),
            )
        return cls(
            cfg, name, model, ckpt["task"], classes, chosen, fitted,
            float(entry["threshold"]), calibration, temperature, centroids, frontend,
            int(prov.get("sample_rate", cfg.data.sample_rate)), num_samples,
            min_len_s, dev, enrolled=tuple(enrolment.names if enrolment else ()),
            windows=1 if statistics else int(cfg.features.test_windows), top_k=int(cfg.trace.top_k),
            level=label_level(cfg),
        )  # fmt: skip

    @classmethod
    def from_bundle(cls, folder: str | Path, device: str | None = None) -> Tracer:
        """The tracer a bundle holds (:mod:`sourcetracing.bundle`), verified first; no experiment
        folder, corpus or config is read."""
        from sourcetracing.bundle import read_bundle, unpack

        return tracer_from_bundle(read_bundle(unpack(folder)), resolve_device(device or "auto"))

    @torch.no_grad()
    def outputs(self, waves: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
        """``(logits or None, embeddings, class scores)`` of ``[B, samples]`` waves (a list of waves of
        any length for the statistics systems)."""
        from sourcetracing.ood.scorers import centroid_similarities

        if self.task == "reference":  # statistics of the whole clip (or its crop), then the saved model
            from sourcetracing.systems.mfcc import wave_statistics

            stats = [wave_statistics(w, self.sample_rate, self.model.settings) for w in waves]
            emb, logits = self.model.apply(np.stack(stats))
            return logits, emb, logits
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        n, per_clip = len(waves), waves.shape[1] if waves.ndim == 3 else 1  # [B, windows, samples]
        x = torch.from_numpy(waves.reshape(n * per_clip, -1)).to(self.device)
        if self.frontend is not None:
            x = to_store_dtype(self.frontend(x)).to(torch.float32)

        def clip_mean(a: torch.Tensor) -> np.ndarray:  # the mean over a clip's windows
            return a.float().reshape(n, per_clip, -1).mean(dim=1).cpu().numpy()

        if self.task == "classifier":
            logits, emb = self.model(x)
            logits, emb = clip_mean(logits), clip_mean(emb)
            if self.centroids is None:  # the classifier's own decision: its logits
                return logits, emb, logits
            return logits, emb, centroid_similarities(emb, self.centroids)
        emb = clip_mean(self.model(x))
        return None, emb, centroid_similarities(emb, self.centroids)

    def read_waves(
        self, files: Sequence[ClipInput]
    ) -> tuple[list[ClipInput], np.ndarray, list[tuple[str, str]]]:
        """``(readable files, their waves [n, samples] (``[n, windows, samples]`` with test-time
        windows), [(file, error), ...])``, cropped as the store crops dev clips. An item may also be
        a mono waveform at the tracer's sample rate, or a ``(waveform, sample_rate)`` pair."""
        from sourcetracing.data.audio import crop_or_pad, load_audio
        from sourcetracing.features.windows import window_crops

        ok, waves, errors = [], [], []
        for f in files:
            try:
                if isinstance(f, (str, Path)):
                    wave = load_audio(f, self.sample_rate, min_len_s=self.min_len_s)
                else:
                    wave = _checked_wave(f, self.sample_rate, self.min_len_s)
                if not self.num_samples:
                    waves.append(wave)
                elif self.windows > 1:
                    waves.append(np.stack(window_crops(wave, self.num_samples, self.windows)))
                else:
                    waves.append(crop_or_pad(wave, self.num_samples))
                ok.append(f)
            except Exception as err:  # noqa: BLE001 - any unreadable file is reported, not raised
                errors.append((clip_name(f), str(err)))
        if not self.num_samples:  # whole clips (statistics systems without a crop): their own lengths
            return ok, waves, errors
        empty = (0, self.windows, self.num_samples) if self.windows > 1 else (0, self.num_samples)
        stacked = np.stack(waves) if waves else np.zeros(empty, dtype=np.float32)
        return ok, stacked, errors

    def embed(
        self, files: Sequence[str | Path], batch_size: int = 16
    ) -> tuple[list[str | Path], np.ndarray, list[tuple[str, str]]]:
        """Embeddings of the readable files as the system computes them: ``(files, [n, E], errors)``."""
        done, parts, errors = [], [], []
        for start in range(0, len(files), batch_size):
            ok, waves, bad = self.read_waves(files[start : start + batch_size])
            errors += bad
            if ok:
                done += ok
                parts.append(self.outputs(waves)[1])
        return done, (np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)), errors

    def trace(
        self, files: ClipInput | Sequence[ClipInput], top_k: int | None = None, batch_size: int = 16
    ) -> pd.DataFrame:
        """One result row per clip (errors included), in input order: ``files`` is a path, a waveform
        (see :meth:`read_waves`) or a sequence of them; a waveform's row is named ``<waveform i>``."""
        files = as_clips(files)
        k = max(1, min(int(top_k or self.top_k), len(self.classes)))
        rows: list[dict] = []
        for start in progress(range(0, len(files), batch_size), desc="tracing", unit="batch", leave=False):
            batch, waves, errors = self.read_waves(files[start : start + batch_size])
            for f, err in errors:  # an unreadable file becomes an error row
                rows.append(
                    {
                        "path": f,
                        "status": "error",
                        "scorer": self.scorer_name,
                        "threshold": self.threshold,
                        "error": err,
                    }
                )
            if not batch:
                continue
            logits, emb, class_scores = self.outputs(waves)
            probs = torch.softmax(torch.from_numpy(class_scores / self.temperature), dim=1).numpy()
            ood = self.scorer.score(emb, logits)
            p_unseen = (
                self.calibration.probability(ood, self.prior)
                if self.calibration is not None
                else np.full(len(ood), np.nan)
            )
            rows += result_rows(
                batch, probs, self.classes, k, self.scorer_name, ood, self.threshold, p_unseen
            )
        return in_input_order(rows, files)


def result_rows(
    batch: Sequence[str | Path | Waveform],
    probs: np.ndarray,
    classes: Sequence[str],
    k: int,
    scorer_name: str,
    ood: np.ndarray,
    threshold: float,
    p_unseen: np.ndarray,
) -> list[dict]:
    """The ``ok`` result rows of traced clips: top-k classes, OOD score, P(unseen) and the decision."""
    rows = []
    for i, f in enumerate(batch):
        order = np.argsort(-probs[i])[:k]
        rows.append(
            {
                "path": clip_name(f),
                "status": "ok",
                "predicted": classes[order[0]],
                "probability": float(probs[i, order[0]]),
                "top_k": "; ".join(f"{classes[j]}:{probs[i, j]:.3f}" for j in order),
                "scorer": scorer_name,
                "ood_score": float(ood[i]),
                "threshold": threshold,
                "p_unseen": float(p_unseen[i]),
                "decision": "unknown" if ood[i] >= threshold else "known",
                "error": "",
            }
        )
    return rows


def in_input_order(rows: list[dict], files: Sequence[str | Path | Waveform]) -> pd.DataFrame:
    """The result table, one row per clip in the order the clips were given."""
    order = {clip_name(f): i for i, f in enumerate(files)}
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return df.sort_values("path", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def tracer_from_bundle(bundle, device: torch.device) -> Tracer:
    """A :class:`Tracer` rebuilt from a verified :class:`~sourcetracing.bundle.Bundle`."""
    from sourcetracing.features.frontends import build_frontend
    from sourcetracing.ood.calibration import LogisticCalibration
    from sourcetracing.ood.scorers import build_scorer

    st = bundle.settings
    audio, labels, decision, spec = st["audio"], st["labels"], st["decision"], st["model"]
    if st["task"] == "reference":
        from sourcetracing.systems.mfcc import ReferenceModel

        w = {k: v.numpy() for k, v in bundle.weights.items()}
        model = ReferenceModel(
            w["mean"], w["scale"], w["var"], int(spec["n_samples_seen"]), w["coef"], w["intercept"],
            w["classes"], list(spec["class_names"]), dict(spec["settings"]), w.get("proj_mean"), w.get("proj_matrix"),
        )  # fmt: skip
    else:
        from sourcetracing.training.checkpoint import build_model

        model = build_model(st["task"], spec["model_config"], spec["input_dim"], spec["num_classes"])
        model.load_state_dict(bundle.weights)
        model.to(device).eval()
    frontend = None
    if st.get("frontend"):
        frontend = build_frontend(st["frontend"], device, sample_rate=int(audio["sample_rate"]))
    scorer = build_scorer(st["scorer"]["type"], **st["scorer"]["options"])
    for key in scorer.state_keys:
        setattr(scorer, key, bundle.state[f"scorer.{key}"])
    calibration = (
        LogisticCalibration.from_dict(decision["calibration"]) if decision.get("calibration") else None
    )
    return Tracer(
        None, st["system"], model, st["task"], list(labels["classes"]), st["scorer"]["name"], scorer,
        float(decision["threshold"]), calibration, float(decision["temperature"]),
        bundle.state.get("centroids"), frontend, int(audio["sample_rate"]), int(audio["num_samples"]),
        float(audio["min_len_s"]), device, prior=float(decision["prior"]),
        enrolled=tuple(labels.get("enrolled", ())), windows=int(audio["windows"]),
        top_k=int(decision["top_k"]), level=str(labels.get("level", "system")),
    )  # fmt: skip


@dataclass
class FusionTracer:
    """The score fusion traced through its members: each member system runs on the clip, each member
    score is standardised with the fusion's dev scaling and combined with its saved weights and
    intercept; the closed-set decision is the member's the fusion takes it from (``closed_set_from``)."""

    system: str
    members: list[str]  # "system:scorer", in the fusion's order
    tracers: dict[str, Tracer]  # one per member system (without enrolled systems, as fitted)
    scorers: dict[str, object]  # "system:scorer" -> its fitted scorer
    weights: np.ndarray
    intercept: float
    mean: np.ndarray
    std: np.ndarray
    source: str
    scorer_name: str
    threshold: float
    calibration: object
    prior: float = 0.5
    top_k: int = 3
    level: str = "system"

    @property
    def classes(self) -> list[str]:
        return self.tracers[self.source].classes

    @classmethod
    def load(
        cls, cfg: Config, system: str = "fusion", scorer: str | None = None, device: str | None = None
    ) -> FusionTracer:
        """The fusion's saved weights and scaling and its members' tracers, checked to belong together."""
        from sourcetracing.ood.calibration import LogisticCalibration
        from sourcetracing.ood.scorers import Scorer

        layout = ExperimentLayout.of(cfg)
        sys_layout = layout.system(system)
        refit = "python scripts/fusion.py --config <your config>"
        ood_manifest = read_manifest(
            sys_layout.ood, f"the OOD step of '{system}'", f"python scripts/ood_detector.py --system {system}"
        )
        out_manifest = read_manifest(sys_layout.outputs, f"the outputs of '{system}'", refit)
        require_same(
            ood_manifest["inputs"].get("outputs"), out_manifest.get("id"), f"{system}'s outputs",
            f"python scripts/ood_detector.py --config <your config> --system {system}",
        )  # fmt: skip
        meta = json.loads((sys_layout.outputs / OUTPUTS_META).read_text())
        members = list(meta["members"])
        names = list(dict.fromkeys(m.split(":", 1)[0] for m in members))
        for name in names:  # the members' OOD steps must be the ones the fusion was fitted on
            member_ood = read_manifest(layout.system(name).ood, f"the OOD step of '{name}'", refit)
            require_same(
                out_manifest.get("inputs", {}).get(name),
                member_ood.get("id"),
                f"the OOD step of '{name}'",
                refit,
            )
        tracers = {name: Tracer.load(cfg, name, device=device, enrolled=False) for name in names}
        scorers = {}
        for member in members:
            name, member_scorer = member.split(":", 1)
            state = layout.system(name).ood / f"scorer_{member_scorer}.npz"
            if not state.is_file():
                raise TraceError(f"{state} missing: the fusion member '{member}' is a precomputed score")
            scorers[member] = Scorer.load(state)
        info = json.loads(sys_layout.thresholds.read_text())
        chosen = scorer or info.get("default")
        if chosen not in info.get("scorers", {}):
            raise TraceError(
                f"scorer '{chosen}' was not fitted by the OOD step of '{system}'; available: {sorted(info.get('scorers', {}))}"
            )
        entry = info["scorers"][chosen]
        calibration = (
            LogisticCalibration.from_dict(entry["calibration"]) if entry.get("calibration") else None
        )
        scaling = meta["scaling"]
        return cls(
            system, members, tracers, scorers,
            np.asarray([meta["weights"][m] for m in members], dtype=np.float64), float(meta["intercept"]),
            np.asarray([scaling["mean"][m] for m in members], dtype=np.float64),
            np.asarray([scaling["std"][m] for m in members], dtype=np.float64),
            str(meta.get("closed_set_from", names[0])), chosen, float(entry["threshold"]), calibration,
            top_k=int(cfg.trace.top_k), level=label_level(cfg),
        )  # fmt: skip

    def trace(
        self, files: ClipInput | Sequence[ClipInput], top_k: int | None = None, batch_size: int = 16
    ) -> pd.DataFrame:
        """One result row per clip (errors included), in input order, as :meth:`Tracer.trace`."""
        files = as_clips(files)
        source = self.tracers[self.source]
        k = max(1, min(int(top_k or self.top_k), len(self.classes)))
        rows: list[dict] = []
        for start in progress(range(0, len(files), batch_size), desc="tracing", unit="batch", leave=False):
            batch = files[start : start + batch_size]
            outputs, failed = {}, {}
            for name, tracer in self.tracers.items():
                ok, waves, errors = tracer.read_waves(batch)
                for f, err in errors:
                    failed.setdefault(f, err)
                if ok:
                    outputs[name] = ({clip_name(f): i for i, f in enumerate(ok)}, *tracer.outputs(waves))
            for f, err in failed.items():
                rows.append(
                    {
                        "path": f,
                        "status": "error",
                        "scorer": self.scorer_name,
                        "threshold": self.threshold,
                        "error": err,
                    }
                )
            good = [f for f in batch if clip_name(f) not in failed]
            if not good:
                continue

            columns = [
                self.scorers[m].score(
                    _take(outputs[m.split(":", 1)[0]], 1, good), _take(outputs[m.split(":", 1)[0]], 0, good)
                )
                for m in self.members
            ]
            ood = ((np.stack(columns, axis=1) - self.mean) / self.std) @ self.weights + self.intercept
            class_scores = _take(outputs[self.source], 2, good)
            probs = torch.softmax(torch.from_numpy(class_scores / source.temperature), dim=1).numpy()
            p_unseen = (
                self.calibration.probability(ood, self.prior)
                if self.calibration is not None
                else np.full(len(ood), np.nan)
            )
            rows += result_rows(good, probs, self.classes, k, self.scorer_name, ood, self.threshold, p_unseen)
        return in_input_order(rows, files)


def _take(output: tuple, part: int, clips: list) -> np.ndarray | None:
    """Rows of ``clips`` in one of a member's ``(index, logits, embeddings, class scores)`` arrays."""
    index, *arrays = output
    value = arrays[part]
    return None if value is None else value[[index[clip_name(f)] for f in clips]]


def open_tracer(
    cfg: Config, system: str, scorer: str | None = None, device: str | None = None
) -> Tracer | FusionTracer:
    """The tracer of ``system``: the fusion through its members, any other system through its model."""
    meta = ExperimentLayout.of(cfg).system(system).outputs / OUTPUTS_META
    if meta.is_file() and json.loads(meta.read_text()).get("task") == "fusion":
        return FusionTracer.load(cfg, system, scorer, device)
    return Tracer.load(cfg, system, scorer, device)


def _statistics_model(cfg: Config, name: str, out_manifest: dict, expected: LabelMap | None) -> tuple:
    """A statistics system's saved model, checked against its outputs and the experiment's known
    systems, and what tracing needs of it (as a checkpoint would give it)."""
    from sourcetracing.systems.mfcc import load_checked, model_path

    model = load_checked(cfg, name, out_manifest.get("inputs", {}).get("model"))
    path = model_path(cfg, name)
    if expected is not None and list(expected.known) != list(model.class_names):
        raise TraceError(
            f"{path} was fitted on other known systems than the experiment's label map: rerun the step that exports '{name}'"
        )
    settings = model.settings
    sample_rate = int(settings["sample_rate"])
    crop = int(round(float(settings["max_len_s"]) * sample_rate)) if settings.get("crop") else 0
    ckpt = {
        "task": "reference",
        "label_map": {"known": list(model.class_names), "ood": []},
        "provenance": {"sample_rate": sample_rate, "num_samples": crop},
    }
    return model, ckpt


def new_results_path(folder: Path) -> Path:
    """``trace_<date-time>.csv`` in ``folder``, with a counter when that name is taken."""
    stem = f"trace_{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = folder / f"{stem}.csv", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}_{n}.csv"
    return path


def write_results(df: pd.DataFrame, out: Path | None, folder: Path) -> Path:
    """Write ``df`` to a file that did not exist before: ``out``, else a new ``trace_<time>.csv`` in ``folder``.

    The file is created exclusively, so neither an earlier run's file nor one written at the same
    moment by another run is ever replaced; an existing ``out`` is :class:`WouldOverwriteError`.
    """
    while True:
        path = out or new_results_path(folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x", newline="") as fh:
                df.to_csv(fh, index=False)
            return path
        except FileExistsError:
            if out is not None:
                raise WouldOverwriteError(f"{out} exists; choose another --out") from None


def config_for(config: str | None, exp: str | None, overrides: list[str]) -> Config:
    """``--config`` plus overrides, or the resolved config saved in an experiment folder (``--exp``)."""
    if exp:
        path = Path(exp) / "config.yaml"
        if not path.is_file():
            raise TraceError(
                f"{path} not found: is {exp} an experiment folder (run the pipeline steps first)?"
            )
        return load_config(path, overrides)
    return load_config(config or "configs/refd_mlaad.yaml", overrides)


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    import argparse

    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a count of at least 1, got {text}")
    return value


def _tracer_for(
    cfg: Config, system: str | None, scorer: str | None, device: str | None
) -> tuple[Tracer | FusionTracer, str]:
    """The tracer of ``system`` (``--system``), else of the system chosen on dev; and why it was used."""
    if system:
        return open_tracer(cfg, system, scorer, device), "--system"
    choice = choose_system(cfg)
    return open_tracer(cfg, choice.system, scorer, device), choice.reason


def main(argv: list[str] | None = None) -> int:
    import argparse

    from sourcetracing.cli import announce_config, report_error

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help="experiment YAML (default configs/refd_mlaad.yaml)")
    parser.add_argument("--exp", default=None, help="an experiment folder: use its saved config.yaml")
    parser.add_argument(
        "--bundle",
        default=None,
        help="a tracer bundle (scripts/export_bundle.py: folder, .tar.gz or .zip): trace without the experiment",
    )
    parser.add_argument(
        "inputs", nargs="*", help="audio files or folders (searched recursively); key=value overrides too"
    )
    parser.add_argument(
        "--sample-eval",
        type=_positive,
        default=None,
        metavar="N",
        help="also trace N clips of the eval protocol, drawn with --seed (what stage 11 of run.sh does)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --sample-eval draw (default 0)")
    parser.add_argument(
        "--system",
        default=None,
        help="system to trace with (default: the one chosen on dev, said in the output)",
    )
    parser.add_argument(
        "--top-k", type=int, default=None, help="systems listed per clip (default: trace.top_k)"
    )
    parser.add_argument(
        "--scorer", default=None, help="OOD scorer (default: trace.scorer, else the OOD step's default)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="CSV file (default: <exp_dir>/trace/trace_<time>.csv; with --bundle ./trace_<time>.csv)",
    )
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_intermixed_args(argv)  # clips and overrides may come before or after the options
    overrides = [a for a in args.inputs if "=" in a and not Path(a).exists()]
    inputs = [a for a in args.inputs if a not in overrides]
    try:
        if args.out is not None and args.out.exists():  # before any work
            raise WouldOverwriteError(f"{args.out} exists; choose another --out")
        if args.bundle:
            if args.config or args.exp or overrides or args.sample_eval or args.system or args.scorer:
                raise ConfigError(
                    "--bundle traces with the bundle alone: drop --config, --exp, overrides, --sample-eval, --system and --scorer"
                )
            tracer = Tracer.from_bundle(args.bundle, args.device)
            why, folder = f"the bundle {args.bundle}", Path.cwd()
            files = find_audio(inputs)
        else:
            cfg = config_for(args.config, args.exp, overrides)
            announce_config(cfg, Path(args.exp) / "config.yaml" if args.exp else args.config, overrides)
            files = find_audio(inputs)
            if args.sample_eval:
                files += sample_eval_clips(cfg, args.sample_eval, args.seed)
            folder = ExperimentLayout.of(cfg).trace
        if not files:
            what = "in the given inputs" if inputs else "(give clips or folders, or --sample-eval N)"
            print(f"error: no audio files found {what}", file=sys.stderr)
            return 2
        if not args.bundle:
            tracer, why = _tracer_for(cfg, args.system, args.scorer, args.device)
        print(f"tracing with {tracer.system} / {tracer.scorer_name}: {why}", flush=True)
        df = tracer.trace(files, args.top_k, args.batch_size)
        out = write_results(df, args.out, folder)
    except SourceTracingError as err:
        return report_error(err)
    show = df[
        ["path", "predicted", "probability", "ood_score", "p_unseen", "decision", "top_k", "error"]
    ].copy()
    show["path"] = show["path"].map(lambda p: p if len(p) <= 40 else "..." + p[-37:])
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(show.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
    n_err = int((df["status"] == "error").sum())
    level = tracer.level
    at_level = f" (classes are {level}s: data.label={level})" if level != "system" else ""
    print(
        f"{len(df) - n_err} clip(s) traced with {tracer.system}/{tracer.scorer_name}{at_level}, {n_err} error(s); "
        f"results in {out}"
    )
    return 0 if len(df) > n_err else 1
