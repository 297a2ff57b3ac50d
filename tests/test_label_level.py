"""Architecture-level labels (``data.label: architecture``): the label map, known/unseen and the reports."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from corpus_fixtures import KNOWN, UNSEEN_DEV, UNSEEN_EVAL, make_tiny_corpus, model_dir

from sourcetracing.config import load_config
from sourcetracing.data.check import run_check
from sourcetracing.data.protocols import (
    LabelMap,
    ProtocolError,
    prepare_splits,
    protocol_digest,
    read_protocol,
)

# the tiny corpus's systems and the architecture each is made with: two vits systems (one of them
# never in train), one tacotron2 system, griffin_lim, and an architecture no train system has
ARCHITECTURES = {
    "tts_models/en/ljspeech/vits": "vits",
    "tts_models/de/thorsten/tacotron2-DDC": "tacotron2",
    "griffin_lim": "griffin_lim",
    "tts_models/fr/mai/tacotron2-DDC": "glow_tts",
    "tts_models/es/css10/vits": "vits",
}
LANGUAGE = {**KNOWN, **UNSEEN_DEV, **UNSEEN_EVAL}


def _systems_csv(path, mapping=ARCHITECTURES):
    """A ``systems.csv`` as scripts/make_protocols.py writes it (role and counts beside the architecture)."""
    rows = [
        {"system": s, "role": "known", "architecture": a, "languages": "en", "train": 1}
        for s, a in mapping.items()
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _config(corpus, tmp_path, **data):
    overrides = [f"data.{k}={v}" for k, v in data.items()]
    return load_config(corpus.config_path, [*overrides, "ood.knn.k=2", "mfcc.plain=false"])


def test_architecture_labels_reach_the_label_map_and_the_reports(tmp_path):
    from sourcetracing.judge import judge_system
    from sourcetracing.systems.mfcc import export_mfcc
    from sourcetracing.systems.outputs import SystemOutputs

    corpus = make_tiny_corpus(tmp_path / "c", clips_per_system=4, dev_clips=3, eval_clips=3)
    cfg = _config(
        corpus, tmp_path, label="architecture", label_map_csv=_systems_csv(tmp_path / "systems.csv")
    )
    problems, table = run_check(cfg)
    assert problems == []
    assert "known_architectures" in table.columns and table.loc["eval", "systems"] == 5
    assert table.loc["eval", "architectures"] == 4

    label_map = LabelMap.read(cfg.exp_dir)
    assert label_map.level == "architecture"
    assert label_map.known == ["griffin_lim", "tacotron2", "vits"] and label_map.ood == ["glow_tts"]
    assert label_map.members["vits"] == ["tts_models/en/ljspeech/vits", "tts_models/es/css10/vits"]
    assert label_map.digest() != LabelMap(label_map.known).digest()  # a system-level checkpoint does not fit
    assignment = (tmp_path / "c" / "exp" / "label_assignment.txt").read_text().splitlines()
    assert [line.split("|")[0].strip() for line in assignment] == [
        "griffin_lim",
        "tacotron2",
        "vits",
        "glow_tts",
    ]

    splits, _ = prepare_splits(cfg)
    ev = splits["eval"].set_index("system")
    # a system never in train whose architecture is: known, with that architecture's class
    assert ev.loc["tts_models/es/css10/vits", "known"].all()
    assert (ev.loc["tts_models/es/css10/vits", "label"] == label_map.label("vits")).all()
    assert not ev.loc["tts_models/fr/mai/tacotron2-DDC", "known"].any()
    assert set(ev["cell_source"]) == {"derived"}
    # the protocol digest is the protocol's, whatever the level (a store built at one level is relabelled)
    raw = read_protocol(corpus.protocols / "eval.csv")
    assert protocol_digest(splits["eval"]) == protocol_digest(raw)

    export_mfcc(cfg, n_jobs=1)
    out = tmp_path / "c" / "exp" / "mfcc"
    outputs = SystemOutputs.read(out / "outputs")
    assert outputs.class_names == ["griffin_lim", "tacotron2", "vits"]
    assert set(outputs.split("eval").rows["model_name"]) == {"griffin_lim", "tacotron2", "vits", "glow_tts"}
    judge_system(cfg, "mfcc")
    for text in ("results/eval_in_domain_results.txt", "ood_step/OOD_eval_results.txt"):
        assert (out / text).read_text().startswith("label level: architecture"), text
    assert json.loads((out / "ood_step" / "thresholds.json").read_text())["label_level"] == "architecture"
    manifest = json.loads((out / "results" / "manifest.json").read_text())
    assert manifest["label_level"] == "architecture"
    subsets = set(pd.read_csv(out / "ood_step" / "ood_summary.csv")["subset"])
    assert any(s.endswith("glow_tts") for s in subsets)  # per unseen architecture
    assert not any("mai/tacotron2" in s for s in subsets)


def test_system_level_is_the_default_and_unchanged(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c")
    cfg = load_config(corpus.config_path)
    assert cfg.data.label == "system"
    splits, label_map = prepare_splits(cfg)
    assert label_map.level == "system" and label_map.known == sorted(KNOWN)
    assert (splits["eval"]["model_name"] == splits["eval"]["system"]).all()
    label_map.write(tmp_path / "exp")
    assert LabelMap.read(tmp_path / "exp").level == "system"
    assert LabelMap.read(tmp_path / "exp").digest() == LabelMap(sorted(KNOWN)).digest()


def _write_meta(corpus, mapping):
    """One pipe-separated MLAAD ``meta.csv`` per system folder (the v5 header)."""
    header = "path|original_file|language|is_original_language|duration|training_data|model_name|architecture|transcript"
    for system, arch in mapping.items():
        folder = corpus.mlaad / "fake" / LANGUAGE[system] / model_dir(system)
        lines = [header]
        for wav in sorted(folder.glob("*.wav")):
            rel = f"./fake/{LANGUAGE[system]}/{model_dir(system)}/{wav.name}"
            lines.append(f"{rel}|x.wav|{LANGUAGE[system]}|True|1.0|data|{system}|{arch}|a text, with | a bar")
        (folder / "meta.csv").write_text("\n".join(lines) + "\n")


def test_architectures_from_the_mlaad_metadata_and_a_missing_one_is_a_clear_error(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c")
    _write_meta(corpus, ARCHITECTURES)
    cfg = _config(corpus, tmp_path, label="architecture")
    _, label_map = prepare_splits(cfg)
    assert label_map.known == ["griffin_lim", "tacotron2", "vits"] and label_map.ood == ["glow_tts"]

    (corpus.mlaad / "fake" / "fr" / model_dir("tts_models/fr/mai/tacotron2-DDC") / "meta.csv").unlink()
    with pytest.raises(
        ProtocolError, match=r"no architecture for 1 of 5 system\(s\).*tts_models/fr/mai/tacotron2-DDC"
    ):
        prepare_splits(cfg)
    partial = {s: a for s, a in ARCHITECTURES.items() if s != "griffin_lim"}
    cfg = _config(
        corpus, tmp_path, label="architecture", label_map_csv=_systems_csv(tmp_path / "p.csv", partial)
    )
    with pytest.raises(ProtocolError, match="e.g. griffin_lim; give data.label_map_csv"):
        prepare_splits(cfg)
    (tmp_path / "bad.csv").write_text("model,arch\na,b\n")
    cfg = _config(corpus, tmp_path, label="architecture", label_map_csv=tmp_path / "bad.csv")
    with pytest.raises(ProtocolError, match=r"lacks the column\(s\) \['system', 'architecture'\]"):
        prepare_splits(cfg)
