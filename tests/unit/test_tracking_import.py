"""The import into a real MLflow store (SQLite, through mlflow itself): idempotent, complete, byte-exact.

Imports mlflow (seconds), hence ``slow``.  The same logic against a real tracking
server (the REST destination) is covered in tests/integration/test_mlflow.py.
"""

from __future__ import annotations

import filecmp
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hpcjobs.mlflow_import import ClientDest, RunSpec, read_file_store, sync_run
from hpcjobs.mlflow_job import create_file_store_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClientDest]:
    root = tmp_path_factory.mktemp("store")
    d = ClientDest(f"sqlite:///{root}/mlflow.db")
    yield d
    d.close()


def make_store(tmp_path: Path) -> tuple[Path, str]:
    """A job's file store with one run: params, metrics with steps, a tag, an artifact, a nested run."""
    root = tmp_path / "mlruns"
    exp, run_id = create_file_store_run(
        str(root), experiment_name="e", run_name="local", params={"lr": "0.1"}, start_time=1700000000000
    )
    run = root / exp / run_id
    (run / "metrics" / "loss").write_text("".join(f"{1700000000000 + i} {1.0 / (i + 1)} {i}\n" for i in range(5)))
    (run / "metrics" / "train").mkdir()
    (run / "metrics" / "train" / "acc").write_text("1700000000100 0.9 0\n1700000000100 0.9 0\n")
    (run / "tags" / "note").write_text("from the job")
    (run / "artifacts" / "plots").mkdir(parents=True)
    (run / "artifacts" / "plots" / "p.bin").write_bytes(bytes(range(256)))
    _, nested = create_file_store_run(str(root), experiment_name="e", run_name="child", tags={"mlflow.parentRunId": run_id})
    (root / exp / nested / "metrics" / "inner").write_text("1700000000200 3.0 0\n")
    # a second top-level run: what mlflow.log_metric() makes after autologging ended the first
    _, second = create_file_store_run(str(root), experiment_name="e", run_name="again")
    (root / exp / second / "metrics" / "test_acc").write_text("1700000000300 0.8 0\n")
    (root / exp / second / "params" / "lr").write_text("0.2")
    return root, run_id


def spec_for(tmp_path: Path, token: str, **kw: Any) -> RunSpec:
    root, primary = make_store(tmp_path)
    outputs = tmp_path / "outputs"
    (outputs / "deep" / "er").mkdir(parents=True)
    (outputs / "model.bin").write_bytes(os.urandom(100_000))
    (outputs / "deep" / "er" / "ünïcode name.txt").write_text("x\n")
    (outputs / "empty").write_bytes(b"")
    return RunSpec(
        token=token,
        run_name="job_1",
        experiment_name="exp-import",
        status="FINISHED",
        start_time=1700000000000,
        end_time=1700000009000,
        params={"epochs": "3", "lr": "0.1"},
        tags={"mlflow.runName": "job_1", "hpcjobs.token": token, "team": "x", "bad;key": "v"},
        sources=read_file_store(root),
        primary_source=primary,
        folders={"outputs": outputs},
        **kw,
    )


def test_import_is_complete_and_idempotent(dest: ClientDest, tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "tok-1")
    first = sync_run(dest, spec)
    assert first.created
    second = sync_run(dest, spec)
    assert not second.created and second.run_id == first.run_id
    assert second.metrics == 0 and second.params == 0 and second.metrics_skipped >= 6
    client = dest.client
    runs = client.search_runs([first.experiment_id], "tags.`hpcjobs.token` = 'tok-1'")
    assert [r.info.run_id for r in runs] == [first.run_id]
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.info.end_time == 1700000009000
    assert run.info.run_name == "job_1"
    assert run.data.params == {"lr": "0.1", "epochs": "3"}
    # the second top-level run is merged in; its conflicting lr is reported, not logged
    assert run.data.metrics["test_acc"] == 0.8
    assert any("'lr'" in s for s in first.skipped) and any("bad;key" in s for s in first.skipped)
    assert run.data.tags["note"] == "from the job" and run.data.tags["team"] == "x"
    history = client.get_metric_history(first.run_id, "loss")
    assert sorted((m.step, m.value, m.timestamp) for m in history) == [(i, 1.0 / (i + 1), 1700000000000 + i) for i in range(5)]
    # the same point logged twice in the job stays one point
    assert len(client.get_metric_history(first.run_id, "train/acc")) == 1
    # the nested run is a child run
    child = client.search_runs([first.experiment_id], f"tags.`mlflow.parentRunId` = '{first.run_id}'")
    assert len(child) == 1 and child[0].data.metrics["inner"] == 3.0
    got = Path(
        dest.mlflow.artifacts.download_artifacts(run_id=first.run_id, dst_path=str(tmp_path / "dl"), tracking_uri=dest.uri)
    )
    cmp = filecmp.dircmp(tmp_path / "outputs", got / "outputs")
    assert not cmp.left_only and not cmp.right_only and not cmp.diff_files
    for sub in ("deep", "deep/er"):
        c = filecmp.dircmp(tmp_path / "outputs" / sub, got / "outputs" / sub)
        assert not c.left_only and not c.right_only and not c.diff_files
    assert (got / "outputs/model.bin").read_bytes() == (tmp_path / "outputs/model.bin").read_bytes()
    assert (got / "plots/p.bin").read_bytes() == bytes(range(256))


def test_known_run_is_reused_and_crash_mid_way_duplicates_nothing(dest: ClientDest, tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "tok-2")
    exp = dest.experiment_id("exp-import")
    pre = dest.create_run(exp, "job_2", 1700000000000, {"hpcjobs.run_key": "x/main"})
    spec.known_run_id = pre.run_id
    # as if an earlier attempt died after logging the first points
    dest.log_batch(pre.run_id, [("loss", (1700000000000, 1.0, 0)), ("loss", (1700000000001, 0.5, 1))], {"lr": "0.1"}, {})
    report = sync_run(dest, spec)
    assert report.run_id == pre.run_id and not report.created
    assert len(dest.client.get_metric_history(pre.run_id, "loss")) == 5
    assert report.metrics_skipped >= 2


def test_deleted_known_run_is_replaced(dest: ClientDest, tmp_path: Path) -> None:
    spec = spec_for(tmp_path, "tok-3")
    exp = dest.experiment_id("exp-import")
    gone = dest.create_run(exp, "job_3", 1700000000000, {})
    dest.client.delete_run(gone.run_id)
    spec.known_run_id = gone.run_id
    report = sync_run(dest, spec)
    assert report.created and report.run_id != gone.run_id


def test_end_time_is_never_before_the_start(dest: ClientDest, tmp_path: Path) -> None:
    """The scheduler reports whole seconds; the job started its run to the millisecond: no negative duration."""
    spec = spec_for(tmp_path, "tok-4")
    exp = dest.experiment_id("exp-import")
    pre = dest.create_run(exp, "job_4", 1700000009400, {})
    spec.known_run_id = pre.run_id
    sync_run(dest, spec)
    info = dest.client.get_run(pre.run_id).info
    assert info.start_time == 1700000009400 and info.end_time == 1700000009400 and info.status == "FINISHED"
