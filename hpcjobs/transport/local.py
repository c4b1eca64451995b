"""The local transport: commands and files on this machine (the login node, or the laptop)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from hpcjobs.errors import RuntimeFailure, TransientError
from hpcjobs.transport.base import CommandResult, Transport


class LocalTransport(Transport):
    """Runs commands with :mod:`subprocess` and reads/writes local files."""

    name = "local"

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        argv = list(argv)
        self.stats.commands += 1
        self.stats.argv_log.append(argv)
        full_env = None
        if env:
            full_env = dict(os.environ)
            full_env.update(env)
        try:
            proc = subprocess.run(
                argv,
                input=stdin,
                capture_output=True,
                env=full_env,
                cwd=cwd,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError:
            return CommandResult(argv, 127, b"", f"{argv[0]}: command not found\n".encode())
        except subprocess.TimeoutExpired as exc:
            raise TransientError(f"{argv[0]} did not answer within {timeout} s") from exc
        if stdin:
            self.stats.bytes_sent += len(stdin)
        self.stats.bytes_received += len(proc.stdout) + len(proc.stderr)
        return CommandResult(argv, proc.returncode, proc.stdout, proc.stderr)

    def run_streaming(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Iterator[bytes]:
        self.stats.commands += 1
        self.stats.argv_log.append(list(argv))
        full_env = dict(os.environ, **env) if env else None
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, stdout=subprocess.PIPE, env=full_env
        )
        try:
            if stdin and proc.stdin:
                proc.stdin.write(stdin)
                proc.stdin.close()
            assert proc.stdout is not None
            while True:
                chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]
                if not chunk:
                    break
                yield chunk
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def spawn_detached(
        self, argv: Sequence[str], *, log_path: str, cwd: str | None = None, env: Mapping[str, str] | None = None
    ) -> int:
        """Start *argv* in its own session, detached from this process; return its pid.

        The child outlives the CLI; stdout and stderr go to *log_path*.
        """
        self.stats.commands += 1
        self.stats.argv_log.append(list(argv))
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ, **env) if env else None
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=full_env,
                start_new_session=True,
                close_fds=True,
            )
        return proc.pid

    def read_file(self, path: str, *, offset: int = 0, limit: int | None = None) -> bytes:
        with open(path, "rb") as fh:
            if offset:
                fh.seek(offset)
            data = fh.read() if limit is None else fh.read(limit)
        self.stats.bytes_received += len(data)
        return data

    def write_file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, mode)
            os.replace(tmp, target)
        except OSError as exc:
            Path(tmp).unlink(missing_ok=True)
            raise RuntimeFailure(f"cannot write {path}: {exc.strerror}") from exc
        self.stats.bytes_sent += len(data)

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    @property
    def home(self) -> str:
        return str(Path.home())
