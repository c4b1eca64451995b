"""Distributed launches (hpcjobs.distributed): layouts, the srun line, and the rank wrapper run by real bash.

The rank wrapper (``$HPCJOBS_STATE/rank.sh``) is cut out of the rendered job script and run
with the variables srun gives a task, so the values a training script sees are checked
without a cluster; tests/integration/test_distributed.py runs the same scripts on Slurm.
(Named apart from that file: the test folders are not packages, so two modules called
test_distributed would collide when pytest collects both.)
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from hpcjobs import distributed
from hpcjobs.errors import ValidationError
from hpcjobs.plan import Plan, Target, plan_job
from hpcjobs.site import Site, local_site
from hpcjobs.spec import models as m
from hpcjobs.spec.load import load_job

TARGET = Target(home="/home/alice", user="alice")


def _site(**extra: object) -> Site:
    data: dict[str, object] = {
        "name": "cluster",
        "job_root": "/srv/jobs/$USER",
        "computes": {
            "cpu": {"partition": "debug"},
            "gpu": {"partition": "gpu", "gpus_per_node": 2, "cpus_per_task": 1},
        },
        "default_compute": "cpu",
    }
    data.update(extra)
    return Site.model_validate(data)


def _plan(tmp_path: Path, text: str, site: Site | None = None) -> Plan:
    job = tmp_path / "job.yml"
    job.write_text(textwrap.dedent(text))
    return plan_job(load_job(job, []), site or _site(), TARGET, name="dist_job", token="tok")


def _script(plan: Plan) -> str:
    (script,) = plan.scripts
    return script.text


def _srun_line(text: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith("srun ")]
    return line


def _rank_sh(text: str) -> str:
    """The rank wrapper the job script writes, exactly as bash will see it."""
    match = re.search(r"<<'HPCJOBS_RANK_EOF'\n(.*?\n)HPCJOBS_RANK_EOF\n", text, re.S)
    assert match, "no rank wrapper in the script"
    return match.group(1)


PYTORCH = """
    command: python train.py
    resources: {instance_count: 2}
    distribution: {type: pytorch, process_count_per_instance: 2}
"""


# --------------------------------------------------------------------------- layouts
def test_no_distribution_renders_nothing() -> None:
    assert distributed.launch(_site(), None, nodes=1, gpus_per_node=0, warnings=[]) == ([], [])


@pytest.mark.parametrize(
    ("dist", "nodes", "tasks", "per_node"),
    [
        (m.PyTorchDistribution(process_count_per_instance=4), 2, 8, 4),
        (m.MpiDistribution(process_count_per_instance=1), 3, 3, 1),
        (m.TensorFlowDistribution(worker_count=3, parameter_server_count=1), 2, 4, 2),
        (m.TensorFlowDistribution(worker_count=2, parameter_server_count=1), 2, 3, None),
        (m.TensorFlowDistribution(), 3, 3, 1),  # worker_count defaults to instance_count (Azure)
    ],
)
def test_layout(dist: object, nodes: int, tasks: int, per_node: int | None) -> None:
    lay = distributed.layout(dist, nodes=nodes)
    assert lay is not None
    assert (lay.nodes, lay.tasks, lay.per_node) == (nodes, tasks, per_node)


def test_tensorflow_needs_a_task_per_node() -> None:
    with pytest.raises(ValidationError, match=r"less than resources\.instance_count") as err:
        distributed.layout(m.TensorFlowDistribution(worker_count=1), nodes=2)
    assert err.value.field == "distribution.worker_count"


def test_tensorflow_tasks_per_node_are_bounded_by_the_port_block() -> None:
    with pytest.raises(ValidationError, match="ports"):
        distributed.layout(m.TensorFlowDistribution(worker_count=11), nodes=1)
    # the local site puts every task on this machine, one port each
    lay = distributed.layout(m.TensorFlowDistribution(worker_count=3, parameter_server_count=1), nodes=2, local=True)
    assert lay is not None and (lay.nodes, lay.tasks, lay.tasks_per_node) == (1, 4, "4")


def test_ray_is_refused_with_a_hint() -> None:
    with pytest.raises(ValidationError, match="ray") as err:
        distributed.layout(m.RayDistribution(), nodes=1)
    assert err.value.hint


def test_port_block_matches_the_bash_formula() -> None:
    for job_id in (0, 7, 999, 1000, 123456):
        block = distributed.port_block(job_id)
        out = subprocess.run(
            ["bash", "-c", f"SLURM_JOB_ID={job_id}; echo $(( 20000 + SLURM_JOB_ID % 1000 * 10 ))"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert int(out.stdout) == block.start
        assert len(block) == distributed.PORT_BLOCK
        # below the kernel's ephemeral ports, so no outgoing connection holds one
        assert 1024 < block.start and block.stop <= 32768
    assert distributed.port_block(12345).start == 23450


# --------------------------------------------------------------------------- the job script
def test_pytorch_srun_matches_the_allocation(tmp_path: Path) -> None:
    plan = _plan(tmp_path, PYTORCH)
    (script,) = plan.scripts
    assert "--nodes=2" in script.sbatch_options and "--ntasks-per-node=2" in script.sbatch_options
    line = _srun_line(script.text)
    words = line.split()
    assert words[:6] == ["srun", "--nodes=2", "--ntasks=4", "--ntasks-per-node=2", "--distribution=block", "--kill-on-bad-exit=1"]
    assert "--mpi" not in line
    assert line.endswith('bash "$HPCJOBS_STATE/rank.sh" bash "$HPCJOBS_STATE/command.sh"')
    # rank 0's node is the allocation's first one, from scontrol
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in script.text


def test_mpi_uses_the_sites_mpi_plugin(tmp_path: Path) -> None:
    job = "command: ./a.out\nresources: {instance_count: 2}\ndistribution: {type: mpi, process_count_per_instance: 3}\n"
    assert "--mpi=pmix" in _srun_line(_script(_plan(tmp_path, job)))
    line = _srun_line(_script(_plan(tmp_path, job, _site(mpi="pmi2"))))
    assert "--mpi=pmi2" in line and "--ntasks=6" in line and "--ntasks-per-node=3" in line


def test_uneven_tensorflow_lets_srun_lay_out_the_tasks(tmp_path: Path) -> None:
    job = "command: python tf.py\nresources: {instance_count: 2}\ndistribution: {type: tensorflow, worker_count: 2, parameter_server_count: 1}\n"
    text = _script(_plan(tmp_path, job))
    line = _srun_line(text)
    assert "--ntasks=3" in line and "--ntasks-per-node" not in line
    # the allocation's --ntasks-per-node=2 would otherwise make srun warn and ignore it
    assert "unset SLURM_NTASKS_PER_NODE" in text


def test_gpu_oversubscription_warns(tmp_path: Path) -> None:
    job = "command: python t.py\ncompute: gpu\nresources: {instance_count: 1}\ndistribution: {type: pytorch, process_count_per_instance: 4}\n"
    plan = _plan(tmp_path, job)
    assert any("more than the 2 GPUs per node" in w for w in plan.warnings)


def test_shm_size_warns_where_the_runtime_shares_the_nodes_shm(tmp_path: Path) -> None:
    job = "command: python t.py\nresources: {shm_size: 2g}\n"
    plan = _plan(tmp_path, job)
    assert any("shm_size=2g is ignored" in w for w in plan.warnings)


def test_local_site_runs_ranks_with_a_shell_function(tmp_path: Path) -> None:
    plan = _plan(tmp_path, PYTORCH, local_site())
    text = _script(plan)
    assert not [ln for ln in text.splitlines() if ln.startswith("srun ")]
    assert 'hpcjobs_run_ranks bash "$HPCJOBS_STATE/command.sh"' in text
    assert any("local site runs all 4 processes" in w for w in plan.warnings)


def test_rendered_scripts_are_valid_bash(tmp_path: Path) -> None:
    jobs = [
        PYTORCH,
        "command: x\nresources: {instance_count: 2}\ndistribution: {type: mpi, process_count_per_instance: 2}\n",
        "command: x\nresources: {instance_count: 2}\ndistribution: {type: tensorflow, worker_count: 2, parameter_server_count: 1}\n",
    ]
    for i, job in enumerate(jobs):
        for site in (_site(), local_site()):
            text = _script(_plan(tmp_path, job, site))
            for name, body in ((f"job{i}.sh", text), (f"rank{i}.sh", _rank_sh(text))):
                path = tmp_path / name
                path.write_text(body)
                res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
                assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------- the rank wrapper, in real bash
PRINT_ENV = (
    "import json, os; names = ('RANK','LOCAL_RANK','WORLD_SIZE','NODE_RANK','LOCAL_WORLD_SIZE','MASTER_ADDR','MASTER_PORT',"
    "'TF_CONFIG','OMPI_COMM_WORLD_RANK','OMPI_COMM_WORLD_SIZE','OMPI_COMM_WORLD_LOCAL_RANK','OMPI_COMM_WORLD_LOCAL_SIZE',"
    "'AZ_BATCHAI_MPI_MASTER_NODE'); print('ENV ' + json.dumps({k: os.environ[k] for k in names if k in os.environ}))"
)


def _run_rank(
    tmp_path: Path, rank_sh: str, task: dict[str, str], *command: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    state, work = tmp_path / "state", tmp_path / "wd"
    (state / "ranks").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    wrapper = state / "rank.sh"
    wrapper.write_text(rank_sh)
    env = {
        "PATH": os.environ["PATH"],
        "HPCJOBS_STATE": str(state),
        "HPCJOBS_WORK": str(work),
        "HPCJOBS_MASTER_ADDR": "node1",
        "HPCJOBS_HOSTS": "node1 node2 ",
        "SLURM_JOB_ID": "4321",
        **task,
        **(extra or {}),
    }
    return subprocess.run(["bash", str(wrapper), *command], capture_output=True, text=True, env=env, cwd=work, check=False)


def _task(procid: int, localid: int, nodeid: int, ntasks: int, per_node: str) -> dict[str, str]:
    return {
        "SLURM_PROCID": str(procid),
        "SLURM_LOCALID": str(localid),
        "SLURM_NODEID": str(nodeid),
        "SLURM_STEP_NUM_TASKS": str(ntasks),
        "SLURM_STEP_TASKS_PER_NODE": per_node,
        "SLURMD_NODENAME": f"node{nodeid + 1}",
    }


def _env_line(out: str) -> dict[str, str]:
    (line,) = [ln for ln in out.splitlines() if ln.startswith("ENV ")]
    return dict(json.loads(line[4:]))


def test_pytorch_rank_sees_what_azure_ml_sets(tmp_path: Path) -> None:
    rank_sh = _rank_sh(_script(_plan(tmp_path, PYTORCH)))
    seen = {}
    for procid in range(4):
        res = _run_rank(tmp_path, rank_sh, _task(procid, procid % 2, procid // 2, 4, "2(x2)"), "python3", "-c", PRINT_ENV)
        assert res.returncode == 0, res.stderr
        log = (tmp_path / "wd" / "logs" / f"rank_{procid}.txt").read_text()
        seen[procid] = _env_line(log)
        # only rank 0 reaches the job's log by default
        assert ("ENV " in res.stdout) == (procid == 0)
    for procid, env in seen.items():
        assert env == {
            "RANK": str(procid),
            "LOCAL_RANK": str(procid % 2),
            "WORLD_SIZE": "4",
            "NODE_RANK": str(procid // 2),
            "LOCAL_WORLD_SIZE": "2",
            "MASTER_ADDR": "node1",
            "MASTER_PORT": "23210",  # 20000 + 4321 % 1000 * 10
        }


def test_mpi_rank_gets_open_mpi_and_azure_names(tmp_path: Path) -> None:
    job = "command: x\nresources: {instance_count: 2}\ndistribution: {type: mpi, process_count_per_instance: 2}\n"
    rank_sh = _rank_sh(_script(_plan(tmp_path, job)))
    res = _run_rank(
        tmp_path, rank_sh, _task(3, 1, 1, 4, "2(x2)"), "python3", "-c", PRINT_ENV, extra={"HPCJOBS_STREAM_RANKS": "all"}
    )
    assert res.returncode == 0, res.stderr
    env = _env_line(res.stdout.replace("[rank 3] ", ""))
    assert env["OMPI_COMM_WORLD_RANK"] == "3" and env["OMPI_COMM_WORLD_SIZE"] == "4"
    assert env["OMPI_COMM_WORLD_LOCAL_RANK"] == "1" and env["OMPI_COMM_WORLD_LOCAL_SIZE"] == "2"
    assert env["AZ_BATCHAI_MPI_MASTER_NODE"] == "node1"
    assert "RANK" not in env  # Azure ML sets the torch names only for type pytorch


@pytest.mark.parametrize(
    ("workers", "ps", "per_node", "expected_workers", "expected_ps"),
    [
        (3, 1, "2(x2)", ["node1:23210", "node1:23211", "node2:23210"], ["node2:23211"]),
        (2, 1, "2,1", ["node1:23210", "node1:23211"], ["node2:23210"]),
        (2, 0, "1(x2)", ["node1:23210", "node2:23210"], None),
    ],
)
def test_tf_config_per_task(
    tmp_path: Path, workers: int, ps: int, per_node: str, expected_workers: list[str], expected_ps: list[str] | None
) -> None:
    job = f"command: x\nresources: {{instance_count: 2}}\ndistribution: {{type: tensorflow, worker_count: {workers}, parameter_server_count: {ps}}}\n"
    rank_sh = _rank_sh(_script(_plan(tmp_path, job)))
    counts = [
        int(c) for c in re.sub(r"(\d+)\(x(\d+)\)", lambda mo: ",".join([mo.group(1)] * int(mo.group(2))), per_node).split(",")
    ]
    procid = 0
    for node, count in enumerate(counts):
        for local in range(count):
            res = _run_rank(tmp_path, rank_sh, _task(procid, local, node, workers + ps, per_node), "python3", "-c", PRINT_ENV)
            assert res.returncode == 0, res.stderr
            tf = json.loads(_env_line((tmp_path / "wd" / "logs" / f"rank_{procid}.txt").read_text())["TF_CONFIG"])
            cluster = {"worker": expected_workers} if expected_ps is None else {"worker": expected_workers, "ps": expected_ps}
            task = {"type": "worker", "index": procid} if procid < workers else {"type": "ps", "index": procid - workers}
            assert tf == {"cluster": cluster, "task": task, "environment": "cloud"}
            procid += 1


def test_failed_rank_is_named_and_claims_the_failure_once(tmp_path: Path) -> None:
    rank_sh = _rank_sh(_script(_plan(tmp_path, PYTORCH)))
    res = _run_rank(tmp_path, rank_sh, _task(2, 0, 1, 4, "2(x2)"), "bash", "-c", "echo about to fail; exit 7")
    assert res.returncode == 7
    assert "hpcjobs: rank 2 on node2 exited with code 7" in res.stderr
    assert "[rank 2] about to fail" in res.stderr  # the tail of a rank that was not streamed
    assert (tmp_path / "state" / "ranks" / "first" / "rank").read_text() == "7 2 node2\n"
    # a later failure (a rank stopped because of the first) does not take it over
    res = _run_rank(tmp_path, rank_sh, _task(0, 0, 0, 4, "2(x2)"), "bash", "-c", "exit 143")
    assert res.returncode == 143
    assert (tmp_path / "state" / "ranks" / "first" / "rank").read_text() == "7 2 node2\n"


def test_stream_ranks_prefixes_other_ranks(tmp_path: Path) -> None:
    rank_sh = _rank_sh(_script(_plan(tmp_path, PYTORCH)))
    res = _run_rank(tmp_path, rank_sh, _task(1, 1, 0, 4, "2(x2)"), "echo", "hi", extra={"HPCJOBS_STREAM_RANKS": "0,1"})
    assert res.stdout == "[rank 1] hi\n"
    assert (tmp_path / "wd" / "logs" / "rank_1.txt").read_text() == "hi\n"


# --------------------------------------------------------------------------- the whole script, on the local site
def _run_local_job(tmp_path: Path, job: str, timeout: float = 60) -> tuple[int, str, float]:
    """Run a local-site job script with bash, as hpcjobs.localrun does, minus tracking."""
    plan = _plan(tmp_path, job, local_site())
    text = _script(plan)
    job_dir = tmp_path / "job"
    text = text.replace(plan.job_dir, str(job_dir))
    script = tmp_path / "job.sh"
    script.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MLFLOW_", "HPCJOBS_"))}
    started = time.monotonic()
    res = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout, check=False
    )
    return res.returncode, res.stdout + res.stderr, time.monotonic() - started


def test_local_ranks_all_run_with_their_variables(tmp_path: Path) -> None:
    command = json.dumps(f"python3 -c {shlex.quote(PRINT_ENV)}")  # JSON is a YAML string
    rc, out, _ = _run_local_job(tmp_path, PYTORCH.replace("python train.py", command))
    assert rc == 0, out
    envs = [_env_line((tmp_path / "job" / "wd" / "logs" / f"rank_{r}.txt").read_text()) for r in range(4)]
    assert [(e["RANK"], e["LOCAL_RANK"], e["NODE_RANK"], e["WORLD_SIZE"]) for e in envs] == [
        ("0", "0", "0", "4"),
        ("1", "1", "0", "4"),
        ("2", "0", "1", "4"),
        ("3", "1", "1", "4"),
    ]
    assert {e["MASTER_ADDR"] for e in envs} == {"127.0.0.1"}


def test_local_failed_rank_stops_the_others_and_sets_the_exit_code(tmp_path: Path) -> None:
    job = PYTORCH.replace("python train.py", """bash -c 'if [ "$RANK" = 3 ]; then exit 5; fi; sleep 30' """)
    rc, out, elapsed = _run_local_job(tmp_path, job)
    assert rc == 5, out
    assert elapsed < 20, "the other ranks were not stopped"
    assert "rank 3 (on" in out and "failed first, with exit code 5" in out
    assert (tmp_path / "job" / ".hpcjobs" / "exit_code").read_text() == "5\n"
