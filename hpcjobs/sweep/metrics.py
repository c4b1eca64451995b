"""Reading a trial's primary metric from its MLflow run.  Standard library only.

This module runs on the cluster (inside trials, see :mod:`hpcjobs.sweep.controller`)
as well as in the CLI, so it imports neither mlflow nor anything of hpcjobs beyond the
standard-library-only :mod:`hpcjobs.mlflow_job`.

Where a trial's run is, in the order tried:

1. ``<task dir>/.mlflow/state.json``, written by the job-side MLflow helper
   (:mod:`hpcjobs.mlflow_job`) when the trial starts: ``direct`` mode names the tracking
   server and run id (read through the REST API), ``offline`` mode a file store inside
   the task directory (read as files).
2. A store the user's code made on its own in its working directory when no tracking
   was set up: ``wd/mlruns`` (file store) or ``wd/mlflow.db`` (MLflow 3's default
   SQLite store).  The most recently changed run that has the metric wins.

A metric's history is a list of ``(step, value, timestamp_ms)`` points in log order.
A trial's value is its *last* logged value (ordered by step, then time): the value the
trial ended on, which is what a model trained by that trial would have.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from collections.abc import Sequence
from typing import Any

Point = tuple[int, float, int]


def _points_from_file(path: str) -> list[Point]:
    # MLflow file store: one "timestamp value step" line per logged point
    out: list[Point] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 2:
                    continue
                try:
                    ts = int(parts[0])
                    value = float(parts[1])
                    step = int(parts[2]) if len(parts) > 2 else 0
                except ValueError:
                    continue
                out.append((step, value, ts))
    except OSError:
        return []
    return out


def _safe_key(key: str) -> bool:
    parts = key.split("/")
    return bool(key) and "\x00" not in key and not key.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def file_store_history(root: str, experiment_id: str, run_id: str, key: str) -> list[Point]:
    """The history of *key* in run *run_id* of the file store at *root*."""
    if not _safe_key(key):
        return []
    return _points_from_file(os.path.join(root, experiment_id, run_id, "metrics", key))


def _latest_file_store_run(root: str, key: str) -> list[Point]:
    best: tuple[float, str] | None = None
    try:
        experiments = os.listdir(root)
    except OSError:
        return []
    for exp in experiments:
        exp_dir = os.path.join(root, exp)
        if exp.startswith(".") or not os.path.isdir(exp_dir):
            continue
        try:
            runs = os.listdir(exp_dir)
        except OSError:
            continue
        for run in runs:
            path = os.path.join(exp_dir, run, "metrics", key)
            try:
                mtime = os.stat(path).st_mtime
            except OSError:
                continue
            if best is None or mtime > best[0]:
                best = (mtime, path)
    return _points_from_file(best[1]) if best else []


def sqlite_history(db_path: str, key: str, run_id: str | None = None) -> list[Point]:
    """The history of *key* in an MLflow SQLite store (*run_id*, else the latest run with it)."""
    if not os.path.isfile(db_path):
        return []
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return []
    try:
        if run_id is None:
            row = conn.execute(
                "SELECT run_uuid FROM metrics WHERE key = ? ORDER BY timestamp DESC LIMIT 1",
                (key,),
            ).fetchone()
            if row is None:
                return []
            run_id = str(row[0])
        rows = conn.execute(
            "SELECT step, value, timestamp, is_nan FROM metrics WHERE run_uuid = ? AND key = ?",
            (run_id, key),
        ).fetchall()
    except sqlite3.Error:
        return []
    finally:
        conn.close()
    return [(int(s or 0), math.nan if nan else float(v), int(ts or 0)) for s, v, ts, nan in rows]


def _rest_history(uri: str, run_id: str, key: str, timeout: float) -> list[Point]:
    from hpcjobs.mlflow_job import RestClient

    client = RestClient(uri, timeout=timeout)
    out: list[Point] = []
    for m in client.metric_history(run_id, key):
        try:
            out.append((int(m.get("step", 0) or 0), float(m["value"]), int(m.get("timestamp", 0) or 0)))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def read_state(task_dir: str) -> dict[str, Any]:
    """The job-side MLflow helper's record of the trial's run (``{}`` if none)."""
    try:
        with open(os.path.join(task_dir, ".mlflow", "state.json"), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def trial_history(task_dir: str, key: str, *, timeout: float = 10.0) -> list[Point]:
    """The history of metric *key* of the trial whose task directory is *task_dir*.

    Raises ``hpcjobs.mlflow_job.MlflowUnreachable`` when the trial logs to a tracking
    server that does not answer (the caller decides whether to try again later).
    """
    state = read_state(task_dir)
    if state.get("mode") == "direct" and state.get("uri") and state.get("run_id"):
        return _rest_history(str(state["uri"]), str(state["run_id"]), key, timeout)
    if state.get("local_run_id"):
        root = os.path.join(task_dir, str(state.get("store") or "mlruns"))
        points = file_store_history(root, str(state.get("experiment_id_local") or "0"), str(state["local_run_id"]), key)
        if points:
            return points
    wd = os.path.join(task_dir, "wd")
    points = _latest_file_store_run(os.path.join(wd, "mlruns"), key)
    if points:
        return points
    return sqlite_history(os.path.join(wd, "mlflow.db"), key)


def ordered(points: Sequence[Point]) -> list[Point]:
    """*points* by step, then time (stable: equal ones keep their log order)."""
    return sorted(points, key=lambda p: (p[0], p[2]))


def final_value(points: Sequence[Point]) -> float | None:
    """The trial's value: its last point by step, then time (None without points)."""
    if not points:
        return None
    return ordered(points)[-1][1]


def is_better(a: float, b: float, goal: str) -> bool:
    """True if *a* beats *b* for *goal* (NaN never beats anything)."""
    if math.isnan(a):
        return False
    if math.isnan(b):
        return True
    return a > b if goal == "maximize" else a < b
