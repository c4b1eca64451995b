"""CLI commands for MLflow tracking (mlflow-uri, job sync, model create).  Stub."""

from __future__ import annotations

import typer


def register(app: typer.Typer, job_app: typer.Typer) -> None:
    """Add the tracking commands to the CLI."""
