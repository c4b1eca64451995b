"""The cluster limits a sweep must fit in: ``MaxArraySize`` and how many jobs may be queued.

A site config may state them (``max_array_size``, ``max_submit_jobs``); otherwise they are
read from the cluster once (``scontrol show config``: ``MaxArraySize``, ``MaxJobCount``;
``sacctmgr show assoc``: the user's ``MaxSubmit``), in ONE command over the site's
transport, and cached per site for a day in ``<state dir>/cache/limits-<site>.json``.
The planner stays pure: the API fills the site's fields before planning
(:func:`with_cluster_limits`), and a dry run uses the cache only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hpcjobs import paths

if TYPE_CHECKING:
    from hpcjobs.backends.base import Backend
    from hpcjobs.site import Site

#: seconds a probed value is trusted
CACHE_TTL = 86400.0

_PROBE = r"""scontrol show config 2>/dev/null | grep -E '^(MaxArraySize|MaxJobCount) '
echo '--'
sacctmgr -nP show assoc where user="$(id -un)" format=MaxSubmit,GrpSubmit 2>/dev/null
"""


@dataclass
class ClusterLimits:
    """What the cluster allows (None: not known or unlimited)."""

    max_array_size: int | None = None
    max_job_count: int | None = None
    max_submit_jobs: int | None = None
    fetched: float = 0.0

    @property
    def queue_limit(self) -> int | None:
        """How many jobs the user may have queued at once, at most."""
        known = [v for v in (self.max_job_count, self.max_submit_jobs) if v]
        return min(known) if known else None


def parse_probe(text: str) -> ClusterLimits:
    """Parse the output of the probe command (``scontrol`` lines, ``--``, ``sacctmgr`` rows)."""
    from hpcjobs.slurm import parse_scontrol_config

    head, _, tail = text.partition("--")
    cfg = parse_scontrol_config(head)
    out = ClusterLimits()

    def num(s: str | None) -> int | None:
        s = (s or "").strip()
        return int(s) if s.isdigit() and int(s) > 0 else None

    out.max_array_size = num(cfg.get("MaxArraySize"))
    out.max_job_count = num(cfg.get("MaxJobCount"))
    submits = [num(f) for line in tail.splitlines() for f in line.split("|")]
    known = [s for s in submits if s]
    out.max_submit_jobs = min(known) if known else None
    return out


def _cache_file(site_name: str) -> Path:
    return paths.state_dir() / "cache" / f"limits-{site_name}.json"


def cached(site_name: str, *, ttl: float = CACHE_TTL) -> ClusterLimits | None:
    """The cached limits of *site_name*, if fresh."""
    try:
        data = json.loads(_cache_file(site_name).read_text(encoding="utf-8"))
        lim = ClusterLimits(**data)
    except (OSError, ValueError, TypeError):
        return None
    return lim if time.time() - lim.fetched < ttl else None


def probe(backend: Backend) -> ClusterLimits:
    """Ask the cluster (one command) and cache the answer."""
    res = backend.transport.run(["bash", "-c", _PROBE])
    lim = parse_probe(res.out if res.ok or res.out else "")
    lim.fetched = time.time()
    path = _cache_file(backend.site.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(lim)), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass
    return lim


def with_cluster_limits(site: Site, backend: Backend | None) -> Site:
    """*site* with ``max_array_size``/``max_submit_jobs`` filled from the cluster where unset.

    Without a *backend* (a dry run) only the cache is used.
    """
    if site.is_local or (site.max_array_size is not None and site.max_submit_jobs is not None):
        return site
    lim = cached(site.name)
    if lim is None and backend is not None:
        try:
            lim = probe(backend)
        except Exception:  # noqa: BLE001 - unknown limits fall back to Slurm's defaults
            lim = None
    if lim is None:
        return site
    update: dict[str, int] = {}
    if site.max_array_size is None and lim.max_array_size:
        update["max_array_size"] = lim.max_array_size
    if site.max_submit_jobs is None and lim.queue_limit:
        update["max_submit_jobs"] = lim.queue_limit
    return site.model_copy(update=update) if update else site
