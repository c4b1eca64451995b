"""The transport interface.

Every side effect that touches the cluster (running ``sbatch``, reading a log,
writing a script, shipping a tar stream) goes through one :class:`Transport`.
``subprocess`` and ``paramiko`` appear only in its implementations.

Commands are always given as an argv list.  A remote implementation joins it with
:func:`shlex.quote`, so callers never build shell strings by hand; when a caller
really needs a shell (pipes, redirections), it passes ``["bash", "-c", script]``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class CommandResult:
    """What a finished command returned."""

    argv: list[str]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        """stderr decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stderr.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class TransportStats:
    """Counters a transport keeps, so tests and benchmarks can count round trips."""

    connections: int = 0
    commands: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    argv_log: list[list[str]] = field(default_factory=list)


class Transport(abc.ABC):
    """Runs commands and moves bytes on the machine where Slurm (or the local runner) lives."""

    #: short name for messages: "local" or "ssh:host"
    name: str = "transport"

    def __init__(self) -> None:
        self.stats = TransportStats()

    # -- commands -------------------------------------------------------------------
    @abc.abstractmethod
    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run *argv* to completion and return its result (never raises on non-zero exit).

        *env* entries are added to (not replacing) the remote login environment.
        Raises :class:`hpcjobs.errors.TransientError` when the transport itself fails
        (connection lost, timeout).
        """

    def run_streaming(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Iterator[bytes]:
        """Run *argv* and yield its stdout in chunks as they arrive (default: all at once)."""
        res = self.run(argv, stdin=stdin, env=env)
        if res.stdout:
            yield res.stdout

    # -- files ----------------------------------------------------------------------
    @abc.abstractmethod
    def read_file(self, path: str, *, offset: int = 0, limit: int | None = None) -> bytes:
        """Return the bytes of *path* from *offset* (``b""`` past the end).

        Raises FileNotFoundError if it does not exist.
        """

    @abc.abstractmethod
    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Atomically write *data* to *path* (creating parent directories)."""

    @abc.abstractmethod
    def exists(self, path: str) -> bool:
        """Whether *path* exists."""

    @property
    @abc.abstractmethod
    def home(self) -> str:
        """The home directory of the user on the target machine."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
