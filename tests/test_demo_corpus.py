"""The offline demo corpus: a small build with the pip-only engines, read back like MLAAD."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sourcetracing_tools.demo import channel, corpus, engines
from sourcetracing_tools.demo.corpus import PLAN, SIZES, SPLITS, build_corpus

ROOT = Path(__file__).resolve().parents[1]
PIP_SYSTEMS = [s for s in PLAN if s.engine in engines.ENGINE_GROUPS["pip"]]


@pytest.fixture
def small(small_demo: tuple[Path, corpus.CorpusReport]) -> tuple[Path, corpus.CorpusReport]:
    """The session's small pip-only corpus (built once in conftest.py)."""
    return small_demo


def read_protocol(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["path", "model_name"]
        return list(reader)


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``out`` with its size and modification time."""
    return {
        str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in out.rglob("*")
        if p.is_file()
    }


def test_plan_meets_structure_without_debian_engines() -> None:
    for systems in (PIP_SYSTEMS, list(PLAN)):
        rows = corpus.summary_rows(systems, corpus.plan_clips(systems, SIZES["small"], seed=0))
        assert corpus.check_structure(rows) == []
    assert len(PIP_SYSTEMS) >= 10
    assert len({s.name for s in PLAN}) == len(PLAN)
    corpus_langs = {lang for s in PLAN for split in SPLITS for lang in s.langs_in(split)}
    assert not {lang for _, lang in corpus.BABBLE_VOICES} & corpus_langs  # babble is no corpus class


def test_systems_and_splits(small: tuple[Path, corpus.CorpusReport]) -> None:
    out, report = small
    assert report.problems == []
    assert not any(v.startswith("failed") for v in report.skipped.values())
    systems = {
        split: {r["model_name"] for r in read_protocol(out / "protocols" / f"{split}.csv")}
        for split in SPLITS
    }
    known = {s.name for s in PIP_SYSTEMS if s.role == "known"}
    dev_unseen = {s.name for s in PIP_SYSTEMS if s.role == "dev-unseen"}
    eval_unseen = {s.name for s in PIP_SYSTEMS if s.role == "eval-unseen"}
    assert systems["train"] == known
    assert systems["dev"] == known | dev_unseen
    assert systems["eval"] == known | eval_unseen
    assert dev_unseen and eval_unseen and not dev_unseen & eval_unseen
    assert {"espeak-ng/en-us/klatt", "piper/en_US-joe/medium", "sam/default"} <= known
    assert "kokoro/jf_alpha" in eval_unseen
    summary = read_protocol_summary(out)
    assert {row["system"] for row in summary} == known | dev_unseen | eval_unseen


def read_protocol_summary(out: Path) -> list[dict[str, str]]:
    with open(out / "corpus_summary.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_unseen_language_and_family(small: tuple[Path, corpus.CorpusReport]) -> None:
    out, _ = small
    rows = {split: read_protocol(out / "protocols" / f"{split}.csv") for split in SPLITS}
    langs = {split: {r["path"].split("/")[2] for r in rows[split]} for split in SPLITS}
    assert len(langs["train"]) >= 2
    assert langs["dev"] - langs["train"] and langs["eval"] - langs["train"]
    family = {s.name: s.family for s in PLAN}
    train_families = {family[r["model_name"]] for r in rows["train"]}
    eval_families = {family[r["model_name"]] for r in rows["eval"]}
    dev_families = {family[r["model_name"]] for r in rows["dev"]}
    assert "StyleTTS2" in eval_families - train_families - dev_families


def test_protocols_point_at_16k_mono_speech(small: tuple[Path, corpus.CorpusReport]) -> None:
    out, _ = small
    mlaad = out / "MLAAD_v5"
    listed = set()
    for split in SPLITS:
        for row in read_protocol(out / "protocols" / f"{split}.csv"):
            match = re.fullmatch(r"\./fake/([a-z]{2})/([^/]+)/([^/]+\.wav)", row["path"])
            assert match, row["path"]
            assert match.group(2) == row["model_name"].replace("/", "_")
            assert "/" in row["model_name"]
            assert row["path"] not in listed
            listed.add(row["path"])
    wavs = sorted(mlaad.rglob("*.wav"))
    assert {"./" + str(p.relative_to(mlaad)) for p in wavs} == listed
    for path in wavs:
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), path
        audio, _ = sf.read(str(path), dtype="float32")
        assert 1.5 <= len(audio) / 16000 <= 6.5, path
        assert np.sqrt(np.mean(audio**2)) > 0.01, path


def test_project_protocol_reader_accepts_them(small: tuple[Path, corpus.CorpusReport]) -> None:
    pytest.importorskip("pandas")
    from sourcetracing.data.protocols import read_protocol as project_reader

    out, _ = small
    frame = project_reader(out / "protocols" / "eval.csv")
    assert set(frame["language"]) >= {"en", "nl"}
    assert all((out / "MLAAD_v5" / p).is_file() for p in frame["path"])


def test_musan_and_rirs_layout(small: tuple[Path, corpus.CorpusReport]) -> None:
    out, _ = small
    for kind in ("noise", "music", "speech"):
        files = sorted((out / "musan" / kind).glob("*/*.wav"))
        assert files, kind
        for path in files:
            audio, rate = sf.read(str(path), dtype="float32")
            assert rate == 16000 and audio.ndim == 1
            assert 4.9 <= len(audio) / rate <= 10.1
            assert np.sqrt(np.mean(audio**2)) > 0.01
    for room_type in ("smallroom", "mediumroom", "largeroom"):
        folder = out / "RIRS_NOISES" / "simulated_rirs" / room_type
        rirs = sorted(folder.glob("Room*/Room*-*.wav"))
        assert rirs, room_type
        for path in rirs:
            assert re.fullmatch(r"Room(\d{3})-\d{5}\.wav", path.name)
            assert path.parent.name == path.name[:7]
            info = sf.info(str(path))
            assert (info.samplerate, info.channels) == (16000, 1)
        assert len((folder / "rir_list").read_text().splitlines()) == len(rirs)


def test_rerun_through_the_cli_changes_nothing(small: tuple[Path, corpus.CorpusReport]) -> None:
    out, _ = small
    before = snapshot(out)
    protocols = {p.name: p.read_bytes() for p in (out / "protocols").glob("*.csv")}
    extras = {
        name: (out / name).read_bytes() for name in ("corpus_summary.csv", "corpus_config.json", "clips.csv")
    }
    spec = importlib.util.spec_from_file_location(
        "make_demo_corpus", ROOT / "scripts" / "make_demo_corpus.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    argv = ["--out", str(out), "--small", "--engines", "pip", "--jobs", "2", "--no-progress"]
    assert script.main(argv) == 0
    after = snapshot(out)
    assert set(after) == set(before)
    assert all(after[k] == before[k] for k in after if not k.endswith((".csv", ".json", "rir_list")))
    assert {p.name: p.read_bytes() for p in (out / "protocols").glob("*.csv")} == protocols
    for name in extras:
        assert (out / name).read_bytes() == extras[name]
    with pytest.raises(corpus.CorpusError):
        build_corpus(out, size="small", seed=1, engines="pip", progress=False, verbose=False)


def test_seeded_tasks_reproduce_the_same_bytes(
    small: tuple[Path, corpus.CorpusReport], tmp_path: Path
) -> None:
    """A piper chunk (VITS noise inside the graph) and aug files come out identical when remade,
    also when only some files of a chunk are missing."""
    out, _ = small
    names = {"piper/en_US-joe/medium", "espeak-ng/multilingual/m7", "espeak-ng/fr/f2"}  # f2: breath noise
    systems = [s for s in PLAN if s.name in names]
    clips = corpus.plan_clips(systems, SIZES["small"], seed=0)
    tasks = [t for t in corpus.plan_speech_tasks(systems, clips, seed=0) if t.clips[0].split == "eval"]
    assert {t.engine for t in tasks} == {"piper", "espeak"}
    mlaad = tmp_path / "MLAAD_v5"
    for task in tasks:
        for clip in task.clips[:2] + task.clips[3:]:  # leave a gap: the replay must match too
            target = mlaad / clip.relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / "MLAAD_v5" / clip.relpath, target)
        (mlaad / task.clips[-1].relpath).unlink()
        corpus.run_speech_task(task, str(mlaad))
        for clip in task.clips:
            assert (mlaad / clip.relpath).read_bytes() == (out / "MLAAD_v5" / clip.relpath).read_bytes()
    aug = corpus.plan_aug_tasks(SIZES["small"], seed=0)
    for kind in ("noise", "music", "room"):
        task = next(t for t in aug if t.kind == kind)
        corpus.run_aug_task(task, str(tmp_path))
        for rel in task.relpaths:
            assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes()


def test_texts_are_distinct_across_splits() -> None:
    clips = corpus.plan_clips(PIP_SYSTEMS, SIZES["default"], seed=0)
    for spec in PIP_SYSTEMS:
        by_split = [{c.text for c in clips if c.system == spec.name and c.split == s} for s in SPLITS]
        assert all(len(a & b) == 0 for i, a in enumerate(by_split) for b in by_split[i + 1 :])
        mine = [c for c in clips if c.system == spec.name]
        assert len({c.text for c in mine}) == len(mine)
    assert corpus.plan_clips(PIP_SYSTEMS, SIZES["small"], seed=0) == corpus.plan_clips(
        PIP_SYSTEMS, SIZES["small"], seed=0
    )
    assert corpus.plan_clips(PIP_SYSTEMS, SIZES["small"], seed=1) != corpus.plan_clips(
        PIP_SYSTEMS, SIZES["small"], seed=0
    )


def test_missing_or_broken_engine_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(engines.SamEngine, "check", lambda self, voices=(): "not installed (test)")

    def broken(self: engines.KokoroEngine) -> None:
        raise RuntimeError("model is corrupt (test)")

    monkeypatch.setattr(engines.KokoroEngine, "_load", broken)
    report = build_corpus(tmp_path, size="small", engines="espeak,sam,kokoro", jobs=1, progress=False)
    lines = capsys.readouterr().out.splitlines()
    skipped_lines = [line for line in lines if line.startswith("skipped:")]
    assert len(skipped_lines) == 1
    assert "sam (not installed (test))" in skipped_lines[0] and "kokoro (" in skipped_lines[0]
    names = {
        r["model_name"] for split in SPLITS for r in read_protocol(tmp_path / "protocols" / f"{split}.csv")
    }
    assert names and all(name.startswith("espeak-ng/") for name in names)
    assert {"sam", "kokoro"} <= set(report.skipped)
    assert any("family" in p for p in report.problems)  # without Kokoro no unseen family: warned, not fatal


def test_engine_selection() -> None:
    assert engines.resolve_engines("all") == tuple(engines.ENGINES)
    assert engines.resolve_engines("pip,flite") == ("espeak", "piper", "kokoro", "sam", "flite")
    with pytest.raises(ValueError):
        engines.resolve_engines("espeak,nope")


# ---------------------------------------------------------------------------------------------
# The hard plan: near-twins and channels

HARD = corpus.PLANS["hard"]
HARD_PIP = [s for s in HARD.systems if s.engine in engines.ENGINE_GROUPS["pip"]]
TINY = corpus.CorpusSize("tiny", known=(3, 1, 2), unseen=2, heldout=1, musan=(0, 0, 0), rooms=0)


def hard_rows(systems: list[corpus.SystemSpec], size: corpus.CorpusSize) -> list[corpus.SystemRow]:
    return corpus.summary_rows(systems, corpus.plan_clips(systems, size, 0, HARD.channel_share))


@pytest.mark.parametrize("which", ["all", "pip"])
def test_hard_plan_rules(which: str) -> None:
    systems = list(HARD.systems) if which == "all" else HARD_PIP
    for size in HARD.sizes.values():
        assert corpus.check_structure(hard_rows(systems, size), twins=True) == []
    rows = hard_rows(systems, HARD.size("default"))
    by_name = {r.system: r for r in rows}
    known = {r.system for r in rows if r.role == "known"}
    dev_unseen = {r.system for r in rows if r.role == "dev-unseen"}
    eval_unseen = {r.system for r in rows if r.role == "eval-unseen"}
    assert dev_unseen and eval_unseen and not dev_unseen & eval_unseen
    for unseen in (dev_unseen, eval_unseen):
        assert {by_name[s].engine for s in unseen if by_name[s].twin_of} >= {"espeak", "piper", "kokoro"}
        assert any(not by_name[s].twin_of for s in unseen)  # and systems that are nobody's twin
    assert any(by_name[s].twin_of for s in known)  # near-twins among the known systems too
    spec = {s.name: s for s in systems}
    for r in rows:
        for twin in r.twin_of:
            assert twin in known
            same_engine = spec[twin].engine == spec[r.system].engine
            assert (
                same_engine or spec[twin].family == spec[r.system].family == "diphone"
            )  # shared kal database
    for twin_spec in (s for s in systems if s.twin_of and s.engine in ("espeak", "piper")):
        assert any(spec[t].voice == twin_spec.voice for t in twin_spec.twin_of)  # one voice, other settings
    sizes = {s: sum(r.clips.values()) for s, r in by_name.items()}
    assert all(15 <= n for s, n in sizes.items() if s not in known and spec[s].engine != "kokoro")
    assert all(40 <= by_name[s].clips["train"] <= 60 for s in known if spec[s].engine != "kokoro")


def test_hard_plan_channel_share_per_system() -> None:
    clips = corpus.plan_clips(HARD.systems, HARD.size("default"), 0, HARD.channel_share)
    for spec in HARD.systems:
        mine = [c for c in clips if c.system == spec.name]
        share = sum(c.channel_seed is not None for c in mine) / len(mine)
        assert 0.3 <= share <= 0.5, (spec.name, share)
    kinds = {c.channel.split()[0] for c in clips}
    assert kinds == {"none", *channel.KINDS}
    assert all((c.channel == "none") == (c.channel_seed is None) for c in clips)
    assert all(c.channel == channel.describe_channel(c.channel_seed) for c in clips if c.channel_seed)
    again = corpus.plan_clips(HARD.systems, HARD.size("default"), 0, HARD.channel_share)
    assert again == clips
    other = corpus.plan_clips(HARD.systems, HARD.size("default"), 1, HARD.channel_share)
    assert [c.channel for c in other] != [c.channel for c in clips]
    default_clips = corpus.plan_clips(PLAN, SIZES["default"], 0)
    assert all(c.channel_seed is None and c.channel == "none" for c in default_clips)


def test_plan_errors() -> None:
    spec = HARD.systems[0]
    with pytest.raises(ValueError, match="unknown setting"):
        corpus.SystemSpec(
            "x/y", "piper", "en_US-joe-medium", "VITS", ("en",), "known", settings=(("speed", 1.0),)
        )
    with pytest.raises(ValueError, match="no known systems"):
        corpus.CorpusPlan("bad", (replace(spec, twin_of=("nope/none",)),), SIZES)
    with pytest.raises(ValueError, match="channel_share"):
        corpus.CorpusPlan("bad", (spec,), SIZES, channel_share=1.5)
    with pytest.raises(ValueError, match="unknown plan"):
        build_corpus("unused", plan="harder")
    with pytest.raises(ValueError, match="no size"):
        HARD.size("huge")
    with pytest.raises(ValueError, match="allowed: rate, pitch, range"):
        engines.create_engine("espeak", settings={"speed": 2})


def test_channel_is_deterministic_and_keeps_length() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(3 * 16000) / 16000
    wave = 0.1 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(
        t.size
    )
    wave = wave.astype(np.float32)
    seen = set()
    for seed in range(40):
        out, text = channel.apply_channel(wave, 16000, np.random.default_rng(seed))
        again, text_again = channel.apply_channel(wave, 16000, np.random.default_rng(seed))
        assert text == text_again == channel.describe_channel(seed)
        np.testing.assert_array_equal(out, again)
        assert out.shape == wave.shape and out.dtype == np.float32
        assert np.all(np.abs(out) <= 1.0)
        kind = text.split()[0]
        seen.add(kind)
        if kind != "gain":  # the content survives: codecs and noise stay close to the input
            assert np.corrcoef(out, wave)[0, 1] > 0.8, text
    assert seen == set(channel.KINDS)
    with pytest.raises(ValueError, match="mono"):
        channel.apply_channel(np.zeros((2, 100), np.float32), 16000, np.random.default_rng(0))
    with pytest.raises(ValueError, match="sample_rate"):
        channel.apply_channel(wave, 0, np.random.default_rng(0))


def test_engine_settings_change_the_audio() -> None:
    slow, fast = (engines.create_engine("espeak", settings={"rate": r, "pitch": 30}) for r in (120, 240))
    try:
        text = "The old captain carries a small wooden boat."
        a, rate = slow.synthesize(text, "en-us+m3", "en")
        b, _ = fast.synthesize(text, "en-us+m3", "en")
        assert len(a) > 1.5 * len(b)
    finally:
        slow.close()
        fast.close()
    sam_low = engines.SamEngine(settings={"pitch": 90}).synthesize("Hello there.", "default", "en")[0]
    sam_default = engines.SamEngine().synthesize("Hello there.", "default", "en")[0]
    assert sam_low.shape != sam_default.shape or not np.array_equal(sam_low, sam_default)


def test_tiny_hard_build(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hard"
    report = build_corpus(out, size=TINY, plan="hard", engines="espeak,sam", jobs=1, progress=False)
    printed = capsys.readouterr().out
    assert "twin of" in printed and "espeak-ng/en-us/m3-slow" in printed
    assert report.problems == []
    protocol = {split: read_protocol(out / "protocols" / f"{split}.csv") for split in SPLITS}
    with open(out / "clips.csv", newline="", encoding="utf-8") as fh:
        manifest = list(csv.DictReader(fh))
    assert list(manifest[0]) == ["path", "system", "split", "channel"]
    listed = [(r["path"], r["model_name"], split) for split in SPLITS for r in protocol[split]]
    assert [(r["path"], r["system"], r["split"]) for r in manifest] == listed
    altered = [r for r in manifest if r["channel"] != "none"]
    assert 0.2 <= len(altered) / len(manifest) <= 0.6
    for row in altered[:3]:
        info = sf.info(str(out / "MLAAD_v5" / row["path"]))
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    summary = {r["system"]: r for r in read_protocol_summary(out)}
    assert summary["espeak-ng/en-us/m3-fast"]["twin_of"] == "espeak-ng/en-us/m3 espeak-ng/en-us/m3-slow"
    assert summary["sam/elf"]["twin_of"] == "" and summary["sam/elf"]["family"] == "formant-8bit"
    assert not any(name.startswith(("piper", "kokoro")) for name in summary)
    config = json.loads((out / "corpus_config.json").read_text())
    assert (config["plan"], config["channel_share"]) == ("hard", HARD.channel_share)
    with pytest.raises(corpus.CorpusError, match="plan 'hard'"):
        build_corpus(out, size=TINY, plan="default", engines="espeak", progress=False, verbose=False)
    # a system folder an earlier build left behind is named, kept, and stays out of the protocols
    stray = out / "MLAAD_v5" / "fake" / "en" / "piper_en_US-joe_medium-lively"
    stray.mkdir(parents=True)
    sf.write(str(stray / "old.wav"), np.zeros(1600, np.float32), 16000)
    again = build_corpus(out, size=TINY, plan="hard", engines="espeak,sam", jobs=1, progress=False)
    printed = capsys.readouterr().out
    assert (
        again.written == 0
        and "fake/en/piper_en_US-joe_medium-lively" in printed
        and "note: 1 folder" in printed
    )
    assert (stray / "old.wav").is_file()
    assert not any(
        "lively" in r["path"] for split in SPLITS for r in read_protocol(out / "protocols" / f"{split}.csv")
    )


def test_default_plan_manifest_has_no_channels(small: tuple[Path, corpus.CorpusReport]) -> None:
    out, _ = small
    with open(out / "clips.csv", newline="", encoding="utf-8") as fh:
        manifest = list(csv.DictReader(fh))
    listed = [r["path"] for split in SPLITS for r in read_protocol(out / "protocols" / f"{split}.csv")]
    assert [r["path"] for r in manifest] == listed
    assert {r["channel"] for r in manifest} == {"none"}
    assert {r["twin_of"] for r in read_protocol_summary(out)} == {""}
