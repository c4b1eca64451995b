"""The sweep planner: trial table, quoting, array specs, chunking, limits; and the controller's pure parts."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hpcjobs import api
from hpcjobs.errors import UserError, ValidationError
from hpcjobs.plan_sweep import chunk_plan, trials_sh
from hpcjobs.shellquote import shq
from hpcjobs.sweep import controller
from hpcjobs.sweep.limits import parse_probe
from hpcjobs.sweep_status import best_trial

SITE_TEMPLATE = """name: {name}
scheduler: slurm
job_root: /srv/hpcjobs/$USER
default_compute: cpu
computes:
  cpu:
    partition: debug
    time_limit: 00:30:00
{extra}
"""

HOSTILE = [
    "a b",
    "it's",
    '"double"',
    "$(touch /tmp/hpcjobs-pwned)",
    "`id`",
    "semi;colon|pipe&amp",
    "new\nline",
    "tab\there",
    "back\\slash",
    "${HOME}",
    "*",
    "-n",
    "",
    "ünïcødé ✓",
    "esac;;",
    "0) export X=1;;",
]


def _site(home: Path, name: str, extra: str = "") -> str:
    d = home / "config" / "sites"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.yml").write_text(SITE_TEMPLATE.format(name=name, extra=extra))
    return name


def _sweep(tmp_path: Path, body: str, name: str = "sweep.yml") -> Path:
    p = tmp_path / name
    p.write_text("type: sweep\n" + body)
    return p


GRID = """trial:
  command: echo ${{search_space.a}} ${{search_space.b}}
sampling_algorithm: grid
search_space:
  a: {type: choice, values: [1, 2, 3]}
  b: {type: choice, values: [x, y]}
objective: {goal: maximize, primary_metric: acc}
limits: {max_concurrent_trials: 2}
"""


def _files(plan: Any) -> dict[str, bytes]:
    return {k.rsplit(plan.job_dir + "/", 1)[-1]: v for k, v in plan.files.items()}


# --------------------------------------------------------------------------- chunking
CHUNK_CASES = [
    (n, a, c)
    for n in (1, 2, 7, 10, 1001, 1002, 2500, 10000)
    for a in (1, 3, 1001)
    for c in (1, 2, 5, 64)
    if n // a <= 3000  # thousands of one-task chunks add nothing
]


@pytest.mark.parametrize(("n", "max_array", "conc"), CHUNK_CASES)
def test_chunks_cover_every_trial_once_within_limits(n: int, max_array: int, conc: int) -> None:
    chunks = chunk_plan(n, max_array, conc)
    seen = [i for c in chunks for i in range(c.offset, c.offset + c.size)]
    assert seen == list(range(n))
    assert all(1 <= c.size <= max_array for c in chunks)
    assert chunks[0].key == "main" and len({c.key for c in chunks}) == len(chunks)
    # chunks without a predecessor run at once: their throttles must fit the budget, and
    # each later chunk replaces exactly its predecessor (same lane, no larger throttle)
    heads = [c for c in chunks if c.after is None]
    assert sum(c.throttle for c in heads) <= conc
    by_key = {c.key: c for c in chunks}
    for c in chunks:
        if c.after is not None:
            assert c.throttle <= by_key[c.after].throttle or by_key[c.after].throttle == by_key[c.after].size
            assert sum(1 for d in chunks if d.after == c.after) == 1
        assert c.array == f"0-{c.size - 1}%{c.throttle}"


def test_chunk_lanes_split_the_budget() -> None:
    chunks = chunk_plan(10, 3, 2)
    assert [(c.key, c.offset, c.size, c.throttle, c.after) for c in chunks] == [
        ("main", 0, 3, 1, None),
        ("chunk1", 3, 3, 1, None),
        ("chunk2", 6, 2, 1, "main"),
        ("chunk3", 8, 2, 1, "chunk1"),
    ]
    big = chunk_plan(2500, 1001, 100)
    assert [c.size for c in big] == [834, 833, 833] and [c.throttle for c in big] == [34, 33, 33]


def test_single_array_when_it_fits() -> None:
    (only,) = chunk_plan(6, 1001, 2)
    assert only.array == "0-5%2" and only.offset == 0


# --------------------------------------------------------------------------- the plan
def test_grid_plan_writes_the_trial_table_and_one_throttled_array(tmp_path: Path, hpcjobs_home: Path) -> None:
    site = _site(hpcjobs_home, "tc")
    plan = api.plan(_sweep(tmp_path, GRID), name="g1", site=site)
    files = _files(plan)
    table = json.loads(files["trials.json"])
    assert [t["params"] for t in table["trials"]] == [{"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")]
    assert [t["index"] for t in table["trials"]] == list(range(6))
    (script,) = plan.scripts
    assert "--array=0-5%2" in script.sbatch_options and "#SBATCH --array=0-5%2" in script.text
    assert script.tasks == 6
    assert f". {plan.job_dir}/trials.sh" in script.text
    assert '"${AZUREML_SWEEP_a}"' in script.text
    assert len(plan.children) == 6
    c = plan.children[4]
    assert c["name"] == "g1_4" and c["script_key"] == "main" and c["array_task"] == 4
    assert c["extra"]["params"] == {"a": 3, "b": "x"} and c["extra"]["task_dir"].endswith("/trials/4")
    assert plan.meta["sweep"]["max_concurrent_trials"] == 2
    # the shipped controller modules are standard-library only and importable alone
    assert "lib/hpcjobs/sweep/controller.py" in "".join(files)


def test_trials_sh_values_round_trip_through_bash(tmp_path: Path) -> None:
    table = [{"v": v, "n": i} for i, v in enumerate(HOSTILE)]
    script = tmp_path / "trials.sh"
    script.write_text(trials_sh("hostile", table))
    (tmp_path / ".hpcjobs").mkdir()
    (tmp_path / ".hpcjobs" / "sweep_task.sh").write_text("echo runtime-sourced >&2\n")
    for i, value in enumerate(HOSTILE):
        res = subprocess.run(
            ["bash", "-c", '. "$1" || exit 9; printf "%s\\0%s" "$AZUREML_SWEEP_v" "$HPCJOBS_TRIAL_FOUND"', "t", str(script)],
            env={"HPCJOBS_TASK_INDEX": str(i), "HPCJOBS_JOB_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            check=True,
        )
        got, found = res.stdout.split(b"\0")
        assert got == value.encode(), (i, value)
        assert found == b"1" and b"runtime-sourced" in res.stderr
    assert not Path("/tmp/hpcjobs-pwned").exists()
    res = subprocess.run(
        ["bash", "-c", '. "$1"; echo "[${HPCJOBS_TRIAL_FOUND:-}]"', "t", str(script)],
        env={"HPCJOBS_TASK_INDEX": "999", "HPCJOBS_JOB_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout.strip() == "[]"


def test_hostile_choice_values_from_yaml(tmp_path: Path, hpcjobs_home: Path) -> None:
    values = json.dumps(HOSTILE)
    body = GRID.replace("a: {type: choice, values: [1, 2, 3]}", f"a: {{type: choice, values: {values}}}")
    plan = api.plan(_sweep(tmp_path, body), name="h1", site=_site(hpcjobs_home, "tc"))
    text = _files(plan)["trials.sh"].decode()
    # no value can start a line of its own in the script
    assert all(line.startswith(("#", "case", "esac", "[ -n")) or line.split(")", 1)[0].isdigit() for line in text.splitlines())


def test_seeded_random_and_sobol_are_reproducible(tmp_path: Path, hpcjobs_home: Path) -> None:
    site = _site(hpcjobs_home, "tc")
    for rule in ("random", "sobol"):
        body = f"""trial:
  command: echo ${{{{search_space.lr}}}}
sampling_algorithm: {{type: random, seed: 42, rule: {rule}}}
search_space:
  lr: {{type: loguniform, min_value: -9, max_value: -2}}
  k: {{type: randint, upper: 5}}
objective: {{goal: minimize, primary_metric: loss}}
limits: {{max_total_trials: 12}}
"""
        f = _sweep(tmp_path, body, f"{rule}.yml")
        a = _files(api.plan(f, name="r1", site=site))
        b = _files(api.plan(f, name="r1", site=site))
        assert a["trials.json"] == b["trials.json"] and a["trials.sh"] == b["trials.sh"]
        trials = json.loads(a["trials.json"])["trials"]
        assert len(trials) == 12 and len({t["params"]["lr"] for t in trials}) == 12


def test_long_sweep_is_split_with_a_lowered_max_array_size(tmp_path: Path, hpcjobs_home: Path) -> None:
    site = _site(hpcjobs_home, "small", "max_array_size: 3")
    body = GRID.replace("[1, 2, 3]", "[1, 2, 3, 4, 5]")  # 10 trials
    plan = api.plan(_sweep(tmp_path, body), name="c1", site=site)
    arrays = [(s.key, s.array, s.depends_on, s.dependency_type) for s in plan.scripts]
    assert arrays == [
        ("main", "0-2%1", [], "afterok"),
        ("chunk1", "0-2%1", [], "afterok"),
        ("chunk2", "0-1%1", ["main"], "afterany"),
        ("chunk3", "0-1%1", ["chunk1"], "afterany"),
    ]
    chunk2 = plan.scripts[2]
    assert "HPCJOBS_TASK_INDEX=$(( 6 + " in chunk2.text
    # a later chunk's Slurm log is kept apart: its tasks number from 0 again
    assert "--output=/srv/hpcjobs/" in chunk2.text and "/user_logs/chunk2_%a.txt" in chunk2.text
    assert "/user_logs/std_log_%a.txt" in plan.scripts[0].text
    kids = {c["name"]: (c["script_key"], c["array_task"]) for c in plan.children}
    assert kids["c1_7"] == ("chunk2", 1) and kids["c1_9"] == ("chunk3", 1)


def test_submit_limit_is_an_error_before_anything_is_submitted(tmp_path: Path, hpcjobs_home: Path) -> None:
    site = _site(hpcjobs_home, "tight", "max_submit_jobs: 5")
    with pytest.raises(UserError, match="at most 5 jobs"):
        api.plan(_sweep(tmp_path, GRID), name="s1", site=site)


def test_trial_timeout_becomes_the_array_time_limit(tmp_path: Path, hpcjobs_home: Path) -> None:
    body = GRID.replace(
        "limits: {max_concurrent_trials: 2}", "limits: {max_concurrent_trials: 2, trial_timeout: 90, timeout: 600}"
    )
    plan = api.plan(_sweep(tmp_path, body), name="t1", site=_site(hpcjobs_home, "tc"))
    assert "--time=00:02:00" in plan.scripts[0].sbatch_options  # 90 s + 30 s margin, whole minutes
    cfg = json.loads(_files(plan)[".hpcjobs/sweep.json"])
    assert cfg["trial_timeout"] == 90 and cfg["timeout"] == 600 and cfg["scheduler"] == "slurm"
    task = _files(plan)[".hpcjobs/sweep_task.sh"].decode()
    assert "controller watch" not in task or "hpcjobs_sweep_py watch" in task
    assert "limits.timeout=600s" in task


def test_bayesian_asks_at_trial_start_and_checks_the_space(tmp_path: Path, hpcjobs_home: Path) -> None:
    site = _site(hpcjobs_home, "tc")
    body = """trial:
  command: echo ${{search_space.x}}
sampling_algorithm: bayesian
search_space:
  x: {type: uniform, min_value: 0, max_value: 1}
objective: {goal: minimize, primary_metric: loss}
limits: {max_total_trials: 5, max_concurrent_trials: 2}
"""
    plan = api.plan(_sweep(tmp_path, body), name="b1", site=site)
    text = _files(plan)["trials.sh"].decode()
    assert "hpcjobs.sweep.controller ask" in text and "case" not in text
    assert len(plan.children) == 5 and plan.children[0]["extra"]["params"] == {}
    with pytest.raises(ValidationError, match="does not support normal"):
        api.plan(
            _sweep(tmp_path, body.replace("uniform, min_value: 0, max_value: 1", "normal, mu: 0, sigma: 1"), "n.yml"), site=site
        )


def test_local_site_runs_one_array_whatever_its_length(tmp_path: Path, hpcjobs_home: Path) -> None:
    body = GRID.replace("[1, 2, 3]", "[1, 2, 3, 4, 5]")
    plan = api.plan(_sweep(tmp_path, body), name="l1", site="local")
    (script,) = plan.scripts
    assert script.array == "0-9%2" and script.tasks == 10
    assert not script.sbatch_options


# --------------------------------------------------------------------------- runtime pieces
def test_probe_output_is_parsed() -> None:
    text = "MaxArraySize            = 2001\nMaxJobCount             = 10000\n--\n|\n500|\n|200\n"
    lim = parse_probe(text)
    assert (lim.max_array_size, lim.max_job_count, lim.max_submit_jobs, lim.queue_limit) == (2001, 10000, 200, 200)
    assert parse_probe("--\n").queue_limit is None


def test_best_trial_is_the_best_completed_one() -> None:
    rows = [
        {"name": "a", "status": "Completed", "primary_metric": 0.5},
        {"name": "b", "status": "Canceled", "primary_metric": 0.9},
        {"name": "c", "status": "Completed", "primary_metric": math.nan},
        {"name": "d", "status": "Completed", "primary_metric": 0.7},
        {"name": "e", "status": "Completed", "primary_metric": 0.7},
        {"name": "f", "status": "Failed", "primary_metric": None},
    ]
    assert best_trial(rows, "maximize")["name"] == "d"
    assert best_trial(rows, "minimize")["name"] == "a"
    assert best_trial([], "maximize") is None


def _fake_sweep(tmp_path: Path, policy: dict[str, Any]) -> str:
    job = tmp_path / "job"
    (job / ".hpcjobs").mkdir(parents=True)
    cfg = {
        "name": "s",
        "comment": "hpcjobs:x",
        "scheduler": "local",
        "trials": 4,
        "algorithm": "grid",
        "objective": {"goal": "maximize", "primary_metric": "acc"},
        "policy": policy,
        "timeout": None,
        "trial_timeout": None,
    }
    (job / ".hpcjobs" / "sweep.json").write_text(json.dumps(cfg))
    return str(job)


def test_early_termination_judges_late_references_at_past_intervals(tmp_path: Path) -> None:
    job = _fake_sweep(tmp_path, {"type": "bandit", "slack_factor": 0.2, "evaluation_interval": 1, "delay_evaluation": 2})
    cfg = controller.load_config(job)
    good = [(s, 0.9 * (s + 1), 0) for s in range(3)]
    (Path(job) / ".hpcjobs" / "live").mkdir()
    (Path(job) / ".hpcjobs" / "live" / "0.json").write_text(json.dumps({"points": [list(p) for p in good]}))
    bad = [(s, 0.1 * (s + 1), 0) for s in range(6)]
    # the bad trial is ahead (6 values) of the good one's published 3: judged at interval 3
    reason = controller.check_early_termination(job, 1, cfg, bad)
    assert reason and "interval 3" in reason
    assert controller.check_early_termination(job, 0, cfg, good) is None


def test_record_and_collect_read_an_offline_file_store(tmp_path: Path) -> None:
    from hpcjobs.mlflow_job import create_file_store_run

    job = _fake_sweep(tmp_path, None)  # type: ignore[arg-type]
    tdir = Path(controller.trial_dir(job, 2))
    exp, run = create_file_store_run(str(tdir / "mlruns"), experiment_name="e", run_name="r")
    (tdir / ".mlflow").mkdir(parents=True)
    (tdir / ".mlflow" / "state.json").write_text(
        json.dumps({"mode": "offline", "store": "mlruns", "local_run_id": run, "experiment_id_local": exp})
    )
    (tdir / "mlruns" / exp / run / "metrics" / "acc").write_text("1000 0.5 0\n1001 0.75 1\n1002 0.6 2\n")
    rec = controller.record(job, 2, 0)
    assert rec["status"] == "completed" and rec["value"] == 0.6 and len(rec["points"]) == 3
    got = controller.collect(job)
    assert got["trials"]["2"]["value"] == 0.6 and got["trials"]["2"]["status"] == "completed"


def test_exports_quote_bayesian_values() -> None:
    text = controller.exports({"x": 0.5, "s": "$(id) it's"})
    res = subprocess.run(
        ["bash", "-c", text + 'printf "%s|%s|%s" "$AZUREML_SWEEP_x" "$AZUREML_SWEEP_s" "$HPCJOBS_TRIAL_FOUND"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert res.stdout == "0.5|$(id) it's|1"


# --------------------------------------------------------------------------- a component as the trial
ECHO_COMPONENT = """$schema: https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json
name: echo_values
inputs:
  tag: {type: string}
  lr: {type: number, default: 0.5}
  greeting: {type: string, default: GREETING}
  data: {type: uri_folder}
  n: {type: integer, optional: true}
outputs:
  out: {type: uri_folder}
command: >-
  printf '%s\\0' ${{inputs.tag}} ${{inputs.lr}} ${{inputs.greeting}} "$AZURE_ML_INPUT_tag" "$AZUREML_PARAMETER_tag"
  ${{inputs.data}} $[[--n ${{inputs.n}}]] > ${{outputs.out}}/values
"""

#: reaches the trial through the component's default, byte for byte
GREETING = "hello 'world' \"$HOME\" `id` $(touch /tmp/hpcjobs-pwned); *"


def _component_sweep(tmp_path: Path, values: list[str]) -> Path:
    (tmp_path / "echo.yml").write_text(ECHO_COMPONENT.replace("GREETING", json.dumps(GREETING)))
    (tmp_path / "data dir").mkdir(exist_ok=True)
    body = f"""trial: ./echo.yml
inputs:
  data: ./data dir
sampling_algorithm: grid
search_space:
  tag: {{type: choice, values: {json.dumps(values)}}}
objective: {{goal: maximize, primary_metric: acc}}
"""
    return _sweep(tmp_path, body)


def test_component_trial_plan_binds_hyperparameters_inputs_and_defaults(tmp_path: Path, hpcjobs_home: Path) -> None:
    for site in (None, _site(hpcjobs_home, "tc")):
        plan = api.plan(_component_sweep(tmp_path, ["a", "b"]), name="cs", site=site)
        text = plan.scripts[0].text
        assert "${AZUREML_SWEEP_tag}" in text and "${AZURE_ML_INPUT_lr}" in text and '--n "' not in text
        exports = dict(line[len("export ") :].split("=", 1) for line in text.splitlines() if line.startswith("export AZURE"))
        assert "AZURE_ML_INPUT_tag" not in exports  # per trial, from trials.sh
        assert exports["AZURE_ML_INPUT_lr"] == "0.5" and exports["AZURE_ML_INPUT_data"] == shq(str(tmp_path / "data dir"))
        assert exports["AZURE_ML_INPUT_greeting"] == shq(GREETING)
        assert "AZURE_ML_INPUT_n" not in exports
        trials = _files(plan)["trials.sh"].decode()
        assert '[ -n "${AZUREML_SWEEP_tag+set}" ] && export AZURE_ML_INPUT_tag="$AZUREML_SWEEP_tag"' in trials
        assert [c["extra"]["params"] for c in plan.children] == [{"tag": "a"}, {"tag": "b"}]


def test_component_trial_rendered_script_gives_each_value_byte_for_byte(tmp_path: Path, hpcjobs_home: Path) -> None:
    """Run the rendered array script itself with bash, one trial after the other, as the local runner would."""
    values = [v for v in HOSTILE if v and "\n" not in v][:6]
    plan = api.plan(_component_sweep(tmp_path, values), name="cs2")
    for path, data in plan.files.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    script = Path(plan.scripts[0].script_path)
    script.write_text(plan.scripts[0].text)
    for i, value in enumerate(values):
        res = subprocess.run(
            ["bash", str(script)], env={**_env(), "HPCJOBS_TASK_INDEX": str(i)}, capture_output=True, check=False
        )
        assert res.returncode == 0, res.stderr
        got = (Path(plan.job_dir) / "trials" / str(i) / "named-outputs" / "out" / "values").read_bytes().split(b"\0")
        expected = [value, "0.5", GREETING, value, value, str(tmp_path / "data dir"), ""]
        assert got == [e.encode() for e in expected], (i, got)
    assert not Path("/tmp/hpcjobs-pwned").exists()


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}


# --------------------------------------------------------------------------- finalize (a pipeline's sweep step)
def _finalized_sweep(tmp_path: Path, results: dict[int, tuple[str, float | None]], goal: str = "minimize") -> Path:
    job = Path(_fake_sweep(tmp_path, None))  # type: ignore[arg-type]
    cfg = json.loads((job / ".hpcjobs" / "sweep.json").read_text())
    cfg["objective"] = {"goal": goal, "primary_metric": "loss"}
    trial_out = f"{job}/trials/$HPCJOBS_TASK_INDEX/named-outputs"
    cfg["best_outputs"] = {
        "model": {"trial": f"{trial_out}/model", "path": str(tmp_path / "best" / "model"), "type": "uri_folder"},
        "score": {"trial": f"{trial_out}/score", "path": str(tmp_path / "best" / "score.txt"), "type": "uri_file"},
    }
    (job / ".hpcjobs" / "sweep.json").write_text(json.dumps(cfg))
    (job / "trials.json").write_text(json.dumps({"trials": [{"index": i, "params": {"lr": i / 10}} for i in range(4)]}))
    lines = []
    for i, (status, value) in results.items():
        out = job / "trials" / str(i) / "named-outputs"
        (out / "model" / "sub").mkdir(parents=True)
        (out / "model" / "sub" / "w.txt").write_text(f"weights of trial {i}\n")
        (out / "score").write_text(f"{value}\n")
        lines.append(json.dumps({"index": i, "status": status, "value": value, "points": []}))
    (job / ".hpcjobs" / "results.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""))
    return job


def test_finalize_places_the_best_completed_trials_outputs(tmp_path: Path) -> None:
    job = _finalized_sweep(tmp_path, {0: ("completed", 0.4), 1: ("canceled", 0.1), 2: ("completed", 0.3), 3: ("failed", None)})
    (tmp_path / "best" / "model").mkdir(parents=True)
    (tmp_path / "best" / "model" / "stale.txt").write_text("from an earlier attempt\n")
    assert controller.finalize(str(job)) == 0
    # trial 1 was better but was stopped early: the best is the best COMPLETED trial
    report = json.loads((job / ".hpcjobs" / "best.json").read_text())
    assert (report["index"], report["value"], report["params"]) == (2, 0.3, {"lr": 0.2})
    assert (tmp_path / "best" / "model" / "sub" / "w.txt").read_text() == "weights of trial 2\n"
    assert (tmp_path / "best" / "score.txt").read_text() == "0.3\n"
    src = job / "trials" / "2" / "named-outputs" / "model" / "sub" / "w.txt"
    assert (tmp_path / "best" / "model" / "sub" / "w.txt").stat().st_ino == src.stat().st_ino  # a hard link, not a copy
    assert report["outputs"] == {"model": str(tmp_path / "best" / "model"), "score": str(tmp_path / "best" / "score.txt")}
    # the same rule as job show: maximize picks trial 0
    job2 = _finalized_sweep(tmp_path / "max", {0: ("completed", 0.4), 2: ("completed", 0.3)}, goal="maximize")
    assert controller.finalize(str(job2)) == 0 and json.loads((job2 / ".hpcjobs" / "best.json").read_text())["index"] == 0


def test_finalize_fails_without_a_completed_trial(tmp_path: Path) -> None:
    job = _finalized_sweep(tmp_path / "a", {0: ("canceled", 0.1), 1: ("failed", None)})
    assert controller.finalize(str(job)) == controller.NO_TRIAL_COMPLETED
    assert not (job / ".hpcjobs" / "best.json").exists() and not (tmp_path / "a" / "best" / "score.txt").exists()
    job = _finalized_sweep(tmp_path / "b", {0: ("completed", None)})
    assert controller.finalize(str(job)) == controller.NO_METRIC
    job = _finalized_sweep(tmp_path / "c", {})
    state = tmp_path / "c" / "state"
    assert controller.finalize(str(job), str(state)) == 143
    assert "no trial of the sweep ran" in (state / "canceled").read_text()
    assert controller.main(["finalize", str(job), str(state)]) == 143


def test_sweep_step_state_comes_from_its_trials_then_its_finalize_job() -> None:
    from hpcjobs.store import JobRecord
    from hpcjobs.sweep_step import step_status, trials_summary

    def rec(name: str, status: str, **kw: Any) -> JobRecord:
        return JobRecord(name=name, type="command", site="local", status=status, token="t", **kw)

    step = JobRecord(
        name="p_tune",
        type="sweep",
        site="local",
        status="Queued",
        token="t",
        extra={"finalize": {"key": "tune"}, "sweep": {"objective": {"primary_metric": "loss"}}},
    )
    queued = [rec("p_tune_0", "Queued"), rec("p_tune_1", "Queued")]
    assert step_status(step, {}, queued) == {}
    running = [rec("p_tune_0", "Running", started=5.0), rec("p_tune_1", "Queued")]
    assert step_status(step, {"reason": "Dependency"}, running) == {"status": "Running", "started": 5.0}
    ended = [rec("p_tune_0", "Completed", started=5.0), rec("p_tune_1", "Canceled", started=7.0)]
    assert step_status(step, {"status": "Running", "started": 20.0}, ended)["status"] == "Finalizing"
    done = step_status(step, {"status": "Completed", "exit_code": 0, "ended": 30.0}, ended)
    assert done["status"] == "Completed" and done["started"] == 5.0 and done["ended"] == 30.0
    failed = [rec("p_tune_0", "Failed"), rec("p_tune_1", "Canceled")]
    got = step_status(step, {"status": "Failed", "exit_code": controller.NO_TRIAL_COMPLETED, "reason": "exit code 3"}, failed)
    assert (got["status"], got["reason"]) == ("Failed", "no trial completed")
    got = step_status(step, {"status": "Failed", "exit_code": controller.NO_METRIC}, ended)
    assert got["reason"] == "no completed trial logged the primary metric 'loss'"
    assert trials_summary(ended) == {"total": 2, "counts": {"Completed": 1, "Canceled": 1}}
    # cancelled: the step ends when its trials have stopped too, not before
    stopping = [rec("p_tune_0", "Finalizing", started=5.0), rec("p_tune_1", "Canceled")]
    got = step_status(step, {"status": "Canceled", "ended": 9.0}, stopping)
    assert got["status"] == "Running" and "ended" not in got
    assert step_status(step, {"status": "Canceled", "ended": 9.0}, failed)["status"] == "Canceled"


def test_shipped_controller_modules_import_only_each_other_and_the_standard_library() -> None:
    """What trials run on the cluster (``.hpcjobs/lib``) must not need an hpcjobs install."""
    import ast
    import sys
    from pathlib import Path

    from hpcjobs.plan_sweep import LIB_MODULES

    pkg = Path(__file__).resolve().parents[2] / "hpcjobs"
    shipped = {"hpcjobs." + m.removesuffix(".py").replace("/", ".").removesuffix(".__init__") for m in LIB_MODULES}
    shipped.add("hpcjobs")
    allowed_third_party = {"optuna", "numpy", "scipy", "mlflow"}  # imported lazily, by the samplers that need them
    for rel in LIB_MODULES:
        tree = ast.parse((pkg / rel).read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top == "hpcjobs":
                    assert name in shipped, f"{rel} imports {name}, which is not shipped (plan_sweep.LIB_MODULES)"
                else:
                    assert top in sys.stdlib_module_names or top in allowed_third_party or top == "__future__", (rel, name)
