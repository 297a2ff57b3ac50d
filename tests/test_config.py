"""Config loading, dotted overrides and the resolved copy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sourcetracing.config import ConfigError, load_config, save_resolved

ROOT = Path(__file__).resolve().parents[1]


def test_repo_configs_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert cfg.exp_dir and cfg.data.protocols, path
    assert load_config(ROOT / "configs/refd_mlaad.yaml").frontend.hf_ssl.layer == 5


def test_file_values_and_overrides(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("exp_dir: exp/x\ntrain: {epochs: 4, lr: 0.01}\n")
    cfg = load_config(
        path, ["train.epochs=7", "train.betas=[0.8, 0.9]", "frontend.name=logmel", "device=cpu"]
    )
    assert cfg.train.epochs == 7
    assert cfg.train.lr == pytest.approx(0.01)
    assert cfg.train.betas == [0.8, 0.9]
    assert cfg.frontend.name == "logmel"
    assert cfg.name == "x"  # defaults to the file name
    assert cfg.train.batch_size == 128  # untouched default


def test_int_accepted_for_float_and_types_checked(tmp_path):
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="expects a list"):
        load_config(None, ["augment.versions=original"])
    with pytest.raises(ConfigError, match="'train.epochs' expects an integer, got 2.5"):
        load_config(None, ["train.epochs=2.5"])
    assert load_config(None, ["train.epochs=3.0"]).train.epochs == 3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", "'train.epochs' must be an integer >= 1, got 0"),
        ("train.epochs=-1", "'train.epochs' must be an integer >= 1, got -1"),
        ("train.batch_size=0", "'train.batch_size' must be an integer >= 1, got 0"),
        ("train.lr=-1", "'train.lr' must be a number > 0, got -1.0"),
        ("data.max_bad_fraction=1.5", "'data.max_bad_fraction' must be a number in [0, 1], got 1.5"),
        ("features.num_workers=-2", "'features.num_workers' must be an integer >= 0"),
        ("augment.babble_speakers=[5, 2]", "'augment.babble_speakers' must be a pair [low, high]"),
        ("train.precision=half", "'train.precision' must be one of float32, bf16, fp16, auto"),
        ("frontend.name=mfccx", "unknown front end 'mfccx' in frontend.name"),
        ("ood.scorers=[knn, nope]", "unknown OOD scorer 'nope'"),
        ("ood.default=energy", "ood.default 'energy' is not among ood.scorers"),
    ],
)
def test_values_are_range_checked_with_the_key_named(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(
            None,
            [override, "ood.scorers=[knn, msp]"]
            if "ood." in override and "scorers" not in override
            else [override],
        )
    assert message in str(err.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrain:\n  epochs: [1, 2\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert str(path) in text and "line " in text and "YAML syntax error" in text and "\n" not in text


def test_component_sections_and_moved_keys():
    cfg = load_config(None, ["frontend.name=lfcc", "frontend.lfcc.n_coeffs=13", "model.aasist.dropout=0.1"])
    assert cfg.frontend.lfcc.n_coeffs == 13 and cfg.model.aasist.dropout == 0.1
    assert cfg.frontend.hf_ssl.layer == 5  # other front ends keep their own defaults
    with pytest.raises(ConfigError, match="did you mean 'frontend.hf_ssl.layer'"):
        load_config(None, ["frontend.layer=3"])


def test_unknown_keys_are_errors_that_name_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epocs: 3}\n")
    with pytest.raises(ConfigError, match=r"'train\.epocs'.*train\.epochs"):
        load_config(path)
    with pytest.raises(ConfigError, match="'nosuch'"):
        load_config(None, ["nosuch=1"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_split_names_are_free():
    cfg = load_config(None, ["data.splits={train: a.csv, dev: b.csv, test2: c.csv}"])
    assert cfg.data.splits == {"train": "a.csv", "dev": "b.csv", "test2": "c.csv"}


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, [f"exp_dir={tmp_path / 'e'}", "train.epochs=2"])
    written = save_resolved(cfg)
    assert written == tmp_path / "e" / "config.yaml"
    again = load_config(written)
    assert again.to_dict() == cfg.to_dict()
    assert yaml.safe_load(written.read_text())["train"]["epochs"] == 2


def test_cli_reports_config_errors_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/preprocess_dataset.py"),
            "--config",
            str(ROOT / "configs/demo.yaml"),
            "--check",
            "train.epoch=3",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "unknown config key 'train.epoch'" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        ({"mfcc": {"features": ["mfcc"]}}, "name of another system"),
        ({"bad name": {}}, "a system name is"),
        ({"x": {"features": ["mfcc", "nope"]}}, r"unknown or no group\(s\) \['nope'\]"),
        ({"x": {"features": []}}, "unknown or no group"),
        ({"x": {"lr": 0.1}}, "not a statistics setting"),
        ({"x": {"projection": "pca"}}, "projection must be one of lda, none"),
        ({"x": {"augment": ["echo"]}}, r"unknown augmentation version\(s\) \['echo'\]"),
        ({"x": {"crop": "yes"}}, "expects true/false"),
        ({"x": ["mfcc"]}, "must map settings to values"),
        ({"stats_shared": {}}, "name of another system or folder"),
    ],
)
def test_stats_variants_are_checked(variants, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [f"stats.variants={json.dumps(variants)}"])


def test_the_stats_groups_are_checked_when_the_config_loads() -> None:
    with pytest.raises(ConfigError, match=r"stats.features: unknown or no group\(s\) \['rate'\]"):
        load_config(None, ["stats.features=[mfcc, rate]"])
    with pytest.raises(ConfigError, match="stats.features: unknown or no group"):
        load_config(None, ["stats.features=[]"])


def test_stats_variants_merge_into_the_stats_section_and_leave_it_alone() -> None:
    from sourcetracing.systems.stats import stats_systems

    cfg = load_config(
        None, ['stats.variants={"with_duration": {"features": [mfcc, duration], "n_mfcc": 13}}']
    )
    systems = stats_systems(cfg)
    assert list(systems) == ["stats", "with_duration"] and systems["stats"] is cfg
    variant = systems["with_duration"].stats
    assert variant.features == ["mfcc", "duration"] and variant.n_mfcc == 13 and variant.variants == {}
    assert variant.augment == cfg.stats.augment and variant.projection == cfg.stats.projection
    assert cfg.stats.features == ["mfcc", "prosody", "spectrum"] and cfg.stats.n_mfcc == 20
    assert list(stats_systems(load_config(None))) == ["stats"]
