"""Write a tracer bundle (:mod:`sourcetracing.bundle`) from a trained, judged experiment.

    python scripts/export_bundle.py --config configs/demo.yaml --out bundles/demo [--system stats] [--archive]

The bundle holds one system exactly as ``trace.py`` runs it (its checks passed first): the system
chosen on dev unless ``--system`` names one, with its dev-chosen scorer, the threshold, calibration
and temperature fitted on dev, and the systems enrolled into it. Before it is kept, the bundle's
tracer is run on a test signal and must give the experiment tracer's numbers exactly.

Supported: the classifier (AASIST), GE2E (frame-feature encoders) and the statistics systems
(``mfcc``, ``stats`` and its variants), with the ``lfcc`` / ``logmel`` front ends. Not supported:
the ``hf_ssl`` front end and the GE2E ``hf_ssl`` encoder (their pretrained model is loaded by name,
outside the bundle), the fusion (a combination of systems), the hybrid and pooled systems and
drop-in score files (no model of theirs runs on audio here).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.bundle import FILES, FORMAT_VERSION, MANIFEST, write_archive, write_bundle
from sourcetracing.config import Config
from sourcetracing.errors import BundleError
from sourcetracing.layout import ExperimentLayout
from sourcetracing.systems.handle import kind_of_outputs
from sourcetracing.systems.outputs import OutputsMeta
from sourcetracing.trace import Tracer
from sourcetracing.trace_select import TraceChoice, choose_system


def bundle_choice(cfg: Config, system: str | None) -> TraceChoice:
    """The system to bundle: ``system``, else the one chosen on dev among those a bundle can hold."""
    if system is None:
        return choose_system(cfg, fusion=False)
    meta = OutputsMeta.of(ExperimentLayout.of(cfg).system(system))
    kind = kind_of_outputs(meta) if meta is not None else None
    if kind is None or not kind.runs_on_audio:
        what = (
            "the fusion combines systems"
            if kind is not None and kind.fuses_members
            else f"its outputs ({meta.task if meta else None}) come from no model that runs on audio"
        )
        raise BundleError(f"'{system}' cannot be bundled: {what}; bundle one system that runs on audio")
    return TraceChoice(system, None, "--system")


def _plain(value: object) -> object:
    """A JSON value of a scorer option (numpy scalars as Python numbers)."""
    return value.item() if hasattr(value, "item") else value


def tracer_parts(cfg: Config, tracer: Tracer) -> tuple[dict, dict, dict]:
    """``(settings, weights, state)`` of a loaded tracer, as :func:`~sourcetracing.bundle.write_bundle` takes them
    (the model's part from its kind: :meth:`~sourcetracing.systems.handle.SystemKind.bundle_model`)."""
    runner = tracer.runner
    model, weights, frontend = runner.kind.bundle_model(runner)
    scorer = tracer.scorer
    state = {f"scorer.{k}": np.asarray(getattr(scorer, k)) for k in scorer.state_keys}
    if tracer.centroids is not None:
        state["centroids"] = np.asarray(tracer.centroids)
    known = [c for c in tracer.classes if c not in tracer.enrolled]
    settings = {
        "system": tracer.system,
        "task": tracer.task,
        "model": model,
        "frontend": frontend,
        "audio": {
            "sample_rate": tracer.sample_rate,
            "num_samples": tracer.num_samples,
            "min_len_s": tracer.min_len_s,
            "windows": tracer.windows,
        },  # fmt: skip
        "labels": {
            "classes": list(tracer.classes),
            "known": known,
            "enrolled": list(tracer.enrolled),
            "level": tracer.level,
        },  # fmt: skip
        "scorer": {
            "name": tracer.scorer_name,
            "type": scorer.name,
            "options": {k: _plain(v) for k, v in scorer.options().items()},
        },  # fmt: skip
        "decision": {
            "threshold": tracer.threshold,
            "calibration": tracer.calibration.to_dict() if tracer.calibration is not None else None,
            "temperature": tracer.temperature,
            "prior": tracer.prior,
            "top_k": tracer.top_k,
        },  # fmt: skip
        "made_from": {
            "exp_dir": str(cfg.exp_dir),
            "config": str(cfg.name),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    }
    return settings, weights, state


def _numbers(cfg: Config, system: str, scorer: str) -> tuple[pd.DataFrame, dict, str]:
    """The OOD step's dev/eval rows of ``scorer`` (subset ``all``), the known-class metrics, the machine."""
    sys_layout = ExperimentLayout.of(cfg).system(system)
    summary = pd.read_csv(sys_layout.ood_summary)
    rows = summary[(summary["scorer"] == scorer) & (summary["subset"] == "all")].set_index("split")
    known = json.loads(sys_layout.known_metrics.read_text()) if sys_layout.known_metrics.is_file() else {}
    return rows, known, str(OutputsMeta.read(sys_layout.outputs).machine or "not recorded")


def _cell(value: object, pct: bool = False) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if not np.isfinite(v) else (f"{100 * v:.2f}%" if pct else f"{v:.3f}")


def model_card(cfg: Config, tracer: Tracer, settings: dict, reason: str) -> str:
    """The bundle's README.md: what it decides, data and protocol, numbers and machine, calibration, limits."""
    rows, known, machine = _numbers(cfg, tracer.system, tracer.scorer_name)
    labels, audio, decision = settings["labels"], settings["audio"], settings["decision"]
    cal = decision["calibration"]
    crop = (
        f"{audio['num_samples'] / audio['sample_rate']:.2f} s crop"
        if audio["num_samples"]
        else "the whole clip"
    )
    front = (settings["frontend"] or {}).get("name", "statistics of the clip")
    table = ["| split | clips (known / unseen) | OOD EER | AUROC | FPR at 95% TPR | Cllr (bits) | open-set macro-F1 | known-class macro-F1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for split in ("dev", "eval"):
        if split not in rows.index:
            continue
        r = rows.loc[split]
        table.append(
            f"| {split} | {int(r['n_known'])} / {int(r['n_ood'])} | {_cell(r['eer'], True)} | {_cell(r['auroc'])} "
            f"| {_cell(r['fpr_at_95tpr'], True)} | {_cell(r.get('cllr'))} | {_cell(r.get('open_set_macro_f1'))} "
            f"| {_cell(known.get(split, {}).get('macro_f1'))} |"
        )
    enrolled = ", ".join(labels["enrolled"]) or "none"
    calibration = (
        f"logistic, llr = {cal['slope']:.6g} · score + {cal['offset']:.6g} (natural log, unseen vs known), "
        f"fitted on dev at train prior {cal['train_prior']}"
        if cal
        else "none (p_unseen is empty)"
    )
    lines = [
        f"# Tracer bundle: {tracer.system} / {tracer.scorer_name}",
        "",
        f"Format version {FORMAT_VERSION}, written by `scripts/export_bundle.py` on {settings['made_from']['created']} "
        f"from the experiment `{cfg.exp_dir}` (config `{cfg.name}`). System: {reason}.",
        "",
        "    python scripts/trace.py --bundle THIS_FOLDER clip.wav more_clips/",
        "    Tracer.from_bundle(THIS_FOLDER).trace('clip.wav')   # from sourcetracing.trace import Tracer",
        "",
        "## What it decides",
        "",
        f"For each clip: the known {labels['level']} that most likely made it (`predicted`, top {decision['top_k']}), "
        f"the OOD score of the `{tracer.scorer_name}` scorer (higher = more likely from an unseen {labels['level']}), "
        "`p_unseen` (the calibrated probability of an unseen source at the stated prior) and the decision: "
        f"`unknown` when the score is ≥ {decision['threshold']:.6g} (the dev-EER threshold), else `known`.",
        "",
        "## Data and protocol",
        "",
        f"- corpus: `{cfg.data.root}`, protocols `{cfg.data.protocols}` (splits {dict(cfg.data.splits)})",
        f"- known {labels['level']}s ({len(labels['known'])}): {', '.join(labels['known'])}",
        f"- enrolled without retraining: {enrolled}",
        f"- input: mono at {audio['sample_rate']} Hz, {crop}, front end {front}"
        + (f", {audio['windows']} test-time windows averaged" if audio["windows"] > 1 else ""),
        "- train fits the model and the scorer; dev fits the threshold, the calibration and every choice; "
        "eval (with unseen systems that dev never had) is only scored.",
        "",
        f"## Numbers (computed on: {machine})",
        "",
        *table,
        "",
        "From the experiment's OOD step summary (`ood_step/ood_summary.csv`, subset `all`) and known-class "
        "metrics (`results/metrics.json`); the bundle gives the experiment's decisions on the same clips.",
        "",
        "## Calibration",
        "",
        f"- threshold (dev EER): {decision['threshold']:.6g}",
        f"- calibration: {calibration}; `p_unseen` = sigmoid(llr + logit(prior)) at prior {decision['prior']}",
        f"- class probabilities: softmax of the class scores divided by the dev-fitted temperature {decision['temperature']:.6g}",
        "",
        "## Intended use and limits",
        "",
        "- Use: attributing a clip to one of the known synthesizers above and flagging clips from others, "
        "as a screening aid with a person reviewing the decisions.",
        '- An unseen source is only "unknown": the bundle cannot name it; `predicted` is then the closest known one.',
        "- The numbers hold for clips like the corpus's; other languages, channels (codecs, noise, "
        "re-recording), lengths or synthesizers can move the error rates, and the threshold and calibration "
        "were fitted on dev's few unseen systems.",
        "- Not a detector of bona fide versus spoofed speech: every clip is assumed to be synthetic.",
        "",
        "## Files",
        "",
        f"`{MANIFEST}` lists the sha256 of {', '.join(f'`{f}`' for f in FILES)}; a bundle whose files "
        "or format version do not match is refused. Weights and arrays are safetensors; nothing is unpickled.",
        "",
    ]
    return "\n".join(lines)


def _test_signal(sample_rate: int, seconds: float = 2.0) -> np.ndarray:
    """A fixed harmonic tone with noise: the clip both tracers must agree on."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = sum(0.5**h * np.sin(2 * np.pi * 140.0 * h * t) for h in range(1, 6))
    return (0.3 * wave / np.max(np.abs(wave)) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def check_same(expected: Tracer, bundled: Tracer) -> None:
    """:class:`BundleError` unless the bundle's tracer gives the experiment's numbers on the test signal."""
    wave = _test_signal(expected.sample_rate)
    a, b = expected.trace(wave), bundled.trace(wave)
    cols = ["status", "predicted", "top_k", "decision"]
    same = a[cols].equals(b[cols]) and np.allclose(a["ood_score"], b["ood_score"], rtol=1e-6, atol=1e-9)
    if not same:
        raise BundleError("the bundle's tracer does not reproduce the experiment's on a test signal")


def export_bundle(
    cfg: Config, out: str | Path, system: str | None = None, archive: str | None = None
) -> tuple[Path, Path | None, TraceChoice]:
    """Write the bundle of ``system`` (else the dev-chosen one) to the new folder ``out`` and, with
    ``archive`` (``tar.gz`` or ``zip``), one archive beside it; returns ``(folder, archive, choice)``."""
    out = Path(out)
    choice = bundle_choice(cfg, system)
    tracer = Tracer.load(cfg, choice.system, choice.scorer, device="cpu")
    settings, weights, state = tracer_parts(cfg, tracer)
    card = model_card(cfg, tracer, settings, choice.reason)
    folder = write_bundle(out, settings, weights, state, card)
    try:
        check_same(tracer, Tracer.from_bundle(folder, "cpu"))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    packed = write_archive(folder, archive) if archive else None
    return folder, packed, choice


__all__ = ["bundle_choice", "check_same", "export_bundle", "model_card", "tracer_parts"]
