"""The data check: validate protocols, audio files and augmentation corpora before hours of work."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sourcetracing.config import Config
from sourcetracing.data.augment import VERSION_IDS
from sourcetracing.data.protocols import ProtocolError, missing_files, prepare_splits, split_summary

MUSAN_CATEGORIES = {"noise": "noise", "music": "music", "speech": "speech"}
AUDIO_SUFFIXES = (".wav", ".flac")


def _has_audio(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in AUDIO_SUFFIXES for p in folder.rglob("*"))


def augmentation_problems(cfg: Config) -> list[str]:
    """Missing or empty MUSAN/RIRS folders that the configured augmentation needs."""
    if not cfg.augment.splits:
        return []
    problems = []
    versions = set(cfg.augment.versions)
    for version, category in MUSAN_CATEGORIES.items():
        if version in versions:
            folder = Path(cfg.augment.musan) / category
            if not _has_audio(folder):
                problems.append(f"augmentation '{version}' needs audio files under {folder} (MUSAN layout)")
    if "reverb" in versions:
        folder = Path(cfg.augment.rirs) / "simulated_rirs"
        if not _has_audio(folder):
            problems.append(f"augmentation 'reverb' needs RIR wav files under {folder} (RIRS_NOISES layout)")
    unknown = versions - set(VERSION_IDS)  # "original" and "codec" need no corpus
    if unknown:
        problems.append(f"unknown augmentation version(s) {sorted(unknown)}; known: {', '.join(VERSION_IDS)}")
    return problems


def run_check(cfg: Config, check_files: bool = True) -> tuple[list[str], pd.DataFrame]:
    """Validate everything; write the label assignment. Returns (problems, per-split summary table)."""
    try:
        splits, label_map = prepare_splits(cfg)
    except ProtocolError as err:
        return [str(err)], pd.DataFrame()
    problems: list[str] = []
    if check_files:
        for name, df in splits.items():
            root = Path(cfg.data.root).resolve()
            outside = [p for p in df["path"] if not (root / p).resolve().is_relative_to(root)]
            if outside:  # a link inside the data root that points elsewhere
                problems.append(
                    f"{name}: {len(outside)} path(s) resolve outside data.root {root}, e.g. {outside[0]}"
                )
            missing = missing_files(df, cfg.data.root)
            if missing:
                listing = "\n    ".join(missing[:10])
                problems.append(
                    f"{name}: {len(missing)} of {len(df)} audio files missing under {cfg.data.root}; first ones:\n    {listing}"
                )
    problems += augmentation_problems(cfg)
    label_map.write(cfg.exp_dir)
    table = pd.DataFrame({name: split_summary(df) for name, df in splits.items()}).T
    return problems, table
