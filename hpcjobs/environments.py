"""``environment:`` on a site: container runtimes, modules and Python environments.  Pure.

A job's ``environment`` (an image, a conda file, a Docker build context, or a registered
name looked up in the site's catalog) becomes two things for the job script
(:func:`setup`):

* **setup lines**, run once in the batch step before the command: module loads, then
  the image pulled or converted into the site's image cache and the conda file built
  into the site's environment cache -- each *once per content*, under a lock, so array
  tasks and concurrent jobs share one pull and one build (``templates/parts/env_setup.sh.j2``);
* **launcher words** placed before ``bash command.sh`` (after any ``srun`` words of a
  distributed job): the container runtime with the job's folders bound at the same paths,
  GPUs passed through, and the built environment activated for the command only.

Runtimes: ``apptainer``/``singularity`` (``exec --nv --bind``), ``charliecloud``
(``ch-run``), ``pyxis`` (``srun --container-image``), ``podman`` (``podman run``) and
``none`` (the host, with module loads and venv/conda activation).  docs/environments.md
is the user's guide; the choices are recorded in docs/decisions.md.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcjobs import envcache
from hpcjobs.dockerfile import BUILD_ELSEWHERE_HINT, translate
from hpcjobs.envcache import CondaSpec
from hpcjobs.errors import ValidationError, known_list_hint
from hpcjobs.render import render
from hpcjobs.shellquote import shq
from hpcjobs.site import EnvironmentEntry, Site
from hpcjobs.spec import models as m

if TYPE_CHECKING:
    from hpcjobs.plan import Target

#: exit codes of a job whose image or Python environment could not be made
EXIT_IMAGE = 76
EXIT_ENV = 77

CONTAINER_RUNTIMES = ("apptainer", "singularity", "charliecloud", "pyxis", "podman")
#: image kinds each runtime can start from (after conversion into its cache where needed)
SUPPORTED_KINDS = {
    "apptainer": ("docker", "library", "oras", "sif", "dir"),
    "singularity": ("docker", "library", "oras", "sif", "dir"),
    "charliecloud": ("docker", "dir", "tar", "squashfs"),
    "pyxis": ("docker", "squashfs"),
    "podman": ("docker",),
}
#: how much of a Docker build context is hashed by content (the rest by size and time)
CONTEXT_HASH_BYTES = 64 * 1024 * 1024
_SCHEMES = {"docker": "docker://", "library": "library://", "oras": "oras://"}
_BARE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


# --------------------------------------------------------------------------- image references
@dataclass(frozen=True)
class ImageRef:
    """An image reference, classified: where it comes from and how a runtime gets it."""

    #: docker | library | oras (registries), sif | dir | squashfs | tar (paths on the cluster)
    kind: str
    #: the reference with its scheme made explicit (``docker://python:3.11``) or the path
    ref: str
    #: as the user wrote it
    written: str


def parse_image(text: str, *, field: str = "environment.image") -> ImageRef:
    """Classify an ``image:`` value.

    ``docker://``, ``library://`` and ``oras://`` references; an absolute path on the
    cluster (``.sif``, ``.sqfs``/``.squashfs``/``.sqsh``, ``.tar``/``.tar.gz``/``.tgz``,
    or a directory); or a bare registry name such as ``library/python:latest`` or
    ``mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04``, which means ``docker://``.
    """
    value = text.strip()
    if not value:
        raise ValidationError("the image reference is empty", field=field)
    if _CONTROL_RE.search(value) or (not value.startswith("/") and re.search(r"\s", value)):
        raise ValidationError(f"image {text!r} contains white space or a control character", field=field)
    for kind, scheme in _SCHEMES.items():
        if value.startswith(scheme):
            if len(value) == len(scheme):
                raise ValidationError(f"image {text!r} names no image after {scheme}", field=field)
            return ImageRef(kind, value, text)
    if "://" in value:
        scheme = value.split("://", 1)[0]
        raise ValidationError(
            f"image {text!r}: the {scheme}:// scheme is not supported",
            hint="use docker://, library://, oras://, a registry name, or an absolute path on the cluster",
            field=field,
        )
    if value.startswith("/"):
        lower = value.lower()
        if lower.endswith(".sif"):
            return ImageRef("sif", value, text)
        if lower.endswith((".sqfs", ".squashfs", ".sqsh")):
            return ImageRef("squashfs", value, text)
        if lower.endswith((".tar", ".tar.gz", ".tgz")):
            return ImageRef("tar", value, text)
        return ImageRef("dir", value.rstrip("/") or "/", text)
    if value.startswith(("./", "../", "~")) or value.lower().endswith((".sif", ".sqfs", ".squashfs", ".sqsh", ".tar", ".tgz")):
        raise ValidationError(
            f"image {text!r} looks like a relative path",
            hint="an image file or folder must be given by its absolute path on the cluster",
            field=field,
        )
    if not _BARE_RE.match(value):
        raise ValidationError(f"image {text!r} is not a valid image reference", field=field)
    return ImageRef("docker", "docker://" + value, text)


def enroot_ref(ref: str) -> str:
    """A ``docker://`` reference in enroot's spelling (``docker://REGISTRY#IMAGE:TAG``)."""
    rest = ref.removeprefix("docker://")
    first, slash, tail = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return f"docker://{first}#{tail}"
    return f"docker://{rest}"


# --------------------------------------------------------------------------- registered environments
def catalog_candidates(reference: str) -> list[str]:
    """Catalog keys that may stand for a registered reference, most specific first.

    ``azureml:NAME:VERSION`` -> ``NAME:VERSION``, ``NAME``; ``azureml:NAME@LABEL`` ->
    ``NAME@LABEL``, ``NAME``; ``azureml://registries/R/environments/NAME/versions/V``
    (or ``/labels/L``) -> ``NAME:V`` (``NAME@L``), ``NAME``.  The reference as written
    always comes first.
    """
    out = [reference]
    name = reference
    version = label = None
    if reference.startswith("azureml://"):
        match = re.search(r"/environments/([^/]+)(?:/versions/([^/]+)|/labels/([^/]+))?/?$", reference)
        if match:
            name, version, label = match.group(1), match.group(2), match.group(3)
    elif reference.startswith("azureml:"):
        name = reference[len("azureml:") :]
        out.append(name)
        if "@" in name:
            name, _, label = name.partition("@")
        elif ":" in name:
            name, _, version = name.rpartition(":")
    if version:
        out.append(f"{name}:{version}")
    if label:
        out.append(f"{name}@{label}")
    out.append(name)
    return list(dict.fromkeys(out))


def lookup(site: Site, reference: str) -> tuple[str, EnvironmentEntry] | None:
    """The catalog entry of a registered environment reference, or None."""
    catalog = site.environment.environments
    for key in catalog_candidates(reference):
        if key in catalog:
            return key, catalog[key]
    return None


# --------------------------------------------------------------------------- resolution
@dataclass
class BuildSpec:
    """An image to build from a Docker build context."""

    dockerfile: str
    context: str
    text: str
    #: content digest of the Dockerfile and of the files its COPY/ADD lines read
    digest: str


@dataclass
class Resolved:
    """What a job's ``environment:`` means on a site."""

    label: str
    image: ImageRef | None = None
    build: BuildSpec | None = None
    conda: CondaSpec | None = None
    modules: list[str] = field(default_factory=list)
    setup: list[str] = field(default_factory=list)


def _site_relative(site: Site, path: str) -> str:
    """A path from a site config, relative to that file's folder (this machine's files)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return str(p)
    if site.source and Path(site.source).is_file():
        return str((Path(site.source).parent / p).resolve())
    return str(p.resolve())


def _read_build(build: m.DockerBuild, *, field_name: str) -> BuildSpec:
    """Read a build context's Dockerfile (and digest what it copies) on this machine."""
    if "://" in build.path or build.path.startswith(("git+", "azureml:")):
        raise ValidationError(
            f"build context {build.path!r} is not a folder on this machine",
            hint="clone or download it and point build.path at the folder",
            field=f"{field_name}.build.path",
        )
    context = Path(build.path)
    dockerfile = context / build.dockerfile_path
    try:
        text = dockerfile.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(
            f"cannot read the Dockerfile {dockerfile}: {exc.strerror or exc}",
            field=f"{field_name}.build.dockerfile_path",
        ) from None
    digest = hashlib.sha256(text.encode())
    # the files COPY/ADD read decide the image as much as the Dockerfile does; past
    # CONTEXT_HASH_BYTES a file counts by its size and modification time (a context full
    # of data must not make planning read gigabytes)
    budget = CONTEXT_HASH_BYTES
    for path in sorted(_context_files(context)):
        rel = path.relative_to(context).as_posix()
        digest.update(f"\0{rel}\0".encode())
        try:
            st = path.stat()
            if st.st_size <= budget:
                digest.update(path.read_bytes())
                budget -= st.st_size
            else:
                digest.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            digest.update(b"<unreadable>")
    return BuildSpec(dockerfile=str(dockerfile), context=str(context), text=text, digest=digest.hexdigest()[:24])


def _context_files(context: Path) -> list[Path]:
    out: list[Path] = []
    for root, dirs, files in os.walk(context):
        dirs[:] = [d for d in dirs if d not in (".git", "__pycache__")]
        out.extend(Path(root) / f for f in files)
    return out


def resolve(site: Site, environment: Any, warnings: list[str], *, field_name: str = "environment") -> Resolved | None:
    """What *environment* (a job's ``environment:`` value) means on *site*.

    Registered names go through the site's catalog; a name the catalog lacks is an error
    listing the known names.  A site with no catalog at all runs such jobs on the host
    with a warning, so Azure examples that name curated environments still run.
    """
    if environment is None:
        return None
    if isinstance(environment, str):
        found = lookup(site, environment)
        if found is None:
            if site.environment.environments:
                raise ValidationError(
                    f"environment '{environment}' is not in the environments catalog of site '{site.name}'",
                    hint=known_list_hint(catalog_candidates(environment)[-1], site.environment.environments, "environments")
                    + " (add it under environment.environments in the site config)",
                    field=field_name,
                )
            warnings.append(f"environment '{environment}' is not mapped on site '{site.name}'; the command runs on the host")
            return None
        key, entry = found
        res = Resolved(label=f"{environment} (catalog entry {key})", modules=list(entry.modules), setup=list(entry.setup))
        if entry.image:
            res.image = parse_image(entry.image, field=f"environment.environments.{key}.image")
        if entry.conda_file:
            res.conda = envcache.read_conda_file(_site_relative(site, entry.conda_file))
        return res
    if not isinstance(environment, m.InlineEnvironment):
        raise ValidationError(f"unexpected environment value {environment!r}", field=field_name)
    parts = []
    res = Resolved(label="")
    if environment.image:
        res.image = parse_image(environment.image, field=f"{field_name}.image")
        parts.append(f"image {environment.image}")
    if environment.build is not None:
        res.build = _read_build(environment.build, field_name=field_name)
        parts.append(f"build {environment.build.path}")
    if environment.conda_file is not None:
        if isinstance(environment.conda_file, dict):
            res.conda = envcache.parse_conda(environment.conda_file, source=f"{field_name}.conda_file")
            parts.append("inline conda_file")
        else:
            path = environment.conda_file_path or environment.conda_file
            res.conda = envcache.read_conda_file(path)
            parts.append(f"conda_file {environment.conda_file}")
    res.label = ", ".join(parts) or "inline environment"
    return res


# --------------------------------------------------------------------------- binds
def bind_list(site: Site, binds: list[str], extra: list[str]) -> list[str]:
    """Host folders the container sees at the same paths: the job's and the caches'.

    A folder inside another bound folder -- or inside one of the site's own binds
    (``environment.binds``, added by :func:`container_words`) -- is dropped: it is
    visible already.
    """
    site_same = [posixpath.normpath(b) for b in site.environment.binds if ":" not in b and b.startswith("/")]
    out: list[str] = []
    for path in [*binds, *extra]:
        if not path.startswith("/"):
            continue
        if re.search(r"[:,\n\r]", path):
            raise ValidationError(
                f"the folder {path!r} cannot be bind-mounted into a container: ':' and ',' separate bind specifications",
                hint="rename it, or give the input by a path without ':' and ','",
            )
        path = posixpath.normpath(path)
        if path not in out:
            out.append(path)
    kept = [p for p in out if not any(p != q and (q == "/" or p.startswith(q + "/")) for q in [*out, *site_same])]
    return [p for p in kept if p not in site_same]


# --------------------------------------------------------------------------- launcher composition
def launcher_words(dist_words: list[str], container_words: list[str]) -> list[str]:
    """``[srun ...] [container ...]``; pyxis options join the distributed launch's own srun.

    Pyxis is an srun plugin: its container words start with ``srun``.  When the
    distributed launch already starts with ``srun``, the ``--container-*`` options go
    into that srun (one step), instead of an srun inside an srun.
    """
    if container_words[:1] == ["srun"]:
        if dist_words[:1] == ["srun"]:
            return ["srun", *container_words[1:], *dist_words[1:]]
        return [*container_words, *dist_words]
    return [*dist_words, *container_words]


# --------------------------------------------------------------------------- the setup
@dataclass
class _Caches:
    image_cache: str
    env_cache: str


def _caches(site: Site, root: str | None, target: Target | None) -> _Caches:
    def expand(path: str) -> str:
        out = site.expand(path, home=target.home, user=target.user) if target is not None else path
        if not out.startswith("/"):
            raise ValidationError(
                f"cache folder {path!r} of site '{site.name}' must be an absolute path (or start with ~)",
                field="environment.image_cache" if path == site.environment.image_cache else "environment.env_cache",
            )
        return out.rstrip("/")

    base = root or (f"{target.home}/hpcjobs" if target is not None else "$HOME/hpcjobs")
    image_cache = expand(site.environment.image_cache) if site.environment.image_cache else f"{base}/.images"
    env_cache = expand(site.environment.env_cache) if site.environment.env_cache else f"{base}/.envs"
    return _Caches(image_cache=image_cache, env_cache=env_cache)


def _marker(texts: list[str], base: str) -> str:
    lines = {line for t in texts for line in t.splitlines()}
    marker, n = base, 0
    while marker in lines:
        n += 1
        marker = f"{base}_{n}"
    return marker


def _module_lines(modules: list[str]) -> list[str]:
    return [f"module load {shq(mod)}" for mod in modules]


def _runtime_binary(runtime: str) -> str:
    return {"apptainer": "apptainer", "singularity": "singularity", "charliecloud": "ch-run", "podman": "podman"}.get(
        runtime, runtime
    )


def _image_step(site: Site, runtime: str, res: Resolved, caches: _Caches, warnings: list[str]) -> tuple[dict[str, Any], str]:
    """The template context of the image step, and the image's identity (for env keys)."""
    if res.build is not None:
        return _build_step(site, runtime, res.build, caches, warnings)
    image = res.image
    assert image is not None
    if image.kind not in SUPPORTED_KINDS[runtime]:
        hints = {
            "library": "library:// and oras:// images need apptainer or singularity; use a docker:// reference",
            "oras": "library:// and oras:// images need apptainer or singularity; use a docker:// reference",
            "sif": "a SIF file needs apptainer or singularity; give the docker:// reference of the image instead",
            "dir": "give a squashfs file (enroot import) or a docker:// reference",
            "tar": "give a docker:// reference or a directory image",
            "squashfs": "give a docker:// reference",
        }
        raise ValidationError(
            f"image {image.written!r} ({image.kind}) cannot be used by the {runtime} runtime of site '{site.name}'",
            hint=hints.get(image.kind, "use a docker:// reference"),
            field="environment.image",
        )
    binary = _runtime_binary(runtime)
    key = envcache.image_key(runtime, image.ref)
    ctx: dict[str, Any] = {"written": _comment(image.written), "files": [], "fetch": [], "check": [], "hint": None}
    if runtime in ("apptainer", "singularity"):
        if image.kind in ("sif", "dir"):
            what = "image file" if image.kind == "sif" else "image folder"
            ctx.update(path=shq(image.ref), how=f"used where it is (an {what})")
            ctx["check"] = _exists_check(image.ref, "image")
            return ctx, image.ref
        path = f"{caches.image_cache}/{envcache.cache_name(image.ref, key, '.sif')}"
        ctx.update(
            path=shq(path),
            how=f"pulled once into the site's image cache as a SIF ({binary} pull)",
            what=f"pulling {image.ref} into {path}",
            fetch=[f'{binary} pull "$tmp" {shq(image.ref)}'],
        )
        return ctx, path
    if runtime == "charliecloud":
        if image.kind == "dir":
            ctx.update(path=shq(image.ref), how="a directory image, used where it is")
            ctx["check"] = _exists_check(image.ref, "image")
            return ctx, image.ref
        path = f"{caches.image_cache}/{envcache.cache_name(image.ref, key, '.ch')}"
        ctx.update(path=shq(path))
        if image.kind == "tar":
            ctx.update(
                how="unpacked once into the site's image cache as a directory image",
                what=f"unpacking {image.ref} into {path}",
                fetch=['mkdir -p "$tmp"', f'tar -x -f {shq(image.ref)} -C "$tmp"'],
            )
        elif image.kind == "squashfs":
            ctx.update(
                how="unpacked once into the site's image cache as a directory image (unsquashfs)",
                what=f"unpacking {image.ref} into {path}",
                fetch=[f'unsquashfs -no-progress -d "$tmp" {shq(image.ref)}'],
            )
        else:
            ctx.update(
                how="pulled and converted once into the site's image cache as a directory image (ch-image, ch-convert)",
                what=f"pulling {image.ref} into {path}",
                fetch=[
                    "command -v ch-image >/dev/null",
                    f"ch-image pull {shq(image.ref.removeprefix('docker://'))}",
                    f'ch-convert -i ch-image -o dir {shq(image.ref.removeprefix("docker://"))} "$tmp"',
                ],
                hint=(
                    "charliecloud needs ch-image (the full charliecloud package) to pull docker:// images; "
                    "or convert the image elsewhere (ch-image pull + ch-convert to a .tar.gz) and set "
                    "environment.image to that file's path on the cluster"
                ),
            )
        return ctx, path
    if runtime == "pyxis":
        if image.kind == "squashfs":
            ctx.update(path=shq(image.ref), how="a squashfs image, used where it is")
            ctx["check"] = _exists_check(image.ref, "image")
            return ctx, image.ref
        path = f"{caches.image_cache}/{envcache.cache_name(image.ref, key, '.sqsh')}"
        ctx.update(
            path=shq(path),
            how="imported once into the site's image cache as a squashfs file (enroot import)",
            what=f"importing {image.ref} into {path}",
            fetch=[f'enroot import --output "$tmp" {shq(enroot_ref(image.ref))}'],
        )
        return ctx, path
    # podman keeps images in its own (per node) store; a pull there is shared by the node's jobs
    name = image.ref.removeprefix("docker://")
    ctx.update(
        path=shq(image.ref),
        how="pulled into podman's own image store once per node",
        check=[
            f"podman image exists {shq(name)} || podman pull --quiet {shq(image.ref)} >&2 || {{",
            f"    printf 'hpcjobs: podman could not pull %s\\n' {shq(image.ref)} >&2",
            f"    hpcjobs_finish {EXIT_IMAGE}",
            "}",
        ],
    )
    return ctx, image.ref


def _exists_check(path: str, what: str) -> list[str]:
    return [
        'if [ ! -e "$hpcjobs_image" ]; then',
        f"    printf 'hpcjobs: the {what} %s does not exist on %s\\n' {shq(path)} \"$(uname -n)\" >&2",
        f"    hpcjobs_finish {EXIT_IMAGE}",
        "fi",
    ]


def _build_step(site: Site, runtime: str, build: BuildSpec, caches: _Caches, warnings: list[str]) -> tuple[dict[str, Any], str]:
    """An image built from a Dockerfile, once per content, into the image cache."""
    if runtime in ("pyxis",):
        raise ValidationError(
            f"site '{site.name}' runs containers with pyxis/enroot, which cannot build images from a Dockerfile",
            hint="build and push the image elsewhere (or enroot import it into a .sqsh file) and set environment.image",
            field="environment.build",
        )
    copies = bool(re.search(r"^\s*(COPY|ADD)\s", build.text, re.IGNORECASE | re.MULTILINE))
    if copies and site.is_remote:
        raise ValidationError(
            f"the Dockerfile copies files from its build context, which hpcjobs does not upload to site '{site.name}'",
            hint=BUILD_ELSEWHERE_HINT,
            field="environment.build",
        )
    binary = _runtime_binary(runtime)
    key = envcache.image_key(runtime, "build:" + build.digest)
    written = _comment(f"built from {build.dockerfile}")
    ctx: dict[str, Any] = {"written": written, "files": [], "fetch": [], "check": [], "hint": None}
    if runtime in ("apptainer", "singularity"):
        context_dirs = frozenset(
            str(p.relative_to(build.context)) for p in Path(build.context).rglob("*") if p.is_dir()
        )
        tr = translate(build.text, context=build.context, source=build.dockerfile, dirs=context_dirs)
        warnings.extend(f"{binary} build: {what} is left out" for what in tr.dropped)
        path = f"{caches.image_cache}/build-{key}.sif"
        definition = tr.definition.rstrip("\n")
        ctx.update(
            path=shq(path),
            how=f"translated into an apptainer definition and built once into the site's image cache ({binary} build --fakeroot)",
            what=f"building {path} from {build.dockerfile}",
            files=[("def", definition, _marker([definition], "HPCJOBS_DEF_EOF"))],
            fetch=[f'{binary} build --fakeroot "$tmp" "$hpcjobs_image.def"'],
            hint=f"{binary} could not build the image here (unprivileged builds need --fakeroot, i.e. entries for you "
            "in /etc/subuid and /etc/subgid, or a site that allows builds): " + BUILD_ELSEWHERE_HINT,
        )
        return ctx, path
    if runtime == "charliecloud":
        tag = f"hpcjobs-build-{key}"
        path = f"{caches.image_cache}/build-{key}.ch"
        ctx.update(
            path=shq(path),
            how="built once with ch-image and converted into a directory image in the site's image cache",
            what=f"building {path} from {build.dockerfile}",
            fetch=[
                "command -v ch-image >/dev/null",
                f"ch-image build -t {tag} -f {shq(build.dockerfile)} {shq(build.context)}",
                f'ch-convert -i ch-image -o dir {tag} "$tmp"',
            ],
            hint="charliecloud needs ch-image (the full charliecloud package) to build a Dockerfile: " + BUILD_ELSEWHERE_HINT,
        )
        return ctx, path
    # podman builds into its own per-node store
    tag = f"localhost/hpcjobs-build-{key}"
    ctx.update(
        path=shq(tag),
        how="built with podman build into podman's own image store, once per node",
        check=[
            f"podman image exists {tag} || "
            f"podman build --quiet -t {tag} -f {shq(build.dockerfile)} {shq(build.context)} >&2 || {{",
            "    printf 'hpcjobs: podman could not build the image\\n' >&2",
            f"    hpcjobs_finish {EXIT_IMAGE}",
            "}",
        ],
    )
    return ctx, tag


def container_words(
    site: Site,
    runtime: str,
    binds: list[str],
    *,
    gpus: int,
    for_build: bool = False,
    optional: bool = False,
    workdir: str = '"$HPCJOBS_WORK"',
) -> list[str]:
    """The words that run a command in the job's image (``"$hpcjobs_image"``).

    *binds* are bound at the same paths, then the site's own ``environment.binds``;
    with *optional*, the ``hpcjobs_binds`` array (pyxis: ``hpcjobs_mounts``) that the setup
    filled with the datastores present on the node.  GPUs: ``--nv`` for apptainer and
    singularity, CDI for podman; charliecloud shares the host's ``/dev`` and pyxis/enroot
    hand the job's GPUs to the container themselves.
    """
    image = '"$hpcjobs_image"'
    site_binds = list(site.environment.binds)
    extra = ['"${hpcjobs_binds[@]}"'] if optional else []
    if runtime in ("apptainer", "singularity"):
        words = [runtime, "exec"]
        if gpus and not for_build:
            words.append("--nv")
        words += [f"--bind={shq(b)}" for b in [*binds, *site_binds]]
        return [*words, *extra, f"--pwd={workdir}", image]
    if runtime == "charliecloud":
        words = ["ch-run", '"${hpcjobs_ch_opts[@]}"']
        words += [f"--bind={shq(b)}" for b in [*binds, *site_binds]]
        return [*words, *extra, f"--cd={workdir}", image, "--"]
    if runtime == "pyxis":
        mounts = ",".join(f"{b}:{b}" if ":" not in b else b for b in [*binds, *site_binds])
        words = ["srun"]
        if for_build:
            words += ["--ntasks=1", "--nodes=1"]
        mount_word = f"--container-mounts={shq(mounts)}"
        if optional:
            mount_word = '--container-mounts="$hpcjobs_mounts"'
        return [*words, f"--container-image={image}", mount_word, f"--container-workdir={workdir}"]
    # podman
    words = ["podman", "run", "--rm", "--network=host", "--userns=keep-id", "--security-opt=label=disable", "--env-host"]
    if gpus and not for_build:
        words.append("--device=nvidia.com/gpu=all")
    words += [f"--volume={shq(b if ':' in b else f'{b}:{b}')}" for b in [*binds, *site_binds]]
    return [*words, *extra, f"--workdir={workdir}", image]


def _datastore_roots(site: Site, target: Target | None) -> list[str]:
    out = []
    for path in site.datastores.values():
        out.append(path)
        if target is not None:
            out.append(site.expand(path, home=target.home, user=target.user))
    return [posixpath.normpath(p) for p in out if p.startswith("/") and "$" not in p]


def _optional_binds_lines(runtime: str, must: list[str], optional: list[str]) -> list[str]:
    """Shell lines that bind the site's datastores that exist on the node (a missing one is skipped)."""
    lines = ["# the site's datastores, bound when they exist on this node"]
    if runtime == "pyxis":
        mounts = ",".join(f"{b}:{b}" if ":" not in b else b for b in must)
        lines.append(f"hpcjobs_mounts={shq(mounts)}")
        lines.append(f"for hpcjobs_d in {' '.join(shq(p) for p in optional)}; do")
        lines.append('    [ -d "$hpcjobs_d" ] && hpcjobs_mounts="$hpcjobs_mounts,$hpcjobs_d:$hpcjobs_d"')
    else:
        word = '"--volume=$hpcjobs_d:$hpcjobs_d"' if runtime == "podman" else '"--bind=$hpcjobs_d"'
        lines.append("hpcjobs_binds=()")
        lines.append(f"for hpcjobs_d in {' '.join(shq(p) for p in optional)}; do")
        lines.append(f'    [ -d "$hpcjobs_d" ] && hpcjobs_binds+=({word})')
    lines.append("done")
    return lines


def setup(
    site: Site,
    environment: Any,
    *,
    gpus: int,
    binds: list[str],
    warnings: list[str],
    root: str | None = None,
    target: Target | None = None,
) -> tuple[list[str], list[str]]:
    """(setup shell lines run once in the batch script, launcher words placed before ``bash command.sh``).

    *binds* are the job's own folders (job folder, code snapshot, inputs, outputs,
    datastores); *root* is the site's job root on the target (the caches' default home).
    """
    lines: list[str] = _module_lines(site.environment.modules) + list(site.environment.setup)
    res = resolve(site, environment, warnings)
    if res is None:
        return lines, []
    lines += _module_lines(res.modules) + list(res.setup)
    runtime = site.environment.runtime
    if runtime == "none" or (res.image is None and res.build is None):
        if res.image is not None:
            warnings.append(
                f"image {res.image.written} is noted but not used: site '{site.name}' has no container runtime; "
                "the command runs on the host"
            )
        if res.build is not None:
            warnings.append(
                f"build context {res.build.context} is ignored: site '{site.name}' has no container runtime; "
                "the command runs on the host"
            )
        if res.conda is None:
            return lines, []
        caches = _caches(site, root, target)
        # the environment is activated for the command only: hpcjobs' own helpers keep the site's python
        return lines + _render(site, res, caches, image=None, image_id=None, binds=[], optional=[], gpus=gpus), [
            "bash",
            '"$hpcjobs_env/enter.sh"',
        ]
    if runtime == "pyxis" and site.is_local:
        raise ValidationError(
            f"site '{site.name}' runs jobs without Slurm, but its container runtime pyxis is an srun plugin",
            hint="choose apptainer, singularity, charliecloud or podman for a site without Slurm",
            field="environment.runtime",
        )
    caches = _caches(site, root, target)
    extra = [caches.env_cache] if res.conda is not None else []
    roots = _datastore_roots(site, target)
    own = [b for b in binds if posixpath.normpath(b) not in roots]
    must = [b for b in bind_list(site, own, extra) if not _under_tmp(b, runtime)]
    # a datastore the job does not use may be missing on a node; binding it must not fail the job
    optional = [
        p
        for p in bind_list(site, roots, [])
        if p not in must and not any(p.startswith(q + "/") for q in must) and not _under_tmp(p, runtime)
    ]
    image_ctx, image_id = _image_step(site, runtime, res, caches, warnings)
    body = _render(site, res, caches, image=image_ctx, image_id=image_id, binds=must, optional=optional, gpus=gpus)
    words = container_words(site, runtime, must, gpus=gpus, optional=bool(optional))
    if res.conda is not None:
        words += ["bash", '"$hpcjobs_env/enter.sh"']
    return lines + body, words


def _comment(text: str) -> str:
    """Text for a ``#`` comment line: nothing in it may end the line."""
    return _CONTROL_RE.sub("?", text)


def _under_tmp(path: str, runtime: str) -> bool:
    # ch-run shares the host's /tmp itself and cannot bind onto a folder inside it
    return runtime == "charliecloud" and (path == "/tmp" or path.startswith("/tmp/"))


def _render(
    site: Site,
    res: Resolved,
    caches: _Caches,
    *,
    image: dict[str, Any] | None,
    image_id: str | None,
    binds: list[str],
    optional: list[str],
    gpus: int,
) -> list[str]:
    runtime = site.environment.runtime if image is not None else "none"
    env_ctx: dict[str, Any] | None = None
    if res.conda is not None:
        spec = res.conda
        key = envcache.env_key(spec, image=image_id, python=site.environment.python)
        path = f"{caches.env_cache}/{key}"
        variables = "".join(f"export {k}={shq(v)}\n" for k, v in spec.variables.items())
        texts = [spec.text, spec.requirements, variables, render("parts/env_build.sh.j2")]
        run = ""
        if image is not None:
            # the environment is built inside the image, with the image's python or conda
            # ... with only the cache bound: the job's output folders may not exist yet
            inside = bind_list(site, [caches.env_cache], [])
            run = " ".join(container_words(site, runtime, inside, gpus=0, for_build=True, workdir='"$dir"')) + " "
        env_ctx = {
            "source": _comment(spec.source if not spec.source.startswith("/") else posixpath.basename(spec.source)),
            "key": key,
            "where": f", inside the image ({runtime})" if image is not None else " (on the host)",
            "path": shq(path),
            "marker": _marker(texts, "HPCJOBS_ENV_EOF"),
            "conda_text": spec.text,
            "requirements": spec.requirements,
            "variables": variables,
            "run": run,
            "args": " ".join(
                shq(a)
                for a in (
                    "1" if spec.pip_only else "0",
                    spec.python or "",
                    site.environment.python,
                    ", ".join(spec.conda) or "-",
                )
            ),
            "what": f"building the Python environment {path} from {posixpath.basename(spec.source)}",
        }
    ch_ctx = None
    if image is not None and runtime == "charliecloud":
        mountpoints = [b.split(":")[1] if ":" in b else b for b in site.environment.binds]
        mountpoints = [shq(p) for p in [*binds, *mountpoints, *optional] if not _under_tmp(p, runtime)]
        ch_ctx = {"mountpoints": mountpoints, "nvidia": gpus > 0}
    once = env_ctx is not None or bool(image and image.get("fetch"))
    text = render(
        "parts/env_setup.sh.j2",
        label=_comment(res.label),
        once=once,
        image=image,
        charliecloud=ch_ctx,
        env=env_ctx,
        after=_optional_binds_lines(runtime, [*binds, *site.environment.binds], optional) if optional else [],
    )
    return text.rstrip("\n").split("\n")
