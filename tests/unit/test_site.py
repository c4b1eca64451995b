"""Tests for site configs: validation with locations, compute resolution, instance types, overrides."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from hpcjobs import paths
from hpcjobs import site as site_mod
from hpcjobs.errors import NotFoundError, ValidationError
from hpcjobs.plan import Target, plan_job
from hpcjobs.site import Site, get_site, list_sites, load_site_file, local_site, set_default_site, site_files
from hpcjobs.spec.load import load_job

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "site-configs").glob("*.yml"))
TARGET = Target(home="/home/alice", user="alice")

CLUSTER = """
name: mycluster
description: a test site
scheduler: slurm
job_root: /srv/jobs/$USER
default_compute: cpu-cluster
computes:
  cpu-cluster:
    partition: debug
    account: proj1
    qos: normal
    cpus_per_task: 2
    memory: 4G
    time_limit: "01:00:00"
  gpu-cluster:
    partition: gpu
    gpus_per_node: 4
    gpu_type: a100
    max_nodes: 2
    time_limit: 7200
    default_instance_type: gpu-2
    instance_types:
      gpu-1: {gpus: 1, cpus: 8, memory: 32G}
      gpu-2: {gpus: 2, cpus: 16, memory: 64G}
      big: {gpus: 4, gpu_type: h100, cpus: 32, memory: 256G, partition: gpu-big}
datastores:
  workspaceblobstore: /srv/data
  home: ~/datasets
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def user_site(name: str, text: str) -> Path:
    return write(paths.config_dir() / "sites" / f"{name}.yml", text)


def site_error(tmp_path: Path, text: str) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        load_site_file(write(tmp_path / "s.yml", text))
    return info.value


@pytest.fixture
def cluster(tmp_path: Path) -> Site:
    return load_site_file(write(tmp_path / "mycluster.yml", CLUSTER))


def plan_for(tmp_path: Path, site: Site, text: str, sets: list[str] | None = None) -> Any:
    loaded = load_job(write(tmp_path / "job.yml", text), sets)
    return plan_job(loaded, site, TARGET, name="site_test_job", token="0" * 16)


# --------------------------------------------------------------------------- shipped and default sites
@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_site_config_validates(path: Path) -> None:
    s = load_site_file(path)
    assert s.name
    assert s.source == str(path)
    for name in s.computes:
        assert s.resolve_compute(name)[0] == name


def test_embedded_default_is_local(hpcjobs_home: Path) -> None:
    s = get_site(None)
    assert s.name == "local" and s.is_local and not s.is_remote
    assert s.job_root == str(hpcjobs_home / "state" / "jobs")
    assert get_site("local").name == "local"
    assert local_site().resolve_compute("azureml:cpu-cluster") == ("cpu-cluster", local_site().resolve_compute(None)[1])
    assert local_site().resolve_compute(None)[0] == "local"


def test_embedded_default_validates_to_itself(hpcjobs_home: Path) -> None:
    """local_site() skips validation (it is a constant): validating it must change nothing."""
    s = local_site()
    again = Site.model_validate({**s.model_dump(exclude_unset=True), "source": s.source})
    assert again == s
    assert again.model_fields_set == s.model_fields_set
    assert again.model_dump() == s.model_dump() and again.source == s.source
    assert again.environment.model_fields_set == s.environment.model_fields_set
    assert again.tracking.model_fields_set == s.tracking.model_fields_set
    compute = s.resolve_compute(None)[1]
    assert compute == site_mod.Compute() and compute.model_fields_set == set()
    # defaults are fresh per instance, validated or not
    compute.sbatch_options.append("--x")
    s.environment.binds.append("/x")
    assert site_mod.Compute.model_construct().sbatch_options == [] and local_site().environment.binds == []


# --------------------------------------------------------------------------- validation
def test_valid_cluster_site(cluster: Site) -> None:
    assert cluster.name == "mycluster"
    assert cluster.computes["gpu-cluster"].instance_types["big"].partition == "gpu-big"
    assert cluster.expand(cluster.job_root, home="/home/alice", user="alice") == "/srv/jobs/alice"
    assert cluster.expand(cluster.datastores["home"], home="/home/alice", user="alice") == "/home/alice/datasets"


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    s = load_site_file(write(tmp_path / "other.yml", "scheduler: local\n"))
    assert s.name == "other"


def test_slurm_site_needs_computes(tmp_path: Path) -> None:
    e = site_error(tmp_path, "scheduler: slurm\n")
    assert "at least one compute" in e.message


def test_default_compute_must_exist(tmp_path: Path) -> None:
    e = site_error(tmp_path, "default_compute: gpu\ncomputes:\n  cpu: {partition: debug}\n")
    assert "default_compute 'gpu' is not one of computes (cpu)" in e.message


def test_unknown_compute_key_has_location_and_suggestion(tmp_path: Path) -> None:
    e = site_error(tmp_path, "computes:\n  cpu:\n    partiton: debug\n")
    assert e.message == "unknown key 'partiton'"
    assert e.field == "computes.cpu.partiton"
    assert e.location is not None and e.location.line == 3
    assert "did you mean 'partition'" in (e.hint or "")


def test_unknown_top_level_key(tmp_path: Path) -> None:
    e = site_error(tmp_path, "computes:\n  cpu: {partition: debug}\njobroot: /x\n")
    assert "did you mean 'job_root'" in (e.hint or "")


def test_bad_time_limit_is_located(tmp_path: Path) -> None:
    e = site_error(tmp_path, "computes:\n  cpu:\n    partition: debug\n    time_limit: forever\n")
    assert "cannot read time limit 'forever'" in e.message
    assert e.field == "computes.cpu.time_limit"
    assert e.location is not None and e.location.line == 4


def test_default_instance_type_must_exist(tmp_path: Path) -> None:
    e = site_error(tmp_path, "computes:\n  g:\n    default_instance_type: x\n    instance_types:\n      y: {gpus: 1}\n")
    assert "default_instance_type 'x' is not one of instance_types (y)" in e.message


@pytest.mark.parametrize(
    ("snippet", "field"),
    [
        ("partition: 'debug x'", "computes.c.partition"),
        ("account: 'a;b'", "computes.c.account"),
        ("gpus_per_node: -1", "computes.c.gpus_per_node"),
        ("memory: lots", "computes.c.memory"),
        ("sbatch_options: ['--exclusive', 'x']", "computes.c.sbatch_options[1]"),
        ("sbatch_options: ['--comment=a b']", "computes.c.sbatch_options[0]"),
    ],
)
def test_compute_values_are_validated(tmp_path: Path, snippet: str, field: str) -> None:
    e = site_error(tmp_path, f"computes:\n  c:\n    {snippet}\n")
    assert e.field == field
    assert e.location is not None and e.location.line == 3


def test_runtime_typo(tmp_path: Path) -> None:
    e = site_error(tmp_path, "scheduler: local\nenvironment:\n  runtime: apptainr\n")
    assert e.field == "environment.runtime"
    assert "did you mean 'apptainer'" in (e.hint or "")


def test_site_must_be_a_mapping(tmp_path: Path) -> None:
    e = site_error(tmp_path, "- a\n- b\n")
    assert "must be a YAML mapping" in e.message


# --------------------------------------------------------------------------- compute resolution
@pytest.mark.parametrize("name", ["azureml:gpu-cluster", "gpu-cluster"])
def test_compute_resolution(cluster: Site, name: str) -> None:
    resolved, compute = cluster.resolve_compute(name)
    assert resolved == "gpu-cluster"
    assert compute.partition == "gpu" and compute.gpus_per_node == 4


def test_no_compute_means_the_default(cluster: Site) -> None:
    assert cluster.resolve_compute(None)[0] == "cpu-cluster"


def test_single_compute_is_the_default(tmp_path: Path) -> None:
    s = load_site_file(write(tmp_path / "one.yml", "computes:\n  only: {partition: p}\n"))
    assert s.resolve_compute(None)[0] == "only"


def test_no_default_and_several_computes(tmp_path: Path) -> None:
    s = load_site_file(write(tmp_path / "two.yml", "computes:\n  a: {partition: p}\n  b: {partition: q}\n"))
    with pytest.raises(ValidationError, match="no default_compute"):
        s.resolve_compute(None)


def test_unknown_compute_lists_the_known_ones(cluster: Site) -> None:
    with pytest.raises(NotFoundError) as info:
        cluster.resolve_compute("azureml:gpu-clustr")
    e = info.value
    assert "compute 'gpu-clustr' is not defined for site 'mycluster'" in e.message
    assert "did you mean 'gpu-cluster'" in (e.hint or "")
    assert "cpu-cluster" in (e.hint or "") and "gpu-cluster" in (e.hint or "")


# --------------------------------------------------------------------------- what computes and instance types become
def directives(plan: Any) -> list[str]:
    return [line for line in plan.scripts[0].text.splitlines() if line.startswith("#SBATCH")]


def test_compute_becomes_sbatch_options(tmp_path: Path, cluster: Site) -> None:
    plan = plan_for(tmp_path, cluster, "command: echo hi\n")
    opts = plan.scripts[0].sbatch_options
    assert plan.compute == "cpu-cluster"
    assert plan.job_dir == "/srv/jobs/alice/site_test_job"
    for expected in (
        "--partition=debug",
        "--account=proj1",
        "--qos=normal",
        "--cpus-per-task=2",
        "--mem=4G",
        "--time=01:00:00",
        "--nodes=1",
    ):
        assert expected in opts
    assert directives(plan) == [f"#SBATCH {o}" for o in opts]


def test_default_instance_type(tmp_path: Path, cluster: Site) -> None:
    opts = plan_for(tmp_path, cluster, "command: echo\ncompute: azureml:gpu-cluster\n").scripts[0].sbatch_options
    assert "--gres=gpu:a100:2" in opts and "--cpus-per-task=16" in opts and "--mem=64G" in opts
    assert "--partition=gpu" in opts and "--time=02:00:00" in opts


@pytest.mark.parametrize(
    ("instance_type", "expected"),
    [
        ("gpu-1", ["--gres=gpu:a100:1", "--cpus-per-task=8", "--mem=32G", "--partition=gpu"]),
        ("big", ["--gres=gpu:h100:4", "--cpus-per-task=32", "--mem=256G", "--partition=gpu-big"]),
    ],
)
def test_instance_types(tmp_path: Path, cluster: Site, instance_type: str, expected: list[str]) -> None:
    text = f"command: echo\ncompute: gpu-cluster\nresources:\n  instance_type: {instance_type}\n"
    opts = plan_for(tmp_path, cluster, text).scripts[0].sbatch_options
    for e in expected:
        assert e in opts


def test_unknown_instance_type_lists_the_known_ones(tmp_path: Path, cluster: Site) -> None:
    with pytest.raises(ValidationError) as info:
        plan_for(tmp_path, cluster, "command: echo\ncompute: gpu-cluster\nresources:\n  instance_type: gpu-3\n")
    assert "instance type 'gpu-3' is not defined" in info.value.message
    assert "big, gpu-1, gpu-2" in (info.value.hint or "")


def test_too_many_nodes(tmp_path: Path, cluster: Site) -> None:
    with pytest.raises(ValidationError, match="more than compute 'gpu-cluster' allows"):
        plan_for(tmp_path, cluster, "command: echo\ncompute: gpu-cluster\nresources:\n  instance_count: 3\n")


def test_distribution_sets_tasks_per_node(tmp_path: Path, cluster: Site) -> None:
    text = "command: echo\ncompute: gpu-cluster\nresources:\n  instance_count: 2\ndistribution:\n  type: pytorch\n  process_count_per_instance: 2\n"
    opts = plan_for(tmp_path, cluster, text).scripts[0].sbatch_options
    assert "--nodes=2" in opts and "--ntasks-per-node=2" in opts


def test_gpus_per_node_request_style(tmp_path: Path) -> None:
    s = load_site_file(
        write(tmp_path / "g.yml", "gpu_request: gpus-per-node\ncomputes:\n  g: {partition: gpu, gpus_per_node: 2}\n")
    )
    opts = plan_for(tmp_path, s, "command: echo\n").scripts[0].sbatch_options
    assert "--gpus-per-node=2" in opts


def test_job_timeout_wins_over_compute_time_limit(tmp_path: Path, cluster: Site) -> None:
    opts = plan_for(tmp_path, cluster, "command: echo\nlimits:\n  timeout: 90\n").scripts[0].sbatch_options
    assert "--time=00:01:30" in opts


def test_datastore_inputs(tmp_path: Path, cluster: Site) -> None:
    text = "command: ls ${{inputs.d}}\ninputs:\n  d:\n    type: uri_folder\n    path: azureml://datastores/home/paths/mnist\n"
    plan = plan_for(tmp_path, cluster, text)
    assert plan.inputs["d"] == "/home/alice/datasets/mnist"
    with pytest.raises(ValidationError, match="datastore 'nope' is not defined") as info:
        plan_for(tmp_path, cluster, text.replace("/home/", "/nope/"))
    assert "home, workspaceblobstore" in (info.value.hint or "")


def test_job_root_with_unsafe_characters_is_refused(tmp_path: Path) -> None:
    s = load_site_file(write(tmp_path / "bad.yml", "job_root: '/srv/my jobs'\ncomputes:\n  c: {partition: p}\n"))
    with pytest.raises(ValidationError, match="job_root"):
        plan_for(tmp_path, s, "command: echo\n")


# --------------------------------------------------------------------------- user sites, shipped sites, default site
def test_user_site_is_found_and_named(tmp_path: Path) -> None:
    user_site("mycluster", CLUSTER)
    s = get_site("mycluster")
    assert s.source == str(paths.config_dir() / "sites" / "mycluster.yml")
    assert "mycluster" in [x.name for x in list_sites()]


def test_unknown_site_lists_the_known_ones() -> None:
    user_site("mycluster", CLUSTER)
    with pytest.raises(NotFoundError) as info:
        get_site("myclustr")
    assert "did you mean 'mycluster'" in (info.value.hint or "")
    assert "local" in (info.value.hint or "")


def test_user_site_overrides_a_shipped_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = tmp_path / "shipped"
    write(shipped / "campus.yml", "description: shipped\ncomputes:\n  c: {partition: p}\n")
    write(shipped / "other.yml", "description: shipped other\ncomputes:\n  c: {partition: p}\n")
    real = paths.data_dir
    monkeypatch.setattr(paths, "data_dir", lambda name: shipped if name == "site-configs" else real(name))
    assert get_site("campus").description == "shipped"
    user_site("campus", "description: mine\ncomputes:\n  c: {partition: mine}\n")
    s = get_site("campus")
    assert s.description == "mine" and s.computes["c"].partition == "mine"
    assert site_files()["campus"] == paths.config_dir() / "sites" / "campus.yml"
    assert get_site("other").description == "shipped other"


@pytest.mark.skipif(
    not (REPO / "site-configs" / "testcluster.yml").exists(), reason="site-configs/testcluster.yml not written yet"
)
def test_user_site_overrides_the_shipped_testcluster() -> None:
    assert get_site("testcluster").source == str(REPO / "site-configs" / "testcluster.yml")
    user_site("testcluster", "description: my own\ncomputes:\n  cpu-cluster: {partition: mine}\n")
    s = get_site("testcluster")
    assert s.description == "my own" and s.computes["cpu-cluster"].partition == "mine"


def test_site_use_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    user_site("mycluster", CLUSTER)
    user_site("second", "computes:\n  c: {partition: p}\n")
    assert get_site(None).name == "local"
    set_default_site("mycluster")
    assert site_mod.default_site_name() == "mycluster"
    assert get_site(None).name == "mycluster"
    monkeypatch.setenv("HPCJOBS_SITE", "second")
    assert get_site(None).name == "second"
    with pytest.raises(NotFoundError):
        set_default_site("nope")


def test_invalid_site_name() -> None:
    with pytest.raises(ValidationError, match="invalid site name"):
        get_site("../etc/passwd")


def test_site_list_cli(run_cli: Any) -> None:
    user_site("mycluster", CLUSTER)
    res = run_cli("site", "list", "-o", "json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["local"]["default"] is True
    assert rows["mycluster"]["scheduler"] == "slurm"


def test_broken_user_site_is_a_located_cli_error(run_cli: Any) -> None:
    user_site("broken", "computes:\n  c:\n    partiton: p\n")
    res = run_cli("site", "show", "broken")
    assert res.returncode == 2
    assert "broken.yml:3" in res.stderr and "did you mean 'partition'" in res.stderr
    assert "Traceback" not in res.stderr
