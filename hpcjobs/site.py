"""Site configs: how a cluster (or this machine) runs jobs.

A site is a YAML file: ``site-configs/NAME.yml`` shipped with hpcjobs, or
``<config dir>/sites/NAME.yml`` written by the user (``hpcjobs site add``); the user's
file wins.  The embedded default site ``local`` needs no Slurm.  The schema is
documented in ``docs/site-config.md``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from hpcjobs import paths
from hpcjobs.errors import NotFoundError, ValidationError, known_list_hint
from hpcjobs.spec.load import validate_model
from hpcjobs.spec.models import Model
from hpcjobs.spec.yamlload import load_yaml_file

SITE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TOKEN_RE = r"^[A-Za-z0-9_.,:=+@/\-\[\]]+$"  # noqa: S105 - a pattern, not a password
MEM_RE = r"^[0-9]+[KMGT]?$"

# Empty-list defaults are written `= []`: pydantic copies a mutable default for each
# instance, and `Field(default_factory=list)` costs ~0.5 ms per field and build (pydantic
# parses `list`'s text signature to see whether the factory takes the validated data).


class InstanceType(Model):
    """A named size (``resources.instance_type``): GPUs, CPUs and memory per node."""

    gpus: Annotated[int, Field(ge=0, le=64)] = 0
    gpu_type: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    cpus: Annotated[int, Field(ge=1, le=4096)] | None = None
    memory: Annotated[str, Field(pattern=MEM_RE)] | None = None
    partition: Annotated[str, Field(pattern=TOKEN_RE)] | None = None
    description: str | None = None


class Compute(Model):
    """One compute target: a Slurm partition plus account, QOS and default sizes."""

    partition: Annotated[str, Field(pattern=TOKEN_RE)] | None = None
    account: Annotated[str, Field(pattern=TOKEN_RE)] | None = None
    qos: Annotated[str, Field(pattern=TOKEN_RE)] | None = None
    gpus_per_node: Annotated[int, Field(ge=0, le=64)] = 0
    gpu_type: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] | None = None
    cpus_per_node: Annotated[int, Field(ge=1, le=4096)] | None = None
    cpus_per_task: Annotated[int, Field(ge=1, le=4096)] | None = None
    memory: Annotated[str, Field(pattern=MEM_RE)] | None = None
    time_limit: int | str | None = None
    max_nodes: Annotated[int, Field(ge=1)] | None = None
    instance_types: dict[str, InstanceType] = Field(default_factory=dict)
    default_instance_type: str | None = None
    sbatch_options: list[Annotated[str, Field(pattern=r"^--[A-Za-z0-9-]+(=[A-Za-z0-9_.,:=+@%/\-\[\]]+)?$")]] = []
    #: other names for this compute: job files written for Azure ML say
    #: ``compute: azureml:cpu-cluster``, and an alias lets them run unchanged
    aliases: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]] = []
    description: str | None = None

    @model_validator(mode="after")
    def _default_it(self) -> Compute:
        if self.default_instance_type and self.default_instance_type not in self.instance_types:
            raise ValueError(
                f"default_instance_type '{self.default_instance_type}' is not one of instance_types "
                f"({', '.join(self.instance_types) or 'none defined'})"
            )
        return self


class EnvironmentEntry(Model):
    """What a registered environment name means on this site."""

    image: str | None = None
    modules: list[str] = []
    setup: list[str] = []
    conda_file: str | None = None
    description: str | None = None


class EnvironmentSettings(Model):
    """How ``environment:`` is realised on the site."""

    runtime: Literal["none", "apptainer", "singularity", "charliecloud", "pyxis", "podman"] = "none"
    image_cache: str | None = None
    binds: list[str] = []
    modules: list[str] = []
    setup: list[str] = []
    environments: dict[str, EnvironmentEntry] = Field(default_factory=dict)
    env_cache: str | None = None
    python: str = "python3"

    _rt = field_validator("runtime", mode="before")(lambda v: v.lower() if isinstance(v, str) else v)


class SSHSettings(Model):
    """How to reach the login node from this machine."""

    host: str
    user: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    identity_file: str | None = None
    proxy_jump: str | None = None
    known_hosts: str | None = None
    transport: Literal["paramiko", "system"] = "paramiko"
    connect_timeout: float = 15.0


class Tracking(Model):
    """MLflow: ``direct`` (compute nodes reach the server) or ``offline`` (import after)."""

    mode: Literal["direct", "offline", "none"] | None = None
    uri: str | None = None


class Site(Model):
    """A site config."""

    name: str = ""
    description: str | None = None
    scheduler: Literal["slurm", "local"] = "slurm"
    ssh: SSHSettings | None = None
    job_root: str = "~/hpcjobs"
    default_compute: str | None = None
    computes: dict[str, Compute] = Field(default_factory=dict)
    gpu_request: Literal["gres", "gpus-per-node"] = "gres"
    environment: EnvironmentSettings = Field(default_factory=EnvironmentSettings)
    datastores: dict[str, str] = Field(default_factory=dict)
    default_datastore: str | None = None
    tracking: Tracking = Field(default_factory=Tracking)
    mpi: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")] = "pmix"
    #: exported in ``distribution: {type: mpi}`` jobs only (e.g. ``OMPI_MCA_btl: self,tcp`` where
    #: Open MPI's shared-memory transport fails); see docs/distributed.md
    mpi_env: dict[str, str] = Field(default_factory=dict)
    max_array_size: Annotated[int, Field(ge=1)] | None = None
    max_submit_jobs: Annotated[int, Field(ge=1)] | None = None
    job_env: dict[str, str] = Field(default_factory=dict)
    local_max_parallel: Annotated[int, Field(ge=1)] | None = None
    #: where this config came from (not part of the YAML)
    source: str | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _consistent(self) -> Site:
        if self.scheduler == "slurm" and not self.computes:
            raise ValueError("a slurm site needs at least one compute under computes:")
        if self.default_compute and self.default_compute not in self.computes:
            raise ValueError(f"default_compute '{self.default_compute}' is not one of computes ({', '.join(self.computes)})")
        owner: dict[str, str] = {}
        for cname, comp in self.computes.items():
            for alias in comp.aliases:
                # an alias that shadows a compute, or names two, would make a job's compute ambiguous
                if alias in self.computes or alias in owner:
                    other = owner.get(alias, alias)
                    raise ValueError(f"alias '{alias}' of compute '{cname}' is already a name of compute '{other}'")
                owner[alias] = cname
        return self

    def compute_aliases(self) -> dict[str, str]:
        """Every alias -> the compute it names."""
        return {alias: cname for cname, comp in self.computes.items() for alias in comp.aliases}

    @property
    def is_local(self) -> bool:
        return self.scheduler == "local"

    @property
    def is_remote(self) -> bool:
        return self.ssh is not None

    def tracking_mode(self) -> str:
        if self.tracking.mode:
            return self.tracking.mode
        return "offline" if self.is_remote else "direct"

    def resolve_compute(self, name: str | None) -> tuple[str, Compute]:
        """``azureml:gpu-cluster`` / ``gpu-cluster`` / None -> (name, Compute)."""
        if name and name.startswith("azureml:"):
            name = name[len("azureml:") :]
        if self.is_local:
            return (name or "local"), Compute.model_construct()  # all defaults: nothing to validate
        if not name:
            if self.default_compute:
                return self.default_compute, self.computes[self.default_compute]
            if len(self.computes) == 1:
                only = next(iter(self.computes))
                return only, self.computes[only]
            raise ValidationError(
                f"the job names no compute and site '{self.name}' has no default_compute",
                hint="add compute: NAME to the job; computes: " + ", ".join(self.computes),
            )
        aliases = self.compute_aliases()
        # the job runs under the compute's own name, so job show says which partition it used
        name = aliases.get(name, name)
        if name not in self.computes:
            raise NotFoundError(
                f"compute '{name}' is not defined for site '{self.name}'",
                hint=known_list_hint(name, [*self.computes, *aliases], "computes"),
            )
        return name, self.computes[name]

    def expand(self, path: str, *, home: str, user: str) -> str:
        """Expand ``~``, ``$HOME`` and ``$USER`` in a site path for the target machine."""
        out = path
        if out == "~" or out.startswith("~/"):
            out = home + out[1:]
        return out.replace("${USER}", user).replace("$USER", user).replace("${HOME}", home).replace("$HOME", home)


def local_site() -> Site:
    """The embedded default: this machine, no Slurm.

    A constant, so it is built without validation (``model_construct``): validating it
    would only build the site schema, ~20 ms of every command that touches a local job.
    ``tests/unit/test_site.py`` checks that it validates to the same object.
    """
    values: dict[str, Any] = {
        "name": "local",
        "description": "this machine, no Slurm (the embedded default)",
        "scheduler": "local",
        "job_root": str(paths.state_dir() / "jobs"),
        "tracking": Tracking.model_construct(mode="direct"),
        "source": "(embedded)",
    }
    fields_set = set(values)
    # the default a validated Site would make, without validating it either
    values["environment"] = EnvironmentSettings.model_construct()
    return Site.model_construct(fields_set, **values)


def _user_sites_dir() -> Path:
    return paths.config_dir() / "sites"


def site_files() -> dict[str, Path]:
    """Every site config file by name (user files override shipped ones)."""
    found: dict[str, Path] = {}
    builtin = paths.data_dir("site-configs")
    for d in (builtin, _user_sites_dir()):
        if d.is_dir():
            for f in sorted(d.glob("*.yml")) + sorted(d.glob("*.yaml")):
                found[f.stem] = f
    return found


def load_site_file(path: Path, name: str | None = None) -> Site:
    """Load and validate one site config file."""
    data, smap = load_yaml_file(path)
    if not isinstance(data, dict):
        raise ValidationError("a site config must be a YAML mapping", location=smap.locate(()))
    site = validate_model(Site, data, smap)
    if not site.name:
        site.name = name or path.stem
    site.source = str(path)
    for cname, comp in site.computes.items():
        if comp.time_limit is not None:
            from hpcjobs.slurm import parse_slurm_time

            if isinstance(comp.time_limit, str) and parse_slurm_time(comp.time_limit) is None:
                raise ValidationError(
                    f"cannot read time limit {comp.time_limit!r}",
                    hint="use seconds (3600) or Slurm's [D-]HH:MM:SS",
                    location=smap.locate(("computes", cname, "time_limit")),
                    field=f"computes.{cname}.time_limit",
                )
    return site


def default_site_name() -> str | None:
    """The site chosen with ``hpcjobs site use`` (or ``$HPCJOBS_SITE``)."""
    env = os.environ.get("HPCJOBS_SITE")
    if env:
        return env
    cfg = paths.config_dir() / "config.yml"
    if cfg.is_file():
        data, _ = load_yaml_file(cfg)
        if isinstance(data, dict) and isinstance(data.get("default_site"), str):
            return str(data["default_site"])
    return None


def get_site(name: str | None) -> Site:
    """The site called *name*, else the default site, else the embedded ``local``."""
    if name is None:
        name = default_site_name()
    if name is None or name == "local":
        files = site_files()
        if name == "local" and "local" in files:
            return load_site_file(files["local"], "local")
        return local_site()
    if not SITE_NAME_RE.match(name):
        raise ValidationError(f"invalid site name {name!r}")
    files = site_files()
    if name not in files:
        p = Path(name)
        if p.suffix in (".yml", ".yaml") and p.is_file():
            return load_site_file(p)
        raise NotFoundError(f"site '{name}' is not configured", hint=known_list_hint(name, [*files, "local"], "sites"))
    return load_site_file(files[name], name)


def list_sites() -> list[Site]:
    """All configured sites (valid ones), plus the embedded default."""
    out = [local_site()]
    for name, path in site_files().items():
        if name == "local":
            continue
        out.append(load_site_file(path, name))
    return out


def set_default_site(name: str) -> None:
    """Record the default site (``hpcjobs site use``)."""
    get_site(name)
    cfg = paths.config_dir() / "config.yml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    import yaml

    data: dict[str, Any] = {}
    if cfg.is_file():
        loaded, _ = load_yaml_file(cfg)
        if isinstance(loaded, dict):
            data = loaded
    data["default_site"] = name
    tmp = cfg.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(cfg)
