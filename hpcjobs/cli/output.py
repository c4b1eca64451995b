"""Output formats shared by every command: ``-o table|json|yaml|tsv`` and ``--query`` (JMESPath)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from hpcjobs.errors import UserError

FORMATS = ("table", "json", "yaml", "tsv", "none")


def apply_query(data: Any, query: str | None) -> Any:
    """Filter *data* with a JMESPath expression, as ``az --query`` does."""
    if not query:
        return data
    import jmespath
    import jmespath.exceptions

    try:
        return jmespath.search(query, data)
    except jmespath.exceptions.JMESPathError as exc:
        raise UserError(f"--query {query!r}: {exc}", hint="see https://jmespath.org for the syntax") from None


def _scalar(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, dict | list):
        return json.dumps(v, sort_keys=True)
    return str(v)


def to_tsv(data: Any) -> str:
    """Tab-separated values like az's ``-o tsv``: one line per item, scalars only."""
    if isinstance(data, list):
        lines = []
        for item in data:
            if isinstance(item, dict):
                lines.append("\t".join(_scalar(v) for v in item.values() if not isinstance(v, dict | list)))
            elif isinstance(item, list):
                lines.append("\t".join(_scalar(v) for v in item))
            else:
                lines.append(_scalar(item))
        return "\n".join(lines)
    if isinstance(data, dict):
        return "\t".join(_scalar(v) for v in data.values() if not isinstance(v, dict | list))
    return _scalar(data)


def emit(data: Any, fmt: str, query: str | None, *, columns: Sequence[str] | None = None, title: str | None = None) -> None:
    """Print *data* in *fmt* after applying *query*."""
    if fmt not in FORMATS:
        raise UserError(f"unknown output format '{fmt}'", hint="one of: " + ", ".join(FORMATS))
    data = apply_query(data, query)
    if fmt == "none":
        return
    if fmt == "json":
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    elif fmt == "yaml":
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False))
    elif fmt == "tsv":
        text = to_tsv(data)
        sys.stdout.write(text + ("\n" if text else ""))
    else:
        _table(data, columns=None if query else columns, title=title)


def _table(data: Any, *, columns: Sequence[str] | None, title: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    # a pipe gets full-width rows (no truncation); a terminal gets its own width
    console = Console(soft_wrap=False) if sys.stdout.isatty() else Console(width=250, soft_wrap=True)
    if isinstance(data, list):
        if not data:
            console.print("(no results)")
            return
        if all(isinstance(d, dict) for d in data):
            cols = list(columns or [k for k, v in data[0].items() if not isinstance(v, dict | list)])
            table = Table(title=title, show_lines=False, header_style="bold")
            for c in cols:
                table.add_column(c)
            for row in data:
                table.add_row(*(_cell(_get(row, c)) for c in cols))
            console.print(table)
            return
        for d in data:
            console.print(_scalar(d), markup=False, highlight=False)
        return
    if isinstance(data, dict):
        table = Table(title=title, show_header=False, box=None)
        table.add_column("key", style="bold")
        table.add_column("value")
        for k, v in data.items():
            if columns and k not in columns and isinstance(v, list | dict) and k not in ("tags", "steps", "trials"):
                continue
            table.add_row(str(k), _cell(v))
        console.print(table)
        return
    console.print(_scalar(data), markup=False, highlight=False)


def _get(row: dict[str, Any], dotted: str) -> Any:
    cur: Any = row
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _cell(v: Any) -> Any:
    from rich.text import Text

    if isinstance(v, dict):
        return Text(", ".join(f"{k}={_scalar(x)}" for k, x in v.items()))
    if isinstance(v, list):
        if v and all(isinstance(x, dict) for x in v):
            return Text(
                "\n".join(", ".join(f"{k}={_scalar(x)}" for k, x in item.items() if not isinstance(x, dict | list)) for item in v)
            )
        return Text(", ".join(_scalar(x) for x in v))
    return Text(_scalar(v))
