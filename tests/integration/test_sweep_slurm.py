"""Sweeps as job arrays on the real Slurm test cluster (2 nodes x 2 CPUs, DefMemPerCPU set).

The tests run hpcjobs in-process (the Python API, as the CLI calls it) with their own
HPCJOBS_HOME, submitting to site ``testcluster`` (job root /srv/hpcjobs/$USER) from this
machine, which is the cluster's login node.  Trials are short (sleep <= 2 s) except where
a timeout must cut them.  Concurrency is checked on Slurm's own accounting (sacct start
and end times, whole seconds) and on the trials' started/ended markers.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import conf_without_accounting

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("slurm")]

SITE = "testcluster"
TERMINAL = ("Completed", "Failed", "Canceled")


@pytest.fixture(autouse=True)
def _cluster(cluster: None, hpcjobs_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HPCJOBS_SWEEP_POLL", "1")


def _write(tmp_path: Path, name: str, body: str) -> Path:
    p = tmp_path / name
    p.write_text("type: sweep\n" + body)
    return p


def _wait(name: str, timeout: float = 240) -> dict[str, Any]:
    from hpcjobs import api

    deadline = time.monotonic() + timeout
    while True:
        view = api.show_job(name)
        if view["status"] in TERMINAL:
            return view
        assert time.monotonic() < deadline, {t["name"]: t["status"] for t in view.get("trials", [])}
        time.sleep(2)


def _sacct(name: str, n: int) -> list[tuple[str, str, int, int]]:
    """(job id, state, start, end) of every task of the sweep's arrays, once accounting has them all."""
    rows: list[tuple[str, str, int, int]] = []
    for _ in range(60):
        res = subprocess.run(
            ["sacct", "-n", "-P", "-X", f"--name={name}", "-S", "now-1hour", "--format=JobID,State,Start,End"],
            capture_output=True,
            text=True,
            check=True,
        )
        rows = []
        for line in res.stdout.splitlines():
            jid, state, start, end = line.split("|")
            if "[" in jid or start in ("Unknown", "None") or end in ("Unknown", "None"):
                continue
            rows.append((jid, state, _epoch(start), _epoch(end)))
        if len(rows) >= n:
            return rows
        time.sleep(1)
    return rows


def _epoch(ts: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(ts).timestamp())


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    # an end and a start in the same second are not at the same time
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = cur = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def _markers(job_dir: Path, n: int) -> list[tuple[float, float]]:
    out = []
    for i in range(n):
        sd = job_dir / "trials" / str(i) / ".hpcjobs"
        out.append((float((sd / "started").read_text()), float((sd / "ended").read_text())))
    return out


GRID = """trial:
  command: >-
    echo "${{search_space.a}}|${{search_space.b}}" > "$HPCJOBS_TASK_DIR/wd/outputs/params.txt";
    python3 -c "import mlflow, sys; mlflow.log_metric('score', float(sys.argv[1]) * (2 if sys.argv[2] == 'y z' else 1))" ${{search_space.a}} "${{search_space.b}}";
    sleep 1
sampling_algorithm: grid
search_space:
  a: {type: choice, values: [1, 2, 3]}
  b: {type: choice, values: [x, "y z"]}
objective: {goal: maximize, primary_metric: score}
limits: {max_concurrent_trials: 2}
"""


def test_grid_sweep_runs_every_combination_once_and_reports_the_best(tmp_path: Path) -> None:
    from hpcjobs import api

    view = api.create_job(_write(tmp_path, "grid.yml", GRID), site=SITE)
    name = view["name"]
    done = _wait(name)
    assert done["status"] == "Completed"
    job_dir = Path(done["paths"]["job_dir"])
    seen = sorted((job_dir / "trials" / str(i) / "wd/outputs/params.txt").read_text().strip() for i in range(6))
    assert seen == sorted(f"{a}|{b}" for a in (1, 2, 3) for b in ("x", "y z"))
    rows = _sacct(name, 6)
    assert len(rows) == 6 and {r[1] for r in rows} == {"COMPLETED"}
    assert _max_overlap([(s, e) for _, _, s, e in rows]) <= 2 or _max_overlap(_markers(job_dir, 6)) <= 2
    assert _max_overlap(_markers(job_dir, 6)) <= 2
    scores = {t["index"]: t["primary_metric"] for t in done["trials"]}
    assert scores == {0: 1.0, 1: 2.0, 2: 2.0, 3: 4.0, 4: 3.0, 5: 6.0}
    assert done["best_trial"]["name"] == f"{name}_5"
    assert done["best_trial"]["parameters"] == {"a": 3, "b": "y z"}
    # array tasks are the trials' Slurm ids
    assert all(t["job_ids"][0].endswith(f"_{t['index']}") for t in done["trials"])
    again = api.show_job(name)
    assert again["properties"]["best_child_run_id"] == f"{name}_5"


def test_bayesian_sweep_on_the_cluster_asks_knowing_earlier_results(tmp_path: Path) -> None:
    """Each array task asks Optuna (TPE) for its parameters when its slot frees up, on the cluster."""
    pytest.importorskip("optuna")  # in the Python the trials run (this interpreter's, on PATH)
    from hpcjobs import api

    body = """trial:
  command: >-
    python3 -c "import mlflow, sys; mlflow.log_metric('loss', (float(sys.argv[1]) - 0.3) ** 2)" ${{search_space.x}}
sampling_algorithm: {type: bayesian, seed: 7}
search_space:
  x: {type: uniform, min_value: 0, max_value: 1}
  k: {type: choice, values: [a, "b c"]}
objective: {goal: minimize, primary_metric: loss}
limits: {max_total_trials: 6, max_concurrent_trials: 2}
"""
    view = api.create_job(_write(tmp_path, "bayes.yml", body), site=SITE)
    assert len(view["scheduler"]["job_ids"]) == 1  # one array, as for grid and random
    done = _wait(view["name"])
    assert done["status"] == "Completed", [(t["name"], t["status"], t["reason"]) for t in done["trials"]]
    for t in done["trials"]:
        assert 0 <= t["parameters"]["x"] <= 1 and t["parameters"]["k"] in ("a", "b c")
        assert t["primary_metric"] == pytest.approx((t["parameters"]["x"] - 0.3) ** 2)
    assert done["best_trial"]["primary_metric"]["loss"] == min(t["primary_metric"] for t in done["trials"])
    job_dir = Path(done["paths"]["job_dir"])
    # the sampler heard every result that ended before the last ask: with 2 slots, the last
    # trial starts after at least 4 others ended
    state = json.loads((job_dir / ".hpcjobs" / "bayes_state.json").read_text())
    assert len(state["trials"]) == 6
    assert sum(1 for t in state["trials"] if t["state"] == "complete") >= 4, state
    # and each trial ran with the parameters it was given
    for t in done["trials"]:
        given = json.loads((job_dir / "trials" / str(t["index"]) / "params.json").read_text())
        assert given == t["parameters"]


def test_status_costs_one_squeue_and_one_sacct_for_all_trials(tmp_path: Path) -> None:
    from hpcjobs import api, backends
    from hpcjobs.site import get_site
    from hpcjobs.store import Store

    body = GRID.replace("[1, 2, 3]", "[1, 2, 3, 4, 5, 6]").replace("max_concurrent_trials: 2", "max_concurrent_trials: 4")
    view = api.create_job(_write(tmp_path, "many.yml", body), site=SITE)
    name = view["name"]
    transport = backends.transport_for(get_site(SITE))
    store = Store()
    time.sleep(3)
    before = len(transport.stats.argv_log)
    api.refresh([store.get(name), *store.children(name)], store)
    argv = transport.stats.argv_log[before:]
    assert sum(1 for a in argv if a[0] == "squeue") == 1, argv
    assert sum(1 for a in argv if a[0] == "sacct") <= 1, argv
    assert _wait(name)["status"] == "Completed"


def test_seeded_random_sweep_samples_the_same_trials_twice(tmp_path: Path) -> None:
    from hpcjobs import api

    body = """trial:
  command: echo "${{search_space.lr}} ${{search_space.n}}" > "$HPCJOBS_TASK_DIR/wd/outputs/p.txt"
sampling_algorithm: {type: random, seed: 1234}
search_space:
  lr: {type: loguniform, min_value: -7, max_value: -1}
  n: {type: randint, upper: 100}
objective: {goal: maximize, primary_metric: acc}
limits: {max_total_trials: 5, max_concurrent_trials: 4}
"""
    f = _write(tmp_path, "rnd.yml", body)
    names = [api.create_job(f, site=SITE)["name"] for _ in range(2)]
    got = []
    for name in names:
        done = _wait(name)
        assert done["status"] == "Completed"
        job_dir = Path(done["paths"]["job_dir"])
        got.append([(job_dir / "trials" / str(i) / "wd/outputs/p.txt").read_text() for i in range(5)])
        assert [t["parameters"] for t in done["trials"]] == [t["params"] for t in json.loads((job_dir / "trials.json").read_text())["trials"]]
    assert got[0] == got[1] and len(set(got[0])) == 5


def test_sweep_longer_than_max_array_size_is_split_and_completes(tmp_path: Path, hpcjobs_home: Path) -> None:
    from hpcjobs import api

    site = _small_array_site(hpcjobs_home, 4)
    body = """trial:
  command: echo "${{search_space.i}}" > "$HPCJOBS_TASK_DIR/wd/outputs/i.txt"; sleep 1
sampling_algorithm: grid
search_space:
  i: {type: choice, values: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}
objective: {goal: maximize, primary_metric: acc}
limits: {max_concurrent_trials: 3}
"""
    view = api.create_job(_write(tmp_path, "split.yml", body), site=site)
    assert len(view["scheduler"]["job_ids"]) == 3  # 11 trials in arrays of at most 4
    done = _wait(view["name"])
    assert done["status"] == "Completed", [(t["name"], t["status"], t["reason"]) for t in done["trials"]]
    job_dir = Path(done["paths"]["job_dir"])
    assert [int((job_dir / "trials" / str(i) / "wd/outputs/i.txt").read_text()) for i in range(11)] == list(range(11))
    assert _max_overlap(_markers(job_dir, 11)) <= 3
    rows = _sacct(view["name"], 11)
    assert len(rows) == 11 and {r[1] for r in rows} == {"COMPLETED"}
    # a later chunk's trial logs under its own trial index
    assert "std_log_10.txt" in {p.name for p in (job_dir / "user_logs").iterdir()}


def test_bandit_cancels_a_clearly_bad_trial_and_trial_timeout_ends_a_slow_one(tmp_path: Path) -> None:
    from hpcjobs import api

    src = tmp_path / "src"
    src.mkdir()
    (src / "curve.py").write_text(
        "import sys, time\nimport mlflow\nq = float(sys.argv[1])\n"
        "for s in range(40):\n    mlflow.log_metric('acc', q * (1 + s) / 40, step=s)\n    time.sleep(0.5)\n"
    )
    et = _write(
        tmp_path,
        "et.yml",
        """trial:
  code: src
  command: python3 curve.py ${{search_space.q}}
sampling_algorithm: grid
search_space:
  q: {type: choice, values: [0.9, 0.1, 0.85]}
objective: {goal: maximize, primary_metric: acc}
early_termination: {type: bandit, slack_factor: 0.2, evaluation_interval: 1, delay_evaluation: 3}
limits: {max_concurrent_trials: 3}
""",
    )
    tt = _write(
        tmp_path,
        "tt.yml",
        """trial:
  command: sleep ${{search_space.s}}
sampling_algorithm: grid
search_space:
  s: {type: choice, values: [1, 90]}
objective: {goal: maximize, primary_metric: acc}
limits: {max_concurrent_trials: 2, trial_timeout: 4}
""",
    )
    e_name = api.create_job(et, site=SITE)["name"]
    t_name = api.create_job(tt, site=SITE)["name"]
    t_done = _wait(t_name)
    assert [t["status"] for t in t_done["trials"]] == ["Completed", "Canceled"]
    assert "trial_timeout=4s" in t_done["trials"][1]["reason"]
    start, end = _markers(Path(t_done["paths"]["job_dir"]), 2)[1]
    assert end - start < 30  # cut at 4 s (+ grace), not Slurm's whole minute
    e_done = _wait(e_name)
    by = {t["index"]: t for t in e_done["trials"]}
    assert by[1]["status"] == "Canceled" and by[1]["reason"].startswith("early termination: bandit"), by[1]
    assert by[0]["status"] == by[2]["status"] == "Completed"
    rows = {r[0].split("_")[-1]: r[1] for r in _sacct(e_name, 3)}
    assert rows["1"].startswith("CANCELLED")
    assert e_done["best_trial"]["index"] == 0


def test_sweep_timeout_cancels_running_and_pending_trials(tmp_path: Path) -> None:
    from hpcjobs import api

    f = _write(
        tmp_path,
        "to.yml",
        """trial:
  command: sleep ${{search_space.s}}
sampling_algorithm: grid
search_space:
  s: {type: choice, values: [1, 2, 600, 601, 602, 603]}
objective: {goal: maximize, primary_metric: acc}
limits: {max_concurrent_trials: 2, timeout: 20}
""",
    )
    t0 = time.monotonic()
    name = api.create_job(f, site=SITE)["name"]
    done = _wait(name, timeout=500)
    # the slow trials alone would take half an hour; the clock includes any queue wait,
    # so on a busy cluster even the quick trials may start too late and be cancelled
    assert time.monotonic() - t0 < 400
    states = [t["status"] for t in done["trials"]]
    assert set(states[2:]) == {"Canceled"} and set(states[:2]) <= {"Completed", "Canceled"}, states
    assert all("sweep timeout" in (t["reason"] or "") for t in done["trials"] if t["status"] == "Canceled")
    assert "sweep timeout" in done["sweep"]["stopped"]


def _small_array_site(hpcjobs_home: Path, size: int) -> str:
    """Site ``tc-small``: the test cluster with a MaxArraySize of *size* (sweeps are cut into chunks)."""
    src = Path(__file__).resolve().parents[2] / "site-configs" / "testcluster.yml"
    sites = hpcjobs_home / "config" / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    (sites / "tc-small.yml").write_text(src.read_text().replace("name: testcluster", "name: tc-small") + f"\nmax_array_size: {size}\n")
    return "tc-small"


@pytest.mark.parametrize("case", ["one array", "accounting down", "three arrays"])
def test_cancel_cancels_every_array_task(tmp_path: Path, hpcjobs_home: Path, monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    """Every task ends Canceled: running, pending in the array's record, in later chunks.

    Cancelling names each array once: naming pending tasks as well makes Slurm split
    them off, and such a task disappears from squeue and sacct alike (Slurm 22.05).
    """
    from hpcjobs import api

    site = SITE
    if case == "accounting down":
        # squeue alone must end the sweep: sacct that fails (or lags far behind, as slurmdbd
        # does after thousands of array tasks) never turns a cancelled task back into Queued
        monkeypatch.setenv("SLURM_CONF", str(conf_without_accounting(tmp_path / "conf")))
    elif case == "three arrays":
        site = _small_array_site(hpcjobs_home, 2)
    f = _write(
        tmp_path,
        "long.yml",
        """trial:
  command: sleep 120
sampling_algorithm: grid
search_space:
  s: {type: choice, values: [1, 2, 3, 4, 5, 6]}
objective: {goal: maximize, primary_metric: acc}
limits: {max_concurrent_trials: 2}
""",
    )
    created = api.create_job(f, site=site)
    name = created["name"]
    assert len(created["scheduler"]["job_ids"]) == (3 if case == "three arrays" else 1)
    # wait until trials run, so the cancel meets running and pending tasks alike
    deadline = time.monotonic() + 60
    while "Running" not in {t["status"] for t in api.show_job(name)["trials"]} and time.monotonic() < deadline:
        time.sleep(0.5)
    view = api.cancel_job(name)
    done = _wait(name, timeout=60)
    assert done["status"] == "Canceled", view["status"]
    assert [t["status"] for t in done["trials"]] == ["Canceled"] * 6
    left = subprocess.run(["squeue", "--me", "-h", f"--name={name}"], capture_output=True, text=True, check=True)
    assert left.stdout.strip() == ""
    if case != "accounting down":
        # and Slurm's accounting has every task, each cancelled (none lost on the way)
        assert _accounted_tasks(created["scheduler"]["job_ids"], 6) == ["CANCELLED"] * 6


def _accounted_tasks(arrays: list[str], n: int) -> list[str]:
    """The state of each task of *arrays* in accounting (the never-started tasks' shared row expanded).

    By job id: ``sacct --name`` leaves out the row of tasks that never started.
    """
    from hpcjobs import slurm

    states: list[str] = []
    for _ in range(60):
        res = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-j", ",".join(arrays), "--format=JobID,State"],
            capture_output=True,
            text=True,
            check=True,
        )
        states = []
        for line in res.stdout.splitlines():
            jid, state = line.split("|")
            spec = jid.partition("_")[2]
            count = len(slurm.parse_array_spec(spec)[0]) if spec.startswith("[") else 1
            states += [state.split()[0]] * count
        if len(states) >= n:
            break
        time.sleep(1)
    return sorted(states)


@pytest.mark.slow
def test_thousand_trial_sweep_is_one_submission(tmp_path: Path) -> None:
    from hpcjobs import api, backends
    from hpcjobs.site import get_site

    f = _write(
        tmp_path,
        "k.yml",
        """trial:
  command: "true"
sampling_algorithm: {type: random, seed: 5}
search_space:
  x: {type: uniform, min_value: 0, max_value: 1}
objective: {goal: maximize, primary_metric: acc}
limits: {max_total_trials: 1000, max_concurrent_trials: 4}
""",
    )
    transport = backends.transport_for(get_site(SITE))
    before = len(transport.stats.argv_log)
    t = time.perf_counter()
    view = api.create_job(f, site=SITE)
    seconds = time.perf_counter() - t
    argv = transport.stats.argv_log[before:]
    print(f"1000-trial sweep submitted in {seconds:.2f} s with {len(argv)} command(s)")
    assert sum(1 for a in argv if any("sbatch" in x for x in a)) == 1
    api.cancel_job(view["name"])
