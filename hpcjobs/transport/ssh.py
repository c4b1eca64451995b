"""The SSH transport, on paramiko.

One SSH connection per process and target: every command and transfer of a CLI run
multiplexes channels over it (a new connection costs a TCP + key exchange + auth, and
possibly an MFA prompt; a channel costs one round trip).  Host keys are checked
strictly, by hpcjobs' own known_hosts parser, *before* any authentication is attempted,
so no credential is ever offered to an unverified server.

This module imports paramiko at import time; import it lazily (only when a remote site
is actually used) so that ``hpcjobs --help`` stays fast.

Remote commands run through the user's login shell, which must be POSIX-compatible
(sh, bash, zsh, ksh); argv words are single-quoted with :func:`shlex.quote`.
"""

from __future__ import annotations

import atexit
import getpass
import io
import logging
import os
import re
import select
import shlex
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple, Protocol

import paramiko
from paramiko.common import MSG_CHANNEL_REQUEST, cMSG_CHANNEL_REQUEST

from hpcjobs.errors import HostKeyError, RuntimeFailure, TransientError, UserError
from hpcjobs.transport import known_hosts as kh
from hpcjobs.transport import remote_shell as rsh
from hpcjobs.transport.base import CommandResult
from hpcjobs.transport.remote_shell import build_command

log = logging.getLogger(__name__)
# paramiko logs every lost connection (with a traceback) at ERROR; with no handler set,
# Python would print that on the CLI's stderr.  We report those failures ourselves, once.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

#: ``prompter(prompt, echo) -> answer``: asks the human for a password / one-time code
Prompter = Callable[[str, bool], str]

_DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_CHUNK = 256 * 1024


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


# -- settings ----------------------------------------------------------------------------
@dataclass
class SSHSettings:
    """How to reach a cluster login node.

    Unset fields fall back to ``~/.ssh/config`` (read with paramiko's SSHConfig), then
    to OpenSSH's defaults.  Explicit fields win over the config file, like ssh's command
    line options do.
    """

    #: host name or a ``Host`` alias of the ssh config
    host: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    #: ``user@bastion:2201,other`` (hops in order; each resolved through the ssh config)
    proxy_jump: str | None = None
    #: known_hosts file(s); None = ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts and
    #: hpcjobs' own file (plus UserKnownHostsFile from the ssh config)
    known_hosts: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None
    #: ssh config file; None = ~/.ssh/config when it exists
    ssh_config: str | os.PathLike[str] | None = None
    read_ssh_config: bool = True
    connect_timeout: float = 15.0
    #: seconds between keepalive packets (0 = off)
    keepalive: int = 30
    use_agent: bool = True
    #: may we prompt for passwords / codes?  None = only when a terminal is available
    interactive: bool | None = None
    #: asks the human (default: the controlling terminal via getpass)
    prompter: Prompter | None = None
    #: the hpcjobs site name, used in hints (``hpcjobs site trust SITE``)
    site: str | None = None

    @classmethod
    def from_obj(cls, obj: Any, *, site: str | None = None) -> SSHSettings:
        """Build settings from any object with the same attribute names (e.g. a site model)."""
        kwargs: dict[str, Any] = {}
        for name in cls.__dataclass_fields__:
            if hasattr(obj, name):
                kwargs[name] = getattr(obj, name)
        if site is not None:
            kwargs["site"] = site
        return cls(**kwargs)


@dataclass(frozen=True)
class Endpoint:
    """One resolved SSH server: a jump host or the target."""

    alias: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    known_hosts_files: tuple[str, ...] = ()
    #: the name looked up in known_hosts (HostKeyAlias, else HostName)
    key_host: str = ""
    proxy_command: str | None = None
    identities_only: bool = False

    @property
    def label(self) -> str:
        """``user@host:port`` for messages."""
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def pool_key(self) -> tuple[str, int, str]:
        """The key of the process-wide connection pool."""
        return (self.hostname, self.port, self.user)


_CONFIG_CACHE: dict[tuple[str, float], paramiko.SSHConfig] = {}


def _load_ssh_config(settings: SSHSettings) -> paramiko.SSHConfig | None:
    if not settings.read_ssh_config:
        return None
    path = Path(os.path.expanduser(os.fspath(settings.ssh_config or "~/.ssh/config")))
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        if settings.ssh_config is not None:
            raise UserError(f"ssh config file not found: {path}") from None
        return None
    key = (str(path), mtime)
    cfg = _CONFIG_CACHE.get(key)
    if cfg is None:
        try:
            cfg = paramiko.SSHConfig.from_path(str(path))
        except Exception as e:  # noqa: BLE001 - paramiko raises assorted errors on bad syntax
            raise UserError(f"cannot parse ssh config {path}: {e}") from None
        _CONFIG_CACHE[key] = cfg
    return cfg


class JumpSpec(NamedTuple):
    """One hop of a ProxyJump string."""

    user: str | None
    host: str
    port: int | None


def parse_proxy_jump(spec: str | None) -> list[JumpSpec]:
    """Split ``user@bastion:2201,ssh://other,[::1]:22`` into hops (``none`` = no hops)."""
    if not spec or spec.strip().lower() == "none":
        return []
    hops: list[JumpSpec] = []
    for raw in spec.split(","):
        item = raw.strip()
        if not item:
            continue
        if item.startswith("ssh://"):
            item = item[len("ssh://") :].rstrip("/")
        user: str | None = None
        if "@" in item:
            user, item = item.rsplit("@", 1)
        port: int | None = None
        if item.startswith("["):
            end = item.find("]")
            if end < 0:
                raise UserError(f"bad ProxyJump host '{raw.strip()}'")
            host, rest = item[1:end], item[end + 1 :]
            if rest.startswith(":"):
                port = _parse_port(rest[1:], raw)
        elif item.count(":") == 1:
            host, p = item.split(":")
            port = _parse_port(p, raw)
        else:
            host = item
        if not host:
            raise UserError(f"bad ProxyJump host '{raw.strip()}'")
        hops.append(JumpSpec(user or None, host, port))
    return hops


def _parse_port(text: str, context: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise UserError(f"bad port in '{context.strip()}'") from None
    if not 1 <= port <= 65535:
        raise UserError(f"port out of range in '{context.strip()}'")
    return port


def _known_hosts_files(settings: SSHSettings, conf: Mapping[str, Any]) -> tuple[str, ...]:
    kh_setting = settings.known_hosts
    if kh_setting is not None:
        if isinstance(kh_setting, (str, os.PathLike)):
            return (os.fspath(kh_setting),)
        return tuple(os.fspath(p) for p in kh_setting)
    files: list[str] = []
    user_files = conf.get("userknownhostsfile")
    if user_files:
        files += [os.path.expanduser(p) for p in str(user_files).split()]
    else:
        files.append(str(kh.default_user_known_hosts()))
    files.append("/etc/ssh/ssh_known_hosts")
    files.append(str(kh.hpcjobs_known_hosts()))
    return tuple(files)


def _endpoint(
    settings: SSHSettings,
    cfg: paramiko.SSHConfig | None,
    alias: str,
    *,
    user: str | None,
    port: int | None,
    explicit_identity: str | None,
) -> tuple[Endpoint, str | None]:
    conf: Mapping[str, Any] = cfg.lookup(alias) if cfg is not None else {}
    hostname = str(conf.get("hostname") or alias)
    real_user = user or conf.get("user") or settings.user or getpass.getuser()
    real_port = port or (int(conf["port"]) if conf.get("port") else None) or 22
    ids: list[str] = []
    if explicit_identity:
        ids.append(os.path.expanduser(explicit_identity))
    for p in conf.get("identityfile") or []:
        p = os.path.expanduser(p)
        if p not in ids:
            ids.append(p)
    only = str(conf.get("identitiesonly", "no")).lower() == "yes"
    ep = Endpoint(
        alias=alias,
        hostname=hostname,
        port=real_port,
        user=str(real_user),
        identity_files=tuple(ids),
        known_hosts_files=_known_hosts_files(settings, conf),
        key_host=str(conf.get("hostkeyalias") or hostname),
        proxy_command=(
            str(conf["proxycommand"]) if conf.get("proxycommand") and str(conf["proxycommand"]).lower() != "none" else None
        ),
        identities_only=only,
    )
    jump = conf.get("proxyjump")
    return ep, (str(jump) if jump else None)


def resolve_chain(settings: SSHSettings) -> list[Endpoint]:
    """Resolve the target and its jump hosts through the ssh config: hops first, target last.

    An explicit ``proxy_jump`` replaces the config's ProxyJump for the target.  The user
    of a hop is, in order: ``user@`` in the jump spec, the hop's ``User`` in the ssh
    config, the site's user, the local user name.  The first hop's own ProxyJump (from
    the config) is followed recursively, as OpenSSH does.
    """
    cfg = _load_ssh_config(settings)
    target, cfg_jump = _endpoint(
        settings,
        cfg,
        settings.host,
        user=settings.user,
        port=settings.port,
        explicit_identity=settings.identity_file,
    )
    jump_spec = settings.proxy_jump if settings.proxy_jump is not None else cfg_jump
    chain: list[Endpoint] = [target]
    pending = parse_proxy_jump(jump_spec)
    seen: set[tuple[str, int | None]] = set()
    while pending:
        if len(chain) > 10:
            raise UserError("ProxyJump chain is longer than 10 hops (a loop in the ssh config?)")
        # Later hops are resolved first because each is prepended to the chain.
        hop = pending.pop()
        if (hop.host, hop.port) in seen:
            raise UserError(f"ProxyJump loop through '{hop.host}'")
        seen.add((hop.host, hop.port))
        ep, hop_jump = _endpoint(
            settings,
            cfg,
            hop.host,
            user=hop.user,
            port=hop.port,
            explicit_identity=settings.identity_file,
        )
        chain.insert(0, ep)
        if not pending and hop_jump:
            pending = parse_proxy_jump(hop_jump)
    if any(ep.proxy_command for ep in chain[1:]):
        raise UserError(
            "ProxyCommand on a host that is reached through ProxyJump is not supported",
            hint="use transport: system in the site's ssh settings",
        )
    return chain


# -- host keys ---------------------------------------------------------------------------
def _trust_hint(site: str | None) -> str:
    return (
        f"check the fingerprint with the cluster's admins, then run "
        f"`hpcjobs site trust {site or 'SITE'}` (or add the key to ~/.ssh/known_hosts)"
    )


def host_key_error(verdict: kh.HostKeyVerdict, *, site: str | None = None, key_name: str | None = None) -> HostKeyError:
    """The user-facing error for a host key that is not trusted."""
    where = f"{verdict.host}:{verdict.port}"
    shown = key_name or verdict.key_type
    if verdict.status is kh.HostKeyStatus.REVOKED:
        lines = ", ".join(e.where for e in verdict.entries)
        return HostKeyError(
            f"REVOKED host key presented by {where}: {shown} {verdict.fingerprint} "
            f"is marked @revoked ({lines}); refusing to connect",
            hint="the server's key is compromised or retired; ask the cluster's admins",
        )
    if verdict.status is kh.HostKeyStatus.CHANGED:
        old = "; ".join(f"{e.key_type} {e.fingerprint} ({e.where})" for e in verdict.entries)
        return HostKeyError(
            f"HOST KEY CHANGED for {where}: known {old}, but the server now presents "
            f"{shown} {verdict.fingerprint}. Someone may be intercepting the connection "
            f"(or the host was reinstalled); refusing to connect",
            hint=(
                f"if the admins confirm the new key, delete the old line "
                f"({verdict.entries[0].where}) and run `hpcjobs site trust {site or 'SITE'}`"
            ),
        )
    other = f" (known key types for this host: {', '.join(verdict.other_types)})" if verdict.other_types else ""
    return HostKeyError(
        f"unknown SSH host key for {where}: {shown} {verdict.fingerprint}{other}; refusing to connect",
        hint=_trust_hint(site),
    )


def _split_host_port(hostname: str) -> tuple[str, int]:
    m = re.fullmatch(r"\[(.+)\]:(\d+)", hostname)
    if m:
        return m.group(1), int(m.group(2))
    return hostname, 22


class RefuseUnknownHostKeys(paramiko.MissingHostKeyPolicy):
    """A paramiko policy for :class:`paramiko.SSHClient` that never trusts an unknown key.

    hpcjobs itself verifies keys before authentication and does not use SSHClient;
    this policy exists for any code that does, so that it fails exactly like
    the transport does (never AutoAddPolicy/WarningPolicy).
    """

    def __init__(self, site: str | None = None) -> None:
        self.site = site

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        """Always raise :class:`HostKeyError` naming the host, key type and fingerprint."""
        host, port = _split_host_port(hostname)
        blob = key.asbytes()
        verdict = kh.HostKeyVerdict(
            status=kh.HostKeyStatus.UNKNOWN,
            host=host,
            port=port,
            key_type=kh.blob_key_type(blob),
            fingerprint=kh.fingerprint_sha256(blob),
        )
        raise host_key_error(verdict, site=self.site)


def _ordered_key_types(known_types: Sequence[str], available: Sequence[str]) -> list[str]:
    # Offer the algorithms of keys we already know first, so that a server with
    # several host keys presents one we can check (as OpenSSH orders them).
    first: list[str] = []
    for t in known_types:
        names = ["rsa-sha2-512", "rsa-sha2-256"] if t == "ssh-rsa" else [t]
        first += [n for n in names if n in available and n not in first]
    return first + [a for a in available if a not in first]


# -- prompting / auth memory --------------------------------------------------------------
def _have_tty() -> bool:
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def _tty_prompt(prompt: str, echo: bool) -> str:
    if not echo:
        return getpass.getpass(prompt)
    with open("/dev/tty", "r+", encoding="utf-8") as tty:
        tty.write(prompt)
        tty.flush()
        return tty.readline().rstrip("\n")


@dataclass
class _AuthMemory:
    """What the human told us for one (host, port, user), kept for the process' life."""

    answers: dict[str, str] = field(default_factory=dict)
    passphrases: dict[str, str] = field(default_factory=dict)
    prompted: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_AUTH_MEMORY: dict[tuple[str, int, str], _AuthMemory] = {}


# -- connections -------------------------------------------------------------------------
class _Connection:
    """A live, authenticated paramiko transport (plus the jump transports under it)."""

    def __init__(self, transport: paramiko.Transport, hops: list[paramiko.Transport], label: str) -> None:
        self.transport = transport
        self.hops = hops
        self.label = label
        self.pid = os.getpid()
        self.home: str | None = None

    def alive(self) -> bool:
        return self.pid == os.getpid() and self.transport.is_active()

    def close(self) -> None:
        if self.pid != os.getpid():
            # A forked child must not send on its parent's socket; just drop it.
            return
        for t in [self.transport, *reversed(self.hops)]:
            try:
                t.close()
            except Exception as e:  # noqa: BLE001 - closing is best effort
                log.debug("closing %s: %s", self.label, e)


_POOL: dict[tuple[str, int, str], _Connection] = {}
_POOL_LOCK = threading.Lock()
_KEY_LOCKS: dict[tuple[str, int, str], threading.Lock] = {}


def close_pool() -> None:
    """Close every pooled connection (called at exit; tests call it between cases)."""
    with _POOL_LOCK:
        conns = list(_POOL.values())
        _POOL.clear()
    for c in conns:
        c.close()


def forget_credentials() -> None:
    """Drop cached prompt answers and passphrases (tests use this)."""
    _AUTH_MEMORY.clear()


atexit.register(close_pool)


def _socket_to(ep: Endpoint, timeout: float, keepalive: int = 0) -> Any:
    if ep.proxy_command:
        try:
            return paramiko.ProxyCommand(ep.proxy_command)
        except Exception as e:  # noqa: BLE001
            raise TransientError(f"ProxyCommand for {ep.alias} failed: {e}") from None
    try:
        sock = socket.create_connection((ep.hostname, ep.port), timeout=timeout)
    except socket.gaierror as e:
        raise TransientError(
            f"cannot resolve host name '{ep.hostname}': {e.strerror or e}",
            hint="check the host name (and any Host alias in ~/.ssh/config)",
        ) from None
    except OSError as e:
        raise TransientError(f"cannot connect to {ep.hostname}:{ep.port}: {e.strerror or e}") from None
    # Nagle's algorithm meets delayed ACKs on small SSH packets: ~40 ms per command
    # without this (measured), ~1 ms with it.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _tcp_keepalive(sock, keepalive)
    return sock


def _tcp_keepalive(sock: socket.socket, interval: int) -> None:
    # paramiko's keepalive packets expect no reply, so they never notice a peer that
    # vanished; the kernel does, with TCP keepalives and a bound on unacknowledged
    # data, so a dead network turns into an error instead of a hang.
    if interval <= 0:
        return
    opts = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPIDLE", None), interval),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPINTVL", None), max(1, interval // 3)),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_KEEPCNT", None), 3),
        (socket.IPPROTO_TCP, getattr(socket, "TCP_USER_TIMEOUT", None), interval * 3 * 1000),
    ]
    for level, name, value in opts:
        if name is None:
            continue
        try:
            sock.setsockopt(level, name, value)
        except OSError as e:
            log.debug("setsockopt %s: %s", name, e)


def _install_exit_signal_handler(t: paramiko.Transport) -> None:
    # paramiko ignores "exit-signal", leaving a killed command indistinguishable from
    # a lost connection (-1).  Record the signal as -signum (subprocess' convention).
    table = dict(getattr(type(t), "_channel_handler_table", {}))
    msg_request = MSG_CHANNEL_REQUEST
    original = table.get(msg_request)
    if original is None:
        return

    def handle(chan: paramiko.Channel, m: paramiko.Message) -> None:
        packet = getattr(m, "packet", None)
        pos = packet.tell() if packet is not None else None
        try:
            key = m.get_text()
            if key == "exit-signal":
                m.get_boolean()
                name = m.get_text()
                signum = getattr(signal, "SIG" + name, None)
                chan.exit_status = -int(signum) if signum is not None else -1
                chan.status_event.set()
                return
        except Exception as e:  # noqa: BLE001 - fall back to paramiko's own handling
            log.debug("exit-signal parsing failed: %s", e)
        if packet is not None and pos is not None:
            packet.seek(pos)
        original(chan, m)

    table[msg_request] = handle
    t._channel_handler_table = table  # type: ignore[attr-defined]


def _start_verified(sock: Any, ep: Endpoint, settings: SSHSettings) -> paramiko.Transport:
    """SSH handshake over *sock*, then the host key check.  No authentication yet."""
    known = kh.KnownHosts.load(ep.known_hosts_files)
    t = paramiko.Transport(sock)
    t.banner_timeout = settings.connect_timeout
    t.handshake_timeout = settings.connect_timeout
    t.auth_timeout = settings.connect_timeout
    sec = t.get_security_options()
    sec.key_types = _ordered_key_types(known.known_key_types(ep.key_host, ep.port), list(sec.key_types))
    _install_exit_signal_handler(t)
    try:
        t.start_client(timeout=settings.connect_timeout)
        key = t.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as e:
        t.close()
        raise TransientError(f"SSH handshake with {ep.hostname}:{ep.port} failed: {e}") from None
    verdict = known.check(ep.key_host, ep.port, key.asbytes())
    if verdict.status is not kh.HostKeyStatus.OK:
        t.close()
        raise host_key_error(verdict, site=settings.site)
    if settings.keepalive:
        t.set_keepalive(settings.keepalive)
    return t


def _check_key_file_mode(path: str) -> None:
    if os.name != "posix":
        return
    st = os.stat(path)
    if st.st_mode & 0o077:
        raise UserError(
            f"private key {path} is accessible by other users (mode {stat.S_IMODE(st.st_mode):04o}); refusing to use it",
            hint=f"chmod 600 {shlex.quote(path)}",
        )


def _can_prompt(settings: SSHSettings) -> bool:
    if settings.interactive is False:
        return False
    if settings.prompter is not None:
        return True
    return _have_tty()


def _prompt(settings: SSHSettings, prompt: str, echo: bool) -> str:
    fn = settings.prompter or _tty_prompt
    return fn(prompt, echo)


def _load_key_file(path: str, ep: Endpoint, settings: SSHSettings, mem: _AuthMemory, notes: list[str]) -> paramiko.PKey | None:
    _check_key_file_mode(path)
    passphrase = mem.passphrases.get(path)
    try:
        return paramiko.PKey.from_path(path, passphrase)
    except paramiko.PasswordRequiredException:
        pass
    except (paramiko.SSHException, ValueError, OSError) as e:
        notes.append(f"{path}: unusable ({e})")
        return None
    if not _can_prompt(settings):
        notes.append(f"{path}: encrypted and no terminal to ask for its passphrase")
        return None
    with mem.lock:
        passphrase = _prompt(settings, f"Enter passphrase for key '{path}': ", False)
        mem.passphrases[path] = passphrase
        mem.prompted = True
    try:
        return paramiko.PKey.from_path(path, passphrase)
    except (paramiko.SSHException, ValueError, OSError) as e:
        mem.passphrases.pop(path, None)
        notes.append(f"{path}: could not decrypt ({e})")
        return None


def _authenticate(t: paramiko.Transport, ep: Endpoint, settings: SSHSettings) -> None:
    """Agent keys, then key files, then keyboard-interactive/password (prompted once)."""
    user = ep.user
    mem = _AUTH_MEMORY.setdefault(ep.pool_key, _AuthMemory())
    # Unknown until the server tells us.  Keys are tried straight away (no "none"
    # probe first): that saves a round trip on the usual path.
    allowed: list[str] | None = None
    tried: list[str] = []
    notes: list[str] = []

    def attempt(key: paramiko.PKey, what: str) -> bool:
        nonlocal allowed
        tried.append(what)
        try:
            remaining = t.auth_publickey(user, key)
        except paramiko.BadAuthenticationType as e:
            allowed = list(e.allowed_types)
            return False
        except paramiko.AuthenticationException:
            return False
        except paramiko.SSHException as e:
            if not t.is_active():
                raise TransientError(f"SSH authentication with {ep.label} failed: {e}") from None
            notes.append(f"{what}: {e}")
            return False
        if t.is_authenticated():
            return True
        # Partial success (e.g. AuthenticationMethods publickey,keyboard-interactive).
        allowed = list(remaining)
        return True

    def publickey_allowed() -> bool:
        return allowed is None or "publickey" in allowed

    def done() -> bool:
        return t.is_authenticated() or not publickey_allowed()

    if settings.use_agent and not ep.identities_only:
        try:
            agent: paramiko.Agent | None = paramiko.Agent()
            agent_keys = list(agent.get_keys()) if agent is not None else []
        except (paramiko.SSHException, OSError) as e:
            notes.append(f"ssh-agent: {e}")
            agent, agent_keys = None, []
        try:
            for n, akey in enumerate(agent_keys, 1):
                if not publickey_allowed():
                    break
                if attempt(akey, f"ssh-agent key {n} ({akey.fingerprint})") and done():
                    break
        finally:
            if agent is not None:
                agent.close()
    if t.is_authenticated():
        return

    if publickey_allowed():
        files = list(ep.identity_files)
        if settings.identity_file and not os.path.exists(os.path.expanduser(settings.identity_file)):
            raise UserError(f"identity_file not found: {settings.identity_file}")
        if not files:
            files = [p for p in map(os.path.expanduser, _DEFAULT_IDENTITIES) if os.path.exists(p)]
        for path in files:
            if not publickey_allowed():
                break
            if not os.path.exists(path):
                notes.append(f"{path}: not found")
                continue
            key = _load_key_file(path, ep, settings, mem, notes)
            if key is not None and attempt(key, path) and done():
                break
    if t.is_authenticated():
        return

    if allowed is None:
        try:
            t.auth_none(user)
            return
        except paramiko.BadAuthenticationType as e:
            allowed = list(e.allowed_types)
        except paramiko.SSHException as e:
            raise TransientError(f"SSH authentication with {ep.label} failed: {e}") from None

    if "keyboard-interactive" in allowed or "password" in allowed:
        _interactive_auth(t, ep, settings, mem, allowed, tried)
        if t.is_authenticated():
            return
    detail = f"; tried: {', '.join(tried)}" if tried else "; no key was available to try"
    if notes:
        detail += f" ({'; '.join(notes)})"
    raise UserError(
        f"SSH authentication failed for {ep.label} (server accepts: {', '.join(allowed)}){detail}",
        hint="load your key into ssh-agent (ssh-add) or set identity_file in the site's ssh settings",
    )


def _interactive_auth(
    t: paramiko.Transport,
    ep: Endpoint,
    settings: SSHSettings,
    mem: _AuthMemory,
    allowed: list[str],
    tried: list[str],
) -> None:
    user = ep.user
    # At most one round of prompts per process and server: later connections (a
    # reconnect) replay the answers, and never ask again.
    replay_only = mem.prompted
    if replay_only and not mem.answers:
        raise UserError(
            f"{ep.label} asks for a password or code again, but the answers given earlier in this run "
            f"were not accepted; hpcjobs prompts at most once per run",
            hint="run the command again",
        )
    if not replay_only and not _can_prompt(settings):
        raise UserError(
            f"{ep.label} asks for a password or one-time code, but there is no terminal to ask on",
            hint=(
                "run the command in a terminal, load a key into ssh-agent, or use "
                "transport: system with an OpenSSH ControlMaster you opened yourself"
            ),
        )
    missing: list[str] = []

    def answer(prompt: str, echo: bool) -> str:
        if prompt in mem.answers:
            return mem.answers[prompt]
        if replay_only:
            # A prompt we have no answer for (say, a fresh one-time code after a
            # reconnect) is refused rather than asked.
            missing.append(prompt.strip())
            return ""
        value = _prompt(settings, prompt, echo)
        mem.answers[prompt] = value
        return value

    def handler(title: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        if (title or instructions) and not replay_only and settings.prompter is None:
            try:
                with open("/dev/tty", "w", encoding="utf-8") as tty:
                    tty.write("\n".join(x for x in (title, instructions) if x) + "\n")
            except OSError:
                pass
        return [answer(p, echo) for p, echo in prompts]

    with mem.lock:
        try:
            if "keyboard-interactive" in allowed:
                tried.append("keyboard-interactive")
                t.auth_interactive(user, handler)
            elif "password" in allowed:
                tried.append("password")
                t.auth_password(user, answer(f"{user}@{ep.hostname}'s password: ", False))
        except paramiko.AuthenticationException:
            pass
        except paramiko.SSHException as e:
            raise TransientError(f"SSH authentication with {ep.label} failed: {e}") from None
        finally:
            mem.prompted = True
        if not t.is_authenticated():
            # Wrong answers must not be replayed on the next connection.
            mem.answers.clear()
    if missing:
        raise UserError(
            f"{ep.label} asked for credentials again ({', '.join(missing)}); hpcjobs prompts at most once per run",
            hint="run the command again",
        )


def _connect_chain(chain: list[Endpoint], settings: SSHSettings) -> _Connection:
    hops: list[paramiko.Transport] = []
    prev: paramiko.Transport | None = None
    try:
        for i, ep in enumerate(chain):
            if prev is None:
                sock = _socket_to(ep, settings.connect_timeout, settings.keepalive)
            else:
                try:
                    sock = prev.open_channel(
                        "direct-tcpip",
                        (ep.hostname, ep.port),
                        ("127.0.0.1", 0),
                        timeout=settings.connect_timeout,
                    )
                except (paramiko.SSHException, OSError, EOFError) as e:
                    raise TransientError(
                        f"jump host {chain[i - 1].label} could not open a connection to {ep.hostname}:{ep.port}: {e}"
                    ) from None
            t = _start_verified(sock, ep, settings)
            try:
                _authenticate(t, ep, settings)
            except BaseException:
                t.close()
                raise
            if i < len(chain) - 1:
                hops.append(t)
            prev = t
    except BaseException:
        for h in reversed(hops):
            h.close()
        raise
    assert prev is not None
    return _Connection(prev, hops, chain[-1].label)


# -- host key fetching / trusting ---------------------------------------------------------
class HostKey(NamedTuple):
    """A server's public host key."""

    key_type: str
    base64: str
    fingerprint: str


@dataclass
class HostKeyCheck:
    """The state of one hop's host key (see :func:`check_host_keys`)."""

    host: str
    port: int
    key: HostKey
    status: kh.HostKeyStatus
    verdict: kh.HostKeyVerdict
    known_hosts_files: tuple[str, ...]


def _probe(sock: Any, ep: Endpoint, settings: SSHSettings) -> tuple[paramiko.Transport, HostKey, kh.HostKeyVerdict]:
    known = kh.KnownHosts.load(ep.known_hosts_files)
    t = paramiko.Transport(sock)
    t.banner_timeout = settings.connect_timeout
    sec = t.get_security_options()
    sec.key_types = _ordered_key_types(known.known_key_types(ep.key_host, ep.port), list(sec.key_types))
    try:
        t.start_client(timeout=settings.connect_timeout)
        key = t.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as e:
        t.close()
        raise TransientError(f"SSH handshake with {ep.hostname}:{ep.port} failed: {e}") from None
    blob = key.asbytes()
    hk = HostKey(kh.blob_key_type(blob), key.get_base64(), kh.fingerprint_sha256(blob))
    return t, hk, known.check(ep.key_host, ep.port, blob)


def check_host_keys(settings: SSHSettings) -> list[HostKeyCheck]:
    """Fetch and judge the host key of every hop, then the target, in order.

    The walk stops after the first hop whose key is not trusted (going through it
    would mean authenticating to an unverified server), so the last element is either
    the target with status OK, or the hop the user must decide about.  Used by
    ``hpcjobs site trust``: trust that hop with :func:`trust_host_key`, and call again.
    """
    chain = resolve_chain(settings)
    out: list[HostKeyCheck] = []
    opened: list[paramiko.Transport] = []
    try:
        prev: paramiko.Transport | None = None
        for i, ep in enumerate(chain):
            if prev is None:
                sock = _socket_to(ep, settings.connect_timeout, settings.keepalive)
            else:
                try:
                    sock = prev.open_channel(
                        "direct-tcpip",
                        (ep.hostname, ep.port),
                        ("127.0.0.1", 0),
                        timeout=settings.connect_timeout,
                    )
                except (paramiko.SSHException, OSError, EOFError) as e:
                    raise TransientError(f"jump host {chain[i - 1].label} could not reach {ep.hostname}:{ep.port}: {e}") from None
            t, hk, verdict = _probe(sock, ep, settings)
            opened.append(t)
            out.append(HostKeyCheck(ep.key_host, ep.port, hk, verdict.status, verdict, ep.known_hosts_files))
            if verdict.status is not kh.HostKeyStatus.OK or i == len(chain) - 1:
                break
            _authenticate(t, ep, settings)
            prev = t
    finally:
        for t in reversed(opened):
            t.close()
    return out


def fetch_host_key(
    host: str,
    port: int | None = None,
    *,
    proxy_jump: str | None = None,
    settings: SSHSettings | None = None,
) -> HostKey:
    """Return ``(key_type, base64, fingerprint)`` of the host key *host* presents.

    No authentication happens with *host* itself.  Jump hosts (``proxy_jump``, or the
    ssh config's) must already be trusted, since they are logged into.  *host* may be
    a Host alias of the ssh config.
    """
    base = settings or SSHSettings(host=host)
    s = SSHSettings(**{**base.__dict__, "host": host, "port": port or base.port})
    if proxy_jump is not None:
        s.proxy_jump = proxy_jump
    checks = check_host_keys(s)
    last = checks[-1]
    chain = resolve_chain(s)
    if len(checks) < len(chain):
        raise host_key_error(last.verdict, site=s.site)
    return last.key


def trust_host_key(
    known_hosts_path: str | os.PathLike[str],
    host: str,
    port: int,
    key: paramiko.PKey | HostKey | tuple[str, str],
    *,
    revoked_in: Sequence[str | os.PathLike[str]] | None = None,
) -> str:
    """Append *key* for *host*:*port* to *known_hosts_path* (OpenSSH format); return the line.

    ``[host]:port`` is written when port != 22.  A key that is ``@revoked`` in that file
    or in the default known_hosts files is refused with :class:`HostKeyError`.
    """
    if isinstance(key, paramiko.PKey):
        blob = key.asbytes()
        key_type, b64 = kh.blob_key_type(blob), key.get_base64()
    else:
        key_type, b64 = key[0], key[1]
    extra = kh.default_known_hosts_files() if revoked_in is None else list(revoked_in)
    try:
        return kh.add_known_host(known_hosts_path, host, port, key_type, b64, revoked_in=extra)
    except ValueError as e:
        raise HostKeyError(str(e)) from None


# -- command execution -------------------------------------------------------------------
def _send_signal(chan: paramiko.Channel, name: str) -> None:
    # RFC 4254 6.9 "signal"; OpenSSH's sshd delivers it to the session's process
    # group.  paramiko has no API for it, so the message is built by hand.
    try:
        m = paramiko.Message()
        m.add_byte(cMSG_CHANNEL_REQUEST)
        m.add_int(chan.remote_chanid)
        m.add_string("signal")
        m.add_boolean(False)
        m.add_string(name)
        chan.transport._send_user_message(m)  # type: ignore[union-attr]
    except Exception as e:  # noqa: BLE001 - best effort: the channel may be gone already
        log.debug("sending signal %s failed: %s", name, e)


class _Exec:
    """One exec channel: feeds stdin, yields (fd, bytes) events, returns the exit status."""

    def __init__(
        self,
        owner: SSHTransport,
        command: str,
        stdin: bytes | _Reader | None,
        *,
        keep_stdin_open: bool = False,
        deadline: float | None = None,
    ) -> None:
        self.owner = owner
        self.command = command
        self.deadline = deadline
        self.conn = owner._connection()
        self.chan = self._open()
        self.fd = self.chan.fileno()
        self.writer: threading.Thread | None = None
        self.write_error: BaseException | None = None
        if stdin is not None:
            self.writer = threading.Thread(target=self._feed, args=(stdin,), name="hpcjobs-ssh-stdin", daemon=True)
            self.writer.start()
        elif not keep_stdin_open:
            self.chan.shutdown_write()

    def _budget(self, default: float) -> float:
        if self.deadline is None:
            return default
        return max(0.1, min(default, self.deadline - time.monotonic()))

    def _open(self) -> paramiko.Channel:
        owner = self.owner
        chan: paramiko.Channel | None = None
        for attempt in (1, 2):
            try:
                chan = self.conn.transport.open_session(timeout=self._budget(owner.settings.connect_timeout))
                break
            except paramiko.ChannelException as e:
                # The server refused (e.g. MaxSessions); the connection itself is fine.
                raise TransientError(f"{owner.label} refused a new channel: {e}") from None
            except (paramiko.SSHException, OSError, EOFError) as e:
                # No command was sent yet, so one reconnect is safe.
                if attempt == 1 and not self.conn.transport.is_active():
                    self.conn = owner._connection()
                    continue
                # A connection that cannot open a channel in time is as good as dead:
                # drop it so that the next command reconnects.
                self.conn.transport.close()
                raise TransientError(f"cannot open a channel to {owner.label}: {e}") from None
        assert chan is not None
        # paramiko waits for the exec reply without a timeout; a silent (blackholed)
        # connection would hang here forever, so a timer closes it instead.
        transport = self.conn.transport
        stalled = threading.Event()

        def stall() -> None:
            stalled.set()
            transport.close()

        limit = self._budget(max(30.0, 2 * owner.settings.connect_timeout))
        timer = threading.Timer(limit, stall)
        timer.daemon = True
        timer.start()
        try:
            chan.exec_command(self.command)
        except (paramiko.SSHException, OSError, EOFError) as e:
            # Never retried: the request may have reached the server and the command
            # may be running (think sbatch); the caller decides how to reconcile.
            why = f"no answer for {limit:.0f} s" if stalled.is_set() else str(e)
            raise TransientError(f"command may not have started on {owner.label}: {why}") from None
        finally:
            timer.cancel()
        owner.stats.commands += 1
        return chan

    def _feed(self, stdin: bytes | _Reader) -> None:
        try:
            if isinstance(stdin, (bytes, bytearray)):
                for i in range(0, len(stdin), _CHUNK):
                    piece = stdin[i : i + _CHUNK]
                    self.chan.sendall(piece)
                    self.owner.stats.bytes_sent += len(piece)
            else:
                while True:
                    chunk = stdin.read(_CHUNK)
                    if not chunk:
                        break
                    self.chan.sendall(chunk)
                    self.owner.stats.bytes_sent += len(chunk)
            self.chan.shutdown_write()
        except BaseException as e:  # noqa: BLE001 - reported by the reader side
            self.write_error = e

    def events(self, deadline: float | None) -> Iterator[tuple[int, bytes]]:
        chan = self.chan
        stats = self.owner.stats
        while True:
            got = False
            if chan.recv_ready():
                data = chan.recv(_CHUNK)
                if data:
                    stats.bytes_received += len(data)
                    got = True
                    yield 1, data
            if chan.recv_stderr_ready():
                data = chan.recv_stderr(_CHUNK)
                if data:
                    stats.bytes_received += len(data)
                    got = True
                    yield 2, data
            if got:
                continue
            if chan.eof_received or chan.closed:
                # No data can follow EOF, but some may have arrived just before it.
                if chan.recv_ready() or chan.recv_stderr_ready():
                    continue
                return
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError
            select.select([self.fd], [], [], wait)

    def exit_status(self, deadline: float | None) -> int:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not self.chan.status_event.wait(wait):
            raise TimeoutError
        status = self.chan.exit_status
        if status == -1 and not self.conn.transport.is_active():
            raise TransientError(f"connection to {self.owner.label} lost while running a command")
        return status

    def finish_writer(self) -> None:
        if self.writer is not None:
            self.writer.join(timeout=5)

    def abort(self) -> None:
        if not self.chan.closed and not self.chan.exit_status_ready():
            _send_signal(self.chan, "TERM")
        self.close()

    def close(self) -> None:
        try:
            self.chan.close()
        except Exception as e:  # noqa: BLE001 - closing is best effort
            log.debug("closing channel: %s", e)


class _RemoteReader(io.RawIOBase):
    """stdout of a remote command as a readable stream; raises at EOF if it failed."""

    def __init__(self, ex: _Exec, argv: list[str]) -> None:
        super().__init__()
        self._ex = ex
        self._argv = argv
        self._stderr = bytearray()
        self._pending = b""
        self._done = False
        self.returncode: int | None = None
        self._err_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._err_thread.start()

    def _drain_stderr(self) -> None:
        chan = self._ex.chan
        try:
            while True:
                data = chan.recv_stderr(_CHUNK)
                if not data:
                    return
                self._stderr += data
                self._ex.owner.stats.bytes_received += len(data)
        except Exception:  # noqa: BLE001
            return

    @property
    def stderr(self) -> bytes:
        """What the command wrote to stderr so far."""
        return bytes(self._stderr)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._done:
            return 0
        try:
            data = self._ex.chan.recv(len(b))
        except (OSError, EOFError, paramiko.SSHException) as e:
            raise TransientError(f"connection to {self._ex.owner.label} lost: {e}") from None
        if data:
            self._ex.owner.stats.bytes_received += len(data)
            b[: len(data)] = data
            return len(data)
        self._done = True
        self.returncode = self._ex.exit_status(None)
        self._err_thread.join(timeout=5)
        if self.returncode != 0:
            raise RuntimeFailure(
                f"remote command {shlex.join(self._argv)} failed with exit code "
                f"{self.returncode}: {self.stderr.decode('utf-8', 'replace').strip()}"
            )
        return 0

    def close(self) -> None:
        if not self.closed:
            if not self._done:
                self._ex.abort()
            else:
                self._ex.close()
        super().close()


class SSHTransport(rsh.RemoteFiles):
    """Runs commands on a remote host over one pooled paramiko connection."""

    def __init__(self, settings: SSHSettings) -> None:
        super().__init__()
        self.settings = settings
        self.chain = resolve_chain(settings)
        self.target = self.chain[-1]
        self.name = f"ssh:{self.target.hostname}"
        self.label = self.target.label

    # -- connection ---------------------------------------------------------------------
    def _connection(self) -> _Connection:
        key = self.target.pool_key
        with _POOL_LOCK:
            conn = _POOL.get(key)
            if conn is not None and conn.alive():
                return conn
            key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
        with key_lock:
            with _POOL_LOCK:
                conn = _POOL.get(key)
                if conn is not None and conn.alive():
                    return conn
                if conn is not None:
                    del _POOL[key]
            if conn is not None:
                conn.close()
            started = time.monotonic()
            conn = _connect_chain(self.chain, self.settings)
            log.debug("connected to %s in %.3f s", self.label, time.monotonic() - started)
            self.stats.connections += 1
            with _POOL_LOCK:
                _POOL[key] = conn
            return conn

    def connect(self) -> None:
        """Connect (and authenticate) now rather than on the first command."""
        self._connection()

    def disconnect(self) -> None:
        """Really close this target's pooled connection (the next command reconnects)."""
        with _POOL_LOCK:
            conn = _POOL.pop(self.target.pool_key, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Release this object.  The pooled connection stays open for the rest of the
        process, so later transports for the same target reuse it (see :func:`close_pool`)."""

    @property
    def paramiko_transport(self) -> paramiko.Transport:
        """The underlying authenticated paramiko transport (for SFTP and the like)."""
        return self._connection().transport

    # -- commands -----------------------------------------------------------------------
    def _run_command(
        self,
        argv: list[str],
        command: str,
        *,
        stdin: bytes | _Reader | None,
        timeout: float | None,
    ) -> CommandResult:
        self.stats.argv_log.append(argv)
        deadline = None if timeout is None else time.monotonic() + timeout
        ex = _Exec(self, command, stdin, deadline=deadline)
        out: list[bytes] = []
        err: list[bytes] = []
        try:
            for fd, data in ex.events(deadline):
                (out if fd == 1 else err).append(data)
            status = ex.exit_status(deadline)
            ex.finish_writer()
        except TimeoutError:
            ex.abort()
            raise TransientError(f"command timed out after {timeout} s on {self.label}: {shlex.join(argv)}") from None
        except BaseException:
            ex.abort()
            raise
        ex.close()
        return CommandResult(argv=argv, returncode=status, stdout=b"".join(out), stderr=b"".join(err))

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
        return self._run_command(argv, build_command(argv, env, cwd), stdin=stdin, timeout=timeout)

    def run_streaming(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Iterator[bytes]:
        """Yield stdout chunks as they arrive (for ``tail -f``-like commands).

        Closing the generator early sends SIGTERM to the remote command's process
        group, so an abandoned ``tail -f`` does not linger on the login node.
        """
        argv = list(argv)
        self.stats.argv_log.append(argv)
        ex = _Exec(self, build_command(argv, env), stdin)
        try:
            for fd, data in ex.events(None):
                if fd == 1:
                    yield data
            ex.exit_status(None)
        except BaseException:
            ex.abort()
            raise
        ex.close()

    # -- files --------------------------------------------------------------------------

    @property
    def home(self) -> str:
        """The remote user's home directory (asked once per connection)."""
        conn = self._connection()
        if conn.home is None:
            res = self.run(["sh", "-c", rsh.HOME_SCRIPT])
            if res.returncode != 0 or not res.stdout:
                raise RuntimeFailure(f"cannot find the home directory on {self.label}: {res.err.strip()}")
            conn.home = res.out
        return conn.home

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
        """Unpack a (gzip or plain) tar stream into *remote_dir* with ONE remote command.

        Runs ``bash -c 'set -e; mkdir -p DIR; <prelude>; tar -x -C DIR; <postlude>'``
        with the stream on stdin, so an upload and a submit can share one round trip.
        *prelude* and *postlude* are shell text (quote what you put in them); inside
        them ``$dir`` is the target directory, with a leading ``~`` expanded.  The
        compression is detected from the stream's first bytes.
        """
        head = rsh.read_head(local_tar_stream)
        argv = rsh.put_tar_argv(remote_dir, gz=rsh.is_gzip(head), prelude=prelude, postlude=postlude)
        stream = _Prepended(head, local_tar_stream)
        return self._run_command(argv, build_command(argv), stdin=stream, timeout=timeout)

    def get_tar(self, remote_cmd_argv: Sequence[str]) -> IO[bytes]:
        """Run a command whose stdout is a tar stream and return that stream.

        The caller extracts it (with :func:`hpcjobs.tarsafe.safe_extract`); reading to
        the end raises :class:`RuntimeFailure` if the command failed, and closing early
        stops it.
        """
        argv = list(remote_cmd_argv)
        self.stats.argv_log.append(argv)
        ex = _Exec(self, build_command(argv), None)
        return io.BufferedReader(_RemoteReader(ex, argv), buffer_size=_CHUNK)


class _Prepended:
    """*head* followed by the rest of *rest* (put back the bytes we peeked at)."""

    def __init__(self, head: bytes, rest: rsh.Readable) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            out, self._head = self._head, b""
            return out
        return self._rest.read(size)
