"""An OpenSSH ``known_hosts`` parser that hpcjobs owns.

paramiko's own loader splits every line into exactly three fields, so a single
``@revoked`` or ``@cert-authority`` line makes it reject the whole file; worse, a
fallback that skipped those lines would silently *trust* a revoked key.  This module
understands the full format instead:

* plain host patterns, lists of them, wildcards (``*``, ``?``) and negations
  (``*.uni.edu,!bad.uni.edu``), matched case-insensitively;
* hashed host names (``|1|salt|hash``, HMAC-SHA1 as written by ``ssh-keygen -H``);
* ``[host]:port`` names for non-standard ports;
* ``@revoked`` lines: the key is refused, even where another line lists it as known.
  Revocation here applies to the key under *any* host pattern (stricter than OpenSSH,
  which only consults revoked lines whose patterns match): a revoked key is
  compromised, whatever host presents it;
* ``@cert-authority`` lines: kept for display but never used for trust, because
  paramiko cannot verify host certificates.  They neither break loading nor make an
  unknown key trusted;
* comments, blank lines and malformed lines (skipped, with a warning kept).

It does not import paramiko, so it stays cheap to import and easy to unit-test; keys
are compared as raw SSH wire blobs.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MARKER_REVOKED = "revoked"
MARKER_CERT_AUTHORITY = "cert-authority"

_HASH_MAGIC = "|1|"


def default_user_known_hosts() -> Path:
    """``~/.ssh/known_hosts``."""
    return Path.home() / ".ssh" / "known_hosts"


def hpcjobs_known_hosts() -> Path:
    """hpcjobs' own known_hosts file, written by ``hpcjobs site trust``.

    It lives in the hpcjobs configuration directory (``$HPCJOBS_HOME/config`` or
    ``$XDG_CONFIG_HOME/hpcjobs``) so that trusting a cluster for hpcjobs never edits the
    user's OpenSSH files.
    """
    from hpcjobs.paths import config_dir

    return config_dir() / "known_hosts"


def default_known_hosts_files() -> list[Path]:
    """The files consulted when nothing else is configured, in OpenSSH's order plus ours."""
    return [
        default_user_known_hosts(),
        Path("/etc/ssh/ssh_known_hosts"),
        hpcjobs_known_hosts(),
    ]


def host_key_name(host: str, port: int) -> str:
    """The name OpenSSH looks up: ``host`` on port 22, ``[host]:port`` otherwise."""
    host = host.lower()
    if port == 22:
        return host
    return f"[{host}]:{port}"


def fingerprint_sha256(blob: bytes) -> str:
    """OpenSSH's fingerprint of a public key blob: ``SHA256:`` + unpadded base64."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def blob_key_type(blob: bytes) -> str:
    """The key type named inside an SSH public key blob (its first wire string)."""
    if len(blob) < 4:
        raise ValueError("key blob too short")
    (n,) = struct.unpack(">I", blob[:4])
    if n == 0 or n > 64 or len(blob) < 4 + n:
        raise ValueError("key blob has no valid type string")
    return blob[4 : 4 + n].decode("ascii")


def _match_pattern(name: str, pattern: str) -> bool:
    """OpenSSH ``match_pattern``: ``*`` and ``?`` wildcards, nothing else special."""
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, name, flags=re.DOTALL) is not None


def _match_hashed(name: str, pattern: str) -> bool:
    try:
        _, _, salt_b64, hash_b64 = pattern.split("|", 3)
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    got = hmac.new(salt, name.encode("utf-8"), hashlib.sha1).digest()
    return hmac.compare_digest(got, expected)


def match_host_patterns(name: str, patterns: str) -> bool:
    """Whether *name* (as from :func:`host_key_name`) matches a known_hosts host field.

    A hashed field matches only by its HMAC.  In a pattern list, a matching negated
    pattern (``!pat``) vetoes the line even when a positive pattern matches.
    """
    name = name.lower()
    if patterns.startswith(_HASH_MAGIC):
        return _match_hashed(name, patterns)
    positive = False
    for raw in patterns.split(","):
        pat = raw.strip().lower()
        if not pat:
            continue
        if pat.startswith("!"):
            if _match_pattern(name, pat[1:]):
                return False
        elif _match_pattern(name, pat):
            positive = True
    return positive


@dataclass(frozen=True)
class KnownHostEntry:
    """One key line of a known_hosts file."""

    patterns: str
    key_type: str
    key_b64: str
    blob: bytes
    marker: str | None = None
    comment: str = ""
    source: str = "<string>"
    line: int = 0

    @property
    def fingerprint(self) -> str:
        """SHA256 fingerprint of the key on this line."""
        return fingerprint_sha256(self.blob)

    @property
    def where(self) -> str:
        """``file:line`` of this entry, for messages."""
        return f"{self.source}:{self.line}"

    def matches(self, host: str, port: int) -> bool:
        """Whether this line's host field covers *host* on *port*."""
        return match_host_patterns(host_key_name(host, port), self.patterns)


class HostKeyStatus(enum.Enum):
    """The outcome of checking a presented host key."""

    OK = "ok"
    UNKNOWN = "unknown"
    CHANGED = "changed"
    REVOKED = "revoked"


@dataclass
class HostKeyVerdict:
    """What :meth:`KnownHosts.check` concluded, with the lines that made it so."""

    status: HostKeyStatus
    host: str
    port: int
    key_type: str
    fingerprint: str
    #: OK: the trusting lines; CHANGED: the conflicting lines; REVOKED: the revoking lines
    entries: list[KnownHostEntry] = field(default_factory=list)
    #: UNKNOWN: key types that *are* known for this host (the server offered another)
    other_types: list[str] = field(default_factory=list)


class KnownHosts:
    """The merged content of one or more known_hosts files."""

    def __init__(self) -> None:
        self.entries: list[KnownHostEntry] = []
        #: malformed or unreadable input, as ``file:line: problem`` strings
        self.warnings: list[str] = []
        self.files: list[Path] = []

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def load(cls, paths: Iterable[str | os.PathLike[str]]) -> KnownHosts:
        """Load every existing file of *paths* (missing files are silently skipped)."""
        kh = cls()
        for p in paths:
            kh.load_file(p)
        return kh

    def load_file(self, path: str | os.PathLike[str]) -> None:
        """Add the entries of one file; a missing file adds nothing."""
        p = Path(os.path.expanduser(os.fspath(path)))
        try:
            text = p.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        except OSError as e:
            self.warnings.append(f"{p}: cannot read: {e.strerror or e}")
            return
        self.files.append(p)
        self.parse(text, source=str(p))

    def parse(self, text: str, source: str = "<string>") -> None:
        """Add the entries found in *text*."""
        for lineno, raw in enumerate(text.splitlines(), start=1):
            entry = self._parse_line(raw, source, lineno)
            if entry is not None:
                self.entries.append(entry)

    def _parse_line(self, raw: str, source: str, lineno: int) -> KnownHostEntry | None:
        line = raw.strip()
        if not line or line.startswith("#"):
            return None
        fields = line.split()
        marker: str | None = None
        if fields[0].startswith("@"):
            marker = fields[0][1:]
            if marker not in (MARKER_REVOKED, MARKER_CERT_AUTHORITY):
                self.warnings.append(f"{source}:{lineno}: unknown marker '@{marker}' (line ignored)")
                return None
            fields = fields[1:]
        if len(fields) < 3:
            self.warnings.append(f"{source}:{lineno}: expected 'hosts keytype key' (line ignored)")
            return None
        patterns, key_type, key_b64 = fields[0], fields[1], fields[2]
        comment = " ".join(fields[3:])
        try:
            blob = base64.b64decode(key_b64, validate=True)
            inner_type = blob_key_type(blob)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            self.warnings.append(f"{source}:{lineno}: invalid key data (line ignored)")
            return None
        if inner_type != key_type:
            self.warnings.append(
                f"{source}:{lineno}: key type '{key_type}' does not match its data ('{inner_type}') (line ignored)"
            )
            return None
        return KnownHostEntry(
            patterns=patterns,
            key_type=key_type,
            key_b64=key_b64,
            blob=blob,
            marker=marker,
            comment=comment,
            source=source,
            line=lineno,
        )

    # -- queries ----------------------------------------------------------------------
    def plain_entries_for(self, host: str, port: int) -> list[KnownHostEntry]:
        """Unmarked (trust-granting) lines whose patterns cover *host*:*port*."""
        return [e for e in self.entries if e.marker is None and e.matches(host, port)]

    def known_key_types(self, host: str, port: int) -> list[str]:
        """Key types known for the host, in file order, without duplicates."""
        out: list[str] = []
        for e in self.plain_entries_for(host, port):
            if e.key_type not in out:
                out.append(e.key_type)
        return out

    def revoked_entries(self, blob: bytes) -> list[KnownHostEntry]:
        """``@revoked`` lines that name this key (under any host pattern)."""
        return [e for e in self.entries if e.marker == MARKER_REVOKED and e.blob == blob]

    def check(self, host: str, port: int, blob: bytes) -> HostKeyVerdict:
        """Decide whether the server key *blob* presented by *host*:*port* is trusted.

        Revocation wins over everything; then an exact match trusts; then a different
        key of the same type for this host means the key CHANGED; otherwise UNKNOWN.
        ``@cert-authority`` lines are never consulted.
        """
        key_type = blob_key_type(blob)
        verdict = HostKeyVerdict(
            status=HostKeyStatus.UNKNOWN,
            host=host,
            port=port,
            key_type=key_type,
            fingerprint=fingerprint_sha256(blob),
        )
        revoked = self.revoked_entries(blob)
        if revoked:
            verdict.status = HostKeyStatus.REVOKED
            verdict.entries = revoked
            return verdict
        candidates = self.plain_entries_for(host, port)
        same = [e for e in candidates if e.blob == blob]
        if same:
            verdict.status = HostKeyStatus.OK
            verdict.entries = same
            return verdict
        conflicting = [e for e in candidates if e.key_type == key_type]
        if conflicting:
            verdict.status = HostKeyStatus.CHANGED
            verdict.entries = conflicting
            return verdict
        verdict.other_types = sorted({e.key_type for e in candidates})
        return verdict


# -- writing -----------------------------------------------------------------------------
def format_known_hosts_line(host: str, port: int, key_type: str, key_b64: str) -> str:
    """One OpenSSH known_hosts line (without newline) for *host*:*port*."""
    return f"{host_key_name(host, port)} {key_type} {key_b64}"


def add_known_host(
    path: str | os.PathLike[str],
    host: str,
    port: int,
    key_type: str,
    key_b64: str,
    *,
    revoked_in: Sequence[str | os.PathLike[str]] = (),
) -> str:
    """Record *host*:*port* → key in *path*, returning the line written.

    Earlier lines in *path* for exactly the same host name and key type are replaced
    (so re-trusting after an expected key change leaves no stale line behind); every
    other line is kept byte for byte.  The file and its directory are created private
    (0600 / 0700) and replaced atomically.  A key that is ``@revoked`` in *path* or in
    any of *revoked_in* is refused with :class:`ValueError`.
    """
    try:
        blob = base64.b64decode(key_b64, validate=True)
    except (ValueError, binascii.Error) as e:
        raise ValueError(f"invalid base64 key data: {e}") from None
    if blob_key_type(blob) != key_type:
        raise ValueError(f"key data is a {blob_key_type(blob)} key, not {key_type}")
    target = Path(os.path.expanduser(os.fspath(path)))
    check = KnownHosts.load([*revoked_in, target])
    revoked = check.revoked_entries(blob)
    if revoked:
        raise ValueError(f"refusing to trust a revoked key ({fingerprint_sha256(blob)}, revoked at {revoked[0].where})")
    name = host_key_name(host, port)
    new_line = format_known_hosts_line(host, port, key_type, key_b64)

    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        old_lines = target.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        old_lines = []
    kept: list[str] = []
    for raw in old_lines:
        fields = raw.split()
        if len(fields) >= 2 and fields[0] == name and fields[1] == key_type:
            continue
        kept.append(raw)
    kept.append(new_line)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(kept) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return new_line
