"""Code snapshots: which files of ``code:`` are shipped, and their content hash.

Selection follows Azure ML: ``.amlignore`` if present, else ``.gitignore``, in the code
folder and in every folder below it (each file's patterns apply to its own folder).
``.git`` is never shipped.  A symlink that points outside the code folder is refused.
The hash covers paths, modes and contents, so an unchanged folder always hashes the
same and a snapshot whose hash is already on the cluster is not uploaded again.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from hpcjobs.errors import UserError

WARN_BYTES = 100 * 1024 * 1024
WARN_FILES = 5000


@dataclass
class Snapshot:
    """The files of a code folder that a job ships."""

    root: Path
    files: list[str] = field(default_factory=list)
    size: int = 0
    digest: str = ""
    is_file: bool = False

    @property
    def count(self) -> int:
        return len(self.files)

    def warnings(self) -> list[str]:
        out = []
        if self.size > WARN_BYTES or self.count > WARN_FILES:
            out.append(
                f"code snapshot of {self.root} is large ({self.count} files, {self.size / 1e6:.1f} MB); "
                "add an .amlignore to leave out data and outputs"
            )
        return out

    def tar_bytes(self, *, compress: bool = True) -> bytes:
        """The snapshot as one (gzip'd) tar stream, deterministic in order and metadata."""
        buf = io.BytesIO()
        self.write_tar(buf, compress=compress)
        return buf.getvalue()

    def write_tar(self, fileobj: io.BufferedIOBase | io.BytesIO, *, compress: bool = True) -> None:
        mode = "w:gz" if compress else "w"
        with tarfile.open(fileobj=fileobj, mode=mode, format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for rel in self.files:
                full = self.root / rel if not self.is_file else self.root
                info = tar.gettarinfo(str(full), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if info.isreg():
                    with open(full, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)


def _spec_for(directory: Path) -> pathspec.PathSpec | None:
    for name in (".amlignore", ".gitignore"):
        f = directory / name
        if f.is_file():
            lines = f.read_text(encoding="utf-8", errors="replace").splitlines()
            return pathspec.GitIgnoreSpec.from_lines(lines)
    return None


def _walk(root: Path) -> Iterator[str]:
    specs: list[tuple[Path, pathspec.PathSpec]] = []

    def ignored(path: Path, is_dir: bool) -> bool:
        for base, spec in specs:
            try:
                rel = path.relative_to(base).as_posix()
            except ValueError:
                continue
            if spec.match_file(rel + ("/" if is_dir else "")):
                return True
        return False

    def visit(directory: Path) -> Iterator[str]:
        spec = _spec_for(directory)
        if spec is not None:
            specs.append((directory, spec))
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
            for entry in entries:
                path = Path(entry.path)
                if entry.name == ".git":
                    continue
                if entry.is_symlink():
                    target = Path(os.path.realpath(path))
                    if not target.is_relative_to(root.resolve()):
                        raise UserError(
                            f"code folder contains a symlink that points outside it: {path} -> {os.readlink(path)}",
                            hint="copy the file into the code folder, or list the link in .amlignore",
                        )
                    if ignored(path, target.is_dir()):
                        continue
                    if target.is_dir():
                        # a link to a folder inside the snapshot: ship the link itself
                        yield path.relative_to(root).as_posix()
                        continue
                    yield path.relative_to(root).as_posix()
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                if ignored(path, is_dir):
                    continue
                if is_dir:
                    yield from visit(path)
                elif entry.is_file(follow_symlinks=False):
                    yield path.relative_to(root).as_posix()
        finally:
            if spec is not None:
                specs.pop()

    yield from visit(root)


def take_snapshot(code: str | Path) -> Snapshot:
    """Select and hash the files of a code folder (or a single file)."""
    root = Path(code)
    if not root.exists():
        raise UserError(f"code folder {root} does not exist")
    snap = Snapshot(root=root)
    h = hashlib.sha256()
    if root.is_file():
        snap.is_file = True
        snap.files = [root.name]
        data = root.read_bytes()
        snap.size = len(data)
        h.update(b"F" + root.name.encode() + b"\0" + hashlib.sha256(data).digest())
        snap.digest = h.hexdigest()[:32]
        return snap
    for rel in _walk(root):
        full = root / rel
        st = full.lstat()
        snap.files.append(rel)
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0")
        if stat.S_ISLNK(st.st_mode):
            h.update(b"L" + os.readlink(full).encode("utf-8", "surrogateescape") + b"\0")
            continue
        snap.size += st.st_size
        h.update(b"X" if st.st_mode & 0o111 else b"F")
        fh = hashlib.sha256()
        with open(full, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                fh.update(chunk)
        h.update(fh.digest())
    snap.digest = h.hexdigest()[:32]
    return snap


def git_info(code: str | Path) -> dict[str, str]:
    """Repository, commit and dirty flag of the folder, as Azure records them (best effort)."""
    from hpcjobs.transport.local import LocalTransport

    root = Path(code)
    cwd = str(root if root.is_dir() else root.parent)
    t = LocalTransport()
    res = t.run(["git", "-C", cwd, "rev-parse", "HEAD"])
    if not res.ok:
        return {}
    info = {"mlflow.source.git.commit": res.out.strip(), "azureml.git.commit": res.out.strip()}
    remote = t.run(["git", "-C", cwd, "config", "--get", "remote.origin.url"])
    if remote.ok and remote.out.strip():
        info["mlflow.source.git.repoURL"] = remote.out.strip()
        info["azureml.git.repository_uri"] = remote.out.strip()
    branch = t.run(["git", "-C", cwd, "rev-parse", "--abbrev-ref", "HEAD"])
    if branch.ok:
        info["mlflow.source.git.branch"] = branch.out.strip()
        info["azureml.git.branch"] = branch.out.strip()
    dirty = t.run(["git", "-C", cwd, "status", "--porcelain", "--untracked-files=no"])
    if dirty.ok:
        info["azureml.git.dirty"] = "True" if dirty.out.strip() else "False"
    return info
