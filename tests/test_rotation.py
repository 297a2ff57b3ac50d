"""Protocol rotation: seeded, disjoint, every system unseen somewhere, near-twin families spread."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from sourcetracing.data.protocols import ProtocolError, read_protocol
from sourcetracing.data.rotation import rotate, twin_families

# a source split like the hard demo's: 8 known (4 of them in two twin families), 3 + 3 unseen
KNOWN = ["fam/a", "fam/a-slow", "twin/x", "twin/y", "solo/1", "solo/2", "solo/3", "solo/4"]
DEV_UNSEEN = ["fam/a-fast", "solo/5", "solo/6"]
EVAL_UNSEEN = ["twin/z", "solo/7", "solo/8"]
TWINS = {
    "fam/a": "fam/a-slow",
    "fam/a-slow": "fam/a",
    "fam/a-fast": "fam/a",
    "twin/x": "twin/y",
    "twin/z": "twin/x",
}


def _protocols(root: Path) -> Path:
    proto = root / "protocols"
    proto.mkdir(parents=True)
    rows = {"train": [], "dev": [], "eval": []}
    for system in KNOWN:
        for split, n in (("train", 9), ("dev", 3), ("eval", 4)):
            lang = "it" if system == "solo/4" and split != "train" and n % 2 else "en"
            for i in range(n):
                rows[split].append((f"./fake/{lang}/{system.replace('/', '_')}/{split}_{i}.wav", system))
    for systems, split in ((DEV_UNSEEN, "dev"), (EVAL_UNSEEN, "eval")):
        for system in systems:
            for i in range(5):
                rows[split].append((f"./fake/en/{system.replace('/', '_')}/{split}_{i}.wav", system))
    for split, r in rows.items():
        pd.DataFrame(r, columns=["path", "model_name"]).to_csv(proto / f"{split}.csv", index=False)
    summary = pd.DataFrame(
        [{"system": s, "twin_of": TWINS.get(s, "")} for s in KNOWN + DEV_UNSEEN + EVAL_UNSEEN]
    )
    summary.to_csv(root / "corpus_summary.csv", index=False)
    return proto


@pytest.fixture()
def source(tmp_path):
    return _protocols(tmp_path), twin_families(tmp_path / "corpus_summary.csv")


def test_twin_families_are_the_connected_twin_links(source) -> None:
    _, families = source
    assert families["fam/a"] == families["fam/a-slow"] == families["fam/a-fast"]
    assert families["twin/x"] == families["twin/y"] == families["twin/z"] != families["fam/a"]
    assert "solo/1" not in families


def test_rotations_are_disjoint_complete_and_leave_every_system_unseen_once(source, tmp_path) -> None:
    proto, families = source
    rotations = rotate(proto, k=4, seed=3, families=families)
    every = set(KNOWN + DEV_UNSEEN + EVAL_UNSEEN)
    unseen_somewhere: set[str] = set()
    pooled = pd.concat([read_protocol(proto / f"{s}.csv") for s in ("train", "dev", "eval")])
    for rot in rotations:
        roles = rot.roles
        dev_unseen = {s for s, r in roles.items() if r == "dev-unseen"}
        eval_unseen = {s for s, r in roles.items() if r == "eval-unseen"}
        known = {s for s, r in roles.items() if r == "known"}
        assert set(roles) == every and not dev_unseen & eval_unseen
        assert (len(known), len(dev_unseen), len(eval_unseen)) == (8, 3, 3)  # the source's counts
        assert set(rot.splits["train"]["model_name"]) == known  # train holds the known systems only
        assert set(rot.splits["dev"]["model_name"]) == known | dev_unseen
        assert set(rot.splits["eval"]["model_name"]) == known | eval_unseen
        for fam in set(families.values()):  # each twin family keeps a known and an unseen member
            members = [s for s, f in families.items() if f == fam]
            assert any(roles[m] == "known" for m in members) and any(roles[m] != "known" for m in members)
        paths = pd.concat(rot.splits.values())["path"]
        assert not paths.duplicated().any() and set(paths) <= set(pooled["path"])  # no clip twice
        for system in known:  # a known system keeps every clip; a source-known one keeps its splits
            mine = pooled[pooled["model_name"] == system]
            assert set(paths[pd.concat(rot.splits.values())["model_name"].to_numpy() == system]) == set(
                mine["path"]
            )
        unseen_somewhere |= dev_unseen | eval_unseen
    assert unseen_somewhere == every


def test_rotations_are_seeded_and_written_in_the_protocol_format(source, tmp_path) -> None:
    proto, families = source
    a = [r.write(tmp_path / "a" / f"rot{r.index}") for r in rotate(proto, 3, seed=1, families=families)]
    b = [r.write(tmp_path / "b" / f"rot{r.index}") for r in rotate(proto, 3, seed=1, families=families)]
    c = rotate(proto, 3, seed=2, families=families)
    for x, y in zip(a, b, strict=True):
        for name in ("train.csv", "dev.csv", "eval.csv", "roles.csv"):
            assert (x / name).read_bytes() == (y / name).read_bytes()
    written = [pd.read_csv(x / "roles.csv") for x in a]
    roles_a = [dict(zip(t["system"], t["role"], strict=True)) for t in written]
    assert any(roles_a[i] != c[i].roles for i in range(3))  # another seed, another draw
    assert list(read_protocol(a[0] / "dev.csv").columns[:2]) == ["path", "model_name"]


def test_too_few_rotations_to_cover_every_system_is_a_clear_error(source) -> None:
    proto, families = source
    with pytest.raises(ProtocolError, match="never unseen"):
        rotate(proto, k=1, seed=0, families=families)
    with pytest.raises(ProtocolError, match="cannot give"):
        rotate(proto, k=3, n_dev_unseen=1)


def test_rotate_protocols_script_writes_every_rotation(source, tmp_path) -> None:
    import subprocess
    import sys

    proto, _ = source
    out = tmp_path / "rot"
    script = Path(__file__).resolve().parents[1] / "scripts" / "rotate_protocols.py"
    done = subprocess.run(
        [sys.executable, str(script), "--protocols", str(proto), "--out", str(out), "--rotations", "3",
         "--families", str(tmp_path / "corpus_summary.csv")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["rot0", "rot1", "rot2", "rotations.md"]
    # another process with another string-hash seed draws the very same rotations
    again = subprocess.run(
        [sys.executable, str(script), "--protocols", str(proto), "--out", str(tmp_path / "again"), "--rotations", "3",
         "--families", str(tmp_path / "corpus_summary.csv")],
        capture_output=True, text=True, check=False, env={**os.environ, "PYTHONHASHSEED": "12345"},
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    for r in range(3):
        for name in ("train.csv", "dev.csv", "eval.csv", "roles.csv"):
            assert (out / f"rot{r}" / name).read_bytes() == (
                tmp_path / "again" / f"rot{r}" / name
            ).read_bytes()
    assert "| fam/a |" in (out / "rotations.md").read_text()
    bad = subprocess.run(
        [sys.executable, str(script), "--protocols", str(tmp_path / "nowhere"), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1
