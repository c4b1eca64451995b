"""MLflow tracking without mlflow: settings, the job-side helper, the file-store reader, the submit path.

Nothing here imports mlflow (tests/unit/test_tracking_import.py does); these run in a
few seconds.  The helper is exercised as the job runs it: a separate ``python3`` on the
copy hpcjobs writes into the job directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from hpcjobs import tracking
from hpcjobs.mlflow_import import artifact_files, read_file_store, safe_artifact_path, valid_key
from hpcjobs.mlflow_job import (
    MlflowUnreachable,
    RestClient,
    _claim,
    create_file_store_run,
    file_store_uri,
    is_http,
    proxied_artifact_path,
)
from hpcjobs.site import Site, Tracking, local_site

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "hpcjobs" / "mlflow_job.py"


@pytest.fixture(autouse=True)
def _tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MLFLOW_TRACKING_URI", "HPCJOBS_TRACKING", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HPCJOBS_MLFLOW_BACKGROUND", "0")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_job(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.yml"
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def local_with(**tracking_kw: Any) -> Site:
    s = local_site()
    return s.model_copy(update={"tracking": Tracking(**tracking_kw)})


# ------------------------------------------------------------------------------- settings
def test_embedded_uri_is_in_the_state_dir(hpcjobs_home: Path) -> None:
    uri = tracking.tracking_uri(local_site())
    assert uri == f"sqlite:///{hpcjobs_home}/state/mlflow/mlflow.db"
    assert uri.startswith("sqlite:////")
    assert tracking.uri_source(local_site()) == "embedded"


def test_env_overrides_embedded_and_site_uri_wins_for_its_site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000/")
    assert tracking.tracking_uri(local_site()) == "http://mlflow.example:5000"
    assert tracking.uri_source(local_site()) == "env"
    site = local_with(uri="https://tracking.site:443")
    assert tracking.tracking_uri(site) == "https://tracking.site:443"
    assert tracking.uri_source(site) == "site"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel/mlflow.db")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path}/rel/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "./mlruns")
    assert tracking.tracking_uri() == (tmp_path / "mlruns").as_uri()


def test_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    ssh_like = Site(name="x", scheduler="slurm", computes={"c": {}}, ssh={"host": "h"})
    assert tracking.tracking_mode(ssh_like) == "offline"
    assert tracking.tracking_mode(local_site()) == "direct"
    # direct means "the job talks to the server": with a SQLite destination the job logs to its own store
    assert tracking.job_log_mode(local_site()) == "offline"
    assert tracking.job_log_mode(local_with(mode="direct", uri="http://127.0.0.1:1")) == "direct"
    assert tracking.job_log_mode(local_with(mode="offline", uri="http://127.0.0.1:1")) == "offline"
    monkeypatch.setenv("HPCJOBS_TRACKING", "none")
    assert tracking.job_log_mode(local_site()) == "none"
    monkeypatch.setenv("HPCJOBS_TRACKING", "offline")
    assert tracking.tracking_mode(local_with(mode="direct")) == "offline"


def test_info_and_ui_command(hpcjobs_home: Path) -> None:
    data = tracking.info()
    assert data["source"] == "embedded"
    assert data["ui_command"].startswith(f"mlflow ui --backend-store-uri sqlite:///{hpcjobs_home}/state/mlflow/mlflow.db")
    assert (hpcjobs_home / "state/mlflow/artifacts").as_uri() in data["ui_command"]
    assert tracking.ui_command("http://x:5000") is None


def test_mlflow_uri_command(run_cli: Any, hpcjobs_home: Path) -> None:
    res = run_cli("mlflow-uri")
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"sqlite:///{hpcjobs_home}/state/mlflow/mlflow.db\n"
    res = run_cli("mlflow-uri", env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5999"})
    assert res.stdout == "http://127.0.0.1:5999\n"
    res = run_cli("mlflow-uri", "--site", "local", "-o", "json")
    assert json.loads(res.stdout)["mode"] == "direct"
    assert json.loads(res.stdout)["job_logs"] == "offline"


# ------------------------------------------------------------------------------- planning
def test_script_env_embedded_default(tmp_path: Path, hpcjobs_home: Path) -> None:
    from hpcjobs import api

    plan = api.plan(REPO / "examples/hello-mlflow.yml", name="t1")
    script = plan.scripts[0]
    helper = f"{plan.job_dir}/.mlflow/hpcjobs_mlflow.py"
    config_path = f"{plan.job_dir}/.mlflow/main.json"
    assert plan.files[helper] == HELPER.read_bytes()
    config = json.loads(plan.files[config_path])
    assert config["mode"] == "offline" and config["uri"] is None
    assert config["run_name"] == "t1" and config["job_json"] == f"{plan.job_dir}/job.json"
    assert not config["expect_claim"]
    assert f"python3 {helper} start {config_path}" in script.text
    # the helper runs before the user's command, after the environment is set up
    assert script.text.index("hpcjobs_mlflow.py start") < script.text.index("command.sh")


def test_script_env_direct_and_none(monkeypatch: pytest.MonkeyPatch, hpcjobs_home: Path) -> None:
    from hpcjobs import api

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    plan = api.plan(REPO / "examples/hello-mlflow.yml", name="t2")
    config = json.loads(plan.files[f"{plan.job_dir}/.mlflow/main.json"])
    assert config["mode"] == "direct" and config["uri"] == "http://127.0.0.1:5999" and config["expect_claim"]
    monkeypatch.setenv("HPCJOBS_TRACKING", "none")
    plan = api.plan(REPO / "examples/hello-mlflow.yml", name="t3")
    assert "hpcjobs_mlflow" not in plan.scripts[0].text
    assert not [f for f in plan.files if "/.mlflow/" in f]


def test_steps_and_trials_know_where_their_parent_run_is(monkeypatch: pytest.MonkeyPatch, hpcjobs_home: Path) -> None:
    """Direct mode: each step's (trial's) settings name the claim of the pipeline's (sweep's) run."""
    from hpcjobs import api

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    plan = api.plan(REPO / "examples/pipelines/hello-pipeline-io.yml", name="pp")
    configs = {k: json.loads(v) for k, v in plan.files.items() if k.endswith(".json") and "/.mlflow/" in k}
    assert sorted(c["run_name"] for c in configs.values()) == ["pp_hello_job", "pp_world_job"]
    for config in configs.values():
        assert config["parent_claim"] == tracking.run_claim_path(plan.job_dir) == f"{plan.job_dir}/.mlflow/run_id"
        assert not config["expect_claim"]
    sweep = api.plan(REPO / "examples/hello-sweep.yml", name="sw")
    (config,) = [json.loads(v) for k, v in sweep.files.items() if k.endswith(".json") and "/.mlflow/" in k]
    assert config["parent_claim"] == f"{sweep.job_dir}/.mlflow/run_id" and config["array"]
    # offline (here: the embedded store) nests runs when they are recorded
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    plan = api.plan(REPO / "examples/pipelines/hello-pipeline-io.yml", name="pq")
    assert all(json.loads(v)["parent_claim"] is None for k, v in plan.files.items() if k.endswith(".json") and "/.mlflow/" in k)


def test_helper_reads_the_parent_run_claim(tmp_path: Path) -> None:
    from hpcjobs.mlflow_job import _parent_run

    claim = tmp_path / "pipeline" / ".mlflow" / "run_id"
    assert _parent_run({}) == ""
    assert _parent_run({"parent_claim": str(claim), "claim_wait": 0.2}) == ""
    assert _claim(str(claim), json.dumps({"run_id": "abc", "experiment_id": "1", "by": "cli"}))
    assert _parent_run({"parent_claim": str(claim)}) == "abc"


def test_dry_run_shows_the_helper_line(run_cli: Any) -> None:
    res = run_cli("job", "create", "-f", str(REPO / "examples/hello-mlflow.yml"), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "# MLflow: attach this job to its run" in res.stdout


def test_literal_params_exclude_data_inputs(tmp_path: Path, hpcjobs_home: Path) -> None:
    from hpcjobs import api

    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    job = write_job(
        tmp_path,
        """
        command: echo ${{inputs.lr}} ${{inputs.data}} ${{inputs.name}} ${{inputs.flag}}
        inputs:
          lr: 0.01
          name: "it's a /path/looking string"
          flag: true
          data:
            type: uri_file
            path: ./data.csv
        """,
    )
    plan = api.plan(job, name="p1")
    assert tracking.literal_params(plan) == {"lr": "0.01", "name": "it's a /path/looking string", "flag": "True"}


def test_record_tags() -> None:
    from hpcjobs.store import JobRecord

    rec = JobRecord(
        name="j1",
        type="command",
        site="testcluster",
        status="Failed",
        token="tok",
        display_name="My job",
        description="what it does",
        tags={"team": "nlp", "none": None},
        properties={"mlflow.source.git.commit": "abc123", "other": "x"},
        slurm_ids=["42"],
        exit_code=3,
        compute="cpu",
    )
    tags = tracking.record_tags(rec)
    assert tags["mlflow.runName"] == "j1"
    assert tags["mlflow.note.content"] == "what it does"
    assert tags["hpcjobs.display_name"] == "My job"
    assert tags["hpcjobs.slurm_job_id"] == "42"
    assert tags["hpcjobs.site"] == "testcluster"
    assert tags["mlflow.source.git.commit"] == "abc123"
    assert tags["team"] == "nlp" and "none" not in tags and "other" not in tags
    assert tags["hpcjobs.token"] == "tok" and tags["hpcjobs.exit_code"] == "3"
    assert tracking.RUN_STATUS["Completed"] == "FINISHED"
    assert tracking.RUN_STATUS["Canceled"] == "KILLED"
    assert tracking.RUN_STATUS["Queued"] == "SCHEDULED"


def test_create_does_not_import_mlflow(tmp_path: Path, hpcjobs_home: Path) -> None:
    """The submit path (a command job, a pipeline) stays free of mlflow's 2 s import, and the tracking hooks cost milliseconds."""
    code = textwrap.dedent(
        f"""
        import json, sys, time
        from hpcjobs import api, tracking
        spent = {{"script_env": 0.0, "on_submitted": 0.0}}
        def timed(name):
            f = getattr(tracking, name)
            def wrapper(*a, **k):
                t = time.perf_counter()
                try:
                    return f(*a, **k)
                finally:
                    spent[name] += time.perf_counter() - t
            setattr(tracking, name, wrapper)
        timed("script_env"); timed("on_submitted")
        api.create_job({str(REPO / "examples/hello-world.yml")!r})
        api.create_job({str(REPO / "examples/pipelines/hello-pipeline-io.yml")!r})
        print(json.dumps({{"mlflow": "mlflow" in sys.modules, **spent}}))
        """
    )
    env = {**os.environ, "HPCJOBS_HOME": str(hpcjobs_home)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert data["mlflow"] is False
    assert data["script_env"] < 0.05 and data["on_submitted"] < 0.1, data


# ------------------------------------------------------------------------------- the job-side helper
def run_helper(tmp_path: Path, config: dict[str, Any], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a copy of the helper the way the job script does (isolated: no hpcjobs on the path)."""
    helper = tmp_path / ".mlflow" / "hpcjobs_mlflow.py"
    helper.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(HELPER, helper)
    cfg = tmp_path / ".mlflow" / "main.json"
    cfg.write_text(json.dumps(config))
    full_env = {"PATH": os.environ["PATH"], "HPCJOBS_TASK_DIR": str(tmp_path), "USER": "tester", **(env or {})}
    return subprocess.run(
        [sys.executable, "-I", str(helper), "start", str(cfg)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def exports_of(stdout: str) -> dict[str, str]:
    env = subprocess.run(["bash", "-c", stdout + "\nenv -0"], capture_output=True, check=True).stdout
    pairs = [item.split(b"=", 1) for item in env.split(b"\0") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs if k.startswith(b"MLFLOW_")}


def test_helper_offline_creates_a_file_store_run(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_text(json.dumps({"experiment_name": "exp 'one'"}))
    res = run_helper(
        tmp_path,
        {
            "mode": "offline",
            "run_name": "job_a",
            "run_key": "tok/main",
            "job_json": str(tmp_path / "job.json"),
            "tags": {"hpcjobs.site": "local"},
        },
        env={"SLURM_JOB_ID": "77", "AZUREML_SWEEP_lr": "0.1"},
    )
    assert res.returncode == 0, res.stderr
    exports = exports_of(res.stdout)
    root = tmp_path / "mlruns"
    assert exports["MLFLOW_TRACKING_URI"] == file_store_uri(str(root))
    assert exports["MLFLOW_EXPERIMENT_ID"] == "0"
    assert exports["MLFLOW_ALLOW_FILE_STORE"] == "true"
    run_id = exports["MLFLOW_RUN_ID"]
    state = json.loads((tmp_path / ".mlflow/state.json").read_text())
    assert state["mode"] == "offline" and state["local_run_id"] == run_id and state["attempts"] == 1
    runs = read_file_store(root)
    assert [r.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.status == "RUNNING" and run.run_name == "job_a"
    assert run.tags["hpcjobs.slurm_job_id"] == "77" and run.tags["hpcjobs.run_key"] == "tok/main"
    assert run.params == {"lr": "0.1"}
    import yaml

    assert yaml.safe_load((root / "0/meta.yaml").read_text())["name"] == "exp 'one'"
    # a requeued job keeps its run
    again = run_helper(tmp_path, {"mode": "offline", "run_name": "job_a"})
    assert exports_of(again.stdout)["MLFLOW_RUN_ID"] == run_id
    assert json.loads((tmp_path / ".mlflow/state.json").read_text())["attempts"] == 2


def test_helper_direct_falls_back_offline_when_the_server_is_down(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    t0 = time.monotonic()
    res = run_helper(tmp_path, {"mode": "direct", "uri": uri, "run_name": "j", "timeout": 2})
    assert time.monotonic() - t0 < 60
    assert res.returncode == 0
    assert "cannot use the MLflow server from this job" in res.stderr and "logging offline" in res.stderr
    state = json.loads((tmp_path / ".mlflow/state.json").read_text())
    assert state["mode"] == "offline" and "fallback_reason" in state
    assert exports_of(res.stdout)["MLFLOW_TRACKING_URI"].startswith("file://")


def test_helper_never_fails_the_job(tmp_path: Path) -> None:
    helper = tmp_path / "h.py"
    shutil.copy(HELPER, helper)
    res = subprocess.run(
        [sys.executable, "-I", str(helper), "start", str(tmp_path / "missing.json")], capture_output=True, text=True, check=False
    )
    assert res.returncode == 1 and res.stdout == ""
    assert "MLflow tracking is off for this job" in res.stderr


def test_claim_is_exclusive(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "run_id")
    assert _claim(path, '{"run_id": "a"}')
    assert not _claim(path, '{"run_id": "b"}')
    assert json.loads(Path(path).read_text())["run_id"] == "a"


# ------------------------------------------------------------------------------- reading a file store
def test_read_file_store(tmp_path: Path) -> None:
    root = tmp_path / "mlruns"
    exp, run_id = create_file_store_run(str(root), experiment_name="e", run_name="r", params={"p": "1"})
    run_dir = root / exp / run_id
    (run_dir / "metrics" / "nested").mkdir(parents=True)
    # MLflow 3 appends dataset fields to a line; NaN and inf are written as Python prints them
    (run_dir / "metrics" / "loss").write_text("1000 0.5 0\n1001 0.25 1 dataset abc123\n1002 nan 2\n")
    (run_dir / "metrics" / "nested" / "acc").write_text("1000 0.9 0\n")
    (run_dir / "artifacts" / "a.txt").write_text("x")
    (run_dir / "tags" / "t").write_text("multi\nline")
    model = root / exp / "models" / "m-1"
    (model / "artifacts").mkdir(parents=True)
    (model / "artifacts" / "MLmodel").write_text("flavors: {}\n")
    (model / "meta.yaml").write_text(f"name: model\nsource_run_id: {run_id}\n")
    deleted_exp, deleted_id = create_file_store_run(str(tmp_path / "other"), experiment_name="e", run_name="gone")
    runs = read_file_store(root)
    assert len(runs) == 1
    run = runs[0]
    assert run.metrics["loss"][:2] == [(1000, 0.5, 0), (1001, 0.25, 1)]
    assert str(run.metrics["loss"][2][1]) == "nan"
    assert run.metrics["nested/acc"] == [(1000, 0.9, 0)]
    assert run.params == {"p": "1"} and run.tags["t"] == "multi\nline"
    assert run.models == [("model", model / "artifacts")]
    meta = tmp_path / "other" / deleted_exp / deleted_id / "meta.yaml"
    meta.write_text(meta.read_text().replace('lifecycle_stage: "active"', 'lifecycle_stage: "deleted"'))
    assert read_file_store(tmp_path / "other") == []


def test_artifact_files_never_follow_symlinks(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    (out / "sub").mkdir(parents=True)
    (out / "a.bin").write_bytes(b"\0\1")
    (out / "sub" / "b.txt").write_text("b")
    secret = tmp_path / "secret"
    secret.write_text("key")
    (out / "link").symlink_to(secret)
    (out / "dirlink").symlink_to(tmp_path)
    (out / "what#is?this").write_text("x")
    files, refused = artifact_files(out)
    assert [rel for rel, _ in files] == ["a.bin", "sub/b.txt"]
    assert any(r.startswith("link") for r in refused) and any(r.startswith("dirlink") for r in refused)
    assert any("what#is?this" in r for r in refused)


def test_names() -> None:
    assert valid_key("loss") and valid_key("train/loss") and valid_key("a b.c-d:e")
    assert not valid_key("../x") and not valid_key("/abs") and not valid_key("a//b") and not valid_key("x;rm")
    assert safe_artifact_path("outputs/model/MLmodel")
    for bad in ("", "../x", "a/../b", "/etc/passwd", "a#b", "a?b", "a\\b", "a\nb", "a/./b"):
        assert not safe_artifact_path(bad), bad
    assert is_http("HTTP://x") and not is_http("sqlite:///x") and not is_http(None)
    assert proxied_artifact_path("mlflow-artifacts:/1/abc/artifacts") == "1/abc/artifacts"
    assert proxied_artifact_path("mlflow-artifacts://host:5000/1/abc/artifacts") == "1/abc/artifacts"
    assert proxied_artifact_path("s3://bucket/x") is None


def test_rest_client_unreachable_is_quick() -> None:
    client = RestClient(f"http://127.0.0.1:{closed_port()}", timeout=2)
    t0 = time.monotonic()
    with pytest.raises(MlflowUnreachable):
        client.get_or_create_experiment("x")
    assert time.monotonic() - t0 < 30


# ------------------------------------------------------------------------------- local jobs, no mlflow involved
@pytest.mark.slow
def test_local_job_logs_to_its_file_store_and_is_queued(tmp_path: Path, hpcjobs_home: Path, wait_done: Any) -> None:
    """The embedded default: the job gets a file store run; when it ends the import is queued (no mlflow in this process)."""
    from hpcjobs import api
    from hpcjobs.store import Store

    job = write_job(
        tmp_path,
        """
        command: |
          echo "uri=$MLFLOW_TRACKING_URI run=$MLFLOW_RUN_ID exp=$MLFLOW_EXPERIMENT_ID"
          printf '1700000000000 0.5 3\\n' > "$HPCJOBS_TASK_DIR/mlruns/0/$MLFLOW_RUN_ID/metrics/loss"
          echo out > outputs/o.txt
        inputs:
          lr: 0.5
        """,
    )
    view = api.create_job(job)
    name = view["name"]
    assert wait_done(name)["status"] == "Completed"
    rec = Store().get(name)
    task = Path(rec.job_dir or "")
    state = json.loads((task / ".mlflow/state.json").read_text())
    log = (task / "user_logs/std_log.txt").read_text()
    assert f"run={state['local_run_id']} exp=0" in log
    assert f"uri={file_store_uri(str(task / 'mlruns'))}" in log
    runs = read_file_store(task / "mlruns")
    assert runs[0].metrics["loss"] == [(1700000000000, 0.5, 3)]
    extra = rec.extra["mlflow"]
    assert extra["state"] == "queued" and extra["params"] == {"lr": "0.5"}
    assert extra["uri"] == tracking.embedded_uri()


def test_a_pipelines_literal_inputs_are_its_runs_params(tmp_path: Path, hpcjobs_home: Path) -> None:
    from hpcjobs import api

    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    job = tmp_path / "p.yml"
    job.write_text(
        """type: pipeline
inputs:
  n_samples: 400
  tag: "it's $HOME"
  data:
    type: uri_file
    path: ./data.csv
jobs:
  a:
    command: echo ${{inputs.n}} ${{inputs.t}} ${{inputs.d}}
    inputs:
      n: ${{parent.inputs.n_samples}}
      t: ${{parent.inputs.tag}}
      d: ${{parent.inputs.data}}
"""
    )
    plan = api.plan(job, name="p1")
    assert tracking.literal_params(plan) == {"n_samples": "400", "tag": "it's $HOME"}


def test_sweep_step_trials_wait_for_the_run_another_trial_creates(tmp_path: Path) -> None:
    """The trial that lost the race for ``run_id.creating`` reads the winner's claim; a stale lock is not waited for."""
    import threading

    from hpcjobs import mlflow_job

    claim = tmp_path / "step" / ".mlflow" / "run_id"
    claim.parent.mkdir(parents=True)
    lock = Path(f"{claim}.creating")
    lock.write_text("12345")
    cfg = {"parent_claim": str(claim), "parent_create": {"run_name": "p_tune"}, "timeout": 100}
    # the server is never asked: the lock is taken, so this trial only waits for the claim
    client = RestClient(f"http://127.0.0.1:{closed_port()}", timeout=1)
    timer = threading.Timer(0.5, lambda: claim.write_text(json.dumps({"run_id": "abc", "experiment_id": "1"})))
    timer.start()
    try:
        assert mlflow_job._parent_run(cfg, client) == "abc"
    finally:
        timer.cancel()
    # a creator that took the lock 20 minutes ago and never claimed: give up at once
    claim.unlink()
    old = time.time() - 1200
    os.utime(lock, (old, old))
    t0 = time.monotonic()
    assert mlflow_job._parent_run(cfg, client) == ""
    assert time.monotonic() - t0 < 60  # not the 105 s a fresh lock is given
