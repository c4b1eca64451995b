"""Containers and Python environments on the real test cluster, as alice.

Charliecloud (Debian's ``charliecloud-runtime``) is the container runtime that runs on these
machines.  The tests build a small directory image themselves -- bash, a few coreutils and
the host's Python copied with their libraries, plus a marker file ``/IMAGE_MARKER`` -- and
hand it to jobs as a ``.tar`` file, so hpcjobs converts it once into the image cache the way
it would a downloaded image.  Apptainer, Singularity, pyxis and podman cannot run here; their
rendered commands are golden-tested in tests/unit/test_environments.py.

Python environments are built from a local wheel (tests/helpers/tinywheel.py) so that no
test depends on PyPI.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SHARED = Path("/srv/hpcjobs-tests")
NO_TRACKING = {"HPCJOBS_TRACKING": "none"}

sys.path.insert(0, str(REPO / "tests" / "helpers"))
from tinywheel import make_wheel  # noqa: E402

#: what the image holds: a shell, the commands hpcjobs' scripts use inside it, and Python
IMAGE_PROGRAMS = (
    "bash", "sh", "cat", "ls", "env", "dirname", "basename", "uname", "date", "mkdir", "rm", "id", "test", "true", "sleep", "python3.11",
)  # fmt: skip


# --------------------------------------------------------------------------- the test image
def _libraries(binaries: list[str]) -> set[str]:
    """Shared libraries (and the loader) the binaries need, from ldd."""
    out: set[str] = set()
    res = subprocess.run(["ldd", *binaries], capture_output=True, text=True, check=False)
    for line in res.stdout.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            out.add(m.group(1))
    return out


def _copy_into(root: Path, path: str) -> None:
    dest = root / path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copy2(os.path.realpath(path), dest)


def build_directory_image(root: Path, marker: str) -> None:
    """A minimal Debian-like directory image made of this host's own programs.

    Merged /usr like Debian 12 (/bin -> usr/bin), the programs of :data:`IMAGE_PROGRAMS`
    and their libraries, Python 3.11's standard library and the wheels its ensurepip
    uses, empty /etc/passwd and /etc/group (ch-run binds its own over them) and the
    marker file.
    """
    for d in ("usr/bin", "usr/lib", "usr/lib64", "usr/sbin", "etc", "tmp", "dev", "proc", "sys", "home", "mnt", "root"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link, to in (("bin", "usr/bin"), ("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
        (root / link).symlink_to(to)
    binaries = []
    for prog in IMAGE_PROGRAMS:
        found = shutil.which(prog, path="/usr/bin:/bin")
        assert found, f"{prog} is not installed on this machine"
        binaries.append(found)
        shutil.copy2(os.path.realpath(found), root / "usr/bin" / prog)
    (root / "usr/bin/python3").symlink_to("python3.11")
    stdlib = Path("/usr/lib/python3.11")
    shutil.copytree(stdlib, root / "usr/lib/python3.11", symlinks=True, ignore=shutil.ignore_patterns("test", "__pycache__", "idlelib"))
    if Path("/usr/share/python-wheels").is_dir():
        shutil.copytree("/usr/share/python-wheels", root / "usr/share/python-wheels")
    dynload = [str(p) for p in (stdlib / "lib-dynload").glob("*.so")]
    for lib in _libraries(binaries) | _libraries(dynload):
        # keep the library's own path: the loader finds it there (and under the symlinked /lib)
        real = Path(lib)
        dest = root / str(real).lstrip("/")
        if str(real).startswith(("/lib/", "/lib64/")):
            dest = root / "usr" / str(real).lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            shutil.copy2(os.path.realpath(lib), dest)
    (root / "etc/passwd").touch()
    (root / "etc/group").touch()
    (root / "IMAGE_MARKER").write_text(marker + "\n")


@dataclass
class ImageFiles:
    """The test image, as a .tar file alice can read, and the shared folder it is in."""

    tar: Path
    marker: str
    folder: Path


@pytest.fixture(scope="module")
def image(alice_venv: Path) -> Iterator[ImageFiles]:
    if shutil.which("ch-run") is None:
        pytest.fail("ch-run is not installed (tests/cluster/up.sh installs charliecloud-runtime)")
    SHARED.mkdir(mode=0o755, exist_ok=True)
    folder = SHARED / f"image-{uuid.uuid4().hex[:10]}"
    root = folder / "rootfs"
    marker = f"inside-the-test-image-{uuid.uuid4().hex[:8]}"
    build_directory_image(root, marker)
    tar = folder / "testimage.tar"
    with tarfile.open(tar, "w") as tf:
        for child in sorted(root.iterdir()):
            tf.add(child, arcname=child.name)
    shutil.rmtree(root)
    subprocess.run(["chown", "-R", "alice:alice", str(folder)], check=True)
    os.chmod(folder, 0o755)
    yield ImageFiles(tar=tar, marker=marker, folder=folder)
    shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- sites and helpers
def write_site(alice, name: str, *, runtime: str, cache: Path, binds: list[str] | None = None) -> None:
    """A copy of the testcluster site with a container runtime and caches of its own."""
    text = (REPO / "site-configs" / "testcluster.yml").read_text().replace("name: testcluster", f"name: {name}")
    text += (
        "environment:\n"
        f"  runtime: {runtime}\n"
        f"  image_cache: {cache}/images\n"
        f"  env_cache: {cache}/envs\n"
        f"  python: /usr/bin/python3\n"
        f"  binds: {json.dumps(binds or [])}\n"
    )
    sites = alice.home / "config" / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    (sites / f"{name}.yml").write_text(text)
    subprocess.run(["chown", "-R", "alice:alice", str(alice.home)], check=True)


@pytest.fixture()
def cache(alice) -> Path:
    """Image and environment caches that belong to this test alone (so counts are exact)."""
    path = alice.workdir.parent / "cache"
    path.mkdir()
    subprocess.run(["chown", "alice:alice", str(path)], check=True)
    return path


def create(alice, job: Path, site: str, *args: str) -> dict:
    res = alice.run("job", "create", "-f", str(job), "--site", site, *args, "-o", "json", env=NO_TRACKING, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def std_log(view: dict) -> str:
    return (Path(view["paths"]["job_dir"]) / "user_logs" / "std_log.txt").read_text()


def wait(alice, name: str, timeout: float = 600) -> dict:
    view = alice.wait(name, timeout=timeout)
    assert view["status"] in ("Completed", "Failed", "Canceled"), view
    return view


# --------------------------------------------------------------------------- charliecloud for real
def test_charliecloud_job_runs_inside_the_image(alice, image: ImageFiles, cache: Path) -> None:
    """The command's process runs in the image: it reads the image's marker at / and not the host's files.

    It also sees the job's environment variables, its code, its input and output folders
    (bound at the same paths) and the GPU devices Slurm gave the job.
    """
    write_site(alice, "chtest", runtime="charliecloud", cache=cache)
    data = alice.workdir / "data"
    data.mkdir()
    (data / "numbers.txt").write_text("1 2 3\n")
    src = alice.workdir / "src"
    src.mkdir()
    (src / "probe.py").write_text(
        textwrap_dedent(
            """
            import os, sys
            print("MARKER", open("/IMAGE_MARKER").read().strip())
            print("HOST_FILE", os.path.exists("/etc/debian_version"))
            print("CH_RUNNING", os.environ.get("CH_RUNNING"))
            print("GREETING", os.environ.get("GREETING"))
            print("INPUT", open(os.path.join(sys.argv[1], "numbers.txt")).read().strip())
            print("GPUS", os.environ.get("CUDA_VISIBLE_DEVICES"), sorted(d for d in os.listdir("/dev") if d.startswith("fakegpu")))
            with open(os.path.join(sys.argv[2], "result.txt"), "w") as f:
                f.write("written inside the container\\n")
            print("PYTHON", sys.executable, os.getcwd() == os.environ["HPCJOBS_WORK"])
            """
        )
    )
    job = alice.write(
        "inside.yml",
        "command: python3 probe.py ${{inputs.data}} ${{outputs.result}}\n"
        "code: src\n"
        f"environment:\n  image: {image.tar}\n"
        f"inputs:\n  data: {{type: uri_folder, path: {data}}}\n"
        "outputs:\n  result: {type: uri_folder}\n"
        "environment_variables: {GREETING: hello from the host}\n"
        "compute: azureml:gpu-cluster\n"
        "resources: {instance_type: gpu-1}\n",
    )
    subprocess.run(["chown", "-R", "alice:alice", str(alice.workdir)], check=True)
    view = wait(alice, create(alice, job, "chtest")["name"])
    log = std_log(view)
    assert view["status"] == "Completed", log
    lines = dict(line.split(" ", 1) for line in log.splitlines() if line.split(" ", 1)[0].isupper() and " " in line)
    assert lines["MARKER"] == image.marker
    assert Path("/etc/debian_version").exists() and lines["HOST_FILE"] == "False"
    assert lines["CH_RUNNING"] == "Weird Al Yankovic"
    assert lines["GREETING"] == "hello from the host"
    assert lines["INPUT"] == "1 2 3"
    gpus, devices = lines["GPUS"].split(" ", 1)
    assert gpus == "0" and devices.startswith("['fakegpu")
    assert lines["PYTHON"].endswith("True")
    out = Path(view["paths"]["job_dir"]) / "named-outputs" / "result" / "result.txt"
    assert out.read_text() == "written inside the container\n"
    # the .tar was converted once into the image cache
    converted = [p for p in (cache / "images").iterdir() if p.is_dir()]
    assert len(converted) == 1 and converted[0].name.startswith("testimage-") and converted[0].name.endswith(".ch")


def textwrap_dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).lstrip("\n")


def _pip_job(alice, wheel: Path, image_tar: Path | None, name: str) -> Path:
    env = f"environment:\n  conda_file: {name}-env.yaml\n"
    if image_tar is not None:
        env += f"  image: {image_tar}\n"
    alice.write(f"{name}-env.yaml", f"dependencies:\n  - python=3.11\n  - pip\n  - pip:\n      - {wheel}\n")
    return alice.write(
        f"{name}.yml",
        "command: >-\n"
        "  python -c \"import hpcjobs_probe, sys, os; print('PROBE', hpcjobs_probe.MESSAGE, sys.prefix,"
        " os.path.exists('/IMAGE_MARKER'))\"\n" + env,
    )


def test_one_environment_build_shared_by_10_concurrent_jobs(alice, image: ImageFiles, cache: Path) -> None:
    """Ten jobs submitted at once with the same pip environment, in the container: one build, used by all."""
    wheel = make_wheel(image.folder / f"wheels-{uuid.uuid4().hex[:6]}", message="probe-from-the-local-wheel")
    subprocess.run(["chown", "-R", "alice:alice", str(wheel.parent)], check=True)
    # the wheel's folder is visible inside the containers through a site bind
    write_site(alice, "chenv", runtime="charliecloud", cache=cache, binds=[str(wheel.parent)])
    job = _pip_job(alice, wheel, image.tar, "shared")
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        names = [v["name"] for v in pool.map(lambda _: create(alice, job, "chenv"), range(10))]
    views = [wait(alice, n, timeout=900) for n in names]
    logs = [std_log(v) for v in views]
    assert [v["status"] for v in views] == ["Completed"] * 10, "\n----\n".join(logs)
    envs = cache / "envs"
    built = [p for p in envs.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(built) == 1, sorted(p.name for p in envs.iterdir())
    published = [p for p in envs.iterdir() if p.is_symlink()]
    assert len(published) == 1 and os.readlink(published[0]) == built[0].name
    # exactly one job built it (it says so in its log); the other nine found it or waited for it
    assert sum("building the Python environment" in log for log in logs) == 1
    for log in logs:
        probe = next(line for line in log.splitlines() if line.startswith("PROBE "))
        _, message, prefix, in_image = probe.split(" ")
        assert message == "probe-from-the-local-wheel" and prefix == f"{published[0]}/env" and in_image == "True", probe
    # and it was built inside the image, with the image's python
    build_log = (envs / f"{published[0].name}.log").read_text()
    assert "python -m venv" in build_log and "built: python 3.11" in build_log
    assert len([p for p in (cache / "images").iterdir() if p.is_dir()]) == 1


def test_array_tasks_share_one_environment_on_the_host(alice, image: ImageFiles, cache: Path) -> None:
    """Runtime none: a sweep's array tasks use one venv, built by the first task (no container)."""
    wheel = make_wheel(image.folder / f"wheels-{uuid.uuid4().hex[:6]}", message="probe on the host")
    subprocess.run(["chown", "-R", "alice:alice", str(wheel.parent)], check=True)
    write_site(alice, "hostenv", runtime="none", cache=cache)
    alice.write("host-env.yaml", f"dependencies:\n  - python\n  - pip\n  - pip:\n      - {wheel}\n")
    job = alice.write(
        "sweep.yml",
        "type: sweep\n"
        "trial:\n"
        "  command: >-\n"
        "    python -c \"import hpcjobs_probe, sys; print('PROBE', ${{search_space.x}}, hpcjobs_probe.MESSAGE, sys.prefix)\"\n"
        "  environment:\n    conda_file: host-env.yaml\n"
        "search_space:\n  x: {type: choice, values: [1, 2, 3, 4]}\n"
        "sampling_algorithm: grid\n"
        "objective: {goal: maximize, primary_metric: m}\n"
        "limits: {max_total_trials: 4, max_concurrent_trials: 4}\n",
    )
    view = wait(alice, create(alice, job, "hostenv")["name"], timeout=900)
    job_dir = Path(view["paths"]["job_dir"])
    logs = [p.read_text() for p in sorted((job_dir / "user_logs").glob("std_log_*.txt"))]
    assert view["status"] == "Completed", "\n----\n".join(logs)
    assert len(logs) == 4
    assert sum("building the Python environment" in log for log in logs) == 1
    envs = cache / "envs"
    assert len([p for p in envs.iterdir() if p.is_dir() and not p.is_symlink()]) == 1
    probes = sorted(line for log in logs for line in log.splitlines() if line.startswith("PROBE "))
    assert [p.split()[1] for p in probes] == ["1", "2", "3", "4"]
    assert all("probe on the host" in p and str(envs) in p for p in probes)


def test_failed_build_fails_the_job_and_points_at_its_log(alice, cache: Path) -> None:
    """A conda file that needs conda on a cluster without it: Failed, exit 77, the log's end in the job log."""
    write_site(alice, "noconda", runtime="none", cache=cache)
    job = alice.write("needs-conda.yml", "command: echo never\nenvironment:\n  conda_file:\n    dependencies: [python=3.11, numpy=1.26]\n")
    view = wait(alice, create(alice, job, "noconda")["name"], timeout=300)
    log = std_log(view)
    assert view["status"] == "Failed" and view["exit_code"] == 77, log
    assert "needs conda packages (numpy=1.26)" in log
    match = re.search(r"failed; the end of (\S+):", log)
    assert match, log
    assert Path(match.group(1)).read_text().count("neither micromamba, mamba nor conda") == 1
    assert "never" not in log


def test_conda_environment_where_conda_is_installed(alice, cache: Path) -> None:
    """With micromamba/mamba/conda on the cluster the conda file is built by it."""
    tool = next((t for t in ("micromamba", "mamba", "conda") if shutil.which(t, path="/usr/local/bin:/usr/bin:/bin")), None)
    if tool is None:
        pytest.skip("no conda, mamba or micromamba on the test cluster (the pip/venv path is tested above)")
    write_site(alice, "withconda", runtime="none", cache=cache)
    job = alice.write("conda.yml", "command: python -c 'import sys; print(\"PREFIX\", sys.prefix)'\nenvironment:\n  conda_file:\n    dependencies: [python]\n")
    view = wait(alice, create(alice, job, "withconda")["name"], timeout=900)
    assert view["status"] == "Completed", std_log(view)
    assert f"with {tool}" in next((cache / "envs").glob("*.log")).read_text()
