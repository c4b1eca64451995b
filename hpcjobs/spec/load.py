"""Load a job file: YAML (with locations) -> ``--set`` overrides -> dispatch on type -> typed model.

Every failure is a :class:`~hpcjobs.errors.ValidationError` carrying ``file:line:col``,
the dotted field path and a hint.  Only the first error (in file order) is raised, with
a count of the others, so the user fixes one precise thing at a time.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel

from hpcjobs.errors import Location, ValidationError, did_you_mean, known_list_hint
from hpcjobs.spec import models as m
from hpcjobs.spec.yamlload import PathKey, SourceMap, dotted, load_yaml_file, load_yaml_text, resolve_plain

#: keys that ``az ml job show`` prints and that are ignored on input
DUMP_ONLY = ("$schema", "id", "status", "creation_context", "log_files", "parameters")
JOB_TYPES: dict[str, type[BaseModel]] = {"command": m.CommandJob, "sweep": m.SweepJob, "pipeline": m.PipelineJob}
UNSUPPORTED_TYPES = ("automl", "spark", "import", "finetuning", "distillation", "parallel", "data_transfer")
URI_PREFIXES = (
    "azureml:",
    "http://",
    "https://",
    "wasbs://",
    "wasb://",
    "abfss://",
    "adl://",
    "runs:/",
    "s3://",
    "gs://",
    "git+",
)


@dataclass
class Loaded:
    """A validated job with everything needed to report on it later."""

    job: m.CommandJob | m.SweepJob | m.PipelineJob
    source: SourceMap
    path: Path
    base_dir: Path
    raw: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    #: pipeline step components loaded from files, by step name
    components: dict[str, tuple[m.CommandComponent, SourceMap, Path]] = field(default_factory=dict)
    #: pipeline step -> the steps it waits for (data dependencies)
    step_deps: dict[str, set[str]] = field(default_factory=dict)
    #: a sweep job's trial component (``trial: ./train.yml``), as loaded
    trial_component: tuple[m.CommandComponent, SourceMap, Path] | None = None
    #: the trial component's inputs that the sweep's hyperparameters feed (checked by check_job)
    trial_sampled: tuple[str, ...] = ()

    @property
    def type(self) -> str:
        return self.job.type


# --------------------------------------------------------------------------- --set
def parse_set(item: str) -> tuple[list[str | int], Any]:
    """Parse ``a.b.c=value``; the value is a YAML scalar or flow collection."""
    if "=" not in item:
        raise ValidationError(
            f"--set {item!r}: expected KEY=VALUE",
            hint="for example --set inputs.learning_rate=0.01 or --set tags.team=vision",
        )
    key, _, text = item.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValidationError(f"--set {item!r}: empty key segment in '{key}'")
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
    stripped = text.strip()
    if stripped[:1] in ("[", "{", '"', "'"):
        value, _ = load_yaml_text(stripped, f"--set {key}")
    else:
        value = resolve_plain(stripped)
    return parts, value


def _unwrap(ann: Any) -> list[Any]:
    """The concrete alternatives of an annotation (Optional/Union/Annotated peeled)."""
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(ann)[0])
    if origin is typing.Union or origin is types.UnionType:
        out: list[Any] = []
        for a in typing.get_args(ann):
            if a is not type(None):
                out.extend(_unwrap(a))
        return out
    return [ann]


def _model_keys(cls: type[BaseModel]) -> list[str]:
    keys = []
    for name, f in cls.model_fields.items():
        if f.exclude:
            continue
        keys.append(f.alias or name)
    return keys


def _child_annotations(ann: Any, key: str | int) -> list[Any] | None:
    """Annotations that may hold ``value[key]``; None if *key* cannot exist there."""
    found: list[Any] = []
    for alt in _unwrap(ann):
        if alt is Any:
            return [Any]
        if isinstance(alt, type) and issubclass(alt, BaseModel):
            for name, f in alt.model_fields.items():
                if key in (name, f.alias):
                    found.append(f.annotation)
            if alt.model_config.get("extra") == "allow" and isinstance(key, str):
                found.append(Any)
        origin = typing.get_origin(alt)
        if origin is dict and isinstance(key, str):
            found.append(typing.get_args(alt)[1])
        if origin is list and isinstance(key, int):
            found.append(typing.get_args(alt)[0])
    return found or None


def _known_at(ann: Any) -> list[str]:
    keys: list[str] = []
    for alt in _unwrap(ann):
        if isinstance(alt, type) and issubclass(alt, BaseModel):
            keys.extend(_model_keys(alt))
    return sorted(set(keys))


def apply_sets(data: dict[str, Any], sets: list[str], smap: SourceMap, root: type[BaseModel] | None) -> None:
    """Apply ``--set`` overrides to the raw document, checking paths against the schema."""
    for item in sets:
        parts, value = parse_set(item)
        ann: Any = root if root is not None else Any
        node: Any = data
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if ann is not Any:
                child = _child_annotations(ann, part)
                if child is None:
                    known = _known_at(ann)
                    where = dotted(tuple(parts[:i])) or "the job"
                    raise ValidationError(
                        f"--set {item}: '{part}' is not a key of {where}",
                        hint=known_list_hint(str(part), known, "keys there") if known else None,
                    )
                ann = child[0] if len(child) == 1 else typing.Union[tuple(child)]
            if isinstance(node, list):
                if not isinstance(part, int) or not -len(node) <= part < len(node):
                    raise ValidationError(f"--set {item}: index {part} is out of range for {dotted(tuple(parts[:i]))}")
                if last:
                    node[part] = value
                else:
                    node = node[part]
                continue
            if not isinstance(node, dict):
                raise ValidationError(
                    f"--set {item}: cannot set beneath '{dotted(tuple(parts[:i]))}', which is a "
                    f"{type(node).__name__} ({node!r}), not a mapping",
                    hint="set the whole value instead, e.g. --set environment.image=... only works for an inline environment",
                )
            key = str(part)
            if last:
                node[key] = value
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
        smap.overrides[tuple(str(p) if not isinstance(p, int) else p for p in parts)] = item


# --------------------------------------------------------------------------- pydantic errors
def _yaml_path(loc: tuple[Any, ...], data: Any) -> tuple[PathKey, bool]:
    """Map a pydantic ``loc`` onto the data, dropping union-tag entries; (path, complete)."""
    out: list[str | int] = []
    node = data
    for part in loc:
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            out.append(part)
            node = node[part]
        elif isinstance(part, str) and part in ("value",) and not isinstance(node, dict):
            # scalars wrapped as {value: x} by the loader
            continue
        else:
            # pydantic names union members (e.g. 'InlineEnvironment', 'str'); skip those
            if isinstance(part, str) and (
                part[:1].isupper() or part in ("str", "int", "float", "bool", "dict", "list") or "[" in part
            ):
                continue
            out.append(part)
            return tuple(out), False
    return tuple(out), True


def _describe(value: Any) -> str:
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return repr(value)


def _message(err: Any, model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, str | None]:
    etype = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    field_name = loc[-1] if loc else ""
    if etype == "extra_forbidden":
        ann: Any = model
        for part in loc[:-1]:
            child = _child_annotations(ann, part)
            if child is None:
                ann = None
                break
            ann = typing.Union[tuple(child)] if len(child) > 1 else child[0]
        known = _known_at(ann) if ann is not None else []
        hint = known_list_hint(str(field_name), known, "allowed keys") if known else None
        return f"unknown key '{field_name}'", hint
    if etype == "missing":
        return f"missing required key '{field_name}'", None
    if etype in ("literal_error", "enum"):
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        hint = did_you_mean(str(value), options) if isinstance(value, str) else None
        return f"expected one of {', '.join(options)}; got {_describe(value)}", hint
    simple = {
        "int_type": "expected an integer",
        "int_parsing": "expected an integer",
        "int_from_float": "expected an integer",
        "float_type": "expected a number",
        "float_parsing": "expected a number",
        "bool_type": "expected true or false",
        "bool_parsing": "expected true or false",
        "string_type": "expected a string",
        "dict_type": "expected a mapping",
        "model_type": "expected a mapping",
        "model_attributes_type": "expected a mapping",
        "list_type": "expected a list",
    }
    if etype in simple:
        return f"{simple[etype]}, got {_describe(value)}", None
    if etype == "string_pattern_mismatch":
        return f"{_describe(value)} is not a valid value (must match {ctx.get('pattern')})", None
    if etype == "value_error":
        msg = str(err.get("msg", ""))
        return msg.removeprefix("Value error, "), None
    msg = str(err.get("msg", etype))
    return f"{msg[0].lower()}{msg[1:]}" + (
        f", got {_describe(value)}" if value is not None and not isinstance(value, dict | list) else ""
    ), None


def validate_model(model: type[BaseModel], data: Any, smap: SourceMap, prefix: PathKey = ()) -> Any:
    """Validate *data* (found at *prefix* in the file) against *model*, raising one located error."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise _convert(exc, model, data, smap, prefix) from None


def _convert(
    exc: pydantic.ValidationError, model: type[BaseModel], data: Any, smap: SourceMap, prefix: PathKey
) -> ValidationError:
    found: list[tuple[tuple[int, int], ValidationError]] = []
    for err in exc.errors():
        path, _complete = _yaml_path(tuple(err["loc"]), data)
        msg, hint = _message(err, model, path)
        full = (*prefix, *path)
        is_key = err["type"] == "extra_forbidden"
        loc = smap.locate(full, key=is_key)
        if err["type"] == "missing":
            loc = smap.locate(full[:-1])
        order = (loc.line or 0, loc.col or 0)
        found.append((order, ValidationError(msg, hint=hint, location=loc, field=dotted(full) or None)))
    # `comand:` yields both "unknown key comand" and "missing key command": the unknown
    # key (with its did-you-mean) is the cause, so it goes first
    extra_parents = {tuple(e.field.split(".")[:-1]) for _, e in found if e.field and e.message.startswith("unknown key")}

    def rank(item: tuple[tuple[int, int], ValidationError]) -> tuple[int, tuple[int, int]]:
        e = item[1]
        demote = e.message.startswith("missing required key") and tuple((e.field or "").split(".")[:-1]) in extra_parents
        return (1 if demote else 0, item[0])

    found.sort(key=rank)
    first = found[0][1]
    if len(found) > 1:
        others = "; ".join(f"{e.field or '(top)'}: {e.message}" for _, e in found[1:4])
        more = f" and {len(found) - 4} more" if len(found) > 4 else ""
        extra = f"{len(found) - 1} more error(s): {others}{more}"
        first.hint = f"{first.hint}\n  {extra}" if first.hint else extra
    return first


# --------------------------------------------------------------------------- preprocessing
def _err(smap: SourceMap, path: PathKey, message: str, hint: str | None = None, key: bool = False) -> ValidationError:
    return ValidationError(message, hint=hint, location=smap.locate(path, key=key), field=dotted(path) or None)


def is_uri(path: str) -> bool:
    """Whether *path* is a URI/reference rather than a local filesystem path."""
    return path.startswith(URI_PREFIXES)


def _resolve_local(path: str, base: Path) -> str:
    if path.startswith("file:"):
        path = path[5:]
        if path.startswith("//"):
            path = path[2:]
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _prep_inputs(data: dict[str, Any], smap: SourceMap, prefix: PathKey, base: Path, *, component: bool = False) -> None:
    inputs = data.get("inputs")
    if inputs is None:
        data.pop("inputs", None) if "inputs" in data else None
        return
    if not isinstance(inputs, dict):
        raise _err(smap, (*prefix, "inputs"), f"expected a mapping of input names, got {_describe(inputs)}")
    for name, value in list(inputs.items()):
        p = (*prefix, "inputs", name)
        if not m.IO_NAME_RE.match(name):
            raise _err(
                smap, p, f"invalid input name '{name}'", "names use letters, digits and _ and do not start with a digit", key=True
            )
        if component:
            continue
        if isinstance(value, dict):
            kind = value.get("type")
            if "value" in value or (isinstance(kind, str) and kind.lower() in m.PARAM_TYPES):
                _check_literal_type(value, smap, p)
                inputs[name] = validate_model(m.LiteralInput, value, smap, p)
            else:
                di = validate_model(m.DataInput, value, smap, p)
                if di.path and not is_uri(di.path) and "${{" not in di.path:
                    di.path = _resolve_local(di.path, base)
                inputs[name] = di
        elif isinstance(value, bool | int | float | str) or value is None:
            inputs[name] = m.LiteralInput(value=value)
        else:
            raise _err(smap, p, f"expected a literal value or a mapping, got {_describe(value)}")


_TYPE_WORDS = {"integer": "an integer", "number": "a number", "boolean": "true or false", "string": "a string"}


def _check_literal_type(value: dict[str, Any], smap: SourceMap, p: PathKey) -> None:
    """``{type: integer, value: abc}``: point at the value, in the words of the other type errors."""
    kind, v = value.get("type"), value.get("value")
    if not isinstance(kind, str) or v is None or kind.lower() not in _TYPE_WORDS:
        return
    kind = kind.lower()
    ok = {
        "integer": isinstance(v, int) and not isinstance(v, bool),
        "number": isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": isinstance(v, bool),
        "string": True,
    }[kind]
    if not ok:
        raise _err(
            smap, (*p, "value"), f"expected {_TYPE_WORDS[kind]}, got {_describe(v)}", f"the input is declared type: {kind}"
        )


def _prep_outputs(data: dict[str, Any], smap: SourceMap, prefix: PathKey) -> None:
    outputs = data.get("outputs")
    if outputs is None:
        data.pop("outputs", None) if "outputs" in data else None
        return
    if not isinstance(outputs, dict):
        raise _err(smap, (*prefix, "outputs"), f"expected a mapping of output names, got {_describe(outputs)}")
    for name in outputs:
        if not m.IO_NAME_RE.match(name):
            raise _err(
                smap, (*prefix, "outputs", name), f"invalid output name '{name}'", "names use letters, digits and _", key=True
            )


def _prep_distribution(data: dict[str, Any], smap: SourceMap, prefix: PathKey) -> None:
    dist = data.get("distribution")
    if dist is None:
        return
    p = (*prefix, "distribution")
    if not isinstance(dist, dict):
        raise _err(smap, p, f"expected a mapping with a 'type', got {_describe(dist)}")
    kind = dist.get("type")
    if not isinstance(kind, str):
        raise _err(smap, p, "missing required key 'type'", "one of: " + ", ".join(m.DISTRIBUTIONS))
    cls = m.DISTRIBUTIONS.get(kind.lower())
    if cls is None:
        raise _err(
            smap, (*p, "type"), f"unknown distribution type '{kind}'", known_list_hint(kind, m.DISTRIBUTIONS, "known types")
        )
    data["distribution"] = validate_model(cls, {**dist, "type": kind.lower()}, smap, p)


def _prep_environment(data: dict[str, Any], smap: SourceMap, prefix: PathKey, base: Path) -> None:
    env = data.get("environment")
    if env is None:
        return
    p = (*prefix, "environment")
    if isinstance(env, str):
        if env.startswith("file:"):
            env_path = Path(_resolve_local(env[5:], base))
            if not env_path.is_file():
                raise _err(
                    smap,
                    p,
                    f"environment file {env[5:]!r} not found (resolved to {env_path})",
                    "paths are relative to the folder of the job file",
                )
            env_data, env_map = load_yaml_file(env_path)
            if not isinstance(env_data, dict):
                raise ValidationError("an environment file must be a mapping", location=Location(str(env_path)))
            for k in ("$schema",):
                env_data.pop(k, None)
            model = validate_model(m.InlineEnvironment, env_data, env_map)
            _resolve_env_paths(model, env_path.parent)
            data["environment"] = model
        return
    if not isinstance(env, dict):
        raise _err(smap, p, f"expected an image reference string or a mapping, got {_describe(env)}")
    if "channels" in env or "dependencies" in env:
        raise _err(
            smap,
            p,
            "conda 'channels'/'dependencies' belong in a conda file",
            "put them under environment.conda_file (inline mapping or a path)",
        )
    model = validate_model(m.InlineEnvironment, env, smap, p)
    _resolve_env_paths(model, base)
    data["environment"] = model


def _resolve_env_paths(env: m.InlineEnvironment, base: Path) -> None:
    if isinstance(env.conda_file, str):
        env.conda_file_path = _resolve_local(env.conda_file, base)
    if env.build is not None and not is_uri(env.build.path):
        env.build.path = _resolve_local(env.build.path, base)


def _prep_code(data: dict[str, Any], smap: SourceMap, prefix: PathKey, base: Path) -> None:
    code = data.get("code")
    if code is None:
        return
    p = (*prefix, "code")
    if not isinstance(code, str):
        raise _err(smap, p, f"expected a path, got {_describe(code)}")
    if is_uri(code):
        raise _err(
            smap,
            p,
            f"code '{code}' is a remote reference; hpcjobs uploads local code folders",
            "clone or download it and point code: at the local folder",
        )
    resolved = Path(_resolve_local(code, base))
    if not resolved.exists():
        raise _err(
            smap,
            p,
            f"code folder '{code}' does not exist (resolved to {resolved})",
            "paths are relative to the folder of the job file",
        )
    data["code"] = str(resolved)


def _prep_command_fields(data: dict[str, Any], smap: SourceMap, prefix: PathKey, base: Path) -> None:
    _prep_code(data, smap, prefix, base)
    _prep_environment(data, smap, prefix, base)
    _prep_distribution(data, smap, prefix)
    env_vars = data.get("environment_variables")
    if isinstance(env_vars, dict):
        for k, v in env_vars.items():
            if isinstance(v, dict | list):
                raise _err(smap, (*prefix, "environment_variables", k), f"expected a string, got {_describe(v)}")


# --------------------------------------------------------------------------- entry points
def _as_mapping(data: Any, smap: SourceMap, what: str) -> dict[str, Any]:
    if data is None:
        raise ValidationError(f"the {what} file is empty", location=Location(smap.file, 1, 1))
    if not isinstance(data, dict):
        raise ValidationError(f"a {what} file must be a YAML mapping, got {_describe(data)}", location=smap.locate(()))
    return data


def load_job(path: str | Path, sets: list[str] | None = None) -> Loaded:
    """Load, override, validate and check a job file."""
    from hpcjobs.spec.check import check_job

    p = Path(path)
    data, smap = load_yaml_file(p)
    data = _as_mapping(data, smap, "job")
    for key in DUMP_ONLY:
        data.pop(key, None)
    raw_type = data.get("type", "command")
    if sets:
        pre_type = raw_type if isinstance(raw_type, str) else "command"
        apply_sets(data, sets, smap, JOB_TYPES.get(pre_type))
        raw_type = data.get("type", "command")
    if not isinstance(raw_type, str):
        raise _err(smap, ("type",), f"expected a job type string, got {_describe(raw_type)}")
    if raw_type not in JOB_TYPES:
        if raw_type.lower() in JOB_TYPES:
            raise _err(
                smap, ("type",), f"unknown job type '{raw_type}'", f"job types are lower case: did you mean '{raw_type.lower()}'?"
            )
        if raw_type in UNSUPPORTED_TYPES:
            raise _err(
                smap,
                ("type",),
                f"job type '{raw_type}' is an Azure-only service and is not supported on Slurm",
                "supported: command, sweep, pipeline",
            )
        raise _err(smap, ("type",), f"unknown job type '{raw_type}'", known_list_hint(raw_type, JOB_TYPES, "supported types"))
    base = p.resolve().parent
    warnings: list[str] = []
    loaded = Loaded(job=None, source=smap, path=p, base_dir=base, raw=data, warnings=warnings)  # type: ignore[arg-type]
    model_cls = JOB_TYPES[raw_type]
    work = dict(data)
    if raw_type == "command":
        _prep_command_fields(work, smap, (), base)
        _prep_inputs(work, smap, (), base)
        _prep_outputs(work, smap, ())
    elif raw_type == "sweep":
        trial = work.get("trial")
        if isinstance(trial, dict):
            trial = dict(trial)
            _prep_command_fields(trial, smap, ("trial",), base)
            work["trial"] = validate_model(m.TrialSpec, trial, smap, ("trial",))
        elif isinstance(trial, str):
            # a command component: check_job binds the sweep's hyperparameters and inputs to its inputs
            loaded.trial_component = load_component_ref(trial, smap, ("trial",), base)
            comp = loaded.trial_component[0]
            work["trial"] = m.TrialSpec(
                command=comp.command,
                code=comp.code,
                environment=comp.environment,
                distribution=comp.distribution,
                resources=component_resources(comp, warnings, f"{smap.locate(('trial',))}: trial"),
            )
        _prep_inputs(work, smap, (), base)
        _prep_outputs(work, smap, ())
    else:
        _prep_inputs(work, smap, (), base, component=True)
        _prep_outputs(work, smap, ())
    loaded.job = validate_model(model_cls, work, smap)
    check_job(loaded)
    return loaded


def load_component_ref(ref: str, smap: SourceMap, where: PathKey, base: Path) -> tuple[m.CommandComponent, SourceMap, Path]:
    """Load the component *ref* names (a file, ``file:PATH``, or a registered ``azureml:NAME:VERSION``).

    *where* is the referring key in the job file (*smap*), for errors; relative paths are
    resolved against *base*, the folder of the job file.
    """
    if ref.startswith("azureml:") and not ref.startswith("azureml://"):
        from hpcjobs.assets import component_file
        from hpcjobs.errors import HpcjobsError

        # a registered component (hpcjobs component create), from the default site's registry
        try:
            comp_path = component_file(ref)
        except HpcjobsError as exc:
            raise _err(smap, where, exc.message, exc.hint) from None
        return load_component(comp_path)
    if ref.startswith("azureml:"):
        raise _err(
            smap,
            where,
            f"registered component '{ref}' is not known",
            "use azureml:NAME:VERSION or azureml:NAME@latest, or a local component file (component: ./train.yml)",
        )
    comp_path = Path(_resolve_local(ref.removeprefix("file:"), base))
    if not comp_path.is_file():
        raise _err(
            smap,
            where,
            f"component file {ref!r} not found (resolved to {comp_path})",
            "paths are relative to the folder of the job file",
        )
    return load_component(comp_path)


def component_resources(comp: m.CommandComponent, warnings: list[str], where: str) -> m.Resources | None:
    """A component's ``resources`` as the typed model (keys Slurm has no use for are warned about)."""
    if not comp.resources:
        return None
    data: dict[str, Any] = {}
    for k, v in comp.resources.items():
        if k in m.Resources.model_fields:
            data[k] = v
        else:
            warnings.append(f"{where}: resources.{k} of the component is not used on Slurm")
    return m.Resources.model_validate(data)


def load_component(path: Path) -> tuple[m.CommandComponent, SourceMap, Path]:
    """Load a command component YAML (``component: ./train.yml``)."""
    data, smap = load_yaml_file(path)
    data = _as_mapping(data, smap, "component")
    kind = data.get("type", "command")
    if kind != "command":
        raise _err(smap, ("type",), f"component type '{kind}' is not supported", "only command components run on Slurm")
    base = path.resolve().parent
    work = dict(data)
    _prep_command_fields(work, smap, (), base)
    _prep_inputs(work, smap, (), base, component=True)
    _prep_outputs(work, smap, ())
    comp = validate_model(m.CommandComponent, work, smap)
    return comp, smap, path
