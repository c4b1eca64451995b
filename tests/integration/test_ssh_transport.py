"""The SSH transports against a real OpenSSH sshd (tests/cluster/sshd-up.sh).

127.0.0.1:2222 is the login node, 127.0.0.1:2201 a bastion; user alice logs in with
/etc/hpcjobs-test/ssh/alice_ed25519.  The sshds are started here if they are not
running (as root); the module is skipped only if that is impossible.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

paramiko = pytest.importorskip("paramiko")

from hpcjobs.errors import HostKeyError, RuntimeFailure, TransientError, UserError  # noqa: E402
from hpcjobs.tarsafe import TarStream, safe_extract  # noqa: E402
from hpcjobs.transport import ssh as ssh_mod  # noqa: E402
from hpcjobs.transport.ssh import (  # noqa: E402
    SSHSettings,
    SSHTransport,
    check_host_keys,
    close_pool,
    fetch_host_key,
    forget_credentials,
    trust_host_key,
)
from hpcjobs.transport.system_ssh import SystemSSHTransport  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
from tcpproxy import TCPProxy  # noqa: E402

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SSH_DIR = Path("/etc/hpcjobs-test/ssh")
LOGIN_LOG = Path("/var/log/hpcjobs-test/sshd.log")
LOGIN, BASTION = 2222, 2201


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def sshd() -> Path:
    """Make sure both test sshds run; skip (with the reason) if they cannot."""
    ready = _listening(LOGIN) and _listening(BASTION) and (SSH_DIR / "alice_ed25519").exists()
    if not ready:
        if os.geteuid() != 0:
            pytest.skip("test sshd not running, and starting it needs root (tests/cluster/sshd-up.sh)")
        try:
            res = subprocess.run(["bash", str(REPO / "tests/cluster/sshd-up.sh")], capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"cannot start the test sshd: {e}")
        if res.returncode != 0:
            pytest.skip(f"cannot start the test sshd (sshd-up.sh exit {res.returncode}): {res.stderr[-800:]}")
    return SSH_DIR


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # No agent, no user ssh files, a private hpcjobs home: only what each test sets.
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("HPCJOBS_HOME", str(tmp_path / "hpcjobs-home"))
    close_pool()
    forget_credentials()
    yield
    close_pool()
    forget_credentials()


@pytest.fixture
def key(sshd: Path, tmp_path: Path) -> str:
    """A private copy of alice's key (mode 600)."""
    dst = tmp_path / "id_alice"
    shutil.copyfile(sshd / "alice_ed25519", dst)
    dst.chmod(0o600)
    return str(dst)


@pytest.fixture
def known(sshd: Path, tmp_path: Path) -> Path:
    """A known_hosts file with both test servers' keys."""
    dst = tmp_path / "known_hosts"
    shutil.copyfile(sshd / "known_hosts", dst)
    return dst


def _settings(key: str, known: Path | str, **kw: Any) -> SSHSettings:
    base: dict[str, Any] = dict(
        host="127.0.0.1",
        port=LOGIN,
        user="alice",
        identity_file=key,
        known_hosts=str(known),
        read_ssh_config=False,
        use_agent=False,
        interactive=False,
        connect_timeout=10,
        site="testsite",
    )
    base.update(kw)
    return SSHSettings(**base)


@pytest.fixture
def t(key: str, known: Path) -> SSHTransport:
    return SSHTransport(_settings(key, known))


def _pub(name: str, kind: str = "ed25519") -> tuple[str, str, str]:
    """(type, base64, SHA256 fingerprint) of a test server's host key."""
    key_type, b64 = (SSH_DIR / f"{name}_host_{kind}_key.pub").read_text().split()[:2]
    fp = "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(b64)).digest()).decode().rstrip("=")
    return key_type, b64, fp


class _AuthSpy:
    """Records every authentication attempt paramiko makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in ("auth_none", "auth_publickey", "auth_password", "auth_interactive"):
            orig = getattr(paramiko.Transport, name)

            def spy(tr: Any, *a: Any, _orig: Any = orig, _name: str = name, **k: Any) -> Any:
                self.calls.append(_name)
                return _orig(tr, *a, **k)

            monkeypatch.setattr(paramiko.Transport, name, spy)


# -- commands --------------------------------------------------------------------------------
def test_runs_commands_as_alice(t: SSHTransport) -> None:
    res = t.run(["id", "-un"])
    assert res.ok and res.out == "alice\n"
    res = t.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (res.returncode, res.stdout, res.stderr) == (7, b"out\n", b"err\n")
    assert t.run(["no-such-command-hpcjobs"]).returncode == 127
    hostile = ["a b", "'", '"', "$(touch /tmp/hpcjobs-pwn)", "`id`", "x\ny", "\\", "*", ";ls", "-n", "", "é\u202e"]
    res = t.run(["printf", "%s\\0", *hostile])
    assert res.stdout.split(b"\0")[:-1] == [h.encode() for h in hostile]
    assert not Path("/tmp/hpcjobs-pwn").exists()
    assert t.run(["if"]).returncode == 127  # argv[0] is never a shell keyword
    assert t.run(["sh", "-c", "kill -9 $$"]).returncode == -9  # exit-signal is reported
    assert t.run(["pwd"], cwd="/tmp").out == "/tmp\n"
    assert t.run(["pwd"], cwd="~").out.strip() == t.home == "/home/alice"


def test_stdin_round_trip_10mb(t: SSHTransport) -> None:
    data = os.urandom(10 * 1024 * 1024)
    res = t.run(["cat"], stdin=data, timeout=120)
    assert res.ok and len(res.stdout) == len(data) and res.stdout == data
    assert t.stats.bytes_sent >= len(data) and t.stats.bytes_received >= len(data)


def test_big_stdout_and_stderr_at_once(t: SSHTransport) -> None:
    # 6 MB on each stream, interleaved: more than the 2 MB SSH window on either
    res = t.run(["sh", "-c", "head -c 6000000 /dev/zero | tee /dev/stderr"], timeout=120)
    assert res.ok and len(res.stdout) == len(res.stderr) == 6_000_000


def test_env_with_hostile_values(t: SSHTransport, tmp_path: Path) -> None:
    env = {
        "Q1": "it's",
        "Q2": 'say "hi"',
        "NL": "line1\nline2\n",
        "SUB": "$(touch /tmp/hpcjobs-env-pwn)",
        "BT": "`touch /tmp/hpcjobs-env-pwn`",
        "SEMI": "; touch /tmp/hpcjobs-env-pwn",
        "UNI": "żółw \u202e ∑ 🚀",
        "EMPTY": "",
        "BS": "back\\slash\\",
        "DASH": "-i",
        "EQ": "a=b=c",
        "PCT": "%s %j %%",
    }
    res = t.run(["env", "-0"], env=env)
    assert res.ok, res.err
    got = dict(item.split(b"=", 1) for item in res.stdout.split(b"\0") if item)
    for name, value in env.items():
        assert got[name.encode()] == value.encode(), name
    assert not Path("/tmp/hpcjobs-env-pwn").exists()
    with pytest.raises(ValueError):
        t.run(["true"], env={"BAD NAME": "x"})


def test_one_connection_for_many_commands(t: SSHTransport, key: str, known: Path) -> None:
    for i in range(20):
        assert t.run(["echo", str(i)]).out == f"{i}\n"
    assert t.stats.connections == 1
    assert t.stats.commands == 20
    # another transport object for the same target reuses the pooled connection
    t2 = SSHTransport(_settings(key, known))
    t2.close()
    assert t2.run(["true"]).ok
    assert t2.stats.connections == 0
    sock = ssh_mod._POOL[t.target.pool_key].transport.sock
    assert isinstance(sock, socket.socket)
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_files_read_write_exists(t: SSHTransport) -> None:
    path = f"~/hpcjobs-test-{os.getpid()}/sub dir/f.bin"
    data = bytes(range(256)) * 50 + b"\0end"
    t.write_file(path, data, mode=0o600)
    assert t.exists(path)
    assert t.read_file(path) == data
    assert t.read_file(path, offset=100, limit=10) == data[100:110]
    assert t.read_file(path, offset=len(data) - 3) == b"end"
    assert t.read_file(path, offset=len(data) + 5) == b""
    assert t.read_file(path, limit=4) == data[:4]
    assert t.run(["stat", "-c", "%a", f"/home/alice/hpcjobs-test-{os.getpid()}/sub dir/f.bin"]).out == "600\n"
    with pytest.raises(FileNotFoundError):
        t.read_file("~/definitely/not/here")
    assert not t.exists("~/definitely/not/here")
    with pytest.raises(IsADirectoryError):
        t.read_file("~")
    leftovers = t.run(["sh", "-c", f"ls -a ~/hpcjobs-test-{os.getpid()}/'sub dir'"]).out.split()
    assert sorted(leftovers) == [".", "..", "f.bin"]
    t.run(["rm", "-rf", f"/home/alice/hpcjobs-test-{os.getpid()}"])


def test_run_streaming_is_live_and_abort_kills_remote(t: SSHTransport) -> None:
    tag = f"sleep 300.{os.getpid()}1"  # a unique argv to find the remote process by
    started = time.monotonic()
    gen = cast(Generator[bytes, None, None], t.run_streaming(["sh", "-c", f"echo first; exec {tag}"]))
    assert next(gen) == b"first\n"
    assert time.monotonic() - started < 60  # not the 300 s the command runs
    assert t.run(["pgrep", "-u", "alice", "-f", tag]).ok
    gen.close()
    for _ in range(50):
        if not t.run(["pgrep", "-u", "alice", "-f", tag]).ok:
            break
        time.sleep(0.1)
    else:
        pytest.fail("remote command survived closing the stream")
    chunks = list(t.run_streaming(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done"]))
    assert b"".join(chunks) == b"1\n2\n3\n" and len(chunks) >= 2


def test_timeout_raises_transient_and_stops_remote(t: SSHTransport) -> None:
    tag = f"sleep 300.{os.getpid()}2"
    t0 = time.monotonic()
    with pytest.raises(TransientError, match="timed out"):
        t.run(["sh", "-c", f"exec {tag}"], timeout=0.5)
    assert time.monotonic() - t0 < 60  # not the 300 s the command runs
    time.sleep(0.3)
    assert not t.run(["pgrep", "-u", "alice", "-f", tag]).ok


# -- host keys -------------------------------------------------------------------------------
def test_unknown_host_key_refused_before_auth(key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    spy = _AuthSpy(monkeypatch)
    ports: list[int] = []
    real_socket_to = ssh_mod._socket_to

    def recording(ep: Any, timeout: float, keepalive: int = 0) -> Any:
        sock = real_socket_to(ep, timeout, keepalive)
        ports.append(sock.getsockname()[1])
        return sock

    monkeypatch.setattr(ssh_mod, "_socket_to", recording)
    log_start = LOGIN_LOG.stat().st_size if LOGIN_LOG.exists() else 0
    tr = SSHTransport(_settings(key, empty))
    with pytest.raises(HostKeyError) as ei:
        tr.run(["true"])
    msg = str(ei.value)
    _, _, fp = _pub("login")
    assert "unknown SSH host key for 127.0.0.1:2222" in msg
    assert "ssh-ed25519" in msg and fp in msg
    assert "hpcjobs site trust testsite" in msg
    assert spy.calls == []
    assert tr.stats.connections == 0
    # and sshd saw no authentication attempt from that connection
    time.sleep(0.3)
    if LOGIN_LOG.exists() and ports:
        with LOGIN_LOG.open("rb") as f:
            f.seek(log_start)
            ours = [ln for ln in f.read().decode(errors="replace").splitlines() if f"port {ports[0]}" in ln]
        assert not [ln for ln in ours if any(w in ln for w in ("Accepted", "Failed", "Postponed", "Invalid user"))], ours


def test_changed_host_key_refused(key: str, tmp_path: Path, sshd: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kt, b64 = other.with_suffix(".pub").read_text().split()[:2]
    kh_file = tmp_path / "known_hosts"
    kh_file.write_text(f"[127.0.0.1]:2222 {kt} {b64}\n")
    with pytest.raises(HostKeyError) as ei:
        SSHTransport(_settings(key, kh_file)).run(["true"])
    msg = str(ei.value)
    old_fp = "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(b64)).digest()).decode().rstrip("=")
    assert "HOST KEY CHANGED" in msg and old_fp in msg and _pub("login")[2] in msg
    assert f"{kh_file}:1" in msg


def test_revoked_key_refused_even_if_known(key: str, known: Path) -> None:
    kt, b64, fp = _pub("login")
    known.write_text(known.read_text() + f"@revoked * {kt} {b64}\n")
    with pytest.raises(HostKeyError, match="REVOKED") as ei:
        SSHTransport(_settings(key, known)).run(["true"])
    assert fp in str(ei.value)


def test_marker_lines_load_and_do_not_trust_unknown(key: str, tmp_path: Path) -> None:
    kt, b64, _ = _pub("login")
    ca_t, ca_b64, _ = _pub("bastion")  # any key will do as a "CA"
    kh_file = tmp_path / "known_hosts"
    lines = [
        "# markers paramiko cannot parse",
        f"@cert-authority * {ca_t} {ca_b64}",
        f"@revoked other.example {_pub('bastion', 'ecdsa')[0]} {_pub('bastion', 'ecdsa')[1]}",
        f"@cert-authority [127.0.0.1]:2222 {kt} {b64}",
    ]
    kh_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(HostKeyError, match="unknown SSH host key"):
        SSHTransport(_settings(key, kh_file)).run(["true"])
    kh_file.write_text(kh_file.read_text() + f"[127.0.0.1]:2222 {kt} {b64}\n")
    assert SSHTransport(_settings(key, kh_file)).run(["true"]).ok


def test_trust_host_key_then_connect(key: str, tmp_path: Path) -> None:
    kh_file = tmp_path / "cfg" / "known_hosts"
    s = _settings(key, kh_file)
    checks = check_host_keys(s)
    assert len(checks) == 1 and checks[0].status.value == "unknown"
    kt, b64, fp = _pub("login")
    assert tuple(checks[0].key) == (kt, b64, fp)
    assert tuple(fetch_host_key("127.0.0.1", LOGIN, settings=s)) == (kt, b64, fp)
    line = trust_host_key(kh_file, checks[0].host, checks[0].port, checks[0].key)
    assert line == f"[127.0.0.1]:2222 {kt} {b64}"
    assert kh_file.read_text() == line + "\n"
    assert SSHTransport(s).run(["id", "-un"]).out == "alice\n"
    assert check_host_keys(s)[0].status.value == "ok"


def test_paramiko_client_policy_refuses_unknown_keys(key: str, tmp_path: Path) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(ssh_mod.RefuseUnknownHostKeys(site="testsite"))
    with pytest.raises(HostKeyError, match=re.escape(f"127.0.0.1:2222: ssh-ed25519 {_pub('login')[2]}")):
        client.connect("127.0.0.1", port=LOGIN, username="alice", key_filename=key, look_for_keys=False, allow_agent=False)
    client.close()


def test_trust_refuses_revoked_key(tmp_path: Path) -> None:
    kt, b64, _ = _pub("login")
    rev = tmp_path / "revoked"
    rev.write_text(f"@revoked * {kt} {b64}\n")
    with pytest.raises(HostKeyError, match="revoked"):
        trust_host_key(tmp_path / "kh", "127.0.0.1", LOGIN, (kt, b64), revoked_in=[rev])


def test_default_known_hosts_include_hpcjobs_file(key: str, tmp_path: Path) -> None:
    # known_hosts=None: ~/.ssh/known_hosts, /etc/ssh/ssh_known_hosts and $HPCJOBS_HOME/config/known_hosts
    s = _settings(key, "x")
    s.known_hosts = None
    own = Path(os.environ["HPCJOBS_HOME"]) / "config" / "known_hosts"
    kt, b64, _ = _pub("login")
    trust_host_key(own, "127.0.0.1", LOGIN, (kt, b64))
    assert SSHTransport(s).run(["true"]).ok


# -- jump hosts and ssh config ---------------------------------------------------------------
def test_proxy_jump_through_bastion(key: str, known: Path) -> None:
    tr = SSHTransport(_settings(key, known, proxy_jump=f"alice@127.0.0.1:{BASTION}"))
    assert [ep.port for ep in tr.chain] == [BASTION, LOGIN]
    assert tr.run(["id", "-un"]).out == "alice\n"
    conn = ssh_mod._POOL[tr.target.pool_key]
    assert len(conn.hops) == 1 and conn.hops[0].is_active()
    # the login sshd sees the connection coming from the bastion's forwarding
    assert tr.run(["sh", "-c", "echo $SSH_CONNECTION"]).out.split()[2:] == ["127.0.0.1", "2222"]


def test_bad_target_key_behind_good_bastion(key: str, known: Path, tmp_path: Path) -> None:
    kh_file = tmp_path / "kh"
    kh_file.write_text("".join(ln + "\n" for ln in known.read_text().splitlines() if ":2201" in ln))
    with pytest.raises(HostKeyError, match=r"127\.0\.0\.1:2222"):
        SSHTransport(_settings(key, kh_file, proxy_jump=f"127.0.0.1:{BASTION}")).run(["true"])
    kh_file.write_text("".join(ln + "\n" for ln in known.read_text().splitlines() if ":2222" in ln))
    with pytest.raises(HostKeyError, match=r"127\.0\.0\.1:2201"):
        SSHTransport(_settings(key, kh_file, proxy_jump=f"127.0.0.1:{BASTION}")).run(["true"])
    # hpcjobs site trust walks the chain: the bastion is what must be decided first
    checks = check_host_keys(_settings(key, kh_file, proxy_jump=f"127.0.0.1:{BASTION}"))
    assert [(c.port, c.status.value) for c in checks] == [(BASTION, "unknown")]


def test_ssh_config_host_alias_and_jump(key: str, known: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(
        f"""
Host mycluster
    HostName 127.0.0.1
    Port {LOGIN}
    User alice
    IdentityFile {key}
    ProxyJump gateway

Host gateway
    HostName 127.0.0.1
    Port {BASTION}
    User alice
    IdentityFile {key}

Host direct
    HostName 127.0.0.1
    Port {LOGIN}
    User alice
    IdentityFile {key}
"""
    )
    s = SSHSettings(host="direct", ssh_config=str(cfg), known_hosts=str(known), use_agent=False, interactive=False)
    assert SSHTransport(s).run(["id", "-un"]).out == "alice\n"
    close_pool()
    s = SSHSettings(host="mycluster", ssh_config=str(cfg), known_hosts=str(known), use_agent=False, interactive=False)
    tr = SSHTransport(s)
    assert [(ep.alias, ep.port, ep.user) for ep in tr.chain] == [("gateway", BASTION, "alice"), ("mycluster", LOGIN, "alice")]
    assert tr.run(["id", "-un"]).out == "alice\n"
    assert len(ssh_mod._POOL[tr.target.pool_key].hops) == 1


def test_agent_keys_are_used(key: str, known: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not shutil.which("ssh-agent"):
        pytest.skip("no ssh-agent")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", "-q", key], env=env, check=True, capture_output=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/id_* to fall back on
        tr = SSHTransport(_settings(key, known, identity_file=None, use_agent=True))
        assert tr.run(["id", "-un"]).out == "alice\n"
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_no_key_at_all_fails_with_clear_error(known: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(UserError, match="no key was available"):
        SSHTransport(_settings("", known, identity_file=None, interactive=None)).run(["true"])
    assert time.monotonic() - t0 < 60  # fails, does not wait for a prompt


def test_private_key_readable_by_others_is_refused(key: str, known: Path) -> None:
    os.chmod(key, 0o644)
    with pytest.raises(UserError, match="accessible by other users") as ei:
        SSHTransport(_settings(key, known)).run(["true"])
    assert "chmod 600" in str(ei.value)


def test_wrong_key_fails_with_clear_error(known: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(UserError, match=re.escape("authentication failed for alice@127.0.0.1:2222")):
        SSHTransport(_settings(str(other), known)).run(["true"])


# -- passwords: prompted at most once; never without a terminal --------------------------------
@pytest.fixture
def password_sshd(sshd: Path, tmp_path: Path) -> Iterator[tuple[int, str, str]]:
    """A throw-away sshd that only accepts passwords, for user hpcjobs-pw."""
    # fixed, so that parallel test workers agree on it; the user exists only for this
    # test and this sshd is the only server accepting passwords
    user, password = "hpcjobspw", "hpcjobs-test-pw"
    if subprocess.run(["id", user], capture_output=True).returncode != 0:
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], capture_output=True)
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            pytest.skip("cannot create a user for the password test")
    subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "sshd_pw.conf"
    conf.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {sshd}/login_host_ed25519_key\n"
        f"PidFile {tmp_path}/sshd_pw.pid\nUsePAM no\nPasswordAuthentication yes\nPubkeyAuthentication no\n"
        "KbdInteractiveAuthentication no\nAuthenticationMethods password\nPermitRootLogin no\n"
    )
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(100):
        if _listening(port):
            break
        time.sleep(0.05)
    try:
        yield port, user, password
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _pw_settings(port: int, user: str, known: Path, **kw: Any) -> SSHSettings:
    kt, b64, _ = _pub("login")
    known.write_text(f"[127.0.0.1]:{port} {kt} {b64}\n")
    return SSHSettings(
        host="127.0.0.1", port=port, user=user, known_hosts=str(known), read_ssh_config=False, use_agent=False, **kw
    )


def test_password_needed_without_terminal_fails_fast(password_sshd: tuple[int, str, str], tmp_path: Path) -> None:
    port, user, _ = password_sshd
    t0 = time.monotonic()
    with pytest.raises(UserError, match="no terminal"):
        SSHTransport(_pw_settings(port, user, tmp_path / "kh", interactive=False)).run(["true"])
    assert time.monotonic() - t0 < 60  # fails, does not wait for a prompt


def test_password_prompted_once_per_process(password_sshd: tuple[int, str, str], tmp_path: Path) -> None:
    port, user, password = password_sshd
    asked: list[str] = []

    def prompter(prompt: str, echo: bool) -> str:
        asked.append(prompt)
        return password

    tr = SSHTransport(_pw_settings(port, user, tmp_path / "kh", prompter=prompter))
    assert tr.run(["id", "-un"]).out == f"{user}\n"
    tr.disconnect()  # a reconnect (say, after a network drop) ...
    assert tr.run(["id", "-un"]).ok
    assert tr.stats.connections == 2
    assert len(asked) == 1  # ... replays the answer instead of asking again


def test_wrong_password_is_not_asked_again(password_sshd: tuple[int, str, str], tmp_path: Path) -> None:
    port, user, _ = password_sshd
    asked: list[str] = []

    def prompter(prompt: str, echo: bool) -> str:
        asked.append(prompt)
        return "wrong"

    s = _pw_settings(port, user, tmp_path / "kh", prompter=prompter)
    with pytest.raises(UserError, match="authentication failed"):
        SSHTransport(s).run(["true"])
    with pytest.raises(UserError, match="at most once"):
        SSHTransport(s).run(["true"])
    assert len(asked) == 1


# -- tar streams -----------------------------------------------------------------------------
def test_put_tar_2000_files_in_one_command_and_get_tar_back(t: SSHTransport, tmp_path: Path) -> None:
    src = tmp_path / "code"
    names = []
    for i in range(2000):
        rel = f"pkg{i % 20}/mod_{i}.py"
        p = src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"# module {i}\nVALUE = {i}\n" + "x = 1\n" * (i % 50))
        names.append(rel)
    remote = f"/home/alice/hpcjobs-puttar-{os.getpid()}"
    before = t.stats.commands
    t0 = time.perf_counter()
    stream = TarStream(src, names, compress=True)  # produced while it is sent
    res = t.put_tar(
        stream,
        remote,
        prelude='echo prelude > "$dir/.marker"',
        postlude='find "$dir" -type f | wc -l; cat "$dir/pkg7/mod_7.py" | head -1',
    )
    elapsed = time.perf_counter() - t0
    assert res.ok, res.err
    assert res.out.split("\n")[:2] == ["2001", "# module 7"]
    assert t.stats.commands - before == 1
    print(f"\nput_tar: 2000 files, {t.stats.bytes_sent} bytes gz, one command, {elapsed:.3f} s")

    back = t.get_tar(["tar", "-C", remote, "-czf", "-", "."])
    with back:
        report = safe_extract(back, tmp_path / "back")
    assert report.ok, report.warnings
    for rel in names[::97]:
        assert (tmp_path / "back" / rel).read_bytes() == (src / rel).read_bytes()
    assert (tmp_path / "back/.marker").read_text() == "prelude\n"
    # a failing remote tar command surfaces as an error at the end of the stream
    bad = t.get_tar(["tar", "-C", "/nonexistent-dir", "-czf", "-", "."])
    with pytest.raises(RuntimeFailure, match="exit code 2"):
        safe_extract(bad, tmp_path / "bad")
    t.run(["rm", "-rf", remote])


def test_put_tar_failing_prelude_stops_before_tar(t: SSHTransport) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("x")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    remote = f"/home/alice/hpcjobs-prelude-{os.getpid()}"
    res = t.put_tar(buf, remote, prelude="false", postlude="echo never")
    assert not res.ok and "never" not in res.out
    assert not t.exists(remote + "/x")
    t.run(["rm", "-rf", remote])


# -- connection failures ---------------------------------------------------------------------
def test_cut_connection_during_command_is_transient_and_reconnects(key: str, known: Path) -> None:
    with TCPProxy(target_port=LOGIN) as proxy:
        known.write_text(
            known.read_text()
            + "".join(f"[127.0.0.1]:{proxy.port} " + " ".join(_pub("login", k)[:2]) + "\n" for k in ("ed25519",))
        )
        tr = SSHTransport(_settings(key, known, port=proxy.port))
        assert tr.run(["true"]).ok
        threading.Timer(0.5, proxy.cut_all).start()
        with pytest.raises(TransientError):
            tr.run(["sh", "-c", "sleep 3; echo done"], timeout=20)
        time.sleep(0.2)
        assert tr.run(["echo", "again"]).out == "again\n"  # transparently reconnected
        assert tr.stats.connections == 2
        # a connection that silently drops everything: the timeout still holds
        proxy.blackhole()
        t0 = time.monotonic()
        with pytest.raises(TransientError):
            tr.run(["true"], timeout=2)
        assert time.monotonic() - t0 < 30  # a black hole would hang forever
        proxy.blackhole(False)
        assert tr.run(["true"]).ok  # the stuck connection was dropped, a new one made
        assert tr.stats.connections == 3
        proxy.cut_after(0)
        proxy.refuse()
        with pytest.raises(TransientError):
            tr.run(["true"])


def test_cut_after_n_bytes_mid_transfer(key: str, known: Path) -> None:
    with TCPProxy(target_port=LOGIN) as proxy:
        kt, b64, _ = _pub("login")
        known.write_text(known.read_text() + f"[127.0.0.1]:{proxy.port} {kt} {b64}\n")
        tr = SSHTransport(_settings(key, known, port=proxy.port))
        assert tr.run(["true"]).ok
        proxy.cut_after(300_000, "up")
        with pytest.raises(TransientError):
            tr.run(["sh", "-c", "cat > /dev/null"], stdin=os.urandom(2_000_000), timeout=30)
        assert proxy.cut_event.is_set()


# -- the system ssh transport ----------------------------------------------------------------
@pytest.fixture
def sys_t(key: str, known: Path) -> Iterator[SystemSSHTransport]:
    if not shutil.which("ssh"):
        pytest.skip("no ssh client")
    tr = SystemSSHTransport(_settings(key, known))
    yield tr
    from hpcjobs.transport import system_ssh

    system_ssh.close_masters()


def test_system_ssh_runs_commands_with_one_master(sys_t: SystemSSHTransport) -> None:
    for i in range(10):
        assert sys_t.run(["echo", str(i)]).out == f"{i}\n"
    assert sys_t.stats.connections == 1 and sys_t.stats.commands == 10
    assert os.path.exists(sys_t.control_path)
    assert os.stat(os.path.dirname(sys_t.control_path)).st_mode & 0o077 == 0
    res = sys_t.run(["sh", "-c", 'printf %s "$V"; exit 3'], env={"V": "it's $(x) `y`\n"})
    assert (res.returncode, res.stdout) == (3, b"it's $(x) `y`\n")
    assert sys_t.run(["sh", "-c", "exit 255"]).returncode == 255  # the remote's own 255 is not an ssh error
    data = os.urandom(3 * 1024 * 1024)
    assert sys_t.run(["cat"], stdin=data).stdout == data
    sys_t.write_file("~/hpcjobs-sys.txt", b"abc")
    assert sys_t.read_file("~/hpcjobs-sys.txt", offset=1) == b"bc" and sys_t.exists("~/hpcjobs-sys.txt")
    sys_t.run(["rm", "-f", "/home/alice/hpcjobs-sys.txt"])
    assert sys_t.home == "/home/alice"
    tag = f"sleep 300.{os.getpid()}3"
    gen = cast(Generator[bytes, None, None], sys_t.run_streaming(["sh", "-c", f"echo first; exec {tag}"]))
    assert next(gen) == b"first\n"
    gen.close()
    for _ in range(50):
        if not sys_t.run(["pgrep", "-u", "alice", "-f", tag]).ok:
            break
        time.sleep(0.1)
    else:
        pytest.fail("remote command survived closing the stream")
    assert sys_t.stats.connections == 1


def test_system_ssh_refuses_unknown_host_key(key: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("")
    tr = SystemSSHTransport(_settings(key, empty))
    with pytest.raises(HostKeyError):
        tr.run(["true"])


# -- measurements ----------------------------------------------------------------------------
def test_latency_over_loopback(key: str, known: Path) -> None:
    """Connect time and per-command latency (printed; loose bounds catch Nagle stalls)."""
    connects = []
    for _ in range(5):
        close_pool()
        tr = SSHTransport(_settings(key, known))
        t0 = time.perf_counter()
        tr.connect()
        connects.append(time.perf_counter() - t0)
    lat = []
    for _ in range(50):
        t0 = time.perf_counter()
        tr.run(["true"])
        lat.append(time.perf_counter() - t0)
    out = []
    for _ in range(20):
        t0 = time.perf_counter()
        tr.run(["echo", "x" * 100])
        out.append(time.perf_counter() - t0)
    print(
        f"\nparamiko loopback: connect median {statistics.median(connects) * 1000:.1f} ms; "
        f"`true` median {statistics.median(lat) * 1000:.1f} ms; `echo` median {statistics.median(out) * 1000:.1f} ms"
    )
    assert statistics.median(out) < 0.1
