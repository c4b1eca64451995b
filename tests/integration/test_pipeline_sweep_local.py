"""Sweep steps in pipelines on the embedded local site, through the real CLI (no cluster needed).

A sweep step runs its trials as the sweep planner's array (the local runner honours its
``%N``), then a finalize job that picks the best completed trial and puts that trial's
outputs where the steps downstream read them.  Trials log their primary metric with real
MLflow (into their working directory: tracking is off, HPCJOBS_TRACKING=none); early
termination polls every second (HPCJOBS_SWEEP_POLL=1).
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
TUNE = REPO / "examples" / "pipelines" / "train-pipeline" / "tune-pipeline.yml"
TERMINAL = ("Completed", "Failed", "Canceled")
ENV = {"HPCJOBS_SWEEP_POLL": "1", "HPCJOBS_TRACKING": "none"}

CURVE = """import pathlib, shutil, sys, time
import mlflow
q = float(sys.argv[1]); steps = int(sys.argv[2]); model = pathlib.Path(sys.argv[3])
(model / "q.txt").write_text(sys.argv[1])
shutil.copy(pathlib.Path(sys.argv[4]) / "p.txt", model / "prep.txt")
for s in range(steps):
    mlflow.log_metric("acc", q * (1 + s) / steps, step=s)
    time.sleep(0.5)
"""

CURVE_COMPONENT = """name: curve
code: ./src
inputs:
  q: {type: number}
  steps: {type: integer, default: 24}
  prep: {type: uri_folder}
outputs:
  model: {type: uri_folder}
command: python curve.py ${{inputs.q}} ${{inputs.steps}} ${{outputs.model}} ${{inputs.prep}}
"""

PIPELINE = """type: pipeline
jobs:
  prep:
    command: echo prepared > ${{outputs.out}}/p.txt
    outputs:
      out:
  tune:
    type: sweep
    trial: ./curve.yml
    inputs:
      prep: ${{parent.jobs.prep.outputs.out}}
    sampling_algorithm: grid
    search_space:
      q: {type: choice, values: [0.9, 0.1, 0.85]}
    objective: {goal: maximize, primary_metric: acc}
    early_termination: {type: bandit, slack_factor: 0.2, evaluation_interval: 1, delay_evaluation: 3}
    limits: {max_concurrent_trials: 3}
  use:
    command: cat ${{inputs.m}}/q.txt ${{inputs.m}}/prep.txt > ${{outputs.o}}/got.txt
    inputs:
      m: ${{parent.jobs.tune.outputs.model}}
    outputs:
      o:
"""


def _json(run_cli: Callable[..., Any], *args: str) -> Any:
    res = run_cli(*args, "-o", "json", env=ENV)
    assert res.returncode == 0, f"hpcjobs {' '.join(args)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def _wait(run_cli: Callable[..., Any], name: str, timeout: float = 300) -> dict[str, Any]:
    """Wait in-process (cheap), then return what the real CLI shows."""
    poll_until_ended(name, timeout, poll=0.5)
    view = _json(run_cli, "job", "show", "-n", name)
    assert view["status"] in TERMINAL, view
    return dict(view)


def _create(run_cli: Callable[..., Any], file: Path, *args: str) -> str:
    return str(_json(run_cli, "job", "create", "-f", str(file), *args)["name"])


def _steps(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in view["steps"]}


def _curve_pipeline(tmp_path: Path, text: str = PIPELINE) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "curve.py").write_text(CURVE)
    (tmp_path / "curve.yml").write_text(CURVE_COMPONENT)
    p = tmp_path / "pipeline.yml"
    p.write_text(text)
    return p


def test_tune_pipeline_example_evaluates_the_best_trials_model(hpcjobs_home: Path, run_cli: Callable[..., Any]) -> None:
    name = _create(run_cli, TUNE)
    view = _wait(run_cli, name, timeout=600)
    assert view["status"] == "Completed", view["steps"]
    steps = _steps(view)
    tune = steps["tune"]
    assert tune["type"] == "sweep" and tune["status"] == "Completed" and tune["depends_on"] == ["get_data"]
    assert tune["trials"] == {"total": 3, "counts": {"Completed": 3}}
    assert steps["evaluate"]["depends_on"] == ["get_data", "tune"]
    # the step's trials are jobs of their own, children of the step
    kids = _json(run_cli, "job", "list", "--parent-job-name", f"{name}_tune")
    assert sorted(k["name"] for k in kids) == [f"{name}_tune_{i}" for i in range(3)]
    assert all(k["status"] == "Completed" and k["parent_job_name"] == f"{name}_tune" for k in kids)
    sweep = _json(run_cli, "job", "show", "-n", f"{name}_tune")
    assert sweep["parent_job_name"] == name and sweep["status"] == "Completed"
    losses = {t["index"]: t["primary_metric"] for t in sweep["trials"]}
    assert [t["parameters"]["learning_rate"] for t in sweep["trials"]] == [0.01, 0.1, 1.0]
    best = min(losses, key=lambda i: losses[i])
    assert sweep["best_trial"]["index"] == best and tune["best_trial"] == f"{name}_tune_{best}"
    # downstream read the BEST trial's model: the pipeline output, and what evaluate measured
    job_dir = Path(view["paths"]["job_dir"])
    trial_model = job_dir / "steps" / "tune" / "trials" / str(best) / "named-outputs" / "model" / "model.json"
    best_model = Path(view["paths"]["named_outputs"]["best_model"]) / "model.json"
    assert best_model.read_bytes() == trial_model.read_bytes()
    report = json.loads((Path(view["paths"]["named_outputs"]["evaluation_report"]) / "metrics.json").read_text())
    assert report["train_loss"] == pytest.approx(losses[best])
    assert report["accuracy"] > 0.8
    # epochs: the component's default reached every trial (train.py prints it)
    for i in range(3):
        assert "200 epochs" in (job_dir / "steps" / "tune" / "user_logs" / f"std_log_{i}.txt").read_text()
    table = run_cli("job", "show", "-n", name, "-o", "table", env=ENV).stdout
    assert "tune" in table and "sweep: 3 trials (3 Completed)" in table


def test_early_terminated_trials_do_not_stop_the_steps_downstream(
    hpcjobs_home: Path, run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    name = _create(run_cli, _curve_pipeline(tmp_path))
    view = _wait(run_cli, name, timeout=600)
    steps = _steps(view)
    sweep = _json(run_cli, "job", "show", "-n", f"{name}_tune")
    by = {t["index"]: t for t in sweep["trials"]}
    assert by[1]["status"] == "Canceled" and by[1]["reason"].startswith("early termination: bandit"), by[1]
    assert by[0]["status"] == by[2]["status"] == "Completed"
    assert steps["tune"]["status"] == "Completed" and steps["tune"]["trials"]["counts"] == {"Completed": 2, "Canceled": 1}
    assert view["status"] == "Completed", view["steps"]
    # the best trial (q=0.9, trial 0) is what the downstream step read, with the upstream data it was given
    got = (Path(view["paths"]["job_dir"]) / "steps" / "use" / "named-outputs" / "o" / "got.txt").read_text()
    assert got == "0.9prepared\n"


def test_sweep_step_without_a_completed_trial_fails_and_nothing_downstream_runs(
    hpcjobs_home: Path, run_cli: Callable[..., Any], tmp_path: Path
) -> None:
    text = "".join(line for line in PIPELINE.splitlines(keepends=True) if "early_termination" not in line)
    p = _curve_pipeline(tmp_path, text)
    (tmp_path / "src" / "curve.py").write_text("import sys\nsys.exit(3)\n")
    view = _wait(run_cli, _create(run_cli, p))
    steps = _steps(view)
    assert view["status"] == "Failed"
    assert steps["prep"]["status"] == "Completed"
    assert steps["tune"]["status"] == "Failed" and steps["tune"]["reason"] == "no trial completed"
    assert steps["tune"]["trials"]["counts"] == {"Failed": 3}
    assert steps["use"]["status"] == "Canceled"
    assert not (Path(view["paths"]["job_dir"]) / "steps" / "use" / "named-outputs").exists()


def test_a_failed_upstream_step_cancels_the_sweep_step(hpcjobs_home: Path, run_cli: Callable[..., Any], tmp_path: Path) -> None:
    p = _curve_pipeline(tmp_path, PIPELINE.replace("command: echo prepared > ${{outputs.out}}/p.txt", "command: exit 4"))
    view = _wait(run_cli, _create(run_cli, p))
    steps = _steps(view)
    assert view["status"] == "Failed"
    assert steps["prep"]["status"] == "Failed"
    assert steps["tune"]["status"] == "Canceled" and steps["use"]["status"] == "Canceled"
    trials = _json(run_cli, "job", "list", "--parent-job-name", f"{view['name']}_tune")
    assert {t["status"] for t in trials} == {"Canceled"}
    # no trial ran
    assert not any((Path(view["paths"]["job_dir"]) / "steps" / "tune" / "trials").glob("*/.hpcjobs/started"))


def test_cancel_reaches_the_sweep_steps_trials(hpcjobs_home: Path, run_cli: Callable[..., Any], tmp_path: Path) -> None:
    p = _curve_pipeline(tmp_path)
    (tmp_path / "src" / "curve.py").write_text("import time\ntime.sleep(120)\n")
    name = _create(run_cli, p)
    deadline = time.monotonic() + 200
    while _steps(_json(run_cli, "job", "show", "-n", name))["tune"]["status"] != "Running":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    res = run_cli("job", "cancel", "-n", name, "-o", "json", env=ENV)
    assert res.returncode == 0, res.stderr
    view = _wait(run_cli, name, timeout=60)
    assert view["status"] == "Canceled"
    assert {s["status"] for s in view["steps"]} == {"Completed", "Canceled"}
    assert _steps(view)["tune"]["status"] == "Canceled" and _steps(view)["use"]["status"] == "Canceled"
    trials = _json(run_cli, "job", "list", "--parent-job-name", f"{name}_tune")
    assert len(trials) == 3 and {t["status"] for t in trials} == {"Canceled"}
    # the trials that were running are gone (their shells wrote their pids)
    pids = [int(f.read_text()) for f in (Path(view["paths"]["job_dir"]) / "steps" / "tune" / "trials").glob("*/.hpcjobs/pid")]
    assert pids and not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
