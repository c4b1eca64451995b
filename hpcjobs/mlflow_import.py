"""Copying a job's run into the user's MLflow tracking store, idempotently.

Two halves:

* :func:`read_file_store` reads an MLflow *file store* (the ``mlruns`` folder an
  offline job logged to) without mlflow: params, tags, metrics with their steps and
  timestamps, the run's artifacts and the models MLflow 3 keeps beside the run.
* :class:`Dest` writes into the destination store: :class:`RestDest` talks to an
  ``http(s)`` tracking server with the standard library only (short timeouts, no
  retries, so an unreachable server costs seconds, not minutes);
  :class:`ClientDest` uses ``mlflow.MlflowClient`` for everything else (the embedded
  SQLite store, ``databricks``, ...), importing mlflow only then.

:func:`sync_run` ties them together.  Running it twice changes nothing the second
time: the destination run is found again (run id remembered by the caller, else the
``hpcjobs.token`` tag), params already there are skipped, metric points already
there (same key, step, timestamp and value) are skipped, tags and artifacts are
overwritten with the same values, and the final status is set last.
"""

from __future__ import annotations

import abc
import math
import os
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from hpcjobs.mlflow_job import (
    FILE_STATUS_NAMES,
    MAX_METRICS_PER_BATCH,
    MlflowApiError,
    RestClient,
    is_http,
    proxied_artifact_path,
)

#: MLflow's limits (the server refuses longer values)
MAX_TAG_VALUE = 5000
MAX_PARAM_VALUE = 6000
_KEY_RE = re.compile(r"^[\w\-. /:]{1,250}$")

#: a metric point: (timestamp ms, value, step)
Point = tuple[int, float, int]


def valid_key(key: str) -> bool:
    """Whether MLflow accepts *key* as a param, tag or metric name."""
    if not _KEY_RE.match(key) or key.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in key.split("/"))


def safe_artifact_path(rel: str) -> bool:
    """Whether *rel* may become an artifact path (no traversal, no URL syntax, no controls)."""
    if not rel or rel.startswith("/") or "\\" in rel or "#" in rel or "?" in rel:
        return False
    if any(not ch.isprintable() for ch in rel):
        return False
    return all(part not in ("", ".", "..") for part in rel.split("/"))


# ------------------------------------------------------------------------------- source side
@dataclass
class SourceRun:
    """One run read from a file store."""

    run_id: str
    experiment_id: str
    run_name: str
    status: str
    start_time: int | None
    end_time: int | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[Point]] = field(default_factory=dict)
    artifacts: Path | None = None
    #: (model name, folder) of models MLflow 3 logged for this run (``mlruns/<exp>/models``)
    models: list[tuple[str, Path]] = field(default_factory=list)

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get("mlflow.parentRunId")


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _key_files(base: Path) -> Iterator[tuple[str, Path]]:
    # keys with "/" are nested folders in the file store
    if not base.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            yield p.relative_to(base).as_posix(), p


def _read_metric(path: Path) -> list[Point]:
    points: list[Point] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        # "<timestamp> <value> <step>[ <dataset name> <dataset digest> ...]"
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            ts = int(parts[0])
            value = float(parts[1])
            step = int(parts[2]) if len(parts) > 2 else 0
        except ValueError:
            continue
        points.append((ts, value, step))
    return points


def read_file_store(root: Path) -> list[SourceRun]:
    """Every active run in the file store at *root* (oldest first)."""
    runs: list[SourceRun] = []
    if not root.is_dir():
        return runs
    for exp_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and p.name.isdigit()):
        models: dict[str, list[tuple[str, Path]]] = {}
        models_dir = exp_dir / "models"
        if models_dir.is_dir():
            for mdir in sorted(models_dir.iterdir()):
                meta = _load_yaml(mdir / "meta.yaml")
                src = str(meta.get("source_run_id") or "")
                name = str(meta.get("name") or mdir.name)
                if src and (mdir / "artifacts").is_dir():
                    models.setdefault(src, []).append((name, mdir / "artifacts"))
        for run_dir in sorted(exp_dir.iterdir()):
            if run_dir.is_symlink() or not run_dir.is_dir() or run_dir.name in ("models", "datasets", "traces"):
                continue
            meta = _load_yaml(run_dir / "meta.yaml")
            if not meta or meta.get("lifecycle_stage", "active") != "active":
                continue
            run_id = str(meta.get("run_id") or meta.get("run_uuid") or run_dir.name)
            status_raw = meta.get("status", 1)
            status = FILE_STATUS_NAMES.get(status_raw, str(status_raw)) if isinstance(status_raw, int) else str(status_raw)
            run = SourceRun(
                run_id=run_id,
                experiment_id=exp_dir.name,
                run_name=str(meta.get("run_name") or ""),
                status=status,
                start_time=meta.get("start_time") if isinstance(meta.get("start_time"), int) else None,
                end_time=meta.get("end_time") if isinstance(meta.get("end_time"), int) else None,
                artifacts=run_dir / "artifacts" if (run_dir / "artifacts").is_dir() else None,
                models=models.get(run_id, []),
            )
            for key, p in _key_files(run_dir / "params"):
                run.params[key] = p.read_text(encoding="utf-8", errors="replace")
            for key, p in _key_files(run_dir / "tags"):
                run.tags[key] = p.read_text(encoding="utf-8", errors="replace")
            for key, p in _key_files(run_dir / "metrics"):
                run.metrics[key] = _read_metric(p)
            runs.append(run)
    runs.sort(key=lambda r: (r.start_time or 0, r.run_id))
    return runs


def artifact_files(base: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """(relative path, file) of every regular file under *base*, and the paths refused.

    Symlinks are never followed: a job's outputs may link to files that are not its own.
    """
    files: list[tuple[str, Path]] = []
    refused: list[str] = []
    if not base.is_dir() or base.is_symlink():
        return files, refused
    for dirpath, dirnames, filenames in os.walk(base):
        keep = []
        for d in sorted(dirnames):
            p = Path(dirpath) / d
            if p.is_symlink():
                refused.append(f"{p.relative_to(base).as_posix()} (symlink)")
            else:
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(base).as_posix()
            if p.is_symlink() or not p.is_file():
                refused.append(f"{rel} (not a regular file)")
            elif not safe_artifact_path(rel):
                refused.append(f"{rel} (name not allowed as an artifact path)")
            else:
                files.append((rel, p))
    return files, refused


# ------------------------------------------------------------------------------- destinations
@dataclass
class RunRef:
    """A run in the destination store."""

    run_id: str
    experiment_id: str
    artifact_uri: str
    status: str = ""
    lifecycle_stage: str = "active"
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metric_keys: set[str] = field(default_factory=set)
    start_time: int | None = None


class Dest(abc.ABC):
    """The user's tracking store, as the import needs it."""

    uri: str

    @abc.abstractmethod
    def experiment_id(self, name: str) -> str:
        """Id of experiment *name* (created, or restored, if needed)."""

    @abc.abstractmethod
    def create_run(self, experiment_id: str, name: str, start_time: int, tags: dict[str, str]) -> RunRef: ...

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRef | None:
        """The run, or None if the store does not have it."""

    @abc.abstractmethod
    def find_run(self, experiment_id: str, tag: str, value: str) -> RunRef | None: ...

    @abc.abstractmethod
    def history(self, run_id: str, key: str) -> list[Point]: ...

    @abc.abstractmethod
    def log_batch(self, run_id: str, metrics: list[tuple[str, Point]], params: dict[str, str], tags: dict[str, str]) -> None: ...

    @abc.abstractmethod
    def update_run(
        self, run_id: str, *, status: str | None = None, end_time: int | None = None, name: str | None = None
    ) -> None: ...

    @abc.abstractmethod
    def upload(self, run: RunRef, files: list[tuple[str, Path]], artifact_path: str) -> None:
        """Upload *files* (relative path, local file) under *artifact_path* of *run*."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release what the destination holds."""


def _run_ref_from_rest(run: dict[str, Any]) -> RunRef:
    info = run.get("info", {})
    data = run.get("data", {})
    return RunRef(
        run_id=str(info.get("run_id") or info.get("run_uuid")),
        experiment_id=str(info.get("experiment_id")),
        artifact_uri=str(info.get("artifact_uri") or ""),
        status=str(info.get("status") or ""),
        lifecycle_stage=str(info.get("lifecycle_stage") or "active"),
        params={p["key"]: p.get("value", "") for p in data.get("params", [])},
        tags={t["key"]: t.get("value", "") for t in data.get("tags", [])},
        metric_keys={m["key"] for m in data.get("metrics", [])},
        start_time=int(info["start_time"]) if info.get("start_time") else None,
    )


class RestDest(Dest):
    """An ``http(s)`` tracking server, through its REST API (standard library only)."""

    def __init__(self, uri: str, *, timeout: float = 10.0) -> None:
        self.uri = uri
        self.client = RestClient(uri, timeout=timeout)
        self._fallback: ClientDest | None = None

    def experiment_id(self, name: str) -> str:
        return self.client.get_or_create_experiment(name)

    def create_run(self, experiment_id: str, name: str, start_time: int, tags: dict[str, str]) -> RunRef:
        info = self.client.create_run(experiment_id, name, start_time=start_time, tags=tags)
        return RunRef(
            run_id=str(info["run_id"]),
            experiment_id=experiment_id,
            artifact_uri=str(info.get("artifact_uri", "")),
            tags=dict(tags),
            start_time=start_time,
        )

    def get_run(self, run_id: str) -> RunRef | None:
        try:
            return _run_ref_from_rest(self.client.get_run(run_id))
        except MlflowApiError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or exc.status == 404:
                return None
            raise

    def find_run(self, experiment_id: str, tag: str, value: str) -> RunRef | None:
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        runs = self.client.search_runs([experiment_id], f"tags.`{tag}` = '{quoted}'", max_results=5)
        return _run_ref_from_rest(runs[0]) if runs else None

    def history(self, run_id: str, key: str) -> list[Point]:
        return [
            (int(m.get("timestamp", 0)), float(m.get("value", 0.0)), int(m.get("step", 0)))
            for m in self.client.metric_history(run_id, key)
        ]

    def log_batch(self, run_id: str, metrics: list[tuple[str, Point]], params: dict[str, str], tags: dict[str, str]) -> None:
        body = [{"key": k, "value": _json_float(v), "timestamp": ts, "step": step} for k, (ts, v, step) in metrics]
        self.client.log_batch(run_id, metrics=body, params=params, tags=tags)

    def update_run(self, run_id: str, *, status: str | None = None, end_time: int | None = None, name: str | None = None) -> None:
        self.client.update_run(run_id, status=status, end_time=end_time, run_name=name)

    def upload(self, run: RunRef, files: list[tuple[str, Path]], artifact_path: str) -> None:
        if proxied_artifact_path(run.artifact_uri) is None:
            # the server keeps artifacts elsewhere (s3://, a path of its own...): mlflow knows how
            if self._fallback is None:
                self._fallback = ClientDest(self.uri)
            self._fallback.upload(run, files, artifact_path)
            return
        for rel, path in files:
            self.client.put_artifact(run.artifact_uri, f"{artifact_path}/{rel}" if artifact_path else rel, path.read_bytes())

    def close(self) -> None:
        if self._fallback is not None:
            self._fallback.close()


def _json_float(v: float) -> Any:
    # the server's JSON parser takes these spellings for the values JSON cannot write
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "Infinity" if v > 0 else "-Infinity"
    return v


def import_mlflow() -> Any:
    """``import mlflow`` with quiet logging and no retry storms (a down server fails in seconds)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return mlflow


def sqlite_db_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other URIs or in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri[len("sqlite:///") :].split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(unquote(rest))


def file_store_path(uri: str) -> Path | None:
    """The folder of a file-store URI (``file:`` or a plain path)."""
    if uri.startswith("file:"):
        p = urlparse(uri)
        return Path(unquote(p.path))
    if "://" not in uri and ":" not in uri.split("/", 1)[0]:
        return Path(uri)
    return None


class ClientDest(Dest):
    """Any store mlflow itself can write (SQLite, file, databricks, ...), through ``MlflowClient``."""

    def __init__(self, uri: str, *, artifact_root: Path | None = None) -> None:
        self.uri = uri
        mlflow = import_mlflow()
        if file_store_path(uri) is not None:
            # the user picked a file store as the destination: MLflow 3 wants that said
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.mlflow = mlflow
        self.client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri if not is_http(uri) else None)
        db = sqlite_db_path(uri)
        # MLflow would put artifacts of new experiments under the *current directory*
        self.artifact_root = artifact_root or (db.parent / "artifacts" if db is not None else None)

    def experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            return str(exp.experiment_id)
        location = None
        if self.artifact_root is not None:
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:60] or "experiment"
            location = (self.artifact_root / f"{slug}-{uuid.uuid4().hex[:8]}").resolve().as_uri()
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except self.mlflow.exceptions.MlflowException:
            again = self.client.get_experiment_by_name(name)
            if again is None:
                raise
            return str(again.experiment_id)

    def _ref(self, run: Any) -> RunRef:
        return RunRef(
            run_id=run.info.run_id,
            experiment_id=str(run.info.experiment_id),
            artifact_uri=str(run.info.artifact_uri),
            status=str(run.info.status),
            lifecycle_stage=str(run.info.lifecycle_stage),
            params=dict(run.data.params),
            tags=dict(run.data.tags),
            metric_keys=set(run.data.metrics),
            start_time=int(run.info.start_time) if run.info.start_time else None,
        )

    def create_run(self, experiment_id: str, name: str, start_time: int, tags: dict[str, str]) -> RunRef:
        run = self.client.create_run(experiment_id, start_time=start_time, tags=tags, run_name=name)
        return self._ref(run)

    def get_run(self, run_id: str) -> RunRef | None:
        try:
            return self._ref(self.client.get_run(run_id))
        except self.mlflow.exceptions.MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower():
                return None
            raise

    def find_run(self, experiment_id: str, tag: str, value: str) -> RunRef | None:
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{quoted}'", max_results=5)
        return self._ref(runs[0]) if runs else None

    def history(self, run_id: str, key: str) -> list[Point]:
        return [(int(m.timestamp), float(m.value), int(m.step)) for m in self.client.get_metric_history(run_id, key)]

    def log_batch(self, run_id: str, metrics: list[tuple[str, Point]], params: dict[str, str], tags: dict[str, str]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        ms = [Metric(k, v, ts, step) for k, (ts, v, step) in metrics]
        ps = [Param(k, v) for k, v in params.items()]
        ts_ = [RunTag(k, v) for k, v in tags.items()]
        while ms or ps or ts_:
            p_chunk, ps = ps[:100], ps[100:]
            t_chunk, ts_ = ts_[:100], ts_[100:]
            room = MAX_METRICS_PER_BATCH - len(p_chunk) - len(t_chunk)
            m_chunk, ms = ms[:room], ms[room:]
            self.client.log_batch(run_id, metrics=m_chunk, params=p_chunk, tags=t_chunk)

    def update_run(self, run_id: str, *, status: str | None = None, end_time: int | None = None, name: str | None = None) -> None:
        if status in ("FINISHED", "FAILED", "KILLED"):
            self.client.set_terminated(run_id, status=status, end_time=end_time)
            if name:
                self.client.update_run(run_id, name=name)
            return
        self.client.update_run(run_id, status=status, name=name)

    def upload(self, run: RunRef, files: list[tuple[str, Path]], artifact_path: str) -> None:
        by_dir: dict[str, list[Path]] = {}
        for rel, path in files:
            parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
            dest = "/".join(x for x in (artifact_path, parent) if x)
            by_dir.setdefault(dest, []).append(path)
        for dest, paths in by_dir.items():
            for path in paths:
                self.client.log_artifact(run.run_id, str(path), artifact_path=dest or None)


def open_dest(uri: str, *, timeout: float = 10.0, artifact_root: Path | None = None) -> Dest:
    """The destination for tracking URI *uri*."""
    if is_http(uri):
        return RestDest(uri, timeout=timeout)
    return ClientDest(uri, artifact_root=artifact_root)


# ------------------------------------------------------------------------------- the import
@dataclass
class SyncReport:
    """What :func:`sync_run` did."""

    run_id: str = ""
    experiment_id: str = ""
    created: bool = False
    params: int = 0
    metrics: int = 0
    metrics_skipped: int = 0
    tags: int = 0
    artifacts: int = 0
    extra_runs: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


@dataclass
class RunSpec:
    """Everything hpcjobs knows about the run of one job (trial, step)."""

    token: str
    run_name: str
    experiment_name: str
    status: str
    start_time: int
    end_time: int | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    #: a run the job logged to directly, or one the CLI created at submission
    known_run_id: str | None = None
    #: runs of the job's own file store (offline mode); the first is the job's run
    sources: list[SourceRun] = field(default_factory=list)
    primary_source: str | None = None
    #: artifact path -> folder to upload (``outputs``, ``logs``, ...)
    folders: dict[str, Path] = field(default_factory=dict)


def _fault(point: str) -> None:
    # test hook: die at a named point, as a crash or a kill would (see reliability.md)
    if os.environ.get("HPCJOBS_FAULT") == point:
        os._exit(137)


def _clean_tags(tags: dict[str, str], report: SyncReport) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in tags.items():
        if not valid_key(k):
            report.skipped.append(f"tag {k!r}: not a valid MLflow key")
            continue
        out[k] = v if len(v) <= MAX_TAG_VALUE else v[: MAX_TAG_VALUE - 3] + "..."
    return out


def _new_params(run: RunRef, params: dict[str, str], report: SyncReport) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params.items():
        if not valid_key(k):
            report.skipped.append(f"param {k!r}: not a valid MLflow key")
        elif len(v) > MAX_PARAM_VALUE:
            report.skipped.append(f"param {k!r}: value longer than {MAX_PARAM_VALUE} characters")
        elif k in run.params:
            # params are immutable in MLflow: the first value logged stays
            if run.params[k] != v:
                report.skipped.append(f"param {k!r}: already {run.params[k]!r} in the run, not {v!r}")
        else:
            out[k] = v
    run.params.update(out)
    return out


def _point_key(p: Point) -> tuple[int, int, str]:
    return (p[2], p[0], repr(p[1]))


def _copy_source(dest: Dest, run: RunRef, src: SourceRun, report: SyncReport, *, skip_tags: set[str]) -> None:
    params = _new_params(run, src.params, report)
    tags = _clean_tags({k: v for k, v in src.tags.items() if k not in skip_tags}, report)
    new_points: list[tuple[str, Point]] = []
    for key, points in src.metrics.items():
        if not valid_key(key):
            report.skipped.append(f"metric {key!r}: not a valid MLflow key")
            continue
        have = {_point_key(p) for p in dest.history(run.run_id, key)} if key in run.metric_keys else set()
        for p in points:
            k = _point_key(p)
            if k in have:
                report.metrics_skipped += 1
                continue
            have.add(k)
            new_points.append((key, p))
    # log in chunks, so a failure half-way leaves whole batches that the next attempt skips
    for i in range(0, max(len(new_points), 1), MAX_METRICS_PER_BATCH):
        chunk = new_points[i : i + MAX_METRICS_PER_BATCH]
        dest.log_batch(run.run_id, chunk, params if i == 0 else {}, tags if i == 0 else {})
        _fault("mlflow_import_mid")
    run.metric_keys.update(src.metrics)
    report.params += len(params)
    report.metrics += len(new_points)
    report.tags += len(tags)
    if src.artifacts is not None:
        files, refused = artifact_files(src.artifacts)
        report.skipped.extend(f"artifact {r}" for r in refused)
        if files:
            dest.upload(run, files, "")
            report.artifacts += len(files)
    for name, folder in src.models:
        if not safe_artifact_path(name):
            report.skipped.append(f"model {name!r}: name not allowed as an artifact path")
            continue
        files, refused = artifact_files(folder)
        report.skipped.extend(f"model artifact {r}" for r in refused)
        if files:
            dest.upload(run, files, name)
            report.artifacts += len(files)


def sync_run(dest: Dest, spec: RunSpec, *, on_run: Callable[[RunRef], None] | None = None) -> SyncReport:
    """Create or find the job's run in *dest* and bring it up to date (idempotent).

    *on_run* is called as soon as the destination run is known, so the caller can
    remember its id before anything else can fail.
    """
    report = SyncReport()
    exp_id = dest.experiment_id(spec.experiment_name)
    run: RunRef | None = None
    if spec.known_run_id:
        run = dest.get_run(spec.known_run_id)
        if run is not None and run.lifecycle_stage != "active":
            run = None
    if run is None:
        run = dest.find_run(exp_id, "hpcjobs.token", spec.token)
    if run is None:
        start = spec.start_time
        primary = next((s for s in spec.sources if s.run_id == spec.primary_source), None)
        if primary is not None and primary.start_time:
            start = primary.start_time
        run = dest.create_run(exp_id, spec.run_name, start, {"hpcjobs.token": spec.token})
        report.created = True
    _fault("mlflow_import_created")
    report.run_id, report.experiment_id = run.run_id, run.experiment_id
    if on_run is not None:
        on_run(run)
    # The job is one run: its own run and every other top-level run it made (mlflow.end_run(),
    # which autologging calls after fit(), drops MLFLOW_RUN_ID, so later calls start a new
    # run) are merged into it; nested runs (mlflow.parentRunId) become its child runs.
    known = {s.run_id for s in spec.sources}
    merged = [s for s in spec.sources if s.run_id == spec.primary_source]
    merged += [s for s in spec.sources if s.run_id != spec.primary_source and (s.parent_run_id or "") not in known]
    merged_ids = {s.run_id for s in merged}
    id_map: dict[str, str] = {s.run_id: run.run_id for s in merged}
    for src in merged:
        # hpcjobs' own tags below win over what the job wrote
        _copy_source(dest, run, src, report, skip_tags={"mlflow.runName", "mlflow.user", "mlflow.parentRunId", *spec.tags})
    nested = [s for s in spec.sources if s.run_id not in merged_ids]
    while nested:
        # parents before children, so every child finds its parent's new id
        ready = [s for s in nested if (s.parent_run_id or "") in id_map] or nested[:1]
        for src in ready:
            nested.remove(src)
            token = f"{spec.token}:{src.run_id}"
            other = dest.find_run(exp_id, "hpcjobs.token", token)
            if other is None:
                other = dest.create_run(
                    exp_id, src.run_name or src.run_id, src.start_time or spec.start_time, {"hpcjobs.token": token}
                )
            id_map[src.run_id] = other.run_id
            report.extra_runs[src.run_id] = other.run_id
            _copy_source(dest, other, src, report, skip_tags={"mlflow.parentRunId"})
            parent = id_map.get(src.parent_run_id or "", run.run_id)
            dest.log_batch(other.run_id, [], {}, {"mlflow.parentRunId": parent, "hpcjobs.job_name": spec.run_name})
            dest.update_run(
                other.run_id,
                status=src.status if src.status in ("FINISHED", "FAILED", "KILLED") else "FINISHED",
                end_time=src.end_time or spec.end_time,
            )
    params = _new_params(run, spec.params, report)
    tags = _clean_tags(spec.tags, report)
    dest.log_batch(run.run_id, [], params, tags)
    report.params += len(params)
    report.tags += len(tags)
    for artifact_path, folder in spec.folders.items():
        files, refused = artifact_files(folder)
        report.skipped.extend(f"{artifact_path}/{r}" for r in refused)
        if files:
            dest.upload(run, files, artifact_path)
            report.artifacts += len(files)
            _fault("mlflow_import_artifacts")
    end_time = spec.end_time
    if end_time is not None and run.start_time and end_time < run.start_time:
        # the scheduler reports whole seconds, the job started its run to the millisecond
        end_time = run.start_time
    dest.update_run(run.run_id, status=spec.status, end_time=end_time, name=spec.run_name)
    return report
