"""Registered assets on the real test cluster: on the login node (site testcluster) and over SSH.

Both sites name the same datastore (/srv/hpcjobs/datastore), so both see one registry
(``/srv/hpcjobs/datastore/.hpcjobs-registry``): an asset created from the "laptop" is
visible on the login node.  Every test uses fresh asset names (the registry outlives it).
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:  # the SSH fixtures of test_ssh_jobs.py (the laptop: alice's CLI with only her key)
    from test_ssh_jobs import SITE as SSH_SITE
    from test_ssh_jobs import Laptop, sshd  # noqa: F401 - sshd is a fixture used by `laptop` below
except Exception as exc:  # pragma: no cover - paramiko missing etc.
    Laptop = None  # type: ignore[assignment,misc]
    SSH_SITE = "testcluster-ssh"
    _SSH_IMPORT_ERROR: str | None = f"cannot import the SSH fixtures of test_ssh_jobs.py: {exc}"
else:
    _SSH_IMPORT_ERROR = None

SITE = "testcluster"


def _uniq(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _data(alice: Any, name: str, text: str) -> None:
    alice.write(f"{name}/part-0.txt", text)
    # new content on every run: the blobs outlive the test, and a first upload must send bytes
    alice.write(f"{name}/sub/part-1.txt", f"second part\n{uuid.uuid4().hex}\n")


def _ok(res: Any) -> Any:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}"
    return res


# --------------------------------------------------------------------------- login node
def test_login_node_upload_once_job_reads_asset_and_latest_moves(alice: Any) -> None:
    name = _uniq("cifar")
    _data(alice, "cifar-src", "version one\n")
    first = alice.json("data", "create", "--name", name, "--version", "1", "--path", "cifar-src", "--site", SITE)
    assert first["uploaded"] and first["sent"] and first["path"].startswith("/srv/hpcjobs/datastore/.hpcjobs-registry/blobs/")
    # the same content under a new version: nothing is sent again
    res = _ok(alice.run("data", "create", "--name", name, "--version", "2", "--path", "cifar-src", "--site", SITE, "-o", "json"))
    again = json.loads(res.stdout)
    assert again["sent"] is False and again["sent_bytes"] == 0 and again["path"] == first["path"]
    assert "nothing was uploaded" in res.stderr
    # versions are immutable
    res = alice.run("data", "create", "--name", name, "--version", "2", "--path", "cifar-src", "--site", SITE)
    assert res.returncode == 2 and "already exists" in res.stderr

    job = alice.write(
        "asset-job.yml",
        "command: cat ${{inputs.a}}/part-0.txt; cat ${{inputs.b}}/sub/part-1.txt\n"
        "inputs:\n"
        f"  a: {{type: uri_folder, path: 'azureml:{name}:1'}}\n"
        f"  b: {{type: uri_folder, path: 'azureml:{name}@latest', mode: download}}\n",
    )
    res = _ok(alice.run("job", "create", "-f", str(job), "--site", SITE, "--stream", timeout=300))
    assert "version one" in res.stdout and "second part" in res.stdout

    # @latest moves with a new version (new content)
    _data(alice, "cifar-v3", "version three\n")
    alice.json("data", "create", "--name", name, "--version", "3", "--path", "cifar-v3", "--site", SITE)
    latest = alice.json("data", "show", "--name", name, "--label", "latest", "--site", SITE)
    assert latest["version"] == "3"
    job2 = alice.write(
        "asset-job2.yml",
        f"command: cat ${{{{inputs.a}}}}/part-0.txt\ninputs:\n  a: {{type: uri_folder, path: 'azureml:{name}@latest'}}\n",
    )
    res = _ok(alice.run("job", "create", "-f", str(job2), "--site", SITE, "--stream", timeout=300))
    assert "version three" in res.stdout
    # archive hides it from @latest and list; the explicit version still resolves
    alice.json("data", "archive", "--name", name, "--version", "3", "--site", SITE)
    assert alice.json("data", "show", "--name", name, "--site", SITE)["version"] == "2"
    rows = alice.json("data", "list", "--site", SITE, "--query", f"[?name=='{name}']")
    assert [r["version"] for r in rows] == ["2"]
    assert alice.json("data", "show", "--name", name, "--version", "3", "--site", SITE)["archived"] is True

    # unknown names and versions: what exists, and did you mean
    res = alice.run("data", "show", "--name", name + "x", "--site", SITE)
    assert res.returncode == 2 and f"did you mean '{name}'" in res.stderr
    res = alice.run("data", "show", "--name", name, "--version", "9", "--site", SITE)
    assert res.returncode == 2 and "versions: 1, 2, 3" in res.stderr


def test_login_node_registered_component_in_pipeline(alice: Any) -> None:
    comp = _uniq("hello_comp").replace("-", "_")
    alice.write("comp/src/greeting.txt", "greeting from the registered code\n")
    alice.write(
        "comp/comp.yml",
        f"type: command\nname: {comp}\nversion: 1\ncode: ./src\n"
        "inputs:\n  msg: {type: string, default: none}\n"
        "command: cat greeting.txt; echo msg=${{inputs.msg}}\n",
    )
    entry = alice.json("component", "create", "--file", "comp/comp.yml", "--site", SITE)
    assert entry["version"] == "1" and entry["code"].startswith("/srv/hpcjobs/datastore/.hpcjobs-registry/blobs/")
    assert any(r["name"] == comp for r in alice.json("component", "list", "--site", SITE))
    pipe = alice.write(
        "pipe.yml",
        f"type: pipeline\njobs:\n  first:\n    component: azureml:{comp}:1\n    inputs: {{msg: one}}\n"
        f"  second:\n    component: azureml:{comp}@latest\n    inputs: {{msg: two}}\n",
    )
    # a pipeline file is loaded before a site is chosen: the registry of the default site answers
    res = _ok(alice.run("job", "create", "-f", str(pipe), "--site", SITE, "--stream", timeout=400, env={"HPCJOBS_SITE": SITE}))
    assert "greeting from the registered code" in res.stdout and "msg=two" in res.stdout
    res = alice.run(
        "job",
        "validate",
        "-f",
        str(alice.write("bad.yml", f"type: pipeline\njobs:\n  a:\n    component: azureml:{comp}x:1\n")),
        env={"HPCJOBS_SITE": SITE},
    )
    assert res.returncode == 2 and f"did you mean '{comp}'" in res.stderr


def test_login_node_registered_environment(alice: Any) -> None:
    env_name = _uniq("env")
    alice.write("env.yml", f"name: {env_name}\nversion: 2\nimage: docker.io/library/python:3.11-slim\n")
    assert alice.json("environment", "create", "--file", "env.yml", "--site", SITE)["version"] == "2"
    assert alice.json("environment", "show", "--name", env_name, "--site", SITE)["image"].endswith("python:3.11-slim")
    job = alice.write("envjob.yml", f"command: echo hi\nenvironment: azureml:{env_name}:5\n")
    res = alice.run("job", "validate", "-f", str(job), "--site", SITE)
    assert res.returncode == 2 and "versions: 2" in res.stderr


# --------------------------------------------------------------------------- over SSH
@pytest.fixture
def laptop(alice: Any, sshd: Path) -> Any:
    if Laptop is None:
        pytest.skip(_SSH_IMPORT_ERROR or "no SSH fixtures")
    lp = Laptop(alice, sshd)
    lp.trust()
    return lp


def test_ssh_upload_once_and_shared_registry(laptop: Any, alice: Any) -> None:
    name = _uniq("ssh-data")
    _data(alice, "ssh-src", "over ssh\n")
    res = laptop.ok("data", "create", "--name", name, "--version", "1", "--path", "ssh-src", "--site", SSH_SITE, "-o", "json")
    first = json.loads(res.stdout)
    assert first["sent"] and first["sent_bytes"] > 0
    res = laptop.ok("data", "create", "--name", name, "--version", "2", "--path", "ssh-src", "--site", SSH_SITE, "-o", "json")
    second = json.loads(res.stdout)
    assert second["sent"] is False and second["sent_bytes"] == 0 and second["path"] == first["path"]

    job = alice.write(
        "ssh-job.yml",
        f"command: cat ${{{{inputs.a}}}}/part-0.txt\ninputs:\n  a: {{type: uri_folder, path: 'azureml:{name}:1'}}\n",
    )
    res = laptop.ok("job", "create", "-f", str(job), "--site", SSH_SITE, "--stream", timeout=300)
    assert "over ssh" in res.stdout
    # the login node sees what the laptop registered (one registry next to the datastore)
    rows = alice.json("data", "list", "--site", SITE, "--refresh", "--query", f"[?name=='{name}']")
    assert [r["version"] for r in rows] == ["2"]
    # and @latest moves for the laptop when the login node adds a version
    _data(alice, "login-src", "from the login node\n")
    alice.json("data", "create", "--name", name, "--version", "3", "--path", "login-src", "--site", SITE)
    latest = json.loads(laptop.ok("data", "show", "--name", name, "--site", SSH_SITE, "-o", "json").stdout)
    assert latest["version"] == "3"
