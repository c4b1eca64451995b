"""What ``hpcjobs job show`` says about a sweep: its trials, their metrics, the best one.

The trials' states come from the job store (one batched squeue/sacct refresh for the
whole sweep, done by :func:`hpcjobs.api.refresh` before the view is built).  Their
primary metrics and the reasons trials were stopped are on the cluster, next to the
trials: :func:`collect` reads them in one go (in-process when the job directory is on
this machine, else one command over the transport that runs the shipped
:mod:`hpcjobs.sweep.controller`).  Once the sweep has ended the result is cached in the
sweep's record, and the best trial is recorded: the record's ``best_child_run_id``
property (the trial's job name, as Azure's property names the child run) and, when the
sweep's MLflow run exists, the run's ``best_child_run_id`` tag (the trial's MLflow run id).

The best trial is the completed trial with the best *last* logged value of the primary
metric (``objective.goal``); NaN never wins; ties go to the lowest trial index.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from hpcjobs.status import JobStatus
from hpcjobs.store import JobRecord

log = logging.getLogger("hpcjobs.sweep")


def collect(rec: JobRecord) -> dict[str, Any]:
    """Every started trial's outcome and primary metric, read where the trials ran."""
    from hpcjobs.site import get_site, local_site

    sweep = rec.extra.get("sweep") or {}
    assert rec.job_dir
    site = local_site() if rec.site == "local" else get_site(rec.site)
    if site.ssh is None:
        from hpcjobs.sweep.controller import collect as collect_here

        return collect_here(rec.job_dir)
    from hpcjobs import backends

    t = backends.transport_for(site)
    lib = sweep.get("lib") or f"{rec.job_dir}/.hpcjobs/lib"
    python = sweep.get("python") or site.environment.python or "python3"
    res = t.run(["env", f"PYTHONPATH={lib}", python, "-m", "hpcjobs.sweep.controller", "collect", rec.job_dir])
    if not res.ok:
        raise RuntimeError(res.err.strip() or f"exit code {res.returncode}")
    data = json.loads(res.out)
    return data if isinstance(data, dict) else {}


def _value(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def best_trial(trials: list[dict[str, Any]], goal: str) -> dict[str, Any] | None:
    """The completed trial with the best primary metric (see the module docstring)."""
    from hpcjobs.sweep.controller import best_of

    # rows come in trial order: a tie goes to the first
    done = {i: t for i, t in enumerate(trials) if t.get("status") == JobStatus.COMPLETED.value}
    found = best_of(((i, _value(t.get("primary_metric"))) for i, t in done.items()), goal)
    return None if found is None else done[found[0]]


def trial_rows(rec: JobRecord, children: list[JobRecord], data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trial: name, index, parameters, status, primary metric, why it stopped."""
    found = data.get("trials") or {}
    rows = []
    for c in sorted(children, key=lambda c: int(c.extra.get("trial_index", 0))):
        idx = int(c.extra.get("trial_index", 0))
        got = found.get(str(idx)) or {}
        params = c.extra.get("params") or got.get("params") or {}
        reason = got.get("stop_reason") or c.reason
        if c.status == JobStatus.CANCELED.value and not got.get("stop_reason") and data.get("sweep_stopped"):
            # cancelled together with the rest of the sweep (limits.timeout)
            reason = data["sweep_stopped"]
        rows.append(
            {
                "name": c.name,
                "index": idx,
                "parameters": params,
                "status": c.status,
                "primary_metric": _value(got.get("value")),
                "reason": reason,
                "job_ids": c.slurm_ids,
            }
        )
    return rows


def sweep_view(rec: JobRecord, children: list[JobRecord]) -> dict[str, Any]:
    """The sweep part of ``job show``: ``trials``, ``best_trial`` and a ``sweep`` summary."""
    sweep = dict(rec.extra.get("sweep") or {})
    objective = sweep.get("objective") or {}
    metric = objective.get("primary_metric")
    goal = objective.get("goal", "maximize")
    terminal = JobStatus(rec.status).is_terminal
    data = rec.extra.get("sweep_results") if terminal else None
    note = None
    if data is None:
        try:
            data = collect(rec)
        except Exception as exc:  # noqa: BLE001 - the states are still worth showing
            note = f"trial metrics could not be read: {type(exc).__name__}: {exc}"
            data = {}
    rows = trial_rows(rec, children, data)
    best = best_trial(rows, goal)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = {
        "algorithm": sweep.get("algorithm"),
        "trials": sweep.get("trials", len(rows)),
        "max_concurrent_trials": sweep.get("max_concurrent_trials"),
        "objective": objective,
        "early_termination": sweep.get("early_termination"),
        "timeout": sweep.get("timeout"),
        "trial_timeout": sweep.get("trial_timeout"),
        "arrays": sweep.get("chunks"),
        "counts": counts,
    }
    if data.get("sweep_stopped"):
        summary["stopped"] = data["sweep_stopped"]
    if note:
        summary["note"] = note
    best_view = None
    if best is not None:
        best_view = {
            "name": best["name"],
            "index": best["index"],
            "parameters": best["parameters"],
            "primary_metric": {metric: best["primary_metric"]},
        }
    out: dict[str, Any] = {"trials": rows, "best_trial": best_view, "sweep": summary}
    if terminal and data and note is None:
        _remember(rec, children, data, best)
    return out


def best_for_import(rec: JobRecord, children: list[JobRecord]) -> tuple[JobRecord, Any] | None:
    """The best trial of an ended sweep and its value, for the tags of the sweep's MLflow run.

    Called when the sweep's run is recorded, so the run has ``best_child_run_id`` without
    waiting for a ``job show`` (which would then have to write to the tracking store itself).
    The results are cached in the sweep's record, as ``job show`` does.
    """
    sweep = dict(rec.extra.get("sweep") or {})
    goal = (sweep.get("objective") or {}).get("goal", "maximize")
    data = rec.extra.get("sweep_results")
    if data is None:
        data = collect(rec)
    best = best_trial(trial_rows(rec, children, data), goal)
    if data:
        _remember(rec, children, data, best, tag_run=False)
    if best is None:
        return None
    child = next((c for c in children if c.name == best["name"]), None)
    return (child, best.get("primary_metric")) if child is not None else None


def best_child_tags(child_run_id: str, child_name: str, value: Any) -> dict[str, str]:
    """The tags that name a sweep's best trial on the sweep's MLflow run."""
    tags = {"best_child_run_id": child_run_id, "hpcjobs.best_trial": child_name}
    if value is not None:
        tags["hpcjobs.best_value"] = repr(value)
    return tags


def _remember(
    rec: JobRecord, children: list[JobRecord], data: dict[str, Any], best: dict[str, Any] | None, *, tag_run: bool = True
) -> None:
    """Cache an ended sweep's results and record its best trial (store, then MLflow unless *tag_run* is false)."""
    from hpcjobs.store import Store

    store = Store()
    try:
        fresh = store.get(rec.name)
    except Exception:  # noqa: BLE001 - a view must not fail on bookkeeping
        return
    extra = dict(fresh.extra)
    props = dict(fresh.properties)
    changed = False
    if "sweep_results" not in extra:
        extra["sweep_results"] = data
        changed = True
    if best is not None and props.get("best_child_run_id") != best["name"]:
        props["best_child_run_id"] = best["name"]
        changed = True
    if tag_run and best is not None and not extra.get("best_child_tagged"):
        child = next((c for c in children if c.name == best["name"]), None)
        if child is not None and tag_best_child(fresh, child, best.get("primary_metric")):
            extra["best_child_tagged"] = True
            changed = True
    if changed:
        store.update(rec.name, extra=extra, properties=props)


def tag_best_child(parent: JobRecord, child: JobRecord, value: Any) -> bool:
    """Tag the sweep's MLflow run with its best trial's run (``best_child_run_id``); True if done."""
    pm = parent.extra.get("mlflow") or {}
    cm = child.extra.get("mlflow") or {}
    parent_run, child_run, uri = pm.get("run_id"), cm.get("run_id"), pm.get("uri")
    if not (parent_run and child_run and uri):
        return False  # the runs are not recorded yet (`job sync`); tried again at the next show
    try:
        from hpcjobs import tracking

        dest = tracking._dest(str(uri))
        dest.log_batch(str(parent_run), [], {}, best_child_tags(str(child_run), child.name, value))
    except Exception as exc:  # noqa: BLE001 - MLflow being down must not break job show
        log.debug("cannot tag the best trial of %s: %s", parent.name, exc)
        return False
    return True
