"""CLI groups ``data``, ``environment`` and ``component``: registered assets (after ``az ml data`` etc.).

Thin: parse, call :mod:`hpcjobs.assets`, print.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from hpcjobs.cli.output import emit

Output = Annotated[str, typer.Option("--output", "-o", help="Output format: table, json, yaml, tsv, none.")]
Query = Annotated[str | None, typer.Option("--query", help="JMESPath query applied to the output (as az --query).")]
SiteOpt = Annotated[str | None, typer.Option("--site", "-s", help="Site whose registry to use (default: the default site).")]
Refresh = Annotated[bool, typer.Option("--refresh", help="Read the registry on the cluster, not the local cache.")]
FileOpt = Annotated[str, typer.Option("--file", "-f", help="The environment or component YAML file.")]
ArchivedOpt = Annotated[bool, typer.Option("--include-archived", help="List every version, archived ones too.")]

DATA_COLUMNS = ("name", "version", "type", "path", "archived")
ENV_COLUMNS = ("name", "version", "image", "description", "archived")
COMP_COLUMNS = ("name", "version", "code", "description", "archived")


def _site(name: str | None) -> Any:
    from hpcjobs.site import get_site

    return get_site(name)


def _ref(name: str, version: str | None, label: str | None) -> str:
    if version:
        return f"{name}:{version}"
    if label:
        return f"{name}@{label}"
    return name


def register(app: typer.Typer) -> None:
    """Add the ``data``, ``environment`` and ``component`` groups to *app*."""
    data_app = typer.Typer(help="Registered data assets (like `az ml data`).", no_args_is_help=True)
    env_app = typer.Typer(help="Registered environments (like `az ml environment`).", no_args_is_help=True)
    comp_app = typer.Typer(help="Registered command components (like `az ml component`).", no_args_is_help=True)
    app.add_typer(data_app, name="data")
    app.add_typer(env_app, name="environment")
    app.add_typer(comp_app, name="component")

    # ------------------------------------------------------------------ data
    @data_app.command("create")
    def data_create(
        name: Annotated[str, typer.Option("--name", "-n", help="Asset name.")],
        path: Annotated[str, typer.Option("--path", "-p", help="Local file/folder, path on the cluster or datastore URI.")],
        version: Annotated[str, typer.Option("--version", "-v", help="Version (immutable once created).")] = "1",
        type: Annotated[str, typer.Option("--type", "-t", help="uri_folder or uri_file.")] = "uri_folder",
        description: Annotated[str | None, typer.Option("--description", help="Description.")] = None,
        site: SiteOpt = None,
        output: Output = "json",
        query: Query = None,
    ) -> None:
        """Register a data asset; a local file or folder is uploaded once, content-addressed."""
        from hpcjobs import assets

        entry = assets.create_data(_site(site), name=name, version=version, path=path, type=type, description=description)
        if entry.get("uploaded") and not entry.get("sent"):
            sys.stderr.write("same content already on the cluster: nothing was uploaded\n")
        emit(entry, output, query, columns=DATA_COLUMNS)

    @data_app.command("list")
    def data_list(
        site: SiteOpt = None,
        refresh: Refresh = False,
        include_archived: ArchivedOpt = False,
        output: Output = "table",
        query: Query = None,
    ) -> None:
        """Data assets (the newest version of each) from the local cache; --refresh asks the cluster."""
        from hpcjobs import assets

        rows = assets.list_assets(_site(site), "data", refresh=refresh, include_archived=include_archived)
        emit(rows, output, query, columns=DATA_COLUMNS)

    @data_app.command("show")
    def data_show(
        name: Annotated[str, typer.Option("--name", "-n", help="Asset name.")],
        version: Annotated[str | None, typer.Option("--version", "-v", help="Version.")] = None,
        label: Annotated[str | None, typer.Option("--label", "-l", help="latest")] = None,
        site: SiteOpt = None,
        output: Output = "json",
        query: Query = None,
    ) -> None:
        """One version of a data asset (default: the latest)."""
        from hpcjobs import assets

        emit(assets.show_asset(_site(site), "data", _ref(name, version, label)), output, query, columns=DATA_COLUMNS)

    @data_app.command("archive")
    def data_archive(
        name: Annotated[str, typer.Option("--name", "-n", help="Asset name.")],
        version: Annotated[str, typer.Option("--version", "-v", help="Version to archive.")],
        site: SiteOpt = None,
        output: Output = "json",
        query: Query = None,
    ) -> None:
        """Hide a version from list and @latest (an explicit NAME:VERSION still resolves)."""
        from hpcjobs import assets

        emit(assets.archive_asset(_site(site), "data", name, version), output, query, columns=DATA_COLUMNS)

    # ------------------------------------------------------------------ environments / components
    def _group(group: typer.Typer, kind: str, columns: tuple[str, ...]) -> None:
        @group.command("create")
        def create(
            file: FileOpt,
            name: Annotated[str | None, typer.Option("--name", "-n", help="Name (default: name: in the file).")] = None,
            version: Annotated[str | None, typer.Option("--version", "-v", help="Version (default: the file's, else 1).")] = None,
            site: SiteOpt = None,
            output: Output = "json",
            query: Query = None,
        ) -> None:
            """Register a definition under a name and version."""
            from hpcjobs import assets

            fn = assets.create_environment if kind == "environments" else assets.create_component
            emit(fn(_site(site), file, name=name, version=version), output, query, columns=columns)

        @group.command("list")
        def list_(
            site: SiteOpt = None,
            refresh: Refresh = False,
            include_archived: ArchivedOpt = False,
            output: Output = "table",
            query: Query = None,
        ) -> None:
            """Registered definitions (newest version of each), from the local cache; --refresh asks the cluster."""
            from hpcjobs import assets

            rows = assets.list_assets(_site(site), kind, refresh=refresh, include_archived=include_archived)
            emit(rows, output, query, columns=columns)

        @group.command("show")
        def show(
            name: Annotated[str, typer.Option("--name", "-n", help="Name.")],
            version: Annotated[str | None, typer.Option("--version", "-v", help="Version.")] = None,
            label: Annotated[str | None, typer.Option("--label", "-l", help="latest")] = None,
            site: SiteOpt = None,
            output: Output = "json",
            query: Query = None,
        ) -> None:
            """One version (default: the latest)."""
            from hpcjobs import assets

            emit(assets.show_asset(_site(site), kind, _ref(name, version, label)), output, query, columns=columns)

    _group(env_app, "environments", ENV_COLUMNS)
    _group(comp_app, "components", COMP_COLUMNS)
