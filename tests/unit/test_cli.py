"""The user journey of issue 2 through the real ``hpcjobs`` CLI on the embedded default (this machine)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EX = REPO / "examples"
NAME_RE = re.compile(r"^[a-z]+_[a-z]+_[bcdfghjklmnpqrstvwxyz0-9]{10}$")
RACE_REASON = "the job's process ended without reporting an exit code"
ENDED_BUG = (
    "bug: templates/job.sh.j2 hpcjobs_finish writes exit_code before ended, and hpcjobs/backends/local.py _state "
    "marks the job Completed with ended=None when it reads between the two; Completed is terminal, so the job's "
    "end_time stays null for ever"
)
RACE_BUG = (
    "bug: hpcjobs/backends/local.py _alive() reads /proc/PID/cmdline, which is empty for a few ms while the "
    "freshly spawned runner is still in execve; the job is then marked Failed ('ended without reporting an "
    "exit code') although it runs and completes"
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _no_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow tracking (a later issue, tested on its own) costs seconds per job; off unless asked for."""
    monkeypatch.setenv("HPCJOBS_TRACKING", "none")


@pytest.fixture
def default_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run with the embedded default exactly as a user gets it (tracking included)."""
    monkeypatch.delenv("HPCJOBS_TRACKING", raising=False)


def write_job(tmp_path: Path, text: str, name: str = "job.yml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def ok(res: Any) -> Any:
    assert res.returncode == 0, f"exit {res.returncode}\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}"
    assert "Traceback" not in res.stderr
    return res


def user_error(res: Any) -> Any:
    assert res.returncode == 2, f"exit {res.returncode}\n--- stdout ---\n{res.stdout}\n--- stderr ---\n{res.stderr}"
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: ")
    return res


def job_dir_of(home: Path, name: str) -> Path:
    return home / "state" / "jobs" / name


def guard_race(view: dict[str, Any], home: Path) -> None:
    """The spawn race (see test_local_state_right_after_spawn) shows up as Failed without exit code."""
    if view.get("status") == "Failed" and view.get("reason") == RACE_REASON:
        rc = job_dir_of(home, view["name"]) / ".hpcjobs" / "exit_code"
        time.sleep(0.5)
        pytest.xfail(RACE_BUG + f" (the job's own exit code file says {rc.read_text().strip() if rc.exists() else 'nothing'})")


def stream_view(res: Any, home: Path) -> dict[str, Any]:
    """The final view printed by ``job create --stream -o json`` (the log goes to stderr then)."""
    view = json.loads(res.stdout)
    guard_race(view, home)
    return view


# --------------------------------------------------------------------------- the journey of the issue
@pytest.mark.usefixtures("default_tracking")
def test_stream_hello_world_input_with_set(run_cli: Callable[..., Any], tmp_path: Path, hpcjobs_home: Path) -> None:
    res = run_cli(
        "job", "create", "-f", EX / "hello-world-input.yml", "--set", "inputs.hello_number=24", "--stream", cwd=tmp_path
    )
    if res.returncode != 0 and RACE_REASON in res.stderr:
        pytest.xfail(RACE_BUG)
    ok(res)
    lines = res.stdout.splitlines()
    assert "hello world" in lines and "24" in lines and lines.index("hello world") < lines.index("24"), res.stdout
    assert "Status: Completed" in res.stderr
    assert re.search(r"RunId: [a-z]+_[a-z]+_\w{10}", res.stderr)


@pytest.mark.usefixtures("default_tracking")
def test_org_journey(
    run_cli: Callable[..., Any], wait_done: Callable[..., dict[str, Any]], tmp_path: Path, hpcjobs_home: Path
) -> None:
    # name=$(hpcjobs job create -f examples/hello-world-org.yml --query name -o tsv)
    res = ok(run_cli("job", "create", "-f", EX / "hello-world-org.yml", "--query", "name", "-o", "tsv", cwd=tmp_path))
    name = res.stdout.strip()
    assert NAME_RE.match(name), name
    final = wait_done(name)
    guard_race(final, hpcjobs_home)
    assert final["status"] == "Completed"

    # hpcjobs job show -n "$name": status, times, paths
    view = json.loads(ok(run_cli("job", "show", "-n", name)).stdout)
    assert view["name"] == name and view["status"] == "Completed" and view["exit_code"] == 0
    assert view["display_name"] == "hello-world-example" and view["experiment_name"] == "hello-world-example"
    assert view["tags"] == {"hello": "world"}
    assert view["description"].startswith("# Azure Machine Learning")
    assert view["creation_context"]["created_at"] and view["start_time"]
    # checked at the end: a known race can leave end_time null (see test_completed_job_has_an_end_time)
    missing_end_time = view["end_time"] is None
    if not missing_end_time:
        assert view["start_time"] <= view["end_time"]
    assert view["elapsed_seconds"] is not None and view["elapsed_seconds"] >= 0
    assert view["site"] == "local"
    assert view["paths"]["job_dir"] == str(job_dir_of(hpcjobs_home, name))
    assert "hello world" in Path(view["paths"]["log"]).read_text().splitlines()

    # hpcjobs job update -n "$name" --set display_name="new name" --set tags.hello=updated
    updated = json.loads(
        ok(run_cli("job", "update", "-n", name, "--set", "display_name=new name", "--set", "tags.hello=updated")).stdout
    )
    assert updated["display_name"] == "new name" and updated["tags"] == {"hello": "updated"}
    shown = json.loads(ok(run_cli("job", "show", "-n", name, "--query", "{d: display_name, t: tags, s: status}")).stdout)
    assert shown == {"d": "new name", "t": {"hello": "updated"}, "s": "Completed"}

    # immutable fields are refused, clearly
    for bad in ("compute=azureml:gpu-cluster", "command=echo changed"):
        err = user_error(run_cli("job", "update", "-n", name, "--set", bad)).stderr
        field = bad.split("=", 1)[0]
        assert f"'{field}' cannot be changed after a job is created" in err
        assert "display_name, description, tags and properties" in err

    # hpcjobs job download -n "$name" --all --download-path ./got
    got = tmp_path / "got"
    ok(run_cli("job", "download", "-n", name, "--all", "--download-path", got, cwd=tmp_path))
    assert "hello world" in (got / "artifacts" / "user_logs" / "std_log.txt").read_text().splitlines()

    # job stream on a completed job exits 0 and prints the log
    res = ok(run_cli("job", "stream", "-n", name))
    assert "hello world" in res.stdout and "Status: Completed" in res.stderr
    if missing_end_time:
        pytest.xfail(ENDED_BUG)


def test_output_example_downloads_outputs(run_cli: Callable[..., Any], tmp_path: Path, hpcjobs_home: Path) -> None:
    view = stream_view(ok(run_cli("job", "create", "-f", EX / "hello-world-output.yml", "--stream", "-o", "json")), hpcjobs_home)
    assert view["status"] == "Completed"
    ok(run_cli("job", "download", "-n", view["name"], "--download-path", tmp_path / "dl"))
    assert (tmp_path / "dl" / "artifacts" / "outputs" / "helloworld.txt").read_text() == "hello world\n"


def test_hello_code_runs_in_the_code_folder(run_cli: Callable[..., Any], tmp_path: Path, hpcjobs_home: Path) -> None:
    res = run_cli("job", "create", "-f", EX / "hello-code.yml", "--stream", cwd=tmp_path)
    if res.returncode != 0 and RACE_REASON in res.stderr:
        pytest.xfail(RACE_BUG)
    ok(res)
    lines = res.stdout.splitlines()
    assert "hello.py" in lines
    assert "hello world from hello.py" in lines


def test_env_var_example(run_cli: Callable[..., Any], tmp_path: Path, hpcjobs_home: Path) -> None:
    res = run_cli("job", "create", "-f", EX / "hello-world-env-var.yml", "--stream", cwd=tmp_path)
    if res.returncode != 0 and RACE_REASON in res.stderr:
        pytest.xfail(RACE_BUG)
    assert "hello world" in ok(res).stdout.splitlines()


def test_failing_command(run_cli: Callable[..., Any], tmp_path: Path, hpcjobs_home: Path) -> None:
    job = write_job(tmp_path, "command: echo before; exit 3\n")
    res = run_cli("job", "create", "-f", job, "--stream", "-o", "json")
    assert res.returncode == 1, res.stderr
    view = json.loads(res.stdout)
    assert view["status"] == "Failed" and view["exit_code"] == 3 and view["reason"] == "exit code 3"
    assert "before" in res.stderr and "Status: Failed" in res.stderr
    shown = json.loads(ok(run_cli("job", "show", "-n", view["name"])).stdout)
    assert shown["status"] == "Failed" and shown["exit_code"] == 3
    assert run_cli("job", "stream", "-n", view["name"]).returncode == 1


def _pids_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmd:
            found.append(int(entry.name))
    return found


def test_cancel_a_running_job(
    run_cli: Callable[..., Any], wait_done: Callable[..., dict[str, Any]], tmp_path: Path, hpcjobs_home: Path
) -> None:
    from hpcjobs import api

    job = write_job(tmp_path, "command: sleep 600\n")
    name = ok(run_cli("job", "create", "-f", job, "--query", "name", "-o", "tsv")).stdout.strip()
    deadline = time.monotonic() + 120
    view = api.show_job(name)
    while view["status"] != "Running":
        guard_race(view, hpcjobs_home)
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
        view = api.show_job(name)
    pid = int(view["scheduler"]["job_ids"][0].split(":", 1)[1])
    job_dir = str(job_dir_of(hpcjobs_home, name))
    assert _pids_mentioning(job_dir), "the job's processes should be running"
    t0 = time.monotonic()
    canceled = json.loads(ok(run_cli("job", "cancel", "-n", name)).stdout)
    assert canceled["status"] == "Canceled"
    assert time.monotonic() - t0 < 120  # not the 600 s the job sleeps
    # the runner and the job's bash and sleep are gone
    deadline = time.monotonic() + 30
    while _pids_mentioning(job_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pids_mentioning(job_dir)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert wait_done(name)["status"] == "Canceled"
    assert run_cli("job", "stream", "-n", name).returncode == 3


def test_list_filters_and_output_formats(run_cli: Callable[..., Any], tmp_path: Path, hpcjobs_home: Path) -> None:
    from hpcjobs.store import JobRecord, Store

    # recorded jobs in end states: listing needs no running process
    store = Store()
    now = time.time()
    store.add(
        JobRecord(
            name="done_one",
            type="command",
            site="local",
            status="Completed",
            token="a",
            created=now - 3,
            tags={"hello": "world"},
            experiment_name="e1",
        )
    )
    store.add(
        JobRecord(
            name="failed_one", type="command", site="local", status="Failed", token="b", created=now - 2, tags={"other": "x"}
        )
    )
    store.add(
        JobRecord(
            name="done_two",
            type="command",
            site="local",
            status="Completed",
            token="c",
            created=now - 1,
            tags={"hello": "again"},
            experiment_name="e2",
        )
    )
    store.close()

    names = json.loads(ok(run_cli("job", "list", "--query", "[].name", "-o", "json")).stdout)
    assert names == ["done_two", "failed_one", "done_one"]
    jobs = json.loads(ok(run_cli("job", "list", "--status", "Completed", "-o", "json")).stdout)
    assert [j["name"] for j in jobs] == ["done_two", "done_one"]
    assert all(j["status"] == "Completed" for j in jobs)
    tagged = yaml.safe_load(ok(run_cli("job", "list", "--tag", "hello", "-o", "yaml")).stdout)
    assert [j["name"] for j in tagged] == ["done_two", "done_one"]
    exact = json.loads(ok(run_cli("job", "list", "--tag", "hello=world", "--query", "[].name", "-o", "json")).stdout)
    assert exact == ["done_one"]
    tsv = ok(run_cli("job", "list", "--status", "failed", "-o", "tsv")).stdout.splitlines()
    assert len(tsv) == 1 and tsv[0].split("\t")[0] == "failed_one"
    table = ok(run_cli("job", "list")).stdout
    assert "done_two" in table and "failed_one" in table and "name" in table
    err = user_error(run_cli("job", "list", "--status", "Finished")).stderr
    assert "unknown status 'Finished'" in err


def test_generated_names_look_like_azures_and_are_unique() -> None:
    from hpcjobs.names import generate_job_name

    names = [generate_job_name() for _ in range(5000)]
    assert all(NAME_RE.match(n) for n in names), [n for n in names if not NAME_RE.match(n)][:5]
    assert len(set(names)) == len(names)


def test_duplicate_name_is_refused(run_cli: Callable[..., Any], wait_done: Callable[..., dict[str, Any]], tmp_path: Path) -> None:
    job = write_job(tmp_path, "command: 'true'\n")
    first = json.loads(ok(run_cli("job", "create", "-f", job, "--name", "my-job_1")).stdout)
    assert first["name"] == "my-job_1"
    err = user_error(run_cli("job", "create", "-f", job, "--name", "my-job_1")).stderr
    assert "a job named 'my-job_1' already exists" in err
    bad = user_error(run_cli("job", "create", "-f", job, "--name", "bad name!")).stderr
    assert "invalid job name" in bad
    wait_done("my-job_1")


def test_dry_run_touches_nothing(run_cli: Callable[..., Any], tmp_path: Path, hpcjobs_home: Path) -> None:
    res = ok(
        run_cli("job", "create", "-f", EX / "hello-world-input.yml", "--dry-run", "--set", "inputs.hello_number=24", cwd=tmp_path)
    )
    assert "#!/bin/bash" in res.stdout
    assert 'echo "${AZURE_ML_INPUT_hello_string}"' in res.stdout
    assert "export AZURE_ML_INPUT_hello_number=24" in res.stdout
    plan = json.loads(ok(run_cli("job", "create", "-f", EX / "hello-world.yml", "--dry-run", "-o", "json")).stdout)
    assert plan["scripts"] and plan["scripts"][0]["text"].startswith("#!/bin/bash")
    # no job, no job directory, nothing in the working directory
    assert not (hpcjobs_home / "state" / "jobs").exists() or not any((hpcjobs_home / "state" / "jobs").iterdir())
    assert json.loads(ok(run_cli("job", "list", "-o", "json")).stdout) == []
    assert list(tmp_path.iterdir()) == []


def test_show_unknown_job_suggests(run_cli: Callable[..., Any]) -> None:
    from hpcjobs.store import JobRecord, Store

    err = user_error(run_cli("job", "show", "-n", "nope")).stderr
    assert "no job named 'nope'" in err
    Store().add(JobRecord(name="nope_job", type="command", site="local", status="Completed", token="t", created=time.time()))
    err = user_error(run_cli("job", "show", "-n", "nope")).stderr
    assert "did you mean 'nope_job'" in err


def test_update_requires_something(run_cli: Callable[..., Any]) -> None:
    from hpcjobs.store import JobRecord, Store

    Store().add(JobRecord(name="j1", type="command", site="local", status="Completed", token="t", created=time.time()))
    assert "nothing to update" in user_error(run_cli("job", "update", "-n", "j1")).stderr
    res = json.loads(ok(run_cli("job", "update", "-n", "j1", "--set", "description=two words", "--set", "properties.k=5")).stdout)
    assert res["description"] == "two words" and res["properties"] == {"k": "5"}


def test_bad_output_format_and_query(run_cli: Callable[..., Any]) -> None:
    assert "unknown output format" in user_error(run_cli("job", "list", "-o", "xml")).stderr
    assert "--query" in user_error(run_cli("job", "list", "--query", "[?")).stderr


def test_every_example_validates_via_the_cli(forked_cli: Callable[..., Any], hpcjobs_home: Path) -> None:
    jobs = [p for p in sorted(EX.rglob("*.yml")) if "Component.schema.json" not in p.read_text()[:400]]
    results = forked_cli([["job", "validate", "-f", str(p)] for p in jobs], home=hpcjobs_home, cwd=REPO)
    for path, res in zip(jobs, results, strict=True):
        assert res.returncode == 0, f"{path}: {res.stderr}"
        assert json.loads(res.stdout)["valid"] is True


def test_version_and_help(run_cli: Callable[..., Any]) -> None:
    assert ok(run_cli("--version")).stdout.startswith("hpcjobs ")
    helptext = ok(run_cli("job", "--help")).stdout
    for verb in ("create", "validate", "show", "list", "stream", "cancel", "update", "download"):
        assert verb in helptext


# --------------------------------------------------------------------------- the spawn race, reproduced directly
def test_local_state_right_after_spawn(tmp_path: Path) -> None:
    """A job whose runner was just started is Queued, never Failed (tried 20 times)."""
    from hpcjobs.backends.local import LocalBackend
    from hpcjobs.site import local_site
    from hpcjobs.store import JobRecord
    from hpcjobs.transport.local import LocalTransport

    backend = LocalBackend(local_site())
    seen = []
    for i in range(20):
        jd = tmp_path / f"j{i}"
        (jd / ".hpcjobs").mkdir(parents=True)
        (jd / "job.sh").write_text("sleep 5\n")
        run = {
            "max_parallel": 1,
            "scripts": [
                {
                    "key": "main",
                    "script": str(jd / "job.sh"),
                    "tasks": 1,
                    "depends_on": [],
                    "log": str(jd / "log.txt"),
                    "state_dirs": [str(jd / ".hpcjobs")],
                }
            ],
        }
        (jd / ".hpcjobs" / "run.json").write_text(json.dumps(run))
        pid = LocalTransport().spawn_detached(
            [sys.executable, "-m", "hpcjobs.localrun", str(jd / ".hpcjobs" / "run.json")],
            log_path=str(jd / "runner.log"),
            cwd=str(jd),
        )
        rec = JobRecord(
            name=f"j{i}", type="command", site="local", status="Queued", token="t", job_dir=str(jd), slurm_ids=[f"local:{pid}"]
        )
        try:
            seen.append(backend._state(rec)["status"])
        finally:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert set(seen) <= {"Queued", "Running"}, seen


def test_completed_job_has_an_end_time(tmp_path: Path) -> None:
    """The state a refresh can see between the script's two last writes: exit_code is there, ended not yet."""
    from hpcjobs.backends.local import LocalBackend
    from hpcjobs.site import local_site
    from hpcjobs.store import JobRecord

    state = tmp_path / "job" / ".hpcjobs"
    state.mkdir(parents=True)
    (state / "started").write_text(f"{int(time.time()) - 1}\n")
    (state / "exit_code").write_text("0\n")
    rec = JobRecord(name="j", type="command", site="local", status="Running", token="t", job_dir=str(tmp_path / "job"))
    changes = LocalBackend(local_site())._state(rec)
    assert changes["status"] == "Completed"
    assert changes.get("ended") is not None


# --------------------------------------------------------------------------- job create without typer (hpcjobs/cli/fast.py)
def _typer_options(command: Any) -> tuple[dict[str, str], dict[str, str], set[str]]:
    """(option -> parameter, flag -> parameter, repeatable parameters) as typer declares them."""
    names = {"set_": "sets"}  # the typer function's parameter names -> fast.job_create's
    options: dict[str, str] = {}
    flags: dict[str, str] = {}
    multiple: set[str] = set()
    for p in command.params:
        if p.name == "help":
            continue
        dest = names.get(p.name, p.name)
        target = flags if p.is_flag else options
        for decl in [*p.opts, *p.secondary_opts]:
            target[decl] = dest
        if p.multiple:
            multiple.add(dest)
    return options, flags, multiple


def test_fast_job_create_knows_exactly_the_typer_options() -> None:
    import typer

    from hpcjobs.cli import fast
    from hpcjobs.cli.app import app

    command = typer.main.get_command(app).commands["job"].commands["create"]  # type: ignore[attr-defined]
    options, flags, multiple = _typer_options(command)
    assert options == fast.JOB_CREATE_OPTIONS
    assert flags == fast.JOB_CREATE_FLAGS
    assert multiple == set(fast.JOB_CREATE_MULTIPLE)
    assert {p.name for p in command.params if p.required} == {"file"}


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["job", "create", "-f", "a.yml"], {"file": "a.yml", "sets": []}),
        (
            ["job", "create", "--file=a.yml", "--set", "x=1", "--set=y=-2", "-o", "none", "--dry-run", "-n", "nm", "-s", "st"],
            {"file": "a.yml", "sets": ["x=1", "y=-2"], "output": "none", "dry_run": True, "name": "nm", "site": "st"},
        ),
        (
            ["job", "create", "--stream", "--web", "--query", "name", "-f", ""],
            {"file": "", "sets": [], "stream": True, "web": True, "query": "name"},
        ),
    ],
)
def test_fast_job_create_parses_plain_options(argv: list[str], expected: dict[str, Any]) -> None:
    from hpcjobs.cli import fast

    assert fast.parse_job_create(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["job", "create"],  # no --file: typer says it is missing
        ["job", "create", "-f"],
        ["job", "create", "-f", "a.yml", "--help"],
        ["job", "create", "-fa.yml"],
        ["job", "create", "-f", "a.yml", "-f", "b.yml"],
        ["job", "create", "-f", "a.yml", "--stream", "--stream"],
        ["job", "create", "-f", "-"],
        ["job", "create", "-f", "a.yml", "--name", "-x"],
        ["job", "create", "-f", "a.yml", "--stream=yes"],
        ["job", "create", "-f", "a.yml", "extra"],
        ["job", "create", "-f", "a.yml", "--"],
        ["job", "create", "-f", "a.yml", "--bogus"],
        ["job", "validate", "-f", "a.yml"],
        ["--version", "job", "create", "-f", "a.yml"],
        ["job"],
        [],
    ],
)
def test_anything_else_goes_to_typer(argv: list[str]) -> None:
    from hpcjobs.cli import fast

    assert fast.parse_job_create(argv) is None


def test_shell_completion_goes_to_typer(monkeypatch: pytest.MonkeyPatch) -> None:
    from hpcjobs.cli import fast

    monkeypatch.setenv("_HPCJOBS_COMPLETE", "bash_complete")
    assert fast.parse_job_create(["job", "create", "-f", "a.yml"]) is None


def test_job_create_does_not_import_typer(tmp_path: Path, hpcjobs_home: Path) -> None:
    code = (
        "import sys\n"
        "from hpcjobs.cli.main import main\n"
        "sys.argv = ['hpcjobs', 'job', 'create', '-f', sys.argv[1], '--dry-run', '-o', 'none']\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print(sorted(m for m in ('typer', 'rich', 'click', 'mlflow', 'paramiko', 'pathspec', 'hpcjobs.sweep.sampling') if m in sys.modules))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(EX / "hello-world.yml")], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


def test_fast_and_typer_job_create_print_the_same(run_cli: Callable[..., Any], tmp_path: Path) -> None:
    """The same dry run through the fast path and through typer (an option spelling it leaves to typer)."""
    args = ["job", "create", "--dry-run", "--set", "inputs.hello_number=24", "-o", "json"]
    fast_run = ok(run_cli(*args, "-f", str(EX / "hello-world-input.yml"), cwd=tmp_path))
    typer_run = ok(run_cli(*args, f"-f{EX / 'hello-world-input.yml'}", cwd=tmp_path))
    assert (fast_run.stdout, fast_run.stderr) == (typer_run.stdout, typer_run.stderr)
    bad = tmp_path / "bad.yml"
    bad.write_text("command: echo hi\nresources:\n  instance_count: many\n")
    errors = [run_cli("job", "create", "-f", str(bad), cwd=tmp_path), run_cli("job", "create", f"-f{bad}", cwd=tmp_path)]
    assert [e.returncode for e in errors] == [2, 2]
    assert errors[0].stderr == errors[1].stderr
    assert f"{bad}:3" in errors[0].stderr and "instance_count" in errors[0].stderr


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (("job", "create", "--bogus"), "No such option: --bogus"),
        (("job", "show"), "Missing option '--name'"),
        (("job", "nosuch"), "No such command 'nosuch'"),
        (("job", "list", "--max-results", "many"), "Invalid value"),
    ],
)
def test_usage_errors_exit_2_with_clicks_message(run_cli: Callable[..., Any], argv: tuple[str, ...], said: str) -> None:
    res = run_cli(*argv)
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert said in res.stderr and "Traceback" not in res.stderr and "unexpected" not in res.stderr
