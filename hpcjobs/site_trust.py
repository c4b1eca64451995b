"""``hpcjobs site trust``: record a site's SSH host keys after the user has checked them.

Host keys are strict everywhere else (an unknown or changed key is refused before any
authentication, see :mod:`hpcjobs.transport.ssh`); this module is the one place where a
key becomes trusted, and only in hpcjobs' own known_hosts file
(:func:`hpcjobs.transport.known_hosts.hpcjobs_known_hosts`).  The user's OpenSSH files
are read, never written.

The walk goes hop by hop (jump hosts first, then the login node): a hop behind an
untrusted one cannot be reached without logging in to the untrusted one, so each call
of :func:`pending` reports at most one hop to decide about, and the caller loops.

Policy:

* an UNKNOWN key may be trusted (after a confirmation, or ``--yes`` for scripts);
* a CHANGED key is trusted only with an explicit ``replace`` and only when every
  conflicting line is in hpcjobs' own file (then that line is replaced); a conflicting
  line in ``~/.ssh/known_hosts`` or a system file must be removed by the user first,
  because hpcjobs never edits those files and a key changing is what an attack looks like;
* a REVOKED key is never trusted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcjobs.errors import HostKeyError, UserError

if TYPE_CHECKING:
    from hpcjobs.transport.ssh import HostKeyCheck, SSHSettings


@dataclass
class Hop:
    """One SSH server on the way to a site (a jump host or the login node) and its key."""

    host: str
    port: int
    key_type: str
    fingerprint: str
    #: ok | unknown | changed | revoked
    status: str
    #: True for the login node itself, False for a jump host
    is_target: bool
    #: where the conflicting (CHANGED) or revoking (REVOKED) lines are, as file:line
    conflicts: list[str] = field(default_factory=list)
    #: the check this hop came from (needed to trust it)
    check: HostKeyCheck | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for ``-o json``)."""
        return {
            "host": self.host,
            "port": self.port,
            "role": "login node" if self.is_target else "jump host",
            "key_type": self.key_type,
            "fingerprint": self.fingerprint,
            "status": self.status,
        }


def site_settings(site_name: str) -> SSHSettings:
    """The SSH settings of site *site_name* (an error for a site on this machine)."""
    from hpcjobs import backends
    from hpcjobs.site import get_site

    site = get_site(site_name)
    if site.ssh is None:
        raise UserError(
            f"site '{site.name}' runs on this machine (it has no ssh: settings); there is no host key to trust",
            hint="add ssh: {host: ...} to the site config to reach a cluster over SSH",
        )
    return backends._ssh_settings(site)


def pending(settings: SSHSettings) -> tuple[list[Hop], Hop | None]:
    """(hops already trusted, the first hop that is not) for *settings*.

    The second element is None when every hop, the login node included, is trusted.
    """
    from hpcjobs.transport import known_hosts as kh
    from hpcjobs.transport.ssh import check_host_keys, resolve_chain

    chain_len = len(resolve_chain(settings))
    checks = check_host_keys(settings)
    hops: list[Hop] = []
    for i, c in enumerate(checks):
        hops.append(
            Hop(
                host=c.host,
                port=c.port,
                key_type=c.key.key_type,
                fingerprint=c.key.fingerprint,
                status=c.status.value,
                is_target=i == chain_len - 1,
                conflicts=[e.where for e in c.verdict.entries] if c.status is not kh.HostKeyStatus.OK else [],
                check=c,
            )
        )
    last = hops[-1]
    if last.status == "ok":
        return hops, None
    return hops[:-1], last


def trust(hop: Hop, *, replace: bool = False, known_hosts_path: str | Path | None = None) -> str:
    """Write *hop*'s key to hpcjobs' known_hosts (see the module's policy); return the line written."""
    from hpcjobs.transport import known_hosts as kh
    from hpcjobs.transport.ssh import trust_host_key

    assert hop.check is not None
    path = Path(known_hosts_path) if known_hosts_path else kh.hpcjobs_known_hosts()
    where = f"{hop.host}:{hop.port}"
    if hop.status == "revoked":
        raise HostKeyError(
            f"the key {hop.key_type} {hop.fingerprint} of {where} is marked @revoked "
            f"({', '.join(hop.conflicts)}); it cannot be trusted",
            hint="the server's key is compromised or retired; ask the cluster's admins",
        )
    if hop.status == "changed":
        ours = os.path.realpath(path.expanduser())
        foreign = [w for w in hop.conflicts if os.path.realpath(w.rsplit(":", 1)[0]) != ours]
        if foreign:
            raise HostKeyError(
                f"the host key of {where} CHANGED: {', '.join(foreign)} records another {hop.key_type} key, "
                f"the server now presents {hop.fingerprint}; hpcjobs never edits that file",
                hint="if the cluster's admins confirm the new key, delete that line yourself "
                "(ssh-keygen -R '[HOST]:PORT'), then run hpcjobs site trust again",
            )
        if not replace:
            raise HostKeyError(
                f"the host key of {where} CHANGED: hpcjobs trusted another {hop.key_type} key "
                f"({', '.join(hop.conflicts)}), the server now presents {hop.fingerprint}",
                hint="someone may be intercepting the connection; if the cluster's admins confirm the new key, "
                "run hpcjobs site trust SITE --replace",
            )
    return trust_host_key(path, hop.host, hop.port, hop.check.key)
