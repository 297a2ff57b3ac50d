"""One handle for a trained system: every registered kind opens through it, the runners of the kinds
that run on audio reproduce the exported outputs, each system is exported by its own kind, a stale
input is refused once with one clear line, and no module outside the registry branches on a kind
name, parses ``thresholds.json`` or the outputs' ``meta.json`` itself, or builds a scorer file name."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from step_scripts import script_main
from test_trace import _copy_of_experiment, experiment  # noqa: F401 - the tiny judged experiment

from sourcetracing.components import SYSTEM_KINDS
from sourcetracing.config import load_config
from sourcetracing.errors import ConfigError, MissingInputError, StaleInputError
from sourcetracing.judge import judge_system
from sourcetracing.layout import ExperimentLayout
from sourcetracing.systems import handle as handles
from sourcetracing.systems.handle import open_system, why_not_runnable
from sourcetracing.systems.outputs import OutputsMeta

REPO = Path(__file__).resolve().parents[1]
RUNNABLE = {"aasist": "classifier", "ge2e": "ge2e", "mfcc": "reference", "stats": "reference"}


def _plant(cfg, source: str, name: str, task: str) -> None:
    """A judged system ``name`` whose outputs say ``task``: a copy of ``source``'s folders (no model)."""
    exp = Path(cfg.exp_dir)
    shutil.copytree(exp / source, exp / name, ignore=shutil.ignore_patterns("trained_models"))
    meta = exp / name / "outputs" / "meta.json"
    record = json.loads(meta.read_text())
    meta.write_text(json.dumps({**record, "task": task, "system": name}))


@pytest.fixture(scope="module")
def every_kind(experiment, tmp_path_factory):  # noqa: F811
    """A copy of the judged experiment with a system of every registered kind: the trained ones, a
    fusion of them, and outputs planted as the hybrid, pooled and drop-in kinds record them."""
    from sourcetracing.systems.fusion import export_fusion

    corpus, cfg = experiment
    cfg2 = _copy_of_experiment(corpus, cfg, tmp_path_factory.mktemp("kinds"))
    export_fusion(cfg2)
    judge_system(cfg2, "fusion")
    for name, task in (("hybrid", "hybrid"), ("pooled", "pooled"), ("scores_only", "scores")):
        _plant(cfg2, "stats", name, task)
    return corpus, cfg2


def test_every_registered_kind_opens_through_the_handle(every_kind) -> None:
    _, cfg = every_kind
    kinds = {**RUNNABLE, "fusion": "fusion", "hybrid": "hybrid", "pooled": "pooled", "scores_only": "scores"}
    assert set(kinds.values()) == set(SYSTEM_KINDS.names())  # a new kind needs a system here
    for system, kind in kinds.items():
        handle = open_system(cfg, system)
        assert handle.kind.name == kind and handle.meta.task == kind
        assert handle.ood.default in handle.ood.scorers
        entry = handle.ood.entry(handle.ood.default)
        assert np.isfinite(entry.threshold) and entry.calibration is not None
        assert handle.outputs.outputs_id == handle.outputs_id == handle.ood.outputs_id
        runnable = why_not_runnable(cfg, system) is None
        assert runnable == (system in RUNNABLE), system  # the planted hybrid takes frame features
        assert runnable <= handle.kind.runs_on_audio, system
        if not runnable:
            with pytest.raises(MissingInputError, match="cannot run on audio"):
                handle.runner("cpu")
    fused = open_system(cfg, "fusion")
    record = fused.kind.fused(fused)  # the fusion's members, weights and scaling, checked
    assert record.members and set(record.systems) <= set(RUNNABLE)
    assert handles.why_not_traceable(cfg, "fusion") is None
    assert "no model that runs on audio" in why_not_runnable(cfg, "scores_only")


@pytest.mark.parametrize("system", sorted(RUNNABLE))
def test_a_runner_reproduces_the_exported_outputs_of_a_few_clips(experiment, system) -> None:  # noqa: F811
    corpus, cfg = experiment
    handle = open_system(cfg, system)
    runner = handle.runner("cpu")
    dev = handle.outputs.split("dev")
    rows = dev.rows.iloc[:4]
    paths = [Path(cfg.data.root) / p for p in rows["path"]]
    ok, waves, errors = runner.read_waves(paths)
    assert not errors and len(ok) == 4
    logits, emb = runner.forward(waves)
    np.testing.assert_allclose(emb, dev.embeddings[:4], rtol=1e-3, atol=1e-3)
    if dev.logits is None:
        assert logits is None
    else:
        np.testing.assert_allclose(logits, dev.logits[:4], rtol=1e-3, atol=1e-3)
    assert runner.label_map.known == handle.meta.class_names


def test_export_outputs_exports_each_system_with_its_own_kind(every_kind, monkeypatch, capsys) -> None:
    """Every system a config makes goes to its own kind's exporter (the script's routing)."""
    import sourcetracing.systems.export as export
    import sourcetracing.systems.fusion as fusion
    import sourcetracing.systems.hybrid as hybrid
    import sourcetracing.systems.mfcc as mfcc
    import sourcetracing.systems.plain_reference as plain
    import sourcetracing.systems.pooled as pooled
    import sourcetracing.systems.stats as stats

    corpus, cfg = every_kind
    calls: list[tuple[str, str]] = []

    def record(name, system):
        def exporter(c, *args, **kwargs):
            calls.append((name, system(c, kwargs)))
            return Path(c.exp_dir)

        return exporter

    monkeypatch.setattr(export, "export_classifier", record("classifier", lambda c, kw: c.model.name))
    monkeypatch.setattr(export, "export_ge2e", record("ge2e", lambda c, kw: "ge2e"))
    monkeypatch.setattr(mfcc, "export_mfcc", record("reference", lambda c, kw: "mfcc"))
    monkeypatch.setattr(plain, "export_plain", record("reference", lambda c, kw: "plain_mfcc"))
    monkeypatch.setattr(stats, "export_stats", record("reference", lambda c, kw: kw["system"]))
    monkeypatch.setattr(fusion, "export_fusion", record("fusion", lambda c, kw: "fusion"))
    monkeypatch.setattr(hybrid, "export_hybrid", record("hybrid", lambda c, kw: hybrid.system_name(c)))
    monkeypatch.setattr(pooled, "export_pooled", record("pooled", lambda c, kw: "pooled"))
    overrides = [f"exp_dir={cfg.exp_dir}", f"features.dir={cfg.features.dir}", "mfcc.plain=true",
                 "hybrid.enabled=true", "pooled.enabled=true", "stats.variants={stats_dur: {features: [duration]}}"]  # fmt: skip
    made = handles.made_systems(load_config(corpus.config_path, overrides))
    assert set(made) == {
        "aasist",
        "ge2e",
        "mfcc",
        "plain_mfcc",
        "stats",
        "stats_dur",
        "fusion",
        "hybrid",
        "pooled",
    }
    main = script_main("export_outputs.py")
    for system, (kind, _) in made.items():
        calls.clear()
        assert main(["--config", str(corpus.config_path), *overrides, "--system", system]) == 0
        assert calls == [(kind.name, system)], system
    # the misroute is gone: --system stats exports stats itself, without touching the classifier
    calls.clear()
    assert main(["--config", str(corpus.config_path), *overrides[:2], "--system", "stats"]) == 0
    assert calls == [("reference", "stats")]
    assert main(["--config", str(corpus.config_path), *overrides[:2], "--system", "nosuch"]) == 2
    assert "cannot export 'nosuch': no such system in this config" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--checkpoint applies to the trained systems"):
        handles.export_system(load_config(corpus.config_path, overrides), "stats", checkpoint="best.pt")


def test_a_stale_input_is_refused_once_with_one_line_by_every_user(experiment, tmp_path, monkeypatch) -> None:  # noqa: F811
    from sourcetracing import enrol, robustness, trace
    from sourcetracing.bundle_export import export_bundle
    from sourcetracing.systems.mfcc import ReferenceModel, model_path

    corpus, cfg = experiment
    cfg2 = _copy_of_experiment(corpus, cfg, tmp_path)
    checks = []
    real = handles.check_outputs_current
    monkeypatch.setattr(handles, "check_outputs_current", lambda h: (checks.append(h.name), real(h)))
    trace.Tracer.load(cfg2, "mfcc")
    assert checks == ["mfcc"]  # one handle, every check once
    path = model_path(cfg2, "mfcc")
    model = ReferenceModel.load(path)
    model.coef = model.coef * 1.5  # refitted after its outputs and OOD step were made
    model.save(path)
    with pytest.raises(StaleInputError) as refused:
        open_system(cfg2, "mfcc")
    line = str(refused.value)
    assert "\n" not in line and "reference.npz changed" in line and "the step that exports 'mfcc'" in line
    users = [
        lambda: trace.Tracer.load(cfg2, "mfcc"),
        lambda: robustness.load_runner(cfg2, "mfcc", "cpu"),
        lambda: enrol.measure_enrolment(cfg2, "mfcc", plot=False),
        lambda: export_bundle(cfg2, tmp_path / "bundle", "mfcc"),
        lambda: judge_system(cfg2, "mfcc"),
    ]
    for use in users:
        with pytest.raises(StaleInputError) as again:
            use()
        assert str(again.value) == line
    assert not (tmp_path / "bundle").exists()
    # an OOD step fitted on other outputs: refused by the handle, left out of one opened without it
    other = ExperimentLayout.of(cfg2).system("stats").ood_manifest
    manifest = json.loads(other.read_text())
    manifest["inputs"]["outputs"] = "another"
    other.write_text(json.dumps(manifest))
    with pytest.raises(StaleInputError, match="ood_detector.py"):
        open_system(cfg2, "stats")
    assert open_system(cfg2, "stats", ood=False).ood_step is None


def test_outputs_meta_reads_what_the_export_wrote(experiment) -> None:  # noqa: F811
    _, cfg = experiment
    for system, kind in RUNNABLE.items():
        meta = OutputsMeta.read(ExperimentLayout.of(cfg).system(system).outputs)
        assert meta.task == kind and meta.system == system and "embeddings" in meta.has
        assert meta.manifest["id"] and meta.machine
    with pytest.raises(MissingInputError, match="run the step first"):
        OutputsMeta.read(Path(cfg.exp_dir) / "nosuch" / "outputs", "the step")


# ---------------------------------------------------------------------------------------------
# What stays gone: kind-name branches, raw reads of thresholds.json / meta.json, scorer file names

REGISTRY = ("sourcetracing/systems/kinds/", "sourcetracing/systems/handle.py", "sourcetracing/components.py")
READERS = (  # the typed readers (and the writer) of thresholds.json and the outputs' meta.json
    "sourcetracing/layout.py",
    "sourcetracing/systems/outputs.py",
    "sourcetracing/ood/step.py",
    "sourcetracing/ood/report.py",
)
OWNER_OF_NAMES = ("sourcetracing/layout.py",)
KIND_NAMES = {"classifier", "ge2e", "reference", "fusion", "hybrid", "pooled", "scores", "mfcc", "stats"}
THRESHOLD_MARKERS = {"THRESHOLDS", "thresholds", "thresholds.json", "OUTPUTS_META", "outputs_meta"}


def _names(node: ast.AST) -> set[str]:
    """Identifiers, attribute names and string constants in an expression."""
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            out.add(sub.value)
    return out


def _marks_meta_or_thresholds(names: set[str]) -> bool:
    return bool(names & THRESHOLD_MARKERS) or ("meta.json" in names and "outputs" in names)


def kind_branches(tree: ast.AST) -> list[str]:
    """Comparisons of a task or kind with a kind name, and tuples or dicts of kind names."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            literal = [
                s.value
                for side in sides
                for s in ast.walk(side)
                if isinstance(s, ast.Constant) and isinstance(s.value, str) and s.value in KIND_NAMES
            ]
            about = {n.lower() for side in sides for n in _names(side)}
            if literal and any("task" in n or "kind" in n for n in about):
                found.append(f"line {node.lineno}: compares a task/kind with {literal}")
        elif isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(values) >= 2 and set(values) <= KIND_NAMES:
                found.append(f"line {node.lineno}: a list of kind names {values}")
        elif isinstance(node, ast.Dict):
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if len(keys) >= 2 and set(keys) <= KIND_NAMES:
                found.append(f"line {node.lineno}: a dispatch table on kind names {keys}")
    return found


def raw_reads(tree: ast.AST) -> list[str]:
    """``json.load(s)`` of thresholds.json or an outputs meta.json (directly or through a variable)."""
    found = []
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for scope in [tree, *scopes]:
        body = scope.body
        tainted = set()
        for node in [n for stmt in body for n in ast.walk(stmt)]:
            if isinstance(node, ast.Assign) and _marks_meta_or_thresholds(_names(node.value)):
                tainted |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in [n for stmt in body for n in ast.walk(stmt)]:
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("load", "loads")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "json"
            ):
                names = set().union(*(_names(a) for a in node.args)) if node.args else set()
                if _marks_meta_or_thresholds(names) or names & tainted:
                    found.append(f"line {node.lineno}: json.{node.func.attr} of thresholds.json or meta.json")
    return sorted(set(found))


def scorer_file_names(tree: ast.AST) -> list[str]:
    """String literals or f-strings that build a ``scorer_<name>.npz`` file name."""
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if isinstance(first, ast.Constant) and str(first.value).startswith("scorer_"):
                found.append(f"line {node.lineno}: f-string scorer_...")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value.startswith("scorer_") and (".npz" in node.value or "*" in node.value):
                found.append(f"line {node.lineno}: {node.value!r}")
    return found


def _sources() -> list[tuple[str, ast.AST]]:
    files = sorted((REPO / "src").rglob("*.py")) + sorted((REPO / "scripts").glob("*.py"))
    return [(p.relative_to(REPO).as_posix(), ast.parse(p.read_text(encoding="utf-8"))) for p in files]


def _offenders(check, allowed: tuple[str, ...]) -> list[str]:
    return [
        f"{name} {where}"
        for name, tree in _sources()
        if not any(a in name for a in allowed)
        for where in check(tree)
    ]


def test_no_kind_name_branch_outside_the_registry() -> None:
    assert SYSTEM_KINDS.names() and set(SYSTEM_KINDS.names()) <= KIND_NAMES
    offenders = _offenders(kind_branches, REGISTRY)
    assert not offenders, "branches on a system kind outside the registry:\n" + "\n".join(offenders)


def test_no_raw_read_of_thresholds_or_outputs_meta_outside_the_readers() -> None:
    offenders = _offenders(raw_reads, READERS)
    assert not offenders, "raw reads (use OODStep / OutputsMeta):\n" + "\n".join(offenders)


def test_no_scorer_file_name_built_outside_the_layout() -> None:
    offenders = _offenders(scorer_file_names, OWNER_OF_NAMES)
    assert not offenders, "scorer file names built by hand (use the layout):\n" + "\n".join(offenders)


def test_the_scans_find_planted_offences() -> None:
    planted = ast.parse(
        "import json\n"
        "AUDIO = ('classifier', 'ge2e')\n"
        "def f(meta, sys_layout, name):\n"
        "    if meta.get('task') == 'reference':\n"
        "        pass\n"
        "    path = sys_layout.outputs / 'meta.json'\n"
        "    info = json.loads(path.read_text())\n"
        "    more = json.loads((sys_layout.thresholds).read_text())\n"
        "    return sys_layout.ood / f'scorer_{name}.npz', list(sys_layout.ood.glob('scorer_*.npz'))\n"
    )
    assert len(kind_branches(planted)) == 2
    assert len(raw_reads(planted)) == 2
    assert len(scorer_file_names(planted)) == 2
    clean = ast.parse(
        "import json\n"
        "def g(store, kind, step):\n"
        "    if kind.runs_on_audio and store.kind == 'features':\n"
        "        return json.loads((store.directory / 'meta.json').read_text()), step.state_path('knn')\n"
    )
    assert not kind_branches(clean) and not raw_reads(clean) and not scorer_file_names(clean)
