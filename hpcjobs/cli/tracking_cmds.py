"""CLI commands for MLflow tracking: ``mlflow-uri``, ``job sync``, ``job mlflow``, ``model create``.

Thin: parse, call :mod:`hpcjobs.tracking`, print.  Nothing here imports mlflow at
module level (``hpcjobs --help`` stays fast); ``model create`` imports it when run.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from hpcjobs.cli.output import emit

Output = Annotated[str, typer.Option("--output", "-o", help="Output format: table, json, yaml, tsv, none.")]
Query = Annotated[str | None, typer.Option("--query", help="JMESPath query applied to the output (as az --query).")]

SYNC_COLUMNS = ("name", "status", "mlflow", "run_id", "metrics", "artifacts", "error")


def _open(url: str) -> None:
    # a browser only where there is a display to show it on
    import os
    import webbrowser

    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin":
        webbrowser.open(url)


def register(app: typer.Typer, job_app: typer.Typer) -> None:
    """Add the tracking commands to the CLI."""
    model_app = typer.Typer(help="Models registered from job outputs (MLflow model registry).", no_args_is_help=True)
    app.add_typer(model_app, name="model")

    @app.command("mlflow-uri")
    def mlflow_uri(
        site: Annotated[str | None, typer.Option("--site", "-s", help="The tracking URI this site's jobs log to.")] = None,
        output: Annotated[
            str | None, typer.Option("--output", "-o", help="json/yaml/table for the details; default: the URI alone.")
        ] = None,
        query: Query = None,
    ) -> None:
        """Print the MLflow tracking URI runs go to (for mlflow.set_tracking_uri or MLFLOW_TRACKING_URI).

        $MLFLOW_TRACKING_URI wins if set; a site's tracking.uri wins for that site;
        otherwise the embedded store in the hpcjobs state folder (SQLite, no server).
        """
        from hpcjobs import tracking

        data = tracking.info(site)
        if output is None and query is None:
            sys.stdout.write(f"{data['tracking_uri']}\n")
            if data.get("ui_command") and sys.stderr.isatty():
                sys.stderr.write(f"UI: {data['ui_command']}\n")
            return
        emit(data, output or "json", query)

    @job_app.command("sync")
    def job_sync(
        name: Annotated[list[str] | None, typer.Option("--name", "-n", help="Job to sync (repeatable).")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every job whose MLflow run is not recorded yet.")] = False,
        force: Annotated[
            bool, typer.Option("--force", help="Import again even runs already recorded (nothing is duplicated).")
        ] = False,
        output: Output = "table",
        query: Query = None,
    ) -> None:
        """Bring jobs up to date and record their MLflow runs (params, metrics, ./outputs); retries pending imports."""
        from hpcjobs import tracking
        from hpcjobs.errors import UserError

        if not name and not all_:
            raise UserError("name a job (-n NAME) or use --all")
        if name and all_:
            raise UserError("use either -n NAME or --all, not both")
        results = tracking.sync(name or [], all_jobs=all_, force=force)
        emit(results, output, query, columns=SYNC_COLUMNS)
        if any(r.get("mlflow") == "pending" for r in results):
            raise typer.Exit(1)

    @job_app.command("mlflow")
    def job_mlflow(
        name: Annotated[str, typer.Option("--name", "-n", help="Job name.")],
        web: Annotated[bool, typer.Option("--web", help="Open the run in the MLflow UI (where a browser is available).")] = False,
        output: Output = "json",
        query: Query = None,
    ) -> None:
        """Show a job's MLflow run: tracking URI, experiment and run ids, import state, UI address."""
        from hpcjobs import tracking

        data = tracking.run_info(name)
        if web:
            if data.get("ui_url"):
                sys.stderr.write(f"MLflow run: {data['ui_url']}\n")
                _open(str(data["ui_url"]))
            else:
                sys.stderr.write("no MLflow UI address: the run is in a local store (see: hpcjobs mlflow-uri -o json)\n")
        emit(data, output, query)

    @model_app.command("create")
    def model_create(
        name: Annotated[str, typer.Option("--name", "-n", help="Registered model name.")],
        job: Annotated[str, typer.Option("--job", "-j", help="Job whose run holds the model.")],
        path: Annotated[str, typer.Option("--path", "-p", help="Artifact path of the model in the job's run.")] = "outputs/model",
        output: Output = "json",
        query: Query = None,
    ) -> None:
        """Register a model version from a job's outputs (an MLflow model folder, e.g. outputs/model)."""
        from hpcjobs import tracking

        emit(tracking.register_model(name, job, path), output, query)
