"""The hpcjobs Python API.  The CLI calls nothing else.

Typical use::

    from hpcjobs import api
    job = api.create_job("examples/hello-world.yml", sets=["inputs.n=3"])
    status = api.stream_job(job["name"], sys.stdout.buffer)
    api.download_job(job["name"], all_outputs=True, download_path="./got")

Every function raises :class:`hpcjobs.errors.HpcjobsError` subclasses on failure:
``UserError`` (bad input, exit 2) or ``RuntimeFailure`` (exit 1).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hpcjobs import backends
from hpcjobs.errors import NotFoundError, SubmissionUncertain, UserError, ValidationError
from hpcjobs.names import generate_job_name, new_token
from hpcjobs.status import JobStatus
from hpcjobs.store import JobRecord, Store

if TYPE_CHECKING:
    from hpcjobs.plan import Plan
    from hpcjobs.site import Site
    from hpcjobs.spec.load import Loaded


# The job file and planning modules (pydantic models, Jinja, samplers) are imported on
# first use: `job list` and `job show` must not pay for them (see benchmarks/).
def get_site(name: str | None) -> Site:
    from hpcjobs.site import get_site as _get_site

    return _get_site(name)


def local_site() -> Site:
    from hpcjobs.site import local_site as _local_site

    return _local_site()


def load_job(path: str | Path, sets: list[str] | None = None) -> Loaded:
    from hpcjobs.spec.load import load_job as _load_job

    return _load_job(path, sets)


def parse_set(item: str) -> tuple[list[str | int], Any]:
    from hpcjobs.spec.load import parse_set as _parse_set

    return _parse_set(item)


def plan_job(loaded: Loaded, site: Site, target: Any, *, name: str, token: str) -> Plan:
    from hpcjobs.plan import plan_job as _plan_job
    from hpcjobs.spec.check import locate_plan_error

    try:
        return _plan_job(loaded, site, target, name=name, token=token)
    except ValidationError as exc:
        raise locate_plan_error(loaded, exc) from None


class _LazyModels:
    """``m.SweepJob`` etc. without importing the models at module import."""

    def __getattr__(self, name: str) -> Any:
        from hpcjobs.spec import models

        return getattr(models, name)


m = _LazyModels()

MUTABLE_FIELDS = ("display_name", "description", "tags", "properties")

#: exit codes of ``job stream`` / ``job create --stream`` by end state
EXIT_CODES = {
    JobStatus.COMPLETED: 0,
    JobStatus.FAILED: 1,
    JobStatus.CANCELED: 3,
    JobStatus.NOT_RESPONDING: 4,
    JobStatus.UNKNOWN: 4,
}


@dataclass
class Validation:
    """What ``job validate`` found."""

    file: str
    type: str
    name: str | None
    warnings: list[str] = field(default_factory=list)
    site: str | None = None
    test_only: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "type": self.type,
            "name": self.name,
            "valid": True,
            "warnings": self.warnings,
            "site": self.site,
            "test_only": self.test_only,
        }


def _store() -> Store:
    return Store()


def _site_for(loaded: Loaded, site: str | None) -> Site:
    compute = getattr(loaded.job, "compute", None)
    if site is None and isinstance(compute, str) and compute.removeprefix("azureml:") == "local":
        return local_site()
    s = get_site(site)
    return s


def validate_job(file: str | Path, sets: Sequence[str] = (), site: str | None = None, *, test_only: bool = False) -> Validation:
    """Load and check a job file (and render it for *site*); with *test_only*, ask Slurm too."""
    loaded = load_job(file, list(sets))
    result = Validation(file=str(file), type=loaded.type, name=loaded.job.name, warnings=list(loaded.warnings))
    s = _site_for(loaded, site)
    result.site = s.name
    backend = backends.backend_for(s)
    target = backend.target(offline=not test_only)
    s = _prepare_assets(loaded, s, target, offline=not test_only)
    plan = plan_job(loaded, s, target, name=loaded.job.name or "validate_job", token="0" * 16)
    result.warnings = list(dict.fromkeys(plan.warnings))
    if test_only and not s.is_local:
        from hpcjobs.backends.slurm import SlurmBackend

        assert isinstance(backend, SlurmBackend)
        result.test_only = backend.test_only(plan)
    return result


def _prepare_assets(loaded: Loaded, site: Site, target: Any, *, offline: bool = False) -> Site:
    """Registered data assets and environments the job names -> ``target.assets`` (:mod:`hpcjobs.assets`)."""
    from hpcjobs.assets import prepare

    return prepare(loaded, site, target, offline=offline)


def _has_sweeps(loaded: Loaded) -> bool:
    """A sweep job, or a pipeline with a sweep step: planning needs the cluster's array limits."""
    if isinstance(loaded.job, m.PipelineJob):
        return any(isinstance(n, m.SweepNode) for n in loaded.job.jobs.values())
    return isinstance(loaded.job, m.SweepJob)


def _new_name(store: Store, name: str | None, loaded: Loaded) -> str:
    if name is not None:
        import re

        from hpcjobs.spec.models import NAME_RE

        if not re.match(NAME_RE, name):
            raise ValidationError(f"invalid job name {name!r}", hint="names use letters, digits, _ and - (at most 255)")
        if store.exists(name):
            raise UserError(f"a job named '{name}' already exists", hint="job names are unique; choose another --name")
        return name
    if loaded.job.name:
        if store.exists(loaded.job.name):
            raise UserError(
                f"a job named '{loaded.job.name}' already exists (name: in {loaded.path})",
                hint="job names are unique: remove name: from the file, or pass --name NEW",
            )
        return loaded.job.name
    for _ in range(20):
        candidate = generate_job_name()
        if not store.exists(candidate):
            return candidate
    raise UserError("could not generate a unique job name")


def plan(file: str | Path, sets: Sequence[str] = (), *, name: str | None = None, site: str | None = None) -> Plan:
    """The plan ``job create --dry-run`` prints: nothing is written or submitted."""
    loaded = load_job(file, list(sets))
    s = _site_for(loaded, site)
    backend = backends.backend_for(s)
    target = backend.target(offline=True)
    code = getattr(loaded.job, "code", None) or (
        loaded.job.trial.code if isinstance(loaded.job, m.SweepJob) and isinstance(loaded.job.trial, m.TrialSpec) else None
    )
    if code:
        from hpcjobs.snapshot import take_snapshot

        target.code_digest = take_snapshot(code).digest
    s = _prepare_assets(loaded, s, target, offline=True)
    if isinstance(loaded.job, m.PipelineJob):
        from hpcjobs.plan_pipeline import prepare_target

        # code digests of every step, and which steps a completed run would let us reuse
        prepare_target(loaded, s, target, _store())
    if _has_sweeps(loaded):
        from hpcjobs.sweep.limits import with_cluster_limits

        # MaxArraySize etc. from the cache only: a dry run asks the cluster nothing
        s = with_cluster_limits(s, None)
    from hpcjobs.uploads import plan_uploads

    uploads = plan_uploads(loaded, s, target)
    job_name = name or loaded.job.name or "dry_run_job"
    p = plan_job(loaded, s, target, name=job_name, token="0" * 16)
    p.uploads.update(uploads)
    return p


def create_job(
    file: str | Path,
    sets: Sequence[str] = (),
    *,
    name: str | None = None,
    site: str | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Submit a job file; return its view (as ``job show`` prints it)."""
    loaded = load_job(file, list(sets))
    s = _site_for(loaded, site)
    store = _store()
    job_name = _new_name(store, name, loaded)
    backend = backends.backend_for(s)
    target = backend.target()
    if _has_sweeps(loaded):
        from hpcjobs.sweep.limits import with_cluster_limits

        # chunking and the submit-limit check need MaxArraySize/MaxSubmitJobs (cached per site)
        s = with_cluster_limits(s, backend)
    code = getattr(loaded.job, "code", None) or (
        loaded.job.trial.code if isinstance(loaded.job, m.SweepJob) and isinstance(loaded.job.trial, m.TrialSpec) else None
    )
    git: dict[str, str] = {}
    if code:
        from hpcjobs.snapshot import git_info, take_snapshot

        snap = take_snapshot(code)
        target.code_digest = snap.digest
        for w in snap.warnings():
            loaded.warnings.append(w)
        git = git_info(code)
    # registered data assets and environments (one remote command each kind), before the pipeline's reuse keys
    s = _prepare_assets(loaded, s, target)
    if isinstance(loaded.job, m.PipelineJob):
        from hpcjobs.plan_pipeline import prepare_target

        prepare_target(loaded, s, target, store, refresh=True)
    from hpcjobs.uploads import plan_uploads

    # SSH sites: local data inputs travel in the submission's tar, content-addressed
    uploads = plan_uploads(loaded, s, target)
    token = new_token()
    p = plan_job(loaded, s, target, name=job_name, token=token)
    p.uploads.update(uploads)
    for w in dict.fromkeys(p.warnings):
        if on_warning:
            on_warning(w)
    now = time.time()
    props = dict(p.meta.get("properties") or {})
    props.update(git)
    rec = JobRecord(
        name=job_name,
        type=p.kind,
        site=s.name,
        status=JobStatus.NOT_STARTED.value,
        token=token,
        compute=p.compute,
        display_name=p.meta.get("display_name") or job_name,
        experiment_name=p.meta.get("experiment_name"),
        description=p.meta.get("description"),
        tags=p.meta.get("tags") or {},
        properties=props,
        job_dir=p.job_dir,
        created=now,
        extra={
            "file": str(Path(file).resolve()),
            "outputs": p.outputs,
            "inputs": p.inputs,
            "code": p.code_dir,
            "scripts": {sc.key: sc.script_path for sc in p.scripts},
            **({"sweep": p.meta["sweep"]} if "sweep" in p.meta else {}),
            **({"steps": p.meta["steps"]} if "steps" in p.meta else {}),
            **({"pipeline": p.meta["pipeline"]} if "pipeline" in p.meta else {}),
        },
    )
    children = [
        JobRecord(
            name=c["name"],
            type=c.get("type", "command"),
            site=s.name,
            status=c.get("status", JobStatus.NOT_STARTED.value),
            token=f"{token}.{c['key']}",
            compute=c.get("compute", p.compute),
            display_name=c.get("display_name") or c["name"],
            experiment_name=rec.experiment_name,
            job_dir=c.get("job_dir"),
            # a pipeline's sweep step is the parent of its trials
            parent=c.get("parent", job_name),
            created=now,
            started=c.get("started"),
            ended=c.get("ended"),
            exit_code=c.get("exit_code"),
            tags=c.get("tags") or {},
            extra=c.get("extra") or {},
        )
        for c in p.children
    ]
    taken = [c.name for c in children if store.exists(c.name)]
    if taken:
        raise UserError(
            f"job '{taken[0]}' already exists, and a step of this job would get that name", hint="choose another --name"
        )
    store.add(rec)
    store.add_many(children)
    try:
        ids = backend.submit(p, [rec, *children])
    except SubmissionUncertain as exc:
        # the connection died while sbatch may have run: keep the job (Unknown) so it is
        # never missing from the store; a refresh adopts it by its token if Slurm has it
        known_ids = [i for k in (sc.key for sc in p.scripts) for i in ([exc.known[k]] if k in exc.known else [])]
        store.update(
            job_name,
            status=JobStatus.UNKNOWN.value,
            slurm_ids=known_ids,
            reason="submission not confirmed (connection lost); looked up by its token on refresh",
            extra={**rec.extra, "submit_uncertain": True},
        )
        raise
    except BaseException:
        # nothing was submitted (the backend raises only before or instead of sbatch)
        store.delete(job_name)
        raise
    for notice in getattr(backend, "notices", []):
        if on_warning:
            on_warning(notice)
    all_ids = [i for key in ids for i in ids[key]]
    store.update(job_name, status=JobStatus.QUEUED.value, slurm_ids=all_ids, submitted=time.time())
    child_updates = {}
    for c in p.children:
        if c.get("status") == JobStatus.COMPLETED.value:
            # a reused pipeline step: nothing was submitted for it
            continue
        key_ids = ids.get(c.get("script_key", c["key"]), [])
        sid = list(key_ids)
        if "array_task" in c and key_ids and not key_ids[0].startswith("local:"):
            sid = [f"{key_ids[0]}_{c['array_task']}"]
        for more in c.get("script_keys", [])[1:]:
            # a pipeline's sweep step: its finalize job (its state), then its arrays (cancel reaches them)
            sid.extend(i for i in ids.get(more, []) if i not in sid)
        child_updates[c["name"]] = {"status": JobStatus.QUEUED.value, "slurm_ids": sid, "submitted": time.time()}
    store.update_many(child_updates)
    if p.kind == "pipeline":
        from hpcjobs import reuse

        reuse.record(store, s.name, p.children)
    from hpcjobs import tracking

    tracking.on_submitted(s, p, [store.get(job_name), *store.children(job_name)], store)
    return job_view(store.get(job_name))


# --------------------------------------------------------------------------- status
def refresh(records: Sequence[JobRecord], store: Store | None = None) -> list[JobRecord]:
    """Bring *records* up to date: one backend refresh per site, whatever their number."""
    store = store or _store()
    active = [r for r in records if not JobStatus(r.status).is_terminal]
    if not active:
        return list(records)
    by_site: dict[str, list[JobRecord]] = {}
    for r in active:
        by_site.setdefault(r.site, []).append(r)
    all_updates: dict[str, dict[str, Any]] = {}
    for site_name, recs in by_site.items():
        try:
            s = get_site(site_name) if site_name != "local" else local_site()
        except NotFoundError:
            continue
        backend = backends.backend_for(s)
        from hpcjobs.sweep_step import is_sweep_step, record_best, step_status

        # parents (sweeps, pipelines) take their state from their children; a pipeline's
        # sweep step is a parent too (of its trials), found below its pipeline
        kids: list[JobRecord] = []
        parents = [r for r in recs if r.type in ("sweep", "pipeline")]
        plain = [r for r in recs if r.type not in ("sweep", "pipeline")]
        seen = {r.name for r in recs}
        for p in parents:  # grows while it runs
            for c in store.children(p.name):
                if c.name in seen or JobStatus(c.status).is_terminal:
                    continue
                seen.add(c.name)
                (parents if c.type in ("sweep", "pipeline") else kids).append(c)
        # a sweep step's own job (the finalize job) is asked about like any job
        own = [p for p in parents if is_sweep_step(p)]
        updates = backend.refresh(plain + kids + own)
        own_names = {p.name for p in own}
        all_updates.update({n: u for n, u in updates.items() if n not in own_names})
        # sweep steps first: their pipeline's state comes from theirs
        for p in sorted(parents, key=lambda r: r.type == "pipeline"):
            children = store.children(p.name)
            for c in children:
                if c.name in all_updates:
                    for k, v in all_updates[c.name].items():
                        setattr(c, k, v)
            if p.type == "pipeline" and not s.is_local:
                from hpcjobs.plan_pipeline import stop_after_failure

                # continue_on_step_failure: false, for a step that died without its exit hook
                stop_after_failure(p, children, backend)
            if is_sweep_step(p):
                agg = step_status(p, updates.get(p.name, {}), children)
                record_best(p, agg, backend.transport.read_file)
            else:
                agg = aggregate_status(p, children)
            if agg:
                all_updates[p.name] = agg
    store.update_many({k: dict(v) for k, v in all_updates.items()})
    finished = [n for n, u in all_updates.items() if JobStatus(u.get("status", JobStatus.UNKNOWN.value)).is_terminal]
    if finished:
        from hpcjobs import tracking

        # each finished job is read once and handed to its own site's tracking
        done_by_site: dict[str, list[JobRecord]] = {}
        for n in finished:
            done = store.get(n)
            done_by_site.setdefault(done.site, []).append(done)
        for site_name, recs_done in done_by_site.items():
            s2 = get_site(site_name) if site_name != "local" else local_site()
            tracking.on_terminal(s2, backends.backend_for(s2), recs_done, store)
    out = []
    for r in records:
        if r.name in all_updates:
            for k, v in all_updates[r.name].items():
                setattr(r, k, v)
        out.append(r)
    return out


def aggregate_status(parent: JobRecord, children: list[JobRecord]) -> dict[str, Any]:
    """A sweep's or pipeline's state from its trials' or steps' states."""
    if not children:
        return {}
    states = [JobStatus(c.status) for c in children]
    started = [c.started for c in children if c.started]
    ended = [c.ended for c in children if c.ended]
    out: dict[str, Any] = {}
    if started:
        out["started"] = min(started)
    if all(s.is_terminal for s in states):
        out["ended"] = max(ended) if ended else time.time()
        if parent.extra.get("cancel_requested") or (
            JobStatus.CANCELED in states
            and JobStatus.FAILED not in states
            and parent.type == "pipeline"
            and all(s != JobStatus.COMPLETED for s in states)
        ):
            out["status"] = JobStatus.CANCELED.value
        elif parent.type == "sweep":
            ok = sum(1 for s in states if s == JobStatus.COMPLETED)
            out["status"] = (JobStatus.COMPLETED if ok > 0 or parent.extra.get("early_terminated") else JobStatus.FAILED).value
            if ok == 0:
                out["reason"] = "no trial completed"
        else:
            bad = [c.extra.get("step", c.name) for c in children if JobStatus(c.status) in (JobStatus.FAILED, JobStatus.CANCELED)]
            out["status"] = (JobStatus.FAILED if bad else JobStatus.COMPLETED).value
            if bad:
                out["reason"] = "steps not completed: " + ", ".join(bad)
    elif any(s == JobStatus.RUNNING for s in states):
        out["status"] = JobStatus.RUNNING.value
    elif any(s in (JobStatus.QUEUED, JobStatus.STARTING) for s in states):
        out["status"] = JobStatus.RUNNING.value if any(s.is_terminal for s in states) else JobStatus.QUEUED.value
    return {k: v for k, v in out.items() if getattr(parent, k) != v}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, tz=_dt.timezone.utc).isoformat(timespec="seconds")


def job_view(
    rec: JobRecord, *, children: list[JobRecord] | None = None, trials: dict[str, list[JobRecord]] | None = None
) -> dict[str, Any]:
    """The JSON shape ``job show`` prints (Azure-like keys, plus a ``slurm`` section).

    *trials*: a pipeline's sweep steps' trials by step job name (counted in ``steps``).
    """
    elapsed = None
    if rec.started:
        elapsed = round((rec.ended or time.time()) - rec.started, 1)
    view: dict[str, Any] = {
        "name": rec.name,
        "display_name": rec.display_name,
        "type": rec.type,
        "status": rec.status,
        "experiment_name": rec.experiment_name,
        "description": rec.description,
        "tags": rec.tags,
        "properties": rec.properties,
        "compute": rec.compute,
        "site": rec.site,
        "parent_job_name": rec.parent,
        "creation_context": {"created_at": _iso(rec.created)},
        "start_time": _iso(rec.started),
        "end_time": _iso(rec.ended),
        "elapsed_seconds": elapsed,
        "exit_code": rec.exit_code,
        "reason": rec.reason,
        "scheduler": {"job_ids": rec.slurm_ids, "nodes": rec.nodes, "state": rec.extra.get("slurm_state")},
        "paths": {
            "job_dir": rec.job_dir,
            "log": f"{rec.job_dir}/user_logs/std_log.txt" if rec.job_dir and rec.type == "command" else None,
            "outputs": f"{rec.job_dir}/wd/outputs" if rec.job_dir and rec.type == "command" else None,
            "named_outputs": rec.extra.get("outputs", {}),
        },
    }
    if children is not None and rec.type == "sweep":
        from hpcjobs.sweep_status import sweep_view

        view.update(sweep_view(rec, children))
    if children is not None and rec.type == "pipeline":
        from hpcjobs.dag import steps_view

        view["steps"] = steps_view(rec, children, trials=trials)
    return view


def show_job(name: str, *, refresh_state: bool = True) -> dict[str, Any]:
    """One job's view, brought up to date first."""
    store = _store()
    rec = store.get(name)
    children = store.children(name) if rec.type in ("sweep", "pipeline") else None
    if refresh_state:
        refresh([rec, *(children or [])], store)
        rec = store.get(name)
        children = store.children(name) if children is not None else None
    # a pipeline's sweep steps: their trials, counted in the steps' rows
    trials = {c.name: store.children(c.name) for c in children or [] if rec.type == "pipeline" and c.type == "sweep"}
    return job_view(rec, children=children, trials=trials)


def list_jobs(
    *,
    status: Sequence[str] = (),
    experiment: str | None = None,
    tags: Sequence[str] = (),
    parent: str | None = None,
    site: str | None = None,
    max_results: int | None = 50,
    all_jobs: bool = False,
    refresh_state: bool = True,
) -> list[dict[str, Any]]:
    """Jobs, newest first, filtered like ``az ml job list``."""
    store = _store()
    wanted = [_status_name(s) for s in status]
    tag_filter: dict[str, str | None] = {}
    for t in tags:
        k, sep, v = t.partition("=")
        tag_filter[k] = v if sep else None
    recs = store.list(
        status=None,
        site=site,
        experiment=experiment,
        tags=tag_filter or None,
        parent=parent,
        top_level=parent is None and not all_jobs,
        limit=None if wanted else max_results,
    )
    if refresh_state:
        active = [r for r in recs if not JobStatus(r.status).is_terminal]
        if active:
            refresh(active, store)
    if wanted:
        recs = [r for r in recs if r.status in wanted][: max_results or None]
    return [job_view(r) for r in recs]


def _status_name(s: str) -> str:
    for st in JobStatus:
        if st.value.lower() == s.lower() or st.name.lower() == s.lower():
            return st.value
    raise UserError(f"unknown status '{s}'", hint="one of: " + ", ".join(x.value for x in JobStatus))


def stream_job(
    name: str,
    out: IO[bytes],
    *,
    poll: float = 0.5,
    max_poll: float = 10.0,
    timeout: float | None = None,
    task: int | None = None,
) -> JobStatus:
    """Follow the job's log until it ends; return its end state."""
    store = _store()
    rec = store.get(name)
    s = get_site(rec.site) if rec.site != "local" else local_site()
    backend = backends.backend_for(s)
    offset = 0
    delay = poll
    deadline = time.time() + timeout if timeout else None
    log_rec = rec
    if rec.type == "sweep" and task is None:
        task = 0
    if rec.type == "pipeline":
        from hpcjobs.dag import steps_view

        # the log of the pipeline's last step (in dependency order)
        order = [s["job_name"] for s in steps_view(rec, store.children(name))]
        log_rec = store.get(order[-1]) if order else rec
    while True:
        chunk = backend.read_log(log_rec if rec.type != "sweep" else rec, offset, task if rec.type == "sweep" else None)
        if chunk:
            out.write(chunk)
            out.flush()
            offset += len(chunk)
            delay = poll
        recs = refresh([rec, *store.children(name)] if rec.type in ("sweep", "pipeline") else [rec], store)
        rec = recs[0]
        if JobStatus(rec.status).is_terminal:
            # the last lines can land between the read and the state change
            time.sleep(0.05)
            rest = backend.read_log(log_rec if rec.type != "sweep" else rec, offset, task if rec.type == "sweep" else None)
            if rest:
                out.write(rest)
                out.flush()
            return JobStatus(rec.status)
        if deadline and time.time() > deadline:
            return JobStatus(rec.status)
        time.sleep(delay)
        if not chunk:
            delay = min(max_poll, delay * 1.5)


def cancel_job(name: str) -> dict[str, Any]:
    """Cancel a job (a sweep's trials, a pipeline's steps); return its view."""
    store = _store()
    rec = store.get(name)
    children = store.children(name)
    s = get_site(rec.site) if rec.site != "local" else local_site()
    backend = backends.backend_for(s)
    if JobStatus(rec.status).is_terminal:
        return job_view(rec)
    targets = [rec, *children]
    for c in targets[1:]:  # grows while it runs: a pipeline's sweep steps have trials
        if c.type in ("sweep", "pipeline"):
            targets.extend(store.children(c.name))
    store.update_many({r.name: {"extra": {**r.extra, "cancel_requested": True}} for r in targets})
    for r in targets:
        r.extra["cancel_requested"] = True
    backend.cancel(targets)
    deadline = time.time() + 15
    while True:
        refresh(targets, store)
        rec = store.get(name)
        if JobStatus(rec.status).is_terminal or time.time() > deadline:
            break
        time.sleep(0.3)
    if not JobStatus(rec.status).is_terminal and s.is_local:
        store.update(name, status=JobStatus.CANCELED.value, ended=time.time(), reason="canceled by user")
        rec = store.get(name)
    return job_view(rec)


def update_job(name: str, sets: Sequence[str]) -> dict[str, Any]:
    """Change display_name, description, tags or properties (the only mutable fields, as in Azure)."""
    store = _store()
    rec = store.get(name)
    changes: dict[str, Any] = {}
    tags = dict(rec.tags)
    props = dict(rec.properties)
    for item in sets:
        parts, value = parse_set(item)
        head = parts[0]
        if head not in MUTABLE_FIELDS:
            raise UserError(
                f"--set {item}: '{head}' cannot be changed after a job is created",
                hint="only display_name, description, tags and properties can be updated",
            )
        if head in ("display_name", "description"):
            if len(parts) != 1:
                raise UserError(f"--set {item}: {head} is a string, not a mapping")
            if value is not None and not isinstance(value, str):
                value = str(value)
            changes[head] = value
        else:
            target = tags if head == "tags" else props
            if len(parts) == 1:
                if not isinstance(value, dict):
                    raise UserError(f"--set {item}: {head} must be a mapping", hint=f"use --set {head}.KEY=VALUE")
                target.update({str(k): (None if v is None else str(v)) for k, v in value.items()})
            elif len(parts) == 2:
                target[str(parts[1])] = None if value is None else (value if isinstance(value, str) else str(value))
            else:
                raise UserError(f"--set {item}: {head} values are strings; nested keys are not allowed")
            changes[head] = target
    for k, v in changes.items():
        if isinstance(v, str) and "\x00" in v:
            raise UserError(f"{k} contains a NUL character")
    store.update(name, **changes)
    return job_view(store.get(name))


def download_job(
    name: str,
    *,
    all_outputs: bool = False,
    output_name: str | None = None,
    download_path: str | Path = ".",
) -> dict[str, Any]:
    """Download the job's default outputs (``artifacts/``) and, with *all_outputs*, named outputs."""
    from hpcjobs.staging import download

    store = _store()
    rec = store.get(name)
    s = get_site(rec.site) if rec.site != "local" else local_site()
    backend = backends.backend_for(s)
    return download(backend, store, rec, all_outputs=all_outputs, output_name=output_name, download_path=Path(download_path))


def exit_code_for(status: JobStatus) -> int:
    """The process exit code that reflects a job's end state."""
    return EXIT_CODES.get(status, 4)
