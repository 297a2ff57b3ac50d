"""The statistics kind (outputs' task ``reference``): the MFCC reference (``mfcc``), the plain
reference (``plain_mfcc``, with ``mfcc.plain``) and the statistics system (``stats`` and each of
``stats.variants``): utterance statistics of the clip through a saved standardiser, projection and
logistic regression (``trained_models/reference.npz``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from sourcetracing.components import SYSTEM_KINDS
from sourcetracing.config import Config, config_hash
from sourcetracing.data.protocols import LabelMap
from sourcetracing.errors import StaleInputError
from sourcetracing.layout import ExperimentLayout, SystemLayout
from sourcetracing.provenance import file_digest, require_same
from sourcetracing.systems.handle import Made, Runner, SystemHandle, SystemKind, experiment_known, producer
from sourcetracing.systems.outputs import OutputsMeta, SplitOutputs

REFERENCE_STEP = "python scripts/reference_baseline.py"


@SYSTEM_KINDS.register("reference")
class StatisticsKind(SystemKind):
    """Utterance-statistics systems: statistics of the whole clip (or its crop) and a saved linear model."""

    order = 2
    runs_on_audio = True

    def systems(self, cfg: Config) -> dict[str, Made]:
        from sourcetracing.systems import mfcc, plain_reference, stats

        out = {
            mfcc.SYSTEM: Made(
                cfg, REFERENCE_STEP, lambda checkpoint=None, n_jobs=None: mfcc.export_mfcc(cfg, n_jobs)
            )
        }
        if cfg.mfcc.plain:
            out[plain_reference.SYSTEM] = Made(
                plain_reference.plain_config(cfg), REFERENCE_STEP,
                lambda checkpoint=None, n_jobs=None: plain_reference.export_plain(cfg, n_jobs),
            )  # fmt: skip
        for name, own in stats.stats_systems(cfg).items():
            out[name] = Made(
                own, "python scripts/stats_system.py",
                lambda checkpoint=None, n_jobs=None, own=own, name=name: stats.export_stats(own, n_jobs, system=name),
            )  # fmt: skip
        return out

    @staticmethod
    def model_path(sys_layout: SystemLayout) -> Path:
        from sourcetracing.systems.mfcc import MODEL_FILE

        return sys_layout.models / MODEL_FILE

    def check(self, handle: SystemHandle) -> None:
        path = self.model_path(handle.layout)
        if path.is_file():  # the outputs (and what was fitted on them) came from this saved model
            require_same(
                handle.inputs.get("model"),
                file_digest(path),
                str(path),
                f"the step that exports '{handle.name}'",
            )

    def why_not_runnable(self, cfg: Config, sys_layout: SystemLayout, meta: OutputsMeta) -> str | None:
        path = self.model_path(sys_layout)
        if not path.is_file():
            return f"{path} not found: rerun the step that exports '{sys_layout.name}'"
        return None

    def load_model(self, path: Path, handle: SystemHandle) -> Any:
        """The saved model at ``path``: ``settings`` (the statistics'), ``class_names`` and
        ``apply(statistics) -> (embeddings, logits)``."""
        from sourcetracing.systems.mfcc import ReferenceModel

        return ReferenceModel.load(path)

    def open_runner(self, handle: SystemHandle, device: torch.device) -> Runner:
        path = self.model_path(handle.layout)
        model = self.load_model(path, handle)
        expected = experiment_known(handle.cfg)
        if expected is not None and list(expected.known) != list(model.class_names):
            raise StaleInputError(
                f"{path} was fitted on other known systems than the experiment's label map: rerun {producer(handle.cfg, handle.name)}"
            )
        return self._runner(handle.name, model, device, file_digest(path), float(handle.cfg.data.min_len_s))

    def _runner(
        self, system: str, model: Any, device: torch.device, model_id: str, min_len_s: float
    ) -> Runner:
        settings = model.settings
        sample_rate = int(settings["sample_rate"])
        crop = int(round(float(settings["max_len_s"]) * sample_rate)) if settings.get("crop") else 0
        return Runner(
            self, system, model, device, sample_rate, crop, float(settings.get("min_len_s", min_len_s)),
            model_id=model_id, label_map=LabelMap(known=list(model.class_names), ood=[]),
        )  # fmt: skip

    def forward(self, runner: Runner, waves: Any) -> tuple[np.ndarray | None, np.ndarray]:
        from sourcetracing.systems.mfcc import wave_statistics

        stats = [wave_statistics(w, runner.sample_rate, runner.model.settings) for w in waves]
        emb, logits = runner.model.apply(np.stack(stats))
        return logits, emb

    def run_rows(
        self, runner: Runner, cfg: Config, split: str, rows: Any, store: Any, condition: Any, desc: str
    ) -> SplitOutputs:
        from sourcetracing.features.store import CONDITIONS_DIR
        from sourcetracing.systems.mfcc import mfcc_jobs, split_features
        from sourcetracing.systems.outputs import output_rows

        cache = None
        if condition is not None:  # the statistics under this condition, cached beside the condition stores
            key = config_hash({"statistics": runner.model.settings, "condition": condition.settings()})
            folder = f"{condition.name}-{runner.system}-{key}"
            cache = ExperimentLayout.of(cfg).features_root / CONDITIONS_DIR / folder / f"{split}.npz"
        x, kept, _ = split_features(
            rows, cfg.data.root, runner.model.settings, mfcc_jobs(cfg), cache, condition
        )
        emb, logits = runner.model.apply(x)
        return SplitOutputs(output_rows(kept), embeddings=emb, logits=logits)

    def bundle_model(self, runner: Runner) -> tuple[dict, dict, dict | None]:
        m = runner.model
        weights = {"mean": m.mean, "scale": m.scale, "var": m.var, "coef": m.coef, "intercept": m.intercept,
                   "classes": m.classes}  # fmt: skip
        if m.proj_matrix is not None:
            weights.update(proj_mean=m.proj_mean, proj_matrix=m.proj_matrix)
        model = {
            "settings": m.settings,
            "class_names": list(m.class_names),
            "n_samples_seen": int(m.n_samples_seen),
        }
        return model, weights, None

    def runner_from_bundle(
        self,
        system: str,
        model: dict,
        weights: dict,
        audio: dict,
        frontend: dict | None,
        device: torch.device,
    ) -> Runner:
        from sourcetracing.systems.mfcc import ReferenceModel

        w = {k: v.numpy() if hasattr(v, "numpy") else np.asarray(v) for k, v in weights.items()}
        ref = ReferenceModel(
            w["mean"], w["scale"], w["var"], int(model["n_samples_seen"]), w["coef"], w["intercept"],
            w["classes"], list(model["class_names"]), dict(model["settings"]), w.get("proj_mean"), w.get("proj_matrix"),
        )  # fmt: skip
        runner = self._runner(system, ref, device, "", float(audio["min_len_s"]))
        runner.num_samples, runner.min_len_s = int(audio["num_samples"]), float(audio["min_len_s"])
        return runner
