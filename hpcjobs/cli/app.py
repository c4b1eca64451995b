"""The ``hpcjobs`` typer app: every command and group.

The console script's entry point is :func:`hpcjobs.cli.main.main`; it imports this module
only when a command needs typer (``job create`` with plain options does not: see
:mod:`hpcjobs.cli.fast`).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from hpcjobs import __version__
from hpcjobs.cli import fast
from hpcjobs.cli.output import emit
from hpcjobs.errors import HpcjobsError

app = typer.Typer(
    name="hpcjobs",
    help="Run Azure ML v2 job YAML on Slurm clusters, over SSH, or on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
job_app = typer.Typer(help="Create and manage jobs (like `az ml job`).", no_args_is_help=True)
site_app = typer.Typer(help="Configure sites: clusters you submit to.", no_args_is_help=True)
compute_app = typer.Typer(help="Computes (partitions) of a site, with live state.", no_args_is_help=True)
app.add_typer(job_app, name="job")
app.add_typer(site_app, name="site")
app.add_typer(compute_app, name="compute")

Output = Annotated[str, typer.Option("--output", "-o", help="Output format: table, json, yaml, tsv, none.")]
Query = Annotated[str | None, typer.Option("--query", help="JMESPath query applied to the output (as az --query).")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override a field: --set inputs.lr=0.01 (repeatable).")]
SiteOpt = Annotated[
    str | None, typer.Option("--site", "-s", help="Site to use (default: the one set by `site use`, else local).")
]
Name = Annotated[str, typer.Option("--name", "-n", help="Job name.")]

JOB_COLUMNS = ("name", "display_name", "type", "status", "experiment_name", "compute", "site", "creation_context.created_at")
JOB_ROW_KEYS = {"creation_context.created_at": "created_at"}


_warn = fast.warn
_note = fast.note


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        sys.stdout.write(f"hpcjobs {__version__}\n")
        raise typer.Exit(0)


# --------------------------------------------------------------------------- job
@job_app.command("create")
def job_create(
    file: Annotated[str, typer.Option("--file", "-f", help="The job YAML file.")],
    set_: Sets = None,
    name: Annotated[str | None, typer.Option("--name", "-n", help="Job name (default: generated).")] = None,
    site: SiteOpt = None,
    stream: Annotated[bool, typer.Option("--stream", help="Follow the log until the job ends; exit with its state.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and every rendered script; touch nothing.")] = False,
    web: Annotated[bool, typer.Option("--web", help="Print the MLflow UI address of the run.")] = False,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Output format: table, json, yaml, tsv, none (--dry-run: scripts).")
    ] = None,
    query: Query = None,
) -> None:
    """Create (submit) a job from a YAML file."""
    code = fast.job_create(
        file, set_ or [], name=name, site=site, stream=stream, dry_run=dry_run, web=web, output=output, query=query
    )
    if code:
        raise typer.Exit(code)


@job_app.command("validate")
def job_validate(
    file: Annotated[str, typer.Option("--file", "-f", help="The job YAML file.")],
    set_: Sets = None,
    site: SiteOpt = None,
    test_only: Annotated[
        bool,
        typer.Option("--test-only/--no-test-only", help="Also ask Slurm (sbatch --test-only) whether it would accept the job."),
    ] = True,
    output: Output = "json",
    query: Query = None,
) -> None:
    """Check a job file (and, for a Slurm site, ask the cluster) without submitting it."""
    from hpcjobs import api

    result = api.validate_job(file, set_ or [], site=site, test_only=test_only and site is not None)
    for w in result.warnings:
        _warn(w)
    emit(result.to_dict(), output, query)
    if any(not t.get("ok", True) for t in result.test_only):
        raise typer.Exit(2)


@job_app.command("show")
def job_show(
    name: Name,
    web: Annotated[bool, typer.Option("--web", help="Print the MLflow UI address of the job's run.")] = False,
    output: Output = "json",
    query: Query = None,
) -> None:
    """Show a job: state, times, Slurm ids, exit code, paths (a pipeline: its steps as a DAG)."""
    from hpcjobs import api

    view = api.show_job(name)
    if web:
        from hpcjobs.tracking import run_ui_url

        url = run_ui_url(name)
        _note(f"MLflow run: {url}" if url else "MLflow run: no UI address (the run is in a local store; see hpcjobs mlflow-uri)")
    if output == "table" and not query and view.get("type") == "pipeline" and "steps" in view:
        from hpcjobs.dag import render_dag

        # the pipeline's own fields, then its steps drawn as the DAG they form
        emit({k: v for k, v in view.items() if k != "steps"}, output, None)
        sys.stdout.write("\n" + render_dag(view["steps"]))
        return
    emit(view, output, query, columns=None)


@job_app.command("list")
def job_list(
    status: Annotated[list[str] | None, typer.Option("--status", help="Only jobs in this state (repeatable).")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment-name", help="Only this experiment.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Only jobs with this tag (KEY or KEY=VALUE, repeatable).")
    ] = None,
    parent: Annotated[str | None, typer.Option("--parent-job-name", "-p", help="Children (steps, trials) of this job.")] = None,
    site: SiteOpt = None,
    max_results: Annotated[int, typer.Option("--max-results", "-r", help="At most this many jobs.")] = 50,
    all_results: Annotated[bool, typer.Option("--all-results", help="No limit.")] = False,
    output: Output = "table",
    query: Query = None,
) -> None:
    """List jobs, newest first."""
    from hpcjobs import api

    jobs = api.list_jobs(
        status=status or [],
        experiment=experiment,
        tags=tag or [],
        parent=parent,
        site=site,
        max_results=None if all_results else max_results,
    )
    emit(jobs, output, query, columns=JOB_COLUMNS)


@job_app.command("stream")
def job_stream(
    name: Name,
    trial: Annotated[int | None, typer.Option("--trial", help="For a sweep: the trial (array index) to follow.")] = None,
) -> None:
    """Follow a job's log until it ends; the exit code reflects its end state."""
    from hpcjobs import api

    status = api.stream_job(name, sys.stdout.buffer, task=trial)
    final = api.show_job(name, refresh_state=False)
    _note(
        f"\nRunId: {name}\nStatus: {status.value}"
        + (f" ({final['reason']})" if final.get("reason") and status.value != "Completed" else "")
    )
    raise typer.Exit(api.exit_code_for(status))


@job_app.command("cancel")
def job_cancel(name: Name, output: Output = "json", query: Query = None) -> None:
    """Cancel a job (every trial of a sweep, every step of a pipeline)."""
    from hpcjobs import api

    emit(api.cancel_job(name), output, query)


@job_app.command("update")
def job_update(name: Name, set_: Sets = None, output: Output = "json", query: Query = None) -> None:
    """Change display_name, description, tags or properties of a job."""
    from hpcjobs import api
    from hpcjobs.errors import UserError

    if not set_:
        raise UserError("nothing to update", hint="use --set display_name=... or --set tags.KEY=VALUE")
    emit(api.update_job(name, set_), output, query)


@job_app.command("download")
def job_download(
    name: Name,
    all_: Annotated[bool, typer.Option("--all", help="Also every named output.")] = False,
    output_name: Annotated[str | None, typer.Option("--output-name", help="Only this named output.")] = None,
    download_path: Annotated[str, typer.Option("--download-path", "-p", help="Folder to download into.")] = ".",
    output: Output = "json",
    query: Query = None,
) -> None:
    """Download a job's outputs and logs."""
    from hpcjobs import api

    emit(api.download_job(name, all_outputs=all_, output_name=output_name, download_path=download_path), output, query)


# --------------------------------------------------------------------------- site / compute
@site_app.command("list")
def site_list(output: Output = "table", query: Query = None) -> None:
    """Configured sites (and the embedded default, local)."""
    from hpcjobs.site import default_site_name, get_site, site_files

    default = default_site_name() or "local"
    rows = []
    for sname in ["local", *(n for n in site_files() if n != "local")]:
        try:
            s = get_site(sname)
        except HpcjobsError as exc:
            # one broken file must not hide the other sites; say what is wrong with it
            bad = {"name": sname, "default": sname == default, "scheduler": "invalid", "host": None}
            rows.append({**bad, "computes": exc.message, "source": str(site_files().get(sname))})
            continue
        rows.append(
            {
                "name": s.name,
                "default": s.name == default,
                "scheduler": s.scheduler,
                "host": s.ssh.host if s.ssh else "(this machine)",
                "computes": ", ".join(s.computes) or "local",
                "source": s.source,
            }
        )
    emit(rows, output, query)


@site_app.command("show")
def site_show(name: Annotated[str, typer.Argument(help="Site name.")], output: Output = "yaml", query: Query = None) -> None:
    """Show a site config."""
    from hpcjobs.site import get_site

    s = get_site(name)
    emit({"name": s.name, "source": s.source, **s.model_dump(mode="json", exclude_none=True, exclude={"name"})}, output, query)


@site_app.command("use")
def site_use(name: Annotated[str, typer.Argument(help="Site name.")]) -> None:
    """Make NAME the default site."""
    from hpcjobs.site import set_default_site

    set_default_site(name)
    _note(f"default site is now {name}")


@compute_app.command("list")
def compute_list(site: SiteOpt = None, output: Output = "table", query: Query = None) -> None:
    """Computes of a site with their partitions and live node/GPU state."""
    from hpcjobs.computes import list_computes

    emit(list_computes(site), output, query)


@compute_app.command("show")
def compute_show(
    name: Annotated[str, typer.Option("--name", "-n", help="Compute name.")],
    site: SiteOpt = None,
    output: Output = "json",
    query: Query = None,
) -> None:
    """One compute of a site, with live partition state."""
    from hpcjobs.computes import show_compute

    emit(show_compute(name, site), output, query)


# --------------------------------------------------------------------------- other groups
def _register_extras() -> None:
    from hpcjobs.cli import tracking_cmds

    tracking_cmds.register(app, job_app)
    __import__("hpcjobs.cli.site_cmds", fromlist=["register"]).register(site_app)
    __import__("hpcjobs.cli.onboard_cmds", fromlist=["register"]).register(site_app)
    __import__("hpcjobs.cli.asset_cmds", fromlist=["register"]).register(app)


_register_extras()


def _dump(data: Any) -> None:  # pragma: no cover - debugging helper
    emit(data, "json", None)
