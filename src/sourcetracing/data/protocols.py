"""MLAAD source-tracing protocols: reading the split CSVs, the label map, and the fine-grained cells.

A protocol is a CSV with a ``path,model_name`` header (extra columns are kept); paths look like
``./fake/<lang>/<model_dir>/<file>.wav`` and are relative to the MLAAD root. The label map is built
from the train split alone: its systems, sorted by name, are the *known* classes; every other
system is out-of-distribution (OOD).

Fine-grained cells (language seen/unseen x model seen/unseen): the MLAAD v5 protocol zip ships a
``fine/`` folder with one file per split and cell, named
``<split>___lang_{seen,not_seen}___model_{seen,not_seen}.csv`` (same ``path,model_name`` format; the
``<split>`` part is the stem of the split's CSV, e.g. ``dev`` for ``dev.csv``). When the protocol
folder holds such files for a split, its ``cell`` column comes from them and ``cell_source`` says
``official``; otherwise the cell is derived from the train languages and the label map
(``cell_source`` = ``derived``).

Label level (``data.label``): ``system`` (the default) makes each protocol ``model_name`` a class.
``architecture`` makes each system's architecture the class: after reading, ``model_name`` holds
the architecture and a ``system`` column keeps the protocol's system, so the label map, known /
unseen (an architecture is known when any of its systems is in train), training, judging and
tracing all work on architectures unchanged. The architecture of a system comes from
``data.label_map_csv`` (columns ``system,architecture``, e.g. the ``systems.csv`` that
``scripts/make_protocols.py`` writes) or else from the MLAAD ``meta.csv`` of each system folder.
At the architecture level the official ``fine/`` cells (made per system) are not used: cells are
derived.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pandas as pd

from sourcetracing.data.mlaad_meta import META_FILE, read_meta
from sourcetracing.errors import DataError, MissingInputError
from sourcetracing.layout import LABEL_ASSIGNMENT, LABEL_MAP

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "model_name")
LABEL_LEVELS = ("system", "architecture")
SYSTEM_COLUMN = "system"  # the protocol's system, kept beside the class name in model_name
_LANG_RE = re.compile(r"^(?:\./)?fake/([^/]+)/")
FINE_DIR = "fine"
# (language part, model part) of an official fine/ file name -> the toolkit's cell name
FINE_CELLS = {
    ("lang_seen", "model_seen"): "seen_lang/seen_model",
    ("lang_seen", "model_not_seen"): "seen_lang/unseen_model",
    ("lang_not_seen", "model_seen"): "unseen_lang/seen_model",
    ("lang_not_seen", "model_not_seen"): "unseen_lang/unseen_model",
}


class ProtocolError(DataError):
    """A protocol file is missing or malformed."""


def language_of(path: str) -> str:
    """The language code of an MLAAD path (``./fake/<lang>/...``), or ``"unknown"``.

    >>> language_of("./fake/de/tts_models_de_thorsten_vits/x.wav")
    'de'
    >>> language_of("other/file.wav")
    'unknown'
    """
    match = _LANG_RE.match(path.replace("\\", "/"))
    return match.group(1) if match else "unknown"


def clip_id_of(path: str) -> str:
    """A normalised clip id: the protocol path without a leading ``./``.

    >>> clip_id_of("./fake/en/m/a.wav")
    'fake/en/m/a.wav'
    """
    return str(PurePosixPath(path.replace("\\", "/"))).removeprefix("./")


def read_protocol(csv_path: str | Path, quiet: bool = False) -> pd.DataFrame:
    """Read one protocol CSV; drop duplicate rows with a warning that counts them.

    Returns a frame with the original columns plus ``clip_id`` and ``language``. ``quiet`` logs
    the dropped duplicates at INFO level instead (for files whose duplicates were already reported).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ProtocolError(f"protocol not found: {csv_path}")
    try:
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ProtocolError(f"{csv_path}: not a readable CSV ({err})") from err
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ProtocolError(
            f"{csv_path}: missing column(s) {missing}; expected a header with {list(REQUIRED_COLUMNS)}"
        )
    df["path"] = df["path"].str.strip()
    df["model_name"] = df["model_name"].str.strip()
    empty = (df["path"] == "") | (df["model_name"] == "")
    if empty.any():
        first = int(empty.idxmax()) + 2  # +1 header, +1 one-based
        raise ProtocolError(
            f"{csv_path}: {int(empty.sum())} row(s) with an empty path or model_name (first on line {first})"
        )
    n_before = len(df)
    df = df.drop_duplicates(subset=["path", "model_name"]).reset_index(drop=True)
    dropped = n_before - len(df)
    if dropped:
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "%s: dropped %d duplicate row(s)",
            csv_path.name,
            dropped,
        )
    df["clip_id"] = df["path"].map(clip_id_of)
    clash = df["clip_id"].duplicated(keep=False)
    if clash.any():
        example = df.loc[clash, "clip_id"].iloc[0]
        raise ProtocolError(
            f"{csv_path}: {int(clash.sum())} rows give one path two different systems, e.g. {example}"
        )
    df["language"] = df["path"].map(language_of)
    return df


@dataclass
class LabelMap:
    """Known systems (the train split's, sorted) and the OOD systems seen elsewhere."""

    known: list[str]
    ood: list[str] = field(default_factory=list)
    level: str = "system"  # what a class is: a system, or an architecture (data.label)
    members: dict[str, list[str]] = field(default_factory=dict)  # architecture -> its systems

    @classmethod
    def from_train(
        cls, train: pd.DataFrame, others: Iterable[pd.DataFrame] = (), level: str = "system"
    ) -> LabelMap:
        others = list(others)
        known = sorted(set(train["model_name"]))
        seen = set(known)
        ood = sorted({m for df in others for m in df["model_name"]} - seen)
        members: dict[str, set[str]] = {}
        if level != "system":
            for df in [train, *others]:
                for cls_name, system in zip(df["model_name"], df[SYSTEM_COLUMN], strict=True):
                    members.setdefault(cls_name, set()).add(system)
        return cls(known=known, ood=ood, level=level, members={k: sorted(v) for k, v in members.items()})

    @property
    def num_classes(self) -> int:
        return len(self.known)

    def label(self, system: str) -> int:
        """The class id of a known system, -1 for an OOD system."""
        return self._index.get(system, -1)

    @property
    def _index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.known)}

    def digest(self) -> str:
        """A digest of the known systems in order (what a checkpoint's classes depend on)."""
        from sourcetracing.provenance import data_digest

        return data_digest(self.known if self.level == "system" else [self.level, self.known])

    def to_dict(self) -> dict:
        """Plain lists, safe to store in a checkpoint loaded with ``weights_only=True``."""
        return {"known": list(self.known), "ood": list(self.ood), "level": self.level}

    @classmethod
    def from_dict(cls, data: Mapping) -> LabelMap:
        return cls(
            known=list(data["known"]), ood=list(data.get("ood", [])), level=str(data.get("level", "system"))
        )

    def check_same_known(self, other: LabelMap, what: str = "checkpoint") -> None:
        """Raise a clear error when two label maps disagree on the known classes."""
        if self.known != other.known:
            only_a = sorted(set(self.known) - set(other.known))[:5]
            only_b = sorted(set(other.known) - set(self.known))[:5]
            raise ProtocolError(
                f"label map mismatch between the experiment ({len(self.known)} known systems) and the {what} "
                f"({len(other.known)}): only in experiment {only_a}, only in {what} {only_b}. "
                "Was the model trained on another train split?"
            )

    def write(self, exp_dir: str | Path) -> None:
        """Write ``label_assignment.txt`` (the original layout) and ``label_map.csv``.

        ``label_map.csv`` has a ``level`` column (system or architecture) and, at the architecture
        level, ``members``: the systems of each class, ``;``-separated.
        """
        exp_dir = Path(exp_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"{name.ljust(50)}|{str(i).ljust(3)}|ID" for i, name in enumerate(self.known)]
        offset = len(self.known)
        lines += [f"{name.ljust(50)}|{str(offset + i).ljust(3)}|OOD" for i, name in enumerate(self.ood)]
        (exp_dir / LABEL_ASSIGNMENT).write_text("\n".join(lines) + "\n")
        with open(exp_dir / LABEL_MAP, "w", newline="") as fh:
            writer = csv.writer(fh)
            extra = ["members"] if self.level != "system" else []
            writer.writerow(["system", "system_id", "label", "status", "level", *extra])

            def more(name: str) -> list[str]:
                return [";".join(self.members.get(name, []))] if extra else []

            for i, name in enumerate(self.known):
                writer.writerow([name, i, i, "known", self.level, *more(name)])
            for i, name in enumerate(self.ood):
                writer.writerow([name, offset + i, -1, "ood", self.level, *more(name)])

    @classmethod
    def read(cls, exp_dir: str | Path) -> LabelMap:
        path = Path(exp_dir) / LABEL_MAP
        if not path.is_file():
            raise MissingInputError(f"{path} not found: run scripts/preprocess_dataset.py --check first")
        df = pd.read_csv(path, keep_default_na=False)
        known = df[df["status"] == "known"].sort_values("label")["system"].tolist()
        ood = df[df["status"] == "ood"]["system"].tolist()
        levels = set(df["level"]) - {""} if "level" in df else set()
        level = str(levels.pop()) if len(levels) == 1 else "system"
        members = {}
        if "members" in df:
            members = {
                str(n): str(m).split(";") for n, m in zip(df["system"], df["members"], strict=True) if m
            }
        return cls(known=known, ood=ood, level=level, members=members)


def fine_file_name(split_stem: str, lang_part: str, model_part: str) -> str:
    """The official name of one fine-grained cell file.

    >>> fine_file_name("eval", "lang_not_seen", "model_seen")
    'eval___lang_not_seen___model_seen.csv'
    """
    return f"{split_stem}___{lang_part}___{model_part}.csv"


def read_fine_cells(protocol_dir: str | Path, split_file: str) -> pd.Series | None:
    """The official cell of each clip of one split (index ``clip_id``), or None without ``fine/`` files.

    Reads ``<protocol_dir>/fine/<stem>___lang_*___model_*.csv`` for the split file's stem. A clip
    listed in two cell files is an error; missing cell files are named in a warning.
    """
    fine = Path(protocol_dir) / FINE_DIR
    if not fine.is_dir():
        return None
    stem = Path(split_file).stem
    cells: list[pd.Series] = []
    missing: list[str] = []
    for (lang_part, model_part), cell in FINE_CELLS.items():
        path = fine / fine_file_name(stem, lang_part, model_part)
        if not path.is_file():
            missing.append(path.name)
            continue
        df = read_protocol(path, quiet=True)
        cells.append(pd.Series(cell, index=df["clip_id"].to_numpy(), dtype=object))
    if not cells:
        return None
    if missing:
        log.warning("%s: %s missing; clips of those cells get derived cells", fine, ", ".join(missing))
    official = pd.concat(cells)
    twice = official.index.duplicated(keep=False)
    if twice.any():
        clips = official.index[twice]
        raise ProtocolError(
            f"{fine}: {clips.nunique()} clip(s) of split '{stem}' are listed in more than one cell file, e.g. {clips[0]}"
        )
    return official


def annotate(
    df: pd.DataFrame,
    split: str,
    label_map: LabelMap,
    train_languages: set[str],
    official_cells: pd.Series | None = None,
) -> pd.DataFrame:
    """Add ``split``, ``label`` (-1 for OOD), ``known``, ``language_seen``, ``cell`` and ``cell_source``.

    ``cell`` is the fine-grained view: ``{seen,unseen}_lang/{seen,unseen}_model``. It is taken from
    ``official_cells`` (clip id -> cell, see :func:`read_fine_cells`) where that lists the clip
    (``cell_source`` = ``official``) and derived from ``train_languages`` and the label map otherwise
    (``derived``). ``known`` and ``label`` always follow the label map.
    """
    out = df.copy()
    out["split"] = split
    out["label"] = out["model_name"].map(label_map.label).astype(int)
    out["known"] = out["label"] >= 0
    out["language_seen"] = out["language"].isin(train_languages)
    lang = out["language_seen"].map({True: "seen_lang", False: "unseen_lang"})
    model = out["known"].map({True: "seen_model", False: "unseen_model"})
    derived = lang + "/" + model
    out["cell"] = derived
    out["cell_source"] = "derived"
    if official_cells is not None:
        official = out["clip_id"].map(official_cells)
        listed = official.notna()
        out.loc[listed, "cell"] = official[listed]
        out.loc[listed, "cell_source"] = "official"
        log.info(
            "%s: fine-grained cells of %d of %d clips taken from the official fine/ files",
            split,
            int(listed.sum()),
            len(out),
        )
        if (~listed).any():
            log.warning(
                "%s: %d clip(s) are in no fine/ cell file (first: %s); their cells are derived",
                split,
                int((~listed).sum()),
                out.loc[~listed, "path"].iloc[0],
            )
        extra = ~official_cells.index.isin(out["clip_id"])
        if extra.any():
            log.warning(
                "%s: %d clip(s) of the fine/ cell files are not in the split (first: %s); ignored",
                split,
                int(extra.sum()),
                official_cells.index[extra][0],
            )
        differ = listed & (official != derived)
        if differ.any():
            systems = sorted(set(out.loc[differ, "model_name"]))
            log.warning(
                "%s: the official fine/ cell differs from the derived one for %d clip(s) of %d system(s), e.g. %s "
                "(official cell kept; known/unseen still follows the train split)",
                split,
                int(differ.sum()),
                len(systems),
                systems[0],
            )
    return out


def load_protocols(protocol_dir: str | Path, splits: Mapping[str, str]) -> dict[str, pd.DataFrame]:
    """Read every split named in ``splits`` (split name -> CSV file name) from ``protocol_dir``."""
    protocol_dir = Path(protocol_dir)
    if "train" not in splits:
        raise ProtocolError(
            "the config's data.splits must name a 'train' split (the label map comes from it)"
        )
    return {name: read_protocol(protocol_dir / fname) for name, fname in splits.items()}


def label_level(cfg) -> str:
    """The config's ``data.label`` (``system`` when the key is absent), checked."""
    level = str(cfg.data.get("label", "system") or "system")
    if level not in LABEL_LEVELS:
        raise ProtocolError(f"data.label must be one of {', '.join(LABEL_LEVELS)}, got {level!r}")
    return level


def read_architecture_csv(path: str | Path) -> dict[str, str]:
    """``system -> architecture`` from a CSV with ``system`` and ``architecture`` columns (extra columns ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ProtocolError(f"data.label_map_csv: {path} not found")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ProtocolError(f"data.label_map_csv: {path} is not a readable CSV ({err})") from err
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in ("system", "architecture") if c not in df.columns]
    if missing:
        raise ProtocolError(
            f"data.label_map_csv: {path} lacks the column(s) {missing} (needs system,architecture)"
        )
    mapping: dict[str, str] = {}
    for system, arch in zip(df["system"].str.strip(), df["architecture"].str.strip(), strict=True):
        if not system or not arch:
            continue
        if ";" in arch:
            raise ProtocolError(
                f"data.label_map_csv: {path} gives system {system} several architectures ({arch})"
            )
        if mapping.setdefault(system, arch) != arch:
            raise ProtocolError(
                f"data.label_map_csv: {path} gives system {system} two architectures ({mapping[system]}, {arch})"
            )
    return mapping


def architectures_from_meta(root: str | Path, frames: Iterable[pd.DataFrame]) -> dict[str, str]:
    """``system -> architecture`` from the MLAAD ``meta.csv`` of each system folder the protocols use.

    A system's architecture is the one most of its metadata rows name (the folder's file is read once).
    """
    folders: dict[str, set[str]] = {}
    for df in frames:
        for path, system in zip(df["path"], df["model_name"], strict=True):
            folder = str(PurePosixPath(clip_id_of(path)).parent)
            folders.setdefault(folder, set()).add(system)
    votes: dict[str, Counter] = {}
    for folder, systems in folders.items():
        meta = Path(root) / folder / META_FILE
        if not meta.is_file():
            continue
        _, rows = read_meta(meta)
        for row in rows:
            system, arch = row.get("model_name", ""), row.get("architecture", "")
            if arch and (system in systems or (not system and len(systems) == 1)):
                votes.setdefault(system or next(iter(systems)), Counter())[arch] += 1
    return {system: max(sorted(c), key=c.__getitem__) for system, c in votes.items()}


def apply_label_level(cfg, raw: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Keep each row's protocol system in ``system``; at the architecture level ``model_name`` becomes its architecture.

    Raises :class:`ProtocolError` naming the systems without an architecture.
    """
    level = label_level(cfg)
    out = {}
    for name, df in raw.items():
        df = df.copy()
        df[SYSTEM_COLUMN] = df["model_name"]
        df.attrs["label_level"] = level
        out[name] = df
    if level == "system":
        return out
    source = cfg.data.get("label_map_csv")
    if source:
        mapping, where = read_architecture_csv(source), f"data.label_map_csv {source}"
    else:
        mapping, where = (
            architectures_from_meta(cfg.data.root, raw.values()),
            f"the meta.csv files under {cfg.data.root}",
        )
    systems = sorted({m for df in raw.values() for m in df["model_name"]})
    missing = [m for m in systems if m not in mapping]
    if missing:
        raise ProtocolError(
            f"data.label=architecture: no architecture for {len(missing)} of {len(systems)} system(s) in {where}, "
            f"e.g. {missing[0]}; give data.label_map_csv (a CSV with columns system,architecture)"
        )
    for df in out.values():
        df["model_name"] = df[SYSTEM_COLUMN].map(mapping)
    return out


def prepare_splits(cfg) -> tuple[dict[str, pd.DataFrame], LabelMap]:
    """Read the config's protocols, build the label map from train and annotate every split.

    Cells come from ``<data.protocols>/fine/`` where it has files for a split (see the module notes).
    With ``data.label: architecture`` the classes are architectures (see :func:`apply_label_level`).

    Raises :class:`ProtocolError` for an empty train split, a path that leaves ``data.root`` or a
    system without an architecture.
    """
    raw = load_protocols(cfg.data.protocols, cfg.data.splits)
    if raw["train"].empty:
        raise ProtocolError(
            f"{Path(cfg.data.protocols) / cfg.data.splits['train']}: the train split has no rows "
            "(the label map comes from it)"
        )
    for name, df in raw.items():
        check_inside_root(df, cfg.data.root, f"{name} split")
    raw = apply_label_level(cfg, raw)
    level = label_level(cfg)
    others = [df for name, df in raw.items() if name != "train"]
    label_map = LabelMap.from_train(raw["train"], others, level=level)
    train_languages = set(raw["train"]["language"])

    def cells(name: str) -> pd.Series | None:
        if level != "system":  # the official cells say whether a *system* was seen in train
            return None
        return read_fine_cells(cfg.data.protocols, cfg.data.splits[name])

    splits = {}
    for name, df in raw.items():
        splits[name] = annotate(df, name, label_map, train_languages, cells(name))
        splits[name].attrs["label_level"] = level
    return splits, label_map


def check_inside_root(df: pd.DataFrame, root: str | Path, what: str) -> None:
    """Every protocol path must stay inside the data root: no absolute paths, no ``..`` escapes.

    >>> check_inside_root(pd.DataFrame({"path": ["./fake/en/m/a.wav"]}), "/data", "train")
    >>> check_inside_root(pd.DataFrame({"path": ["../musan/noise/x.wav"]}), "/data", "train")
    Traceback (most recent call last):
    ...
    sourcetracing.data.protocols.ProtocolError: train: 1 path(s) point outside data.root /data, e.g. ../musan/noise/x.wav
    """
    bad = [p for p in df["path"] if not _inside(p)]
    if bad:
        raise ProtocolError(f"{what}: {len(bad)} path(s) point outside data.root {root}, e.g. {bad[0]}")


def _inside(path: str) -> bool:
    """Relative, without ``..`` and without a drive letter."""
    posix = PurePosixPath(path.replace("\\", "/"))
    return not (posix.is_absolute() or ".." in posix.parts or (len(path) > 1 and path[1] == ":"))


def protocol_digest(df: pd.DataFrame) -> str:
    """A digest of a split's protocol rows (path and protocol system, in order; the same at every label level)."""
    from sourcetracing.provenance import data_digest

    systems = df[SYSTEM_COLUMN] if SYSTEM_COLUMN in df else df["model_name"]
    return data_digest([df["path"].tolist(), systems.tolist()])


def split_summary(df: pd.DataFrame) -> dict[str, int]:
    """Counts printed by the data check for one annotated split (classes named by the label level)."""
    level = df.attrs.get("label_level", "system")
    systems = df[SYSTEM_COLUMN] if SYSTEM_COLUMN in df else df["model_name"]
    classes = {"architectures": df["model_name"].nunique()} if level != "system" else {}
    return {
        "clips": len(df),
        "systems": systems.nunique(),
        **classes,
        f"known_{level}s": df.loc[df["known"], "model_name"].nunique(),
        f"unseen_{level}s": df.loc[~df["known"], "model_name"].nunique(),
        "known_clips": int(df["known"].sum()),
        "unseen_clips": int((~df["known"]).sum()),
        "languages": df["language"].nunique(),
        "unseen_languages": df.loc[~df["language_seen"], "language"].nunique(),
    }


def missing_files(df: pd.DataFrame, root: str | Path) -> list[str]:
    """Protocol paths that do not exist under the MLAAD root."""
    root = Path(root)
    return [p for p in df["path"] if not (root / p).is_file()]
