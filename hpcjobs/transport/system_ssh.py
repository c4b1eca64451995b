"""The SSH transport that drives the system ``ssh`` binary.

For setups paramiko cannot do (an OpenSSH ControlMaster the user opened through MFA,
GSSAPI/Kerberos, FIDO keys, host certificates, exotic ssh_config): the user's own
OpenSSH client, configuration and known_hosts decide everything, with

* one ControlMaster per process (``ControlMaster=auto``, ``ControlPath`` in a private
  0700 directory, ``ControlPersist=60``), so one authentication and ~20 ms per command
  instead of ~300 ms for a fresh ssh;
* ``StrictHostKeyChecking=yes``: unknown or changed host keys are refused, never
  added (OpenSSH itself handles ``@revoked`` and ``@cert-authority``);
* ``BatchMode=yes`` unless there is a terminal to prompt on, so a missing key fails
  fast instead of hanging on a password prompt nobody sees.

hpcjobs' own known_hosts file (``hpcjobs site trust``) is appended to the user's
UserKnownHostsFile list.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, Any

from hpcjobs.errors import HostKeyError, RuntimeFailure, TransientError, UserError
from hpcjobs.transport import known_hosts as kh
from hpcjobs.transport import remote_shell as rsh
from hpcjobs.transport.base import CommandResult

_CHUNK = 256 * 1024

# stderr of ssh itself (exit status 255) as opposed to a remote command exiting 255
_SSH_ERRORS = (
    "ssh: ",
    "Connection closed",
    "Connection reset",
    "Connection timed out",
    "Connection refused",
    "kex_exchange_identification",
    "Host key verification failed",
    "Permission denied (",
    "Could not resolve hostname",
    "mux_client",
    "ControlSocket",
    "Broken pipe",
    "client_loop",
    "Timeout, server",
    "No route to host",
    "channel_open",
)

_control_dir: str | None = None
_control_lock = threading.Lock()
#: control socket path -> ssh binary, for stopping the masters at exit
_masters: dict[str, str] = {}


def _private_dir() -> str:
    """A 0700 directory for this process' control sockets (short path: sun_path is ~108 bytes)."""
    global _control_dir
    with _control_lock:
        if _control_dir is None or not os.path.isdir(_control_dir):
            base = os.environ.get("XDG_RUNTIME_DIR")
            if not base or len(base) > 40 or not os.path.isdir(base):
                base = "/tmp"  # mkdtemp makes a private 0700 directory inside
            _control_dir = tempfile.mkdtemp(prefix="hpcjobs-ssh-", dir=base)
        return _control_dir


def close_masters() -> None:
    """Stop every ControlMaster this process started and remove their sockets (atexit)."""
    global _control_dir
    with _control_lock:
        masters = dict(_masters)
        _masters.clear()
        directory, _control_dir = _control_dir, None
    for path, ssh in masters.items():
        if os.path.exists(path):
            subprocess.run(
                [ssh, "-F", "/dev/null", "-o", f"ControlPath={path}", "-O", "exit", "hpcjobs-master"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
            )
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


atexit.register(close_masters)


def _have_tty() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def _write_all(f: IO[bytes], data: bytes) -> None:
    # Unbuffered pipe objects may accept fewer bytes than offered.
    view = memoryview(data)
    while view:
        n = f.write(view)
        view = view[n or 0 :] if n is not None else view


def _looks_like_ssh_error(stderr: str) -> bool:
    return any(marker in stderr for marker in _SSH_ERRORS)


class SystemSSHTransport(rsh.RemoteFiles):
    """Runs commands through the system ``ssh`` with a per-process ControlMaster.

    Takes the same :class:`hpcjobs.transport.ssh.SSHSettings` as the paramiko
    transport (any object with those attributes will do); ``prompter`` and
    ``use_agent`` are left to OpenSSH.
    """

    def __init__(self, settings: Any, *, ssh_binary: str = "ssh") -> None:
        super().__init__()
        self.settings = settings
        self.ssh = shutil.which(ssh_binary) or ssh_binary
        interactive = getattr(settings, "interactive", None)
        self.batch = interactive is False or (interactive is None and not _have_tty())
        self.host: str = settings.host
        self.name = f"ssh:{self.host}"
        self._opts = self._options()
        self._effective = self._ssh_g()
        self.control_path = self._effective.get("controlpath", "")
        self.label = (
            f"{self._effective.get('user', '?')}@{self._effective.get('hostname', self.host)}:{self._effective.get('port', '22')}"
        )
        self._home: str | None = None

    # -- ssh argv -----------------------------------------------------------------------
    def _known_hosts_option(self, user_files: Sequence[str]) -> list[str]:
        files = [*user_files, str(kh.hpcjobs_known_hosts())]
        return ["-o", "UserKnownHostsFile=" + " ".join(f'"{f}"' if " " in f else f for f in files)]

    def _options(self) -> list[str]:
        s = self.settings
        opts = [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={_private_dir()}/%C",
            "-o",
            "ControlPersist=60",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"BatchMode={'yes' if self.batch else 'no'}",
            "-o",
            "ForwardAgent=no",
            "-o",
            "ForwardX11=no",
            "-o",
            "ClearAllForwardings=yes",
            "-o",
            "LogLevel=ERROR",
            "-T",
        ]
        timeout = getattr(s, "connect_timeout", None)
        if timeout:
            opts += ["-o", f"ConnectTimeout={max(1, round(timeout))}"]
        keepalive = getattr(s, "keepalive", None)
        if keepalive:
            opts += ["-o", f"ServerAliveInterval={int(keepalive)}"]
        if getattr(s, "read_ssh_config", True) is False:
            opts += ["-F", "/dev/null"]
        elif getattr(s, "ssh_config", None):
            opts += ["-F", os.path.expanduser(os.fspath(s.ssh_config))]
        if getattr(s, "port", None):
            opts += ["-p", str(s.port)]
        if getattr(s, "user", None):
            opts += ["-l", s.user]
        if getattr(s, "identity_file", None):
            opts += ["-i", os.path.expanduser(s.identity_file)]
        if getattr(s, "proxy_jump", None):
            opts += ["-J", s.proxy_jump]
        known = getattr(s, "known_hosts", None)
        if known is not None:
            files = [os.fspath(known)] if isinstance(known, (str, os.PathLike)) else [os.fspath(k) for k in known]
            opts += ["-o", "UserKnownHostsFile=" + " ".join(f'"{f}"' if " " in f else f for f in files)]
        return opts

    def _ssh_g(self) -> dict[str, str]:
        """OpenSSH's effective configuration for the host (local, no network)."""
        try:
            res = subprocess.run(
                [self.ssh, *self._opts, "-G", "--", self.host],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
                check=False,
            )
        except FileNotFoundError:
            raise UserError(f"ssh client not found: {self.ssh}", hint="install OpenSSH or use transport: paramiko") from None
        if res.returncode != 0:
            raise UserError(f"ssh rejects the settings for {self.host}: {res.stderr.decode(errors='replace').strip()}")
        eff: dict[str, str] = {}
        for line in res.stdout.decode(errors="replace").splitlines():
            key, _, value = line.partition(" ")
            eff.setdefault(key.lower(), value)
        if getattr(self.settings, "known_hosts", None) is None:
            # Keep the user's (or config's) list and add hpcjobs' own trust file.
            self._opts += self._known_hosts_option(shlex.split(eff.get("userknownhostsfile", "~/.ssh/known_hosts")))
        return eff

    def _argv(self, command: str) -> list[str]:
        return [self.ssh, *self._opts, "--", self.host, command]

    # -- running ------------------------------------------------------------------------
    def _before(self) -> bool:
        """Whether this command will have to connect (no live master socket yet)."""
        fresh = not (self.control_path and os.path.exists(self.control_path))
        if fresh and self.control_path:
            _masters[self.control_path] = self.ssh
        return fresh

    def _check(self, argv: list[str], rc: int, stderr: bytes, fresh: bool) -> None:
        if fresh and rc != 255 and self.control_path and os.path.exists(self.control_path):
            self.stats.connections += 1
        if rc != 255:
            return
        err = stderr.decode("utf-8", "replace")
        if not _looks_like_ssh_error(err):
            return  # the remote command itself exited 255
        msg = err.strip().splitlines()[-1] if err.strip() else "ssh failed"
        if "Host key verification failed" in err or "REMOTE HOST IDENTIFICATION HAS CHANGED" in err or "REVOKED" in err:
            raise HostKeyError(
                f"ssh refused the host key of {self.label}: {err.strip()}",
                hint=(
                    f"check the fingerprint with the cluster's admins, then run "
                    f"`hpcjobs site trust {getattr(self.settings, 'site', None) or 'SITE'}`"
                ),
            )
        if "Permission denied" in err:
            raise UserError(
                f"SSH authentication failed for {self.label}: {msg}",
                hint="load your key into ssh-agent, or open a ControlMaster yourself first (MFA)",
            )
        if "Could not resolve hostname" in err:
            raise TransientError(f"cannot resolve {self.host}: {msg}", hint="check the host name")
        raise TransientError(f"ssh to {self.label} failed: {msg}")

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run *argv* on the remote host (see :meth:`Transport.run`)."""
        argv = list(argv)
        command = rsh.build_command(argv, env, cwd)
        self.stats.commands += 1
        self.stats.argv_log.append(argv)
        fresh = self._before()
        try:
            proc = subprocess.run(
                self._argv(command),
                input=stdin if stdin is not None else None,
                stdin=subprocess.DEVNULL if stdin is None else None,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TransientError(f"command timed out after {timeout} s on {self.label}: {shlex.join(argv)}") from None
        self.stats.bytes_sent += len(stdin or b"")
        self.stats.bytes_received += len(proc.stdout) + len(proc.stderr)
        self._check(argv, proc.returncode, proc.stderr, fresh)
        return CommandResult(argv=argv, returncode=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)

    def _popen(self, command: str, stdin: int | None) -> tuple[subprocess.Popen[bytes], threading.Thread, bytearray, bool]:
        fresh = self._before()
        # Unbuffered pipes: read(n) returns what is there, so chunks stream out live.
        proc = subprocess.Popen(self._argv(command), stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        err = bytearray()

        def drain() -> None:
            assert proc.stderr is not None
            while chunk := proc.stderr.read(_CHUNK):
                err.extend(chunk)

        t = threading.Thread(target=drain, daemon=True)
        t.start()
        return proc, t, err, fresh

    def run_streaming(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Iterator[bytes]:
        """Yield stdout chunks as they arrive.

        Without *stdin*, the command runs under a watchdog that kills it when this
        generator is closed early (an abandoned ``tail -f`` must not linger remotely).
        """
        argv = list(argv)
        self.stats.commands += 1
        self.stats.argv_log.append(argv)
        wrapped = argv if stdin is not None else ["sh", "-c", rsh.WATCHDOG_SCRIPT, "sh", *argv]
        proc, drainer, err, fresh = self._popen(rsh.build_command(wrapped, env), subprocess.PIPE)
        assert proc.stdout is not None and proc.stdin is not None
        finished = False
        try:
            if stdin is not None:
                _write_all(proc.stdin, stdin)
                self.stats.bytes_sent += len(stdin)
                proc.stdin.close()
            while chunk := proc.stdout.read(_CHUNK):
                self.stats.bytes_received += len(chunk)
                yield chunk
            rc = proc.wait()
            drainer.join(timeout=5)
            finished = True
            self._check(argv, rc, bytes(err), fresh)
        finally:
            if not finished:
                # Closing ssh's stdin is what tells the remote watchdog to stop the command.
                with contextlib.suppress(OSError):
                    proc.stdin.close()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    # -- files --------------------------------------------------------------------------

    @property
    def home(self) -> str:
        """The remote user's home directory (asked once)."""
        if self._home is None:
            res = self.run(["sh", "-c", rsh.HOME_SCRIPT])
            if res.returncode != 0 or not res.stdout:
                raise RuntimeFailure(f"cannot find the home directory on {self.label}: {res.err.strip()}")
            self._home = res.out
        return self._home

    # -- tar streams --------------------------------------------------------------------
    def put_tar(
        self,
        local_tar_stream: rsh.Readable,
        remote_dir: str,
        *,
        prelude: str = "",
        postlude: str = "",
        timeout: float | None = None,
    ) -> CommandResult:
        """Unpack a tar stream into *remote_dir* with one remote command (as the paramiko transport)."""
        head = rsh.read_head(local_tar_stream)
        argv = rsh.put_tar_argv(remote_dir, gz=rsh.is_gzip(head), prelude=prelude, postlude=postlude)
        self.stats.commands += 1
        self.stats.argv_log.append(argv)
        proc, drainer, err, fresh = self._popen(rsh.build_command(argv), subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        out = bytearray()

        def feed() -> None:
            assert proc.stdin is not None
            try:
                chunk = head
                while chunk:
                    _write_all(proc.stdin, chunk)
                    self.stats.bytes_sent += len(chunk)
                    chunk = local_tar_stream.read(_CHUNK)
            except BrokenPipeError:
                pass  # the remote side stopped reading; its exit status says why
            finally:
                with contextlib.suppress(OSError):
                    proc.stdin.close()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while chunk := proc.stdout.read(_CHUNK):
            out.extend(chunk)
        try:
            rc = proc.wait(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise TransientError(f"upload to {self.label}:{remote_dir} timed out") from None
        feeder.join(timeout=5)
        drainer.join(timeout=5)
        self.stats.bytes_received += len(out) + len(err)
        self._check(argv, rc, bytes(err), fresh)
        return CommandResult(argv=argv, returncode=rc, stdout=bytes(out), stderr=bytes(err))

    def get_tar(self, remote_cmd_argv: Sequence[str]) -> IO[bytes]:
        """Run a command whose stdout is a tar stream and return that stream.

        Reading to the end raises :class:`RuntimeFailure` if the command failed.
        """
        argv = list(remote_cmd_argv)
        self.stats.commands += 1
        self.stats.argv_log.append(argv)
        proc, drainer, err, fresh = self._popen(rsh.build_command(argv), subprocess.DEVNULL)
        return io.BufferedReader(_ProcReader(self, proc, drainer, err, argv, fresh), buffer_size=_CHUNK)


class _ProcReader(io.RawIOBase):
    """stdout of an ssh process; raises at EOF if the remote command failed."""

    def __init__(
        self,
        owner: SystemSSHTransport,
        proc: subprocess.Popen[bytes],
        drainer: threading.Thread,
        err: bytearray,
        argv: list[str],
        fresh: bool,
    ) -> None:
        super().__init__()
        self._owner, self._proc, self._drainer, self._err, self._argv, self._fresh = owner, proc, drainer, err, argv, fresh
        self._done = False
        self.returncode: int | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._done:
            return 0
        assert self._proc.stdout is not None
        data = self._proc.stdout.read(len(b))
        if data:
            self._owner.stats.bytes_received += len(data)
            b[: len(data)] = data
            return len(data)
        self._done = True
        self.returncode = self._proc.wait()
        self._drainer.join(timeout=5)
        self._owner._check(self._argv, self.returncode, bytes(self._err), self._fresh)
        if self.returncode != 0:
            raise RuntimeFailure(
                f"remote command {shlex.join(self._argv)} failed with exit code {self.returncode}: "
                f"{bytes(self._err).decode('utf-8', 'replace').strip()}"
            )
        return 0

    def close(self) -> None:
        if not self.closed and self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        super().close()
