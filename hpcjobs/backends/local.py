"""The embedded default: jobs run on this machine as detached processes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hpcjobs.backends.base import Backend
from hpcjobs.errors import RuntimeFailure
from hpcjobs.plan import Plan
from hpcjobs.site import Site
from hpcjobs.status import JobStatus
from hpcjobs.store import JobRecord
from hpcjobs.transport.local import LocalTransport


def state_dir_of(rec: JobRecord) -> str:
    """The ``.hpcjobs`` marker folder of a job, trial or step."""
    sd = rec.extra.get("state_dir")
    if sd:
        return str(sd)
    assert rec.job_dir
    return f"{rec.job_dir}/.hpcjobs"


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_float(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int, job_dir: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        # a runner that exited but was not reaped yet (our own child) is a zombie: not alive
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        # a recycled pid belongs to some other program: check it is ours.  The cmdline
        # of a process that is still starting up (exec not done yet) reads empty.
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        return not cmd or b"hpcjobs.localrun" in cmd
    except (OSError, IndexError):
        return True


def install_snapshot(code: str, root: str) -> tuple[str, int]:
    """Copy the code snapshot into ``<root>/.snapshots/<digest>`` (once); (path, bytes copied)."""
    from hpcjobs.snapshot import take_snapshot  # pathspec: only jobs with code pay for it

    snap = take_snapshot(code)
    dest = Path(root) / ".snapshots" / snap.digest
    if dest.is_dir():
        return str(dest), 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{snap.digest}."))
    try:
        for rel in snap.files:
            src = snap.root if snap.is_file else snap.root / rel
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                os.symlink(os.readlink(src), dst)
            else:
                shutil.copy2(src, dst)
        os.replace(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not dest.is_dir():
            raise
    return str(dest), snap.size


class LocalBackend(Backend):
    """Runs plans with :mod:`hpcjobs.localrun` in the background."""

    def __init__(self, site: Site) -> None:
        super().__init__(site, LocalTransport())

    def submit(self, plan: Plan, records: list[JobRecord]) -> dict[str, list[str]]:
        t = self.transport
        assert isinstance(t, LocalTransport)
        for path, data in plan.files.items():
            t.write_file(path, data)
        for s in plan.scripts:
            t.write_file(s.script_path, s.text.encode(), mode=0o755)
        snaps = dict(plan.snapshots)
        if plan.code_src and plan.code_dir:
            snaps.setdefault(plan.code_dir, plan.code_src)
        for code_dir, code_src in snaps.items():
            install_snapshot(code_src, str(Path(code_dir).parent.parent))
        runfile = {
            # continue_on_step_failure: false -- the on_finalize step still runs after a fail-fast stop
            "spare": plan.spare_step or None,
            # a sweep's max_concurrent_trials (its array's %N) is what the user asked for:
            # honoured even beyond the CPU count unless the site sets local_max_parallel
            "max_parallel": self.site.local_max_parallel
            or max(2, os.cpu_count() or 2, *(_array_limit(s.array) or 0 for s in plan.scripts)),
            "scripts": [
                {
                    "key": s.key,
                    "script": s.script_path,
                    "tasks": s.tasks,
                    "max_parallel": _array_limit(s.array),
                    "depends_on": s.depends_on,
                    "dependency_type": s.dependency_type,
                    "after_any": s.after_any,
                    "log": _log_of(s),
                    "state_dirs": _state_dirs(s),
                }
                for s in plan.scripts
            ],
        }
        run_path = f"{plan.job_dir}/.hpcjobs/run.json"
        t.write_file(run_path, json.dumps(runfile, indent=1).encode())
        pid = t.spawn_detached(
            [sys.executable, "-m", "hpcjobs.localrun", run_path],
            log_path=f"{plan.job_dir}/.hpcjobs/runner.log",
            cwd=plan.job_dir,
        )
        return {s.key: [f"local:{pid}"] for s in plan.scripts}

    def refresh(self, records: list[JobRecord]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for rec in records:
            if JobStatus(rec.status).is_terminal:
                continue
            changes = self._state(rec)
            changes = {k: v for k, v in changes.items() if getattr(rec, k) != v}
            if changes:
                out[rec.name] = changes
        return out

    def _state(self, rec: JobRecord) -> dict[str, Any]:
        sd = Path(state_dir_of(rec))
        started = _read_float(sd / "started")
        ended = _read_float(sd / "ended")
        rc = _read_int(sd / "exit_code")
        if rc is not None:
            if rc == 0:
                return {
                    "status": JobStatus.COMPLETED.value,
                    "exit_code": 0,
                    "started": started,
                    "ended": ended or time.time(),
                    "reason": None,
                }
            # a pipeline step stopped because another failed (continue_on_step_failure: false) has a marker
            marker = (sd / "canceled").read_text().strip() if (sd / "canceled").exists() else None
            canceled = bool(rec.extra.get("cancel_requested") or marker) and rc in (143, 130, 137, -15, -9)
            why = "canceled by user" if rec.extra.get("cancel_requested") else marker
            return {
                "status": (JobStatus.CANCELED if canceled else JobStatus.FAILED).value,
                "exit_code": rc,
                "started": started,
                "ended": ended or time.time(),
                "reason": why if canceled else f"exit code {rc}",
            }
        if (sd / "canceled").exists():
            why = (sd / "canceled").read_text().strip()
            return {"status": JobStatus.CANCELED.value, "ended": ended or time.time(), "reason": why}
        pid = _pid_of(rec)
        if pid is not None and _alive(pid, rec.job_dir or ""):
            if started is not None:
                return {"status": JobStatus.RUNNING.value, "started": started}
            return {"status": JobStatus.QUEUED.value}
        # the runner is gone and the job never wrote an exit code
        if rec.extra.get("cancel_requested"):
            return {"status": JobStatus.CANCELED.value, "ended": time.time(), "reason": "canceled by user"}
        return {
            "status": JobStatus.FAILED.value,
            "ended": time.time(),
            "reason": "the job's process ended without reporting an exit code",
        }

    def cancel(self, records: list[JobRecord]) -> None:
        pids = {p for p in (_pid_of(r) for r in records) if p is not None}
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            except PermissionError as exc:
                raise RuntimeFailure(f"not allowed to stop process {pid}") from exc
        deadline = time.time() + 10
        for pid in pids:
            while time.time() < deadline:
                try:
                    os.killpg(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)


def _pid_of(rec: JobRecord) -> int | None:
    for sid in rec.slurm_ids:
        if sid.startswith("local:"):
            try:
                return int(sid.split(":", 1)[1])
            except ValueError:
                return None
    return None


def _array_limit(array: str | None) -> int | None:
    if array and "%" in array:
        return int(array.rsplit("%", 1)[1])
    return None


def _log_of(s: Any) -> str:
    base = s.script_path.rsplit("/", 1)[0]
    if s.array:
        return f"{base}/user_logs/std_log_%a.txt"
    return f"{base}/user_logs/std_log.txt"


def _state_dirs(s: Any) -> list[str]:
    base = s.script_path.rsplit("/", 1)[0]
    if s.array:
        return [f"{base}/trials/{i}/.hpcjobs" for i in range(s.tasks)]
    return [f"{base}/.hpcjobs"]
