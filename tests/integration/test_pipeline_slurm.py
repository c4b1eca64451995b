"""Pipelines on the real Slurm test cluster: dependency chains, parallel branches, failure, data, reuse.

Submitted as alice through the real CLI (site testcluster), except the round-trip count,
which needs the transport's counters and so runs the API in this process.  Steps are tiny
(echo, cat, a short sleep where overlap in time must be observable).  MLflow tracking is
off (HPCJOBS_TRACKING=none): it has its own tests, and importing mlflow dominates the time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("slurm")]

SITE = ("--site", "testcluster")
NO_TRACKING = {"HPCJOBS_TRACKING": "none"}
TERMINAL = ("Completed", "Failed", "Canceled")


@pytest.fixture(autouse=True)
def _slurm_answers() -> None:
    """Skip (with the reason) when Slurm does not answer; give a cluster still coming up a minute."""
    if shutil.which("sinfo") is None:
        pytest.skip("no Slurm client here (sinfo not found): the pipeline cluster tests need tests/cluster/up.sh")
    deadline = time.monotonic() + 60
    while True:
        res = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, check=False, timeout=30)
        if res.returncode == 0 and "up" in res.stdout:
            return
        if time.monotonic() > deadline:
            pytest.skip(f"the Slurm test cluster does not answer (sinfo: {res.stderr.strip() or res.stdout.strip()})")
        time.sleep(2)


def _create(alice: Any, file: str, *args: str) -> str:
    res = alice.run("job", "create", "-f", file, *SITE, *args, "-o", "json", env=NO_TRACKING)
    assert res.returncode == 0, res.stderr
    return str(json.loads(res.stdout)["name"])


def _show(alice: Any, name: str) -> dict[str, Any]:
    res = alice.run("job", "show", "-n", name, "-o", "json", env=NO_TRACKING)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def _wait(alice: Any, name: str, timeout: float = 400) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = _show(alice, name)
        if view["status"] in TERMINAL:
            return view
        assert time.monotonic() < deadline, f"{name} still {view['status']} after {timeout} s: {view['steps']}"
        time.sleep(1)


def _steps(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in view["steps"]}


def _out(view: dict[str, Any], step: str, output: str, file: str) -> str:
    return (Path(view["paths"]["job_dir"]) / "steps" / step / "named-outputs" / output / file).read_text().strip()


def _sacct(job_id: str) -> dict[str, str]:
    """State, Start and End of a job from Slurm's accounting (which lags a few seconds behind)."""
    fields = ("State", "Start", "End")
    for _ in range(60):
        res = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-j", job_id, "--format=" + ",".join(fields)], capture_output=True, text=True, check=False
        )
        row = res.stdout.strip().split("|")
        if len(row) == len(fields) and row[0] and row[0] not in ("PENDING", "RUNNING"):
            return dict(zip(fields, row, strict=True))
        time.sleep(0.5)
    raise AssertionError(f"sacct has no final row for {job_id}")


TIMED = """
type: pipeline
jobs:
  left:
    command: date +%s.%N > ${{outputs.t}}/start; echo left > ${{outputs.t}}/data; sleep 3; date +%s.%N > ${{outputs.t}}/end
    outputs:
      t:
  right:
    command: date +%s.%N > ${{outputs.t}}/start; sleep 3; date +%s.%N > ${{outputs.t}}/end
    outputs:
      t:
  after_left:
    command: date +%s.%N > ${{outputs.t}}/start; cat ${{inputs.i}}/data > ${{outputs.t}}/data; date +%s.%N > ${{outputs.t}}/end
    inputs:
      i: ${{parent.jobs.left.outputs.t}}
    outputs:
      t:
"""


def test_independent_steps_overlap_in_time(alice: Any) -> None:
    job = alice.write("timed.yml", TIMED)
    for attempt in range(2):
        view = _wait(alice, _create(alice, str(job), "--set", "settings.force_rerun=true"))
        assert view["status"] == "Completed", view
        starts = [float(_out(view, s, "t", "start")) for s in ("left", "right")]
        ends = [float(_out(view, s, "t", "end")) for s in ("left", "right")]
        if max(starts) < min(ends):
            break
        # other tests may fill the cluster's four slots; one more try before calling it a failure
        assert attempt == 0, f"left and right did not run at the same time: starts {starts}, ends {ends}"
    steps = _steps(view)
    assert steps["left"]["slurm_id"] != steps["right"]["slurm_id"]


def test_dependent_step_starts_after_its_upstream_completed_and_reads_its_data(alice: Any) -> None:
    job = alice.write("timed.yml", TIMED)
    view = _wait(alice, _create(alice, str(job), "--set", "settings.force_rerun=true"))
    assert view["status"] == "Completed", view
    steps = _steps(view)
    assert steps["after_left"]["depends_on"] == ["left"]
    assert float(_out(view, "after_left", "t", "start")) >= float(_out(view, "left", "t", "end"))
    assert _out(view, "after_left", "t", "data") == "left"
    # Slurm agrees: the dependent job started when (or after) its upstream ended
    up, down = _sacct(steps["left"]["slurm_id"]), _sacct(steps["after_left"]["slurm_id"])
    assert up["State"] == down["State"] == "COMPLETED"
    assert down["Start"] >= up["End"]


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


def test_failing_step_cancels_its_dependents_and_an_independent_branch_completes(alice: Any) -> None:
    job = alice.write("branches.yml", BRANCHES.replace("SLEEP", "2"))
    view = _wait(alice, _create(alice, str(job)))
    assert view["status"] == "Failed"
    steps = _steps(view)
    assert steps["bad"]["status"] == "Failed" and steps["bad"]["exit_code"] == 3
    assert steps["after_bad"]["status"] == "Canceled"
    assert steps["independent"]["status"] == "Completed"
    # --kill-on-invalid-dep: Slurm itself removed the dependent job, which never ran
    row = _sacct(steps["after_bad"]["slurm_id"])
    assert row["State"].startswith("CANCELLED")
    assert row["Start"] in ("None", "Unknown", "") or row["Start"] >= _sacct(steps["bad"]["slurm_id"])["End"]


def test_continue_on_step_failure_false_cancels_the_other_steps(alice: Any) -> None:
    text = BRANCHES.replace("SLEEP", "900").replace("jobs:", "settings:\n  continue_on_step_failure: false\njobs:")
    job = alice.write("fail-fast.yml", text)
    start = time.monotonic()
    view = _wait(alice, _create(alice, str(job)), timeout=500)
    assert time.monotonic() - start < 400  # the independent step alone sleeps 900 s
    steps = _steps(view)
    assert view["status"] == "Failed"
    assert steps["bad"]["status"] == "Failed"
    assert steps["independent"]["status"] == "Canceled"
    assert steps["after_bad"]["status"] == "Canceled"
    log = Path(view["paths"]["job_dir"]) / "steps/bad/user_logs/std_log.txt"
    assert "continue_on_step_failure is false" in log.read_text()


def test_train_pipeline_passes_data_between_steps(alice: Any, tmp_path: Path) -> None:
    res = alice.run("job", "create", "-f", "examples/pipelines/train-pipeline/pipeline.yml", *SITE, "--stream", env=NO_TRACKING)
    assert res.returncode == 0, res.stderr
    assert "evaluate: accuracy" in res.stdout
    name = next(line.split()[-1] for line in res.stderr.splitlines() if line.startswith("RunId:"))
    view = _show(alice, name)
    assert view["status"] == "Completed"
    assert all(s["slurm_id"] for s in view["steps"])
    report = Path(view["paths"]["named_outputs"]["evaluation_report"]) / "metrics.json"
    assert json.loads(report.read_text())["accuracy"] > 0.8
    dl = alice.workdir / "dl"
    res = alice.run("job", "download", "-n", name, "--all", "-p", str(dl), env=NO_TRACKING)
    assert res.returncode == 0, res.stderr
    assert (dl / "steps/train/named-outputs/model/model.json").is_file()
    assert (dl / "steps/evaluate/artifacts/outputs/metrics.json").is_file()


def test_reuse_and_force_rerun(alice: Any) -> None:
    first = _wait(alice, _create(alice, "examples/pipelines/hello-pipeline-io.yml", "--set", "settings.force_rerun=true"))
    assert first["status"] == "Completed"
    second = _wait(alice, _create(alice, "examples/pipelines/hello-pipeline-io.yml"), timeout=120)
    assert second["status"] == "Completed"
    assert all(s["reused"] and s["job_ids"] == [] for s in second["steps"])
    assert {s["reused_from"] for s in second["steps"]} == {s["job_name"] for s in first["steps"]}
    table = alice.run("job", "show", "-n", second["name"], "-o", "table", env=NO_TRACKING).stdout
    assert "reused from " + first["steps"][0]["job_name"] in table
    third = _wait(alice, _create(alice, "examples/pipelines/hello-pipeline-io.yml", "--set", "settings.force_rerun=true"))
    assert third["status"] == "Completed"
    assert not any(s["reused"] for s in third["steps"]) and all(s["slurm_id"] for s in third["steps"])
    assert (Path(third["paths"]["job_dir"]) / "steps/world_job/user_logs/std_log.txt").read_text().strip().endswith("world")


def test_show_draws_the_dag_and_list_finds_the_steps(alice: Any) -> None:
    name = _create(alice, "examples/pipelines/hello-pipeline-abc.yml", "--set", "settings.force_rerun=true")
    view = _wait(alice, name)
    assert view["status"] == "Completed", view
    table = alice.run("job", "show", "-n", name, "-o", "table", env=NO_TRACKING).stdout
    c = _steps(view)["c"]
    assert f"└─▶ c  [ok] Completed  slurm {c['slurm_id']}" in table
    res = alice.run("job", "list", "--parent-job-name", name, "-o", "json", env=NO_TRACKING)
    assert sorted(k["name"] for k in json.loads(res.stdout)) == sorted(f"{name}_{s}" for s in "abc")
    assert "I'm component C: hello world" in (Path(view["paths"]["job_dir"]) / "steps/c/user_logs/std_log.txt").read_text()


def test_cancel_cancels_every_step(alice: Any) -> None:
    job = alice.write(
        "long.yml",
        "type: pipeline\njobs:\n  a:\n    command: sleep 300\n    outputs:\n      o:\n"
        "  b:\n    command: sleep 300\n  c:\n    command: ls ${{inputs.i}}\n    inputs:\n      i: ${{parent.jobs.a.outputs.o}}\n",
    )
    name = _create(alice, str(job))
    res = alice.run("job", "cancel", "-n", name, "-o", "json", env=NO_TRACKING)
    assert res.returncode == 0, res.stderr
    view = _wait(alice, name, timeout=60)
    assert view["status"] == "Canceled"
    assert {s["status"] for s in view["steps"]} == {"Canceled"}
    for s in view["steps"]:
        assert _sacct(s["slurm_id"])["State"].startswith("CANCELLED")


def _wide_pipeline(n: int) -> str:
    """One source step, n-2 steps reading it, one sink reading them all."""
    lines = ["type: pipeline", "jobs:", "  source:", "    command: echo x > ${{outputs.o}}/x", "    outputs:", "      o:"]
    for i in range(n - 2):
        lines += [f"  mid_{i}:", f"    command: cat ${{{{inputs.i}}}}/x > ${{{{outputs.o}}}}/{i}", "    inputs:"]
        lines += ["      i: ${{parent.jobs.source.outputs.o}}", "    outputs:", "      o:"]
    lines += ["  sink:", "    command: cat " + " ".join(f"${{{{inputs.i{i}}}}}/{i}" for i in range(n - 2)) + " | wc -l"]
    lines += ["    inputs:"] + [f"      i{i}: ${{{{parent.jobs.mid_{i}.outputs.o}}}}" for i in range(n - 2)]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_fifty_steps_are_submitted_in_one_round_trip_and_complete(
    hpcjobs_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpcjobs import api, backends
    from hpcjobs.site import get_site

    monkeypatch.setenv("HPCJOBS_TRACKING", "none")
    job = tmp_path / "fifty.yml"
    job.write_text(_wide_pipeline(50))
    transport = backends.transport_for(get_site("testcluster"))
    before = transport.stats.commands
    start = time.perf_counter()
    view = api.create_job(job, ["settings.force_rerun=true"], site="testcluster")
    submit_seconds = time.perf_counter() - start
    commands = transport.stats.argv_log[before:]
    sbatch_commands = [argv for argv in commands if any("sbatch" in a for a in argv)]
    assert len(sbatch_commands) == 1, [a[:3] for a in commands]
    assert sbatch_commands[0][2].count("\nsubmit ") == 50
    assert len(commands) == 1, [a[:3] for a in commands]  # no code folder: nothing but the submission
    assert len(set(view["scheduler"]["job_ids"])) == 50
    print(f"50-step pipeline submitted in {submit_seconds:.2f} s, {len(commands)} command(s)")
    deadline = time.monotonic() + 300
    while True:
        shown = api.show_job(view["name"])
        if shown["status"] in TERMINAL:
            break
        assert time.monotonic() < deadline, shown["steps"]
        time.sleep(2)
    assert shown["status"] == "Completed", [s for s in shown["steps"] if s["status"] != "Completed"]
    sink = Path(shown["paths"]["job_dir"]) / "steps/sink/user_logs/std_log.txt"
    assert sink.read_text().split()[-1] == "48"


FAIL_FAST_SWEEP = """
type: pipeline
settings:
  continue_on_step_failure: false
  on_finalize: cleanup
jobs:
  bad:
    # fails once the sweep step's finalize job is queued, so the exit hook must meet it
    command: >-
      until squeue --me -h -o %j | grep -q -- '_ff_tune-finalize$'; do sleep 1; done;
      echo failing; exit 3
  ff_tune:
    type: sweep
    trial:
      command: sleep 900 && echo ${{inputs.s}}
      inputs:
        s: {type: integer}
    sampling_algorithm: grid
    search_space:
      s: {type: choice, values: [1, 2, 3]}
    objective: {goal: maximize, primary_metric: acc}
    limits: {max_concurrent_trials: 2}
  cleanup:
    command: echo cleanup ran
"""


def test_fail_fast_reaches_a_sweep_steps_finalize_job_and_spares_on_finalize(alice: Any) -> None:
    """The failing step's own exit hook (no client polling) cancels the sweep step's arrays and
    its finalize job, which waits on them with afterany, but not the on_finalize step."""
    name = _create(alice, str(alice.write("ff-sweep.yml", FAIL_FAST_SWEEP)))
    # read Slurm directly: a `job show` refresh would run the client-side backstop
    deadline = time.monotonic() + 400  # the trials alone sleep 900 s
    while True:
        res = subprocess.run(["squeue", "-h", "-u", "alice", "-o", "%j"], capture_output=True, text=True, check=True)
        if not any(j.startswith(f"{name}_") for j in res.stdout.split()):
            break
        assert time.monotonic() < deadline, res.stdout
        time.sleep(1)
    view = _wait(alice, name)
    steps = _steps(view)
    assert view["status"] == "Failed"
    assert steps["bad"]["status"] == "Failed" and steps["bad"]["exit_code"] == 3
    assert steps["ff_tune"]["status"] == "Canceled", steps["ff_tune"]
    assert steps["cleanup"]["status"] == "Completed"
    assert _sacct(steps["cleanup"]["slurm_id"])["State"] == "COMPLETED"
    # a sweep step's first Slurm job is its finalize job: cancelled, never started
    fin = _sacct(steps["ff_tune"]["slurm_id"])
    assert fin["State"].startswith("CANCELLED"), fin
    assert not (Path(view["paths"]["job_dir"]) / "steps/ff_tune/user_logs/std_log.txt").exists()
    cleanup_log = Path(view["paths"]["job_dir"]) / "steps/cleanup/user_logs/std_log.txt"
    assert "cleanup ran" in cleanup_log.read_text()
