"""Environments on a site: image references, the catalog, conda files, Dockerfiles, rendering.

Rendering is golden-tested for every container runtime with and without GPUs
(``tests/golden/environments/``; regenerate with ``--update-golden`` and review the diff).
Apptainer, Singularity, pyxis and podman cannot run on the test machines, so for them the
rendered commands are what is tested; charliecloud also runs for real in
``tests/integration/test_containers.py``.  The shell pieces that do not need a container
(the once-only lock, venv builds, failure reports) run here in real bash.
"""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hpcjobs import environments as envs
from hpcjobs.dockerfile import translate
from hpcjobs.envcache import env_key, parse_conda
from hpcjobs.errors import ValidationError
from hpcjobs.plan import Plan, Target, plan_job
from hpcjobs.render import render
from hpcjobs.site import Compute, InstanceType, Site, SSHSettings, load_site_file
from hpcjobs.spec.load import load_job

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "environments"
SITE_EXAMPLES = REPO / "site-configs" / "examples"
EXAMPLES = REPO / "examples" / "environments"
TARGET = Target(home="/home/user", user="user")

sys.path.insert(0, str(REPO / "tests" / "helpers"))
from tinywheel import make_wheel  # noqa: E402


@pytest.fixture(autouse=True)
def _tracking_as_users_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Golden scripts show what a user gets, MLflow line included (conftest turns tracking off)."""
    monkeypatch.delenv("HPCJOBS_TRACKING", raising=False)



# --------------------------------------------------------------------------- image references
@pytest.mark.parametrize(
    ("written", "kind", "ref"),
    [
        ("docker://python:3.11", "docker", "docker://python:3.11"),
        ("library://sylabs/default/alpine:3.19", "library", "library://sylabs/default/alpine:3.19"),
        ("oras://ghcr.io/org/img:1", "oras", "oras://ghcr.io/org/img:1"),
        ("/software/img/pytorch.sif", "sif", "/software/img/pytorch.sif"),
        ("/software/img/pytorch.SIF", "sif", "/software/img/pytorch.SIF"),
        ("/software/img/base.sqfs", "squashfs", "/software/img/base.sqfs"),
        ("/software/img/base.sqsh", "squashfs", "/software/img/base.sqsh"),
        ("/software/img/base.tar.gz", "tar", "/software/img/base.tar.gz"),
        ("/software/img/sandbox/", "dir", "/software/img/sandbox"),
        ("library/python:latest", "docker", "docker://library/python:latest"),
        ("python:3.11-slim", "docker", "docker://python:3.11-slim"),
        (
            "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest",
            "docker",
            "docker://mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04:latest",
        ),
        ("nvcr.io/nvidia/pytorch@sha256:abc", "docker", "docker://nvcr.io/nvidia/pytorch@sha256:abc"),
    ],
)
def test_image_forms(written: str, kind: str, ref: str) -> None:
    image = envs.parse_image(written)
    assert (image.kind, image.ref, image.written) == (kind, ref, written)


@pytest.mark.parametrize(
    ("written", "message"),
    [
        ("", "empty"),
        ("docker://", "names no image"),
        ("shub://foo/bar", "shub:// scheme is not supported"),
        ("https://example.com/img.sif", "https:// scheme"),
        ("./img.sif", "relative path"),
        ("img.sif", "relative path"),
        ("~/img.sif", "relative path"),
        ("python:3.11\nrm -rf /", "control character"),
        ("python 3.11", "white space"),
        ("-rf", "not a valid image reference"),
    ],
)
def test_bad_images_are_refused(written: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        envs.parse_image(written)


def test_enroot_spelling_separates_the_registry() -> None:
    assert envs.enroot_ref("docker://nvcr.io/nvidia/pytorch:24.01-py3") == "docker://nvcr.io#nvidia/pytorch:24.01-py3"
    assert envs.enroot_ref("docker://localhost:5000/x:1") == "docker://localhost:5000#x:1"
    assert envs.enroot_ref("docker://library/python:3.11") == "docker://library/python:3.11"
    assert envs.enroot_ref("docker://python") == "docker://python"


# --------------------------------------------------------------------------- registered environments
def test_catalog_candidates_for_every_reference_form() -> None:
    assert envs.catalog_candidates("azureml:sk:3") == ["azureml:sk:3", "sk:3", "sk"]
    assert envs.catalog_candidates("azureml:sk@latest") == ["azureml:sk@latest", "sk@latest", "sk"]
    assert envs.catalog_candidates("azureml://registries/azureml/environments/sk/versions/7") == [
        "azureml://registries/azureml/environments/sk/versions/7",
        "sk:7",
        "sk",
    ]
    assert envs.catalog_candidates("azureml://registries/azureml/environments/sk/labels/latest")[-2:] == ["sk@latest", "sk"]
    assert envs.catalog_candidates("plain-name") == ["plain-name"]


def _site(tmp_path: Path, text: str) -> Site:
    path = tmp_path / "site.yml"
    path.write_text(textwrap.dedent(text))
    return load_site_file(path, "s")


def test_registered_name_resolves_through_the_catalog(tmp_path: Path) -> None:
    (tmp_path / "envs").mkdir()
    (tmp_path / "envs" / "c.yaml").write_text("dependencies: [python=3.11, pip, {pip: [tabulate]}]\n")
    site = _site(
        tmp_path,
        """
        scheduler: local
        environment:
          environments:
            sk:3: {image: python:3.11}
            sk: {modules: [py/3.11], conda_file: envs/c.yaml}
        """,
    )
    warnings: list[str] = []
    res = envs.resolve(site, "azureml:sk:3", warnings)
    assert res is not None and res.image is not None and res.image.ref == "docker://python:3.11"
    res = envs.resolve(site, "azureml:sk@latest", warnings)
    assert res is not None and res.modules == ["py/3.11"]
    assert res.conda is not None and res.conda.pip == ["tabulate"]  # the conda file beside the site config
    assert not warnings


def test_unknown_registered_name_lists_the_known_ones(tmp_path: Path) -> None:
    site = _site(
        tmp_path,
        """
        scheduler: local
        environment:
          environments:
            AzureML-sklearn-1.5: {image: python:3.11}
            pytorch-gpu: {image: /img/pt.sif}
        """,
    )
    with pytest.raises(ValidationError) as info:
        envs.resolve(site, "azureml:AzureML-sklearn-1.6@latest", [])
    err = info.value
    assert "is not in the environments catalog" in err.message
    assert err.hint is not None
    assert "did you mean 'AzureML-sklearn-1.5'?" in err.hint and "pytorch-gpu" in err.hint
    assert err.field == "environment"


def test_site_without_catalog_runs_registered_names_on_the_host_with_a_warning(tmp_path: Path) -> None:
    site = _site(tmp_path, "scheduler: local\n")
    warnings: list[str] = []
    assert envs.resolve(site, "azureml:anything@latest", warnings) is None
    assert warnings == ["environment 'azureml:anything@latest' is not mapped on site 's'; the command runs on the host"]


# --------------------------------------------------------------------------- conda files
def test_pip_only_conda_file_is_classified_and_canonical() -> None:
    spec = parse_conda(
        {"name": "x", "channels": ["defaults"], "dependencies": ["python=3.10", "pip", {"pip": ["tabulate==0.9", " -r x.txt "]}]},
        source="c",
    )
    assert spec.pip_only and spec.python == "3.10" and spec.pip == ["tabulate==0.9", "-r x.txt"]
    assert spec.requirements == "tabulate==0.9\n-r x.txt\n"
    assert "name" not in spec.text  # the name does not change the environment


def test_conda_packages_need_conda() -> None:
    spec = parse_conda({"dependencies": ["python>=3.9", "numpy=1.26", "pip"]}, source="c")
    assert not spec.pip_only and spec.conda == ["numpy=1.26"] and spec.python is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1], "must be a mapping"),
        ({"dependencies": "numpy"}, "must be a list"),
        ({"dependencies": [{"conda": ["x"]}]}, "must be {pip: \\[...\\]}"),
        ({"dependencies": [{"pip": ["a\nb"]}]}, "control character"),
        ({"dependencies": [], "extras": 1}, "unknown key"),
        ({"dependencies": [None]}, "is not a package name"),
        ({"dependencies": [], "variables": {"1X": "a"}}, "invalid variable name"),
    ],
)
def test_bad_conda_files(data: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_conda(data, source="c")


def test_environment_key_follows_content_not_layout() -> None:
    a = parse_conda({"name": "a", "dependencies": ["python=3.11", {"pip": ["tabulate"]}]}, source="a")
    b = parse_conda({"name": "b", "dependencies": ["python=3.11", {"pip": ["tabulate"]}]}, source="b")
    c = parse_conda({"dependencies": ["python=3.11", {"pip": ["tabulate==0.9.0"]}]}, source="c")
    assert env_key(a, image=None, python="python3") == env_key(b, image=None, python="python3")
    assert env_key(a, image=None, python="python3") != env_key(c, image=None, python="python3")
    # an environment built in an image, or from another interpreter, is another environment
    assert env_key(a, image="/img.sif", python="python3") != env_key(a, image=None, python="python3")
    assert env_key(a, image=None, python="python3.12") != env_key(a, image=None, python="python3")


# --------------------------------------------------------------------------- Dockerfiles
def test_dockerfile_translation() -> None:
    text = textwrap.dedent(
        """\
        # comment
        ARG FLAVOR=slim
        FROM --platform=linux/amd64 python:3.11-slim AS base
        ENV A=1 B="two words" \\
            C=$HOME/x
        ENV OLD value with spaces
        RUN apt-get update && \\
            apt-get install -y curl
        RUN ["pip", "install", "numpy"]
        WORKDIR /opt/app
        COPY src/ /opt/app/
        COPY run.py .
        LABEL maintainer=me
        EXPOSE 80
        USER nobody
        CMD ["python", "run.py"]
        """
    )
    tr = translate(text, context="/ctx", dirs=frozenset({"src"}))
    d = tr.definition
    assert d.startswith("Bootstrap: docker\nFrom: python:3.11-slim\n")
    assert "    /ctx/src /opt/app\n" in d and "    /ctx/run.py /opt/app/run.py\n" in d
    assert '    export B="two words"\n' in d and '    export C="$HOME/x"\n' in d and '    export OLD="value with spaces"\n' in d
    assert "    cd / && ( apt-get update && apt-get install -y curl ) || exit 1\n" in d
    assert "    cd / && ( pip install numpy ) || exit 1\n" in d
    assert "%runscript\n    exec python run.py \"$@\"\n" in d
    assert "%labels\n    maintainer me\n" in d
    assert any("USER nobody" in x for x in tr.dropped) and any("EXPOSE" in x for x in tr.dropped)
    assert tr.context_sources == ["src/", "run.py"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM a\nFROM b\n", "multi-stage"),
        ("FROM scratch\n", "FROM scratch"),
        ("FROM a\nADD https://x/y.tgz /y\n", "ADD of a URL"),
        ("FROM a\nCOPY --from=build /x /y\n", "not supported"),
        ("FROM a\nCOPY ../secret /y\n", "outside the build context"),
        ("FROM a\nADD data.tar.gz /d\n", "tar archive"),
        ("RUN echo\n", "before FROM"),
        ("FROM a\nFOO bar\n", "unknown Dockerfile instruction"),
        ("# nothing\n", "no FROM line"),
        ("FROM a\nSHELL [\"/bin/zsh\"]\n", "SHELL"),
    ],
)
def test_dockerfiles_that_cannot_be_translated(text: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        translate(text, context="/ctx")


# --------------------------------------------------------------------------- binds and launchers
def test_binds_drop_nested_folders_and_refuse_separators() -> None:
    site = Site(name="s", scheduler="local")
    got = envs.bind_list(site, ["/srv/j/job1", "/srv/j/.snapshots/x", "/data/in", "/srv/j/job1/outputs"], ["/srv/j/.envs"])
    assert got == ["/srv/j/job1", "/srv/j/.snapshots/x", "/data/in", "/srv/j/.envs"]
    site.environment.binds = ["/srv", "/a:/b"]
    assert envs.bind_list(site, ["/srv/j/job1", "/data/in"], []) == ["/data/in"]
    with pytest.raises(ValidationError, match="cannot be bind-mounted"):
        envs.bind_list(site, ["/data/a:b"], [])


def test_pyxis_options_join_the_distributed_srun() -> None:
    pyxis = ["srun", "--container-image=x"]
    assert envs.launcher_words(["srun", "--ntasks=4"], pyxis) == ["srun", "--container-image=x", "--ntasks=4"]
    assert envs.launcher_words([], pyxis) == pyxis
    assert envs.launcher_words(["srun", "-n2"], ["apptainer", "exec", "img"]) == ["srun", "-n2", "apptainer", "exec", "img"]


# --------------------------------------------------------------------------- golden rendering
RUNTIMES = ("apptainer", "singularity", "charliecloud", "pyxis", "podman")


def golden_site(runtime: str) -> Site:
    """The example site config of *runtime*, with two test computes (CPU only, 2 GPUs)."""
    name = "modules" if runtime == "none" else runtime
    site = load_site_file(SITE_EXAMPLES / f"{name}.yml", name)
    gpu = Compute(partition="gpu", gpus_per_node=2, instance_types={"one": InstanceType(gpus=1)})
    site.computes = {"cpu": Compute(partition="cpu"), "gpu": gpu}
    site.default_compute = "cpu"
    site.tracking.mode = "none"
    # job folders outside the site's own binds, so that their binds show; a datastore (bound
    # only where it exists on the node)
    site.job_root = "/home/$USER/hpcjobs"
    site.datastores = {"shared": "/datastores/$USER"}
    return site


def golden_job(tmp_path: Path, case: str) -> Path:
    """Job files of the golden cases (inputs and outputs, so the binds show)."""
    env = {
        "image": "environment:\n  image: library/python:3.11-slim\n",
        "sif": "environment:\n  image: /software/images/pytorch.sif\n",
        "tar": "environment:\n  image: /software/images/base.tar.gz\n",
        "squashfs": "environment:\n  image: /software/images/base.sqsh\n",
        "conda": f"environment:\n  image: library/python:3.11-slim\n  conda_file: {EXAMPLES / 'pip-requirements.yaml'}\n",
        "build": f"environment:\n  build:\n    path: {EXAMPLES / 'docker-context'}\n",
        "pip": f"environment:\n  conda_file: {EXAMPLES / 'pip-requirements.yaml'}\n",
        "registered": "environment: azureml:AzureML-sklearn-1.5@latest\n",
        "registered-conda": "environment: azureml:AzureML-pytorch-2.2\n",
    }[case]
    path = tmp_path / f"{case}.yml"
    path.write_text(
        "command: python train.py --data ${{inputs.data}} --out ${{outputs.model}}\n"
        "inputs:\n  data: {type: uri_folder, path: /datasets/mnist}\n"
        "outputs:\n  model: {type: uri_folder}\n"
        "environment_variables: {GREETING: hello world}\n" + env
    )
    return path


GOLDEN_CASES: list[tuple[str, str, bool]] = [
    *((rt, "image", gpu) for rt in RUNTIMES for gpu in (False, True)),
    *((rt, "conda", False) for rt in RUNTIMES),
    ("apptainer", "sif", True),
    ("singularity", "sif", False),
    ("charliecloud", "tar", True),
    ("pyxis", "squashfs", True),
    ("apptainer", "build", False),
    ("singularity", "build", True),
    ("charliecloud", "build", False),
    ("podman", "build", False),
    ("apptainer", "registered", True),
    ("none", "pip", False),
    ("none", "registered", False),
    ("none", "registered-conda", True),
]


def golden_id(runtime: str, case: str, gpu: bool) -> str:
    return f"{runtime}.{case}.{'gpu' if gpu else 'cpu'}"


def render_case(tmp_path: Path, runtime: str, case: str, gpu: bool) -> Plan:
    site = golden_site(runtime)
    loaded = load_job(golden_job(tmp_path, case), ["compute=gpu"] if gpu else [])
    return plan_job(loaded, site, TARGET, name="envjob", token="0" * 16)


def normalise(text: str) -> str:
    return text.replace(str(REPO), "@REPO@")


@pytest.mark.parametrize(("runtime", "case", "gpu"), GOLDEN_CASES, ids=[golden_id(*c) for c in GOLDEN_CASES])
def test_golden_environment_rendering(runtime: str, case: str, gpu: bool, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    plan = render_case(tmp_path, runtime, case, gpu)
    text = normalise(plan.scripts[0].text)
    gold = GOLDEN / f"{golden_id(runtime, case, gpu)}.sh"
    if request.config.getoption("--update-golden"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        if not gold.exists() or gold.read_text(encoding="utf-8") != text:
            gold.write_text(text, encoding="utf-8")
        return
    assert gold.exists(), f"{gold.relative_to(REPO)} is missing (run pytest {Path(__file__).relative_to(REPO)} --update-golden)"
    want = gold.read_text(encoding="utf-8")
    if want != text:
        diff = "".join(difflib.unified_diff(want.splitlines(True), text.splitlines(True), gold.name, "rendered"))
        pytest.fail(diff)


def test_no_stale_environment_goldens() -> None:
    wanted = {f"{golden_id(*c)}.sh" for c in GOLDEN_CASES}
    stale = sorted(p.name for p in GOLDEN.glob("*.sh") if p.name not in wanted)
    assert not stale, f"golden files no case renders: {stale}"


def test_golden_environment_scripts_are_valid_bash(tmp_path: Path) -> None:
    paths = []
    for case in GOLDEN_CASES:
        plan = render_case(tmp_path, *case)
        path = tmp_path / f"{golden_id(*case)}.sh"
        path.write_text(plan.scripts[0].text)
        res = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
        assert res.returncode == 0, f"{path.name}: {res.stderr}"
        paths.append(str(path))
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        res = subprocess.run([shellcheck, "-S", "error", "-s", "bash", *paths], capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stdout + res.stderr


def _launcher(plan: Plan) -> str:
    return next(line for line in plan.scripts[0].text.splitlines() if line.endswith('bash "$HPCJOBS_STATE/command.sh"'))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_gpus_and_binds_per_runtime(runtime: str, tmp_path: Path) -> None:
    cpu_plan = render_case(tmp_path, runtime, "image", False)
    cpu = _launcher(cpu_plan)
    gpu = _launcher(render_case(tmp_path, runtime, "image", True))
    flag = {"apptainer": "--nv", "singularity": "--nv", "podman": "--device=nvidia.com/gpu=all"}.get(runtime)
    if flag:
        assert flag in gpu.split() and flag not in cpu.split()
    else:
        # charliecloud shares the host's /dev; pyxis/enroot pass the job's GPUs themselves
        assert cpu == gpu
    # pyxis gathers its mounts in one option (hpcjobs_mounts, with the datastores present)
    binds = cpu + next((line for line in cpu_plan.scripts[0].text.splitlines() if line.startswith("hpcjobs_mounts=")), "")
    for folder in ("/home/user/hpcjobs/envjob", "/datasets/mnist"):
        assert folder in binds, (runtime, binds)
    assert "$HPCJOBS_WORK" in cpu
    # a datastore is bound where it exists
    assert "for hpcjobs_d in /datastores/user; do" in cpu_plan.scripts[0].text


def test_array_tasks_share_one_pull(tmp_path: Path) -> None:
    """A sweep's tasks all run the same once-only pull: one target, one lock, no per-task name."""
    site = golden_site("apptainer")
    job = tmp_path / "sweep.yml"
    job.write_text(
        "type: sweep\ntrial:\n  command: echo ${{search_space.x}}\n  environment:\n    image: python:3.11\n"
        "search_space:\n  x: {type: choice, values: [1, 2, 3]}\nsampling_algorithm: grid\n"
        "objective: {goal: maximize, primary_metric: m}\nlimits: {max_total_trials: 3}\n"
    )
    plan = plan_job(load_job(job), site, TARGET, name="sw", token="0" * 16)
    (script,) = plan.scripts
    assert script.array
    assert script.text.count("hpcjobs_once \"$hpcjobs_image\"") == 1
    image_line = next(line for line in script.text.splitlines() if line.startswith("hpcjobs_image="))
    assert "TASK" not in image_line and "$" not in image_line


def test_pyxis_needs_slurm_and_cannot_build(tmp_path: Path) -> None:
    site = golden_site("pyxis")
    with pytest.raises(ValidationError, match="cannot build images from a Dockerfile"):
        plan_job(load_job(golden_job(tmp_path, "build")), site, TARGET, name="j", token="0" * 16)
    local = site.model_copy(update={"scheduler": "local"})
    with pytest.raises(ValidationError, match="pyxis is an srun plugin"):
        plan_job(load_job(golden_job(tmp_path, "image")), local, TARGET, name="j", token="0" * 16)


@pytest.mark.parametrize(("runtime", "case"), [("charliecloud", "sif"), ("pyxis", "tar"), ("podman", "sif"), ("pyxis", "image")])
def test_image_kinds_a_runtime_cannot_use(runtime: str, case: str, tmp_path: Path) -> None:
    if case == "image":
        job = tmp_path / "lib.yml"
        job.write_text("command: echo\nenvironment:\n  image: library://alpine:3\n")
    else:
        job = golden_job(tmp_path, case)
    with pytest.raises(ValidationError, match=f"cannot be used by the {runtime} runtime"):
        plan_job(load_job(job), golden_site(runtime), TARGET, name="j", token="0" * 16)


def test_build_context_copies_are_refused_for_remote_sites(tmp_path: Path) -> None:
    site = golden_site("apptainer")
    site.ssh = SSHSettings(host="login.example.org")
    with pytest.raises(ValidationError, match="does not upload") as info:
        plan_job(load_job(golden_job(tmp_path, "build")), site, TARGET, name="j", token="0" * 16)
    assert "environment.image" in (info.value.hint or "")


def test_runtime_none_warns_about_images_and_builds(tmp_path: Path) -> None:
    site = golden_site("none")
    plan = plan_job(load_job(golden_job(tmp_path, "image")), site, TARGET, name="j", token="0" * 16)
    assert plan.warnings == [
        "image library/python:3.11-slim is noted but not used: site 'modules-example' has no container runtime; "
        "the command runs on the host"
    ]
    assert "module load gcc/12.2.0" in plan.scripts[0].text


# --------------------------------------------------------------------------- the shell, for real
def _once_harness(tmp_path: Path, body: str) -> Path:
    """A bash script with hpcjobs_once (as rendered) and *body*."""
    once = render("parts/env_setup.sh.j2", label="t", once=True, image=None, charliecloud=None, env=None, after=[])
    script = tmp_path / "harness.sh"
    script.write_text("#!/bin/bash\nhpcjobs_finish() { exit \"$1\"; }\n" + once + body)
    return script


def test_once_makes_the_target_once_for_concurrent_callers(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "thing"
    counter = tmp_path / "count"
    script = _once_harness(
        tmp_path,
        textwrap.dedent(
            f"""
            make() {{ echo made >> {counter}; sleep 0.5; echo content > "{target}.tmp$$" && mv "{target}.tmp$$" {target}; }}
            hpcjobs_once {target} 'making the thing' make || exit 9
            cat {target}
            """
        ),
    )
    procs = [subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(10)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, outs
    assert all(o[0] == "content\n" for o in outs)
    assert counter.read_text() == "made\n"
    # the maker says so on stderr (with the log's path); the waiters say nothing
    assert sum("making the thing" in o[1] for o in outs) == 1


def test_once_reports_a_failure_with_its_log_and_waiters_do_not_retry(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "broken"
    counter = tmp_path / "count"
    script = _once_harness(
        tmp_path,
        textwrap.dedent(
            f"""
            make() {{ echo attempt >> {counter}; echo "compiler exploded" ; sleep 0.5; return 3; }}
            hpcjobs_once {target} 'making the broken thing' make || hpcjobs_finish 77
            """
        ),
    )
    procs = [subprocess.Popen(["bash", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(5)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [77] * 5
    assert counter.read_text() == "attempt\n"
    for _, err in outs:
        assert f"making the broken thing failed; the end of {target}.log:" in err
        assert "compiler exploded" in err
    # a later job tries again (the failure is not cached for ever)
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    assert res.returncode == 77 and counter.read_text() == "attempt\nattempt\n"


def test_failed_environment_build_fails_the_job_with_its_log(run_cli, hpcjobs_home: Path, tmp_path: Path) -> None:
    """A conda file that needs conda, where there is none: the job fails (77) and shows the build log."""
    job = tmp_path / "job.yml"
    job.write_text("command: echo never\nenvironment:\n  conda_file:\n    dependencies: [python=3.11, numpy=1.26]\n")
    env = {"PATH": "/usr/bin:/bin", "HPCJOBS_TRACKING": "none"}
    if any(shutil.which(t, path="/usr/bin:/bin") for t in ("conda", "mamba", "micromamba")):
        pytest.skip("conda is installed here")
    res = run_cli("job", "create", "-f", str(job), "--stream", "-o", "json", env=env, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "needs conda packages (numpy=1.26)" in res.stdout + res.stderr
    assert "failed; the end of" in res.stdout + res.stderr
    assert "never" not in res.stdout
    logs = list((hpcjobs_home / "state" / "jobs" / ".envs").glob("*.log"))
    assert len(logs) == 1 and "neither micromamba, mamba nor conda" in logs[0].read_text()


@pytest.mark.slow
def test_pip_environment_is_built_once_and_used_by_local_jobs(run_cli, hpcjobs_home: Path, tmp_path: Path) -> None:
    """Runtime none on the local site: a venv with a local wheel, built once, reused by the second job."""
    wheel = make_wheel(tmp_path / "wheels", message="from the local wheel")
    job = tmp_path / "job.yml"
    job.write_text(
        "command: python -c 'import hpcjobs_probe, sys; print(hpcjobs_probe.MESSAGE, sys.prefix)'\n"
        f"environment:\n  conda_file:\n    dependencies: [python, pip, {{pip: [{wheel}]}}]\n"
    )
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HPCJOBS_TRACKING": "none", "PIP_NO_INDEX": "1"}
    first = run_cli("job", "create", "-f", str(job), "--stream", env=env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "from the local wheel" in first.stdout
    second = run_cli("job", "create", "-f", str(job), "--stream", env=env, timeout=600)
    assert second.returncode == 0 and "from the local wheel" in second.stdout
    cache = hpcjobs_home / "state" / "jobs" / ".envs"
    built = [p for p in cache.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(built) == 1, list(cache.iterdir())
    assert "building the Python environment" in first.stderr + first.stdout
    assert "building the Python environment" not in second.stderr + second.stdout
    prefix = first.stdout.split("from the local wheel", 1)[1].split()[0]
    assert prefix.startswith(str(cache))
    assert os.path.islink(cache / Path(prefix).parent.name)
