"""The asset registry (hpcjobs.assets) on a site reached through LocalTransport, in a tmp dir.

The site is a slurm-less site config with a datastore under the test's tmp dir, so the
registry (``<datastore>/.hpcjobs-registry``) and its uploads are real files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from hpcjobs import api, assets, backends, paths
from hpcjobs.errors import NotFoundError, UserError, ValidationError
from hpcjobs.site import Site, get_site


@pytest.fixture
def site(hpcjobs_home: Path, tmp_path: Path) -> Site:
    sites = paths.config_dir() / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    store = tmp_path / "datastore"
    (sites / "regsite.yml").write_text(
        f"scheduler: local\njob_root: {tmp_path}/jobs\ndatastores:\n  workspaceblobstore: {store}\n"
        "default_datastore: workspaceblobstore\n"
    )
    return get_site("regsite")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "cifar"
    d.mkdir()
    (d / "batch1.txt").write_text("one\n")
    (d / "sub").mkdir()
    (d / "sub" / "batch2.txt").write_text("two\n")
    return d


class _Spy:
    """Wraps the site's transport: counts commands and bytes sent on stdin."""

    def __init__(self, site: Site) -> None:
        self.t = backends.transport_for(site)
        self.calls: list[tuple[list[str], int]] = []
        orig = self.t.run

        def run(argv: Any, **kw: Any) -> Any:
            self.calls.append((list(argv), len(kw.get("stdin") or b"")))
            return orig(argv, **kw)

        self.t.run = run  # type: ignore[method-assign]

    @property
    def sent(self) -> int:
        return sum(n for _, n in self.calls if n and "hpcjobs-upload" in _)


def test_registry_lives_next_to_the_datastore(site: Site, data_dir: Path, tmp_path: Path) -> None:
    entry = assets.create_data(site, name="cifar", version="1", path=str(data_dir))
    assert entry["uploaded"] is False  # an absolute path on this (login) machine is used in place
    f = tmp_path / "datastore/.hpcjobs-registry/data/cifar/1.json"
    assert json.loads(f.read_text())["path"] == str(data_dir)


def test_upload_once_second_create_sends_nothing(
    site: Site, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    spy = _Spy(site)
    e1 = assets.create_data(site, name="cifar", version="1", path="cifar")
    assert e1["uploaded"] and e1["sent"] and e1["sent_bytes"] > 0
    assert e1["path"].startswith(str(tmp_path / "datastore/.hpcjobs-registry/blobs/"))
    assert (Path(e1["path"]) / "sub/batch2.txt").read_text() == "two\n"
    first = spy.sent
    e2 = assets.create_data(site, name="cifar", version="2", path="cifar")
    assert e2["path"] == e1["path"] and not e2["sent"]
    assert spy.sent == first  # no file content went over the second time


def test_versions_are_immutable(site: Site, data_dir: Path) -> None:
    assets.create_data(site, name="d", version="1", path=str(data_dir))
    with pytest.raises(UserError, match="already exists"):
        assets.create_data(site, name="d", version="1", path=str(data_dir))
    reg = assets.registry_for(site)
    with pytest.raises(UserError, match="already exists"):
        # the remote create-if-absent refuses too (a racing machine passed the first check)
        reg.write("data", {"name": "d", "version": "1", "path": "/elsewhere"})
    assert reg.resolve("data", assets.parse_ref("d:1"))["path"] == str(data_dir)


def test_latest_moves_and_archive_hides(site: Site, data_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    assets.create_data(site, name="d", version="1", path=str(data_dir))
    reg = assets.registry_for(site)
    assert reg.resolve("data", assets.parse_ref("azureml:d@latest"))["version"] == "1"
    time.sleep(0.01)
    assets.create_data(site, name="d", version="2", path=str(other))
    assert reg.resolve("data", assets.parse_ref("azureml:d@latest"))["version"] == "2"
    assets.archive_asset(site, "data", "d", "2")
    assert reg.resolve("data", assets.parse_ref("azureml:d@latest"))["version"] == "1"
    assert reg.resolve("data", assets.parse_ref("azureml:d:2"))["path"] == str(other)  # still resolvable
    rows = assets.list_assets(site, "data")
    assert [(r["name"], r["version"]) for r in rows] == [("d", "1")]
    every = assets.list_assets(site, "data", include_archived=True)
    assert {r["version"] for r in every} == {"1", "2"}


def test_latest_numeric_order_on_equal_times(site: Site) -> None:
    reg = assets.registry_for(site)
    for v in ("9", "10", "2"):
        reg.write("data", {"name": "n", "version": v, "path": f"/x/{v}", "created": 5.0})
    assert reg.resolve("data", assets.parse_ref("n@latest"))["version"] == "10"


def test_unknown_names_and_versions_list_what_exists(site: Site, data_dir: Path) -> None:
    assets.create_data(site, name="cifar-10-example", version="1", path=str(data_dir))
    reg = assets.registry_for(site)
    with pytest.raises(NotFoundError) as exc:
        reg.resolve("data", assets.parse_ref("azureml:cifar-10-exampel:1"))
    assert "did you mean 'cifar-10-example'" in str(exc.value)
    with pytest.raises(NotFoundError) as exc:
        reg.resolve("data", assets.parse_ref("azureml:cifar-10-example:3"))
    assert "versions: 1" in str(exc.value)
    with pytest.raises(ValidationError, match="only @latest"):
        assets.parse_ref("azureml:x@prod")


def test_list_uses_the_cache(site: Site, data_dir: Path) -> None:
    assets.create_data(site, name="d", version="1", path=str(data_dir))
    spy = _Spy(site)
    assert [r["name"] for r in assets.list_assets(site, "data")] == ["d"]
    assert spy.calls == []  # answered from the local cache
    assets.list_assets(site, "data", refresh=True)
    assert len(spy.calls) == 1


def test_datastore_uri_registered_without_copying(site: Site, tmp_path: Path) -> None:
    e = assets.create_data(site, name="ds", version="1", path="azureml://datastores/workspaceblobstore/paths/raw/x")
    assert e["cluster_path"] == str(tmp_path / "datastore/raw/x") and e["uploaded"] is False
    with pytest.raises(ValidationError, match="datastore 'nope'"):
        assets.create_data(site, name="ds", version="2", path="azureml://datastores/nope/paths/x")


def _job(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "job.yml"
    f.write_text(body)
    return f


def test_job_inputs_resolve_by_mode(site: Site, data_dir: Path, tmp_path: Path) -> None:
    assets.create_data(site, name="d", version="1", path=str(data_dir))
    job = _job(
        tmp_path,
        "command: ls ${{inputs.a}} ${{inputs.b}} ${{inputs.c}}\n"
        "inputs:\n"
        "  a: {type: uri_folder, path: 'azureml:d:1'}\n"
        "  b: {type: uri_folder, path: 'azureml:d@latest', mode: download}\n"
        "  c: {type: uri_folder, path: 'azureml:d@latest', mode: direct}\n",
    )
    p = api.plan(job, site="regsite")
    assert p.inputs["a"] == str(data_dir)
    assert p.inputs["b"].endswith("/inputs/b") and p.inputs["b"] != str(data_dir)
    assert p.inputs["c"] == "azureml:d@latest"


def test_job_with_unknown_asset_fails_with_hint(site: Site, data_dir: Path, tmp_path: Path) -> None:
    assets.create_data(site, name="cifar", version="1", path=str(data_dir))
    job = _job(tmp_path, "command: ls ${{inputs.a}}\ninputs:\n  a: {type: uri_folder, path: 'azureml:cifra:1'}\n")
    with pytest.raises(NotFoundError, match="did you mean 'cifar'"):
        api.plan(job, site="regsite")


def test_job_runs_with_asset(site: Site, data_dir: Path, tmp_path: Path, wait_done: Any) -> None:
    assets.create_data(site, name="d", version="1", path=str(data_dir))
    job = _job(tmp_path, "command: cat ${{inputs.a}}/sub/batch2.txt\ninputs:\n  a: {type: uri_folder, path: 'azureml:d:1'}\n")
    view = api.create_job(job, site="regsite")
    assert wait_done(view["name"])["status"] == "Completed"


def test_registered_environment(site: Site, tmp_path: Path) -> None:
    (tmp_path / "conda.yml").write_text("name: e\ndependencies: [python=3.11]\n")
    env = tmp_path / "env.yml"
    env.write_text("name: myenv\nversion: 2\nimage: docker.io/library/python:3.11-slim\nconda_file: conda.yml\n")
    e = assets.create_environment(site, env)
    assert e["version"] == "2" and "python=3.11" in e["conda_file"]
    job = _job(tmp_path, "command: echo hi\nenvironment: azureml:myenv@latest\n")
    p = api.plan(job, site="regsite")
    assert any("python:3.11-slim" in w for w in p.warnings)  # found (and noted: no container runtime)
    job2 = _job(tmp_path, "command: echo hi\nenvironment: azureml:myenv:7\n")
    with pytest.raises(NotFoundError, match="versions: 2"):
        api.plan(job2, site="regsite")
    # a name the registry does not know keeps the old meaning (host, with a warning)
    job3 = _job(tmp_path, "command: echo hi\nenvironment: azureml:AzureML-sklearn-1.0@latest\n")
    assert any("not mapped" in w for w in api.plan(job3, site="regsite").warnings)


def test_registered_component_in_pipeline(site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "comp"
    (src / "src").mkdir(parents=True)
    (src / "src" / "hello.py").write_text("print('hi')\n")
    (src / "c.yml").write_text(
        "type: command\nname: hello_comp\nversion: 1\ncode: ./src\n"
        "inputs:\n  msg: {type: string, default: x}\ncommand: python3 hello.py ${{inputs.msg}}\n"
    )
    e = assets.create_component(site, src / "c.yml")
    assert e["code"].startswith(str(tmp_path / "datastore/.hpcjobs-registry/blobs/"))
    monkeypatch.setenv("HPCJOBS_SITE", "regsite")
    pipe = _job(
        tmp_path,
        "type: pipeline\njobs:\n  a:\n    component: azureml:hello_comp@latest\n    inputs: {msg: y}\n"
        "  b:\n    component: azureml:hello_comp:1\n",
    )
    p = api.plan(pipe, site="regsite")
    assert p.kind == "pipeline"
    bad = _job(tmp_path, "type: pipeline\njobs:\n  a:\n    component: azureml:hello_cmp:1\n")
    with pytest.raises(ValidationError, match="did you mean 'hello_comp'"):
        api.plan(bad, site="regsite")


def test_cli_data_commands(site: Site, data_dir: Path, run_cli: Any) -> None:
    r = run_cli("data", "create", "--name", "d", "--version", "1", "--path", str(data_dir), "--site", "regsite", "-o", "json")
    assert r.returncode == 0, r.stderr
    r = run_cli("data", "list", "--site", "regsite", "-o", "json", "--query", "[].name")
    assert json.loads(r.stdout) == ["d"]
    r = run_cli("data", "show", "--name", "e", "--site", "regsite")
    assert r.returncode == 2 and "did you mean 'd'" not in r.stderr and "registered data assets: d" in r.stderr


def test_pipeline_step_reads_data_asset(site: Site, data_dir: Path, tmp_path: Path) -> None:
    assets.create_data(site, name="d", version="1", path=str(data_dir))
    pipe = _job(
        tmp_path,
        "type: pipeline\njobs:\n  s:\n    type: command\n    command: ls ${{inputs.x}}\n"
        "    inputs:\n      x: {type: uri_folder, path: 'azureml:d@latest'}\n",
    )
    p = api.plan(pipe, site="regsite")
    assert str(data_dir) in "\n".join(sc.text for sc in p.scripts)
