"""Cross-field checks of a loaded job: expressions in commands, pipeline bindings and DAG."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcjobs import expr
from hpcjobs.errors import Location, ValidationError, known_list_hint
from hpcjobs.spec import models as m
from hpcjobs.spec.yamlload import PathKey, SourceMap, dotted

if TYPE_CHECKING:
    from hpcjobs.spec.load import Loaded

KNOWN_SETTINGS = ("default_compute", "default_datastore", "continue_on_step_failure", "force_rerun", "on_init", "on_finalize")
BINDING_RE = re.compile(r"^\$\{\{\s*(parent\.[A-Za-z0-9_.]+|inputs\.[A-Za-z0-9_.]+)\s*\}\}$")


def _err(smap: SourceMap, path: PathKey, message: str, hint: str | None = None, needle: str | None = None) -> ValidationError:
    loc = smap.find_text(path, needle) if needle else smap.locate(path)
    return ValidationError(message, hint=hint, location=loc, field=dotted(path) or None)


def _check_text_value(smap: SourceMap, path: PathKey, value: str) -> None:
    if "\x00" in value:
        raise _err(smap, path, "contains a NUL character, which no process can receive")


def check_command(
    command: str,
    *,
    smap: SourceMap,
    path: PathKey,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    search_space: dict[str, Any] | None = None,
    sweep_trial: bool = False,
    warnings: list[str],
    allow_parent: bool = False,
) -> str:
    """Validate the expressions of *command*; return it with legacy syntax normalized."""
    _check_text_value(smap, path, command)
    if "\r" in command:
        raise _err(smap, path, "contains a carriage return (CR)", "save the job file with Unix (LF) line endings")
    try:
        normalized, legacy = expr.normalize_legacy(command)
        expr.find_refs(normalized)
    except expr.ExpressionError as exc:
        raise ValidationError(
            exc.message, hint=exc.hint, location=expression_location(smap, path, command, exc), field=dotted(path)
        ) from None
    for w in legacy:
        warnings.append(f"{smap.locate(path)}: {dotted(path)}: {w}")
    for ref in expr.find_refs(normalized):
        needle = ref.text
        raw_expr = normalized[ref.start : ref.end]
        if ref.namespace == "inputs":
            if ref.name not in inputs and not ref.optional:
                raise _err(
                    smap,
                    path,
                    f"${{{{inputs.{ref.name}}}}} refers to an input that is not declared",
                    known_list_hint(ref.name, inputs, "declared inputs"),
                    needle=raw_expr if raw_expr in command else ref.name,
                )
        elif ref.namespace == "outputs":
            if ref.name not in outputs:
                raise _err(
                    smap,
                    path,
                    f"${{{{outputs.{ref.name}}}}} refers to an output that is not declared",
                    known_list_hint(ref.name, outputs, "declared outputs"),
                    needle=raw_expr if raw_expr in command else ref.name,
                )
        elif ref.namespace == "search_space":
            if search_space is None:
                if sweep_trial:
                    # a trial that is a component (a pipeline's sweep step): bound as on Azure
                    raise _err(
                        smap,
                        path,
                        f"a component's command cannot use ${{{{{needle}}}}}",
                        f"declare an input '{ref.name}' in the trial, use ${{{{inputs.{ref.name}}}}}, "
                        f"and search_space.{ref.name} feeds it",
                        needle=ref.name,
                    )
                raise _err(
                    smap,
                    path,
                    f"${{{{{needle}}}}} is only valid in a sweep's trial command",
                    "only the trial command of a `type: sweep` job can use ${{search_space.X}}",
                    needle=ref.name,
                )
            if ref.name not in search_space:
                raise _err(
                    smap,
                    path,
                    f"${{{{search_space.{ref.name}}}}} is not in the search space",
                    known_list_hint(ref.name, search_space, "search space"),
                    needle=ref.name,
                )
        elif ref.namespace == "name" or (ref.namespace == "parent" and allow_parent):
            continue
        else:
            raise _err(
                smap,
                path,
                f"unknown expression ${{{{{needle}}}}}",
                "commands may use ${{inputs.X}}, ${{outputs.X}}, ${{search_space.X}} (sweeps) and ${{name}}",
                needle=needle,
            )
    return normalized


def expression_location(smap: SourceMap, path: PathKey, command: str, exc: expr.ExpressionError) -> Location:
    """The file position of an error at (line, col) of a command (best effort for folded text)."""
    lines = command.splitlines()
    text = lines[exc.line - 1] if 0 < exc.line <= len(lines) else ""
    needle = text.strip()
    if not needle:
        return smap.locate(path)
    loc = smap.find_text(path, needle)
    if loc.line is not None and loc.col is not None:
        return Location(loc.file, loc.line, loc.col + max(0, exc.col - 1 - (len(text) - len(text.lstrip()))))
    return loc


def locate_plan_error(loaded: Loaded, exc: ValidationError) -> ValidationError:
    """Give an error raised while planning (it knows its field) the job file's FILE:LINE."""
    if exc.location is not None:
        return exc
    smap = loaded.source
    parts: tuple[str | int, ...] = tuple(exc.field.split(".")) if exc.field else ()
    if isinstance(loaded.job, m.SweepJob) and parts[:1] == ("command",):
        parts = ("trial", *parts)
    if isinstance(exc, expr.ExpressionError):
        command = getattr(loaded.job, "command", None) or getattr(getattr(loaded.job, "trial", None), "command", "")
        exc.location = expression_location(smap, parts, command or "", exc)
    else:
        found = re.search(r"\$\{\{[^}]*\}\}", exc.message)
        exc.location = smap.find_text(parts, found.group(0)) if found else smap.locate(parts)
    return exc


def _check_env_vars(env: dict[str, Any], smap: SourceMap, prefix: PathKey) -> None:
    from hpcjobs.shellquote import shq_env_name

    for name, value in env.items():
        try:
            shq_env_name(name)
        except ValidationError as exc:
            raise _err(smap, (*prefix, "environment_variables", name), exc.message, exc.hint) from None
        if isinstance(value, str):
            _check_text_value(smap, (*prefix, "environment_variables", name), value)


def _check_literals(inputs: dict[str, Any], smap: SourceMap, prefix: PathKey) -> None:
    for name, inp in inputs.items():
        if isinstance(inp, m.LiteralInput) and isinstance(inp.value, str):
            _check_text_value(smap, (*prefix, "inputs", name), inp.value)


def check_job(loaded: Loaded) -> None:
    """Run every cross-field check of the loaded job, in place."""
    job = loaded.job
    smap = loaded.source
    for key in ("display_name", "description", "experiment_name"):
        val = getattr(job, key)
        if isinstance(val, str):
            _check_text_value(smap, (key,), val)
    for mapname in ("tags", "properties"):
        for k, v in getattr(job, mapname).items():
            if isinstance(v, str):
                _check_text_value(smap, (mapname, k), v)
    if isinstance(job, m.CommandJob):
        _check_env_vars(job.environment_variables, smap, ())
        _check_literals(job.inputs, smap, ())
        job.command = check_command(
            job.command, smap=smap, path=("command",), inputs=job.inputs, outputs=job.outputs, warnings=loaded.warnings
        )
    elif isinstance(job, m.SweepJob):
        from hpcjobs.sweep.sampling import parse_search_space

        try:
            parse_search_space(job.search_space)
        except ValidationError as exc:
            field = exc.field or "search_space"
            parts = tuple(field.split("."))
            raise ValidationError(exc.message, hint=exc.hint, location=smap.locate(parts), field=field) from None
        assert isinstance(job.trial, m.TrialSpec)
        _check_env_vars(job.trial.environment_variables, smap, ("trial",))
        _check_literals(job.inputs, smap, ())
        if loaded.trial_component is not None:
            _check_component_trial(loaded, job, parse_search_space(job.search_space))
        else:
            job.trial.command = check_command(
                job.trial.command,
                smap=smap,
                path=("trial", "command"),
                inputs=job.inputs,
                outputs=job.outputs,
                search_space=job.search_space,
                warnings=loaded.warnings,
            )
        if job.sampling_algorithm.type != "grid" and job.limits.max_total_trials is None:
            raise _err(
                smap,
                ("limits",),
                "limits.max_total_trials is required for random and bayesian sampling",
                "for example limits: {max_total_trials: 20, max_concurrent_trials: 4}",
            )
    elif isinstance(job, m.PipelineJob):
        check_pipeline(loaded)


def _check_component_trial(loaded: Loaded, job: m.SweepJob, space: dict[str, Any]) -> None:
    """A sweep whose trial is a component: bind hyperparameters and inputs to its inputs (Azure's rule).

    Each search-space key feeds the component input of the same name; the sweep's
    ``inputs:`` feed the others; a component input with a default need not be given.  The
    sweep's inputs become the component's inputs with their values, its outputs the
    component's outputs (with the sweep's settings for them).
    """
    from hpcjobs.spec.bind import bind_trial_inputs, component_output

    assert loaded.trial_component is not None and isinstance(job.trial, m.TrialSpec)
    comp, cmap, cpath = loaded.trial_component
    smap = loaded.source
    comp.command = check_command(
        comp.command,
        smap=cmap,
        path=("command",),
        inputs=comp.inputs,
        outputs=comp.outputs,
        warnings=loaded.warnings,
        sweep_trial=True,
    )
    job.trial.command = comp.command
    bound, sampled = bind_trial_inputs(comp, (cmap, cpath), space, dict(job.inputs), smap=smap, prefix=(), base=loaded.base_dir)
    for oname in job.outputs:
        if oname not in comp.outputs:
            raise ValidationError(
                f"component '{comp.name}' has no output '{oname}'",
                hint=known_list_hint(oname, comp.outputs, "its outputs"),
                location=smap.locate(("outputs", oname), key=True),
                field=f"outputs.{oname}",
            )
    job.outputs = {o: component_output(comp, o, cmap, job.outputs.get(o), smap, ("outputs", o)) for o in comp.outputs}
    job.inputs = dict(bound)
    loaded.trial_sampled = sampled
    if job.resources is not None and job.trial.resources is not None:
        # the sweep's own resources: settings for every trial, over the component's
        job.trial.resources = m.Resources.model_validate(
            {**job.trial.resources.model_dump(exclude_unset=True), **job.resources.model_dump(exclude_unset=True)}
        )


# --------------------------------------------------------------------------- pipelines
def parse_binding(value: Any) -> tuple[str, ...] | None:
    """``${{parent.jobs.a.outputs.b}}`` -> ('parent','jobs','a','outputs','b'); None if not a binding."""
    if isinstance(value, dict) and set(value) <= {"path", "mode", "type"} and "path" in value:
        value = value["path"]
    if not isinstance(value, str):
        return None
    match = BINDING_RE.match(value.strip())
    if not match:
        return None
    return tuple(match.group(1).split("."))


def check_pipeline(loaded: Loaded) -> None:
    """Validate steps, bindings and the DAG of a pipeline job, replacing raw steps by models."""
    from hpcjobs.spec.load import (
        _as_mapping,
        _prep_command_fields,
        _resolve_local,
        is_uri,
        validate_model,
    )

    job = loaded.job
    assert isinstance(job, m.PipelineJob)
    smap = loaded.source
    base = loaded.base_dir
    if job.component is not None:
        raise _err(smap, ("component",), "pipeline components are not supported yet", "inline the steps under jobs:")
    extra = job.settings.model_extra or {}
    for key in extra:
        hint = known_list_hint(key, KNOWN_SETTINGS, "known settings")
        loaded.warnings.append(f"{smap.locate(('settings', key), key=True)}: settings.{key}: unknown setting is ignored ({hint})")
    if not job.jobs:
        raise _err(smap, ("jobs",), "a pipeline needs at least one step under jobs:")
    steps: dict[str, Any] = {}
    step_outputs: dict[str, set[str]] = {}
    step_inputs: dict[str, dict[str, Any]] = {}
    for name, node in job.jobs.items():
        p: PathKey = ("jobs", name)
        if not m.NODE_NAME_RE.match(name):
            raise ValidationError(
                f"invalid step name '{name}'",
                hint="step names use lower-case letters, digits and _ and start with a letter or _",
                location=smap.locate(p, key=True),
                field=dotted(p),
            )
        node = _as_mapping(node, smap.sub(p), "step") if not isinstance(node, dict) else node
        kind = node.get("type", "command")
        work = dict(node)
        if "component" in work:
            comp_ref = work["component"]
            comp, cmap, cpath = _step_component(loaded, comp_ref, (*p, "component"))
            loaded.components[name] = (comp, cmap, cpath)
            model = validate_model(m.ComponentNode, work, smap, p)
            declared_in = dict(comp.inputs)
            declared_out = set(comp.outputs)
            for iname in model.inputs:
                if iname not in declared_in:
                    raise _err(
                        smap,
                        (*p, "inputs", iname),
                        f"component '{comp.name}' has no input '{iname}'",
                        known_list_hint(iname, declared_in, "its inputs"),
                    )
            for oname in model.outputs:
                if oname not in declared_out:
                    raise _err(
                        smap,
                        (*p, "outputs", oname),
                        f"component '{comp.name}' has no output '{oname}'",
                        known_list_hint(oname, declared_out, "its outputs"),
                    )
            for iname, port in comp.inputs.items():
                if iname not in model.inputs and not port.optional and port.default is None:
                    raise _err(smap, (*p, "inputs"), f"required input '{iname}' of component '{comp.name}' is not provided")
        elif kind == "sweep":
            model = validate_model(m.SweepNode, work, smap, p)
            comp, cmap, cpath = _sweep_node_component(loaded, name, model)
            loaded.components[name] = (comp, cmap, cpath)
            declared_out = set(comp.outputs)
            for oname in model.outputs:
                if oname not in declared_out:
                    raise _err(
                        smap,
                        (*p, "outputs", oname),
                        f"component '{comp.name}' has no output '{oname}'",
                        known_list_hint(oname, declared_out, "its outputs"),
                    )
        elif kind in ("command", None):
            _prep_command_fields(work, smap, p, base)
            model = validate_model(m.CommandNode, work, smap, p)
            _check_env_vars(model.environment_variables, smap, p)
            declared_out = set(model.outputs)
            model.command = check_command(
                model.command,
                smap=smap,
                path=(*p, "command"),
                inputs=model.inputs,
                outputs=model.outputs,
                warnings=loaded.warnings,
            )
        else:
            raise _err(smap, (*p, "type"), f"step type '{kind}' is not supported", "steps are command or sweep jobs")
        steps[name] = model
        step_outputs[name] = declared_out
        step_inputs[name] = dict(model.inputs)
    # bindings
    deps: dict[str, set[str]] = {n: set() for n in steps}
    for name, model in steps.items():
        p = ("jobs", name)
        for iname, value in model.inputs.items():
            ip = (*p, "inputs", iname)
            b = parse_binding(value)
            if b is None:
                if isinstance(value, str) and "${{" in value:
                    raise _err(
                        smap,
                        ip,
                        f"cannot understand binding {value!r}",
                        "use ${{parent.inputs.X}} or ${{parent.jobs.STEP.outputs.Y}}",
                    )
                if isinstance(value, dict):
                    inner = value.get("path")
                    if isinstance(inner, str) and not is_uri(inner) and "${{" not in inner:
                        value["path"] = _resolve_local(inner, base)
                continue
            if b[0] == "inputs":
                b = ("parent", *b)
                loaded.warnings.append(
                    f"{smap.locate(ip)}: {dotted(ip)}: legacy binding; write ${{{{parent.{'.'.join(b[1:])}}}}}"
                )
            if len(b) == 3 and b[1] == "inputs":
                if b[2] not in job.inputs:
                    raise _err(
                        smap,
                        ip,
                        f"binding refers to pipeline input '{b[2]}', which is not declared",
                        known_list_hint(b[2], job.inputs, "pipeline inputs"),
                    )
            elif len(b) == 5 and b[1] == "jobs" and b[3] in ("outputs", "inputs"):
                src = b[2]
                if src not in steps:
                    raise _err(
                        smap, ip, f"binding refers to step '{src}', which does not exist", known_list_hint(src, steps, "steps")
                    )
                if b[3] == "outputs" and b[4] not in step_outputs[src]:
                    raise _err(
                        smap,
                        ip,
                        f"step '{src}' has no output '{b[4]}'",
                        known_list_hint(b[4], step_outputs[src], f"outputs of {src}"),
                    )
                if b[3] == "inputs" and b[4] not in step_inputs[src]:
                    raise _err(
                        smap,
                        ip,
                        f"step '{src}' has no input '{b[4]}'",
                        known_list_hint(b[4], step_inputs[src], f"inputs of {src}"),
                    )
                if src == name:
                    raise _err(smap, ip, f"step '{name}' cannot consume its own output")
                if b[3] == "outputs":
                    deps[name].add(src)
            else:
                raise _err(
                    smap,
                    ip,
                    f"cannot understand binding {'.'.join(b)}",
                    "use ${{parent.inputs.X}} or ${{parent.jobs.STEP.outputs.Y}}",
                )
        for oname, value in model.outputs.items():
            if value is None or (isinstance(value, dict) and "path" not in value):
                continue
            target = value if isinstance(value, str) else value.get("path")
            if isinstance(target, str) and target.strip().startswith("${{"):
                b = parse_binding(target)
                if b is None or len(b) != 3 or b[1] != "outputs":
                    raise _err(
                        smap,
                        (*p, "outputs", oname),
                        f"invalid output binding {target!r}",
                        "step outputs bind to ${{parent.outputs.X}}",
                    )
                if b[2] not in job.outputs:
                    raise _err(
                        smap,
                        (*p, "outputs", oname),
                        f"pipeline output '{b[2]}' is not declared",
                        known_list_hint(b[2], job.outputs, "pipeline outputs"),
                    )
    order = topo_order(deps)
    if order is None:
        cycle = _find_cycle(deps)
        raise _err(
            smap, ("jobs", cycle[0]), "the steps form a cycle: " + " -> ".join(cycle), "remove one of the bindings in the cycle"
        )
    job.jobs = {n: steps[n] for n in steps}
    loaded.step_deps = deps


def _step_component(
    loaded: Loaded, ref: Any, path: PathKey, *, sweep_trial: bool = False
) -> tuple[m.CommandComponent, SourceMap, Path]:
    """A pipeline step's component (``component:``, or a sweep step's ``trial:``), loaded and its command checked.

    *ref* is a reference (``./train.yml``, ``azureml:NAME:VERSION``) or the component
    written inline at *path*.
    """
    from hpcjobs.spec.load import _prep_command_fields, load_component_ref, validate_model

    smap = loaded.source
    if isinstance(ref, str):
        comp, cmap, cpath = load_component_ref(ref, smap, path, loaded.base_dir)
    else:
        cwork = dict(ref)
        cwork.setdefault("name", "azureml_anonymous")
        _prep_command_fields(cwork, smap, path, loaded.base_dir)
        comp = validate_model(m.CommandComponent, cwork, smap, path)
        cmap, cpath = smap.sub(path), loaded.path
    comp.command = check_command(
        comp.command,
        smap=cmap,
        path=("command",),
        inputs=comp.inputs,
        outputs=comp.outputs,
        warnings=loaded.warnings,
        sweep_trial=sweep_trial,
    )
    return comp, cmap, cpath


def _sweep_node_component(loaded: Loaded, step: str, node: m.SweepNode) -> tuple[m.CommandComponent, SourceMap, Path]:
    """A pipeline sweep step's trial component, loaded, with the sweep checked against it.

    The search space (its parameters must be inputs of the component, and fit them), the
    node's inputs (inputs of the component, not also hyperparameters), required inputs
    without a value, and the sampling limits -- all before anything is planned.
    """
    from hpcjobs.spec.bind import check_trial_names, missing_input
    from hpcjobs.sweep.sampling import parse_search_space

    smap = loaded.source
    p: PathKey = ("jobs", step)
    comp, cmap, cpath = _step_component(loaded, node.trial, (*p, "trial"), sweep_trial=True)
    try:
        space = parse_search_space(node.search_space, field=f"jobs.{step}.search_space")
    except ValidationError as exc:
        field = exc.field or f"jobs.{step}.search_space"
        raise ValidationError(exc.message, hint=exc.hint, location=smap.locate(tuple(field.split("."))), field=field) from None
    sampled = check_trial_names(comp, space, list(node.inputs), smap=smap, prefix=p)
    for iname, port in comp.inputs.items():
        if iname not in node.inputs and iname not in sampled and not port.optional and port.default is None:
            raise missing_input(comp, cmap, iname, smap, (*p, "inputs") if node.inputs else (*p, "trial"))
    if node.sampling_algorithm.type != "grid" and node.limits.max_total_trials is None:
        raise _err(
            smap,
            (*p, "limits"),
            "limits.max_total_trials is required for random and bayesian sampling",
            "for example limits: {max_total_trials: 20, max_concurrent_trials: 4}",
        )
    return comp, cmap, cpath


def topo_order(deps: dict[str, set[str]]) -> list[str] | None:
    """Steps in dependency order (stable by declaration order), or None on a cycle."""
    remaining = {n: set(d) for n, d in deps.items()}
    order: list[str] = []
    while remaining:
        ready = [n for n, d in remaining.items() if not d]
        if not ready:
            return None
        for n in ready:
            order.append(n)
            del remaining[n]
        for d in remaining.values():
            d.difference_update(ready)
    return order


def _find_cycle(deps: dict[str, set[str]]) -> list[str]:
    visiting: list[str] = []
    seen: set[str] = set()

    def visit(n: str) -> list[str] | None:
        if n in visiting:
            return [*visiting[visiting.index(n) :], n]
        if n in seen:
            return None
        visiting.append(n)
        for d in sorted(deps.get(n, ())):
            found = visit(d)
            if found:
                return found
        visiting.pop()
        seen.add(n)
        return None

    for n in deps:
        c = visit(n)
        if c:
            return list(reversed(c))
    return list(deps)[:1]
