"""Binding values to a command component's inputs: literals, data paths, defaults, hyperparameters.

Shared by the two places a component runs with values it does not carry itself: a
pipeline step (``component: ./train.yml``) and a sweep's trial (``trial: ./train.yml``,
on its own or as a pipeline's sweep step).  Azure's rule for a sweep: every key of
``search_space`` is a hyperparameter that binds to the trial component's input of the
same name, the sweep's (or sweep node's) ``inputs:`` bind the others, and a component
input with a default need not be given.  Every error carries the job file's
``file:line``.  Pure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpcjobs.errors import ValidationError, known_list_hint
from hpcjobs.spec import models as m
from hpcjobs.spec.yamlload import PathKey, SourceMap, dotted


def _err(smap: SourceMap, path: PathKey, message: str, hint: str | None = None, *, key: bool = False) -> ValidationError:
    return ValidationError(message, hint=hint, location=smap.locate(path, key=key), field=dotted(path) or None)


def coerce_param(value: Any, port: m.ParameterPort, smap: SourceMap, path: PathKey) -> Any:
    """A literal for a typed component parameter, converted where the intent is clear (``--set`` gives strings)."""
    from hpcjobs.sweep.sampling import format_value

    if value is None:
        return None
    out = value
    try:
        if port.type == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif port.type == "number":
            if isinstance(value, bool):
                raise ValueError
            out = value if isinstance(value, int | float) else float(value)
        elif port.type == "boolean":
            if isinstance(value, str):
                if value.lower() not in ("true", "false"):
                    raise ValueError
                out = value.lower() == "true"
            elif not isinstance(value, bool):
                raise ValueError
        else:
            out = format_value(value) if not isinstance(value, str) else value
    except (TypeError, ValueError):
        raise _err(smap, path, f"expected a{'n' if port.type[0] in 'aeiou' else ''} {port.type}, got {value!r}") from None
    if port.enum is not None and out not in port.enum and str(out) not in [str(e) for e in port.enum]:
        raise _err(smap, path, f"{out!r} is not one of the allowed values", "allowed: " + ", ".join(map(str, port.enum)))
    if isinstance(out, int | float) and not isinstance(out, bool):
        if port.min is not None and out < port.min:
            raise _err(smap, path, f"{out} is below the minimum {port.min}")
        if port.max is not None and out > port.max:
            raise _err(smap, path, f"{out} is above the maximum {port.max}")
    return out


def as_data(
    value: m.LiteralInput | m.DataInput,
    port: m.DataPort | None,
    override: dict[str, Any],
    base: Path,
    smap: SourceMap,
    path: PathKey,
) -> m.DataInput:
    """A data input for a data port: a string literal is a path (as Azure reads it)."""
    from hpcjobs.spec.load import _resolve_local, is_uri, validate_model

    if isinstance(value, m.DataInput):
        data = value.model_dump(exclude_none=True)
    else:
        if value.value is None:
            raise _err(smap, path, "a data input needs a path")
        if not isinstance(value.value, str):
            raise _err(smap, path, f"expected a path for a data input, got {value.value!r}")
        text = value.value
        data = {"path": text if is_uri(text) or "${{" in text else _resolve_local(text, base)}
        if port is not None:
            data["type"] = "uri_folder" if port.type == "path" else port.type
    if port is not None and port.mode and "mode" not in override and isinstance(value, m.LiteralInput):
        data["mode"] = port.mode
    data.update({k: v for k, v in override.items() if k in ("mode", "type")})
    out: m.DataInput = validate_model(m.DataInput, data, smap, path)
    return out


def port_default(
    port: m.ParameterPort | m.DataPort, base: Path, smap: SourceMap, path: PathKey
) -> m.LiteralInput | m.DataInput | None:
    """The value a component input has when nobody gives one (data defaults are relative to the component's folder)."""
    from hpcjobs.spec.load import _resolve_local, is_uri, validate_model

    if port.default is None:
        return None
    if isinstance(port, m.DataPort):
        dpath = port.default if is_uri(port.default) else _resolve_local(port.default, base)
        dtype = "uri_folder" if port.type == "path" else port.type
        out: m.DataInput = validate_model(
            m.DataInput, {"type": dtype, "path": dpath, **({"mode": port.mode} if port.mode else {})}, smap, path
        )
        return out
    return m.LiteralInput(value=port.default, type=port.type)


def bind_literal(
    value: m.LiteralInput | m.DataInput, port: m.ParameterPort | m.DataPort, base: Path, smap: SourceMap, path: PathKey, name: str
) -> m.LiteralInput | m.DataInput | None:
    """A given value shaped for its port (None: the value is null, as if not given)."""
    if isinstance(port, m.DataPort):
        if isinstance(value, m.LiteralInput) and value.value is None:
            return None
        return as_data(value, port, {}, base, smap, path)
    if isinstance(value, m.DataInput):
        raise _err(smap, path, f"input '{name}' is a {port.type} parameter; it cannot take data ({value.type})")
    if value.value is None:
        return None
    return m.LiteralInput(value=coerce_param(value.value, port, smap, path), type=port.type)


# --------------------------------------------------------------------------- hyperparameters
def hyperparameters(space: dict[str, Any]) -> dict[str, str]:
    """Every parameter a (parsed) search space sets -> the top-level key that sets it.

    A nested choice (``values: [{lr: ..., momentum: ...}, ...]``) sets its options' keys,
    not its own name.
    """
    from hpcjobs.sweep.sampling import _keys_of

    out: dict[str, str] = {}
    for top, dist in space.items():
        for name in sorted(_keys_of(top, dist)):
            out.setdefault(name, top)
    return out


_WORDS = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string"}


def _fits(value: Any, kind: str) -> bool:
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    return isinstance(value, str | int | float | bool)


def check_hyperparameter(dist: Any, port: m.ParameterPort | m.DataPort, comp: str, smap: SourceMap, path: PathKey) -> None:
    """Can *dist* (a parsed distribution) feed *port*?  Error at *path* (the search-space entry) if not."""
    from hpcjobs.sweep.sampling import Choice, RandInt

    name = str(path[-1])
    if isinstance(port, m.DataPort):
        raise _err(
            smap,
            path,
            f"input '{name}' of component '{comp}' is data ({port.type}); hyperparameters feed parameters "
            "(integer, number, boolean, string)",
            "sample a parameter and let the trial choose its data from it",
            key=True,
        )
    kind = port.type
    if isinstance(dist, Choice):
        if dist.nested:
            return
        for v in dist.values:
            if not _fits(v, kind):
                raise _err(
                    smap, (*path, "values"), f"{v!r} cannot be a value of input '{name}' of component '{comp}', {_WORDS[kind]}"
                )
            coerce_param(v, port, smap, (*path, "values"))
        return
    if kind == "boolean":
        raise _err(smap, path, f"a {dist.type} distribution cannot feed input '{name}' of component '{comp}', {_WORDS[kind]}")
    if kind == "integer" and not isinstance(dist, RandInt) and not isinstance(getattr(dist, "quantum", None), int):
        raise _err(
            smap,
            path,
            f"a {dist.type} distribution samples real numbers, but input '{name}' of component '{comp}' is an integer",
            "use randint, a choice of integers, or a q-distribution with an integer q",
        )


def check_trial_names(
    comp: m.CommandComponent, space: dict[str, Any], given: list[str], *, smap: SourceMap, prefix: PathKey
) -> tuple[str, ...]:
    """The component inputs a sweep's hyperparameters feed, after checking every name.

    Every hyperparameter of *space* (parsed) must be an input of *comp*, and a sampled value
    must fit its port; every name in *given* (the sweep's ``inputs:``) must be an input too,
    and not also a hyperparameter.  Errors point at the job file (*prefix* is where the sweep is).
    """
    params = hyperparameters(space)
    for pname, top in params.items():
        where = (*prefix, "search_space", top)
        if pname not in comp.inputs:
            raise _err(
                smap,
                where,
                f"search space parameter '{pname}' is not an input of component '{comp.name}'",
                known_list_hint(pname, comp.inputs, "its inputs") + " (hyperparameters bind to the trial's inputs by name)",
                key=True,
            )
        if pname == top:
            check_hyperparameter(space[top], comp.inputs[pname], comp.name, smap, where)
    for iname in given:
        ipath = (*prefix, "inputs", iname)
        if iname not in comp.inputs:
            raise _err(
                smap,
                ipath,
                f"component '{comp.name}' has no input '{iname}'",
                known_list_hint(iname, comp.inputs, "its inputs"),
                key=True,
            )
        if iname in params:
            raise _err(
                smap,
                ipath,
                f"input '{iname}' is given here and is also a hyperparameter in search_space",
                "give it in one place: the search space samples it for every trial",
                key=True,
            )
    return tuple(n for n in comp.inputs if n in params)


def missing_input(comp: m.CommandComponent, cmap: SourceMap, iname: str, smap: SourceMap, where: PathKey) -> ValidationError:
    """The error for a required component input that gets no value."""
    return _err(
        smap,
        where,
        f"required input '{iname}' of component '{comp.name}' has no value",
        f"give it under inputs: or sample it in search_space: (declared at {cmap.locate(('inputs', iname), key=True)})",
        key=True,
    )


def bind_trial_inputs(
    comp: m.CommandComponent,
    comp_at: tuple[SourceMap, Path],
    space: dict[str, Any],
    given: dict[str, Any],
    *,
    smap: SourceMap,
    prefix: PathKey,
    base: Path,
) -> tuple[dict[str, m.LiteralInput | m.DataInput], tuple[str, ...]]:
    """Bind a sweep job's trial component: (its inputs with values, the inputs fed by hyperparameters).

    *space* is the parsed search space, *given* the sweep's ``inputs:`` (literals or data,
    as loaded), *base* the job file's folder.  Names are checked first
    (:func:`check_trial_names`); then every other input of the component gets the given
    value shaped for its port, else its default, and a required one without either is
    an error.
    """
    cmap, cpath = comp_at
    sampled = check_trial_names(comp, space, list(given), smap=smap, prefix=prefix)
    comp_base = Path(cpath).resolve().parent
    bound: dict[str, m.LiteralInput | m.DataInput] = {}
    for iname, port in comp.inputs.items():
        if iname in sampled:
            continue
        got: m.LiteralInput | m.DataInput | None = None
        if iname in given:
            got = bind_literal(given[iname], port, base, smap, (*prefix, "inputs", iname), iname)
        if got is None:
            got = port_default(port, comp_base, cmap, ("inputs", iname))
        if got is None and not port.optional:
            raise missing_input(comp, cmap, iname, smap, (*prefix, "inputs") if given else (*prefix, "trial"))
        if got is not None:
            bound[iname] = got
    return bound, sampled


def component_output(
    comp: m.CommandComponent, oname: str, cmap: SourceMap, given: m.JobOutput | None, smap: SourceMap, path: PathKey
) -> m.JobOutput:
    """A trial's output: the component's declaration, with what the sweep's ``outputs:`` says about it."""
    from hpcjobs.spec.load import validate_model

    port = comp.outputs.get(oname) or m.OutputPort()
    ptype = (port.type or "uri_folder").lower()
    if ptype not in (*m.DATA_TYPES, "path"):
        raise _err(
            cmap,
            ("outputs", oname, "type"),
            f"output '{oname}' of component '{comp.name}' is a primitive ({ptype}) output, which jobs on Slurm cannot produce",
            "write the value into a uri_file output instead",
        )
    data: dict[str, Any] = {"type": "uri_folder" if ptype == "path" else ptype}
    if port.mode:
        data["mode"] = port.mode
    if port.path:
        data["path"] = port.path
    if given is not None:
        data.update(given.model_dump(exclude_unset=True))
    out: m.JobOutput = validate_model(m.JobOutput, data, smap, path)
    return out
