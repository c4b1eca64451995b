"""Fixtures for tests against the real test cluster (tests/cluster/up.sh).

The cluster is shared by every integration test: it is started once by tests/run.sh (or by
the `cluster` fixture if it is not up yet) and never reconfigured by a test.  Jobs are
submitted as the non-root user alice through /opt/hpcjobs-venv (tests/cluster/alice-venv.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ALICE_VENV = Path("/opt/hpcjobs-venv")
SHARED = Path("/srv/hpcjobs-tests")


def _cluster_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    res = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20, check=False)
    return res.returncode == 0 and "debug" in res.stdout


@pytest.fixture(scope="session")
def cluster() -> None:
    """The real Slurm test cluster; started if needed, skipped only where it cannot run."""
    if _cluster_up():
        return
    if os.geteuid() != 0:
        pytest.skip("the test cluster is not running and starting it needs root (tests/cluster/up.sh)")
    res = subprocess.run(["bash", str(REPO / "tests/cluster/up.sh")], capture_output=True, text=True, check=False)
    if res.returncode != 0 or not _cluster_up():
        pytest.fail(f"tests/cluster/up.sh failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


@pytest.fixture(scope="session")
def alice_venv(cluster: None) -> Path:
    """hpcjobs installed where alice can run it."""
    if os.geteuid() != 0:
        pytest.skip("running hpcjobs as alice needs root (runuser)")
    res = subprocess.run(["bash", str(REPO / "tests/cluster/alice-venv.sh")], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        pytest.fail(f"tests/cluster/alice-venv.sh failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return ALICE_VENV


@dataclass
class Alice:
    """Runs the real hpcjobs CLI as the test user alice, with her own HPCJOBS_HOME."""

    home: Path
    workdir: Path
    venv: Path
    #: MLflow tracking for her jobs (off unless a test asks: see run())
    tracking: bool = False

    def run(self, *args: str, timeout: float = 300, check: bool = False, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {
            "PATH": f"{self.venv}/bin:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/home/alice",
            "USER": "alice",
            "LANG": "C.UTF-8",
            "HPCJOBS_HOME": str(self.home),
            **(env or {}),
        }
        # MLflow has its own tests (test_mlflow*.py, which ask for it); elsewhere a finished
        # job must not start a background import of mlflow (seconds of CPU on a 2-core CI)
        if not self.tracking and not any(k == "HPCJOBS_TRACKING" or k.startswith("HPCJOBS_MLFLOW") for k in (env or {})):
            full_env["HPCJOBS_TRACKING"] = "none"
        argv = ["runuser", "-u", "alice", "--", "env", "-i", *[f"{k}={v}" for k, v in full_env.items()], f"{self.venv}/bin/hpcjobs", *args]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.workdir, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"hpcjobs {' '.join(args)} exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}")
        return res

    def json(self, *args: str, **kw: object) -> object:
        res = self.run(*args, "-o", "json", check=True, **kw)  # type: ignore[arg-type]
        return json.loads(res.stdout)

    def write(self, name: str, text: str) -> Path:
        p = self.workdir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        _chown_alice(p)
        return p

    def wait(self, name: str, timeout: float = 300) -> dict[str, object]:
        deadline = time.time() + timeout
        while True:
            view = self.json("job", "show", "-n", name)
            assert isinstance(view, dict)
            if view["status"] in ("Completed", "Failed", "Canceled") or time.time() > deadline:
                return view
            time.sleep(1)


def _chown_alice(path: Path) -> None:
    shutil.chown(path, "alice", "alice")


@pytest.fixture()
def alice(alice_venv: Path) -> Iterator[Alice]:
    """A fresh HPCJOBS_HOME and work folder for alice, with a copy of examples/."""
    SHARED.mkdir(mode=0o755, exist_ok=True)
    os.chmod(SHARED, 0o755)
    root = SHARED / uuid.uuid4().hex[:12]
    work = root / "work"
    shutil.copytree(REPO / "examples", work / "examples")
    (root / "home").mkdir()
    subprocess.run(["chown", "-R", "alice:alice", str(root)], check=True)
    yield Alice(home=root / "home", workdir=work, venv=alice_venv)
    shutil.rmtree(root, ignore_errors=True)


def conf_without_accounting(where: Path) -> Path:
    """A copy of the cluster's slurm.conf whose slurmdbd port refuses connections.

    Commands that read it talk to the real slurmctld as usual, while the real ``sacct``
    fails with "Problem talking to the database": accounting down, as on a cluster
    whose slurmdbd is being restarted (or so far behind that it knows nothing yet).
    """
    shown = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    src = Path(next(ln.split("=", 1)[1].strip() for ln in shown.splitlines() if ln.startswith("SLURM_CONF ")))
    where.mkdir(parents=True, exist_ok=True)
    where.chmod(0o755)
    lines = [ln for ln in src.read_text().splitlines() if not ln.startswith("AccountingStoragePort")]
    conf = where / "slurm.conf"
    conf.write_text("\n".join([*lines, "AccountingStoragePort=9", ""]))
    conf.chmod(0o644)
    probe = subprocess.run(
        ["sacct", "-n", "-X", "-S", "now-1minutes"],
        capture_output=True,
        text=True,
        env={"SLURM_CONF": str(conf), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert "database" in probe.stderr.lower(), probe.stderr
    return conf

