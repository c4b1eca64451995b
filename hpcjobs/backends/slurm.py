"""The Slurm backend: submission, status and cancellation through one transport.

Submission is ONE command on the target: a small bash program that receives a tar
stream (scripts, parameter tables and, only when the cluster does not have it yet, the
code snapshot) on stdin, unpacks it under the job root, drops inherited ``SBATCH_*`` /
``SLURM_*`` variables, and runs ``sbatch`` for every script in dependency order,
printing ``hpcjobs-id KEY ID`` lines.  Over SSH that is one round trip whatever the
number of scripts; a probe before it (home, user, snapshot present?) makes two.

Every job carries a token in ``--comment``.  A transient failure (controller not
answering) is retried with backoff, and before each retry the token is looked up so a
job that Slurm did accept is adopted, never submitted twice.  A permanent rejection
(bad partition, account, QOS, limits) is never retried: it is shown in Slurm's own
words with exit code 2, and any script of the same plan already submitted is cancelled.
"""

from __future__ import annotations

import datetime as _dt
import io
import random
import re
import time
from typing import Any

from hpcjobs import slurm
from hpcjobs.backends.base import Backend
from hpcjobs.errors import RuntimeFailure, SchedulerRejected, TransientError
from hpcjobs.plan import Plan, Target
from hpcjobs.shellquote import shq
from hpcjobs.site import Site
from hpcjobs.status import JobStatus
from hpcjobs.store import JobRecord
from hpcjobs.transport.base import Transport

RETRIES = 5
KEY_RE = re.compile(r"^[A-Za-z0-9_]+$")
#: jobs younger than this may be missing from sacct (it lags 3-5 s behind submission)
SACCT_GRACE = 120.0

_PROGRAM = r"""set -u
root=$1; shift
drop=""
for v in $(compgen -e); do
  case "$v" in SBATCH_*|SLURM_*|SALLOC_*|SRUN_*) drop="$drop $v"; unset "$v";; esac
done
[ -n "$drop" ] && printf 'hpcjobs-dropped%s\n' "$drop"
mkdir -p "$root" || { echo "hpcjobs: cannot create job root $root" >&2; exit 90; }
if [ "${HPCJOBS_HAS_TAR:-1}" = 1 ]; then
  tar -xzf - -C "$root" --no-same-owner || { echo "hpcjobs: cannot unpack the job files under $root" >&2; exit 91; }
fi
declare -A ids
submit() {
  local key=$1; shift
  local out rc
  out=$(sbatch --parsable "$@" 2>&1); rc=$?
  if [ $rc -ne 0 ]; then
    printf 'hpcjobs-fail %s %s\n' "$key" "$rc"
    printf '%s\n' "$out" >&2
    exit 92
  fi
  out=${out##*$'\n'}
  ids[$key]=${out%%;*}
  printf 'hpcjobs-id %s %s\n' "$key" "${ids[$key]}"
}
"""


def _now() -> float:
    return time.time()


class SlurmBackend(Backend):
    """Runs plans on a Slurm cluster (login node: local transport; laptop: SSH)."""

    def __init__(self, site: Site, transport: Transport) -> None:
        super().__init__(site, transport)
        self._probe_cache: dict[str, str] | None = None

    # -- target ---------------------------------------------------------------------
    def _probe(self) -> dict[str, str]:
        if self._probe_cache is None:
            res = self.transport.run(["bash", "-c", 'printf "%s\\n%s\\n" "$HOME" "$(id -un)"'])
            if not res.ok:
                raise RuntimeFailure(f"cannot ask {self.transport.name} for its home directory: {res.err.strip()}")
            lines = res.out.splitlines()
            self._probe_cache = {"home": lines[0], "user": lines[1] if len(lines) > 1 else ""}
        return self._probe_cache

    def target(self, *, offline: bool = False) -> Target:
        if offline and self.site.ssh is not None:
            return super().target(offline=True)
        if self.site.ssh is None:
            return super().target()
        p = self._probe()
        return Target(home=p["home"], user=p["user"])

    def remote_user(self) -> str:
        return self._probe()["user"]

    # -- submit ---------------------------------------------------------------------
    def _snapshot_present(self, plan: Plan) -> bool:
        if not plan.code_dir:
            return True
        return self.transport.exists(plan.code_dir)

    def _payload(self, plan: Plan, root: str, with_snapshot: bool) -> bytes:
        import os
        import tarfile

        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            entries: dict[str, tuple[bytes, int]] = {p: (d, 0o644) for p, d in plan.files.items()}
            for s in plan.scripts:
                entries[s.script_path] = (s.text.encode(), 0o755)
            for path, (data, mode) in sorted(entries.items()):
                rel = os.path.relpath(path, root)
                if rel.startswith(".."):
                    raise RuntimeFailure(f"internal error: {path} is outside the job root {root}")
                info = tarfile.TarInfo(rel)
                info.size = len(data)
                info.mode = mode
                info.mtime = int(_now())
                tar.addfile(info, io.BytesIO(data))
            # log folders must exist before Slurm opens --output files
            for s in plan.scripts:
                d = os.path.relpath(s.script_path.rsplit("/", 1)[0] + "/user_logs", root)
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            if with_snapshot and plan.code_src and plan.code_dir:
                from hpcjobs.snapshot import take_snapshot

                snap = take_snapshot(plan.code_src)
                rel_snap = os.path.relpath(plan.code_dir, root)
                for rel in snap.files:
                    full = snap.root if snap.is_file else snap.root / rel
                    info = tar.gettarinfo(str(full), arcname=f"{rel_snap}/{rel}")
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if info.isreg():
                        with open(full, "rb") as fh:
                            tar.addfile(info, fh)
                    else:
                        tar.addfile(info)
        return buf.getvalue()

    def _program(self, plan: Plan, known: dict[str, str]) -> str:
        lines = [_PROGRAM]
        for key, sid in known.items():
            lines.append(f"ids[{key}]={shq(sid)}")
        for s in plan.scripts:
            if not KEY_RE.match(s.key):
                raise RuntimeFailure(f"internal error: bad script key {s.key!r}")
            if s.key in known:
                continue
            args = []
            if s.depends_on:
                deps = ":".join(f"${{ids[{d}]}}" for d in s.depends_on)
                args.append(f'"--dependency={s.dependency_type}:{deps}"')
                args.append("--kill-on-invalid-dep=yes")
            args.append(shq(s.script_path))
            lines.append(f"submit {s.key} {' '.join(args)}")
        return "\n".join(lines) + "\n"

    def submit(self, plan: Plan, records: list[JobRecord]) -> dict[str, list[str]]:
        root = plan.job_dir.rsplit("/", 1)[0]
        with_snapshot = not self._snapshot_present(plan)
        payload = self._payload(plan, root, with_snapshot)
        known: dict[str, str] = {}
        delay = 1.0
        for attempt in range(RETRIES + 1):
            program = self._program(plan, known)
            res = self.transport.run(["bash", "-c", program, "hpcjobs-submit", root], stdin=payload)
            failed_key: str | None = None
            for line in res.out.splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "hpcjobs-id":
                    known[parts[1]] = parts[2]
                elif len(parts) >= 2 and parts[0] == "hpcjobs-fail":
                    failed_key = parts[1]
                elif parts and parts[0] == "hpcjobs-dropped":
                    self.notices.append("ignored inherited Slurm settings from the environment: " + ", ".join(parts[1:]))
            if res.ok and len(known) == len(plan.scripts):
                return {k: [v] for k, v in known.items()}
            if failed_key is None:
                # the program itself failed (unpacking, job root) -- nothing was submitted by it
                raise RuntimeFailure(f"submission on {self.transport.name} failed: {res.err.strip() or res.out.strip()}")
            message = slurm.sbatch_error_message(res.err)
            kind = slurm.classify_sbatch_error(res.err, 1)
            if kind == "permanent":
                self._cancel_ids(list(known.values()))
                raise SchedulerRejected(
                    f"Slurm rejected the job: {message}",
                    hint=_rejection_hint(message),
                )
            # transient: did Slurm accept it anyway?  Look the token up before retrying.
            script = next(s for s in plan.scripts if s.key == failed_key)
            found = self.find_by_token(script.job_name, f"hpcjobs:{plan.token}")
            if found:
                known[failed_key] = found
                continue
            if attempt == RETRIES:
                self._cancel_ids(list(known.values()))
                raise TransientError(f"Slurm did not accept the job after {RETRIES + 1} attempts: {message}")
            time.sleep(delay * (1 + random.random() / 2))
            delay = min(delay * 2, 20.0)
        raise TransientError("submission retries exhausted")

    def find_by_token(self, job_name: str, comment: str) -> str | None:
        """The id of my job called *job_name* whose comment is *comment*, if Slurm has it."""
        res = self.transport.run(["squeue", "--me", "--noheader", "--states=all", f"--name={job_name}", "--format=%i|%k"])
        for line in res.out.splitlines():
            sid, _, com = line.partition("|")
            if com.strip() == comment:
                return sid.strip().split("_")[0]
        return None

    def _cancel_ids(self, ids: list[str]) -> None:
        if ids:
            self.transport.run(slurm.scancel_argv(ids))

    def test_only(self, plan: Plan) -> list[dict[str, Any]]:
        """Ask Slurm whether it would accept each script (``sbatch --test-only``)."""
        out = []
        for s in plan.scripts:
            argv = slurm.sbatch_argv(None, test_only=True)
            env_clean = ["env"] + [f"-u{v}" for v in ()]  # inherited SBATCH_* are dropped by the wrapper below
            res = self.transport.run(
                [
                    "bash",
                    "-c",
                    'for v in $(compgen -e); do case "$v" in SBATCH_*|SLURM_*) unset "$v";; esac; done; exec "$@"',
                    "hpcjobs",
                    *argv,
                ],
                stdin=s.text.encode(),
            )
            del env_clean
            parsed = slurm.parse_test_only(res.err)
            ok = res.ok and parsed.ok
            out.append(
                {
                    "script": s.key,
                    "ok": ok,
                    "message": parsed.message if ok else slurm.sbatch_error_message(res.err),
                    "start_time": str(parsed.start_time) if parsed.start_time else None,
                    "nodes": parsed.nodes,
                    "partition": parsed.partition,
                }
            )
        return out

    # -- status ---------------------------------------------------------------------
    def refresh(self, records: list[JobRecord]) -> dict[str, dict[str, Any]]:
        by_id: dict[str, JobRecord] = {}
        for r in records:
            if JobStatus(r.status).is_terminal:
                continue
            for sid in r.slurm_ids[:1]:
                by_id[sid] = r
        if not by_id:
            return {}
        self.refresh_calls = getattr(self, "refresh_calls", 0) + 1
        res = self.transport.run(slurm.squeue_argv(me=True))
        if not res.ok:
            raise TransientError(f"squeue failed: {slurm.sbatch_error_message(res.err)}")
        rows = {row.job_id: row for row in slurm.parse_squeue(res.out)}
        updates: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        for sid, rec in by_id.items():
            row = rows.get(sid)
            if row is None:
                missing.append(sid)
                continue
            upd: dict[str, Any] = {"status": row.status.value, "nodes": row.nodelist}
            extra = dict(rec.extra)
            extra["slurm_state"] = row.state
            upd["extra"] = extra
            if row.start and row.status not in (JobStatus.QUEUED, JobStatus.PAUSED):
                upd["started"] = row.start.timestamp()
            if row.status in (JobStatus.QUEUED, JobStatus.PAUSED):
                upd["reason"] = row.reason
            elif row.status.is_terminal:
                # finished jobs linger in squeue until MinJobAge; sacct has the exit code
                missing.append(sid)
                continue
            else:
                upd["reason"] = None
            updates[rec.name] = upd
        if missing:
            updates.update(self._from_sacct(missing, by_id))
        return {n: {k: v for k, v in u.items() if getattr(_rec(by_id, n), k, None) != v} for n, u in updates.items()}

    def _from_sacct(self, ids: list[str], by_id: dict[str, JobRecord]) -> dict[str, dict[str, Any]]:
        earliest = min((by_id[i].submitted or by_id[i].created) for i in ids)
        start = _dt.datetime.fromtimestamp(earliest - 86400).strftime("%Y-%m-%dT%H:%M:%S")
        base_ids = sorted({i.split("_")[0] for i in ids})
        res = self.transport.run(slurm.sacct_argv(job_ids=base_ids, start=start))
        rows: dict[str, Any] = {}
        if res.ok:
            for row in slurm.parse_sacct(res.out):
                rows[row.job_id] = row
        updates: dict[str, dict[str, Any]] = {}
        lost: list[str] = []
        for sid in ids:
            rec = by_id[sid]
            row = rows.get(sid)
            if row is None:
                lost.append(sid)
                continue
            upd: dict[str, Any] = {
                "status": row.status.value,
                "nodes": row.nodelist,
                "exit_code": row.exit_code,
                "extra": {**rec.extra, "slurm_state": row.state},
            }
            if row.start:
                upd["started"] = row.start.timestamp()
            if row.end and row.status.is_terminal:
                upd["ended"] = row.end.timestamp()
            if row.status == JobStatus.FAILED:
                if row.status_reason and row.status_reason not in ("failed",):
                    upd["reason"] = row.status_reason
                elif row.exit_code:
                    upd["reason"] = f"exit code {row.exit_code}"
                elif row.exit_signal:
                    upd["reason"] = f"killed by signal {row.exit_signal}"
            elif row.status == JobStatus.CANCELED:
                upd["reason"] = "canceled" + (f" by {row.cancelled_by}" if row.cancelled_by else "")
            elif row.status in (JobStatus.QUEUED, JobStatus.PAUSED):
                upd["reason"] = row.reason
            else:
                upd["reason"] = None
            updates[rec.name] = upd
        if lost:
            updates.update(self._from_markers(lost, by_id))
        return updates

    def _from_markers(self, ids: list[str], by_id: dict[str, JobRecord]) -> dict[str, dict[str, Any]]:
        """Jobs neither squeue nor sacct knows: read the job's own exit marker, never guess."""
        old = [i for i in ids if _now() - (by_id[i].submitted or by_id[i].created) > SACCT_GRACE]
        if not old:
            return {}
        dirs = []
        for i in old:
            rec = by_id[i]
            sd = rec.extra.get("state_dir") or f"{rec.job_dir}/.hpcjobs"
            dirs.append(sd)
        res = self.transport.run(
            ["bash", "-c", 'for d in "$@"; do printf "%s|" "$d"; cat "$d/exit_code" 2>/dev/null || echo; done', "hpcjobs", *dirs]
        )
        codes = {}
        for line in res.out.splitlines():
            d, _, code = line.partition("|")
            codes[d] = code.strip()
        updates: dict[str, dict[str, Any]] = {}
        for i, d in zip(old, dirs, strict=True):
            rec = by_id[i]
            code = codes.get(d, "")
            if code.lstrip("-").isdigit():
                rc = int(code)
                updates[rec.name] = {
                    "status": (JobStatus.COMPLETED if rc == 0 else JobStatus.FAILED).value,
                    "exit_code": rc,
                    "reason": None if rc == 0 else f"exit code {rc} (from the job's marker; Slurm has forgotten the job)",
                    "ended": rec.ended or _now(),
                }
            else:
                updates[rec.name] = {"reason": "not found in squeue or sacct; state unknown", "status": JobStatus.UNKNOWN.value}
        return updates

    def cancel(self, records: list[JobRecord]) -> None:
        ids = sorted({r.slurm_ids[0] for r in records if r.slurm_ids and not JobStatus(r.status).is_terminal})
        if not ids:
            return
        res = self.transport.run(slurm.scancel_argv(ids))
        if not res.ok and "Invalid job id" not in res.err:
            raise RuntimeFailure(f"scancel failed: {res.err.strip()}")

    @property
    def notices(self) -> list[str]:
        if not hasattr(self, "_notices"):
            self._notices: list[str] = []
        return self._notices


def _rec(by_id: dict[str, JobRecord], name: str) -> JobRecord | None:
    for r in by_id.values():
        if r.name == name:
            return r
    return None


def _rejection_hint(message: str) -> str | None:
    low = message.lower()
    if "partition" in low:
        return "check computes.*.partition in the site config (hpcjobs compute list shows the partitions)"
    if "account" in low:
        return "check computes.*.account in the site config (sacctmgr show assoc user=$USER lists yours)"
    if "qos" in low:
        return "check computes.*.qos in the site config"
    if "gres" in low or "generic resource" in low:
        return "the partition has fewer GPUs (or another GPU type) than the job asks for"
    if "time limit" in low:
        return "lower limits.timeout or pick a partition with a longer time limit"
    return None
