"""CLI commands of the ``site`` group that reach the network: ``site trust``.

Thin: parse, call :mod:`hpcjobs.site_trust`, ask the human, print.  paramiko is only
imported when the command runs (``hpcjobs --help`` stays fast).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from hpcjobs.cli.output import emit

Output = Annotated[str, typer.Option("--output", "-o", help="Output format: table, json, yaml, tsv, none.")]
Query = Annotated[str | None, typer.Option("--query", help="JMESPath query applied to the output (as az --query).")]

TRUST_COLUMNS = ("host", "port", "role", "key_type", "fingerprint", "status")

#: at most this many hops are walked (resolve_chain refuses longer chains anyway)
_MAX_HOPS = 12


def _say(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def register(site_app: typer.Typer) -> None:
    """Add ``site trust`` to the ``site`` group."""

    @site_app.command("trust")
    def site_trust(
        name: Annotated[str, typer.Argument(help="Site name.")],
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Trust unknown keys without asking (for scripts).")] = False,
        replace: Annotated[
            bool,
            typer.Option("--replace", help="Also replace a key hpcjobs trusted before that has CHANGED (after checking it!)."),
        ] = False,
        output: Output = "table",
        query: Query = None,
    ) -> None:
        """Show the SSH host key of every hop to SITE and record it in hpcjobs' known_hosts after you confirm.

        Only hpcjobs' own known_hosts file (in its config folder) is written; ~/.ssh/known_hosts
        is read, never changed.  Compare the fingerprints with the ones your cluster's admins
        publish before you answer yes.
        """
        from hpcjobs import site_trust as st
        from hpcjobs.transport import known_hosts as kh

        settings = st.site_settings(name)
        added: set[tuple[str, int]] = set()
        for _ in range(_MAX_HOPS):
            trusted, hop = st.pending(settings)
            if hop is None:
                rows = []
                for h in trusted:
                    row = h.to_dict()
                    row["status"] = "added" if (h.host, h.port) in added else "already trusted"
                    rows.append(row)
                emit(rows, output, query, columns=TRUST_COLUMNS)
                return
            role = "login node" if hop.is_target else "jump host"
            _say(f"The {role} {hop.host}:{hop.port} presents this host key:")
            _say(f"  {hop.key_type} {hop.fingerprint}")
            if hop.status == "changed":
                _say(f"  WARNING: it differs from the key recorded at {', '.join(hop.conflicts)}.")
            # only a key the policy allows to be written is worth a question
            askable = hop.status == "unknown" or (hop.status == "changed" and replace)
            if askable and not yes:
                try:
                    ok = typer.confirm(f"Trust this key for {hop.host}:{hop.port}?", default=False, err=True)
                except typer.Abort:
                    ok = False
                if not sys.stdin.isatty():
                    # a piped answer is not echoed: end the prompt's line ourselves
                    _say("")
                if not ok:
                    _say("Not trusted; nothing was written.")
                    raise typer.Exit(1)
            # raises (exit 2) for revoked keys, and for changed ones the policy does not allow
            line = st.trust(hop, replace=replace)
            added.add((hop.host, hop.port))
            _say(f"Added to {kh.hpcjobs_known_hosts()}: {line.split()[0]} {hop.key_type}")
        from hpcjobs.errors import RuntimeFailure

        raise RuntimeFailure(f"site '{name}': gave up after {_MAX_HOPS} hops")
