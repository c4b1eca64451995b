"""Sweep steps in pipelines on the real Slurm test cluster (site ``testcluster``).

The tests run hpcjobs in-process (the Python API, as the CLI calls it) with their own
HPCJOBS_HOME, from this machine, which is the cluster's login node; that also lets them
count the commands the submission runs.  A sweep step is the sweep planner's array(s),
``afterok`` on the steps it reads from, plus its finalize job (``afterok`` on those steps,
``afterany`` on the arrays) that places the best trial's outputs where the steps
downstream read them.  What comes back is checked against what the jobs wrote and what
Slurm's accounting says.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_pipeline_sweep_local import CURVE, CURVE_COMPONENT, PIPELINE, TUNE

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("slurm")]

SITE = "testcluster"
TERMINAL = ("Completed", "Failed", "Canceled")


@pytest.fixture(autouse=True)
def _cluster(cluster: None, hpcjobs_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCJOBS_SWEEP_POLL", "1")
    monkeypatch.setenv("HPCJOBS_TRACKING", "none")


def _wait(name: str, timeout: float = 300) -> dict[str, Any]:
    from hpcjobs import api

    deadline = time.monotonic() + timeout
    while True:
        view = api.show_job(name)
        if view["status"] in TERMINAL:
            return view
        assert time.monotonic() < deadline, [(s["name"], s["status"]) for s in view["steps"]]
        time.sleep(2)


def _steps(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in view["steps"]}


def _sacct(job_id: str) -> list[dict[str, str]]:
    """Accounting rows (one per array task) of a job once all are final (sacct lags a few seconds)."""
    fields = ("JobID", "State", "Start", "End")
    rows: list[dict[str, str]] = []
    for _ in range(60):
        res = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-j", job_id, "--format=" + ",".join(fields)], capture_output=True, text=True, check=False
        )
        rows = [dict(zip(fields, line.split("|"), strict=True)) for line in res.stdout.splitlines() if line.strip()]
        if rows and all(r["State"] not in ("PENDING", "RUNNING", "COMPLETING") for r in rows):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"sacct has no final rows for {job_id}: {rows}")


def _curve_pipeline(tmp_path: Path, text: str = PIPELINE) -> Path:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src" / "curve.py").write_text(CURVE)
    (tmp_path / "curve.yml").write_text(CURVE_COMPONENT.replace("command: python ", "command: python3 "))
    p = tmp_path / "pipeline.yml"
    p.write_text(text)
    return p


def test_tune_pipeline_is_one_submission_and_evaluates_the_best_trials_model(tmp_path: Path) -> None:
    from hpcjobs import api, backends
    from hpcjobs.site import get_site

    transport = backends.transport_for(get_site(SITE))
    before = len(transport.stats.argv_log)
    view = api.create_job(TUNE, site=SITE)
    commands = transport.stats.argv_log[before:]
    submissions = [argv for argv in commands if any("sbatch" in a for a in argv)]
    assert len(submissions) == 1, [a[:3] for a in commands]
    program = submissions[0][2]
    assert [ln.split()[1] for ln in program.splitlines() if ln.startswith("submit ")] == [
        "get_data",
        "tune_Trials",
        "tune",
        "evaluate",
    ]
    assert '"--dependency=afterok:${ids[get_data]},afterany:${ids[tune_Trials]}"' in program
    name = view["name"]
    # one status query for the steps, the sweep step's finalize job and its trials together
    from hpcjobs.store import Store

    store = Store()
    before = len(transport.stats.argv_log)
    api.refresh([store.get(name)], store)
    queries = [a[0] for a in transport.stats.argv_log[before:]]
    assert queries.count("squeue") == 1 and queries.count("sacct") <= 1, queries
    done = _wait(name)
    assert done["status"] == "Completed", done["steps"]
    tune = _steps(done)["tune"]
    assert (
        tune["type"] == "sweep" and tune["status"] == "Completed" and tune["trials"] == {"total": 3, "counts": {"Completed": 3}}
    )
    # the trials are array tasks of the step's array, listed as the step's children
    trials = api.list_jobs(parent=f"{name}_tune")
    array_id = next(i for i in api.show_job(f"{name}_tune")["scheduler"]["job_ids"] if i != tune["slurm_id"])
    assert sorted((t["name"], t["scheduler"]["job_ids"][0]) for t in trials) == [
        (f"{name}_tune_{i}", f"{array_id}_{i}") for i in range(3)
    ]
    # Slurm ran the finalize job (the step's own) after every trial had ended
    fin = _sacct(tune["slurm_id"])[0]
    tasks = _sacct(array_id)
    assert fin["State"] == "COMPLETED" and {r["State"] for r in tasks} == {"COMPLETED"} and len(tasks) == 3
    assert fin["Start"] >= max(r["End"] for r in tasks)
    # downstream read the best trial's model (lowest train_loss)
    sweep = api.show_job(f"{name}_tune")
    losses = {t["index"]: t["primary_metric"] for t in sweep["trials"]}
    best = min(losses, key=lambda i: losses[i])
    assert sweep["best_trial"]["index"] == best and tune["best_trial"] == f"{name}_tune_{best}"
    job_dir = Path(done["paths"]["job_dir"])
    trial_model = job_dir / "steps/tune/trials" / str(best) / "named-outputs/model/model.json"
    assert (Path(done["paths"]["named_outputs"]["best_model"]) / "model.json").read_bytes() == trial_model.read_bytes()
    report = json.loads((Path(done["paths"]["named_outputs"]["evaluation_report"]) / "metrics.json").read_text())
    assert report["train_loss"] == pytest.approx(losses[best]) and report["accuracy"] > 0.8


def test_early_terminated_trials_do_not_stop_the_steps_downstream(tmp_path: Path) -> None:
    from hpcjobs import api

    view = api.create_job(_curve_pipeline(tmp_path), site=SITE)
    done = _wait(view["name"])
    sweep = api.show_job(f"{view['name']}_tune")
    by = {t["index"]: t for t in sweep["trials"]}
    assert by[1]["status"] == "Canceled" and by[1]["reason"].startswith("early termination: bandit"), by[1]
    assert by[0]["status"] == by[2]["status"] == "Completed"
    # Slurm's own word: the early-terminated task was cancelled, and the step went on
    assert _sacct(by[1]["job_ids"][0])[0]["State"].startswith("CANCELLED")
    assert done["status"] == "Completed", done["steps"]
    got = (Path(done["paths"]["job_dir"]) / "steps/use/named-outputs/o/got.txt").read_text()
    assert got == "0.9prepared\n"


def test_a_failed_upstream_step_cancels_the_sweep_step_and_no_trial_runs(tmp_path: Path) -> None:
    from hpcjobs import api

    p = _curve_pipeline(tmp_path, PIPELINE.replace("command: echo prepared > ${{outputs.out}}/p.txt", "command: exit 4"))
    view = api.create_job(p, site=SITE)
    done = _wait(view["name"])
    steps = _steps(done)
    assert done["status"] == "Failed"
    assert steps["prep"]["status"] == "Failed" and steps["prep"]["exit_code"] == 4
    assert steps["tune"]["status"] == "Canceled" and steps["use"]["status"] == "Canceled"
    # --kill-on-invalid-dep: Slurm removed the arrays and the finalize job, which never ran
    ids = api.show_job(f"{view['name']}_tune")["scheduler"]["job_ids"]
    for job_id in ids:
        assert {r["State"].split()[0] for r in _sacct(job_id)} == {"CANCELLED"}
    assert not any((Path(done["paths"]["job_dir"]) / "steps/tune/trials").glob("*/.hpcjobs/started"))


def test_cancel_cancels_the_sweep_steps_arrays_and_finalize_job(tmp_path: Path) -> None:
    from hpcjobs import api

    p = _curve_pipeline(tmp_path)
    (tmp_path / "src" / "curve.py").write_text("import time\ntime.sleep(300)\n")
    view = api.create_job(p, site=SITE)
    name = view["name"]
    deadline = time.monotonic() + 120
    while _steps(api.show_job(name))["tune"]["status"] != "Running":
        assert time.monotonic() < deadline
        time.sleep(1)
    api.cancel_job(name)
    done = _wait(name, timeout=120)
    assert done["status"] == "Canceled"
    assert _steps(done)["tune"]["status"] == "Canceled" and _steps(done)["use"]["status"] == "Canceled"
    assert {t["status"] for t in api.list_jobs(parent=f"{name}_tune")} == {"Canceled"}
    for job_id in api.show_job(f"{name}_tune")["scheduler"]["job_ids"]:
        assert {r["State"].split()[0] for r in _sacct(job_id)} == {"CANCELLED"}
