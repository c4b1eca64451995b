"""Typed models of Azure ML v2 job YAML: command, sweep and pipeline jobs, command components.

The models validate *shape*.  Dispatching on ``type`` happens before a model is chosen
(:mod:`hpcjobs.spec.load`), so the user gets one precise error instead of a dump of
every union member's failure.  Cross-field checks that need the whole job (expressions
in ``command``, pipeline bindings) live in :mod:`hpcjobs.spec.check`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, field_validator, model_validator

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$"
IO_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NODE_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
COMPONENT_NAME_RE = r"^[a-z][a-z0-9_]*$"

DATA_TYPES = ("uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model", "triton_model")
INPUT_MODES: dict[str, tuple[str, ...]] = {
    "uri_file": ("ro_mount", "download", "direct"),
    "uri_folder": ("ro_mount", "download", "direct"),
    "mltable": ("ro_mount", "download", "eval_mount", "eval_download", "direct"),
    "custom_model": ("ro_mount", "download", "direct"),
    "mlflow_model": ("ro_mount", "download", "direct"),
    "triton_model": ("ro_mount", "download", "direct"),
}
OUTPUT_MODES = ("rw_mount", "upload", "direct", "mount")
PARAM_TYPES = ("integer", "number", "boolean", "string")

Scalar = StrictBool | StrictInt | StrictFloat | str


class Model(BaseModel):
    """Base: unknown keys are errors; enum-like strings are matched case-insensitively."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, coerce_numbers_to_str=False, defer_build=True)


def _lower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


StrMap = dict[str, Annotated[str | None, Field()]]


def _stringify_map(v: Any) -> Any:
    # Azure requires strings; we accept numbers and booleans and keep their YAML text,
    # since `tags: {epochs: 10}` is an obvious intent and losing it helps nobody.
    if isinstance(v, dict):
        out = {}
        for k, val in v.items():
            if isinstance(val, bool):
                out[k] = "true" if val else "false"
            elif isinstance(val, int | float):
                out[k] = str(val)
            else:
                out[k] = val
        return out
    return v


# --------------------------------------------------------------------------- inputs/outputs
class LiteralInput(Model):
    """A literal input value (``lr: 0.01`` or ``lr: {value: 0.01}``)."""

    value: Scalar | None = None
    type: Literal["integer", "number", "boolean", "string"] | None = None
    description: str | None = None
    optional: bool = False

    _normalize_type = field_validator("type", mode="before")(_lower)

    @model_validator(mode="after")
    def _value_matches_type(self) -> LiteralInput:
        v = self.value
        if self.type is None or v is None:
            return self
        ok = {
            "integer": isinstance(v, int) and not isinstance(v, bool),
            "number": isinstance(v, int | float) and not isinstance(v, bool),
            "boolean": isinstance(v, bool),
            "string": True,
        }[self.type]
        if not ok:
            raise ValueError(f"value {v!r} is not of type {self.type}")
        if self.type == "string" and not isinstance(v, str):
            self.value = str(v)
        return self


class DataInput(Model):
    """A data input: a file or folder the job reads."""

    type: Literal["uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model", "triton_model"] = "uri_folder"
    path: str | None = None
    mode: str = "ro_mount"
    path_on_compute: str | None = None
    datastore: str | None = None
    description: str | None = None
    optional: bool = False

    _t = field_validator("type", "mode", mode="before")(_lower)

    @model_validator(mode="after")
    def _mode_ok(self) -> DataInput:
        allowed = INPUT_MODES[self.type]
        if self.mode not in allowed:
            raise ValueError(f"mode '{self.mode}' is not allowed for a {self.type} input; use one of {', '.join(allowed)}")
        return self


class JobOutput(Model):
    """An output location the job writes."""

    type: Literal["uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model", "triton_model"] = "uri_folder"
    mode: Literal["rw_mount", "upload", "direct", "mount"] = "rw_mount"
    path: str | None = None
    name: str | None = None
    version: str | int | None = None
    description: str | None = None

    _t = field_validator("type", "mode", mode="before")(_lower)


# --------------------------------------------------------------------------- environment
class DockerBuild(Model):
    path: str
    dockerfile_path: str = "Dockerfile"


class InlineEnvironment(Model):
    """An environment defined inline (``image``, ``conda_file``, ``build``)."""

    image: str | None = None
    conda_file: str | dict[str, Any] | None = None
    build: DockerBuild | None = None
    os_type: str | None = None
    name: str | None = None
    version: str | int | None = None
    description: str | None = None
    tags: dict[str, Any] | None = None
    inference_config: dict[str, Any] | None = None
    datastore: str | None = None
    # set by the loader for conda files given by path: where to find it
    conda_file_path: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _one_source(self) -> InlineEnvironment:
        if self.image and self.build:
            raise ValueError("give either 'image' or 'build', not both")
        if not (self.image or self.build or self.conda_file):
            raise ValueError("an environment needs 'image', 'build' or 'conda_file'")
        return self


Environment = str | InlineEnvironment


# --------------------------------------------------------------------------- resources etc.
class Resources(Model):
    instance_count: Annotated[int, Field(ge=1, le=10_000)] = 1
    instance_type: str | None = None
    shm_size: Annotated[str, Field(pattern=r"^[0-9]+[bkmgBKMG]?$")] | None = None
    docker_args: str | list[str] | None = None
    locations: list[str] | None = None
    max_instance_count: int | None = None
    properties: dict[str, Any] | None = None


class PyTorchDistribution(Model):
    type: Literal["pytorch"] = "pytorch"
    process_count_per_instance: Annotated[int, Field(ge=1, le=1024)] = 1


class MpiDistribution(Model):
    type: Literal["mpi"] = "mpi"
    process_count_per_instance: Annotated[int, Field(ge=1, le=1024)] = 1


class TensorFlowDistribution(Model):
    type: Literal["tensorflow"] = "tensorflow"
    worker_count: Annotated[int, Field(ge=1, le=1024)] | None = None
    parameter_server_count: Annotated[int, Field(ge=0, le=1024)] = 0


class RayDistribution(Model):
    type: Literal["ray"] = "ray"
    address: str | None = None
    port: int | None = None
    include_dashboard: bool | None = None
    dashboard_port: int | None = None
    head_node_additional_args: str | None = None
    worker_node_additional_args: str | None = None


Distribution = PyTorchDistribution | MpiDistribution | TensorFlowDistribution | RayDistribution
DISTRIBUTIONS: dict[str, type[Model]] = {
    "pytorch": PyTorchDistribution,
    "mpi": MpiDistribution,
    "tensorflow": TensorFlowDistribution,
    "ray": RayDistribution,
}


class CommandLimits(Model):
    timeout: Annotated[int, Field(gt=0, le=366 * 86400)] | None = None


class Service(Model):
    type: str | None = None
    port: int | None = None
    nodes: str | None = None
    properties: dict[str, Any] | None = None
    ssh_public_keys: str | None = None
    log_dir: str | None = None


class QueueSettings(Model):
    job_tier: str | None = None
    priority: str | None = None


# --------------------------------------------------------------------------- jobs
class BaseJob(Model):
    """Keys every job type shares."""

    name: Annotated[str, Field(pattern=NAME_RE)] | None = None
    display_name: str | None = None
    experiment_name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    description: str | None = None
    tags: dict[str, str | None] = Field(default_factory=dict)
    properties: dict[str, str | None] = Field(default_factory=dict)
    compute: str | None = None
    identity: dict[str, Any] | None = None
    services: dict[str, Service] | None = None
    queue_settings: QueueSettings | None = None
    parent_job_name: str | None = None

    _tags = field_validator("tags", "properties", mode="before")(_stringify_map)


Input = LiteralInput | DataInput


class CommandFields(Model):
    """The keys of a command (``ParameterizedCommandSchema``): shared by jobs, trials, components."""

    command: str
    code: str | None = None
    environment: Environment | None = None
    environment_variables: dict[str, Scalar | None] = Field(default_factory=dict)
    resources: Resources | None = None
    distribution: Distribution | None = None
    queue_settings: QueueSettings | None = None


class CommandJob(BaseJob, CommandFields):
    """``type: command``."""

    type: Literal["command"] = "command"
    limits: CommandLimits | None = None
    inputs: dict[str, Input] = Field(default_factory=dict)
    outputs: dict[str, JobOutput | None] = Field(default_factory=dict)


class TrialSpec(CommandFields):
    """A sweep's ``trial``: a command without compute, inputs or limits."""


class SamplingAlgorithm(Model):
    type: Literal["random", "grid", "bayesian"] = "random"
    seed: int | None = None
    rule: Literal["random", "sobol"] = "random"
    logbase: float | str | None = None

    _t = field_validator("type", "rule", mode="before")(_lower)


class Objective(Model):
    goal: Literal["minimize", "maximize"]
    primary_metric: Annotated[str, Field(min_length=1)]

    _t = field_validator("goal", mode="before")(_lower)


class EarlyTermination(Model):
    type: Literal["bandit", "median_stopping", "truncation_selection"]
    evaluation_interval: Annotated[int, Field(ge=1)] = 1
    delay_evaluation: Annotated[int, Field(ge=0)] = 0
    slack_factor: float | None = None
    slack_amount: float | None = None
    truncation_percentage: Annotated[int, Field(ge=1, le=99)] | None = None

    _t = field_validator("type", mode="before")(_lower)

    @model_validator(mode="after")
    def _policy_keys(self) -> EarlyTermination:
        if self.type == "bandit" and self.slack_factor is None and self.slack_amount is None:
            raise ValueError("a bandit policy needs slack_factor or slack_amount")
        if self.type == "bandit" and self.slack_factor is not None and self.slack_amount is not None:
            raise ValueError("give slack_factor or slack_amount, not both")
        if self.type == "truncation_selection" and self.truncation_percentage is None:
            raise ValueError("truncation_selection needs truncation_percentage")
        return self


class SweepLimits(Model):
    max_total_trials: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    max_concurrent_trials: Annotated[int, Field(ge=1, le=100_000)] | None = None
    timeout: Annotated[int, Field(gt=0)] | None = None
    trial_timeout: Annotated[int, Field(gt=0)] | None = None


class SweepJob(BaseJob):
    """``type: sweep``."""

    type: Literal["sweep"]
    trial: TrialSpec | str
    inputs: dict[str, Input] = Field(default_factory=dict)
    outputs: dict[str, JobOutput | None] = Field(default_factory=dict)
    sampling_algorithm: SamplingAlgorithm = Field(default_factory=SamplingAlgorithm)
    search_space: dict[str, dict[str, Any]]
    objective: Objective
    early_termination: EarlyTermination | None = None
    limits: SweepLimits = Field(default_factory=SweepLimits)
    resources: Resources | None = None

    @field_validator("sampling_algorithm", mode="before")
    @classmethod
    def _algo_string(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.lower() == "sobol":
                raise ValueError("'sobol' is a rule of random sampling: use {type: random, rule: sobol}")
            return {"type": v}
        return v


# --------------------------------------------------------------------------- components
class ParameterPort(Model):
    type: Literal["integer", "number", "boolean", "string"]
    default: Scalar | None = None
    optional: bool = False
    description: str | None = None
    min: int | float | None = None
    max: int | float | None = None
    enum: list[Scalar] | None = None

    _t = field_validator("type", mode="before")(_lower)


class DataPort(Model):
    type: Literal["uri_file", "uri_folder", "mltable", "custom_model", "mlflow_model", "triton_model", "path"]
    optional: bool = False
    default: str | None = None
    description: str | None = None
    mode: str | None = None

    _t = field_validator("type", mode="before")(_lower)


class OutputPort(Model):
    type: str = "uri_folder"
    description: str | None = None
    mode: str | None = None
    path: str | None = None


InputPort = ParameterPort | DataPort


class CommandComponent(Model):
    """A command component YAML (``commandComponent.schema.json``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)

    schema_: str | None = Field(default=None, alias="$schema")
    type: Literal["command"] = "command"
    name: Annotated[str, Field(pattern=COMPONENT_NAME_RE, max_length=255)]
    version: str | int | float | None = None
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, str | None] = Field(default_factory=dict)
    is_deterministic: bool = True
    command: str
    code: str | None = None
    environment: Environment | None = None
    resources: dict[str, Any] | None = None
    distribution: Distribution | None = None
    inputs: dict[str, InputPort] = Field(default_factory=dict)
    outputs: dict[str, OutputPort | None] = Field(default_factory=dict)
    additional_includes: list[str] | None = None
    properties: dict[str, Any] | None = None

    _tags = field_validator("tags", mode="before")(_stringify_map)


# --------------------------------------------------------------------------- pipelines
class PipelineSettings(Model):
    """Pipeline ``settings``; unknown keys are kept (and warned about by the checker)."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    default_compute: str | None = None
    default_datastore: str | None = None
    continue_on_step_failure: bool = True
    force_rerun: bool = False
    on_init: str | None = None
    on_finalize: str | None = None


class CommandNode(Model):
    """An inline command step of a pipeline."""

    type: Literal["command"] = "command"
    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, str | None] = Field(default_factory=dict)
    properties: dict[str, str | None] = Field(default_factory=dict)
    experiment_name: str | None = None
    command: str
    code: str | None = None
    environment: Environment | None = None
    environment_variables: dict[str, Scalar | None] = Field(default_factory=dict)
    compute: str | None = None
    resources: Resources | None = None
    distribution: Distribution | None = None
    limits: CommandLimits | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    services: dict[str, Service] | None = None
    identity: dict[str, Any] | None = None
    queue_settings: QueueSettings | None = None
    comment: str | None = None

    _tags = field_validator("tags", "properties", mode="before")(_stringify_map)


class ComponentNode(Model):
    """A pipeline step that runs a component (``component: ./train.yml``)."""

    type: Literal["command"] = "command"
    component: str | dict[str, Any]
    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, str | None] = Field(default_factory=dict)
    properties: dict[str, str | None] = Field(default_factory=dict)
    compute: str | None = None
    resources: Resources | None = None
    distribution: Distribution | None = None
    limits: CommandLimits | None = None
    environment_variables: dict[str, Scalar | None] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    services: dict[str, Service] | None = None
    identity: dict[str, Any] | None = None
    queue_settings: QueueSettings | None = None
    comment: str | None = None

    _tags = field_validator("tags", "properties", mode="before")(_stringify_map)


class SweepNode(Model):
    """A sweep step of a pipeline; ``trial`` names a component."""

    type: Literal["sweep"]
    trial: str | dict[str, Any]
    name: str | None = None
    display_name: str | None = None
    description: str | None = None
    tags: dict[str, str | None] = Field(default_factory=dict)
    compute: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    sampling_algorithm: SamplingAlgorithm = Field(default_factory=SamplingAlgorithm)
    search_space: dict[str, dict[str, Any]]
    objective: Objective
    early_termination: EarlyTermination | None = None
    limits: SweepLimits = Field(default_factory=SweepLimits)
    resources: Resources | None = None
    queue_settings: QueueSettings | None = None

    _algo = field_validator("sampling_algorithm", mode="before")(SweepJob._algo_string.__func__)  # type: ignore[attr-defined]


PipelineNode = CommandNode | ComponentNode | SweepNode


class PipelineJob(BaseJob):
    """``type: pipeline``."""

    type: Literal["pipeline"]
    jobs: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, JobOutput | None] = Field(default_factory=dict)
    settings: PipelineSettings = Field(default_factory=PipelineSettings)
    component: str | None = None


Job = CommandJob | SweepJob | PipelineJob
