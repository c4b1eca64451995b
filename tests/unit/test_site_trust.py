"""``hpcjobs site trust`` policy (hpcjobs.site_trust.trust), without a network.

Unknown keys are written to hpcjobs' own known_hosts; a changed key only with
``replace`` and only when the old line is hpcjobs' own; revoked keys never; the user's
OpenSSH files are never written.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

pytest.importorskip("paramiko")

from hpcjobs.errors import HostKeyError
from hpcjobs.site_trust import Hop, trust
from hpcjobs.transport import known_hosts as kh
from hpcjobs.transport.ssh import HostKey, HostKeyCheck


def _ed25519(seed: int) -> tuple[str, str]:
    """A syntactically valid ssh-ed25519 public key blob (type, base64)."""
    kt = b"ssh-ed25519"
    body = bytes([seed]) * 32
    blob = len(kt).to_bytes(4, "big") + kt + len(body).to_bytes(4, "big") + body
    return "ssh-ed25519", base64.b64encode(blob).decode()


def _hop(files: list[Path], seed: int, port: int = 2222) -> Hop:
    key_type, b64 = _ed25519(seed)
    blob = base64.b64decode(b64)
    verdict = kh.KnownHosts.load(files).check("login.example", port, blob)
    key = HostKey(key_type, b64, kh.fingerprint_sha256(blob))
    check = HostKeyCheck("login.example", port, key, verdict.status, verdict, tuple(map(str, files)))
    return Hop(
        host="login.example",
        port=port,
        key_type=key_type,
        fingerprint=key.fingerprint,
        status=verdict.status.value,
        is_target=True,
        conflicts=[e.where for e in verdict.entries] if verdict.status is not kh.HostKeyStatus.OK else [],
        check=check,
    )


def test_unknown_key_is_written_to_our_file_only(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "ssh_known_hosts"
    theirs.write_text("other.example ssh-ed25519 " + _ed25519(9)[1] + "\n")
    before = theirs.read_bytes()
    hop = _hop([theirs, ours], 1)
    assert hop.status == "unknown"
    line = trust(hop, known_hosts_path=ours)
    assert line.startswith("[login.example]:2222 ssh-ed25519 ")
    assert ours.read_text() == line + "\n"
    assert oct(os.stat(ours).st_mode & 0o777) == "0o600"
    assert theirs.read_bytes() == before
    assert _hop([theirs, ours], 1).status == "ok"


def test_changed_key_needs_replace_and_our_own_line(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    ours.write_text(f"[login.example]:2222 ssh-ed25519 {_ed25519(1)[1]}\n")
    hop = _hop([ours], 2)
    assert hop.status == "changed"
    with pytest.raises(HostKeyError, match="CHANGED"):
        trust(hop, known_hosts_path=ours)
    assert _ed25519(1)[1] in ours.read_text()
    trust(hop, replace=True, known_hosts_path=ours)
    text = ours.read_text()
    assert _ed25519(2)[1] in text and _ed25519(1)[1] not in text


def test_changed_key_recorded_in_a_user_file_is_never_overridden(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "known_hosts"
    theirs.write_text(f"[login.example]:2222 ssh-ed25519 {_ed25519(1)[1]}\n")
    hop = _hop([theirs, ours], 2)
    with pytest.raises(HostKeyError, match="never edits"):
        trust(hop, replace=True, known_hosts_path=ours)
    assert not ours.exists()


def test_revoked_key_is_never_trusted(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "known_hosts"
    theirs.write_text(f"@revoked * ssh-ed25519 {_ed25519(3)[1]}\n")
    hop = _hop([theirs, ours], 3)
    assert hop.status == "revoked"
    with pytest.raises(HostKeyError, match="revoked"):
        trust(hop, replace=True, known_hosts_path=ours)
    assert not ours.exists()
