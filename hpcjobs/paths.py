"""Where hpcjobs keeps its state and configuration, and where its data files are."""

from __future__ import annotations

import os
from pathlib import Path


def hpcjobs_home() -> Path | None:
    """``$HPCJOBS_HOME`` if set: it overrides the whole state and config location."""
    home = os.environ.get("HPCJOBS_HOME")
    return Path(home).expanduser() if home else None


def config_dir() -> Path:
    """User configuration: user site configs, the default site, known_hosts."""
    home = hpcjobs_home()
    if home:
        return home / "config"
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "hpcjobs"


def state_dir() -> Path:
    """User state: the job store, local job directories, the embedded MLflow store."""
    home = hpcjobs_home()
    if home:
        return home / "state"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "hpcjobs"


def cache_dir() -> Path:
    """Caches that only save time (compiled templates): safe to delete at any moment."""
    home = hpcjobs_home()
    if home:
        return home / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hpcjobs"


def data_dir(name: str) -> Path:
    """A shipped data folder (``templates`` or ``site-configs``).

    Wheels carry them inside the package (``hpcjobs/_data``); a source checkout has them
    at the top of the repository.
    """
    pkg = Path(__file__).resolve().parent
    inside = pkg / "_data" / name
    if inside.is_dir():
        return inside
    return pkg.parent / name
