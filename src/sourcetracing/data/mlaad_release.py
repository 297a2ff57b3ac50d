"""Source-tracing protocols for any MLAAD release (v5 and newer), in the v5 protocol format.

Input layouts
-------------
Both layouts hold the synthetic clips as ``fake/<lang>/<system_folder>/<file>.wav`` with one
metadata file ``meta.csv`` per system folder:

* ``tree``: the unpacked release archive (``mlaad_v5.zip``), the folder that holds ``fake/``.
  System folders are the model name with ``/`` replaced by ``_``
  (``tts_models_en_ljspeech_vits``).
* ``hf``: the Hugging Face copy (dataset ``mueller91/MLAAD``), either a ``snapshot_download``
  folder or a hub cache folder (``datasets--mueller91--MLAAD`` with ``snapshots/<revision>/``,
  whose files are links into ``blobs/``). It adds ``original/<lang>/...`` (the bona fide M-AILABS
  speech, not a synthesizer: skipped) and newer system folders are display names that may hold
  spaces and commas (``Resemble.ai (April 12th, 2025)``).

``meta.csv`` format (read from public sources, not from MLAAD's own documentation, which we
could not reach here): pipe-separated, no quoting, header
``path|original_file|language|is_original_language|duration|training_data|model_name|architecture|transcript``
in v5; later releases append ``reference_speaker`` and a few folders lack ``model_name``. ``path``
is ``./fake/<lang>/<folder>/<file>.wav``; ``model_name`` keeps its slashes
(``tts_models/multilingual/multi-dataset/xtts_v2``); ``architecture`` is e.g. ``xtts_v2``;
transcripts can be very long and may contain quote characters. Sources: the notebook
``mlaad_v5/0_preprocess.ipynb`` of github.com/josebeo2016/vib-mlaad5-source-tracing (reads the
154 v5 files with ``sep='|'`` and ``QUOTE_NONE``, prints the columns above), and several public
MLAAD loaders that document the header with ``reference_speaker`` and read Hugging Face trees
of per-folder ``meta.csv`` files, one of which notes that about 1,000 v5 rows carry a wrong
language in ``path`` (``zh`` for the ``zh-cn`` folder). So the folder a file lies in is trusted,
not the language written in ``path``: the protocol path is rebuilt from the folder and the file
name. A comma- or tab-separated ``meta.csv`` is read too (the separator is taken from the header).

Output
------
``train.csv``, ``dev.csv``, ``eval.csv`` with the header ``path,model_name`` and paths
``./fake/<lang>/<folder>/<file>.wav`` relative to the release root (what ``data.root`` must
name), ``fine/<split>___lang_{seen,not_seen}___model_{seen,not_seen}.csv`` cells as in the
official v5 zip, ``systems.csv`` (each system's role, architecture and clips per split),
``summary.csv`` and ``summary.md``. The same inputs and seed give byte-identical files.

Split plan (:func:`plan_splits`): systems are drawn, with the seed, into *known* (train),
*dev-unseen* and *eval-unseen* (disjoint). A share of the languages is held out of train
(each known system keeps at least one train language); a known system's clips in train
languages are shared out over train/dev/eval by clip shares, its clips in held-out languages
over dev/eval only. Every clip of a used system lands in exactly one split.

:func:`extend_protocols` keeps existing (v5) protocols byte for byte and adds the systems a newer
release has and they lack, as unseen systems of eval (or of dev and eval).
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from sourcetracing.data.mlaad_meta import META_FILE, ReleaseError, read_meta
from sourcetracing.data.protocols import FINE_CELLS, FINE_DIR, fine_file_name, read_protocol
from sourcetracing.errors import WouldOverwriteError

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "tree", "hf")
SPLITS = ("train", "dev", "eval")
ROLES = ("known", "dev_unseen", "eval_unseen")
CLIP_COLUMNS = ["path", "model_name", "architecture", "language", "folder"]
SUMMARY_COLUMNS = [
    "split",
    "clips",
    "systems",
    "known_systems",
    "unseen_systems",
    "known_clips",
    "unseen_clips",
    "languages",
    "unseen_languages",
]


@dataclass
class ScanReport:
    """What scanning a release found besides the clips (printed and written to the summary)."""

    root: Path
    layout: str
    folders: int = 0
    meta_files: int = 0
    folders_without_meta: list[str] = field(default_factory=list)
    missing_audio: int = 0
    unlisted_audio: int = 0
    duplicate_rows: int = 0
    bona_fide_skipped: int = 0
    first_missing: str = ""

    def notes(self) -> list[str]:
        """One line per finding worth a user's attention."""
        lines = [f"{self.folders} system folder(s), {self.meta_files} with {META_FILE}"]
        if self.folders_without_meta:
            lines.append(
                f"{len(self.folders_without_meta)} folder(s) without {META_FILE} (system named after the folder, "
                f"architecture unknown), e.g. {self.folders_without_meta[0]}"
            )
        if self.missing_audio:
            lines.append(
                f"{self.missing_audio} metadata row(s) name a missing wav file (left out), e.g. {self.first_missing}"
            )
        if self.unlisted_audio:
            lines.append(f"{self.unlisted_audio} wav file(s) not in their folder's {META_FILE} (kept)")
        if self.duplicate_rows:
            lines.append(f"{self.duplicate_rows} duplicate metadata row(s) (kept once)")
        if self.bona_fide_skipped:
            lines.append(
                f"{self.bona_fide_skipped} bona fide file(s) under original/ (not a system: skipped)"
            )
        return lines


# --------------------------------------------------------------------------------------------- scan


def resolve_root(root: str | Path, layout: str = "auto") -> tuple[Path, str]:
    """The folder that holds ``fake/`` and the layout name (``tree`` or ``hf``).

    A hub cache folder (with ``snapshots/``) resolves to its one snapshot holding ``fake/``.
    """
    if layout not in LAYOUTS:
        raise ReleaseError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    root = Path(root)
    if not root.is_dir():
        raise ReleaseError(f"MLAAD release folder not found: {root}")
    snapshots = root / "snapshots"
    if layout in ("auto", "hf") and not (root / "fake").is_dir() and snapshots.is_dir():
        found = sorted(p for p in snapshots.iterdir() if (p / "fake").is_dir())
        if len(found) != 1:
            names = ", ".join(p.name for p in found) or "none"
            raise ReleaseError(
                f"{snapshots}: expected one snapshot holding fake/, found {len(found)} ({names}); "
                "pass the snapshot folder itself as --root"
            )
        return found[0], "hf"
    if not (root / "fake").is_dir():
        raise ReleaseError(
            f"{root}: no fake/ folder (expected fake/<lang>/<system_folder>/*.wav with {META_FILE})"
        )
    if layout == "auto":
        hf_marks = (
            (root / "original").is_dir() or (root / ".gitattributes").is_file() or (root / ".cache").is_dir()
        )
        layout = "hf" if hf_marks else "tree"
    return root, layout


def _wav_names(folder: Path) -> list[str]:
    """Names of the wav files directly in a folder (links to files count)."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.name.lower().endswith(".wav") and e.is_file())


def _subdirs(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(
            (Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")), key=lambda p: p.name
        )


def scan_release(
    root: str | Path, layout: str = "auto", check_audio: bool = True
) -> tuple[pd.DataFrame, ScanReport]:
    """Every synthetic clip of a release: one row per clip with :data:`CLIP_COLUMNS`.

    ``path`` is the protocol path ``./fake/<lang>/<folder>/<file>.wav``; ``language`` the
    folder's language; ``model_name`` and ``architecture`` come from the folder's ``meta.csv``.
    With ``check_audio``, metadata rows whose wav file is absent are left out (and counted) and
    wav files the metadata does not list are added with the folder's system.
    """
    data_root, layout = resolve_root(root, layout)
    report = ScanReport(root=data_root, layout=layout)
    if (data_root / "original").is_dir():
        report.bona_fide_skipped = sum(
            1 for _, _, files in os.walk(data_root / "original") for f in files if f.lower().endswith(".wav")
        )
    records: list[tuple[str, str, str, str, str]] = []
    for lang_dir in _subdirs(data_root / "fake"):
        lang = lang_dir.name
        for folder in _subdirs(lang_dir):
            report.folders += 1
            rel_folder = f"fake/{lang}/{folder.name}"
            wavs = _wav_names(folder) if check_audio or not (folder / META_FILE).is_file() else []
            on_disk = set(wavs)
            meta = folder / META_FILE
            if not meta.is_file():
                report.folders_without_meta.append(rel_folder)
                records += [(f"./{rel_folder}/{name}", folder.name, "", lang, rel_folder) for name in wavs]
                continue
            report.meta_files += 1
            _, rows = read_meta(meta)
            names = [r.get("model_name", "") for r in rows if r.get("model_name", "")]
            fallback = max(sorted(set(names)), key=names.count) if names else folder.name
            archs = [r.get("architecture", "") for r in rows if r.get("architecture", "")]
            fallback_arch = max(sorted(set(archs)), key=archs.count) if archs else ""
            listed: set[str] = set()
            for row in rows:
                name = PurePosixPath(row["path"].replace("\\", "/")).name
                if not name:
                    continue
                if name in listed:
                    report.duplicate_rows += 1
                    continue
                if check_audio and name not in on_disk:
                    report.missing_audio += 1
                    report.first_missing = report.first_missing or f"{rel_folder}/{name}"
                    continue
                listed.add(name)
                model = row.get("model_name", "") or fallback
                arch = row.get("architecture", "") or fallback_arch
                records.append((f"./{rel_folder}/{name}", model, arch, lang, rel_folder))
            unlisted = [n for n in wavs if n not in listed]
            report.unlisted_audio += len(unlisted)
            records += [(f"./{rel_folder}/{n}", fallback, fallback_arch, lang, rel_folder) for n in unlisted]
    clips = pd.DataFrame.from_records(records, columns=CLIP_COLUMNS)
    if clips.empty:
        raise ReleaseError(f"{data_root}: no synthetic clips under fake/<lang>/<system_folder>/")
    clips = clips.sort_values("path", kind="stable").reset_index(drop=True)
    for line in report.notes()[1:]:
        log.log(
            logging.INFO if line.startswith(f"{report.bona_fide_skipped} bona fide") else logging.WARNING,
            "%s",
            line,
        )
    return clips, report


# --------------------------------------------------------------------------------------------- plan


@dataclass
class SplitOptions:
    """How :func:`plan_splits` draws systems, languages and clips.

    ``known``, ``dev_unseen`` and ``eval_unseen`` are system counts (>= 1) or shares of all
    systems (0 < x < 1); ``eval_unseen=None`` takes every system left. ``clip_shares`` shares a
    known system's clips in train languages over train/dev/eval; ``unseen_languages`` is the
    count or share of languages held out of train.
    """

    seed: int = 0
    known: float = 0.3
    dev_unseen: float = 0.2
    eval_unseen: float | None = None
    clip_shares: tuple[float, float, float] = (0.5, 0.2, 0.3)
    unseen_languages: float = 0.25
    max_clips_per_folder: int | None = None
    exclude: tuple[str, ...] = ()
    force_known: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise :class:`ReleaseError` for options that cannot work."""
        shares = self.clip_shares
        if len(shares) != 3 or any(s < 0 for s in shares) or abs(sum(shares) - 1) > 1e-6 or shares[0] <= 0:
            raise ReleaseError(
                f"clip shares must be three non-negative numbers (train,dev,eval) summing to 1 with train > 0, got {shares}"
            )
        for name in ("known", "dev_unseen", "eval_unseen", "unseen_languages"):
            value = getattr(self, name)
            if value is not None and (value < 0 or (value > 1 and value != int(value))):
                raise ReleaseError(f"{name} must be a share in [0, 1] or a whole count, got {value}")
        if self.max_clips_per_folder is not None and self.max_clips_per_folder < 1:
            raise ReleaseError(f"max clips per folder must be at least 1, got {self.max_clips_per_folder}")


def _count(spec: float, total: int) -> int:
    """A count (spec >= 1) or a share of ``total`` (0 <= spec < 1; a positive share gives at least 1)."""
    if spec >= 1:
        return int(spec)
    return 0 if spec <= 0 else max(1, int(round(spec * total)))


def _share_out(n: int, shares: Sequence[float]) -> list[int]:
    """Split ``n`` items by shares summing to 1 (largest remainders; ties to the earlier part).

    >>> _share_out(5, (0.0, 0.4, 0.6))
    [0, 2, 3]
    """
    exact = [n * s for s in shares]
    counts = [int(np.floor(x)) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


@dataclass
class SplitPlan:
    """The drawn roles, languages and the clips of each split (``assignments`` has a ``split`` column)."""

    assignments: pd.DataFrame
    roles: dict[str, str]
    train_languages: set[str]
    heldout_languages: set[str]
    unused_systems: list[str]
    options: SplitOptions


def plan_splits(clips: pd.DataFrame, options: SplitOptions | None = None) -> SplitPlan:
    """Draw known / dev-unseen / eval-unseen systems and held-out languages; assign every clip one split."""
    options = options or SplitOptions()
    options.check()
    rng = np.random.default_rng(options.seed)
    excluded = set(options.exclude)
    unknown = sorted((excluded | set(options.force_known)) - set(clips["model_name"]))
    if unknown:
        raise ReleaseError(f"system(s) not in the release: {', '.join(unknown[:5])}")
    clash = sorted(excluded & set(options.force_known))
    if clash:
        raise ReleaseError(f"system(s) both excluded and forced known: {', '.join(clash)}")
    clips = clips[~clips["model_name"].isin(excluded)]
    if options.max_clips_per_folder is not None:
        clips = _cap_folders(clips, options.max_clips_per_folder, rng)
    systems = sorted(set(clips["model_name"]))
    n = len(systems)
    n_known = max(_count(options.known, n), len(options.force_known))
    n_dev = _count(options.dev_unseen, n)
    n_eval = n - n_known - n_dev if options.eval_unseen is None else _count(options.eval_unseen, n)
    if n_known < 1 or n_eval < 0 or n_known + n_dev + n_eval > n:
        raise ReleaseError(
            f"the release has {n} system(s): cannot draw {n_known} known + {n_dev} dev-unseen + "
            f"{max(n_eval, 0)} eval-unseen; lower the counts or shares"
        )
    forced = sorted(options.force_known)
    rest = [s for s in systems if s not in set(forced)]
    drawn = [rest[i] for i in rng.permutation(len(rest))]
    known = forced + drawn[: n_known - len(forced)]
    dev_unseen = drawn[n_known - len(forced) : n_known - len(forced) + n_dev]
    eval_unseen = drawn[n_known - len(forced) + n_dev : n_known - len(forced) + n_dev + n_eval]
    unused = sorted(drawn[n_known - len(forced) + n_dev + n_eval :])
    roles = {s: "known" for s in known} | {s: "dev_unseen" for s in dev_unseen}
    roles |= {s: "eval_unseen" for s in eval_unseen}

    used = clips[clips["model_name"].isin(roles)]
    # each known system keeps one language (drawn) in train; a share of the others is held out
    anchors: set[str] = set()
    for system in sorted(known):
        langs = sorted(set(used.loc[used["model_name"] == system, "language"]))
        anchors.add(langs[int(rng.integers(len(langs)))])
    languages = sorted(set(used["language"]))
    candidates = [lang for lang in languages if lang not in anchors]
    n_hold = min(_count(options.unseen_languages, len(languages)), len(candidates))
    # the first held-out language is one a known system speaks (when there is one), so that the
    # unseen-language / seen-model cell is not empty
    of_known = sorted(set(used.loc[used["model_name"].map(roles) == "known", "language"]) - anchors)
    heldout: set[str] = set()
    if n_hold and of_known:
        heldout.add(of_known[int(rng.integers(len(of_known)))])
    rest = [lang for lang in candidates if lang not in heldout]
    heldout |= {rest[i] for i in rng.permutation(len(rest))[: n_hold - len(heldout)]}

    split = pd.Series("", index=used.index, dtype=object)
    split.loc[used["model_name"].map(roles) == "dev_unseen"] = "dev"
    split.loc[used["model_name"].map(roles) == "eval_unseen"] = "eval"
    train_share, dev_share, eval_share = options.clip_shares
    rest_share = dev_share + eval_share
    held_shares = (
        (0.0, 0.5, 0.5) if rest_share == 0 else (0.0, dev_share / rest_share, eval_share / rest_share)
    )
    known_clips = used[used["model_name"].map(roles) == "known"]
    for (_system, lang), group in known_clips.groupby(["model_name", "language"], sort=True):
        shares = held_shares if lang in heldout else options.clip_shares
        order = group.index.to_numpy()[rng.permutation(len(group))]
        counts = _share_out(len(order), shares)
        if lang not in heldout and counts[0] == 0 and len(order) > 0:
            counts[counts.index(max(counts))] -= 1
            counts[0] = 1
        bounds = np.cumsum([0, *counts])
        for name, lo, hi in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
            split.loc[order[lo:hi]] = name
    if (split == "").any():  # pragma: no cover - every clip of a used system gets a split above
        raise AssertionError("a clip of a used system got no split")
    assignments = used.assign(split=split, role=used["model_name"].map(roles))
    train_languages = set(assignments.loc[assignments["split"] == "train", "language"])
    missing_train = sorted(set(known) - set(assignments.loc[assignments["split"] == "train", "model_name"]))
    if missing_train:
        raise ReleaseError(f"known system(s) without a train clip: {', '.join(missing_train[:5])}")
    return SplitPlan(assignments, roles, train_languages, heldout, unused, options)


def _cap_folders(clips: pd.DataFrame, cap: int, rng: np.random.Generator) -> pd.DataFrame:
    """At most ``cap`` clips per system folder (and system), drawn with the seed."""
    keep: list[np.ndarray] = []
    for _, group in clips.groupby(["folder", "model_name"], sort=True):
        index = group.index.to_numpy()
        keep.append(index if len(index) <= cap else np.sort(index[rng.permutation(len(index))[:cap]]))
    return clips.loc[np.concatenate(keep)].sort_values("path", kind="stable")


# --------------------------------------------------------------------------------------------- write


PROTOCOL_FILES = tuple(f"{s}.csv" for s in SPLITS)


def check_out_dir(out_dir: str | Path, force: bool) -> Path:
    """Refuse to replace existing protocol files unless ``force``."""
    out_dir = Path(out_dir)
    existing = [name for name in PROTOCOL_FILES if (out_dir / name).exists()]
    if existing and not force:
        raise WouldOverwriteError(
            f"{out_dir} already holds {', '.join(existing)}; pass --force to replace them or choose another --out"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    if force and (out_dir / FINE_DIR).is_dir():
        shutil.rmtree(out_dir / FINE_DIR)
    return out_dir


def _write_rows(path: Path, rows: Iterable[tuple[str, str]], prefix: str = "") -> None:
    """``path,model_name`` rows after ``prefix`` (existing text kept as is) or after a new header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        if prefix:
            fh.write(prefix if prefix.endswith("\n") else prefix + "\n")
        writer = csv.writer(fh, lineterminator="\n")
        if not prefix:
            writer.writerow(["path", "model_name"])
        writer.writerows(rows)


def _rows(frame: pd.DataFrame) -> list[tuple[str, str]]:
    ordered = frame.sort_values("path", kind="stable")
    return list(zip(ordered["path"], ordered["model_name"], strict=True))


def _fine_parts(frame: pd.DataFrame, train_languages: set[str], known: set[str]) -> pd.Series:
    lang = np.where(frame["language"].isin(train_languages), "lang_seen", "lang_not_seen")
    model = np.where(frame["model_name"].isin(known), "model_seen", "model_not_seen")
    return pd.Series(list(zip(lang, model, strict=True)), index=frame.index)


def write_fine(
    out_dir: Path,
    assignments: pd.DataFrame,
    train_languages: set[str],
    known: set[str],
    splits: Sequence[str],
) -> None:
    """The four cell files of each of ``splits`` (header only for an empty cell)."""
    for split in splits:
        rows = assignments[assignments["split"] == split]
        parts = _fine_parts(rows, train_languages, known)
        for lang_part, model_part in FINE_CELLS:
            cell = rows[parts == (lang_part, model_part)]
            _write_rows(out_dir / FINE_DIR / fine_file_name(split, lang_part, model_part), _rows(cell))


def split_table(assignments: pd.DataFrame, train_languages: set[str], known: set[str]) -> pd.DataFrame:
    """Clips, systems and languages per split (the ``summary.csv`` table)."""
    rows = []
    for split in SPLITS:
        df = assignments[assignments["split"] == split]
        is_known = df["model_name"].isin(known)
        rows.append(
            {
                "split": split,
                "clips": len(df),
                "systems": df["model_name"].nunique(),
                "known_systems": df.loc[is_known, "model_name"].nunique(),
                "unseen_systems": df.loc[~is_known, "model_name"].nunique(),
                "known_clips": int(is_known.sum()),
                "unseen_clips": int((~is_known).sum()),
                "languages": df["language"].nunique(),
                "unseen_languages": df.loc[~df["language"].isin(train_languages), "language"].nunique(),
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def systems_table(assignments: pd.DataFrame, roles: dict[str, str]) -> pd.DataFrame:
    """One row per system: role, architecture, languages and clips per split."""
    counts = assignments.groupby(["model_name", "split"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(SPLITS), fill_value=0)
    rows = []
    for system in sorted(roles):
        own = assignments[assignments["model_name"] == system]
        archs = sorted({a for a in own["architecture"] if a})
        rows.append(
            {
                "system": system,
                "role": roles[system],
                "architecture": ";".join(archs),
                "languages": ";".join(sorted(set(own["language"]))),
                **{
                    split: int(counts.loc[system, split]) if system in counts.index else 0 for split in SPLITS
                },
            }
        )
    return pd.DataFrame(rows, columns=["system", "role", "architecture", "languages", *SPLITS])


def languages_table(assignments: pd.DataFrame, train_languages: set[str]) -> pd.DataFrame:
    """One row per language: seen (in train) or unseen, and clips per split."""
    counts = assignments.groupby(["language", "split"]).size().unstack(fill_value=0)
    counts = counts.reindex(columns=list(SPLITS), fill_value=0).sort_index()
    counts.insert(0, "status", ["seen" if lang in train_languages else "unseen" for lang in counts.index])
    return counts.reset_index()


def cells_table(assignments: pd.DataFrame, train_languages: set[str], known: set[str]) -> pd.DataFrame:
    """Clips per split and fine-grained cell (the four cells of dev and eval)."""
    rows = []
    for split in ("dev", "eval"):
        df = assignments[assignments["split"] == split]
        parts = _fine_parts(df, train_languages, known)
        for cell in FINE_CELLS:
            own = df[parts == cell]
            rows.append(
                {
                    "split": split,
                    "cell": fine_file_name(split, *cell).removesuffix(".csv"),
                    "clips": len(own),
                    "systems": own["model_name"].nunique(),
                    "languages": own["language"].nunique(),
                }
            )
    return pd.DataFrame(rows, columns=["split", "cell", "clips", "systems", "languages"])


def _markdown(df: pd.DataFrame) -> str:
    """A plain markdown table (no extra dependency)."""
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    rule = "|" + "|".join(" --- " for _ in df.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def write_summary(
    out_dir: Path,
    title: str,
    settings: dict[str, object],
    notes: list[str],
    assignments: pd.DataFrame,
    roles: dict[str, str],
    train_languages: set[str],
) -> pd.DataFrame:
    """``summary.csv``, ``systems.csv`` and ``summary.md``; returns the split table."""
    known = {s for s, r in roles.items() if r == "known"}
    table = split_table(assignments, train_languages, known)
    table.to_csv(out_dir / "summary.csv", index=False, lineterminator="\n")
    systems = systems_table(assignments, roles)
    systems.to_csv(out_dir / "systems.csv", index=False, lineterminator="\n")
    role_counts = pd.Series(roles).value_counts().reindex(list(ROLES), fill_value=0)
    lines = [
        f"# {title}",
        "",
        *[f"- {key}: {value}" for key, value in settings.items()],
        f"- systems: {role_counts['known']} known, {role_counts['dev_unseen']} dev-unseen, "
        f"{role_counts['eval_unseen']} eval-unseen",
        f"- train languages (seen): {', '.join(sorted(train_languages))}",
        *[f"- {note}" for note in notes],
        "",
        "## Splits",
        "",
        _markdown(table),
        "",
        "## Systems",
        "",
        _markdown(systems),
        "",
        "## Languages",
        "",
        _markdown(languages_table(assignments, train_languages)),
        "",
        "## Cells (language x model, seen in train or not)",
        "",
        _markdown(cells_table(assignments, train_languages, known)),
        "",
    ]
    (out_dir / "summary.md").write_text("\n".join(lines), encoding="utf-8")
    return table


def make_protocols(
    root: str | Path,
    out_dir: str | Path,
    options: SplitOptions | None = None,
    layout: str = "auto",
    fine: bool = True,
    check_audio: bool = True,
    force: bool = False,
) -> tuple[pd.DataFrame, ScanReport]:
    """Scan a release, plan the splits and write the protocols; returns the split table and the scan report."""
    options = options or SplitOptions()
    options.check()
    clips, report = scan_release(root, layout, check_audio)
    plan = plan_splits(clips, options)
    out = check_out_dir(out_dir, force)
    for split in SPLITS:
        _write_rows(out / f"{split}.csv", _rows(plan.assignments[plan.assignments["split"] == split]))
    known = {s for s, r in plan.roles.items() if r == "known"}
    if fine:
        write_fine(out, plan.assignments, plan.train_languages, known, ("dev", "eval"))
    notes = report.notes()
    if plan.unused_systems:
        notes.append(
            f"{len(plan.unused_systems)} system(s) left out by the counts: {', '.join(plan.unused_systems)}"
        )
    if options.exclude:
        notes.append(f"excluded: {', '.join(sorted(options.exclude))}")
    if len(clips) > len(plan.assignments) and options.max_clips_per_folder:
        notes.append(f"{len(clips) - len(plan.assignments)} clip(s) not used (cap or excluded systems)")
    settings = {
        "release root (data.root)": report.root,
        "layout": report.layout,
        "seed": options.seed,
        "known / dev-unseen / eval-unseen": f"{options.known} / {options.dev_unseen} / "
        f"{'rest' if options.eval_unseen is None else options.eval_unseen}",
        "clip shares train/dev/eval (known systems)": ",".join(f"{s:g}" for s in options.clip_shares),
        "held-out languages": f"{options.unseen_languages} -> {', '.join(sorted(plan.heldout_languages)) or 'none'}",
        "max clips per folder": options.max_clips_per_folder or "all",
    }
    table = write_summary(
        out, "Source-tracing protocols", settings, notes, plan.assignments, plan.roles, plan.train_languages
    )
    return table, report


# --------------------------------------------------------------------------------------------- extend


def extend_protocols(
    root: str | Path,
    base_dir: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    newer_to: str = "eval",
    dev_systems: float = 0.3,
    layout: str = "auto",
    check_audio: bool = True,
    force: bool = False,
) -> tuple[pd.DataFrame, ScanReport]:
    """Keep the protocols in ``base_dir`` unchanged and add the release's systems they lack, as unseen.

    ``newer_to`` is ``eval`` (every new system to eval) or ``dev-eval`` (``dev_systems``, a count
    or share, of them to dev, the rest to eval). Existing rows stay byte for byte at the top of
    each file; the new rows follow, sorted by path. A ``fine/`` folder in ``base_dir`` is carried
    over the same way, with the new clips added to its ``model_not_seen`` cells.
    """
    if newer_to not in ("eval", "dev-eval"):
        raise ReleaseError(f"newer systems go to 'eval' or 'dev-eval', not {newer_to!r}")
    base_dir = Path(base_dir)
    if Path(out_dir).resolve() == base_dir.resolve():
        raise ReleaseError("the output folder must differ from the protocols it extends")
    base = {split: read_protocol(base_dir / f"{split}.csv") for split in SPLITS}
    clips, report = scan_release(root, layout, check_audio)
    old_systems = set().union(*(set(df["model_name"]) for df in base.values()))
    known = set(base["train"]["model_name"])
    train_languages = set(base["train"]["language"])
    new = clips[~clips["model_name"].isin(old_systems)]
    if new.empty:
        raise ReleaseError(f"{report.root}: every system of the release is already in {base_dir}")
    systems = sorted(set(new["model_name"]))
    rng = np.random.default_rng(seed)
    n_dev = 0 if newer_to == "eval" else min(_count(dev_systems, len(systems)), len(systems))
    drawn = [systems[i] for i in rng.permutation(len(systems))]
    roles = {s: "dev_unseen" for s in drawn[:n_dev]} | {s: "eval_unseen" for s in drawn[n_dev:]}
    added = new.assign(role=new["model_name"].map(roles))
    added = added.assign(split=np.where(added["role"] == "dev_unseen", "dev", "eval"))

    out = check_out_dir(out_dir, force)
    for split in SPLITS:
        prefix = (base_dir / f"{split}.csv").read_text(encoding="utf-8")
        _write_rows(out / f"{split}.csv", _rows(added[added["split"] == split]), prefix=prefix)
    notes = report.notes()
    if (base_dir / FINE_DIR).is_dir():
        parts = _fine_parts(added, train_languages, known)
        for split in ("dev", "eval"):
            for lang_part, model_part in FINE_CELLS:
                name = fine_file_name(split, lang_part, model_part)
                source = base_dir / FINE_DIR / name
                prefix = source.read_text(encoding="utf-8") if source.is_file() else ""
                cell = added[(added["split"] == split) & (parts == (lang_part, model_part))]
                _write_rows(out / FINE_DIR / name, _rows(cell), prefix=prefix)
    else:
        notes.append(f"{base_dir} has no {FINE_DIR}/ folder: none written")
    old_clips = clips[clips["model_name"].isin(old_systems)]
    old_paths = {p for df in base.values() for p in df["clip_id"]}
    outside = old_clips[~old_clips["path"].str.removeprefix("./").isin(old_paths)]
    if len(outside):
        notes.append(
            f"{len(outside)} clip(s) of systems already in the protocols are not in them and were not added "
            f"(e.g. {outside['path'].iloc[0]})"
        )
    if check_audio:
        on_disk = set(clips["path"].str.removeprefix("./"))
        absent = sorted(old_paths - on_disk)
        if absent:
            notes.append(
                f"{len(absent)} of {len(old_paths)} existing protocol path(s) are not under {report.root} "
                f"(e.g. {absent[0]}): data.root must hold both the old and the new clips"
            )
            log.warning("%s", notes[-1])
    combined = pd.concat(
        [
            *[
                df.assign(
                    split=split,
                    architecture="",
                    role=np.where(
                        df["model_name"].isin(known),
                        "known",
                        "dev_unseen" if split == "dev" else "eval_unseen",
                    ),
                )
                for split, df in base.items()
            ],
            added,
        ],
        ignore_index=True,
    )
    all_roles = {s: r for s, r in zip(combined["model_name"], combined["role"], strict=True)}
    for s in known:
        all_roles[s] = "known"
    arch = dict(zip(clips["model_name"], clips["architecture"], strict=True))
    combined["architecture"] = combined["model_name"].map(arch).fillna("")
    settings = {
        "release root (data.root)": report.root,
        "layout": report.layout,
        "kept protocols": base_dir,
        "seed": seed,
        "new systems go to": newer_to + (f" ({n_dev} to dev)" if newer_to == "dev-eval" else ""),
        "new systems": len(systems),
    }
    table = write_summary(
        out,
        "Source-tracing protocols extended with a newer release",
        settings,
        notes,
        combined,
        all_roles,
        train_languages,
    )
    return table, report
