"""Experiment configuration: one YAML per experiment, merged over defaults, overridable from the CLI.

Every step script reads the same file, so the paths of all steps agree. Overrides use dotted keys::

    python train_refd.py --config configs/demo.yaml train.epochs=3 train.lr=1e-3

Components are chosen by name and each has its own settings section, e.g.
``frontend: {name: lfcc, lfcc: {n_coeffs: 20}}``; the sections of every registered component come
from its registry (:mod:`sourcetracing.components`). A key that is not in the schema is an error
that names it, a value of the wrong type or out of range is an error that names the key.

>>> cfg = load_config(None, ["train.epochs=3", "frontend.name=lfcc"])
>>> cfg.train.epochs, cfg.frontend.name
(3, 'lfcc')
>>> load_config(None, ["train.lr=3e-3"]).train.lr
0.003
>>> load_config(None, ["train.epoch=3"])
Traceback (most recent call last):
...
sourcetracing.errors.ConfigError: unknown config key 'train.epoch' (did you mean 'train.epochs'?)
>>> load_config(None, ["train.batch_size=0"])
Traceback (most recent call last):
...
sourcetracing.errors.ConfigError: config key 'train.batch_size' must be an integer >= 1, got 0
"""

from __future__ import annotations

import argparse
import copy
import difflib
import hashlib
import importlib
import importlib.util
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from sourcetracing.errors import ConfigError

__all__ = ["Config", "ConfigError", "component_settings", "config_hash", "load_config", "schema"]

# The static part of the schema: every key an experiment may set, with its default. A value of
# None means "no default" (any type accepted). Component sections are added by :func:`schema`.
STATIC_DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "exp_dir": "exp/experiment",
    # modules (dotted names or paths to .py files) imported before anything else: a user's own
    # front ends, models, encoders or scorers register themselves there and become choosable by name
    "plugins": [],
    "seed": 0,
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "data": {
        "root": "data/MLAAD_v5",  # MLAAD root: the folder that holds fake/<lang>/<model_dir>/
        "protocols": "data/MLAAD_v5_protocols",  # folder with the split CSVs
        "splits": {"train": "train.csv", "dev": "dev.csv", "eval": "eval.csv"},
        "sample_rate": 16000,
        "max_len_s": 4.0,  # crop / wrap-pad length
        "min_len_s": 0.1,  # shorter clips are skipped (reason too_short) instead of being tiled
        "max_bad_fraction": 0.05,  # a split with more unusable clips than this stops the step
        # what a class is: system (each protocol model_name) | architecture (the systems of one
        # architecture merged; from label_map_csv, else from the MLAAD meta.csv of each system folder)
        "label": "system",
        "label_map_csv": None,  # a CSV with columns system,architecture (e.g. make_protocols.py's systems.csv)
    },
    "augment": {
        "versions": ["original", "reverb", "noise", "music", "speech"],
        "splits": ["train"],  # dev/eval stay clean unless listed here
        "musan": "data/musan",
        "rirs": "data/RIRS_NOISES",
        "snr_noise": [0.0, 15.0],
        "snr_music": [5.0, 15.0],
        "snr_speech": [13.0, 20.0],  # each babble speaker at its own SNR from this range
        "babble_speakers": [3, 8],
        # the codec version: a codec drawn per clip, then each of its settings from its list
        "codecs": {
            "mp3": {"bitrate_kbps": [24, 32, 48, 64, 96, 128]},
            "opus": {"bitrate_kbps": [8, 12, 16, 24, 32, 48]},
            "vorbis": {"quality": [0, 2, 4, 6]},
        },
    },
    "frontend": {"name": "hf_ssl"},
    "features": {
        "dir": None,  # default: <exp_dir>/features
        "shard_size": 1024,  # rows per float16 shard
        "batch_size": 16,
        "num_workers": 2,
        # dev/eval crops per clip, spread from its start to its end; the exporters average their
        # embeddings and logits (1 = one crop from the start, as the original)
        "test_windows": 1,
    },
    "model": {"name": "aasist"},
    "train": {
        "epochs": 30,
        "batch_size": 128,
        "lr": 5.0e-4,
        "betas": [0.9, 0.999],
        "eps": 1.0e-8,
        "weight_decay": 5.0e-4,
        "lr_step": 10,
        "lr_gamma": 0.5,
        "mixup_alpha": 0.5,  # 0 disables mixup
        "loss": "ce",  # ce | bce
        "select_by": "dev_loss",  # dev_loss | dev_macro_f1 | train_loss
        "versions": None,  # train versions used (None = all in the store)
        "grad_clip": 0.0,  # max gradient norm (0 = off)
        "precision": "float32",  # float32 | bf16 | fp16 | auto (bf16 on CUDA, float32 on CPU)
        "num_workers": 0,
        "log_every": 50,  # progress-bar refresh, in steps
    },
    "outputs": {
        "train_versions": ["original"],  # train rows exported (the reference bank of the OOD scorers)
        "batch_size": 256,
    },
    "ood": {
        "scorers": ["nsd", "msp", "maxlogit", "energy", "knn", "mahalanobis", "centroid"],
        "default": "auto",  # the scorer of OOD_eval_results.txt and trace.py; auto = lowest dev EER
        # none | dev | holdout | crossfit: how scorer settings (k, ...) are chosen; never on eval
        "tune": "none",
        # the dev-only rule behind ood.default: auto and the dev-chosen system: dev_eer (the lowest
        # pooled dev EER) | dev_worst_unseen_auroc (the best AUROC on the worst-separated dev-unseen
        # system) | unseen_auroc (the best mean AUROC over dev's unseen systems and the known systems
        # held out of a train-side refit)
        "select": "dev_eer",
        "chunk_size": 4096,
    },
    "ge2e": {
        "encoder": {"name": "features"},
        "loss": "softmax",  # softmax | contrast (GE2E; the bias b only matters for contrast) | aam
        "aam_margin": 0.2,  # aam: additive angular margin (radians)
        "aam_scale": 30.0,  # aam: logit scale
        "cos_floor": None,  # GE2E: clamp the cosines from below (the original recipe: 1e-6; None = no clamp)
        "n_systems": 10,
        "n_clips": 4,
        "versions": None,  # features encoder: train versions used (None = all in the store)
        "epochs": 20,
        "steps_per_epoch": 100,  # 0 = until a drawn system runs out of clips (the original's epoch)
        "lr": 1.0e-4,
        "weight_decay": 0.0,
        "grad_clip": 3.0,  # max gradient norm (0 = off)
        "init_w": 10.0,
        "init_b": -5.0,
        "select_by": "dev_macro_f1",  # dev_macro_f1 (nearest train centroid) | dev_loss | train_loss
        "select_clips_per_system": 100,  # clips per system used by the per-epoch dev check (0 = all)
        "precision": "float32",
        "batch_size": 64,  # embedding extraction batch size
        "num_workers": 0,
    },
    "mfcc": {
        "n_mfcc": 20,
        "crop": False,  # False: statistics of the whole clip (no wrap padding); True: the 4 s crop
        "jobs": 0,  # parallel audio workers (0 = features.num_workers)
        # also export and judge the plain reference (systems/plain_reference.py: 30 MFCCs of the
        # first 4 s, mean and std, standardised, cosine distance to the 5th-nearest train clip)
        "plain": True,
    },
    "stats": {
        "features": ["mfcc", "prosody", "spectrum"],  # groups of sourcetracing.systems.utterance_features
        "projection": "lda",  # lda (shrinkage LDA on the known systems) | none
        "augment": ["reverb", "noise", "music", "speech", "codec"],  # train copies (augment.* settings)
        "n_mfcc": 20,
        "crop": False,
        "jobs": 0,
        # more statistics systems, each exported and judged like "stats" under its own name:
        # name -> overrides of features / projection / augment / n_mfcc / crop
        "variants": {},
    },
    "hybrid": {
        # learned frame features and utterance statistics in one network (systems/hybrid.py), made
        # in stage 7 when enabled
        "enabled": False,
        "name": "hybrid",  # the system's folder and name (another name compares settings side by side)
        "features": ["mfcc", "prosody", "spectrum", "duration"],  # statistics groups
        "inputs": "both",  # both | stats | frames (an ablation: one branch only)
        "fusion": "gated",  # gated | concat
        "hidden": 128,
        "embedding_dim": 64,
        "dropout": 0.1,
        "scale": 16.0,  # class scores = scale * cosine to each class proxy
        "loss": "ce",  # ce | proxy_anchor
        "outliers": [],  # synthesised from train clips: pitch_up, pitch_down, faster, slower
        # the user's outlier clips: a CSV path,model_name relative to data.root, of systems in no split
        "outlier_clips": None,
        "outlier_loss": "uniform",  # uniform (outlier exposure) | energy (energy margin)
        "outlier_weight": 0.5,
        # known systems left out of each training step's class set (fresh draw per step) whose clips
        # join the outliers: 0 = none
        "held_out_classes": 0,
        # none | lda: the embedding keeps the statistics' shrinkage LDA (fixed) beside the learned
        # part, weighted anchor_weight; the network learns a residual (models/hybrid.py)
        "anchor": "none",
        "anchor_weight": 0.5,
        "epochs": 60,
        "batch_size": 128,
        "lr": 1.0e-3,
        "weight_decay": 1.0e-4,
    },
    "pooled": {
        # training-free pooled-embedding system (systems/pooled.py, scripts/pooled_system.py): a
        # frozen front end over the whole clip, pooled over time, k-NN attribution and k-NN OOD score
        "enabled": False,  # run by the stage list when true (the script itself always runs)
        "frontend": None,  # None: the experiment's frontend section; a mapping is merged over it
        "pooling": "mean",  # mean | mean_std (mean and standard deviation over time)
        "crop": False,  # False: the whole clip; True: the 4 s crop of the feature store (data.max_len_s)
        "k": None,  # auto (None) = chosen on train by holding out known systems in turn; or an integer
        "ood_k": None,  # the OOD score's k: None = as k; auto; or an integer
        "augment": [],  # augmented train copies in the reference bank (augment.* settings); none by default
    },
    "fusion": {
        "members": ["auto"],  # system:scorer names, or auto (forward selection on dev)
        "max_members": 4,
        "weights": "nonnegative",  # nonnegative (every member weight >= 0) | free
    },
    "trace": {"top_k": 3, "system": "aasist", "scorer": None},
    "robustness": {
        # None: every condition of data.transforms.DEFAULT_CONDITIONS; or a list of their names; or a
        # mapping name -> {transform: <registered transform>, <params> or params: {...}}
        "conditions": None,
        "systems": None,  # None: every system with outputs, an OOD step and a model that runs on audio
        "splits": ["dev", "eval"],  # dev is needed: the per-condition thresholds are fitted on it
        "seed": 0,  # seeds each clip's draw under each condition (noise segment, RIR, ...)
    },
}

# Sections whose keys are free (any name), not checked against the schema.
FREE_SECTIONS = {"data.splits", "augment.codecs", "stats.variants"}


def _int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low), f"an integer >= {low}"


def _positive() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0), "a number > 0"


def _non_negative() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0), "a number >= 0"


def _fraction() -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, (int, float)) and 0.0 <= v <= 1.0), "a number in [0, 1]"


def _one_of(*choices: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), "one of " + ", ".join(choices)


def _pair(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and len(v) == 2 and all(check(x) for x in v) and v[0] <= v[1]


def _names(must_include: str | None = None) -> Callable[[Any], bool]:
    """A non-empty list of distinct non-empty strings (including ``must_include``)."""
    return lambda v: (
        isinstance(v, list)
        and len(v) > 0
        and all(isinstance(x, str) and x for x in v)
        and len(set(v)) == len(v)
        and (must_include is None or must_include in v)
    )


def _condition_spec(value: Any) -> bool:
    """A list of condition names, or a mapping name -> {transform: ..., ...} (details checked when built)."""
    if isinstance(value, dict):
        return len(value) > 0 and all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("transform"), str)
            for k, v in value.items()
        )
    return _names()(value)


PRECISIONS = ("float32", "bf16", "fp16", "auto")

# Ranges of the static keys: key -> (check, what it must be).
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _int_at_least(0),
    "data.sample_rate": _int_at_least(1000),
    "data.max_len_s": _positive(),
    "data.min_len_s": _non_negative(),
    "data.max_bad_fraction": _fraction(),
    "data.label": _one_of("system", "architecture"),
    "augment.babble_speakers": (
        _pair(lambda x: isinstance(x, int) and x >= 1),
        "a pair [low, high] of integers >= 1",
    ),
    "augment.snr_noise": (_pair(lambda x: isinstance(x, (int, float))), "a pair [low, high] of numbers"),
    "augment.snr_music": (_pair(lambda x: isinstance(x, (int, float))), "a pair [low, high] of numbers"),
    "augment.snr_speech": (_pair(lambda x: isinstance(x, (int, float))), "a pair [low, high] of numbers"),
    "features.shard_size": _int_at_least(1),
    "features.batch_size": _int_at_least(1),
    "features.num_workers": _int_at_least(0),
    "features.test_windows": _int_at_least(1),
    "train.epochs": _int_at_least(1),
    "train.batch_size": _int_at_least(1),
    "train.lr": _positive(),
    "train.eps": _positive(),
    "train.weight_decay": _non_negative(),
    "train.lr_step": _int_at_least(1),
    "train.lr_gamma": _positive(),
    "train.mixup_alpha": _non_negative(),
    "train.grad_clip": _non_negative(),
    "train.loss": _one_of("ce", "bce"),
    "train.select_by": _one_of("dev_loss", "dev_macro_f1", "train_loss"),
    "train.precision": _one_of(*PRECISIONS),
    "train.num_workers": _int_at_least(0),
    "train.log_every": _int_at_least(1),
    "outputs.batch_size": _int_at_least(1),
    "ood.chunk_size": _int_at_least(1),
    "ood.tune": _one_of("none", "dev", "holdout", "crossfit"),
    "ge2e.loss": _one_of("softmax", "contrast", "aam"),
    "ge2e.aam_margin": _non_negative(),
    "ge2e.aam_scale": _positive(),
    "ge2e.n_systems": _int_at_least(2),
    "ge2e.n_clips": _int_at_least(2),
    "ge2e.epochs": _int_at_least(1),
    "ge2e.steps_per_epoch": _int_at_least(0),
    "ge2e.lr": _positive(),
    "ge2e.weight_decay": _non_negative(),
    "ge2e.grad_clip": _non_negative(),
    "ge2e.init_w": _positive(),
    "ge2e.select_by": _one_of("dev_macro_f1", "dev_loss", "train_loss"),
    "ge2e.select_clips_per_system": _int_at_least(0),
    "ge2e.precision": _one_of(*PRECISIONS),
    "ge2e.batch_size": _int_at_least(1),
    "ge2e.num_workers": _int_at_least(0),
    "mfcc.n_mfcc": _int_at_least(1),
    "mfcc.jobs": _int_at_least(0),
    "stats.projection": _one_of("lda", "none"),
    "stats.n_mfcc": _int_at_least(1),
    "stats.jobs": _int_at_least(0),
    "ood.select": _one_of("dev_eer", "dev_worst_unseen_auroc", "unseen_auroc"),
    "hybrid.name": (
        lambda v: (
            isinstance(v, str)
            and bool(re.fullmatch(r"[a-z][a-z0-9_]*", v))
            and (v == "hybrid" or v not in RESERVED_SYSTEM_NAMES)
        ),
        "a new system name (lowercase letters, digits, underscores) or hybrid",
    ),
    "hybrid.inputs": _one_of("both", "stats", "frames"),
    "hybrid.fusion": _one_of("gated", "concat"),
    "hybrid.hidden": _int_at_least(1),
    "hybrid.embedding_dim": _int_at_least(1),
    "hybrid.dropout": _fraction(),
    "hybrid.scale": _positive(),
    "hybrid.loss": _one_of("ce", "proxy_anchor"),
    "hybrid.outliers": (
        lambda v: isinstance(v, list) and set(v) <= {"pitch_up", "pitch_down", "faster", "slower"},
        "a list of pitch_up, pitch_down, faster, slower",
    ),
    "hybrid.outlier_clips": (
        lambda v: v is None or isinstance(v, str),
        "a CSV path (path,model_name) or null",
    ),
    "hybrid.outlier_loss": _one_of("uniform", "energy"),
    "hybrid.outlier_weight": _non_negative(),
    "hybrid.held_out_classes": _int_at_least(0),
    "hybrid.anchor": _one_of("none", "lda"),
    "hybrid.anchor_weight": _positive(),
    "hybrid.epochs": _int_at_least(1),
    "hybrid.batch_size": _int_at_least(1),
    "hybrid.lr": _positive(),
    "hybrid.weight_decay": _non_negative(),
    "pooled.frontend": (lambda v: isinstance(v, dict), "a front end section (e.g. {hf_ssl: {layer: 4}})"),
    "pooled.pooling": _one_of("mean", "mean_std"),
    "pooled.k": (
        lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "auto or an integer >= 1",
    ),
    "pooled.ood_k": (
        lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "auto or an integer >= 1",
    ),
    "fusion.max_members": _int_at_least(1),
    "fusion.weights": _one_of("nonnegative", "free"),
    "trace.top_k": _int_at_least(1),
    "robustness.conditions": (
        _condition_spec,
        "a list of condition names or a mapping name -> {transform: <name>, <parameters>}",
    ),
    "robustness.systems": (_names(), "a non-empty list of distinct system names"),
    "robustness.splits": (_names("dev"), "a list of distinct split names that includes dev"),
    "robustness.seed": _int_at_least(0),
}

# What each key of the schema means, one entry per dotted key (sections included, and the keys of
# every built-in component's section). docs/configuration.md is generated from this table, the
# defaults and CHECKS by scripts/config_reference.py; tests/test_docs.py fails when a key of the
# schema has no entry here. A new key: add its meaning here and run
# `python scripts/config_reference.py` to regenerate the page.
DESCRIPTIONS: dict[str, str] = {
    "name": "experiment name (default: the YAML file's stem)",
    "exp_dir": "the experiment folder: every step reads and writes under it",
    "plugins": "modules (dotted names or .py paths) imported before the config is read; their "
    "front ends, models, encoders and scorers become choosable by name",
    "seed": "seed of training, train crops and augmentation (seeded per clip and version)",
    "device": "where every step runs; auto: CUDA when present, else CPU",
    "data": "the corpus: audio root, protocol files, sample rate, crop length, class level",
    "data.root": "MLAAD root: the folder that holds fake/<lang>/<model_dir>/",
    "data.protocols": "folder with the split CSVs (path,model_name; paths relative to data.root)",
    "data.splits": "split name -> CSV file name under data.protocols (free keys; a train split is required)",
    "data.splits.train": "train protocol: its systems are the known classes (the label map comes from it)",
    "data.splits.dev": "dev protocol: fits thresholds, calibrations, the fusion and every dev-only choice",
    "data.splits.eval": "eval protocol: only scored",
    "data.sample_rate": "sample rate every clip is resampled to (mono)",
    "data.max_len_s": "crop / wrap-pad length in seconds (4 s as the original)",
    "data.min_len_s": "clips shorter than this are skipped (reason too_short) instead of being tiled",
    "data.max_bad_fraction": "a split with more unusable clips than this fraction stops the step",
    "data.label": "what a class is: system (each protocol model_name) or architecture (the systems "
    "of one architecture merged)",
    "data.label_map_csv": "CSV with columns system,architecture for data.label: architecture "
    "(null: the MLAAD meta.csv of each system folder)",
    "augment": "the augmented versions of each clip and the corpora they draw from",
    "augment.versions": "versions stored per augmented clip: original, reverb, noise, music, speech, "
    "codec (each made from the clean clip)",
    "augment.splits": "splits that are augmented (dev and eval stay clean unless listed)",
    "augment.musan": "MUSAN root (noise/, music/, speech/ subfolders)",
    "augment.rirs": "RIRS_NOISES root (simulated_rirs/...)",
    "augment.snr_noise": "SNR range (dB) of the noise version",
    "augment.snr_music": "SNR range (dB) of the music version",
    "augment.snr_speech": "SNR range (dB) of each babble speaker of the speech version",
    "augment.babble_speakers": "range of the number of babble speakers, each at its own SNR",
    "augment.codecs": "the codec version: codec name -> its settings, each drawn per clip from its list "
    "(free keys)",
    "augment.codecs.mp3": "MP3 settings of the codec version",
    "augment.codecs.mp3.bitrate_kbps": "MP3 bit rates drawn from (kbit/s)",
    "augment.codecs.opus": "Opus settings of the codec version",
    "augment.codecs.opus.bitrate_kbps": "Opus bit rates drawn from (kbit/s)",
    "augment.codecs.vorbis": "Vorbis settings of the codec version",
    "augment.codecs.vorbis.quality": "Vorbis quality levels drawn from",
    "frontend": "the front end (name) and one settings section per registered front end",
    "frontend.name": "the front end that turns audio into frame features",
    "frontend.hf_ssl": "hf_ssl: hidden_states[layer] of a Hugging Face audio encoder (the layers above "
    "it are not computed)",
    "frontend.hf_ssl.model": "hub name or local path of the encoder (wav2vec2, XLS-R, HuBERT, WavLM, "
    "w2v-BERT 2.0)",
    "frontend.hf_ssl.layer": "which hidden state: exactly hidden_states[layer] of the model",
    "frontend.hf_ssl.precision": "auto (bf16 on CUDA, float32 on CPU), float32, tf32 (CUDA), bf16 or fp16 (CUDA)",
    "frontend.hf_ssl.attention": "auto (fused scaled-dot-product attention where the model supports it), sdpa or eager",
    "frontend.lfcc": "lfcc: linear-frequency cepstral coefficients with deltas (no weights needed; the demos')",
    "frontend.lfcc.n_fft": "FFT size",
    "frontend.lfcc.win_length": "analysis window in samples (at most n_fft)",
    "frontend.lfcc.hop_length": "frame shift in samples",
    "frontend.lfcc.level": "none (keep the clip's level) or rms (every clip brought to one RMS level first)",
    "frontend.lfcc.n_filters": "linear-frequency triangular filters",
    "frontend.lfcc.n_coeffs": "cepstral coefficients kept",
    "frontend.lfcc.deltas": "append deltas and delta-deltas",
    "frontend.logmel": "logmel: log mel filterbank energies (no weights needed)",
    "frontend.logmel.n_fft": "FFT size",
    "frontend.logmel.win_length": "analysis window in samples (at most n_fft)",
    "frontend.logmel.hop_length": "frame shift in samples",
    "frontend.logmel.level": "none (keep the clip's level) or rms (every clip brought to one RMS level first)",
    "frontend.logmel.n_mels": "mel filters",
    "features": "the feature store: float16 shards with an index, one folder per setting",
    "features.dir": "root of the feature stores (null: <exp_dir>/features)",
    "features.shard_size": "rows per float16 shard",
    "features.batch_size": "clips per front-end batch during extraction",
    "features.num_workers": "DataLoader workers that decode and augment during extraction",
    "features.test_windows": "dev/eval crops per clip, spread from its start to its end; exporters "
    "average their embeddings and logits (1 = one crop from the start, as the original)",
    "model": "the classifier of stage 2 (name) and one settings section per registered model",
    "model.name": "the classifier trained in stage 2",
    "model.aasist": "aasist: W2V-AASIST over frame features (the original baseline's model by default)",
    "model.aasist.in_proj_dim": "Linear(feature dim -> in_proj_dim) per frame, read as a 1-channel "
    "[feature, time] map",
    "model.aasist.first_pool": "max-pool (feature, time) before the residual encoder, floor rounding",
    "model.aasist.filts": "residual blocks, [in, out] channels each; the first takes 1 channel",
    "model.aasist.block_pool": "max-pool (feature, time) after each residual block ([1, 3] in "
    "raw-waveform AASIST)",
    "model.aasist.residual": "original (conv1 reads the block input, as the released AASIST runs it) or "
    "preact (BN -> SELU -> conv1)",
    "model.aasist.node_pooling": "attention (learned attention-weighted sums, W2V-AASIST) or max "
    "(absolute maximum, raw-waveform AASIST)",
    "model.aasist.node_attention_dim": "hidden channels of the 1x1-conv attention map (node_pooling: attention)",
    "model.aasist.gat_dims": "graph attention (GAL) dim, heterogeneous (HS-GAL) dim",
    "model.aasist.pool_ratios": "graph pooling ratios: spectral GAL, temporal GAL, spectral HS-GAL, temporal HS-GAL",
    "model.aasist.temperatures": "attention temperatures: spectral GAL, temporal GAL, HS-GAL branch 1, branch 2",
    "model.aasist.dropout": "dropout before the output layer",
    "model.aasist.branch_dropout": "dropout on each HS-GAL branch's nodes before the branches are merged",
    "model.aasist.embedding_dim": "penultimate size (the OOD embeddings); null keeps the 5 * gat_dims[1] "
    "readout, another value adds a Linear + SELU projection",
    "train": "training of the stage-2 classifier (the original's recipe by default)",
    "train.epochs": "training epochs",
    "train.batch_size": "clips per batch (before mixup adds the mixed copies)",
    "train.lr": "Adam learning rate",
    "train.betas": "Adam betas",
    "train.eps": "Adam epsilon",
    "train.weight_decay": "Adam weight decay",
    "train.lr_step": "epochs between learning-rate steps",
    "train.lr_gamma": "learning-rate factor at each step",
    "train.mixup_alpha": "mixup Beta(alpha, alpha); the batch is the originals plus the mixed copies (0 = off)",
    "train.loss": "ce (cross-entropy) or bce",
    "train.select_by": "which epoch becomes best.pt: dev_loss, dev_macro_f1 or train_loss",
    "train.versions": "train versions used (null: every version in the store)",
    "train.grad_clip": "max gradient norm (0 = off)",
    "train.precision": "float32, bf16, fp16 or auto (bf16 on CUDA, float32 on CPU)",
    "train.num_workers": "DataLoader workers reading the feature store",
    "train.log_every": "progress-bar refresh, in steps",
    "outputs": "what the classifier's export writes (the file contract)",
    "outputs.train_versions": "train versions exported (the reference bank of the OOD scorers)",
    "outputs.batch_size": "clips per batch of the export",
    "ood": "OOD scoring: the scorers run, the default one, how settings and choices are made, and "
    "one settings section per registered scorer",
    "ood.scorers": "scorers run on every system whose outputs support them (higher = more OOD)",
    "ood.default": "the scorer of OOD_eval_results.txt and trace.py; auto = chosen on dev by ood.select",
    "ood.tune": "how scorer settings (the k of k-NN, Mahalanobis shrinkage, ...) are chosen: none, dev, "
    "holdout (each known system held out of the scorer's fit in turn) or crossfit (each known system "
    "held out of a refit of the whole system, where the system can refit: the statistics systems; "
    "elsewhere holdout); never on eval",
    "ood.select": "the dev-only rule behind ood.default: auto and the dev-chosen system: dev_eer "
    "(lowest pooled dev EER), dev_worst_unseen_auroc (best AUROC on the worst-separated dev-unseen "
    "system) or unseen_auroc (best mean AUROC over dev's unseen systems and the known systems held "
    "out of a train-side refit)",
    "ood.chunk_size": "rows per chunk of the similarity and distance computations (bounds memory)",
    "ood.centroid": "centroid: cosine distance to the nearest class centroid of the train embeddings (no settings)",
    "ood.energy": "energy: -logsumexp(logits) (no settings)",
    "ood.entropy": "entropy: Shannon entropy of the softmax probabilities (opt-in; no settings)",
    "ood.knn": "knn: cosine distance to the k-th nearest train embedding",
    "ood.knn.k": "which neighbour (tunable with ood.tune)",
    "ood.mahalanobis": "mahalanobis: minimum Mahalanobis distance to the class means (shared covariance)",
    "ood.mahalanobis.reg": "covariance shrinkage, times the mean variance on the diagonal (tunable with ood.tune)",
    "ood.maxlogit": "maxlogit: negative maximum logit (no settings)",
    "ood.msp": "msp: 1 - maximum softmax probability (no settings)",
    "ood.nsd": "nsd: REFD's NSD score with the sign fixed (no settings)",
    "ood.sme": "sme: the softmax energy of Klein, Tak and Khoury (opt-in)",
    "ood.sme.temperature": "temperature T of -T * logsumexp(softmax(logits) / T) (tunable with ood.tune)",
    "ge2e": "the GE2E embedding baseline of stage 5 (train_ge2e.py)",
    "ge2e.encoder": "the encoder (name) and one settings section per registered GE2E encoder",
    "ge2e.encoder.name": "features (a small encoder over the stored features) or hf_ssl (fine-tunes a "
    "Hugging Face model on raw audio)",
    "ge2e.encoder.features": "features: input batch norm, two 1-D conv blocks, statistics pooling, MLP",
    "ge2e.encoder.features.hidden_dims": "MLP sizes; the last is the embedding size",
    "ge2e.encoder.features.channels": "channels of the conv blocks",
    "ge2e.encoder.features.pooling": "attentive or mean statistics pooling",
    "ge2e.encoder.hf_ssl": "hf_ssl: a Hugging Face SSL model, hidden_states[layer] mean-pooled, then an MLP",
    "ge2e.encoder.hf_ssl.model": "hub name or local path",
    "ge2e.encoder.hf_ssl.layer": "which hidden state (-1 = the last, as the original)",
    "ge2e.encoder.hf_ssl.hidden_dims": "MLP sizes; the last is the embedding size",
    "ge2e.encoder.hf_ssl.freeze_feature_encoder": "keep the convolutional feature encoder fixed "
    "(the original fine-tuned it too)",
    "ge2e.loss": "softmax or contrast (GE2E; the bias b only matters for contrast) or aam (additive "
    "angular margin softmax over the known systems)",
    "ge2e.aam_margin": "aam: additive angular margin (radians)",
    "ge2e.aam_scale": "aam: logit scale",
    "ge2e.cos_floor": "clamp the GE2E cosines from below (the original recipe: 1e-6; null = no clamp)",
    "ge2e.n_systems": "systems per batch (N)",
    "ge2e.n_clips": "clips per system per batch (M)",
    "ge2e.versions": "features encoder: train versions used (null: every version in the store)",
    "ge2e.epochs": "training epochs",
    "ge2e.steps_per_epoch": "batches per epoch (0 = until a drawn system runs out of clips, the original's epoch)",
    "ge2e.lr": "Adam learning rate",
    "ge2e.weight_decay": "Adam weight decay",
    "ge2e.grad_clip": "max gradient norm (0 = off)",
    "ge2e.init_w": "initial GE2E scale w (trained, kept >= 1e-6)",
    "ge2e.init_b": "initial GE2E bias b (trained in the contrast variant; a fixed buffer in softmax, where it cancels)",
    "ge2e.select_by": "which epoch is kept: dev_macro_f1 (nearest train centroid), dev_loss or train_loss",
    "ge2e.select_clips_per_system": "clips per system used by the per-epoch dev check (0 = all)",
    "ge2e.precision": "float32, bf16, fp16 or auto (bf16 on CUDA, float32 on CPU)",
    "ge2e.batch_size": "clips per batch of the embedding export",
    "ge2e.num_workers": "DataLoader workers",
    "mfcc": "the MFCC reference system of stage 6 (and the plain reference)",
    "mfcc.n_mfcc": "MFCCs per frame (their mean and standard deviation, with deltas, per clip)",
    "mfcc.crop": "false: statistics of the whole clip (no wrap padding); true: the 4 s crop",
    "mfcc.jobs": "parallel audio workers (0 = features.num_workers)",
    "mfcc.plain": "also export and judge the plain reference plain_mfcc (30 MFCCs of the first 4 s, "
    "cosine distance to the 5th-nearest train clip; never a dev choice)",
    "stats": "the utterance-statistics system of stage 7",
    "stats.features": "statistics groups: mfcc, prosody, spectrum, duration, mfcc_plain",
    "stats.projection": "lda (shrinkage LDA on the known systems) or none",
    "stats.augment": "augmented train copies it is fitted on (made with the augment.* settings)",
    "stats.n_mfcc": "MFCCs of the mfcc group",
    "stats.crop": "false: the whole clip; true: the 4 s crop",
    "stats.jobs": "parallel audio workers (0 = features.num_workers)",
    "stats.variants": "more statistics systems, each exported and judged under its own name: name -> "
    "overrides of features, projection, augment, n_mfcc, crop (free keys)",
    "hybrid": "the hybrid system (frame features + utterance statistics in one network), made in stage 7 when enabled",
    "hybrid.enabled": "run it in stage 7 of run.sh (scripts/hybrid_system.py always runs it)",
    "hybrid.name": "the system's folder and name (another name compares settings side by side)",
    "hybrid.features": "statistics groups of the statistics branch",
    "hybrid.inputs": "both, stats or frames (an ablation: one branch only)",
    "hybrid.fusion": "gated (a learned per-dimension gate) or concat",
    "hybrid.hidden": "hidden size of each branch's MLP",
    "hybrid.embedding_dim": "size of the L2-normalised embedding",
    "hybrid.dropout": "dropout in the branches",
    "hybrid.scale": "class scores = scale * cosine to each class proxy",
    "hybrid.loss": "ce or proxy_anchor",
    "hybrid.outliers": "outlier copies synthesised from train clips: pitch_up, pitch_down, faster, slower",
    "hybrid.outlier_clips": "the user's outlier clips: a CSV path,model_name relative to data.root, of "
    "systems in no split (null: none)",
    "hybrid.outlier_loss": "uniform (outlier exposure) or energy (energy margin)",
    "hybrid.held_out_classes": "known systems left out of each training step's classes, their clips "
    "outliers of that step (a fresh draw per step; 0 = none)",
    "hybrid.outlier_weight": "weight of the outlier loss",
    "hybrid.anchor": "none, or lda: the statistics' shrinkage LDA kept fixed in the embedding beside the "
    "learned part (a learned residual)",
    "hybrid.anchor_weight": "weight of the learned part beside the anchor (the anchor has weight 1)",
    "hybrid.epochs": "training epochs (the last epoch is kept)",
    "hybrid.batch_size": "clips per batch",
    "hybrid.lr": "Adam learning rate",
    "hybrid.weight_decay": "Adam weight decay",
    "pooled": "the training-free pooled-embedding system (after TADA), made in stage 7 when enabled",
    "pooled.enabled": "run it in stage 7 of run.sh (scripts/pooled_system.py always runs it)",
    "pooled.frontend": "front-end settings merged over the frontend section (null: the experiment's front end)",
    "pooled.pooling": "mean or mean_std (mean and standard deviation over time)",
    "pooled.crop": "false: the whole clip; true: the 4 s crop of the feature store",
    "pooled.k": "neighbours of the closed-set vote: null = auto (chosen on train, holding out known "
    "systems in turn) or an integer",
    "pooled.ood_k": "the OOD score's neighbour: null = as k; auto; or an integer",
    "pooled.augment": "augmented train copies added to the reference bank (none by default)",
    "fusion": "score fusion of stage 8 (a logistic regression on dev's OOD scores)",
    "fusion.members": "system:scorer names, or [auto] (forward selection on the out-of-fold dev EER)",
    "fusion.max_members": "most members forward selection may take",
    "fusion.weights": "nonnegative (every member weight >= 0) or free",
    "trace": "tracing new clips (scripts/trace.py)",
    "trace.top_k": "systems listed per clip",
    "trace.system": "the system traced when nothing is judged yet to choose one on dev (--system decides)",
    "trace.scorer": "the OOD scorer (null: the OOD step's default)",
    "robustness": "the robustness report card of stage 12",
    "robustness.conditions": "null: every default condition; a list of their names; or a mapping "
    "name -> {transform: <registered transform>, <parameters>}",
    "robustness.systems": "null: every system with outputs, an OOD step and a model that runs on audio",
    "robustness.splits": "splits passed through each condition (dev is needed: the per-condition "
    "thresholds are fitted on it)",
    "robustness.seed": "seeds each clip's draw under each condition (noise segment, RIR, ...)",
}

# Allowed values of keys whose check lives in the component that reads them (the rest: CHECKS).
ALLOWED: dict[str, str] = {
    "device": "auto, cpu, cuda or cuda:N",
    "data.label_map_csv": "a CSV path or null",
    "features.dir": "a folder or null",
    "model.aasist.embedding_dim": "an integer >= 1 or null",
    "train.versions": "a list of stored versions or null",
    "ge2e.versions": "a list of stored versions or null",
    "ge2e.cos_floor": "a number or null",
    "trace.scorer": "a scorer name or null",
    "frontend.hf_ssl.precision": "one of auto, float32, tf32, bf16, fp16",
    "frontend.hf_ssl.attention": "one of auto, sdpa, eager",
    "frontend.lfcc.level": "one of none, rms",
    "frontend.logmel.level": "one of none, rms",
    "model.aasist.residual": "one of original, preact",
    "model.aasist.node_pooling": "one of attention, max",
    "ge2e.encoder.features.pooling": "one of attentive, mean",
    "augment.versions": "a list of original, reverb, noise, music, speech, codec",
    "augment.splits": "a list of split names",
    "stats.features": "a non-empty list of mfcc, prosody, spectrum, duration, mfcc_plain",
    "stats.augment": "a list of original, reverb, noise, music, speech, codec",
    "pooled.augment": "a list of original, reverb, noise, music, speech, codec",
    "hybrid.features": "a non-empty list of mfcc, prosody, spectrum, duration, mfcc_plain",
    "ood.default": "auto or one of ood.scorers",
    "ood.sme.temperature": "a number > 0",
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

    def clone(self) -> Config:
        """A deep copy (changing it leaves this config as it is)."""
        return _wrap(self.to_dict())


def schema() -> dict[str, Any]:
    """The full schema: the static defaults plus one section per registered component."""
    from sourcetracing.components import ENCODERS, FRONTENDS, MODELS, SCORERS

    tree = copy.deepcopy(STATIC_DEFAULTS)
    tree["frontend"].update(FRONTENDS.all_defaults())
    tree["model"].update(MODELS.all_defaults())
    tree["ge2e"]["encoder"].update(ENCODERS.all_defaults())
    tree["ood"].update(SCORERS.all_defaults())
    return tree


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


def _unknown(dotted: str, tree: dict) -> ConfigError:
    keys = _all_keys(tree)
    head, _, leaf = dotted.rpartition(".")
    # a key that moved into a component section: frontend.layer -> frontend.hf_ssl.layer
    close = [
        k
        for k in keys
        if head
        and k.startswith(head + ".")
        and k.endswith("." + leaf)
        and k.count(".") == dotted.count(".") + 1
    ]
    if not close:
        close = difflib.get_close_matches(dotted, keys, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{dotted}'{hint}")


def _check_type(dotted: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{dotted}' expects true/false, got {value!r}")
        return value
    if isinstance(default, (int, float)) and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-3" as a string
            value = float(value)
        except ValueError:
            raise ConfigError(f"config key '{dotted}' expects a number, got {value!r}") from None
    if isinstance(default, (int, float)) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"config key '{dotted}' expects a number, got {value!r}")
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, float):
            if not value.is_integer():
                raise ConfigError(f"config key '{dotted}' expects an integer, got {value!r}")
            value = int(value)
        return value
    if isinstance(default, float):
        return float(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"config key '{dotted}' expects a string, got {value!r}")
    if isinstance(default, list) and not isinstance(value, list):
        raise ConfigError(f"config key '{dotted}' expects a list, got {value!r}")
    return value


def _merge(base: dict, update: dict, tree: dict, root: dict, prefix: str = "") -> None:
    for key, value in update.items():
        dotted = prefix + str(key)
        if key not in tree:
            raise _unknown(dotted, root)
        if isinstance(tree[key], dict):
            if dotted in FREE_SECTIONS:
                if not isinstance(value, dict):
                    raise ConfigError(f"config key '{dotted}' is a mapping; got {value!r}")
                base[key] = dict(value)
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{dotted}' is a section; got {value!r}")
            _merge(base[key], value, tree[key], root, dotted + ".")
        else:
            base[key] = _check_type(dotted, tree[key], value)


def _validate(cfg: dict) -> None:
    """Range checks of the static keys and of the component choices."""
    from sourcetracing.components import ENCODERS, FRONTENDS, MODELS, SCORERS

    for dotted, (check, what) in CHECKS.items():
        node: Any = cfg
        for part in dotted.split("."):
            node = node[part]
        if node is not None and not check(node):
            raise ConfigError(f"config key '{dotted}' must be {what}, got {node!r}")
    FRONTENDS.entry(cfg["frontend"]["name"])
    MODELS.entry(cfg["model"]["name"])
    ENCODERS.entry(cfg["ge2e"]["encoder"]["name"])
    for name in cfg["ood"]["scorers"]:
        SCORERS.entry(name)
    default = cfg["ood"]["default"]
    if default != "auto" and default not in cfg["ood"]["scorers"]:
        raise ConfigError(
            f"ood.default '{default}' is not among ood.scorers {cfg['ood']['scorers']} (or use auto)"
        )
    for key in ("augment.versions", "stats.augment", "pooled.augment"):
        section, name = key.split(".")
        _check_versions(key, cfg[section][name])
    _validate_stats_variants(cfg)
    if "train" not in cfg["data"]["splits"]:
        raise ConfigError("data.splits must name a 'train' split (the label map comes from it)")


STATS_VARIANT_KEYS = ("features", "projection", "augment", "n_mfcc", "crop")
RESERVED_SYSTEM_NAMES = frozenset(
    {
        "aasist",
        "ge2e",
        "mfcc",
        "plain_mfcc",
        "pooled",
        "hybrid",
        "stats",
        "fusion",
        "features",
        "enrolment",
        "stats_shared",
        "trace",
        "robustness",
    }
)


def _check_versions(key: str, versions: list) -> None:
    """Every entry of ``versions`` names an augmentation version."""
    from sourcetracing.data.augment import VERSION_IDS

    unknown = [v for v in versions if v not in VERSION_IDS]
    if unknown:
        raise ConfigError(
            f"{key}: unknown augmentation version(s) {unknown}; known: {', '.join(VERSION_IDS)}"
        )


def _check_groups(key: str, groups: list) -> None:
    """``groups`` names at least one statistics group, each a known one."""
    from sourcetracing.systems.utterance_features import GROUPS

    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ConfigError(f"{key}: unknown or no group(s) {unknown}; choose from {sorted(GROUPS)}")


def _validate_stats_variants(cfg: dict) -> None:
    """Each ``stats.variants`` entry: a new system name and overrides of the statistics settings."""
    import re

    stats = cfg["stats"]
    _check_groups("stats.features", stats["features"])
    _check_groups("hybrid.features", cfg["hybrid"]["features"])
    for name, overrides in stats["variants"].items():
        where = f"stats.variants.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ConfigError(f"{where}: a system name is letters, digits, '_', '.' or '-', got {name!r}")
        if name in RESERVED_SYSTEM_NAMES:
            raise ConfigError(f"{where}: '{name}' is the name of another system or folder; choose another")
        if not isinstance(overrides, dict):
            raise ConfigError(
                f"{where} must map settings to values ({', '.join(STATS_VARIANT_KEYS)}), got {overrides!r}"
            )
        for key, value in overrides.items():
            if key not in STATS_VARIANT_KEYS:
                raise ConfigError(
                    f"{where}.{key}: not a statistics setting; choose from {', '.join(STATS_VARIANT_KEYS)}"
                )
            overrides[key] = _check_type(f"{where}.{key}", stats[key], value)
        merged = {**stats, **overrides}
        _check_groups(f"{where}.features", merged["features"])
        for key in overrides:  # the checks of the stats section's own keys
            check, what = CHECKS.get(f"stats.{key}", (None, ""))
            if check is not None and not check(merged[key]):
                raise ConfigError(f"{where}.{key} must be {what}, got {merged[key]!r}")
        _check_versions(f"{where}.augment", merged["augment"])


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b=value`` into its key path and YAML-parsed value.

    >>> parse_override("train.betas=[0.8, 0.99]")
    (['train', 'betas'], [0.8, 0.99])
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': the value is not valid YAML ({err})") from None
    return key.strip().split("."), value


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file; syntax errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{where}: YAML syntax error: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def import_plugins(plugins: Any) -> None:
    """Import each plugin module (a dotted name or a ``.py`` path) so its components register."""
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"plugins: expected a list of module names or .py paths, got {plugins!r}")
    for plugin in plugins:
        try:
            if plugin.endswith(".py"):
                path = Path(plugin).resolve()
                if not path.is_file():
                    raise ConfigError(f"plugins: no such file {path}")
                name = f"sourcetracing_plugin_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
                if name not in sys.modules:
                    spec = importlib.util.spec_from_file_location(name, path)
                    module = importlib.util.module_from_spec(spec)
                    sys.modules[name] = module
                    spec.loader.exec_module(module)
            else:
                importlib.import_module(plugin)
        except ConfigError:
            raise
        except Exception as err:  # an import error or one raised by the plugin itself
            raise ConfigError(f"plugins: cannot import {plugin}: {type(err).__name__}: {err}") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Read a YAML experiment file (or only the defaults when ``path`` is None) and apply overrides."""
    data = read_yaml(path) if path is not None else {}
    parsed = [parse_override(text) for text in overrides or []]
    plugins = data.get("plugins", [])
    for keys, value in parsed:
        if keys == ["plugins"]:
            plugins = value
    import_plugins(plugins)  # before the schema: their components add config sections
    tree = schema()
    cfg = copy.deepcopy(tree)
    _merge(cfg, data, tree, tree)
    for keys, value in parsed:
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _merge(cfg, nested, tree, tree)
    if path is not None and "name" not in data:
        cfg["name"] = Path(path).stem
    _validate(cfg)
    return _wrap(cfg)


def component_settings(section: dict, name_key: str = "name") -> dict:
    """The chosen component's name plus its own settings only (what enters hashes and checkpoints).

    >>> component_settings({"name": "b", "a": {"x": 1}, "b": {"y": 2}})
    {'name': 'b', 'y': 2}
    """
    name = section[name_key]
    return {"name": name, **dict(section.get(name) or {})}


def config_hash(section: Any) -> str:
    """A short stable hash of plain data (used to keep stores of different settings apart).

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
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    tmp.replace(target)
    return target


DEFAULT_CONFIG = "configs/refd_mlaad.yaml"


def add_config_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """Add ``--config FILE`` (default: the original's recipe) and positional ``key.sub=value`` overrides."""
    parser.add_argument(
        "--config",
        required=required,
        default=None,  # None: not given; config_from_args reads DEFAULT_CONFIG then
        help=f"experiment YAML (default: {DEFAULT_CONFIG}, the original baseline's recipe on MLAAD)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        action="extend",  # a key=value after a list option joins these (sourcetracing.cli.ListOption)
        default=[],
        help="dotted config overrides, e.g. train.epochs=3",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named by parsed arguments, ``DEFAULT_CONFIG`` without ``--config`` (raises
    :class:`ConfigError`)."""
    return load_config(args.config or DEFAULT_CONFIG, args.overrides)


def resolve_device(name: str = "auto"):
    """``auto`` picks CUDA when present, else CPU."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
