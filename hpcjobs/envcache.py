"""What goes into a site's image and environment caches, and under which names.  Pure.

Two caches live on the cluster (``docs/environments.md``):

* the **image cache** (``environment.image_cache``, default ``<job_root>/.images``): one
  converted image per image reference and runtime -- a SIF, a charliecloud directory
  image, an enroot squashfs -- named ``<readable part>-<key>``;
* the **environment cache** (``environment.env_cache``, default ``<job_root>/.envs``):
  one built Python environment per *content* of a conda file (plus the image it is
  built in), named by its key.

Keys are hashes of what determines the result, so equal inputs share one entry and
any change gets a new one; nothing here touches the cluster.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcjobs.errors import Location, ValidationError

#: bump when the layout of cached environments changes, so old entries are not reused
ENV_LAYOUT_VERSION = 1

_PY_RE = re.compile(r"^python(?:\s*(==|=|>=|<=|~=|>|<|\s)\s*([0-9][0-9.*]*))?$")
_PIP_RE = re.compile(r"^pip(?:\s*(==|=|>=|<=|~=|>|<|\s)\s*[0-9][0-9.*]*)?$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class CondaSpec:
    """A conda environment file, read and classified."""

    #: the file as written to the cluster (canonical YAML: no ``name``/``prefix``)
    text: str
    #: the Python version asked for, when pinned to one (``3.10`` from ``python=3.10``)
    python: str | None
    #: pip requirement lines
    pip: list[str] = field(default_factory=list)
    #: conda packages other than python and pip (they need conda)
    conda: list[str] = field(default_factory=list)
    channels: list[str] = field(default_factory=list)
    #: ``variables:`` (set when the environment is activated)
    variables: dict[str, str] = field(default_factory=dict)
    source: str = "conda_file"

    @property
    def pip_only(self) -> bool:
        """True when python -m venv + pip can build it (only python, pip and pip packages)."""
        return not self.conda

    @property
    def requirements(self) -> str:
        """The pip requirements as a requirements.txt."""
        return "".join(f"{line}\n" for line in self.pip)

    def digest_material(self) -> dict[str, Any]:
        """What determines the built environment (the conda file's meaning, not its layout)."""
        return {
            "channels": self.channels,
            "conda": self.conda,
            "python": self.python,
            "pip": self.pip,
            "variables": self.variables,
        }


def _error(message: str, where: str, *, hint: str | None = None, location: Location | None = None) -> ValidationError:
    return ValidationError(f"{where}: {message}", hint=hint, location=location)


def parse_conda(data: Any, *, source: str, location: Location | None = None) -> CondaSpec:
    """Check and classify a conda environment file's content (a mapping)."""
    if not isinstance(data, dict):
        raise _error("a conda file must be a mapping with 'dependencies:'", source, location=location)
    known = {"name", "channels", "dependencies", "prefix", "variables"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise _error(
            f"unknown key(s) in a conda file: {', '.join(map(str, unknown))}",
            source,
            hint="a conda environment file has name, channels, dependencies and variables",
            location=location,
        )
    channels = data.get("channels") or []
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise _error("'channels' must be a list of names", source, location=location)
    deps = data.get("dependencies") or []
    if not isinstance(deps, list):
        raise _error("'dependencies' must be a list", source, location=location)
    python: str | None = None
    pip: list[str] = []
    conda: list[str] = []
    for dep in deps:
        if isinstance(dep, dict):
            if set(dep) != {"pip"} or not isinstance(dep["pip"], list):
                raise _error(
                    f"a mapping among the dependencies must be {{pip: [...]}}, got {sorted(map(str, dep))}",
                    source,
                    location=location,
                )
            for req in dep["pip"]:
                if not isinstance(req, str | int | float) or isinstance(req, bool):
                    raise _error(f"pip requirement {req!r} is not a string", source, location=location)
                text = str(req).strip()
                if _CONTROL_RE.search(text):
                    raise _error(f"pip requirement {text!r} contains a control character", source, location=location)
                if text:
                    pip.append(text)
            continue
        if not isinstance(dep, str | int | float) or isinstance(dep, bool):
            raise _error(f"dependency {dep!r} is not a package name", source, location=location)
        text = str(dep).strip()
        if _CONTROL_RE.search(text):
            raise _error(f"dependency {text!r} contains a control character", source, location=location)
        m = _PY_RE.match(text)
        if m:
            # python itself comes from venv's interpreter or from conda; only a pin
            # (python=3.10, python==3.10.*) chooses which interpreter a venv starts from
            op, version = m.group(1), m.group(2)
            if version and (op is None or op.strip() in ("", "=", "==")):
                python = ".".join(version.rstrip(".*").split(".")[:2])
            continue
        if _PIP_RE.match(text):
            continue
        conda.append(text)
    variables_raw = data.get("variables") or {}
    if not isinstance(variables_raw, dict):
        raise _error("'variables' must be a mapping", source, location=location)
    variables: dict[str, str] = {}
    for k, v in variables_raw.items():
        if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
            raise _error(f"invalid variable name {k!r}", source, location=location)
        value = "" if v is None else str(v)
        if _CONTROL_RE.search(value):
            raise _error(f"variable {k} contains a control character", source, location=location)
        variables[k] = value
    canonical: dict[str, Any] = {}
    if channels:
        canonical["channels"] = channels
    canonical["dependencies"] = [d for d in deps if not isinstance(d, dict)]
    if pip:
        canonical["dependencies"].append({"pip": pip})
    if variables:
        canonical["variables"] = variables
    text = yaml.safe_dump(canonical, sort_keys=False, default_flow_style=False, allow_unicode=False)
    return CondaSpec(
        text=text, python=python, pip=pip, conda=conda, channels=list(channels), variables=variables, source=source
    )


def read_conda_file(path: str) -> CondaSpec:
    """Read a conda file from this machine (the job's own file, or one beside a site config)."""
    from hpcjobs.spec.yamlload import load_yaml_file

    data, smap = load_yaml_file(Path(path))
    return parse_conda(data, source=path, location=smap.locate(()))


def short_hash(material: Any, length: int = 24) -> str:
    """A stable hex digest of JSON-able *material*."""
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def env_key(spec: CondaSpec, *, image: str | None, python: str) -> str:
    """The environment cache key: the conda file's meaning, where it is built, the builder layout.

    An environment built inside an image only works in that image, and a venv only with
    the interpreter it was made from, so both are part of the key.
    """
    return short_hash(
        {
            "layout": ENV_LAYOUT_VERSION,
            "spec": spec.digest_material(),
            "image": image,
            "python": None if image else python,
        }
    )


def image_key(runtime: str, ref: str, extra: str = "") -> str:
    """The image cache key of an image reference as converted for *runtime*."""
    return short_hash({"runtime": runtime, "ref": ref, "extra": extra})


def readable(ref: str, limit: int = 40) -> str:
    """The part of a reference a person recognises, safe in a file name (``python_3.11-slim``)."""
    tail = ref.split("://", 1)[-1].rstrip("/")
    tail = tail.rsplit("/", 1)[-1] or "image"
    tail = re.sub(r"\.(sif|sqfs|squashfs|sqsh|tar|tar\.gz|tgz)$", "", tail)
    clean = re.sub(r"[^A-Za-z0-9._-]+", "_", tail).strip("._-") or "image"
    return clean[:limit]


def cache_name(ref: str, key: str, suffix: str = "") -> str:
    """File name of a cached image: ``<readable>-<key><suffix>``."""
    return f"{readable(ref)}-{key}{suffix}"
