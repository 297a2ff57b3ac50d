"""What the kinds made from a checkpoint share (the classifier and GE2E): the checkpoint check, the
model, front end and crop the checkpoint records, bundling the network as safetensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sourcetracing.config import Config
from sourcetracing.data.protocols import LabelMap
from sourcetracing.errors import BundleError, MissingInputError
from sourcetracing.features.store import to_store_dtype
from sourcetracing.layout import SystemLayout
from sourcetracing.ood.step import rerun_ood
from sourcetracing.provenance import require_same
from sourcetracing.systems.handle import Runner, SystemHandle, SystemKind, experiment_known
from sourcetracing.systems.outputs import OutputsMeta
from sourcetracing.training.checkpoint import build_model, checkpoint_id, load_model

NOT_BUNDLED = "hf_ssl"  # front end / encoder whose pretrained weights are loaded by name


class TrainedKind(SystemKind):
    """A system whose network is a checkpoint (``trained_models/best.pt``) of the training loop."""

    runs_on_audio = True
    trained = True
    takes_enrolled = True

    def check(self, handle: SystemHandle) -> None:
        best, recorded = handle.layout.best, handle.inputs.get("checkpoint")
        if recorded and best.is_file():
            require_same(
                recorded,
                checkpoint_id(best),
                f"{best}",
                f"{rerun_ood(handle.name)} --feature-extraction-step",
            )

    def why_not_runnable(self, cfg: Config, sys_layout: SystemLayout, meta: OutputsMeta) -> str | None:
        if not sys_layout.best.is_file():
            return f"{sys_layout.best} not found: it has no checkpoint to run"
        return None

    def open_runner(self, handle: SystemHandle, device: torch.device) -> Runner:
        from sourcetracing.features.frontends import build_frontend

        cfg, best = handle.cfg, handle.layout.best
        if not best.is_file():
            raise MissingInputError(f"{best} not found: '{handle.name}' has no checkpoint to run")
        model, ckpt = load_model(best, device, expected_label_map=experiment_known(cfg))
        prov = ckpt.get("provenance", {})
        sample_rate = int(prov.get("sample_rate", cfg.data.sample_rate))
        frontend = None
        if prov.get("frontend"):
            frontend = build_frontend(prov["frontend"], device, sample_rate=int(prov["sample_rate"]))
        num_samples = int(prov.get("num_samples", 0)) or int(round(cfg.data.max_len_s * cfg.data.sample_rate))
        label_map = LabelMap.from_dict(ckpt["label_map"])
        settings = {
            "model_config": dict(ckpt["model_config"]), "input_dim": ckpt.get("input_dim"),
            "num_classes": label_map.num_classes, "frontend": prov.get("frontend") or None,
        }  # fmt: skip
        return Runner(
            self, handle.name, model, device, sample_rate, num_samples, float(cfg.data.min_len_s),
            windows=int(cfg.features.test_windows), frontend=frontend, model_id=checkpoint_id(best),
            label_map=label_map, settings=settings,
        )  # fmt: skip

    @staticmethod
    def inputs(runner: Runner, waves: Any) -> tuple[torch.Tensor, int, int]:
        """The network's input of ``[B, samples]`` (or ``[B, windows, samples]``) waves, as the store
        computes features (front end, float16 round trip); with the batch and window counts."""
        waves = np.ascontiguousarray(waves, dtype=np.float32)
        n, per_clip = len(waves), waves.shape[1] if waves.ndim == 3 else 1
        x = torch.from_numpy(waves.reshape(n * per_clip, -1)).to(runner.device)
        if runner.frontend is not None:
            x = to_store_dtype(runner.frontend(x)).to(torch.float32)
        return x, n, per_clip

    @staticmethod
    def clip_mean(a: torch.Tensor, n: int, per_clip: int) -> np.ndarray:
        """The mean over each clip's windows."""
        return a.float().reshape(n, per_clip, -1).mean(dim=1).cpu().numpy()

    def bundle_model(self, runner: Runner) -> tuple[dict, dict, dict | None]:
        st = runner.settings
        frontend = st.get("frontend")
        if st["model_config"].get("name") == NOT_BUNDLED or (frontend or {}).get("name") == NOT_BUNDLED:
            raise BundleError(
                f"'{runner.system}' uses the {NOT_BUNDLED} front end or encoder, whose pretrained model is "
                "loaded by name outside the bundle: not supported yet"
            )
        weights = {k: v.detach().cpu() for k, v in runner.model.state_dict().items()}
        model = {
            "model_config": st["model_config"],
            "input_dim": st["input_dim"],
            "num_classes": st["num_classes"],
        }
        return model, weights, frontend

    def runner_from_bundle(
        self,
        system: str,
        model: dict,
        weights: dict,
        audio: dict,
        frontend: dict | None,
        device: torch.device,
    ) -> Runner:
        from sourcetracing.features.frontends import build_frontend

        net = build_model(self.name, model["model_config"], model["input_dim"], model["num_classes"])
        net.load_state_dict(weights)
        net.to(device).eval()
        built = build_frontend(frontend, device, sample_rate=int(audio["sample_rate"])) if frontend else None
        return Runner(
            self, system, net, device, int(audio["sample_rate"]), int(audio["num_samples"]),
            float(audio["min_len_s"]), windows=int(audio["windows"]), frontend=built,
            settings={**model, "frontend": frontend},
        )  # fmt: skip


__all__ = ["NOT_BUNDLED", "TrainedKind"]
