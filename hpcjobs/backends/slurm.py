"""The Slurm backend: submission, status and cancellation through one transport.

Submission is ONE command on the target: a small bash program that receives a tar
stream (scripts, parameter tables and, only when the cluster does not have it yet, the
code snapshot) on stdin, unpacks it under the job root, drops inherited ``SBATCH_*`` /
``SLURM_*`` variables, and runs ``sbatch`` for every script in dependency order,
printing ``hpcjobs-id KEY ID`` lines.  Over SSH that is one round trip whatever the
number of scripts; before it, one check for missing snapshots/uploaded data and (once a
day, cached in the store) a home/user probe.  Content-addressed folders are unpacked in a
staging folder and renamed into place whole.

Every job carries a token in ``--comment``.  A transient failure (controller not
answering) is retried with backoff, and before each retry the token is looked up so a
job that Slurm did accept is adopted, never submitted twice.  A connection lost while the
program ran is retried in adopt mode: the new program waits on a per-job lock for the cut
one, adopts the jobs with the token (``squeue``) and submits only the rest.  Tests inject
that cut with ``HPCJOBS_FAULT=after_sbatch`` (the program sleeps ``HPCJOBS_FAULT_SLEEP``
seconds after each sbatch, before printing the id; see docs/ssh.md).  A permanent rejection
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
from hpcjobs.errors import RuntimeFailure, SchedulerRejected, SubmissionUncertain, TransientError
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
  # unpack into a private staging folder first: content-addressed folders (code snapshots,
  # uploaded data) are then renamed into place whole, so an upload cut half way never
  # leaves a partial folder that a later submission would take for complete
  find "$root" -maxdepth 1 -name '.incoming.*' -mmin +1440 -exec rm -rf {} + 2>/dev/null
  stage=$(mktemp -d "$root/.incoming.XXXXXX") || { echo "hpcjobs: cannot write under $root" >&2; exit 91; }
  trap 'rm -rf "$stage"' EXIT
  tar -xzf - -C "$stage" --no-same-owner || { echo "hpcjobs: cannot unpack the job files under $root" >&2; exit 91; }
  for kind in .snapshots .data; do
    [ -d "$stage/$kind" ] || continue
    mkdir -p "$root/$kind"
    for d in "$stage/$kind"/*; do
      # a concurrent submission may have put the same digest in place first: keep theirs
      [ -e "$d" ] && { mv -T "$d" "$root/$kind/${d##*/}" 2>/dev/null || rm -rf "$d"; }
    done
  done
  rm -rf "$stage/.snapshots" "$stage/.data"
  for e in "$stage"/*; do
    [ -e "$e" ] && { cp -a "$e" "$root/" || { echo "hpcjobs: cannot write the job files under $root" >&2; exit 91; }; }
  done
  rm -rf "$stage"; trap - EXIT
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
  # fault injection for tests (docs/ssh.md): hold the id back so the connection can be cut
  [ "${HPCJOBS_FAULT:-}" = after_sbatch ] && sleep "${HPCJOBS_FAULT_SLEEP:-5}"
  printf 'hpcjobs-id %s %s\n' "$key" "${ids[$key]}"
}
# After a lost connection: the jobs an earlier attempt submitted (same name, same token
# comment), oldest first, minus those already known.  `adopt KEY NAME` takes one.
declare -a pending=()
find_pending() {
  local comment=$1 id name com k seen=" "
  for k in "${!ids[@]}"; do seen="$seen${ids[$k]} "; done
  while IFS='|' read -r id name com; do
    id=${id%%_*}
    [ "$com" = "$comment" ] || continue
    case "$seen" in *" $id "*) continue;; esac
    seen="$seen$id "
    pending+=("$id|$name")
  done < <(squeue --me --noheader --states=all --format='%i|%j|%k' 2>/dev/null | sort -t'|' -k1,1n)
}
adopt() {
  local key=$1 name=$2 i
  for i in "${!pending[@]}"; do
    if [ "${pending[$i]#*|}" = "$name" ]; then
      ids[$key]=${pending[$i]%%|*}
      unset "pending[$i]"
      printf 'hpcjobs-id %s %s\n' "$key" "${ids[$key]}"
      return 0
    fi
  done
  return 1
}
"""


def _now() -> float:
    return time.time()


def _end_reason(
    status: JobStatus, status_reason: str | None, exit_code: int | None, signal: int | None, cancelled_by: str | None
) -> str | None:
    """Why a job ended, in words, from whichever of Slurm's fields are known (None: nothing to say).

    The one place sacct rows and ended squeue rows turn into a reason, so both agree.
    """
    if status == JobStatus.FAILED:
        if status_reason and status_reason != "failed":
            return status_reason
        if exit_code:
            return f"exit code {exit_code}"
        if signal:
            return f"killed by signal {signal}"
        return None
    if status == JobStatus.CANCELED:
        return "canceled" + (f" by {cancelled_by}" if cancelled_by else "")
    return None


class SlurmBackend(Backend):
    """Runs plans on a Slurm cluster (login node: local transport; laptop: SSH)."""

    def __init__(self, site: Site, transport: Transport) -> None:
        super().__init__(site, transport)
        self._probe_cache: dict[str, str] | None = None

    # -- target ---------------------------------------------------------------------
    def _probe(self) -> dict[str, str]:
        if self._probe_cache is None:
            # over SSH, a second CLI run skips this round trip: home and user are kept in
            # the store's meta table for a day (keyed by how the site reaches its host)
            self._probe_cache = _cached_probe(self.site)
        if self._probe_cache is None:
            res = self.transport.run(["bash", "-c", 'printf "%s\\n%s\\n" "$HOME" "$(id -un)"'])
            if not res.ok:
                raise RuntimeFailure(f"cannot ask {self.transport.name} for its home directory: {res.err.strip()}")
            lines = res.out.splitlines()
            self._probe_cache = {"home": lines[0], "user": lines[1] if len(lines) > 1 else ""}
            _save_probe(self.site, self._probe_cache)
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

    def _missing_snapshots(self, plan: Plan) -> dict[str, str]:
        """Snapshots of *plan* the target lacks (snapshot dir -> local code folder): one check for all."""
        snaps = dict(plan.snapshots)
        if plan.code_src and plan.code_dir:
            snaps.setdefault(plan.code_dir, plan.code_src)
        # local data inputs of an SSH site (hpcjobs.uploads): content-addressed the same way
        snaps.update(plan.uploads)
        if len(snaps) <= 1:
            return {d: src for d, src in snaps.items() if not self.transport.exists(d)}
        check = 'for d; do [ -e "$d" ] || printf "%s\\n" "$d"; done'
        res = self.transport.run(["bash", "-c", check, "hpcjobs-snapshots", *snaps])
        if not res.ok:
            return snaps
        missing = set(res.out.splitlines())
        return {d: src for d, src in snaps.items() if d in missing}

    def _payload(self, plan: Plan, root: str, with_snapshot: bool | dict[str, str]) -> bytes:
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
            ship = with_snapshot if isinstance(with_snapshot, dict) else {}
            if with_snapshot is True and plan.code_src and plan.code_dir:
                ship = {plan.code_dir: plan.code_src}
            for code_dir, code_src in ship.items():
                from hpcjobs.snapshot import take_snapshot

                snap = take_snapshot(code_src)
                rel_snap = os.path.relpath(code_dir, root)
                if not snap.is_file:
                    # the folder itself, so that an empty one exists on the cluster too
                    top = tarfile.TarInfo(rel_snap)
                    top.type = tarfile.DIRTYPE
                    top.mode = 0o755
                    tar.addfile(top)
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

    def _program(self, plan: Plan, known: dict[str, str], *, adopt: bool = False) -> str:
        lines = [_PROGRAM]
        for key, sid in known.items():
            lines.append(f"ids[{key}]={shq(sid)}")
        # One submitter per job at a time: a retry after a lost connection waits here until
        # the earlier attempt (and any sbatch it started) is over, then adopts what it did.
        lock = shq(f"{plan.job_dir}/.hpcjobs-submit.lock")
        lines.append(
            f"if command -v flock >/dev/null 2>&1 && exec 8>>{lock}; then\n"
            '  flock -w 120 8 || { echo "hpcjobs: an earlier submission of this job is still running" >&2; exit 93; }\n'
            "fi"
        )
        if adopt:
            lines.append(f"find_pending {shq(f'hpcjobs:{plan.token}')}")
        for s in plan.scripts:
            if not KEY_RE.match(s.key):
                raise RuntimeFailure(f"internal error: bad script key {s.key!r}")
            if s.key in known:
                continue
            args = []
            # "," joins dependency kinds that must all hold (a pipeline's sweep step: afterok on
            # the steps it reads from, afterany on its own arrays)
            wanted = [(s.dependency_type, s.depends_on), ("afterany", s.after_any)]
            kinds = [f"{kind}:" + ":".join(f"${{ids[{d}]}}" for d in keys) for kind, keys in wanted if keys]
            if kinds:
                args.append(f'"--dependency={",".join(kinds)}"')
                args.append("--kill-on-invalid-dep=yes")
            args.append(shq(s.script_path))
            adopt_first = f"adopt {s.key} {shq(s.job_name)} || " if adopt else ""
            lines.append(f"{adopt_first}submit {s.key} {' '.join(args)}")
        return "\n".join(lines) + "\n"

    def submit(self, plan: Plan, records: list[JobRecord]) -> dict[str, list[str]]:
        root = plan.job_dir.rsplit("/", 1)[0]
        payload = self._payload(plan, root, self._missing_snapshots(plan))
        known: dict[str, str] = {}
        delay = 1.0
        # set when the connection was lost while the program ran: sbatch may have run
        # without its id reaching us, so from then on every attempt adopts before submitting
        lost: TransientError | None = None
        for attempt in range(RETRIES + 1):
            program = self._program(plan, known, adopt=lost is not None)
            try:
                res = self.transport.run(["bash", "-c", program, "hpcjobs-submit", root], stdin=payload, env=_fault_env())
            except TransientError as exc:
                lost = exc
                if attempt == RETRIES:
                    break
                time.sleep(delay * (1 + random.random() / 2))
                delay = min(delay * 2, 20.0)
                continue
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
                if lost is not None:
                    # this attempt submitted nothing, but the one cut off may have
                    raise SubmissionUncertain(_uncertain_message(self.transport.name, lost, res.err), known=known)
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
        if lost is not None:
            raise SubmissionUncertain(_uncertain_message(self.transport.name, lost, ""), known=known)
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
        adopted = self._adopt_uncertain([r for r in records if r.extra.get("submit_uncertain") and not r.slurm_ids])
        if adopted:
            records = [_with(r, adopted[r.name]) if r.name in adopted else r for r in records]
        updates = self._refresh(records)
        for name, upd in adopted.items():
            updates[name] = {**upd, **updates.get(name, {})}
        return updates

    def _adopt_uncertain(self, records: list[JobRecord]) -> dict[str, dict[str, Any]]:
        """Jobs whose submission was cut off: adopt the Slurm job with their token, if there is one."""
        out: dict[str, dict[str, Any]] = {}
        for r in records:
            found = self.find_by_token(r.name, f"hpcjobs:{r.token}") or self._find_in_sacct(r)
            extra = {k: v for k, v in r.extra.items() if k != "submit_uncertain"}
            if found:
                out[r.name] = {"slurm_ids": [found], "status": JobStatus.QUEUED.value, "reason": None, "extra": extra}
            elif _now() - r.created > 2 * SACCT_GRACE:
                # squeue keeps every job for MinJobAge after it ends; by now it would show it
                out[r.name] = {
                    "status": JobStatus.FAILED.value,
                    "reason": "never submitted: the connection was lost before sbatch, and Slurm has no job with its token",
                    "extra": extra,
                    "ended": _now(),
                }
        return out

    def _find_in_sacct(self, rec: JobRecord) -> str | None:
        # a job that already ended and left squeue (MinJobAge): accounting still has it by
        # name (names are unique per user in practice: the store refuses duplicates)
        start = _dt.datetime.fromtimestamp(rec.created - 3600).strftime("%Y-%m-%dT%H:%M:%S")
        res = self.transport.run(["sacct", "-X", "-n", "-P", f"--name={rec.name}", f"--starttime={start}", "--format=JobID"])
        ids = [line.strip().split("_")[0] for line in res.out.splitlines() if line.strip()] if res.ok else []
        return ids[0] if ids else None

    def _refresh(self, records: list[JobRecord]) -> dict[str, dict[str, Any]]:
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
        ended: dict[str, slurm.SqueueRow] = {}
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
                ended[sid] = row
                continue
            else:
                upd["reason"] = None
            updates[rec.name] = upd
        if missing:
            updates.update(self._from_sacct(missing, by_id, ended))
        by_name = {r.name: r for r in by_id.values()}
        return {n: {k: v for k, v in u.items() if getattr(by_name.get(n), k, None) != v} for n, u in updates.items()}

    def _from_sacct(
        self, ids: list[str], by_id: dict[str, JobRecord], ended: dict[str, slurm.SqueueRow] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Final states from accounting; *ended* are the jobs squeue already shows as ended.

        Accounting can lag behind the controller (slurmdbd busy with thousands of array
        tasks) or be down.  squeue's word that a job ended is then final: a stale
        PENDING/RUNNING row in sacct, or no row, never turns it back into Queued or
        Running.  The exit code then comes from the job's own marker, if it wrote one.
        """
        ended = ended or {}
        earliest = min((by_id[i].submitted or by_id[i].created) for i in ids)
        start = _dt.datetime.fromtimestamp(earliest - 86400).strftime("%Y-%m-%dT%H:%M:%S")
        base_ids = sorted({i.split("_")[0] for i in ids})
        res = self.transport.run(slurm.sacct_argv(job_ids=base_ids, start=start))
        rows: dict[str, Any] = {}
        if res.ok:
            for row in slurm.parse_sacct(res.out):
                rows[row.job_id] = row
                if row.id.is_array_summary and row.id.array_spec:
                    # array tasks that never started (e.g. a cancelled sweep's pending
                    # trials) are one row, 123_[2-5%2]: it stands for each of them
                    for task in slurm.parse_array_spec(row.id.array_spec)[0]:
                        rows.setdefault(f"{row.id.job}_{task}", row)
        updates: dict[str, dict[str, Any]] = {}
        lost: list[str] = []
        for sid in ids:
            rec = by_id[sid]
            found = rows.get(sid)
            if found is None:
                lost.append(sid)
                continue
            row = found
            if sid in ended and not row.status.is_terminal:
                # sacct has not caught up with the controller yet
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
            if row.status in (JobStatus.QUEUED, JobStatus.PAUSED):
                upd["reason"] = row.reason
            else:
                reason = _end_reason(row.status, row.status_reason, row.exit_code, row.exit_signal, row.cancelled_by)
                if reason is not None or row.status != JobStatus.FAILED:
                    upd["reason"] = reason
            updates[rec.name] = upd
        behind = [i for i in lost if i in ended]
        if behind:
            updates.update(self._from_squeue_end(behind, by_id, ended))
        lost = [i for i in lost if i not in ended]
        if lost:
            updates.update(self._from_markers(lost, by_id))
        return updates

    def _from_squeue_end(
        self, ids: list[str], by_id: dict[str, JobRecord], ended: dict[str, slurm.SqueueRow]
    ) -> dict[str, dict[str, Any]]:
        """Jobs squeue shows as ended while accounting does not (yet): squeue's state, the marker's exit code."""
        codes = self._read_markers([by_id[i] for i in ids])
        updates: dict[str, dict[str, Any]] = {}
        for i in ids:
            rec, row = by_id[i], ended[i]
            code = codes.get(rec.name)
            upd: dict[str, Any] = {
                "status": row.status.value,
                "nodes": row.nodelist,
                "extra": {**rec.extra, "slurm_state": row.state},
                "ended": rec.ended or _now(),
            }
            if row.start and row.elapsed is not None and row.nodelist:
                # squeue's start and run time of an ended job that ran give its end to the second
                upd["started"] = row.start.timestamp()
                upd["ended"] = row.start.timestamp() + row.elapsed
            if code is not None:
                upd["exit_code"] = code
            upd["reason"] = _end_reason(row.status, row.status_reason, code, None, None) or (
                "failed" if row.status == JobStatus.FAILED else None
            )
            updates[rec.name] = upd
        return updates

    def _read_markers(self, records: list[JobRecord]) -> dict[str, int]:
        """Exit codes the jobs wrote into their state directories (one command for all)."""
        dirs = [r.extra.get("state_dir") or f"{r.job_dir}/.hpcjobs" for r in records]
        res = self.transport.run(
            ["bash", "-c", 'for d in "$@"; do printf "%s|" "$d"; cat "$d/exit_code" 2>/dev/null || echo; done', "hpcjobs", *dirs]
        )
        by_dir: dict[str, int] = {}
        for line in res.out.splitlines():
            d, _, code = line.partition("|")
            if code.strip().lstrip("-").isdigit():
                by_dir[d] = int(code.strip())
        return {r.name: by_dir[d] for r, d in zip(records, dirs, strict=True) if d in by_dir}

    def _from_markers(self, ids: list[str], by_id: dict[str, JobRecord]) -> dict[str, dict[str, Any]]:
        """Jobs neither squeue nor sacct knows: read the job's own exit marker, never guess.

        A job the user cancelled that squeue no longer lists will not run again: without a
        marker it is Canceled, at once (no grace for accounting to catch up).
        """
        old = [
            i
            for i in ids
            if by_id[i].extra.get("cancel_requested") or _now() - (by_id[i].submitted or by_id[i].created) > SACCT_GRACE
        ]
        if not old:
            return {}
        codes = self._read_markers([by_id[i] for i in old])
        updates: dict[str, dict[str, Any]] = {}
        for i in old:
            rec = by_id[i]
            rc = codes.get(rec.name)
            if rc is not None:
                updates[rec.name] = {
                    "status": (JobStatus.COMPLETED if rc == 0 else JobStatus.FAILED).value,
                    "exit_code": rc,
                    "reason": None if rc == 0 else f"exit code {rc} (from the job's marker; Slurm has forgotten the job)",
                    "ended": rec.ended or _now(),
                }
            elif rec.extra.get("cancel_requested"):
                updates[rec.name] = {
                    "status": JobStatus.CANCELED.value,
                    "reason": "canceled (Slurm no longer lists the job)",
                    "ended": rec.ended or _now(),
                }
            else:
                updates[rec.name] = {"reason": "not found in squeue or sacct; state unknown", "status": JobStatus.UNKNOWN.value}
        return updates

    def cancel(self, records: list[JobRecord]) -> None:
        # every id: a sweep too big for one array has one array per chunk
        live = {i for r in records if not JobStatus(r.status).is_terminal for i in r.slurm_ids}
        # An array's own id cancels every task.  Naming its pending tasks as well makes
        # scancel (one RPC per id, in parallel) split each from the array's record, and a
        # task split off and cancelled that way is lost: neither squeue nor sacct shows
        # it again (Slurm 22.05).  So tasks go only when their array does not.
        ids = sorted(i for i in live if i.partition("_")[0] == i or i.partition("_")[0] not in live)
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


#: seconds a remote home/user probe is reused from the store's meta table
PROBE_TTL = 86400.0


def _probe_key(site: Site) -> str | None:
    if site.ssh is None:
        return None
    s = site.ssh
    return f"probe:{site.name}:{s.host}:{s.port or ''}:{s.user or ''}:{s.proxy_jump or ''}"


def _cached_probe(site: Site) -> dict[str, str] | None:
    """Home and user of *site*'s remote account, from the store's meta table if fresh."""
    import json
    import sqlite3

    from hpcjobs.store import Store

    key = _probe_key(site)
    if key is None:
        return None
    try:
        raw = Store().get_meta(key)
        data = json.loads(raw) if raw else None
    except (ValueError, OSError, RuntimeFailure, sqlite3.Error):
        return None
    if not isinstance(data, dict) or _now() - float(data.get("fetched", 0)) > PROBE_TTL:
        return None
    if not str(data.get("home", "")).startswith("/") or not data.get("user"):
        return None
    return {"home": str(data["home"]), "user": str(data["user"])}


def _save_probe(site: Site, probe: dict[str, str]) -> None:
    import contextlib
    import json
    import sqlite3

    from hpcjobs.store import Store

    key = _probe_key(site)
    if key is None or not probe.get("home", "").startswith("/") or not probe.get("user"):
        return
    # a cache: losing it costs one round trip next time
    with contextlib.suppress(OSError, RuntimeFailure, sqlite3.Error):
        Store().set_meta(key, json.dumps({**probe, "fetched": _now()}))


def _fault_env() -> dict[str, str] | None:
    """``HPCJOBS_FAULT``/``HPCJOBS_FAULT_SLEEP`` for the submission program (tests only, docs/ssh.md).

    Passed on explicitly because an SSH login does not inherit the local environment.
    """
    import os

    env = {k: os.environ[k] for k in ("HPCJOBS_FAULT", "HPCJOBS_FAULT_SLEEP") if os.environ.get(k)}
    return env or None


def _uncertain_message(where: str, lost: Exception, err: str) -> str:
    detail = f" ({err.strip()})" if err.strip() else ""
    return (
        f"the connection to {where} was lost during submission and could not be re-established in time "
        f"({lost}){detail}; Slurm may or may not have the job"
    )


def _with(rec: JobRecord, changes: dict[str, Any]) -> JobRecord:
    import dataclasses

    return dataclasses.replace(rec, **changes)


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
