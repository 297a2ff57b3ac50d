"""The file contract between a *system* and everything that judges it.

A system (AASIST, GE2E, the MFCC reference, a fusion, a user's own model) ends by exporting, once,
a folder ``<exp_dir>/<system>/outputs/``::

    meta.json      {"system": name, "class_names": [known systems, class id order],
                    "has": ["embeddings", "logits", ...], "splits": {split: rows}, "inputs": {...}}
    <split>.tsv    one row per clip: clip_id, path, model_name, label, known, language,
                   language_seen, cell [, predicted] [, score_<name> ...]
    <split>.npz    "embeddings" float32 [n, E] and/or "logits" float32 [n, K], row-aligned with the TSV
    manifest.json  id (a digest of the files) and the ids of what the outputs were made from

``train`` holds the reference rows (clean clips of the known systems) that scorers are fitted
on; ``dev`` fits thresholds, calibrations and fusions; ``eval`` is only ever scored. Known-class
metrics, OOD scorers, thresholds, reports, maps, the summary and tracing read these files only.

A user's own model needs only ``clip_id`` and ``model_name`` per row (plus arrays and/or
``score_<name>`` columns): :func:`complete_rows` derives the label, known flag, language and cell
from ``class_names`` and the train rows.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetracing.data.protocols import language_of
from sourcetracing.errors import DataError, MissingInputError
from sourcetracing.layout import MANIFEST, OUTPUTS_META, ExperimentLayout, SystemLayout
from sourcetracing.provenance import atomic_dir, machine_description, write_manifest

CROSSFIT_FILE = "crossfit.csv"  # train-side cross-fitted evidence beside the splits (not a split)

KEY_COLUMNS = ["clip_id", "path", "model_name", "label", "known", "language", "language_seen", "cell"]
ARRAYS = ("embeddings", "logits")
SCORE_PREFIX = "score_"
SPLIT_ORDER = {"train": 0, "dev": 1, "eval": 2}
PASS_LOG = "SOURCETRACING_PASS_LOG"


def split_order(names) -> list[str]:
    """Splits in pipeline order (train, dev, eval, then others by name)."""
    return sorted(names, key=lambda s: (SPLIT_ORDER.get(s, 3), s))


def record_pass(system: str, split: str, rows: int) -> None:
    """Append one line per model pass over a split to ``$SOURCETRACING_PASS_LOG`` (when set)."""
    path = os.environ.get(PASS_LOG)
    if path:
        with open(path, "a") as fh:
            fh.write(f"{system}\t{split}\t{rows}\n")


def output_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The key columns of exported rows (plus ``version`` where a split holds several)."""
    cols = list(KEY_COLUMNS)
    if "version" in rows and rows["version"].nunique() > 1:
        cols.append("version")
    return rows[cols].reset_index(drop=True)


@dataclass(frozen=True)
class OutputsMeta:
    """The ``meta.json`` of an outputs folder, typed: what the system is and what it exported.

    The one reader of that file (besides :meth:`SystemOutputs.read`, which uses it): every other
    module asks this class, never the JSON.
    """

    folder: Path
    raw: dict

    @classmethod
    def read(cls, folder: str | Path, step: str = "the system's training or export step") -> OutputsMeta:
        """The meta of ``folder``; :class:`MissingInputError` naming ``step`` when it has none."""
        found = cls.find(folder)
        if found is None:
            raise MissingInputError(f"no system outputs in {Path(folder)}: run {step} first")
        return found

    @classmethod
    def find(cls, folder: str | Path) -> OutputsMeta | None:
        """The meta of ``folder``, None when the folder holds no outputs."""
        path = Path(folder) / OUTPUTS_META
        if not path.is_file():
            return None
        return cls(Path(folder), json.loads(path.read_text()))

    @classmethod
    def of(cls, sys_layout: SystemLayout) -> OutputsMeta | None:
        """The meta of a system's outputs (None without outputs)."""
        return cls.find(sys_layout.outputs)

    def get(self, key: str, default=None):
        """Any other recorded field (a kind's own record: the fusion's weights, the pooled system's k, ...)."""
        return self.raw.get(key, default)

    @property
    def system(self) -> str:
        return str(self.raw.get("system", self.folder.parent.name))

    @property
    def task(self) -> str | None:
        """The system kind that exported the outputs (None: a user's own outputs)."""
        task = self.raw.get("task")
        return None if task is None else str(task)

    @property
    def class_names(self) -> list[str]:
        return list(self.raw.get("class_names", []))

    @property
    def has(self) -> set[str]:
        """What every split carries: ``embeddings``, ``logits`` and/or ``scores``."""
        return set(self.raw.get("has", []))

    @property
    def reference(self) -> bool:
        """A reference system: reported against, never chosen on dev."""
        return bool(self.raw.get("reference", False))

    @property
    def machine(self) -> str | None:
        return self.raw.get("machine") or None

    @property
    def manifest(self) -> dict:
        """The outputs' manifest (id and what they were made from); empty when absent."""
        path = self.folder / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else {}


def systems_with(layout: ExperimentLayout, part: str) -> list[SystemLayout]:
    """Systems whose exported outputs carry ``part`` (``embeddings``, ``logits`` or ``scores``, as their
    ``meta.json`` lists under ``has``), sorted by name."""
    return [s for s in layout.systems() if part in OutputsMeta.read(s.outputs).has]


@dataclass
class SplitOutputs:
    """One split's rows and row-aligned arrays."""

    rows: pd.DataFrame
    embeddings: np.ndarray | None = None
    logits: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.rows = self.rows.reset_index(drop=True)
        for name in ARRAYS:
            arr = getattr(self, name)
            if arr is not None:
                arr = np.asarray(arr, dtype=np.float32)
                if arr.ndim != 2 or len(arr) != len(self.rows):
                    raise DataError(f"{name}: expected [{len(self.rows)}, dim] rows, got shape {arr.shape}")
                setattr(self, name, arr)

    @property
    def scores(self) -> dict[str, np.ndarray]:
        """Precomputed OOD scores (``score_<name>`` columns; higher = more likely OOD)."""
        cols = [c for c in self.rows.columns if c.startswith(SCORE_PREFIX)]
        return {c[len(SCORE_PREFIX) :]: self.rows[c].to_numpy(np.float64) for c in cols}

    @property
    def is_ood(self) -> np.ndarray:
        return ~self.rows["known"].to_numpy(bool)


@dataclass
class SystemOutputs:
    """A system's exported outputs for every split."""

    system: str
    class_names: list[str]
    splits: dict[str, SplitOutputs]
    meta: dict = field(default_factory=dict)
    folder: Path | None = None
    crossfit: pd.DataFrame | None = None  # train-side cross-fitted evidence (sourcetracing.ood.crossfit)

    @property
    def has(self) -> set[str]:
        """What every split carries: ``embeddings``, ``logits`` and ``scores``."""
        out = set()
        parts = list(self.splits.values())
        for name in ARRAYS:
            if parts and all(getattr(p, name) is not None for p in parts):
                out.add(name)
        if parts and all(p.scores for p in parts if len(p.rows)):
            out.add("scores")
        return out

    @property
    def manifest(self) -> dict:
        if self.folder is None or not (self.folder / MANIFEST).is_file():
            return {}
        return json.loads((self.folder / MANIFEST).read_text())

    @property
    def outputs_id(self) -> str:
        return str(self.manifest.get("id", ""))

    def split(self, name: str) -> SplitOutputs:
        if name not in self.splits:
            raise MissingInputError(
                f"{self.system}: no '{name}' split in its outputs ({sorted(self.splits)})"
            )
        return self.splits[name]

    def write(self, folder: str | Path, inputs: dict | None = None) -> dict:
        """Write the folder atomically (a killed export leaves the previous outputs); returns the manifest."""
        folder = Path(folder)
        with atomic_dir(folder) as tmp:
            for name, part in self.splits.items():
                rows = part.rows.copy()
                missing = [c for c in KEY_COLUMNS if c not in rows]
                if missing:
                    raise DataError(f"{self.system}/{name}: rows lack the columns {missing}")
                rows.to_csv(tmp / f"{name}.tsv", sep="\t", index=False, float_format="%.9g")
                arrays = {k: getattr(part, k) for k in ARRAYS if getattr(part, k) is not None}
                np.savez(tmp / f"{name}.npz", **arrays)
            if self.crossfit is not None:
                self.crossfit.to_csv(tmp / CROSSFIT_FILE, index=False, float_format="%.9g")
            meta = {
                **self.meta,
                "system": self.system,
                "class_names": list(self.class_names),
                "has": sorted(self.has),
                "splits": {k: len(v.rows) for k, v in self.splits.items()},
                "machine": self.meta.get("machine") or machine_description(),
            }
            (tmp / OUTPUTS_META).write_text(json.dumps(meta, indent=2, default=str))
            manifest = write_manifest(tmp, "outputs", inputs or {}, system=self.system)
        self.folder = folder
        return manifest

    @classmethod
    def read(cls, folder: str | Path, step: str = "the system's training or export step") -> SystemOutputs:
        """Read and validate an outputs folder."""
        folder = Path(folder)
        meta = OutputsMeta.read(folder, step).raw
        class_names = list(meta.get("class_names", []))
        splits = {}
        tsvs = {p.stem: p for p in folder.glob("*.tsv")}
        train_rows = None
        if "train" in tsvs:
            train_rows = pd.read_csv(tsvs["train"], sep="\t", keep_default_na=False, dtype={"clip_id": str})
        train_languages = (
            set(train_rows["language"]) if train_rows is not None and "language" in train_rows else None
        )
        for name in split_order(tsvs):
            rows = pd.read_csv(tsvs[name], sep="\t", keep_default_na=False, dtype={"clip_id": str})
            rows = complete_rows(rows, class_names, train_languages, f"{folder}/{name}.tsv")
            arrays = {}
            npz = folder / f"{name}.npz"
            if npz.is_file():
                with np.load(npz, allow_pickle=False) as data:
                    arrays = {k: data[k] for k in ARRAYS if k in data.files}
            try:
                splits[name] = SplitOutputs(rows, **arrays)
            except DataError as err:
                raise DataError(f"{folder}/{name}: {err}") from None
        if not splits:
            raise DataError(f"{folder}: {OUTPUTS_META} but no <split>.tsv files")
        crossfit = None
        if (folder / CROSSFIT_FILE).is_file():
            crossfit = pd.read_csv(folder / CROSSFIT_FILE, keep_default_na=False, dtype=str)
            for col in ("auroc", "n_unseen", "n_known"):
                crossfit[col] = pd.to_numeric(crossfit[col], errors="coerce")  # "" = NaN
        return cls(str(meta.get("system", folder.parent.name)), class_names, splits, meta, folder, crossfit)


def complete_rows(
    rows: pd.DataFrame, class_names: list[str], train_languages: set[str] | None, where: str = "rows"
) -> pd.DataFrame:
    """Fill in the key columns a drop-in file may leave out, and normalise their types.

    Needs ``clip_id`` and ``model_name``; ``label``/``known`` follow from ``class_names``,
    ``language`` from the path (``./fake/<lang>/...``), ``language_seen`` from the train rows' languages.
    """
    rows = rows.copy()
    for col in ("clip_id", "model_name"):
        if col not in rows:
            raise DataError(f"{where}: a '{col}' column is required")
    if "path" not in rows:
        rows["path"] = rows["clip_id"]
    index = {name: i for i, name in enumerate(class_names)}
    rows["label"] = rows["model_name"].map(lambda m: index.get(m, -1)).astype(int)
    rows["known"] = rows["label"] >= 0
    if "language" not in rows:
        rows["language"] = rows["path"].map(language_of)
    if train_languages is None:
        train_languages = set(rows.loc[rows["known"], "language"])
    if "language_seen" in rows:
        rows["language_seen"] = rows["language_seen"].astype(str).str.lower() == "true"
    else:
        rows["language_seen"] = rows["language"].isin(train_languages)
    lang = np.where(rows["language_seen"], "seen_lang", "unseen_lang")
    model = np.where(rows["known"], "seen_model", "unseen_model")
    rows["cell"] = pd.Series(lang, index=rows.index) + "/" + pd.Series(model, index=rows.index)
    for col in rows.columns:
        if col.startswith(SCORE_PREFIX):
            rows[col] = pd.to_numeric(rows[col], errors="raise")
    return rows
