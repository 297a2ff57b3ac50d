"""Evaluating anyone's per-clip scores against a key written from the protocols.

    python scripts/write_key.py --config configs/refd_mlaad.yaml            # -> <exp_dir>/key.tsv
    python scripts/evaluate_scores.py --scores my_dev.tsv my_eval.tsv --key exp/mlaad/key.tsv --out eval_mine

**Key file** (TSV with a header, one row per clip of every split)::

    clip_id  system  split  status  language  language_seen  cell

``clip_id`` is the protocol path without its leading ``./`` (``fake/en/<model_dir>/<file>.wav``),
``system`` the protocol's ``model_name``, ``split`` train/dev/eval, ``status`` ``known`` (a train
system: the label map comes from train) or ``unseen``, ``language`` from the path,
``language_seen`` whether train has that language, ``cell`` the fine-grained view
``{seen,unseen}_lang/{seen,unseen}_model``. Only the first four columns are required; the others
are derived as the toolkit derives them.

**Score file** (TSV with a header, as the score files of the ASVspoof evaluation package, one row
per clip of the splits evaluated; several files, e.g. one per split, are read as one)::

    clip_id  <score name> [<score name> ...]  [predicted]

Each score column is one detector, **higher = more likely from an unseen system** (a ``score_``
prefix on its name is dropped); ``predicted``, optional, names the known system the clip is
attributed to (closed set). ``clip_id`` may keep the protocol's ``./``. Clips of the key's train
split are ignored (train only defines the known systems).

The evaluation turns key + scores into a system's outputs (:mod:`sourcetracing.systems.outputs`,
one ``score_<name>`` column per detector) and runs the toolkit's own judge on them, so the files
are exactly those written for the toolkit's systems, under ``<out>/<name>/``: ``outputs/``;
``ood_step/`` (EER, AUROC, FPR95, Cllr / min Cllr, open-set F1, per cell, per language, per unseen
system, thresholds at the dev EER and calibrations fitted on dev and applied to eval); ``results/``
(known-class metrics, only with ``predicted``); and ``posteriors/``: per clip and detector the
dev-calibrated log-likelihood ratio, P(unseen) at ``prior`` and the decision at the dev-EER
threshold (``<split>.tsv``), and the detection cost of the Bayes decisions at ``prior`` next to the
best any threshold reaches (``dcf.csv``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.config import Config, load_config
from sourcetracing.data.protocols import clip_id_of, language_of, prepare_splits
from sourcetracing.errors import DataError, MissingInputError, WouldOverwriteError
from sourcetracing.layout import ExperimentLayout
from sourcetracing.ood.step import OODStep, read_thresholds
from sourcetracing.provenance import atomic_dir, data_digest, file_digest, write_manifest
from sourcetracing.systems.handle import DROP_IN
from sourcetracing.systems.outputs import (
    SCORE_PREFIX,
    OutputsMeta,
    SplitOutputs,
    SystemOutputs,
    complete_rows,
    split_order,
)

KEY_FILE_COLUMNS = ["clip_id", "system", "split", "status", "language", "language_seen", "cell"]
KEY_REQUIRED = ("clip_id", "system", "split", "status")
STATUSES = ("known", "unseen")
PREDICTED = "predicted"
EXAMPLES = 3  # clip ids quoted in an error message


# ---------------------------------------------------------------------------------------------
# The key


def key_frame(cfg: Config) -> pd.DataFrame:
    """The key rows of every split of the config's protocols (label map from train), in protocol order."""
    splits, _ = prepare_splits(cfg)
    parts = []
    for split in split_order(splits):
        df = splits[split]
        parts.append(
            pd.DataFrame(
                {
                    "clip_id": df["clip_id"],
                    "system": df["model_name"],
                    "split": split,
                    "status": np.where(df["known"], "known", "unseen"),
                    "language": df["language"],
                    "language_seen": df["language_seen"].astype(bool),
                    "cell": df["cell"],
                }
            )
        )
    key = pd.concat(parts, ignore_index=True)
    duplicated = key["clip_id"].duplicated(keep=False)
    if duplicated.any():
        rows = key[duplicated].sort_values("clip_id")
        raise DataError(
            f"{int(duplicated.sum())} key rows share a clip id across splits, e.g. "
            f"{rows['clip_id'].iloc[0]} in {sorted(set(rows['split'].iloc[:2]))}"
        )
    return key


def write_key(cfg: Config, out: str | Path | None = None) -> Path:
    """Write the key TSV (default ``<exp_dir>/key.tsv``) and return its path."""
    path = Path(out) if out else ExperimentLayout.of(cfg).key
    key = key_frame(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    key.to_csv(tmp, sep="\t", index=False)
    tmp.replace(path)
    return path


@dataclass
class Key:
    """A validated key: one row per clip, the known systems (class id order) and the train languages."""

    rows: pd.DataFrame
    class_names: list[str]
    train_languages: set[str]

    def split_rows(self, split: str) -> pd.DataFrame:
        return self.rows[self.rows["split"] == split]


def read_key(path: str | Path) -> Key:
    """Read and check a key TSV (required columns, statuses, one status per system, unique clip ids)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"key file not found: {path} (write one with scripts/write_key.py)")
    rows = _read_tsv(path, "key")
    missing = [c for c in KEY_REQUIRED if c not in rows]
    if missing:
        raise DataError(f"{path}: the key lacks the column(s) {missing}; expected {KEY_FILE_COLUMNS}")
    for column in KEY_REQUIRED:
        rows[column] = rows[column].str.strip()
    rows["clip_id"] = rows["clip_id"].map(clip_id_of)
    _refuse_duplicates(rows["clip_id"], f"{path} (key)")
    bad = ~rows["status"].isin(STATUSES)
    if bad.any():
        raise DataError(
            f"{path}: status must be one of {list(STATUSES)}; line {_line(bad)} has '{rows.loc[bad, 'status'].iloc[0]}'"
        )
    statuses = rows.groupby("system")["status"].nunique()
    mixed = statuses[statuses > 1].index.tolist()
    if mixed:
        raise DataError(f"{path}: system(s) {mixed[:EXAMPLES]} are both known and unseen in the key")
    class_names = sorted(set(rows.loc[rows["status"] == "known", "system"]))
    if not class_names:
        raise DataError(f"{path}: no known systems in the key (status 'known': the train systems)")
    if "language" not in rows:
        rows["language"] = rows["clip_id"].map(language_of)
    train = rows[rows["split"] == "train"]
    reference = train if len(train) else rows[rows["status"] == "known"]
    train_languages = set(reference["language"])
    if "language_seen" in rows:
        rows["language_seen"] = rows["language_seen"].str.lower().map({"true": True, "false": False})
        if rows["language_seen"].isna().any():
            raise DataError(
                f"{path}: language_seen must be True or False (line {_line(rows['language_seen'].isna())})"
            )
    else:
        rows["language_seen"] = rows["language"].isin(train_languages)
    return Key(rows.reset_index(drop=True), class_names, train_languages)


def require_dev_to_fit(key_rows: pd.DataFrame, where: str) -> None:
    """Thresholds and calibrations are fitted on dev: it needs clips of known and of unseen systems."""
    dev = key_rows[key_rows["split"] == "dev"]
    for status, what in (("unseen", "unseen systems"), ("known", "known systems")):
        if not (dev["status"] == status).any():
            raise DataError(
                f"{where}: no dev clips of {what}; thresholds and calibrations are fitted on dev, "
                "which needs clips of both known and unseen systems"
            )


# ---------------------------------------------------------------------------------------------
# Score files


@dataclass
class Scores:
    """Validated score rows: ``clip_id``, one float64 column per detector, optional ``predicted``."""

    rows: pd.DataFrame
    names: list[str]

    @property
    def has_predicted(self) -> bool:
        return PREDICTED in self.rows


def read_scores(paths: str | Path | Sequence[str | Path]) -> Scores:
    """Read one or more score TSVs as one table; every problem is a :class:`DataError` naming file and line."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise DataError("no score file given")
    frames: list[pd.DataFrame] = []
    names: list[str] | None = None
    has_predicted = False
    for path in paths:
        if not path.is_file():
            raise MissingInputError(f"score file not found: {path}")
        raw = _read_tsv(path, "score file")
        if "clip_id" not in raw:
            raise DataError(f"{path}: a 'clip_id' column is required (header: {list(raw.columns)})")
        columns = [c for c in raw.columns if c not in ("clip_id", PREDICTED)]
        if not columns:
            raise DataError(
                f"{path}: no score column besides clip_id{' and predicted' if PREDICTED in raw else ''}"
            )
        renamed = {c: c[len(SCORE_PREFIX) :] if c.startswith(SCORE_PREFIX) else c for c in columns}
        if len(set(renamed.values())) < len(renamed) or "" in renamed.values():
            raise DataError(f"{path}: score column names must be distinct and non-empty: {columns}")
        frame = pd.DataFrame({"clip_id": raw["clip_id"].str.strip().map(clip_id_of)})
        for column, name in renamed.items():
            frame[name] = _numeric(raw[column], path, column)
        if PREDICTED in raw:
            frame[PREDICTED] = raw[PREDICTED].str.strip()
        if names is not None and (list(renamed.values()) != names or (PREDICTED in raw) != has_predicted):
            raise DataError(
                f"{path}: its columns {list(raw.columns)} differ from those of {paths[0]}; "
                "every score file must have the same score columns (and predicted or not)"
            )
        names, has_predicted = list(renamed.values()), PREDICTED in raw
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    _refuse_duplicates(rows["clip_id"], "the score file(s)")
    return Scores(rows, list(names or []))


def _read_tsv(path: Path, what: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable tab-separated {what} ({str(err).strip()})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.empty:
        raise DataError(f"{path}: the {what} has a header but no rows")
    return frame


def _line(mask: pd.Series) -> int:
    """File line of the first true row (1-based, after the header)."""
    return int(np.flatnonzero(mask.to_numpy())[0]) + 2


def _numeric(column: pd.Series, path: Path, name: str) -> pd.Series:
    values = pd.to_numeric(column.str.strip(), errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=np.float64))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: score column '{name}' holds {int(bad.sum())} value(s) that are not finite numbers, "
            f"first on line {first + 2}: '{column.iloc[first]}' (a score file holds clip_id, numeric scores "
            "and optionally predicted; the labels come from the key)"
        )
    return values.astype(np.float64)


def _refuse_duplicates(ids: pd.Series, where: str) -> None:
    dup = ids.duplicated(keep=False)
    if dup.any():
        examples = list(dict.fromkeys(ids[dup]))[:EXAMPLES]
        raise DataError(
            f"{where}: {int(ids[dup].nunique())} clip id(s) appear more than once, e.g. {examples}"
        )


# ---------------------------------------------------------------------------------------------
# Key + scores -> a system's outputs


@dataclass
class Matched:
    """The evaluated clips and the counts of what was left out."""

    scores: pd.DataFrame  # score rows with the key columns joined, in score-file order
    not_in_key: list[str]
    not_scored: list[str]
    train_ignored: int


def match(key: Key, scores: Scores, allow_missing: bool = False) -> Matched:
    """Join scores to the key; clips on one side only are an error unless ``allow_missing``."""
    key_rows = key.rows.set_index("clip_id")
    in_key = scores.rows["clip_id"].isin(key_rows.index)
    not_in_key = scores.rows.loc[~in_key, "clip_id"].tolist()
    joined = scores.rows[in_key].join(key_rows, on="clip_id")
    train = joined["split"] == "train"
    joined = joined[~train]
    evaluated = key.rows[key.rows["split"] != "train"]
    not_scored = evaluated.loc[~evaluated["clip_id"].isin(joined["clip_id"]), "clip_id"].tolist()
    if (not_in_key or not_scored) and not allow_missing:
        parts = []
        if not_in_key:
            parts.append(
                f"{len(not_in_key)} scored clip(s) are not in the key (e.g. {not_in_key[:EXAMPLES]})"
            )
        if not_scored:
            parts.append(
                f"{len(not_scored)} of the key's {len(evaluated)} dev/eval clips have no score "
                f"(e.g. {not_scored[:EXAMPLES]})"
            )
        raise DataError(
            "; ".join(parts) + f"; pass --allow-missing to evaluate only the {len(joined)} clips in both"
        )
    if joined.empty:
        raise DataError("no scored clip of the key's dev/eval splits: is this the right key?")
    return Matched(joined.reset_index(drop=True), not_in_key, not_scored, int(train.sum()))


def outputs_from_scores(key: Key, matched: Matched, scores: Scores, name: str) -> SystemOutputs:
    """The scores as a system's outputs: per split the key columns plus ``score_<name>`` (and ``predicted``)."""
    if scores.has_predicted:
        unknown = sorted(set(matched.scores[PREDICTED]) - set(key.class_names))
        if unknown:
            raise DataError(
                f"'predicted' must name a known (train) system for every clip; found {unknown[:EXAMPLES]} "
                f"(known: {key.class_names[:EXAMPLES]}{' ...' if len(key.class_names) > EXAMPLES else ''}). "
                "The unseen decision comes from the scores and the dev threshold."
            )
    splits: dict[str, SplitOutputs] = {}
    train = key.split_rows("train")
    splits["train"] = SplitOutputs(_complete(train, key, pd.DataFrame(index=train.index)))
    for split in split_order(set(matched.scores["split"])):
        part = matched.scores[matched.scores["split"] == split]
        extra = pd.DataFrame(
            {f"{SCORE_PREFIX}{n}": part[n].to_numpy(np.float64) for n in scores.names}, index=part.index
        )
        if scores.has_predicted:
            extra.insert(0, PREDICTED, part[PREDICTED])
        splits[split] = SplitOutputs(_complete(part, key, extra))
    meta = {
        "task": "scores",
        "description": "per-clip scores evaluated against a key",
        "scores": scores.names,
    }
    return SystemOutputs(name, list(key.class_names), splits, meta)


def _complete(rows: pd.DataFrame, key: Key, extra: pd.DataFrame) -> pd.DataFrame:
    base = pd.DataFrame(
        {
            "clip_id": rows["clip_id"],
            "path": "./" + rows["clip_id"],
            "model_name": rows["system"],
            "language": rows["language"],
            "language_seen": rows["language_seen"].astype(bool),
        }
    )
    return complete_rows(pd.concat([base, extra], axis=1), key.class_names, key.train_languages)


# ---------------------------------------------------------------------------------------------
# The evaluation


def evaluation_config(out_dir: str | Path, default: str = "auto") -> Config:
    """A config whose experiment folder is ``out_dir``, running no registered scorer (the score columns only)."""
    cfg = load_config(None, [f"exp_dir={Path(out_dir)}", "ood.scorers=[]"])
    cfg.ood.default = default  # a score column's name, not a registered scorer: set after validation
    return cfg


def evaluate_scores(
    score_paths: str | Path | Sequence[str | Path],
    key_path: str | Path,
    out_dir: str | Path,
    name: str | None = None,
    prior: float = 0.5,
    default: str = "auto",
    allow_missing: bool = False,
) -> dict:
    """Judge score files against a key with the toolkit's judge; returns paths, counts and the summary."""
    from sourcetracing.judge import known_class_metrics, ood_step

    if not 0.0 < float(prior) < 1.0:
        raise DataError(
            f"--prior is the expected fraction of clips from unseen systems: in (0, 1), got {prior}"
        )
    key = read_key(key_path)
    require_dev_to_fit(key.rows, f"{key_path}")
    scores = read_scores(score_paths)
    if default != "auto" and default not in scores.names:
        raise DataError(f"--default '{default}' is not a score column; the score columns are {scores.names}")
    matched = match(key, scores, allow_missing)
    require_dev_to_fit(matched.scores, "the scored clips")
    paths = [Path(p) for p in ([score_paths] if isinstance(score_paths, (str, Path)) else score_paths)]
    name = name or paths[0].stem
    outputs = outputs_from_scores(key, matched, scores, name)
    cfg = evaluation_config(out_dir, default)
    sys_layout = ExperimentLayout.of(cfg).system(name)
    meta = OutputsMeta.of(sys_layout)
    if meta is not None and meta.task != DROP_IN:
        raise WouldOverwriteError(
            f"{sys_layout.root} holds a trained system's outputs: choose another --out or --name"
        )
    inputs = {"scores": data_digest([file_digest(p) for p in paths]), "key": file_digest(key_path)}
    outputs.write(sys_layout.outputs, inputs)
    results = known_class_metrics(cfg, name, outputs) if scores.has_predicted else {}
    if not scores.has_predicted and sys_layout.results.exists():
        import shutil

        shutil.rmtree(sys_layout.results)  # an earlier evaluation's, from other scores
    summary = ood_step(cfg, name, None, outputs)
    write_posteriors(sys_layout.ood, sys_layout.root / "posteriors", outputs, prior)
    return {
        "system": name,
        "folder": sys_layout.root,
        "clips": {s: len(p.rows) for s, p in outputs.splits.items() if s != "train"},
        "not_in_key": len(matched.not_in_key),
        "not_scored": len(matched.not_scored),
        "train_ignored": matched.train_ignored,
        "known_class": results,
        "summary": summary,
        "default": OODStep.read_folder(sys_layout.ood).default,
    }


def write_posteriors(ood_dir: Path, target: Path, outputs: SystemOutputs, prior: float) -> None:
    """Per clip and detector: dev-calibrated llr, P(unseen) at ``prior``, the dev-EER decision; and DCFs."""
    from sourcetracing.ood.calibration import LogisticCalibration, actual_dcf, min_dcf

    info = read_thresholds(ood_dir)
    dcf_rows = []
    with atomic_dir(target) as tmp:
        for split in [s for s in outputs.splits if s != "train"]:
            part = outputs.splits[split]
            is_ood = part.is_ood
            table = part.rows[["clip_id", "model_name", "known"]].copy()
            for scorer, entry in info["scorers"].items():
                s = part.scores[scorer]
                cal = LogisticCalibration.from_dict(entry["calibration"])
                llr = cal.llr(s)
                table[f"{scorer}_llr"] = llr
                table[f"{scorer}_p_unseen"] = cal.probability(s, prior)
                table[f"{scorer}_unseen"] = s >= float(entry["threshold"])
                both = bool(is_ood.any()) and bool((~is_ood).any())
                dcf_rows.append(
                    {
                        "scorer": scorer,
                        "split": split,
                        "prior": prior,
                        "actual_dcf": actual_dcf(llr, is_ood, prior) if both else math.nan,
                        "min_dcf": min_dcf(s, is_ood, prior) if both else math.nan,
                    }
                )
            table.to_csv(tmp / f"{split}.tsv", sep="\t", index=False)
        pd.DataFrame(dcf_rows).to_csv(tmp / "dcf.csv", index=False)
        write_manifest(tmp, "posteriors", {"ood_step": _manifest_id(ood_dir)}, prior=prior)


def _manifest_id(folder: Path) -> str:
    path = folder / "manifest.json"
    return json.loads(path.read_text()).get("id", "") if path.is_file() else ""
