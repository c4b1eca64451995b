"""Backends carry out plans: the local runner (embedded default) and Slurm."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hpcjobs.backends.base import Backend
    from hpcjobs.site import Site
    from hpcjobs.transport.base import Transport
    from hpcjobs.transport.ssh import SSHSettings

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


def _ssh_settings(site: Site) -> SSHSettings:
    """The transport's settings from the site's ``ssh:`` block (the real constructor, via from_obj).

    ``known_hosts: null`` keeps the default list (~/.ssh/known_hosts, the system file and
    hpcjobs' own, which ``hpcjobs site trust`` writes); the site name goes into hints.
    A site that names its own known_hosts file still gets hpcjobs' file after it: that
    file only ever holds keys a user confirmed with ``hpcjobs site trust``, and without it
    trusting such a site would have no effect.
    """
    from hpcjobs.transport import known_hosts as kh
    from hpcjobs.transport.ssh import SSHSettings

    assert site.ssh is not None
    settings = SSHSettings.from_obj(site.ssh, site=site.name)
    if site.ssh.known_hosts:
        settings.known_hosts = [site.ssh.known_hosts, str(kh.hpcjobs_known_hosts())]
    return settings


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
