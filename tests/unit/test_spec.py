"""Tests for loading job files into typed specs: every job type, inputs, paths, ``--set``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from hpcjobs.errors import ValidationError
from hpcjobs.spec import models as m
from hpcjobs.spec.load import DUMP_ONLY, Loaded, load_component, load_job, parse_set

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").rglob("*.yml"))


def is_component(path: Path) -> bool:
    head = path.read_text(encoding="utf-8")[:400]
    return "Component.schema.json" in head


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def job(tmp_path: Path, text: str, sets: list[str] | None = None, name: str = "job.yml") -> Loaded:
    return load_job(write(tmp_path / name, text), sets)


def job_error(tmp_path: Path, text: str, sets: list[str] | None = None) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        job(tmp_path, text, sets)
    return info.value


# --------------------------------------------------------------------------- examples
def test_there_are_examples() -> None:
    names = {p.stem for p in EXAMPLES}
    assert {
        "hello-world",
        "hello-world-org",
        "hello-world-env-var",
        "hello-world-input",
        "hello-world-output",
        "hello-code",
    } <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(REPO / "examples")) for p in EXAMPLES])
def test_every_example_loads(path: Path) -> None:
    if is_component(path):
        comp, _, _ = load_component(path)
        assert isinstance(comp, m.CommandComponent)
        return
    loaded = load_job(path)
    assert isinstance(loaded.job, (m.CommandJob, m.SweepJob, m.PipelineJob))
    assert loaded.type == loaded.job.type
    assert loaded.base_dir == path.resolve().parent


def test_hello_world_input_example() -> None:
    loaded = load_job(REPO / "examples" / "hello-world-input.yml")
    inputs = loaded.job.inputs
    assert inputs["hello_string"] == m.LiteralInput(value="hello world")
    assert inputs["hello_number"] == m.LiteralInput(value=42)
    assert loaded.job.compute == "azureml:cpu-cluster"


def test_hello_code_example_resolves_code_against_the_file() -> None:
    loaded = load_job(REPO / "examples" / "hello-code.yml")
    assert loaded.job.code == str((REPO / "examples" / "src").resolve())


def test_hello_world_org_example_metadata() -> None:
    loaded = load_job(REPO / "examples" / "hello-world-org.yml")
    j = loaded.job
    assert j.tags == {"hello": "world"}
    assert j.display_name == "hello-world-example"
    assert j.experiment_name == "hello-world-example"
    assert j.description and j.description.startswith("# Azure Machine Learning")


# --------------------------------------------------------------------------- command jobs
def test_full_command_job(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.csv").write_text("a,b\n")
    loaded = job(
        tmp_path,
        """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        type: command
        name: my_job-1
        display_name: My job
        experiment_name: exp
        description: words
        tags: {team: vision, epochs: 10, flag: true}
        properties: {p: q}
        code: ./src
        command: >-
          python train.py --lr ${{inputs.lr}} --data ${{inputs.data}} --file ${{inputs.file}}
          --out ${{outputs.model}} --name ${{name}}
        environment:
          image: python:3.11
        environment_variables:
          A: "1"
          B: 2
          C: true
        compute: azureml:gpu-cluster
        resources:
          instance_count: 2
          instance_type: big
          shm_size: 8g
        distribution:
          type: PyTorch
          process_count_per_instance: 4
        limits:
          timeout: 3600
        inputs:
          lr: 0.01
          data:
            type: uri_folder
            path: ./data
            mode: download
          file:
            type: uri_file
            path: data/f.csv
        outputs:
          model:
            type: uri_folder
            mode: upload
        """,
    )
    j = loaded.job
    assert isinstance(j, m.CommandJob)
    assert j.name == "my_job-1" and j.display_name == "My job" and j.experiment_name == "exp"
    assert j.tags == {"team": "vision", "epochs": "10", "flag": "true"}
    assert j.properties == {"p": "q"}
    assert j.code == str((tmp_path / "src").resolve())
    assert isinstance(j.environment, m.InlineEnvironment) and j.environment.image == "python:3.11"
    assert j.environment_variables == {"A": "1", "B": 2, "C": True}
    assert j.resources is not None and j.resources.instance_count == 2 and j.resources.shm_size == "8g"
    assert isinstance(j.distribution, m.PyTorchDistribution) and j.distribution.process_count_per_instance == 4
    assert j.limits is not None and j.limits.timeout == 3600
    assert isinstance(j.inputs["data"], m.DataInput)
    assert j.inputs["data"].path == str((tmp_path / "data").resolve())
    assert j.inputs["data"].mode == "download"
    assert isinstance(j.inputs["file"], m.DataInput)
    assert j.inputs["file"].path == str((tmp_path / "data" / "f.csv").resolve())
    assert isinstance(j.outputs["model"], m.JobOutput) and j.outputs["model"].mode == "upload"
    assert loaded.warnings == []


@pytest.mark.parametrize("kind", ["mpi", "tensorflow"])
def test_other_distributions(tmp_path: Path, kind: str) -> None:
    extra = "process_count_per_instance: 2" if kind == "mpi" else "worker_count: 2\n  parameter_server_count: 1"
    loaded = job(tmp_path, f"command: echo hi\ndistribution:\n  type: {kind}\n  {extra}\n")
    assert loaded.job.distribution is not None and loaded.job.distribution.type == kind


def test_type_defaults_to_command(tmp_path: Path) -> None:
    assert job(tmp_path, "command: echo hi\n").type == "command"


def test_schema_and_dump_only_keys_are_ignored(tmp_path: Path) -> None:
    assert "$schema" in DUMP_ONLY
    loaded = job(
        tmp_path,
        """
        $schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
        id: azureml:/subscriptions/x/jobs/y
        status: Completed
        creation_context:
          created_at: "2024-01-01"
        log_files: null
        parameters: {}
        command: echo hi
        """,
    )
    assert loaded.job.command == "echo hi"


# --------------------------------------------------------------------------- inputs by shape
def test_literal_and_data_inputs_are_told_apart_by_shape(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    loaded = job(
        tmp_path,
        """
        command: echo ${{inputs.s}} ${{inputs.i}} ${{inputs.f}} ${{inputs.b}} ${{inputs.t}} ${{inputs.v}} ${{inputs.no}}
        inputs:
          s: hello
          i: 3
          f: 0.5
          b: false
          no: NO
          t:
            type: integer
            value: 7
          v:
            value: text
          p:
            path: ./d
          typed:
            type: mlflow_model
            path: azureml:my-model:1
          url:
            type: uri_file
            path: https://example.org/data.csv
          optional_number:
            type: number
            optional: true
        """,
    )
    ins = loaded.job.inputs
    for name, value in {"s": "hello", "i": 3, "f": 0.5, "b": False, "no": "NO", "v": "text"}.items():
        assert isinstance(ins[name], m.LiteralInput), name
        assert ins[name].value == value and type(ins[name].value) is type(value), name
    assert isinstance(ins["t"], m.LiteralInput) and ins["t"].value == 7 and ins["t"].type == "integer"
    assert isinstance(ins["p"], m.DataInput) and ins["p"].type == "uri_folder"
    assert ins["p"].path == str((tmp_path / "d").resolve())
    assert isinstance(ins["typed"], m.DataInput) and ins["typed"].path == "azureml:my-model:1"
    assert isinstance(ins["url"], m.DataInput) and ins["url"].path == "https://example.org/data.csv"
    assert isinstance(ins["optional_number"], m.LiteralInput) and ins["optional_number"].optional


@pytest.mark.parametrize(
    ("kind", "mode"),
    [
        ("uri_file", "ro_mount"),
        ("uri_folder", "download"),
        ("mltable", "eval_mount"),
        ("mltable", "eval_download"),
        ("custom_model", "direct"),
    ],
)
def test_allowed_input_modes(tmp_path: Path, kind: str, mode: str) -> None:
    loaded = job(
        tmp_path,
        f"command: ls ${{{{inputs.x}}}}\ninputs:\n  x:\n    type: {kind}\n    path: azureml://datastores/d/paths/p\n    mode: {mode}\n",
    )
    assert loaded.job.inputs["x"].mode == mode


def test_absolute_and_home_paths(tmp_path: Path) -> None:
    loaded = job(tmp_path, "command: ls ${{inputs.a}} ${{inputs.b}}\ninputs:\n  a: {path: /etc}\n  b: {path: ~/x}\n")
    assert loaded.job.inputs["a"].path == "/etc"
    assert loaded.job.inputs["b"].path == str(Path("~/x").expanduser())


def test_relative_paths_resolve_against_the_yaml_folder_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "project" / "jobs"
    (sub / "src").mkdir(parents=True)
    (sub / "data").mkdir()
    write(sub / "job.yml", "command: ls\ncode: src\ninputs:\n  d: {path: ./data}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_job(Path("..") / "project" / "jobs" / "job.yml")
    assert loaded.job.code == str((sub / "src").resolve())
    assert loaded.job.inputs["d"].path == str((sub / "data").resolve())


# --------------------------------------------------------------------------- environments
def test_environment_file_reference(tmp_path: Path) -> None:
    write(
        tmp_path / "envs" / "env.yml",
        """
        $schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json
        name: my-env
        image: python:3.11
        conda_file: conda.yml
        """,
    )
    write(tmp_path / "envs" / "conda.yml", "dependencies: [python=3.11]\n")
    loaded = job(tmp_path, "command: echo hi\nenvironment: file:envs/env.yml\n")
    env = loaded.job.environment
    assert isinstance(env, m.InlineEnvironment)
    assert env.image == "python:3.11" and env.name == "my-env"
    # the conda file is relative to the environment file, not to the job file
    assert env.conda_file_path == str((tmp_path / "envs" / "conda.yml").resolve())


def test_environment_reference_string_and_inline_conda(tmp_path: Path) -> None:
    assert job(tmp_path, "command: echo\nenvironment: azureml:my-env:3\n").job.environment == "azureml:my-env:3"
    loaded = job(tmp_path, "command: echo\nenvironment:\n  image: python:3.11\n  conda_file:\n    dependencies: [numpy]\n")
    env = loaded.job.environment
    assert isinstance(env, m.InlineEnvironment) and env.conda_file == {"dependencies": ["numpy"]}


def test_environment_build_context_is_resolved(tmp_path: Path) -> None:
    (tmp_path / "docker").mkdir()
    loaded = job(tmp_path, "command: echo\nenvironment:\n  build:\n    path: docker\n")
    env = loaded.job.environment
    assert isinstance(env, m.InlineEnvironment) and env.build is not None
    assert env.build.path == str((tmp_path / "docker").resolve())


# --------------------------------------------------------------------------- expressions
def test_legacy_optional_syntax_is_accepted_with_a_warning(tmp_path: Path) -> None:
    loaded = job(tmp_path, "command: python x.py [--n ${{inputs.n}}]\ninputs:\n  n: 3\n")
    assert loaded.job.command == "python x.py $[[--n ${{inputs.n}}]]"
    assert loaded.warnings and "job.yml:1" in loaded.warnings[0]


def test_optional_segment_may_name_an_undeclared_input(tmp_path: Path) -> None:
    loaded = job(tmp_path, "command: python x.py $[[--n ${{inputs.n}}]]\n")
    assert "$[[" in loaded.job.command


def test_spaces_inside_expressions(tmp_path: Path) -> None:
    job(tmp_path, "command: echo ${{ inputs.a }} ${{name}}\ninputs:\n  a: 1\n")


def test_undeclared_input_names_the_line_of_the_reference(tmp_path: Path) -> None:
    e = job_error(tmp_path, "command: |\n  echo a\n  echo b\n  echo ${{inputs.missing}}\ninputs:\n  present: 1\n")
    assert e.location is not None and (e.location.line, e.location.col) == (4, 8)
    assert e.field == "command"
    assert "declared inputs: present" in (e.hint or "")


# --------------------------------------------------------------------------- sweeps
SWEEP = """
$schema: https://azuremlschemas.azureedge.net/latest/sweepJob.schema.json
type: sweep
experiment_name: sweep-exp
trial:
  code: src
  command: >-
    python train.py --lr ${{search_space.lr}} --opt ${{search_space.opt}}
    --data ${{inputs.data}} --out ${{outputs.model}}
  environment:
    image: python:3.11
  environment_variables:
    A: "1"
inputs:
  data:
    type: uri_folder
    path: ./src
outputs:
  model:
    type: uri_folder
sampling_algorithm:
  type: random
  rule: sobol
  seed: 4
search_space:
  lr:
    type: loguniform
    min_value: -6
    max_value: -1
  opt:
    type: choice
    values: [adam, sgd]
  n:
    type: randint
    upper: 10
objective:
  goal: Maximize
  primary_metric: accuracy
early_termination:
  type: bandit
  slack_factor: 0.1
  evaluation_interval: 2
limits:
  max_total_trials: 8
  max_concurrent_trials: 2
  timeout: 7200
  trial_timeout: 600
compute: azureml:gpu-cluster
"""


def test_sweep_job_loads_fully(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    loaded = job(tmp_path, SWEEP)
    j = loaded.job
    assert isinstance(j, m.SweepJob)
    assert isinstance(j.trial, m.TrialSpec)
    assert j.trial.code == str((tmp_path / "src").resolve())
    assert j.sampling_algorithm.type == "random" and j.sampling_algorithm.rule == "sobol" and j.sampling_algorithm.seed == 4
    assert set(j.search_space) == {"lr", "opt", "n"}
    assert j.objective.goal == "maximize" and j.objective.primary_metric == "accuracy"
    assert (
        j.early_termination is not None and j.early_termination.type == "bandit" and j.early_termination.evaluation_interval == 2
    )
    assert j.limits.max_total_trials == 8 and j.limits.trial_timeout == 600
    assert isinstance(j.inputs["data"], m.DataInput) and j.inputs["data"].path == str((tmp_path / "src").resolve())


@pytest.mark.parametrize(
    "algo",
    ["grid", "random", "bayesian", "{type: grid}", "{type: random, rule: random}"],
)
def test_sweep_sampling_algorithms(tmp_path: Path, algo: str) -> None:
    text = f"""
    type: sweep
    trial:
      command: echo ${{{{search_space.opt}}}}
    search_space:
      opt: {{type: choice, values: [1, 2]}}
    sampling_algorithm: {algo}
    objective: {{goal: minimize, primary_metric: loss}}
    limits: {{max_total_trials: 2}}
    """
    assert isinstance(job(tmp_path, text).job, m.SweepJob)


@pytest.mark.parametrize(
    "policy",
    ["{type: median_stopping}", "{type: truncation_selection, truncation_percentage: 20}", "{type: bandit, slack_amount: 0.2}"],
)
def test_sweep_early_termination_policies(tmp_path: Path, policy: str) -> None:
    text = f"""
    type: sweep
    trial:
      command: echo ${{{{search_space.opt}}}}
    search_space:
      opt: {{type: choice, values: [1, 2]}}
    objective: {{goal: minimize, primary_metric: loss}}
    early_termination: {policy}
    limits: {{max_total_trials: 2}}
    """
    assert job(tmp_path, text).job.early_termination is not None


def test_sweep_trial_from_a_component_file(tmp_path: Path) -> None:
    write(tmp_path / "train.yml", COMPONENT)
    text = """
    type: sweep
    trial: ./train.yml
    inputs:
      data: {type: uri_folder, path: azureml://datastores/d/paths/x}
    search_space:
      lr: {type: uniform, min_value: 0.01, max_value: 0.1}
    objective: {goal: minimize, primary_metric: loss}
    limits: {max_total_trials: 2}
    """
    loaded = job(tmp_path, text)
    assert isinstance(loaded.job.trial, m.TrialSpec)
    assert loaded.job.trial.command.startswith("python train.py")
    # Azure's binding: the hyperparameter feeds the input of the same name, the sweep's
    # inputs the others; the optional input without a value stays unset
    assert loaded.trial_sampled == ("lr",)
    assert set(loaded.job.inputs) == {"data"}
    assert loaded.job.inputs["data"].path == "azureml://datastores/d/paths/x"
    assert loaded.job.trial.environment is not None and loaded.job.trial.environment.image == "python:3.11"
    # the component's outputs are the trial's
    assert set(loaded.job.outputs) == {"model"} and loaded.job.outputs["model"].type == "uri_folder"


COMPONENT_TRIAL = """
type: sweep
trial: file:./train.yml
inputs:
  data: ./data
  epochs: 3
sampling_algorithm: grid
search_space:
  lr: {type: choice, values: [0.1, 0.2]}
objective: {goal: minimize, primary_metric: loss}
"""


def test_sweep_component_trial_binds_defaults_and_literals(tmp_path: Path) -> None:
    write(tmp_path / "train.yml", COMPONENT)
    # a default feeds the trial when the space does not sample that input
    loaded = job(
        tmp_path,
        COMPONENT_TRIAL.replace("  lr: {type: choice, values: [0.1, 0.2]}", "  epochs: {type: choice, values: [1, 2]}").replace(
            "  epochs: 3\n", ""
        ),
    )
    assert loaded.trial_sampled == ("epochs",)
    assert loaded.job.inputs["lr"].value == 0.01 and loaded.job.inputs["lr"].type == "number"
    # a string literal for a data port is a path, relative to the sweep's file
    loaded = job(tmp_path, COMPONENT_TRIAL)
    assert loaded.job.inputs["data"].path == str(tmp_path / "data")
    assert loaded.job.inputs["epochs"].value == 3 and "lr" not in loaded.job.inputs


def _line_of(tmp_path: Path, needle: str) -> int:
    lines = (tmp_path / "job.yml").read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


@pytest.mark.parametrize(
    ("change", "message", "needle"),
    [
        (
            ("  lr: {type: choice", "  lrate: {type: choice"),
            "search space parameter 'lrate' is not an input of component 'train_model'",
            "lrate:",
        ),
        (("  epochs: 3", "  epoch: 3"), "component 'train_model' has no input 'epoch'", "epoch:"),
        (("  epochs: 3", "  lr: 3"), "input 'lr' is given here and is also a hyperparameter", "  lr: 3"),
        (("  data: ./data\n", ""), "required input 'data' of component 'train_model' has no value", "inputs:"),
        (("  epochs: 3", "  epochs: many"), "expected an integer, got 'many'", "epochs: many"),
        (
            ("  lr: {type: choice, values: [0.1, 0.2]}", "  epochs: {type: uniform, min_value: 1, max_value: 9}"),
            "a uniform distribution samples real numbers, but input 'epochs' of component 'train_model' is an integer",
            "epochs: {type: uniform",
        ),
        (
            ("  lr: {type: choice, values: [0.1, 0.2]}", "  lr: {type: choice, values: [fast, slow]}"),
            "'fast' cannot be a value of input 'lr'",
            "lr: {type",
        ),
        (("  lr: {type: choice", "  data: {type: choice"), "input 'data' of component 'train_model' is data", "data: {type"),
    ],
)
def test_sweep_component_trial_errors_point_at_the_job_file(
    tmp_path: Path, change: tuple[str, str], message: str, needle: str
) -> None:
    write(tmp_path / "train.yml", COMPONENT)
    text = COMPONENT_TRIAL.replace(*change)
    if "epochs: {type: uniform" in text:
        text = text.replace("  epochs: 3\n", "")
    if "data: {type: choice" in text:
        text = text.replace("  data: ./data\n", "")
    err = job_error(tmp_path, text)
    assert message in err.message, err.message
    assert err.location is not None and err.location.file.endswith("job.yml")
    assert err.location.line == _line_of(tmp_path, needle), (err.location, needle)


def test_sweep_component_trial_output_must_be_the_components(tmp_path: Path) -> None:
    write(tmp_path / "train.yml", COMPONENT)
    err = job_error(tmp_path, COMPONENT_TRIAL + "outputs:\n  modle:\n    mode: upload\n")
    assert "component 'train_model' has no output 'modle'" in err.message and "did you mean 'model'" in (err.hint or "")
    assert err.location is not None and err.location.line == _line_of(tmp_path, "modle:")
    loaded = job(tmp_path, COMPONENT_TRIAL + "outputs:\n  model:\n    mode: upload\n")
    assert loaded.job.outputs["model"].mode == "upload" and loaded.job.outputs["model"].type == "uri_folder"


def test_sweep_component_trial_file_not_found(tmp_path: Path) -> None:
    err = job_error(tmp_path, COMPONENT_TRIAL.replace("file:./train.yml", "./nope.yml"))
    assert "component file './nope.yml' not found" in err.message
    assert err.location is not None and err.location.line == _line_of(tmp_path, "trial:")


def test_sweep_component_command_errors_point_at_the_component(tmp_path: Path) -> None:
    write(tmp_path / "train.yml", COMPONENT.replace("--lr ${{inputs.lr}}", "--lr ${{inputs.lrr}}"))
    err = job_error(tmp_path, COMPONENT_TRIAL)
    assert "${{inputs.lrr}} refers to an input that is not declared" in err.message
    assert err.location is not None and err.location.file.endswith("train.yml")


# --------------------------------------------------------------------------- components and pipelines
COMPONENT = """
$schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
name: train_model
display_name: Train
version: 1
type: command
command: >-
  python train.py --data ${{inputs.data}} --lr ${{inputs.lr}}
  $[[--epochs ${{inputs.epochs}}]] --out ${{outputs.model}}
inputs:
  data:
    type: uri_folder
  lr:
    type: number
    default: 0.01
  epochs:
    type: integer
    optional: true
outputs:
  model:
    type: uri_folder
environment:
  image: python:3.11
"""


def test_command_component_loads(tmp_path: Path) -> None:
    comp, smap, path = load_component(write(tmp_path / "train.yml", COMPONENT))
    assert isinstance(comp, m.CommandComponent)
    assert comp.name == "train_model" and comp.version == 1
    assert isinstance(comp.inputs["data"], m.DataPort)
    assert isinstance(comp.inputs["lr"], m.ParameterPort) and comp.inputs["lr"].default == 0.01
    assert isinstance(comp.inputs["epochs"], m.ParameterPort) and comp.inputs["epochs"].optional
    assert smap.locate(("inputs", "lr")).line is not None
    assert path == tmp_path / "train.yml"


PIPELINE = """
$schema: https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json
type: pipeline
display_name: demo pipeline
experiment_name: pipe
inputs:
  raw:
    type: uri_folder
    path: ./data
  lr: 0.05
outputs:
  final:
    type: uri_folder
settings:
  default_compute: azureml:cpu-cluster
  continue_on_step_failure: false
jobs:
  prep:
    type: command
    command: cp -r ${{inputs.raw}}/. ${{outputs.clean}}
    inputs:
      raw: ${{parent.inputs.raw}}
    outputs:
      clean:
        type: uri_folder
    environment:
      image: python:3.11
  train:
    component: ./train.yml
    inputs:
      data: ${{parent.jobs.prep.outputs.clean}}
      lr: ${{parent.inputs.lr}}
    outputs:
      model: ${{parent.outputs.final}}
  report:
    command: ls ${{inputs.model}} ${{inputs.extra}}
    inputs:
      model: ${{parent.jobs.train.outputs.model}}
      extra:
        type: uri_folder
        path: ./data
"""


def test_pipeline_job_loads_fully(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    write(tmp_path / "train.yml", COMPONENT)
    loaded = job(tmp_path, PIPELINE)
    j = loaded.job
    assert isinstance(j, m.PipelineJob)
    assert list(j.jobs) == ["prep", "train", "report"]
    assert isinstance(j.jobs["prep"], m.CommandNode)
    assert isinstance(j.jobs["train"], m.ComponentNode)
    assert isinstance(j.jobs["report"], m.CommandNode)
    assert loaded.step_deps == {"prep": set(), "train": {"prep"}, "report": {"train"}}
    assert loaded.components["train"][0].name == "train_model"
    assert j.settings.continue_on_step_failure is False
    # a literal data input of a step is resolved against the pipeline file's folder
    assert j.jobs["report"].inputs["extra"]["path"] == str((tmp_path / "data").resolve())


def test_pipeline_with_inline_component_and_legacy_binding(tmp_path: Path) -> None:
    text = """
    type: pipeline
    inputs:
      n: 3
    jobs:
      only:
        component:
          command: echo ${{inputs.n}}
          inputs:
            n: {type: integer}
        inputs:
          n: ${{inputs.n}}
    """
    loaded = job(tmp_path, text)
    assert any("legacy binding" in w for w in loaded.warnings)


def test_pipeline_unknown_setting_is_a_warning(tmp_path: Path) -> None:
    loaded = job(tmp_path, "type: pipeline\nsettings:\n  default_computer: x\njobs:\n  a:\n    command: echo\n")
    assert any("default_computer" in w and "did you mean 'default_compute'" in w for w in loaded.warnings)


def test_pipeline_sweep_step(tmp_path: Path) -> None:
    write(tmp_path / "train.yml", COMPONENT)
    text = """
    type: pipeline
    jobs:
      tune:
        type: sweep
        trial: ./train.yml
        inputs:
          data: {type: uri_folder, path: azureml://datastores/d/paths/x}
        search_space:
          lr: {type: uniform, min_value: 0.01, max_value: 0.1}
        objective: {goal: minimize, primary_metric: loss}
        limits: {max_total_trials: 2}
    """
    loaded = job(tmp_path, text)
    assert isinstance(loaded.job.jobs["tune"], m.SweepNode)
    # the trial component is loaded and checked with the pipeline, like a component step's
    assert loaded.components["tune"][0].name == "train_model"


SWEEP_STEP = """
type: pipeline
jobs:
  prep:
    command: echo > ${{outputs.out}}/x
    outputs:
      out:
  tune:
    type: sweep
    trial: ./train.yml
    inputs:
      data: ${{parent.jobs.prep.outputs.out}}
    sampling_algorithm: grid
    search_space:
      lr: {type: choice, values: [0.1, 0.2]}
    objective: {goal: minimize, primary_metric: loss}
    outputs:
      model:
  use:
    command: ls ${{inputs.m}}
    inputs:
      m: ${{parent.jobs.tune.outputs.model}}
"""


def test_pipeline_sweep_step_binds_like_a_component(tmp_path: Path) -> None:
    write(tmp_path / "train.yml", COMPONENT)
    loaded = job(tmp_path, SWEEP_STEP)
    assert loaded.step_deps == {"prep": set(), "tune": {"prep"}, "use": {"tune"}}


@pytest.mark.parametrize(
    ("change", "message", "needle"),
    [
        (
            ("      lr: {type", "      rate: {type"),
            "search space parameter 'rate' is not an input of component 'train_model'",
            "rate:",
        ),
        (("      data: ${{parent", "      dta: ${{parent"), "component 'train_model' has no input 'dta'", "dta:"),
        (
            ("      data: ${{parent.jobs.prep.outputs.out}}", "      data: ${{parent.jobs.prep.outputs.out}}\n      lr: 1"),
            "is also a hyperparameter",
            "lr: 1",
        ),
        (
            ("      data: ${{parent.jobs.prep.outputs.out}}\n", "      epochs: 2\n"),
            "required input 'data' of component 'train_model' has no value",
            "    inputs:",
        ),
        (("    outputs:\n      model:", "    outputs:\n      modl:"), "component 'train_model' has no output 'modl'", "modl:"),
        (("    sampling_algorithm: grid\n", ""), "limits.max_total_trials is required", "type: sweep"),
        (
            ("{type: choice, values: [0.1, 0.2]}", "{type: choice, values: [true, false]}"),
            "True cannot be a value of input 'lr'",
            "lr: {type",
        ),
        (("trial: ./train.yml", "trial: ./tain.yml"), "component file './tain.yml' not found", "trial:"),
    ],
)
def test_pipeline_sweep_step_errors_point_at_the_pipeline_file(
    tmp_path: Path, change: tuple[str, str], message: str, needle: str
) -> None:
    write(tmp_path / "train.yml", COMPONENT)
    text = SWEEP_STEP.replace(*change)
    assert text != SWEEP_STEP
    err = job_error(tmp_path, text)
    assert message in err.message, err.message
    assert err.location is not None and err.location.file.endswith("job.yml")
    assert err.location.line == _line_of(tmp_path, needle), (err.location, needle)


# --------------------------------------------------------------------------- --set
HELLO_INPUT = REPO / "examples" / "hello-world-input.yml"


def test_set_scalar_types() -> None:
    assert parse_set("inputs.hello_number=24") == (["inputs", "hello_number"], 24)
    assert parse_set("a=0.5") == (["a"], 0.5)
    assert parse_set("a=true") == (["a"], True)
    assert parse_set("a=NO") == (["a"], "NO")
    assert parse_set("a='24'") == (["a"], "24")
    assert parse_set('a="x y"') == (["a"], "x y")
    assert parse_set("a=null") == (["a"], None)
    assert parse_set("a=[a, b]") == (["a"], ["a", "b"])
    assert parse_set("a={x: 1}") == (["a"], {"x": 1})
    assert parse_set("a=b=c") == (["a"], "b=c")
    assert parse_set("jobs.0.x=1") == (["jobs", 0, "x"], 1)


def test_set_int_input() -> None:
    loaded = load_job(HELLO_INPUT, ["inputs.hello_number=24"])
    value = loaded.job.inputs["hello_number"].value
    assert value == 24 and isinstance(value, int)


def test_set_string_that_looks_like_a_number() -> None:
    loaded = load_job(HELLO_INPUT, ["inputs.hello_number='24'"])
    assert loaded.job.inputs["hello_number"].value == "24"


def test_set_list_value(tmp_path: Path) -> None:
    loaded = job(tmp_path, "command: echo\nresources:\n  instance_count: 1\n", ["resources.docker_args=[--a, --b]"])
    assert loaded.job.resources is not None and loaded.job.resources.docker_args == ["--a", "--b"]


def test_set_list_in_a_sweep_search_space(tmp_path: Path) -> None:
    text = """
    type: sweep
    trial:
      command: echo ${{search_space.opt}}
    search_space:
      opt: {type: choice, values: [1, 2]}
    objective: {goal: minimize, primary_metric: loss}
    limits: {max_total_trials: 2}
    """
    loaded = job(tmp_path, text, ["search_space.opt.values=[a, b, c]", "limits.max_total_trials=5"])
    assert loaded.job.search_space["opt"]["values"] == ["a", "b", "c"]
    assert loaded.job.limits.max_total_trials == 5


def test_set_creates_a_tag(tmp_path: Path) -> None:
    loaded = job(tmp_path, "command: echo\n", ["tags.x=y"])
    assert loaded.job.tags == {"x": "y"}
    loaded = load_job(REPO / "examples" / "hello-world-org.yml", ["tags.x=y", "tags.hello=there"])
    assert loaded.job.tags == {"hello": "there", "x": "y"}


def test_set_creates_nested_mappings(tmp_path: Path) -> None:
    loaded = job(tmp_path, "command: echo\n", ["resources.instance_count=2", "limits.timeout=60", "distribution.type=mpi"])
    assert loaded.job.resources is not None and loaded.job.resources.instance_count == 2
    assert loaded.job.limits is not None and loaded.job.limits.timeout == 60
    assert isinstance(loaded.job.distribution, m.MpiDistribution)


def test_set_top_level_fields(tmp_path: Path) -> None:
    loaded = job(tmp_path, "command: echo\n", ["display_name=new name", "command=echo changed", "experiment_name=e2"])
    assert loaded.job.display_name == "new name"
    assert loaded.job.command == "echo changed"
    assert loaded.job.experiment_name == "e2"


def test_set_new_input_and_data_input(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    loaded = job(tmp_path, "command: echo ${{inputs.x}} ${{inputs.d}}\n", ["inputs.x=5", "inputs.d={path: ./d}"])
    assert loaded.job.inputs["x"].value == 5
    assert isinstance(loaded.job.inputs["d"], m.DataInput)
    assert loaded.job.inputs["d"].path == str((tmp_path / "d").resolve())


def test_set_unknown_path_suggests(tmp_path: Path) -> None:
    e = job_error(tmp_path, "command: echo\n", ["resorces.instance_count=2"])
    assert "'resorces' is not a key of the job" in e.message
    assert "did you mean 'resources'" in (e.hint or "")
    e = job_error(tmp_path, "command: echo\n", ["resources.instance_cont=2"])
    assert "'instance_cont' is not a key of resources" in e.message
    assert "did you mean 'instance_count'" in (e.hint or "")
    e = job_error(tmp_path, "command: echo\n", ["limits.timout=2"])
    assert "did you mean 'timeout'" in (e.hint or "")


def test_set_beneath_a_string_is_an_error() -> None:
    with pytest.raises(ValidationError, match=r"cannot set beneath 'inputs\.hello_string'"):
        load_job(HELLO_INPUT, ["inputs.hello_string.value=3"])
    with pytest.raises(ValidationError, match="is not a key of command"):
        load_job(HELLO_INPUT, ["command.x=3"])


def test_set_wrong_type_is_reported_at_the_flag(tmp_path: Path) -> None:
    e = job_error(tmp_path, "command: echo\n", ["resources.instance_count=two"])
    assert str(e.location) == "--set resources.instance_count=two"
    assert e.field == "resources.instance_count" and "expected an integer" in e.message


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1", ".a=1"])
def test_set_malformed_flags(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValidationError):
        job(tmp_path, "command: echo\n", [bad])


def test_set_can_change_the_type_of_job(tmp_path: Path) -> None:
    e = job_error(tmp_path, "command: echo\n", ["type=Command"])
    assert "lower case" in (e.hint or "")
