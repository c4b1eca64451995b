"""Tests for the SQLite job store: CRUD, filters, and real concurrent writers."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
import traceback
from pathlib import Path

import pytest

from hpcjobs.errors import NotFoundError, UserError
from hpcjobs.store import JobRecord, Store, default_path


def rec(name: str, **kw: object) -> JobRecord:
    base: dict[str, object] = {
        "type": "command",
        "site": "local",
        "status": "Queued",
        "token": f"tok-{name}",
        "created": time.time(),
    }
    base.update(kw)
    return JobRecord(name=name, **base)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "jobs.db")
    yield s  # type: ignore[misc]
    s.close()


def test_default_path_follows_hpcjobs_home(hpcjobs_home: Path) -> None:
    assert default_path() == hpcjobs_home / "state" / "jobs.db"
    s = Store()
    s.add(rec("a"))
    assert (hpcjobs_home / "state" / "jobs.db").is_file()
    s.close()


def test_add_get_roundtrip(store: Store) -> None:
    r = rec(
        "job_1",
        display_name="Display ✓ \u202e",
        experiment_name="exp",
        description="multi\nline",
        tags={"a": "1", "none": None},
        properties={"p": "q"},
        slurm_ids=["123", "124_0"],
        job_dir="/x/job_1",
        compute="cpu",
        extra={"outputs": {"m": "/x/m"}, "nested": [1, {"k": True}]},
        exit_code=0,
        nodes="node1",
    )
    store.add(r)
    got = store.get("job_1")
    assert got == r
    assert store.exists("job_1") and not store.exists("job_2")
    assert store.find_token("tok-job_1") == r
    assert store.find_token("nope") is None


def test_names_are_unique(store: Store) -> None:
    store.add(rec("a"))
    with pytest.raises(UserError, match="already exists"):
        store.add(rec("a"))


def test_get_unknown_suggests(store: Store) -> None:
    store.add(rec("happy_cat_1234567890"))
    with pytest.raises(NotFoundError) as info:
        store.get("happy_cat_123456789")
    assert "did you mean 'happy_cat_1234567890'" in (info.value.hint or "")


def test_get_in_an_empty_store(store: Store) -> None:
    with pytest.raises(NotFoundError) as info:
        store.get("x")
    assert "no jobs yet" in (info.value.hint or "")


def test_update_and_update_many(store: Store) -> None:
    store.add(rec("a"))
    store.add(rec("b"))
    store.update("a", status="Running", started=10.0, tags={"x": "y"}, slurm_ids=["9"])
    got = store.get("a")
    assert (got.status, got.started, got.tags, got.slurm_ids) == ("Running", 10.0, {"x": "y"}, ["9"])
    store.update_many(
        {"a": {"status": "Completed", "exit_code": 0}, "b": {"status": "Failed", "exit_code": 3, "extra": {"r": 1}}}
    )
    assert store.get("a").status == "Completed"
    b = store.get("b")
    assert (b.status, b.exit_code, b.extra) == ("Failed", 3, {"r": 1})
    with pytest.raises(NotFoundError):
        store.update("nope", status="Failed")
    store.update("a")  # nothing to do is fine
    store.update_many({})


def test_add_many_and_children_and_delete(store: Store) -> None:
    store.add(rec("parent", type="pipeline", created=1.0))
    store.add_many([rec("parent.b", parent="parent", created=3.0), rec("parent.a", parent="parent", created=2.0)])
    assert [c.name for c in store.children("parent")] == ["parent.a", "parent.b"]
    store.delete("parent")
    assert not store.exists("parent") and not store.exists("parent.a") and store.children("parent") == []


def test_add_many_roundtrips_every_field_and_keeps_records_unchanged(store: Store) -> None:
    full = rec("p.full", parent="p", tags={"t": "1"}, properties={"k": "v"}, slurm_ids=["1_0"], extra={"a": [1, {"b": None}]})
    empty = rec("p.empty", parent="p", tags={}, properties={}, slurm_ids=[], extra={})
    before = [dict(vars(full)), dict(vars(empty))]
    store.add_many([full, empty])
    assert [dict(vars(full)), dict(vars(empty))] == before
    assert {c.name: c for c in store.children("p")} == {"p.full": full, "p.empty": empty}
    got = store.get("p.empty")
    assert (got.tags, got.properties, got.slurm_ids, got.extra) == ({}, {}, [], {})
    assert got.tags is not store.get("p.empty").tags  # fresh containers per record


def test_list_filters(store: Store) -> None:
    store.add(rec("old", created=1.0, status="Completed", experiment_name="e1", tags={"team": "a"}))
    store.add(rec("mid", created=2.0, status="Failed", experiment_name="e2", tags={"team": "b", "x": None}, site="cluster"))
    store.add(rec("new", created=3.0, status="Running", experiment_name="e1"))
    store.add(rec("new.child", created=4.0, status="Running", parent="new"))
    names = lambda rs: [r.name for r in rs]  # noqa: E731
    assert names(store.list()) == ["new.child", "new", "mid", "old"]
    assert names(store.list(top_level=True)) == ["new", "mid", "old"]
    assert names(store.list(status=["Completed", "Failed"])) == ["mid", "old"]
    assert names(store.list(site="cluster")) == ["mid"]
    assert names(store.list(experiment="e1")) == ["new", "old"]
    assert names(store.list(tags={"team": None})) == ["mid", "old"]
    assert names(store.list(tags={"team": "b"})) == ["mid"]
    assert names(store.list(tags={"x": None})) == ["mid"]
    assert names(store.list(tags={"team": "c"})) == []
    assert names(store.list(parent="new")) == ["new.child"]
    assert names(store.list(limit=2)) == ["new.child", "new"]
    assert names(store.list(tags={"team": None}, limit=1)) == ["mid"]
    assert names(store.list(active_only=True, top_level=True)) == ["new"]


def test_integrity(store: Store) -> None:
    store.add(rec("a"))
    assert store.integrity_ok()


def test_store_is_usable_from_several_threads(store: Store) -> None:
    import threading

    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(20):
                store.add(rec(f"t{t}_{i}"))
                store.update(f"t{t}_{i}", status="Running")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(store.list()) == 80


# --------------------------------------------------------------------------- several processes at once
PROCESSES = 8
PER_PROCESS = 50


def _writer(db: str, worker: int, start: multiprocessing.synchronize.Event, errors: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        s = Store(Path(db))
        start.wait(30)
        for i in range(PER_PROCESS):
            name = f"w{worker}_{i}"
            s.add(rec(name, tags={"worker": str(worker)}))
            s.update(name, status="Running", started=time.time())
            if i % 10 == 0:
                s.list(status=["Running"], limit=5)
                s.update_many({name: {"status": "Completed", "exit_code": 0}})
            else:
                s.update(name, status="Completed", exit_code=0)
        s.close()
    except BaseException:
        errors.put(f"worker {worker}: {traceback.format_exc()}")


def test_concurrent_processes_never_see_database_is_locked(tmp_path: Path) -> None:
    db = tmp_path / "state" / "jobs.db"
    Store(db).close()  # create the schema once, as the first CLI call would
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    errors: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_writer, args=(str(db), w, start, errors)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    reported = []
    while not errors.empty():
        reported.append(errors.get())
    assert not alive, "writers did not finish within 120 s"
    assert not reported, "\n".join(reported)
    assert all(p.exitcode == 0 for p in procs)
    s = Store(db)
    rows = s.list()
    assert len(rows) == PROCESSES * PER_PROCESS
    assert {r.status for r in rows} == {"Completed"}
    assert len({r.name for r in rows}) == PROCESSES * PER_PROCESS
    assert s.integrity_ok()
    s.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 400
    conn.close()
