"""Every job is an MLflow run, on the real Slurm test cluster (tests/cluster/up.sh).

The same checks as test_mlflow.py, with the jobs submitted to Slurm as alice from the
login node (site ``testcluster``) and from a "laptop" over SSH (site ``testcluster-ssh``):
the embedded default store, ``direct`` mode (the jobs on the compute nodes log straight to
a real ``mlflow server`` on loopback) and ``offline`` mode (imported after the job, over SSH
for the laptop).  Skipped, with the reason, where the cluster is not running.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.xdist_group("slurm")]

REPO = Path(__file__).resolve().parents[2]


def _cluster_problem() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch is not on PATH (no Slurm here; start the test cluster with tests/cluster/up.sh)"
    res = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20, check=False)
    if res.returncode != 0:
        return f"sinfo fails, the test cluster is not running (tests/cluster/up.sh): {res.stderr.strip()[:200]}"
    if not (REPO / "site-configs" / "testcluster.yml").is_file():
        return "site-configs/testcluster.yml is missing"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module")
def server(slurm: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.integration.test_mlflow import MlflowServer

    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-slurm"))
    srv.start()
    yield srv
    srv.stop()


def write_site(alice: Any, name: str, base: str, *, mode: str, uri: str | None, setup: list[str] | None = None) -> None:
    """A user site config for alice: a shipped test site with its tracking settings replaced."""
    data = yaml.safe_load((REPO / "site-configs" / f"{base}.yml").read_text())
    data["name"] = name
    data["tracking"] = {"mode": mode, **({"uri": uri} if uri else {})}
    if setup:
        data.setdefault("environment", {}).setdefault("setup", []).extend(setup)
    d = alice.home / "config" / "sites"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.yml").write_text(yaml.safe_dump(data))
    subprocess.run(["chown", "-R", "alice:alice", str(alice.home)], check=True)


def write_test_job(alice: Any, experiment: str) -> str:
    from tests.integration.test_mlflow import JOB

    alice.write("mljob/data.txt", "input data\n")
    alice.write("mljob/job.yml", textwrap.dedent(JOB).lstrip().format(experiment=experiment, n=7, sleep=0, files=0))
    return "mljob/job.yml"


def run_name(res: subprocess.CompletedProcess[str]) -> str:
    return next(line.split()[-1] for line in res.stderr.splitlines() if line.startswith("RunId:"))


@pytest.fixture(autouse=True)
def _alice_tracks(alice: Any) -> None:
    """These tests are about tracking: alice's jobs keep it on."""
    alice.tracking = True


NO_BG = {"HPCJOBS_MLFLOW_BACKGROUND": "0"}


def ok(res: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr
    return res


def test_slurm_embedded_default(alice: Any, slurm: None, tmp_path: Path) -> None:
    res = ok(alice.run("job", "create", "-f", "examples/hello-mlflow.yml", "--site", "testcluster", "--stream", env=NO_BG))
    name = run_name(res)
    synced = json.loads(ok(alice.run("job", "sync", "-n", name, "-o", "json", env=NO_BG)).stdout)
    assert synced[0]["mlflow"] == "imported", synced
    view = alice.json("job", "show", "-n", name)
    uri = ok(alice.run("mlflow-uri")).stdout.strip()
    assert uri == f"sqlite:///{alice.home}/state/mlflow/mlflow.db"
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("hello-mlflow")
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.runName` = '{name}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"epochs": "5", "greeting": "hello mlflow", "optimizer": "none"}
    assert run.data.tags["hpcjobs.slurm_job_id"] == view["scheduler"]["job_ids"][0]
    assert run.data.tags["hpcjobs.site"] == "testcluster"
    assert sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")) == [
        (i, 1.0 / (i + 1)) for i in range(5)
    ]
    got = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="outputs", dst_path=str(tmp_path), tracking_uri=uri
        )
    )
    assert (got / "greeting.txt").read_bytes() == (Path(view["paths"]["outputs"]) / "greeting.txt").read_bytes()


def test_slurm_direct(alice: Any, server: Any, tmp_path: Path) -> None:
    from tests.integration.test_mlflow import check_server_run

    write_site(alice, "tc-direct", "testcluster", mode="direct", uri=server.uri)
    job = write_test_job(alice, "slurm-direct")
    res = ok(alice.run("job", "create", "-f", job, "--site", "tc-direct", "--stream", "--web", env=NO_BG))
    name = run_name(res)
    assert any(line.startswith(f"MLflow run: {server.uri}/#/experiments/") for line in res.stderr.splitlines())
    view = alice.json("job", "show", "-n", name)
    job_dir = Path(view["paths"]["job_dir"])
    state = json.loads((job_dir / ".mlflow" / "state.json").read_text())
    assert state["mode"] == "direct", state
    run = check_server_run(server, "slurm-direct", name, job_dir, tmp_path)
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    assert tags["hpcjobs.slurm_job_id"] == view["scheduler"]["job_ids"][0]
    # tagged by the job itself, on the compute node
    assert tags["hpcjobs.host"]


def test_slurm_offline(alice: Any, server: Any, tmp_path: Path) -> None:
    from tests.integration.test_mlflow import check_server_run

    write_site(alice, "tc-offline", "testcluster", mode="offline", uri=server.uri)
    job = write_test_job(alice, "slurm-offline")
    name = run_name(ok(alice.run("job", "create", "-f", job, "--site", "tc-offline", "--stream", env=NO_BG)))
    view = alice.json("job", "show", "-n", name)
    job_dir = Path(view["paths"]["job_dir"])
    assert json.loads((job_dir / ".mlflow" / "state.json").read_text())["mode"] == "offline"
    check_server_run(server, "slurm-offline", name, job_dir, tmp_path)
    # importing again changes nothing
    again = json.loads(ok(alice.run("job", "sync", "-n", name, "--force", "-o", "json", env=NO_BG)).stdout)
    assert again[0]["mlflow"] == "imported" and again[0]["metrics"] == 0 and not again[0]["created"]


def test_ssh_offline(alice: Any, server: Any, tmp_path: Path) -> None:
    """From a laptop over SSH: the job logs into its job directory on the cluster, the import comes back over SSH."""
    from tests.integration.test_mlflow import check_server_run
    from tests.integration.test_ssh_jobs import SSH_DIR, Laptop, _listening

    if not (_listening(2222) and (SSH_DIR / "alice_ed25519").exists()):
        pytest.skip("the test sshd is not running (tests/cluster/sshd-up.sh)")
    laptop = Laptop(alice, SSH_DIR)
    # jobs started over SSH get the login shell's PATH: put the Python that has mlflow first
    write_site(alice, "tc-ssh", "testcluster-ssh", mode="offline", uri=server.uri, setup=[f"export PATH={alice.venv}/bin:$PATH"])
    laptop.ok("site", "trust", "tc-ssh", "--yes")
    job = write_test_job(alice, "ssh-offline")
    res = laptop.run("job", "create", "-f", job, "--site", "tc-ssh", "--stream")
    assert res.returncode == 0, res.stderr
    name = run_name(res)
    view = laptop.json("job", "show", "-n", name)
    job_dir = Path(view["paths"]["job_dir"])  # alice's home on the cluster is this machine's
    check_server_run(server, "ssh-offline", name, job_dir, tmp_path)


# ------------------------------------------------------------------------------- pipelines
def write_pipeline(alice: Any, experiment: str) -> str:
    from tests.integration.test_mlflow import PIPELINE

    alice.write(
        "mlpipe/pipeline.yml", textwrap.dedent(PIPELINE).lstrip().replace("EXPERIMENT_LINE", f"experiment_name: {experiment}")
    )
    return "mlpipe/pipeline.yml"


def step_dirs(view: Any) -> dict[str, Path]:
    return {s["name"]: Path(view["paths"]["job_dir"]) / "steps" / s["name"] for s in view["steps"]}


def test_slurm_pipeline_direct(alice: Any, server: Any, tmp_path: Path) -> None:
    """A pipeline on Slurm, steps on the compute nodes logging straight to the server, nested under the pipeline's run."""
    from tests.integration.test_mlflow import RERUN, STEPS, all_runs, check_pipeline

    write_site(alice, "tc-direct", "testcluster", mode="direct", uri=server.uri)
    job = write_pipeline(alice, "slurm-pipeline")
    res = ok(alice.run("job", "create", "-f", job, "--site", "tc-direct", "--stream", "--web", *RERUN, env=NO_BG))
    name = run_name(res)
    view = alice.json("job", "show", "-n", name)
    assert view["status"] == "Completed"
    dirs = step_dirs(view)
    parent, kids = check_pipeline(server.uri, "slurm-pipeline", name, dirs, tmp_path)
    assert f"MLflow run: {server.uri}/#/experiments/{parent.info.experiment_id}/runs/{parent.info.run_id}" in res.stderr
    slurm_ids = {s["name"]: s["slurm_id"] for s in view["steps"]}
    for step in STEPS:
        tags = kids[f"{name}_{step}"].data.tags
        assert tags["hpcjobs.slurm_job_id"] == slurm_ids[step] and tags["hpcjobs.site"] == "tc-direct"
        # each step made its run on the compute node, nested under the pipeline's run from its start
        assert json.loads((dirs[step] / ".mlflow" / "state.json").read_text())["mode"] == "direct"
    log = (dirs["train"] / "user_logs" / "std_log.txt").read_text()
    assert f"PARENT_RUN {parent.info.run_id}" in log and "PARENT_STATUS RUNNING" in log, log
    before = sorted(r.info.run_id for r in all_runs(server.uri, "slurm-pipeline"))
    assert len(before) == 4
    again = json.loads(ok(alice.run("job", "sync", "-n", name, "--force", "-o", "json", env=NO_BG)).stdout)
    assert all(r["mlflow"] == "imported" and not r["created"] for r in again), again
    assert sorted(r.info.run_id for r in all_runs(server.uri, "slurm-pipeline")) == before


def test_slurm_pipeline_failing_step(alice: Any, server: Any, tmp_path: Path) -> None:
    """On Slurm a failing step cancels what depends on it: FAILED, KILLED, and the independent step FINISHED."""
    from tests.integration.test_mlflow import RERUN, STEPS, all_runs, check_pipeline

    write_site(alice, "tc-direct", "testcluster", mode="direct", uri=server.uri)
    job = write_pipeline(alice, "slurm-pipeline-fail")
    res = alice.run(
        "job", "create", "-f", job, "--site", "tc-direct", "--stream", "--set", "jobs.prep.inputs.fail=3", *RERUN, env=NO_BG
    )
    assert res.returncode == 1, res.stderr
    name = run_name(res)
    view = alice.json("job", "show", "-n", name)
    assert view["status"] == "Failed"
    parent, kids = check_pipeline(server.uri, "slurm-pipeline-fail", name, step_dirs(view), tmp_path, status="FAILED")
    assert {s: kids[f"{name}_{s}"].info.status for s in STEPS} == {"prep": "FAILED", "train": "KILLED", "side": "FINISHED"}
    assert kids[f"{name}_prep"].data.tags["hpcjobs.exit_code"] == "3"
    assert kids[f"{name}_prep"].data.metrics == {"rows": 5.0}
    assert parent.data.tags["hpcjobs.status"] == "Failed"
    assert len(all_runs(server.uri, "slurm-pipeline-fail")) == 4
