"""MLflow tracking: every job is an MLflow run.  (See ``docs/mlflow.md``.)

Hooks called by the rest of hpcjobs (keep their signatures):

* :func:`script_env` -- from the planner, per script: environment variables (and
  shell setup lines) the job needs so that ``mlflow`` calls in the user's code land in
  the job's run.  Pure: no network, no mlflow import.
* :func:`on_submitted` -- from ``api.create_job`` right after submission.  Must be fast.
* :func:`on_terminal` -- from ``api.refresh`` when a job (trial, step) reaches a final
  state: close the run, import offline runs, log ``./outputs`` as artifacts.
* :func:`run_ui_url` -- the MLflow UI address of a job's run (``--web``).

How a run comes to be (measured numbers in ``docs/mlflow.md``):

* The job script runs :mod:`hpcjobs.mlflow_job` (copied into the job directory, standard
  library only) before the user's command.  With an ``http(s)`` tracking server and
  mode ``direct`` it attaches the job to its run on the server; otherwise (mode
  ``offline``, or a destination that is not a server, such as the embedded SQLite
  store) it creates the run in a file store inside the task directory.
* ``on_submitted`` creates the run on an ``http(s)`` server through the REST API (a
  few milliseconds on a LAN), so ``--web`` has an address at once; it never imports
  mlflow.  If the server does not answer, the job or the import creates the run later.
* ``on_terminal`` (and ``hpcjobs job sync``) fetches the task's ``.mlflow`` state, file
  store, ``./outputs``, ``./logs`` and ``user_logs`` in one tar stream, imports them
  idempotently (:mod:`hpcjobs.mlflow_import`) and sets the run's final status.  When
  the tracking server is down the job is marked pending (one warning line) and
  ``job sync`` retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcjobs import paths

if TYPE_CHECKING:
    from hpcjobs.backends.base import Backend
    from hpcjobs.mlflow_import import Dest
    from hpcjobs.plan import Plan, Target
    from hpcjobs.site import Site
    from hpcjobs.store import JobRecord, Store

log = logging.getLogger("hpcjobs.tracking")

HELPER_NAME = "hpcjobs_mlflow.py"
#: seconds the CLI waits for one answer of the tracking server at submission, and for all of them
SUBMIT_TIMEOUT = 2.0
SUBMIT_BUDGET = 3.0
#: seconds per request when importing (a hung server fails the import in about this long)
IMPORT_TIMEOUT = 10.0
#: seconds to wait for another hpcjobs process that is importing runs
LOCK_TIMEOUT = 60.0

#: hpcjobs (Azure) job status -> MLflow run status
RUN_STATUS = {
    "NotStarted": "SCHEDULED",
    "Queued": "SCHEDULED",
    "Starting": "SCHEDULED",
    "Paused": "SCHEDULED",
    "Running": "RUNNING",
    "Finalizing": "RUNNING",
    "Completed": "FINISHED",
    "Failed": "FAILED",
    "Canceled": "KILLED",
    "NotResponding": "FAILED",
    "Unknown": "FAILED",
}


def is_http(uri: str | None) -> bool:
    """Whether *uri* is a tracking server address (the same test as the job-side helper's)."""
    return bool(uri) and str(uri).split(":", 1)[0].lower() in ("http", "https")


_notices: list[str] = []
_dests: dict[str, Dest] = {}
_down: dict[str, str] = {}
#: set while `job sync` runs: it imports what ends during its refresh itself
_syncing = False

MLFLOW_MISSING = "mlflow is not installed where hpcjobs runs (pip install mlflow), so this run cannot be recorded"


def notices() -> list[str]:
    """Warnings tracking produced in this process (also logged, one line each)."""
    return list(_notices)


def _notice(message: str) -> None:
    _notices.append(message)
    log.warning("%s", message)


# ------------------------------------------------------------------------------- settings
def embedded_dir() -> Path:
    """The embedded MLflow store: ``<state dir>/mlflow`` (``mlflow.db`` and ``artifacts/``)."""
    return paths.state_dir() / "mlflow"


def embedded_uri() -> str:
    """Tracking URI of the embedded store (a SQLite database, no server)."""
    return "sqlite:///" + str(embedded_dir() / "mlflow.db")


def normalize_uri(uri: str) -> str:
    """*uri* with relative paths made absolute, so imports later go to the same place."""
    uri = uri.strip()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        rest = uri[len("sqlite:///") :]
        if rest and rest != ":memory:" and not rest.startswith("/"):
            return "sqlite:///" + os.path.abspath(rest)
    if uri.startswith("file:") and not uri.startswith("file:/"):
        return Path(os.path.abspath(uri[len("file:") :])).as_uri()
    if "://" not in uri and ":" not in uri.split("/", 1)[0]:
        return Path(os.path.abspath(uri)).as_uri()
    return uri.rstrip("/") if is_http(uri) else uri


def tracking_uri(site: Site | None = None) -> str:
    """Where runs end up: the site's ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the embedded store."""
    if site is not None and site.tracking.uri:
        return normalize_uri(site.tracking.uri)
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return normalize_uri(env)
    return embedded_uri()


def uri_source(site: Site | None = None) -> str:
    """Which setting :func:`tracking_uri` took: ``site``, ``env`` or ``embedded``."""
    if site is not None and site.tracking.uri:
        return "site"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return "env"
    return "embedded"


def tracking_mode(site: Site) -> str:
    """``direct``, ``offline`` or ``none``; ``$HPCJOBS_TRACKING`` overrides the site's setting."""
    env = os.environ.get("HPCJOBS_TRACKING", "").strip().lower()
    if env in ("none", "off", "0", "false"):
        return "none"
    if env in ("direct", "offline"):
        return env
    return site.tracking_mode()


def job_log_mode(site: Site, uri: str | None = None) -> str:
    """How the job itself logs: ``direct`` only to an http(s) server, else to its own file store."""
    mode = tracking_mode(site)
    if mode == "none":
        return "none"
    return "direct" if mode == "direct" and is_http(uri or tracking_uri(site)) else "offline"


def ui_command(uri: str | None = None) -> str | None:
    """The command that starts the MLflow UI on a local store (None for servers)."""
    from hpcjobs.mlflow_import import sqlite_db_path

    uri = uri or tracking_uri()
    if is_http(uri):
        return None
    db = sqlite_db_path(uri)
    root = f" --default-artifact-root {(db.parent / 'artifacts').as_uri()}" if db is not None else ""
    return f"mlflow ui --backend-store-uri {uri}{root} --port 5000"


def info(site_name: str | None = None) -> dict[str, Any]:
    """Tracking settings for ``hpcjobs mlflow-uri``."""
    site = _site(site_name) if site_name else None
    uri = tracking_uri(site)
    out: dict[str, Any] = {"tracking_uri": uri, "source": uri_source(site)}
    if site is not None:
        out["site"] = site.name
        out["mode"] = tracking_mode(site)
        out["job_logs"] = job_log_mode(site, uri)
    if not is_http(uri):
        out["ui_command"] = ui_command(uri)
    return out


def _site(name: str) -> Site:
    from hpcjobs.site import get_site, local_site

    return local_site() if name == "local" else get_site(name)


# ------------------------------------------------------------------------------- script_env
@lru_cache(maxsize=1)
def _helper_source() -> bytes:
    return (Path(__file__).resolve().parent / "mlflow_job.py").read_bytes()


def helper_path(job_dir: str) -> str:
    """Where the job-side helper is copied in a job directory."""
    return f"{job_dir}/.mlflow/{HELPER_NAME}"


def run_claim_path(job_dir: str) -> str:
    """The claim of a job's run in direct mode: ``<job dir>/.mlflow/run_id`` (see ``mlflow_job._claim``).

    A command job's helper resumes the run named there; the trials and steps of a sweep or
    pipeline read their parent's run from it.
    """
    return f"{job_dir}/.mlflow/run_id"


def script_env(
    site: Site, target: Target, plan: Plan, *, key: str, job_name: str, task_dir: str, array: bool
) -> tuple[list[tuple[str, str]], list[str]]:
    """(environment variables, setup shell lines) for one script of *plan*.

    The setup line runs the helper, which prints the ``MLFLOW_*`` exports (their values
    are only known when the job starts: the run may be created then).  The helper and
    its settings are added to ``plan.files``.
    """
    from hpcjobs.shellquote import shq

    uri = tracking_uri(site)
    mode = job_log_mode(site, uri)
    if mode == "none":
        return [], []
    helper = helper_path(plan.job_dir)
    plan.files[helper] = _helper_source()
    config_path = f"{task_dir}/.mlflow/{key}.json"
    # a sweep's or pipeline's run, claimed in its folder: its trials and steps become its child runs
    parent_claim = run_claim_path(plan.job_dir) if mode == "direct" and plan.kind in ("sweep", "pipeline") else None
    # ... except a pipeline's sweep step's trials: nested under the step's run, which the
    # first trial to start creates (under the pipeline's run) and claims in the step's folder
    step_trials = mode == "direct" and array and plan.kind == "pipeline"
    config = {
        "version": 1,
        "mode": mode,
        "uri": uri if mode == "direct" else None,
        "run_name": job_name,
        "run_key": f"{plan.token}/{key}",
        "array": array,
        # on_submitted creates the run of a plain command job on the server and claims it
        "expect_claim": mode == "direct" and key == "main" and not array and plan.kind == "command",
        "parent_claim": run_claim_path(task_dir) if step_trials else parent_claim,
        "timeout": IMPORT_TIMEOUT,
        # the experiment name is known only once the plan is complete: read from job.json at run time
        "job_json": f"{plan.job_dir}/job.json",
        "tags": {"hpcjobs.site": site.name, "hpcjobs.job_name": job_name},
    }
    if step_trials:
        config["parent_create"] = {"run_name": job_name, "run_key": f"{plan.token}/{key}", "parent_claim": parent_claim}
    plan.files[config_path] = json.dumps(config, indent=1, sort_keys=True).encode()
    python = site.environment.python or "python3"
    line = (
        f"if hpcjobs_mlflow_env=$({shq(python)} {shq(helper)} start {shq(config_path)}); then "
        'eval "$hpcjobs_mlflow_env"; fi; unset hpcjobs_mlflow_env'
    )
    return [], ["# MLflow: attach this job to its run (sets MLFLOW_TRACKING_URI, MLFLOW_RUN_ID, MLFLOW_EXPERIMENT_ID)", line]


# ------------------------------------------------------------------------------- records
def _mlflow_extra(rec: JobRecord) -> dict[str, Any]:
    value = rec.extra.get("mlflow")
    return dict(value) if isinstance(value, dict) else {}


def _settings(rec: JobRecord, store: Store, site: Site | None = None) -> dict[str, Any]:
    """The record's tracking settings: its own, else its parent's, else the site's now."""
    own = _mlflow_extra(rec)
    if "uri" in own and "mode" in own:
        return own
    if rec.parent:
        with contextlib.suppress(Exception):
            parent = _settings(store.get(rec.parent), store, site)
            return {**{k: parent[k] for k in ("uri", "mode") if k in parent}, **own}
    if site is None:
        site = _site(rec.site)
    return {"uri": tracking_uri(site), "mode": tracking_mode(site), **own}


def _save(store: Store, name: str, **changes: Any) -> None:
    # re-read first: extra is one JSON column shared with other writers
    fresh = store.get(name)
    extra = dict(fresh.extra)
    current = _mlflow_extra(fresh)
    current.update({k: v for k, v in changes.items() if v is not None})
    for k, v in changes.items():
        if v is None:
            current.pop(k, None)
    extra["mlflow"] = current
    store.update(name, extra=extra)


_PARAM_RE = re.compile(r"^export AZUREML_PARAMETER_([A-Za-z_][A-Za-z0-9_]*)=", re.MULTILINE)


def literal_params_names(plan: Plan, key: str) -> list[str]:
    """Names of the literal inputs script *key* exports (``AZUREML_PARAMETER_<name>``; data inputs have none)."""
    script = next((s for s in plan.scripts if s.key == key), None)
    return _PARAM_RE.findall(script.text) if script is not None else []


def literal_params(plan: Plan, key: str = "main") -> dict[str, str]:
    """The job's literal inputs (MLflow params), as the main script exports them.

    A pipeline has no main script: its own literal inputs, which its steps take
    through ``${{parent.inputs.X}}``, are the params of the pipeline's run.
    """
    if plan.kind == "pipeline":
        names = (plan.meta.get("pipeline") or {}).get("literal_inputs") or []
        return {n: str(plan.inputs[n]) for n in names if n in plan.inputs}
    return {n: str(plan.inputs[n]) for n in literal_params_names(plan, key) if n in plan.inputs}


def record_tags(rec: JobRecord) -> dict[str, str]:
    """The run's tags from the job: its tags, display name, description, site, Slurm ids, git."""
    tags: dict[str, str] = {}
    for k, v in (rec.properties or {}).items():
        if v is not None and str(k).startswith("mlflow."):
            tags[str(k)] = str(v)
    for k, v in (rec.tags or {}).items():
        if v is not None:
            tags[str(k)] = str(v)
    tags["mlflow.runName"] = rec.name
    tags["hpcjobs.job_name"] = rec.name
    tags["hpcjobs.token"] = rec.token
    tags["hpcjobs.site"] = rec.site
    tags["hpcjobs.job_type"] = rec.type
    if rec.display_name:
        tags["hpcjobs.display_name"] = rec.display_name
    if rec.description:
        tags["mlflow.note.content"] = rec.description
    if rec.compute:
        tags["hpcjobs.compute"] = rec.compute
    slurm = [i for i in rec.slurm_ids if not i.startswith("local:")]
    if slurm:
        tags["hpcjobs.slurm_job_id"] = ",".join(slurm)
    if rec.parent:
        tags["hpcjobs.parent_job_name"] = rec.parent
    if rec.status:
        tags["hpcjobs.status"] = rec.status
    if rec.exit_code is not None:
        tags["hpcjobs.exit_code"] = str(rec.exit_code)
    return tags


# ------------------------------------------------------------------------------- on_submitted
def _claim_on_target(site: Site, path: str, content: str) -> str | None:
    """Write *content* to *path* on the target unless it exists; None if written, else what is there."""
    if site.ssh is None:
        from hpcjobs.mlflow_job import _claim

        if _claim(path, content):
            return None
        with contextlib.suppress(OSError):
            return Path(path).read_text(encoding="utf-8")
        return ""
    from hpcjobs import backends

    t = backends.transport_for(site)
    # noclobber makes ">" an O_EXCL create: the same atomic claim as the job's
    script = 'set -C; mkdir -p -- "${1%/*}" && printf "%s" "$2" > "$1" 2>/dev/null || { cat -- "$1"; exit 3; }'
    res = t.run(["bash", "-c", script, "hpcjobs-claim", path, content], timeout=SUBMIT_TIMEOUT * 5)
    return None if res.returncode == 0 else res.out


def on_submitted(site: Site, plan: Plan, records: list[JobRecord], store: Store) -> None:
    """Called once the scheduler accepted the plan: remember the settings, create the run on a server."""
    if not records:
        return
    top = records[0]
    try:
        uri = tracking_uri(site)
        mode = tracking_mode(site)
        settings: dict[str, Any] = {"uri": uri, "mode": mode}
        if mode != "none":
            settings["params"] = literal_params(plan)
            # a sweep's or pipeline's run too: its trials and steps are nested under it as they start
            if is_http(uri) and top.type in ("command", "sweep", "pipeline") and uri not in _down:
                settings.update(_create_run_at_submit(site, plan, top, uri, settings["params"], job_log_mode(site, uri)))
        _save(store, top.name, **settings)
        if mode != "none":
            _save_step_params(plan, records[1:], store)
    except Exception as exc:  # noqa: BLE001 - a submitted job must never look failed because of tracking
        log.debug("MLflow: on_submitted failed for %s: %s", top.name, exc)


def _save_step_params(plan: Plan, children: list[JobRecord], store: Store) -> None:
    # a pipeline step's literal inputs: the names its script exports, the values it was given
    by_name = {c["name"]: c for c in plan.children}
    updates: dict[str, dict[str, Any]] = {}
    for rec in children:
        child = by_name.get(rec.name) or {}
        key = child.get("script_key")
        inputs = (child.get("extra") or {}).get("inputs") or {}
        if not key or not inputs or "step" not in rec.extra:
            continue
        params = {n: str(inputs[n]) for n in literal_params_names(plan, str(key)) if n in inputs}
        if params:
            extra = dict(rec.extra)
            extra["mlflow"] = {**_mlflow_extra(rec), "params": params}
            updates[rec.name] = {"extra": extra}
    if updates:
        store.update_many(updates)


def _budget_client(uri: str, budget: float) -> Any:
    """A REST client whose requests together take at most *budget* seconds."""
    from hpcjobs.mlflow_job import MlflowUnreachable, RestClient

    class BudgetClient(RestClient):
        deadline = time.monotonic() + budget

        def request(self, method: str, path: str, **kw: Any) -> Any:
            left = self.deadline - time.monotonic()
            if left <= 0.05:
                raise MlflowUnreachable(f"{self.uri}: no answer within the {budget:g} s allowed at submission")
            self.timeout = min(SUBMIT_TIMEOUT, left)
            return super().request(method, path, **kw)

    return BudgetClient(uri, timeout=SUBMIT_TIMEOUT)


def _known_experiments() -> dict[str, str]:
    try:
        data = json.loads((embedded_dir() / "experiments.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _remember_experiment(key: str, exp_id: str) -> None:
    with contextlib.suppress(OSError):
        known = _known_experiments()
        known[key] = exp_id
        d = embedded_dir()
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".experiments.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(known, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, d / "experiments.json")


def _create_run_at_submit(
    site: Site, plan: Plan, rec: JobRecord, uri: str, params: dict[str, str], job_mode: str
) -> dict[str, Any]:
    from hpcjobs.mlflow_import import MAX_PARAM_VALUE, MAX_TAG_VALUE, valid_key
    from hpcjobs.mlflow_job import MlflowApiError, MlflowUnreachable, RestClient

    client = _budget_client(uri, SUBMIT_BUDGET)
    run_id = exp_id = ""
    try:
        experiment = rec.experiment_name or "Default"
        tags = {**record_tags(rec), "hpcjobs.run_key": f"{plan.token}/main"}
        tags = {k: v[:MAX_TAG_VALUE] for k, v in tags.items() if valid_key(k)}
        start = int((rec.submitted or time.time()) * 1000)
        # the experiment's id is remembered: one request fewer per submission
        exp_id = _known_experiments().get(f"{uri} {experiment}", "")
        try:
            if not exp_id:
                raise MlflowApiError("experiment id not known yet")
            run = client.create_run(exp_id, rec.name, start_time=start, tags=tags)
        except MlflowApiError:
            exp_id = client.get_or_create_experiment(experiment)
            _remember_experiment(f"{uri} {experiment}", exp_id)
            run = client.create_run(exp_id, rec.name, start_time=start, tags=tags)
        run_id = str(run["run_id"])
        good = {k: v for k, v in params.items() if valid_key(k) and len(v) <= MAX_PARAM_VALUE}
        if good:
            client.log_batch(run_id, params=good)
        # before the claim: once claimed, the job may already have set RUNNING
        client.update_run(run_id, status="SCHEDULED")
        if job_mode == "direct" and rec.job_dir:
            claim = json.dumps({"run_id": run_id, "experiment_id": exp_id, "by": "cli"})
            other = _claim_on_target(site, run_claim_path(rec.job_dir), claim)
            if other is not None:
                # the job started first and made its own run: keep that one
                with contextlib.suppress(MlflowUnreachable, MlflowApiError):
                    client.delete_run(run_id)
                theirs = json.loads(other)
                run_id, exp_id = str(theirs["run_id"]), str(theirs["experiment_id"])
        return {"run_id": run_id, "experiment_id": exp_id}
    except (MlflowUnreachable, MlflowApiError, ValueError, KeyError) as exc:
        if isinstance(exc, MlflowUnreachable) and not run_id:
            _down[uri] = str(exc)
        note = {"submit_note": f"the run was not created at submission: {exc}"}
        if run_id and job_mode == "direct":
            # unclaimed: the job makes its own run; do not leave this one behind
            with contextlib.suppress(MlflowUnreachable, MlflowApiError):
                RestClient(uri, timeout=1.0).delete_run(run_id)
            return note
        if run_id:
            # offline: the import fills this run in later
            return {"run_id": run_id, "experiment_id": exp_id, **note}
        return note


# ------------------------------------------------------------------------------- on_terminal
def on_terminal(site: Site, backend: Backend, records: list[JobRecord], store: Store) -> None:
    """Called with jobs that just reached a final state: their runs are completed in MLflow.

    Never raises and never blocks for long.  Runs bound for a tracking server are
    recorded here through its REST API (a server that does not answer leaves them
    pending, with one warning line; ``hpcjobs job sync`` retries).  Runs bound for a
    store only mlflow itself can write (the embedded SQLite store) are recorded by a
    background ``python -m hpcjobs.tracking`` process, so ``job show``, ``list`` or
    ``cancel`` never wait for mlflow's import (seconds) or a new store's set-up.
    """
    try:
        now: list[JobRecord] = []
        later: list[JobRecord] = []
        for rec in records:
            if not _needs_sync(rec, store, False):
                continue
            uri = str(_settings(rec, store, site).get("uri") or "")
            (now if is_http(uri) and os.environ.get("HPCJOBS_MLFLOW_BACKGROUND") != "1" else later).append(rec)
        if now:
            sync_records(site, backend, now, store)
        if later:
            queue_background(later, store)
    except Exception as exc:  # noqa: BLE001 - refresh must go on whatever tracking does
        _notice(f"MLflow: could not record the runs of {', '.join(r.name for r in records)}: {type(exc).__name__}: {exc}")


def queue_background(records: Sequence[JobRecord], store: Store) -> None:
    """Mark *records* for the background importer and start one (it exits at once if another runs)."""
    import importlib.util

    from hpcjobs.transport.local import LocalTransport

    if importlib.util.find_spec("mlflow") is None:
        # nothing can write such a store without mlflow; `job sync` tries again once it is installed
        for rec in records:
            _save(store, rec.name, state="pending", error=MLFLOW_MISSING)
        return
    for rec in records:
        _save(store, rec.name, state="queued")
    if os.environ.get("HPCJOBS_MLFLOW_BACKGROUND") == "0" or _syncing:
        return  # `job sync` (or the caller) imports them itself
    log_path = embedded_dir() / "import.log"
    LocalTransport().spawn_detached([sys.executable, "-m", "hpcjobs.tracking", "import-queued"], log_path=str(log_path))


def import_queued(*, wait: float = 600.0) -> list[dict[str, Any]]:
    """Record every queued run (the background importer); returns what it did."""
    from hpcjobs import backends
    from hpcjobs.store import Store

    store = Store()
    results: list[dict[str, Any]] = []
    with _import_lock(wait) as locked:
        if not locked:
            return results
        for _ in range(20):
            # jobs queued while this was importing are picked up too
            queued = [r for r in store.list(limit=None) if _mlflow_extra(r).get("state") == "queued"]
            if not queued:
                break
            by_site: dict[str, list[JobRecord]] = {}
            for r in queued:
                by_site.setdefault(r.site, []).append(r)
            for site_name, recs in by_site.items():
                try:
                    site = _site(site_name)
                except Exception as exc:  # noqa: BLE001 - a removed site config: report it on the job
                    for r in recs:
                        _save(store, r.name, state="pending", error=f"site '{site_name}': {exc}")
                    continue
                results.extend(sync_records(site, backends.backend_for(site), recs, store, locked=True))
    return results


@contextlib.contextmanager
def _import_lock(timeout: float = LOCK_TIMEOUT) -> Iterator[bool]:
    # one importer at a time per state dir: two CLIs seeing the same job end would race
    import fcntl

    d = embedded_dir()
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(d / ".import.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + timeout
    got = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        yield got
    finally:
        if got:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _dest(uri: str) -> Dest:
    from hpcjobs.mlflow_import import open_dest

    d = _dests.get(uri)
    if d is None:
        root = embedded_dir() / "artifacts" if uri == embedded_uri() else None
        timeout = float(os.environ.get("HPCJOBS_MLFLOW_TIMEOUT", IMPORT_TIMEOUT))
        d = open_dest(uri, timeout=timeout, artifact_root=root)
        _dests[uri] = d
    return d


def _needs_sync(rec: JobRecord, store: Store, force: bool) -> bool:
    from hpcjobs.status import JobStatus

    try:
        if not JobStatus(rec.status).is_terminal:
            return False
    except ValueError:
        return False
    if rec.extra.get("reused_from"):
        # a reused pipeline step ran in an earlier pipeline, whose run it is: no new run
        return False
    settings = _settings(rec, store)
    if settings.get("mode") == "none":
        return False
    return force or _mlflow_extra(rec).get("state") != "imported"


def sync_records(
    site: Site, backend: Backend, records: Sequence[JobRecord], store: Store, *, force: bool = False, locked: bool = False
) -> list[dict[str, Any]]:
    """Complete the MLflow runs of terminal *records* (all of *site*); one result per record."""
    from hpcjobs.mlflow_job import MlflowUnreachable

    todo = [r for r in records if _needs_sync(r, store, force)]
    if not todo:
        return []
    results: list[dict[str, Any]] = []
    # trials and steps first: their parents link to them
    todo.sort(key=lambda r: (r.type in ("sweep", "pipeline"), r.created))
    with _import_lock() if not locked else contextlib.nullcontext(True) as got:
        if not got:
            # their state stays as it is: a background importer still finds the queued ones
            _notice(f"MLflow: another hpcjobs process is importing runs; {len(todo)} run(s) left for it or `hpcjobs job sync`")
            return [{"name": r.name, "mlflow": "pending", "error": "another hpcjobs process is importing runs"} for r in todo]
        failed_uris: dict[str, str] = {}
        for rec in todo:
            rec = store.get(rec.name)
            if not _needs_sync(rec, store, force):
                continue
            settings = _settings(rec, store, site)
            uri = str(settings.get("uri") or tracking_uri(site))
            if uri in failed_uris:
                _save(store, rec.name, state="pending", error=failed_uris[uri])
                results.append({"name": rec.name, "mlflow": "pending", "error": failed_uris[uri]})
                continue
            try:
                results.append(_sync_one(site, backend, rec, store, uri, settings))
            except MlflowUnreachable as exc:
                failed_uris[uri] = str(exc)
                _save(store, rec.name, state="pending", error=str(exc))
                results.append({"name": rec.name, "mlflow": "pending", "error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - one bad job must not stop the others
                msg = f"{type(exc).__name__}: {exc}"
                _save(store, rec.name, state="pending", error=msg)
                results.append({"name": rec.name, "mlflow": "pending", "error": msg})
    pending = [r for r in results if r.get("mlflow") == "pending"]
    if pending:
        if failed_uris:
            uri, why = next(iter(failed_uris.items()))
            _notice(f"MLflow: tracking server {uri} is unreachable ({why}); {len(pending)} run(s) kept for `hpcjobs job sync`")
        else:
            _notice(f"MLflow: {len(pending)} run(s) not recorded ({pending[0].get('error')}); retry with `hpcjobs job sync`")
    return results


def _task_dir(rec: JobRecord) -> str | None:
    value = rec.extra.get("task_dir") or rec.job_dir
    return str(value) if value else None


def _fetch(backend: Backend, rec: JobRecord, dest: Path) -> list[str]:
    """Bring the task's MLflow state, file store, outputs and logs into *dest* in one tar stream."""
    import io

    from hpcjobs.staging import tar_command
    from hpcjobs.tarsafe import safe_extract

    task = _task_dir(rec)
    if not task:
        return []
    pairs = [(f"{task}/.mlflow", "state")]
    if rec.type not in ("sweep", "pipeline"):
        pairs += [(f"{task}/mlruns", "mlruns"), (f"{task}/wd/outputs", "outputs"), (f"{task}/wd/logs", "logs")]
    if rec.job_dir and (not rec.parent or rec.type in ("sweep", "pipeline") or "step" in rec.extra):
        pairs.append((f"{rec.job_dir}/user_logs", "user_logs"))
    elif rec.job_dir and "trial_index" in rec.extra:
        # a trial's log is one file of its sweep's user_logs: its run gets it as std_log.txt, as on Azure
        pairs.append((f"{rec.job_dir}/user_logs/std_log_{int(rec.extra['trial_index'])}.txt", "user_logs/std_log.txt"))
    res = backend.transport.run(tar_command(pairs))
    if not res.stdout:
        return []
    report = safe_extract(io.BytesIO(res.stdout), dest)
    return list(report.warnings)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _run_params(rec: JobRecord, settings: dict[str, Any]) -> dict[str, str]:
    """Literal inputs (recorded at submission) and, for a sweep trial, its sampled values."""
    own = _mlflow_extra(rec)
    params = {str(k): str(v) for k, v in ((own if rec.parent else settings).get("params") or {}).items()}
    sampled = rec.extra.get("params")
    if rec.parent and isinstance(sampled, dict):
        from hpcjobs.sweep.sampling import format_value

        # the same text the trial saw in $AZUREML_SWEEP_<name>
        params.update({str(k): format_value(v) for k, v in sampled.items()})
    return params


def _parent_tags(rec: JobRecord, children: Sequence[JobRecord], store: Store, uri: str) -> dict[str, str]:
    """Tags of a sweep's run (its best trial's run) or a pipeline's run (the runs of reused steps)."""
    tags: dict[str, str] = {}
    if rec.type == "sweep":
        from hpcjobs import sweep_status

        try:
            best = sweep_status.best_for_import(rec, list(children))
        except Exception as exc:  # noqa: BLE001 - the run is worth recording without it
            log.debug("MLflow: best trial of %s unknown: %s", rec.name, exc)
            best = None
        if best is not None:
            child, value = best
            child_run = _mlflow_extra(child).get("run_id")
            if child_run and _mlflow_extra(child).get("uri", uri) == uri:
                tags.update(sweep_status.best_child_tags(str(child_run), child.name, value))
    elif rec.type == "pipeline":
        for child in children:
            original = child.extra.get("reused_from")
            if not original:
                continue
            with contextlib.suppress(Exception):
                theirs = _mlflow_extra(store.get(str(original)))
                if theirs.get("run_id") and theirs.get("uri", uri) == uri:
                    tags[f"hpcjobs.reused.{child.extra.get('step', child.name)}"] = str(theirs["run_id"])
    return tags


def _ms(ts: float | None) -> int | None:
    return int(ts * 1000) if ts else None


def _sync_one(site: Site, backend: Backend, rec: JobRecord, store: Store, uri: str, settings: dict[str, Any]) -> dict[str, Any]:
    import tempfile

    from hpcjobs.mlflow_import import RunRef, RunSpec, read_file_store, sync_run

    dest = _dest(uri)
    parent_run = None
    if rec.parent:
        with contextlib.suppress(Exception):
            parent_run = _mlflow_extra(store.get(rec.parent)).get("run_id")
    with tempfile.TemporaryDirectory(prefix="hpcjobs-mlflow-") as tmp:
        base = Path(tmp)
        refused = _fetch(backend, rec, base)
        state = _read_json(base / "state" / "state.json")
        claim = _read_json(base / "state" / "run_id")
        own = _mlflow_extra(rec)
        known = None
        if state.get("mode") == "direct" and state.get("uri") == uri and state.get("run_id"):
            known = str(state["run_id"])
        elif claim.get("run_id"):
            known = str(claim["run_id"])
        elif own.get("run_id"):
            known = str(own["run_id"])
        sources = read_file_store(base / "mlruns") if (base / "mlruns").is_dir() else []
        tags = record_tags(rec)
        if parent_run:
            tags["mlflow.parentRunId"] = str(parent_run)
        children: Sequence[JobRecord] = store.children(rec.name) if rec.type in ("sweep", "pipeline") else []
        tags.update(_parent_tags(rec, children, store, uri))
        spec = RunSpec(
            token=rec.token,
            run_name=rec.name,
            experiment_name=rec.experiment_name or "Default",
            status=RUN_STATUS.get(rec.status, "FAILED"),
            start_time=_ms(rec.started) or _ms(rec.submitted) or _ms(rec.created) or int(time.time() * 1000),
            end_time=_ms(rec.ended) or int(time.time() * 1000),
            params=_run_params(rec, settings),
            tags=tags,
            known_run_id=known,
            sources=sources,
            primary_source=str(state.get("local_run_id") or (sources[0].run_id if sources else "")) or None,
            folders={name: base / name for name in ("outputs", "logs", "user_logs") if (base / name).is_dir()},
        )

        def remember(run: RunRef) -> None:
            _save(store, rec.name, uri=uri, run_id=run.run_id, experiment_id=run.experiment_id, state="importing")

        report = sync_run(dest, spec, on_run=remember)
    for child in children:
        child_run = _mlflow_extra(child).get("run_id")
        if child_run and not child.extra.get("reused_from") and _mlflow_extra(child).get("uri", uri) == uri:
            dest.log_batch(str(child_run), [], {}, {"mlflow.parentRunId": report.run_id})
    if "best_child_run_id" in spec.tags:
        fresh = store.get(rec.name)
        store.update(rec.name, extra={**fresh.extra, "best_child_tagged": True})
    skipped = [*refused, *report.skipped][:50]
    _save(
        store,
        rec.name,
        uri=uri,
        run_id=report.run_id,
        experiment_id=report.experiment_id,
        state="imported",
        imported_at=time.time(),
        error=None,
        skipped=skipped or None,
    )
    return {
        "name": rec.name,
        "mlflow": "imported",
        "run_id": report.run_id,
        "experiment_id": report.experiment_id,
        "created": report.created,
        "metrics": report.metrics,
        "metrics_skipped": report.metrics_skipped,
        "params": report.params,
        "artifacts": report.artifacts,
        "skipped": skipped,
    }


# ------------------------------------------------------------------------------- job sync
def sync(names: Sequence[str] = (), *, all_jobs: bool = False, force: bool = False) -> list[dict[str, Any]]:
    """``hpcjobs job sync``: bring states up to date, then complete every pending MLflow run.

    With *names*, those jobs (and their trials or steps); with *all_jobs*, every job
    whose run is not recorded yet.  *force* imports again even what was recorded
    (idempotent: nothing is duplicated).
    """
    from hpcjobs import api, backends
    from hpcjobs.store import Store

    store = Store()
    if names:
        recs: list[JobRecord] = []
        for n in names:
            r = store.get(n)
            recs.append(r)
            recs.extend(store.children(n))
    elif all_jobs:
        recs = store.list(limit=None)
    else:
        from hpcjobs.errors import UserError

        raise UserError("name a job (-n NAME) or use --all")
    global _syncing
    _syncing = True
    try:
        api.refresh(recs, store)
    finally:
        _syncing = False
    recs = [store.get(r.name) for r in recs]
    results: list[dict[str, Any]] = []
    by_site: dict[str, list[JobRecord]] = {}
    for r in recs:
        if _needs_sync(r, store, force):
            by_site.setdefault(r.site, []).append(r)
    for site_name, site_recs in by_site.items():
        site = _site(site_name)
        results.extend(sync_records(site, backends.backend_for(site), site_recs, store, force=force))
    done = {r["name"] for r in results}
    for r in recs:
        if r.name in done:
            continue
        # re-read: a background importer may have recorded it while this waited for the lock
        r = store.get(r.name)
        own = _mlflow_extra(r)
        state = own.get("state") or (
            "disabled"
            if _settings(r, store).get("mode") == "none"
            else "reused"
            if r.extra.get("reused_from")
            else "waiting for the job to end"
        )
        results.append({"name": r.name, "status": r.status, "mlflow": state, "run_id": own.get("run_id")})
    for res in results:
        res.setdefault("status", store.get(res["name"]).status)
    return results


# ------------------------------------------------------------------------------- --web
def run_ui_url(name: str) -> str | None:
    """The MLflow UI address of job *name*'s run, if known (None for SQLite and file stores).

    Before the run exists (a queued job on a server the CLI could not reach) this is
    the experiment's address.
    """
    from hpcjobs.mlflow_job import MlflowApiError, MlflowUnreachable, RestClient
    from hpcjobs.store import Store

    store = Store()
    rec = store.get(name)
    settings = _settings(rec, store)
    uri = str(settings.get("uri") or "")
    if not is_http(uri) or settings.get("mode") == "none":
        return None
    own = _mlflow_extra(rec)
    run_id, exp_id = own.get("run_id"), own.get("experiment_id")
    if not run_id:
        client = RestClient(uri, timeout=SUBMIT_TIMEOUT)
        try:
            exp = client.experiment_by_name(rec.experiment_name or "Default")
            if exp is None:
                return None
            exp_id = str(exp["experiment_id"])
            for tag, value in (("hpcjobs.token", rec.token), ("hpcjobs.run_key", f"{rec.token}/main")):
                runs = client.search_runs([exp_id], f"tags.`{tag}` = '{value}'", max_results=1)
                if runs:
                    run_id = runs[0]["info"]["run_id"]
                    break
        except (MlflowUnreachable, MlflowApiError):
            return None
    if not exp_id:
        return None
    if not run_id:
        return f"{uri}/#/experiments/{exp_id}"
    return f"{uri}/#/experiments/{exp_id}/runs/{run_id}"


def run_info(name: str) -> dict[str, Any]:
    """The MLflow side of job *name*: tracking URI, run and experiment ids, import state, UI address."""
    from hpcjobs.store import Store

    store = Store()
    rec = store.get(name)
    settings = _settings(rec, store)
    own = _mlflow_extra(rec)
    return {
        "name": rec.name,
        "status": rec.status,
        "tracking_uri": settings.get("uri"),
        "mode": settings.get("mode"),
        "experiment_name": rec.experiment_name,
        "experiment_id": own.get("experiment_id"),
        "run_id": own.get("run_id"),
        "state": own.get("state"),
        "error": own.get("error"),
        "skipped": own.get("skipped", []),
        "ui_url": run_ui_url(name),
    }


# ------------------------------------------------------------------------------- model registry
def register_model(model_name: str, job: str, path: str = "outputs/model") -> dict[str, Any]:
    """Register the model at *path* of job *job*'s run artifacts as a new version of *model_name*."""
    from hpcjobs.errors import RuntimeFailure, UserError
    from hpcjobs.mlflow_import import import_mlflow, safe_artifact_path
    from hpcjobs.store import Store

    path = path.strip().strip("/")
    if not safe_artifact_path(path):
        raise UserError(f"--path {path!r} is not a path inside the job's artifacts", hint="for example outputs/model")
    store = Store()
    rec = store.get(job)
    own = _mlflow_extra(rec)
    if own.get("state") != "imported":
        sync([job])
        rec = store.get(job)
        own = _mlflow_extra(rec)
    if own.get("state") != "imported" or not own.get("run_id"):
        from hpcjobs.status import JobStatus

        if not JobStatus(rec.status).is_terminal:
            raise UserError(
                f"job '{job}' has not finished yet (status {rec.status})", hint=f"wait for it: hpcjobs job stream -n {job}"
            )
        raise RuntimeFailure(
            f"the MLflow run of job '{job}' is not recorded yet: {own.get('error') or 'tracking is off for it'}",
            hint=f"retry with hpcjobs job sync -n {job}",
        )
    uri = str(_settings(rec, store).get("uri"))
    mlflow = import_mlflow()
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run_id = str(own["run_id"])
    listed = client.list_artifacts(run_id, path)
    if not listed:
        top = sorted(a.path for a in client.list_artifacts(run_id))
        raise UserError(
            f"the run of job '{job}' has no artifacts under '{path}'",
            hint="its artifacts: "
            + (", ".join(top) if top else "none")
            + "; save the model into ./outputs/model (mlflow.sklearn.save_model)",
        )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        mv = mlflow.register_model(f"runs:/{run_id}/{path}", model_name)
    except mlflow.exceptions.MlflowException as exc:
        raise RuntimeFailure(f"MLflow refused to register the model: {exc.message}") from None
    return {
        "name": mv.name,
        "version": str(mv.version),
        "model_uri": f"models:/{mv.name}/{mv.version}",
        "source": mv.source,
        "run_id": run_id,
        "job": job,
        "tracking_uri": uri,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hpcjobs.tracking import-queued``: the background importer."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["import-queued"]:
        sys.stderr.write("usage: python -m hpcjobs.tracking import-queued\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for res in import_queued():
        log.info("%s: %s %s", res.get("name"), res.get("mlflow"), res.get("error") or res.get("run_id") or "")
    return 0


if __name__ == "__main__":
    # run the one hpcjobs.tracking every other module imports, not this __main__ copy
    from hpcjobs import tracking as _tracking

    sys.exit(_tracking.main())
