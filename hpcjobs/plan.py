"""Planners: a validated job + a site -> a :class:`Plan` of scripts to submit.  Pure.

A plan is data: the rendered scripts, the sbatch options, the files to write, the
code snapshot to ship and the inputs to upload.  ``--dry-run`` prints it; ``submit``
carries it out.  Nothing here touches the network, runs a process or reads a clock.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hpcjobs import expr
from hpcjobs.errors import ValidationError, known_list_hint
from hpcjobs.render import render
from hpcjobs.shellquote import check_directive_value, shq
from hpcjobs.site import Compute, Site
from hpcjobs.spec import models as m
from hpcjobs.spec.load import Loaded, is_uri

JOB_DIR_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.,+@/=-~"


@dataclass
class Target:
    """What the planner needs to know about the machine that will run the job."""

    home: str
    user: str
    #: local paths of data inputs -> where they are on the target (SSH uploads)
    uploaded: dict[str, str] = field(default_factory=dict)
    #: code snapshot hash (see :mod:`hpcjobs.snapshot`)
    code_digest: str | None = None
    #: pipelines: content digests of local code folders and data inputs, by local path
    #: (filled by the API before planning, so the planner stays pure)
    digests: dict[str, str] = field(default_factory=dict)
    #: pipelines: completed step runs whose outputs may be reused, by reuse key (:mod:`hpcjobs.reuse`)
    reusable: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: registered data assets (``azureml:NAME:VER`` / ``azureml:NAME@latest``, as written) -> path
    #: on the target (filled by :func:`hpcjobs.assets.prepare` before planning)
    assets: dict[str, str] = field(default_factory=dict)


@dataclass
class Script:
    """One sbatch submission (or one local process)."""

    key: str
    job_name: str
    script_path: str
    text: str
    sbatch_options: list[str]
    #: keys of scripts this one waits for, and how ("afterok" / "afterany")
    depends_on: list[str] = field(default_factory=list)
    dependency_type: str = "afterok"
    #: keys of scripts this one also waits for whatever their outcome (``afterany``, on top of *depends_on*)
    after_any: list[str] = field(default_factory=list)
    array: str | None = None
    #: number of array tasks (1 for a plain job)
    tasks: int = 1


@dataclass
class Plan:
    """Everything ``job create`` will do, as data."""

    name: str
    kind: str
    site: str
    compute: str
    job_dir: str
    token: str
    scripts: list[Script]
    files: dict[str, bytes] = field(default_factory=dict)
    code_src: str | None = None
    code_dir: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    children: list[dict[str, Any]] = field(default_factory=list)
    #: several code folders (pipeline steps): snapshot dir on the target -> local folder
    snapshots: dict[str, str] = field(default_factory=dict)
    #: continue_on_step_failure: false -- the on_finalize step, the one step a failing
    #: step's exit hook leaves alone ("" when there is none): its script's key and its
    #: folder under steps/ (the local runner's name for it)
    spare_step: str = ""

    @property
    def spare_job(self) -> str:
        """The Slurm job name of :attr:`spare_step` (how the exit hook finds it in squeue)."""
        if not self.spare_step:
            return ""
        from hpcjobs.plan_pipeline import step_job_name

        return step_job_name(self.name, self.spare_step)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``--dry-run -o json``)."""
        return {
            "name": self.name,
            "type": self.kind,
            "site": self.site,
            "compute": self.compute,
            "job_dir": self.job_dir,
            "code": {"source": self.code_src, "snapshot": self.code_dir},
            "inputs": self.inputs,
            "outputs": self.outputs,
            "uploads": self.uploads,
            "warnings": self.warnings,
            "scripts": [
                {
                    "key": s.key,
                    "path": s.script_path,
                    "sbatch_options": s.sbatch_options,
                    "depends_on": s.depends_on,
                    **({"after_any": s.after_any} if s.after_any else {}),
                    "array": s.array,
                    "text": s.text,
                }
                for s in self.scripts
            ],
            "files": sorted(self.files),
            "children": self.children,
        }


# --------------------------------------------------------------------------- helpers
def job_root(site: Site, target: Target) -> str:
    """The site's job root on the target, checked for characters Slurm mishandles."""
    root = site.expand(site.job_root, home=target.home, user=target.user)
    if not root.startswith("/"):
        raise ValidationError(f"job_root {site.job_root!r} of site '{site.name}' must be an absolute path (or start with ~)")
    bad = sorted({c for c in root if c not in JOB_DIR_SAFE})
    if bad:
        raise ValidationError(
            f"job_root {root!r} contains characters that Slurm's --output patterns cannot carry: {''.join(bad)!r}",
            hint="choose a job_root made of letters, digits and /._-",
        )
    return root.rstrip("/")


def _mem_mb(text: str) -> str:
    return text if text[-1:].isalpha() else f"{text}M"


def sbatch_options(
    site: Site,
    compute_name: str,
    compute: Compute,
    *,
    job_name: str,
    token: str,
    output: str,
    resources: m.Resources | None,
    distribution: Any,
    timeout: int | None,
) -> tuple[list[str], list[str]]:
    """The ``#SBATCH`` options for a command (and the warnings they raise)."""
    from hpcjobs.slurm import format_slurm_time, parse_slurm_time

    warnings: list[str] = []
    opts: list[str] = []

    def add(flag: str, value: str | int, what: str) -> None:
        opts.append(f"--{flag}={check_directive_value(str(value), what)}")

    add("job-name", job_name, "name")
    add("comment", f"hpcjobs:{token}", "token")
    partition = compute.partition
    gpus = compute.gpus_per_node
    gpu_type = compute.gpu_type
    cpus = compute.cpus_per_task
    memory = compute.memory
    it_name = (resources.instance_type if resources else None) or compute.default_instance_type
    if it_name:
        if it_name not in compute.instance_types:
            raise ValidationError(
                f"instance type '{it_name}' is not defined for compute '{compute_name}' of site '{site.name}'",
                hint=known_list_hint(it_name, compute.instance_types, "instance types"),
                field="resources.instance_type",
            )
        it = compute.instance_types[it_name]
        gpus = it.gpus
        gpu_type = it.gpu_type or gpu_type
        cpus = it.cpus or cpus
        memory = it.memory or memory
        partition = it.partition or partition
    if partition:
        add("partition", partition, f"computes.{compute_name}.partition")
    if compute.account:
        add("account", compute.account, f"computes.{compute_name}.account")
    if compute.qos:
        add("qos", compute.qos, f"computes.{compute_name}.qos")
    nodes = resources.instance_count if resources else 1
    if compute.max_nodes and nodes > compute.max_nodes:
        raise ValidationError(
            f"resources.instance_count {nodes} is more than compute '{compute_name}' allows ({compute.max_nodes})",
            field="resources.instance_count",
        )
    add("nodes", nodes, "resources.instance_count")
    per_node = 1
    if distribution is not None and getattr(distribution, "type", None) in ("pytorch", "mpi"):
        per_node = distribution.process_count_per_instance
    elif distribution is not None and getattr(distribution, "type", None) == "tensorflow":
        total = (distribution.worker_count or nodes) + distribution.parameter_server_count
        per_node = max(1, -(-total // nodes))
    add("ntasks-per-node", per_node, "distribution.process_count_per_instance")
    if cpus:
        add("cpus-per-task", cpus, "cpus")
    if memory:
        add("mem", _mem_mb(memory), "memory")
    if gpus:
        spec = f"{gpu_type}:{gpus}" if gpu_type else str(gpus)
        if site.gpu_request == "gres":
            add("gres", f"gpu:{spec}", "gpus")
        else:
            add("gpus-per-node", spec, "gpus")
    limit = timeout
    if limit is None and compute.time_limit is not None:
        limit = compute.time_limit if isinstance(compute.time_limit, int) else parse_slurm_time(compute.time_limit)
    if limit:
        add("time", format_slurm_time(int(limit)), "limits.timeout")
    add("output", output, "job_root")
    opts.append("--open-mode=append")
    for extra in compute.sbatch_options:
        opts.append(check_directive_value(extra, f"computes.{compute_name}.sbatch_options"))
    # apptainer, singularity, charliecloud and pyxis share the node's own /dev/shm; only podman
    # can give a container a /dev/shm of its own size (--shm-size)
    host_shm = ("none", "charliecloud", "apptainer", "singularity", "pyxis")
    if resources and resources.shm_size and site.environment.runtime in host_shm:
        warnings.append(
            f"resources.shm_size={resources.shm_size} is ignored: site '{site.name}' "
            "runs without a container runtime that can size /dev/shm"
        )
    return opts, warnings


def heredoc_marker(command: str) -> str:
    """A heredoc delimiter that no line of *command* equals."""
    base = "HPCJOBS_COMMAND_EOF"
    lines = set(command.splitlines())
    marker = base
    n = 0
    while marker in lines:
        n += 1
        marker = f"{base}_{n}"
    return marker


@dataclass
class CommandContext:
    """The pieces of one command (a job, a trial template or a pipeline step)."""

    command: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    env_vars: dict[str, Any]
    environment: Any
    resources: m.Resources | None
    distribution: Any
    timeout: int | None
    code: str | None
    #: a sweep's trial component: inputs whose value is the trial's hyperparameter of the same
    #: name (``${{inputs.lr}}`` reads ``$AZUREML_SWEEP_lr``, which trials.sh exports)
    sampled: tuple[str, ...] = ()


def resolve_input_path(site: Site, target: Target, name: str, inp: m.DataInput, *, field_path: str) -> str:
    """Where a data input is on the target (before mode handling)."""
    path = inp.path
    if path is None:
        raise ValidationError(f"data input '{name}' has no path", field=field_path)
    if path.startswith("azureml://datastores/"):
        rest = path[len("azureml://datastores/") :]
        ds, _, sub = rest.partition("/")
        if ds not in site.datastores:
            raise ValidationError(
                f"datastore '{ds}' is not defined for site '{site.name}'",
                hint=known_list_hint(ds, site.datastores, "datastores"),
                field=field_path,
            )
        sub = sub.removeprefix("paths/")
        base = site.expand(site.datastores[ds], home=target.home, user=target.user)
        return posixpath.join(base, sub) if sub else base
    if path in target.assets:
        return target.assets[path]
    if path.startswith("azureml:"):
        raise ValidationError(
            f"data asset '{path}' is not registered on site '{site.name}'",
            hint="register it with hpcjobs data create, or give a local path or an azureml://datastores/ URI",
            field=field_path,
        )
    if path.startswith(("http://", "https://")):
        return path
    if is_uri(path):
        raise ValidationError(f"input path '{path}' uses a storage scheme this site cannot reach", field=field_path)
    return target.uploaded.get(path, path)


def command_env(
    site: Site,
    target: Target,
    ctx: CommandContext,
    *,
    job_name: str,
    out_base: str,
    task_dir_var: str,
    field_prefix: str = "",
) -> tuple[list[tuple[str, str]], list[str], list[tuple[str, str]], dict[str, str], dict[str, str], str, list[str]]:
    """Environment, dirs to create, downloads, input and output paths and the final command."""
    env: list[tuple[str, str]] = []
    for k, v in site.job_env.items():
        env.append((k, v))
    for k, v in ctx.env_vars.items():
        if v is None:
            continue
        env.append((k, expr.format_value(v)))
    mkdirs: list[str] = []
    downloads: list[tuple[str, str]] = []
    in_paths: dict[str, str] = {}
    out_paths: dict[str, str] = {}
    set_inputs: set[str] = set(ctx.sampled)
    warnings: list[str] = []
    for name, inp in ctx.inputs.items():
        if name in ctx.sampled:
            continue
        var = f"AZURE_ML_INPUT_{name}"
        if isinstance(inp, m.LiteralInput):
            if inp.value is None:
                continue
            text = expr.format_value(inp.value)
            env.append((var, text))
            env.append((f"AZUREML_PARAMETER_{name}", text))
            in_paths[name] = text
            set_inputs.add(name)
            continue
        assert isinstance(inp, m.DataInput)
        if inp.path is None:
            continue
        fpath = f"{field_prefix}inputs.{name}.path"
        where = resolve_input_path(site, target, name, inp, field_path=fpath)
        if inp.mode == "direct":
            value = inp.path if inp.path.startswith(("http://", "https://", "azureml:")) else where
        elif where.startswith(("http://", "https://")):
            fname = posixpath.basename(where.split("?", 1)[0].rstrip("/")) or name
            dest_dir = f"{task_dir_var}/inputs/{name}"
            value = dest_dir + "/" + fname if inp.type == "uri_file" else dest_dir
            downloads.append(("__url__" + where, dest_dir + "/" + fname))
        elif inp.mode in ("download", "eval_download"):
            base = posixpath.basename(where.rstrip("/")) or name
            value = f"{task_dir_var}/inputs/{name}" + (f"/{base}" if inp.type == "uri_file" else "")
            downloads.append((where, value))
        else:
            value = where
        env.append((var, value))
        in_paths[name] = value
        set_inputs.add(name)
    for name, out in ctx.outputs.items():
        out = out if isinstance(out, m.JobOutput) else m.JobOutput()
        if out.path and out.path.startswith("azureml://datastores/"):
            rest = out.path[len("azureml://datastores/") :]
            ds, _, sub = rest.partition("/")
            if ds not in site.datastores:
                raise ValidationError(
                    f"datastore '{ds}' is not defined for site '{site.name}'",
                    hint=known_list_hint(ds, site.datastores, "datastores"),
                    field=f"{field_prefix}outputs.{name}.path",
                )
            sub = sub.removeprefix("paths/").replace("${{name}}", job_name).replace("${{output_name}}", name)
            base = site.expand(site.datastores[ds], home=target.home, user=target.user)
            path = posixpath.join(base, sub) if sub else base
        elif out.path and out.path.startswith("/"):
            path = out.path.replace("${{name}}", job_name).replace("${{output_name}}", name)
        else:
            path = f"{out_base}/{name}"
        if out.type == "uri_file":
            mkdirs.append(posixpath.dirname(path))
        else:
            mkdirs.append(path)
        env.append((f"AZURE_ML_OUTPUT_{name}", path))
        out_paths[name] = path

    def keep(name: str) -> bool:
        return name in set_inputs

    command = expr.resolve_optional(ctx.command, keep)
    for ref in expr.find_refs(command):
        if ref.namespace == "inputs" and ref.name not in set_inputs:
            raise ValidationError(
                f"${{{{inputs.{ref.name}}}}} is used but input '{ref.name}' has no value",
                hint="give it a value (--set inputs.NAME=...) or wrap the part that uses it in $[[ ... ]]",
                field=f"{field_prefix}command",
            )

    def var_for(ref: Any) -> str:
        if ref.namespace == "inputs" and ref.name in ctx.sampled:
            return f"AZUREML_SWEEP_{ref.name}"
        if ref.namespace == "inputs":
            return f"AZURE_ML_INPUT_{ref.name}"
        if ref.namespace == "outputs":
            return f"AZURE_ML_OUTPUT_{ref.name}"
        if ref.namespace == "search_space":
            return f"AZUREML_SWEEP_{ref.name}"
        if ref.namespace == "name":
            return "HPCJOBS_JOB_NAME"
        raise ValidationError(f"expression ${{{{{ref.text}}}}} cannot be used here", field=f"{field_prefix}command")

    final = expr.substitute(command, var_for)
    return env, mkdirs, downloads, in_paths, out_paths, final, warnings


def environment_setup(site: Site, environment: Any, warnings: list[str]) -> tuple[list[str], str | None]:
    """Shell lines that prepare the environment, and a launcher prefix (containers)."""
    lines: list[str] = []
    for mod in site.environment.modules:
        lines.append(f"module load {shq(mod)}")
    lines.extend(site.environment.setup)
    if environment is None:
        return lines, None
    if isinstance(environment, str):
        entry = site.environment.environments.get(environment) or site.environment.environments.get(
            environment.removeprefix("azureml:")
        )
        if entry is None:
            if site.environment.environments:
                raise ValidationError(
                    f"environment '{environment}' is not known on site '{site.name}'",
                    hint=known_list_hint(environment, site.environment.environments, "environments"),
                    field="environment",
                )
            warnings.append(f"environment '{environment}' is not mapped on site '{site.name}'; the command runs on the host")
            return lines, None
        for mod in entry.modules:
            lines.append(f"module load {shq(mod)}")
        lines.extend(entry.setup)
        if entry.image and site.environment.runtime == "none":
            warnings.append(
                f"environment image {entry.image} is ignored: site '{site.name}' has no container runtime; "
                "the command runs on the host"
            )
        return lines, None
    assert isinstance(environment, m.InlineEnvironment)
    if environment.image and site.environment.runtime == "none":
        warnings.append(
            f"image {environment.image} is noted but not used: site '{site.name}' has no container runtime; "
            "the command runs on the host"
        )
    if environment.build is not None and site.environment.runtime == "none":
        warnings.append(
            f"build context {environment.build.path} is ignored: site '{site.name}' has no container runtime; "
            "the command runs on the host"
        )
    if environment.conda_file is not None and site.environment.runtime == "none":
        warnings.append("conda_file is not built on this site yet; the command runs in the host's Python")
    return lines, None


# --------------------------------------------------------------------------- command jobs
def plan_command(loaded: Loaded, site: Site, target: Target, *, name: str, token: str) -> Plan:
    """Plan a command job: one script."""
    job = loaded.job
    assert isinstance(job, m.CommandJob)
    compute_name, compute = site.resolve_compute(job.compute)
    root = job_root(site, target)
    job_dir = f"{root}/{name}"
    warnings = list(loaded.warnings)
    ctx = CommandContext(
        command=job.command,
        inputs=job.inputs,
        outputs=job.outputs,
        env_vars=job.environment_variables,
        environment=job.environment,
        resources=job.resources,
        distribution=job.distribution,
        timeout=job.limits.timeout if job.limits else None,
        code=job.code,
    )
    plan = Plan(
        name=name,
        kind="command",
        site=site.name,
        compute=compute_name,
        job_dir=job_dir,
        token=token,
        scripts=[],
        warnings=warnings,
    )
    script = _command_script(
        plan, site, target, compute_name, compute, ctx, key="main", job_name=name, task_dir=job_dir, root=root
    )
    plan.scripts.append(script)
    plan.meta = _meta(job, loaded)
    return plan


def _code_dir(plan: Plan, root: str, target: Target, code: str | None) -> str | None:
    if not code:
        return None
    digest = target.code_digest or hashlib.sha256(code.encode()).hexdigest()[:32]
    snap = f"{root}/.snapshots/{digest}"
    plan.code_src = code
    plan.code_dir = snap
    return snap


def _command_script(
    plan: Plan,
    site: Site,
    target: Target,
    compute_name: str,
    compute: Compute,
    ctx: CommandContext,
    *,
    key: str,
    job_name: str,
    task_dir: str,
    root: str,
    array: str | None = None,
    tasks: int = 1,
    params_file: str | None = None,
    array_offset: int = 0,
    extra_env: list[tuple[str, str]] | None = None,
    field_prefix: str = "",
    template: str = "job.sh.j2",
) -> Script:
    code_dir = _code_dir(plan, root, target, ctx.code)
    task_var = "$HPCJOBS_TASK_DIR" if array else task_dir
    out_base = f"{task_dir}/named-outputs" if not array else f"{task_dir}/trials/$HPCJOBS_TASK_INDEX/named-outputs"
    env, mkdirs, downloads, in_paths, out_paths, command, warns = command_env(
        site, target, ctx, job_name=job_name, out_base=out_base, task_dir_var=task_var, field_prefix=field_prefix
    )
    plan.warnings.extend(warns)
    if key == "main":
        plan.inputs.update(in_paths)
        plan.outputs.update(out_paths)
    env.extend(extra_env or [])
    from hpcjobs import tracking

    t_env, t_setup = tracking.script_env(site, target, plan, key=key, job_name=job_name, task_dir=task_dir, array=bool(array))
    env.extend(t_env)
    # launcher = [srun ... (distribution)] [container runtime ...] bash command.sh
    from hpcjobs import distributed, environments

    nodes = ctx.resources.instance_count if ctx.resources else 1
    gpus_per_node = _gpus_per_node(compute, ctx.resources)
    env_lines, container_words = environments.setup(
        site,
        ctx.environment,
        gpus=gpus_per_node,
        binds=_binds(site, task_dir, code_dir, in_paths, out_paths),
        warnings=plan.warnings,
        root=root,
        target=target,
    )
    dist_lines, dist_words = distributed.launch(
        site, ctx.distribution, nodes=nodes, gpus_per_node=gpus_per_node, warnings=plan.warnings
    )
    setup = env_lines + t_setup + dist_lines
    launcher = None
    if dist_words or container_words:
        # pyxis' container options must join the distributed launch's own srun
        launcher = " ".join([*environments.launcher_words(dist_words, container_words), "bash", '"$HPCJOBS_STATE/command.sh"'])
    log = f"{task_dir}/user_logs/std_log.txt" if not array else f"{task_dir}/user_logs/std_log_%a.txt"
    if array and array_offset:
        # a later chunk of a long sweep numbers its tasks from 0 again (%a): keep Slurm's
        # file apart; the task appends to std_log_<trial index>.txt itself (sweep_task.sh)
        log = f"{task_dir}/user_logs/{key}_%a.txt"
    if site.is_local:
        opts: list[str] = []
    else:
        opts, w = sbatch_options(
            site,
            compute_name,
            compute,
            job_name=job_name,
            token=plan.token,
            output=log,
            resources=ctx.resources,
            distribution=ctx.distribution,
            timeout=ctx.timeout,
        )
        plan.warnings.extend(w)
        if array:
            opts.append(f"--array={array}")
    text = render_job_script(
        template,
        plan,
        sbatch_options=opts,
        job_name=job_name,
        job_dir=task_dir,
        command=command,
        env=env,
        env_setup=setup,
        array=bool(array),
        array_offset=array_offset,
        code_dir=code_dir,
        params_file=params_file or "",
        mkdirs=mkdirs,
        downloads=downloads,
        launcher=launcher,
    )
    return Script(
        key=key,
        job_name=job_name,
        script_path=f"{task_dir}/job.sh" if key == "main" else f"{task_dir}/{key}.sh",
        text=text,
        sbatch_options=opts,
        array=array,
        tasks=tasks,
    )


def render_job_script(
    template: str,
    plan: Plan,
    *,
    sbatch_options: list[str],
    job_name: str,
    job_dir: str,
    command: str,
    env: Sequence[tuple[str, str]],
    env_setup: list[str],
    array: bool = False,
    array_offset: int = 0,
    code_dir: str | None = None,
    params_file: str = "",
    mkdirs: Sequence[str] = (),
    downloads: Sequence[tuple[str, str]] = (),
    launcher: Any = None,
) -> str:
    """Render a job script (``job.sh.j2`` or a template extending it): the one place its context is built.

    Values are quoted here (``shell_word``/``shq``) or by the template (``|q``).
    """
    return render(
        template,
        sbatch_options=sbatch_options,
        kind=plan.kind,
        job_name=job_name,
        job_dir=job_dir,
        array=array,
        array_offset=array_offset,
        code_dir=code_dir,
        params_file=params_file,
        env=[(k, shell_word(v)) for k, v in env],
        env_setup=env_setup,
        mkdirs=[shell_word(d) for d in mkdirs],
        downloads=[(shell_word(s), shell_word(d)) for s, d in downloads if not s.startswith("__url__")],
        url_downloads=[(shq(s[len("__url__") :]), shell_word(d)) for s, d in downloads if s.startswith("__url__")],
        command=command,
        heredoc=heredoc_marker(command),
        launcher=launcher,
        spare_job=plan.spare_job,
        spare_step=plan.spare_step,
    )


RUNTIME_VARS = ("$HPCJOBS_TASK_DIR", "$HPCJOBS_TASK_INDEX")


def shell_word(value: str) -> str:
    """Quote *value* for bash, letting our own run-time variables expand.

    Array tasks find their folders through ``$HPCJOBS_TASK_DIR`` / ``$HPCJOBS_TASK_INDEX``;
    those two names (and only they) are left to bash; everything around them goes
    through :func:`shq`.
    """
    out: list[str] = []
    rest = value
    while rest:
        hits = [(rest.find(v), v) for v in RUNTIME_VARS if rest.find(v) >= 0]
        if not hits:
            out.append(shq(rest))
            break
        pos, var = min(hits)
        if pos:
            out.append(shq(rest[:pos]))
        out.append('"' + var + '"')
        rest = rest[pos + len(var) :]
    return "".join(out) if out else "''"


def _gpus_per_node(compute: Compute, resources: m.Resources | None) -> int:
    it_name = (resources.instance_type if resources else None) or compute.default_instance_type
    if it_name and it_name in compute.instance_types:
        return compute.instance_types[it_name].gpus
    return compute.gpus_per_node


def _binds(site: Site, task_dir: str, code_dir: str | None, inputs: dict[str, str], outputs: dict[str, str]) -> list[str]:
    """Host paths a container must see: the job's folder, the code snapshot, inputs, outputs, datastores."""
    out = [task_dir]
    if code_dir:
        out.append(code_dir)
    for v in [*inputs.values(), *outputs.values(), *site.datastores.values()]:
        if v.startswith("/") and "$" not in v:
            out.append(v)
    return list(dict.fromkeys(out))


def _meta(job: Any, loaded: Loaded) -> dict[str, Any]:
    experiment = job.experiment_name or (
        posixpath.basename(str(job.code).rstrip("/")) if getattr(job, "code", None) else loaded.base_dir.name
    )
    return {
        "display_name": job.display_name or None,
        "experiment_name": experiment,
        "description": job.description,
        "tags": dict(job.tags),
        "properties": dict(job.properties),
        "file": str(loaded.path),
    }


def plan_job(loaded: Loaded, site: Site, target: Target, *, name: str, token: str) -> Plan:
    """Plan any job type."""
    if loaded.type == "command":
        plan = plan_command(loaded, site, target, name=name, token=token)
    elif loaded.type == "sweep":
        from hpcjobs.plan_sweep import plan_sweep

        plan = plan_sweep(loaded, site, target, name=name, token=token)
    else:
        from hpcjobs.plan_pipeline import plan_pipeline

        plan = plan_pipeline(loaded, site, target, name=name, token=token)
    plan.files[f"{plan.job_dir}/job.json"] = json.dumps(
        {"name": name, "type": plan.kind, "site": site.name, "compute": plan.compute, "token": token, **plan.meta},
        indent=1,
        sort_keys=True,
    ).encode()
    return plan
