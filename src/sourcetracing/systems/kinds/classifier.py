"""The classifier kind (``model.name``: AASIST and every registered model): logits and penultimate
embeddings of frame features, from its best checkpoint."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sourcetracing.components import SYSTEM_KINDS
from sourcetracing.config import Config
from sourcetracing.errors import DataError
from sourcetracing.systems.handle import Made, Runner
from sourcetracing.systems.kinds.trained import TrainedKind
from sourcetracing.systems.outputs import OutputsMeta, SplitOutputs


@SYSTEM_KINDS.register("classifier")
class ClassifierKind(TrainedKind):
    """A classifier trained on frame features (train_refd.py): logits and penultimate embeddings."""

    order = 0

    def systems(self, cfg: Config) -> dict[str, Made]:
        from sourcetracing.systems import export

        def run(checkpoint=None, n_jobs=None):
            return export.export_classifier(cfg, checkpoint=checkpoint)

        return {str(cfg.model.name): Made(cfg, "python train_refd.py", run)}

    def refusal(self, cfg: Config, system: str, meta: OutputsMeta) -> str | None:
        return (
            f"its outputs come from a classifier, and this config's classifier is "
            f"model.name={cfg.model.name} (add the override model.name={system})"
        )

    def build_network(self, model_config: dict, input_dim: int | None, num_classes: int) -> torch.nn.Module:
        from sourcetracing.components import MODELS

        options = {k: v for k, v in model_config.items() if k != "name"}
        return MODELS.get(model_config["name"])(
            input_dim=int(input_dim), num_classes=int(num_classes), **options
        )

    def forward(self, runner: Runner, waves: Any) -> tuple[np.ndarray | None, np.ndarray]:
        x, n, per_clip = self.inputs(runner, waves)
        logits, emb = runner.model(x)
        return self.clip_mean(logits, n, per_clip), self.clip_mean(emb, n, per_clip)

    def run_rows(
        self, runner: Runner, cfg: Config, split: str, rows: Any, store: Any, condition: Any, desc: str
    ) -> SplitOutputs:
        from sourcetracing.systems.outputs import output_rows
        from sourcetracing.training.data import predict

        if store is None:
            raise DataError(f"{runner.system} reads frame features: give the feature store of its rows")
        logits, emb = predict(
            runner.model, store, rows, runner.device, int(cfg.outputs.batch_size), desc=desc
        )
        return SplitOutputs(output_rows(rows), embeddings=emb, logits=logits)
