"""Backends carry out plans: the local runner (embedded default) and Slurm."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpcjobs.backends.base import Backend
    from hpcjobs.site import Site
    from hpcjobs.transport.base import Transport

_TRANSPORTS: dict[str, Transport] = {}


def transport_for(site: Site) -> Transport:
    """One transport per site per process (so SSH logs in once per CLI run)."""
    key = site.name
    if key in _TRANSPORTS:
        return _TRANSPORTS[key]
    t: Transport
    if site.ssh is None:
        from hpcjobs.transport.local import LocalTransport

        t = LocalTransport()
    elif site.ssh.transport == "system":
        from hpcjobs.transport.system_ssh import SystemSSHTransport

        t = SystemSSHTransport(_ssh_settings(site))
    else:
        from hpcjobs.transport.ssh import SSHTransport

        t = SSHTransport(_ssh_settings(site))
    _TRANSPORTS[key] = t
    return t


def _ssh_settings(site: Site) -> object:
    from hpcjobs import paths
    from hpcjobs.transport.ssh import SSHSettings

    assert site.ssh is not None
    s = site.ssh
    extra = {}
    if s.known_hosts:
        extra["known_hosts"] = s.known_hosts
    return SSHSettings(
        host=s.host,
        user=s.user,
        port=s.port,
        identity_file=s.identity_file,
        proxy_jump=s.proxy_jump,
        connect_timeout=s.connect_timeout,
        hpcjobs_known_hosts=str(paths.config_dir() / "known_hosts"),
        **extra,
    )


def backend_for(site: Site) -> Backend:
    """The backend that runs jobs on *site*."""
    if site.is_local:
        from hpcjobs.backends.local import LocalBackend

        return LocalBackend(site)
    from hpcjobs.backends.slurm import SlurmBackend

    return SlurmBackend(site, transport_for(site))


def close_all() -> None:
    """Close every transport opened by this process."""
    for t in _TRANSPORTS.values():
        t.close()
    _TRANSPORTS.clear()
