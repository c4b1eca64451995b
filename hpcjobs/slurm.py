"""Pure Slurm command builders and output parsers (Slurm 22.05).

Nothing here runs a command, reads a file or looks at the clock: argv builders
return ``list[str]`` for a transport to run, and parsers take the text a command
printed and return data.  Every parser is tested on output recorded from a real
Slurm 22.05 cluster (``tests/unit/data/slurm/``).

Conventions the parsers rely on (the argv builders guarantee them):

* Commands run with :func:`sanitized_env`, so ``SLURM_TIME_FORMAT`` and friends
  cannot change what the output looks like; datetimes are ISO 8601 without a zone
  (the cluster's local time) and are returned as naive :class:`datetime` objects.
* Machine-readable output uses ``|`` between fields, and the one free-text field a
  user controls (the job name) is always printed *last*, so a name that contains
  ``|`` survives: lines are split with ``maxsplit``.  A job name containing a
  newline cannot be parsed from squeue/sacct output; hpcjobs never creates one.

The one Slurm state -> :class:`~hpcjobs.status.JobStatus` table is
:data:`STATE_TABLE` (house rule 11); an unknown state maps to ``UNKNOWN``, never
``COMPLETED``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from hpcjobs.errors import RuntimeFailure
from hpcjobs.status import JobStatus

__all__ = [
    "HELD_REASONS",
    "KEPT_ENV_VARS",
    "SACCT_ALL_STATES",
    "SACCT_FIELDS",
    "SHORT_STATE_CODES",
    "SINFO_FIELDS",
    "SINFO_FORMAT",
    "SQUEUE_FIELDS",
    "SQUEUE_FORMAT",
    "STATE_TABLE",
    "GresSpec",
    "JobId",
    "PartitionInfo",
    "SacctRow",
    "SbatchResult",
    "SlurmParseError",
    "SqueueRow",
    "TestOnlyResult",
    "cancelled_by",
    "classify_sbatch_error",
    "dropped_env_vars",
    "expand_hostlist",
    "format_slurm_time",
    "is_invalid_job_id_error",
    "parse_array_spec",
    "parse_exit_code",
    "parse_gres",
    "parse_hostnames",
    "parse_job_id",
    "parse_sacct",
    "parse_sbatch",
    "parse_scontrol_config",
    "parse_scontrol_kv",
    "parse_sinfo",
    "parse_slurm_datetime",
    "parse_slurm_time",
    "parse_squeue",
    "parse_test_only",
    "sacct_argv",
    "sanitized_env",
    "sbatch_argv",
    "sbatch_error_message",
    "scancel_argv",
    "scontrol_show_config_argv",
    "scontrol_show_hostnames_argv",
    "scontrol_show_job_argv",
    "sinfo_argv",
    "squeue_argv",
    "status_from_slurm",
    "status_from_squeue",
]


class SlurmParseError(RuntimeFailure):
    """A Slurm command printed something this module cannot read."""


# --------------------------------------------------------------------------- states

_Q = JobStatus.QUEUED
_ST = JobStatus.STARTING
_R = JobStatus.RUNNING
_FIN = JobStatus.FINALIZING
_OK = JobStatus.COMPLETED
_F = JobStatus.FAILED
_C = JobStatus.CANCELED
_P = JobStatus.PAUSED
_U = JobStatus.UNKNOWN

# (long name, short code, status, reason word).  This is THE table: every job state
# Slurm 22.05 prints (squeue %T/%t, sacct State, scontrol JobState), one row each.
# Decisions, and why:
# * REQUEUED / REQUEUE_FED: the job goes back to the queue by itself -> Queued.
# * REQUEUE_HOLD / RESV_DEL_HOLD / SPECIAL_EXIT: pending but held; nothing happens
#   until someone runs `scontrol release`, which is what Paused tells the user.
# * SUSPENDED / STOPPED: the processes exist but are not executing (SIGSTOP or
#   gang/preempt suspend) -> Paused, not Running, so "running but no progress" is
#   never shown as healthy.
# * RESIZING / SIGNALING: transient flags on a running job -> Running.
# * COMPLETING / STAGE_OUT: the script has ended, epilog or burst-buffer stage-out
#   still runs, and the final state is not known yet -> Finalizing.
# * PREEMPTED as a *final* state means it was not requeued -> Failed("preempted").
# * REVOKED only exists in federations: this cluster's copy was withdrawn because a
#   sibling cluster started the job.  Its real outcome is on the other cluster, so
#   we do not claim one -> Unknown("revoked").
_STATE_ROWS: tuple[tuple[str, str, JobStatus, str | None], ...] = (
    ("PENDING", "PD", _Q, None),
    ("REQUEUED", "RQ", _Q, "requeued"),
    ("REQUEUE_FED", "RF", _Q, "requeued"),
    ("REQUEUE_HOLD", "RH", _P, "requeue_hold"),
    ("RESV_DEL_HOLD", "RD", _P, "reservation_deleted"),
    ("SPECIAL_EXIT", "SE", _P, "special_exit"),
    ("CONFIGURING", "CF", _ST, None),
    ("RUNNING", "R", _R, None),
    ("RESIZING", "RS", _R, None),
    ("SIGNALING", "SI", _R, None),
    ("SUSPENDED", "S", _P, "suspended"),
    ("STOPPED", "ST", _P, "stopped"),
    ("COMPLETING", "CG", _FIN, None),
    ("STAGE_OUT", "SO", _FIN, None),
    ("COMPLETED", "CD", _OK, None),
    ("CANCELLED", "CA", _C, None),
    ("FAILED", "F", _F, "failed"),
    ("TIMEOUT", "TO", _F, "timeout"),
    ("OUT_OF_MEMORY", "OOM", _F, "out_of_memory"),
    ("NODE_FAIL", "NF", _F, "node_fail"),
    ("BOOT_FAIL", "BF", _F, "boot_fail"),
    ("DEADLINE", "DL", _F, "deadline"),
    ("PREEMPTED", "PR", _F, "preempted"),
    ("REVOKED", "RV", _U, "revoked"),
)

STATE_TABLE: dict[str, JobStatus] = {
    **{long: status for long, _, status, _ in _STATE_ROWS},
    **{short: status for _, short, status, _ in _STATE_ROWS},
}
"""Every Slurm 22.05 job state, long name and short code, to its :class:`JobStatus`."""

SHORT_STATE_CODES: dict[str, str] = {short: long for long, short, _, _ in _STATE_ROWS}
"""Short code (``squeue %t``) -> long state name (``squeue %T``, ``sacct``)."""

_STATE_REASON: dict[str, str | None] = {
    **{long: why for long, _, _, why in _STATE_ROWS},
    **{short: why for _, short, _, why in _STATE_ROWS},
}

HELD_REASONS: dict[str, str] = {
    "JobHeldUser": "held_user",
    "JobHeldAdmin": "held_admin",
    "launch failed requeued held": "launch_failed_held",
    "job requeued in held state": "requeue_hold",
}
"""Pending reasons that mean "held until released" (shown as Paused), with their reason word.

Matched ignoring case and ``_`` versus space.
"""

# A pending job with one of these reasons will stay pending forever; it is still
# Queued (that is what Slurm says) but the reason word lets the caller warn or cancel.
# Recorded on 22.05: a job asking for more than the partition has (CPUs, nodes, time)
# is accepted and pends with PartitionConfig / PartitionTimeLimit unless the site
# sets EnforcePartLimits.
_STUCK_REASONS: dict[str, str] = {
    "DependencyNeverSatisfied": "dependency_never_satisfied",
    "PartitionConfig": "partition_config",
    "PartitionTimeLimit": "partition_time_limit",
    "PartitionNodeLimit": "partition_node_limit",
    "BadConstraints": "bad_constraints",
    "InvalidAccount": "invalid_account",
    "InvalidQOS": "invalid_qos",
}


def _state_word(state: str) -> str:
    # sacct prints "CANCELLED by 1000"; a truncated column ends in "+".
    words = state.strip().split()
    if not words:
        return ""
    return words[0].upper().rstrip("+")


def status_from_slurm(state: str) -> tuple[JobStatus, str | None]:
    """Map a Slurm job state (long name or short code) to a status and a reason word.

    The reason word says *why* for failures (``"timeout"``, ``"out_of_memory"``,
    ``"node_fail"``, ``"preempted"``, ``"deadline"``, ``"boot_fail"``, ``"failed"``)
    and for paused or requeued jobs; it is None otherwise.  ``"CANCELLED by 123"``
    is Canceled.  Anything not in :data:`STATE_TABLE` is ``(UNKNOWN, None)``.
    """
    word = _state_word(state)
    status = STATE_TABLE.get(word)
    if status is None:
        return JobStatus.UNKNOWN, None
    return status, _STATE_REASON[word]


def _reason_key(reason: str) -> str:
    # squeue prints "job requeued in held state", scontrol "job_requeued_in_held_state".
    return reason.strip().replace("_", " ").lower()


_HELD_BY_KEY = {_reason_key(k): v for k, v in HELD_REASONS.items()}
_STUCK_BY_KEY = {_reason_key(k): v for k, v in _STUCK_REASONS.items()}


def status_from_squeue(state: str, reason: str | None) -> tuple[JobStatus, str | None]:
    """Like :func:`status_from_slurm`, also using the pending reason (``%r``, sacct ``Reason``).

    A PENDING job held by a user or an admin (``JobHeldUser``/``JobHeldAdmin``, or
    requeued held) is Paused: it will not start until released.  A PENDING job that
    can never start as submitted (``DependencyNeverSatisfied``, ``PartitionConfig``,
    ...) stays Queued, which is what Slurm says, with a reason word such as
    ``"dependency_never_satisfied"`` so the caller can warn.  The reason is ignored
    for every other state.
    """
    status, why = status_from_slurm(state)
    if status is JobStatus.QUEUED and reason:
        key = _reason_key(reason)
        if key in _HELD_BY_KEY:
            return JobStatus.PAUSED, _HELD_BY_KEY[key]
        if key in _STUCK_BY_KEY:
            return status, _STUCK_BY_KEY[key]
    return status, why


def cancelled_by(state: str) -> str | None:
    """The uid in sacct's ``"CANCELLED by 1000"``, or None."""
    m = re.fullmatch(r"\s*CANCELLED\s+by\s+(\S+)\s*", state, re.IGNORECASE)
    return m.group(1) if m else None


# --------------------------------------------------------------------------- time

_NO_TIME = frozenset(
    {"", "UNLIMITED", "INFINITE", "INVALID", "NOT_SET", "PARTITION_LIMIT", "N/A", "NONE",
     "UNKNOWN", "(NULL)"}
)
_TIME_RE = re.compile(r"(?:(\d+)-)?(\d+(?::\d+){0,2}(?:\.\d*)?)")


def parse_slurm_time(s: str) -> int | None:
    """Parse a Slurm duration into whole seconds.

    Accepts every form Slurm prints or takes: ``D-HH:MM:SS``, ``D-HH:MM``, ``D-HH``,
    ``HH:MM:SS``, ``MM:SS`` and plain ``MM`` (minutes, as for ``--time``), with
    fractional seconds (``TotalCPU``) truncated.  Returns None for the no-value words
    (``UNLIMITED``/``infinite``, ``INVALID``, ``NOT_SET``, ``Partition_Limit``, ``N/A``)
    and for anything else it cannot read.
    """
    t = s.strip()
    if t.upper() in _NO_TIME:
        return None
    m = _TIME_RE.fullmatch(t)
    if m is None:
        return None
    days_s, clock = m.groups()
    *head, last = clock.split(":")
    if "." in last and (not head or days_s is not None):
        return None  # a fraction only ever follows seconds
    parts = [int(f) for f in head] + [int(float(last))]
    if days_s is not None:
        # After "D-" the fields are hours[:minutes[:seconds]].
        parts += [0] * (3 - len(parts))
        hours, minutes, secs = parts
        return ((int(days_s) * 24 + hours) * 60 + minutes) * 60 + secs
    if len(parts) == 1:
        return parts[0] * 60  # plain minutes, as sbatch --time reads them
    if len(parts) == 2:
        parts.insert(0, 0)
    hours, minutes, secs = parts
    return (hours * 60 + minutes) * 60 + secs


def format_slurm_time(seconds: int) -> str:
    """Format a positive duration for ``sbatch --time``: ``HH:MM:SS`` or ``D-HH:MM:SS``.

    Seconds are kept (3600 -> ``01:00:00``, 90061 -> ``1-01:01:01``); Slurm itself
    rounds a limit up to whole minutes.  Zero and negative values raise ValueError,
    because Slurm reads a zero time limit as "no limit at all".
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise TypeError(f"time limit must be an int number of seconds, got {seconds!r}")
    if seconds <= 0:
        raise ValueError(f"time limit must be positive (Slurm reads 0 as unlimited), got {seconds}")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    hms = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{hms}" if days else hms


_NO_DATE = frozenset({"", "UNKNOWN", "NONE", "N/A", "(NULL)", "0"})


def parse_slurm_datetime(s: str) -> datetime | None:
    """Parse Slurm's ISO 8601 datetime (``2026-11-29T02:03:04``) as a naive local datetime.

    ``Unknown``, ``None``, ``N/A``, ``(null)`` and the empty string give None.  Any
    other text raises :class:`SlurmParseError`: it means the output format changed
    (``SLURM_TIME_FORMAT``), which :func:`sanitized_env` is there to prevent.
    """
    t = s.strip()
    if t.upper() in _NO_DATE:
        return None
    try:
        return datetime.strptime(t, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise SlurmParseError(
            f"cannot read Slurm datetime {t!r}",
            hint="expected YYYY-MM-DDTHH:MM:SS; is SLURM_TIME_FORMAT set for this command?",
        ) from None


# --------------------------------------------------------------------------- ids

_JOB_ID_RE = re.compile(
    r"(?P<job>\d+)"
    r"(?:_(?:(?P<task>\d+)|\[(?P<spec>[^\]]*)\]))?"
    r"(?:\+(?P<het>\d+))?"
    r"(?:\.(?P<step>.+))?"
)


@dataclass(frozen=True)
class JobId:
    """A parsed Slurm job id as printed by squeue ``%i`` or sacct ``JobID``.

    Shapes: ``123``, ``123_4`` (array task), ``123_[5-9%2]`` (pending array tasks
    not yet split off), ``123+1`` (heterogeneous component), any of those plus a step
    suffix (``.batch``, ``.extern``, ``.0``).
    """

    raw: str
    job: str
    array_task: int | None = None
    array_spec: str | None = None
    het_offset: int | None = None
    step: str | None = None

    @property
    def is_step(self) -> bool:
        """True for a step row (``123.batch``, ``123_4.0``)."""
        return self.step is not None

    @property
    def is_array_summary(self) -> bool:
        """True for a row that stands for several pending array tasks."""
        return self.array_spec is not None

    @property
    def allocation(self) -> str:
        """The id without its step suffix (``123_4.batch`` -> ``123_4``)."""
        return self.raw.split(".", 1)[0]


def parse_job_id(s: str) -> JobId:
    """Parse a job id string (see :class:`JobId`); raise :class:`SlurmParseError` if malformed."""
    t = s.strip()
    m = _JOB_ID_RE.fullmatch(t)
    if m is None:
        raise SlurmParseError(f"cannot read Slurm job id {t!r}")
    task = m.group("task")
    het = m.group("het")
    return JobId(
        raw=t,
        job=m.group("job"),
        array_task=int(task) if task is not None else None,
        array_spec=m.group("spec"),
        het_offset=int(het) if het is not None else None,
        step=m.group("step"),
    )


def parse_array_spec(spec: str) -> tuple[list[int], int | None]:
    """Expand an array index spec (``0-5%2``, ``1,3,10-20:5``) into indices and a throttle.

    Returns ``(indices, max_running)``; ``max_running`` is None without ``%N``.
    Raises ValueError for malformed specs.
    """
    body, _, throttle = spec.strip().strip("[]").partition("%")
    indices: list[int] = []
    for part in body.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+)(?::(\d+))?)?", part.strip())
        if m is None:
            raise ValueError(f"invalid job array spec {spec!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        step = int(m.group(3)) if m.group(3) is not None else 1
        if hi < lo or step < 1:
            raise ValueError(f"invalid job array spec {spec!r}")
        indices.extend(range(lo, hi + 1, step))
    return indices, (int(throttle) if throttle else None)


def parse_exit_code(s: str) -> tuple[int | None, int | None]:
    """Split Slurm's ``exit:signal`` (``"2:0"``, ``"0:15"``) into ints; empty gives (None, None)."""
    t = s.strip()
    m = re.fullmatch(r"(\d+):(\d+)", t)
    if m is None:
        return None, None
    return int(m.group(1)), int(m.group(2))


def _opt_int(s: str) -> int | None:
    t = s.strip().rstrip("+")
    return int(t) if t.isdigit() else None


def _opt_text(s: str) -> str | None:
    t = s.strip()
    if t in ("", "(null)", "N/A", "None", "None assigned"):
        return None
    return t


def _check_ids(what: str, values: Sequence[str] | None) -> list[str] | None:
    # An empty list would otherwise silently drop the filter and select everything.
    if values is None:
        return None
    out = list(values)
    if not out:
        raise ValueError(f"{what}: an empty list selects nothing; pass None for no filter")
    for v in out:
        if not v or "," in v or v.startswith("-") or any(c.isspace() for c in v):
            raise ValueError(f"{what}: {v!r} cannot be passed to Slurm in a comma list")
    return out


# --------------------------------------------------------------------------- sbatch


@dataclass(frozen=True)
class SbatchResult:
    """What ``sbatch --parsable`` printed: the job id and, in a federation, the cluster."""

    job_id: str
    cluster: str | None = None


@dataclass(frozen=True)
class TestOnlyResult:
    """What ``sbatch --test-only`` said (on stderr) about a would-be job."""

    __test__ = False  # not a pytest test class, despite the name

    ok: bool
    job_id: str | None = None
    start_time: datetime | None = None
    nodes: str | None = None
    processors: int | None = None
    partition: str | None = None
    message: str = ""


def sbatch_argv(
    script_path: str | None = None,
    *,
    options: Sequence[str] = (),
    test_only: bool = False,
) -> list[str]:
    """Build the ``sbatch`` argv: always ``--parsable``; the script from *script_path* or stdin.

    With ``script_path=None`` sbatch reads the script from stdin, so the caller must
    feed it.  *options* go before the script (anything after the script path would
    become the script's own arguments).
    """
    argv = ["sbatch", "--parsable"]
    if test_only:
        argv.append("--test-only")
    for opt in options:
        if "\0" in opt:
            raise ValueError(f"sbatch option contains a NUL byte: {opt!r}")
        argv.append(opt)
    if script_path is not None:
        if not script_path or script_path.startswith("-") or "\0" in script_path:
            # A leading "-" would be read as an option.
            raise ValueError(f"unusable sbatch script path {script_path!r}")
        argv.append(script_path)
    return argv


_SBATCH_ID_RE = re.compile(r"(\d+)(?:;(\S+))?")


def parse_sbatch(stdout: str) -> SbatchResult:
    """Read the job id from ``sbatch --parsable`` stdout (``123`` or ``123;cluster``)."""
    for line in reversed(stdout.splitlines()):
        m = _SBATCH_ID_RE.fullmatch(line.strip())
        if m is not None:
            return SbatchResult(job_id=m.group(1), cluster=m.group(2))
    raise SlurmParseError(
        "sbatch printed no job id",
        hint=f"its output was: {stdout.strip()[:200]!r}",
    )


_TEST_ONLY_RE = re.compile(
    r"Job (\d+) to start at (\S+) using (\d+) processors on nodes (\S+) in partition (\S+)"
)


def parse_test_only(stderr: str) -> TestOnlyResult:
    """Read ``sbatch --test-only`` stderr: when and where the job would start, or why not."""
    m = _TEST_ONLY_RE.search(stderr)
    if m is None:
        return TestOnlyResult(ok=False, message=sbatch_error_message(stderr))
    return TestOnlyResult(
        ok=True,
        job_id=m.group(1),
        start_time=parse_slurm_datetime(m.group(2)),
        processors=int(m.group(3)),
        nodes=m.group(4),
        partition=m.group(5),
        message=m.group(0),
    )


def sbatch_error_message(stderr: str) -> str:
    """Slurm's own words from sbatch's stderr, without the ``sbatch: error:`` prefixes.

    The controller's verdict (``Batch job submission failed: X``, or ``allocation
    failure: X`` from ``--test-only``) comes first, sbatch's other error lines follow
    in parentheses (``Invalid partition name specified (invalid partition specified:
    nosuchpart)``); multi-line messages are joined into one line.  Without error
    lines, the first line of stderr is returned.
    """
    verdict: str | None = None
    details: list[str] = []
    for line in stderr.splitlines():
        s = line.strip()
        m = re.match(r"(?:s\w+:\s*)?error:\s*(.*)", s, re.IGNORECASE)
        if m is None:
            a = re.match(r"allocation failure:\s*(.*)", s, re.IGNORECASE)
            if a is not None:
                verdict = a.group(1).strip()
            continue
        text = m.group(1).strip()
        f = re.match(r"(?:batch job )?submission failed:\s*(.*)", text, re.IGNORECASE)
        if f is not None:
            verdict = f.group(1).strip()
        elif text:
            details.append(text)
    detail = re.sub(r"\s+", " ", " ".join(details)).strip()
    if verdict:
        return f"{verdict} ({detail})" if detail else verdict
    if detail:
        return detail
    for line in stderr.splitlines():
        if line.strip():
            return re.sub(r"^sbatch:\s*", "", line.strip())
    return ""


# Lower-case fragments of Slurm's messages.  Permanent: Slurm answered and refused
# the request itself, so the same request will be refused again.
_PERMANENT_PATTERNS = (
    "invalid partition",
    "invalid account",
    "invalid qos",
    "requested node configuration is not available",
    "more processors requested than permitted",
    "time limit",
    "invalid generic resource",
    "invalid trackable resource",
    "job violates accounting/qos policy",
    "maxsubmit",
    "invalid job array specification",
    "job array index too large",
    "unrecognized option",
    "unrecognised option",
    "invalid option",
    "unknown option",
    "invalid feature specification",
    "invalid node name specified",
    "node count specification invalid",
    "memory required by task is not available",
    "memory specification can not be satisfied",
    "job dependency problem",
    "invalid dependency",
    "access/permission denied",
    "invalid user id",
    "invalid group id",
    "invalid wckey",
    "invalid burst buffer",
    "invalid license",
    "requested reservation is invalid",
    "invalid cluster",
    "requested partition configuration not available",
    "unable to open file",
    "does not look like a batch script",
    "dos line breaks",
    "null character",
    "batch script is empty",
    "job rejected",
    "invalid --",
    "invalid numeric value",
    "not a valid",
)

# Transient: the request may never have reached slurmctld, or it was busy.  The
# caller retries only after a token lookup shows no job was created.
_TRANSIENT_PATTERNS = (
    "socket timed out",
    "unable to contact slurm controller",
    "connection refused",
    "resource temporarily unavailable",
    "slurm temporarily unable to accept job",
    "communication connection failure",
    "zero bytes were transmitted or received",
    "connection reset by peer",
    "connection timed out",
    "transport endpoint is not connected",
    "network is unreachable",
    "no route to host",
    "slurm controller not responding",
    "in standby mode",
    "protocol authentication error",
    "unable to connect",
    "try again",
)


def classify_sbatch_error(stderr: str, returncode: int) -> Literal["permanent", "transient"]:
    """Say whether a failed sbatch is worth retrying.

    Order of the decision, and why:

    1. A message that matches a known refusal (invalid partition/account/QOS/gres,
       limits, array spec, bad option, ...) is ``"permanent"``: slurmctld (or sbatch
       itself) looked at the request and said no.
    2. A message that matches a known communication or load problem (socket timed
       out, connection refused, controller busy, ...) is ``"transient"``.  Such a job
       may nevertheless have been accepted (Slurm 22.05 can reply late), so retrying
       is safe only after the token lookup done by the submitter.
    3. A process killed by a signal (negative return code, or 124/137/143 from
       ``timeout`` or a shell) is ``"transient"``: the outcome is unknown, the same
       token lookup applies.  (255 is not: sbatch itself exits 255 on a bad option;
       an ssh connection failure is the transport's to report.)
    4. Anything else is ``"permanent"``: never loop on an error we do not understand;
       the user sees Slurm's message (:func:`sbatch_error_message`).
    """
    text = stderr.lower()
    if any(p in text for p in _PERMANENT_PATTERNS):
        return "permanent"
    if any(p in text for p in _TRANSIENT_PATTERNS):
        return "transient"
    if returncode < 0 or returncode in (124, 137, 143):
        return "transient"
    return "permanent"


# --------------------------------------------------------------------------- squeue

SQUEUE_FIELDS: tuple[tuple[str, str], ...] = (
    ("%i", "job_id"),
    ("%A", "job_id_raw"),
    ("%F", "array_job_id"),
    ("%K", "array_task_id"),
    ("%T", "state"),
    ("%r", "reason"),
    ("%N", "nodelist"),
    ("%D", "node_count"),
    ("%M", "elapsed"),
    ("%l", "time_limit"),
    ("%S", "start"),
    ("%V", "submit"),
    ("%u", "user"),
    ("%P", "partition"),
    ("%j", "name"),  # last: the only free text, may contain "|"
)
"""squeue ``--format`` fields in output order (``|``-separated, name last)."""

SQUEUE_FORMAT = "|".join(code for code, _ in SQUEUE_FIELDS)


@dataclass(frozen=True)
class SqueueRow:
    """One job (or one array task) from :func:`squeue_argv` output.

    ``elapsed`` and ``time_limit`` are seconds (``time_limit`` None if unlimited);
    ``start`` is the *expected* start for a pending job, if Slurm has one.  Pending
    array tasks have no id of their own yet: their ``job_id_raw`` is the array's.
    ``array_task_spec`` is set only on a combined row (``123_[5-9%2]``), which
    squeue prints without ``--array``.  ``status``/``status_reason`` come from
    :func:`status_from_squeue`.
    """

    job_id: str
    job_id_raw: str
    array_job_id: str
    array_task_id: int | None
    array_task_spec: str | None
    state: str
    reason: str | None
    nodelist: str | None
    node_count: int | None
    elapsed: int | None
    time_limit: int | None
    start: datetime | None
    submit: datetime | None
    user: str
    partition: str
    name: str
    status: JobStatus
    status_reason: str | None


def squeue_argv(
    *,
    job_ids: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    me: bool = True,
    user: str | None = None,
    states: Sequence[str] | None = ("all",),
) -> list[str]:
    """Build ONE ``squeue`` call for many jobs, array tasks expanded one per line.

    Prefer filtering by ``--me``/*names* and matching ids client-side: given
    ``--jobs`` with ids that have all left the queue, squeue exits 1 with
    ``slurm_load_jobs error: Invalid job id specified`` instead of printing nothing.
    ``--states=all`` (the default here) keeps finished jobs visible until
    ``MinJobAge`` runs out, which gives final states even without accounting.
    *user* replaces ``--me`` (e.g. root looking at alice's jobs).
    """
    argv = ["squeue", "--noheader", "--array", f"--format={SQUEUE_FORMAT}"]
    if states:
        argv.append("--states=" + ",".join(states))
    if user is not None:
        argv.append(f"--user={user}")
    elif me:
        argv.append("--me")
    name_list = _check_ids("names", names)
    if name_list is not None:
        argv.append("--name=" + ",".join(name_list))
    id_list = _check_ids("job_ids", job_ids)
    if id_list is not None:
        argv.append("--jobs=" + ",".join(id_list))
    return argv


def _split_fields(line: str, n: int, what: str) -> list[str]:
    parts = line.split("|", n - 1)
    if len(parts) != n:
        raise SlurmParseError(
            f"{what}: expected {n} '|'-separated fields, got {len(parts)}: {line!r}"
        )
    return parts


def is_invalid_job_id_error(stderr: str) -> bool:
    """True if squeue/scontrol failed only because no requested job id is known.

    ``squeue --jobs`` exits 1 with ``slurm_load_jobs error: Invalid job id
    specified`` when *none* of the ids is in the queue any more (some known ids are
    enough for a normal answer); for a status poll that means "ask sacct", not "error".
    """
    return "invalid job id specified" in stderr.lower()


def parse_squeue(text: str) -> list[SqueueRow]:
    """Parse the output of :func:`squeue_argv` into rows (blank lines ignored)."""
    rows: list[SqueueRow] = []
    n = len(SQUEUE_FIELDS)
    for line in text.splitlines():
        if not line.strip():
            continue
        (job_id, raw, array_job, task, state, reason, nodelist, count, elapsed, limit, start,
         submit, user, partition, name) = _split_fields(line, n, "squeue")
        task = task.strip()
        status, why = status_from_squeue(state, reason)
        rows.append(
            SqueueRow(
                job_id=job_id.strip(),
                job_id_raw=raw.strip(),
                array_job_id=array_job.strip(),
                array_task_id=int(task) if task.isdigit() else None,
                array_task_spec=None if task.isdigit() or task in ("", "N/A") else task,
                state=state.strip(),
                reason=_opt_text(reason),
                nodelist=_opt_text(nodelist),
                node_count=_opt_int(count),
                elapsed=parse_slurm_time(elapsed),
                time_limit=parse_slurm_time(limit),
                start=parse_slurm_datetime(start),
                submit=parse_slurm_datetime(submit),
                user=user.strip(),
                partition=partition.strip(),
                name=name,
                status=status,
                status_reason=why,
            )
        )
    return rows


# --------------------------------------------------------------------------- sacct

SACCT_FIELDS: tuple[str, ...] = (
    "JobID",
    "JobIDRaw",
    "State",
    "ExitCode",
    "DerivedExitCode",
    "Elapsed",
    "Start",
    "End",
    "Submit",
    "NodeList",
    "AllocNodes",
    "Partition",
    "Reason",
    "JobName",  # last: the only free text, may contain "|"
)
"""sacct ``--format`` fields in output order (``--parsable2``, name last)."""

SACCT_ALL_STATES: tuple[str, ...] = (
    "PD", "R", "CD", "F", "TO", "CA", "NF", "PR", "OOM", "BF", "DL", "RQ", "RS", "RV", "S",
)
"""Every state 22.05's ``sacct --state`` accepts (it refuses ``CG``: "not supported")."""


@dataclass(frozen=True)
class SacctRow:
    """One allocation (or, with ``steps=True``, one step) from :func:`sacct_argv` output.

    ``id`` is the parsed ``job_id`` (array task, pending-array summary, step);
    ``elapsed`` is seconds; ``exit_code``/``exit_signal`` split ``ExitCode`` (``2:0``);
    the derived pair is the highest exit code of any step (empty on step rows).
    ``start``/``end`` are None while unknown; ``nodelist`` is None before nodes are
    assigned.  ``status``/``status_reason`` come from :func:`status_from_squeue`.
    """

    job_id: str
    job_id_raw: str
    id: JobId
    state: str
    status: JobStatus
    status_reason: str | None
    cancelled_by: str | None
    exit_code: int | None
    exit_signal: int | None
    derived_exit_code: int | None
    derived_signal: int | None
    elapsed: int | None
    start: datetime | None
    end: datetime | None
    submit: datetime | None
    nodelist: str | None
    alloc_nodes: int | None
    partition: str | None
    reason: str | None
    name: str

    @property
    def is_step(self) -> bool:
        """True for a step row (``123.batch``)."""
        return self.id.is_step


def sacct_argv(
    *,
    job_ids: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    start: str,
    end: str | None = None,
    user: str | None = None,
    all_users: bool = False,
    steps: bool = False,
    states: Sequence[str] | None = None,
) -> list[str]:
    """Build ONE ``sacct`` call: parsable, no header, allocations only unless *steps*.

    *start* is mandatory because sacct without ``-S`` covers only "since midnight
    today" (``-j`` changes that default to the epoch, but being explicit is cheaper
    than remembering).  *end* defaults to ``now``.  Array tasks that have not
    started are printed as one ``123_[5-9]`` row.

    Recorded on 22.05 (``tests/unit/data/slurm/sacct_*held*``): a time-window query
    without ``-j`` does NOT list a job that never became eligible (held, waiting on
    a dependency or a future ``--begin``) - not while it pends, and not after it is
    cancelled unless *states* is given (use :data:`SACCT_ALL_STATES`).  A pending
    job of that kind is visible only to squeue or to ``sacct -j``; never conclude
    "no such job" from a window query alone.
    """
    if not start.strip():
        raise ValueError("sacct needs a start time (without one it only covers today)")
    argv = [
        "sacct",
        "--parsable2",
        "--noheader",
        "--format=" + ",".join(SACCT_FIELDS),
        f"--starttime={start}",
        f"--endtime={end or 'now'}",
    ]
    if not steps:
        argv.append("--allocations")
    if user is not None:
        argv.append(f"--user={user}")
    elif all_users:
        argv.append("--allusers")
    state_list = _check_ids("states", states)
    if state_list is not None:
        argv.append("--state=" + ",".join(state_list))
    name_list = _check_ids("names", names)
    if name_list is not None:
        argv.append("--name=" + ",".join(name_list))
    id_list = _check_ids("job_ids", job_ids)
    if id_list is not None:
        argv.append("--jobs=" + ",".join(id_list))
    return argv


def parse_sacct(text: str) -> list[SacctRow]:
    """Parse the output of :func:`sacct_argv` into rows (blank lines ignored)."""
    rows: list[SacctRow] = []
    n = len(SACCT_FIELDS)
    for line in text.splitlines():
        if not line.strip():
            continue
        (job_id, raw, state, exit_code, derived, elapsed, start, end, submit, nodelist,
         alloc_nodes, partition, reason, name) = _split_fields(line, n, "sacct")
        code, sig = parse_exit_code(exit_code)
        dcode, dsig = parse_exit_code(derived)
        status, why = status_from_squeue(state, reason)
        rows.append(
            SacctRow(
                job_id=job_id.strip(),
                job_id_raw=raw.strip(),
                id=parse_job_id(job_id),
                state=state.strip(),
                status=status,
                status_reason=why,
                cancelled_by=cancelled_by(state),
                exit_code=code,
                exit_signal=sig,
                derived_exit_code=dcode,
                derived_signal=dsig,
                elapsed=parse_slurm_time(elapsed),
                start=parse_slurm_datetime(start),
                end=parse_slurm_datetime(end),
                submit=parse_slurm_datetime(submit),
                nodelist=_opt_text(nodelist),
                alloc_nodes=_opt_int(alloc_nodes),
                partition=_opt_text(partition),
                reason=_opt_text(reason),
                name=name,
            )
        )
    return rows


# --------------------------------------------------------------------------- scontrol


def scontrol_show_job_argv(job_id: str | None = None) -> list[str]:
    """``scontrol --oneliner show job [ID]``: one ``Key=Value ...`` line per job (or array task)."""
    argv = ["scontrol", "--oneliner", "show", "job"]
    if job_id is not None:
        if not job_id or job_id.startswith("-"):
            raise ValueError(f"unusable job id {job_id!r}")
        argv.append(job_id)
    return argv


def scontrol_show_config_argv() -> list[str]:
    """``scontrol show config``: the running slurmctld's configuration."""
    return ["scontrol", "show", "config"]


def scontrol_show_hostnames_argv(hostlist: str) -> list[str]:
    """``scontrol show hostnames LIST``: expand ``node[1-2]`` into one name a line."""
    if not hostlist or hostlist.startswith("-"):
        raise ValueError(f"unusable host list {hostlist!r}")
    return ["scontrol", "show", "hostnames", hostlist]


# A key starts at the beginning of the line or after whitespace and is followed by
# "=".  Keys seen in 22.05 include "NtasksPerN:B:S:C", "Socks/Node", "AllocNode:Sid".
_KV_KEY_RE = re.compile(r"(?:^|(?<=\s))([A-Za-z][A-Za-z0-9_:/.]*)=")


def parse_scontrol_kv(text: str) -> list[dict[str, str]]:
    """Parse ``scontrol --oneliner show ...`` output: one dict per non-empty line.

    Values may contain spaces (``Command=/path with space``, ``Reason=launch failed
    requeued held``): a value runs until the next whitespace-preceded ``Key=``.  The
    one ambiguity left is a value that itself contains `` word=`` (a free-text
    ``Comment=a b=c``), which is read as two keys; no field hpcjobs relies on can
    contain that.  Values are stripped of surrounding whitespace.
    """
    records: list[dict[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        matches = list(_KV_KEY_RE.finditer(line))
        record: dict[str, str] = {}
        for i, m in enumerate(matches):
            value_end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            record[m.group(1)] = line[m.end():value_end].strip()
        if record:
            records.append(record)
    return records


def parse_scontrol_config(text: str) -> dict[str, str]:
    """Parse ``scontrol show config`` (``MaxArraySize            = 1001``) into a dict.

    Header, section titles and status lines (no ``=``) are skipped; if a key repeats
    in a later plugin section, the first value is kept.
    """
    config: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"(\S+)\s*=\s?(.*)$", line.strip())
        if m is None:
            continue
        config.setdefault(m.group(1), m.group(2).strip())
    return config


def parse_hostnames(text: str) -> list[str]:
    """Parse ``scontrol show hostnames`` output: one host name a line."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def expand_hostlist(hostlist: str) -> list[str]:
    """Expand a Slurm host list offline: ``node[1-3,05],gpu01`` -> ``[node1, node2, ...]``.

    Same order and zero padding as ``scontrol show hostnames`` for the usual forms
    (one or more bracket ranges per name); use that command for anything exotic.
    """
    names: list[str] = []
    for item in _split_top_level(hostlist.strip(), ","):
        if item:
            names.extend(_expand_host(item))
    return names


def _split_top_level(s: str, sep: str) -> list[str]:
    # Split on sep outside brackets/parentheses: "n[1,2],m" -> ["n[1,2]", "m"].
    out: list[str] = []
    depth = 0
    cur: list[str] = []
    for ch in s:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth = max(0, depth - 1)
        if ch == sep and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def _expand_host(item: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", item)
    if m is None:
        return [item]
    prefix, suffix = item[: m.start()], item[m.end():]
    out: list[str] = []
    for rng in m.group(1).split(","):
        lo, _, hi = rng.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"invalid host list {item!r}")
        width = len(lo)
        for i in range(int(lo), int(hi or lo) + 1):
            for rest in _expand_host(suffix):
                out.append(f"{prefix}{i:0{width}d}{rest}")
    return out


# --------------------------------------------------------------------------- sinfo

SINFO_FIELDS: tuple[tuple[str, str], ...] = (
    ("%P", "partition"),  # "*" suffix marks the default partition
    ("%a", "available"),
    ("%l", "time_limit"),
    ("%D", "nodes"),
    ("%T", "state"),
    ("%c", "cpus"),
    ("%m", "memory_mb"),
    ("%G", "gres"),
    ("%F", "allocated/idle/other/total"),
    ("%N", "nodelist"),
)
"""sinfo ``--format`` fields in output order (``|``-separated)."""

SINFO_FORMAT = "|".join(code for code, _ in SINFO_FIELDS)


@dataclass(frozen=True)
class GresSpec:
    """One generic resource of a node: ``gpu:a100:4(S:0-1)`` -> ``("gpu", "a100", 4)``."""

    name: str
    type: str | None
    count: int


@dataclass
class PartitionInfo:
    """One partition, aggregated over sinfo's lines for it (one line per node state).

    Per-node figures (``cpus``, ``memory_mb``, ``gpus_per_node``) are those of the
    largest node when nodes differ.  ``time_limit`` is in seconds, None if unlimited.
    ``node_states`` counts nodes per sinfo state (``idle``, ``mixed``, ``down*``, ...);
    ``allocated``/``idle``/``other`` are sinfo's ``%F`` totals.
    """

    name: str
    default: bool
    available: str
    time_limit: int | None
    nodes: int = 0
    cpus: int | None = None
    memory_mb: int | None = None
    gres: list[str] = field(default_factory=list)
    gpus_per_node: int = 0
    gpu_type: str | None = None
    node_states: dict[str, int] = field(default_factory=dict)
    allocated: int = 0
    idle: int = 0
    other: int = 0
    nodelists: list[str] = field(default_factory=list)


def sinfo_argv(partitions: Sequence[str] | None = None) -> list[str]:
    """``sinfo`` with the fixed :data:`SINFO_FIELDS` format, optionally for some partitions."""
    argv = ["sinfo", "--noheader", f"--format={SINFO_FORMAT}"]
    part_list = _check_ids("partitions", partitions)
    if part_list is not None:
        argv.append("--partition=" + ",".join(part_list))
    return argv


_SIZE_SUFFIX = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


def parse_gres(s: str) -> list[GresSpec]:
    """Parse a gres list: ``gpu:2``, ``gpu:a100:4(S:0-1)``, ``gpu:2,mps:100``, ``(null)``.

    A name without a count means one; counts may carry Slurm's K/M/G suffixes.
    Socket/index annotations in parentheses are dropped.
    """
    t = s.strip()
    if t in ("", "(null)", "N/A"):
        return []
    specs: list[GresSpec] = []
    for item in _split_top_level(t, ","):
        item = re.sub(r"\(.*?\)", "", item).strip()
        if not item:
            continue
        parts = item.split(":")
        name = parts[0]
        gtype: str | None = None
        count = 1
        rest = parts[1:]
        if rest:
            m = re.fullmatch(r"(\d+)([KMGTP]?)", rest[-1], re.IGNORECASE)
            if m is not None:
                count = int(m.group(1)) * _SIZE_SUFFIX[m.group(2).upper()]
                rest = rest[:-1]
        if rest:
            gtype = ":".join(rest)
        specs.append(GresSpec(name=name, type=gtype, count=count))
    return specs


def parse_sinfo(text: str) -> list[PartitionInfo]:
    """Parse :func:`sinfo_argv` output into one :class:`PartitionInfo` per partition, in order."""
    parts: dict[str, PartitionInfo] = {}
    n = len(SINFO_FIELDS)
    for line in text.splitlines():
        if not line.strip():
            continue
        (pname, avail, limit, nodes, state, cpus, memory, gres, aiot,
         nodelist) = _split_fields(line, n, "sinfo")
        pname = pname.strip()
        name = pname.rstrip("*")
        info = parts.get(name)
        if info is None:
            info = PartitionInfo(
                name=name,
                default=pname.endswith("*"),
                available=avail.strip(),
                time_limit=parse_slurm_time(limit),
            )
            parts[name] = info
        count = _opt_int(nodes) or 0
        info.nodes += count
        state = state.strip()
        info.node_states[state] = info.node_states.get(state, 0) + count
        info.cpus = _max_opt(info.cpus, _opt_int(cpus))
        info.memory_mb = _max_opt(info.memory_mb, _opt_int(memory))
        gres = gres.strip()
        if gres not in ("", "(null)") and gres not in info.gres:
            info.gres.append(gres)
        gpus = [g for g in parse_gres(gres) if g.name == "gpu"]
        info.gpus_per_node = max(info.gpus_per_node, sum(g.count for g in gpus))
        types = sorted({g.type for g in gpus if g.type})
        if info.gpu_type:
            types = sorted(set(types) | set(info.gpu_type.split(",")))
        info.gpu_type = ",".join(types) or None
        counts = aiot.strip().split("/")
        if len(counts) == 4 and all(c.isdigit() for c in counts):
            info.allocated += int(counts[0])
            info.idle += int(counts[1])
            info.other += int(counts[2])
        nodelist = nodelist.strip()
        if nodelist:
            info.nodelists.append(nodelist)
    return list(parts.values())


def _max_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


# --------------------------------------------------------------------------- scancel


def scancel_argv(
    job_ids: Sequence[str],
    signal: str | None = None,
    *,
    full: bool = False,
) -> list[str]:
    """``scancel`` for several jobs in one call, or send them *signal* (``USR1``, ``TERM``).

    With a signal, Slurm delivers it to the job's steps only; ``full=True`` also
    signals the batch shell (``--full``), which is what a script trapping the signal
    needs.
    """
    ids = _check_ids("job_ids", job_ids)
    assert ids is not None  # a Sequence was passed, so _check_ids returned a list
    argv = ["scancel"]
    if signal is not None:
        if not re.fullmatch(r"[A-Za-z0-9]+", signal):
            raise ValueError(f"invalid signal {signal!r}")
        argv.append(f"--signal={signal}")
    if full:
        argv.append("--full")
    argv.extend(ids)
    return argv


# --------------------------------------------------------------------------- environment

_DROP_PREFIXES = (
    "SBATCH_",  # override #SBATCH lines silently
    "SLURM_",  # inside a job these describe *that* job (SLURM_JOB_ID, SLURM_MEM_PER_CPU, ...)
    "SALLOC_",
    "SRUN_",
    # These change what the status commands print or select (SQUEUE_STATES hides jobs,
    # SCANCEL_INTERACTIVE prompts), which the parsers here must not depend on.
    "SQUEUE_",
    "SACCT_",
    "SINFO_",
    "SCANCEL_",
)

KEPT_ENV_VARS = frozenset({"SLURM_CONF"})
"""Slurm variables passed through: ``SLURM_CONF`` picks the cluster, not the job's shape."""


def _dropped(name: str) -> bool:
    return name.startswith(_DROP_PREFIXES) and name not in KEPT_ENV_VARS


def dropped_env_vars(environ: Mapping[str, str]) -> list[str]:
    """The sorted names :func:`sanitized_env` removes from *environ* (for a one-line notice)."""
    return sorted(name for name in environ if _dropped(name))


def sanitized_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment to run Slurm commands with: *environ* minus inherited Slurm settings.

    Drops every ``SBATCH_*``, ``SLURM_*``, ``SALLOC_*``, ``SRUN_*`` variable (and the
    ``SQUEUE_*``/``SACCT_*``/``SINFO_*``/``SCANCEL_*`` ones) so that neither the
    user's shell nor an enclosing job silently changes what was asked for or what
    the output looks like; ``SLURM_CONF`` is kept.  See :func:`dropped_env_vars`.
    """
    return {name: value for name, value in environ.items() if not _dropped(name)}
