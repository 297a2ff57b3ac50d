"""MLAAD protocol reading, label assignment, fine-grained cells and the data check."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sourcetracing.config import load_config
from sourcetracing.data.check import run_check
from sourcetracing.data.protocols import LabelMap, ProtocolError, prepare_splits, read_protocol

ROOT = Path(__file__).resolve().parents[1]

TRAIN = [
    ("./fake/en/tts_models_en_ljspeech_vits/a1.wav", "tts_models/en/ljspeech/vits"),
    ("./fake/en/tts_models_en_ljspeech_vits/a2.wav", "tts_models/en/ljspeech/vits"),
    ("./fake/de/tts_models_de_thorsten_tacotron2-DDC/b1.wav", "tts_models/de/thorsten/tacotron2-DDC"),
    ("./fake/de/tts_models_de_thorsten_tacotron2-DDC/b2.wav", "tts_models/de/thorsten/tacotron2-DDC"),
    ("./fake/en/microsoft_speecht5_tts/c1.wav", "microsoft/speecht5_tts"),
]
DEV = [
    ("./fake/en/tts_models_en_ljspeech_vits/a3.wav", "tts_models/en/ljspeech/vits"),
    ("./fake/fr/tts_models_fr_mai_tacotron2-DDC/d1.wav", "tts_models/fr/mai/tacotron2-DDC"),
    ("./fake/de/griffin_lim/e1.wav", "griffin_lim"),
]
EVAL = DEV[:1] + [
    ("./fake/it/parler_tts/f1.wav", "parler_tts"),
    ("./fake/it/parler_tts/f1.wav", "parler_tts"),  # duplicate row, as in the real eval.csv
    ("./fake/de/tts_models_de_thorsten_tacotron2-DDC/b3.wav", "tts_models/de/thorsten/tacotron2-DDC"),
]


def write_corpus(root: Path, extra_column: bool = True) -> Path:
    """A tiny MLAAD-format release: protocols with slashes in names, a duplicate, an extra column, and audio."""
    proto = root / "protocols"
    proto.mkdir(parents=True)
    for name, rows in (("train", TRAIN), ("dev", DEV), ("eval", EVAL)):
        df = pd.DataFrame(rows, columns=["path", "model_name"])
        if extra_column:
            df["architecture"] = "x"
        df.to_csv(proto / f"{name}.csv", index=False)
        for path, _ in rows:
            wav = root / "mlaad" / path
            wav.parent.mkdir(parents=True, exist_ok=True)
            sf.write(wav, 0.1 * np.sin(np.arange(1600) / 5.0), 16000)
    return proto


def config_for(root: Path, *extra: str):
    return load_config(
        None,
        [
            f"data.root={root / 'mlaad'}",
            f"data.protocols={root / 'protocols'}",
            f"exp_dir={root / 'exp'}",
            "augment.splits=[]",
            *extra,
        ],
    )


def test_read_protocol_drops_duplicates_and_keeps_extra_columns(tmp_path, caplog):
    proto = write_corpus(tmp_path)
    with caplog.at_level(logging.WARNING):
        df = read_protocol(proto / "eval.csv")
    assert len(df) == 3
    assert "dropped 1 duplicate row(s)" in caplog.text
    assert "architecture" in df.columns
    assert set(df["language"]) == {"en", "it", "de"}
    assert df["clip_id"].iloc[0] == "fake/en/tts_models_en_ljspeech_vits/a3.wav"


def test_malformed_protocols_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,label\na.wav,x\n")
    with pytest.raises(ProtocolError, match="missing column"):
        read_protocol(bad)
    with pytest.raises(ProtocolError, match="not found"):
        read_protocol(tmp_path / "none.csv")
    clash = tmp_path / "clash.csv"
    clash.write_text("path,model_name\n./fake/en/a/1.wav,a\n./fake/en/a/1.wav,b\n")
    with pytest.raises(ProtocolError, match="two different systems"):
        read_protocol(clash)


def test_label_map_from_train_only_and_files(tmp_path):
    write_corpus(tmp_path)
    cfg = config_for(tmp_path)
    splits, label_map = prepare_splits(cfg)
    assert label_map.known == sorted({m for _, m in TRAIN})
    assert label_map.num_classes == 3
    assert "griffin_lim" in label_map.ood and "parler_tts" in label_map.ood
    label_map.write(cfg.exp_dir)
    lines = (Path(cfg.exp_dir) / "label_assignment.txt").read_text().splitlines()
    assert lines[0] == "microsoft/speecht5_tts".ljust(50) + "|" + "0".ljust(3) + "|ID"
    assert lines[-1].endswith("|OOD") and len(lines) == 3 + 3
    again = LabelMap.read(cfg.exp_dir)
    assert again.known == label_map.known and again.ood == label_map.ood
    assert LabelMap.from_dict(label_map.to_dict()) == label_map


def test_fine_grained_cells(tmp_path):
    write_corpus(tmp_path)
    splits, _ = prepare_splits(config_for(tmp_path))
    dev = splits["dev"].set_index("model_name")
    assert dev.loc["tts_models/en/ljspeech/vits", "cell"] == "seen_lang/seen_model"
    assert dev.loc["tts_models/fr/mai/tacotron2-DDC", "cell"] == "unseen_lang/unseen_model"
    assert dev.loc["griffin_lim", "cell"] == "seen_lang/unseen_model"
    assert splits["dev"]["label"].tolist() == [2, -1, -1]
    assert splits["eval"].set_index("model_name").loc["parler_tts", "language_seen"] == False  # noqa: E712


def test_label_map_mismatch_is_clear(tmp_path):
    a = LabelMap(known=["x", "y"])
    with pytest.raises(ProtocolError, match="label map mismatch"):
        a.check_same_known(LabelMap(known=["x", "z"]))


def test_data_check_passes_and_writes_label_assignment(tmp_path):
    write_corpus(tmp_path)
    problems, table = run_check(config_for(tmp_path))
    assert problems == []
    assert table.loc["eval", "clips"] == 3
    assert table.loc["eval", "unseen_systems"] == 1 and table.loc["dev", "unseen_languages"] == 1
    assert (tmp_path / "exp" / "label_assignment.txt").is_file()


def test_data_check_lists_missing_files_and_corpora(tmp_path):
    write_corpus(tmp_path)
    for path, _ in TRAIN[:2] + DEV[1:]:
        (tmp_path / "mlaad" / path).unlink()
    cfg = config_for(tmp_path, "augment.splits=[train]", f"augment.musan={tmp_path / 'nomusan'}")
    problems, _ = run_check(cfg)
    text = "\n".join(problems)
    assert "train: 2 of 5 audio files missing" in text
    assert "dev: 2 of 3 audio files missing" in text
    assert "a1.wav" in text
    assert "augmentation 'noise' needs audio files" in text
    assert "augmentation 'reverb' needs RIR" in text


def test_check_cli_exit_codes(tmp_path):
    write_corpus(tmp_path)
    script = str(ROOT / "scripts/preprocess_dataset.py")
    base = [
        sys.executable,
        script,
        "--check",
        "--config",
        str(ROOT / "configs/demo.yaml"),
        f"data.root={tmp_path / 'mlaad'}",
        f"data.protocols={tmp_path / 'protocols'}",
        f"exp_dir={tmp_path / 'exp'}",
        "augment.splits=[]",
    ]
    ok = subprocess.run(base, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "data check passed" in ok.stdout and "unseen_systems" in ok.stdout
    assert (tmp_path / "exp" / "config.yaml").is_file()
    (tmp_path / "mlaad" / DEV[1][0]).unlink()
    bad = subprocess.run(base, capture_output=True, text=True)
    assert bad.returncode == 1
    assert "1 of 3 audio files missing" in bad.stderr


def write_fine(proto: Path, split: str, cells: dict[tuple[str, str], list[tuple[str, str]]]) -> None:
    """Official-style fine/ cell files of one split."""
    (proto / "fine").mkdir(exist_ok=True)
    for (lang_part, model_part), rows in cells.items():
        name = f"{split}___{lang_part}___{model_part}.csv"
        pd.DataFrame(rows, columns=["path", "model_name"]).to_csv(proto / "fine" / name, index=False)


def test_official_fine_cells_are_taken_when_present(tmp_path, caplog):
    proto = write_corpus(tmp_path)
    # dev: the known vits clip listed under model_not_seen, as the official v5 files do for 91 clips
    write_fine(
        proto,
        "dev",
        {
            ("lang_seen", "model_seen"): [],
            ("lang_seen", "model_not_seen"): [DEV[0], DEV[2]],
            ("lang_not_seen", "model_seen"): [],
            ("lang_not_seen", "model_not_seen"): [DEV[1]],
        },
    )
    # eval: the duplicate row again, and one clip in no cell file
    write_fine(
        proto,
        "eval",
        {
            ("lang_seen", "model_seen"): [EVAL[0], EVAL[3], EVAL[3]],
            ("lang_seen", "model_not_seen"): [],
            ("lang_not_seen", "model_seen"): [],
            ("lang_not_seen", "model_not_seen"): [],
        },
    )
    with caplog.at_level(logging.INFO, logger="sourcetracing.data.protocols"):
        splits, _ = prepare_splits(config_for(tmp_path))
    dev = splits["dev"].set_index("model_name")
    assert dev.loc["tts_models/en/ljspeech/vits", "cell"] == "seen_lang/unseen_model"
    assert bool(dev.loc["tts_models/en/ljspeech/vits", "known"])  # known still follows the train split
    assert set(splits["dev"]["cell_source"]) == {"official"}
    assert "differs from the derived one for 1 clip(s)" in caplog.text

    ev = splits["eval"].set_index("model_name")
    assert len(splits["eval"]) == 3  # the duplicate row is still dropped
    assert "eval.csv: dropped 1 duplicate row(s)" in caplog.text
    assert [r.levelname for r in caplog.records if "eval___lang_seen___model_seen.csv" in r.getMessage()] == [
        "INFO"
    ]
    assert (
        ev.loc["parler_tts", "cell_source"] == "derived"
        and ev.loc["parler_tts", "cell"] == "unseen_lang/unseen_model"
    )
    assert "1 clip(s) are in no fine/ cell file" in caplog.text
    assert set(splits["train"]["cell_source"]) == {"derived"}  # no train cell files


def test_fine_cells_conflicts_and_partial_sets(tmp_path, caplog):
    proto = write_corpus(tmp_path)
    write_fine(proto, "dev", {("lang_seen", "model_seen"): DEV[:1], ("lang_seen", "model_not_seen"): DEV[:1]})
    with pytest.raises(ProtocolError, match="listed in more than one cell file"):
        prepare_splits(config_for(tmp_path))
    (proto / "fine" / "dev___lang_seen___model_not_seen.csv").unlink()
    with caplog.at_level(logging.WARNING):
        splits, _ = prepare_splits(config_for(tmp_path))
    assert "dev___lang_not_seen___model_seen.csv" in caplog.text  # missing cell files are named
    assert splits["dev"]["cell_source"].tolist() == ["official", "derived", "derived"]


def test_without_fine_folder_cells_are_derived(tmp_path):
    write_corpus(tmp_path)
    splits, _ = prepare_splits(config_for(tmp_path))
    assert all(set(df["cell_source"]) == {"derived"} for df in splits.values())
