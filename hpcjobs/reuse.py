"""Pipeline step reuse: a step that would compute what a completed run already computed is not run again.

As in Azure ML (``how-to-debug-pipeline-reuse-issues.md``), a step is reused when its
component is deterministic, ``settings.force_rerun`` is off, and nothing that decides
its result changed since a completed run of a step (of any pipeline) on the same site:

* the command (component name and version, and the command text itself),
* the code snapshot's content digest,
* the environment and the run settings (compute, resources, distribution, timeout,
  environment variables),
* the inputs as bound: literal values; data paths with a fingerprint of their content
  when they are on this machine; and for data coming from an upstream step, *that step's*
  key -- so a chain of unchanged steps is reused as a whole, and a changed step makes
  everything downstream of it run again,
* the output settings (types, modes, explicit paths).

The key is a SHA-256 of all that as canonical JSON (:func:`step_key`).  The index is a
small table in the job store, ``step_reuse(key, site, job_name)``, written when the
steps are submitted (:func:`record`); a lookup (:func:`lookup`) joins it with the jobs
table and accepts only runs whose state is Completed, newest first.

Not in the key: the step's name and the pipeline's name (the same component in another
pipeline is the same computation).  Not checked: that the reused run's output folders
still exist; a user who deleted them reruns with ``--set settings.force_rerun=true``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcjobs.spec import models as m

if TYPE_CHECKING:
    import sqlite3

    from hpcjobs.plan_pipeline import StepSpec
    from hpcjobs.store import JobRecord, Store

KEY_VERSION = 1
#: stop fingerprinting a data folder after this many entries (the key then says so)
MAX_FINGERPRINT_ENTRIES = 20000

_TABLE = """CREATE TABLE IF NOT EXISTS step_reuse (
    key TEXT NOT NULL,
    site TEXT NOT NULL,
    job_name TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (key, site, job_name)
)"""
_INDEX = "CREATE INDEX IF NOT EXISTS step_reuse_job ON step_reuse(job_name)"


# --------------------------------------------------------------------------- keys
def _dump(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    return str(value)


def input_identity(value: Any, upstream_keys: dict[str, str | None], digests: dict[str, str]) -> list[Any] | None:
    """What identifies one bound input for reuse; None when it cannot be identified."""
    from hpcjobs.plan_pipeline import Upstream

    if isinstance(value, Upstream):
        up = upstream_keys.get(value.step)
        if up is None:
            # the upstream step runs afresh every time: its output is new data
            return None
        return ["step", up, value.output, value.type, value.mode]
    if isinstance(value, m.LiteralInput):
        return ["literal", value.type, value.value]
    assert isinstance(value, m.DataInput)
    return ["data", value.type, value.mode, value.path, digests.get(value.path or "")]


def step_key(spec: StepSpec, upstream_keys: dict[str, str | None], digests: dict[str, str], site: str) -> str | None:
    """The reuse key of a step, or None if the step must always run."""
    if not spec.deterministic:
        return None
    code_digest = None
    if spec.code:
        code_digest = digests.get(spec.code)
        if code_digest is None:
            # planned without hashing its code (job validate): never claim a match
            return None
    inputs: dict[str, Any] = {}
    for name, value in sorted(spec.inputs.items()):
        ident = input_identity(value, upstream_keys, digests)
        if ident is None:
            return None
        inputs[name] = ident
    identity = {
        "v": KEY_VERSION,
        "site": site,
        "kind": spec.kind,
        "component": [spec.component_name, spec.component_version] if spec.component_name else None,
        "command": spec.command,
        "code": code_digest,
        "environment": _dump(spec.environment),
        "environment_variables": {k: _dump(v) for k, v in sorted(spec.env_vars.items())},
        "compute": spec.compute_name,
        "resources": _dump(spec.resources),
        "distribution": _dump(spec.distribution),
        "timeout": spec.timeout,
        "inputs": inputs,
        "outputs": {n: [o.type, o.mode, o.path] for n, o in sorted(spec.outputs.items())},
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def fingerprint(path: str) -> str | None:
    """A cheap fingerprint of a local file or folder (names, sizes, modification times); None if absent."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    h = hashlib.sha256()
    if not p.is_dir():
        h.update(f"F|{st.st_size}|{st.st_mtime_ns}".encode())
        return h.hexdigest()[:32]
    count = 0
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames.sort()
        for fname in sorted(filenames):
            full = os.path.join(dirpath, fname)
            try:
                fst = os.stat(full)
            except OSError:
                continue
            rel = os.path.relpath(full, p)
            h.update(f"{rel}|{fst.st_size}|{fst.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
            count += 1
            if count >= MAX_FINGERPRINT_ENTRIES:
                # too big to fingerprint cheaply: make the key unique so the step always runs
                h.update(f"truncated|{time.time_ns()}".encode())
                return h.hexdigest()[:32]
    return h.hexdigest()[:32]


# --------------------------------------------------------------------------- index
def _ensure(conn: sqlite3.Connection) -> None:
    conn.execute(_TABLE)
    conn.execute(_INDEX)


def record(store: Store, site: str, children: list[dict[str, Any]]) -> int:
    """Index the submitted steps of a pipeline by their reuse keys; return how many."""
    rows = [
        (c["extra"]["reuse_key"], site, c["name"], time.time())
        for c in children
        if (c.get("extra") or {}).get("reuse_key") and not c["extra"].get("reused_from")
    ]
    if not rows:
        return 0
    with store.write() as conn:
        _ensure(conn)
        conn.executemany("INSERT OR IGNORE INTO step_reuse (key, site, job_name, created) VALUES (?, ?, ?, ?)", rows)
    return len(rows)


def _candidates(store: Store, site: str, keys: list[str]) -> list[tuple[str, str]]:
    # read only (a dry run looks here too): no table yet means no index yet
    conn = store._conn()
    if store._retry(lambda: conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'step_reuse'").fetchone()) is None:
        return []
    out: list[tuple[str, str]] = []
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        marks = ", ".join("?" for _ in chunk)
        sql = (
            "SELECT r.key, r.job_name FROM step_reuse r JOIN jobs j ON j.name = r.job_name "  # noqa: S608 - placeholders only
            f"WHERE r.site = ? AND r.key IN ({marks}) AND j.status NOT IN ('Failed', 'Canceled') "
            "ORDER BY COALESCE(j.ended, j.created) DESC"
        )
        rows = store._retry(lambda sql=sql, chunk=chunk: conn.execute(sql, [site, *chunk]).fetchall())
        out.extend((row[0], row[1]) for row in rows)
    return out


def _entry(rec: JobRecord) -> dict[str, Any]:
    return {
        "name": rec.name,
        "job_dir": rec.job_dir,
        "outputs": dict(rec.extra.get("outputs") or {}),
        "started": rec.started,
        "ended": rec.ended,
        "state_dir": rec.extra.get("state_dir"),
    }


def lookup(store: Store, site: str, keys: list[str], *, refresh: bool = False) -> dict[str, dict[str, Any]]:
    """Completed step runs on *site* for each of *keys* (the newest one per key).

    With *refresh*, candidate runs that the store still shows queued or running are
    brought up to date first (one status query for all of them), so a pipeline that
    finished while nobody looked is reusable at once.
    """
    from hpcjobs.status import JobStatus

    if not keys or not store.path.exists():
        return {}
    cands = _candidates(store, site, sorted(set(keys)))
    if not cands:
        return {}
    recs = {name: store.get(name) for _, name in cands}
    pending = [r for r in recs.values() if not JobStatus(r.status).is_terminal]
    if refresh and pending:
        from hpcjobs.api import refresh as refresh_records

        for r in refresh_records(pending, store):
            recs[r.name] = r
    found: dict[str, dict[str, Any]] = {}
    for key, name in cands:
        rec = recs[name]
        if key in found or rec.status != JobStatus.COMPLETED.value or rec.extra.get("reused_from"):
            continue
        found[key] = _entry(rec)
    return found
