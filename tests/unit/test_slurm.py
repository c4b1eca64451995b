"""Tests of hpcjobs.slurm on output recorded from a real Slurm 22.05.8 cluster.

The recordings live in tests/unit/data/slurm/ (see its README.md for how each was made).
Inline strings are used only for what the test cluster cannot produce; they are marked
"hand-written".
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pytest

from hpcjobs import slurm
from hpcjobs.slurm import (
    SACCT_FIELDS,
    SHORT_STATE_CODES,
    SINFO_FORMAT,
    SQUEUE_FORMAT,
    STATE_TABLE,
    GresSpec,
    SlurmParseError,
)
from hpcjobs.status import JobStatus

DATA = Path(__file__).parent / "data" / "slurm"


def read(name: str) -> str:
    """The text of one recorded file."""
    return (DATA / name).read_text()


def cmd(name: str) -> dict[str, object]:
    """The recorded command line (user, argv, returncode) of one recording."""
    data = json.loads(read(f"{name}.cmd"))
    assert isinstance(data, dict)
    return data


# --------------------------------------------------------------------------- state table


def _man_state_codes(name: str) -> list[tuple[str, str]]:
    text = read(name)
    # troff lines like: \fBCA  CANCELLED\fR  or  \f3OOM OUT_OF_MEMORY\fP
    pairs = re.findall(r"^\\f[B3]([A-Z]+)\s+([A-Z_]+)\\f[RP]", text, re.MULTILINE)
    assert pairs, f"no state codes found in {name}"
    return pairs


@pytest.mark.parametrize("man", ["man_squeue_job_state_codes.1", "man_sacct_job_state_codes.1"])
def test_every_man_page_state_has_an_explicit_entry(man: str) -> None:
    for short, long in _man_state_codes(man):
        assert long in STATE_TABLE, long
        assert short in STATE_TABLE, short
        assert SHORT_STATE_CODES[short] == long
        assert STATE_TABLE[short] is STATE_TABLE[long]


def test_man_pages_list_the_expected_number_of_states() -> None:
    # squeue documents 24 states, sacct the 15 it accounts; all are in the table.
    assert len(_man_state_codes("man_squeue_job_state_codes.1")) == 24
    assert len(_man_state_codes("man_sacct_job_state_codes.1")) == 15
    assert len(SHORT_STATE_CODES) == 24


def test_only_completed_maps_to_completed() -> None:
    completed = {k for k, v in STATE_TABLE.items() if v is JobStatus.COMPLETED}
    assert completed == {"COMPLETED", "CD"}


@pytest.mark.parametrize(
    ("state", "status", "reason"),
    [
        ("PENDING", JobStatus.QUEUED, None),
        ("PD", JobStatus.QUEUED, None),
        ("CONFIGURING", JobStatus.STARTING, None),
        ("RUNNING", JobStatus.RUNNING, None),
        ("COMPLETING", JobStatus.FINALIZING, None),
        ("STAGE_OUT", JobStatus.FINALIZING, None),
        ("COMPLETED", JobStatus.COMPLETED, None),
        ("FAILED", JobStatus.FAILED, "failed"),
        ("TIMEOUT", JobStatus.FAILED, "timeout"),
        ("TO", JobStatus.FAILED, "timeout"),
        ("OUT_OF_MEMORY", JobStatus.FAILED, "out_of_memory"),
        ("OOM", JobStatus.FAILED, "out_of_memory"),
        ("NODE_FAIL", JobStatus.FAILED, "node_fail"),
        ("PREEMPTED", JobStatus.FAILED, "preempted"),
        ("DEADLINE", JobStatus.FAILED, "deadline"),
        ("BOOT_FAIL", JobStatus.FAILED, "boot_fail"),
        ("CANCELLED", JobStatus.CANCELED, None),
        ("CANCELLED by 1001", JobStatus.CANCELED, None),
        ("CANCELLED+", JobStatus.CANCELED, None),
        ("cancelled", JobStatus.CANCELED, None),
        ("SUSPENDED", JobStatus.PAUSED, "suspended"),
        ("STOPPED", JobStatus.PAUSED, "stopped"),
        ("REQUEUED", JobStatus.QUEUED, "requeued"),
        ("REQUEUE_FED", JobStatus.QUEUED, "requeued"),
        ("REQUEUE_HOLD", JobStatus.PAUSED, "requeue_hold"),
        ("RESV_DEL_HOLD", JobStatus.PAUSED, "reservation_deleted"),
        ("SPECIAL_EXIT", JobStatus.PAUSED, "special_exit"),
        ("RESIZING", JobStatus.RUNNING, None),
        ("SIGNALING", JobStatus.RUNNING, None),
        ("REVOKED", JobStatus.UNKNOWN, "revoked"),
    ],
)
def test_status_from_slurm_decisions(state: str, status: JobStatus, reason: str | None) -> None:
    assert slurm.status_from_slurm(state) == (status, reason)


@pytest.mark.parametrize("state", ["", "   ", "BOGUS", "COMPLETE", "DONE", "?", "LAUNCH_FAILED"])
def test_unknown_state_is_unknown_never_completed(state: str) -> None:
    assert slurm.status_from_slurm(state) == (JobStatus.UNKNOWN, None)


@pytest.mark.parametrize(
    ("reason", "status", "word"),
    [
        ("JobHeldUser", JobStatus.PAUSED, "held_user"),
        ("JobHeldAdmin", JobStatus.PAUSED, "held_admin"),
        ("job requeued in held state", JobStatus.PAUSED, "requeue_hold"),  # squeue's spelling
        ("job_requeued_in_held_state", JobStatus.PAUSED, "requeue_hold"),  # scontrol's
        ("launch failed requeued held", JobStatus.PAUSED, "launch_failed_held"),
        ("DependencyNeverSatisfied", JobStatus.QUEUED, "dependency_never_satisfied"),
        ("PartitionConfig", JobStatus.QUEUED, "partition_config"),
        ("Dependency", JobStatus.QUEUED, None),
        ("Priority", JobStatus.QUEUED, None),
        ("None", JobStatus.QUEUED, None),
        ("", JobStatus.QUEUED, None),
        (None, JobStatus.QUEUED, None),
    ],
)
def test_status_from_squeue_pending_reasons(
    reason: str | None, status: JobStatus, word: str | None
) -> None:
    assert slurm.status_from_squeue("PENDING", reason) == (status, word)


def test_held_reason_is_ignored_for_other_states() -> None:
    # sacct keeps the last pending reason on a job that was later cancelled.
    status = slurm.status_from_squeue("CANCELLED by 1001", "JobHeldUser")
    assert status == (JobStatus.CANCELED, None)


def test_cancelled_by() -> None:
    assert slurm.cancelled_by("CANCELLED by 1001") == "1001"
    assert slurm.cancelled_by("CANCELLED") is None
    assert slurm.cancelled_by("COMPLETED") is None


# --------------------------------------------------------------------------- recordings vs builders


@pytest.mark.parametrize("path", sorted(DATA.glob("*.cmd")), ids=lambda p: p.stem)
def test_recorded_formats_match_the_builders(path: Path) -> None:
    argv = json.loads(path.read_text())["argv"]
    for arg in argv:
        if arg.startswith("--format="):
            fmt = arg.removeprefix("--format=")
            expected = {
                "squeue": SQUEUE_FORMAT,
                "sacct": ",".join(SACCT_FIELDS),
                "sinfo": SINFO_FORMAT,
            }[argv[0]]
            assert fmt == expected, f"{path.name} was recorded with another format; re-record"


# --------------------------------------------------------------------------- squeue


def test_squeue_argv_defaults() -> None:
    argv = slurm.squeue_argv()
    assert argv[:3] == ["squeue", "--noheader", "--array"]
    assert f"--format={SQUEUE_FORMAT}" in argv
    assert "--states=all" in argv
    assert "--me" in argv
    assert SQUEUE_FORMAT.endswith("%j")  # the free-text name must be last


def test_squeue_argv_filters() -> None:
    argv = slurm.squeue_argv(names=["a", "b"], job_ids=["1", "2_3"], user="alice", states=None)
    assert "--name=a,b" in argv
    assert "--jobs=1,2_3" in argv
    assert "--user=alice" in argv
    assert "--me" not in argv
    assert not any(a.startswith("--states") for a in argv)
    assert "--me" not in slurm.squeue_argv(me=False)


@pytest.mark.parametrize("bad", [[], ["a,b"], ["-x"], [""], ["a b"]])
def test_squeue_argv_rejects_unsafe_lists(bad: list[str]) -> None:
    with pytest.raises(ValueError):
        slurm.squeue_argv(names=bad)
    with pytest.raises(ValueError):
        slurm.squeue_argv(job_ids=bad)


def _by_name(rows: list[slurm.SqueueRow]) -> dict[str, slurm.SqueueRow]:
    return {r.name: r for r in rows}


def test_parse_squeue_mixed() -> None:
    text = read("squeue_mixed.stdout")
    rows = slurm.parse_squeue(text)
    assert len(rows) == len(text.strip().splitlines()) == 23
    by_id = {r.job_id: r for r in rows}

    ok = by_id["6"]
    assert (ok.name, ok.state, ok.status) == ("rec-ok", "COMPLETED", JobStatus.COMPLETED)
    assert ok.start == datetime(2026, 11, 29, 2, 14, 14)
    assert ok.submit == datetime(2026, 11, 29, 2, 14, 2)
    assert ok.time_limit == 30 * 60
    assert ok.nodelist == "node1" and ok.node_count == 1
    assert ok.user == "alice" and ok.partition == "debug"
    assert ok.array_task_id is None and ok.array_task_spec is None

    fail = by_id["7"]
    assert (fail.status, fail.status_reason, fail.reason) == (
        JobStatus.FAILED, "failed", "NonZeroExitCode")

    begin = by_id["8"]
    assert (begin.status, begin.reason) == (JobStatus.QUEUED, "BeginTime")
    assert begin.nodelist is None
    assert begin.start == datetime(2026, 11, 29, 3, 14, 2)  # the expected start

    dep = by_id["9"]
    assert (dep.status, dep.status_reason) == (JobStatus.QUEUED, "dependency_never_satisfied")
    assert dep.start is None  # N/A

    held = by_id["10"]
    assert (held.status, held.status_reason) == (JobStatus.PAUSED, "held_user")

    running = by_id["12"]
    assert (running.status, running.elapsed) == (JobStatus.RUNNING, 32)

    piped = by_id["13"]
    assert piped.name == "rec|pipe name"  # "|" and a space survive because the name is last

    task = by_id["11_4"]
    assert (task.job_id_raw, task.array_job_id, task.array_task_id) == ("22", "11", 4)
    last = by_id["11_5"]
    assert last.job_id_raw == "11"  # the last task keeps the array's own id

    assert by_id["5"].status is JobStatus.CANCELED


def test_parse_squeue_suspended_and_requeue_hold() -> None:
    rows = {r.job_id: r for r in slurm.parse_squeue(read("squeue_suspended_requeuehold.stdout"))}
    assert rows["12"].status is JobStatus.CANCELED
    assert (rows["13"].state, rows["13"].status, rows["13"].status_reason) == (
        "SUSPENDED", JobStatus.PAUSED, "suspended")
    assert (rows["14"].state, rows["14"].status, rows["14"].status_reason) == (
        "PENDING", JobStatus.PAUSED, "requeue_hold")
    assert rows["14"].partition == "gpu"


def test_parse_squeue_pending_reasons() -> None:
    rows = {r.job_id: r for r in slurm.parse_squeue(read("squeue_pending_reasons.stdout"))}
    assert rows["28"].status_reason == "partition_time_limit"
    assert rows["28"].time_limit == 2 * 3600
    assert rows["29"].status_reason == "partition_config"  # -c 64 was accepted
    assert rows["30"].node_count == 5
    assert all(r.status in (JobStatus.QUEUED, JobStatus.PAUSED) for r in rows.values())


def test_parse_squeue_expands_pending_array_tasks_with_array_flag() -> None:
    rows = slurm.parse_squeue(read("squeue_array_pending_expanded.stdout"))
    assert [r.job_id for r in rows] == ["34_0", "34_1", "34_2", "34_3"]
    assert [r.array_task_id for r in rows] == [0, 1, 2, 3]
    # Pending tasks have no id of their own yet.
    assert {r.job_id_raw for r in rows} == {"34"}
    assert all(r.status is JobStatus.QUEUED for r in rows)


def test_parse_squeue_array_summary_without_array_flag() -> None:
    (row,) = slurm.parse_squeue(read("squeue_array_pending_summary.stdout"))
    assert row.job_id == "34_[0-3%1]"
    assert row.array_task_id is None
    assert row.array_task_spec == "0-3%1"
    assert slurm.parse_array_spec(row.array_task_spec) == ([0, 1, 2, 3], 1)
    jid = slurm.parse_job_id(row.job_id)
    assert jid.is_array_summary and jid.array_spec == "0-3%1" and jid.job == "34"


def test_parse_squeue_deadline() -> None:
    rows = _by_name(slurm.parse_squeue(read("squeue_deadline_signal.stdout")))
    assert rows["rec-deadline"].status == JobStatus.FAILED
    assert rows["rec-deadline"].status_reason == "deadline"
    assert rows["rec-signal"].status_reason == "failed"


def test_parse_squeue_timeout() -> None:
    rows = {r.job_id: r for r in slurm.parse_squeue(read("squeue_final.stdout"))}
    assert (rows["23"].state, rows["23"].status_reason) == ("TIMEOUT", "timeout")
    assert rows["23"].elapsed == 88
    assert rows["23"].time_limit == 60


def test_squeue_with_only_gone_ids_fails_but_is_recognisable() -> None:
    assert cmd("squeue_gone_id")["returncode"] == 1
    assert slurm.parse_squeue(read("squeue_gone_id.stdout")) == []
    assert slurm.is_invalid_job_id_error(read("squeue_gone_id.stderr"))
    # With one known id among them, squeue answers normally.
    assert cmd("squeue_some_gone_id")["returncode"] == 0
    assert [r.job_id for r in slurm.parse_squeue(read("squeue_some_gone_id.stdout"))] == ["8"]


@pytest.mark.parametrize("path", sorted(DATA.glob("squeue_*.stdout")), ids=lambda p: p.stem)
def test_every_squeue_recording_parses(path: Path) -> None:
    text = path.read_text()
    rows = slurm.parse_squeue(text)
    assert len(rows) == len([line for line in text.splitlines() if line.strip()])
    for row in rows:
        slurm.parse_job_id(row.job_id)
        assert row.status is not JobStatus.UNKNOWN
        assert row.submit is not None


def test_parse_squeue_rejects_other_formats() -> None:
    with pytest.raises(SlurmParseError):
        slurm.parse_squeue("JOBID PARTITION NAME\n")


# --------------------------------------------------------------------------- sacct


def test_sacct_argv() -> None:
    argv = slurm.sacct_argv(start="2026-11-29T02:00:00")
    assert argv[:3] == ["sacct", "--parsable2", "--noheader"]
    assert "--starttime=2026-11-29T02:00:00" in argv
    assert "--endtime=now" in argv
    assert "--allocations" in argv
    assert "--format=" + ",".join(SACCT_FIELDS) in argv
    assert SACCT_FIELDS[-1] == "JobName"

    argv = slurm.sacct_argv(
        job_ids=["1", "2_3"], names=["tok"], start="now-1hour", end="2026-11-30T00:00:00",
        user="alice", steps=True, states=slurm.SACCT_ALL_STATES,
    )
    assert "--allocations" not in argv
    assert "--jobs=1,2_3" in argv and "--name=tok" in argv and "--user=alice" in argv
    assert "--endtime=2026-11-30T00:00:00" in argv
    assert "--state=" + ",".join(slurm.SACCT_ALL_STATES) in argv
    assert "--allusers" in slurm.sacct_argv(start="now-1day", all_users=True)
    with pytest.raises(ValueError):
        slurm.sacct_argv(start="")
    with pytest.raises(ValueError):
        slurm.sacct_argv(start="now-1day", job_ids=[])


def test_sacct_all_states_are_in_the_table_and_exclude_completing() -> None:
    assert "CG" not in slurm.SACCT_ALL_STATES  # sacct: "job state CG is not supported"
    assert set(slurm.SACCT_ALL_STATES) == {s for s, _ in _man_state_codes(
        "man_sacct_job_state_codes.1")}


def test_parse_sacct_final() -> None:
    text = read("sacct_final.stdout")
    rows = slurm.parse_sacct(text)
    assert len(rows) == len(text.strip().splitlines())
    by_id = {r.job_id: r for r in rows}

    ok = by_id["6"]
    assert (ok.status, ok.exit_code, ok.exit_signal) == (JobStatus.COMPLETED, 0, 0)
    assert ok.nodelist == "node1" and ok.alloc_nodes == 1 and ok.partition == "debug"
    assert ok.reason is None

    fail = by_id["7"]
    assert (fail.status, fail.status_reason, fail.exit_code, fail.exit_signal) == (
        JobStatus.FAILED, "failed", 3, 0)

    cancelled = by_id["12"]
    assert cancelled.state == "CANCELLED by 1001"
    assert cancelled.status is JobStatus.CANCELED and cancelled.cancelled_by == "1001"
    assert cancelled.elapsed == 36

    by_root = by_id["5"]
    assert (by_root.status, by_root.exit_signal) == (JobStatus.CANCELED, 15)

    timeout = by_id["23"]
    assert (timeout.status, timeout.status_reason, timeout.elapsed) == (
        JobStatus.FAILED, "timeout", 88)
    assert timeout.end == datetime(2026, 11, 29, 2, 16, 12)

    two = by_id["15"]
    assert (two.nodelist, two.alloc_nodes) == ("node[1-2]", 2)

    piped = by_id["13"]
    assert piped.name == "rec|pipe name"

    task = by_id["11_3"]
    assert (task.id.job, task.id.array_task, task.job_id_raw) == ("11", 3, "21")
    assert task.reason == "JobArrayTaskLimit"

    deadline = by_id["38"]
    assert (deadline.status, deadline.status_reason) == (JobStatus.FAILED, "deadline")
    assert deadline.start is None and deadline.nodelist is None  # "None", "None assigned"

    signal = by_id["40"]
    assert (signal.status, signal.exit_code) == (JobStatus.FAILED, 7)

    # Cancelled while held: the held reason is kept, the state wins.
    gpu = by_id["14"]
    assert (gpu.status, gpu.reason) == (JobStatus.CANCELED, "JobHeldUser")

    # "Requested node configuration is not available" still left FAILED records.
    for rejected in ("26", "31"):
        assert by_id[rejected].status is JobStatus.FAILED
        assert by_id[rejected].nodelist is None and by_id[rejected].alloc_nodes == 0


def test_parse_sacct_requeued_row() -> None:
    rows = {r.job_id: r for r in slurm.parse_sacct(read("sacct_alloc.stdout"))}
    assert (rows["14"].state, rows["14"].status) == ("REQUEUED", JobStatus.QUEUED)
    assert rows["34_3"].status is JobStatus.RUNNING
    assert rows["34_3"].end is None  # "Unknown"
    pending = rows["29"]
    assert (pending.status, pending.status_reason) == (JobStatus.QUEUED, "partition_config")
    assert pending.start is None


def test_parse_sacct_steps() -> None:
    rows = slurm.parse_sacct(read("sacct_steps.stdout"))
    steps = [r for r in rows if r.is_step]
    assert steps and len(steps) < len(rows)
    by_id = {r.job_id: r for r in rows}
    batch = by_id["7.batch"]
    assert (batch.id.step, batch.id.allocation, batch.exit_code) == ("batch", "7", 3)
    assert batch.derived_exit_code is None and batch.partition is None  # empty on steps
    srun = by_id["15.0"]
    assert (srun.id.step, srun.name, srun.nodelist) == ("0", "hostname", "node[1-2]")
    task_batch = by_id["11_0.batch"]
    assert (task_batch.id.array_task, task_batch.id.allocation, task_batch.job_id_raw) == (
        0, "11_0", "18.batch")
    # The batch step of a scancel'd job is CANCELLED with signal 15.
    assert (by_id["12.batch"].state, by_id["12.batch"].exit_signal) == ("CANCELLED", 15)


def test_parse_sacct_pending_array_summary() -> None:
    (row,) = slurm.parse_sacct(read("sacct_array_pending.stdout"))
    assert row.id.is_array_summary and row.id.array_spec == "0-3%1"
    assert row.status is JobStatus.QUEUED
    assert (row.start, row.end, row.nodelist, row.alloc_nodes) == (None, None, None, 0)


def test_sacct_window_misses_never_eligible_jobs() -> None:
    """The recorded reason why token lookups must also ask squeue (or sacct -j)."""
    window = {r.name for r in slurm.parse_sacct(read("sacct_name_held_window.stdout"))}
    by_id = {r.name: r for r in slurm.parse_sacct(read("sacct_ids_held.stdout"))}
    assert window == {"rec-ok"}
    assert {"rec-held", "rec-begin", "rec-dep", "rec-ok"} <= set(by_id)
    assert by_id["rec-held"].status is JobStatus.PAUSED
    assert by_id["rec-dep"].status_reason == "dependency_never_satisfied"

    assert slurm.parse_sacct(read("sacct_held_pending_all_states.stdout")) == []
    (held,) = slurm.parse_sacct(read("sacct_held_pending_by_id.stdout"))
    assert held.status is JobStatus.PAUSED
    (queued,) = slurm.parse_squeue(read("squeue_held_by_name.stdout"))
    assert queued.name == "rec-held2" and queued.status is JobStatus.PAUSED

    # Once cancelled, they appear in a window query only with --state.
    plain = {r.job_id for r in slurm.parse_sacct(read("sacct_final.stdout"))}
    with_states = {r.job_id for r in slurm.parse_sacct(read("sacct_window_all_states.stdout"))}
    assert {"8", "9", "10"}.isdisjoint(plain)
    assert {"8", "9", "10"} <= with_states


@pytest.mark.parametrize("path", sorted(DATA.glob("sacct_*.stdout")), ids=lambda p: p.stem)
def test_every_sacct_recording_parses(path: Path) -> None:
    text = path.read_text()
    rows = slurm.parse_sacct(text)
    assert len(rows) == len([line for line in text.splitlines() if line.strip()])
    for row in rows:
        assert row.status is not JobStatus.UNKNOWN
        assert row.submit is not None


# --------------------------------------------------------------------------- sbatch


def test_sbatch_argv() -> None:
    assert slurm.sbatch_argv() == ["sbatch", "--parsable"]
    assert slurm.sbatch_argv("/a b/job.sh", options=["-J", "x"]) == [
        "sbatch", "--parsable", "-J", "x", "/a b/job.sh"]
    assert slurm.sbatch_argv(options=["-p", "debug"], test_only=True) == [
        "sbatch", "--parsable", "--test-only", "-p", "debug"]
    for bad in ("-x.sh", "", "a\0b"):
        with pytest.raises(ValueError):
            slurm.sbatch_argv(bad)
    with pytest.raises(ValueError):
        slurm.sbatch_argv(options=["--comment=a\0b"])


def test_recorded_sbatch_argv_came_from_the_builder() -> None:
    options = ["-J", "rec-stdin", "-o", "/dev/null"]
    assert cmd("sbatch_ok")["argv"] == slurm.sbatch_argv(options=options)


def test_parse_sbatch_recorded() -> None:
    assert slurm.parse_sbatch(read("sbatch_ok.stdout")) == slurm.SbatchResult("24", None)


def test_parse_sbatch_shapes() -> None:
    # hand-written: the federation form and a stray line before the id
    assert slurm.parse_sbatch("123;cluster2\n") == slurm.SbatchResult("123", "cluster2")
    assert slurm.parse_sbatch("some notice\n456\n").job_id == "456"
    with pytest.raises(SlurmParseError):
        slurm.parse_sbatch("")
    with pytest.raises(SlurmParseError):
        slurm.parse_sbatch("Submitted batch job 12\n")


def test_parse_test_only_ok() -> None:
    assert read("sbatch_test_only_ok.stdout") == ""  # --test-only talks on stderr only
    result = slurm.parse_test_only(read("sbatch_test_only_ok.stderr"))
    assert result.ok
    assert result.job_id == "25"
    assert result.start_time == datetime(2026, 11, 29, 3, 0, 44)
    assert (result.processors, result.nodes, result.partition) == (1, "node2", "debug")


def test_parse_test_only_bad_partition() -> None:
    result = slurm.parse_test_only(read("sbatch_test_only_bad_partition.stderr"))
    assert not result.ok and result.job_id is None
    assert result.message == (
        "Invalid partition name specified (invalid partition specified: nosuchpart)")


SBATCH_ERRORS = [
    ("sbatch_err_partition",
     "Invalid partition name specified (invalid partition specified: nosuchpart)"),
    ("sbatch_err_account",
     "Invalid account or account/partition combination specified"),
    ("sbatch_err_gres", "Requested node configuration is not available"),
    ("sbatch_err_gres_name", "Invalid generic resource (gres) specification"),
    ("sbatch_err_mem",
     "Requested node configuration is not available (Memory specification can not be satisfied)"),
    ("sbatch_err_array_size", "Invalid job array specification"),
    ("sbatch_err_array_spec", "Invalid job array specification"),
    ("sbatch_err_option", "unrecognized option '--no-such-option'"),
    ("sbatch_err_not_script",
     "This does not look like a batch script. The first line must start with #! followed by "
     "the path to an interpreter. For instance: #!/bin/sh"),
    ("sbatch_err_crlf",
     "Batch script contains DOS line breaks (\\r\\n) instead of expected UNIX line breaks (\\n)."),
    ("sbatch_err_nul",
     "The Slurm controller does not allow scripts that contain a NULL character '\\0'."),
    ("sbatch_err_no_file", "Unable to open file /srv/hpcjobs/slurmrec/missing.sh"),
    ("sbatch_err_partition_account", "Invalid feature specification"),
]


@pytest.mark.parametrize(("name", "message"), SBATCH_ERRORS, ids=[n for n, _ in SBATCH_ERRORS])
def test_recorded_sbatch_errors_are_permanent(name: str, message: str) -> None:
    stderr = read(f"{name}.stderr")
    returncode = cmd(name)["returncode"]
    assert isinstance(returncode, int) and returncode != 0
    assert read(f"{name}.stdout") == ""
    assert slurm.classify_sbatch_error(stderr, returncode) == "permanent"
    assert slurm.sbatch_error_message(stderr) == message


def test_every_recorded_sbatch_error_is_covered() -> None:
    recorded = {p.stem for p in DATA.glob("sbatch_err_*.stderr")}
    assert recorded == {n for n, _ in SBATCH_ERRORS}


# hand-written: the stderr of sbatch when the controller is unreachable or busy cannot be
# recorded without stopping slurmctld; the texts are Slurm 22.05's error strings.
TRANSIENT = [
    "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation",
    "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
    "(connect failure)",
    "sbatch: error: slurm_receive_msg: Zero Bytes were transmitted or received",
    "sbatch: error: Batch job submission failed: Communication connection failure",
    "sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n"
    "sbatch: error: Batch job submission failed: Resource temporarily unavailable",
    "sbatch: error: Error connecting, bad data: family = 0, port = 0\n"
    "sbatch: error: Batch job submission failed: Connection refused",
]


@pytest.mark.parametrize("stderr", TRANSIENT)
def test_transient_sbatch_errors(stderr: str) -> None:
    assert slurm.classify_sbatch_error(stderr, 1) == "transient"


# hand-written: refusals that this test cluster does not enforce (QOS limits, time limits).
PERMANENT = [
    "sbatch: error: Batch job submission failed: Invalid qos specification",
    "sbatch: error: Batch job submission failed: Requested time limit is invalid "
    "(missing or exceeds some limit)",
    "sbatch: error: Batch job submission failed: More processors requested than permitted",
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy "
    "(job submit limit, user's size and/or time limits)",
    "sbatch: error: QOSMaxSubmitJobPerUserLimit\n"
    "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy",
    "sbatch: error: Batch job submission failed: Job array index too large",
    "sbatch: error: Batch job submission failed: Invalid generic resource (gres) specification",
]


@pytest.mark.parametrize("stderr", PERMANENT)
def test_permanent_sbatch_errors(stderr: str) -> None:
    assert slurm.classify_sbatch_error(stderr, 1) == "permanent"


def test_unknown_sbatch_errors() -> None:
    assert slurm.classify_sbatch_error("sbatch: error: something new\n", 1) == "permanent"
    assert slurm.classify_sbatch_error("", 1) == "permanent"
    assert slurm.classify_sbatch_error("", 127) == "permanent"
    # Killed (by our timeout or a signal): outcome unknown, the token lookup decides.
    assert slurm.classify_sbatch_error("", -9) == "transient"
    assert slurm.classify_sbatch_error("", 124) == "transient"
    assert slurm.classify_sbatch_error("", 137) == "transient"
    # sbatch itself exits 255 on a bad option: still permanent.
    assert slurm.classify_sbatch_error(read("sbatch_err_option.stderr"), 255) == "permanent"


# --------------------------------------------------------------------------- scontrol


def test_scontrol_argv() -> None:
    assert slurm.scontrol_show_job_argv("16") == ["scontrol", "--oneliner", "show", "job", "16"]
    assert slurm.scontrol_show_job_argv() == ["scontrol", "--oneliner", "show", "job"]
    assert cmd("scontrol_show_job_space")["argv"] == slurm.scontrol_show_job_argv("16")
    assert slurm.scontrol_show_config_argv() == ["scontrol", "show", "config"]
    assert slurm.scontrol_show_hostnames_argv("node[1-2]") == [
        "scontrol", "show", "hostnames", "node[1-2]"]
    with pytest.raises(ValueError):
        slurm.scontrol_show_job_argv("-1")


def test_parse_scontrol_kv_values_with_spaces() -> None:
    (job,) = slurm.parse_scontrol_kv(read("scontrol_show_job_space.stdout"))
    assert job["JobId"] == "16"
    assert job["Command"] == "/srv/hpcjobs/slurmrec/dir with space/job script.sh"
    assert job["WorkDir"] == "/srv/hpcjobs/slurmrec"
    assert job["TRES"] == "cpu=1,mem=500M,node=1,billing=1"
    assert job["AllocNode:Sid"] == "localhost:2675"
    assert job["NtasksPerN:B:S:C"] == "0:0:*:*"
    assert job["Socks/Node"] == "*"
    assert job["Dependency"] == "(null)"
    assert job["Power"] == ""
    assert job["UserId"] == "alice(1001)"


def test_parse_scontrol_kv_name_with_pipe_and_space() -> None:
    (job,) = slurm.parse_scontrol_kv(read("scontrol_show_job_suspended.stdout"))
    assert job["JobName"] == "rec|pipe name"
    assert job["JobState"] == "SUSPENDED"
    assert slurm.status_from_slurm(job["JobState"]) == (JobStatus.PAUSED, "suspended")


def test_parse_scontrol_kv_requeue_hold() -> None:
    (job,) = slurm.parse_scontrol_kv(read("scontrol_show_job_requeuehold.stdout"))
    assert (job["JobState"], job["Reason"], job["Restarts"]) == (
        "PENDING", "job_requeued_in_held_state", "1")
    assert slurm.status_from_squeue(job["JobState"], job["Reason"]) == (
        JobStatus.PAUSED, "requeue_hold")
    assert job["TresPerNode"] == "gres:gpu:1"
    assert job["NodeList"] == ""


def test_parse_scontrol_kv_array_and_all() -> None:
    tasks = slurm.parse_scontrol_kv(read("scontrol_show_job_array.stdout"))
    assert sorted(int(t["ArrayTaskId"]) for t in tasks) == [0, 1, 2, 3, 4, 5]
    assert {t["ArrayJobId"] for t in tasks} == {"11"}
    assert {t["ArrayTaskThrottle"] for t in tasks} == {"2"}

    text = read("scontrol_show_job_all.stdout")
    jobs = slurm.parse_scontrol_kv(text)
    assert len(jobs) == len(text.strip().splitlines())
    for job in jobs:
        assert job["JobId"].isdigit()
        assert slurm.status_from_slurm(job["JobState"])[0] is not JobStatus.UNKNOWN
        slurm.parse_slurm_datetime(job["SubmitTime"])
    dep = next(j for j in jobs if j["JobName"] == "rec-dep")
    assert dep["Dependency"] == "afterok:7(failed)"
    assert dep["Reason"] == "DependencyNeverSatisfied"


def test_scontrol_show_job_gone() -> None:
    assert cmd("scontrol_show_job_gone")["returncode"] == 1
    assert slurm.is_invalid_job_id_error(read("scontrol_show_job_gone.stderr"))
    assert slurm.parse_scontrol_kv(read("scontrol_show_job_gone.stdout")) == []


def test_parse_scontrol_config() -> None:
    config = slurm.parse_scontrol_config(read("scontrol_show_config.stdout"))
    assert config["MaxArraySize"] == "1001"
    assert config["MinJobAge"] == "300 sec"
    assert config["ClusterName"] == "hpcjobs"
    assert config["SLURM_VERSION"] == "22.05.8"
    assert config["SchedulerParameters"] == (
        "sched_interval=5,bf_interval=2,sched_min_interval=100000")
    assert config["AccountingStorageBackupHost"] == "(null)"
    assert config["SlurmctldPort"] == "6817"
    assert config["SlurmctldHost[0]"] == "vm(localhost)"
    assert all(re.fullmatch(r"[A-Za-z_][\w/.\[\]-]*", key) for key in config), sorted(config)


def test_parse_hostnames_and_expand_hostlist() -> None:
    argv = cmd("scontrol_show_hostnames")["argv"]
    assert isinstance(argv, list)
    hosts = slurm.parse_hostnames(read("scontrol_show_hostnames.stdout"))
    assert hosts == ["node1", "node2", "login01", "login02", "login03", "login7", "gpu-a"]
    assert slurm.expand_hostlist(argv[-1]) == hosts


@pytest.mark.parametrize(
    ("hostlist", "hosts"),
    [
        ("node1", ["node1"]),
        ("", []),
        ("n[1-3]", ["n1", "n2", "n3"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("rack[1-2]-n[1-2]", ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]),
        ("a[1,3],b", ["a1", "a3", "b"]),
    ],
)
def test_expand_hostlist(hostlist: str, hosts: list[str]) -> None:
    assert slurm.expand_hostlist(hostlist) == hosts


# --------------------------------------------------------------------------- sinfo


def test_sinfo_argv() -> None:
    assert slurm.sinfo_argv() == ["sinfo", "--noheader", f"--format={SINFO_FORMAT}"]
    assert slurm.sinfo_argv(["gpu"])[-1] == "--partition=gpu"
    assert cmd("sinfo_gpu_partition")["argv"] == slurm.sinfo_argv(["gpu"])


@pytest.mark.parametrize("name", ["sinfo_idle", "sinfo_busy"])
def test_parse_sinfo_recorded(name: str) -> None:
    parts = slurm.parse_sinfo(read(f"{name}.stdout"))
    assert [p.name for p in parts] == ["debug", "gpu"]
    debug, gpu = parts
    assert debug.default and not gpu.default
    assert debug.available == "up"
    assert debug.time_limit == 3600
    assert (debug.nodes, debug.cpus, debug.memory_mb) == (2, 2, 4000)
    assert (debug.gpus_per_node, debug.gpu_type, debug.gres) == (2, None, ["gpu:2"])
    assert debug.nodelists == ["node[1-2]"]
    assert debug.allocated + debug.idle + debug.other == 2
    state = "idle" if name == "sinfo_idle" else "allocated"
    assert debug.node_states == {state: 2}


def test_parse_sinfo_aggregates_state_lines() -> None:
    # hand-written in the recorded format: one partition split over several node states
    text = (
        "big*|up|2-00:00:00|3|mixed|64|512000|gpu:a100:4(S:0-1)|3/0/0/3|g[01-03]\n"
        "big*|up|2-00:00:00|1|down*|64|512000|gpu:a100:4(S:0-1)|0/0/1/1|g04\n"
        "big*|up|2-00:00:00|2|idle|32+|256000+|gpu:v100:2,mps:100|0/2/0/2|v[1-2]\n"
        "cpu|down|infinite|4|idle|16|64000|(null)|0/4/0/4|c[1-4]\n"
    )
    big, cpu = slurm.parse_sinfo(text)
    assert big.default and big.time_limit == 2 * 86400
    assert big.nodes == 6
    assert big.node_states == {"mixed": 3, "down*": 1, "idle": 2}
    assert (big.allocated, big.idle, big.other) == (3, 2, 1)
    assert (big.cpus, big.memory_mb, big.gpus_per_node) == (64, 512000, 4)
    assert big.gpu_type == "a100,v100"
    assert (cpu.available, cpu.time_limit, cpu.gpus_per_node, cpu.gres) == ("down", None, 0, [])


@pytest.mark.parametrize(
    ("gres", "specs"),
    [
        ("gpu:2", [GresSpec("gpu", None, 2)]),
        ("gpu:a100:4", [GresSpec("gpu", "a100", 4)]),
        ("gpu:a100:4(S:0-1)", [GresSpec("gpu", "a100", 4)]),
        ("gpu:2,mps:100", [GresSpec("gpu", None, 2), GresSpec("mps", None, 100)]),
        ("gpu:a100:2(S:0,2),gpu:v100:1", [GresSpec("gpu", "a100", 2), GresSpec("gpu", "v100", 1)]),
        ("gpu", [GresSpec("gpu", None, 1)]),
        ("shard:4K", [GresSpec("shard", None, 4096)]),
        ("(null)", []),
        ("", []),
    ],
)
def test_parse_gres(gres: str, specs: list[GresSpec]) -> None:
    assert slurm.parse_gres(gres) == specs


# --------------------------------------------------------------------------- scancel


def test_scancel_argv() -> None:
    assert slurm.scancel_argv(["1", "2_3"]) == ["scancel", "1", "2_3"]
    assert slurm.scancel_argv(["1"], "USR1", full=True) == [
        "scancel", "--signal=USR1", "--full", "1"]
    ids = ["8", "9", "10", "14", "28", "29", "30"]
    assert cmd("scancel_many")["argv"] == slurm.scancel_argv(ids)
    for bad in ([], ["-1"], ["1,2"]):
        with pytest.raises(ValueError):
            slurm.scancel_argv(bad)
    with pytest.raises(ValueError):
        slurm.scancel_argv(["1"], "USR1; rm")


def test_scancel_of_a_gone_job_is_silent_success() -> None:
    assert cmd("scancel_gone")["returncode"] == 0
    assert read("scancel_gone.stderr") == "" and read("scancel_gone.stdout") == ""


# --------------------------------------------------------------------------- time, ids, codes


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1-02:03:04", 93784),
        ("02:03:04", 7384),
        ("03:04", 184),
        ("0:00", 0),
        ("1:28", 88),
        ("30:00", 1800),
        ("1:00:00", 3600),
        ("2-00:00:00", 172800),
        ("1-02", 93600),
        ("1-02:03", 93780),
        ("5", 300),
        ("00:00.012", 0),
        ("01:02.5", 62),
        ("UNLIMITED", None),
        ("infinite", None),
        ("INVALID", None),
        ("Partition_Limit", None),
        ("NOT_SET", None),
        ("N/A", None),
        ("", None),
        ("garbage", None),
    ],
)
def test_parse_slurm_time(text: str, seconds: int | None) -> None:
    assert slurm.parse_slurm_time(text) == seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(3600, "01:00:00"), (90061, "1-01:01:01"), (59, "00:00:59"), (86400, "1-00:00:00"),
     (61, "00:01:01")],
)
def test_format_slurm_time(seconds: int, text: str) -> None:
    assert slurm.format_slurm_time(seconds) == text
    assert slurm.parse_slurm_time(text) == seconds


def test_format_slurm_time_refuses_zero_which_means_unlimited() -> None:
    for bad in (0, -5):
        with pytest.raises(ValueError):
            slurm.format_slurm_time(bad)
    with pytest.raises(TypeError):
        slurm.format_slurm_time(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        slurm.format_slurm_time(True)


def test_parse_slurm_datetime() -> None:
    assert slurm.parse_slurm_datetime("2026-11-29T02:03:04") == datetime(2026, 11, 29, 2, 3, 4)
    for none in ("Unknown", "None", "N/A", "(null)", "", " "):
        assert slurm.parse_slurm_datetime(none) is None
    with pytest.raises(SlurmParseError):
        slurm.parse_slurm_datetime("Sun Nov 29 02:03:04 2026")


@pytest.mark.parametrize(
    ("text", "job", "task", "spec", "het", "step"),
    [
        ("123", "123", None, None, None, None),
        ("123_4", "123", 4, None, None, None),
        ("123_[5-9]", "123", None, "5-9", None, None),
        ("123_[5-9%2]", "123", None, "5-9%2", None, None),
        ("123.batch", "123", None, None, None, "batch"),
        ("123_4.extern", "123", 4, None, None, "extern"),
        ("123.0", "123", None, None, None, "0"),
        ("123+1", "123", None, None, 1, None),
        ("123+1.batch", "123", None, None, 1, "batch"),
    ],
)
def test_parse_job_id(
    text: str, job: str, task: int | None, spec: str | None, het: int | None, step: str | None
) -> None:
    jid = slurm.parse_job_id(text)
    assert (jid.job, jid.array_task, jid.array_spec, jid.het_offset, jid.step) == (
        job, task, spec, het, step)
    assert jid.is_step == (step is not None)


def test_parse_job_id_rejects_garbage() -> None:
    for bad in ("", "abc", "12_x", "_3"):
        with pytest.raises(SlurmParseError):
            slurm.parse_job_id(bad)


def test_parse_array_spec() -> None:
    assert slurm.parse_array_spec("0-5%2") == ([0, 1, 2, 3, 4, 5], 2)
    assert slurm.parse_array_spec("[1,3,10-20:5]") == ([1, 3, 10, 15, 20], None)
    for bad in ("5-1", "x", "1-9:0"):
        with pytest.raises(ValueError):
            slurm.parse_array_spec(bad)


@pytest.mark.parametrize(
    ("text", "pair"),
    [("2:0", (2, 0)), ("0:15", (0, 15)), ("0:0", (0, 0)), ("", (None, None))],
)
def test_parse_exit_code(text: str, pair: tuple[int | None, int | None]) -> None:
    assert slurm.parse_exit_code(text) == pair


# --------------------------------------------------------------------------- environment


def test_sanitized_env() -> None:
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/home/alice",
        "SBATCH_PARTITION": "high",
        "SBATCH_EXPORT": "NONE",
        "SLURM_JOB_ID": "77",
        "SLURM_MEM_PER_CPU": "100",
        "SLURM_TIME_FORMAT": "relative",
        "SLURM_CONF": "/etc/slurm-b/slurm.conf",
        "SALLOC_ACCOUNT": "x",
        "SRUN_CPUS_PER_TASK": "4",
        "SQUEUE_STATES": "R",
        "SACCT_FORMAT": "JobID",
        "SINFO_FORMAT": "%P",
        "SCANCEL_INTERACTIVE": "1",
        "MY_SLURM_THING": "kept",
    }
    env = slurm.sanitized_env(environ)
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/home/alice",
        "SLURM_CONF": "/etc/slurm-b/slurm.conf",
        "MY_SLURM_THING": "kept",
    }
    assert slurm.dropped_env_vars(environ) == sorted(set(environ) - set(env))
    assert slurm.dropped_env_vars({"PATH": "/bin"}) == []
    assert environ["SLURM_JOB_ID"] == "77"  # the input is not modified
