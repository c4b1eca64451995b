"""``hpcjobs compute list/show``: a site's computes with live partition state from sinfo."""

from __future__ import annotations

from typing import Any

from hpcjobs import backends, slurm
from hpcjobs.errors import NotFoundError, known_list_hint
from hpcjobs.site import Compute, Site, get_site


def _live(site: Site) -> dict[str, slurm.PartitionInfo]:
    if site.is_local:
        return {}
    t = backends.transport_for(site)
    res = t.run(slurm.sinfo_argv())
    if not res.ok:
        return {}
    return {p.name: p for p in slurm.parse_sinfo(res.out)}


def _row(name: str, comp: Compute, site: Site, live: dict[str, slurm.PartitionInfo]) -> dict[str, Any]:
    info = live.get(comp.partition or "") if comp.partition else next((p for p in live.values() if p.default), None)
    row: dict[str, Any] = {
        "name": name,
        "default": name == site.default_compute,
        "partition": comp.partition or (info.name if info else None),
        "account": comp.account,
        "qos": comp.qos,
        "gpus_per_node": comp.gpus_per_node,
        "gpu_type": comp.gpu_type,
        "aliases": ", ".join(comp.aliases) or None,
        "instance_types": ", ".join(comp.instance_types) or None,
        "time_limit": comp.time_limit,
    }
    if info is not None:
        states = info.node_states
        row.update(
            {
                "state": info.available,
                "nodes": info.nodes,
                "nodes_idle": sum(v for k, v in states.items() if k.startswith("idle")),
                "nodes_allocated": sum(v for k, v in states.items() if k.startswith(("alloc", "mix"))),
                "nodes_down": sum(v for k, v in states.items() if k.startswith(("down", "drain", "fail"))),
                "cpus_per_node": info.cpus,
                "memory_mb": info.memory_mb,
                "gres": ", ".join(info.gres) or None,
                "max_time": slurm.format_slurm_time(info.time_limit) if info.time_limit else "UNLIMITED",
            }
        )
    elif not site.is_local:
        row["state"] = "partition not found" if live else "unknown (sinfo failed)"
    return row


def list_computes(site_name: str | None) -> list[dict[str, Any]]:
    """Every compute of the site, with live state."""
    site = get_site(site_name)
    if site.is_local:
        return [{"name": "local", "default": True, "partition": None, "state": "this machine"}]
    live = _live(site)
    return [_row(n, c, site, live) for n, c in site.computes.items()]


def show_compute(name: str, site_name: str | None) -> dict[str, Any]:
    """One compute with live state."""
    site = get_site(site_name)
    name = name.removeprefix("azureml:")
    if site.is_local:
        return {"name": name, "site": "local", "state": "this machine"}
    # an alias (cpu-cluster) shows the compute it stands for
    name = site.compute_aliases().get(name, name)
    if name not in site.computes:
        raise NotFoundError(
            f"compute '{name}' is not defined for site '{site.name}'", hint=known_list_hint(name, site.computes, "computes")
        )
    return {"site": site.name, **_row(name, site.computes[name], site, _live(site))}
