"""Pure parts of the SSH transports: ProxyJump specs, ssh config resolution, command lines."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from hpcjobs.errors import UserError
from hpcjobs.transport.remote_shell import build_command

ssh = pytest.importorskip("hpcjobs.transport.ssh")


def test_parse_proxy_jump() -> None:
    J = ssh.JumpSpec
    assert ssh.parse_proxy_jump("user@bastion:2201,other") == [J("user", "bastion", 2201), J(None, "other", None)]
    assert ssh.parse_proxy_jump("ssh://u@h:22/") == [J("u", "h", 22)]
    assert ssh.parse_proxy_jump("[::1]:2222,u@[fe80::1]") == [J(None, "::1", 2222), J("u", "fe80::1", None)]
    assert ssh.parse_proxy_jump("none") == [] and ssh.parse_proxy_jump(None) == []
    with pytest.raises(UserError):
        ssh.parse_proxy_jump("h:99999")
    with pytest.raises(UserError):
        ssh.parse_proxy_jump("h:abc")


def test_resolve_chain_through_ssh_config(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text(
        """
Host cluster
    HostName login.uni.edu
    User alice
    Port 2022
    IdentityFile ~/.ssh/id_cluster
    ProxyJump gw1,bob@gw2:2200
    HostKeyAlias cluster-login

Host gw1
    HostName gateway1.uni.edu
    User carol
    ProxyJump outer

Host outer
    HostName outer.uni.edu
    Port 443
"""
    )
    s = ssh.SSHSettings(host="cluster", ssh_config=str(cfg), known_hosts="/dev/null")
    chain = ssh.resolve_chain(s)
    assert [(e.hostname, e.port, e.user) for e in chain[1:]] == [
        ("gateway1.uni.edu", 22, "carol"),
        ("gw2", 2200, "bob"),
        ("login.uni.edu", 2022, "alice"),
    ]
    # outer is gw1's own ProxyJump; its user falls back to the site's / the config's target user
    assert chain[0].hostname == "outer.uni.edu" and chain[0].port == 443
    assert chain[-1].key_host == "cluster-login"
    assert chain[-1].identity_files[0].endswith("/.ssh/id_cluster")
    # explicit settings win over the config
    s2 = ssh.SSHSettings(host="cluster", user="dave", port=2222, proxy_jump="none", ssh_config=str(cfg))
    (only,) = ssh.resolve_chain(s2)
    assert (only.hostname, only.port, only.user) == ("login.uni.edu", 2222, "dave")


def test_proxy_jump_loop_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("Host a\n    ProxyJump b\nHost b\n    ProxyJump a\n")
    with pytest.raises(UserError, match=r"loop|longer"):
        ssh.resolve_chain(ssh.SSHSettings(host="x", proxy_jump="a", ssh_config=str(cfg)))


def test_settings_from_site_like_object() -> None:
    class SiteSSH:
        host = "h"
        user = "u"
        port = 2200
        identity_file = None
        proxy_jump = None
        known_hosts = "~/kh"
        transport = "paramiko"
        connect_timeout = 5.0

    s = ssh.SSHSettings.from_obj(SiteSSH(), site="mysite")
    assert (s.host, s.user, s.port, s.known_hosts, s.connect_timeout, s.site) == ("h", "u", 2200, "~/kh", 5.0, "mysite")


HOSTILE = ["plain", "with space", "it's", '"dq"', "$(id)", "`id`", "a\nb", "\\", "*", "~", "-n", "", "x=y", "é\u202e"]


@pytest.mark.parametrize("first", ["printf", "if", "x=y", "!"])
def test_build_command_is_literal_in_sh(first: str, tmp_path: Path) -> None:
    cmd = build_command([first, *HOSTILE])
    # the first word is always quoted: never a keyword or an assignment
    assert cmd.startswith("'")
    probe = tmp_path / first.replace("!", "bang")
    probe.write_text('#!/bin/sh\nprintf "%s\\0" "$@"\n')
    probe.chmod(0o755)
    res = subprocess.run(["sh", "-c", build_command([str(probe), *HOSTILE])], capture_output=True, check=True)
    assert res.stdout.split(b"\0")[:-1] == [h.encode() for h in HOSTILE]


def test_build_command_env_and_cwd(tmp_path: Path) -> None:
    env = {"A": "it's $(x)\n", "B": ""}
    cmd = build_command(["sh", "-c", 'printf "%s|%s|" "$A" "$B"; pwd'], env=env, cwd=str(tmp_path / "d i r"))
    (tmp_path / "d i r").mkdir()
    res = subprocess.run(["sh", "-c", cmd], capture_output=True, check=True)
    assert res.stdout == f"it's $(x)\n||{tmp_path}/d i r\n".encode()
    assert build_command(["pwd"], cwd="~/x y").startswith('cd "$HOME"/')
    with pytest.raises(ValueError):
        build_command(["true"], env={"1BAD": "x"})
    with pytest.raises(ValueError):
        build_command(["a\0b"])
    with pytest.raises(ValueError):
        build_command(["x=y"], env={"A": "1"})
    assert shlex.split(build_command(["echo", "a b"])) == ["echo", "a b"]
