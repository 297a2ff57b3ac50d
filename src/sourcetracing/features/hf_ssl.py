"""``hf_ssl``: ``hidden_states[layer]`` of a Hugging Face audio encoder, computing only the layers it needs.

Settings (``frontend.hf_ssl``): ``model`` (hub name or local path), ``layer``, ``precision``
(``auto | float32 | tf32 | bf16 | fp16``; auto = bf16 on CUDA, float32 on CPU) and ``attention``
(``auto | sdpa | eager``; auto = PyTorch's fused scaled-dot-product attention where the model
class supports it, else the eager implementation).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from sourcetracing.components import FRONTENDS
from sourcetracing.features.frontends import FrontEnd, FrontEndError, cuda_math, resolve_precision, to_device
from sourcetracing.progress import library_bars_on_terminal_only

log = logging.getLogger(__name__)

ATTENTIONS = ("auto", "sdpa", "eager")


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the wanted hidden state exists."""


def find_layer_list(model: nn.Module, num_layers: int) -> tuple[nn.Module, str]:
    """The ``nn.ModuleList`` of transformer layers (``encoder.layers`` for wav2vec2/HuBERT/WavLM)."""
    candidates = [
        (name, mod) for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and len(mod) == num_layers and name.split(".")[-1] in ("layers", "layer")
    ]  # fmt: skip
    if not candidates:
        raise FrontEndError(f"cannot find the {num_layers} transformer layers of {type(model).__name__}")
    name, _ = min(candidates, key=lambda c: c[0].count("."))  # the outermost one
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr


class _PerClip(nn.Module):
    """Runs a module one clip at a time and stacks the results.

    The convolutional feature encoder of wav2vec2-style models produces a 512 x 16k activation per
    4 s clip; batched on a CPU these no longer fit the caches and the encoder runs slower than one
    clip at a time. Each clip's output is the same either way (convolutions and group norms act
    per clip).
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] <= 1:
            return self.inner(x)
        return torch.cat([self.inner(clip) for clip in x.split(1)], dim=0)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)


class HFSSLFrontEnd(FrontEnd):
    """``hidden_states[layer]`` of a Hugging Face audio encoder, computing only the layers it needs.

    ``hidden_states[0]`` is the input of the first transformer layer and ``hidden_states[k]`` the
    output of layer k (transformers 5 records them with hooks on the layers). We keep only the
    first ``max(k, 1)`` layers and hook the one that produces the wanted state, so the final
    encoder layer norm of stable-layer-norm models (applied after the last layer, not part of
    ``hidden_states[k]``) and every layer above k are never run.
    """

    name = "hf_ssl"

    def __init__(
        self, model_name: str, layer: int, precision: str, device: torch.device, attention: str = "auto"
    ):
        from transformers import AutoConfig

        if attention not in ATTENTIONS:
            raise FrontEndError(f"frontend.hf_ssl.attention must be one of {ATTENTIONS}, got {attention!r}")
        self.autocast_dtype = resolve_precision(precision, device)  # checked before the model loads
        local = Path(model_name).exists()
        try:
            config = AutoConfig.from_pretrained(model_name, local_files_only=local)
        except (OSError, ValueError) as err:
            raise self._load_error(model_name, err) from err
        model, self.attention = self._load_model(model_name, local, attention)
        num_layers = int(config.num_hidden_layers)
        k = layer if layer >= 0 else num_layers + 1 + layer
        if not 0 <= k <= num_layers:
            raise FrontEndError(
                f"frontend.hf_ssl.layer={layer} out of range for a model with {num_layers} layers"
            )
        self.layer, self.num_layers = k, num_layers
        self.model_name = model_name
        self.do_normalize = self._read_do_normalize(model_name, local)
        parent, attr = find_layer_list(model, num_layers)
        layers = getattr(parent, attr)
        setattr(parent, attr, nn.ModuleList(list(layers)[: max(k, 1)]))
        model.config.num_hidden_layers = max(k, 1)
        target = getattr(parent, attr)[max(k, 1) - 1]
        if k == 0:
            target.register_forward_pre_hook(self._capture_input, with_kwargs=True)
        else:
            target.register_forward_hook(self._capture_output)
        if device.type == "cpu" and isinstance(getattr(model, "feature_extractor", None), nn.Module):
            model.feature_extractor = _PerClip(model.feature_extractor)
        self.model = model.eval().to(device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.device = device
        self.precision = precision
        self.hidden_size = int(config.hidden_size)
        self.conv_layers = (
            list(zip(config.conv_kernel, config.conv_stride, strict=True))
            if hasattr(config, "conv_kernel")
            else None
        )
        self._captured: torch.Tensor | None = None

    @staticmethod
    def _load_error(model_name: str, err: Exception) -> FrontEndError:
        return FrontEndError(
            f"cannot load Hugging Face model '{model_name}' ({err}); give a local path or make sure the hub "
            "is reachable (or the model is in the HF cache)"
        )

    @classmethod
    def _load_model(cls, model_name: str, local: bool, attention: str) -> tuple[nn.Module, str]:
        """The model with the requested attention implementation, and the implementation it got.

        ``auto`` asks for ``sdpa`` and falls back to ``eager`` for model classes without it (WavLM).
        """
        from transformers import AutoModel

        library_bars_on_terminal_only()

        def load(implementation: str) -> nn.Module:
            return AutoModel.from_pretrained(
                model_name, local_files_only=local, attn_implementation=implementation
            )

        wanted = "sdpa" if attention == "auto" else attention
        try:
            return load(wanted), wanted
        except (OSError, ValueError, ImportError) as err:
            first = err
        try:
            model = load("eager")
        except (OSError, ValueError, ImportError) as err:
            raise cls._load_error(model_name, err) from err
        if attention == "sdpa":
            raise FrontEndError(
                f"frontend.hf_ssl.attention=sdpa: {type(model).__name__} has no scaled-dot-product attention "
                f"({first}); use attention auto or eager"
            ) from first
        log.info("%s has no sdpa attention; using eager attention", type(model).__name__)
        return model, "eager"

    @staticmethod
    def _read_do_normalize(model_name: str, local: bool) -> bool:
        from transformers import AutoFeatureExtractor

        try:
            fe = AutoFeatureExtractor.from_pretrained(model_name, local_files_only=local)
            return bool(getattr(fe, "do_normalize", True))
        except (OSError, ValueError) as err:
            log.warning(
                "no feature extractor config for %s (%s): normalising each utterance", model_name, err
            )
            return True

    def _capture_output(self, module, args, output):
        self._captured = output[0] if isinstance(output, tuple) else output
        raise _Captured

    def _capture_input(self, module, args, kwargs):
        self._captured = args[0] if args else kwargs["hidden_states"]
        raise _Captured

    def normalize(self, waves: torch.Tensor) -> torch.Tensor:
        """Zero mean, unit variance per utterance (the feature extractor's ``do_normalize``)."""
        if not self.do_normalize:
            return waves
        mean = waves.mean(dim=-1, keepdim=True)
        var = waves.var(dim=-1, keepdim=True, unbiased=False)
        return (waves - mean) / torch.sqrt(var + 1e-7)

    def output_shape(self, num_samples: int) -> tuple[int, int]:
        if self.conv_layers is None:
            with torch.inference_mode():
                return tuple(self(torch.zeros(1, num_samples) + 1e-3).shape[1:])  # type: ignore[return-value]
        t = num_samples
        for kernel, stride in self.conv_layers:
            t = (t - kernel) // stride + 1
        return t, self.hidden_size

    @torch.inference_mode()
    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        waves = self.normalize(to_device(waves, self.device))
        ctx = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        self._captured = None
        with cuda_math(self.device, tf32=self.precision == "tf32"), ctx:
            try:
                self.model(waves)
            except _Captured:
                pass
        out, self._captured = self._captured, None
        if out is None:
            raise FrontEndError(f"hidden state {self.layer} of {self.model_name} was not produced")
        return out.float()


@FRONTENDS.register(
    "hf_ssl",
    defaults={"model": "facebook/wav2vec2-base", "layer": 5, "precision": "auto", "attention": "auto"},
)
def build_hf_ssl(settings: Mapping, device: torch.device, sample_rate: int) -> HFSSLFrontEnd:
    """A Hugging Face SSL encoder's hidden state (wav2vec2-base layer 5 by default, as the original)."""
    return HFSSLFrontEnd(
        str(settings["model"]),
        int(settings["layer"]),
        str(settings["precision"]),
        device,
        attention=str(settings["attention"]),
    )
