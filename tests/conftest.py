"""Fixtures shared by every test: an isolated hpcjobs home, the real CLI, waiting for jobs.

* ``hpcjobs_home`` -- a fresh ``HPCJOBS_HOME`` (state and config) per test; applied
  automatically to every test that is not an integration test, so no test ever reads or
  writes the user's real job store, sites or known_hosts.
* ``run_cli(*args, input=None, env=None, cwd=None, timeout=120)`` -- runs the REAL
  ``hpcjobs`` console script in a subprocess and returns the ``CompletedProcess``
  (text mode; ``text=False`` for bytes).
* ``wait_done(name, timeout=300)`` -- polls a job until it reaches an end state and
  returns its ``job show`` view.
* ``cli_runner`` -- the same runner for module/session-scoped fixtures (``home=`` explicit).
* ``forked_cli(calls, home=, cwd=)`` -- many short CLI runs (validate, dry runs) as forked
  children of this pre-imported process: the CLI's entry point, without ~1 s of imports each.
* ``--update-golden`` -- regenerate the golden files (``tests/golden/``) instead of comparing.

The whole session runs without the user's ``HPCJOBS_*``/``MLFLOW_*`` settings and with a
temporary ``HPCJOBS_HOME``, so even a test that forgets the fixture cannot touch real state.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TERMINAL_STATES = ("Completed", "Failed", "Canceled")

#: the user's settings that would change what hpcjobs does, prints or where it records runs;
#: removed for the whole session (a test may still set them itself)
_SCRUBBED_ENV = (
    "HPCJOBS_DEBUG",
    "HPCJOBS_SITE",
    "HPCJOBS_TRACKING",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_EXPERIMENT_NAME",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_RUN_ID",
    "FORCE_COLOR",
    "CLICOLOR_FORCE",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.sh from the current templates instead of comparing against them",
    )


def hpcjobs_argv() -> list[str]:
    """How to start the real CLI: the installed console script of this interpreter, else ``-m``."""
    beside = Path(sys.executable).parent / "hpcjobs"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("hpcjobs")
    if found:
        return [found]
    return [sys.executable, "-m", "hpcjobs.cli.main"]


def _is_integration(request: pytest.FixtureRequest) -> bool:
    if request.node.get_closest_marker("integration") is not None:
        return True
    return "integration" in Path(str(request.node.path)).parts


@pytest.fixture(scope="session", autouse=True)
def _scrubbed_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test sees the user's hpcjobs/MLflow settings, nor (by default) their real state."""
    with pytest.MonkeyPatch.context() as mp:
        for var in _SCRUBBED_ENV:
            mp.delenv(var, raising=False)
        mp.setenv("HPCJOBS_HOME", str(tmp_path_factory.mktemp("hpcjobs-session-home")))
        yield


@pytest.fixture(autouse=True)
def _isolated_home(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every non-integration test runs with its own HPCJOBS_HOME (see ``hpcjobs_home``)."""
    if _is_integration(request):
        yield
        return
    request.getfixturevalue("hpcjobs_home")
    yield


@pytest.fixture
def hpcjobs_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty HPCJOBS_HOME (the whole state + config location) for one test."""
    home = tmp_path_factory.mktemp("hpcjobs-home")
    monkeypatch.setenv("HPCJOBS_HOME", str(home))
    # unit tests check tracking explicitly (test_tracking*); elsewhere a finished job must
    # not start a background MLflow import on this small machine
    monkeypatch.setenv("HPCJOBS_TRACKING", "none")
    # transports are cached per process; a test must not see another test's
    try:
        from hpcjobs import backends

        backends.close_all()
    except Exception:  # pragma: no cover - a broken backend module must not break every test
        pass
    return home


def cli_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a CLI subprocess: the test's own (HPCJOBS_HOME included) plus *env*."""
    out = dict(os.environ)
    out.setdefault("NO_COLOR", "1")
    out["COLUMNS"] = "250"
    out["PYTHONIOENCODING"] = "utf-8"
    if env:
        out.update(env)
    return out


RunCli = Callable[..., "subprocess.CompletedProcess[Any]"]


def run_hpcjobs(
    *args: str,
    home: str | Path | None = None,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 120,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    """Run the real CLI once (with HPCJOBS_HOME=*home* if given, else the current one)."""
    extra = dict(env or {})
    if home is not None:
        extra["HPCJOBS_HOME"] = str(home)
    return subprocess.run(
        [*hpcjobs_argv(), *map(str, args)],
        input=input,
        capture_output=True,
        text=text,
        encoding="utf-8" if text else None,
        errors="surrogateescape" if text else None,
        env=cli_env(extra),
        cwd=str(cwd) if cwd is not None else None,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def run_cli(hpcjobs_home: Path) -> RunCli:
    """Run the real ``hpcjobs`` console script: ``run_cli("job", "list", "-o", "json")``.

    Keyword arguments: ``input``, ``env`` (added to the environment), ``cwd``, ``timeout``,
    ``text`` (False for bytes).  The test's HPCJOBS_HOME is passed on.
    """
    return run_hpcjobs


@pytest.fixture(scope="session")
def cli_runner() -> RunCli:
    """:func:`run_hpcjobs` for module/session-scoped fixtures (pass ``home=`` explicitly)."""
    return run_hpcjobs


def run_hpcjobs_forked(
    calls: list[list[str]],
    *,
    home: str | Path,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    parallel: int = 8,
) -> list[subprocess.CompletedProcess[str]]:
    """Run many short CLI commands as forked children of this (pre-imported) process.

    Each call runs ``hpcjobs.cli.main:main`` -- the console script's entry point -- in its
    own child process with ``sys.argv``, the environment, the working directory, stdout
    and stderr of a fresh CLI run, and reports its exit status.  It skips the ~1 s of
    interpreter start and imports per call, which matters for a corpus of a hundred
    files.  Only for commands that finish on their own (validate, dry runs).
    """
    import hpcjobs.api
    import hpcjobs.cli.app  # the typer app: main() imports it only for commands that need it
    import hpcjobs.cli.main

    workdir = Path(tempfile.mkdtemp(prefix="hpcjobs-forked-"))
    results: list[subprocess.CompletedProcess[str] | None] = [None] * len(calls)
    running: dict[int, int] = {}

    def reap(block: bool) -> None:
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == 0 or pid not in running:
            return
        i = running.pop(pid)
        out = (workdir / f"{i}.out").read_text("utf-8", "surrogateescape")
        err = (workdir / f"{i}.err").read_text("utf-8", "surrogateescape")
        results[i] = subprocess.CompletedProcess(["hpcjobs", *calls[i]], os.waitstatus_to_exitcode(status), out, err)

    sys.stdout.flush()
    sys.stderr.flush()
    for i, args in enumerate(calls):
        while len(running) >= parallel:
            reap(True)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                for fd, name in ((1, "out"), (2, "err")):
                    f = os.open(workdir / f"{i}.{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(f, fd)
                    os.close(f)
                sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="surrogateescape")
                sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace")
                os.environ.clear()
                os.environ.update(cli_env({**(env or {}), "HPCJOBS_HOME": str(home)}))
                if cwd is not None:
                    os.chdir(cwd)
                sys.argv = ["hpcjobs", *args]
                try:
                    hpcjobs.cli.main.main()
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 99
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        running[pid] = i
    while running:
        reap(True)
    shutil.rmtree(workdir, ignore_errors=True)
    return [r for r in results if r is not None]


@pytest.fixture(scope="session")
def forked_cli() -> Callable[..., list[subprocess.CompletedProcess[str]]]:
    """:func:`run_hpcjobs_forked`: many short CLI runs (``calls``, ``home=``, ``cwd=``) cheaply."""
    return run_hpcjobs_forked


def poll_until_ended(name: str, timeout: float = 300.0, poll: float = 0.2) -> dict[str, Any]:
    """Poll job *name* (of this process's HPCJOBS_HOME) in-process until it ends; its ``job show`` view.

    In-process on purpose: a CLI process per poll costs ~0.3 s of CPU, and a few tests
    polling that way kept a 2-core CI machine busy doing nothing else.  *timeout* is a
    hang guard, not a timing assertion.
    """
    from hpcjobs import api

    deadline = time.monotonic() + timeout
    view = api.show_job(name)
    while view["status"] not in TERMINAL_STATES:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {name} still {view['status']} after {timeout} s: {view}")
        time.sleep(poll)
        view = api.show_job(name)
    return view


@pytest.fixture
def wait_done(hpcjobs_home: Path) -> Callable[..., dict[str, Any]]:
    """``wait_done(name, timeout=300)``: poll a job until it ends; return its ``job show`` view."""
    return poll_until_ended
