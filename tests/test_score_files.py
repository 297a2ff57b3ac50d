"""Score files of anyone's detector judged against a key written from the protocols: the same report
as the toolkit's own OOD step, to the last digit, and one clear line for every input problem."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sourcetracing.config import load_config
from sourcetracing.errors import DataError, WouldOverwriteError
from sourcetracing.judge import known_class_metrics, ood_step
from sourcetracing.score_files import (
    KEY_FILE_COLUMNS,
    evaluate_scores,
    read_key,
    read_scores,
    write_key,
)
from sourcetracing.systems.outputs import SplitOutputs, SystemOutputs, complete_rows

REPO = Path(__file__).resolve().parents[1]
KNOWN = ["sys/a", "sys/b", "sys/c"]
UNSEEN = ["other/x", "other/z"]
PLAN = {"train": (KNOWN, 10), "dev": ([*KNOWN, "other/x"], 8), "eval": ([*KNOWN, *UNSEEN], 8)}


def evaluate_scores_main():
    """The ``main`` of ``scripts/evaluate_scores.py``, loaded in this process."""
    spec = importlib.util.spec_from_file_location(
        "script_evaluate_scores", REPO / "scripts" / "evaluate_scores.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _clip(split: str, system: str, i: int) -> str:
    lang = "de" if system == "other/z" else "en"
    return f"fake/{lang}/{system.replace('/', '_')}/{split}_{i}.wav"


def write_experiment(root: Path, seed: int = 0):
    """Protocols, a config and a system's outputs (logits and embeddings; no model, no store)."""
    rng = np.random.default_rng(seed)
    centres = {s: rng.normal(0, 2.5, 8) for s in [*KNOWN, *UNSEEN]}
    protocols = root / "protocols"
    protocols.mkdir(parents=True)
    splits = {}
    for split, (systems, n) in PLAN.items():
        # interleave systems so that protocol order is not grouped by system
        frame = pd.DataFrame(
            [{"clip_id": _clip(split, s, i), "model_name": s} for i in range(n) for s in systems]
        )
        lines = ["path,model_name"] + [
            f"./{c},{m}" for c, m in zip(frame["clip_id"], frame["model_name"], strict=True)
        ]
        (protocols / f"{split}.csv").write_text("\n".join(lines) + "\n")
        emb = np.stack([centres[m] + rng.normal(0, 1.3, 8) for m in frame["model_name"]])
        logits = np.stack([[-np.linalg.norm(e - centres[k]) for k in KNOWN] for e in emb])
        splits[split] = SplitOutputs(complete_rows(frame, KNOWN, {"en"}), embeddings=emb, logits=logits)
    cfg = load_config(
        None,
        [
            f"exp_dir={root / 'exp'}",
            f"data.protocols={protocols}",
            f"data.root={root / 'MLAAD'}",
            "ood.knn.k=3",
        ],
    )
    SystemOutputs("mine", KNOWN, splits).write(Path(cfg.exp_dir) / "mine" / "outputs")
    return cfg


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """The toolkit's own judge on a system, then its scores as a score file and the protocols as a key."""
    root = tmp_path_factory.mktemp("scores")
    cfg = write_experiment(root)
    known_class_metrics(cfg, "mine")
    ood_step(cfg, "mine")
    ood = Path(cfg.exp_dir) / "mine" / "ood_step"
    names = list(json.loads((ood / "thresholds.json").read_text())["scorers"])
    parts = [pd.read_csv(ood / f"scores_{s}.tsv", sep="\t", dtype=str) for s in ("dev", "eval")]
    score_file = root / "mine_scores.tsv"
    pd.concat(parts)[["clip_id", *names, "predicted"]].to_csv(score_file, sep="\t", index=False)
    key = write_key(cfg, root / "key.tsv")
    return cfg, root, score_file, key, names


def test_the_key_lists_every_clip_with_its_status_language_and_cell(judged) -> None:
    cfg, root, _, key_path, _ = judged
    key = pd.read_csv(key_path, sep="\t", keep_default_na=False)
    assert list(key.columns) == KEY_FILE_COLUMNS
    assert len(key) == sum(len(systems) * n for systems, n in PLAN.values())
    assert set(key.loc[key["status"] == "known", "system"]) == set(KNOWN)
    assert set(key.loc[key["status"] == "unseen", "system"]) == set(UNSEEN)
    z = key[key["system"] == "other/z"].iloc[0]
    assert (z["split"], z["language"], z["language_seen"], z["cell"]) == (
        "eval",
        "de",
        False,
        "unseen_lang/unseen_model",
    )
    assert read_key(key_path).class_names == KNOWN


def test_a_score_file_of_the_toolkits_own_scores_reproduces_its_report_exactly(judged, tmp_path) -> None:
    cfg, root, score_file, key, names = judged
    report = evaluate_scores(score_file, key, tmp_path, name="again")
    mine = Path(cfg.exp_dir) / "mine"
    again = tmp_path / "again"
    assert report["clips"] == {"dev": 32, "eval": 40} and report["not_scored"] == report["not_in_key"] == 0
    summary = (mine / "ood_step" / "ood_summary.csv").read_text()
    assert (again / "ood_step" / "ood_summary.csv").read_text() == summary  # every digit
    subsets = set(pd.read_csv(again / "ood_step" / "ood_summary.csv")["subset"])
    assert {"all", "seen_lang/unseen_model", "language:de", "unseen_system:other/z"} <= subsets
    ours = json.loads((mine / "ood_step" / "thresholds.json").read_text())
    theirs = json.loads((again / "ood_step" / "thresholds.json").read_text())
    assert theirs["default"] == ours["default"] and list(theirs["scorers"]) == names
    for (
        name
    ) in names:  # threshold, EERs, dev calibration (how a registered scorer was fitted is not a score's)
        mine_fitted = {k: v for k, v in ours["scorers"][name].items() if k != "tuning"}
        assert theirs["scorers"][name] == mine_fitted
    # known-class metrics from the predicted column: the same as from the logits
    for split in ("dev", "eval"):
        a = json.loads((mine / "results" / "metrics.json").read_text())[split]
        b = json.loads((again / "results" / "metrics.json").read_text())[split]
        for metric in ("accuracy", "balanced_accuracy", "macro_f1", "n"):
            assert a[metric] == b[metric]
        assert (again / "results" / f"confusion_{split}.csv").read_text() == (
            mine / "results" / f"confusion_{split}.csv"
        ).read_text()
    for f in ("OOD_eval_results.txt", "roc_eval.png", "manifest.json"):
        assert (again / "ood_step" / f).is_file()
    assert (again / "outputs" / "meta.json").is_file()


def test_posteriors_are_the_dev_calibration_at_the_prior_and_the_dev_threshold(judged, tmp_path) -> None:
    _, _, score_file, key, names = judged
    evaluate_scores(score_file, key, tmp_path, name="p", prior=0.1)
    table = pd.read_csv(tmp_path / "p" / "posteriors" / "eval.tsv", sep="\t")
    thresholds = json.loads((tmp_path / "p" / "ood_step" / "thresholds.json").read_text())["scorers"]
    scores = pd.read_csv(score_file, sep="\t").set_index("clip_id").loc[table["clip_id"]]
    for name in names:
        cal = thresholds[name]["calibration"]
        llr = cal["slope"] * scores[name].to_numpy() + cal["offset"]
        np.testing.assert_allclose(table[f"{name}_llr"], llr, rtol=1e-12, atol=1e-12)
        p_unseen = 1 / (1 + np.exp(-(llr + np.log(0.1 / 0.9))))  # sigmoid(llr + logit(prior))
        np.testing.assert_allclose(table[f"{name}_p_unseen"], p_unseen, rtol=1e-9)
        flagged = scores[name].to_numpy() >= thresholds[name]["threshold"]
        assert (table[f"{name}_unseen"].to_numpy() == flagged).all()
    dcf = pd.read_csv(tmp_path / "p" / "posteriors" / "dcf.csv")
    assert set(dcf["prior"]) == {0.1} and len(dcf) == 2 * len(names)
    assert (dcf["min_dcf"] <= dcf["actual_dcf"] + 1e-12).all()


def test_scores_without_predicted_give_the_ood_report_only(judged, tmp_path) -> None:
    _, _, score_file, key, names = judged
    only = tmp_path / "only.tsv"
    pd.read_csv(score_file, sep="\t", dtype=str)[["clip_id", names[0]]].to_csv(only, sep="\t", index=False)
    report = evaluate_scores(only, key, tmp_path)
    assert report["known_class"] == {} and not (tmp_path / "only" / "results").exists()
    summary = pd.read_csv(tmp_path / "only" / "ood_step" / "ood_summary.csv")
    assert set(summary["scorer"]) == {names[0]} and summary["open_set_macro_f1"].isna().all()
    assert summary["eer"].notna().any()


def test_missing_clips_are_counted_and_evaluated_only_when_allowed(judged, tmp_path) -> None:
    _, _, score_file, key, names = judged
    scores = pd.read_csv(score_file, sep="\t", dtype=str)
    extra = scores.iloc[:1].assign(clip_id="fake/en/nobody/x.wav")
    partial = pd.concat([scores.iloc[3:], extra])
    path = tmp_path / "partial.tsv"
    partial.to_csv(path, sep="\t", index=False)
    with pytest.raises(DataError, match=r"1 scored clip\(s\) are not in the key.*3 of the key's 72 dev/eval"):
        evaluate_scores(path, key, tmp_path)
    report = evaluate_scores(path, key, tmp_path, allow_missing=True)
    assert (report["not_in_key"], report["not_scored"]) == (1, 3)
    assert sum(report["clips"].values()) == 69


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_score_files_are_one_clear_line(judged, tmp_path, capsys) -> None:
    _, _, score_file, key, _ = judged
    first, second = pd.read_csv(score_file, sep="\t", dtype=str)["clip_id"].iloc[:2]
    dup = _write(tmp_path / "dup.tsv", f"clip_id\ts\n{first}\t0.1\n./{first}\t0.2\n")
    with pytest.raises(DataError, match=r"1 clip id\(s\) appear more than once"):
        read_scores(dup)
    text = _write(
        tmp_path / "text.tsv", f"clip_id\ts\tmodel_name\n{first}\t0.1\tsys/a\n{second}\t0.3\tsys/b\n"
    )
    with pytest.raises(DataError, match=r"column 'model_name' .* line 2: 'sys/a'"):
        read_scores(text)
    nan = _write(tmp_path / "nan.tsv", f"clip_id\ts\n{first}\t0.1\n{second}\tnan\n")
    with pytest.raises(
        DataError, match=r"'s' holds 1 value\(s\) that are not finite numbers, first on line 3"
    ):
        read_scores(nan)
    with pytest.raises(DataError, match="no score column"):
        read_scores(_write(tmp_path / "none.tsv", f"clip_id\tpredicted\n{first}\tsys/a\n"))
    with pytest.raises(DataError, match="differ from those of"):
        read_scores([dup, _write(tmp_path / "other.tsv", f"clip_id\tt\n{second}\t1\n")])
    # the script: one line on stderr, exit code 1
    assert evaluate_scores_main()(["--scores", str(text), "--key", str(key), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "model_name" in err[0]


def test_a_trained_systems_folder_is_never_overwritten(judged) -> None:
    cfg, _, score_file, key, _ = judged
    before = (Path(cfg.exp_dir) / "mine" / "outputs" / "manifest.json").read_text()
    with pytest.raises(WouldOverwriteError, match="choose another --out or --name"):
        evaluate_scores(score_file, key, cfg.exp_dir, name="mine")
    assert (Path(cfg.exp_dir) / "mine" / "outputs" / "manifest.json").read_text() == before


def test_predicted_must_name_a_known_system(judged, tmp_path) -> None:
    _, _, score_file, key, names = judged
    scores = pd.read_csv(score_file, sep="\t", dtype=str)
    scores.loc[5, "predicted"] = "other/x"
    path = tmp_path / "pred.tsv"
    scores.to_csv(path, sep="\t", index=False)
    with pytest.raises(DataError, match=r"'predicted' must name a known \(train\) system.*other/x"):
        evaluate_scores(path, key, tmp_path)


def test_a_key_without_unseen_dev_clips_or_malformed_is_refused(judged, tmp_path) -> None:
    _, _, score_file, key_path, _ = judged
    key = pd.read_csv(key_path, sep="\t", dtype=str, keep_default_na=False)
    no_unseen = tmp_path / "k1.tsv"
    key[~((key["split"] == "dev") & (key["status"] == "unseen"))].to_csv(no_unseen, sep="\t", index=False)
    with pytest.raises(DataError, match="no dev clips of unseen systems"):
        evaluate_scores(score_file, no_unseen, tmp_path, allow_missing=True)
    bad_status = tmp_path / "k2.tsv"
    key.assign(status=key["status"].replace("unseen", "ood")).to_csv(bad_status, sep="\t", index=False)
    with pytest.raises(DataError, match=r"status must be one of \['known', 'unseen'\]"):
        read_key(bad_status)
    mixed = tmp_path / "k3.tsv"
    key.assign(status=np.where(key.index == 0, "unseen", key["status"])).to_csv(mixed, sep="\t", index=False)
    with pytest.raises(DataError, match="both known and unseen"):
        read_key(mixed)
    dup = tmp_path / "k4.tsv"
    pd.concat([key, key.iloc[:1]]).to_csv(dup, sep="\t", index=False)
    with pytest.raises(DataError, match="more than once"):
        read_key(dup)
    with pytest.raises(DataError, match="lacks the column"):
        read_key(_write(tmp_path / "k5.tsv", "clip_id\tsystem\nx\ty\n"))


@pytest.mark.slow
def test_scripts_write_the_key_and_evaluate_end_to_end(judged, tmp_path) -> None:
    cfg, root, score_file, key, names = judged
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"exp_dir: {tmp_path / 'exp'}\ndata:\n  protocols: {cfg.data.protocols}\n  root: {cfg.data.root}\n"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "write_key.py"), "--config", str(config)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "exp" / "key.tsv").read_text() == Path(key).read_text()
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "evaluate_scores.py"), "--scores", str(score_file),
         "--key", str(tmp_path / "exp" / "key.tsv"), "--out", str(tmp_path / "ev"), "--default", names[0]],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "OOD detection" in done.stdout and f"default {names[0]}" in done.stdout
    assert (tmp_path / "ev" / "mine_scores" / "ood_step" / "ood_summary.csv").is_file()
