"""The pipeline planner: a validated ``type: pipeline`` job -> one script per step, chained by Slurm dependencies.

Two pure phases:

1. :func:`resolve_steps` turns every step (inline command, command component) into a
   :class:`StepSpec`: its command, code, environment, compute, run settings, and every
   input bound to a concrete value -- a literal, a data path, or the output of an
   upstream step (:class:`Upstream`).  Each step also gets its reuse key
   (:func:`hpcjobs.reuse.step_key`), which depends on the keys of the steps it reads from.
2. :func:`plan_pipeline` walks the steps in topological order and renders one script per
   step with :func:`hpcjobs.plan._command_script`, each in its own step folder
   ``<job_dir>/steps/<step>/``.  An upstream output folder is the downstream input path:
   data flows through the cluster's filesystem, nothing is copied unless the input asks
   for ``mode: download``.  A step whose reuse key names a completed run in
   ``target.reusable`` is not rendered at all: its child record points at that run, and
   steps downstream read that run's outputs.

A sweep step (``type: sweep``, its trial a command component) is bound like a component
step, its hyperparameters feeding the component's inputs of the same name; it becomes the
sweep planner's arrays (:func:`hpcjobs.plan_sweep.add_sweep`) in the step's folder plus the
step's own script, a finalize job (``afterany`` on the arrays) that places the best
trial's outputs at the step's output paths (see ``docs/pipelines.md``, "Sweep steps").

Dependencies: every edge of the DAG is a data edge (``${{parent.jobs.S.outputs.O}}``), so
every edge is ``afterok`` -- a step whose input was never produced cannot run -- and the
Slurm backend adds ``--kill-on-invalid-dep=yes``, so a failed step cancels everything
downstream of it while independent branches go on (Azure's default,
``continue_on_step_failure: true``).  ``continue_on_step_failure: false`` renders the steps
from ``pipeline_step.sh.j2``, whose exit hook cancels the other steps of the pipeline the
moment one fails (see ``docs/pipelines.md``).  The only ``afterany`` edges are those of a
``settings.on_finalize`` step, which runs after all others whatever their outcome.

:func:`prepare_target` is the one function here that does I/O: the API calls it before
planning to hash code folders and local data inputs and to look completed runs up in the
reuse index.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcjobs.errors import HpcjobsError, ValidationError, known_list_hint
from hpcjobs.plan import CommandContext, Plan, Script, Target, _command_script, _meta, command_env, job_root
from hpcjobs.site import Compute, Site
from hpcjobs.spec import models as m
from hpcjobs.spec.bind import as_data as _as_data
from hpcjobs.spec.bind import coerce_param as _coerce_param
from hpcjobs.spec.bind import port_default
from hpcjobs.spec.check import parse_binding, topo_order
from hpcjobs.spec.load import Loaded, _prep_inputs, _resolve_local, is_uri, validate_model
from hpcjobs.spec.yamlload import PathKey, SourceMap, dotted
from hpcjobs.sweep.sampling import format_value

if TYPE_CHECKING:
    from hpcjobs.backends.base import Backend
    from hpcjobs.plan_sweep import PlannedSweep
    from hpcjobs.store import JobRecord, Store

#: the template of a step whose failure must stop the whole pipeline
FAIL_FAST_TEMPLATE = "pipeline_step.sh.j2"
STEP_TEMPLATE = "job.sh.j2"
NAME_MAX = 255
DATA_PORT_TYPES = (*m.DATA_TYPES, "path")


@dataclass
class Upstream:
    """An input bound to the output of another step (``${{parent.jobs.S.outputs.O}}``)."""

    step: str
    output: str
    type: str = "uri_folder"
    mode: str = "ro_mount"


BoundInput = m.LiteralInput | m.DataInput | Upstream


@dataclass
class StepSpec:
    """One step with everything bound, before rendering."""

    name: str
    kind: str
    command: str
    code: str | None
    environment: Any
    env_vars: dict[str, Any]
    resources: m.Resources | None
    distribution: Any
    timeout: int | None
    compute_name: str
    compute: Compute
    inputs: dict[str, BoundInput]
    outputs: dict[str, m.JobOutput]
    #: step output -> the pipeline output it is routed to (``${{parent.outputs.Z}}``)
    routed: dict[str, str]
    #: steps this one waits for, in topological order
    deps: list[str]
    dependency_type: str = "afterok"
    deterministic: bool = True
    component_name: str | None = None
    component_version: str | None = None
    display_name: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    role: str | None = None
    key: str | None = None
    #: a sweep step: the node (search space, objective, limits...) and the trial inputs its hyperparameters feed
    sweep: m.SweepNode | None = None
    sampled: tuple[str, ...] = ()


# --------------------------------------------------------------------------- helpers
def _err(smap: SourceMap, path: PathKey, message: str, hint: str | None = None) -> ValidationError:
    return ValidationError(message, hint=hint, location=smap.locate(path), field=dotted(path) or None)


def step_job_name(pipeline: str, step: str) -> str:
    """The job name of a step: ``<pipeline>_<step>``, shortened with a hash past 255 characters."""
    name = f"{pipeline}_{step}"
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: NAME_MAX - 11]}_{digest}"


def pipeline_inputs(loaded: Loaded) -> dict[str, m.LiteralInput | m.DataInput]:
    """The pipeline-level inputs as typed inputs (literals, or data with local paths resolved)."""
    job = loaded.job
    assert isinstance(job, m.PipelineJob)
    work: dict[str, Any] = {"inputs": copy.deepcopy(job.inputs)}
    _prep_inputs(work, loaded.source, (), loaded.base_dir)
    return dict(work.get("inputs") or {})


def _strip_azureml(name: str) -> str:
    return name[len("azureml:") :] if name.startswith("azureml:") else name


def _resolve_compute(loaded: Loaded, site: Site, node_compute: str | None, step_path: PathKey) -> tuple[str, Compute]:
    """Step ``compute`` < ``settings.default_compute`` < pipeline ``compute`` < the site's default."""
    job = loaded.job
    assert isinstance(job, m.PipelineJob)
    candidates: list[tuple[str | None, PathKey]] = [
        (node_compute, (*step_path, "compute")),
        (job.settings.default_compute, ("settings", "default_compute")),
        (job.compute, ("compute",)),
    ]
    chosen: str | None = None
    where: PathKey = step_path
    for value, path in candidates:
        if value:
            chosen, where = value, path
            break
    if chosen is not None and _strip_azureml(chosen) == "serverless":
        # Azure's serverless compute: here, the site's default compute
        chosen = None
    try:
        return site.resolve_compute(chosen)
    except HpcjobsError as exc:
        raise ValidationError(exc.message, hint=exc.hint, location=loaded.source.locate(where), field=dotted(where)) from None


def _default_datastore(loaded: Loaded, site: Site, warnings: list[str]) -> str | None:
    job = loaded.job
    assert isinstance(job, m.PipelineJob)
    ds = job.settings.default_datastore
    if not ds:
        return None
    name = _strip_azureml(ds)
    if name in site.datastores:
        return name
    where = ("settings", "default_datastore")
    if not site.datastores:
        # the seed examples name Azure's workspaceblobstore; a site without datastores keeps outputs in the job folder
        warnings.append(
            f"{loaded.source.locate(where)}: settings.default_datastore: site '{site.name}' defines no datastores; "
            "step outputs stay under the pipeline's job folder"
        )
        return None
    raise _err(
        loaded.source,
        where,
        f"datastore '{name}' is not defined for site '{site.name}'",
        known_list_hint(name, site.datastores, "datastores"),
    )


def _override_of(raw: Any) -> dict[str, Any]:
    """The ``mode``/``type`` given next to a bound ``path`` (``{path: ${{parent...}}, mode: download}``)."""
    if isinstance(raw, dict):
        return {k: v for k, v in raw.items() if k in ("mode", "type")}
    return {}


# --------------------------------------------------------------------------- phase 1: resolve
@dataclass
class _Ctx:
    loaded: Loaded
    site: Site
    target: Target
    pipeline_inputs: dict[str, m.LiteralInput | m.DataInput]
    warnings: list[str]
    specs: dict[str, StepSpec] = field(default_factory=dict)
    #: output types of every step, by step then output
    output_types: dict[str, dict[str, str]] = field(default_factory=dict)
    default_datastore: str | None = None


def _bind(
    ctx: _Ctx,
    step: str,
    iname: str,
    raw: Any,
    port: m.ParameterPort | m.DataPort | None,
    base: Path,
) -> BoundInput | None:
    """Bind one step input (raw YAML value) to a literal, a data path or an upstream output."""
    smap = ctx.loaded.source
    ipath: PathKey = ("jobs", step, "inputs", iname)
    override = _override_of(raw)
    b = parse_binding(raw)
    bound: BoundInput | None
    if b is None:
        if isinstance(raw, dict):
            kind = raw.get("type")
            if "value" in raw or (isinstance(kind, str) and kind.lower() in m.PARAM_TYPES):
                bound = validate_model(m.LiteralInput, raw, smap, ipath)
            else:
                bound = validate_model(m.DataInput, raw, smap, ipath)
                assert isinstance(bound, m.DataInput)
                if bound.path and not is_uri(bound.path) and not bound.path.startswith("/"):
                    bound.path = _resolve_local(bound.path, ctx.loaded.base_dir)
        elif isinstance(raw, bool | int | float | str) or raw is None:
            bound = m.LiteralInput(value=raw)
        else:
            raise _err(smap, ipath, f"expected a literal value, a mapping or a binding, got {type(raw).__name__}")
    else:
        if b[0] == "inputs":
            b = ("parent", *b)
        if b[1] == "inputs":
            src = ctx.pipeline_inputs.get(b[2])
            if src is None:
                raise _err(smap, ipath, f"binding refers to pipeline input '{b[2]}', which is not declared")
            bound = src.model_copy(deep=True)
        elif b[3] == "outputs":
            up = ctx.specs.get(b[2])
            if up is None:
                raise _err(smap, ipath, f"step '{b[2]}' is not planned before step '{step}'")
            otype = override.get("type") or ctx.output_types.get(b[2], {}).get(b[4], "uri_folder")
            mode = override.get("mode") or (port.mode if isinstance(port, m.DataPort) and port.mode else "ro_mount")
            up_bound = Upstream(step=b[2], output=b[4], type=str(otype).lower(), mode=str(mode).lower())
            # the same checks as a data input: a mode that does not fit the type is an error here
            validate_model(m.DataInput, {"type": up_bound.type, "mode": up_bound.mode}, smap, ipath)
            return up_bound
        else:
            up = ctx.specs.get(b[2])
            if up is None:
                raise _err(smap, ipath, f"step '{b[2]}' is not planned before step '{step}'")
            got = up.inputs.get(b[4])
            if got is None:
                return None
            bound = copy.deepcopy(got)
            if isinstance(bound, Upstream):
                return bound
    # shape the value for the port it feeds
    assert not isinstance(bound, Upstream)
    if isinstance(port, m.DataPort):
        if isinstance(bound, m.LiteralInput) and bound.value is None:
            return None
        return _as_data(bound, port, override, base, smap, ipath)
    if isinstance(port, m.ParameterPort):
        if isinstance(bound, m.DataInput):
            raise _err(smap, ipath, f"input '{iname}' is a {port.type} parameter; it cannot take data ({bound.type})")
        assert isinstance(bound, m.LiteralInput)
        if bound.value is None:
            return None
        return m.LiteralInput(value=_coerce_param(bound.value, port, smap, ipath), type=port.type)
    if isinstance(bound, m.DataInput) and override:
        return _as_data(bound, None, override, base, smap, ipath)
    if isinstance(bound, m.LiteralInput) and bound.value is None:
        return None
    return bound


def _output(
    ctx: _Ctx,
    step: str,
    oname: str,
    raw: Any,
    port: m.OutputPort | None,
    smap: SourceMap,
    opath: PathKey,
    port_at: tuple[SourceMap, PathKey] | None = None,
) -> tuple[m.JobOutput, str | None]:
    """A step output spec and the pipeline output it is routed to (if any).

    *port_at* locates the component's declaration of the output, for errors about it.
    """
    base: dict[str, Any] = {}
    if port is not None:
        ptype = (port.type or "uri_folder").lower()
        if ptype not in DATA_PORT_TYPES:
            where_map, where = port_at or (smap, opath)
            raise _err(
                where_map,
                (*where, "type"),
                f"output '{oname}' of step '{step}' is a primitive ({ptype}) output, which steps on Slurm cannot produce",
                "write the value into a uri_file output instead",
            )
        base["type"] = "uri_folder" if ptype == "path" else ptype
        if port.mode:
            base["mode"] = port.mode
        if port.path:
            base["path"] = port.path
    routed: str | None = None
    if isinstance(raw, str):
        b = parse_binding(raw)
        if b is not None and len(b) == 3 and b[1] == "outputs":
            routed = b[2]
        else:
            raise _err(smap, opath, f"invalid output binding {raw!r}", "step outputs bind to ${{parent.outputs.X}}")
    elif isinstance(raw, dict):
        data = dict(raw)
        target = data.get("path")
        if isinstance(target, str) and target.strip().startswith("${{"):
            b = parse_binding(target)
            if b is None or len(b) != 3 or b[1] != "outputs":
                raise _err(smap, opath, f"invalid output binding {target!r}", "step outputs bind to ${{parent.outputs.X}}")
            routed = b[2]
            del data["path"]
        base.update(data)
    elif raw is not None:
        raise _err(smap, opath, f"expected an output spec or a binding, got {raw!r}")
    out = validate_model(m.JobOutput, base, smap, opath)
    assert isinstance(out, m.JobOutput)
    if routed is not None:
        job = ctx.loaded.job
        assert isinstance(job, m.PipelineJob)
        declared = job.outputs.get(routed)
        if declared is not None and declared.path:
            out.path = declared.path.replace("${{output_name}}", routed)
    elif out.path is None and ctx.default_datastore:
        out.path = f"azureml://datastores/{ctx.default_datastore}/paths/azureml/${{{{name}}}}/${{{{output_name}}}}"
    return out, routed


def _resources(
    comp_res: dict[str, Any] | None, node_res: m.Resources | None, warnings: list[str], where: str
) -> m.Resources | None:
    if not comp_res and node_res is None:
        return node_res
    data: dict[str, Any] = {}
    for k, v in (comp_res or {}).items():
        if k in m.Resources.model_fields:
            data[k] = v
        else:
            warnings.append(f"{where}: resources.{k} of the component is not used on Slurm")
    if node_res is not None:
        data.update(node_res.model_dump(exclude_unset=True))
    return m.Resources.model_validate(data)


def _roles(loaded: Loaded, deps: dict[str, set[str]]) -> tuple[str | None, str | None]:
    """The ``settings.on_init`` and ``settings.on_finalize`` steps, checked."""
    job = loaded.job
    assert isinstance(job, m.PipelineJob)
    smap = loaded.source
    found: list[str | None] = []
    for key in ("on_init", "on_finalize"):
        step = getattr(job.settings, key)
        if step is not None and step not in job.jobs:
            raise _err(smap, ("settings", key), f"step '{step}' does not exist", known_list_hint(step, job.jobs, "steps"))
        found.append(step)
    init, fin = found
    if init is not None and fin == init:
        raise _err(smap, ("settings", "on_finalize"), "on_init and on_finalize name the same step")
    for key, step in (("on_init", init), ("on_finalize", fin)):
        if step is None:
            continue
        users = sorted(n for n, d in deps.items() if step in d)
        if deps.get(step) or users:
            raise _err(
                smap,
                ("settings", key),
                f"the {key} step '{step}' must not exchange data with other steps",
                "it runs " + ("before" if key == "on_init" else "after") + " every other step by itself",
            )
    return init, fin


def resolve_steps(loaded: Loaded, site: Site, target: Target, warnings: list[str] | None = None) -> list[StepSpec]:
    """Every step of the pipeline with its inputs bound, in topological order (pure)."""
    from hpcjobs import reuse

    job = loaded.job
    assert isinstance(job, m.PipelineJob)
    smap = loaded.source
    warns = warnings if warnings is not None else []
    ctx = _Ctx(loaded=loaded, site=site, target=target, pipeline_inputs=pipeline_inputs(loaded), warnings=warns)
    ctx.default_datastore = _default_datastore(loaded, site, warns)
    deps = {n: set(loaded.step_deps.get(n, set())) for n in job.jobs}
    init, fin = _roles(loaded, deps)
    # ${{parent.jobs.S.inputs.I}} reads what S reads, so S is resolved first (and the step
    # waits for whatever S's input comes from: see the Upstream handling below)
    order_deps = {n: set(d) for n, d in deps.items()}
    for n, node in job.jobs.items():
        for raw in getattr(node, "inputs", {}).values():
            b = parse_binding(raw)
            if b is not None and len(b) == 5 and b[1] == "jobs" and b[3] == "inputs" and b[2] in job.jobs and b[2] != n:
                order_deps[n].add(b[2])
    order = topo_order(order_deps)
    if order is None:
        raise _err(smap, ("jobs",), "the steps form a cycle through ${{parent.jobs.S.inputs.X}} bindings")
    if init is not None:
        order = [init, *(n for n in order if n != init)]
    if fin is not None:
        order = [*(n for n in order if n != fin), fin]
    routed_by: dict[str, str] = {}
    for step in order:
        node = job.jobs[step]
        p: PathKey = ("jobs", step)
        comp: m.CommandComponent | None = None
        cmap = smap
        base = loaded.base_dir
        sampled: tuple[str, ...] = ()
        if isinstance(node, m.ComponentNode | m.SweepNode):
            # a sweep step's trial is a component too (loaded and checked by check_pipeline)
            comp, cmap, cpath = loaded.components[step]
            base = Path(cpath).resolve().parent
        if isinstance(node, m.SweepNode):
            from hpcjobs.spec.bind import hyperparameters
            from hpcjobs.sweep.sampling import parse_search_space

            params = hyperparameters(parse_search_space(node.search_space, field=f"jobs.{step}.search_space"))
            sampled = tuple(n for n in comp.inputs if n in params) if comp is not None else ()
        compute_name, compute = _resolve_compute(loaded, site, node.compute, p)
        inputs: dict[str, BoundInput] = {}
        if comp is not None:
            for iname, port in comp.inputs.items():
                if iname in sampled:
                    continue
                bound: BoundInput | None
                if iname in node.inputs:
                    bound = _bind(ctx, step, iname, node.inputs[iname], port, loaded.base_dir)
                else:
                    bound = port_default(port, base, cmap, ("inputs", iname))
                if bound is None and not port.optional:
                    raise _err(smap, (*p, "inputs"), f"required input '{iname}' of component '{comp.name}' has no value")
                if bound is not None:
                    inputs[iname] = bound
        else:
            for iname, raw in node.inputs.items():
                bound = _bind(ctx, step, iname, raw, None, loaded.base_dir)
                if bound is not None:
                    inputs[iname] = bound
        outputs: dict[str, m.JobOutput] = {}
        routed: dict[str, str] = {}
        if comp is not None:
            for oname, oport in comp.outputs.items():
                port_at = (cmap, ("outputs", oname))
                out, z = _output(
                    ctx, step, oname, node.outputs.get(oname), oport or m.OutputPort(), smap, (*p, "outputs", oname), port_at
                )
                outputs[oname] = out
                if z:
                    routed[oname] = z
        else:
            for oname, raw in node.outputs.items():
                out, z = _output(ctx, step, oname, raw, None, smap, (*p, "outputs", oname))
                outputs[oname] = out
                if z:
                    routed[oname] = z
        for oname, z in routed.items():
            if z in routed_by:
                raise _err(
                    smap,
                    (*p, "outputs", oname),
                    f"pipeline output '{z}' is already bound to an output of step '{routed_by[z]}'",
                    "a pipeline output takes the data of exactly one step output",
                )
            routed_by[z] = step
        ctx.output_types[step] = {o: out.type for o, out in outputs.items()}
        step_deps = set(deps.get(step, set()))
        step_deps.update(v.step for v in inputs.values() if isinstance(v, Upstream))
        role = "init" if step == init else "finalize" if step == fin else None
        if init is not None and step != init:
            step_deps.add(init)
        dep_type = "afterok"
        if role == "finalize":
            step_deps = {n for n in order if n != step}
            dep_type = "afterany"
        # what every kind of step has: where it runs, what it reads and writes, what it waits for
        wiring: dict[str, Any] = {
            "name": step,
            "compute_name": compute_name,
            "compute": compute,
            "inputs": inputs,
            "outputs": outputs,
            "routed": routed,
            "deps": [n for n in order if n in step_deps],
            "dependency_type": dep_type,
            "role": role,
        }
        if comp is not None:
            component: dict[str, Any] = {
                "command": comp.command,
                "code": comp.code,
                "environment": comp.environment,
                "component_name": comp.name,
                "component_version": None if comp.version is None else str(comp.version),
                "tags": {**comp.tags, **node.tags},
            }
        if isinstance(node, m.SweepNode):
            assert comp is not None
            spec = StepSpec(
                **wiring,
                **component,
                kind="sweep",
                env_vars={},
                resources=_resources(comp.resources, node.resources, warns, f"{smap.locate(p)}: jobs.{step}"),
                distribution=comp.distribution,
                timeout=None,
                # sampled anew (bayesian: adaptively) on every run: never reused, nor what reads from it
                deterministic=False,
                display_name=node.display_name or comp.display_name,
                sweep=node,
                sampled=sampled,
            )
        elif comp is not None:
            assert isinstance(node, m.ComponentNode)
            spec = StepSpec(
                **wiring,
                **component,
                kind="component",
                env_vars=dict(node.environment_variables),
                resources=_resources(comp.resources, node.resources, warns, f"{smap.locate(p)}: jobs.{step}"),
                distribution=node.distribution or comp.distribution,
                timeout=node.limits.timeout if node.limits else None,
                deterministic=comp.is_deterministic,
                display_name=node.display_name or comp.display_name,
            )
        else:
            assert isinstance(node, m.CommandNode)
            spec = StepSpec(
                **wiring,
                kind="command",
                command=node.command,
                code=node.code,
                environment=node.environment,
                env_vars=dict(node.environment_variables),
                resources=node.resources,
                distribution=node.distribution,
                timeout=node.limits.timeout if node.limits else None,
                display_name=node.display_name,
                tags=dict(node.tags),
            )
        spec.key = reuse.step_key(spec, {n: s.key for n, s in ctx.specs.items()}, target.digests, site.name)
        ctx.specs[step] = spec
    for z in job.outputs:
        if z not in routed_by:
            warns.append(
                f"{smap.locate(('outputs', z))}: outputs.{z}: no step output is bound to it (use ${{{{parent.outputs.{z}}}}})"
            )
    return [ctx.specs[n] for n in order]


# --------------------------------------------------------------------------- phase 2: render
def _materialize(spec: StepSpec, outputs_of: dict[str, dict[str, str]]) -> dict[str, m.LiteralInput | m.DataInput]:
    out: dict[str, m.LiteralInput | m.DataInput] = {}
    for iname, v in spec.inputs.items():
        if isinstance(v, Upstream):
            path = outputs_of[v.step][v.output]
            out[iname] = m.DataInput.model_validate({"type": v.type, "path": path, "mode": v.mode})
        else:
            out[iname] = v
    return out


def _input_view(inputs: dict[str, m.LiteralInput | m.DataInput]) -> dict[str, str]:
    view: dict[str, str] = {}
    for k, v in inputs.items():
        if isinstance(v, m.LiteralInput):
            view[k] = format_value(v.value)
        elif v.path is not None:
            view[k] = v.path
    return view


def plan_pipeline(loaded: Loaded, site: Site, target: Target, *, name: str, token: str) -> Plan:
    """Plan a pipeline job: one script per step (reused steps: none), in dependency order."""
    job = loaded.job
    assert isinstance(job, m.PipelineJob)
    warnings = list(loaded.warnings)
    specs = resolve_steps(loaded, site, target, warnings)
    root = job_root(site, target)
    job_dir = f"{root}/{name}"
    try:
        compute_name, _ = _resolve_compute(loaded, site, None, ("jobs",))
    except ValidationError:
        # every step names its own compute
        compute_name = specs[0].compute_name
    plan = Plan(name=name, kind="pipeline", site=site.name, compute=compute_name, job_dir=job_dir, token=token, scripts=[])
    plan.warnings = warnings
    force = bool(job.settings.force_rerun)
    template = STEP_TEMPLATE if job.settings.continue_on_step_failure else FAIL_FAST_TEMPLATE
    plan.spare_step = next((s.name for s in specs if s.role == "finalize"), "")
    outputs_of: dict[str, dict[str, str]] = {}
    reused: set[str] = set()
    steps_meta: dict[str, dict[str, Any]] = {}
    pipeline_outputs: dict[str, str] = {}
    manifest: list[dict[str, Any]] = []
    for spec in specs:
        child = step_job_name(name, spec.name)
        step_dir = f"{job_dir}/steps/{spec.name}"
        hit = target.reusable.get(spec.key) if spec.key and not force else None
        meta: dict[str, Any] = {"depends_on": list(spec.deps), "job_name": child}
        if spec.role:
            meta["role"] = spec.role
        if hit is not None:
            reused.add(spec.name)
            outputs_of[spec.name] = dict(hit["outputs"])
            for oname, z in spec.routed.items():
                if oname in hit["outputs"]:
                    pipeline_outputs[z] = hit["outputs"][oname]
            meta["reused_from"] = hit["name"]
            plan.children.append(
                {
                    "name": child,
                    "key": spec.name,
                    "script_key": None,
                    "type": "command",
                    "job_dir": hit["job_dir"],
                    "compute": spec.compute_name,
                    "display_name": spec.display_name or spec.name,
                    "tags": spec.tags,
                    "status": "Completed",
                    "started": hit.get("started"),
                    "ended": hit.get("ended"),
                    "exit_code": 0,
                    "extra": {
                        "step": spec.name,
                        "outputs": dict(hit["outputs"]),
                        "reused_from": hit["name"],
                        "reuse_key": spec.key,
                        "state_dir": hit.get("state_dir") or f"{hit['job_dir']}/.hpcjobs",
                    },
                }
            )
            steps_meta[spec.name] = meta
            manifest.append({"step": spec.name, "job_name": child, "reused_from": hit["name"], "outputs": hit["outputs"]})
            continue
        fp = f"jobs.{spec.name}."
        # output folders first: command_env knows datastores and ${{name}}; routed outputs go to the pipeline's
        outs_spec: dict[str, m.JobOutput] = {}
        for oname, out in spec.outputs.items():
            out = out.model_copy()
            routed_to = spec.routed.get(oname)
            if routed_to is not None and out.path is None:
                out.path = f"{job_dir}/named-outputs/{routed_to}"
            elif routed_to is not None and out.path:
                out.path = out.path.replace("${{name}}", name)
            outs_spec[oname] = out
        only_outputs = CommandContext(
            command="",
            inputs={},
            outputs=outs_spec,
            env_vars={},
            environment=None,
            resources=None,
            distribution=None,
            timeout=None,
            code=None,
        )
        _, _, _, _, out_paths, _, _ = command_env(
            site,
            target,
            only_outputs,
            job_name=child,
            out_base=f"{step_dir}/named-outputs",
            task_dir_var=step_dir,
            field_prefix=fp,
        )
        resolved_outs = {o: outs_spec[o].model_copy(update={"path": out_paths[o]}) for o in outs_spec}
        inputs = _materialize(spec, outputs_of)
        step_target = replace(target, code_digest=target.digests.get(spec.code)) if spec.code else target
        plan.code_src = plan.code_dir = None
        deps_now = [d for d in spec.deps if d not in reused]
        swept: PlannedSweep | None = None
        if spec.sweep is not None:
            swept, script = _sweep_step(
                plan,
                spec,
                site,
                step_target,
                root,
                child=child,
                step_dir=step_dir,
                inputs=inputs,
                out_paths=out_paths,
                depends_on=deps_now,
                template=template,
                steps=list(job.jobs),
            )
        else:
            ctx = CommandContext(
                command=spec.command,
                inputs=inputs,
                outputs=resolved_outs,
                env_vars=spec.env_vars,
                environment=spec.environment,
                resources=spec.resources,
                distribution=spec.distribution,
                timeout=spec.timeout,
                code=spec.code,
            )
            script = _command_script(
                plan,
                site,
                step_target,
                spec.compute_name,
                spec.compute,
                ctx,
                key=spec.name,
                job_name=child,
                task_dir=step_dir,
                root=root,
                field_prefix=fp,
                template=template,
            )
        if plan.code_dir and plan.code_src:
            plan.snapshots[plan.code_dir] = plan.code_src
        code_dir = plan.code_dir
        script.script_path = f"{step_dir}/job.sh"
        script.depends_on = deps_now
        script.dependency_type = spec.dependency_type
        plan.scripts.append(script)
        outputs_of[spec.name] = dict(out_paths)
        for oname, z in spec.routed.items():
            pipeline_outputs[z] = out_paths[oname]
        in_view = _input_view(inputs)
        # a sweep step's hyperparameters have a value per trial
        in_view.update({n: f"${{{{search_space.{n}}}}}" for n in spec.sampled})
        extra: dict[str, Any] = {
            "step": spec.name,
            "outputs": dict(out_paths),
            "inputs": in_view,
            "code": code_dir,
            "scripts": {"main": script.script_path},
            **({"reuse_key": spec.key} if spec.key else {}),
        }
        if swept is not None:
            meta["type"] = "sweep"
            extra["sweep"] = swept.meta
            # the step's own job picks the best trial: its state is the step's once the trials ended
            extra["finalize"] = {"key": spec.name, "job_name": script.job_name}
            extra["scripts"].update({k: s.script_path for s in plan.scripts for k in swept.keys if s.key == k})
        plan.children.append(
            {
                "name": child,
                "key": spec.name,
                "script_key": spec.name,
                # a sweep step: its finalize job first (its state), then its arrays (cancel reaches them)
                **({"script_keys": [spec.name, *swept.keys]} if swept is not None else {}),
                "type": "sweep" if swept is not None else "command",
                "job_dir": step_dir,
                "compute": spec.compute_name,
                "display_name": spec.display_name or spec.name,
                "tags": spec.tags,
                "extra": extra,
            }
        )
        if swept is not None:
            plan.children.extend(swept.children)
        steps_meta[spec.name] = meta
        manifest.append(
            {
                "step": spec.name,
                "job_name": child,
                "script": script.script_path,
                "depends_on": script.depends_on,
                "dependency_type": script.dependency_type,
                "compute": spec.compute_name,
                "inputs": in_view,
                "outputs": out_paths,
                "reuse_key": spec.key,
                **(
                    {"type": "sweep", "trials": swept.meta["trials"], "arrays": swept.keys, "after_any": script.after_any}
                    if swept is not None
                    else {}
                ),
            }
        )
    # the pipeline's own view: its inputs and the step outputs routed to its outputs
    plan.code_src = plan.code_dir = None
    if len(plan.snapshots) == 1:
        # one code folder: the plain single-snapshot path of the backends applies
        ((plan.code_dir, plan.code_src),) = plan.snapshots.items()
    top_inputs = dict(pipeline_inputs(loaded))
    plan.inputs = _input_view(top_inputs)
    plan.outputs = pipeline_outputs
    plan.meta = _meta(job, loaded)
    plan.meta["steps"] = steps_meta
    plan.meta["pipeline"] = {
        "continue_on_step_failure": bool(job.settings.continue_on_step_failure),
        "force_rerun": force,
        "reused": sorted(reused),
        # the pipeline's literal inputs: its MLflow run's params (data inputs are paths, not params)
        "literal_inputs": sorted(k for k, v in top_inputs.items() if isinstance(v, m.LiteralInput)),
    }
    plan.files[f"{job_dir}/pipeline.json"] = json.dumps(
        {"name": name, "continue_on_step_failure": job.settings.continue_on_step_failure, "steps": manifest},
        indent=1,
        sort_keys=True,
    ).encode()
    return plan


def finalize_job_name(step_job: str) -> str:
    """The Slurm job name of a sweep step's finalize job (not its arrays' name, see :func:`finalize_script`)."""
    name = f"{step_job}-finalize"
    if len(name) <= NAME_MAX:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[: NAME_MAX - 11]}_{digest}"


def _sweep_step(
    plan: Plan,
    spec: StepSpec,
    site: Site,
    target: Target,
    root: str,
    *,
    child: str,
    step_dir: str,
    inputs: dict[str, m.LiteralInput | m.DataInput],
    out_paths: dict[str, str],
    depends_on: list[str],
    template: str,
    steps: list[str],
) -> tuple[PlannedSweep, Script]:
    """A sweep step: the sweep's arrays (the sweep planner's, in the step's folder) and its finalize job.

    The arrays wait for the steps the sweep reads from (``afterok``); the finalize job,
    which is the step's own script, waits for them too, and for the arrays whatever
    became of their trials (``afterany``): a sweep whose early termination cancelled some
    trials still has a best trial.  It puts that trial's outputs at the step's output
    paths (*out_paths*), which is where the steps downstream read them.
    """
    from hpcjobs.plan_sweep import SweepSpec, add_sweep, finalize_script

    node = spec.sweep
    assert node is not None
    clash = [o for o in steps if o != spec.name and o.startswith(f"{spec.name}_") and o[len(spec.name) + 1 :].isdigit()]
    if clash:
        raise ValidationError(
            f"step '{clash[0]}' would have the job name of trial {clash[0][len(spec.name) + 1 :]} of sweep step '{spec.name}'",
            hint=f"the trials of a sweep step are named {child}_<index>: rename step '{clash[0]}'",
            field=f"jobs.{clash[0]}",
        )
    trial = m.TrialSpec(
        command=spec.command,
        code=spec.code,
        environment=spec.environment,
        environment_variables=dict(spec.env_vars),
        resources=spec.resources,
        distribution=spec.distribution,
    )
    sweep = SweepSpec(
        name=child,
        job_dir=step_dir,
        trial=trial,
        inputs=dict(inputs),
        # every trial writes its own outputs (trials/INDEX/named-outputs); the step's are the best trial's
        outputs={o: out.model_copy(update={"path": None}) for o, out in spec.outputs.items()},
        search_space=node.search_space,
        sampling_algorithm=node.sampling_algorithm,
        objective=node.objective,
        early_termination=node.early_termination,
        limits=node.limits,
        resources=None,
        compute_name=spec.compute_name,
        compute=spec.compute,
        display_name=spec.display_name or child,
        tags=dict(spec.tags),
        sampled=spec.sampled,
        field_prefix=f"jobs.{spec.name}.",
        step=spec.name,
        depends_on=list(depends_on),
        dependency_type=spec.dependency_type,
        best_outputs=dict(out_paths),
    )
    planned = add_sweep(plan, sweep, site, target, root)
    script = finalize_script(plan, sweep, site, key=spec.name, job_name=finalize_job_name(child), template=template)
    script.after_any = list(planned.keys)
    return planned, script


# --------------------------------------------------------------------------- API side: I/O before planning
def code_folders(loaded: Loaded) -> list[str]:
    """The distinct local code folders of the pipeline's steps."""
    job = loaded.job
    assert isinstance(job, m.PipelineJob)
    found: list[str] = []
    for step, node in job.jobs.items():
        code = None
        if isinstance(node, m.CommandNode):
            code = node.code
        elif isinstance(node, m.ComponentNode | m.SweepNode) and step in loaded.components:
            code = loaded.components[step][0].code
        if code and code not in found:
            found.append(code)
    return found


def local_data_paths(loaded: Loaded) -> list[str]:
    """Local paths of the pipeline's data inputs (pipeline level and step level), for fingerprints."""
    job = loaded.job
    assert isinstance(job, m.PipelineJob)
    paths: list[str] = []
    try:
        pins = pipeline_inputs(loaded)
    except ValidationError:
        pins = {}
    for v in pins.values():
        if isinstance(v, m.DataInput) and v.path and v.path.startswith("/"):
            paths.append(v.path)
    for node in job.jobs.values():
        for raw in getattr(node, "inputs", {}).values():
            if isinstance(raw, dict) and isinstance(raw.get("path"), str) and raw["path"].startswith("/"):
                paths.append(raw["path"])
    return list(dict.fromkeys(paths))


def prepare_target(loaded: Loaded, site: Site, target: Target, store: Store | None, *, refresh: bool = False) -> None:
    """Fill *target* with what planning a pipeline needs from the world (the one impure step).

    * content digests of every step's code folder (snapshot folders and reuse keys) and
      fingerprints of local data inputs (reuse keys);
    * completed step runs that match a step's reuse key (unless ``settings.force_rerun``);
      with *refresh*, candidate runs not yet known to be finished are refreshed first.
    """
    from hpcjobs import reuse
    from hpcjobs.snapshot import take_snapshot

    for code in code_folders(loaded):
        snap = take_snapshot(code)
        target.digests[code] = snap.digest
        loaded.warnings.extend(w for w in snap.warnings() if w not in loaded.warnings)
    for path in local_data_paths(loaded):
        fp = reuse.fingerprint(path)
        if fp is not None:
            target.digests[path] = fp
    job = loaded.job
    assert isinstance(job, m.PipelineJob)
    if store is None or job.settings.force_rerun:
        return
    specs = resolve_steps(loaded, site, target, [])
    keys = [s.key for s in specs if s.key]
    if keys:
        target.reusable.update(reuse.lookup(store, site.name, keys, refresh=refresh))


# --------------------------------------------------------------------------- status
def stop_after_failure(parent: JobRecord, children: list[JobRecord], backend: Backend) -> list[str]:
    """``continue_on_step_failure: false``: cancel the steps still queued or running once one failed.

    The steps do this themselves when they fail (``pipeline_step.sh.j2``); this is the
    backstop, run on every refresh, for a step that died without running its exit hook
    (node failure, out of memory).  Returns the names of the steps it canceled.
    """
    from hpcjobs.status import JobStatus

    info = parent.extra.get("pipeline") or {}
    if info.get("continue_on_step_failure", True) or parent.extra.get("cancel_requested"):
        return []
    if not any(JobStatus(c.status) == JobStatus.FAILED for c in children):
        return []
    roles = {s: (v or {}).get("role") for s, v in (parent.extra.get("steps") or {}).items()}
    victims = [
        c
        for c in children
        if not JobStatus(c.status).is_terminal and roles.get(c.extra.get("step", "")) != "finalize" and c.slurm_ids
    ]
    if not victims:
        return []
    try:
        backend.cancel(victims)
    except HpcjobsError:
        # already ending; the next refresh sees them terminal
        return []
    return [c.name for c in victims]
