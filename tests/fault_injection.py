"""Fault injection for tests: run a step script in a child process that stops mid-way, then kill it.

    proc = start_paused("ood-report", [script, "--config", path], workdir)  # returns once it is mid-way
    workers = kill_hard(proc)                                                # SIGKILL, reap, its children
    assert not still_running(workers)

Run as a script, this file is the child: it installs one hook, runs the step script as
``__main__`` and, when the hook fires, writes its pid to a ready file and sleeps. The parent then
knows exactly where the step stands when the signal arrives (a temporary file or folder exists,
the lock is held) instead of racing a timer. Hooks:

``shard-tmp``
    extraction: the second shard array is written under its temporary name, not yet renamed
``last-epoch2``
    training: ``last.pt`` of epoch 2 is written under its temporary name, not yet renamed
``ood-report``
    OOD step: the report is written inside the step's temporary folder, not yet swapped in
"""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import time
from pathlib import Path

HOOKS = ("shard-tmp", "last-epoch2", "ood-report")
TEMPORARY_MARKS = (".tmp", ".old-")  # atomic writes: .<name>.tmp<pid>, .<name>.tmp-<pid>, .<name>.old-<pid>


# ---------------------------------------------------------------------------------------------
# Parent side


def start_paused(hook: str, argv: list[str], workdir: Path, timeout: float = 240.0) -> subprocess.Popen:
    """Start ``python <argv...>`` with ``hook`` installed; return once the child has stopped there."""
    if hook not in HOOKS:
        raise ValueError(f"unknown hook {hook!r}; known: {HOOKS}")
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / f"paused-{hook}.pid"
    ready.unlink(missing_ok=True)
    log = open(workdir / f"paused-{hook}.log", "w")  # the child writes it while we wait
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen(
        [sys.executable, __file__, hook, str(ready), *map(str, argv)], stdout=log, stderr=log, env=env
    )
    log.close()
    STARTED.append(proc)
    deadline = time.monotonic() + timeout
    while not ready.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            tail = (workdir / f"paused-{hook}.log").read_text()[-3000:]
            raise AssertionError(f"the child never reached hook {hook} (exit {proc.returncode}):\n{tail}")
        time.sleep(0.05)
    return proc


STARTED: list[subprocess.Popen] = []  # every paused child, so that a failing test leaves none behind


def kill_started() -> None:
    """Kill (with their descendants) the paused children a test did not kill itself."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            for pid in descendants(proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            proc.kill()
            proc.wait(timeout=30)


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found.extend(children)
        frontier.extend(children)
    return found


def kill_hard(proc: subprocess.Popen) -> list[int]:
    """``kill -9`` the child, reap it, and return the pids of the processes it had started."""
    children = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return children


def still_running(pids: list[int], timeout: float = 15.0) -> list[int]:
    """Those of ``pids`` still alive (not gone, not a zombie) after waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if state != "Z":
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def leftovers(*folders: Path) -> list[Path]:
    """Temporary files and folders of atomic writes anywhere under ``folders``."""
    return sorted(
        p for folder in folders for p in folder.rglob("*") if any(m in p.name for m in TEMPORARY_MARKS)
    )


# ---------------------------------------------------------------------------------------------
# Child side


def _pause(ready: Path) -> None:
    part = ready.with_name(ready.name + ".part")
    part.write_text(str(os.getpid()))
    part.replace(ready)
    parent = os.getppid()
    while os.getppid() == parent:  # until killed, or until the test process is gone
        time.sleep(1)
    os._exit(3)


def _install(hook: str, ready: Path) -> None:
    if hook == "shard-tmp":
        from sourcetracing.features import store

        real_write = store._atomic_write
        arrays = []

        def write_then_maybe_pause(path, write):
            if path.suffix != ".npy":
                return real_write(path, write)
            arrays.append(path.name)

            def write_tmp(tmp):
                write(tmp)
                if len(arrays) == 2:
                    _pause(ready)  # on the writer thread; the DataLoader workers keep running

            return real_write(path, write_tmp)

        store._atomic_write = write_then_maybe_pause
    elif hook == "last-epoch2":
        import torch

        real_save = torch.save

        def save_then_maybe_pause(obj, f, *args, **kwargs):
            real_save(obj, f, *args, **kwargs)
            if isinstance(f, (str, Path)) and ".last.pt.tmp" in Path(f).name and obj.get("epoch") == 2:
                _pause(ready)

        torch.save = save_then_maybe_pause
    elif hook == "ood-report":
        from sourcetracing import judge

        real_report = judge.write_ood_report

        def report_then_pause(*args, **kwargs):
            real_report(*args, **kwargs)
            _pause(ready)

        judge.write_ood_report = report_then_pause
    else:
        raise SystemExit(f"unknown hook {hook!r}")


if __name__ == "__main__":
    hook_name, ready_file, script, *script_args = sys.argv[1:]
    sys.path.pop(0)  # this file's folder (tests/) is not the script's
    _install(hook_name, Path(ready_file))
    sys.argv = [script, *script_args]
    runpy.run_path(script, run_name="__main__")
