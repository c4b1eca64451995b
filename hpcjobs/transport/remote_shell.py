"""Shell command lines shared by the SSH transports (paramiko and system ssh).

Remote commands run through the user's login shell, which must be POSIX-compatible
(sh, bash, zsh, ksh).  Paths and values are never spliced into script text: scripts
are fixed strings and get them as positional parameters (``sh -c SCRIPT sh ARG...``),
so quoting is shlex.quote's job alone.  A leading ``~`` in a path means the remote
home directory, as users write it in site configs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Protocol

from hpcjobs.errors import RuntimeFailure
from hpcjobs.transport.base import CommandResult, Transport


class Readable(Protocol):
    """Anything with ``read(n) -> bytes`` (a file, a pipe, :class:`hpcjobs.tarsafe.TarStream`)."""

    def read(self, size: int = -1, /) -> bytes: ...


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_TILDE = "case $f in '~') f=$HOME;; '~/'*) f=$HOME/${f#'~/'};; esac; "

EXIT_NO_FILE = 66
EXIT_IS_DIR = 67

READ_SCRIPT = (
    "f=$1; " + _TILDE + f'[ -e "$f" ] || {{ printf \'no such file: %s\\n\' "$f" >&2; exit {EXIT_NO_FILE}; }}; '
    f'[ -d "$f" ] && {{ printf \'is a directory: %s\\n\' "$f" >&2; exit {EXIT_IS_DIR}; }}; '
    "o=$2; n=$3; "
    'if [ "$o" = 0 ] && [ -z "$n" ]; then exec cat -- "$f"; fi; '
    'if [ "$o" = 0 ]; then exec head -c "$n" -- "$f"; fi; '
    'if [ -z "$n" ]; then exec tail -c +"$((o + 1))" -- "$f"; fi; '
    'tail -c +"$((o + 1))" -- "$f" | head -c "$n"'
)

WRITE_SCRIPT = (
    "set -e; f=$1; " + _TILDE + 'd=$(dirname -- "$f"); mkdir -p -- "$d"; '
    # mktemp creates the temporary file 0600 next to the target, so the final rename
    # is atomic and no partial file is ever visible under the final name.
    't=$(mktemp -- "$f.hpcjobs-tmp.XXXXXX"); trap \'rm -f -- "$t"\' EXIT; '
    'cat > "$t"; chmod "$2" -- "$t"; mv -f -- "$t" "$f"; trap - EXIT'
)

EXISTS_SCRIPT = "f=$1; " + _TILDE + 'test -e "$f"'

HOME_SCRIPT = 'printf %s "$HOME"'

# Runs "$@" and kills it (its whole process group, via setsid) once our stdin reaches
# EOF, i.e. when the client goes away.  Used where the transport cannot send a signal
# (system ssh): an abandoned `tail -f` must not linger on a login node.
WATCHDOG_SCRIPT = (
    "exec 3<&0 </dev/null; "
    'if command -v setsid >/dev/null 2>&1; then setsid "$@" 3<&- & else "$@" 3<&- & fi; '
    "p=$!; "
    '(cat <&3 >/dev/null 2>&1; kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null) '
    ">/dev/null 2>&1 & w=$!; exec 3<&-; "
    'wait "$p"; s=$?; kill "$w" 2>/dev/null; exit "$s"'
)


def quote_word(word: str) -> str:
    """shlex.quote, refusing NUL (which no argv can carry)."""
    if "\0" in word:
        raise ValueError("a command argument cannot contain a NUL byte")
    return shlex.quote(word)


def build_command(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """The shell command line that runs *argv* literally in the remote login shell.

    The first word is always quoted, so it is never taken for a shell keyword or an
    assignment; environment variables go through ``env NAME=VALUE`` because sshd
    refuses most ``setenv`` requests.  A *cwd* starting with ``~`` is relative to the
    remote home.
    """
    if not argv:
        raise ValueError("empty argv")
    words: list[str] = []
    if env:
        words.append("env")
        for k, v in env.items():
            if not _ENV_NAME.match(k):
                raise ValueError(f"invalid environment variable name {k!r}")
            words.append(quote_word(f"{k}={v}"))
        if "=" in argv[0]:
            raise ValueError(f"command name {argv[0]!r} contains '=' (env would take it for a variable)")
        words += [quote_word(a) for a in argv]
    else:
        first = argv[0]
        if "\0" in first:
            raise ValueError("a command argument cannot contain a NUL byte")
        words.append("'" + first.replace("'", "'\"'\"'") + "'")
        words += [quote_word(a) for a in argv[1:]]
    cmd = " ".join(words)
    if cwd:
        if cwd == "~":
            where = '"$HOME"'
        elif cwd.startswith("~/"):
            where = '"$HOME"/' + quote_word(cwd[2:])
        else:
            where = quote_word(cwd)
        cmd = f"cd {where} && {cmd}"
    return cmd


def read_file_argv(path: str, offset: int, limit: int | None) -> list[str]:
    """argv that prints *limit* bytes of *path* from *offset* (one round trip)."""
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError("offset and limit must be >= 0")
    return ["sh", "-c", READ_SCRIPT, "sh", path, str(offset), "" if limit is None else str(limit)]


def read_file_result(res: CommandResult, path: str, where: str) -> bytes:
    """The bytes read by :func:`read_file_argv`, or the matching exception."""
    if res.returncode == EXIT_NO_FILE:
        raise FileNotFoundError(path)
    if res.returncode == EXIT_IS_DIR:
        raise IsADirectoryError(path)
    if res.returncode != 0:
        if "ermission denied" in res.err:
            raise PermissionError(path)
        raise RuntimeFailure(f"cannot read {path} on {where}: {res.err.strip()}")
    return res.stdout


def write_file_argv(path: str, mode: int) -> list[str]:
    """argv that atomically writes its stdin to *path* with *mode*."""
    return ["sh", "-c", WRITE_SCRIPT, "sh", path, f"{mode & 0o7777:o}"]


def exists_argv(path: str) -> list[str]:
    """argv that exits 0 if *path* exists, 1 if not."""
    return ["sh", "-c", EXISTS_SCRIPT, "sh", path]


def put_tar_argv(remote_dir: str, *, gz: bool, prelude: str = "", postlude: str = "") -> list[str]:
    """argv that unpacks a tar stream on stdin into *remote_dir*, between two snippets.

    Inside *prelude*/*postlude*, ``$dir`` is the target directory (``~`` expanded).
    """
    script = (
        "set -e; f=$1; "
        + _TILDE
        + 'dir=$f; mkdir -p -- "$dir"\n'
        + (prelude.strip() + "\n" if prelude.strip() else "")
        + f'tar -x{"z" if gz else ""}f - --no-same-owner -C "$dir"\n'
        + (postlude.strip() + "\n" if postlude.strip() else "")
    )
    return ["bash", "-c", script, "hpcjobs-put-tar", remote_dir]


def read_head(stream: Readable, n: int = 2) -> bytes:
    """The first *n* bytes of *stream* (fewer only at EOF), to sniff gzip's magic."""
    head = b""
    while len(head) < n:
        chunk = stream.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def is_gzip(head: bytes) -> bool:
    """Whether *head* starts a gzip stream."""
    return head[:2] == b"\x1f\x8b"


class RemoteFiles(Transport):
    """File operations of a transport whose commands run in a remote shell (SSH flavours).

    Each is one command round trip; subclasses provide ``run`` and ``label``.
    """

    label: str

    def read_file(self, path: str, *, offset: int = 0, limit: int | None = None) -> bytes:
        """Return the bytes of *path* from *offset* (one round trip)."""
        return read_file_result(self.run(read_file_argv(path, offset, limit)), path, self.label)

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Atomically write *data* to *path* (mkdir -p, temporary file, rename)."""
        res = self.run(write_file_argv(path, mode), stdin=data)
        if res.returncode != 0:
            raise RuntimeFailure(f"cannot write {path} on {self.label}: {res.err.strip()}")

    def exists(self, path: str) -> bool:
        """Whether *path* exists on the remote host."""
        res = self.run(exists_argv(path))
        if res.returncode not in (0, 1):
            raise RuntimeFailure(f"cannot check {path} on {self.label}: {res.err.strip()}")
        return res.returncode == 0
