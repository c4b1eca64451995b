"""The job side of MLflow tracking, and a small MLflow REST client.  Standard library only.

hpcjobs copies this file into every job directory (``<job_dir>/.mlflow/hpcjobs_mlflow.py``)
and the job script runs it before the user's command::

    eval "$(python3 <job_dir>/.mlflow/hpcjobs_mlflow.py start <task_dir>/.mlflow/<key>.json)"

It prints ``export`` lines for ``MLFLOW_TRACKING_URI``, ``MLFLOW_RUN_ID`` and
``MLFLOW_EXPERIMENT_ID``, so ``mlflow.log_metric`` / ``mlflow.autolog()`` in the user's
code land in the job's run, and records what it did in ``<task_dir>/.mlflow/state.json``
for hpcjobs to read when the job ends.

* ``direct`` mode: the run lives on the tracking server.  If the CLI already created it
  (and claimed ``<task_dir>/.mlflow/run_id``) the job resumes it; otherwise the job
  creates it and claims the file, and whoever loses the claim deletes its own run, so a
  job never has two runs.  A server the job cannot reach makes it fall back to offline.
  A sweep's trial or a pipeline's step nests its run under the sweep's or pipeline's
  run (``mlflow.parentRunId``; the CLI created that run and wrote its id to ``parent_claim``).
* ``offline`` mode: the run lives in a file store inside the task directory
  (``<task_dir>/mlruns``), created here by writing MLflow's file-store layout directly;
  hpcjobs imports it into the user's tracking store after the job.

Nothing here imports mlflow or hpcjobs: compute nodes need only a Python 3.7+.  The same
:class:`RestClient` is used by hpcjobs itself (it stays free of mlflow's 2 s import).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

#: MLflow's limits for one ``runs/log-batch`` request
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100

#: run statuses as MLflow's file store writes them (``RunStatus`` enum values)
FILE_STATUS = {"RUNNING": 1, "SCHEDULED": 2, "FINISHED": 3, "FAILED": 4, "KILLED": 5}
FILE_STATUS_NAMES = {v: k for k, v in FILE_STATUS.items()}

#: the experiment id runs get inside a job's own file store
OFFLINE_EXPERIMENT_ID = "0"


class MlflowUnreachable(Exception):
    """The tracking server could not be reached, timed out, or failed (5xx): try again later."""


class MlflowApiError(Exception):
    """The tracking server answered with an error (4xx): retrying will not help."""

    def __init__(self, message: str, *, error_code: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.status = status


def now_ms() -> int:
    """Milliseconds since the epoch, as MLflow timestamps are."""
    return int(time.time() * 1000)


def is_http(uri: str | None) -> bool:
    """Whether *uri* is a tracking server address (http or https)."""
    return bool(uri) and str(uri).split(":", 1)[0].lower() in ("http", "https")


class RestClient:
    """The few MLflow REST calls hpcjobs needs, with short timeouts and no retries.

    Credentials come from the standard variables (``MLFLOW_TRACKING_TOKEN``, or
    ``MLFLOW_TRACKING_USERNAME`` and ``MLFLOW_TRACKING_PASSWORD``);
    ``MLFLOW_TRACKING_INSECURE_TLS=true`` turns off certificate checks, as in MLflow.
    """

    def __init__(self, uri: str, *, timeout: float = 10.0) -> None:
        self.uri = uri.rstrip("/")
        self.timeout = timeout
        self.requests = 0
        self._ctx: ssl.SSLContext | None = None
        if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
            self._ctx = ssl.create_default_context()
            self._ctx.check_hostname = False
            self._ctx.verify_mode = ssl.CERT_NONE

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "hpcjobs"}
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user:
            pw = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        return headers

    def request(
        self, method: str, path: str, *, body: Any = None, data: bytes | None = None, query: dict[str, Any] | None = None
    ) -> Any:
        """One HTTP request; the decoded JSON answer (``{}`` when empty)."""
        url = self.uri + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = self._headers()
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            headers["Content-Type"] = "application/octet-stream"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - http(s) only, checked by callers
        self.requests += 1
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ctx) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            code = ""
            message = text.strip()[:300]
            try:
                payload = json.loads(text)
                code = str(payload.get("error_code", ""))
                message = str(payload.get("message", message))
            except ValueError:
                pass
            if exc.code >= 500 or exc.code in (408, 429):
                raise MlflowUnreachable(f"{self.uri}: HTTP {exc.code} {message}") from None
            raise MlflowApiError(
                f"{self.uri}: HTTP {exc.code} {code} {message}".strip(), error_code=code, status=exc.code
            ) from None
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MlflowUnreachable(f"{self.uri}: {reason}") from None
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise MlflowUnreachable(f"{self.uri}: the answer to {path} is not JSON (is this an MLflow server?)") from None

    def api(self, method: str, endpoint: str, body: Any = None, **query: Any) -> Any:
        """Call ``/api/2.0/mlflow/<endpoint>``."""
        if method == "GET":
            return self.request("GET", f"/api/2.0/mlflow/{endpoint}", query=query or None)
        return self.request(method, f"/api/2.0/mlflow/{endpoint}", body=body if body is not None else {})

    # -- experiments ------------------------------------------------------------------
    def experiment_by_name(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.api("GET", "experiments/get-by-name", experiment_name=name)["experiment"])
        except MlflowApiError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST" or exc.status == 404:
                return None
            raise

    def get_or_create_experiment(self, name: str) -> str:
        """The id of experiment *name*, created if missing (a deleted one is restored)."""
        exp = self.experiment_by_name(name)
        if exp is not None:
            if exp.get("lifecycle_stage") == "deleted":
                self.api("POST", "experiments/restore", {"experiment_id": exp["experiment_id"]})
            return str(exp["experiment_id"])
        try:
            return str(self.api("POST", "experiments/create", {"name": name})["experiment_id"])
        except MlflowApiError as exc:
            # another job created it between our two calls
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            again = self.experiment_by_name(name)
            if again is None:
                raise
            return str(again["experiment_id"])

    # -- runs -------------------------------------------------------------------------
    def create_run(
        self, experiment_id: str, run_name: str, *, start_time: int | None = None, tags: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Create a run; its ``info`` (run_id, artifact_uri, ...)."""
        body = {
            "experiment_id": experiment_id,
            "run_name": run_name,
            "start_time": start_time if start_time is not None else now_ms(),
            "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
        }
        return dict(self.api("POST", "runs/create", body)["run"]["info"])

    def get_run(self, run_id: str) -> dict[str, Any]:
        """The run (``info`` and ``data``)."""
        return dict(self.api("GET", "runs/get", run_id=run_id)["run"])

    def update_run(
        self, run_id: str, *, status: str | None = None, end_time: int | None = None, run_name: str | None = None
    ) -> None:
        body: dict[str, Any] = {"run_id": run_id}
        if status:
            body["status"] = status
        if end_time is not None:
            body["end_time"] = end_time
        if run_name:
            body["run_name"] = run_name
        self.api("POST", "runs/update", body)

    def delete_run(self, run_id: str) -> None:
        self.api("POST", "runs/delete", {"run_id": run_id})

    def search_runs(
        self, experiment_ids: list[str], filter_string: str, *, max_results: int = 50, deleted_too: bool = False
    ) -> list[dict[str, Any]]:
        body = {
            "experiment_ids": experiment_ids,
            "filter": filter_string,
            "max_results": max_results,
            "run_view_type": "ALL" if deleted_too else "ACTIVE_ONLY",
        }
        return list(self.api("POST", "runs/search", body).get("runs", []))

    def metric_history(self, run_id: str, key: str) -> list[dict[str, Any]]:
        """Every point of metric *key* of *run_id* (all pages)."""
        out: list[dict[str, Any]] = []
        token = None
        while True:
            query: dict[str, Any] = {"run_id": run_id, "metric_key": key, "max_results": 25000}
            if token:
                query["page_token"] = token
            page = self.api("GET", "metrics/get-history", **query)
            out.extend(page.get("metrics", []))
            token = page.get("next_page_token")
            if not token:
                return out

    def log_batch(
        self,
        run_id: str,
        *,
        metrics: list[dict[str, Any]] | None = None,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None:
        """Log metrics, params and tags, in as many requests as MLflow's limits need."""
        m = list(metrics or [])
        p = [{"key": k, "value": v} for k, v in (params or {}).items()]
        t = [{"key": k, "value": v} for k, v in (tags or {}).items()]
        while m or p or t:
            body = {
                "run_id": run_id,
                "params": p[:MAX_PARAMS_PER_BATCH],
                "tags": t[:MAX_TAGS_PER_BATCH],
                "metrics": [],
            }
            room = MAX_METRICS_PER_BATCH - len(body["params"]) - len(body["tags"])
            body["metrics"] = m[:room]
            p, t, m = p[MAX_PARAMS_PER_BATCH:], t[MAX_TAGS_PER_BATCH:], m[room:]
            self.api("POST", "runs/log-batch", body)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.log_batch(run_id, tags=tags)

    # -- artifacts (through the server's artifact proxy) ------------------------------
    def put_artifact(self, artifact_uri: str, rel_path: str, data: bytes) -> None:
        """Upload one file under a run's ``mlflow-artifacts:`` root."""
        base = proxied_artifact_path(artifact_uri)
        if base is None:
            raise MlflowApiError(f"artifact root {artifact_uri} is not served by the tracking server")
        quoted = urllib.parse.quote(f"{base}/{rel_path}".strip("/"), safe="/")
        self.request("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{quoted}", data=data)

    def list_artifacts(self, run_id: str, path: str = "") -> list[dict[str, Any]]:
        query = {"run_id": run_id}
        if path:
            query["path"] = path
        return list(self.api("GET", "artifacts/list", **query).get("files", []))


def proxied_artifact_path(artifact_uri: str) -> str | None:
    """``mlflow-artifacts:/1/abc/artifacts`` -> ``1/abc/artifacts`` (None for other schemes)."""
    if not artifact_uri.startswith("mlflow-artifacts:"):
        return None
    rest = artifact_uri[len("mlflow-artifacts:") :]
    if rest.startswith("//"):
        # mlflow-artifacts://host:port/path: the host part is the server we talk to anyway
        rest = rest[2:]
        rest = rest[rest.find("/") :] if "/" in rest else ""
    return rest.strip("/")


# ------------------------------------------------------------------------------- file store
def _yaml_scalar(v: Any) -> str:
    # JSON is valid YAML; quoting every string keeps MLflow's yaml.safe_load exact
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return json.dumps(str(v))


def _write_yaml(path: str, data: dict[str, Any]) -> None:
    lines = []
    for k, v in data.items():
        lines.append(f"{k}: []" if v == [] else f"{k}: {_yaml_scalar(v)}")
    _write_text(path, "\n".join(lines) + "\n")


def _write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _safe_key(key: str) -> bool:
    # the file store keeps one file per key: refuse names that would leave the run's folder
    parts = key.split("/")
    return bool(key) and "\x00" not in key and not key.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def file_store_uri(root: str) -> str:
    """The ``file://`` tracking URI of a file store folder."""
    return "file://" + urllib.parse.quote(os.path.abspath(root))


def create_file_store_run(
    root: str,
    *,
    experiment_name: str,
    run_name: str,
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    user: str = "",
    start_time: int | None = None,
) -> tuple[str, str]:
    """Create an experiment and a RUNNING run in an MLflow file store at *root*; (experiment_id, run_id).

    Writes the same files MLflow's ``FileStore`` writes, so ``mlflow`` in the job (with
    ``MLFLOW_RUN_ID`` set) resumes the run and appends to it.
    """
    exp_id = OFFLINE_EXPERIMENT_ID
    exp_dir = os.path.join(root, exp_id)
    start = start_time if start_time is not None else now_ms()
    if not os.path.exists(os.path.join(exp_dir, "meta.yaml")):
        _write_yaml(
            os.path.join(exp_dir, "meta.yaml"),
            {
                "artifact_location": file_store_uri(exp_dir),
                "creation_time": start,
                "experiment_id": exp_id,
                "last_update_time": start,
                "lifecycle_stage": "active",
                "name": experiment_name,
            },
        )
    os.makedirs(os.path.join(root, ".trash"), exist_ok=True)
    run_id = uuid.uuid4().hex
    run_dir = os.path.join(exp_dir, run_id)
    for sub in ("metrics", "params", "tags", "artifacts"):
        os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
    all_tags = {"mlflow.runName": run_name, "mlflow.user": user, **(tags or {})}
    for k, v in all_tags.items():
        if _safe_key(k):
            _write_text(os.path.join(run_dir, "tags", k), str(v))
    for k, v in (params or {}).items():
        if _safe_key(k):
            _write_text(os.path.join(run_dir, "params", k), str(v))
    _write_yaml(
        os.path.join(run_dir, "meta.yaml"),
        {
            "artifact_uri": file_store_uri(os.path.join(run_dir, "artifacts")),
            "end_time": None,
            "entry_point_name": "",
            "experiment_id": exp_id,
            "lifecycle_stage": "active",
            "run_id": run_id,
            "run_name": run_name,
            "run_uuid": run_id,
            "source_name": "",
            "source_type": 4,
            "source_version": "",
            "start_time": start,
            "status": FILE_STATUS["RUNNING"],
            "tags": [],
            "user_id": user,
        },
    )
    return exp_id, run_id


# ------------------------------------------------------------------------------- job start
def _shq(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def _claim(path: str, content: str) -> bool:
    """Create *path* with *content* unless it exists (O_EXCL: atomic, also on NFS v3+)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as fh:
        fh.write(content)
    return True


def _read_claim(path: str, wait: float = 5.0) -> dict[str, Any]:
    # the other side writes the claim right after creating it: allow it a moment
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.loads(fh.read())
            if data.get("run_id"):
                return dict(data)
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise MlflowApiError(f"{path} holds no run id")
        time.sleep(0.1)


def _job_tags(cfg: dict[str, Any]) -> dict[str, str]:
    tags = {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}
    slurm_id = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        slurm_id = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if slurm_id:
        tags["hpcjobs.slurm_job_id"] = slurm_id
    tags["hpcjobs.host"] = socket.gethostname()
    if cfg.get("array"):
        tags["hpcjobs.task_index"] = os.environ.get("HPCJOBS_TASK_INDEX", "0")
    return tags


def _sweep_params() -> dict[str, str]:
    # a sweep trial's sampled values are in the environment before this runs (trials.sh)
    prefix = "AZUREML_SWEEP_"
    return {k[len(prefix) :]: v for k, v in os.environ.items() if k.startswith(prefix) and len(k) > len(prefix)}


def _experiment_name(cfg: dict[str, Any]) -> str:
    if cfg.get("experiment_name"):
        return str(cfg["experiment_name"])
    # the planner writes job.json (with experiment_name) after this script's settings
    try:
        with open(str(cfg.get("job_json") or ""), encoding="utf-8") as fh:
            name = json.load(fh).get("experiment_name")
    except (OSError, ValueError, AttributeError):
        name = None
    return str(name or "Default")


def _run_name(cfg: dict[str, Any]) -> str:
    name = str(cfg.get("run_name") or os.environ.get("HPCJOBS_JOB_NAME") or "job")
    if cfg.get("array"):
        name = f"{name}_{os.environ.get('HPCJOBS_TASK_INDEX', '0')}"
    return name


def start(config_path: str, *, out: Any = None) -> int:
    """Attach this job to its MLflow run; print ``export`` lines for the shell."""
    out = out or sys.stdout
    with open(config_path, encoding="utf-8") as fh:
        cfg = json.load(fh)
    task_dir = os.environ.get("HPCJOBS_TASK_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(config_path)))
    state_dir = os.path.join(task_dir, ".mlflow")
    state_path = os.path.join(state_dir, "state.json")
    os.makedirs(state_dir, exist_ok=True)
    state: dict[str, Any] = {}
    if os.path.exists(state_path):
        # a requeued or restarted job keeps its run
        try:
            with open(state_path, encoding="utf-8") as fh:
                state = json.load(fh)
        except (OSError, ValueError):
            state = {}
    attempts = int(state.get("attempts", 0)) + 1
    exports: dict[str, str] = {}
    mode = str(cfg.get("mode", "offline"))
    uri = str(cfg.get("uri") or "")
    reason = ""
    if mode == "direct" and is_http(uri):
        try:
            exports = _start_direct(cfg, uri, task_dir, state)
            state.update(mode="direct", uri=uri, run_id=exports["MLFLOW_RUN_ID"], experiment_id=exports["MLFLOW_EXPERIMENT_ID"])
        except (MlflowUnreachable, MlflowApiError) as exc:
            reason = str(exc)
            sys.stderr.write(
                f"hpcjobs: cannot use the MLflow server from this job ({reason}); "
                "logging offline, hpcjobs imports the run after the job\n"
            )
            mode = "offline"
    if mode != "direct":
        exports = _start_offline(cfg, task_dir, state)
        state.update(
            mode="offline",
            store="mlruns",
            local_run_id=exports["MLFLOW_RUN_ID"],
            experiment_id_local=exports["MLFLOW_EXPERIMENT_ID"],
        )
        if reason:
            state["fallback_reason"] = reason
    state.update(attempts=attempts, host=socket.gethostname(), started=now_ms())
    _write_text(state_path, json.dumps(state, indent=1, sort_keys=True))
    for k, v in exports.items():
        out.write(f"export {k}={_shq(v)}\n")
    return 0


def _parent_run(cfg: dict[str, Any], client: RestClient | None = None) -> str:
    """The run id of the sweep or pipeline this trial or step belongs to ("" if not known yet).

    The CLI creates that run right after submitting and writes its id to ``parent_claim``;
    a step that starts first waits a moment for it.  Without it the step's run is still
    made a child of the parent's run, later, when hpcjobs imports the step.

    A pipeline's sweep step has no run from the CLI: ``parent_create`` says how its first
    trial makes it (nested under the pipeline's run, claimed like any run), so the trials
    are nested under their step from the start, as on Azure.
    """
    path = str(cfg.get("parent_claim") or "")
    if not path:
        return ""
    create = cfg.get("parent_create")
    if isinstance(create, dict) and client is not None and not os.path.exists(path):
        return _create_parent(cfg, create, path, client)
    deadline = time.monotonic() + float(cfg.get("claim_wait", 3.0))
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not os.path.exists(path):
        return ""
    try:
        return str(_read_claim(path, wait=2.0)["run_id"])
    except MlflowApiError:
        return ""


def _create_parent(cfg: dict[str, Any], create: dict[str, Any], path: str, client: RestClient) -> str:
    """Make the run a sweep step's trials nest under, and claim it at *path*.

    Trials start together: the one that takes ``<path>.creating`` (O_EXCL) makes the run,
    the others wait for its claim, so no run is made twice and none is left deleted.
    """
    lock = f"{path}.creating"
    if not _claim(lock, str(os.getpid())):
        # wait for the creator, but not for one that gave up long ago (server down, killed)
        budget = float(cfg.get("timeout", 10)) + 5.0
        try:
            age = time.time() - os.path.getmtime(lock)
        except OSError:
            age = 0.0
        try:
            return str(_read_claim(path, wait=max(0.0, budget - age))["run_id"])
        except MlflowApiError:
            return ""  # nested when hpcjobs records the trial
    grand = _parent_run({"parent_claim": create.get("parent_claim"), "claim_wait": cfg.get("claim_wait", 3.0)})
    exp_id = client.get_or_create_experiment(_experiment_name(cfg))
    tags = {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}
    tags.update(
        {
            "hpcjobs.job_name": str(create.get("run_name") or ""),
            "hpcjobs.run_key": str(create.get("run_key") or ""),
            "hpcjobs.job_type": "sweep",
        }
    )
    if grand:
        tags["mlflow.parentRunId"] = grand
    info = client.create_run(exp_id, str(create.get("run_name") or "sweep"), tags=tags)
    mine = str(info["run_id"])
    _claim(path, json.dumps({"run_id": mine, "experiment_id": exp_id, "by": "trial"}))
    with contextlib.suppress(MlflowApiError):
        client.update_run(mine, status="RUNNING")
    if grand:
        _parent_running(client, grand)
    return mine


def _start_direct(cfg: dict[str, Any], uri: str, task_dir: str, state: dict[str, Any]) -> dict[str, str]:
    client = RestClient(uri, timeout=float(cfg.get("timeout", 10)))
    claim_path = os.path.join(task_dir, ".mlflow", "run_id")
    parent = str(state.get("parent_run_id") or "") or _parent_run(cfg, client)
    if parent:
        state["parent_run_id"] = parent
    run_id = str(state.get("run_id") or "") if state.get("mode") == "direct" else ""
    exp_id = str(state.get("experiment_id") or "")
    if not run_id and not os.path.exists(claim_path) and cfg.get("expect_claim"):
        # the CLI creates the run right after submitting: give it a moment rather than racing it
        deadline = time.monotonic() + float(cfg.get("claim_wait", 3.0))
        while not os.path.exists(claim_path) and time.monotonic() < deadline:
            time.sleep(0.05)
    if not run_id and os.path.exists(claim_path):
        claim = _read_claim(claim_path)
        run_id, exp_id = str(claim["run_id"]), str(claim["experiment_id"])
    if not run_id:
        exp_id = client.get_or_create_experiment(_experiment_name(cfg))
        tags = {**_job_tags(cfg), "hpcjobs.run_key": str(cfg.get("run_key", ""))}
        if parent:
            # nested under the sweep's or pipeline's run from the start, as in Azure ML
            tags["mlflow.parentRunId"] = parent
        info = client.create_run(exp_id, _run_name(cfg), tags=tags)
        mine = str(info["run_id"])
        if _claim(claim_path, json.dumps({"run_id": mine, "experiment_id": exp_id, "by": "job"})):
            run_id = mine
        else:
            # the CLI created the run first: use it and drop ours
            claim = _read_claim(claim_path)
            run_id, exp_id = str(claim["run_id"]), str(claim["experiment_id"])
            with contextlib.suppress(MlflowUnreachable, MlflowApiError):
                client.delete_run(mine)
    client.update_run(run_id, status="RUNNING")
    extra = _job_tags(cfg)
    if parent:
        extra["mlflow.parentRunId"] = parent
        _parent_running(client, parent)
    params = _sweep_params()
    existing = client.get_run(run_id).get("data", {})
    have = {p["key"]: p.get("value") for p in existing.get("params", [])}
    params = {k: v for k, v in params.items() if k not in have}
    client.log_batch(run_id, params=params, tags=extra)
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": exp_id}


def _parent_running(client: RestClient, parent: str) -> None:
    # the first trial or step to start moves its parent's run from SCHEDULED to RUNNING;
    # hpcjobs sets the final status when the sweep or pipeline has ended
    try:
        if client.get_run(parent).get("info", {}).get("status") == "SCHEDULED":
            client.update_run(parent, status="RUNNING")
    except MlflowApiError:
        pass


def _start_offline(cfg: dict[str, Any], task_dir: str, state: dict[str, Any]) -> dict[str, str]:
    root = os.path.join(task_dir, "mlruns")
    run_id = str(state.get("local_run_id") or "")
    exp_id = str(state.get("experiment_id_local") or OFFLINE_EXPERIMENT_ID)
    if not run_id or not os.path.exists(os.path.join(root, exp_id, run_id, "meta.yaml")):
        exp_id, run_id = create_file_store_run(
            root,
            experiment_name=_experiment_name(cfg),
            run_name=_run_name(cfg),
            tags={**_job_tags(cfg), "hpcjobs.run_key": str(cfg.get("run_key", ""))},
            params=_sweep_params(),
            user=os.environ.get("USER", ""),
        )
    return {
        "MLFLOW_TRACKING_URI": file_store_uri(root),
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": exp_id,
        # MLflow 3 refuses file stores unless told they are wanted (they are: no server here)
        "MLFLOW_ALLOW_FILE_STORE": "true",
    }


def main(argv: list[str] | None = None) -> int:
    """``hpcjobs_mlflow.py start CONFIG``: never fails the job, whatever happens."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "start":
        sys.stderr.write("usage: hpcjobs_mlflow.py start CONFIG\n")
        return 2
    try:
        return start(args[1])
    except Exception as exc:  # noqa: BLE001 - tracking must never stop the user's job
        sys.stderr.write(f"hpcjobs: MLflow tracking is off for this job: {type(exc).__name__}: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
