"""The Jinja environment that turns plans into scripts.  Pure: text in, text out."""

from __future__ import annotations

import functools
from typing import Any

import jinja2

from hpcjobs import __version__, paths
from hpcjobs.shellquote import shq


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared Jinja environment over ``templates/`` (StrictUndefined, shell quoting filter)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(paths.data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - we render bash, not HTML; values go through |q
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = shq
    env.globals["version"] = __version__
    return env


def render(template: str, **context: Any) -> str:
    """Render *template* with *context*; user values must reach it only through ``|q``."""
    return environment().get_template(template).render(**context)
