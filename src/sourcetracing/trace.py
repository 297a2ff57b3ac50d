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

Any system with a model that runs on audio can trace (``--system`` / ``trace.system``): the
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
from sourcetracing.errors import DataError, MissingInputError, SourceTracingError, WouldOverwriteError
from sourcetracing.features.store import to_store_dtype
from sourcetracing.layout import OUTPUTS_META, ExperimentLayout
from sourcetracing.progress import progress
from sourcetracing.provenance import read_manifest, require_same
from sourcetracing.systems.export import check_outputs_current
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

    cfg: Config
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
            windows=1 if statistics else int(cfg.features.test_windows),
        )  # fmt: skip

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
        self, files: Sequence[str | Path]
    ) -> tuple[list[str | Path], np.ndarray, list[tuple[str, str]]]:
        """``(readable files, their waves [n, samples] (``[n, windows, samples]`` with test-time
        windows), [(file, error), ...])``, cropped as the store crops dev clips."""
        from sourcetracing.data.audio import crop_or_pad, load_audio
        from sourcetracing.features.windows import window_crops

        ok, waves, errors = [], [], []
        for f in files:
            try:
                wave = load_audio(f, self.sample_rate, min_len_s=self.min_len_s)
                if not self.num_samples:
                    waves.append(wave)
                elif self.windows > 1:
                    waves.append(np.stack(window_crops(wave, self.num_samples, self.windows)))
                else:
                    waves.append(crop_or_pad(wave, self.num_samples))
                ok.append(f)
            except Exception as err:  # noqa: BLE001 - any unreadable file is reported, not raised
                errors.append((str(f), str(err)))
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
        self, files: Sequence[str | Path], top_k: int | None = None, batch_size: int = 16
    ) -> pd.DataFrame:
        """One result row per file (errors included), in input order."""
        k = max(1, min(int(top_k or self.cfg.trace.top_k), len(self.classes)))
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
            for i, f in enumerate(batch):
                order = np.argsort(-probs[i])[:k]
                rows.append(
                    {
                        "path": str(f),
                        "status": "ok",
                        "predicted": self.classes[order[0]],
                        "probability": float(probs[i, order[0]]),
                        "top_k": "; ".join(f"{self.classes[j]}:{probs[i, j]:.3f}" for j in order),
                        "scorer": self.scorer_name,
                        "ood_score": float(ood[i]),
                        "threshold": self.threshold,
                        "p_unseen": float(p_unseen[i]),
                        "decision": "unknown" if ood[i] >= self.threshold else "known",
                        "error": "",
                    }
                )
        order = {str(f): i for i, f in enumerate(files)}
        df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
        return df.sort_values("path", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


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


def main(argv: list[str] | None = None) -> int:
    import argparse

    from sourcetracing.cli import announce_config, report_error

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=None, help="experiment YAML (default configs/refd_mlaad.yaml)")
    parser.add_argument("--exp", default=None, help="an experiment folder: use its saved config.yaml")
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
    parser.add_argument("--system", default=None, help="system to trace with (default: trace.system)")
    parser.add_argument(
        "--top-k", type=int, default=None, help="systems listed per clip (default: trace.top_k)"
    )
    parser.add_argument(
        "--scorer", default=None, help="OOD scorer (default: trace.scorer, else the OOD step's default)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="CSV file (default: <exp_dir>/trace/trace_<time>.csv)"
    )
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's)")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_intermixed_args(argv)  # clips and overrides may come before or after the options
    overrides = [a for a in args.inputs if "=" in a and not Path(a).exists()]
    inputs = [a for a in args.inputs if a not in overrides]
    try:
        if args.out is not None and args.out.exists():  # before any work
            raise WouldOverwriteError(f"{args.out} exists; choose another --out")
        cfg = config_for(args.config, args.exp, overrides)
        announce_config(cfg, Path(args.exp) / "config.yaml" if args.exp else args.config, overrides)
        files = find_audio(inputs)
        if args.sample_eval:
            files += sample_eval_clips(cfg, args.sample_eval, args.seed)
        if not files:
            what = "in the given inputs" if inputs else "(give clips or folders, or --sample-eval N)"
            print(f"error: no audio files found {what}", file=sys.stderr)
            return 2
        tracer = Tracer.load(cfg, args.system, args.scorer, args.device)
        df = tracer.trace(files, args.top_k, args.batch_size)
        out = write_results(df, args.out, ExperimentLayout.of(cfg).trace)
    except SourceTracingError as err:
        return report_error(err)
    show = df[
        ["path", "predicted", "probability", "ood_score", "p_unseen", "decision", "top_k", "error"]
    ].copy()
    show["path"] = show["path"].map(lambda p: p if len(p) <= 40 else "..." + p[-37:])
    with pd.option_context("display.max_colwidth", 60, "display.width", 200):
        print(show.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep=""))
    n_err = int((df["status"] == "error").sum())
    level = label_level(cfg)
    at_level = f" (classes are {level}s: data.label={level})" if level != "system" else ""
    print(
        f"{len(df) - n_err} clip(s) traced with {tracer.system}/{tracer.scorer_name}{at_level}, {n_err} error(s); "
        f"results in {out}"
    )
    return 0 if len(df) > n_err else 1
