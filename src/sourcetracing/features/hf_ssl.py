"""``hf_ssl``: ``hidden_states[layer]`` of a Hugging Face audio encoder, computing only the layers it needs.

Settings (``frontend.hf_ssl``): ``model`` (hub name or local path), ``layer``, ``precision``
(``auto | float32 | tf32 | bf16 | fp16``; auto = bf16 on CUDA, float32 on CPU) and ``attention``
(``auto | sdpa | eager``; auto = PyTorch's fused scaled-dot-product attention where the model
class supports it, else the eager implementation).

Two kinds of model are understood, told apart by the input the model class names:

- waveform models (``input_values``): wav2vec2, XLS-R, HuBERT, WavLM, ... get the 16 kHz waveform,
  normalised per utterance when the saved feature extractor says ``do_normalize``;
- filter-bank models (``input_features`` with a ``SeamlessM4TFeatureExtractor``): w2v-BERT 2.0
  (``Wav2Vec2BertModel``) gets Kaldi-style 80-bin log-mel filter banks, normalised per utterance and
  stacked two frames at a time, computed batched in torch by :class:`KaldiFilterBank`.

Whisper-style encoders (log-mel input padded to a fixed 30 s) are not supported.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sourcetracing.components import FRONTENDS
from sourcetracing.features.frontends import FrontEnd, FrontEndError, cuda_math, resolve_precision, to_device
from sourcetracing.progress import library_bars_on_terminal_only

log = logging.getLogger(__name__)

ATTENTIONS = ("auto", "sdpa", "eager")
FILTER_BANK_EXTRACTORS = ("SeamlessM4TFeatureExtractor",)


class _Captured(Exception):
    """Raised by the capture hook to stop the forward pass once the wanted hidden state exists."""


@dataclass(frozen=True)
class FilterBankSettings:
    """The feature extractor settings saved with a filter-bank model (``preprocessor_config.json``).

    Defaults are those of ``SeamlessM4TFeatureExtractor``; the frame geometry (25 ms / 10 ms at
    16 kHz, 512-point FFT), preemphasis, povey window and mel floor are fixed by that extractor.
    """

    sampling_rate: int = 16000
    num_mel_bins: int = 80
    feature_size: int = 80
    stride: int = 2
    padding_value: float = 0.0

    @classmethod
    def from_extractor(cls, extractor: Any) -> FilterBankSettings:
        """The settings a loaded feature extractor carries (missing ones keep their defaults)."""
        defaults = cls()
        return cls(
            sampling_rate=int(getattr(extractor, "sampling_rate", defaults.sampling_rate)),
            num_mel_bins=int(getattr(extractor, "num_mel_bins", defaults.num_mel_bins)),
            feature_size=int(getattr(extractor, "feature_size", defaults.feature_size)),
            stride=int(getattr(extractor, "stride", defaults.stride)),
            padding_value=float(getattr(extractor, "padding_value", defaults.padding_value)),
        )


def kaldi_mel(freq: torch.Tensor) -> torch.Tensor:
    """Hertz -> Kaldi mel (``1127 ln(1 + f / 700)``)."""
    return 1127.0 * torch.log1p(freq / 700.0)


class KaldiFilterBank:
    """Waveforms -> the ``input_features`` and ``attention_mask`` of a w2v-BERT 2.0 model, batched in torch.

    Per clip, as ``SeamlessM4TFeatureExtractor`` does it: the waveform scaled to the int16 range is
    cut into 400-sample frames every 160 samples (no centring); each frame loses its mean, is
    preemphasised (0.97), multiplied by a povey window and zero-padded to a 512-point FFT; its power
    spectrum goes through ``num_mel_bins`` triangular filters (Kaldi mel scale, 20 Hz to Nyquist,
    triangles in mel space), floored at 2^-23 and logged. Each mel bin is then normalised over the
    clip's frames (mean, unbiased variance + 1e-7), the batch is padded with ``padding_value`` to an
    even number of frames, and ``stride`` consecutive frames are concatenated (80 x 2 = 160
    features, ~50 frames/s). A stacked frame is valid when the frame at offset 1 within it is.

    The spectra are computed in float64 (on the CPU for a device without float64). Tolerance,
    measured against the extractor (transformers 5.24) on speech-like, noise, quiet and partly
    silent clips of 0.1-4 s, batched and padded: attention masks identical; log-mel energies
    within 2e-6 (the extractor rounds them to float32); normalised features within 5e-5 absolute
    (typically 1e-5). The extractor normalises in float32, so where a mel bin hardly varies over a
    clip (a steady tone) its rounding is divided by the bin's small standard deviation: there the
    two differ by up to 5e-6 / std.
    """

    frame_length = 400
    hop_length = 160
    fft_length = 512
    preemphasis = 0.97
    mel_floor = 1.192092955078125e-07
    min_frequency = 20.0
    pad_to_multiple_of = 2
    int16_scale = 2.0**15

    def __init__(self, settings: FilterBankSettings, device: torch.device | str = "cpu"):
        if settings.stride < 2:
            raise FrontEndError(f"filter-bank stride must be at least 2, got {settings.stride}")
        self.settings = settings
        self.device = torch.device(device)
        # float64 throughout; a device without float64 (Apple MPS) has its filter banks computed on the CPU
        self.compute_device = torch.device("cpu") if self.device.type == "mps" else self.device
        window = torch.hann_window(self.frame_length, periodic=False, dtype=torch.float64).pow(0.85)
        self.window = window.to(self.compute_device)
        self.mel_filters = self.mel_filter_bank(settings.num_mel_bins, settings.sampling_rate).to(
            self.compute_device
        )

    @classmethod
    def mel_filter_bank(cls, num_mel_bins: int, sampling_rate: int) -> torch.Tensor:
        """``[fft_length // 2 + 1, num_mel_bins]`` triangular filters, in float64."""
        num_bins = cls.fft_length // 2 + 1
        low = kaldi_mel(torch.tensor(cls.min_frequency, dtype=torch.float64))
        high = kaldi_mel(torch.tensor(float(sampling_rate // 2), dtype=torch.float64))
        edges = torch.linspace(float(low), float(high), num_mel_bins + 2, dtype=torch.float64)
        bin_mels = kaldi_mel(torch.arange(num_bins, dtype=torch.float64) * (sampling_rate / cls.fft_length))
        left, centre, right = edges[:-2], edges[1:-1], edges[2:]
        rising = (bin_mels[:, None] - left) / (centre - left)
        falling = (right - bin_mels[:, None]) / (right - centre)
        return torch.minimum(rising, falling).clamp_min(0.0)

    @property
    def min_samples(self) -> int:
        """The shortest clip: two frames (one frame has no variance to normalise by)."""
        return self.frame_length + self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """Analysis frames (10 ms apart) in a clip of ``num_samples`` samples."""
        if num_samples < self.min_samples:
            raise FrontEndError(
                f"a clip of {num_samples} samples is too short for filter-bank features "
                f"(at least {self.min_samples} samples: two frames)"
            )
        return 1 + (num_samples - self.frame_length) // self.hop_length

    def num_output_frames(self, num_samples: int) -> int:
        """Stacked frames (the model's sequence length) for a batch whose longest clip has ``num_samples``."""
        padded = math.ceil(self.num_frames(num_samples) / self.pad_to_multiple_of) * self.pad_to_multiple_of
        return padded // self.settings.stride

    def log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` waveforms -> ``[B, frames, num_mel_bins]`` log mel energies (float64)."""
        x = waves.to(self.compute_device, torch.float64) * self.int16_scale
        frames = x.unfold(-1, self.frame_length, self.hop_length)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        frames = torch.cat(
            [
                frames[..., :1] * (1.0 - self.preemphasis),
                frames[..., 1:] - self.preemphasis * frames[..., :-1],
            ],
            dim=-1,
        )
        spectrum = torch.fft.rfft(frames * self.window, n=self.fft_length)
        power = spectrum.real.square() + spectrum.imag.square()
        return (power @ self.mel_filters).clamp_min(self.mel_floor).log()

    def __call__(
        self, waves: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, S]`` waveforms (``lengths`` valid samples each, default all) -> ``input_features``
        ``[B, T, num_mel_bins * stride]`` (float32) and ``attention_mask`` ``[B, T]`` (int64)."""
        if waves.dim() != 2:
            raise FrontEndError(
                f"filter-bank features expect [B, samples] waveforms, got {tuple(waves.shape)}"
            )
        batch, num_samples = waves.shape
        total = self.num_frames(num_samples)
        if lengths is None:
            valid_frames = torch.full((batch,), total, device=self.compute_device)
        else:
            lengths = torch.as_tensor(lengths, device=self.compute_device)
            if int(lengths.min()) < self.min_samples or int(lengths.max()) > num_samples:
                raise FrontEndError(
                    f"clip lengths must lie in [{self.min_samples}, {num_samples}] samples, got "
                    f"{int(lengths.min())}..{int(lengths.max())}"
                )
            valid_frames = 1 + torch.div(lengths - self.frame_length, self.hop_length, rounding_mode="floor")
        feats = self.log_mel(waves)
        longest = int(valid_frames.max())
        padded = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        if padded > total:
            feats = nn.functional.pad(feats, (0, 0, 0, padded - total))
        feats = feats[:, :padded]
        valid = torch.arange(padded, device=self.compute_device)[None, :] < valid_frames[:, None]
        weights = valid[..., None].to(feats.dtype)
        count = valid_frames.to(feats.dtype)[:, None, None]
        mean = (feats * weights).sum(dim=1, keepdim=True) / count
        var = ((feats - mean).square() * weights).sum(dim=1, keepdim=True) / (count - 1)
        normed = (feats - mean) / torch.sqrt(var + 1e-7)
        normed = torch.where(valid[..., None], normed, torch.full_like(normed, self.settings.padding_value))
        stride = self.settings.stride
        usable = padded - padded % stride
        stacked = normed[:, :usable].reshape(batch, usable // stride, self.settings.num_mel_bins * stride)
        mask = valid[:, :usable][:, torch.arange(usable, device=self.compute_device) % stride == 1]
        return stacked.to(self.device, torch.float32), mask.long().to(self.device)


def find_layer_list(model: nn.Module, num_layers: int) -> tuple[nn.Module, str]:
    """The ``nn.ModuleList`` of transformer layers (``encoder.layers`` for wav2vec2/HuBERT/WavLM/w2v-BERT)."""
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
    ``hidden_states[k]``), w2v-BERT's adapter and every layer above k are never run.

    Waveform models get the waveform (``input_values``); w2v-BERT gets the filter banks of
    :class:`KaldiFilterBank` (``input_features`` + ``attention_mask``), computed in float64 outside
    autocast. ``filter_bank`` is None for waveform models.
    """

    name = "hf_ssl"

    def __init__(
        self,
        model_name: str,
        layer: int,
        precision: str,
        device: torch.device,
        attention: str = "auto",
        sample_rate: int | None = None,
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
        extractor = self._read_feature_extractor(model_name, local)
        self.input_name = str(getattr(model, "main_input_name", "input_values"))
        self.filter_bank = self._filter_bank(model, extractor, device)
        self.do_normalize = bool(getattr(extractor, "do_normalize", True))
        expected_rate = getattr(extractor, "sampling_rate", None)
        if sample_rate is not None and expected_rate is not None and int(expected_rate) != int(sample_rate):
            raise FrontEndError(
                f"{model_name} expects {int(expected_rate)} Hz audio but data.sample_rate is {sample_rate}"
            )
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
            if hasattr(config, "conv_kernel") and self.filter_bank is None
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
    def _read_feature_extractor(model_name: str, local: bool) -> Any | None:
        """The saved feature extractor (its ``preprocessor_config.json``), or None when there is none."""
        from transformers import AutoFeatureExtractor

        try:
            return AutoFeatureExtractor.from_pretrained(model_name, local_files_only=local)
        except (OSError, ValueError) as err:
            log.warning("no feature extractor config for %s (%s): using the defaults", model_name, err)
            return None

    def _filter_bank(
        self, model: nn.Module, extractor: Any | None, device: torch.device
    ) -> KaldiFilterBank | None:
        """The filter bank a model taking ``input_features`` needs (None for waveform models)."""
        if self.input_name == "input_values":
            return None
        kind = type(extractor).__name__ if extractor is not None else None
        model_class = type(model).__name__
        if kind is None and model_class.startswith("Wav2Vec2Bert"):
            log.warning(
                "%s has no preprocessor_config.json: using SeamlessM4T filter-bank defaults", model_class
            )
            kind = FILTER_BANK_EXTRACTORS[0]
        if self.input_name != "input_features" or kind not in FILTER_BANK_EXTRACTORS:
            raise FrontEndError(
                f"{model_class} takes {self.input_name} from a {kind}; hf_ssl supports waveform models "
                f"(input_values: wav2vec2, XLS-R, HuBERT, WavLM) and filter-bank models ({', '.join(FILTER_BANK_EXTRACTORS)}: "
                "w2v-BERT 2.0)"
            )
        settings = FilterBankSettings.from_extractor(extractor)
        expected = getattr(model.config, "feature_projection_input_dim", None)
        if expected is not None and int(expected) != settings.num_mel_bins * settings.stride:
            raise FrontEndError(
                f"{model_class} takes {expected} features per frame but its feature extractor gives "
                f"{settings.num_mel_bins} mel bins x stride {settings.stride}"
            )
        return KaldiFilterBank(settings, device)

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
        if self.filter_bank is not None:
            return self.filter_bank.num_output_frames(num_samples), self.hidden_size
        if self.conv_layers is None:
            with torch.inference_mode():
                return tuple(self(torch.zeros(1, num_samples) + 1e-3).shape[1:])  # type: ignore[return-value]
        t = num_samples
        for kernel, stride in self.conv_layers:
            t = (t - kernel) // stride + 1
        return t, self.hidden_size

    def model_inputs(self, waves: torch.Tensor) -> dict[str, torch.Tensor]:
        """The keyword inputs the model gets for ``[B, S]`` waveforms already on the device."""
        if self.filter_bank is None:
            return {"input_values": self.normalize(waves)}
        features, mask = self.filter_bank(waves)
        return {"input_features": features, "attention_mask": mask}

    @torch.inference_mode()
    def __call__(self, waves: torch.Tensor) -> torch.Tensor:
        inputs = self.model_inputs(to_device(waves, self.device))  # float32 / float64, outside autocast
        ctx = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        self._captured = None
        with cuda_math(self.device, tf32=self.precision == "tf32"), ctx:
            try:
                self.model(**inputs)
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
        sample_rate=sample_rate,
    )
