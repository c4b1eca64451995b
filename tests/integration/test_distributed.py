"""Distributed jobs (PyTorch, MPI, TensorFlow) on the real two-node test cluster, submitted as alice.

Every job spans both nodes (node1, node2) with two processes each and runs in seconds.
PyTorch needs torch in the Python the jobs use: alice's PATH starts with /opt/hpcjobs-venv/bin
(tests/integration/conftest.py), so the ``torch`` fixture installs ``torch==2.13.0`` there --
pip takes that CPU build from this machine's disk (/opt/wheels); a bare ``torch`` would
download a multi-GB CUDA build.  MPI uses the cluster's Open MPI through ``srun --mpi=pmix``
and the site's ``mpi_env`` (OMPI_MCA_btl=self,tcp).  TF_CONFIG is checked without
TensorFlow: the job prints it.
"""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

SITE = ("--site", "testcluster")
TORCH_SPEC = "torch==2.13.0"  # the CPU build on this machine's disk; never a bare "torch"


@pytest.fixture(scope="session")
def torch(alice_venv: Path) -> Path:
    """The jobs' python (alice's venv) with torch; installed from local disk if missing."""
    python = alice_venv / "bin" / "python"
    if subprocess.run([str(python), "-c", "import torch"], capture_output=True, check=False).returncode == 0:
        return python
    # one installer at a time (parallel test workers share the venv)
    with open("/run/hpcjobs-torch-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run([str(python), "-c", "import torch"], capture_output=True, check=False).returncode != 0:
            res = subprocess.run(
                [str(alice_venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", TORCH_SPEC],
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            if res.returncode != 0:
                pytest.skip(f"cannot install {TORCH_SPEC} into {alice_venv}: {res.stderr[-1500:]}")
            subprocess.run(["chmod", "-R", "a+rX", str(alice_venv)], check=True)
    return python


def _create(alice: Any, *args: str, timeout: float = 300) -> dict[str, Any]:
    """Submit, stream to the end, and return the job's view.

    MLflow tracking is off (tracking has its own tests): importing mlflow in a job and in the
    CLI costs seconds on a busy machine.
    """
    res = alice.run("job", "create", *args, *SITE, "--stream", "-o", "json", timeout=timeout, env={"HPCJOBS_TRACKING": "none"})
    assert res.returncode in (0, 1), f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    view = json.loads(res.stdout)
    assert isinstance(view, dict)
    return view


def _log(view: dict[str, Any]) -> str:
    return Path(view["paths"]["log"]).read_text()


def _rank_logs(view: dict[str, Any]) -> dict[int, str]:
    logs = Path(view["paths"]["job_dir"]) / "wd" / "logs"
    return {int(p.stem.split("_")[1]): p.read_text() for p in sorted(logs.glob("rank_*.txt"))}


def _port_base(view: dict[str, Any]) -> int:
    (job_id,) = view["scheduler"]["job_ids"]
    return 20000 + int(job_id) % 1000 * 10


def test_pytorch_ddp_allreduce_across_two_nodes(alice: Any, torch: Path) -> None:
    # four processes importing torch on the test machine's two cores take a while
    view = _create(
        alice,
        "-f",
        "examples/distributed/pytorch-cifar/job.yml",
        "--set",
        "inputs.epochs=1",
        "--set",
        "inputs.samples=256",
        timeout=600,
    )
    assert view["status"] == "Completed", _log(view)
    logs = _rank_logs(view)
    assert sorted(logs) == [0, 1, 2, 3]
    infos = {}
    for rank, text in logs.items():
        (line,) = [ln for ln in text.splitlines() if ln.startswith("RANKINFO ")]
        infos[rank] = json.loads(line.removeprefix("RANKINFO "))
    for rank, info in infos.items():
        assert info["rank"] == rank
        assert info["world_size"] == 4
        assert info["local_rank"] == rank % 2
        assert info["node_rank"] == rank // 2
        assert info["local_world_size"] == 2
        assert info["all_reduce"] == info["expected"] == 10  # 1 + 2 + 3 + 4
        assert info["backend"] == "gloo"
        assert info["master"] == f"node1:{_port_base(view)}"
    # rank 0 is streamed into the job's log; the others only have their own files
    log = _log(view)
    assert '"rank": 0' in log and '"rank": 1' not in log
    assert "epoch 0: loss" in log and "model saved" in log
    assert (Path(view["paths"]["outputs"]) / "model.pt").stat().st_size > 0
    assert view["scheduler"]["nodes"] == "node[1-2]"


def test_mpi_allreduce_across_two_nodes_with_pmix(alice: Any) -> None:
    view = _create(alice, "-f", "examples/distributed/mpi-hello/job.yml")
    log = _log(view)
    assert view["status"] == "Completed", log
    seen = {}
    for match in re.finditer(r"MPIHELLO rank=(\d+) size=(\d+) node=(\S+) host=\S+ allreduce=(\d+) expected=(\d+)", log):
        rank, size, node, total, expected = match.groups()
        seen[int(rank)] = node
        assert (size, total, expected) == ("4", "10", "10")
    # block layout: ranks 0-1 on the first node, 2-3 on the second
    assert seen == {0: "node1", 1: "node1", 2: "node2", 3: "node2"}
    # every rank streamed (HPCJOBS_STREAM_RANKS: all), the others with their rank in front
    assert "[rank 3] MPIHELLO rank=3" in log


TF_JOB = """\
command: >-
  python3 -c "import json, os;
  print('TFCONFIG', os.environ['SLURM_PROCID'], os.environ['SLURMD_NODENAME'], json.dumps(json.loads(os.environ['TF_CONFIG'])))"
resources: {{instance_count: 2}}
distribution: {{type: tensorflow, worker_count: {workers}, parameter_server_count: {ps}}}
environment_variables: {{HPCJOBS_STREAM_RANKS: all}}
"""


@pytest.mark.parametrize(("workers", "ps"), [(3, 1), (2, 1)])
def test_tf_config_per_task(alice: Any, workers: int, ps: int) -> None:
    job = alice.write(f"tf-{workers}-{ps}.yml", TF_JOB.format(workers=workers, ps=ps))
    view = _create(alice, "-f", str(job))
    log = _log(view)
    assert view["status"] == "Completed", log
    configs: dict[int, tuple[str, dict[str, Any]]] = {}
    for match in re.finditer(r"TFCONFIG (\d+) (\S+) (\{.*\})$", log, re.M):
        configs[int(match.group(1))] = (match.group(2), json.loads(match.group(3)))
    total = workers + ps
    assert sorted(configs) == list(range(total))
    base = _port_base(view)
    # the address of every task: its node, and base + its index among the tasks of that node
    per_node: dict[str, int] = {}
    addresses = []
    for rank in range(total):
        node = configs[rank][0]
        addresses.append(f"{node}:{base + per_node.get(node, 0)}")
        per_node[node] = per_node.get(node, 0) + 1
    assert set(per_node) == {"node1", "node2"}
    cluster = {"worker": addresses[:workers], "ps": addresses[workers:]}
    for rank, (_node, config) in configs.items():
        assert config["cluster"] == cluster
        want = {"type": "worker", "index": rank} if rank < workers else {"type": "ps", "index": rank - workers}
        assert config["task"] == want
        assert config["environment"] == "cloud"


def test_a_failed_rank_fails_the_job_and_is_named(alice: Any) -> None:
    job = alice.write(
        "fail-rank.yml",
        "command: 'if [ \"$RANK\" = 3 ]; then echo rank three gives up >&2; exit 7; fi; sleep 120'\n"
        "resources: {instance_count: 2}\n"
        "distribution: {type: pytorch, process_count_per_instance: 2}\n",
    )
    started = time.monotonic()
    view = _create(alice, "-f", str(job))
    elapsed = time.monotonic() - started
    log = _log(view)
    assert view["status"] == "Failed", log
    # the failing rank's own exit code, not the 143 of the ranks srun stopped because of it
    assert view["exit_code"] == 7
    assert "exit code 7" in view["reason"]
    assert "task 3: Exited with exit code 7" in log  # srun's own words
    assert "hpcjobs: rank 3 (on node2) failed first, with exit code 7" in log
    assert "[rank 3] rank three gives up" in log  # the tail of its log, though it was not streamed
    assert "rank three gives up" in _rank_logs(view)[3]
    assert elapsed < 90, "the other ranks (sleep 120) were not stopped"
