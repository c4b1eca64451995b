"""Pipelines end to end on the embedded local site, through the real CLI (no cluster needed).

Each test has its own HPCJOBS_HOME.  MLflow tracking is switched off (HPCJOBS_TRACKING=none):
importing mlflow when a step ends costs seconds per CLI call, and tracking has its own tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import poll_until_ended

REPO = Path(__file__).resolve().parents[2]
PIPELINES = REPO / "examples" / "pipelines"
TERMINAL = ("Completed", "Failed", "Canceled")


@pytest.fixture(autouse=True)
def _no_tracking(hpcjobs_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCJOBS_TRACKING", "none")


def _json(run_cli: Callable[..., Any], *args: str) -> Any:
    res = run_cli(*args, "-o", "json")
    assert res.returncode == 0, f"hpcjobs {' '.join(args)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def _wait(run_cli: Callable[..., Any], name: str, timeout: float = 300) -> dict[str, Any]:
    """Wait in-process (cheap), then return what the real CLI shows."""
    poll_until_ended(name, timeout, poll=0.3)
    view = _json(run_cli, "job", "show", "-n", name)
    assert view["status"] in TERMINAL, view
    return dict(view)


def _run(run_cli: Callable[..., Any], file: Path | str, *args: str, timeout: float = 300) -> dict[str, Any]:
    view = _json(run_cli, "job", "create", "-f", str(file), *args)
    return _wait(run_cli, view["name"], timeout)


def _steps(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in view["steps"]}


def _log(view: dict[str, Any], step: str) -> str:
    return (Path(view["paths"]["job_dir"]) / "steps" / step / "user_logs" / "std_log.txt").read_text()


def _pipeline(tmp_path: Path, text: str, name: str = "pipeline.yml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_hello_pipeline_io_passes_data_between_steps(run_cli: Callable[..., Any]) -> None:
    view = _run(run_cli, PIPELINES / "hello-pipeline-io.yml")
    assert view["status"] == "Completed"
    steps = _steps(view)
    assert steps["world_job"]["depends_on"] == ["hello_job"]
    assert _log(view, "hello_job").strip() == "hello"
    assert _log(view, "world_job").strip() == "world"
    kids = _json(run_cli, "job", "list", "--parent-job-name", view["name"])
    assert sorted(k["name"] for k in kids) == sorted(s["job_name"] for s in view["steps"])
    assert all(k["status"] == "Completed" and k["parent_job_name"] == view["name"] for k in kids)


def test_independent_steps_and_settings(run_cli: Callable[..., Any]) -> None:
    for example in ("hello-pipeline.yml", "hello-pipeline-settings.yml"):
        view = _run(run_cli, PIPELINES / example)
        assert view["status"] == "Completed", view
        assert all(s["depends_on"] == [] for s in view["steps"])


def test_components_with_their_own_code_folders(run_cli: Callable[..., Any]) -> None:
    view = _run(run_cli, PIPELINES / "hello-pipeline-abc.yml")
    assert view["status"] == "Completed", view
    assert "I'm component A: hello world" in _log(view, "a")
    assert "I'm component C: hello world" in _log(view, "c")
    # each component's code went to its own snapshot
    snapshots = Path(view["paths"]["job_dir"]).parent / ".snapshots"
    assert len([p for p in snapshots.iterdir() if not p.name.startswith(".")]) == 3


def test_train_pipeline_end_to_end(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    res = run_cli("job", "create", "-f", str(PIPELINES / "train-pipeline" / "pipeline.yml"), "--stream")
    assert res.returncode == 0, res.stderr
    assert "evaluate: accuracy" in res.stdout  # the last step's log is streamed
    name = next(line.split()[-1] for line in res.stderr.splitlines() if line.startswith("RunId:"))
    view = _json(run_cli, "job", "show", "-n", name)
    assert view["status"] == "Completed"
    assert [s["name"] for s in view["steps"]] == ["get_data", "train", "evaluate"]
    assert _steps(view)["evaluate"]["depends_on"] == ["get_data", "train"]
    metrics = json.loads((Path(view["paths"]["named_outputs"]["evaluation_report"]) / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.8 and metrics["test_rows"] == 100
    # the model the train step wrote is what evaluate read, at the pipeline's output
    assert (Path(view["paths"]["named_outputs"]["trained_model"]) / "model.json").is_file()
    got = _json(run_cli, "job", "download", "-n", name, "--all", "-p", str(tmp_path / "dl"))
    assert got["refused"] == []
    assert json.loads((tmp_path / "dl/steps/evaluate/named-outputs/report/metrics.json").read_text()) == metrics
    assert (tmp_path / "dl/steps/evaluate/artifacts/outputs/metrics.json").is_file()
    assert (tmp_path / "dl/steps/get_data/named-outputs/train_data/data.csv").is_file()


BRANCHES = """
type: pipeline
jobs:
  bad:
    command: echo failing; exit 3
    outputs:
      o:
  after_bad:
    command: ls ${{inputs.i}}
    inputs:
      i: ${{parent.jobs.bad.outputs.o}}
  independent:
    command: sleep SLEEP; echo independent done
"""


def test_failed_step_cancels_its_dependents_and_other_branches_finish(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    job = _pipeline(tmp_path, BRANCHES.replace("SLEEP", "1"))
    res = run_cli("job", "create", "-f", str(job), "--stream", "-o", "json")
    assert res.returncode == 1, res.stderr
    view = _json(run_cli, "job", "show", "-n", json.loads(res.stdout)["name"])
    assert view["status"] == "Failed"
    assert view["reason"].startswith("steps not completed: ")
    assert set(view["reason"].split(": ", 1)[1].split(", ")) == {"bad", "after_bad"}
    steps = _steps(view)
    assert steps["bad"]["status"] == "Failed" and steps["bad"]["exit_code"] == 3
    assert steps["after_bad"]["status"] == "Canceled"
    assert steps["independent"]["status"] == "Completed"


def test_continue_on_step_failure_false_stops_the_pipeline(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    job = _pipeline(
        tmp_path, BRANCHES.replace("SLEEP", "600").replace("jobs:", "settings:\n  continue_on_step_failure: false\njobs:")
    )
    start = time.monotonic()
    view = _run(run_cli, job)
    assert time.monotonic() - start < 300, "the independent step should have been canceled, not waited for"
    steps = _steps(view)
    assert view["status"] == "Failed"
    assert steps["bad"]["status"] == "Failed"
    assert steps["independent"]["status"] == "Canceled"
    assert "continue_on_step_failure is false" in steps["independent"]["reason"]
    assert steps["after_bad"]["status"] == "Canceled"


@pytest.mark.parametrize("fail_fast", [True, False], ids=["fail-fast", "continue"])
def test_on_finalize_runs_after_a_failed_step(run_cli: Callable[..., Any], tmp_path: Path, fail_fast: bool) -> None:
    """As on Slurm (afterany): the on_finalize step runs whatever became of the others, fail-fast stop included."""
    settings = "settings:\n  on_finalize: cleanup\n" + ("  continue_on_step_failure: false\n" if fail_fast else "")
    text = BRANCHES.replace("SLEEP", "600" if fail_fast else "1").replace("jobs:", settings + "jobs:")
    text += "  cleanup:\n    command: echo cleanup ran\n"
    view = _run(run_cli, _pipeline(tmp_path, text))
    steps = _steps(view)
    assert view["status"] == "Failed"
    assert steps["bad"]["status"] == "Failed" and steps["after_bad"]["status"] == "Canceled"
    assert steps["independent"]["status"] == ("Canceled" if fail_fast else "Completed")
    assert steps["cleanup"]["status"] == "Completed", steps["cleanup"]
    assert "cleanup ran" in _log(view, "cleanup")


def test_reuse_partial_rerun_and_force_rerun(run_cli: Callable[..., Any]) -> None:
    path = PIPELINES / "train-pipeline" / "pipeline.yml"
    first = _run(run_cli, path)
    assert first["status"] == "Completed" and not any(s["reused"] for s in first["steps"])
    # unchanged: nothing runs again, every step points at the first run's
    second = _run(run_cli, path)
    assert second["status"] == "Completed"
    assert all(s["reused"] and s["job_ids"] == [] for s in second["steps"])
    assert {s["name"]: s["reused_from"] for s in second["steps"]} == {s["name"]: s["job_name"] for s in first["steps"]}
    assert second["paths"]["named_outputs"] == first["paths"]["named_outputs"]
    # a new learning rate: get_data is reused, train and evaluate run (evaluate reads the new model)
    third = _run(run_cli, path, "--set", "inputs.learning_rate=0.2")
    assert {s["name"]: s["reused"] for s in third["steps"]} == {"get_data": True, "train": False, "evaluate": False}
    evaluate_log = _log(third, "evaluate")
    assert "evaluate: accuracy" in evaluate_log
    # force_rerun: everything runs
    fourth = _run(run_cli, path, "--set", "settings.force_rerun=true")
    assert fourth["status"] == "Completed" and not any(s["reused"] for s in fourth["steps"])
    table = run_cli("job", "show", "-n", second["name"], "-o", "table")
    assert "reused from" in table.stdout and "3 Completed (3 reused)" in table.stdout


HOSTILE = 'it\'s a "test" $(touch /tmp/hpcjobs-pwned) `id` ${HOME} \\ ; & | * ? ~ é ✓'


def test_hostile_literal_is_passed_byte_for_byte_and_flows_downstream(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    job = _pipeline(
        tmp_path,
        "type: pipeline\ninputs:\n  msg: " + json.dumps(HOSTILE) + "\njobs:\n"
        "  write:\n    command: printf '%s' ${{inputs.m}} > ${{outputs.o}}/msg.txt\n"
        "    inputs:\n      m: ${{parent.inputs.msg}}\n    outputs:\n      o:\n"
        "  copy:\n    command: cp ${{inputs.i}}/msg.txt ${{outputs.o}}/msg.txt\n"
        "    inputs:\n      i: ${{parent.jobs.write.outputs.o}}\n    outputs:\n      o:\n",
    )
    view = _run(run_cli, job)
    assert view["status"] == "Completed", view
    copied = Path(view["paths"]["job_dir"]) / "steps/copy/named-outputs/o/msg.txt"
    assert copied.read_bytes() == HOSTILE.encode()


def test_job_show_table_draws_the_dag(run_cli: Callable[..., Any]) -> None:
    view = _run(run_cli, PIPELINES / "train-pipeline" / "pipeline.yml")
    res = run_cli("job", "show", "-n", view["name"], "-o", "table")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    i = lines.index("3 steps: 3 Completed")
    assert lines[i + 1].startswith("get_data ")
    assert lines[i + 2].startswith("└─▶ train ")
    assert lines[i + 3].startswith("    └─▶ evaluate ") and "also after: get_data" in lines[i + 3]


def test_cancel_cancels_every_step(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    job = _pipeline(
        tmp_path,
        "type: pipeline\njobs:\n  a:\n    command: sleep 60\n    outputs:\n      o:\n"
        "  b:\n    command: sleep 60\n  c:\n    command: ls ${{inputs.i}}\n    inputs:\n      i: ${{parent.jobs.a.outputs.o}}\n",
    )
    name = _json(run_cli, "job", "create", "-f", str(job))["name"]
    time.sleep(1)
    view = _json(run_cli, "job", "cancel", "-n", name)
    assert view["status"] == "Canceled"
    view = _json(run_cli, "job", "show", "-n", name)
    assert {s["status"] for s in view["steps"]} == {"Canceled"}


def test_mistakes_are_reported_before_anything_runs(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    text = (
        "type: pipeline\nsettings:\n  continue_on_step_failur: false\njobs:\n  s:\n    command: echo ${{inputs.x}}\n"
        "    inputs:\n      x: ${{parent.jobs.t.outputs.world_outptu}}\n  t:\n    command: echo\n    outputs:\n      world_output:\n"
    )
    job = _pipeline(tmp_path, text)
    res = run_cli("job", "create", "-f", str(job))
    assert res.returncode == 2
    assert f"{job}:8:" in res.stderr and "did you mean 'world_output'" in res.stderr
    assert _json(run_cli, "job", "list") == []
    # a typo in settings is only a warning (Azure accepts it silently), with a suggestion
    job = _pipeline(tmp_path, text.replace("world_outptu", "world_output"))
    res = run_cli("job", "create", "-f", str(job), "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"{job}:3:" in res.stderr and "did you mean 'continue_on_step_failure'" in res.stderr
