"""Safe tar extraction (downloads) and deterministic tar creation (uploads).

:func:`safe_extract` is the only way hpcjobs unpacks an archive that came from a
cluster: a job's outputs are written by code we do not control, so every member is
treated as hostile (catalogue T4/F3).  It applies tarfile's ``data`` filter (PEP 706)
*and* its own checks, because the filter alone has been bypassed more than once
(CVE-2025-4517 and friends) and is missing on old 3.10 patch releases:

* names are normalised lexically; absolute names, ``..`` components, NUL bytes and
  empty names are refused;
* every directory on the way to a member is opened relative to its parent with
  ``O_NOFOLLOW``, so nothing is ever written through a symlink, whether the archive
  planted it or it was there before; a member whose final path is an existing symlink
  is refused too;
* symlinks must be relative and stay inside the destination, lexically when
  extracted and again by ``realpath`` once the whole archive is in place (a later
  link can change where an earlier one points); offenders are removed;
* hard links may only point at regular files extracted earlier from the same archive;
* devices, FIFOs and other special members are refused;
* files are written to a temporary name and renamed, so no partial file ever sits
  under a final name; a file already present with the same size and SHA-256 is left
  alone (so re-downloading is cheap and keeps mtimes).

Refused members are skipped (never written) and reported; extraction goes on.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import posixpath
import secrets
import stat
import tarfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from hpcjobs.errors import UserError

_BUF = 1024 * 1024
# Errors that come from a member's name or shape, not from the local disk: the
# member is refused and extraction goes on (ENOSPC and friends still propagate).
_MEMBER_ERRNOS = {
    errno.ENAMETOOLONG,
    errno.EINVAL,
    errno.EILSEQ,
    errno.EEXIST,
    errno.EISDIR,
    errno.ENOTDIR,
    errno.ELOOP,
    errno.ENOTEMPTY,
    errno.EXDEV,
}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass
class ExtractReport:
    """What :func:`safe_extract` did."""

    #: regular files, symlinks and hard links created or replaced
    written: int = 0
    #: regular files left alone because the same content was already there
    skipped_same: int = 0
    #: members refused (never written) — see :attr:`warnings`
    refused: int = 0
    dirs_created: int = 0
    bytes_written: int = 0
    #: one line per refused member: ``name: reason``
    warnings: list[str] = field(default_factory=list)
    #: relative paths of the regular files that are now in place (written or same)
    files: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing was refused."""
        return self.refused == 0


class _Refused(Exception):
    """A member that must not be written (the message says why)."""


def _clean_name(name: str) -> list[str]:
    """Split a member name into safe path components, or raise :class:`_Refused`."""
    if not name or "\0" in name:
        raise _Refused("empty name or NUL byte")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":" and name[0].isalpha()):
        raise _Refused("absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts:
        raise _Refused("names the destination itself")
    if ".." in parts:
        raise _Refused("'..' in path")
    return parts


def _data_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    filt = getattr(tarfile, "data_filter", None)
    if filt is None:
        # Python 3.10 before 3.10.12 has no filters; our own checks still apply.
        return member
    try:
        out: tarfile.TarInfo = filt(member, dest)
    except tarfile.FilterError as e:
        raise _Refused(f"tarfile data filter: {e}") from None
    return out


class _Dest:
    """The destination directory, walked only through real directories (openat)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.real = os.path.realpath(root)
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))

    def close(self) -> None:
        os.close(self.root_fd)

    @contextlib.contextmanager
    def parent(self, parts: list[str], *, create: bool, report: ExtractReport | None) -> Iterator[int]:
        """Yield an fd of the directory holding ``parts[-1]``, creating it if asked."""
        fd = os.dup(self.root_fd)
        try:
            for comp in parts[:-1]:
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise _Refused(f"'{comp}' does not exist") from None
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    if report is not None:
                        report.dirs_created += 1
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as e:
                    # ELOOP (a symlink) or ENOTDIR (a file) on the way
                    raise _Refused(f"'{comp}' on the path is a symlink or not a directory ({e.strerror})") from None
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)


def _lstat_at(name: str, dir_fd: int) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _sha256_at(name: str, dir_fd: int) -> str:
    h = hashlib.sha256()
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(_BUF):
            h.update(chunk)
    return h.hexdigest()


def _tmp_name(final: str) -> str:
    return f".{final[:100]}.hpcjobs-{secrets.token_hex(6)}.tmp"


def safe_extract(stream: IO[bytes], dest: Path, *, skip_same: bool = True) -> ExtractReport:
    """Extract the (gzip or plain) tar *stream* into *dest*, refusing anything unsafe.

    Reads the stream once, front to back (it may be a pipe or a remote channel).
    Raises :class:`tarfile.TarError` for an archive that is corrupt or truncated, and
    ``OSError`` for local failures (disk full); members refused for safety are
    counted in the returned report instead.
    """
    report = ExtractReport()
    d = _Dest(Path(dest))
    dest_str = str(d.root)
    regular_done: set[tuple[str, ...]] = set()
    links: list[tuple[tuple[str, ...], str, bool]] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tf:
            for member in tf:
                name = member.name
                if member.isdir() and not [p for p in name.split("/") if p not in ("", ".")]:
                    # "./" heads archives made with `tar -C dir .`: the destination itself.
                    continue
                try:
                    parts = _clean_name(name)
                    filtered = _data_filter(member, dest_str)
                    _extract_member(tf, member, filtered, parts, d, report, skip_same, regular_done, links)
                except _Refused as why:
                    report.refused += 1
                    report.warnings.append(f"{name!r}: {why}")
                except OSError as e:
                    if e.errno not in _MEMBER_ERRNOS:
                        raise
                    report.refused += 1
                    report.warnings.append(f"{name!r}: {e.strerror}")
        _recheck_links(d, links, report)
    finally:
        d.close()
    return report


def _extract_member(
    tf: tarfile.TarFile,
    member: tarfile.TarInfo,
    filtered: tarfile.TarInfo,
    parts: list[str],
    d: _Dest,
    report: ExtractReport,
    skip_same: bool,
    regular_done: set[tuple[str, ...]],
    links: list[tuple[tuple[str, ...], str, bool]],
) -> None:
    final = parts[-1]
    if member.isdir():
        parts = [*parts, "."]
        with d.parent(parts, create=True, report=report):
            pass
        return
    if not (member.isreg() or member.issym() or member.islnk()):
        raise _Refused("special file (device, FIFO or unknown type)")
    with d.parent(parts, create=True, report=report) as pfd:
        existing = _lstat_at(final, pfd)
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise _Refused("an existing directory is in the way")
        if member.issym():
            # Replacing a symlink by another (rename) never writes through it.
            _make_symlink(member, parts, pfd, final, existing, report, links)
            return
        if existing is not None and stat.S_ISLNK(existing.st_mode):
            raise _Refused("an existing symlink is in the way (refusing to write through it)")
        if member.islnk():
            _make_hardlink(member, parts, pfd, final, d, report, regular_done)
        else:
            _write_file(tf, member, filtered, parts, pfd, final, existing, report, skip_same, regular_done)


def _link_target_inside(parts: list[str], target: str) -> bool:
    if not target or target.startswith("/") or "\0" in target:
        return False
    joined = posixpath.normpath(posixpath.join(*parts[:-1], target) if len(parts) > 1 else target)
    return joined != ".." and not joined.startswith("../") and not joined.startswith("/")


def _make_symlink(
    member: tarfile.TarInfo,
    parts: list[str],
    pfd: int,
    final: str,
    existing: os.stat_result | None,
    report: ExtractReport,
    links: list[tuple[tuple[str, ...], str, bool]],
) -> None:
    target = member.linkname
    if not _link_target_inside(parts, target):
        raise _Refused(f"symlink to {target!r} points outside the destination")
    if existing is not None and stat.S_ISLNK(existing.st_mode) and os.readlink(final, dir_fd=pfd) == target:
        links.append((tuple(parts), target, False))
        report.skipped_same += 1
        return
    tmp = _tmp_name(final)
    os.symlink(target, tmp, dir_fd=pfd)
    try:
        os.replace(tmp, final, src_dir_fd=pfd, dst_dir_fd=pfd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=pfd)
        raise
    links.append((tuple(parts), target, True))
    report.written += 1


def _make_hardlink(
    member: tarfile.TarInfo,
    parts: list[str],
    pfd: int,
    final: str,
    d: _Dest,
    report: ExtractReport,
    regular_done: set[tuple[str, ...]],
) -> None:
    try:
        src_parts = _clean_name(member.linkname)
    except _Refused as why:
        raise _Refused(f"hard link to {member.linkname!r}: {why}") from None
    if tuple(src_parts) not in regular_done:
        raise _Refused(f"hard link to {member.linkname!r}, which is not a file extracted from this archive")
    with d.parent(src_parts, create=False, report=None) as sfd:
        st = _lstat_at(src_parts[-1], sfd)
        if st is None or not stat.S_ISREG(st.st_mode):
            raise _Refused(f"hard link to {member.linkname!r}, which is not a regular file")
        tmp = _tmp_name(final)
        os.link(src_parts[-1], tmp, src_dir_fd=sfd, dst_dir_fd=pfd, follow_symlinks=False)
    try:
        os.replace(tmp, final, src_dir_fd=pfd, dst_dir_fd=pfd)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=pfd)
        raise
    # rename(2) of one hard link onto another of the same file does nothing and succeeds:
    # a member linked to itself (tar given one path twice) would leave the temporary name
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=pfd)
    regular_done.add(tuple(parts))
    report.written += 1


def _write_file(
    tf: tarfile.TarFile,
    member: tarfile.TarInfo,
    filtered: tarfile.TarInfo,
    parts: list[str],
    pfd: int,
    final: str,
    existing: os.stat_result | None,
    report: ExtractReport,
    skip_same: bool,
    regular_done: set[tuple[str, ...]],
) -> None:
    src = tf.extractfile(member)
    if src is None:
        raise _Refused("no data for regular file")
    mode = filtered.mode if filtered.mode is not None else (member.mode & 0o755) | 0o600
    mode = (mode & 0o777) | 0o600
    tmp = _tmp_name(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o600, dir_fd=pfd)
    h = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_BUF):
                out.write(chunk)
                h.update(chunk)
                size += len(chunk)
            out.flush()  # before utime: a later flush would bump the mtime again
            os.fchmod(out.fileno(), mode)
            mtime = filtered.mtime if filtered.mtime is not None else member.mtime
            os.utime(out.fileno(), (mtime, mtime))
        same = (
            skip_same
            and existing is not None
            and stat.S_ISREG(existing.st_mode)
            and existing.st_size == size
            and _sha256_at(final, pfd) == h.hexdigest()
        )
        if same:
            os.unlink(tmp, dir_fd=pfd)
            report.skipped_same += 1
        else:
            os.replace(tmp, final, src_dir_fd=pfd, dst_dir_fd=pfd)
            report.written += 1
            report.bytes_written += size
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=pfd)
        raise
    regular_done.add(tuple(parts))
    report.files.append("/".join(parts))


def _recheck_links(d: _Dest, links: list[tuple[tuple[str, ...], str, bool]], report: ExtractReport) -> None:
    # Lexical checks cannot see that "l -> ." and "sub/x -> ../l/.." together escape;
    # with every member in place, realpath can.
    root = d.real
    for parts, target, was_written in links:
        path = os.path.join(d.root, *parts)
        real = os.path.realpath(path)
        if real == root or real.startswith(root + os.sep):
            continue
        try:
            with d.parent(list(parts), create=False, report=None) as pfd:
                st = _lstat_at(parts[-1], pfd)
                if st is not None and stat.S_ISLNK(st.st_mode) and os.readlink(parts[-1], dir_fd=pfd) == target:
                    os.unlink(parts[-1], dir_fd=pfd)
        except _Refused:
            pass
        if was_written:
            report.written -= 1
        else:
            report.skipped_same -= 1
        report.refused += 1
        report.warnings.append(f"{'/'.join(parts)!r}: symlink to {target!r} resolves outside the destination (removed)")


# -- creating archives ---------------------------------------------------------------------
@dataclass
class TarReport:
    """What :func:`make_tar` put in the archive."""

    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    #: outward symlinks left out (with ``outside_symlinks="skip"``)
    skipped: list[str] = field(default_factory=list)


def _inside(root_real: str, path: str) -> bool:
    return path == root_real or path.startswith(root_real + os.sep)


def make_tar(
    root: Path,
    files: Iterable[str],
    fileobj: IO[bytes],
    compress: bool,
    *,
    compresslevel: int = 6,
    outside_symlinks: Literal["error", "skip"] = "error",
) -> TarReport:
    """Write a tar (gzip'd if *compress*) of *files* (paths relative to *root*) to *fileobj*.

    Deterministic: members sorted by name, owner 0/0 without user or group names,
    gzip header without a timestamp; file mtimes and permission bits are kept.
    A symlink is stored as a link if it resolves inside *root*; one that points
    outside (``code/creds -> ~/.aws``) raises :class:`UserError`, or is left out
    and reported with ``outside_symlinks="skip"``.  Names with ``..`` or absolute
    names raise :class:`UserError`.  Parent directories are created on extraction and
    need not be listed.
    """
    root = Path(root)
    root_real = os.path.realpath(root)
    names: list[str] = []
    for f in files:
        rel = f.replace(os.sep, "/")
        try:
            parts = _clean_name(rel)
        except _Refused as why:
            raise UserError(f"cannot archive '{f}': {why}") from None
        names.append("/".join(parts))
    names = sorted(set(names))
    report = TarReport()
    gz: gzip.GzipFile | None = None
    if compress:
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=fileobj, compresslevel=compresslevel, mtime=0)
    try:
        with tarfile.open(fileobj=gz or fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            for name in names:
                _add_one(tf, root, root_real, name, report, outside_symlinks)
    finally:
        if gz is not None:
            gz.close()
    return report


def _add_one(
    tf: tarfile.TarFile,
    root: Path,
    root_real: str,
    name: str,
    report: TarReport,
    outside_symlinks: str,
) -> None:
    path = os.path.join(root, *name.split("/"))
    # A parent directory that is a symlink pointing elsewhere would smuggle in
    # files from outside the root.
    if not _inside(root_real, os.path.realpath(os.path.dirname(path))):
        raise UserError(f"cannot archive '{name}': a parent directory is a symlink leading outside {root}")
    st = os.lstat(path)
    info = tarfile.TarInfo(name)
    info.mtime = int(st.st_mtime)
    info.mode = stat.S_IMODE(st.st_mode) & 0o777
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        if not _inside(root_real, os.path.realpath(path)) or target.startswith("/"):
            if outside_symlinks == "skip":
                report.skipped.append(name)
                return
            raise UserError(
                f"cannot archive '{name}': it is a symlink to '{target}', outside {root}",
                hint="copy the file in, or remove the link",
            )
        info.type = tarfile.SYMTYPE
        info.linkname = target
        tf.addfile(info)
        report.symlinks += 1
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tf.addfile(info)
        report.dirs += 1
    elif stat.S_ISREG(st.st_mode):
        info.size = st.st_size
        with open(path, "rb") as f:
            tf.addfile(info, f)
        report.files += 1
        report.bytes += st.st_size
    else:
        raise UserError(f"cannot archive '{name}': not a regular file, directory or symlink")


class TarStream(io.RawIOBase):
    """A readable stream of :func:`make_tar`'s output, produced on the fly.

    For uploads of any size in constant memory: ``transport.put_tar(TarStream(root,
    files, compress=True), remote_dir)``.  A thread writes the archive into a pipe;
    an error while archiving (say, an outward symlink) is raised from :meth:`read`
    at the end of the data, so the consumer never mistakes a truncated archive for a
    complete one.  :attr:`report` is set once the archive is complete.
    """

    def __init__(
        self,
        root: Path,
        files: Iterable[str],
        compress: bool,
        *,
        compresslevel: int = 6,
        outside_symlinks: Literal["error", "skip"] = "error",
    ) -> None:
        super().__init__()
        r, w = os.pipe()
        self._r = os.fdopen(r, "rb", buffering=0)
        self._w = os.fdopen(w, "wb", buffering=_BUF)
        self.report: TarReport | None = None
        self.error: BaseException | None = None
        names = list(files)
        self._thread = threading.Thread(
            target=self._produce,
            args=(Path(root), names, compress, compresslevel, outside_symlinks),
            name="hpcjobs-tar",
            daemon=True,
        )
        self._thread.start()

    def _produce(self, root: Path, names: list[str], compress: bool, level: int, outside: Literal["error", "skip"]) -> None:
        try:
            self.report = make_tar(root, names, self._w, compress, compresslevel=level, outside_symlinks=outside)
        except BaseException as e:  # noqa: BLE001 - handed to the reader
            self.error = e
        finally:
            with contextlib.suppress(OSError):
                self._w.close()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1, /) -> bytes:
        """Up to *size* bytes (all the rest with -1); ``b""`` at the end."""
        return super().read(size) or b""

    def readinto(self, b: Any) -> int:
        n = self._r.readinto(b)
        if not n:
            self._thread.join()
            if self.error is not None:
                raise self.error
            return 0
        return n

    def close(self) -> None:
        if not self.closed:
            # Closing the read end makes a still-running producer fail with EPIPE.
            self._r.close()
            self._thread.join(timeout=30)
        super().close()
