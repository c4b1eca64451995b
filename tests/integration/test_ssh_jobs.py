"""Every job verb from a "laptop" over SSH, against the real test sshd and Slurm cluster.

The laptop is this machine; the cluster's login node is the OpenSSH server on
127.0.0.1:2222 (tests/cluster/sshd-up.sh), a bastion listens on :2201, and the jobs run
as alice.  Two kinds of tests:

* the real CLI run as alice (``alice`` fixture) with a private HOME that holds only
  ``~/.ssh/hpcjobs_test_ed25519`` -- no known_hosts, no ssh config, no agent -- and the
  shipped ``site-configs/testcluster-ssh.yml``: trust, create/stream/show/list/cancel/
  download/validate, ProxyJump;
* the API in this process (``HPCJOBS_HOME`` set, ``backends.transport_for(site).stats``)
  for what must be counted or injected: connections and remote commands per submission,
  upload bytes, a connection cut right after sbatch (tests/helpers/tcpproxy.py), and a
  hostile tar stream coming from the cluster side.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("paramiko")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))
from tcpproxy import TCPProxy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SSH_DIR = Path("/etc/hpcjobs-test/ssh")
SITE = "testcluster-ssh"
LOGIN, BASTION = 2222, 2201


# --------------------------------------------------------------------------- helpers
def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _fingerprints(name: str) -> dict[str, str]:
    """SHA256 fingerprints of a test server's host keys, by key type."""
    out = {}
    for kind in ("ed25519", "ecdsa", "rsa"):
        key_type, b64 = (SSH_DIR / f"{name}_host_{kind}_key.pub").read_text().split()[:2]
        digest = hashlib.sha256(base64.b64decode(b64)).digest()
        out[key_type] = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    return out


def _squeue_comments(name: str) -> list[str]:
    """``id|comment`` of every Slurm job (any state) called *name*."""
    res = subprocess.run(
        ["squeue", "-h", "--states=all", f"--name={name}", "-o", "%i|%k", "-u", "alice"],
        capture_output=True,
        text=True,
        check=True,
    )
    return [line.strip() for line in res.stdout.splitlines() if line.strip()]


def _sacct_count(name: str) -> int:
    """How many jobs named *name* accounting has, once it has any (slurmdbd lags on a busy machine)."""
    count = 0
    for _ in range(60):
        res = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-u", "alice", f"--name={name}", "-S", "now-1hour", "-o", "JobID"],
            capture_output=True,
            text=True,
            check=False,
        )
        count = len([x for x in res.stdout.splitlines() if x.strip()])
        if count:
            # a second submission would be in accounting by now too (it was submitted first)
            return count
        time.sleep(1)
    return count


@pytest.fixture(scope="session")
def sshd(cluster: None) -> Path:
    """Both test sshds; started if needed (as root), else the module is skipped."""
    if not (_listening(LOGIN) and _listening(BASTION) and (SSH_DIR / "alice_ed25519").exists()):
        if os.geteuid() != 0:
            pytest.skip("test sshd not running, and starting it needs root (tests/cluster/sshd-up.sh)")
        res = subprocess.run(["bash", str(REPO / "tests/cluster/sshd-up.sh")], capture_output=True, text=True, check=False)
        if res.returncode != 0:
            pytest.skip(f"cannot start the test sshd: {res.stderr[-800:]}")
    return SSH_DIR


class Laptop:
    """The real CLI as alice, with a private HOME that holds only her SSH key."""

    def __init__(self, alice: Any, sshd: Path) -> None:
        self.alice = alice
        self.home = alice.workdir.parent / "laptop-home"
        ssh = self.home / ".ssh"
        ssh.mkdir(parents=True)
        shutil.copyfile(sshd / "alice_ed25519", ssh / "hpcjobs_test_ed25519")
        subprocess.run(["chown", "-R", "alice:alice", str(self.home)], check=True)
        self.home.chmod(0o700)
        ssh.chmod(0o700)
        (ssh / "hpcjobs_test_ed25519").chmod(0o600)
        self.known_hosts = alice.home / "config" / "known_hosts"

    def run(self, *args: str, timeout: float = 300, input: str | None = None) -> subprocess.CompletedProcess[str]:
        if input is None:
            return self.alice.run(*args, timeout=timeout, env={"HOME": str(self.home)})
        # runuser + stdin: the answer to site trust's question
        env = {
            "PATH": f"{self.alice.venv}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.home),
            "USER": "alice",
            "LANG": "C.UTF-8",
            "HPCJOBS_HOME": str(self.alice.home),
        }
        argv = ["runuser", "-u", "alice", "--", "env", "-i", *[f"{k}={v}" for k, v in env.items()], f"{self.alice.venv}/bin/hpcjobs", *args]
        return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout, cwd=self.alice.workdir, check=False)

    def ok(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        res = self.run(*args, timeout=timeout)
        assert res.returncode == 0, f"hpcjobs {' '.join(args)} exited {res.returncode}\n{res.stdout}\n{res.stderr}"
        return res

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json").stdout)

    def trust(self, site: str = SITE) -> None:
        self.ok("site", "trust", site, "--yes")

    def write_site(self, name: str, **changes: Any) -> None:
        """A user site config: the shipped testcluster-ssh.yml with *changes* to its ssh: block."""
        data = yaml.safe_load((REPO / "site-configs" / f"{SITE}.yml").read_text())
        data["name"] = name
        data["ssh"].update(changes)
        d = self.alice.home / "config" / "sites"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.yml").write_text(yaml.safe_dump(data))
        subprocess.run(["chown", "-R", "alice:alice", str(self.alice.home)], check=True)


@pytest.fixture
def laptop(alice: Any, sshd: Path) -> Laptop:
    return Laptop(alice, sshd)


@pytest.fixture
def trusted(laptop: Laptop) -> Laptop:
    laptop.trust()
    return laptop


def _run_name(res: subprocess.CompletedProcess[str]) -> str:
    return next(line.split()[-1] for line in res.stderr.splitlines() if line.startswith("RunId:"))


# --------------------------------------------------------------------------- host keys (CLI)
def test_unknown_host_refused_then_site_trust_yes_works(laptop: Laptop) -> None:
    res = laptop.run("job", "create", "-f", "examples/hello-world.yml", "-s", SITE)
    assert res.returncode == 2, res.stderr
    assert "unknown SSH host key for 127.0.0.1:2222" in res.stderr
    assert any(fp in res.stderr for fp in _fingerprints("login").values()), res.stderr
    assert f"hpcjobs site trust {SITE}" in res.stderr
    assert "Traceback" not in res.stderr
    # refused before anything was recorded: the store has no job
    assert laptop.json("job", "list") == []
    assert not laptop.known_hosts.exists()

    # saying no writes nothing; saying yes records the key in hpcjobs' own file only
    res = laptop.run("site", "trust", SITE, input="n\n")
    assert res.returncode == 1 and "nothing was written" in res.stderr
    assert not laptop.known_hosts.exists()
    res = laptop.run("site", "trust", SITE, input="y\n")
    assert res.returncode == 0, res.stderr
    assert any(fp in res.stderr for fp in _fingerprints("login").values())
    line = laptop.known_hosts.read_text().splitlines()
    assert len(line) == 1 and line[0].startswith("[127.0.0.1]:2222 ")
    assert stat.S_IMODE(laptop.known_hosts.stat().st_mode) == 0o600
    assert not (laptop.home / ".ssh" / "known_hosts").exists()
    # --yes again: nothing to add
    rows = laptop.json("site", "trust", SITE, "--yes")
    assert [r["status"] for r in rows] == ["already trusted"]

    res = laptop.run("job", "create", "-f", "examples/hello-world.yml", "-s", SITE, "--stream")
    assert res.returncode == 0, res.stderr
    assert "hello world" in res.stdout


def test_changed_host_key_refused(laptop: Laptop) -> None:
    # hpcjobs once trusted another ed25519 key for the login node (the bastion's)
    key_type, b64 = (SSH_DIR / "bastion_host_ed25519_key.pub").read_text().split()[:2]
    laptop.known_hosts.parent.mkdir(parents=True, exist_ok=True)
    laptop.known_hosts.write_text(f"[127.0.0.1]:2222 {key_type} {b64}\n")
    subprocess.run(["chown", "-R", "alice:alice", str(laptop.alice.home)], check=True)

    res = laptop.run("job", "validate", "-f", "examples/hello-world.yml", "-s", SITE)
    assert res.returncode == 2, res.stderr
    assert "HOST KEY CHANGED for 127.0.0.1:2222" in res.stderr
    assert _fingerprints("login")["ssh-ed25519"] in res.stderr
    # --yes alone never replaces a changed key
    res = laptop.run("site", "trust", SITE, "--yes")
    assert res.returncode == 2 and "CHANGED" in res.stderr and "--replace" in res.stderr
    assert laptop.known_hosts.read_text().split()[2] == b64
    # after checking with the admins: --replace swaps the line
    res = laptop.run("site", "trust", SITE, "--yes", "--replace")
    assert res.returncode == 0, res.stderr
    lines = laptop.known_hosts.read_text().splitlines()
    assert len(lines) == 1 and b64 not in lines[0]
    view = laptop.json("job", "validate", "-f", "examples/hello-world.yml", "-s", SITE)
    assert view["test_only"][0]["ok"] is True


def test_proxyjump_through_the_bastion(laptop: Laptop) -> None:
    laptop.write_site("testcluster-jump", proxy_jump="alice@127.0.0.1:2201")
    rows = laptop.json("site", "trust", "testcluster-jump", "--yes")
    assert [(r["port"], r["role"], r["status"]) for r in rows] == [(2201, "jump host", "added"), (2222, "login node", "added")]
    assert rows[0]["fingerprint"] in _fingerprints("bastion").values()
    bastion_log = Path("/var/log/hpcjobs-test/sshd-bastion.log")
    before = bastion_log.read_text(errors="replace").count("Accepted publickey for alice")
    res = laptop.run("job", "create", "-f", "examples/hello-world.yml", "-s", "testcluster-jump", "--stream")
    assert res.returncode == 0, res.stderr
    assert "hello world" in res.stdout
    assert bastion_log.read_text(errors="replace").count("Accepted publickey for alice") > before


# --------------------------------------------------------------------------- job verbs (CLI)
def test_hello_code_stream_show_list_download(trusted: Laptop, tmp_path: Path) -> None:
    res = trusted.run("job", "create", "-f", "examples/hello-code.yml", "-s", SITE, "--stream")
    assert res.returncode == 0, res.stderr
    assert "hello world from hello.py" in res.stdout
    name = _run_name(res)
    view = trusted.json("job", "show", "-n", name)
    assert view["status"] == "Completed" and view["site"] == SITE
    assert view["paths"]["job_dir"].startswith("/home/alice/hpcjobs/")
    # the code ran from the content-addressed snapshot the submission shipped
    assert any(j["name"] == name for j in trusted.json("job", "list"))
    out = trusted.alice.workdir / "dl"
    first = trusted.json("job", "download", "-n", name, "-p", str(out))
    assert first["written"] >= 1 and first["refused"] == []
    log = out / "artifacts" / "user_logs" / "std_log.txt"
    assert "hello world from hello.py" in log.read_text()
    again = trusted.json("job", "download", "-n", name, "-p", str(out))
    assert again["written"] == 0 and again["skipped_same"] == first["written"]
    # a followed log from a second command (job stream) on a finished job
    res = trusted.run("job", "stream", "-n", name)
    assert res.returncode == 0 and "hello world from hello.py" in res.stdout


def test_cancel_and_validate_over_ssh(trusted: Laptop) -> None:
    job = trusted.alice.write("sleepy.yml", "command: sleep 600\n")
    view = trusted.json("job", "create", "-f", str(job), "-s", SITE)
    view = trusted.json("job", "cancel", "-n", view["name"])
    assert view["status"] == "Canceled"
    (sid,) = view["scheduler"]["job_ids"]
    state = subprocess.run(["sacct", "-X", "-n", "-P", "-j", sid, "-o", "State"], capture_output=True, text=True).stdout
    assert state == "" or state.startswith("CANCELLED")
    result = trusted.json("job", "validate", "-f", "examples/hello-world.yml", "-s", SITE)
    assert result["test_only"][0]["ok"] is True and result["test_only"][0]["partition"] == "debug"
    # Slurm's own answer comes back over SSH: the debug partition has 2 nodes, not 5
    res = trusted.run("job", "validate", "-f", "examples/hello-world.yml", "-s", SITE, "--set", "resources.instance_count=5")
    assert res.returncode == 2, res.stdout + res.stderr


def test_local_data_input_uploaded_and_read_by_the_job(trusted: Laptop) -> None:
    trusted.alice.write("data/part-0.csv", "x,y\n1,2\n")
    trusted.alice.write("data/sub/notes.txt", "deep file\n")
    trusted.alice.write("lookup.csv", "k,v\n")
    job = trusted.alice.write(
        "data-job.yml",
        "command: cat ${{inputs.table}}/part-0.csv ${{inputs.table}}/sub/notes.txt ${{inputs.lookup}}\n"
        "inputs:\n"
        "  table: {type: uri_folder, path: ./data}\n"
        "  lookup: {type: uri_file, path: ./lookup.csv, mode: download}\n",
    )
    res = trusted.run("job", "create", "-f", str(job), "-s", SITE, "--stream")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-4:] == ["x,y", "1,2", "deep file", "k,v"]
    # the plan shows the content-addressed copies the job reads
    plan = json.loads(trusted.ok("job", "create", "-f", str(job), "-s", SITE, "--dry-run", "-o", "json").stdout)
    assert plan["inputs"]["table"].startswith("/home/alice/hpcjobs/.data/") and plan["inputs"]["table"].endswith("/data")
    assert sorted(plan["uploads"].values()) == sorted([str(trusted.alice.workdir / "data"), str(trusted.alice.workdir / "lookup.csv")])


# --------------------------------------------------------------------------- in-process (API)
@pytest.fixture
def api_site(sshd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A private HPCJOBS_HOME with an SSH site like testcluster-ssh (tracking off, private key and known_hosts)."""
    from hpcjobs import backends
    from hpcjobs.transport.ssh import close_pool

    home = tmp_path / "home"
    key = tmp_path / "id_alice"
    shutil.copyfile(sshd / "alice_ed25519", key)
    key.chmod(0o600)
    known = tmp_path / "known_hosts"
    shutil.copyfile(sshd / "known_hosts", known)
    monkeypatch.setenv("HPCJOBS_HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.chdir(tmp_path)

    def write(name: str = "ssh-api", port: int = LOGIN, known_hosts: Path = known) -> str:
        data = yaml.safe_load((REPO / "site-configs" / f"{SITE}.yml").read_text())
        data["name"] = name
        data["ssh"].update(port=port, identity_file=str(key), known_hosts=str(known_hosts))
        data["tracking"] = {"mode": "none"}
        d = home / "config" / "sites"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.yml").write_text(yaml.safe_dump(data))
        return name

    write.known = known  # type: ignore[attr-defined]
    backends.close_all()
    close_pool()
    yield write
    backends.close_all()
    close_pool()


def _new_cli_run() -> None:
    """What a new CLI process starts with: no transports, no pooled connections."""
    from hpcjobs import backends
    from hpcjobs.transport.ssh import close_pool

    backends.close_all()
    close_pool()


def _transport(site: str) -> Any:
    from hpcjobs import backends
    from hpcjobs.site import get_site

    return backends.transport_for(get_site(site))


class _PayloadSpy:
    """Records the stdin of every remote command of a transport (the submission's tar)."""

    def __init__(self, transport: Any) -> None:
        self.payloads: list[bytes] = []
        orig = transport.run

        def run(argv: Any, **kw: Any) -> Any:
            if kw.get("stdin"):
                self.payloads.append(kw["stdin"])
            return orig(argv, **kw)

        transport.run = run

    def members(self, i: int = -1) -> dict[str, int]:
        with tarfile.open(fileobj=io.BytesIO(self.payloads[i]), mode="r:gz") as tf:
            return {m.name: m.size for m in tf.getmembers()}


def _git_repo(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    for rel, data in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    for argv in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "init"]):
        subprocess.run(argv, cwd=path, env=env, check=True, capture_output=True)
    return path


def test_round_trips_and_upload_bytes_per_submission(api_site: Any, tmp_path: Path) -> None:
    """One connection and at most 3 remote commands per submission, whatever the job's size;
    unchanged code and data upload 0 bytes of file content the second time."""
    from hpcjobs import api

    site = api_site()
    blob = os.urandom(256 * 1024)  # incompressible: it shows in the bytes on the wire
    code = _git_repo(tmp_path / "proj", {"train.py": b"print('trained')\n", "weights.bin": blob})
    for i in range(150):
        (code / "pkg" / f"m{i}.py").parent.mkdir(exist_ok=True)
        (code / "pkg" / f"m{i}.py").write_text(f"X = {i}\n")
    (code / "train.py").write_text("print('trained, dirty')\n")  # uncommitted change
    data = tmp_path / "data"
    data.mkdir()
    (data / "d.bin").write_bytes(os.urandom(64 * 1024))
    job = tmp_path / "job.yml"
    job.write_text(
        "command: python train.py && ls pkg | wc -l && wc -c < ${{inputs.d}}/d.bin\n"
        f"code: {code}\n"
        "inputs:\n  d: {type: uri_folder, path: ./data}\n"
    )
    small = tmp_path / "small.yml"
    small.write_text("command: echo small\n")

    measured: dict[str, tuple[int, int, int]] = {}

    def submit(label: str, file: Path) -> tuple[dict[str, Any], _PayloadSpy]:
        _new_cli_run()
        t = _transport(site)
        spy = _PayloadSpy(t)
        view = api.create_job(str(file), site=site)
        measured[label] = (t.stats.connections, t.stats.commands, t.stats.bytes_sent)
        return view, spy

    v1, spy1 = submit("code+data, first", job)
    v2, spy2 = submit("code+data, unchanged", job)
    submit("no code, probe cached", small)
    print("\nSSH round trips per submission (connections, remote commands, bytes sent):")
    for label, (conns, cmds, sent) in measured.items():
        print(f"  {label:28s} {conns} connection, {cmds} commands, {sent} bytes")

    for conns, cmds, _ in measured.values():
        assert conns == 1 and cmds <= 3
    # first: probe + one check for the snapshot and the data + the submission
    assert measured["code+data, first"][1] == 3
    # the home/user probe is kept in the store's meta table: a new CLI run skips it
    assert measured["code+data, unchanged"][1] == 2
    assert measured["no code, probe cached"][1] == 1

    first, second = spy1.members(), spy2.members()
    shipped = {n: s for n, s in first.items() if n.startswith((".snapshots/", ".data/"))}
    assert sum(shipped.values()) >= len(blob) + 64 * 1024
    assert not [n for n in second if n.startswith((".snapshots/", ".data/"))], second
    assert measured["code+data, first"][2] > len(blob) + 64 * 1024
    assert measured["code+data, unchanged"][2] < 40 * 1024

    # git repository, commit and dirty flag recorded on the job (as Azure does)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True, check=True).stdout.strip()
    assert v1["properties"]["azureml.git.commit"] == head
    assert v1["properties"]["azureml.git.dirty"] == "True"
    # both ran the same snapshot and the uploaded data
    for v in (v1, v2):
        name = v["name"]
        final = _wait(name)
        assert final["status"] == "Completed", final
        log = _transport(site).read_file(final["paths"]["log"]).decode()
        assert "trained, dirty" in log and "150" in log and "65536" in log


def _wait(name: str, timeout: float = 300) -> dict[str, Any]:
    from hpcjobs import api

    deadline = time.time() + timeout
    while True:
        view = api.show_job(name)
        if view["status"] in ("Completed", "Failed", "Canceled") or time.time() > deadline:
            return view
        time.sleep(1)


def _proxy_site(api_site: Any, proxy: TCPProxy, tmp_path: Path) -> str:
    # the login node's keys, under the proxy's port (host keys are per host:port)
    known = tmp_path / "known_hosts_proxy"
    lines = [line.replace("[127.0.0.1]:2222", f"[127.0.0.1]:{proxy.port}") for line in api_site.known.read_text().splitlines()]
    known.write_text("\n".join(lines) + "\n")
    return str(api_site("ssh-proxy", port=proxy.port, known_hosts=known))


def test_connection_cut_after_sbatch_gives_exactly_one_job(api_site: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpcjobs import api
    from hpcjobs.store import Store

    monkeypatch.setenv("HPCJOBS_FAULT", "after_sbatch")  # the remote program holds the id back 4 s
    monkeypatch.setenv("HPCJOBS_FAULT_SLEEP", "4")
    job = tmp_path / "job.yml"
    job.write_text("command: echo survived the cut\n")
    with TCPProxy(LOGIN) as proxy:
        site = _proxy_site(api_site, proxy, tmp_path)
        name = f"cut_{os.getpid()}_{int(time.time())}"
        result: dict[str, Any] = {}

        def create() -> None:
            try:
                result["view"] = api.create_job(str(job), site=site, name=name)
            except Exception as exc:  # reported below
                result["error"] = exc

        th = threading.Thread(target=create)
        th.start()
        deadline = time.time() + 60
        while not _squeue_comments(name):
            assert time.time() < deadline, "sbatch never ran"
            time.sleep(0.05)
        # sbatch ran; its id has not come back yet: drop the connection (RST)
        assert proxy.cut_all() >= 1
        th.join(timeout=120)
        assert "error" not in result, result.get("error")
        view = result["view"]
        jobs = _squeue_comments(name)
        assert len(jobs) == 1, jobs  # adopted, not submitted again
        sid, comment = jobs[0].split("|")
        assert view["scheduler"]["job_ids"] == [sid]
        rec = Store().get(name)
        assert rec.slurm_ids == [sid] and comment == f"hpcjobs:{rec.token}"
        assert _transport(site).stats.connections == 2  # the cut one and the retry
        assert _wait(name)["status"] == "Completed"
    assert _sacct_count(name) == 1


def test_cut_with_no_way_back_keeps_the_job_and_adopts_it_later(
    api_site: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hpcjobs import api
    from hpcjobs.backends import slurm as slurm_backend
    from hpcjobs.errors import SubmissionUncertain
    from hpcjobs.store import Store

    monkeypatch.setenv("HPCJOBS_FAULT", "after_sbatch")
    monkeypatch.setenv("HPCJOBS_FAULT_SLEEP", "3")
    monkeypatch.setattr(slurm_backend, "RETRIES", 1)
    job = tmp_path / "job.yml"
    job.write_text("command: echo kept\n")
    with TCPProxy(LOGIN) as proxy:
        site = _proxy_site(api_site, proxy, tmp_path)
        name = f"lost_{os.getpid()}_{int(time.time())}"
        result: dict[str, Any] = {}

        def create() -> None:
            try:
                result["view"] = api.create_job(str(job), site=site, name=name)
            except Exception as exc:
                result["error"] = exc

        th = threading.Thread(target=create)
        th.start()
        deadline = time.time() + 60
        while not _squeue_comments(name):
            assert time.time() < deadline, "sbatch never ran"
            time.sleep(0.05)
        proxy.refuse()  # the network stays down for every retry
        proxy.cut_all()
        th.join(timeout=120)
        assert isinstance(result.get("error"), SubmissionUncertain), result
        # the store did not forget a job Slurm has
        rec = Store().get(name)
        assert rec.status == "Unknown" and rec.extra.get("submit_uncertain")
        proxy.refuse(False)
        _new_cli_run()
        view = api.show_job(name)
    (sid,) = [j.split("|")[0] for j in _squeue_comments(name)]
    assert view["scheduler"]["job_ids"] == [sid]
    assert view["status"] in ("Queued", "Running", "Completed")
    assert "submit_uncertain" not in Store().get(name).extra


def test_hostile_tar_from_the_cluster_writes_nothing_outside(api_site: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose outputs hold escaping links, then a crafted tar stream sent over SSH."""
    from hpcjobs import api, staging

    site = api_site()
    job = tmp_path / "evil.yml"
    job.write_text(
        "command: |\n"
        "  ln -s /etc/passwd outputs/passwd\n"
        "  ln -s ../../../../../../etc outputs/up\n"
        "  ln -s /home/alice/.ssh outputs/keys\n"
        "  mkdir -p outputs/d && ln -s .. outputs/d/parent && echo fine > outputs/ok.txt\n"
    )
    view = api.create_job(str(job), site=site)
    assert _wait(view["name"])["status"] == "Completed"
    box = tmp_path / "box"
    target = box / "target"
    box.mkdir()
    (box / "sentinel").write_text("untouched")
    report = api.download_job(view["name"], download_path=target)
    assert (target / "artifacts" / "outputs" / "ok.txt").read_text() == "fine\n"
    for link in ("passwd", "up", "keys"):
        assert not (target / "artifacts" / "outputs" / link).exists(), link
    assert len(report["refused"]) >= 3
    assert sorted(p.name for p in box.iterdir()) == ["sentinel", "target"]

    # A cluster-side tar that no real filesystem would give: made on the "cluster" and
    # streamed back over SSH in place of the download's tar command.
    evil = Path("/srv/hpcjobs-tests") / f"evil-{os.getpid()}.tar.gz"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:

        def add(name: str, data: bytes = b"x", **attrs: Any) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data) if attrs.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
            for k, v in attrs.items():
                setattr(info, k, v)
            tf.addfile(info, io.BytesIO(data) if info.size else None)

        add("../escaped.txt")
        add(str(box / "absolute.txt"))
        add("artifacts/outputs/a/../../../../escaped2.txt")
        add("artifacts/outputs/link", type=tarfile.SYMTYPE, linkname=str(box))
        add("artifacts/outputs/link/through.txt")
        add("artifacts/outputs/rel", type=tarfile.SYMTYPE, linkname="../../..")
        add("artifacts/outputs/rel/through2.txt")
        add("artifacts/outputs/hard", type=tarfile.LNKTYPE, linkname=str(box / "sentinel"))
        add("artifacts/outputs/dev", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add("artifacts/outputs/fine.txt", b"fine")
    evil.write_bytes(buf.getvalue())
    evil.chmod(0o644)
    try:
        monkeypatch.setattr(staging, "tar_command", lambda pairs: ["cat", str(evil)])
        target2 = box / "target2"
        report = api.download_job(view["name"], download_path=target2)
    finally:
        evil.unlink()
    assert (target2 / "artifacts" / "outputs" / "fine.txt").read_bytes() == b"fine"
    # every escaping member refused; the files "through" a refused link land in a real
    # folder inside the target instead
    assert len(report["refused"]) == 7, report
    assert report["written"] == 3
    for p in target2.rglob("*"):
        assert not p.is_symlink() and p.resolve().is_relative_to(target2.resolve()), p
    assert sorted(p.name for p in box.iterdir()) == ["sentinel", "target", "target2"]
    assert (box / "sentinel").read_text() == "untouched"
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "escaped2.txt").exists()
