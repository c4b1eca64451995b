"""Onboarding the real test cluster as the student alice: ``site add``, ``site check``, first jobs.

Over SSH, alice runs the real ``hpcjobs`` on her "laptop" (this machine, her own HOME and
HPCJOBS_HOME, a copy of her key) against the login node sshd on 127.0.0.1:2222; with
``--local`` she runs it on the "login node" itself.  What discovery must find is read
here, as root, straight from Slurm (``sinfo``, ``scontrol``, ``sacctmgr``), not from a list
written into the test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hpcjobs.site import load_site_file

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SSH_DIR = Path("/etc/hpcjobs-test/ssh")
LOGIN_PORT = 2222
BASTION_PORT = 2201


# --------------------------------------------------------------------------- the truth, from Slurm
def _out(*argv: str) -> str:
    return subprocess.run(list(argv), capture_output=True, text=True, check=True, timeout=60).stdout


@dataclass
class Truth:
    partitions: list[str]
    default_partition: str
    gpus_per_node: dict[str, int]
    accounts: set[str]
    default_account: str
    max_array_size: int
    slurm_version: str


@pytest.fixture(scope="module")
def truth(cluster: None) -> Truth:
    names = _out("sinfo", "-h", "-o", "%P").split()
    default = next(n.rstrip("*") for n in names if n.endswith("*"))
    gpus: dict[str, int] = {n.rstrip("*"): 0 for n in names}
    for line in _out("scontrol", "--oneliner", "show", "node").splitlines():
        m_parts = re.search(r"\bPartitions=(\S+)", line)
        m_gres = re.search(r"\bGres=(\S+)", line)
        count = sum(int(c) for c in re.findall(r"gpu(?::[A-Za-z0-9_]+)?:(\d+)", m_gres.group(1))) if m_gres else 0
        for p in m_parts.group(1).split(",") if m_parts else []:
            gpus[p] = max(gpus.get(p, 0), count)
    accounts = set(_out("sacctmgr", "-nP", "show", "assoc", "where", "user=alice", "format=account").split())
    config = _out("scontrol", "show", "config")
    max_array = int(re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.MULTILINE).group(1))  # type: ignore[union-attr]
    version = re.search(r"^SLURM_VERSION\s*=\s*(\S+)", config, re.MULTILINE).group(1)  # type: ignore[union-attr]
    return Truth(
        partitions=[n.rstrip("*") for n in names],
        default_partition=default,
        gpus_per_node=gpus,
        accounts=accounts,
        default_account=_out("sacctmgr", "-nP", "show", "user", "alice", "format=defaultaccount").strip(),
        max_array_size=max_array,
        slurm_version=version,
    )


# --------------------------------------------------------------------------- alice, with SSH
def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def sshd(cluster: None) -> Path:
    """The login node's sshd (started with tests/cluster/sshd-up.sh if it is not running)."""
    if not (_listening(LOGIN_PORT) and _listening(BASTION_PORT) and (SSH_DIR / "alice_ed25519").exists()):
        if os.geteuid() != 0:
            pytest.skip("test sshd not running, and starting it needs root (tests/cluster/sshd-up.sh)")
        res = subprocess.run(["bash", str(REPO / "tests/cluster/sshd-up.sh")], capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            pytest.skip(f"cannot start the test sshd: {res.stderr[-800:]}")
    return SSH_DIR


def _fingerprint(key_type: str, server: str = "login") -> str:
    """A test server's host key fingerprint, read from its public key file (out of band)."""
    kind = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa"}.get(key_type, "ecdsa")
    b64 = (SSH_DIR / f"{server}_host_{kind}_key.pub").read_text().split()[1]
    return "SHA256:" + base64.b64encode(hashlib.sha256(base64.b64decode(b64)).digest()).decode().rstrip("=")


@dataclass
class Student:
    """alice on her own machine: her own HOME (no ~/.ssh files) and a copy of her key."""

    alice: Any
    key: str

    def run(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.alice.run(*args, env={"HOME": str(self.alice.home)}, **kw)

    def json(self, *args: str) -> Any:
        res = self.run(*args, "-o", "json")
        assert res.returncode == 0, f"hpcjobs {' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
        return json.loads(res.stdout)

    @property
    def config(self) -> Path:
        return Path(self.alice.home) / "config"

    def ssh_args(self, name: str) -> list[str]:
        return ["site", "add", name, "--host", "127.0.0.1", "--port", str(LOGIN_PORT), "--user", "alice", "-i", self.key]

    def add_ssh_site(self, name: str) -> dict[str, Any]:
        """``site add`` over SSH, trusting the login node's key by its published fingerprint."""
        data: dict[str, Any] = self.json(*self.ssh_args(name), "--fingerprint", _fingerprint("ssh-ed25519"))
        return data


@pytest.fixture
def student(alice: Any, sshd: Path) -> Student:
    key = Path(alice.home) / "id_ed25519"
    shutil.copyfile(sshd / "alice_ed25519", key)
    key.chmod(0o600)
    shutil.chown(key, "alice", "alice")
    return Student(alice=alice, key=str(key))


def _assert_discovery_matches(disc: dict[str, Any], truth: Truth) -> None:
    assert [p["name"] for p in disc["partitions"]] == truth.partitions
    assert disc["default_partition"] == truth.default_partition
    assert {p["name"]: p["gpus_per_node"] for p in disc["partitions"]} == truth.gpus_per_node
    assert set(disc["accounts"]) == truth.accounts
    assert disc["accounts"][0] == disc["default_account"] == truth.default_account
    assert disc["max_array_size"] == truth.max_array_size
    assert disc["slurm_version"] == truth.slurm_version
    assert disc["user"] == "alice"


def _sacct(job_id: str) -> list[str]:
    row: list[str] = []
    for _ in range(60):
        res = subprocess.run(
            ["sacct", "-n", "-P", "-X", "-j", job_id, "--format=State,Partition,User"], capture_output=True, text=True, check=True
        )
        row = res.stdout.strip().split("|")
        if len(row) == 3 and all(row):
            return row
        time.sleep(0.5)
    return row


# --------------------------------------------------------------------------- site add over SSH
def test_site_add_over_ssh_asks_before_trusting_and_discovers_exactly_the_cluster(student: Student, truth: Truth) -> None:
    # no answer (no terminal): the key is shown, nothing is trusted, nothing is written
    res = student.run(*student.ssh_args("uni"))
    assert res.returncode == 2, res.stderr
    shown = re.search(r"(ssh-[a-z0-9]+|ecdsa-[a-z0-9-]+) key fingerprint is (SHA256:\S+)", res.stderr)
    assert shown is not None, res.stderr
    assert shown.group(2) == _fingerprint(shown.group(1))
    assert "nothing was written" in res.stderr and "--fingerprint SHA256:" in res.stderr
    assert not (student.config / "sites" / "uni.yml").exists()
    assert not (student.config / "known_hosts").exists()
    # a fingerprint that is not the server's is refused
    res = student.run(*student.ssh_args("uni"), "--fingerprint", "SHA256:" + "A" * 43)
    assert res.returncode == 2 and "not the fingerprint you gave" in res.stderr
    assert not (student.config / "known_hosts").exists()
    # the published one is trusted, and the cluster discovered in one remote command
    data = student.add_ssh_site("uni")
    assert data["trusted_host_keys"][0]["fingerprint"] == _fingerprint(data["trusted_host_keys"][0]["key_type"])
    assert "[127.0.0.1]:2222" in (student.config / "known_hosts").read_text()
    _assert_discovery_matches(data["discovery"], truth)
    assert data["made_default"] is True
    # the file: commented, valid for the real loader, computes named after the partitions
    path = Path(data["path"])
    assert path == student.config / "sites" / "uni.yml"
    text = path.read_text()
    assert sum(1 for line in text.splitlines() if line.lstrip().startswith("#")) > 15
    site = load_site_file(path)
    assert list(site.computes) == truth.partitions
    assert site.default_compute == truth.default_partition
    assert site.ssh is not None and (site.ssh.host, site.ssh.port, site.ssh.user) == ("127.0.0.1", LOGIN_PORT, "alice")
    assert site.max_array_size == truth.max_array_size
    assert site.resolve_compute("azureml:cpu-cluster")[0] == truth.default_partition
    for name, comp in site.computes.items():
        assert comp.partition == name
        n = truth.gpus_per_node[name]
        assert sorted(comp.instance_types) == [f"gpu-{k}" for k in range(1, n + 1)]
    assert site.resolve_compute("azureml:gpu-cluster")[1].default_instance_type == "gpu-1"
    # it is there for the other commands, marked as the default
    sites = {s["name"]: s for s in student.json("site", "list")}
    assert sites["uni"]["default"] is True and sites["local"]["default"] is False
    assert student.json("site", "show", "uni")["ssh"]["host"] == "127.0.0.1"


def test_yes_trusts_but_shows_the_key_and_dry_run_writes_no_config(student: Student) -> None:
    res = student.run(*student.ssh_args("peek"), "--yes", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "key fingerprint is SHA256:" in res.stderr and "--yes: trusting it." in res.stderr
    assert res.stdout.startswith("# hpcjobs site config 'peek'")
    assert not (student.config / "sites" / "peek.yml").exists()
    # an existing site is not replaced without --force
    student.add_ssh_site("uni")
    res = student.run(*student.ssh_args("uni"))
    assert res.returncode == 2 and "--force" in res.stderr


def test_site_add_through_a_jump_host_trusts_each_hop_by_its_fingerprint(student: Student, truth: Truth) -> None:
    args = [*student.ssh_args("behind"), "--proxy-jump", f"alice@127.0.0.1:{BASTION_PORT}"]
    # only the login node's fingerprint: the bastion, asked about first, is not trusted
    res = student.run(*args, "--fingerprint", _fingerprint("ssh-ed25519"))
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"jump host 127.0.0.1:{BASTION_PORT}" in res.stderr
    assert _fingerprint("ssh-ed25519", "bastion") in res.stderr
    data = student.json(
        *args, "--fingerprint", _fingerprint("ssh-ed25519", "bastion"), "--fingerprint", _fingerprint("ssh-ed25519")
    )
    assert [(k["port"], k["role"]) for k in data["trusted_host_keys"]] == [
        (BASTION_PORT, "jump host"),
        (LOGIN_PORT, "login node"),
    ]
    _assert_discovery_matches(data["discovery"], truth)
    assert data["config"]["ssh"]["proxy_jump"] == f"alice@127.0.0.1:{BASTION_PORT}"
    assert student.run("site", "check", "behind").returncode == 0


# --------------------------------------------------------------------------- the first jobs
def test_generated_config_runs_hello_world_as_it_is_and_a_first_gpu_job(student: Student, truth: Truth) -> None:
    student.add_ssh_site("uni")
    res = student.run("job", "create", "-f", "examples/hello-world.yml", "--site", "uni", "--stream", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "hello world" in res.stdout
    name = next(line.split()[-1] for line in res.stderr.splitlines() if line.startswith("RunId:"))
    view = student.json("job", "show", "-n", name)
    # compute: azureml:cpu-cluster is the alias of the default partition's compute
    assert view["status"] == "Completed" and view["compute"] == truth.default_partition
    state, partition, user = _sacct(view["scheduler"]["job_ids"][0])
    assert (state, partition, user) == ("COMPLETED", truth.default_partition, "alice")
    # the onboarding guide's first GPU job: compute gpu-cluster takes one GPU by default
    job = student.alice.write(
        "first-gpu.yml",
        "command: python3 -c \"import os; print('GPUS', os.environ.get('CUDA_VISIBLE_DEVICES'))\"\n"
        "compute: azureml:gpu-cluster\n",
    )
    res = student.run("job", "create", "-f", str(job), "--site", "uni", "--stream", timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(line for line in res.stdout.splitlines() if line.startswith("GPUS"))
    assert line.split()[1] in ("0", "1")


# --------------------------------------------------------------------------- site check
def test_site_check_passes_then_names_a_broken_compute_and_its_fix(student: Student, truth: Truth) -> None:
    student.add_ssh_site("uni")
    res = student.run("site", "check", "uni")
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    for check in ("connection", "host key", "authentication", "slurm version", "clock", "job root", "runtime"):
        assert any(re.match(rf"PASS\s+{check}\b", ln) for ln in lines), (check, res.stdout)
    assert any(re.match(rf"PASS\s+slurm version\s+Slurm {re.escape(truth.slurm_version)}, tested", ln) for ln in lines)
    for p in truth.partitions:
        assert any(re.match(rf"PASS\s+compute {p}\b", ln) for ln in lines), (p, res.stdout)
    # break it: a compute whose partition does not exist
    path = student.config / "sites" / "uni.yml"
    text = path.read_text()
    path.write_text(text.replace("\ncomputes:\n", "\ncomputes:\n  broken:\n    partition: nosuchpart\n", 1))
    res = student.run("site", "check", "uni")
    assert res.returncode == 1
    fail = [ln for ln in res.stdout.splitlines() if ln.startswith("FAIL")]
    assert len(fail) == 1 and re.match(r"FAIL\s+compute broken\s+Invalid partition name specified", fail[0]), res.stdout
    fix = res.stdout.split(fail[0], 1)[1].splitlines()[1].strip()
    assert fix.startswith("fix: partition 'nosuchpart' does not exist")
    assert f"computes.broken.partition in {path}" in fix and ", ".join(truth.partitions) in fix
    rows = student.run("site", "check", "uni", "-o", "json")
    assert rows.returncode == 1
    by = {r["check"]: r for r in json.loads(rows.stdout)}
    assert by["compute broken"]["ok"] is False and by["compute broken"]["status"] == "FAIL"
    assert sum(1 for r in by.values() if not r["ok"]) == 1


def test_site_check_says_how_to_trust_an_unknown_host_key(student: Student) -> None:
    student.add_ssh_site("uni")
    (student.config / "known_hosts").unlink()
    res = student.run("site", "check", "uni")
    assert res.returncode == 1
    assert re.search(r"FAIL\s+host key\s+127\.0\.0\.1:2222 presents unknown key", res.stdout)
    assert "hpcjobs site trust uni" in res.stdout


# --------------------------------------------------------------------------- on the login node
def test_site_add_local_on_the_login_node(student: Student, truth: Truth) -> None:
    res = student.run("site", "add", "here", "--local")
    assert res.returncode == 0, res.stderr
    # it prints what it found and what it chose
    assert "Chose:" in res.stdout and "default_compute" in res.stdout and "alias cpu-cluster" in res.stdout
    path = student.config / "sites" / "here.yml"
    site = load_site_file(path)
    assert site.ssh is None and list(site.computes) == truth.partitions and site.job_root == "~/hpcjobs"
    data = student.json("site", "add", "here", "--local", "--force", "--dry-run")
    _assert_discovery_matches(data["discovery"], truth)
    assert data["trusted_host_keys"] == []
    assert student.run("site", "check", "here").returncode == 0
    res = student.run("job", "create", "-f", "examples/hello-world.yml", "--site", "here", "--stream", timeout=600)
    assert res.returncode == 0 and "hello world" in res.stdout, res.stderr


def test_site_list_use_and_computes_per_site(student: Student, truth: Truth) -> None:
    student.add_ssh_site("uni")
    assert student.run("site", "add", "here", "--local").returncode == 0
    sites = {s["name"]: s for s in student.json("site", "list")}
    # the first site added became the default; the second did not take it over
    assert sites["uni"]["default"] and not sites["here"]["default"]
    assert sites["here"]["host"] == "(this machine)" and sites["uni"]["host"] == "127.0.0.1"
    assert student.run("site", "use", "here").returncode == 0
    sites = {s["name"]: s for s in student.json("site", "list")}
    assert sites["here"]["default"] and not sites["uni"]["default"]
    for name in ("uni", "here"):
        rows = student.json("compute", "list", "--site", name)
        assert [r["name"] for r in rows] == truth.partitions
        assert {r["name"]: r["default"] for r in rows}[truth.default_partition] is True
        assert all(r["state"] == "up" for r in rows)
        shown = student.json("compute", "show", "-n", "azureml:cpu-cluster", "--site", name)
        assert shown["name"] == truth.default_partition and shown["aliases"] == "cpu-cluster"
    res = student.run("site", "use", "nosuch")
    assert res.returncode == 2 and "sites:" in res.stderr
