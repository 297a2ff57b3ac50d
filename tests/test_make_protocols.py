"""Protocols from an MLAAD release: scanning both layouts, seeded disjoint splits, the v5 extension mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sourcetracing.config import load_config
from sourcetracing.data.mlaad_meta import V5_META_COLUMNS
from sourcetracing.data.mlaad_release import (
    ReleaseError,
    SplitOptions,
    extend_protocols,
    make_protocols,
    plan_splits,
    read_meta,
    resolve_root,
    scan_release,
)
from sourcetracing.data.protocols import FINE_CELLS, fine_file_name, prepare_splits, read_protocol
from sourcetracing.errors import WouldOverwriteError

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_protocols.py"

# (model_name, architecture, languages, clips per language): a "newer release" of 10 systems
NEWER = [
    ("tts_models/en/ljspeech/vits", "vits", ("en",), 8),
    ("tts_models/multilingual/multi-dataset/xtts_v2", "xtts_v2", ("en", "de", "fr", "pl"), 5),
    ("tts_models/de/thorsten/tacotron2-DDC", "tacotron2", ("de",), 6),
    ("facebook/mms-tts-fra", "facebook/mms-tts-fra", ("fr",), 6),
    ("suno/bark", "bark", ("en", "it"), 5),
    ("griffin_lim", "griffin_lim", ("es", "en"), 4),
    ("MeloTTS", "MeloTTS", ("es",), 6),
    ("parler_tts_mini_v0.1", "parler_tts", ("en",), 5),
    ("tts_models/it/mai_female/vits", "vits", ("it",), 6),
    ("f5-tts", "f5-tts", ("pl", "zh-cn"), 4),
]
ORIGINAL = {
    "en": "en_US/by_book/female/judy_bieber/ozma_of_oz/wavs",
    "de": "de_DE/by_book/male/karlsson/kleinzaches/wavs",
}


def folder_of(model_name: str) -> str:
    """The archive's folder name of a system: slashes replaced by underscores."""
    return model_name.replace("/", "_")


def write_wav(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tone = 0.1 * np.sin(np.arange(800) * (0.05 + 0.01 * (seed % 7)))
    sf.write(path, tone.astype(np.float32), 16000, format="WAV")


def meta_line(values: list[str]) -> str:
    return "|".join(values)


def write_release(root: Path, systems=NEWER, reference_speaker: bool = True) -> Path:
    """A tiny release in the archive layout: fake/<lang>/<folder>/*.wav + a pipe-separated meta.csv each."""
    header = list(V5_META_COLUMNS) + (["reference_speaker"] if reference_speaker else [])
    for s, (model, arch, langs, n) in enumerate(systems):
        for lang in langs:
            folder = root / "fake" / lang / folder_of(model)
            lines = [meta_line(header)]
            for i in range(n):
                name = f"book_{s:02d}_f{i:06d}.wav"
                write_wav(folder / name, s * 31 + i)
                original = f"{ORIGINAL.get(lang, 'en_UK/by_book/female/elizabeth_klett/jane_eyre/wavs')}/jane_eyre_{i:02d}.wav"
                transcript = 'She said "no" and left.' if i == 0 else f"sentence {i} of {lang}"
                row = [
                    f"./fake/{lang}/{folder_of(model)}/{name}",
                    original,
                    lang,
                    str(lang in ORIGINAL),
                    f"{1.5 + i / 10:.3f}",
                    "multi-dataset",
                    model,
                    arch,
                    transcript,
                ]
                lines.append(meta_line(row + (["spk_01"] if reference_speaker else [])))
            (folder / "meta.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def all_clips(systems=NEWER) -> set[str]:
    return {
        f"./fake/{lang}/{folder_of(model)}/book_{s:02d}_f{i:06d}.wav"
        for s, (model, _, langs, n) in enumerate(systems)
        for lang in langs
        for i in range(n)
    }


def read_split(out: Path, split: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{split}.csv", dtype=str, keep_default_na=False)


def config_for(data_root: Path, protocols: Path, exp: Path):
    return load_config(
        None, [f"data.root={data_root}", f"data.protocols={protocols}", f"exp_dir={exp}", "augment.splits=[]"]
    )


XTTS = "tts_models/multilingual/multi-dataset/xtts_v2"
OPTIONS = SplitOptions(seed=3, known=4, dev_unseen=2, unseen_languages=2, force_known=(XTTS,))


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_release(tmp_path_factory.mktemp("mlaad_v9"))


def test_read_meta_follows_the_real_format(release):
    header, rows = read_meta(release / "fake" / "en" / "suno_bark" / "meta.csv")
    assert header == [*V5_META_COLUMNS, "reference_speaker"]
    assert rows[0]["model_name"] == "suno/bark" and rows[0]["architecture"] == "bark"
    assert rows[0]["transcript"] == 'She said "no" and left.'  # quotes are text, not quoting
    assert rows[0]["reference_speaker"] == "spk_01"


def test_read_meta_rejoins_a_transcript_holding_the_separator(tmp_path):
    meta = tmp_path / "meta.csv"
    meta.write_text(
        "path|original_file|language|model_name|architecture|transcript|reference_speaker\n"
        "./fake/en/m/a.wav|en_US/a.wav|en|m/x|arch|one | two|spk\n"
    )
    _, rows = read_meta(meta)
    assert rows[0]["transcript"] == "one | two" and rows[0]["reference_speaker"] == "spk"
    assert rows[0]["model_name"] == "m/x"


def test_scan_release_reads_every_clip_and_trusts_the_folder(release, tmp_path):
    clips, report = scan_release(release)
    assert report.layout == "tree" and report.meta_files == report.folders == 16
    assert set(clips["path"]) == all_clips()
    assert clips["path"].is_unique
    xtts = clips[clips["model_name"] == "tts_models/multilingual/multi-dataset/xtts_v2"]
    assert set(xtts["language"]) == {"en", "de", "fr", "pl"} and set(xtts["architecture"]) == {"xtts_v2"}

    # a copy whose metadata names a stale language in `path` and a missing file, plus an unlisted wav
    copy = tmp_path / "rel"
    write_release(copy, systems=NEWER[-1:], reference_speaker=False)
    meta = copy / "fake" / "zh-cn" / "f5-tts" / "meta.csv"
    text = meta.read_text().replace("./fake/zh-cn/", "./fake/zh/")
    meta.write_text(
        text + meta_line(["./fake/zh/f5-tts/gone.wav", "x", "zh", "False", "1", "d", "f5-tts", "f5-tts", "t"])
    )
    write_wav(meta.parent / "extra.wav", 1)
    clips, report = scan_release(copy)
    zh = clips[clips["folder"] == "fake/zh-cn/f5-tts"]
    assert len(zh) == 5 and set(zh["language"]) == {"zh-cn"} and set(zh["model_name"]) == {"f5-tts"}
    assert "./fake/zh-cn/f5-tts/extra.wav" in set(zh["path"])
    assert report.missing_audio == 1 and report.unlisted_audio == 1


def test_hugging_face_layout(tmp_path):
    """A hub cache folder: snapshots/<rev>/ with links into blobs/, original/ bona fide, display-name folders."""
    repo = tmp_path / "datasets--mueller91--MLAAD"
    snap = repo / "snapshots" / "0123abcd"
    blobs = repo / "blobs"
    systems = [
        ("CaroTTS", "CaroTTS", ("de",), 3),
        ("Resemble.ai (April 12th, 2025)", "resemble", ("en",), 3),
        ("tts_models/en/ljspeech/vits", "vits", ("en",), 3),
    ]
    for s, (model, arch, langs, n) in enumerate(systems):
        folder_name = model if "/" not in model else folder_of(model)
        for lang in langs:
            folder = snap / "fake" / lang / folder_name
            folder.mkdir(parents=True)
            # the newest folders lack model_name (the folder name stands in); older ones keep it
            named = "/" in model
            cols = ["path", "original_file", "language", *(["model_name"] if named else []), "architecture"]
            lines = ["|".join([*cols, "transcript", "reference_speaker"])]
            for i in range(n):
                blob = blobs / f"{s}{i:040d}"
                write_wav(blob, s + i)
                os.symlink(os.path.relpath(blob, folder), folder / f"clip_{i}.wav")
                fields = [f"fake/{lang}/{folder_name}/clip_{i}.wav", f"en_US/x/{i}.wav", lang]
                lines.append("|".join([*fields, *([model] if named else []), arch, f"text {i}", "spk"]))
            (folder / "meta.csv").write_text("\n".join(lines) + "\n")
    write_wav(snap / "original" / "en" / "real_0.wav", 0)
    data_root, layout = resolve_root(repo)
    assert data_root == snap and layout == "hf"
    assert resolve_root(snap) == (snap, "hf")  # original/ marks a snapshot folder too

    out = tmp_path / "protocols"
    table, report = make_protocols(repo, out, SplitOptions(seed=0, known=1, dev_unseen=1, unseen_languages=0))
    assert report.bona_fide_skipped == 1 and report.root == snap
    rows = pd.concat([read_split(out, s) for s in ("train", "dev", "eval")])
    assert set(rows["model_name"]) == {
        "CaroTTS",
        "Resemble.ai (April 12th, 2025)",
        "tts_models/en/ljspeech/vits",
    }
    assert len(rows) == 9 and rows["path"].is_unique
    splits, _ = prepare_splits(config_for(snap, out, tmp_path / "exp"))  # commas in paths survive the CSV
    assert sum(len(df) for df in splits.values()) == 9
    assert all((snap / p).is_file() for p in rows["path"])


def test_splits_are_disjoint_complete_and_load(release, tmp_path):
    out = tmp_path / "p"
    table, _ = make_protocols(release, out, OPTIONS)
    frames = {s: read_split(out, s) for s in ("train", "dev", "eval")}
    assert all(list(df.columns) == ["path", "model_name"] for df in frames.values())
    paths = pd.concat([df["path"] for df in frames.values()])
    assert paths.is_unique and set(paths) == all_clips()  # every clip of every used system, exactly once

    known = set(frames["train"]["model_name"])
    dev_unseen = set(frames["dev"]["model_name"]) - known
    eval_unseen = set(frames["eval"]["model_name"]) - known
    assert len(known) == 4 and len(dev_unseen) == 2 and len(eval_unseen) == 4
    assert not dev_unseen & eval_unseen
    assert known <= set(frames["eval"]["model_name"]) and known & set(frames["dev"]["model_name"])

    splits, label_map = prepare_splits(config_for(release, out, tmp_path / "exp"))
    assert label_map.known == sorted(known)
    assert len(splits["eval"]) == len(frames["eval"])
    cells = set(splits["eval"]["cell"])
    assert {"seen_lang/seen_model", "unseen_lang/seen_model"} <= cells  # a held-out language of xtts_v2
    assert set(splits["eval"]["cell_source"]) == {"official"}
    # the written fine/ cells agree with the cells derived from the written splits
    derived = splits["dev"]["language_seen"].map({True: "seen_lang", False: "unseen_lang"}) + "/"
    derived += splits["dev"]["known"].map({True: "seen_model", False: "unseen_model"})
    assert (derived == splits["dev"]["cell"]).all()

    summary = pd.read_csv(out / "summary.csv")
    assert summary["clips"].sum() == len(all_clips())
    assert summary.set_index("split").loc["train", "unseen_languages"] == 0
    assert table.equals(summary)
    systems = pd.read_csv(out / "systems.csv", keep_default_na=False)
    assert set(systems["role"]) == {"known", "dev_unseen", "eval_unseen"} and len(systems) == 10
    markdown = (out / "summary.md").read_text()
    assert "## Languages" in markdown and "| eval | eval___lang_not_seen___model_seen |" in markdown


def test_same_seed_same_bytes_other_seed_other_split(release, tmp_path):
    names = ["train.csv", "dev.csv", "eval.csv", "systems.csv", "summary.csv", "summary.md"]
    names += [f"fine/{fine_file_name(s, *cell)}" for s in ("dev", "eval") for cell in FINE_CELLS]
    make_protocols(release, tmp_path / "a", OPTIONS)
    make_protocols(release, tmp_path / "b", OPTIONS)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    other = SplitOptions(seed=4, known=4, dev_unseen=2, unseen_languages=2, force_known=(XTTS,))
    make_protocols(release, tmp_path / "c", other)
    assert (tmp_path / "a" / "train.csv").read_bytes() != (tmp_path / "c" / "train.csv").read_bytes()


def test_options_shape_the_plan(release):
    clips, _ = scan_release(release)
    plan = plan_splits(
        clips, SplitOptions(seed=0, known=0.5, dev_unseen=1, eval_unseen=2, unseen_languages=0)
    )
    roles = pd.Series(plan.roles).value_counts()
    assert roles["known"] == 5 and roles["dev_unseen"] == 1 and roles["eval_unseen"] == 2
    assert len(plan.unused_systems) == 2 and not plan.heldout_languages
    assert not set(plan.assignments["model_name"]) & set(plan.unused_systems)

    for seed in range(5):  # held-out languages never reach train
        drawn = plan_splits(clips, SplitOptions(**{**OPTIONS.__dict__, "seed": seed}))
        assert len(drawn.heldout_languages) == 2 and not drawn.heldout_languages & drawn.train_languages

    forced = plan_splits(
        clips, SplitOptions(seed=0, known=2, force_known=("griffin_lim",), exclude=("MeloTTS",))
    )
    assert forced.roles["griffin_lim"] == "known" and "MeloTTS" not in set(forced.assignments["model_name"])

    capped = plan_splits(clips, SplitOptions(seed=0, known=3, max_clips_per_folder=2))
    assert capped.assignments.groupby("folder").size().max() == 2

    shares = plan_splits(
        clips, SplitOptions(seed=0, known=10, dev_unseen=0, clip_shares=(1.0, 0.0, 0.0), unseen_languages=0)
    )
    assert set(shares.assignments["split"]) == {"train"}

    with pytest.raises(ReleaseError, match="cannot draw"):
        plan_splits(clips, SplitOptions(known=8, dev_unseen=3))
    with pytest.raises(ReleaseError, match="not in the release"):
        plan_splits(clips, SplitOptions(force_known=("nope",)))
    with pytest.raises(ReleaseError, match="clip shares"):
        plan_splits(clips, SplitOptions(clip_shares=(0.5, 0.5, 0.5)))


def test_existing_protocols_are_not_replaced_without_force(release, tmp_path):
    out = tmp_path / "p"
    make_protocols(release, out, OPTIONS)
    with pytest.raises(WouldOverwriteError, match="--force"):
        make_protocols(release, out, OPTIONS)
    make_protocols(release, out, SplitOptions(seed=9, known=4, dev_unseen=2), force=True)
    assert "seed: 9" in (out / "summary.md").read_text()


def v5_protocols(tmp_path: Path) -> tuple[Path, Path]:
    """A v5-like release (the first 6 systems) with its own protocols, fine/ cells and an eval duplicate."""
    v5_root = write_release(tmp_path / "v5", systems=NEWER[:6], reference_speaker=False)
    proto = tmp_path / "v5_protocols"
    make_protocols(v5_root, proto, SplitOptions(seed=1, known=3, dev_unseen=1, unseen_languages=1))
    eval_csv = proto / "eval.csv"
    lines = eval_csv.read_text().splitlines()
    eval_csv.write_text("\n".join([*lines, lines[1]]) + "\n")  # a duplicate row, as in the real eval.csv
    return v5_root, proto


def test_extend_keeps_v5_rows_and_adds_newer_systems_as_unseen(release, tmp_path):
    _, proto = v5_protocols(tmp_path)
    out = tmp_path / "extended"
    extend_protocols(release, proto, out, seed=0, newer_to="dev-eval", dev_systems=2)
    old_systems = set()
    for split in ("train", "dev", "eval"):
        before = (proto / f"{split}.csv").read_text()
        after = (out / f"{split}.csv").read_text()
        assert after.startswith(before)  # v5 rows unchanged, byte for byte, duplicates included
        old_systems |= set(read_split(proto, split)["model_name"])
    new_dev = set(read_split(out, "dev")["model_name"]) - set(read_split(proto, "dev")["model_name"])
    new_eval = set(read_split(out, "eval")["model_name"]) - set(read_split(proto, "eval")["model_name"])
    newer = {m for m, *_ in NEWER} - old_systems
    assert len(new_dev) == 2 and new_dev | new_eval == newer and not new_dev & new_eval
    assert (out / "train.csv").read_bytes() == (proto / "train.csv").read_bytes()
    for split in ("dev", "eval"):  # fine/ carried over, new clips in the model_not_seen cells
        for cell in FINE_CELLS:
            name = fine_file_name(split, *cell)
            assert (out / "fine" / name).read_text().startswith((proto / "fine" / name).read_text())
            if cell[1] == "model_seen":
                assert (out / "fine" / name).read_bytes() == (proto / "fine" / name).read_bytes()

    splits, label_map = prepare_splits(config_for(release, out, tmp_path / "exp"))
    assert set(label_map.known) == set(read_split(proto, "train")["model_name"])
    added = splits["eval"][splits["eval"]["model_name"].isin(newer)]
    assert len(added) and not added["known"].any() and (added["cell_source"] == "official").all()

    only_eval = tmp_path / "to_eval"
    extend_protocols(release, proto, only_eval, seed=0)
    assert set(read_split(only_eval, "dev")["model_name"]) == set(read_split(proto, "dev")["model_name"])
    assert newer <= set(read_split(only_eval, "eval")["model_name"])
    assert len(read_protocol(only_eval / "eval.csv")) == len(read_protocol(proto / "eval.csv")) + sum(
        len(langs) * n for m, _, langs, n in NEWER if m in newer
    )


def test_script_runs_and_errors_are_one_line(release, tmp_path):
    out = tmp_path / "p"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = [sys.executable, str(SCRIPT), "--root", str(release), "--out", str(out), "--seed", "3"]
    args += ["--known-systems", "4", "--dev-unseen-systems", "2", "--unseen-languages", "2"]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"data.root={release}" in done.stdout and "unseen_systems" in done.stdout
    again = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 4 and again.stderr.strip().startswith("error:") and "--force" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    missing = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(tmp_path / "nothing"), "--out", str(tmp_path / "q")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert missing.returncode == 1 and "MLAAD release folder not found" in missing.stderr
    bad = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--root",
            str(release),
            "--out",
            str(tmp_path / "q"),
            "--clip-shares",
            "1,1,1",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert bad.returncode == 2 and "summing to 1" in bad.stderr
