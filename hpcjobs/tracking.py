"""MLflow tracking: every job is an MLflow run.  (Stub: filled in by the MLflow work.)

Hooks called by the rest of hpcjobs (keep their signatures):

* :func:`script_env` -- from the planner, per script: environment variables (and
  shell setup lines) the job needs so that ``mlflow`` calls in the user's code land in
  the job's run.  Pure: no network, no mlflow import.
* :func:`on_submitted` -- from ``api.create_job`` right after submission.  Must be fast.
* :func:`on_terminal` -- from ``api.refresh`` when a job (trial, step) reaches a final
  state: close the run, import offline runs, log ``./outputs`` as artifacts.
* :func:`run_ui_url` -- the MLflow UI address of a job's run (``--web``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpcjobs.backends.base import Backend
    from hpcjobs.plan import Plan, Target
    from hpcjobs.site import Site
    from hpcjobs.store import JobRecord, Store


def script_env(site: Site, target: Target, plan: Plan, *, key: str, job_name: str, task_dir: str, array: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """(environment variables, setup shell lines) for one script of *plan*."""
    return [], []


def on_submitted(site: Site, plan: Plan, records: list[JobRecord], store: Store) -> None:
    """Called once the scheduler accepted the plan."""


def on_terminal(site: Site, backend: Backend, records: list[JobRecord], store: Store) -> None:
    """Called with jobs that just reached a final state."""


def run_ui_url(name: str) -> str | None:
    """The MLflow UI address of job *name*'s run, if known."""
    return None


def info() -> dict[str, Any]:
    """Tracking settings for ``hpcjobs mlflow-uri``."""
    return {}
