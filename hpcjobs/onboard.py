"""Onboarding a cluster: discover it, write a commented site config, check that it works.

``hpcjobs site add NAME --host H`` (or ``--local`` on the login node) runs ONE remote
command, :data:`DISCOVERY_SCRIPT`, which prints labelled sections (Slurm version,
``scontrol show config``, ``sinfo``, ``scontrol show partition``, the user's
associations and QOS from ``sacctmgr``, MPI plugins, container runtimes, the module
system, candidate job roots and their writability, Python).  Everything after that is
pure: :func:`parse_discovery` turns the text into a :class:`Discovery`,
:func:`draft_site` decides what the config says and why (:class:`Choice`), and
:func:`render_site_yaml` writes the YAML with a comment above every choice.  The
draft is validated with the real :class:`~hpcjobs.site.Site` model, and the rendered
text is read back and compared with the data it was rendered from, before anything
is written.

``hpcjobs site check NAME`` runs :func:`check_site`: the host key and the login
without a command, the clock with one tiny command, and everything else (Slurm version,
job root writable, runtime present, ``sbatch --test-only`` for every compute and
instance type) in ONE more remote command, :data:`CHECK_SCRIPT`, parsed by
:func:`parse_check_output`.  Each check is a :class:`CheckResult` with a fix for a
failure.

The scripts are fixed text; values (the sinfo format, the job root, sbatch options)
reach them as positional parameters, never spliced into the script.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from hpcjobs import paths, slurm
from hpcjobs.errors import HostKeyError, HpcjobsError, RuntimeFailure, UserError

if TYPE_CHECKING:
    from hpcjobs.site import Site
    from hpcjobs.site_trust import Hop
    from hpcjobs.transport.base import Transport
    from hpcjobs.transport.ssh import SSHSettings

#: the oldest Slurm hpcjobs supports (``--parsable`` ids, ``%F``/``%K`` in squeue,
#: ``--test-only`` output and ``scontrol show config`` keys as parsed here)
MIN_SLURM = (20, 11)
#: Slurm versions the test suite runs against
TESTED_SLURM = ("22.05",)
#: clocks further apart than this confuse sacct time windows and MLflow run times
MAX_CLOCK_SKEW = 60.0
#: runtimes hpcjobs can render jobs for, best first (what ``--runtime auto`` picks)
RUNTIME_PREFERENCE = ("apptainer", "singularity", "pyxis", "charliecloud", "podman")
#: program name on PATH -> the site config's ``environment.runtime`` value
_RUNTIME_OF_PROGRAM = {
    "apptainer": "apptainer",
    "singularity": "singularity",
    "ch-run": "charliecloud",
    "podman": "podman",
    "pyxis": "pyxis",
}
_PROGRAM_OF_RUNTIME = {v: k for k, v in _RUNTIME_OF_PROGRAM.items()}
#: the names Azure ML examples use for computes; generated as aliases
CPU_ALIAS = "cpu-cluster"
GPU_ALIAS = "gpu-cluster"

_COMPUTE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# --------------------------------------------------------------------------- the scripts

# Shared prologue: C locale (so numbers and messages are what the parsers expect),
# no inherited Slurm variables (an SBATCH_PARTITION in the user's .bashrc would
# silently change what --test-only tests), a timeout on every cluster command (a
# hung slurmdbd must not hang the onboarding), and the section markers.
_PROLOGUE = r"""export LC_ALL=C
for v in $(compgen -e); do
  case "$v" in SLURM_CONF) ;; SBATCH_*|SLURM_*|SALLOC_*|SRUN_*|SQUEUE_*|SACCT_*|SINFO_*|SCANCEL_*) unset "$v";; esac
done
if command -v timeout >/dev/null 2>&1; then t() { timeout 30 "$@"; }; else t() { "$@"; }; fi
sec() { printf '\n@@hpcjobs-section %s@@\n' "$1"; }
end() { printf '\n@@hpcjobs-rc %s@@\n' "$1"; }
run() { local name=$1; shift; sec "$name"; t "$@" 2>&1; end $?; }
u=$(id -un 2>/dev/null || printf %s "${USER:-}")
"""

DISCOVERY_SCRIPT = (
    _PROLOGUE
    + r"""sec env
printf 'user=%s\nhome=%s\nhost=%s\nepoch=%s\nscratch=%s\nwork=%s\ngroups=%s\n' \
  "$u" "$HOME" "$(hostname 2>/dev/null)" "$(date +%s)" "${SCRATCH:-}" "${WORK:-}" "$(id -Gn 2>/dev/null)"
end 0
run version sinfo --version
run config scontrol show config
run sinfo sinfo --noheader "--format=$1"
run partitions scontrol --oneliner show partition
run assoc sacctmgr -nP show user "$u" withassoc \
  format=defaultaccount,cluster,account,partition,qos,defaultqos,maxsubmit,maxjobs,grpsubmit
run qos sacctmgr -nP show qos format=name,maxsubmitjobsperuser,maxjobsperuser,maxwall
run mpi srun --mpi=list
sec runtimes
for c in apptainer singularity enroot ch-run podman; do
  p=$(command -v "$c" 2>/dev/null) || continue
  printf '%s|%s|%s\n' "$c" "$p" "$(t "$c" --version </dev/null 2>&1 | head -n 1)"
done
# pyxis is a SPANK plugin: it shows only as srun's --container-image option
if t srun --help 2>&1 | grep -q -- '--container-image'; then printf 'pyxis|srun|\n'; fi
end 0
sec modules
printf 'function=%s\nmoduleshome=%s\nlmod=%s\n' "$(type -t module 2>/dev/null)" "${MODULESHOME:-}" "${LMOD_VERSION:-}"
if [ -z "$(type -t module 2>/dev/null)" ]; then
  # a non-interactive SSH command may not read the profile that defines `module`
  t bash -lc 'printf "login_function=%s\nlogin_moduleshome=%s\nlogin_lmod=%s\n" \
    "$(type -t module 2>/dev/null)" "${MODULESHOME:-}" "${LMOD_VERSION:-}"' </dev/null 2>/dev/null | grep '^login_'
fi
end 0
sec roots
probe() {
  local src=$1 d=$2 w free
  [ -n "$d" ] || return 0
  if [ ! -d "$d" ]; then printf '%s|%s|missing|\n' "$src" "$d"; return 0; fi
  if p=$(mktemp -d "$d/.hpcjobs-probe.XXXXXX" 2>/dev/null); then rmdir "$p"; w=writable; else w=read-only; fi
  free=$(df -Pk "$d" 2>/dev/null | awk 'NR==2 {print $4}')
  printf '%s|%s|%s|%s\n' "$src" "$d" "$w" "$free"
}
probe SCRATCH "${SCRATCH:-}"
probe WORK "${WORK:-}"
for d in "/scratch/$u" "/scratch/users/$u" "/lustre/scratch/$u" "/gpfs/scratch/$u" "/work/$u"; do probe guess "$d"; done
probe HOME "$HOME"
end 0
run python python3 --version
sec done
end 0
"""
)
"""The one remote command of ``site add``: ``bash -c SCRIPT hpcjobs-discover SINFO_FORMAT``."""

CHECK_SCRIPT = (
    _PROLOGUE
    + r"""root=$1; runtime=$2; shift 2
sec env
printf 'user=%s\nhome=%s\n' "$u" "$HOME"
end 0
run version sinfo --version
run partitions sinfo --noheader --format=%R
run accounts sacctmgr -nP show assoc where "user=$u" format=account,qos
sec root
case $root in '~') root=$HOME;; '~/'*) root=$HOME/${root#'~/'};; esac
root=${root//'${USER}'/$u}; root=${root//'$USER'/$u}; root=${root//'${HOME}'/$HOME}; root=${root//'$HOME'/$HOME}
printf 'path=%s\n' "$root"
if out=$(mkdir -p -- "$root" 2>&1 && mktemp -- "$root/.hpcjobs-check.XXXXXX" 2>&1); then
  rm -f -- "$out"; printf 'writable=yes\n'
else
  printf 'writable=no\nerror=%s\n' "$(printf %s "$out" | head -n 1)"
fi
end 0
sec runtime
case $runtime in
  ''|none) printf 'runtime=none\n' ;;
  pyxis) if t srun --help 2>&1 | grep -q -- '--container-image'; then printf 'found=srun --container-image\n'; fi ;;
  *) if p=$(command -v "$runtime" 2>/dev/null); then
       printf 'found=%s\nversion=%s\n' "$p" "$(t "$runtime" --version </dev/null 2>&1 | head -n 1)"
     fi ;;
esac
end 0
# the rest: LABEL N OPTION... groups, one sbatch --test-only each
while [ $# -ge 2 ]; do
  label=$1; n=$2; shift 2
  sec "test:$label"
  t sbatch --parsable --test-only "${@:1:$n}" 2>&1 <<'HPCJOBS_EOF'
#!/bin/bash
true
HPCJOBS_EOF
  end $?
  shift "$n"
done
sec done
end 0
"""
)
"""The one remote command of ``site check`` (after the login and the clock probe)."""


def discovery_argv() -> list[str]:
    """The argv that runs :data:`DISCOVERY_SCRIPT` (the sinfo format is a parameter, not text)."""
    return ["bash", "-c", DISCOVERY_SCRIPT, "hpcjobs-discover", slurm.SINFO_FORMAT]


# --------------------------------------------------------------------------- sections

_SECTION_RE = re.compile(r"^@@hpcjobs-section (\S+)@@$")
_RC_RE = re.compile(r"^@@hpcjobs-rc (-?\d+)@@$")


@dataclass
class Section:
    """One labelled part of a script's output, and the exit code of its command."""

    name: str
    text: str
    #: None when the section never finished (the script died in it)
    rc: int | None

    @property
    def ok(self) -> bool:
        """True when the section's command finished with exit code 0."""
        return self.rc == 0


def split_sections(text: str) -> dict[str, Section]:
    """Split script output into its sections, by name.

    Anything before the first marker (a login banner, a chatty ``.bashrc``) is dropped.
    The blank line each marker starts with (so that it always begins a line) is not
    part of the section's text.
    """
    out: dict[str, Section] = {}
    name: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        m = _SECTION_RE.match(line)
        if m is not None:
            if name is not None:
                out[name] = Section(name, _body(body), None)
            name, body = m.group(1), []
            continue
        r = _RC_RE.match(line)
        if r is not None and name is not None:
            out[name] = Section(name, _body(body), int(r.group(1)))
            name, body = None, []
            continue
        if name is not None:
            body.append(line)
    if name is not None:
        out[name] = Section(name, _body(body), None)
    return out


def _body(lines: list[str]) -> str:
    if lines and not lines[-1].strip():
        lines = lines[:-1]
    return "\n".join(lines)


def _kv_lines(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


# --------------------------------------------------------------------------- discovery data


@dataclass
class Association:
    """One row of ``sacctmgr show assoc`` for the user."""

    cluster: str
    account: str
    #: None: the association covers every partition
    partition: str | None
    qos: list[str]
    default_qos: str | None
    max_submit: int | None
    max_jobs: int | None
    grp_submit: int | None


@dataclass
class Partition:
    """A partition as ``sinfo`` and ``scontrol show partition`` describe it."""

    name: str
    default: bool
    state: str
    nodes: int
    #: per node (the largest node when they differ)
    cpus: int | None
    memory_mb: int | None
    gpus_per_node: int
    #: every GPU type seen in the partition's gres
    gpu_types: list[str]
    gres: list[str]
    #: seconds; None = unlimited
    max_time: int | None
    default_time: int | None
    #: None = unlimited
    max_nodes: int | None
    #: None = ALL
    allow_accounts: list[str] | None = None
    deny_accounts: list[str] = field(default_factory=list)
    allow_qos: list[str] | None = None
    node_states: dict[str, int] = field(default_factory=dict)


@dataclass
class RuntimeFound:
    """A container runtime found on the login node's PATH (``pyxis``: through srun)."""

    program: str
    path: str
    version: str

    @property
    def runtime(self) -> str | None:
        """The ``environment.runtime`` value it maps to (None for enroot without pyxis)."""
        return _RUNTIME_OF_PROGRAM.get(self.program)


@dataclass
class JobRootCandidate:
    """A folder that could hold the job folders."""

    #: SCRATCH / WORK (environment variables the centre sets), guess, HOME
    source: str
    path: str
    #: writable, read-only or missing
    state: str
    free_kb: int | None


@dataclass
class ModuleSystem:
    """The environment-modules flavour on the login node."""

    kind: Literal["lmod", "environment-modules"]
    version: str | None
    home: str | None
    #: "shell" when a plain SSH command has ``module``; "login shell" when only ``bash -l`` does
    where: str


@dataclass
class Discovery:
    """Everything :data:`DISCOVERY_SCRIPT` found out."""

    user: str
    home: str
    hostname: str
    groups: list[str]
    remote_epoch: int | None
    slurm_version: str | None
    cluster_name: str | None
    config: dict[str, str]
    partitions: list[Partition]
    associations: list[Association]
    default_account: str | None
    qos_limits: dict[str, dict[str, Any]]
    mpi_plugins: list[str]
    runtimes: list[RuntimeFound]
    modules: ModuleSystem | None
    job_roots: list[JobRootCandidate]
    python: str | None
    scratch: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def accounts(self) -> list[str]:
        """The user's accounts on this cluster, the default first."""
        accts = list(dict.fromkeys(a.account for a in self.associations))
        if self.default_account in accts:
            accts.remove(self.default_account)
            accts.insert(0, self.default_account)
        return accts

    @property
    def qos(self) -> list[str]:
        """Every QOS the user's associations allow."""
        return list(dict.fromkeys(q for a in self.associations for q in a.qos))

    @property
    def max_array_size(self) -> int | None:
        """``MaxArraySize`` (array indices run from 0 to this minus one)."""
        return _pos_int(self.config.get("MaxArraySize"))

    @property
    def max_submit_jobs(self) -> int | None:
        """The tightest per-user submit limit: association MaxSubmit/GrpSubmit and the QOS' MaxSubmitPU."""
        limits = [v for a in self.associations for v in (a.max_submit, a.grp_submit) if v]
        for q in self.qos:
            v = self.qos_limits.get(q, {}).get("max_submit_pu")
            if v:
                limits.append(v)
        return min(limits) if limits else None

    @property
    def default_partition(self) -> Partition | None:
        """The partition sinfo marks with ``*``."""
        return next((p for p in self.partitions if p.default), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (``site add -o json``), with the derived values spelled out."""
        out = asdict(self)
        out.pop("config")
        out.update(
            accounts=self.accounts,
            qos=self.qos,
            max_array_size=self.max_array_size,
            max_submit_jobs=self.max_submit_jobs,
            max_job_count=_pos_int(self.config.get("MaxJobCount")),
            default_partition=self.default_partition.name if self.default_partition else None,
        )
        return out


def _pos_int(s: str | None) -> int | None:
    t = (s or "").strip()
    return int(t) if t.isdigit() and int(t) > 0 else None


_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """``slurm-wlm 22.05.8`` / ``slurm 23.11.1`` / ``22.05.8`` -> ``(22, 5, 8)``."""
    m = _VERSION_RE.search(text or "")
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def version_text(text: str | None) -> str | None:
    """The version as Slurm spells it (``22.05.8``), from ``sinfo --version`` output."""
    m = _VERSION_RE.search(text or "")
    return m.group(0) if m else None


def _names(value: str | None) -> list[str] | None:
    # scontrol prints ALL (or nothing) for "no restriction"
    v = (value or "").strip()
    if v in ("", "ALL", "(null)"):
        return None
    return [x for x in v.split(",") if x]


def parse_user_assoc(text: str) -> tuple[str | None, list[Association]]:
    """``sacctmgr -nP show user U withassoc format=defaultaccount,cluster,account,partition,qos,...``.

    One sacctmgr call gives both the default account (first field, on every row) and
    the associations; sacctmgr is the slow one (~0.2 s a call, it asks slurmdbd).
    """
    default: str | None = None
    rows: list[Association] = []
    for line in text.splitlines():
        f = line.split("|")
        if len(f) < 9:
            continue
        default = default or f[0].strip() or None
        if not f[2].strip():
            continue  # a user without associations still prints one row
        rows.append(
            Association(
                cluster=f[1].strip(),
                account=f[2].strip(),
                partition=f[3].strip() or None,
                qos=[q for q in f[4].strip().split(",") if q],
                default_qos=f[5].strip() or None,
                max_submit=_pos_int(f[6]),
                max_jobs=_pos_int(f[7]),
                grp_submit=_pos_int(f[8]),
            )
        )
    return default, rows


def parse_qos(text: str) -> dict[str, dict[str, Any]]:
    """Rows of ``sacctmgr -nP show qos format=name,maxsubmitjobsperuser,maxjobsperuser,maxwall``."""
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        f = line.split("|")
        if len(f) < 4 or not f[0].strip():
            continue
        out[f[0].strip()] = {
            "max_submit_pu": _pos_int(f[1]),
            "max_jobs_pu": _pos_int(f[2]),
            "max_wall": slurm.parse_slurm_time(f[3]) if f[3].strip() else None,
        }
    return out


def parse_partitions(sinfo_text: str, scontrol_text: str) -> list[Partition]:
    """Merge ``sinfo`` (nodes, CPUs, memory, gres) with ``scontrol show partition`` (limits, access).

    The partitions are sinfo's, in sinfo's order: sinfo leaves out hidden partitions and
    those the user's groups may not use, which is what a user should be offered.
    """
    details = {r.get("PartitionName", ""): r for r in slurm.parse_scontrol_kv(scontrol_text)}
    out: list[Partition] = []
    for info in slurm.parse_sinfo(sinfo_text):
        d = details.get(info.name, {})
        types = sorted({g.type for gres in info.gres for g in slurm.parse_gres(gres) if g.name == "gpu" and g.type})
        max_nodes = _pos_int(d.get("MaxNodes"))
        out.append(
            Partition(
                name=info.name,
                default=info.default or d.get("Default") == "YES",
                state=(d.get("State") or info.available).lower(),
                nodes=info.nodes,
                cpus=info.cpus,
                memory_mb=info.memory_mb,
                gpus_per_node=info.gpus_per_node,
                gpu_types=types,
                gres=info.gres,
                max_time=info.time_limit if not d.get("MaxTime") else slurm.parse_slurm_time(d["MaxTime"]),
                default_time=slurm.parse_slurm_time(d.get("DefaultTime", "")),
                max_nodes=max_nodes,
                allow_accounts=_names(d.get("AllowAccounts")),
                deny_accounts=_names(d.get("DenyAccounts")) or [],
                allow_qos=_names(d.get("AllowQos")),
                node_states=dict(info.node_states),
            )
        )
    return out


def parse_runtimes(text: str) -> list[RuntimeFound]:
    """``program|path|version`` lines of the runtimes section."""
    out: list[RuntimeFound] = []
    for line in text.splitlines():
        f = line.split("|", 2)
        if len(f) == 3 and f[0].strip():
            out.append(RuntimeFound(program=f[0].strip(), path=f[1].strip(), version=f[2].strip()))
    return out


def parse_modules(text: str) -> ModuleSystem | None:
    """The modules section: ``module`` in the plain shell, else in a login shell."""
    kv = _kv_lines(text)
    for prefix, where in (("", "shell"), ("login_", "login shell")):
        func = kv.get(prefix + "function", "")
        home = kv.get(prefix + "moduleshome", "") or None
        lmod = kv.get(prefix + "lmod", "") or None
        if func or home or lmod:
            kind: Literal["lmod", "environment-modules"] = (
                "lmod" if lmod or (home and "lmod" in home.lower()) else "environment-modules"
            )
            return ModuleSystem(kind=kind, version=lmod, home=home, where=where)
    return None


def parse_job_roots(text: str) -> list[JobRootCandidate]:
    """``source|path|state|free_kb`` lines of the roots section."""
    out: list[JobRootCandidate] = []
    for line in text.splitlines():
        f = line.split("|")
        if len(f) == 4 and f[1]:
            out.append(JobRootCandidate(source=f[0], path=f[1], state=f[2], free_kb=_pos_int(f[3])))
    return out


def parse_mpi_plugins(text: str) -> list[str]:
    """``srun --mpi=list``: the plugin names (``pmix``, ``pmix_v4``, ``pmi2``, ``none``...)."""
    names: list[str] = []
    for line in text.splitlines():
        s = line.strip()
        if s.lower().startswith("specific pmix plugin versions available:"):
            names += [v.strip() for v in s.split(":", 1)[1].split(",") if v.strip()]
        elif re.fullmatch(r"(?:srun: )?[a-z0-9_]+", s) and not s.endswith("are..."):
            names.append(s.removeprefix("srun: "))
    return list(dict.fromkeys(names))


def parse_discovery(text: str) -> Discovery:
    """Turn :data:`DISCOVERY_SCRIPT` output into a :class:`Discovery`.

    Raises :class:`RuntimeFailure` when Slurm itself cannot be read (no sinfo, or it
    failed): without partitions there is nothing to configure.  Missing accounting
    (no slurmdbd) or a failing optional probe only adds a warning.
    """
    sec = split_sections(text)
    if "env" not in sec:
        raise RuntimeFailure(
            "the discovery script printed nothing hpcjobs can read",
            hint="is the login shell POSIX (bash, zsh, sh)? its first lines were: " + repr(text.strip()[:200]),
        )
    env = _kv_lines(sec["env"].text)
    warnings: list[str] = []

    def need(name: str, what: str, hint: str) -> Section:
        s = sec.get(name)
        if s is None or not s.ok:
            detail = (s.text.strip().splitlines() or [""])[-1] if s else "no output"
            if s is not None and s.rc == 127:
                detail = "command not found"
            raise RuntimeFailure(f"{what} failed on the cluster: {detail}", hint=hint)
        return s

    version = need(
        "version",
        "sinfo --version",
        "is this a Slurm login node? a non-interactive login must find sinfo on PATH "
        "(add `module load slurm` to ~/.bashrc if your centre needs it)",
    )
    sinfo_sec = need("sinfo", "sinfo", "is slurmctld up? try `sinfo` on the login node")

    def optional(name: str, what: str) -> str:
        s = sec.get(name)
        if s is None or not s.ok:
            detail = ((s.text.strip().splitlines() or ["no output"])[-1]) if s else "no output"
            warnings.append(f"{what} failed ({detail}); its settings are left at their defaults")
            return ""
        return s.text

    config = slurm.parse_scontrol_config(optional("config", "scontrol show config"))
    partitions = parse_partitions(sinfo_sec.text, optional("partitions", "scontrol show partition"))
    cluster = config.get("ClusterName") or None
    default_account, assocs = parse_user_assoc(optional("assoc", "sacctmgr show user withassoc (your accounts)"))
    if cluster:
        # sacctmgr lists every cluster of a shared slurmdbd; only this one's rows apply
        assocs = [a for a in assocs if a.cluster in ("", cluster)]
    mpi = sec.get("mpi")
    return Discovery(
        user=env.get("user", ""),
        home=env.get("home", ""),
        hostname=env.get("host", ""),
        groups=env.get("groups", "").split(),
        remote_epoch=_pos_int(env.get("epoch")),
        slurm_version=version_text(version.text),
        cluster_name=cluster,
        config=config,
        partitions=partitions,
        associations=assocs,
        default_account=default_account,
        qos_limits=parse_qos(optional("qos", "sacctmgr show qos")),
        mpi_plugins=parse_mpi_plugins(mpi.text) if mpi is not None and mpi.ok else [],
        runtimes=parse_runtimes(sec["runtimes"].text) if "runtimes" in sec else [],
        modules=parse_modules(sec["modules"].text) if "modules" in sec else None,
        job_roots=parse_job_roots(sec["roots"].text) if "roots" in sec else [],
        python=(sec["python"].text.strip() or None) if "python" in sec and sec["python"].ok else None,
        scratch=env.get("scratch") or None,
        warnings=warnings,
    )


# --------------------------------------------------------------------------- choosing


@dataclass
class Choice:
    """One decision of the generated config: what, the value, and why."""

    what: str
    value: str
    why: str


@dataclass
class ComputePlan:
    """The compute generated for one partition, with the comments that explain it."""

    name: str
    partition: Partition
    data: dict[str, Any]
    comments: list[str]
    inline: dict[str, str] = field(default_factory=dict)


@dataclass
class SiteDraft:
    """A generated site config: the data, its commented YAML, and the choices made."""

    name: str
    data: dict[str, Any]
    text: str
    choices: list[Choice]
    skipped: list[dict[str, str]]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {
            "name": self.name,
            "config": self.data,
            "choices": [asdict(c) for c in self.choices],
            "skipped_partitions": self.skipped,
            "notes": self.notes,
        }


def _fmt_time(seconds: int | None) -> str:
    return slurm.format_slurm_time(seconds) if seconds else "unlimited"


def _fmt_mem(mb: int | None) -> str:
    if not mb:
        return "? MB"
    return f"{mb / 1024:.0f} GB" if mb >= 10240 else f"{mb} MB"


def _safe_name(partition: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", partition).strip("-.") or "partition"
    return name if _COMPUTE_NAME_RE.match(name) else f"p-{name}"


def _usable_accounts(p: Partition, d: Discovery) -> list[str] | None:
    """The user's accounts that may use *p*; None when accounting is unknown."""
    if not d.associations:
        return None
    accts = [a.account for a in d.associations if a.partition in (None, p.name)]
    accts = list(dict.fromkeys(accts))
    if d.default_account in accts:
        accts.remove(d.default_account)
        accts.insert(0, d.default_account)
    if p.allow_accounts is not None:
        accts = [a for a in accts if a in p.allow_accounts]
    return [a for a in accts if a not in p.deny_accounts]


def _default_qos(d: Discovery, account: str | None) -> str | None:
    for a in d.associations:
        if account is None or a.account == account:
            if a.default_qos:
                return a.default_qos
            if "normal" in a.qos:
                return "normal"
            return a.qos[0] if a.qos else None
    return None


def _describe(p: Partition) -> str:
    gpu = ""
    if p.gpus_per_node:
        gpu = f", {p.gpus_per_node} GPUs" + (f" ({'/'.join(p.gpu_types)})" if p.gpu_types else "")
    return (
        f"partition {p.name}: {p.nodes} node{'s' if p.nodes != 1 else ''} x {p.cpus or '?'} CPUs, "
        f"{_fmt_mem(p.memory_mb)}{gpu}; max time {_fmt_time(p.max_time)}"
    )


def _unusable(p: Partition, d: Discovery) -> str | None:
    """Why the user cannot submit to *p*, or None."""
    from hpcjobs.site import TOKEN_RE

    if not re.match(TOKEN_RE, p.name):
        # only validated tokens reach #SBATCH lines (docs/decisions.md)
        return "its name has characters hpcjobs does not put in #SBATCH lines"
    accts = _usable_accounts(p, d)
    if accts is not None and not accts:
        why = "none of your accounts may use it"
        if p.allow_accounts is not None:
            why += f" (AllowAccounts={','.join(p.allow_accounts)})"
        return why
    return None


def _plan_compute(p: Partition, d: Discovery, name: str, *, is_default: bool) -> ComputePlan:
    """The compute for partition *p*.

    GPUs: ``gpus_per_node`` in a site config is what a job asks for by default, not what
    a node has, so it is never set here.  A GPU partition gets instance types gpu-1..N;
    jobs sent to it take one GPU by default (``default_instance_type: gpu-1``), except on
    the default partition, where a job that names no compute must stay a CPU job.
    """
    accts = _usable_accounts(p, d)
    data: dict[str, Any] = {"partition": p.name}
    comments = [_describe(p) + (f" (default {_fmt_time(p.default_time)})" if p.default_time else "") + "."]
    inline: dict[str, str] = {}
    if p.state not in ("up",):
        comments.append(f"It was {p.state.upper()} when discovered: jobs queue until the admins bring it up.")
    account: str | None = None
    if accts:
        if d.default_account and accts[0] == d.default_account:
            others = accts[1:]
            comments.append(
                f"Account: Slurm charges your default account ({d.default_account})"
                + (f"; to charge another, add  account: {others[0]}  (yours: {', '.join(accts)})." if others else ".")
            )
        else:
            # the default account may not use this partition, so the config must name one
            account = accts[0]
            data["account"] = account
            inline["account"] = f"your default account {d.default_account or '(none)'} may not use this partition"
    qos = _default_qos(d, account or d.default_account)
    if p.allow_qos is not None and qos not in p.allow_qos:
        allowed = [q for q in d.qos if q in p.allow_qos]
        if allowed:
            data["qos"] = allowed[0]
            inline["qos"] = f"the partition allows QOS {','.join(p.allow_qos)}; {qos or 'your default'} is not one"
    elif len(d.qos) > 1:
        comments.append(f"QOS: Slurm uses {qos or 'your default'}; yours: {', '.join(d.qos)} (add  qos: NAME  to pick one).")
    if p.cpus:
        data["cpus_per_node"] = p.cpus
    bounds = [x for x in (p.max_nodes, p.nodes) if x]
    max_nodes = min(bounds) if bounds else None
    if max_nodes:
        data["max_nodes"] = max_nodes
        inline["max_nodes"] = "MaxNodes of the partition" if p.max_nodes and p.max_nodes <= p.nodes else "nodes in the partition"
    if p.default_time is None and p.max_time:
        comments.append(
            f"No DefaultTime: a job without limits.timeout asks for the maximum ({_fmt_time(p.max_time)}) "
            "and may wait longer; set  time_limit:  to ask for less."
        )
    if p.gpus_per_node:
        n = p.gpus_per_node
        if len(p.gpu_types) == 1:
            data["gpu_type"] = p.gpu_types[0]
        elif len(p.gpu_types) > 1:
            comments.append(
                f"GPU types: {', '.join(p.gpu_types)}; jobs take any type. Add  gpu_type: NAME  "
                "(or per instance type) to insist on one."
            )
        its: dict[str, dict[str, Any]] = {}
        for k in range(1, n + 1):
            it: dict[str, Any] = {"gpus": k}
            if p.cpus:
                it["cpus"] = max(1, p.cpus * k // n)
            if p.memory_mb and p.memory_mb >= 256:
                it["memory"] = f"{p.memory_mb * k // n}M"
            it["description"] = f"{k} of {n} GPUs" + (" (a whole node)" if k == n else "")
            its[f"gpu-{k}"] = it
        if is_default:
            comments.append(
                f"Nodes have {n} GPUs, but this is the default partition: jobs are CPU jobs unless they say "
                f"resources: {{instance_type: gpu-1}} (gpu-1..gpu-{n}: that many GPUs with a fair share of CPUs and memory)."
            )
        else:
            data["default_instance_type"] = "gpu-1"
            inline["default_instance_type"] = "a job takes one GPU unless it asks for more: the shortest wait"
            comments.append(
                f"Instance types gpu-1..gpu-{n}: resources.instance_type picks that many GPUs "
                "with a fair share of CPUs and memory."
            )
        data["instance_types"] = its
    data["description"] = _describe(p)
    return ComputePlan(name=name, partition=p, data=data, comments=comments, inline=inline)


def _choose_runtime(d: Discovery, requested: str) -> tuple[str, str]:
    """(runtime, why) for ``--runtime`` *requested*: none, auto or a runtime name."""
    found = [r.runtime for r in d.runtimes if r.runtime]
    found_txt = ", ".join(f"{r.program} ({r.version or r.path})" for r in d.runtimes) or "none"
    if requested == "none":
        if found:
            return "none", (
                f"found {found_txt}; jobs run on the host until you opt in (an image pull can take "
                "minutes and fill a home quota): set runtime: " + _best_runtime(found) + " to run environment.image in containers"
            )
        return "none", "no container runtime found on the login node's PATH; jobs run on the host"
    if requested == "auto":
        if not found:
            return "none", "no container runtime found on the login node's PATH; jobs run on the host"
        best = _best_runtime(found)
        return best, f"found {found_txt}; {best} is preferred"
    if requested not in found:
        raise UserError(
            f"container runtime '{requested}' was not found on the cluster",
            hint=f"found: {found_txt}; use --runtime auto, none, or one of those",
        )
    return requested, f"asked for with --runtime (found: {found_txt})"


def _best_runtime(found: Sequence[str]) -> str:
    return next(r for r in RUNTIME_PREFERENCE if r in found)


def _choose_job_root(d: Discovery) -> tuple[str, str]:
    """(job_root as written in the config, why)."""
    writable = [c for c in d.job_roots if c.state == "writable"]
    seen = ", ".join(f"{c.path} ({c.state})" for c in d.job_roots if c.state != "missing") or "none"

    def spelled(c: JobRootCandidate) -> str:
        # keep the config portable: $USER instead of the user's name, ~ for the home
        if c.source == "HOME" or (d.home and c.path == d.home):
            return "~/hpcjobs"
        path = c.path.rstrip("/")
        if d.user and path.endswith("/" + d.user):
            path = path[: -len(d.user)] + "$USER"
        return path + "/hpcjobs"

    for c in writable:
        if c.source in ("SCRATCH", "WORK", "guess"):
            return spelled(c), (
                f"{c.path} is the centre's scratch/work space (${c.source})"
                if c.source != "guess"
                else f"{c.path} exists and is writable"
            ) + f": large and visible from the compute nodes, but often purged, so download outputs soon. Candidates: {seen}"
    home = next((c for c in writable if c.source == "HOME"), None)
    if home is not None:
        return (
            "~/hpcjobs",
            f"no scratch space found; your home is shared with the compute nodes on most clusters. Candidates: {seen}",
        )
    return "~/hpcjobs", f"no writable folder found among the candidates ({seen}); check job_root before the first job"


def _choose_mpi(d: Discovery) -> tuple[str | None, str]:
    plugins = d.mpi_plugins
    if not plugins:
        return None, "srun --mpi=list gave nothing; the default (pmix) is kept"
    if any(x == "pmix" or x.startswith("pmix_") for x in plugins):
        return "pmix", f"srun offers {', '.join(plugins)}"
    if "pmi2" in plugins:
        return "pmi2", f"no PMIx; srun offers {', '.join(plugins)}"
    default = (d.config.get("MpiDefault") or "").lower()
    if default and default != "none" and re.fullmatch(r"[a-z0-9_]+", default):
        return default, f"the cluster's MpiDefault; srun offers {', '.join(plugins)}"
    return None, f"srun offers {', '.join(plugins)}; the default (pmix) is kept"


def _pick_aliases(plans: list[ComputePlan], default: str | None) -> dict[str, str]:
    """alias -> compute: ``cpu-cluster`` and ``gpu-cluster``, as Azure ML examples say."""
    names = {cp.name for cp in plans}
    out: dict[str, str] = {}
    by_name = {cp.name: cp for cp in plans}
    cpu = [cp for cp in plans if not cp.partition.gpus_per_node]
    gpu = [cp for cp in plans if cp.partition.gpus_per_node]
    if CPU_ALIAS not in names and plans:
        if default and default in by_name and not by_name[default].partition.gpus_per_node:
            out[CPU_ALIAS] = default
        elif cpu:
            out[CPU_ALIAS] = cpu[0].name
        elif default:
            out[CPU_ALIAS] = default
    # only a compute whose jobs take a GPU by default: the default partition's jobs do not
    gpu_default = [cp for cp in gpu if "default_instance_type" in cp.data]
    if GPU_ALIAS not in names and gpu_default:
        named = next((cp for cp in gpu_default if cp.name.lower() in ("gpu", "gpus")), None)
        out[GPU_ALIAS] = (named or gpu_default[0]).name
    return out


def draft_site(
    d: Discovery,
    name: str,
    *,
    ssh: Mapping[str, Any] | None = None,
    runtime: str = "none",
    today: _dt.date | None = None,
    source: str = "",
) -> SiteDraft:
    """Decide the site config for *d*: computes, default, job root, runtime, limits.

    Pure: *today* and *source* (``login.uni.edu`` / ``this machine``) only go into the
    header comment.  Raises :class:`UserError` if no partition is usable.
    """
    day = (today or _dt.date.today()).isoformat()
    choices: list[Choice] = []
    skipped: list[dict[str, str]] = []
    notes = list(d.warnings)
    usable: list[Partition] = []
    for p in d.partitions:
        why = _unusable(p, d)
        if why is None:
            usable.append(p)
        else:
            skipped.append({"partition": p.name, "why": why})
    if not usable:
        raise UserError(
            "no partition of this cluster is usable by you",
            hint="; ".join(f"{s['partition']}: {s['why']}" for s in skipped) or "sinfo listed no partition",
        )
    dp = d.default_partition
    if dp is not None and dp in usable:
        default_p = dp
        why_default = f"partition {dp.name} is Slurm's default (marked * by sinfo)"
    else:
        default_p = usable[0]
        why_default = (
            "the first usable partition (Slurm's default partition is not usable by you)"
            if dp
            else "the first partition (the cluster has no default)"
        )
    plans: list[ComputePlan] = []
    taken: set[str] = set()
    default = ""
    for p in usable:
        cname = _safe_name(p.name)
        while cname in taken:
            cname += "_"
        taken.add(cname)
        plans.append(_plan_compute(p, d, cname, is_default=p is default_p))
        if p is default_p:
            default = cname
    choices.append(Choice("default_compute", default, why_default))
    aliases = _pick_aliases(plans, default)
    for alias, target in aliases.items():
        cp = next(cp for cp in plans if cp.name == target)
        # right under partition:, where a reader looks for the names a job may use
        rest = {k: v for k, v in cp.data.items() if k not in ("partition", "aliases")}
        cp.data = {"partition": cp.data["partition"], "aliases": [*cp.data.get("aliases", []), alias], **rest}
        choices.append(Choice(f"alias {alias}", target, f"Azure ML examples say compute: azureml:{alias}"))
    for cp in plans:
        extra = []
        n = cp.partition.gpus_per_node
        if n:
            dflt = cp.data.get("default_instance_type")
            extra.append(
                f"{n} GPUs/node, instance types gpu-1..gpu-{n}; "
                + (f"jobs take {dflt} unless they ask" if dflt else "CPU jobs unless they ask for an instance type")
            )
        if "account" in cp.data:
            extra.append(f"account {cp.data['account']}")
        choices.append(
            Choice(f"compute {cp.name}", f"partition {cp.partition.name}", "; ".join(extra) or _describe(cp.partition))
        )
    job_root, why_root = _choose_job_root(d)
    choices.append(Choice("job_root", job_root, why_root))
    rt, why_rt = _choose_runtime(d, runtime)
    choices.append(Choice("environment.runtime", rt, why_rt))
    mpi, why_mpi = _choose_mpi(d)
    if mpi:
        choices.append(Choice("mpi", mpi, why_mpi))
    if d.max_array_size:
        choices.append(Choice("max_array_size", str(d.max_array_size), "MaxArraySize of scontrol show config"))
    if d.max_submit_jobs:
        choices.append(Choice("max_submit_jobs", str(d.max_submit_jobs), "your MaxSubmit limit (sacctmgr)"))

    data: dict[str, Any] = {"name": name}
    where = source or d.hostname or "the cluster"
    data["description"] = f"Slurm {d.slurm_version or '?'} cluster {d.cluster_name or '?'} via {where} (discovered {day})"
    data["scheduler"] = "slurm"
    if ssh:
        data["ssh"] = {k: v for k, v in ssh.items() if v is not None}
    data["job_root"] = job_root
    data["default_compute"] = default
    data["computes"] = {cp.name: cp.data for cp in plans}
    data["gpu_request"] = "gres"
    env: dict[str, Any] = {"runtime": rt}
    data["environment"] = env
    data["datastores"] = {"workspaceblobstore": job_root.rstrip("/") + "/datastore"}
    if mpi:
        data["mpi"] = mpi
    if d.max_array_size:
        data["max_array_size"] = d.max_array_size
    if d.max_submit_jobs:
        data["max_submit_jobs"] = d.max_submit_jobs
    _validate(data)
    text = render_site_yaml(data, d, plans, choices, skipped, day=day, source=where)
    _check_roundtrip(text, data, name)
    return SiteDraft(name=name, data=data, text=text, choices=choices, skipped=skipped, notes=notes)


def _validate(data: dict[str, Any]) -> Site:
    from hpcjobs.site import Site

    try:
        return Site.model_validate(data)
    except Exception as e:  # noqa: BLE001 - pydantic's error, turned into ours with the data at fault
        raise RuntimeFailure(f"hpcjobs generated a site config its own model rejects (a bug): {e}") from None


def _check_roundtrip(text: str, data: dict[str, Any], name: str) -> None:
    from hpcjobs.spec.yamlload import load_yaml_text

    loaded, _ = load_yaml_text(text, f"{name}.yml")
    if loaded != data:
        raise RuntimeFailure("the commented site config does not read back as the data it was written from (a bug)")


# --------------------------------------------------------------------------- YAML


_PLAIN_RE = re.compile(r"^[A-Za-z_/$][A-Za-z0-9_./$@+-]*$|^~/[A-Za-z0-9_./$@+-]*$")
_YAML_WORDS = {"true", "false", "null", "yes", "no", "on", "off", "y", "n", "~"}


def yaml_scalar(value: Any) -> str:
    """A scalar in YAML: plain when unambiguous, else a double-quoted (JSON) string."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    s = str(value)
    if _PLAIN_RE.match(s) and s.lower() not in _YAML_WORDS:
        return s
    return json.dumps(s, ensure_ascii=False)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{yaml_scalar(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return yaml_scalar(value)


class _Writer:
    """Lines of YAML with comments; values in block style one level deep, flow style below."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def comment(self, text: str, indent: int = 0, width: int = 96) -> None:
        pad = " " * indent
        words = text.split(" ")
        line = ""
        for w in words:
            if line and len(pad) + 2 + len(line) + 1 + len(w) > width:
                self.lines.append(f"{pad}# {line}")
                line = w
            else:
                line = f"{line} {w}" if line else w
        self.lines.append(f"{pad}# {line}".rstrip())

    def blank(self) -> None:
        self.lines.append("")

    def item(self, key: str, value: Any, indent: int = 0, inline: str | None = None) -> None:
        pad = " " * indent
        tail = f"  # {inline}" if inline else ""
        if isinstance(value, dict) and value and indent == 0:
            self.lines.append(f"{pad}{yaml_scalar(key)}:{tail}")
            for k, v in value.items():
                self.item(k, v, indent + 2)
            return
        self.lines.append(f"{pad}{yaml_scalar(key)}: {_flow(value)}{tail}")


def render_site_yaml(
    data: dict[str, Any],
    d: Discovery,
    plans: list[ComputePlan],
    choices: list[Choice],
    skipped: list[dict[str, str]],
    *,
    day: str,
    source: str,
) -> str:
    """The commented YAML of *data* (the config :func:`draft_site` decided)."""
    why = {c.what: c.why for c in choices}
    w = _Writer()
    name = data["name"]
    w.comment(f"hpcjobs site config '{name}', written by `hpcjobs site add` on {day}.")
    w.comment(
        f"Discovered through {source} as {d.user or '?'}: Slurm {d.slurm_version or '?'}, cluster "
        f"{d.cluster_name or '?'}, {len(d.partitions)} partition(s); accounts: {', '.join(d.accounts) or 'unknown'}"
        + (f" (default {d.default_account})" if d.default_account else "")
        + f"; QOS: {', '.join(d.qos) or 'unknown'}."
    )
    w.comment("Edit freely; `hpcjobs site check " + name + "` says whether it still works. Fields: docs/site-config.md.")
    if skipped:
        w.comment("Left out: " + "; ".join(f"partition {s['partition']} ({s['why']})" for s in skipped) + ".")
    w.item("name", name)
    w.item("description", data["description"])
    w.item("scheduler", "slurm")
    if "ssh" in data:
        w.blank()
        w.comment("How to reach the login node (also honours ~/.ssh/config for this host: ProxyJump, User, IdentityFile).")
        w.item("ssh", data["ssh"])
    w.blank()
    w.comment("Job folders (scripts, logs, outputs) go under job_root; it must be visible from the compute nodes.")
    w.comment("Why this one: " + why["job_root"])
    w.item("job_root", data["job_root"])
    w.blank()
    w.comment("A job without compute: runs here. " + why["default_compute"] + ".")
    w.item("default_compute", data["default_compute"])
    w.blank()
    w.comment("One compute per partition, named after it.  aliases: let job files written for Azure ML")
    w.comment("(compute: azureml:cpu-cluster / azureml:gpu-cluster) run unchanged.")
    w.lines.append("computes:")
    for cp in plans:
        for c in cp.comments:
            w.comment(c, indent=2)
        w.lines.append(f"  {yaml_scalar(cp.name)}:")
        for k, v in cp.data.items():
            inline = cp.inline.get(k)
            if k == "aliases":
                inline = "so `compute: azureml:" + v[0] + "` finds this partition"
            if k == "instance_types":
                w.lines.append("    instance_types:")
                for it_name, it in v.items():
                    w.lines.append(f"      {yaml_scalar(it_name)}: {_flow(it)}")
                continue
            w.item(k, v, indent=4, inline=inline)
    w.blank()
    w.comment("How GPUs are asked for: gres (--gres=gpu:N, every Slurm) or gpus-per-node (--gpus-per-node=N).")
    w.item("gpu_request", data["gpu_request"])
    w.blank()
    w.comment("environment.runtime: " + why["environment.runtime"] + ".")
    rts = ", ".join(f"{r.program} {r.version}".strip() for r in d.runtimes) or "none"
    w.comment(f"Container runtimes on the login node: {rts}.")
    if d.modules is not None:
        w.comment(
            f"Module system: {d.modules.kind}{' ' + d.modules.version if d.modules.version else ''}"
            + (" (only in a login shell)" if d.modules.where == "login shell" else "")
            + "; list modules every job loads under environment.modules, e.g. [cuda/12.1]."
        )
    else:
        w.comment("No module system found (no `module` command, no $MODULESHOME).")
    w.comment(f"Python on the login node: {d.python or 'python3 not found'} (environment.python picks the interpreter).")
    w.item("environment", data["environment"])
    w.blank()
    w.comment("azureml://datastores/workspaceblobstore/paths/... resolves under this folder.")
    w.item("datastores", data["datastores"])
    if "mpi" in data:
        w.blank()
        w.comment(f"srun --mpi=... for distributed jobs: {why['mpi']}.")
        w.item("mpi", data["mpi"])
    if "max_array_size" in data or "max_submit_jobs" in data:
        w.blank()
        w.comment(f"Limits sweeps must fit in (as of {day}; delete a line to have hpcjobs ask the cluster instead).")
        if "max_array_size" in data:
            w.item("max_array_size", data["max_array_size"], inline="MaxArraySize: array indices 0..N-1")
        if "max_submit_jobs" in data:
            w.item("max_submit_jobs", data["max_submit_jobs"], inline="your MaxSubmit (sacctmgr)")
    w.blank()
    w.comment("tracking: remote sites log MLflow runs offline and import them when a job ends; set")
    w.comment("tracking: {mode: direct, uri: http://...} if the compute nodes can reach your MLflow server.")
    return "\n".join(w.lines) + "\n"


# --------------------------------------------------------------------------- site add (I/O)


@dataclass
class AddResult:
    """What ``site add`` did."""

    name: str
    path: str | None
    draft: SiteDraft
    discovery: Discovery
    trusted: list[dict[str, Any]]
    seconds: float
    made_default: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "name": self.name,
            "path": self.path,
            "made_default": self.made_default,
            "seconds": round(self.seconds, 3),
            "trusted_host_keys": self.trusted,
            "choices": [asdict(c) for c in self.draft.choices],
            "skipped_partitions": self.draft.skipped,
            "notes": self.draft.notes,
            "discovery": self.discovery.to_dict(),
            "config": self.draft.data,
        }


def user_site_path(name: str) -> Path:
    """Where ``site add`` writes site *name*: ``<config dir>/sites/NAME.yml``."""
    return paths.config_dir() / "sites" / f"{name}.yml"


def _check_name(name: str) -> None:
    from hpcjobs.site import SITE_NAME_RE

    if not SITE_NAME_RE.match(name) or name == "local":
        raise UserError(
            f"invalid site name {name!r}",
            hint="letters, digits, . _ - (at most 64, starting with a letter or digit); 'local' is the embedded default",
        )


#: ``confirm(hop) -> trust?``: asks the human about an unknown host key
Confirm = Callable[["Hop"], bool]


def establish_trust(
    settings: SSHSettings,
    *,
    confirm: Confirm | None,
    fingerprints: Sequence[str] = (),
    max_hops: int = 12,
) -> list[dict[str, Any]]:
    """Make every host key on the way to *settings* trusted, asking about unknown ones.

    A key is trusted when its fingerprint is one of *fingerprints* (checked out of band:
    the scripted path) or when *confirm* says yes (the interactive path, like ssh's own
    question).  A CHANGED or REVOKED key is never trusted here: that is
    ``hpcjobs site trust --replace`` after talking to the admins.  Without *confirm* and a
    matching fingerprint, an unknown key raises :class:`HostKeyError` showing the
    fingerprint, so nothing is ever trusted silently.  Returns the keys it added.
    """
    from hpcjobs import site_trust as st

    wanted = {f.strip() for f in fingerprints if f.strip()}
    added: list[dict[str, Any]] = []
    for _ in range(max_hops):
        _, hop = st.pending(settings)
        if hop is None:
            return added
        where = f"{hop.host}:{hop.port}"
        if hop.status != "unknown":
            # changed/revoked: trust() raises the error with the right explanation
            st.trust(hop, replace=False)
        if hop.fingerprint in wanted:
            pass
        elif wanted and hop.is_target:
            raise HostKeyError(
                f"{where} presents {hop.key_type} {hop.fingerprint}, which is not the fingerprint you gave "
                f"({', '.join(sorted(wanted))}); refusing to connect",
                hint="check the fingerprint with the cluster's admins; "
                "a different key may mean someone intercepts the connection",
            )
        elif confirm is None or not confirm(hop):
            raise HostKeyError(
                f"the host key of {where} is not trusted yet: {hop.key_type} {hop.fingerprint}; nothing was written",
                hint="compare it with the fingerprint your cluster publishes, then run again in a terminal and answer yes, "
                f"or pass --fingerprint {hop.fingerprint}",
            )
        line = st.trust(hop)
        added.append({**hop.to_dict(), "status": "added", "line": line})
    raise RuntimeFailure(f"gave up after {max_hops} hops")


def ssh_block(
    host: str,
    *,
    user: str | None = None,
    port: int | None = None,
    identity_file: str | None = None,
    proxy_jump: str | None = None,
) -> dict[str, Any]:
    """The ``ssh:`` block of a new site (only the fields given)."""
    block: dict[str, Any] = {"host": host, "user": user, "port": port, "identity_file": identity_file, "proxy_jump": proxy_jump}
    return {k: v for k, v in block.items() if v is not None}


def discover(transport: Transport, *, timeout: float = 180.0) -> Discovery:
    """Run :data:`DISCOVERY_SCRIPT` through *transport* (one command) and parse it."""
    res = transport.run(discovery_argv(), timeout=timeout)
    if not res.out.strip():
        raise RuntimeFailure(
            f"the discovery script failed on {transport.name} (exit {res.returncode}): {res.err.strip()[:300]}",
            hint="a POSIX login shell and bash are needed on the login node",
        )
    return parse_discovery(res.out)


def add_site(
    name: str,
    *,
    host: str | None = None,
    local: bool = False,
    user: str | None = None,
    port: int | None = None,
    identity_file: str | None = None,
    proxy_jump: str | None = None,
    runtime: str = "none",
    confirm: Confirm | None = None,
    fingerprints: Sequence[str] = (),
    force: bool = False,
    dry_run: bool = False,
    make_default: bool | None = None,
) -> AddResult:
    """Discover a cluster and write its site config (``hpcjobs site add``).

    Over SSH (*host*) the host key flow comes first (:func:`establish_trust`), then ONE
    remote command discovers the cluster.  With *local* the commands run here (on the
    login node).  The config goes to :func:`user_site_path` after it has been validated;
    an existing user site is only replaced with *force*.  *make_default* None means
    "make it the default site if none is set yet".
    """
    from hpcjobs.site import load_site_file

    _check_name(name)
    if bool(host) == bool(local):
        raise UserError(
            "say where the cluster is: --host LOGIN_NODE (from your machine, over SSH) or --local (on the login node itself)",
        )
    if runtime not in ("none", "auto", *RUNTIME_PREFERENCE):
        raise UserError(f"unknown runtime '{runtime}'", hint="one of: none, auto, " + ", ".join(RUNTIME_PREFERENCE))
    path = user_site_path(name)
    if path.exists() and not force and not dry_run:
        raise UserError(f"site '{name}' exists already ({path})", hint="pass --force to discover again and replace it")
    started = time.monotonic()
    trusted: list[dict[str, Any]] = []
    ssh: dict[str, Any] | None = None
    transport: Transport
    if host:
        from hpcjobs.site import SSHSettings as SiteSSH
        from hpcjobs.transport.ssh import SSHSettings, SSHTransport

        ssh = ssh_block(host, user=user, port=port, identity_file=identity_file, proxy_jump=proxy_jump)
        # the same construction as backends._ssh_settings, so discovery connects exactly as jobs will
        settings = SSHSettings.from_obj(SiteSSH(**ssh), site=name)
        trusted = establish_trust(settings, confirm=confirm, fingerprints=fingerprints)
        transport = SSHTransport(settings)
        source = host
    else:
        from hpcjobs.transport.local import LocalTransport

        transport = LocalTransport()
        source = "this machine"
    try:
        disc = discover(transport)
    finally:
        transport.close()
    draft = draft_site(disc, name, ssh=ssh, runtime=runtime, source=source)
    result = AddResult(name=name, path=None, draft=draft, discovery=disc, trusted=trusted, seconds=time.monotonic() - started)
    if dry_run:
        return result
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(draft.text, encoding="utf-8")
    try:
        # the file as the rest of hpcjobs will read it, with the real loader and model
        load_site_file(tmp, name)
    except HpcjobsError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    result.path = str(path)
    shipped = paths.data_dir("site-configs") / f"{name}.yml"
    if shipped.is_file():
        result.draft.notes.append(f"this user site overrides the shipped site config {shipped}")
    from hpcjobs.site import default_site_name, set_default_site

    if make_default or (make_default is None and default_site_name() is None):
        set_default_site(name)
        result.made_default = True
    return result


# --------------------------------------------------------------------------- site check


@dataclass
class CheckResult:
    """One line of ``site check``."""

    check: str
    status: Literal["PASS", "FAIL", "SKIP"]
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        """True unless the check failed."""
        return self.status != "FAIL"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"check": self.check, "status": self.status, "ok": self.ok, "detail": self.detail, "fix": self.fix}


@dataclass
class TestOnlyCase:
    """One ``sbatch --test-only`` of ``site check``: a compute (and instance type)."""

    __test__ = False  # not a pytest class

    label: str
    compute: str
    instance_type: str | None
    options: list[str]
    error: str | None = None
    #: how the check is named: ``gpu (gpu-1)`` for the default instance type
    display: str = ""


def check_cases(site: Site) -> list[TestOnlyCase]:
    """The ``--test-only`` submissions for every compute and each of its instance types.

    The options come from :func:`hpcjobs.plan.sbatch_options`, the function that writes
    real jobs' ``#SBATCH`` lines, so the check asks Slurm exactly what a job would.
    """
    from hpcjobs import plan as planmod
    from hpcjobs.spec import models as m

    cases: list[TestOnlyCase] = []
    for cname, comp in site.computes.items():
        variants: list[str | None] = [None]
        variants += [it for it in comp.instance_types if it != comp.default_instance_type]
        for it in variants:
            label = cname if it is None else f"{cname}/{it}"
            display = f"{cname} ({comp.default_instance_type})" if it is None and comp.default_instance_type else label
            try:
                resources = m.Resources(instance_type=it) if it else None
                opts, _ = planmod.sbatch_options(
                    site,
                    cname,
                    comp,
                    job_name="hpcjobs-site-check",
                    token="0" * 16,
                    output="/dev/null",
                    resources=resources,
                    distribution=None,
                    timeout=None,
                )
                cases.append(TestOnlyCase(label, cname, it, opts, display=display))
            except HpcjobsError as e:
                cases.append(TestOnlyCase(label, cname, it, [], error=e.message, display=display))
    return cases


def check_argv(site: Site, cases: Sequence[TestOnlyCase]) -> list[str]:
    """The argv that runs :data:`CHECK_SCRIPT` for *site* (values as positional parameters)."""
    program = _PROGRAM_OF_RUNTIME.get(site.environment.runtime, "") if site.environment.runtime != "none" else "none"
    argv = ["bash", "-c", CHECK_SCRIPT, "hpcjobs-check", site.job_root, program]
    for c in cases:
        if c.error is None:
            argv += [c.label, str(len(c.options)), *c.options]
    return argv


def _fix_for_rejection(message: str, case: TestOnlyCase, site: Site, partitions: list[str], accounts: list[str]) -> str:
    low = message.lower()
    where = f"computes.{case.compute}"
    file = site.source or f"the site config of {site.name}"
    comp = site.computes[case.compute]
    if "partition" in low:
        known = ", ".join(partitions) or "(sinfo lists none)"
        return (
            f"partition '{comp.partition or '(default)'}' does not exist (or is not yours): set {where}.partition "
            f"in {file} to one of {known}, or rediscover with `hpcjobs site add {site.name} --force ...`"
        )
    if "account" in low:
        yours = ", ".join(accounts) or "(sacctmgr shows none: ask the admins)"
        return f"set {where}.account in {file} to one of your accounts: {yours}"
    if "qos" in low:
        return f"set {where}.qos in {file} to a QOS you may use (sacctmgr show assoc user=$USER format=account,qos)"
    if "gres" in low or "generic resource" in low:
        return (
            f"the partition has fewer GPUs (or no GPU of that type): "
            f"fix {where}.gpus_per_node / gpu_type / instance_types in {file}"
        )
    if "node configuration" in low or "memory" in low or "cpu count" in low:
        what = f"instance type {case.instance_type}" if case.instance_type else "the compute"
        return f"{what} asks for more CPUs, memory or GPUs than one node has: lower it in {file}"
    if "time limit" in low:
        return f"lower {where}.time_limit in {file} to the partition's maximum (hpcjobs compute show -n {case.compute})"
    return f"Slurm refused the request; fix {where} in {file} (see Slurm's message)"


def parse_check_output(
    text: str,
    site: Site,
    cases: Sequence[TestOnlyCase],
    *,
    local_epoch: float | None = None,
    remote_epoch: float | None = None,
    skew_uncertainty: float = 0.0,
) -> list[CheckResult]:
    """Turn :data:`CHECK_SCRIPT` output (plus the clock probe) into check lines.  Pure."""
    sec = split_sections(text)
    out: list[CheckResult] = []
    # Slurm version
    v = sec.get("version")
    ver = parse_version(v.text) if v is not None and v.ok else None
    tested = ", ".join(TESTED_SLURM)
    if ver is None:
        out.append(
            CheckResult(
                "slurm version",
                "FAIL",
                "sinfo --version failed: " + ((v.text.strip().splitlines() or ["no output"])[-1] if v else "no output"),
                "a non-interactive login must find the Slurm commands: ask the admins, or add `module load slurm` to ~/.bashrc",
            )
        )
    elif ver[:2] < MIN_SLURM:
        out.append(
            CheckResult(
                "slurm version",
                "FAIL",
                f"Slurm {'.'.join(map(str, ver))} is older than {MIN_SLURM[0]}.{MIN_SLURM[1]:02d}",
                f"hpcjobs needs Slurm >= {MIN_SLURM[0]}.{MIN_SLURM[1]:02d} (tested: {tested}); ask the admins about an upgrade",
            )
        )
    else:
        vs = version_text(v.text if v is not None else "") or ".".join(map(str, ver))
        note = (
            "tested"
            if any(vs.startswith(t) for t in TESTED_SLURM)
            else f"supported (>= {MIN_SLURM[0]}.{MIN_SLURM[1]:02d}; tested: {tested})"
        )
        out.append(CheckResult("slurm version", "PASS", f"Slurm {vs}, {note}"))
    # clock
    if remote_epoch is not None and local_epoch is not None:
        skew = remote_epoch - local_epoch
        shown = f"{skew:+.1f} s" + (f" (+/- {skew_uncertainty:.1f} s)" if skew_uncertainty >= 0.05 else "")
        if abs(skew) - skew_uncertainty > MAX_CLOCK_SKEW:
            out.append(
                CheckResult(
                    "clock",
                    "FAIL",
                    f"the cluster's clock is {shown} off this machine's",
                    "turn on time sync here (timedatectl set-ntp true, or your OS's date & time settings); "
                    "if this machine is right, tell the cluster's admins",
                )
            )
        else:
            out.append(CheckResult("clock", "PASS", f"skew {shown} (limit {MAX_CLOCK_SKEW:.0f} s)"))
    elif remote_epoch is None and local_epoch is not None:
        out.append(CheckResult("clock", "FAIL", "could not read the cluster's clock", "`date +%s` must work on the login node"))
    # job root
    r = sec.get("root")
    kv = _kv_lines(r.text) if r is not None else {}
    if kv.get("writable") == "yes":
        out.append(CheckResult("job root", "PASS", f"{kv.get('path', site.job_root)} is writable"))
    else:
        out.append(
            CheckResult(
                "job root",
                "FAIL",
                f"{kv.get('path', site.job_root)} is not writable: {kv.get('error', 'no answer')}",
                f"set job_root in {site.source or 'the site config'} to a folder you may write that the compute nodes see "
                "(~/hpcjobs, or $SCRATCH/hpcjobs)",
            )
        )
    # runtime
    rt = site.environment.runtime
    rs = sec.get("runtime")
    rkv = _kv_lines(rs.text) if rs is not None else {}
    if rt == "none":
        out.append(CheckResult("runtime", "PASS", "none configured: jobs run on the host (environment.image is not used)"))
    elif rkv.get("found"):
        out.append(
            CheckResult("runtime", "PASS", f"{rt}: {rkv['found']}" + (f" ({rkv['version']})" if rkv.get("version") else ""))
        )
    else:
        program = _PROGRAM_OF_RUNTIME.get(rt, rt)
        out.append(
            CheckResult(
                "runtime",
                "FAIL",
                f"environment.runtime is {rt}, but {program if rt != 'pyxis' else 'srun --container-image (pyxis)'} "
                "was not found on the login node",
                f"set environment.runtime in {site.source or 'the site config'} to one the cluster has "
                "(`hpcjobs site add ... --runtime auto --dry-run` shows them) or to none; "
                "or load its module in ~/.bashrc",
            )
        )
    # computes
    parts = [ln.strip() for ln in (sec["partitions"].text if "partitions" in sec else "").splitlines() if ln.strip()]
    accounts = list(
        dict.fromkeys(ln.split("|")[0] for ln in (sec["accounts"].text if "accounts" in sec else "").splitlines() if ln.strip())
    )
    for c in cases:
        name = f"compute {c.display or c.label}"
        if c.error is not None:
            out.append(CheckResult(name, "FAIL", c.error, f"fix computes.{c.compute} in {site.source or 'the site config'}"))
            continue
        s = sec.get(f"test:{c.label}")
        if s is None:
            out.append(CheckResult(name, "FAIL", "no answer from sbatch --test-only", "run `hpcjobs site check` again"))
            continue
        res = slurm.parse_test_only(s.text)
        if s.ok and res.ok:
            out.append(
                CheckResult(
                    name,
                    "PASS",
                    f"Slurm would run it on {res.nodes} in partition {res.partition}"
                    + (f" (start {res.start_time:%Y-%m-%d %H:%M})" if res.start_time else ""),
                )
            )
        else:
            msg = slurm.sbatch_error_message(s.text) or f"sbatch --test-only exited {s.rc}"
            out.append(CheckResult(name, "FAIL", msg, _fix_for_rejection(msg, c, site, parts, accounts)))
    return out


def _connection_checks(site: Site, transport: Transport) -> tuple[list[CheckResult], bool]:
    """connection / host key / authentication lines, and whether commands can run."""
    out: list[CheckResult] = []
    if site.ssh is None:
        out.append(CheckResult("connection", "PASS", "this machine (no SSH)"))
        return out, True
    from hpcjobs.transport.ssh import SSHTransport

    ssh = site.ssh
    login = f"{ssh.user + '@' if ssh.user else ''}{ssh.host}"
    where = login + (f":{ssh.port}" if ssh.port else "")
    ssh_cmd = f"ssh {'-p ' + str(ssh.port) + ' ' if ssh.port else ''}{login}"
    if not isinstance(transport, SSHTransport):
        # transport: system - OpenSSH checks the host key and logs in on the first command
        try:
            res = transport.run(["true"], timeout=ssh.connect_timeout + 30)
        except HpcjobsError as e:
            out.append(CheckResult("connection", "FAIL", e.message, e.hint or f"`{ssh_cmd} true` must work from here"))
            return out, False
        if not res.ok:
            detail = res.err.strip()[:300] or f"ssh exited {res.returncode}"
            out.append(CheckResult("connection", "FAIL", detail, f"`{ssh_cmd} true` must work from here"))
            return out, False
        out.append(CheckResult("connection", "PASS", f"{where} via OpenSSH (host key and login checked by ssh)"))
        return out, True
    from hpcjobs import site_trust as st

    try:
        _, hop = st.pending(transport.settings)
    except HostKeyError as e:
        out.append(CheckResult("connection", "PASS", f"{where} answers"))
        out.append(CheckResult("host key", "FAIL", e.message, e.hint))
        return out, False
    except HpcjobsError as e:
        fix = (e.hint + "; " if e.hint else "") + f"`{ssh_cmd}` must work from here (VPN? a jump host: ssh.proxy_jump)"
        out.append(CheckResult("connection", "FAIL", e.message, fix))
        return out, False
    out.append(CheckResult("connection", "PASS", f"{where} answers"))
    if hop is not None:
        if hop.status == "unknown":
            fix = f"check the fingerprint with the cluster's admins, then run `hpcjobs site trust {site.name}`"
        else:
            fix = (
                f"the key CHANGED or is revoked ({', '.join(hop.conflicts)}): ask the admins before "
                f"`hpcjobs site trust {site.name} --replace`"
            )
        detail = f"{hop.host}:{hop.port} presents {hop.status} key {hop.key_type} {hop.fingerprint}"
        out.append(CheckResult("host key", "FAIL", detail, fix))
        return out, False
    out.append(CheckResult("host key", "PASS", "every hop's key is trusted"))
    try:
        transport.connect()
    except HpcjobsError as e:
        key = ssh.identity_file or "~/.ssh/id_ed25519"
        fix = (
            f"install your public key on the cluster (ssh-copy-id -i {key}.pub {'-p ' + str(ssh.port) + ' ' if ssh.port else ''}"
            f"{login}), load it into ssh-agent (ssh-add), or set ssh.identity_file"
        )
        out.append(CheckResult("authentication", "FAIL", e.message, fix))
        return out, False
    out.append(CheckResult("authentication", "PASS", f"logged in as {transport.target.user}"))
    return out, True


def check_site(name: str | None) -> list[CheckResult]:
    """Run every check of ``hpcjobs site check`` against site *name* (None: the default site)."""
    from hpcjobs import backends
    from hpcjobs.site import get_site

    site = get_site(name)
    if site.is_local:
        return [CheckResult("scheduler", "PASS", "the embedded local site runs jobs on this machine; nothing to check")]
    transport = backends.transport_for(site)
    cases = check_cases(site)
    out, can_run = _connection_checks(site, transport)
    if not can_run:
        out.append(CheckResult("slurm", "SKIP", "needs a working connection"))
        return out
    local_epoch: float | None = None
    remote_epoch: float | None = None
    uncertainty = 0.0
    if site.ssh is not None:
        # timed on its own (the connection is already open): the round trip bounds the error
        t0 = time.time()
        clock = transport.run(["date", "+%s.%N"], timeout=60)
        t1 = time.time()
        local_epoch = (t0 + t1) / 2
        remote_epoch, whole = _parse_epoch(clock.out) if clock.ok else (None, False)
        # a date without %N (BSD) prints "1764382000.N": whole seconds only
        uncertainty = (t1 - t0) / 2 + (1.0 if whole else 0.0)
    else:
        out.append(CheckResult("clock", "PASS", "the cluster is this machine"))
    res = transport.run(check_argv(site, cases), timeout=300)
    if not res.out.strip():
        out.append(
            CheckResult(
                "slurm",
                "FAIL",
                f"the check script failed (exit {res.returncode}): {res.err.strip()[:300]}",
                "bash must be available on the login node",
            )
        )
        return out
    out += parse_check_output(
        res.out, site, cases, local_epoch=local_epoch, remote_epoch=remote_epoch, skew_uncertainty=max(0.0, uncertainty)
    )
    return out


def _parse_epoch(text: str) -> tuple[float | None, bool]:
    """``date +%s.%N`` output -> (seconds, whether only whole seconds were given)."""
    t = text.strip()
    m = re.fullmatch(r"(\d+)(?:\.(\d+|N))?", t)
    if m is None:
        return None, False
    frac = m.group(2)
    if frac is None or frac == "N":
        return float(m.group(1)), True
    return float(f"{m.group(1)}.{frac}"), False


def as_rows(results: Sequence[CheckResult]) -> list[dict[str, Any]]:
    """The JSON list of ``site check -o json``."""
    return [r.to_dict() for r in results]


__all__ = [
    "CHECK_SCRIPT",
    "DISCOVERY_SCRIPT",
    "MIN_SLURM",
    "TESTED_SLURM",
    "AddResult",
    "Association",
    "CheckResult",
    "Choice",
    "Discovery",
    "JobRootCandidate",
    "ModuleSystem",
    "Partition",
    "RuntimeFound",
    "Section",
    "SiteDraft",
    "TestOnlyCase",
    "add_site",
    "as_rows",
    "check_argv",
    "check_cases",
    "check_site",
    "discover",
    "discovery_argv",
    "draft_site",
    "establish_trust",
    "parse_check_output",
    "parse_discovery",
    "parse_user_assoc",
    "parse_version",
    "render_site_yaml",
    "split_sections",
    "user_site_path",
    "yaml_scalar",
]
