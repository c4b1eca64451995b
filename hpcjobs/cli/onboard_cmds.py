"""CLI commands that onboard a cluster: ``site add`` (discover + write a config) and ``site check``.

Thin: parse, call :mod:`hpcjobs.onboard`, ask the human about host keys, print.  Nothing
heavy is imported until a command runs (``hpcjobs --help`` stays fast).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from hpcjobs.cli.output import emit

if TYPE_CHECKING:
    from hpcjobs.onboard import AddResult, CheckResult
    from hpcjobs.site_trust import Hop

TextOutput = Annotated[
    str, typer.Option("--output", "-o", help="Output format: text (for people), json, yaml, table, tsv, none.")
]
Query = Annotated[str | None, typer.Option("--query", help="JMESPath query applied to the output (as az --query).")]

CHECK_COLUMNS = ("status", "check", "detail", "fix")


def _say(msg: str) -> None:
    sys.stderr.write(msg + "\n")


def _confirm_hop(hop: Hop, *, yes: bool) -> bool:
    """Show a hop's key like ssh does and ask (``--yes``: trust it, but say so)."""
    role = "login node" if hop.is_target else "jump host"
    _say(f"The authenticity of the {role} {hop.host}:{hop.port} can't be established yet.")
    _say(f"  {hop.key_type} key fingerprint is {hop.fingerprint}")
    _say("  Compare it with the fingerprint your cluster's documentation or admins publish.")
    if yes:
        _say("  --yes: trusting it.")
        return True
    try:
        ok = typer.confirm(f"Trust this key for {hop.host}:{hop.port}?", default=False, err=True)
    except typer.Abort:
        ok = False
    if not sys.stdin.isatty():
        # a piped answer is not echoed: end the prompt's line ourselves
        _say("")
    return ok


def _print_add(result: AddResult) -> None:
    d = result.discovery
    w = sys.stdout.write
    src = result.draft.data.get("ssh", {}).get("host") or "this machine"
    w(
        f"Discovered {src} in {result.seconds:.1f} s: Slurm {d.slurm_version or '?'}, cluster {d.cluster_name or '?'}, "
        f"user {d.user}\n"
    )
    parts = []
    for p in d.partitions:
        gpus = f", {p.gpus_per_node} GPUs" + (f" {'/'.join(p.gpu_types)}" if p.gpu_types else "") if p.gpus_per_node else ""
        star = "*" if p.default else ""
        parts.append(f"{p.name}{star} ({p.nodes} nodes x {p.cpus or '?'} CPUs, {p.memory_mb or '?'} MB{gpus})")
    rows = [
        ("partitions", ", ".join(parts)),
        ("accounts", ", ".join(f"{a} (default)" if a == d.default_account else a for a in d.accounts) or "unknown"),
        ("QOS", ", ".join(d.qos) or "unknown"),
        (
            "limits",
            f"MaxArraySize {d.max_array_size or '?'}, MaxSubmit {d.max_submit_jobs or 'unlimited'}",
        ),
        ("runtimes", ", ".join(f"{r.program} {r.version}".strip() for r in d.runtimes) or "none"),
        ("modules", (f"{d.modules.kind} {d.modules.version or ''}".strip() if d.modules else "none")),
        ("python", d.python or "python3 not found"),
        ("job roots", ", ".join(f"{c.path} ({c.state})" for c in d.job_roots if c.state != "missing") or "none"),
    ]
    for k, v in rows:
        w(f"  {k:<11} {v}\n")
    w("Chose:\n")
    for c in result.draft.choices:
        w(f"  {c.what:<22} {c.value}\n      {c.why}\n")
    for s in result.draft.skipped:
        w(f"  left out partition {s['partition']}: {s['why']}\n")
    for t in result.trusted:
        w(f"Trusted host key {t['key_type']} {t['fingerprint']} of {t['host']}:{t['port']}\n")
    for n in result.draft.notes:
        w(f"note: {n}\n")
    if result.path:
        w(f"Wrote {result.path} (validated).")
        w(" It is now your default site.\n" if result.made_default else "\n")
        w(f"Next: hpcjobs site check {result.name}\n")


def _print_check(results: list[CheckResult]) -> None:
    w = sys.stdout.write
    width = max((len(r.check) for r in results), default=10)
    for r in results:
        w(f"{r.status}  {r.check:<{width}}  {r.detail}\n")
        if r.fix and r.status == "FAIL":
            w(f"{'':6}{'':<{width}}  fix: {r.fix}\n")
    failed = sum(1 for r in results if r.status == "FAIL")
    passed = len(results) - failed
    w(f"\n{passed} passed, {failed} failed\n" if failed else f"\nall {passed} check{'s' if passed != 1 else ''} passed\n")


def register(site_app: typer.Typer) -> None:
    """Add ``site add`` and ``site check`` to the ``site`` group."""

    @site_app.command("add")
    def site_add(
        name: Annotated[str, typer.Argument(help="Name for the new site (letters, digits, . _ -).")],
        host: Annotated[
            str | None, typer.Option("--host", help="Login node (host name or a Host alias of ~/.ssh/config).")
        ] = None,
        local: Annotated[bool, typer.Option("--local", help="The cluster is this machine (run on the login node).")] = False,
        user: Annotated[str | None, typer.Option("--user", "-u", help="User name on the cluster.")] = None,
        port: Annotated[int | None, typer.Option("--port", "-p", help="SSH port (default 22).")] = None,
        identity_file: Annotated[str | None, typer.Option("--identity-file", "-i", help="Private key to log in with.")] = None,
        proxy_jump: Annotated[
            str | None, typer.Option("--proxy-jump", "-J", help="Jump host(s): user@bastion[:port][,...].")
        ] = None,
        runtime: Annotated[
            str,
            typer.Option(
                "--runtime",
                help="Container runtime for environment.image: none (default: jobs run on the host), "
                "auto (the best one found), or apptainer|singularity|pyxis|charliecloud|podman.",
            ),
        ] = "none",
        fingerprint: Annotated[
            list[str] | None,
            typer.Option("--fingerprint", help="Trust the host key with this fingerprint (SHA256:...), checked beforehand."),
        ] = None,
        yes: Annotated[
            bool, typer.Option("--yes", "-y", help="Trust an unknown host key without asking (it is still shown).")
        ] = False,
        force: Annotated[bool, typer.Option("--force", help="Replace an existing site of that name.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Discover and print the config; write nothing.")] = False,
        use: Annotated[
            bool | None,
            typer.Option("--use/--no-use", help="Make it the default site (default: only if no default is set)."),
        ] = None,
        output: TextOutput = "text",
        query: Query = None,
    ) -> None:
        """Discover a cluster and write a commented site config for it.

        Connects (showing an unknown host key and asking before trusting it), runs ONE
        discovery command (sinfo, scontrol, sacctmgr, runtimes, modules, job roots), and
        writes <config dir>/sites/NAME.yml with one compute per partition.
        """
        from hpcjobs import onboard

        result = onboard.add_site(
            name,
            host=host,
            local=local,
            user=user,
            port=port,
            identity_file=identity_file,
            proxy_jump=proxy_jump,
            runtime=runtime,
            confirm=lambda hop: _confirm_hop(hop, yes=yes),
            fingerprints=fingerprint or [],
            force=force,
            dry_run=dry_run,
            make_default=use,
        )
        if dry_run and output == "text" and not query:
            sys.stdout.write(result.draft.text)
            return
        if output == "text" and not query:
            _print_add(result)
            return
        data: dict[str, Any] = result.to_dict()
        if dry_run:
            data["yaml"] = result.draft.text
        emit(data, "json" if output == "text" else output, query)

    @site_app.command("check")
    def site_check(
        name: Annotated[str | None, typer.Argument(help="Site name (default: the default site).")] = None,
        output: TextOutput = "text",
        query: Query = None,
    ) -> None:
        """Check a site: connection, host key, login, Slurm version, clock, job root, runtime, every compute.

        One line per check, PASS or FAIL with the fix.  Exit code 0 when nothing failed, 1 otherwise.
        """
        from hpcjobs import onboard

        results = onboard.check_site(name)
        if output == "text" and not query:
            _print_check(results)
        else:
            emit(onboard.as_rows(results), "json" if output == "text" else output, query, columns=CHECK_COLUMNS)
        if any(r.status == "FAIL" for r in results):
            raise typer.Exit(1)
