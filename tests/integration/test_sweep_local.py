"""Sweeps on the embedded default (this machine, no Slurm), through the real CLI.

Each test gets its own HPCJOBS_HOME; trials poll for early termination every second
(``HPCJOBS_SWEEP_POLL=1``).  Trials that need a metric log it with real mlflow.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, poll_until_ended

ENV = {"HPCJOBS_SWEEP_POLL": "1"}

CURVE = """import sys, time
import mlflow
q = float(sys.argv[1]); steps = int(sys.argv[2])
for s in range(steps):
    mlflow.log_metric("acc", q * (1 + s) / steps, step=s)
    time.sleep(0.5)
"""


def _show(run_cli: Any, name: str) -> dict[str, Any]:
    res = run_cli("job", "show", "-n", name, "-o", "json", env=ENV)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def _wait(run_cli: Any, name: str, timeout: float = 600) -> dict[str, Any]:
    """Wait in-process (cheap), then return what the real CLI shows."""
    poll_until_ended(name, timeout, poll=0.5)
    return _show(run_cli, name)


def _create(run_cli: Any, path: Path | str, name: str, *extra: str) -> None:
    res = run_cli("job", "create", "-f", str(path), "-n", name, "-o", "none", *extra, env=ENV)
    assert res.returncode == 0, res.stderr


def _intervals(job_dir: Path, n: int) -> list[tuple[float, float]]:
    out = []
    for i in range(n):
        sd = job_dir / "trials" / str(i) / ".hpcjobs"
        out.append((float((sd / "started").read_text()), float((sd / "ended").read_text())))
    return out


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def test_hello_sweep_runs_every_trial_and_names_the_best(hpcjobs_home: Path, run_cli: Any) -> None:
    _create(run_cli, EXAMPLES / "hello-sweep.yml", "hello_sweep")
    view = _wait(run_cli, "hello_sweep")
    assert view["status"] == "Completed" and view["type"] == "sweep"
    trials = view["trials"]
    assert [t["index"] for t in trials] == list(range(6))
    assert sorted((t["parameters"]["lr"], t["parameters"]["layers"]) for t in trials) == sorted(
        (lr, layers) for lr in (0.001, 0.01, 0.1) for layers in (1, 2)
    )
    assert all(t["status"] == "Completed" and isinstance(t["primary_metric"], float) for t in trials)
    best = max(trials, key=lambda t: t["primary_metric"])
    assert view["best_trial"]["name"] == best["name"] == "hello_sweep_3"
    assert view["best_trial"]["parameters"] == {"lr": 0.01, "layers": 2}
    # at most max_concurrent_trials (2) ran at once
    job_dir = Path(view["paths"]["job_dir"])
    assert _max_overlap(_intervals(job_dir, 6)) <= 2
    # trials are jobs too: az-style listing by parent
    res = run_cli("job", "list", "--parent-job-name", "hello_sweep", "-o", "json")
    assert sorted(j["name"] for j in json.loads(res.stdout)) == [f"hello_sweep_{i}" for i in range(6)]
    again = _show(run_cli, "hello_sweep")
    assert again["properties"]["best_child_run_id"] == "hello_sweep_3"
    # the download has each trial's own log (and only its own), its outputs, and trials.json
    got = job_dir.parent / "got"
    run_cli("job", "download", "-n", "hello_sweep", "--all", "--download-path", str(got), "-o", "json")
    for t in trials:
        log = (got / "trials" / str(t["index"]) / "artifacts" / "user_logs" / "std_log.txt").read_text()
        p = t["parameters"]
        assert f"lr={p['lr']} layers={p['layers']} accuracy=" in log, log
        assert log.count("accuracy=") == 1, log
    assert sorted(p.name for p in (got / "trials" / "0" / "artifacts" / "user_logs").iterdir()) == ["std_log.txt"]
    assert json.loads((got / "trials.json").read_text())


def _curve_sweep(tmp_path: Path, extra: str) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "curve.py").write_text(CURVE)
    f = tmp_path / "sweep.yml"
    f.write_text(
        """type: sweep
trial:
  code: src
  command: python curve.py ${{search_space.q}} 30
sampling_algorithm: grid
search_space:
  q: {type: choice, values: [0.9, 0.1, 0.85]}
objective: {goal: maximize, primary_metric: acc}
"""
        + extra
    )
    return f


def test_bandit_cancels_a_clearly_bad_trial(hpcjobs_home: Path, run_cli: Any, tmp_path: Path) -> None:
    f = _curve_sweep(
        tmp_path,
        "early_termination: {type: bandit, slack_factor: 0.2, evaluation_interval: 1, delay_evaluation: 3}\n"
        "limits: {max_concurrent_trials: 3}\n",
    )
    _create(run_cli, f, "bandit")
    view = _wait(run_cli, "bandit")
    by = {t["index"]: t for t in view["trials"]}
    assert by[1]["status"] == "Canceled", by[1]
    assert by[1]["reason"].startswith("early termination: bandit")
    assert by[0]["status"] == by[2]["status"] == "Completed"
    assert view["status"] == "Completed" and view["best_trial"]["index"] == 0


def test_trial_timeout_and_sweep_timeout(hpcjobs_home: Path, run_cli: Any, tmp_path: Path) -> None:
    tt = tmp_path / "tt.yml"
    tt.write_text(
        """type: sweep
trial:
  command: sleep ${{search_space.s}}
sampling_algorithm: grid
search_space:
  s: {type: choice, values: [0.5, 600]}
objective: {goal: maximize, primary_metric: acc}
limits: {max_concurrent_trials: 2, trial_timeout: 3}
"""
    )
    to = tmp_path / "to.yml"
    to.write_text(
        """type: sweep
trial:
  command: sleep ${{search_space.s}}
sampling_algorithm: grid
search_space:
  s: {type: choice, values: [1, 2, 600, 601, 602, 603]}
objective: {goal: maximize, primary_metric: acc}
limits: {max_concurrent_trials: 2, timeout: 15}
"""
    )
    start = time.monotonic()
    _create(run_cli, tt, "tt")
    _create(run_cli, to, "to")
    tview = _wait(run_cli, "tt")
    assert [t["status"] for t in tview["trials"]] == ["Completed", "Canceled"]
    assert "trial_timeout=3s" in tview["trials"][1]["reason"]
    oview = _wait(run_cli, "to")
    assert time.monotonic() - start < 300  # not the 600 s the slow trials wanted
    states = [t["status"] for t in oview["trials"]]
    assert states[:2] == ["Completed", "Completed"] and set(states[2:]) == {"Canceled"}, states
    assert "sweep timeout" in oview["sweep"]["stopped"]


def test_bayesian_sweep_asks_optuna_on_the_way(hpcjobs_home: Path, run_cli: Any, tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    f = tmp_path / "bayes.yml"
    f.write_text(
        """type: sweep
trial:
  command: python -c "import mlflow,sys; mlflow.log_metric('loss', (float(sys.argv[1]) - 0.3) ** 2)" ${{search_space.x}}
sampling_algorithm: {type: bayesian}
search_space:
  x: {type: uniform, min_value: 0, max_value: 1}
  k: {type: choice, values: [a, "b c"]}
objective: {goal: minimize, primary_metric: loss}
limits: {max_total_trials: 4, max_concurrent_trials: 2}
"""
    )
    _create(run_cli, f, "bayes")
    view = _wait(run_cli, "bayes")
    assert view["status"] == "Completed"
    for t in view["trials"]:
        assert 0 <= t["parameters"]["x"] <= 1 and t["parameters"]["k"] in ("a", "b c")
        assert t["primary_metric"] == pytest.approx((t["parameters"]["x"] - 0.3) ** 2)
    assert view["best_trial"]["primary_metric"]["loss"] == min(t["primary_metric"] for t in view["trials"])


def test_cancel_stops_the_whole_sweep(hpcjobs_home: Path, run_cli: Any, tmp_path: Path) -> None:
    f = tmp_path / "long.yml"
    f.write_text(
        """type: sweep
trial:
  command: sleep 60
sampling_algorithm: grid
search_space:
  s: {type: choice, values: [1, 2, 3, 4, 5]}
objective: {goal: maximize, primary_metric: acc}
limits: {max_concurrent_trials: 2}
"""
    )
    _create(run_cli, f, "long")
    time.sleep(2)
    res = run_cli("job", "cancel", "-n", "long", "-o", "json")
    assert res.returncode == 0, res.stderr
    view = _wait(run_cli, "long", timeout=60)
    assert view["status"] == "Canceled"
    assert {t["status"] for t in view["trials"]} == {"Canceled"}


# a component as the trial: hyperparameters feed its inputs of the same name, a default the rest
ECHO_COMPONENT = """name: echo_values
inputs:
  tag: {type: string}
  lr: {type: number}
  greeting: {type: string, default: GREETING}
  data: {type: uri_folder}
outputs:
  out: {type: uri_folder}
command: >-
  printf '%s\\0' ${{inputs.tag}} ${{inputs.lr}} ${{inputs.greeting}} "$AZURE_ML_INPUT_tag" "$(cat ${{inputs.data}}/d.txt)"
  > ${{outputs.out}}/values
"""
GREETING = "hello 'world' \"$HOME\" `id` $(touch /tmp/hpcjobs-pwned-c); *"
TAGS = ["a b", "it's $(id) `id` ${HOME}", "semi;colon|pipe&*"]


def test_component_trial_gets_hyperparameters_and_defaults_byte_for_byte(
    hpcjobs_home: Path, run_cli: Any, tmp_path: Path
) -> None:
    (tmp_path / "echo.yml").write_text(ECHO_COMPONENT.replace("GREETING", json.dumps(GREETING)))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "d.txt").write_text("from the sweep's input")
    f = tmp_path / "sweep.yml"
    f.write_text(
        f"""type: sweep
trial: ./echo.yml
inputs:
  data: ./data
sampling_algorithm: grid
search_space:
  tag: {{type: choice, values: {json.dumps(TAGS)}}}
  lr: {{type: choice, values: [0.001, 2]}}
objective: {{goal: maximize, primary_metric: acc}}
limits: {{max_concurrent_trials: 3}}
"""
    )
    _create(run_cli, f, "comp_sweep")
    view = _wait(run_cli, "comp_sweep")
    assert view["status"] == "Completed", view["trials"]
    assert len(view["trials"]) == 6 and {t["status"] for t in view["trials"]} == {"Completed"}
    job_dir = Path(view["paths"]["job_dir"])
    seen = set()
    for t in view["trials"]:
        p = t["parameters"]
        got = (job_dir / "trials" / str(t["index"]) / "named-outputs" / "out" / "values").read_bytes().split(b"\0")
        expected = [p["tag"], str(p["lr"]), GREETING, p["tag"], "from the sweep's input", ""]
        assert got == [e.encode() for e in expected], (t, got)
        seen.add((p["tag"], p["lr"]))
    assert seen == {(tag, lr) for tag in TAGS for lr in (0.001, 2)}
    assert not Path("/tmp/hpcjobs-pwned-c").exists()
