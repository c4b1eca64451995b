"""A pipeline's sweep step as a job: its state and its summary in the pipeline's view.

A sweep step is a child job of its pipeline (type ``sweep``) whose own children are its
trials.  It has a scheduler job of its own, the *finalize* job (``controller finalize``,
``afterany`` on the trials' arrays), which picks the best trial and places its outputs as
the step's.  Its state:

* while the finalize job has not ended: ``Queued`` until a trial starts, ``Running``
  while trials run, ``Finalizing`` once every trial ended;
* then the finalize job's: ``Completed`` (a best trial, its outputs in place),
  ``Failed`` (no trial completed with a value), ``Canceled``.

Pure: the caller (:func:`hpcjobs.api.refresh`) asks the backend about the finalize job
(the step record's first scheduler id) and the trials, and hands the answers here.
"""

from __future__ import annotations

from typing import Any

from hpcjobs.status import JobStatus
from hpcjobs.store import JobRecord
from hpcjobs.sweep.controller import NO_METRIC, NO_TRIAL_COMPLETED

#: trial states that keep a step from ending (Unknown does not: the finalize job knows better)
ACTIVE = frozenset(
    {JobStatus.NOT_STARTED, JobStatus.QUEUED, JobStatus.STARTING, JobStatus.RUNNING, JobStatus.FINALIZING, JobStatus.PAUSED}
)
#: why a finalize job failed, by its exit code (:func:`hpcjobs.sweep.controller.finalize`)
FINALIZE_REASONS = {
    NO_TRIAL_COMPLETED: "no trial completed",
    NO_METRIC: "no completed trial logged the primary metric '{metric}'",
}


def is_sweep_step(rec: JobRecord) -> bool:
    """Whether *rec* is a pipeline's sweep step (a sweep with a finalize job of its own)."""
    return rec.type == "sweep" and bool(rec.extra.get("finalize"))


def step_status(step: JobRecord, own: dict[str, Any], trials: list[JobRecord]) -> dict[str, Any]:
    """The fields of *step* that change, from its finalize job's changes *own* and its *trials* (up to date).

    *own* is what the backend reported for the step record, i.e. for its finalize job,
    as changes against the record: a field it leaves out has the record's value.
    """
    fin = JobStatus(own.get("status", step.status))
    out = dict(own)
    states = [JobStatus(t.status) for t in trials]
    started = [t.started for t in trials if t.started]
    if started:
        out["started"] = min(started)
    # a cancelled or failed finalize job ends the step once its trials have ended too (a
    # cancelled trial may take a moment to stop); a completed one ran after all of them
    active = [s for s in states if s in ACTIVE]
    if fin.is_terminal and (fin == JobStatus.COMPLETED or not active):
        out["status"] = fin.value
        code = own.get("exit_code", step.exit_code)
        if fin == JobStatus.FAILED and code in FINALIZE_REASONS:
            metric = ((step.extra.get("sweep") or {}).get("objective") or {}).get("primary_metric")
            out["reason"] = FINALIZE_REASONS[code].format(metric=metric)
    else:
        out.pop("ended", None)
        out.pop("exit_code", None)
        if fin.is_terminal:
            out["status"] = JobStatus.RUNNING.value
            out["reason"] = f"its finalize job is {fin.value}; waiting for the trials to stop"
        elif states and all(s.is_terminal for s in states):
            out["status"] = JobStatus.FINALIZING.value
            out["reason"] = None
        elif any(s == JobStatus.RUNNING or s.is_terminal for s in states):
            out["status"] = JobStatus.RUNNING.value
            out["reason"] = None
        else:
            out["status"] = JobStatus.QUEUED.value if fin != JobStatus.PAUSED else fin.value
    return {k: v for k, v in out.items() if getattr(step, k) != v}


def trials_summary(trials: list[JobRecord]) -> dict[str, Any]:
    """A sweep step's trials in a pipeline's view: how many, in which states."""
    counts: dict[str, int] = {}
    for t in sorted(trials, key=lambda t: int(t.extra.get("trial_index", 0))):
        counts[t.status] = counts.get(t.status, 0) + 1
    return {"total": len(trials), "counts": counts}


def record_best(step: JobRecord, changes: dict[str, Any], read_file: Any) -> None:
    """A sweep step that just completed: add its best trial (``best.json``, written by the finalize job) to *changes*.

    *read_file* reads a file where the step ran (the backend's transport): one read, once.
    The best trial's job name becomes the step's ``best_child_run_id`` property (as a sweep
    job's), and the report is kept in ``extra.best``.
    """
    import json

    if changes.get("status") != JobStatus.COMPLETED.value or not step.job_dir:
        return
    try:
        report = json.loads(read_file(f"{step.job_dir}/.hpcjobs/best.json"))
        index = int(report["index"])
    except Exception:  # noqa: BLE001 - the state is right without it; `job show -n STEP` finds the best trial too
        return
    changes["properties"] = {**step.properties, **changes.get("properties", {}), "best_child_run_id": f"{step.name}_{index}"}
    changes["extra"] = {**(changes.get("extra") or step.extra), "best": report}
