"""Multi-node launches (``distribution:``): one srun task per process for PyTorch, MPI and TensorFlow.

Azure ML starts ``instance_count × process_count_per_instance`` processes and gives each one
a set of environment variables (``RANK``, ``MASTER_ADDR``, ``TF_CONFIG``...).  On Slurm the
batch script runs one ``srun`` step with one task per process; each task runs a small
wrapper, ``$HPCJOBS_STATE/rank.sh`` (``templates/parts/distributed_rank.sh.j2``), that turns
Slurm's ``SLURM_PROCID``/``SLURM_LOCALID``/``SLURM_NODEID`` into Azure's names, keeps the
rank's output in ``./logs/rank_N.txt`` and then runs the user's command.  No launcher
(torchrun, mpirun) is needed on the cluster, every program works, and every rank's output
stays separable.  On the embedded ``local`` site the same wrapper runs every rank on this
machine (MPI through ``mpirun``).  ``docs/distributed.md`` is the user's view.

Pure: :func:`launch` returns shell lines and words; nothing here runs a process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpcjobs.errors import ValidationError
from hpcjobs.render import render
from hpcjobs.shellquote import shq, shq_env_name
from hpcjobs.site import Site

#: the first port of the block of ports a job uses: MASTER_PORT, and TF tasks' ports
PORT_BASE = 20000
#: ports per job (MASTER_PORT is the first; a TF task uses base + its index on the node)
PORT_BLOCK = 10
#: job ids are folded onto this many blocks: 20000..29999, below Linux's ephemeral range (32768-)
PORT_SLOTS = 1000


@dataclass(frozen=True)
class Layout:
    """How many processes a distribution starts, and where."""

    kind: str
    #: nodes the srun step spans
    nodes: int
    #: processes in all
    tasks: int
    #: processes per node when every node runs the same number, else None
    per_node: int | None
    #: TensorFlow: the first ``workers`` ranks are workers, the rest parameter servers
    workers: int = 0
    ps: int = 0

    @property
    def tasks_per_node(self) -> str:
        """Slurm's compact form of the layout (``2(x3)``), as ``SLURM_STEP_TASKS_PER_NODE`` says it."""
        if self.per_node is None:
            raise ValueError("an uneven layout has no compact form before Slurm chooses it")
        return f"{self.per_node}(x{self.nodes})" if self.nodes > 1 else str(self.per_node)


def port_block(job_id: int) -> range:
    """The ports job *job_id* may use (the rank wrapper computes the same in bash).

    Two jobs sharing a node collide only when their ids are equal modulo 1000.
    """
    base = PORT_BASE + job_id % PORT_SLOTS * PORT_BLOCK
    return range(base, base + PORT_BLOCK)


def layout(distribution: Any, *, nodes: int, local: bool = False) -> Layout | None:
    """The process layout of *distribution* on *nodes* nodes (None: no distribution)."""
    if distribution is None:
        return None
    kind = getattr(distribution, "type", None)
    if kind in ("pytorch", "mpi"):
        per = int(distribution.process_count_per_instance)
        return Layout(kind=kind, nodes=nodes, tasks=nodes * per, per_node=per)
    if kind == "tensorflow":
        workers = int(distribution.worker_count or nodes)
        ps = int(distribution.parameter_server_count or 0)
        total = workers + ps
        if total < nodes:
            raise ValidationError(
                f"worker_count + parameter_server_count ({total}) is less than resources.instance_count ({nodes}): "
                "some nodes would run no task",
                hint=f"raise distribution.worker_count to at least {nodes - ps}, or lower resources.instance_count",
                field="distribution.worker_count",
            )
        if local:
            # one machine: every task on it, each with its own port
            return Layout(kind=kind, nodes=1, tasks=total, per_node=total, workers=workers, ps=ps)
        per = -(-total // nodes)
        if per > PORT_BLOCK:
            raise ValidationError(
                f"{per} TensorFlow tasks per node is more than hpcjobs gives ports for ({PORT_BLOCK} per job and node)",
                hint="raise resources.instance_count, or lower worker_count / parameter_server_count",
                field="distribution",
            )
        even = total % nodes == 0
        return Layout(kind=kind, nodes=nodes, tasks=total, per_node=per if even else None, workers=workers, ps=ps)
    if kind == "ray":
        raise ValidationError(
            "distribution type 'ray' is not supported by hpcjobs yet",
            hint="use pytorch, mpi or tensorflow, or start Ray yourself from the command on every node",
            field="distribution.type",
        )
    raise ValidationError(f"unknown distribution type {kind!r}", field="distribution.type")


def srun_words(site: Site, lay: Layout) -> list[str]:
    """``srun ...`` for the layout: one task per process, the whole step stopped by a failed rank.

    The words start with ``srun`` so that a container plugin of srun (pyxis) can add its
    options to this step (:func:`hpcjobs.environments.launcher_words`).
    """
    words = ["srun", f"--nodes={lay.nodes}", f"--ntasks={lay.tasks}"]
    if lay.per_node is not None:
        # the same count as the allocation's --ntasks-per-node (plan.sbatch_options)
        words.append(f"--ntasks-per-node={lay.per_node}")
    # block: node 0 runs ranks 0..n-1, so RANK = NODE_RANK * n + LOCAL_RANK as with torchrun
    words += ["--distribution=block", "--kill-on-bad-exit=1"]
    if lay.kind == "mpi":
        words.append(f"--mpi={shq(site.mpi)}")
    # Slurm 22.05+ no longer passes the allocation's --cpus-per-task on to srun
    words.append('${SLURM_CPUS_PER_TASK:+--cpus-per-task="$SLURM_CPUS_PER_TASK"}')
    return [*words, "bash", '"$HPCJOBS_STATE/rank.sh"']


def launch(site: Site, distribution: Any, *, nodes: int, gpus_per_node: int, warnings: list[str]) -> tuple[list[str], list[str]]:
    """(setup shell lines run once in the batch script, launcher words placed before the container/command).

    No distribution: nothing (the command runs once, in the batch step).  Otherwise the
    setup lines write the rank wrapper and the words start every rank: ``srun ...`` on
    Slurm, the shell function ``hpcjobs_run_ranks`` on the local site.
    """
    lay = layout(distribution, nodes=nodes, local=site.is_local)
    if lay is None:
        return [], []
    if lay.kind == "pytorch" and gpus_per_node and lay.per_node and lay.per_node > gpus_per_node:
        warnings.append(
            f"distribution.process_count_per_instance={lay.per_node} is more than the {gpus_per_node} GPUs per node: "
            "processes will share GPUs (Azure ML starts one process per GPU)"
        )
    if site.is_local and nodes > 1:
        warnings.append(f"resources.instance_count={nodes}: the local site runs all {lay.tasks} processes on this machine")
    text = render(
        "parts/distributed.sh.j2",
        kind=lay.kind,
        local=site.is_local,
        nodes=lay.nodes,
        tasks=lay.tasks,
        per_node=lay.per_node,
        tasks_per_node=lay.tasks_per_node if site.is_local and lay.kind != "mpi" else "",
        workers=lay.workers,
        ps=lay.ps,
        unset_ntasks_per_node=not site.is_local and lay.per_node is None,
        mpi_env=[(shq_env_name(k), shq(v)) for k, v in site.mpi_env.items()] if lay.kind == "mpi" else [],
    )
    lines = text.rstrip("\n").split("\n")
    words = ["hpcjobs_run_ranks"] if site.is_local else srun_words(site, lay)
    return lines, words
