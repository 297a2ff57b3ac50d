"""The GE2E kind: an encoder's embeddings (frame features or raw audio), decided by class centroids."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sourcetracing.components import SYSTEM_KINDS
from sourcetracing.config import Config
from sourcetracing.systems.handle import Made, Runner
from sourcetracing.systems.kinds.trained import TrainedKind
from sourcetracing.systems.outputs import SplitOutputs


@SYSTEM_KINDS.register("ge2e")
class GE2EKind(TrainedKind):
    """A GE2E encoder (train_ge2e.py): embeddings only; its closed-set decision is the nearest centroid."""

    order = 1

    def systems(self, cfg: Config) -> dict[str, Made]:
        from sourcetracing.systems import export
        from sourcetracing.training.ge2e_data import SYSTEM

        def run(checkpoint=None, n_jobs=None):
            return export.export_ge2e(cfg, checkpoint=checkpoint)

        return {SYSTEM: Made(cfg, "python train_ge2e.py", run)}

    def build_network(self, model_config: dict, input_dim: int | None, num_classes: int) -> torch.nn.Module:
        from sourcetracing.components import ENCODERS

        return ENCODERS.get(model_config["name"])(**{k: v for k, v in model_config.items() if k != "name"})

    def forward(self, runner: Runner, waves: Any) -> tuple[np.ndarray | None, np.ndarray]:
        x, n, per_clip = self.inputs(runner, waves)
        return None, self.clip_mean(runner.model(x), n, per_clip)

    def run_rows(
        self, runner: Runner, cfg: Config, split: str, rows: Any, store: Any, condition: Any, desc: str
    ) -> SplitOutputs:
        from sourcetracing.data.audio import clip_samples
        from sourcetracing.systems.conditioned import ConditionedAudioSource
        from sourcetracing.systems.outputs import output_rows
        from sourcetracing.training.ge2e_data import ClipSource, embed_rows

        if store is not None:  # a frame-feature encoder: the (condition) store's rows
            source = ClipSource(
                "features", runner.label_map, rows.iloc[:0], {}, int(store.frame_shape[1]), store
            )
        else:  # a raw-audio encoder: the clips through the condition
            source = ConditionedAudioSource(
                "audio", runner.label_map, rows.iloc[:0], {},
                audio={"root": cfg.data.root, "sample_rate": cfg.data.sample_rate, "num_samples": clip_samples(cfg)},
                condition=condition,
            )  # fmt: skip
        emb, ok = embed_rows(
            runner.model, source, rows, runner.device, int(cfg.ge2e.batch_size), int(cfg.ge2e.num_workers),
            desc=desc, show_progress=False,
        )  # fmt: skip
        return SplitOutputs(output_rows(rows[ok]), embeddings=emb)
