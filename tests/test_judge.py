"""Judging from files: known-class metrics, OOD scoring, reports and the summary on an outputs/
folder alone; components registered from outside the library (a scorer, a front end)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sourcetracing.components import FRONTENDS
from sourcetracing.config import load_config
from sourcetracing.errors import StaleInputError
from sourcetracing.features.frontends import FrontEnd
from sourcetracing.features.store import store_dir, store_settings
from sourcetracing.judge import judge_system, known_class_metrics, ood_step
from sourcetracing.ood.scorers import SCORERS, Scorer, register
from sourcetracing.summary import experiment_rows, summarize
from sourcetracing.systems.outputs import SplitOutputs, SystemOutputs

KNOWN = ["sys/a", "sys/b", "sys/c"]


def _rows(split: str, systems: list[str], n: int) -> pd.DataFrame:
    rows = []
    for s in systems:
        for i in range(n):
            lang = "de" if s == "other/z" else "en"
            rows.append({"clip_id": f"fake/{lang}/{s.replace('/', '_')}/{split}_{i}.wav", "model_name": s})
    return pd.DataFrame(rows)


def write_outputs(
    exp: Path, name: str, with_logits: bool, seed: int = 0, scores: bool = False, spread: float = 4.0
) -> SystemOutputs:
    """A system's outputs folder: separable known classes, unseen systems elsewhere (no model, no store);
    a smaller ``spread`` of the system centres makes the OOD task harder."""
    rng = np.random.default_rng(seed)
    centres = {s: rng.normal(0, spread, 8) for s in [*KNOWN, "other/x", "other/z"]}
    plan = {
        "train": (KNOWN, 10),
        "dev": ([*KNOWN, "other/x"], 6),
        "eval": ([*KNOWN, "other/x", "other/z"], 6),
    }
    splits = {}
    for split, (systems, n) in plan.items():
        frame = _rows(split, systems, n)
        emb = np.stack([centres[m] + rng.normal(0, 1, 8) for m in frame["model_name"]])
        logits = None
        if with_logits:
            logits = np.stack([[-np.linalg.norm(e - centres[k]) for k in KNOWN] for e in emb])
        if scores and split != "train":
            frame["score_mine"] = -np.max(
                np.stack([[-np.linalg.norm(e - centres[k]) for k in KNOWN] for e in emb]), 1
            )
        splits[split] = SplitOutputs(frame, embeddings=emb, logits=logits)
    from sourcetracing.systems.outputs import complete_rows

    for part in splits.values():
        part.rows = complete_rows(part.rows, KNOWN, {"en"})
    outputs = SystemOutputs(name, KNOWN, splits)
    outputs.write(exp / name / "outputs")
    return outputs


@pytest.fixture()
def cfg(tmp_path):
    return load_config(None, [f"exp_dir={tmp_path / 'exp'}", "ood.knn.k=3"])


def test_every_report_from_an_outputs_folder_alone(cfg, tmp_path) -> None:
    exp = Path(cfg.exp_dir)
    write_outputs(exp, "mine", with_logits=True)
    assert not list(exp.rglob("*.pt")) and not (exp / "features").exists()
    results, summary = judge_system(cfg, "mine")
    assert results["eval"]["macro_f1"] > 0.9 and results["eval"]["n"] == 18
    for f in (
        "dev_in_domain_results.txt",
        "eval_in_domain_results.txt",
        "metrics.json",
        "confusion_eval.png",
    ):
        assert (exp / "mine" / "results" / f).is_file(), f
    for f in (
        "OOD_eval_results.txt",
        "ood_summary.csv",
        "scores_dev.tsv",
        "scores_eval.tsv",
        "thresholds.json",
        "roc_eval.png",
        "manifest.json",
    ):
        assert (exp / "mine" / "ood_step" / f).is_file(), f
    assert set(summary["scorer"]) == {"nsd", "msp", "maxlogit", "energy", "knn", "mahalanobis", "centroid"}
    ev = summary[(summary.split == "eval") & (summary.subset == "all")].set_index("scorer")
    assert ev.loc["knn", "auroc"] > 0.9
    table, text = summarize([exp], exp / "summary.md")
    assert set(table["system"]) == {"mine"} and "eval OOD EER" in text and (exp / "summary.md").is_file()


def test_summary_of_several_runs_is_the_mean_and_sd_of_each_runs_numbers(tmp_path) -> None:
    runs = []
    for seed in range(3):  # the same "config" with three seeds: three experiment folders
        cfg = load_config(None, [f"exp_dir={tmp_path / f'exp_s{seed}'}", "ood.knn.k=3"])
        write_outputs(Path(cfg.exp_dir), "mine", with_logits=True, seed=seed)
        judge_system(cfg, "mine")
        runs.append(Path(cfg.exp_dir))
    singles = [experiment_rows(run)[0].set_index("scorer") for run in runs]
    table, text = summarize(runs, tmp_path / "seeds.md")
    table = table.set_index("scorer")
    assert set(table.index) == set(singles[0].index) and (table["n"] == 3).all()
    for col in ("eval_eer_%", "eval_auroc", "eval_macro_f1", "eval_cllr"):
        values = np.array([[s.loc[k, col] for k in table.index] for s in singles])  # runs x scorers
        np.testing.assert_allclose(table[col], values.mean(0), rtol=1e-12)
        np.testing.assert_allclose(table[col + "_sd"], values.std(0, ddof=1), rtol=1e-9, atol=1e-12)
    chosen = sum(int(s.loc[k, "default"]) for s in singles for k in table.index)
    assert table["chosen"].sum() == chosen == 3  # one dev-chosen scorer per run
    assert "Mean ± sd over 3 runs" in text and " ± " in text and "Computed on: " in text
    # the machine line names the CPU's vector level, which changes a seed's numbers between CPUs
    assert f"CPUs, {torch.backends.cpu.get_cpu_capability()}" in text
    assert (tmp_path / "seeds.md").read_text() == text


def test_the_dev_chosen_system_follows_dev_alone(cfg) -> None:
    from sourcetracing.summary import dev_selected

    exp = Path(cfg.exp_dir)
    for seed, system in enumerate(("one", "two", "three")):
        write_outputs(exp, system, with_logits=seed != 1, seed=seed)
        judge_system(cfg, system)
    rows, _ = experiment_rows(exp)
    picked = dev_selected(rows)
    # the rule, from the thresholds files: the lowest dev EER among each system's own choice, then
    # the higher dev AUROC
    candidates = []
    for system in ("one", "two", "three"):
        info = json.loads((exp / system / "ood_step" / "thresholds.json").read_text())
        own = info["scorers"][info["default"]]
        candidates.append((own["dev_eer"], -own["dev_auroc"], system, info["default"]))
    assert picked == min(candidates)[2:]
    # eval's numbers, made to favour every other candidate, change nothing
    rigged = rows.copy()
    for col in [c for c in rows.columns if c.startswith("eval_") or c == "worst_unseen_auroc"]:
        rigged[col] = np.where(rigged["system"] == picked[0], 0.0, 1.0)
    rigged["eval_eer_%"] = np.where(rigged["system"] == picked[0], 99.0, 0.0)
    assert dev_selected(rigged) == picked
    # a dev-EER tie is broken by dev AUROC, not by the name
    tied = rows[rows["default"]].assign(**{"dev_eer_%": 5.0})
    tied["dev_auroc"] = np.where(tied["system"] == "three", 0.99, 0.5)
    assert dev_selected(tied)[0] == "three"


def test_the_summary_lists_each_runs_dev_chosen_system_against_the_mfcc_reference(tmp_path) -> None:
    from sourcetracing.summary import chosen_table, dev_selected

    runs = []
    for seed in range(3):
        cfg = load_config(None, [f"exp_dir={tmp_path / f'exp_s{seed}'}", "ood.knn.k=3"])
        for i, system in enumerate(("mfcc", "mine")):
            spread = 0.7 if system == "mfcc" else 1.5  # a reference with OOD errors to be held against
            write_outputs(Path(cfg.exp_dir), system, with_logits=True, seed=10 * seed + i, spread=spread)
            judge_system(cfg, system)
        runs.append(Path(cfg.exp_dir))
    frames = [experiment_rows(run)[0] for run in runs]
    table = chosen_table(runs, frames)
    assert len(table) == 4 and table["run"].iloc[-1] == "mean ± sd"
    eers = []
    for run, frame, (_, row) in zip(runs, frames, table.iloc[:3].iterrows(), strict=True):
        system, scorer = dev_selected(frame)
        assert row["run"] == str(run) and row["chosen on dev"] == f"{system} ({scorer})"
        picked = frame[(frame["system"] == system) & (frame["scorer"] == scorer)].iloc[0]
        best_reference = frame.loc[frame["system"] == "mfcc", "eval_eer_%"].min()
        assert best_reference > 1.0
        assert row["eval OOD EER (%)"] == f"{picked['eval_eer_%']:.1f}"
        assert row["÷ best mfcc eval EER"] == f"{picked['eval_eer_%'] / best_reference:.3f}"
        eers.append(picked["eval_eer_%"])
    assert table["eval OOD EER (%)"].iloc[-1] == f"{np.mean(eers):.1f} ± {np.std(eers, ddof=1):.1f}"
    _, text = summarize(runs)
    assert "| run | chosen on dev |" in text


def test_embedding_only_system_gets_embedding_scorers_and_a_centroid_decision(cfg) -> None:
    exp = Path(cfg.exp_dir)
    write_outputs(exp, "emb", with_logits=False)
    results = known_class_metrics(cfg, "emb")
    assert results["eval"]["accuracy"] > 0.9  # nearest train centroid
    summary = ood_step(cfg, "emb")
    assert set(summary["scorer"]) == {"knn", "mahalanobis", "centroid"}


def test_precomputed_scores_of_a_users_own_model_are_judged(cfg) -> None:
    exp = Path(cfg.exp_dir)
    write_outputs(exp, "user", with_logits=False, scores=True)
    summary = ood_step(cfg, "user", ["knn"])
    assert set(summary["scorer"]) == {"knn", "mine"}
    thresholds = json.loads((exp / "user" / "ood_step" / "thresholds.json").read_text())
    assert set(thresholds["scorers"]) == {"knn", "mine"}


def test_a_scorer_registered_from_outside_appears_in_every_systems_report(cfg) -> None:
    @register("_norm_test", defaults={"power": 1.0})
    class NormScorer(Scorer):
        needs = ("embeddings",)

        def __init__(self, power: float = 1.0, chunk_size: int = 0):
            self.power = power

        def score(self, emb, logits):
            return -(np.linalg.norm(emb, axis=1) ** self.power)

    try:
        cfg2 = load_config(
            None,
            [
                f"exp_dir={cfg.exp_dir}",
                "ood.knn.k=3",
                "ood.scorers=[knn, _norm_test]",
                "ood._norm_test.power=2.0",
            ],
        )
        assert cfg2.ood._norm_test.power == 2.0  # its own config section
        exp = Path(cfg2.exp_dir)
        write_outputs(exp, "one", with_logits=True)
        write_outputs(exp, "two", with_logits=False, seed=1)
        for system in ("one", "two"):
            _, summary = judge_system(cfg2, system)
            assert "_norm_test" in set(summary["scorer"])
            assert (
                "_norm_test"
                in json.loads((exp / system / "ood_step" / "thresholds.json").read_text())["scorers"]
            )
        table, _ = summarize([exp])
        assert set(table.loc[table["scorer"] == "_norm_test", "system"]) == {"one", "two"}
    finally:
        SCORERS.unregister("_norm_test")


PLUGIN = """
import numpy as np
from sourcetracing.ood.scorers import Scorer, register


@register("_plugin_norm", defaults={"power": 1.0})
class PluginNorm(Scorer):
    needs = ("embeddings",)

    def __init__(self, power: float = 1.0, chunk_size: int = 0):
        self.power = power

    def score(self, emb, logits):
        return -(np.linalg.norm(emb, axis=1) ** self.power)
"""


def test_a_plugin_file_named_in_the_config_adds_a_scorer_to_the_step_scripts(tmp_path) -> None:
    import subprocess
    import sys

    plugin = tmp_path / "my_scorer.py"
    plugin.write_text(PLUGIN)
    exp = tmp_path / "exp"
    config = tmp_path / "mine.yaml"
    config.write_text(
        f"exp_dir: {exp}\nplugins: [{plugin}]\n"
        "ood: {scorers: [knn, _plugin_norm], _plugin_norm: {power: 2.0}, knn: {k: 3}}\n"
    )
    write_outputs(exp, "one", with_logits=False)
    script = Path(__file__).resolve().parents[1] / "scripts" / "ood_detector.py"
    run = subprocess.run(
        [sys.executable, str(script), "--config", str(config), "--system", "one"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = pd.read_csv(exp / "one" / "ood_step" / "ood_summary.csv")
    assert set(summary["scorer"]) == {"knn", "_plugin_norm"}
    assert "_plugin_norm" not in SCORERS.names()  # only the child process imported it
    missing = subprocess.run(
        [sys.executable, str(script), "--config", str(config), "--system", "one", "plugins=[no_such_mod]"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert missing.returncode != 0 and "plugins: cannot import no_such_mod" in missing.stderr


def test_a_front_end_registered_from_outside_has_only_its_settings_in_the_store_hash(tmp_path) -> None:
    class MeanFrames(FrontEnd):
        name = "_frames_test"

        def __init__(self, frame: int):
            self.frame = frame

        def __call__(self, waves):
            b, s = waves.shape
            return waves[:, : s // self.frame * self.frame].reshape(b, -1, self.frame).float()

        def output_shape(self, num_samples):
            return num_samples // self.frame, self.frame

    @FRONTENDS.register("_frames_test", defaults={"frame": 160})
    def build(settings, device, sample_rate):
        return MeanFrames(int(settings["frame"]))

    try:
        base = [f"exp_dir={tmp_path}", "frontend.name=_frames_test"]
        cfg = load_config(None, base)
        assert store_settings(cfg)["frontend"] == {"name": "_frames_test", "frame": 160}
        same = load_config(None, [*base, "frontend.lfcc.n_coeffs=5", "frontend.hf_ssl.layer=2"])
        other = load_config(None, [*base, "frontend._frames_test.frame=320"])
        assert store_dir(same) == store_dir(cfg) != store_dir(other)
        assert store_dir(cfg).name.startswith("_frames_test-")
        from sourcetracing.features.frontends import build_frontend

        out = build_frontend(other.frontend, "cpu")(torch.zeros(2, 1600))
        assert tuple(out.shape) == (2, 5, 320)
    finally:
        FRONTENDS.unregister("_frames_test")


def test_outputs_made_from_another_label_map_are_stale(cfg) -> None:
    from sourcetracing.data.protocols import LabelMap

    exp = Path(cfg.exp_dir)
    outputs = write_outputs(exp, "mine", with_logits=True)
    outputs.write(exp / "mine" / "outputs", inputs={"label_map": LabelMap(KNOWN).digest()})
    LabelMap(KNOWN).write(exp)
    known_class_metrics(cfg, "mine")  # matches
    LabelMap(["sys/a", "sys/b", "sys/q"]).write(exp)
    with pytest.raises(StaleInputError, match="label map"):
        known_class_metrics(cfg, "mine")
