"""Simple Dockerfiles -> Apptainer/Singularity definition files.  Pure: text in, text out.

Azure ML builds ``environment.build`` contexts with Docker.  Clusters have no Docker
daemon, but Apptainer and Singularity build images from their own *definition files*;
for the Dockerfiles people write for training jobs (one ``FROM``, then ``RUN``, ``ENV``,
``COPY``, ``WORKDIR``...) the translation is mechanical, in the spirit of
``spython recipe``.  What cannot be translated faithfully (multi-stage builds, ``ADD``
of URLs, ``FROM scratch``) is an error that says what to do instead, never a silently
different image.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from dataclasses import dataclass, field

from hpcjobs.errors import ValidationError

#: what to do when a Dockerfile cannot be turned into an image on the cluster
BUILD_ELSEWHERE_HINT = (
    "build the image where Docker or apptainer is available (docker build, then "
    "'apptainer build image.sif docker-daemon://IMAGE' or push it to a registry), copy the SIF "
    "to the cluster and set environment.image to its path (or to the registry reference)"
)

_IGNORED = {"EXPOSE", "VOLUME", "HEALTHCHECK", "STOPSIGNAL", "ONBUILD", "MAINTAINER"}


@dataclass
class Translation:
    """An Apptainer definition file and what the translation needed or dropped."""

    definition: str
    base: str
    #: build-context paths (relative, as written) that COPY/ADD read
    context_sources: list[str] = field(default_factory=list)
    #: instructions that have no equivalent and were left out (shown as warnings)
    dropped: list[str] = field(default_factory=list)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Dockerfile lines with continuations joined and comments removed: (first line number, text)."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            # comment lines inside a continued instruction are skipped by Docker too
            continue
        if not buf:
            start = number
        if line.rstrip().endswith("\\"):
            buf.append(line.rstrip()[:-1])
            continue
        buf.append(line)
        out.append((start, " ".join(part.strip() for part in buf if part.strip())))
        buf = []
    if buf:
        out.append((start, " ".join(part.strip() for part in buf if part.strip())))
    return out


def _exec_form(args: str) -> list[str] | None:
    """``["a", "b"]`` (Docker's exec form) as a list, else None."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _dq(value: str) -> str:
    """A double-quoted shell word that keeps ``$VAR`` expansion (as Docker's ENV does)."""
    return '"' + re.sub(r'(["\\`])', r"\\\1", value) + '"'


def _env_pairs(args: str, where: str) -> list[tuple[str, str]]:
    """``ENV A=1 B="two words"`` or the old ``ENV A value with spaces``."""
    try:
        words = shlex.split(args, posix=True)
    except ValueError as exc:
        raise ValidationError(f"{where}: cannot read ENV: {exc}") from None
    if not words:
        raise ValidationError(f"{where}: ENV without a variable")
    if "=" not in words[0]:
        name, _, rest = args.strip().partition(" ")
        return [(name, rest.strip())]
    pairs = []
    for w in words:
        name, eq, value = w.partition("=")
        if not eq:
            raise ValidationError(f"{where}: ENV {w!r} is not NAME=VALUE")
        pairs.append((name, value))
    for name, _ in pairs:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValidationError(f"{where}: invalid environment variable name {name!r}")
    return pairs


def _strip_flags(words: list[str], instruction: str, where: str) -> list[str]:
    out = []
    for w in words:
        if w.startswith("--"):
            if w.startswith(("--chown", "--chmod", "--link")):
                continue  # unprivileged builds cannot chown; the files belong to the builder
            raise ValidationError(
                f"{where}: {instruction} {w.split('=')[0]} is not supported by the Dockerfile translation",
                hint=BUILD_ELSEWHERE_HINT,
            )
        out.append(w)
    return out


def translate(text: str, *, context: str, source: str = "Dockerfile", dirs: frozenset[str] = frozenset()) -> Translation:
    """Translate a single-stage Dockerfile into an Apptainer/Singularity definition file.

    *context* is the build context folder as the builder sees it (COPY sources are made
    absolute against it); *dirs* names the COPY sources that are folders (Docker copies
    a folder's contents, a file into a destination ending in ``/``).  Raises
    :class:`ValidationError` for what cannot be translated.
    """
    base: str | None = None
    files: list[str] = []
    environment: list[str] = []
    post: list[str] = []
    labels: list[str] = []
    runscript: list[str] = []
    sources: list[str] = []
    dropped: list[str] = []
    workdir = "/"
    entrypoint: list[str] = []
    cmd: list[str] = []
    for number, line in logical_lines(text):
        where = f"{source}:{number}"
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        args = args.strip()
        if instruction == "FROM":
            if base is not None:
                raise ValidationError(
                    f"{where}: multi-stage Dockerfiles (a second FROM) cannot be translated into one apptainer build",
                    hint=BUILD_ELSEWHERE_HINT,
                )
            words = [w for w in args.split() if not w.startswith("--platform")]
            if not words:
                raise ValidationError(f"{where}: FROM without an image")
            base = words[0]
            if base == "scratch":
                raise ValidationError(f"{where}: FROM scratch cannot be translated", hint=BUILD_ELSEWHERE_HINT)
            if "$" in base:
                raise ValidationError(
                    f"{where}: FROM with a build argument ({base}) cannot be translated", hint=BUILD_ELSEWHERE_HINT
                )
            continue
        if base is None and instruction != "ARG":
            raise ValidationError(f"{where}: {instruction} before FROM")
        if instruction == "RUN":
            argv = _exec_form(args)
            command = shlex.join(argv) if argv is not None else args
            if args.startswith("--"):
                raise ValidationError(f"{where}: RUN {args.split()[0]} (BuildKit) is not supported", hint=BUILD_ELSEWHERE_HINT)
            # each RUN starts in WORKDIR and its own shell, like Docker's
            post.append(f"cd {shlex.quote(workdir)} && ( {command} ) || exit 1")
        elif instruction == "ENV":
            for name, value in _env_pairs(args, where):
                environment.append(f"export {name}={_dq(value)}")
                post.append(f"export {name}={_dq(value)}")
        elif instruction == "ARG":
            name, eq, value = args.partition("=")
            name = name.strip()
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValidationError(f"{where}: invalid ARG name {name!r}")
            if eq and base is not None:
                post.append(f"{name}={_dq(value.strip().strip(chr(34)))}")
            elif base is not None:
                dropped.append(f"{where}: ARG {name} has no default (build arguments cannot be passed)")
        elif instruction in ("COPY", "ADD"):
            argv = _exec_form(args)
            words = argv if argv is not None else shlex.split(args)
            words = _strip_flags(words, instruction, where)
            if any(w.startswith("--from") for w in words):
                raise ValidationError(f"{where}: COPY --from needs a multi-stage build", hint=BUILD_ELSEWHERE_HINT)
            if len(words) < 2:
                raise ValidationError(f"{where}: {instruction} needs a source and a destination")
            *srcs, dest = words
            dest_is_dir = dest.endswith(("/", "/.")) or dest == "."
            dest = posixpath.normpath(posixpath.join(workdir, dest))
            for src in srcs:
                if re.match(r"^[a-z]+://", src):
                    raise ValidationError(f"{where}: ADD of a URL cannot be translated", hint="download it in a RUN line instead")
                if src.startswith("/") or ".." in src.split("/"):
                    raise ValidationError(f"{where}: {instruction} source {src!r} is outside the build context")
                if instruction == "ADD" and re.search(r"\.(tar|tgz|tar\.\w+)$", src):
                    raise ValidationError(
                        f"{where}: ADD of a tar archive (auto-extracted by Docker) cannot be translated",
                        hint="COPY it and extract it in a RUN line",
                    )
                sources.append(src)
                full = posixpath.normpath(posixpath.join(context, src))
                # a folder's contents, or one file to an explicit name, land at dest itself
                if src.rstrip("/") in dirs or src in (".", "./") or (len(srcs) == 1 and not dest_is_dir):
                    target = dest
                else:
                    target = posixpath.join(dest, posixpath.basename(src))
                if re.search(r"[\s\"']", full + target):
                    # %files lines are split on white space; apptainer has no quoting for them
                    raise ValidationError(f"{where}: {instruction} paths with spaces or quotes cannot be translated")
                files.append(f"{full} {target}")
        elif instruction == "WORKDIR":
            workdir = args if args.startswith("/") else posixpath.join(workdir, args)
            post.append(f"mkdir -p {shlex.quote(workdir)}")
        elif instruction == "LABEL":
            for w in shlex.split(args):
                k, _, v = w.partition("=")
                labels.append(f"{k} {v}")
        elif instruction == "ENTRYPOINT":
            argv = _exec_form(args)
            entrypoint = argv if argv is not None else ["/bin/sh", "-c", args]
        elif instruction == "CMD":
            argv = _exec_form(args)
            cmd = argv if argv is not None else ["/bin/sh", "-c", args]
        elif instruction == "USER":
            dropped.append(f"{where}: USER {args} (containers run as the submitting user)")
        elif instruction == "SHELL":
            raise ValidationError(f"{where}: SHELL cannot be translated", hint=BUILD_ELSEWHERE_HINT)
        elif instruction in _IGNORED:
            dropped.append(f"{where}: {instruction} (no meaning for a batch job)")
        else:
            raise ValidationError(f"{where}: unknown Dockerfile instruction {instruction}")
    if base is None:
        raise ValidationError(f"{source}: no FROM line")
    if entrypoint or cmd:
        runscript.append("exec " + shlex.join(entrypoint + cmd) + ' "$@"')
    if workdir != "/":
        # apptainer exec starts in the caller's folder; the job changes to its own folder anyway
        dropped.append(f"{source}: WORKDIR {workdir} applies to the build only (jobs start in their own folder)")
    bootstrap_from = base.removeprefix("docker://")
    parts = ["Bootstrap: docker", f"From: {bootstrap_from}", ""]

    def section(name: str, lines: list[str]) -> None:
        if lines:
            parts.append(f"%{name}")
            parts.extend(f"    {line}" for line in lines)
            parts.append("")

    section("files", files)
    section("environment", environment)
    section("post", post)
    section("runscript", runscript)
    section("labels", labels)
    return Translation(definition="\n".join(parts), base=base, context_sources=sources, dropped=dropped)
