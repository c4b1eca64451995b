"""Registered assets: data assets, environments and command components, per site.

The registry lives on the cluster side, next to the site's default datastore (else its
job root), so every machine a user submits from sees the same assets::

    <base>/.hpcjobs-registry/{data,environments,components}/<name>/<version>.json
    <base>/.hpcjobs-registry/{data,environments,components}/<name>/<version>.archived
    <base>/.hpcjobs-registry/blobs/<digest>/<name>          uploaded content

A version file is written once (``ln`` of a temporary file: create-if-absent and atomic,
in one remote command) and never changed: versions are immutable.  ``archive`` adds a
marker file beside it.  Local files and folders are uploaded content-addressed (the code
snapshot's selection and hash, :mod:`hpcjobs.snapshot`) as one tar stream; content whose
digest is already on the cluster is not sent again.

A local cache (``<state dir>/assets/<site>.json``) keeps ``list`` fast; ``create`` and
``show`` refresh it.  :func:`prepare` is the impure step before planning: it reads the
registry entries a job names (one remote command) and puts the resolved paths into
:attr:`hpcjobs.plan.Target.assets`, so the planner stays pure.
"""

from __future__ import annotations

import io
import json
import posixpath
import re
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcjobs import paths
from hpcjobs.errors import NotFoundError, RuntimeFailure, UserError, ValidationError, known_list_hint

if TYPE_CHECKING:
    from hpcjobs.plan import Target
    from hpcjobs.site import Site
    from hpcjobs.spec.load import Loaded
    from hpcjobs.transport.base import Transport

KINDS = ("data", "environments", "components")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
REGISTRY_DIR = ".hpcjobs-registry"

#: create-if-absent of one version file: $1 = final path, stdin = its JSON.  ``ln`` fails
#: when the file exists, so two machines creating the same version cannot both win.
_WRITE = r"""set -u
f=$1; d=${f%/*}
mkdir -p "$d" || exit 3
tmp=$(mktemp "$d/.new.XXXXXX") || exit 3
cat > "$tmp"
if ln "$tmp" "$f" 2>/dev/null; then rm -f "$tmp"; echo created; else rm -f "$tmp"; echo exists; exit 4; fi
"""

#: the registry entries of some names (all names without arguments): $1 = kind dir, then names
_READ = r"""set -u
k=$1; shift
[ -d "$k" ] || exit 0
if [ $# -eq 0 ]; then set -- $(ls -1 "$k" 2>/dev/null); fi
for n; do
  for f in "$k/$n"/*.json; do [ -f "$f" ] && { printf 'J\t'; tr -d '\n' < "$f"; printf '\n'; }; done
  for f in "$k/$n"/*.archived; do [ -f "$f" ] && { b=${f##*/}; printf 'A\t%s\t%s\n' "$n" "${b%.archived}"; }; done
done
exit 0
"""

#: upload: $1 = blobs dir, $2 = digest; stdin = tar.gz of ``<digest>/...`` (staged, then renamed)
_UPLOAD = r"""set -u
b=$1; g=$2
mkdir -p "$b" || exit 3
[ -e "$b/$g" ] && { cat > /dev/null; echo present; exit 0; }
stage=$(mktemp -d "$b/.incoming.XXXXXX") || exit 3
trap 'rm -rf "$stage"' EXIT
tar -xzf - -C "$stage" --no-same-owner || exit 5
mv -T "$stage/$g" "$b/$g" 2>/dev/null || true
echo uploaded
"""


# --------------------------------------------------------------------------- references
@dataclass(frozen=True)
class Ref:
    """``azureml:NAME:VERSION`` / ``azureml:NAME@latest`` / ``NAME`` (= latest)."""

    name: str
    version: str | None = None
    label: str | None = None

    @property
    def text(self) -> str:
        if self.version:
            return f"{self.name}:{self.version}"
        return f"{self.name}@{self.label or 'latest'}"


def parse_ref(text: str) -> Ref:
    """Read an asset reference (with or without ``azureml:``)."""
    body = text.removeprefix("azureml:")
    if "@" in body:
        name, _, label = body.partition("@")
        if label != "latest":
            raise ValidationError(f"asset label '{label}' of '{text}' is not known", hint="only @latest is supported")
        return Ref(name=name, label="latest")
    if ":" in body:
        name, _, version = body.rpartition(":")
        return Ref(name=name, version=version)
    return Ref(name=body, label="latest")


def is_asset_ref(text: Any) -> bool:
    """Whether *text* names a registered asset (not a datastore URI)."""
    return isinstance(text, str) and text.startswith("azureml:") and not text.startswith("azureml://")


def _check_name(name: str, version: str | None) -> None:
    if not NAME_RE.match(name):
        raise UserError(f"invalid asset name {name!r}", hint="names use letters, digits, _ . - (at most 255)")
    if version is not None and not VERSION_RE.match(version):
        raise UserError(f"invalid asset version {version!r}", hint="versions use letters, digits, _ . - (e.g. 1, 2, 2024.1)")


def _version_key(entry: dict[str, Any]) -> tuple[float, tuple[int, ...], str]:
    v = str(entry.get("version", ""))
    nums = tuple(int(x) for x in re.findall(r"\d+", v))
    return (float(entry.get("created", 0.0)), nums, v)


# --------------------------------------------------------------------------- registry
class Registry:
    """The asset registry of one site, reached through its transport."""

    def __init__(self, site: Site, transport: Transport, *, home: str, user: str) -> None:
        self.site = site
        self.transport = transport
        self.home = home
        self.user = user

    # -- places ---------------------------------------------------------------------
    @property
    def base(self) -> str:
        """The folder the registry lives in (the default datastore, else the job root)."""
        site = self.site
        ds = site.default_datastore or ("workspaceblobstore" if "workspaceblobstore" in site.datastores else None)
        raw = site.datastores.get(ds, site.job_root) if ds else site.job_root
        base = site.expand(raw, home=self.home, user=self.user).rstrip("/")
        if not base.startswith("/"):
            raise ValidationError(f"the registry folder {base!r} of site '{site.name}' must be an absolute path")
        return base

    @property
    def root(self) -> str:
        return f"{self.base}/{REGISTRY_DIR}"

    def kind_dir(self, kind: str) -> str:
        return f"{self.root}/{kind}"

    def version_file(self, kind: str, name: str, version: str) -> str:
        return f"{self.kind_dir(kind)}/{name}/{version}.json"

    # -- cache ----------------------------------------------------------------------
    def _cache_file(self) -> Path:
        return paths.state_dir() / "assets" / f"{self.site.name}.json"

    def cache(self) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
        """kind -> name -> version -> entry (as last seen)."""
        try:
            data = json.loads(self._cache_file().read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def has_cache(self) -> bool:
        return self._cache_file().is_file()

    def _save_cache(self, kind: str, entries: dict[str, dict[str, dict[str, Any]]], *, names: Iterable[str] | None) -> None:
        data = self.cache()
        current = data.setdefault(kind, {})
        if names is None:
            data[kind] = entries
        else:
            for n in names:
                if n in entries:
                    current[n] = entries[n]
                else:
                    current.pop(n, None)
        f = self._cache_file()
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(f)

    # -- reading --------------------------------------------------------------------
    def fetch(self, kind: str, names: Iterable[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """Entries of *names* (all without) from the cluster, in ONE command; refreshes the cache."""
        wanted = None if names is None else sorted(set(names))
        res = self.transport.run(["bash", "-c", _READ, "hpcjobs-registry", self.kind_dir(kind), *(wanted or [])])
        if not res.ok:
            raise RuntimeFailure(f"cannot read the asset registry {self.kind_dir(kind)}: {res.err.strip()}")
        out: dict[str, dict[str, dict[str, Any]]] = {}
        archived: list[tuple[str, str]] = []
        for line in res.out.splitlines():
            tag, _, rest = line.partition("\t")
            if tag == "J":
                try:
                    entry = json.loads(rest)
                except ValueError:
                    continue
                if isinstance(entry, dict) and "name" in entry and "version" in entry:
                    out.setdefault(str(entry["name"]), {})[str(entry["version"])] = entry
            elif tag == "A":
                n, _, v = rest.partition("\t")
                archived.append((n, v))
        for n, v in archived:
            if v in out.get(n, {}):
                out[n][v]["archived"] = True
        if wanted is not None and not all(NAME_RE.match(n) for n in wanted):
            raise UserError("invalid asset name in " + ", ".join(wanted))
        self._save_cache(kind, out, names=wanted)
        return out

    def entries(self, kind: str, *, refresh: bool = False) -> dict[str, dict[str, dict[str, Any]]]:
        """Every entry of *kind*: from the cache, or the cluster with *refresh* (or no cache yet)."""
        if refresh or not self.has_cache():
            return self.fetch(kind)
        return self.cache().get(kind, {})

    def resolve(self, kind: str, ref: Ref, entries: dict[str, dict[str, dict[str, Any]]] | None = None) -> dict[str, Any]:
        """The entry *ref* names; NotFoundError (with what exists) otherwise."""
        if entries is None:
            entries = self.fetch(kind, [ref.name])
        what = {"data": "data asset", "environments": "environment", "components": "component"}[kind]
        versions = entries.get(ref.name)
        if not versions:
            raise NotFoundError(
                f"{what} '{ref.name}' is not registered on site '{self.site.name}'",
                hint=_known_hint(ref.name, entries or self.cache().get(kind, {}), what)
                + f" (register it with hpcjobs {_cli_group(kind)} create)",
            )
        if ref.version is not None:
            if ref.version not in versions:
                raise NotFoundError(
                    f"{what} '{ref.name}' has no version '{ref.version}' on site '{self.site.name}'",
                    hint=known_list_hint(ref.version, versions, "versions"),
                )
            return versions[ref.version]
        live = [e for e in versions.values() if not e.get("archived")]
        if not live:
            raise NotFoundError(
                f"every version of {what} '{ref.name}' is archived",
                hint="name a version explicitly: " + ", ".join(sorted(versions)),
            )
        return max(live, key=_version_key)

    # -- writing --------------------------------------------------------------------
    def write(self, kind: str, entry: dict[str, Any]) -> dict[str, Any]:
        """Create a version (refusing to overwrite one); return the entry."""
        name, version = str(entry["name"]), str(entry["version"])
        _check_name(name, version)
        f = self.version_file(kind, name, version)
        data = json.dumps(entry, sort_keys=True).encode()
        res = self.transport.run(["bash", "-c", _WRITE, "hpcjobs-register", f], stdin=data)
        if res.out.strip() == "exists":
            raise UserError(
                f"{_cli_group(kind)} '{name}' version '{version}' already exists on site '{self.site.name}'",
                hint="versions are immutable: choose another --version",
            )
        if not res.ok:
            raise RuntimeFailure(f"cannot write {f}: {res.err.strip() or res.out.strip()}")
        self.fetch(kind, [name])
        return entry

    def archive(self, kind: str, name: str, version: str) -> dict[str, Any]:
        """Hide a version from ``@latest`` and ``list`` (still resolvable by its version)."""
        entry = self.resolve(kind, Ref(name=name, version=version))
        marker = self.version_file(kind, name, version)[: -len(".json")] + ".archived"
        res = self.transport.run(["bash", "-c", ': > "$1"', "hpcjobs-archive", marker])
        if not res.ok:
            raise RuntimeFailure(f"cannot archive {name}:{version}: {res.err.strip()}")
        self.fetch(kind, [name])
        return {**entry, "archived": True}

    def upload(self, local: Path) -> tuple[str, bool, int]:
        """Ship a local file or folder content-addressed; return (path on the cluster, sent?, bytes sent)."""
        from hpcjobs.snapshot import take_snapshot

        snap = take_snapshot(local)
        blobs = f"{self.root}/blobs"
        remote = f"{blobs}/{snap.digest}/{local.name}"
        check = self.transport.run(["bash", "-c", '[ -e "$1" ] && echo present || echo missing', "hpcjobs-blob", remote])
        if check.ok and check.out.strip() == "present":
            return remote, False, 0
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            top = tarfile.TarInfo(snap.digest)
            top.type = tarfile.DIRTYPE
            top.mode = 0o755
            tar.addfile(top)
            prefix = f"{snap.digest}/{local.name}"
            if not snap.is_file:
                d = tarfile.TarInfo(prefix)
                d.type = tarfile.DIRTYPE
                d.mode = 0o755
                tar.addfile(d)
            for rel in snap.files:
                full = local if snap.is_file else local / rel
                info = tar.gettarinfo(str(full), arcname=prefix if snap.is_file else f"{prefix}/{rel}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with open(full, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
        payload = buf.getvalue()
        res = self.transport.run(["bash", "-c", _UPLOAD, "hpcjobs-upload", blobs, snap.digest], stdin=payload)
        if not res.ok:
            raise RuntimeFailure(f"cannot upload {local} to {blobs}: {res.err.strip()}")
        return remote, True, len(payload)

    def download_dir(self, remote: str, dest: Path) -> None:
        """Copy a folder from the cluster into *dest* (one tar stream)."""
        res = self.transport.run(["tar", "-czf", "-", "-C", remote, "."])
        if not res.ok:
            raise RuntimeFailure(f"cannot read {remote}: {res.err.strip()}")
        from hpcjobs.tarsafe import safe_extract

        dest.mkdir(parents=True, exist_ok=True)
        safe_extract(io.BytesIO(res.stdout), dest)


def _known_hint(word: str, known: dict[str, Any], what: str) -> str:
    if not known:
        return f"no {what}s are registered"
    return known_list_hint(word, known, f"registered {what}s")


def _cli_group(kind: str) -> str:
    return {"data": "data", "environments": "environment", "components": "component"}[kind]


def registry_for(site: Site, *, offline: bool = False) -> Registry:
    """The registry of *site* (asks the target for home and user unless *offline*)."""
    from hpcjobs import backends

    backend = backends.backend_for(site)
    target = backend.target(offline=offline)
    return Registry(site, backends.transport_for(site), home=target.home, user=target.user)


# --------------------------------------------------------------------------- data
def create_data(
    site: Site,
    *,
    name: str,
    version: str,
    path: str,
    type: str = "uri_folder",
    description: str | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Register a data asset: upload a local file/folder once, or record a cluster path / datastore URI."""
    _check_name(name, version)
    if type not in ("uri_folder", "uri_file"):
        raise UserError(f"data asset type '{type}' is not supported", hint="use uri_folder or uri_file")
    reg = registry_for(site)
    existing = reg.fetch("data", [name])
    if version in existing.get(name, {}):
        raise UserError(
            f"data '{name}' version '{version}' already exists on site '{site.name}'",
            hint="versions are immutable: choose another --version",
        )
    entry: dict[str, Any] = {
        "name": name,
        "version": version,
        "type": type,
        "description": description,
        "tags": tags or {},
        "created": time.time(),
    }
    local = Path(path).expanduser()
    if path.startswith("azureml://datastores/"):
        entry["path"] = path
        entry["cluster_path"] = _datastore_path(site, reg, path)
        entry["uploaded"] = False
    elif path.startswith("azureml:") or "://" in path:
        raise UserError(f"data path {path!r} is not a local path, a cluster path or an azureml://datastores/ URI")
    elif local.exists() and (site.ssh is not None or not path.startswith("/")):
        if type == "uri_file" and not local.is_file():
            raise UserError(f"--type uri_file needs a file, and {path} is a folder")
        if type == "uri_folder" and local.is_file():
            raise UserError(f"--type uri_folder needs a folder, and {path} is a file", hint="pass --type uri_file")
        remote, sent, size = reg.upload(local.resolve())
        entry.update(path=remote, cluster_path=remote, uploaded=True, source=str(local.resolve()), sent_bytes=size, sent=sent)
    elif path.startswith("/"):
        entry.update(path=path, cluster_path=path, uploaded=False)
    else:
        raise UserError(
            f"data path {path} does not exist", hint="give a local file or folder, or an absolute path on the cluster"
        )
    stored = {k: v for k, v in entry.items() if k not in ("sent", "sent_bytes")}
    reg.write("data", stored)
    return entry


def _datastore_path(site: Site, reg: Registry, uri: str) -> str:
    rest = uri[len("azureml://datastores/") :]
    ds, _, sub = rest.partition("/")
    if ds not in site.datastores:
        raise ValidationError(
            f"datastore '{ds}' is not defined for site '{site.name}'", hint=known_list_hint(ds, site.datastores, "datastores")
        )
    base = site.expand(site.datastores[ds], home=reg.home, user=reg.user)
    sub = sub.removeprefix("paths/")
    return posixpath.join(base, sub) if sub else base


def list_assets(site: Site, kind: str, *, refresh: bool = False, include_archived: bool = False) -> list[dict[str, Any]]:
    """The newest (non-archived) version of every asset, or every version with *include_archived*."""
    reg = registry_for(site, offline=not refresh and _cache_exists(site))
    entries = reg.entries(kind, refresh=refresh)
    rows: list[dict[str, Any]] = []
    for name in sorted(entries):
        versions = sorted(entries[name].values(), key=_version_key)
        if include_archived:
            rows.extend(versions)
            continue
        live = [e for e in versions if not e.get("archived")]
        if live:
            latest = live[-1]
            rows.append({**latest, "versions": [e["version"] for e in live]})
    return rows


def _cache_exists(site: Site) -> bool:
    return (paths.state_dir() / "assets" / f"{site.name}.json").is_file()


def show_asset(site: Site, kind: str, reference: str) -> dict[str, Any]:
    """One version (``NAME:VER``, ``NAME@latest`` or ``NAME``), read from the cluster."""
    reg = registry_for(site)
    return reg.resolve(kind, parse_ref(reference))


def archive_asset(site: Site, kind: str, name: str, version: str) -> dict[str, Any]:
    """Archive one version."""
    return registry_for(site).archive(kind, name, version)


# --------------------------------------------------------------------------- environments
def create_environment(site: Site, file: str | Path, *, name: str | None = None, version: str | None = None) -> dict[str, Any]:
    """Register an environment YAML (``image:``, ``conda_file:``, ``description:``)."""
    from hpcjobs.spec.yamlload import load_yaml_file

    f = Path(file)
    data, _ = load_yaml_file(f)
    if not isinstance(data, dict):
        raise UserError(f"{f} is not an environment definition (a YAML mapping)")
    name = name or data.get("name")
    version = str(version or data.get("version") or "1")
    if not isinstance(name, str):
        raise UserError(f"{f} has no name:", hint="add name: to the file or pass --name")
    _check_name(name, version)
    entry: dict[str, Any] = {
        "name": name,
        "version": version,
        "image": data.get("image"),
        "description": data.get("description"),
        "created": time.time(),
    }
    conda = data.get("conda_file")
    if isinstance(conda, str):
        cpath = (f.parent / conda).resolve()
        try:
            entry["conda_file"] = cpath.read_text(encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot read conda_file {cpath}: {exc.strerror or exc}") from None
    elif isinstance(conda, dict):
        import yaml

        entry["conda_file"] = yaml.safe_dump(conda, sort_keys=False)
    if not entry["image"] and not entry.get("conda_file"):
        raise UserError(f"{f} names neither image: nor conda_file:", hint="build: environments are not registered yet")
    return registry_for(site).write("environments", entry)


def catalog_entry(site: Site, entry: dict[str, Any]) -> Any:
    """A registered environment as a site catalog entry (conda file materialised locally)."""
    from hpcjobs.site import EnvironmentEntry

    conda_path = None
    if entry.get("conda_file"):
        d = paths.state_dir() / "assets" / site.name / "environments" / str(entry["name"])
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{entry['version']}.conda.yml"
        p.write_text(str(entry["conda_file"]))
        conda_path = str(p)
    return EnvironmentEntry(image=entry.get("image"), conda_file=conda_path, description=entry.get("description"))


# --------------------------------------------------------------------------- components
def create_component(site: Site, file: str | Path, *, name: str | None = None, version: str | None = None) -> dict[str, Any]:
    """Register a command component YAML; its ``code:`` folder is uploaded content-addressed."""
    from hpcjobs.spec.yamlload import load_yaml_file

    f = Path(file).resolve()
    data, _ = load_yaml_file(f)
    if not isinstance(data, dict):
        raise UserError(f"{f} is not a component definition (a YAML mapping)")
    if data.get("type", "command") != "command":
        raise UserError(f"only command components can be registered ({f} is type {data.get('type')})")
    name = name or data.get("name")
    version = str(version or data.get("version") or "1")
    if not isinstance(name, str):
        raise UserError(f"{f} has no name:", hint="add name: to the file or pass --name")
    _check_name(name, version)
    from hpcjobs.spec.load import load_component

    load_component(f)  # validate before registering
    reg = registry_for(site)
    data = dict(data)
    data["name"], data["version"] = name, version
    entry: dict[str, Any] = {"name": name, "version": version, "created": time.time(), "description": data.get("description")}
    code = data.get("code")
    if isinstance(code, str) and "://" not in code and not code.startswith("azureml:"):
        local = (f.parent / code.removeprefix("file:")).resolve()
        remote, _sent, _size = reg.upload(local)
        entry["code"] = remote
        entry["code_digest"] = remote.rsplit("/", 2)[-2]
        data["code"] = "./code"
    import yaml

    entry["yaml"] = yaml.safe_dump(data, sort_keys=False)
    return reg.write("components", entry)


def component_file(reference: str, site: Site | None = None) -> Path:
    """A registered component as a local YAML file (with its code beside it), for the loader.

    The site is *site*, else the default site; its registry is asked for the entry (the
    local cache answers when the cluster cannot be reached).
    """
    if site is None:
        from hpcjobs.site import get_site

        site = get_site(None)
    ref = parse_ref(reference)
    reg = registry_for(site)
    try:
        entries = reg.fetch("components", [ref.name])
    except RuntimeFailure:
        entries = reg.cache().get("components", {})
    entry = reg.resolve("components", ref, entries)
    d = paths.state_dir() / "assets" / site.name / "components" / str(entry["name"]) / str(entry["version"])
    d.mkdir(parents=True, exist_ok=True)
    if entry.get("code") and not (d / "code").exists():
        remote = str(entry["code"])
        if Path(remote).is_dir():
            import shutil

            shutil.copytree(remote, d / ".code.tmp", symlinks=True, dirs_exist_ok=True)
            (d / ".code.tmp").rename(d / "code")
        else:
            reg.download_dir(remote, d / ".code.tmp")
            (d / ".code.tmp").rename(d / "code")
    out = d / "component.yml"
    out.write_text(str(entry["yaml"]))
    return out


# --------------------------------------------------------------------------- before planning
def _job_refs(loaded: Loaded) -> tuple[list[str], list[str]]:
    """The ``azureml:`` data references and environment references a job names."""
    from hpcjobs.spec import models as m

    data: list[str] = []
    envs: list[str] = []

    def visit_inputs(inputs: Any) -> None:
        for v in (inputs or {}).values():
            # pipeline steps keep their bindings as written (mappings), command jobs as models
            path = v.path if isinstance(v, m.DataInput) else v.get("path") if isinstance(v, dict) else None
            if is_asset_ref(path):
                data.append(str(path))

    def visit_env(env: Any) -> None:
        if is_asset_ref(env):
            envs.append(str(env))

    job = loaded.job
    visit_inputs(getattr(job, "inputs", None))
    visit_env(getattr(job, "environment", None))
    trial = getattr(job, "trial", None)
    if trial is not None:
        visit_env(getattr(trial, "environment", None))
    for node in (getattr(job, "jobs", None) or {}).values():
        visit_inputs(getattr(node, "inputs", None))
        visit_env(getattr(node, "environment", None))
    for comp, _cmap, _cpath in getattr(loaded, "components", {}).values():
        visit_env(getattr(comp, "environment", None))
    return list(dict.fromkeys(data)), list(dict.fromkeys(envs))


def prepare(loaded: Loaded, site: Site, target: Target, *, offline: bool = False) -> Site:
    """Resolve the registered assets a job names into ``target.assets`` (and the site's catalog).

    One remote command per kind reads the entries; with *offline* (dry runs of SSH
    sites) the local cache answers.  Returns *site*, with registered environments added
    to a copy of its environments catalog when the job names any.
    """
    data_refs, env_refs = _job_refs(loaded)
    env_refs = [r for r in env_refs if _not_in_catalog(site, r)]
    if not data_refs and not env_refs:
        return site
    from hpcjobs import backends

    reg = Registry(site, backends.transport_for(site), home=target.home, user=target.user)

    def entries(kind: str, refs: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        names = [parse_ref(r).name for r in refs]
        if offline and site.ssh is not None:
            cached = reg.cache().get(kind, {})
            return {n: cached[n] for n in names if n in cached}
        return reg.fetch(kind, names)

    if data_refs:
        found = entries("data", data_refs)
        for r in data_refs:
            e = reg.resolve("data", parse_ref(r), found)
            target.assets[r] = str(e.get("cluster_path") or e["path"])
            # pipelines' reuse keys: a step that read another version is not reused
            target.digests.setdefault(r, f"asset:{e['name']}:{e['version']}:{target.assets[r]}")
    if env_refs:
        found = entries("environments", env_refs)
        # a name the registry lacks keeps its old meaning (the site catalog, or the host with
        # a warning: Azure's curated environments are not registered here)
        env_refs = [r for r in env_refs if parse_ref(r).name in found]
    if env_refs:
        catalog = dict(site.environment.environments)
        for r in env_refs:
            e = reg.resolve("environments", parse_ref(r), found)
            entry = catalog_entry(site, e)
            body = r.removeprefix("azureml:")
            catalog[body] = entry
        env = site.environment.model_copy(update={"environments": catalog})
        site = site.model_copy(update={"environment": env})
    return site


def _not_in_catalog(site: Site, reference: str) -> bool:
    from hpcjobs.environments import lookup

    return lookup(site, reference) is None
