"""The Jinja environment that turns plans into scripts.  Pure: text in, text out."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import sys
from typing import Any

import jinja2
import jinja2.bccache

from hpcjobs import __version__, paths
from hpcjobs.shellquote import shq

#: everything that changes how a template compiles (the bytecode cache is keyed on it)
_OPTIONS: dict[str, Any] = {
    "undefined": jinja2.StrictUndefined,
    "autoescape": False,  # we render bash, not HTML; values go through |q
    "keep_trailing_newline": True,
    "trim_blocks": True,
    "lstrip_blocks": True,
}


class _BytecodeCache(jinja2.FileSystemBytecodeCache):
    """Jinja's file cache, best effort: a cache that cannot be written is not an error."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def _bytecode_cache(templates: str) -> jinja2.BytecodeCache | None:
    """Compiled templates kept between runs (compiling ours took 10-20 ms of every `job create`).

    Jinja checks each entry against the template's source; the folder's name covers what
    else the code depends on (Python, Jinja, hpcjobs, the environment's options, the
    templates folder).  Only a folder of our own that nobody else can write is used, since
    loading an entry runs its code.
    """
    ident = repr((sys.version, jinja2.__version__, __version__, templates, sorted((k, repr(v)) for k, v in _OPTIONS.items())))
    folder = paths.cache_dir() / "templates" / hashlib.sha256(ident.encode()).hexdigest()[:16]
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None
    return _BytecodeCache(str(folder))


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared Jinja environment over ``templates/`` (StrictUndefined, shell quoting filter)."""
    templates = str(paths.data_dir("templates"))
    env = jinja2.Environment(  # noqa: S701 - autoescape is off on purpose (see _OPTIONS)
        loader=jinja2.FileSystemLoader(templates),
        bytecode_cache=_bytecode_cache(templates),
        **_OPTIONS,
    )
    env.filters["q"] = shq
    env.globals["version"] = __version__
    return env


def render(template: str, **context: Any) -> str:
    """Render *template* with *context*; user values must reach it only through ``|q``."""
    return environment().get_template(template).render(**context)
