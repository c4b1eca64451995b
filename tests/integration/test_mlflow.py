"""Every job is an MLflow run: real jobs through the real CLI, a real ``mlflow server`` on loopback.

* the embedded default (site ``local``, SQLite store in the state dir, no server);
* ``direct`` mode: the job logs straight to the server;
* ``offline`` mode: the job logs to a file store in its job directory, hpcjobs imports it;
* importing twice, a crash in the middle of an import, the server stopped (refused) and
  paused (hanging) during an import, then started again and ``job sync``;
* ``./outputs`` equal to the run's artifacts byte for byte;
* the iris example trained, its model registered and loaded with ``mlflow.sklearn.load_model``.

The server is this module's own (free port, SQLite in a temporary folder), so tests can stop
and start it.  Jobs run on this machine (scheduler ``local``); the Slurm variants are in
test_mlflow_slurm.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjobs.mlflow_import import read_file_store
from hpcjobs.mlflow_job import RestClient

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow")]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


# ------------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite store, in its own process group."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 400) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root}/mlflow.db",
                "--serve-artifacts",
                "--artifacts-destination",
                str(self.root / "artifacts"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=self.root,
        )
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer within {timeout} s")
            time.sleep(0.3)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)
        # uvicorn's worker may outlive its parent for a moment
        with_group = True
        deadline = time.monotonic() + 10
        while with_group and time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
                time.sleep(0.1)
            except ProcessLookupError:
                with_group = False
        if with_group:
            self.signal(signal.SIGKILL)

    def ensure_up(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            if self.healthy():
                return
            self.stop()
        self.start()

    def client(self, timeout: float = 30) -> RestClient:
        return RestClient(self.uri, timeout=timeout)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def up(server: MlflowServer) -> MlflowServer:
    """The server, answering (tests that stop it leave it to the next one to restart)."""
    server.ensure_up()
    return server


# ------------------------------------------------------------------------------- hpcjobs
@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, server: MlflowServer) -> Path:
    """One HPCJOBS_HOME for the module (the embedded store is set up once), with two sites on the server."""
    h = tmp_path_factory.mktemp("hpcjobs-home")
    sites = h / "config" / "sites"
    sites.mkdir(parents=True)
    for name, mode in (("mlf-direct", "direct"), ("mlf-offline", "offline")):
        (sites / f"{name}.yml").write_text(
            f"scheduler: local\njob_root: {h}/state/{name}\ntracking:\n  mode: {mode}\n  uri: {server.uri}\n"
        )
    return h


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", "HPCJOBS_TRACKING", "HPCJOBS_SITE", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)


CliResult = "subprocess.CompletedProcess[str]"


@pytest.fixture
def hj(home: Path, cli_runner: Callable[..., Any]) -> Callable[..., Any]:
    """Run the real CLI with the module's home; imports happen in the CLI itself unless told otherwise."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Any:
        return cli_runner(*args, home=home, env={"HPCJOBS_MLFLOW_BACKGROUND": "0", **(env or {})}, timeout=timeout)

    return run


def ok(res: Any) -> Any:
    assert res.returncode == 0, f"exit {res.returncode}\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    return res


def run_name_of(res: Any) -> str:
    return next(line.split()[-1] for line in res.stderr.splitlines() if line.startswith("RunId:"))


def job_extra(home: Path, name: str) -> dict[str, Any]:
    import sqlite3

    with sqlite3.connect(home / "state" / "jobs.db") as c:
        row = c.execute("SELECT extra, job_dir FROM jobs WHERE name = ?", (name,)).fetchone()
    extra = json.loads(row[0])
    extra["_job_dir"] = row[1]
    return extra


JOB = """
$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
display_name: mlflow test job
description: writes binary outputs and logs metrics with steps
experiment_name: {experiment}
tags:
  purpose: hpcjobs-tests
inputs:
  n: {n}
  sleep: {sleep}
  files: {files}
  data:
    type: uri_file
    path: ./data.txt
command: |
  python - ${{{{inputs.n}}}} ${{{{inputs.files}}}} <<'PY'
  import os, random, sys
  import mlflow
  n, files = int(sys.argv[1]), int(sys.argv[2])
  rnd = random.Random(1234)
  os.makedirs("outputs/deep/dir", exist_ok=True)
  with open("outputs/blob.bin", "wb") as f:
      f.write(bytes(rnd.getrandbits(8) for _ in range(300000)))
  with open("outputs/deep/dir/ünï cödé.txt", "w", encoding="utf-8") as f:
      f.write("héllo\\n")
  open("outputs/empty.dat", "wb").close()
  if files:
      os.makedirs("outputs/many", exist_ok=True)
      for i in range(files):
          with open(f"outputs/many/f{{i:05d}}.txt", "w") as f:
              f.write(str(i) * 50)
  for step in range(n):
      mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
  mlflow.log_metric("acc", 0.5, step=0)
  mlflow.log_param("from_code", "yes")
  # (mlflow removes MLFLOW_RUN_ID from os.environ once it has attached to the run)
  print("logged to", mlflow.active_run().info.run_id, mlflow.get_tracking_uri())
  PY
  cp ${{{{inputs.data}}}} outputs/data-copy.txt
  echo "a log line" > logs/progress.log
  sleep ${{{{inputs.sleep}}}}
"""


def write_job(tmp_path: Path, *, experiment: str, n: int = 7, sleep: int = 0, files: int = 0) -> Path:
    (tmp_path / "data.txt").write_text("input data\n")
    p = tmp_path / "job.yml"
    p.write_text(textwrap.dedent(JOB).lstrip().format(experiment=experiment, n=n, sleep=sleep, files=files))
    return p


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def server_runs(srv: MlflowServer, experiment: str, *, deleted_too: bool = False) -> list[dict[str, Any]]:
    c = srv.client()
    exp = c.experiment_by_name(experiment)
    if exp is None:
        return []
    return c.search_runs([str(exp["experiment_id"])], "", max_results=200, deleted_too=deleted_too)


def check_server_run(
    srv: MlflowServer, experiment: str, name: str, job_dir: Path, tmp_path: Path, *, n: int = 7
) -> dict[str, Any]:
    """The job's one run on the server, complete: params, metrics by step, tags, status, artifacts."""
    runs = [r for r in server_runs(srv, experiment) if r["info"]["run_name"] == name]
    assert len(runs) == 1, runs
    run = runs[0]
    info, data = run["info"], run["data"]
    assert info["status"] == "FINISHED"
    params = {p["key"]: p["value"] for p in data.get("params", [])}
    # literal inputs are params; the data input is not
    assert params == {"n": str(n), "sleep": params["sleep"], "files": params["files"], "from_code": "yes"}
    tags = {t["key"]: t["value"] for t in data["tags"]}
    assert tags["purpose"] == "hpcjobs-tests"
    assert tags["hpcjobs.display_name"] == "mlflow test job"
    assert tags["mlflow.note.content"] == "writes binary outputs and logs metrics with steps"
    assert tags["hpcjobs.job_name"] == name and tags["mlflow.runName"] == name
    c = srv.client()
    history = c.metric_history(info["run_id"], "loss")
    assert sorted((int(m["step"]), m["value"]) for m in history) == [(i, 1.0 / (i + 1)) for i in range(n)]
    import mlflow

    got = Path(
        mlflow.artifacts.download_artifacts(
            run_id=info["run_id"], artifact_path="outputs", dst_path=str(tmp_path / f"dl-{name}"), tracking_uri=srv.uri
        )
    )
    assert tree(got) == tree(job_dir / "wd" / "outputs")
    assert {a["path"] for a in c.list_artifacts(info["run_id"])} >= {"outputs", "logs", "user_logs"}
    return run


# ------------------------------------------------------------------------------- the embedded default
def test_embedded_default_hello_mlflow(hj: Callable[..., Any], home: Path, tmp_path: Path) -> None:
    res = ok(hj("job", "create", "-f", str(EXAMPLES / "hello-mlflow.yml"), "--stream"))
    name = run_name_of(res)
    assert "logged 5 steps to run" in res.stdout
    uri = ok(hj("mlflow-uri")).stdout.strip()
    assert uri == f"sqlite:///{home}/state/mlflow/mlflow.db"
    synced = json.loads(ok(hj("job", "sync", "-n", name, "-o", "json")).stdout)
    assert synced[0]["mlflow"] == "imported"
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hello-mlflow")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.runName` = '{name}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"epochs": "5", "greeting": "hello mlflow", "optimizer": "none"}
    assert run.data.tags["example"] == "hello-mlflow" and run.data.tags["greeting"] == "hello mlflow"
    assert run.data.tags["hpcjobs.display_name"] == "hello mlflow" and run.data.tags["hpcjobs.site"] == "local"
    hist = client.get_metric_history(run.info.run_id, "loss")
    assert sorted((m.step, m.value) for m in hist) == [(i, 1.0 / (i + 1)) for i in range(5)]
    job_dir = Path(job_extra(home, name)["_job_dir"])
    got = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="outputs", dst_path=str(tmp_path), tracking_uri=uri
        )
    )
    assert tree(got) == tree(job_dir / "wd" / "outputs") == {"greeting.txt": b"hello mlflow\n"}
    # artifacts live in the state dir, not in the current directory
    assert run.info.artifact_uri.startswith((home / "state" / "mlflow" / "artifacts").as_uri())
    show = json.loads(ok(hj("job", "mlflow", "-n", name)).stdout)
    assert show["run_id"] == run.info.run_id and show["state"] == "imported" and show["ui_url"] is None


def test_embedded_default_imports_in_the_background(hj: Callable[..., Any], home: Path) -> None:
    """Without HPCJOBS_MLFLOW_BACKGROUND=0 the CLI leaves the import to a background process."""
    res = ok(hj("job", "create", "-f", str(EXAMPLES / "outputs-named.yml"), "--stream", env={"HPCJOBS_MLFLOW_BACKGROUND": "1"}))
    name = run_name_of(res)
    deadline = time.monotonic() + 400
    while job_extra(home, name).get("mlflow", {}).get("state") != "imported":
        assert time.monotonic() < deadline, job_extra(home, name)
        time.sleep(1)
    assert name in (home / "state" / "mlflow" / "import.log").read_text()


def test_tracking_none(hj: Callable[..., Any], home: Path) -> None:
    res = ok(hj("job", "create", "-f", str(EXAMPLES / "hello-world.yml"), "--stream", env={"HPCJOBS_TRACKING": "none"}))
    name = run_name_of(res)
    extra = job_extra(home, name)
    assert extra["mlflow"]["mode"] == "none"
    assert not (Path(extra["_job_dir"]) / ".mlflow").exists()
    assert json.loads(ok(hj("job", "sync", "-n", name, "-o", "json")).stdout)[0]["mlflow"] == "disabled"


# ------------------------------------------------------------------------------- direct and offline
def test_direct_mode(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    job = write_job(tmp_path, experiment="direct-exp")
    t0 = time.monotonic()
    res = ok(hj("job", "create", "-f", str(job), "--site", "mlf-direct", "--stream", "--web"))
    name = run_name_of(res)
    extra = job_extra(home, name)
    url = next(line.split()[-1] for line in res.stderr.splitlines() if line.startswith("MLflow run:"))
    run_id = extra["mlflow"]["run_id"]
    assert url == f"{up.uri}/#/experiments/{extra['mlflow']['experiment_id']}/runs/{run_id}"
    # the job logged straight to the server, into the run the CLI created at submission
    assert f"logged to {run_id} {up.uri}" in res.stdout
    state = json.loads((Path(extra["_job_dir"]) / ".mlflow/state.json").read_text())
    assert state["mode"] == "direct" and state["run_id"] == run_id
    assert not (Path(extra["_job_dir"]) / "mlruns").exists()
    run = check_server_run(up, "direct-exp", name, Path(extra["_job_dir"]), tmp_path)
    assert run["info"]["run_id"] == run_id
    # no second run, not even a deleted one, for this job
    assert len([r for r in server_runs(up, "direct-exp", deleted_too=True) if r["info"]["run_name"] == name]) == 1
    print(f"direct job + import: {time.monotonic() - t0:.1f} s")


def test_offline_mode(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    job = write_job(tmp_path, experiment="offline-exp", sleep=3)
    res = ok(hj("job", "create", "-f", str(job), "--site", "mlf-offline", "--web"))
    name = json.loads(res.stdout)["name"]
    # the run exists at once (created by the CLI through the REST API), scheduled
    extra = job_extra(home, name)["mlflow"]
    run = up.client().get_run(extra["run_id"])
    assert run["info"]["status"] in ("SCHEDULED",) and run["info"]["run_name"] == name
    assert f"/runs/{extra['run_id']}" in res.stderr
    ok(hj("job", "stream", "-n", name))
    extra = job_extra(home, name)
    job_dir = Path(extra["_job_dir"])
    assert extra["mlflow"]["state"] == "imported"
    run = check_server_run(up, "offline-exp", name, job_dir, tmp_path)
    # every point as the job logged it: value, step and timestamp
    local = read_file_store(job_dir / "mlruns")
    assert len(local) == 1
    remote = up.client().metric_history(run["info"]["run_id"], "loss")
    assert sorted((int(m["timestamp"]), m["value"], int(m["step"])) for m in remote) == sorted(local[0].metrics["loss"])


def test_import_twice_creates_nothing_new(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    job = write_job(tmp_path, experiment="twice-exp")
    name = run_name_of(ok(hj("job", "create", "-f", str(job), "--site", "mlf-offline", "--stream")))
    before = check_server_run(up, "twice-exp", name, Path(job_extra(home, name)["_job_dir"]), tmp_path)
    for _ in range(2):
        res = json.loads(ok(hj("job", "sync", "-n", name, "--force", "-o", "json")).stdout)
        assert res[0]["mlflow"] == "imported" and not res[0]["created"] and res[0]["metrics"] == 0
    after = check_server_run(up, "twice-exp", name, Path(job_extra(home, name)["_job_dir"]), tmp_path / "again")
    assert after["info"]["run_id"] == before["info"]["run_id"]
    assert len(up.client().metric_history(after["info"]["run_id"], "loss")) == 7


def test_crash_in_the_middle_of_an_import(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    job = write_job(tmp_path, experiment="crash-exp")
    res = hj("job", "create", "-f", str(job), "--site", "mlf-offline", "--stream", env={"HPCJOBS_FAULT": "mlflow_import_mid"})
    assert res.returncode == 137  # died after the first metric batch reached the server
    name = run_name_of(res)
    assert job_extra(home, name)["mlflow"]["state"] != "imported"
    res = json.loads(ok(hj("job", "sync", "-n", name, "-o", "json")).stdout)
    assert res[0]["mlflow"] == "imported" and res[0]["metrics_skipped"] >= 8
    check_server_run(up, "crash-exp", name, Path(job_extra(home, name)["_job_dir"]), tmp_path)


def test_server_refusing_then_back(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    """Server stopped before the job ends: one line, nothing lost, `job sync` completes it."""
    job = write_job(tmp_path, experiment="down-exp")
    up.stop()
    t0 = time.monotonic()
    res = ok(hj("job", "create", "-f", str(job), "--site", "mlf-offline", "--stream"))
    name = run_name_of(res)
    lines = [line for line in res.stderr.splitlines() if "MLflow" in line]
    assert len(lines) == 1 and "unreachable" in lines[0] and "hpcjobs job sync" in lines[0], res.stderr
    assert time.monotonic() - t0 < 240
    assert job_extra(home, name)["mlflow"]["state"] == "pending"
    res = hj("job", "sync", "--all", "-o", "json")
    assert res.returncode == 1 and json.loads(res.stdout)[0]["mlflow"] == "pending"
    up.start()
    res = json.loads(ok(hj("job", "sync", "--all", "-o", "json")).stdout)
    assert {r["name"]: r["mlflow"] for r in res}[name] == "imported"
    check_server_run(up, "down-exp", name, Path(job_extra(home, name)["_job_dir"]), tmp_path)


def test_server_stopped_during_an_import(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    """The server dies while ./outputs is being uploaded; after a restart `job sync` completes the same run."""
    job = write_job(tmp_path, experiment="during-exp", files=1500)
    # the CLI dies right after creating the run: an import is pending, with the run known
    res = hj("job", "create", "-f", str(job), "--site", "mlf-offline", "--stream", env={"HPCJOBS_FAULT": "mlflow_import_created"})
    assert res.returncode == 137, res.stderr
    name = run_name_of(res)
    argv = [sys.executable, "-m", "hpcjobs.cli.main", "job", "sync", "-n", name, "-o", "json"]
    env = {**os.environ, "HPCJOBS_HOME": str(home), "HPCJOBS_MLFLOW_BACKGROUND": "0", "HPCJOBS_MLFLOW_TIMEOUT": "5"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    c = up.client(timeout=5)
    deadline = time.monotonic() + 300
    run_id = None
    while True:
        assert proc.poll() is None, f"the import ended before the server could be stopped: {proc.communicate()}"
        assert time.monotonic() < deadline
        run_id = run_id or job_extra(home, name).get("mlflow", {}).get("run_id")
        if run_id:
            try:
                if c.list_artifacts(run_id, "outputs/many"):
                    break
            except Exception:
                pass
        time.sleep(0.05)
    up.signal(signal.SIGKILL)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=300)
    assert time.monotonic() - t0 < 120
    assert proc.returncode == 1 and json.loads(out)[0]["mlflow"] == "pending"
    assert len([line for line in err.splitlines() if "MLflow" in line]) == 1, err
    up.stop()
    up.start()
    res = json.loads(ok(hj("job", "sync", "-n", name, "-o", "json")).stdout)
    assert res[0]["mlflow"] == "imported" and res[0]["run_id"] == run_id and not res[0]["created"]
    runs = server_runs(up, "during-exp")
    assert [r["info"]["run_id"] for r in runs] == [run_id]
    import mlflow

    got = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="outputs", dst_path=str(tmp_path / "dl"), tracking_uri=up.uri
        )
    )
    assert tree(got) == tree(Path(job_extra(home, name)["_job_dir"]) / "wd" / "outputs")
    assert len(up.client().metric_history(run_id, "loss")) == 7


def test_server_hanging_does_not_hang_the_cli(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    job = write_job(tmp_path, experiment="hang-exp")
    name = run_name_of(ok(hj("job", "create", "-f", str(job), "--site", "mlf-offline", "--stream")))
    up.signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        res = hj("job", "sync", "-n", name, "--force", "-o", "json", env={"HPCJOBS_MLFLOW_TIMEOUT": "3"})
        took = time.monotonic() - t0
    finally:
        up.signal(signal.SIGCONT)
    assert res.returncode == 1 and json.loads(res.stdout)[0]["mlflow"] == "pending"
    assert took < 30, took
    assert len([line for line in res.stderr.splitlines() if "MLflow" in line]) == 1
    assert json.loads(ok(hj("job", "sync", "-n", name, "-o", "json")).stdout)[0]["mlflow"] == "imported"
    check_server_run(up, "hang-exp", name, Path(job_extra(home, name)["_job_dir"]), tmp_path)


# ------------------------------------------------------------------------------- iris and the model registry
def test_iris_model_registered_and_loadable(hj: Callable[..., Any], home: Path, tmp_path: Path) -> None:
    res = ok(hj("job", "create", "-f", str(EXAMPLES / "iris" / "job.yml"), "--stream"))
    name = run_name_of(res)
    assert "test accuracy" in res.stdout
    ok(hj("job", "sync", "-n", name))
    model = json.loads(ok(hj("model", "create", "--name", "iris-classifier", "--job", name, "--path", "outputs/model")).stdout)
    assert model["name"] == "iris-classifier" and model["model_uri"] == f"models:/iris-classifier/{model['version']}"
    uri = ok(hj("mlflow-uri")).stdout.strip()
    code = textwrap.dedent(
        f"""
        import mlflow, mlflow.sklearn, pandas as pd
        m = mlflow.sklearn.load_model({model["model_uri"]!r})
        df = pd.read_csv({str(EXAMPLES / "iris" / "iris.csv")!r})
        print("ACCURACY", (m.predict(df.iloc[:, :4]) == df["species"]).mean())
        runs = mlflow.search_runs(experiment_names=["iris"], output_format="list")
        mine = [r for r in runs if r.data.tags.get("mlflow.runName") == {name!r}]
        assert len(mine) == 1, [r.data.tags.get("mlflow.runName") for r in runs]
        r = mine[0]
        print("PARAMS", sorted(r.data.params.items()))
        print("METRICS", sorted(r.data.metrics))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    acc = float(next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("ACCURACY")))
    assert acc > 0.9
    params = dict(eval(next(line[len("PARAMS ") :] for line in out.stdout.splitlines() if line.startswith("PARAMS "))))
    assert params["C"] == "1.0" and params["max_iter"] == "200" and params["rows"] == "150"
    metrics = next(line for line in out.stdout.splitlines() if line.startswith("METRICS"))
    assert "test_accuracy" in metrics and "training_accuracy_score" in metrics
    # a second version from the same job
    again = json.loads(ok(hj("model", "create", "--name", "iris-classifier", "--job", name)).stdout)
    assert int(again["version"]) == int(model["version"]) + 1
    bad = hj("model", "create", "--name", "x", "--job", name, "--path", "outputs/nothing-here")
    assert bad.returncode == 2 and "no artifacts under 'outputs/nothing-here'" in bad.stderr


# ------------------------------------------------------------------------------- pipelines and sweeps
#: a pipeline whose steps log to MLflow: prep -> train (a data edge), and side (independent).
#: `--set jobs.prep.inputs.fail=3` makes prep fail; `--set jobs.side.inputs.sleep=N` keeps side running.
PIPELINE = """
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: mlflow pipeline
description: chained steps that log to MLflow
EXPERIMENT_LINE
tags:
  purpose: hpcjobs-tests
inputs:
  lr: 0.5
jobs:
  prep:
    command: |
      python - ${{inputs.rows}} ${{outputs.data}} <<'PY'
      import os, sys
      import mlflow
      rows, out = int(sys.argv[1]), sys.argv[2]
      with open(os.path.join(out, "data.txt"), "w") as f:
          f.write("\\n".join(str(i) for i in range(rows)) + "\\n")
      os.makedirs("outputs", exist_ok=True)
      with open("outputs/prep.txt", "w") as f:
          f.write(f"{rows} rows\\n")
      mlflow.log_metric("rows", rows)
      PY
      exit ${{inputs.fail}}
    inputs:
      rows: 5
      fail: 0
    outputs:
      data:
  train:
    command: |
      python - ${{inputs.data}} ${{inputs.lr}} <<'PY'
      import os, sys
      import mlflow
      data, lr = sys.argv[1], float(sys.argv[2])
      rows = open(os.path.join(data, "data.txt")).read().split()
      for step in range(4):
          mlflow.log_metric("loss", lr / (step + 1), step=step)
      mlflow.log_param("from_code", "yes")
      os.makedirs("outputs", exist_ok=True)
      with open("outputs/model.bin", "wb") as f:
          f.write(bytes(range(256)) * 4 + f"trained on {len(rows)} rows".encode())
      # what the step's own run says while it runs (in direct mode: already nested)
      run = mlflow.get_run(mlflow.active_run().info.run_id)
      parent = run.data.tags.get("mlflow.parentRunId")
      print("PARENT_RUN", parent)
      if parent:
          print("PARENT_STATUS", mlflow.get_run(parent).info.status)
      PY
    inputs:
      data: ${{parent.jobs.prep.outputs.data}}
      lr: ${{parent.inputs.lr}}
  side:
    command: echo side step; sleep ${{inputs.sleep}}
    inputs:
      sleep: 0
"""

STEPS = ("prep", "train", "side")
#: every step runs (the tests share one job store: identical steps of earlier tests would be reused)
RERUN = ("--set", "settings.force_rerun=true")


def write_pipeline(folder: Path, experiment: str | None) -> Path:
    """The pipeline in *folder* (its name is the experiment when *experiment* is None, as on Azure)."""
    folder.mkdir(parents=True, exist_ok=True)
    line = f"experiment_name: {experiment}" if experiment else ""
    p = folder / "pipeline.yml"
    p.write_text(textwrap.dedent(PIPELINE).lstrip().replace("EXPERIMENT_LINE", line))
    return p


def mlflow_client(uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def run_tree(uri: str, experiment: str, name: str) -> tuple[Any, dict[str, Any]]:
    """The job's run and its child runs by name, found as a user would (tags.mlflow.parentRunId)."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    top = client.search_runs([exp.experiment_id], filter_string=f"attributes.run_name = '{name}'")
    assert len(top) == 1, [r.info.run_id for r in top]
    parent = top[0]
    kids = client.search_runs([exp.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    by_name = {r.info.run_name: r for r in kids}
    assert len(by_name) == len(kids), [r.info.run_name for r in kids]
    return parent, by_name


def all_runs(uri: str, experiment: str) -> list[Any]:
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(experiment)
    return list(client.search_runs([exp.experiment_id], max_results=1000)) if exp is not None else []


def check_pipeline(
    uri: str, experiment: str, name: str, step_dirs: dict[str, Path], tmp_path: Path, *, status: str = "FINISHED"
) -> tuple[Any, dict[str, Any]]:
    """The pipeline's run and one child run per step, complete: what an Azure ML user checks."""
    client = mlflow_client(uri)
    parent, kids = run_tree(uri, experiment, name)
    assert parent.info.status == status
    assert set(kids) == {f"{name}_{s}" for s in STEPS}
    ptags = parent.data.tags
    assert ptags["mlflow.runName"] == name and ptags["hpcjobs.job_name"] == name
    assert ptags["hpcjobs.job_type"] == "pipeline" and ptags["purpose"] == "hpcjobs-tests"
    assert ptags["hpcjobs.display_name"] == "mlflow pipeline"
    assert ptags["mlflow.note.content"] == "chained steps that log to MLflow"
    assert "mlflow.parentRunId" not in ptags
    # the pipeline's own literal inputs are its run's params, as on Azure
    assert parent.data.params == {"lr": "0.5"}
    for step in STEPS:
        run = kids[f"{name}_{step}"]
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["hpcjobs.job_name"] == run.info.run_name == tags["mlflow.runName"]
        assert tags["hpcjobs.parent_job_name"] == name
        assert run.info.end_time >= run.info.start_time >= parent.info.start_time
        assert run.info.end_time <= parent.info.end_time
    train = kids[f"{name}_train"]
    if status == "FINISHED":
        assert {s: kids[f"{name}_{s}"].info.status for s in STEPS} == dict.fromkeys(STEPS, "FINISHED")
        assert kids[f"{name}_prep"].data.params == {"rows": "5", "fail": "0"}
        assert kids[f"{name}_prep"].data.metrics == {"rows": 5.0}
        # the step's literal inputs (lr bound to the pipeline's input) and what its code logged
        assert train.data.params == {"lr": "0.5", "from_code": "yes"}
        hist = client.get_metric_history(train.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in hist) == [(i, 0.5 / (i + 1)) for i in range(4)]
        for step in ("prep", "train"):
            run = kids[f"{name}_{step}"]
            got = Path(client.download_artifacts(run.info.run_id, "outputs", str(tmp_path / f"dl-{run.info.run_id}")))
            assert tree(got) == tree(step_dirs[step] / "wd" / "outputs")
            logs = Path(client.download_artifacts(run.info.run_id, "user_logs", str(tmp_path / f"log-{run.info.run_id}")))
            assert (logs / "std_log.txt").read_bytes() == (step_dirs[step] / "user_logs" / "std_log.txt").read_bytes()
        assert (
            b"side step"
            in (
                Path(client.download_artifacts(kids[f"{name}_side"].info.run_id, "user_logs/std_log.txt", str(tmp_path / "side")))
            ).read_bytes()
        )
    return parent, kids


def step_dirs_of(home: Path, name: str) -> dict[str, Path]:
    return {s: Path(job_extra(home, f"{name}_{s}")["_job_dir"]) for s in STEPS}


def test_pipeline_embedded_default(hj: Callable[..., Any], home: Path, tmp_path: Path) -> None:
    """Site local, the embedded store: one run for the pipeline, one child run per step; re-imports and reuse add none."""
    pipeline = write_pipeline(tmp_path / "pipe-embedded", None)
    name = run_name_of(ok(hj("job", "create", "-f", str(pipeline), "--stream")))
    synced = json.loads(ok(hj("job", "sync", "-n", name, "-o", "json")).stdout)
    assert {r["name"]: r["mlflow"] for r in synced} == {name: "imported", **{f"{name}_{s}": "imported" for s in STEPS}}
    uri = ok(hj("mlflow-uri")).stdout.strip()
    # no experiment_name: the folder of the pipeline's file, for the pipeline and its steps
    experiment = "pipe-embedded"
    parent, kids = check_pipeline(uri, experiment, name, step_dirs_of(home, name), tmp_path)
    assert parent.info.run_id == json.loads(ok(hj("job", "mlflow", "-n", name)).stdout)["run_id"]
    # offline (the embedded store): the step's run is nested when hpcjobs records it, not while it runs
    assert "PARENT_RUN None" in (step_dirs_of(home, name)["train"] / "user_logs" / "std_log.txt").read_text()
    before = sorted(r.info.run_id for r in all_runs(uri, experiment))
    assert len(before) == 4
    for _ in range(2):
        again = json.loads(ok(hj("job", "sync", "-n", name, "--force", "-o", "json")).stdout)
        assert all(r["mlflow"] == "imported" and not r["created"] and r["metrics"] == 0 for r in again), again
    assert sorted(r.info.run_id for r in all_runs(uri, experiment)) == before
    client = mlflow_client(uri)
    assert len(client.get_metric_history(kids[f"{name}_train"].info.run_id, "loss")) == 4
    check_pipeline(uri, experiment, name, step_dirs_of(home, name), tmp_path / "again")

    # the same pipeline again: every step is reused, so only the pipeline gets a run, naming the reused runs
    second = run_name_of(ok(hj("job", "create", "-f", str(pipeline), "--stream")))
    res = json.loads(ok(hj("job", "sync", "-n", second, "-o", "json")).stdout)
    assert {r["name"]: r["mlflow"] for r in res} == {second: "imported", **{f"{second}_{s}": "reused" for s in STEPS}}
    parent2, kids2 = run_tree(uri, experiment, second)
    assert parent2.info.status == "FINISHED" and kids2 == {}
    assert {k: v for k, v in parent2.data.tags.items() if k.startswith("hpcjobs.reused.")} == {
        f"hpcjobs.reused.{s}": kids[f"{name}_{s}"].info.run_id for s in STEPS
    }
    # the reused runs still belong to the first pipeline
    assert set(run_tree(uri, experiment, name)[1]) == set(kids)
    assert len(all_runs(uri, experiment)) == 5


def test_pipeline_direct(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    """Direct mode: the pipeline's run exists from submission; steps are its child runs while they run."""
    pipeline = write_pipeline(tmp_path / "p", "pipe-direct")
    res = ok(hj("job", "create", "-f", str(pipeline), "--site", "mlf-direct", "--stream", "--web", *RERUN))
    name = run_name_of(res)
    parent, kids = check_pipeline(up.uri, "pipe-direct", name, step_dirs_of(home, name), tmp_path)
    url = next(line.split()[-1] for line in res.stderr.splitlines() if line.startswith("MLflow run:"))
    assert url == f"{up.uri}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}"
    log = (step_dirs_of(home, name)["train"] / "user_logs" / "std_log.txt").read_text()
    assert f"PARENT_RUN {parent.info.run_id}" in log and "PARENT_STATUS RUNNING" in log, log
    # the step logged straight to the server, into the run that hpcjobs then completed
    state = json.loads((step_dirs_of(home, name)["train"] / ".mlflow" / "state.json").read_text())
    assert state["mode"] == "direct" and state["run_id"] == kids[f"{name}_train"].info.run_id
    before = sorted(r.info.run_id for r in all_runs(up.uri, "pipe-direct"))
    again = json.loads(ok(hj("job", "sync", "-n", name, "--force", "-o", "json")).stdout)
    assert all(r["mlflow"] == "imported" and not r["created"] for r in again), again
    assert sorted(r.info.run_id for r in all_runs(up.uri, "pipe-direct")) == before
    # not even a deleted run was left behind
    assert len(server_runs(up, "pipe-direct", deleted_too=True)) == len(before) == 4


def test_pipeline_failing_step_offline(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    """A failing step: its run FAILED, the step that needed its output KILLED, the independent one FINISHED, the pipeline FAILED."""
    pipeline = write_pipeline(tmp_path / "p", "pipe-fail")
    res = hj(
        "job", "create", "-f", str(pipeline), "--site", "mlf-offline", "--stream", "--set", "jobs.prep.inputs.fail=3", *RERUN
    )
    assert res.returncode == 1, res.stderr
    name = run_name_of(res)
    parent, kids = check_pipeline(up.uri, "pipe-fail", name, step_dirs_of(home, name), tmp_path, status="FAILED")
    assert {s: kids[f"{name}_{s}"].info.status for s in STEPS} == {"prep": "FAILED", "train": "KILLED", "side": "FINISHED"}
    prep = kids[f"{name}_prep"]
    assert prep.data.tags["hpcjobs.exit_code"] == "3" and prep.data.tags["hpcjobs.status"] == "Failed"
    # what it logged before failing is there
    assert prep.data.metrics == {"rows": 5.0} and prep.data.params == {"rows": "5", "fail": "3"}
    assert parent.data.tags["hpcjobs.status"] == "Failed"
    assert len(all_runs(up.uri, "pipe-fail")) == 4


def test_pipeline_canceled_direct(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    """A canceled pipeline: its run and the run of the step that was running are KILLED."""
    pipeline = write_pipeline(tmp_path / "p", "pipe-cancel")
    res = ok(hj("job", "create", "-f", str(pipeline), "--site", "mlf-direct", "--set", "jobs.side.inputs.sleep=600", *RERUN))
    name = json.loads(res.stdout)["name"]
    deadline = time.monotonic() + 300
    while True:
        view = json.loads(ok(hj("job", "show", "-n", name, "-o", "json")).stdout)
        steps = {s["name"]: s["status"] for s in view["steps"]}
        if steps["side"] == "Running" and steps["train"] in ("Completed", "Failed", "Canceled"):
            break
        assert time.monotonic() < deadline, view
        time.sleep(1)
    ok(hj("job", "cancel", "-n", name))
    deadline = time.monotonic() + 300
    while job_extra(home, name).get("mlflow", {}).get("state") != "imported":
        assert time.monotonic() < deadline, job_extra(home, name)
        ok(hj("job", "sync", "-n", name))
        time.sleep(1)
    _parent, kids = check_pipeline(up.uri, "pipe-cancel", name, step_dirs_of(home, name), tmp_path, status="KILLED")
    assert {s: kids[f"{name}_{s}"].info.status for s in STEPS} == {"prep": "FINISHED", "train": "FINISHED", "side": "KILLED"}
    assert len(server_runs(up, "pipe-cancel", deleted_too=True)) == 4


SWEEP = """
$schema: https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json
type: sweep
experiment_name: EXPERIMENT
trial:
  command: |
    python - ${{search_space.lr}} <<'PY'
    import sys
    import mlflow
    lr = float(sys.argv[1])
    mlflow.log_metric("accuracy", 1.0 - abs(lr - 0.1))
    run = mlflow.get_run(mlflow.active_run().info.run_id)
    print("PARENT_RUN", run.data.tags.get("mlflow.parentRunId"))
    PY
sampling_algorithm: grid
search_space:
  lr:
    type: choice
    values: [0.01, 0.1, 0.3]
objective:
  goal: maximize
  primary_metric: accuracy
limits:
  max_concurrent_trials: 3
"""


def check_sweep(uri: str, experiment: str, name: str, job_dir: Path) -> tuple[Any, dict[str, Any]]:
    """The sweep's run, one child run per trial with its sampled value, and best_child_run_id."""
    parent, kids = run_tree(uri, experiment, name)
    assert parent.info.status == "FINISHED"
    assert set(kids) == {f"{name}_{i}" for i in range(3)}
    by_lr = {kids[f"{name}_{i}"].data.params["lr"]: kids[f"{name}_{i}"] for i in range(3)}
    assert set(by_lr) == {"0.01", "0.1", "0.3"}
    for i in range(3):
        run = kids[f"{name}_{i}"]
        assert run.info.status == "FINISHED" and run.data.tags["hpcjobs.job_name"] == run.info.run_name
        assert run.data.metrics["accuracy"] == pytest.approx(1.0 - abs(float(run.data.params["lr"]) - 0.1))
        # each trial's run has its own log
        log = Path(mlflow_client(uri).download_artifacts(run.info.run_id, "user_logs/std_log.txt", str(job_dir.parent / f"l{i}")))
        assert log.read_bytes() == (job_dir / "user_logs" / f"std_log_{i}.txt").read_bytes()
    best = by_lr["0.1"]
    assert parent.data.tags["best_child_run_id"] == best.info.run_id
    assert parent.data.tags["hpcjobs.best_trial"] == best.info.run_name
    assert len(all_runs(uri, experiment)) == 4
    return parent, kids


def test_sweep_embedded_default(hj: Callable[..., Any], home: Path, tmp_path: Path) -> None:
    """The sweep's run is the parent of each trial's run and names the best one, with no `job show` needed."""
    job = tmp_path / "sweep.yml"
    job.write_text(textwrap.dedent(SWEEP).lstrip().replace("EXPERIMENT", "sweep-embedded"))
    name = run_name_of(ok(hj("job", "create", "-f", str(job), "--stream", env={"HPCJOBS_SWEEP_POLL": "1"})))
    synced = json.loads(ok(hj("job", "sync", "-n", name, "-o", "json")).stdout)
    assert all(r["mlflow"] == "imported" for r in synced) and len(synced) == 4, synced
    uri = ok(hj("mlflow-uri")).stdout.strip()
    job_dir = Path(job_extra(home, name)["_job_dir"])
    check_sweep(uri, "sweep-embedded", name, job_dir)
    assert json.loads(ok(hj("job", "show", "-n", name, "-o", "json")).stdout)["properties"]["best_child_run_id"] == f"{name}_1"
    ok(hj("job", "sync", "-n", name, "--force"))
    check_sweep(uri, "sweep-embedded", name, job_dir)


def test_sweep_direct(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    """Direct mode: each trial's run is nested under the sweep's run from the moment it starts."""
    job = tmp_path / "sweep.yml"
    job.write_text(textwrap.dedent(SWEEP).lstrip().replace("EXPERIMENT", "sweep-direct"))
    res = ok(hj("job", "create", "-f", str(job), "--site", "mlf-direct", "--stream", env={"HPCJOBS_SWEEP_POLL": "1"}))
    name = run_name_of(res)
    job_dir = Path(job_extra(home, name)["_job_dir"])
    parent, _kids = check_sweep(up.uri, "sweep-direct", name, job_dir)
    for i in range(3):
        assert f"PARENT_RUN {parent.info.run_id}" in (job_dir / "user_logs" / f"std_log_{i}.txt").read_text()
    assert len(server_runs(up, "sweep-direct", deleted_too=True)) == 4


PIPELINE_SWEEP = """
type: pipeline
experiment_name: pipe-sweep-direct
jobs:
  tune:
    type: sweep
    trial:
      command: |
        python - ${{inputs.lr}} <<'PY'
        import sys
        import mlflow
        lr = float(sys.argv[1])
        mlflow.log_metric("accuracy", 1.0 - abs(lr - 0.1))
        run = mlflow.get_run(mlflow.active_run().info.run_id)
        print("PARENT_RUN", run.data.tags.get("mlflow.parentRunId"))
        PY
      inputs:
        lr: {type: number}
    sampling_algorithm: grid
    search_space:
      lr: {type: choice, values: [0.01, 0.1, 0.3]}
    objective: {goal: maximize, primary_metric: accuracy}
    limits: {max_concurrent_trials: 3}
"""


def test_pipeline_sweep_step_direct(hj: Callable[..., Any], home: Path, up: MlflowServer, tmp_path: Path) -> None:
    """Direct mode: a sweep step's trials are nested under the step's run from their start, the step under the pipeline."""
    job = tmp_path / "pipe-sweep.yml"
    job.write_text(textwrap.dedent(PIPELINE_SWEEP).lstrip())
    res = ok(hj("job", "create", "-f", str(job), "--site", "mlf-direct", "--stream", *RERUN, env={"HPCJOBS_SWEEP_POLL": "1"}))
    name = run_name_of(res)
    parent, kids = run_tree(up.uri, "pipe-sweep-direct", name)
    assert set(kids) == {f"{name}_tune"}
    step, trials = run_tree(up.uri, "pipe-sweep-direct", f"{name}_tune")
    assert set(trials) == {f"{name}_tune_{i}" for i in range(3)}
    assert step.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert step.data.tags["best_child_run_id"] == trials[f"{name}_tune_1"].info.run_id
    assert {r.info.status for r in (parent, step, *trials.values())} == {"FINISHED"}
    step_dir = Path(job_extra(home, f"{name}_tune")["_job_dir"])
    for i in range(3):
        # nested under the step's run while it ran, not moved there by the import
        log = (step_dir / "user_logs" / f"std_log_{i}.txt").read_text()
        assert f"PARENT_RUN {step.info.run_id}" in log, log
        assert trials[f"{name}_tune_{i}"].data.params == {"lr": str([0.01, 0.1, 0.3][i])}
    # three trials started together: one made the step's run, none made a second (not even a deleted one)
    assert len(server_runs(up, "pipe-sweep-direct", deleted_too=True)) == 5
