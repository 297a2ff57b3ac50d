"""Experiment configuration: one YAML per experiment, merged over defaults, overridable from the CLI.

Every step script reads the same file, so the paths of all steps agree. Overrides use dotted keys::

    python train_refd.py --config configs/demo.yaml train.epochs=3 train.lr=1e-3

A key that is not in the defaults is an error that names it, so typos never pass silently.

>>> cfg = load_config(None, ["train.epochs=3", "frontend.name=lfcc"])
>>> cfg.train.epochs, cfg.frontend.name
(3, 'lfcc')
>>> load_config(None, ["train.lr=3e-3"]).train.lr
0.003
>>> load_config(None, ["train.epoch=3"])
Traceback (most recent call last):
...
sourcetracing.config.ConfigError: unknown config key 'train.epoch' (did you mean 'train.epochs'?)
"""

from __future__ import annotations

import argparse
import copy
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


# The schema: every key an experiment may set, with the default value. A value of None means "no
# default" (any type accepted). Sections mirror the pipeline steps.
DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "exp_dir": "exp/experiment",
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "data": {
        "root": "data/MLAAD_v5",  # MLAAD root: the folder that holds fake/<lang>/<model_dir>/
        "protocols": "data/MLAAD_v5_protocols",  # folder with the split CSVs (train.csv, dev.csv, eval.csv)
        "splits": {"train": "train.csv", "dev": "dev.csv", "eval": "eval.csv"},
        "sample_rate": 16000,
        "max_len_s": 4.0,
        "max_bad_fraction": 0.05,  # a split with more unreadable/silent clips than this stops the step
    },
    "augment": {
        "versions": ["original", "reverb", "noise", "music", "speech"],
        "splits": ["train"],  # dev/eval stay clean unless listed here
        "musan": "data/musan",
        "rirs": "data/RIRS_NOISES",
        "snr_noise": [0.0, 15.0],
        "snr_music": [5.0, 15.0],
        "snr_speech": [13.0, 20.0],
        "babble_speakers": [3, 8],
    },
    "frontend": {
        "name": "hf_ssl",  # hf_ssl | lfcc | logmel
        "model": "facebook/wav2vec2-base",  # hub name or local path (hf_ssl)
        "layer": 5,  # hidden_states[layer] (hf_ssl)
        "precision": "auto",  # auto | float32 | bf16 | fp16
        "n_fft": 512,
        "win_length": 320,
        "hop_length": 160,
        "n_filters": 70,  # linear filters (lfcc) or mel bands (logmel)
        "n_coeffs": 20,  # cepstral coefficients per frame before deltas (lfcc)
        "deltas": True,
    },
    "features": {
        "dir": None,  # default: <exp_dir>/features
        "shard_size": 1024,  # rows per float16 shard
        "batch_size": 16,
        "num_workers": 2,
    },
    "model": {
        "name": "aasist",
        "in_proj_dim": 128,  # Linear(feature dim -> in_proj_dim) per frame; read as a [feature, time] map
        "first_pool": [3, 3],  # max-pool (feature, time) before the residual encoder
        # residual blocks, [in, out] channels each
        "filts": [[1, 32], [32, 32], [32, 64], [64, 64], [64, 64], [64, 64]],
        # max-pool (feature, time) after each residual block ([1, 3] in raw-waveform AASIST)
        "block_pool": [1, 1],
        "gat_dims": [64, 32],  # graph attention (GAL) dim, heterogeneous (HS-GAL) dim
        # graph pooling ratios: spectral GAL, temporal GAL, spectral HS-GAL, temporal HS-GAL
        "pool_ratios": [0.5, 0.7, 0.5, 0.5],
        "temperatures": [2.0, 2.0, 100.0, 100.0],  # spectral GAL, temporal GAL, HS-GAL branch 1, branch 2
        "dropout": 0.5,  # before the output layer
        "embedding_dim": 160,  # penultimate size (OOD embeddings); != 5 * gat_dims[1] adds a projection
    },
    "train": {
        "epochs": 30,
        "batch_size": 128,
        "lr": 5.0e-4,
        "betas": [0.9, 0.999],
        "weight_decay": 5.0e-4,
        "lr_step": 10,
        "lr_gamma": 0.5,
        "mixup_alpha": 0.5,  # 0 disables mixup
        "loss": "ce",  # ce | bce
        "select_by": "dev_loss",  # dev_loss | dev_macro_f1
        "versions": None,  # train versions used (None = all in the store)
        "num_workers": 0,
        "log_every": 50,  # progress-bar loss/accuracy refresh, in steps
    },
    "ood": {
        "scorers": ["nsd", "msp", "maxlogit", "energy", "knn", "mahalanobis"],
        "default": "nsd",  # the scorer of OOD_eval_results.txt and trace.py; auto = lowest dev EER
        "knn_k": 5,
        "train_versions": ["original"],
        "chunk_size": 4096,
        "batch_size": 256,
    },
    "ge2e": {
        "encoder": "features",  # features | hf_ssl
        "model": "facebook/wav2vec2-base-960h",  # hf_ssl encoder: hub name or local path
        "layer": -1,  # hf_ssl: hidden_states[layer]; -1 = last
        "hidden_dims": [256, 256],
        "freeze_feature_encoder": True,  # hf_ssl: keep the SSL model's conv front end fixed
        "channels": 128,  # features encoder: conv channels
        "pooling": "attentive",  # features encoder: attentive | mean statistics pooling
        "loss": "softmax",  # softmax | contrast
        "n_systems": 10,
        "n_clips": 4,
        "versions": None,  # features encoder: train versions used (None = all in the store)
        "epochs": 20,
        "steps_per_epoch": 100,
        "lr": 1.0e-4,
        "weight_decay": 0.0,
        "grad_clip": 3.0,  # max gradient norm (0 = off)
        "init_w": 10.0,
        "init_b": -5.0,
        "select_by": "dev_macro_f1",  # dev_macro_f1 (nearest train centroid) | dev_loss
        "select_clips_per_system": 100,  # clips per system used by the per-epoch dev check (0 = all)
        "knn_k": 5,
        "batch_size": 64,  # embedding extraction batch size
        "num_workers": 0,
        "embeddings_dir": None,  # default: <exp_dir>/ge2e/embeddings
    },
    "trace": {"top_k": 3},
}


class Config(dict):
    """A nested dict with attribute access (``cfg.train.lr``)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(key) from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self))


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return Config({k: _wrap(v) for k, v in value.items()})
    return value


def _all_keys(tree: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in tree.items():
        keys.append(prefix + k)
        if isinstance(v, dict):
            keys.extend(_all_keys(v, prefix + k + "."))
    return keys


def _unknown(dotted: str) -> ConfigError:
    close = difflib.get_close_matches(dotted, _all_keys(DEFAULTS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{dotted}'{hint}")


def _check_type(dotted: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{dotted}' expects true/false, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-3" as a string
            number = float(value)
        except ValueError:
            pass
        else:
            return int(number) if isinstance(default, int) and number.is_integer() else number
    if isinstance(default, (int, float)) and not isinstance(value, (int, float)):
        raise ConfigError(f"config key '{dotted}' expects a number, got {value!r}")
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"config key '{dotted}' expects a string, got {value!r}")
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"config key '{dotted}' expects a list, got {value!r}")
    return value


def _merge(base: dict, update: dict, schema: dict, prefix: str = "") -> None:
    for key, value in update.items():
        dotted = prefix + key
        if key not in schema:
            raise _unknown(dotted)
        if isinstance(schema[key], dict):
            if key == "splits" and prefix == "data." and isinstance(value, dict):
                base[key] = dict(value)  # split names are free
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{dotted}' is a section; got {value!r}")
            _merge(base[key], value, schema[key], dotted + ".")
        else:
            base[key] = _check_type(dotted, schema[key], value)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and YAML-parsed value.

    >>> parse_override("train.betas=[0.8, 0.99]")
    (['train', 'betas'], [0.8, 0.99])
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML experiment file (or only the defaults when ``path`` is None) and apply overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        _merge(cfg, data, DEFAULTS)
    for text in overrides or []:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(cfg, nested, DEFAULTS)
    if path is not None and "name" not in (yaml.safe_load(Path(path).read_text()) or {}):
        cfg["name"] = Path(path).stem
    return _wrap(cfg)


def config_hash(section: dict) -> str:
    """A short stable hash of a config section (used to keep feature stores of different settings apart).

    >>> config_hash({"a": 1}) == config_hash({"a": 1})
    True
    """
    text = json.dumps(section, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def save_resolved(cfg: Config, exp_dir: str | Path | None = None) -> Path:
    """Write the resolved config to ``<exp_dir>/config.yaml`` and return its path."""
    out = Path(exp_dir or cfg.exp_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "config.yaml"
    target.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return target


def add_config_args(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """Add ``--config FILE`` and positional ``key.sub=value`` overrides to a parser."""
    parser.add_argument("--config", required=required, help="experiment YAML (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. train.epochs=3")


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named by parsed arguments; errors exit with a one-line message."""
    try:
        return load_config(args.config, args.overrides)
    except ConfigError as err:
        raise SystemExit(f"config error: {err}") from None


def resolve_device(name: str = "auto"):
    """``auto`` picks CUDA when present, else CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def features_dir(cfg: Config) -> Path:
    """Where the feature stores of this experiment live."""
    return Path(cfg.features.dir or Path(cfg.exp_dir) / "features")
