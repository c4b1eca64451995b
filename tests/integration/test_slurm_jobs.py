"""Command jobs on the real Slurm test cluster, submitted as alice from the 'login node'."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import conf_without_accounting

pytestmark = pytest.mark.integration

SITE = ("--site", "testcluster")


def _sacct(job_id: str, fields: str = "State,Partition,ExitCode,User") -> list[str]:
    """Slurm's accounting row for a job, once slurmdbd has all of it (it lags a few seconds)."""
    row: list[str] = []
    for _ in range(60):
        res = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-j", job_id, f"--format={fields}"], capture_output=True, text=True, check=True
        )
        row = res.stdout.strip().split("|")
        if all(row) and len(row) == fields.count(",") + 1:
            return row
        time.sleep(0.5)
    return row


def test_hello_world_streams_and_completes_as_alice(alice) -> None:
    res = alice.run("job", "create", "-f", "examples/hello-world.yml", *SITE, "--stream")
    assert res.returncode == 0, res.stderr
    assert "hello world" in res.stdout
    name = next(line.split()[-1] for line in res.stderr.splitlines() if line.startswith("RunId:"))
    view = alice.json("job", "show", "-n", name)
    assert view["status"] == "Completed"
    assert view["exit_code"] == 0
    assert view["scheduler"]["nodes"] in ("node1", "node2")
    assert view["start_time"] and view["end_time"]
    (job_id,) = view["scheduler"]["job_ids"]
    # Slurm itself says the job belonged to alice and ran in the default partition
    row = _sacct(job_id)
    assert row[0] == "COMPLETED" and row[1] == "debug" and row[3] == "alice"


def test_environment_variables_and_literal_inputs_with_set(alice) -> None:
    res = alice.run("job", "create", "-f", "examples/hello-world-env-var.yml", *SITE, "--stream")
    assert res.returncode == 0 and "hello world" in res.stdout
    res = alice.run("job", "create", "-f", "examples/hello-world-input.yml", "--set", "inputs.hello_number=24", *SITE, "--stream")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == ["hello world", "24"]


@pytest.mark.parametrize(("instance_type", "expected"), [("gpu-1", "1"), ("gpu-2", "2")])
def test_gpu_job_sees_exactly_the_requested_gpus(alice, instance_type: str, expected: str) -> None:
    job = alice.write(
        f"gpu-{instance_type}.yml",
        "command: python3 -c \"import os; v=os.environ['CUDA_VISIBLE_DEVICES']; print('GPUS', len(v.split(',')), v)\"\n"
        "compute: azureml:gpu-cluster\n"
        f"resources: {{instance_type: {instance_type}}}\n",
    )
    res = alice.run("job", "create", "-f", str(job), *SITE, "--stream")
    assert res.returncode == 0, res.stderr
    line = next(line for line in res.stdout.splitlines() if line.startswith("GPUS"))
    assert line.split()[1] == expected


def test_failing_command_ends_failed_with_its_exit_code(alice) -> None:
    job = alice.write("fail.yml", "command: echo about to fail; exit 3\n")
    res = alice.run("job", "create", "-f", str(job), *SITE, "--stream", "-o", "json")
    assert res.returncode == 1
    view = json.loads(res.stdout)
    assert view["status"] == "Failed"
    assert view["exit_code"] == 3
    assert "exit code 3" in view["reason"]


def test_timeout_exceeded_ends_failed_with_timeout(alice) -> None:
    # Slurm's smallest limit is one minute; it kills the job when the limit passes
    job = alice.write("slow.yml", "command: sleep 300\nlimits: {timeout: 60}\n")
    res = alice.run("job", "create", "-f", str(job), *SITE, "-o", "json")
    assert res.returncode == 0, res.stderr
    name = json.loads(res.stdout)["name"]
    view = alice.wait(name, timeout=200)
    assert view["status"] == "Failed"
    assert view["reason"] == "timeout"


def test_cancel_ends_canceled(alice) -> None:
    job = alice.write("long.yml", "command: sleep 600\n")
    name = alice.json("job", "create", "-f", str(job), *SITE)["name"]
    # wait until it runs, so the cancel has a real process to stop
    for _ in range(60):
        if alice.json("job", "show", "-n", name)["status"] == "Running":
            break
        time.sleep(0.5)
    view = alice.json("job", "cancel", "-n", name)
    assert view["status"] == "Canceled"
    res = alice.run("job", "stream", "-n", name)
    assert res.returncode == 3


def test_bad_partition_is_refused_with_slurms_message_and_no_job(alice) -> None:
    sites = alice.home / "config" / "sites"
    sites.mkdir(parents=True)
    src = Path(__file__).resolve().parents[2] / "site-configs" / "testcluster.yml"
    broken = src.read_text().replace("name: testcluster", "name: broken").replace("partition: debug", "partition: nosuchpart")
    (sites / "broken.yml").write_text(broken)
    subprocess.run(["chown", "-R", "alice:alice", str(alice.home)], check=True)
    name = f"badpart_{uuid.uuid4().hex[:10]}"
    res = alice.run("job", "create", "-f", "examples/hello-world.yml", "--site", "broken", "--name", name)
    assert res.returncode == 2
    assert "Invalid partition name specified" in res.stderr
    assert "Traceback" not in res.stderr
    assert alice.json("job", "list") == []
    # Slurm has no job of that name (other tests submit as alice at the same time)
    queued = subprocess.run(["squeue", "-h", "--states=all", f"--name={name}", "-o", "%i"], capture_output=True, text=True, check=True)
    assert queued.stdout.strip() == ""


def test_inherited_sbatch_variables_do_not_change_the_job(alice) -> None:
    res = alice.run(
        "job", "create", "-f", "examples/hello-world.yml", *SITE, "--stream", "-o", "json",
        env={"SBATCH_PARTITION": "gpu", "SBATCH_TIMELIMIT": "1"},
    )
    assert res.returncode == 0, res.stderr
    assert "SBATCH_PARTITION" in res.stderr  # the user is told what was ignored
    view = json.loads(res.stdout)
    (job_id,) = view["scheduler"]["job_ids"]
    row = _sacct(job_id, "Partition,Timelimit")
    assert row[0] == "debug"
    assert row[1] == "00:30:00"


def test_validate_test_only_asks_slurm(alice) -> None:
    ok = alice.run("job", "validate", "-f", "examples/hello-world.yml", *SITE)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["test_only"][0]["ok"] is True
    job = alice.write("toomany.yml", "command: echo hi\ncompute: gpu-cluster\nresources: {instance_count: 1}\n")
    # 3 nodes do not exist in this 2-node cluster: Slurm says so before anything is submitted
    bad = alice.run("job", "validate", "-f", str(job), *SITE, "--set", "resources.instance_count=3")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["test_only"][0]["ok"] is False


def test_compute_list_shows_live_partitions(alice) -> None:
    rows = alice.json("compute", "list", *SITE)
    by_name = {r["name"]: r for r in rows}
    assert by_name["cpu-cluster"]["partition"] == "debug"
    assert by_name["gpu-cluster"]["nodes"] == 2
    assert "gpu:2" in by_name["gpu-cluster"]["gres"]
    one = alice.json("compute", "show", "-n", "gpu-cluster", *SITE)
    assert one["gpus_per_node"] == 2


def test_ended_jobs_are_final_even_while_accounting_is_down(alice) -> None:
    # squeue says the job ended; sacct cannot say anything: the job must not stay Running
    # (or go back to Queued) until accounting returns, and its exit code comes from its marker
    conf = conf_without_accounting(alice.workdir / "no-accounting")
    env = {"SLURM_CONF": str(conf)}
    job = alice.write("fail-noacct.yml", "command: echo about to fail; exit 5\n")
    res = alice.run("job", "create", "-f", str(job), *SITE, "--stream", "-o", "json", env=env)
    returned = time.time()
    assert res.returncode == 1, res.stderr
    view = json.loads(res.stdout)
    assert view["status"] == "Failed" and view["exit_code"] == 5, view
    assert "exit code 5" in view["reason"]
    assert view["start_time"] and view["end_time"]
    # the CLI knew soon after the job ended (Slurm's own end time, from the real accounting),
    # not 120 s after submission, when a job unknown to squeue and sacct is judged by its marker
    (job_id,) = view["scheduler"]["job_ids"]
    end = _sacct(job_id, "End")[0]
    assert returned - dt.datetime.fromisoformat(end).timestamp() < 60, (end, returned)

    job = alice.write("sleep-noacct.yml", "command: sleep 300\n")
    name = alice.json("job", "create", "-f", str(job), *SITE, env=env)["name"]  # type: ignore[index]
    view = alice.json("job", "cancel", "-n", name, env=env)
    assert isinstance(view, dict)
    deadline = time.monotonic() + 200
    while view["status"] != "Canceled" and time.monotonic() < deadline:
        time.sleep(1)
        view = alice.json("job", "show", "-n", name, env=env)  # type: ignore[assignment]
    assert view["status"] == "Canceled", view
