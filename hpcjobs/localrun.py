"""The embedded default's runner: runs a plan's scripts on this machine, detached.

``python -m hpcjobs.localrun RUNFILE`` reads a JSON run file written by the local
backend: scripts with their task counts, concurrency limits and dependencies.  It runs
each script's tasks with bash (``HPCJOBS_TASK_INDEX`` set for arrays), at most
``max_parallel`` at a time, starts a script only when the scripts it depends on ended
as the dependency type requires, and marks those it will never run as canceled.
It exits when everything ended.  Killing its process group cancels the whole job.

SIGUSR1 is a pipeline step's fail-fast stop (``continue_on_step_failure: false``): every
other script is cancelled, running or not, except the run file's ``spare`` (the
on_finalize step), which then runs as its ``afterany`` dependencies allow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

POLL = 0.05


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(runfile: Path) -> int:
    spec: dict[str, Any] = json.loads(runfile.read_text())
    scripts: list[dict[str, Any]] = spec["scripts"]
    max_parallel = max(1, int(spec.get("max_parallel") or os.cpu_count() or 1))
    pending: dict[str, list[int]] = {s["key"]: list(range(int(s.get("tasks", 1)))) for s in scripts}
    by_key = {s["key"]: s for s in scripts}
    results: dict[str, dict[int, int]] = {s["key"]: {} for s in scripts}
    running: dict[int, tuple[subprocess.Popen[bytes], str, int]] = {}
    dead: set[str] = set()
    stop = False
    fail_fast = False
    spare = spec.get("spare")

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    def on_fail_fast(signum: int, frame: Any) -> None:
        nonlocal fail_fast
        fail_fast = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGUSR1, on_fail_fast)

    def deps_state(s: dict[str, Any]) -> str:
        kind = s.get("dependency_type", "afterok")
        wanted = [(dep, kind) for dep in s.get("depends_on", [])] + [(dep, "afterany") for dep in s.get("after_any", [])]
        for dep, dep_kind in wanted:
            if dep in dead and dep_kind == "afterok":
                return "never"
            dep_tasks = int(by_key[dep].get("tasks", 1))
            if len(results[dep]) < dep_tasks:
                return "wait"
            if dep_kind == "afterok" and any(rc != 0 for rc in results[dep].values()):
                return "never"
        return "ready"

    while not stop:
        if fail_fast:
            fail_fast = False
            _stop_all_but(spare, scripts, pending, results, running)
        # reap
        for pid, (proc, key, idx) in list(running.items()):
            rc = proc.poll()
            if rc is not None:
                results[key][idx] = rc
                del running[pid]
        # start
        for s in scripts:
            key = s["key"]
            if not pending[key]:
                continue
            state = deps_state(s)
            if state == "never":
                dead.add(key)
                for idx in pending[key]:
                    results[key][idx] = -1
                    state_dir = Path(s["state_dirs"][idx] if "state_dirs" in s else s["state_dir"])
                    _write(state_dir / "canceled", "dependency never satisfied\n")
                pending[key] = []
                continue
            if state == "wait":
                continue
            limit = min(max_parallel, int(s.get("max_parallel") or max_parallel))
            mine = sum(1 for _, k, _ in running.values() if k == key)
            while pending[key] and len(running) < max_parallel and mine < limit:
                idx = pending[key].pop(0)
                log = s["log"].replace("%a", str(idx))
                Path(log).parent.mkdir(parents=True, exist_ok=True)
                env = dict(os.environ, HPCJOBS_TASK_INDEX=str(idx))
                with open(log, "ab") as fh:
                    proc = subprocess.Popen(
                        ["bash", s["script"]], stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT, env=env
                    )
                running[proc.pid] = (proc, key, idx)
                mine += 1
        if not running and not any(pending.values()):
            break
        time.sleep(POLL)
    if stop:
        for proc, _, _ in running.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        deadline = time.time() + 5
        for proc, _, _ in running.values():
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
        for s in scripts:
            for idx in pending[s["key"]]:
                state_dir = Path(s["state_dirs"][idx] if "state_dirs" in s else s["state_dir"])
                _write(state_dir / "canceled", "canceled before it started\n")
        return 143
    return 0


def _stop_all_but(
    spare: str | None,
    scripts: list[dict[str, Any]],
    pending: dict[str, list[int]],
    results: dict[str, dict[int, int]],
    running: dict[int, tuple[subprocess.Popen[bytes], str, int]],
) -> None:
    """Fail-fast: terminate what runs, cancel what has not started, all but *spare*'s tasks.

    A step's bash defers its TERM trap until its command ends, so the command's own
    processes (found with ``ps``: this runner's process group is shared by every step,
    the one ``job cancel`` signals) get the signal too.
    """
    victims = [proc.pid for proc, key, _ in running.values() if key != spare]
    for pid in [*_descendants(victims), *victims]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    for s in scripts:
        key = s["key"]
        if key == spare:
            continue
        for idx in pending[key]:
            # ended, as far as afterany is concerned (the on_finalize step waits for it)
            results[key][idx] = -1
            state_dir = Path(s["state_dirs"][idx] if "state_dirs" in s else s["state_dir"])
            if not (state_dir / "canceled").exists():
                _write(state_dir / "canceled", "canceled: another step failed and continue_on_step_failure is false\n")
        pending[key] = []


def _descendants(roots: list[int]) -> list[int]:
    """The processes below *roots*, deepest last-started first (POSIX ``ps``; [] if it fails)."""
    try:
        out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    found: list[int] = []
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found[::-1]


def main() -> None:
    sys.exit(run(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
