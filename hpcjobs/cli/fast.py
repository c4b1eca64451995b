"""``hpcjobs job create`` without typer: the command users run most, started fast.

typer (0.29) costs 0.1-0.3 s of every run before a command starts: importing it, building
every command of the app, and one pydantic TypeAdapter per option of the command run.
``job create`` written with plain options (below) is parsed here and run by
:func:`job_create`, the same function the typer command calls.  Anything else (``--help``,
an unknown or repeated option, a missing value, a value starting with ``-``, ``--``, a
positional argument) returns ``None`` from :func:`parse_job_create`, and the typer app
handles the command line as before, so typer still writes every usage message.

``tests/unit/test_cli.py`` checks that :data:`JOB_CREATE_OPTIONS` and
:data:`JOB_CREATE_FLAGS` say exactly what the typer command declares.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

#: option spelling -> parameter of :func:`job_create` (options that take a value)
JOB_CREATE_OPTIONS: dict[str, str] = {
    "--file": "file",
    "-f": "file",
    "--set": "sets",
    "--name": "name",
    "-n": "name",
    "--site": "site",
    "-s": "site",
    "--output": "output",
    "-o": "output",
    "--query": "query",
}
#: flag -> parameter of :func:`job_create`
JOB_CREATE_FLAGS: dict[str, str] = {"--stream": "stream", "--dry-run": "dry_run", "--web": "web"}
#: options that may be given more than once (their values are collected in order)
JOB_CREATE_MULTIPLE = frozenset({"sets"})


def parse_job_create(argv: list[str]) -> dict[str, Any] | None:
    """``job create`` options from *argv* (``sys.argv[1:]``), or None to let typer parse it."""
    if argv[:2] != ["job", "create"] or any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return None  # another command, or a shell-completion request (typer answers those)
    out: dict[str, Any] = {"sets": []}
    seen: set[str] = set()
    args = argv[2:]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in JOB_CREATE_FLAGS:
            dest = JOB_CREATE_FLAGS[arg]
            value: Any = True
            i += 1
        else:
            key, eq, text = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            if key not in JOB_CREATE_OPTIONS:
                return None
            dest = JOB_CREATE_OPTIONS[key]
            if not eq:
                if i + 1 >= len(args):
                    return None
                text = args[i + 1]
            i += 1 if eq else 2
            if text.startswith("-"):
                return None  # click would take it as the value; typer decides, as before
            value = text
        if dest in JOB_CREATE_MULTIPLE:
            out[dest].append(value)
            continue
        if dest in seen:
            return None
        seen.add(dest)
        out[dest] = value
    if "file" not in out:
        return None
    return out


def warn(msg: str) -> None:
    """A warning line on stderr."""
    sys.stderr.write(f"warning: {msg}\n")


def note(msg: str) -> None:
    """An informational line on stderr."""
    sys.stderr.write(f"{msg}\n")


def job_create(
    file: str,
    sets: list[str] | None = None,
    name: str | None = None,
    site: str | None = None,
    stream: bool = False,
    dry_run: bool = False,
    web: bool = False,
    output: str | None = None,
    query: str | None = None,
) -> int:
    """``hpcjobs job create``: submit (or with *dry_run*, plan) a job file; the exit code."""
    from hpcjobs import api
    from hpcjobs.cli.output import emit

    if dry_run:
        plan = api.plan(file, sets or [], name=name, site=site)
        for w in dict.fromkeys(plan.warnings):
            warn(w)
        if output is not None or query:
            emit(plan.to_dict(), output or "json", query)
            return 0
        for s in plan.scripts:
            sys.stdout.write(f"# ===== {s.key}: {s.script_path} =====\n")
            sys.stdout.write(s.text)
        for path, data in plan.files.items():
            if path.endswith((".sh", ".json")) and len(data) < 20000:
                sys.stdout.write(f"# ===== file: {path} =====\n")
                sys.stdout.write(data.decode("utf-8", "replace") + "\n")
        return 0
    view = api.create_job(file, sets or [], name=name, site=site, on_warning=warn)
    if web:
        from hpcjobs.tracking import run_ui_url

        url = run_ui_url(view["name"])
        if url:
            note(f"MLflow run: {url}")
    if stream:
        note(f"RunId: {view['name']}")
        note(f"Site: {view['site']}  Compute: {view['compute']}  Scheduler ids: {', '.join(view['scheduler']['job_ids'])}")
        # with an explicit -o/--query, stdout carries only the result; the log goes to stderr
        log_out = sys.stderr.buffer if (output is not None or query) else sys.stdout.buffer
        status = api.stream_job(view["name"], log_out)
        final = api.show_job(view["name"], refresh_state=False)
        note(
            f"\nExecution Summary\n=================\nRunId: {final['name']}\nStatus: {final['status']}"
            + (f" ({final['reason']})" if final.get("reason") and status.value != "Completed" else "")
        )
        if query or output is not None:
            emit(final, output or "json", query)
        return api.exit_code_for(status)
    emit(view, output or "json", query)
    return 0


def run_job_create(opts: dict[str, Any]) -> int:
    """Run :func:`job_create` as the typer app would: Ctrl-C is exit 130, a closed pipe exit 1."""
    try:
        return job_create(**opts)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        if exc.errno != errno.EPIPE:
            raise
        from typer._click.utils import PacifyFlushWrapper

        sys.stdout = PacifyFlushWrapper(sys.stdout)
        sys.stderr = PacifyFlushWrapper(sys.stderr)
        return 1
