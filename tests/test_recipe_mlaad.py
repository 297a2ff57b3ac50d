"""The MLAAD recipe end to end on a fixture laid out as MLAAD v5 and its source-tracing protocols.

``./run.sh --config configs/refd_mlaad.yaml`` stages 1-11 and ``python train_ge2e.py --config
configs/config_ge2e.yaml``, as a user runs them (no interpreter named), with tiny random-weight
wav2vec2 models saved locally in place of the hub models. Overridden, and only because a test
must: where the data and the experiment are, the model path, and the run length (one epoch; GE2E
batches of the fixture's three known systems).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from corpus_fixtures import KNOWN, make_tiny_corpus, save_tiny_wav2vec2

from sourcetracing.data.protocols import FINE_CELLS, fine_file_name, language_of

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def make_mlaad_fixture(root: Path, clips_per_system: int = 4):
    """The tiny corpus (slashes in model names, en/de/fr/es, native rates 8-44.1 kHz) plus two
    duplicate eval rows and the official ``fine/`` cell files of dev and eval. ``clips_per_system``:
    train clips of each of the three known systems (dev and eval: 3 per system either way)."""
    corpus = make_tiny_corpus(
        root, clips_per_system=clips_per_system, dev_clips=3, eval_clips=3, max_len_s=1.0
    )
    eval_csv = corpus.protocols / "eval.csv"
    lines = eval_csv.read_text().splitlines()
    eval_csv.write_text("\n".join([*lines, *lines[1:3]]) + "\n")  # MLAAD's eval.csv repeats rows
    train_languages = {language_of(p) for p in pd.read_csv(corpus.protocols / "train.csv")["path"]}
    fine = corpus.protocols / "fine"
    fine.mkdir()
    for split in ("dev", "eval"):
        df = pd.read_csv(corpus.protocols / f"{split}.csv").drop_duplicates()
        lang_seen = df["path"].map(language_of).isin(train_languages)
        model_seen = df["model_name"].isin(KNOWN)
        for (lang_part, model_part), _ in FINE_CELLS.items():
            keep = (lang_seen == (lang_part == "lang_seen")) & (model_seen == (model_part == "model_seen"))
            df[keep].to_csv(fine / fine_file_name(split, lang_part, model_part), index=False)
    return corpus


def _run(cmd: list[str], timeout: int) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd[:3])} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


def test_mlaad_recipe_stages_1_to_11_and_the_ge2e_recipe(tmp_path):
    corpus = make_mlaad_fixture(tmp_path / "data")
    w2v = save_tiny_wav2vec2(tmp_path / "wav2vec2-base", num_layers=5)
    w2v_960h = save_tiny_wav2vec2(tmp_path / "wav2vec2-base-960h", num_layers=2, seed=1)
    data = [f"data.root={corpus.mlaad}", f"data.protocols={corpus.protocols}"]
    exp = tmp_path / "exp" / "refd_mlaad"
    overrides = [
        *data,
        f"augment.musan={corpus.musan}",
        f"augment.rirs={corpus.rirs}",
        f"exp_dir={exp}",
        f"frontend.hf_ssl.model={w2v}",
        "train.epochs=1",
        "ge2e.epochs=1",
        "ge2e.steps_per_epoch=2",
        "ge2e.n_systems=3",
    ]
    out = _run(
        [
            "./run.sh",
            "--config",
            "configs/refd_mlaad.yaml",
            "--stage",
            "1",
            "--trace-sample",
            "4",
            "--",
            *overrides,
        ],
        600,
    )
    assert "run.sh: python .venv/bin/python" in out or "run.sh: python python3" in out
    assert "dropped 2 duplicate row(s)" in out
    assert "cost estimate (before any work):" in out
    for stage in range(1, 12):
        assert f"== stage {stage}:" in out
    assert "== stage 0:" not in out  # the downloads are the fixture
    for rel in (
        "label_map.csv",
        "aasist/trained_models/best.pt",
        "aasist/results/eval_in_domain_results.txt",
        "aasist/ood_step/OOD_eval_results.txt",
        "ge2e/ood_step/OOD_eval_results.txt",
        "mfcc/ood_step/OOD_eval_results.txt",
        "stats/ood_step/OOD_eval_results.txt",
        "fusion/ood_step/OOD_eval_results.txt",
        "aasist/embeddings/embedding_map.png",
        "summary.md",
    ):
        assert (exp / rel).is_file(), rel
    eval_rows = pd.read_csv(exp / "aasist" / "outputs" / "eval.tsv", sep="\t")
    assert len(eval_rows) == len(eval_rows["clip_id"].unique()) == 15  # 5 systems x 3, duplicates dropped
    assert set(eval_rows["cell"]) >= {"seen_lang/seen_model", "unseen_lang/unseen_model"}
    traces = list((exp / "trace").glob("trace_*.csv"))
    assert len(traces) == 1 and len(pd.read_csv(traces[0])) == 4
    meta = json.loads(next((exp / "features").glob("*/meta.json")).read_text())
    assert meta["shape"][1] == 32  # the tiny model's hidden size: the model came from the given path

    ge2e_exp = tmp_path / "exp" / "ge2e_mlaad"
    _run(
        [sys.executable, "train_ge2e.py", "--config", "configs/config_ge2e.yaml", *data, f"exp_dir={ge2e_exp}",
         f"ge2e.encoder.hf_ssl.model={w2v_960h}", "ge2e.n_systems=3"],
        300,
    )  # fmt: skip
    assert (ge2e_exp / "ge2e" / "trained_models" / "best.pt").is_file()
    assert (ge2e_exp / "ge2e" / "results" / "eval_in_domain_results.txt").is_file()
