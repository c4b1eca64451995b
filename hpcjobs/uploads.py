"""Local data inputs (``path: ./data``) of a job sent to an SSH site, content-addressed.

On a login node the job reads a local path where it is.  From a laptop the path does not
exist on the cluster, so it is shipped inside the submission's tar stream, exactly like
the code snapshot: selected the same way (``.amlignore``/``.gitignore``, outward symlinks
refused, see :mod:`hpcjobs.snapshot`), hashed, and placed under
``<job root>/.data/<digest>/<name>``.  A digest already on the cluster is not sent again,
and the job sees the uploaded copy at that path (:attr:`hpcjobs.plan.Target.uploaded`).

This is the impure step before planning (it reads local files); the planner stays pure.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpcjobs.plan import Target
    from hpcjobs.site import Site
    from hpcjobs.spec.load import Loaded


def local_data_paths(loaded: Loaded) -> list[str]:
    """Absolute local paths of the job's data inputs (the loader has resolved relative ones)."""
    from hpcjobs.spec import models as m

    job = loaded.job
    if isinstance(job, m.PipelineJob):
        from hpcjobs.plan_pipeline import local_data_paths as pipeline_paths

        return pipeline_paths(loaded)
    inputs: dict[str, Any] = getattr(job, "inputs", {}) or {}
    out: list[str] = []
    for value in inputs.values():
        if isinstance(value, m.DataInput) and value.path and value.path.startswith("/"):
            out.append(value.path)
    return list(dict.fromkeys(out))


def plan_uploads(loaded: Loaded, site: Site, target: Target) -> dict[str, str]:
    """Fill ``target.uploaded`` for an SSH site; return what to ship (remote path -> local path).

    The remote path of a folder is the folder itself (``.data/<digest>/<name>``); for a
    single file it is the digest folder that holds it (``.data/<digest>``), so the tar
    stream recreates ``<name>`` inside.  A path missing here is taken for a path on the
    cluster (with a warning).  Nothing happens for a site on this machine.
    """
    if site.ssh is None:
        return {}
    from hpcjobs.plan import job_root
    from hpcjobs.snapshot import take_snapshot

    root = job_root(site, target)
    ship: dict[str, str] = {}
    for path in local_data_paths(loaded):
        p = Path(path)
        if not p.exists():
            # on a laptop, an absolute path may well name a folder on the cluster
            loaded.warnings.append(f"data input {path} does not exist on this machine; the job uses it as a path on the cluster")
            continue
        snap = take_snapshot(p)
        digest_dir = f"{root}/.data/{snap.digest}"
        remote = posixpath.join(digest_dir, p.name)
        target.uploaded[path] = remote
        ship[digest_dir if snap.is_file else remote] = path
    return ship
