"""Hostile archives against hpcjobs.tarsafe (catalogue F3): the sentinel must never change."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hpcjobs.errors import UserError
from hpcjobs.tarsafe import TarStream, make_tar, safe_extract


def _snapshot(root: Path) -> dict[str, tuple[str, str, int]]:
    """Every entry under *root* (and root's parent listing) with its kind and content hash."""
    out: dict[str, tuple[str, str, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[str(p)] = ("link", os.readlink(p), 0)
            elif stat.S_ISREG(st.st_mode):
                out[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode)
            else:
                out[str(p)] = ("dir", "", st.st_mode)
    return out


def _add_file(tf: tarfile.TarFile, name: str, data: bytes = b"pwned\n", mode: int = 0o644) -> None:
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    ti.mtime = 1_700_000_000
    tf.addfile(ti, io.BytesIO(data))


def _add_link(tf: tarfile.TarFile, name: str, target: str, *, hard: bool = False) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    ti.linkname = target
    tf.addfile(ti)


def _add_special(tf: tarfile.TarFile, name: str, kind: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.devmajor, ti.devminor = 1, 3
    tf.addfile(ti)


def _archive(build: Callable[[tarfile.TarFile], None], *, gz: bool = False) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tf:
        build(tf)
    buf.seek(0)
    return buf


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path]:
    """(dest, sentinel): a sentinel directory with a secret next to the destination."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "secret").write_bytes(b"top secret\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    return dest, sentinel


# A member spec: (kind, name, target-or-data); "{S}" in a string is the sentinel path.
Spec = tuple[str, str, str]


def _build(tf: tarfile.TarFile, specs: list[Spec], sentinel: Path) -> None:
    for kind, name, arg in specs:
        name, arg = name.replace("{S}", str(sentinel)), arg.replace("{S}", str(sentinel))
        if kind == "file":
            _add_file(tf, name, arg.encode())
        elif kind in ("sym", "hard"):
            _add_link(tf, name, arg, hard=kind == "hard")
        else:
            _add_special(tf, name, {"chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[kind])


def _pre_symlink_dir(dest: Path, sentinel: Path) -> None:
    os.symlink(sentinel, dest / "pre")


def _pre_symlink_file(dest: Path, sentinel: Path) -> None:
    os.symlink(sentinel / "secret", dest / "target.txt")


Pre = Callable[[Path, Path], None] | None
HOSTILE: list[tuple[str, list[Spec], Pre]] = [
    ("dotdot", [("file", "../sentinel/pwned", "x")], None),
    ("dotdot-overwrite", [("file", "../sentinel/secret", "x")], None),
    ("absolute", [("file", "{S}/pwned", "x")], None),
    ("nested-dotdot", [("file", "a/../../sentinel/pwned", "x")], None),
    ("deep-dotdot", [("file", "a/b/../../../sentinel/secret", "x")], None),
    ("symlink-abs-then-write", [("sym", "ln", "{S}"), ("file", "ln/pwned", "x"), ("file", "ln/secret", "x")], None),
    ("symlink-etc-then-write", [("sym", "etc", "/etc"), ("file", "etc/hpcjobs-pwned", "x")], None),
    ("symlink-rel-then-write", [("sym", "ln", "../sentinel"), ("file", "ln/pwned", "x")], None),
    ("symlink-to-file-then-overwrite", [("sym", "f", "../sentinel/secret"), ("file", "f", "overwritten")], None),
    ("hardlink-outside", [("hard", "hl", "../sentinel/secret")], None),
    ("hardlink-absolute", [("hard", "hl", "{S}/secret")], None),
    ("hardlink-outside-then-write", [("hard", "hl", "{S}/secret"), ("file", "hl", "x")], None),
    ("chardev", [("chr", "null", "")], None),
    ("blockdev", [("blk", "sda", "")], None),
    ("fifo", [("fifo", "fifo", "")], None),
    ("preexisting-symlink-dir", [("file", "pre/pwned", "x")], _pre_symlink_dir),
    ("preexisting-symlink-file", [("file", "target.txt", "overwritten")], _pre_symlink_file),
    # lexically inside when written; outside once "l -> ." exists
    ("symlink-chain-escape", [("sym", "d/l2", "../l/.."), ("sym", "l", ".")], None),
    ("hardlink-via-refused-symlink", [("sym", "s", "/etc/passwd"), ("hard", "h", "s")], None),
    ("unicode-dotdot", [("file", "\u202e/../../sentinel/pwn\u00e9d", "x")], None),
    ("long-name", [("file", "x" * 300, "x")], None),
]


@pytest.fixture(params=["data-filter", "own-checks-only"])
def filter_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with tarfile's data filter, and without it (old 3.10 patch releases; a bypass)."""
    if request.param == "own-checks-only":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return str(request.param)


@pytest.mark.parametrize(("case", "specs", "pre"), HOSTILE, ids=[c[0] for c in HOSTILE])
@pytest.mark.parametrize("gz", [False, True], ids=["tar", "tgz"])
def test_hostile_archive_leaves_sentinel_unchanged(
    filter_mode: str,
    world: tuple[Path, Path],
    case: str,
    specs: list[Spec],
    pre: Pre,
    gz: bool,
) -> None:
    dest, sentinel = world
    if pre is not None:
        pre(dest, sentinel)
    before = _snapshot(sentinel.parent / "sentinel")
    etc_before = set(os.listdir("/etc"))
    report = safe_extract(_archive(lambda tf: _build(tf, specs, sentinel), gz=gz), dest)
    assert _snapshot(sentinel) == before
    assert set(os.listdir("/etc")) == etc_before
    assert report.refused >= 1, report
    assert report.warnings
    # nothing in dest may resolve outside it
    real_dest = os.path.realpath(dest)
    for p in dest.rglob("*"):
        if p.is_symlink() and case.startswith("preexisting"):
            continue  # planted by the test itself, not by the archive
        real = os.path.realpath(p)
        assert real == real_dest or real.startswith(real_dest + os.sep), p
        if p.is_file() and not p.is_symlink():
            assert p.stat().st_ino != (sentinel / "secret").stat().st_ino


def test_no_temporary_files_left(world: tuple[Path, Path]) -> None:
    dest, sentinel = world
    specs: list[Spec] = [("file", "ok", "ok"), ("file", "../sentinel/x", "x")]
    safe_extract(_archive(lambda tf: _build(tf, specs, sentinel)), dest)
    assert sorted(os.listdir(dest)) == ["ok"]


def _tree(root: Path) -> list[str]:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)) * 100)
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    (root / "caf\u00e9-NFC.txt").write_text("nfc")
    (root / "cafe\u0301-NFD.txt").write_text("nfd")
    (root / "\u202eevil-bidi.txt").write_text("bidi")
    (root / "spaces and 'quotes'.txt").write_text("q")
    os.symlink("sub/b.bin", root / "link-inside")
    old = time.time() - 86400 * 30
    os.utime(root / "a.txt", (old, old))
    return [str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir() or p.is_symlink()]


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_and_skip_same(tmp_path: Path, compress: bool) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = _tree(src)
    buf = io.BytesIO()
    rep = make_tar(src, files, buf, compress)
    assert rep.files == len(files) - 1 and rep.symlinks == 1
    data = buf.getvalue()
    assert data[:2] == (b"\x1f\x8b" if compress else data[:2])

    dest = tmp_path / "dest"
    r1 = safe_extract(io.BytesIO(data), dest)
    assert r1.ok, r1.warnings
    assert r1.written == len(files)
    assert r1.skipped_same == 0
    for rel in files:
        s, d = src / rel, dest / rel
        if s.is_symlink():
            assert os.readlink(d) == os.readlink(s)
            continue
        assert d.read_bytes() == s.read_bytes()
        assert int(d.stat().st_mtime) == int(s.stat().st_mtime)
        assert stat.S_IMODE(d.stat().st_mode) & 0o100 == stat.S_IMODE(s.stat().st_mode) & 0o100

    r2 = safe_extract(io.BytesIO(data), dest)
    assert r2.ok and r2.written == 0 and r2.skipped_same == len(files)

    (dest / "a.txt").write_text("changed locally\n")
    r3 = safe_extract(io.BytesIO(data), dest)
    assert r3.written == 1 and (dest / "a.txt").read_text() == "alpha\n"

    r4 = safe_extract(io.BytesIO(data), dest, skip_same=False)
    assert r4.written == len(files) - 1  # the unchanged symlink is still "same"


def test_dot_member_and_hardlink_inside(tmp_path: Path) -> None:
    def build(tf: tarfile.TarFile) -> None:
        ti = tarfile.TarInfo("./")
        ti.type = tarfile.DIRTYPE
        tf.addfile(ti)
        _add_file(tf, "./x/data", b"payload")
        _add_link(tf, "./x/copy", "x/data", hard=True)

    r = safe_extract(_archive(build), tmp_path / "d")
    assert r.ok, r.warnings
    assert (tmp_path / "d/x/copy").read_bytes() == b"payload"
    assert (tmp_path / "d/x/copy").stat().st_ino == (tmp_path / "d/x/data").stat().st_ino


def test_a_path_archived_twice_leaves_no_temporary_file(tmp_path: Path) -> None:
    # GNU tar given one path twice stores the second as a hard link to the first, i.e. to itself
    src = tmp_path / "src"
    (src / "logs").mkdir(parents=True)
    (src / "logs" / "std_log.txt").write_text("once\n")
    import subprocess

    data = subprocess.run(["tar", "-cf", "-", "-C", str(src), "logs", "logs"], capture_output=True, check=True).stdout
    r = safe_extract(io.BytesIO(data), tmp_path / "d")
    assert r.ok, r.warnings
    assert sorted(p.name for p in (tmp_path / "d" / "logs").iterdir()) == ["std_log.txt"]
    assert (tmp_path / "d" / "logs" / "std_log.txt").read_text() == "once\n"


def test_truncated_archive_raises_and_leaves_no_partial(tmp_path: Path) -> None:
    data = _archive(lambda tf: _add_file(tf, "big", os.urandom(200_000))).getvalue()
    with pytest.raises(tarfile.TarError):
        safe_extract(io.BytesIO(data[:100_000]), tmp_path / "d")
    assert list((tmp_path / "d").iterdir()) == []


def test_make_tar_is_deterministic(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = _tree(src)
    a, b = io.BytesIO(), io.BytesIO()
    make_tar(src, files, a, True)
    make_tar(src, list(reversed(files)), b, True)
    assert a.getvalue() == b.getvalue()
    with tarfile.open(fileobj=io.BytesIO(a.getvalue()), mode="r:gz") as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert all(m.uname == "" and m.gname == "" and m.uid == 0 for m in members)


def test_make_tar_refuses_outward_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok").write_text("ok")
    os.symlink(str(Path.home()), src / "home")
    os.symlink("../elsewhere", src / "up")
    with pytest.raises(UserError, match="outside"):
        make_tar(src, ["ok", "home"], io.BytesIO(), False)
    rep = make_tar(src, ["ok", "home", "up"], io.BytesIO(), False, outside_symlinks="skip")
    assert rep.skipped == ["home", "up"] and rep.files == 1
    with pytest.raises(UserError):
        make_tar(src, ["../x"], io.BytesIO(), False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "cred").write_text("secret")
    os.symlink(outside, src / "linkdir")
    with pytest.raises(UserError, match="parent directory"):
        make_tar(src, ["linkdir/cred"], io.BytesIO(), False)


def test_tar_stream_matches_make_tar_and_reports_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = _tree(src)
    ref = io.BytesIO()
    make_tar(src, files, ref, True)
    with TarStream(src, files, compress=True) as stream:
        data = stream.read()
    assert data == ref.getvalue()
    os.symlink("/etc", src / "outward")
    with TarStream(src, [*files, "outward"], compress=False) as stream, pytest.raises(UserError, match="outside"):
        while stream.read(4096):
            pass
    # a consumer that gives up early does not hang the producer
    big = src / "big.bin"
    big.write_bytes(os.urandom(8 * 1024 * 1024))
    stream = TarStream(src, ["big.bin"], compress=False)
    assert stream.read(1000)
    stream.close()
