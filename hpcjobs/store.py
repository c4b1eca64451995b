"""The job store: one SQLite file in the state dir.

Safe under several CLI processes at once: WAL journal, a generous busy timeout, and
``BEGIN IMMEDIATE`` for writes with a retry loop, so "database is locked" never
reaches the user.  (WAL needs a local filesystem; the state dir is local by default.)
"""

from __future__ import annotations

import builtins
import json
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from hpcjobs import paths
from hpcjobs.errors import NotFoundError, RuntimeFailure, UserError, known_list_hint

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    site TEXT NOT NULL,
    compute TEXT,
    status TEXT NOT NULL,
    display_name TEXT,
    experiment_name TEXT,
    description TEXT,
    tags TEXT NOT NULL DEFAULT '{}',
    properties TEXT NOT NULL DEFAULT '{}',
    slurm_ids TEXT NOT NULL DEFAULT '[]',
    token TEXT NOT NULL,
    job_dir TEXT,
    parent TEXT,
    created REAL NOT NULL,
    submitted REAL,
    started REAL,
    ended REAL,
    exit_code INTEGER,
    reason TEXT,
    nodes TEXT,
    extra TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_parent ON jobs(parent);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created);
CREATE INDEX IF NOT EXISTS jobs_site ON jobs(site, status);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""

_JSON_FIELDS = ("tags", "properties", "slurm_ids", "extra")
#: ``json.dumps(value, sort_keys=True)`` without building an encoder for every value
#: (a 1000-trial sweep writes 5000 of them)
_dumps = json.JSONEncoder(sort_keys=True).encode


@dataclass
class JobRecord:
    """One job (or one pipeline step / sweep) as the store keeps it."""

    name: str
    type: str
    site: str
    status: str
    token: str
    compute: str | None = None
    display_name: str | None = None
    experiment_name: str | None = None
    description: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    slurm_ids: list[str] = field(default_factory=list)
    job_dir: str | None = None
    parent: str | None = None
    created: float = 0.0
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    reason: str | None = None
    nodes: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        # not dataclasses.asdict: it deep-copies every dict only for them to be encoded
        row = {name: getattr(self, name) for name in _FIELD_NAMES}
        for f in _JSON_FIELDS:
            row[f] = _dumps(row[f])
        return row

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRecord:
        data = dict(row)
        for f in _JSON_FIELDS:
            text = data[f]
            # most are empty: no decoder call for those (a sweep's trials are read back whole)
            if not text:
                data[f] = [] if f == "slurm_ids" else {}
            elif text == "{}":
                data[f] = {}
            elif text == "[]":
                data[f] = []
            else:
                data[f] = json.loads(text)
        return cls(**data)


_FIELD_NAMES = tuple(f.name for f in dataclass_fields(JobRecord))


def default_path() -> Path:
    return paths.state_dir() / "jobs.db"


class Store:
    """Access to the job store.  Cheap to create; one connection per thread."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self._local = threading.local()

    # -- connection -----------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
            conn.row_factory = sqlite3.Row
            self._retry(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._retry(lambda: conn.executescript(_SCHEMA))
            self._local.conn = conn
        return conn

    @staticmethod
    def _retry(fn: Any, attempts: int = 200) -> Any:
        delay = 0.005
        for i in range(attempts):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if i == attempts - 1:
                    raise RuntimeFailure("the job store stayed busy for too long; try again") from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.25)
        return None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE), retried while another process holds the lock."""
        conn = self._conn()
        self._retry(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            self._retry(lambda: conn.execute("COMMIT"))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- jobs -----------------------------------------------------------------------
    def add(self, rec: JobRecord) -> None:
        """Insert a new job; its name must be unique."""
        row = rec.to_row()
        cols = ", ".join(row)
        marks = ", ".join(f":{k}" for k in row)
        with self.write() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE name = ?", (rec.name,)).fetchone():
                raise UserError(f"a job named '{rec.name}' already exists", hint="job names are unique; choose another --name")
            conn.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", row)  # noqa: S608 - fixed column names

    def add_many(self, recs: Sequence[JobRecord]) -> None:
        """Insert several jobs in one transaction (a pipeline's steps, a sweep's trials)."""
        if not recs:
            return
        cols = ", ".join(_FIELD_NAMES)
        marks = ", ".join(f":{k}" for k in _FIELD_NAMES)
        rows = [rec.to_row() for rec in recs]
        with self.write() as conn:
            conn.executemany(f"INSERT OR REPLACE INTO jobs ({cols}) VALUES ({marks})", rows)  # noqa: S608 - fixed column names

    def exists(self, name: str) -> bool:
        return self._retry(lambda: self._conn().execute("SELECT 1 FROM jobs WHERE name = ?", (name,)).fetchone()) is not None

    def get(self, name: str) -> JobRecord:
        row = self._retry(lambda: self._conn().execute("SELECT * FROM jobs WHERE name = ?", (name,)).fetchone())
        if row is None:
            recent = [r[0] for r in self._conn().execute("SELECT name FROM jobs ORDER BY created DESC LIMIT 200")]
            raise NotFoundError(
                f"no job named '{name}'",
                hint=known_list_hint(name, recent, "recent jobs")
                if recent
                else "no jobs yet; create one with hpcjobs job create -f FILE",
            )
        return JobRecord.from_row(row)

    def find_token(self, token: str) -> JobRecord | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE token = ?", (token,)).fetchone()
        return JobRecord.from_row(row) if row else None

    def update(self, name: str, **fields: Any) -> None:
        """Set *fields* of job *name* (JSON fields replaced whole)."""
        if not fields:
            return
        for f in _JSON_FIELDS:
            if f in fields:
                fields[f] = _dumps(fields[f])
        sets = ", ".join(f"{k} = :{k}" for k in fields)
        with self.write() as conn:
            cur = conn.execute(f"UPDATE jobs SET {sets} WHERE name = :name", {**fields, "name": name})  # noqa: S608
            if cur.rowcount == 0:
                raise NotFoundError(f"no job named '{name}'")

    def update_many(self, updates: dict[str, dict[str, Any]]) -> None:
        """Apply many updates in one transaction (a status refresh)."""
        if not updates:
            return
        with self.write() as conn:
            for name, fields in updates.items():
                if not fields:
                    continue
                for f in _JSON_FIELDS:
                    if f in fields:
                        fields[f] = _dumps(fields[f])
                sets = ", ".join(f"{k} = :{k}" for k in fields)
                conn.execute(f"UPDATE jobs SET {sets} WHERE name = :name", {**fields, "name": name})  # noqa: S608

    def delete(self, name: str) -> None:
        with self.write() as conn:
            conn.execute("DELETE FROM jobs WHERE name = ? OR parent = ?", (name, name))

    def list(
        self,
        *,
        status: Sequence[str] | None = None,
        site: str | None = None,
        experiment: str | None = None,
        tags: dict[str, str | None] | None = None,
        parent: str | None = None,
        top_level: bool = False,
        limit: int | None = None,
        active_only: bool = False,
    ) -> list[JobRecord]:
        """Jobs matching the filters, newest first."""
        where: list[str] = []
        args: list[Any] = []
        if status:
            where.append(f"status IN ({', '.join('?' for _ in status)})")
            args.extend(status)
        if site:
            where.append("site = ?")
            args.append(site)
        if experiment:
            where.append("experiment_name = ?")
            args.append(experiment)
        if parent:
            where.append("parent = ?")
            args.append(parent)
        elif top_level:
            where.append("parent IS NULL")
        if active_only:
            where.append("status NOT IN ('Completed', 'Failed', 'Canceled')")
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, name"
        if limit and not tags:
            sql += f" LIMIT {int(limit)}"
        rows = self._retry(lambda: self._conn().execute(sql, args).fetchall())
        out = [JobRecord.from_row(r) for r in rows]
        if tags:
            out = [r for r in out if all((k in r.tags) and (v is None or r.tags.get(k) == v) for k, v in tags.items())]
            if limit:
                out = out[:limit]
        return out

    def children(self, parent: str) -> builtins.list[JobRecord]:
        rows = self._conn().execute("SELECT * FROM jobs WHERE parent = ? ORDER BY created, name", (parent,)).fetchall()
        return [JobRecord.from_row(r) for r in rows]

    # -- meta (small cached facts: a site's remote home and user, ...) -------------------
    def get_meta(self, key: str) -> str | None:
        """The value stored under *key* in the meta table, if any."""
        row = self._retry(lambda: self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone())
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store *value* under *key* in the meta table (replacing it)."""
        with self.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def integrity_ok(self) -> bool:
        row = self._conn().execute("PRAGMA integrity_check").fetchone()
        return bool(row and row[0] == "ok")
