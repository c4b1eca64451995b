"""The sweep controller: what runs on the cluster while a sweep runs.  Standard library only.

There is no long-lived controller *job*: every trial carries its share of the work, so
nothing waits in the queue for a slot, nothing outlives the sweep's time limits, and the
user's laptop can be offline.  The planner ships this module (with the few hpcjobs
modules it uses, all standard-library only) into ``<job dir>/.hpcjobs/lib`` and the
trial scripts run ``python3 -m hpcjobs.sweep.controller COMMAND ...`` with that folder on
``PYTHONPATH``, so the cluster needs no hpcjobs install.  Commands:

``ask JOB_DIR INDEX``
    Bayesian sampling: under a lock, tell the sampler every trial that ended since the
    last call, ask it for this trial's parameters, and print them as bash ``export``
    lines (values quoted with :func:`hpcjobs.shellquote.shq`).  The array's ``%N``
    throttle makes this "the next batch": a trial asks when a slot frees up, knowing
    every result so far.  Needs Optuna (:mod:`hpcjobs.sweep.bayes`) on the cluster.
``watch JOB_DIR INDEX PID``
    Runs beside a trial (PID is the trial's shell).  Stops the trial at
    ``trial_timeout``, stops the whole sweep at ``limits.timeout``, and applies the
    early-termination policy every poll: it reads the trial's primary metric from its
    MLflow run (:mod:`hpcjobs.sweep.metrics`), publishes it for the other trials, and
    compares it with every trial's (:mod:`hpcjobs.sweep.termination`).  A stopped trial
    gets a ``stop_reason`` marker and is cancelled: ``scancel`` of its own Slurm job on a
    cluster (so accounting says CANCELLED), a signal to its processes on this machine.
``record JOB_DIR INDEX EXIT_CODE``
    When a trial ends: append its outcome and final metric history to
    ``.hpcjobs/results.jsonl`` (what ``ask``, ``watch`` and ``collect`` read).
``stop JOB_DIR REASON``
    Stop the whole sweep: mark it stopped and, on Slurm, cancel its arrays.
``collect JOB_DIR``
    Print every trial's outcome, primary metric and (bayesian) parameters as JSON, for
    ``hpcjobs job show``.
``finalize JOB_DIR``
    A pipeline's sweep step, once all its trials ended (its own job, ``afterany`` on the
    arrays): pick the best completed trial (:func:`best_of`, the rule ``job show`` uses)
    and put its outputs where the step's outputs are (hard links where the filesystem
    allows, else copies), so that the steps downstream read the best trial's data.
    Writes ``.hpcjobs/best.json``; fails when no trial completed with a value.

Files in the job directory: ``.hpcjobs/sweep.json`` (settings, written by the planner),
``.hpcjobs/results.jsonl``, ``.hpcjobs/live/INDEX.json`` (running trials' metrics),
``.hpcjobs/sweep_stopped``, ``.hpcjobs/bayes_state.json`` + ``bayes_index.json``, and per
trial ``trials/INDEX/.hpcjobs/{pid,slurm_job_id,stop_reason}`` and (bayesian)
``trials/INDEX/params.json``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

from hpcjobs.sweep import metrics as mx

#: seconds between two early-termination checks of a trial (``HPCJOBS_SWEEP_POLL`` overrides)
DEFAULT_POLL = 10.0
#: seconds a stopped trial's processes get between SIGTERM and SIGKILL (this machine only)
KILL_GRACE = 10.0
#: evaluation points of a trial judged again at each check (the newest ones)
MAX_LOOKBACK = 100
#: exit codes of ``finalize`` when there is no best trial (1 and 2 are errors and usage)
NO_TRIAL_COMPLETED = 3
NO_METRIC = 4


# --------------------------------------------------------------------------- files
def _hp(job_dir: str, *parts: str) -> str:
    return os.path.join(job_dir, ".hpcjobs", *parts)


def trial_dir(job_dir: str, index: int) -> str:
    """The task directory of trial *index*."""
    return os.path.join(job_dir, "trials", str(index))


def load_config(job_dir: str) -> dict[str, Any]:
    """The sweep's settings, written by the planner."""
    with open(_hp(job_dir, "sweep.json"), encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError("sweep.json is not a mapping")
    return data


def _write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read().strip()
    except OSError:
        return None


@contextlib.contextmanager
def _locked(job_dir: str) -> Iterator[None]:
    # fcntl locks work across nodes on NFSv4 and Lustre (with flock); one lock file per sweep
    import fcntl

    os.makedirs(_hp(job_dir), exist_ok=True)
    fd = os.open(_hp(job_dir, "sweep.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.lockf(fd, fcntl.LOCK_UN)
        os.close(fd)


def load_results(job_dir: str) -> dict[int, dict[str, Any]]:
    """Recorded outcomes by trial index (a later line for the same trial wins)."""
    out: dict[int, dict[str, Any]] = {}
    try:
        with open(_hp(job_dir, "results.jsonl"), encoding="utf-8") as fh:
            for line in fh:
                try:
                    rec = json.loads(line)
                    out[int(rec["index"])] = rec
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash
    except OSError:
        pass
    return out


def load_live(job_dir: str) -> dict[int, list[mx.Point]]:
    """Running trials' published metric histories by index."""
    out: dict[int, list[mx.Point]] = {}
    d = _hp(job_dir, "live")
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            with open(os.path.join(d, name), encoding="utf-8") as fh:
                data = json.load(fh)
            out[int(name[:-5])] = [(int(s), float(v), int(t)) for s, v, t in data["points"]]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _points_json(points: list[mx.Point]) -> list[list[Any]]:
    return [[s, v, t] for s, v, t in points]


# --------------------------------------------------------------------------- stopping
def _scancel(ids: list[str]) -> bool:
    if not ids:
        return True
    try:
        res = subprocess.run(["scancel", *ids], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        sys.stderr.write(f"hpcjobs sweep: scancel failed: {exc}\n")
        return False
    if res.returncode != 0:
        sys.stderr.write(f"hpcjobs sweep: scancel failed: {res.stderr.strip()}\n")
    return res.returncode == 0


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: split after it
        rest = stat[stat.rfind(")") + 2 :].split()
        if len(rest) >= 2:
            kids.setdefault(int(rest[1]), []).append(int(name))
    return kids


def descendants(pid: int, *, exclude: int | None = None) -> list[int]:
    """Every process below *pid* (not *pid* itself), leaving out *exclude* and its subtree."""
    kids = _children_map()
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            if c == exclude:
                continue
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_trial(job_dir: str, index: int, reason: str, *, shell_pid: int | None = None) -> None:
    """Record why trial *index* stops, then cancel it (Slurm) or signal its processes (here)."""
    state = os.path.join(trial_dir(job_dir, index), ".hpcjobs")
    _write_atomic(os.path.join(state, "stop_reason"), reason + "\n")
    pid = shell_pid
    if pid is None:
        text = _read_text(os.path.join(state, "pid"))
        pid = int(text) if text and text.isdigit() else None
    slurm_id = _read_text(os.path.join(state, "slurm_job_id"))
    if slurm_id and _scancel([slurm_id]):
        # Slurm signals the trial; if it still runs after the grace time (we are beside
        # it, on its node), its processes are signalled directly below
        deadline = time.time() + KILL_GRACE
        while pid is not None and time.time() < deadline and _alive(pid):
            time.sleep(0.2)
    if pid is None or not _alive(pid):
        return
    # the trial's shell stays alive: it sees its command end and records the cancellation
    victims = descendants(pid, exclude=os.getpid())
    for p in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGTERM)
    deadline = time.time() + KILL_GRACE
    while time.time() < deadline and any(_alive(p) for p in victims):
        time.sleep(0.1)
    for p in victims:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)


def stop_sweep(job_dir: str, reason: str, cfg: dict[str, Any] | None = None) -> None:
    """Stop the whole sweep: trials not started yet will not run, running ones are cancelled."""
    cfg = cfg or load_config(job_dir)
    marker = _hp(job_dir, "sweep_stopped")
    if not os.path.exists(marker):
        _write_atomic(marker, reason + "\n")
    if cfg.get("scheduler") != "slurm":
        return  # here each trial's own watcher stops it; trials yet to start see the marker
    try:
        res = subprocess.run(
            ["squeue", "--me", "--noheader", f"--name={cfg['name']}", "--format=%F|%k"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        sys.stderr.write(f"hpcjobs sweep: squeue failed: {exc}\n")
        return
    ids = sorted(
        {
            line.split("|", 1)[0].strip()
            for line in res.stdout.splitlines()
            if "|" in line and line.split("|", 1)[1].strip() == cfg["comment"]
        }
    )
    _scancel(ids)


# --------------------------------------------------------------------------- watch
def sweep_start(job_dir: str) -> float:
    """When the sweep's clock started: when its trial table was written (at submission), or,
    for a pipeline's sweep step, when its first trial created ``.hpcjobs/started_at``."""
    for path in (_hp(job_dir, "started_at"), os.path.join(job_dir, "trials.json")):
        try:
            return os.stat(path).st_mtime
        except OSError:
            continue
    return time.time()


def _poll(cfg: dict[str, Any]) -> float:
    env = os.environ.get("HPCJOBS_SWEEP_POLL")
    try:
        if env:
            return max(0.2, float(env))
    except ValueError:
        pass
    return float(cfg.get("poll") or DEFAULT_POLL)


def references(job_dir: str, *, exclude: int | None = None) -> dict[str, list[tuple[int, float]]]:
    """Every trial's ``(step, value)`` history: recorded ones, then running ones' published ones."""
    refs: dict[str, list[tuple[int, float]]] = {}
    for idx, rec in load_results(job_dir).items():
        pts = rec.get("points") or []
        if pts:
            refs[str(idx)] = [(int(p[0]), float(p[1])) for p in pts]
    for idx, pts2 in load_live(job_dir).items():
        if idx != exclude and str(idx) not in refs and pts2:
            refs[str(idx)] = [(s, v) for s, v, _ in pts2]
    return refs


def check_early_termination(job_dir: str, index: int, cfg: dict[str, Any], points: list[mx.Point]) -> str | None:
    """The reason to stop trial *index* now under the sweep's policy, or None."""
    from hpcjobs.sweep.termination import parse_policy

    policy = parse_policy(cfg.get("policy"))
    if policy is None or not points:
        return None
    refs = references(job_dir, exclude=index)
    me = str(index)
    mine = [(s, v) for s, v, _ in mx.ordered(points)]
    goal = cfg["objective"]["goal"]
    metric = cfg["objective"]["primary_metric"]
    # The other trials' values arrive a poll late, so at its newest interval this trial
    # may have nobody to be compared with.  Judge it at each evaluation point it passed
    # (newest first), as of that interval: what the policy would have said then.
    checked = 0
    for n in range(len(mine), 0, -1):
        if policy.evaluation_point(n) != n:
            continue
        refs[me] = mine[:n]
        if me in policy.decide(refs, goal, active=[me]):
            return f"early termination: {policy.type} policy at interval {n} ({metric}={mine[n - 1][1]!r})"
        checked += 1
        if checked >= MAX_LOOKBACK:
            break
    return None


def watch(job_dir: str, index: int, shell_pid: int) -> int:
    """Watch trial *index* (run by shell *shell_pid*) until it ends or must stop."""
    cfg = load_config(job_dir)
    started = time.time()
    timeout = cfg.get("timeout")
    trial_timeout = cfg.get("trial_timeout")
    sweep_deadline = sweep_start(job_dir) + float(timeout) if timeout else None
    trial_deadline = started + float(trial_timeout) if trial_timeout else None
    policy = cfg.get("policy")
    poll = _poll(cfg)
    next_check = started + poll
    metric = cfg["objective"]["primary_metric"]
    live = _hp(job_dir, "live", f"{index}.json")
    last_published: list[mx.Point] = []
    stop = False

    def on_term(signum: int, frame: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    while not stop and _alive(shell_pid):
        now = time.time()
        if sweep_deadline is not None and now >= sweep_deadline:
            reason = f"sweep timeout: limits.timeout={timeout}s reached"
            stop_trial(job_dir, index, reason, shell_pid=shell_pid)
            stop_sweep(job_dir, reason, cfg)
            return 0
        if trial_deadline is not None and now >= trial_deadline:
            stop_trial(job_dir, index, f"trial timeout: limits.trial_timeout={trial_timeout}s reached", shell_pid=shell_pid)
            return 0
        if policy and now >= next_check:
            next_check = now + poll
            try:
                points = mx.trial_history(trial_dir(job_dir, index), metric)
            except Exception as exc:  # noqa: BLE001 - a tracking server hiccup must not stop the trial
                sys.stderr.write(f"hpcjobs sweep: cannot read {metric} of trial {index}: {exc}\n")
                points = last_published
            if points != last_published:
                _write_atomic(live, json.dumps({"points": _points_json(points), "time": now}))
                last_published = points
            why = check_early_termination(job_dir, index, cfg, points)
            if why:
                stop_trial(job_dir, index, why, shell_pid=shell_pid)
                return 0
        waits = [next_check if policy else now + 1.0, now + 1.0]
        if sweep_deadline is not None:
            waits.append(sweep_deadline)
        if trial_deadline is not None:
            waits.append(trial_deadline)
        time.sleep(max(0.05, min(waits) - time.time()))
    return 0


# --------------------------------------------------------------------------- record / collect
def record(job_dir: str, index: int, exit_code: int) -> dict[str, Any]:
    """Append trial *index*'s outcome to ``results.jsonl`` and return it."""
    cfg = load_config(job_dir)
    metric = cfg["objective"]["primary_metric"]
    tdir = trial_dir(job_dir, index)
    reason = _read_text(os.path.join(tdir, ".hpcjobs", "stop_reason"))
    try:
        points = mx.ordered(mx.trial_history(tdir, metric))
        error = None
    except Exception as exc:  # noqa: BLE001 - record what we can
        points, error = [], f"{type(exc).__name__}: {exc}"
    if exit_code == 0:
        status = "completed"
    elif reason:
        status = "canceled"
    else:
        status = "failed"
    rec: dict[str, Any] = {
        "index": index,
        "status": status,
        "exit_code": exit_code,
        "stop_reason": reason,
        "value": mx.final_value(points),
        "points": _points_json(points),
        "time": time.time(),
    }
    if error:
        rec["metric_error"] = error
    with _locked(job_dir), open(_hp(job_dir, "results.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
    with contextlib.suppress(OSError):
        os.unlink(_hp(job_dir, "live", f"{index}.json"))
    return rec


def collect(job_dir: str) -> dict[str, Any]:
    """Every started trial's outcome, primary metric and parameters (bayesian), as JSON data."""
    cfg = load_config(job_dir)
    metric = cfg["objective"]["primary_metric"]
    results = load_results(job_dir)
    live = load_live(job_dir)
    trials: dict[str, dict[str, Any]] = {}
    try:
        started = sorted(int(n) for n in os.listdir(os.path.join(job_dir, "trials")) if n.isdigit())
    except OSError:
        started = []
    for idx in started:
        entry: dict[str, Any] = {}
        tdir = trial_dir(job_dir, idx)
        res = results.get(idx)
        if res is not None:
            entry.update({k: res.get(k) for k in ("status", "exit_code", "stop_reason", "value")})
            entry["n_points"] = len(res.get("points") or [])
        else:
            points = live.get(idx)
            if points is None:
                try:
                    points = mx.trial_history(tdir, metric, timeout=5.0)
                except Exception:  # noqa: BLE001 - a metric we cannot read is shown as missing
                    points = []
            entry["value"] = mx.final_value(points)
            entry["n_points"] = len(points)
            reason = _read_text(os.path.join(tdir, ".hpcjobs", "stop_reason"))
            if reason:
                entry["stop_reason"] = reason
        if cfg.get("algorithm") == "bayesian":
            try:
                with open(os.path.join(tdir, "params.json"), encoding="utf-8") as fh:
                    entry["params"] = json.load(fh)
            except (OSError, ValueError):
                pass
        trials[str(idx)] = entry
    out: dict[str, Any] = {"trials": trials, "primary_metric": metric}
    stopped = _read_text(_hp(job_dir, "sweep_stopped"))
    if stopped:
        out["sweep_stopped"] = stopped
    return out


# --------------------------------------------------------------------------- best trial / finalize
def best_of(candidates: Any, goal: str) -> tuple[int, float] | None:
    """The best ``(index, value)`` of *candidates* for *goal* (``maximize``/``minimize``).

    Values that are not numbers, and NaN, never win; ties go to the lowest index.  The
    one rule for "the best trial": ``job show`` (:mod:`hpcjobs.sweep_status`) and the
    finalize job of a pipeline's sweep step both use it.
    """
    best: tuple[int, float] | None = None
    for index, value in sorted(candidates, key=lambda c: int(c[0])):
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            continue
        if best is None or (value > best[1] if goal == "maximize" else value < best[1]):
            best = (int(index), float(value))
    return best


def _trial_params(job_dir: str, index: int) -> dict[str, Any]:
    try:
        with open(os.path.join(trial_dir(job_dir, index), "params.json"), encoding="utf-8") as fh:
            return dict(json.load(fh))
    except (OSError, ValueError, TypeError):
        pass
    try:
        with open(os.path.join(job_dir, "trials.json"), encoding="utf-8") as fh:
            rows = json.load(fh)["trials"]
        return dict(rows[index]["params"] or {})
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return {}


def _link_or_copy(src: str, dst: str) -> None:
    import shutil

    if os.path.lexists(dst):
        os.unlink(dst)
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        # another filesystem (a datastore), or links not allowed there
        shutil.copy2(src, dst, follow_symlinks=False)


def place_output(src: str, dst: str, kind: str) -> bool:
    """Put the trial's output *src* at *dst* (a folder merged into, or a file); False if *src* is missing."""
    import shutil

    if kind == "uri_file":
        if not os.path.isfile(src):
            return False
        os.makedirs(os.path.dirname(dst) or ".", exist_ok=True)
        _link_or_copy(src, dst)
        return True
    os.makedirs(dst, exist_ok=True)
    if not os.path.isdir(src):
        return False
    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True, copy_function=_link_or_copy)
    return True


def finalize(job_dir: str, state_dir: str | None = None) -> int:
    """Pick the best completed trial and place its outputs as the step's (see the module docstring)."""
    cfg = load_config(job_dir)
    objective = cfg["objective"]
    metric = objective["primary_metric"]
    data = collect(job_dir)
    trials = data["trials"]
    out = sys.stdout
    if not trials:
        # the arrays ended without running anything: they were cancelled before any trial started
        msg = "no trial of the sweep ran: its trials were canceled before they started"
        sys.stderr.write(f"hpcjobs sweep: {msg}\n")
        if state_dir:
            _write_atomic(os.path.join(state_dir, "canceled"), msg + "\n")
        return 143
    completed = {int(i): t.get("value") for i, t in trials.items() if t.get("status") == "completed"}
    counts: dict[str, int] = {}
    for t in trials.values():
        counts[str(t.get("status") or "unknown")] = counts.get(str(t.get("status") or "unknown"), 0) + 1
    out.write(f"hpcjobs sweep: {len(trials)} trial(s) ran: {json.dumps(counts, sort_keys=True)}\n")
    best = best_of(completed.items(), objective["goal"])
    if best is None:
        why = (
            "no trial completed"
            if not completed
            else f"{len(completed)} trial(s) completed, but none logged the primary metric '{metric}'"
        )
        sys.stderr.write(f"hpcjobs sweep: {why}: the sweep step has no best trial and no outputs\n")
        return NO_METRIC if completed else NO_TRIAL_COMPLETED
    index, value = best
    placed: dict[str, str] = {}
    for name, where in sorted((cfg.get("best_outputs") or {}).items()):
        src = str(where["trial"]).replace("$HPCJOBS_TASK_INDEX", str(index))
        dst = str(where["path"])
        if place_output(src, dst, str(where.get("type") or "uri_folder")):
            placed[name] = dst
        else:
            sys.stderr.write(f"hpcjobs sweep: the best trial ({index}) did not write its output '{name}' ({src})\n")
    report = {
        "index": index,
        "primary_metric": metric,
        "value": value,
        "params": _trial_params(job_dir, index),
        "outputs": placed,
    }
    _write_atomic(_hp(job_dir, "best.json"), json.dumps(report, sort_keys=True) + "\n")
    out.write(f"hpcjobs sweep: best trial {index} ({metric}={value!r}, parameters {json.dumps(report['params'])})\n")
    for name, dst in placed.items():
        out.write(f"hpcjobs sweep: output {name} = trial {index}'s, at {dst}\n")
    return 0


# --------------------------------------------------------------------------- ask (bayesian)
def _tell_results(sampler: Any, mapping: dict[str, int], results: dict[int, dict[str, Any]]) -> None:
    pending = set(sampler.pending())
    for idx, res in results.items():
        number = mapping.get(str(idx))
        if number is None or number not in pending:
            continue
        value = res.get("value")
        status = res.get("status")
        if status == "completed" and isinstance(value, int | float) and math.isfinite(value):
            sampler.tell(number, float(value))
        elif status == "canceled":
            sampler.tell(number, None)  # stopped early: pruned
        else:
            sampler.tell(number, None, failed=True)


def ask(job_dir: str, index: int) -> dict[str, Any]:
    """Parameters for trial *index*: asked once from the bayesian sampler, then remembered."""
    from hpcjobs.sweep.bayes import BayesianSampler

    cfg = load_config(job_dir)
    params_path = os.path.join(trial_dir(job_dir, index), "params.json")
    with _locked(job_dir):
        index_path = _hp(job_dir, "bayes_index.json")
        try:
            with open(index_path, encoding="utf-8") as fh:
                mapping: dict[str, int] = json.load(fh)
        except (OSError, ValueError):
            mapping = {}
        if str(index) in mapping:
            # a requeued or restarted trial keeps its parameters
            with contextlib.suppress(OSError, ValueError), open(params_path, encoding="utf-8") as fh:
                return dict(json.load(fh))
        space = cfg["search_space"]
        state_path = _hp(job_dir, "bayes_state.json")
        if os.path.exists(state_path):
            sampler = BayesianSampler.load(state_path, space)
        else:
            sampler = BayesianSampler(space, cfg["objective"]["goal"], cfg.get("seed"))
        _tell_results(sampler, mapping, load_results(job_dir))
        ((number, params),) = sampler.ask(1)
        mapping[str(index)] = number
        sampler.save(state_path)
        _write_atomic(index_path, json.dumps(mapping))
        _write_atomic(params_path, json.dumps(params))
    return params


def exports(params: dict[str, Any]) -> str:
    """Bash lines that export *params* as ``AZUREML_SWEEP_<name>`` and mark the trial found."""
    from hpcjobs.shellquote import shq, shq_env_name
    from hpcjobs.sweep.sampling import format_value

    lines = [f"export {shq_env_name('AZUREML_SWEEP_' + k)}={shq(format_value(v))}" for k, v in params.items()]
    lines.append("HPCJOBS_TRIAL_FOUND=1")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- entry
USAGE = """usage: python -m hpcjobs.sweep.controller COMMAND JOB_DIR [ARGS]
  ask JOB_DIR INDEX            print the bayesian parameters of trial INDEX (bash exports)
  watch JOB_DIR INDEX PID      watch trial INDEX: timeouts and early termination
  record JOB_DIR INDEX CODE    record the outcome of trial INDEX
  stop JOB_DIR REASON          stop the whole sweep
  collect JOB_DIR              print every trial's outcome and metric as JSON
  finalize JOB_DIR [STATE_DIR] pick the best trial, place its outputs as the step's
"""


def main(argv: list[str] | None = None) -> int:
    """Command-line entry (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        sys.stderr.write(USAGE)
        return 2
    cmd, job_dir, rest = args[0], args[1], args[2:]
    try:
        if cmd == "ask" and len(rest) == 1:
            sys.stdout.write(exports(ask(job_dir, int(rest[0]))))
            return 0
        if cmd == "watch" and len(rest) == 2:
            return watch(job_dir, int(rest[0]), int(rest[1]))
        if cmd == "record" and len(rest) == 2:
            record(job_dir, int(rest[0]), int(rest[1]))
            return 0
        if cmd == "stop" and len(rest) == 1:
            stop_sweep(job_dir, rest[0])
            return 0
        if cmd == "finalize" and len(rest) <= 1:
            return finalize(job_dir, rest[0] if rest else None)
        if cmd == "collect" and not rest:
            sys.stdout.write(json.dumps(collect(job_dir)) + "\n")
            return 0
    except Exception as exc:  # noqa: BLE001 - one line for the trial's log, never a traceback wall
        sys.stderr.write(f"hpcjobs sweep {cmd}: {type(exc).__name__}: {exc}\n")
        return 1
    sys.stderr.write(USAGE)
    return 2


if __name__ == "__main__":
    sys.exit(main())
