"""Planning a sweep job: trials sampled up front, run as Slurm job array(s).  Pure.

What a sweep becomes (``docs/sweeps.md`` has the why):

* The trials are sampled here (grid, random, Sobol; reproducible with a seed) and
  written to the job directory twice: ``trials.json`` (index and parameters, for people
  and tools) and ``trials.sh``, a bash ``case`` on ``$HPCJOBS_TASK_INDEX`` that exports
  each trial's ``AZUREML_SWEEP_<name>`` values, every one quoted with
  :func:`hpcjobs.shellquote.shq`.  Bayesian trials are asked for when each trial starts
  (:mod:`hpcjobs.sweep.controller` ``ask``), so their ``trials.sh`` calls the sampler.
* One sbatch script with ``--array=0-(N-1)%C`` (C = ``max_concurrent_trials``).  A sweep
  longer than the cluster's ``MaxArraySize`` is cut into chunks of at most that many
  tasks (``array_offset`` maps a chunk's task ids back to trial indices).  The
  concurrency budget C is split over ``min(C, chunks)`` *lanes* that run side by side;
  the chunks of one lane follow each other with ``--dependency=afterany``, so at no
  moment do more than C trials run, and a lane never waits for another's stragglers.
* ``trial_timeout`` is each task's ``--time`` (rounded up to Slurm's whole minutes, plus
  30 s so that the precise in-trial watcher acts first) and is enforced to the second
  by the watcher beside each trial.  ``limits.timeout`` is enforced by the watchers too
  (the sweep's clock starts when ``trials.json`` is written, i.e. at submission): at
  the deadline a watcher cancels the sweep's arrays, and a trial that starts after it
  cancels them instead of running.  (Slurm's ``--deadline`` was tried and rejected: it
  drops pending tasks early, as soon as their whole time limit no longer fits.)
* A pipeline's sweep step is planned by the same code (:func:`add_sweep`, from a
  :class:`SweepSpec` the pipeline planner binds), plus :func:`finalize_script`.
* A sweep that would queue more jobs than the user may (``max_submit_jobs``: the site
  config, or ``MaxSubmitJobs``/``MaxJobCount`` read from the cluster by
  :mod:`hpcjobs.sweep.limits`) is refused before anything is submitted.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from hpcjobs.errors import UserError, ValidationError
from hpcjobs.plan import CommandContext, Plan, Script, Target, _command_script, _meta, command_env, environment_setup, job_root
from hpcjobs.render import render
from hpcjobs.shellquote import shq, shq_env_name
from hpcjobs.site import Compute, Site
from hpcjobs.spec import models as m
from hpcjobs.spec.load import Loaded
from hpcjobs.sweep.sampling import Choice, Distribution, format_value, parse_search_space, trials
from hpcjobs.sweep.termination import parse_policy

#: Slurm's default ``MaxArraySize`` (array indices 0..1000)
DEFAULT_MAX_ARRAY_SIZE = 1001
#: seconds Slurm's own trial time limit is given beyond ``trial_timeout`` (the watcher acts first)
TIME_LIMIT_MARGIN = 30
#: distributions Optuna's TPE sampler handles (as Azure ML's bayesian sampling)
BAYES_TYPES = ("choice", "uniform", "quniform", "loguniform", "qloguniform", "randint")

#: hpcjobs modules shipped into the job directory for the trials (all standard-library only)
LIB_MODULES = (
    "errors.py",
    "expr.py",
    "shellquote.py",
    "mlflow_job.py",
    "sweep/__init__.py",
    "sweep/sampling.py",
    "sweep/termination.py",
    "sweep/bayes.py",
    "sweep/metrics.py",
    "sweep/controller.py",
)
_LIB_INIT = b'"""hpcjobs modules shipped with a sweep: standard library only (Optuna for bayesian sampling)."""\n'


@dataclass(frozen=True)
class Chunk:
    """One array of a sweep: trials ``offset .. offset+size-1``, at most ``throttle`` at once."""

    key: str
    offset: int
    size: int
    throttle: int
    #: key of the chunk this one starts after (same lane), if any
    after: str | None = None

    @property
    def array(self) -> str:
        """The ``--array`` value."""
        return f"0-{self.size - 1}%{self.throttle}"


def chunk_plan(n: int, max_array_size: int, max_concurrent: int) -> list[Chunk]:
    """Cut *n* trials into arrays of at most *max_array_size* tasks, *max_concurrent* at once.

    Chunks are as equal as possible.  The budget is split over ``L = min(max_concurrent,
    chunks)`` lanes (the first lanes get the remainder); chunk ``k`` is in lane ``k % L``
    and starts after chunk ``k - L``.  The throttles of the chunks that can run at the
    same time (one per lane) add up to at most *max_concurrent*.
    """
    if n < 1:
        raise ValueError(f"a sweep needs at least one trial, got {n}")
    if max_array_size < 1 or max_concurrent < 1:
        raise ValueError("max_array_size and max_concurrent must be at least 1")
    k_total = -(-n // max_array_size)
    base, extra = divmod(n, k_total)
    lanes = min(max_concurrent, k_total)
    budget = [max_concurrent // lanes + (1 if j < max_concurrent % lanes else 0) for j in range(lanes)]
    out: list[Chunk] = []
    offset = 0
    for k in range(k_total):
        size = base + (1 if k < extra else 0)
        lane = k % lanes
        key = "main" if k == 0 else f"chunk{k}"
        after = out[k - lanes].key if k >= lanes else None
        out.append(Chunk(key=key, offset=offset, size=size, throttle=min(budget[lane], size), after=after))
        offset += size
    return out


@lru_cache(maxsize=1)
def _lib_sources() -> dict[str, bytes]:
    # our own package files, read like the templates are: no network, no subprocess
    pkg = Path(__file__).resolve().parent
    out = {"hpcjobs/__init__.py": _LIB_INIT}
    for rel in LIB_MODULES:
        out[f"hpcjobs/{rel}"] = (pkg / rel).read_bytes()
    return out


def lib_dir(job_dir: str) -> str:
    """Where a sweep's shipped hpcjobs modules are (put on ``PYTHONPATH``)."""
    return f"{job_dir}/.hpcjobs/lib"


def _check_bayes_space(space: dict[str, Distribution], prefix: str = "") -> None:
    # the same rules as hpcjobs.sweep.bayes, checked without importing Optuna
    for name, d in space.items():
        if d.type not in BAYES_TYPES:
            raise ValidationError(
                f"bayesian sampling does not support {d.type} distributions",
                field=f"{prefix}search_space.{name}.type",
                hint="bayesian supports " + ", ".join(BAYES_TYPES) + " (as Azure ML does); use sampling_algorithm: random",
            )
        if isinstance(d, Choice) and d.nested:
            raise ValidationError(
                "bayesian sampling does not support nested choices (dict values)",
                field=f"{prefix}search_space.{name}.values",
                hint="flatten the space, or use sampling_algorithm: random",
            )


def trials_sh(name: str, table: list[dict[str, Any]] | None, *, ask_line: str | None = None, inputs: tuple[str, ...] = ()) -> str:
    """The text of ``trials.sh``: each trial's parameters by task index, values quoted.

    *table* lists the trials' parameter dicts in index order; ``None`` (bayesian) makes
    the file ask the sampler instead (*ask_line*).  *inputs* are a trial component's
    inputs fed by the hyperparameters of the same name: each is also exported as the
    input's own variables (``AZURE_ML_INPUT_<name>``, ``AZUREML_PARAMETER_<name>``).
    """
    lines = [
        f"# hpcjobs sweep {name}: each trial's parameters by index (sourced by the job script).",
        "# Every value is quoted with hpcjobs.shellquote.shq: it reaches the trial byte for byte.",
    ]
    if table is not None:
        lines.append('case "$HPCJOBS_TASK_INDEX" in')
        names: dict[str, str] = {}
        for i, params in enumerate(table):
            for k in params:
                if k not in names:
                    names[k] = shq_env_name("AZUREML_SWEEP_" + k)
            words = " ".join(f"{names[k]}={shq(format_value(v))}" for k, v in params.items())
            lines.append(f"{i}) export {words}; HPCJOBS_TRIAL_FOUND=1;;")
        lines.append("esac")
    else:
        assert ask_line is not None
        lines.append(ask_line)
    if inputs:
        lines.append("# the trial component's inputs that the hyperparameters of the same name feed")
    for iname in inputs:
        src = shq_env_name("AZUREML_SWEEP_" + iname)
        dst = " ".join(f'{shq_env_name(v + iname)}="${src}"' for v in ("AZURE_ML_INPUT_", "AZUREML_PARAMETER_"))
        lines.append(f'[ -n "${{{src}+set}}" ] && export {dst}')
    lines.append('[ -n "${HPCJOBS_TRIAL_FOUND:-}" ] && . "$HPCJOBS_JOB_DIR/.hpcjobs/sweep_task.sh"')
    return "\n".join(lines) + "\n"


def trials_json(name: str, algorithm: str, objective: dict[str, str], table: list[dict[str, Any]] | None, n: int) -> str:
    """The text of ``trials.json``: the sweep's trial table, one trial a line.

    Built line by line because ``json.dumps(indent=...)`` falls back to the slow
    pure-Python encoder, which costs seconds for a 10,000-trial sweep.
    """
    head = json.dumps({"name": name, "algorithm": algorithm, "objective": objective})[:-1]
    rows = ",\n".join(json.dumps({"index": i, "params": None if table is None else table[i]}) for i in range(n))
    return f'{head}, "trials": [\n{rows}\n]}}\n'


def _slurm_seconds(seconds: int) -> int:
    # Slurm keeps time limits in whole minutes, rounding up
    return 60 * -(-seconds // 60)


@dataclass
class SweepSpec:
    """A sweep with its trial bound: what a sweep job and a pipeline's sweep step are both planned from."""

    #: the sweep's job name: its arrays' Slurm job name, and its trials are ``<name>_<index>``
    name: str
    job_dir: str
    trial: m.TrialSpec
    #: the trial's inputs with their values (literals, data)
    inputs: dict[str, Any]
    #: the trial's outputs (each trial writes its own copy under ``trials/INDEX/``)
    outputs: dict[str, Any]
    search_space: dict[str, dict[str, Any]]
    sampling_algorithm: m.SamplingAlgorithm
    objective: m.Objective
    early_termination: m.EarlyTermination | None
    limits: m.SweepLimits
    resources: m.Resources | None
    compute_name: str
    compute: Compute
    display_name: str
    tags: dict[str, Any] = field(default_factory=dict)
    #: a trial component's inputs fed by the hyperparameters of the same name
    sampled: tuple[str, ...] = ()
    #: where the sweep is in the job file (``jobs.tune.`` for a pipeline step), for errors
    field_prefix: str = ""
    #: a pipeline's sweep step: its step name (it names the array scripts and trial records)
    step: str | None = None
    #: a pipeline's sweep step: script keys its first arrays wait for, and how
    depends_on: list[str] = field(default_factory=list)
    dependency_type: str = "afterok"
    #: a pipeline's sweep step: output -> where its finalize job puts the best trial's
    best_outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class PlannedSweep:
    """What :func:`add_sweep` added to a plan."""

    #: script keys of the sweep's arrays, in submission order
    keys: list[str]
    #: one child record (dict, as in :attr:`Plan.children`) per trial
    children: list[dict[str, Any]]
    #: the ``sweep`` section of the job record (``job show``)
    meta: dict[str, Any]
    #: each trial's output paths (``$HPCJOBS_TASK_INDEX`` stands for the trial's index)
    trial_outputs: dict[str, str]
    #: the sweep's settings file (``.hpcjobs/sweep.json``), as data
    config: dict[str, Any]


def step_array_key(step: str, chunk: str) -> str:
    """The script key of a pipeline sweep step's array (*chunk*: ``main``, ``chunk1``...).

    Upper-case letters never occur in step names, so these keys never collide with a step's.
    """
    return f"{step}_Trials" if chunk == "main" else f"{step}_Trials_{chunk}"


def plan_sweep(loaded: Loaded, site: Site, target: Target, *, name: str, token: str) -> Plan:
    """Plan a sweep job: the trial table, the array script(s) and one child record per trial."""
    job = loaded.job
    assert isinstance(job, m.SweepJob)
    trial = job.trial
    assert isinstance(trial, m.TrialSpec)
    compute_name, compute = site.resolve_compute(job.compute)
    root = job_root(site, target)
    plan = Plan(
        name=name,
        kind="sweep",
        site=site.name,
        compute=compute_name,
        job_dir=f"{root}/{name}",
        token=token,
        scripts=[],
        warnings=list(loaded.warnings),
    )
    spec = SweepSpec(
        name=name,
        job_dir=plan.job_dir,
        trial=trial,
        inputs=job.inputs,
        outputs=job.outputs,
        search_space=job.search_space,
        sampling_algorithm=job.sampling_algorithm,
        objective=job.objective,
        early_termination=job.early_termination,
        limits=job.limits,
        resources=job.resources,
        compute_name=compute_name,
        compute=compute,
        display_name=job.display_name or name,
        tags=dict(job.tags),
        sampled=loaded.trial_sampled,
    )
    planned = add_sweep(plan, spec, site, target, root)
    plan.children = planned.children
    meta = _meta(job, loaded)
    if not job.experiment_name and trial.code:
        # Azure names the experiment after the code folder; a sweep's code is its trial's
        meta["experiment_name"] = Path(str(trial.code).rstrip("/")).name or meta["experiment_name"]
    meta["sweep"] = planned.meta
    plan.meta = meta
    return plan


def add_sweep(plan: Plan, spec: SweepSpec, site: Site, target: Target, root: str) -> PlannedSweep:
    """Add a sweep's arrays, trial table, settings and shipped modules to *plan*.

    A sweep job's arrays are keyed ``main``, ``chunk1``...; a pipeline's sweep step's
    ``<step>_Trials``... (:func:`step_array_key`), written beside the step's own script.
    """
    trial = spec.trial
    job_dir = spec.job_dir
    pre = spec.field_prefix
    space = parse_search_space(spec.search_space, field=f"{pre}search_space")
    algo = spec.sampling_algorithm
    limits = spec.limits
    table: list[dict[str, Any]] | None
    if algo.type == "bayesian":
        _check_bayes_space(space, pre)
        if limits.max_total_trials is None:
            raise ValidationError(
                "is required for bayesian sampling",
                field=f"{pre}limits.max_total_trials",
                hint="set limits: {max_total_trials: N}",
            )
        table = None
        n = limits.max_total_trials
    else:
        table = trials(space, algo.type, max_total_trials=limits.max_total_trials, seed=algo.seed, rule=algo.rule)
        n = len(table)
    policy = parse_policy(spec.early_termination.model_dump(exclude_none=True)) if spec.early_termination else None
    concurrent = min(limits.max_concurrent_trials or n, n)
    max_array = n if site.is_local else (site.max_array_size or DEFAULT_MAX_ARRAY_SIZE)
    if site.max_submit_jobs is not None and not site.is_local and n > site.max_submit_jobs:
        raise UserError(
            f"this sweep queues {n} trials (array tasks) at once, but at most {site.max_submit_jobs} jobs "
            f"may be queued on site '{site.name}' (MaxSubmitJobs/MaxJobCount); nothing was submitted",
            hint="lower limits.max_total_trials, or split the search space over several sweeps",
        )
    chunks = chunk_plan(n, max_array, concurrent)

    slurm_limit = _slurm_seconds(limits.trial_timeout + TIME_LIMIT_MARGIN) if limits.trial_timeout else None
    ctx = CommandContext(
        command=trial.command,
        inputs=spec.inputs,
        outputs=spec.outputs,
        env_vars=trial.environment_variables,
        environment=trial.environment,
        resources=trial.resources or spec.resources,
        distribution=trial.distribution,
        timeout=slurm_limit,
        code=trial.code,
        sampled=spec.sampled,
    )
    trial_base = f"{job_dir}/trials/$HPCJOBS_TASK_INDEX"
    only_outputs = replace(ctx, command="", inputs={}, env_vars={}, sampled=())
    trial_outputs = command_env(
        site,
        target,
        only_outputs,
        job_name=spec.name,
        out_base=f"{trial_base}/named-outputs",
        task_dir_var=trial_base,
        field_prefix=pre,
    )[4]
    params_file = f"{job_dir}/trials.sh"
    keys: dict[str, str] = {c.key: (c.key if spec.step is None else step_array_key(spec.step, c.key)) for c in chunks}
    for chunk in chunks:
        key = keys[chunk.key]
        script = _command_script(
            plan,
            site,
            target,
            spec.compute_name,
            spec.compute,
            ctx,
            key=key,
            job_name=spec.name,
            task_dir=job_dir,
            root=root,
            array=chunk.array,
            tasks=chunk.size,
            params_file=params_file,
            array_offset=chunk.offset,
            field_prefix=pre,
        )
        if spec.step is not None:
            script.script_path = f"{job_dir}/array.sh" if chunk.key == "main" else f"{job_dir}/array_{chunk.key}.sh"
            # the steps the sweep reads from, for every array (a later chunk must not start
            # when they failed); the lane's previous chunk whatever became of it
            script.depends_on = list(spec.depends_on)
            script.dependency_type = spec.dependency_type
            script.after_any = [keys[chunk.after]] if chunk.after else []
        elif chunk.after:
            script.depends_on = [keys[chunk.after]]
            script.dependency_type = "afterany"
        plan.scripts.append(script)

    python = sys.executable if site.is_local else (site.environment.python or "python3")
    setup, _ = environment_setup(site, trial.environment, [])
    lib = lib_dir(job_dir)
    for rel, data in _lib_sources().items():
        plan.files[f"{lib}/{rel}"] = data
    watch = bool(policy or limits.timeout or limits.trial_timeout)
    plan.files[f"{job_dir}/.hpcjobs/sweep_task.sh"] = render(
        "sweep_task.sh.j2",
        name=spec.name,
        setup=setup,
        lib=lib,
        python=python,
        timeout=limits.timeout,
        watch=watch,
        clock_at_first_trial=spec.step is not None,
    ).encode()
    ask_line = None
    if table is None:
        ask_line = (
            'if hpcjobs_params=$(hpcjobs_sweep_ask); then eval "$hpcjobs_params"; else '
            'echo "hpcjobs: the bayesian sampler gave no parameters for trial $HPCJOBS_TASK_INDEX (see above)" >&2; fi'
        )
        ask_fn = (
            "hpcjobs_sweep_ask() {\n    (\n        {\n"
            + "".join(f"        {line}\n" for line in setup)
            + "        :\n        } >&2\n"
            + f"        PYTHONPATH={shq(lib)}${{PYTHONPATH:+:$PYTHONPATH}} exec {shq(python)} -m hpcjobs.sweep.controller "
            + 'ask "$HPCJOBS_JOB_DIR" "$HPCJOBS_TASK_INDEX" </dev/null\n    )\n}\n'
        )
        ask_line = ask_fn + ask_line + "\nunset hpcjobs_params"
    plan.files[params_file] = trials_sh(spec.name, table, ask_line=ask_line, inputs=spec.sampled).encode()
    objective = {"goal": spec.objective.goal, "primary_metric": spec.objective.primary_metric}
    policy_dict = policy.to_dict() if policy else None
    plan.files[f"{job_dir}/trials.json"] = trials_json(spec.name, algo.type, objective, table, n).encode()
    config = {
        "name": spec.name,
        "comment": f"hpcjobs:{plan.token}",
        "scheduler": "local" if site.is_local else "slurm",
        "trials": n,
        "algorithm": algo.type,
        "seed": algo.seed,
        "objective": objective,
        "policy": policy_dict,
        "timeout": limits.timeout,
        "trial_timeout": limits.trial_timeout,
        "search_space": spec.search_space,
    }
    if spec.step is not None:
        # limits.timeout counts from the first trial's start (.hpcjobs/started_at), not the submission
        config["clock"] = "first_trial"
    if spec.best_outputs:
        config["best_outputs"] = {
            o: {"trial": trial_outputs[o], "path": path, "type": getattr(spec.outputs.get(o), "type", None) or "uri_folder"}
            for o, path in spec.best_outputs.items()
        }
    plan.files[f"{job_dir}/.hpcjobs/sweep.json"] = json.dumps(config, indent=1, sort_keys=True).encode()

    by_index = {i: c for c in chunks for i in range(c.offset, c.offset + c.size)}
    trial_key = "t" if spec.step is None else f"{spec.step}.t"
    children = [
        {
            "name": f"{spec.name}_{i}",
            "key": f"{trial_key}{i}",
            "script_key": keys[by_index[i].key],
            "array_task": i - by_index[i].offset,
            "job_dir": job_dir,
            "type": "command",
            "display_name": f"{spec.display_name}_{i}",
            "tags": dict(spec.tags),
            **({"parent": spec.name} if spec.step is not None else {}),
            "extra": {
                "state_dir": f"{job_dir}/trials/{i}/.hpcjobs",
                "task_dir": f"{job_dir}/trials/{i}",
                "trial_index": i,
                "params": {} if table is None else table[i],
                "outputs": {k: v.replace("$HPCJOBS_TASK_INDEX", str(i)) for k, v in trial_outputs.items()},
            },
        }
        for i in range(n)
    ]
    meta = {
        "algorithm": algo.type,
        "rule": algo.rule if algo.type == "random" else None,
        "seed": algo.seed,
        "trials": n,
        "max_concurrent_trials": concurrent,
        "objective": objective,
        "early_termination": policy_dict,
        "timeout": limits.timeout,
        "trial_timeout": limits.trial_timeout,
        "max_array_size": None if site.is_local else max_array,
        "chunks": [{"key": c.key, "offset": c.offset, "size": c.size, "array": c.array, "after": c.after} for c in chunks],
        "lib": lib,
        "python": python,
    }
    return PlannedSweep(keys=list(keys.values()), children=children, meta=meta, trial_outputs=trial_outputs, config=config)


def finalize_script(plan: Plan, spec: SweepSpec, site: Site, *, key: str, job_name: str, template: str = "job.sh.j2") -> Script:
    """The finalize job of a pipeline's sweep step: ``controller finalize`` once every trial ended.

    It picks the best completed trial (the rule ``job show`` uses) and places that trial's
    outputs at the step's output paths (``SweepSpec.best_outputs``), which is what the
    steps downstream read; it fails when no trial completed.  It is the step's own job
    (``<job_dir>/job.sh``, log ``user_logs/std_log.txt``): one task on the step's compute
    without GPUs.  Its Slurm job name is not the arrays' (``limits.timeout`` cancels the
    sweep's arrays by name, and must not cancel it).  The caller sets its dependencies.
    """
    from hpcjobs.plan import render_job_script, sbatch_options

    job_dir = spec.job_dir
    python = sys.executable if site.is_local else (site.environment.python or "python3")
    setup, _ = environment_setup(site, None, [])
    command = (
        f"PYTHONPATH={shq(lib_dir(job_dir))}${{PYTHONPATH:+:$PYTHONPATH}} exec {shq(python)} "
        '-m hpcjobs.sweep.controller finalize "$HPCJOBS_JOB_DIR" "$HPCJOBS_STATE"'
    )
    opts: list[str] = []
    if not site.is_local:
        small = spec.compute.model_copy(
            update={"gpus_per_node": 0, "default_instance_type": None, "cpus_per_task": None, "memory": None}
        )
        opts, warns = sbatch_options(
            site,
            spec.compute_name,
            small,
            job_name=job_name,
            token=plan.token,
            output=f"{job_dir}/user_logs/std_log.txt",
            resources=None,
            distribution=None,
            timeout=None,
        )
        plan.warnings.extend(warns)
    text = render_job_script(
        template,
        plan,
        sbatch_options=opts,
        job_name=spec.name,
        job_dir=job_dir,
        command=command,
        env=list(site.job_env.items()),
        env_setup=setup,
    )
    return Script(key=key, job_name=job_name, script_path=f"{job_dir}/job.sh", text=text, sbatch_options=opts)
