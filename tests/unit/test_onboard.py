"""Onboarding without a cluster: discovery parsing, config drafting and site-check parsing.

The cluster's own words come from recordings: ``tests/unit/data/onboard/`` holds the real
output of the two onboarding scripts on the test cluster, and ``tests/unit/data/slurm/``
the real output of single Slurm commands, which the tests splice into script output to
show the section parser routes them to the same parsers.  A second, constructed
"university" discovery (typed GPUs, account restrictions, scratch, Lmod, Apptainer) is
written out below in Slurm's formats; it is marked as constructed where it is used.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hpcjobs import onboard
from hpcjobs.errors import NotFoundError, UserError, ValidationError
from hpcjobs.plan import Target, plan_job
from hpcjobs.site import Site, get_site, load_site_file
from hpcjobs.spec.load import load_job
from hpcjobs.spec.yamlload import load_yaml_text

DATA = Path(__file__).parent / "data"
ONBOARD = DATA / "onboard"
SLURM = DATA / "slurm"
REPO = Path(__file__).resolve().parents[2]
TARGET = Target(home="/home/alice", user="alice")


def recorded(name: str) -> str:
    return (ONBOARD / name).read_text()


def section(name: str, body: str, rc: int = 0) -> str:
    """One section as the scripts print it (marker on its own line, rc marker after)."""
    return f"\n@@hpcjobs-section {name}@@\n{body}\n@@hpcjobs-rc {rc}@@\n"


@pytest.fixture(scope="module")
def disc() -> onboard.Discovery:
    return onboard.parse_discovery(recorded("discovery_testcluster.stdout"))


@pytest.fixture(scope="module")
def draft(disc: onboard.Discovery) -> onboard.SiteDraft:
    return onboard.draft_site(
        disc,
        "uni",
        ssh={"host": "login.uni.edu", "user": "alice"},
        source="login.uni.edu",
        today=__import__("datetime").date(2026, 11, 29),
    )


# --------------------------------------------------------------------------- sections
def test_sections_drop_login_noise_and_keep_exit_codes() -> None:
    text = (
        "Welcome to the cluster!\nquota: 80%\n"
        + section("a", "x=1\ny=2")
        + section("b", "oops", 127)
        + "\n@@hpcjobs-section c@@\nhalf"
    )
    sec = onboard.split_sections(text)
    assert list(sec) == ["a", "b", "c"]
    assert sec["a"].text == "x=1\ny=2" and sec["a"].ok
    assert sec["b"].rc == 127 and not sec["b"].ok
    assert sec["c"].rc is None and sec["c"].text == "half"


def test_a_shell_that_prints_nothing_readable_is_an_error() -> None:
    with pytest.raises(onboard.RuntimeFailure) as info:
        onboard.parse_discovery("fish: Unknown command\n")
    assert "POSIX" in (info.value.hint or "")


# --------------------------------------------------------------------------- discovery (recorded)
def test_recorded_discovery_finds_what_the_test_cluster_has(disc: onboard.Discovery) -> None:
    assert disc.user == "alice" and disc.home == "/home/alice"
    assert disc.slurm_version == "22.05.8"
    assert disc.cluster_name == "hpcjobs"
    assert [p.name for p in disc.partitions] == ["debug", "gpu"]
    assert disc.default_partition is not None and disc.default_partition.name == "debug"
    for p in disc.partitions:
        assert (p.nodes, p.cpus, p.memory_mb, p.gpus_per_node, p.gpu_types) == (2, 2, 4000, 2, [])
        assert (p.max_time, p.default_time, p.max_nodes, p.allow_accounts, p.state) == (3600, 1800, None, None, "up")
    assert disc.accounts == ["research", "physics"]
    assert disc.default_account == "research"
    assert disc.qos == ["normal"]
    assert disc.max_array_size == 1001
    assert disc.max_submit_jobs is None
    assert "pmix" in disc.mpi_plugins and "pmix_v4" in disc.mpi_plugins
    assert [(r.program, r.runtime) for r in disc.runtimes] == [("ch-run", "charliecloud")]
    assert disc.modules is None
    assert [(c.source, c.path, c.state) for c in disc.job_roots if c.state != "missing"] == [("HOME", "/home/alice", "writable")]
    assert disc.python == "Python 3.11.2"
    assert disc.warnings == []
    assert disc.to_dict()["default_partition"] == "debug"


def test_sections_carry_the_recorded_single_command_outputs() -> None:
    # the same parsers read the sections that read the single-command recordings
    text = (
        section("env", "user=alice\nhome=/home/alice\nhost=login1\nepoch=1795920431\nscratch=\nwork=\ngroups=alice")
        + section("version", "slurm-wlm 22.05.8")
        + section("config", (SLURM / "scontrol_show_config.stdout").read_text())
        + section("sinfo", (SLURM / "sinfo_busy.stdout").read_text())
        + section("assoc", "slurm_load_partitions: Unable to contact slurm controller", 1)
    )
    d = onboard.parse_discovery(text)
    assert [p.name for p in d.partitions] == ["debug", "gpu"]
    assert d.partitions[0].node_states == {"allocated": 2}
    assert d.max_array_size == 1001
    assert d.cluster_name == "hpcjobs"
    # no accounting: a warning, and no partition is ruled out for want of an account
    assert d.associations == [] and any("sacctmgr" in w for w in d.warnings)
    assert onboard.draft_site(d, "x").data["default_compute"] == "debug"


def test_sinfo_failure_says_what_to_do() -> None:
    text = (
        section("env", "user=alice")
        + section("version", "slurm-wlm 22.05.8")
        + section("sinfo", "slurm_load_partitions: Unable to contact slurm controller (connect failure)", 1)
    )
    with pytest.raises(onboard.RuntimeFailure) as info:
        onboard.parse_discovery(text)
    assert "Unable to contact slurm controller" in info.value.message
    assert "slurmctld" in (info.value.hint or "")


def test_no_slurm_on_path_is_explained() -> None:
    text = section("env", "user=alice") + section("version", "bash: sinfo: command not found", 127)
    with pytest.raises(onboard.RuntimeFailure) as info:
        onboard.parse_discovery(text)
    assert "command not found" in info.value.message
    assert "module load slurm" in (info.value.hint or "")


# --------------------------------------------------------------------------- the generated config
def test_draft_for_the_test_cluster(draft: onboard.SiteDraft, tmp_path: Path) -> None:
    data = draft.data
    assert list(data["computes"]) == ["debug", "gpu"]
    assert data["default_compute"] == "debug"
    assert data["job_root"] == "~/hpcjobs"
    assert data["environment"] == {"runtime": "none"}
    assert data["mpi"] == "pmix"
    assert data["max_array_size"] == 1001
    assert "max_submit_jobs" not in data
    assert data["ssh"] == {"host": "login.uni.edu", "user": "alice"}
    debug, gpu = data["computes"]["debug"], data["computes"]["gpu"]
    assert debug["aliases"] == ["cpu-cluster"] and gpu["aliases"] == ["gpu-cluster"]
    # the default partition has GPUs too, but a job that names no compute stays a CPU job
    assert "default_instance_type" not in debug and "gpus_per_node" not in debug
    assert gpu["default_instance_type"] == "gpu-1"
    assert gpu["instance_types"] == {
        "gpu-1": {"gpus": 1, "cpus": 1, "memory": "2000M", "description": "1 of 2 GPUs"},
        "gpu-2": {"gpus": 2, "cpus": 2, "memory": "4000M", "description": "2 of 2 GPUs (a whole node)"},
    }
    assert "account" not in gpu  # Slurm's default account (research) may use every partition
    # the file as hpcjobs reads it: comments, and the real loader and model accept it
    path = tmp_path / "uni.yml"
    path.write_text(draft.text)
    site = load_site_file(path)
    assert site.name == "uni" and site.computes["gpu"].instance_types["gpu-2"].gpus == 2
    assert site.ssh is not None and site.ssh.host == "login.uni.edu"
    comments = [ln for ln in draft.text.splitlines() if ln.lstrip().startswith("#")]
    assert len(comments) > 20
    assert any("accounts: research, physics (default research)" in c for c in comments)
    assert any("found ch-run (0.31)" in c for c in comments)
    whats = [c.what for c in draft.choices]
    assert whats[:3] == ["default_compute", "alias cpu-cluster", "alias gpu-cluster"]
    assert {"job_root", "environment.runtime", "mpi", "max_array_size"} <= set(whats)


def test_generated_config_plans_hello_world_and_a_gpu_job(draft: onboard.SiteDraft, tmp_path: Path) -> None:
    site = Site.model_validate(draft.data)
    hello = load_job(REPO / "examples" / "hello-world.yml")
    plan = plan_job(hello, site, TARGET, name="hello", token="0" * 16)
    opts = plan.scripts[0].sbatch_options
    assert "--partition=debug" in opts
    assert not any(o.startswith(("--gres", "--gpus")) for o in opts)
    gpu_job = tmp_path / "gpu.yml"
    gpu_job.write_text("command: nvidia-smi\ncompute: azureml:gpu-cluster\n")
    opts = plan_job(load_job(gpu_job), site, TARGET, name="g", token="0" * 16).scripts[0].sbatch_options
    assert {"--partition=gpu", "--gres=gpu:1", "--cpus-per-task=1", "--mem=2000M"} <= set(opts)
    assert site.resolve_compute("azureml:cpu-cluster")[0] == "debug"


UNI = (
    # CONSTRUCTED (not recorded): a university cluster in Slurm's output formats
    section(
        "env",
        "user=s1234567\nhome=/home/s1234567\nhost=login2.hpc.uni.edu\nepoch=1795920431\n"
        "scratch=/scratch/s1234567\nwork=\ngroups=students ml-lab",
    )
    + section("version", "slurm 23.02.7")
    + section("config", "ClusterName             = unicluster\nMaxArraySize            = 5001\nMaxJobCount             = 100000")
    + section(
        "sinfo",
        "cpu*|up|3-00:00:00|40|mixed|64|257000|(null)|30/10/0/40|c[001-040]\n"
        "a100|up|2-00:00:00|8|mixed|64|515000|gpu:a100:4(S:0-1)|6/2/0/8|g[01-08]\n"
        "mixed-gpu|up|1-00:00:00|2|idle|32|190000|gpu:v100:2|0/2/0/2|v[1-2]\n"
        "mixed-gpu|up|1-00:00:00|2|idle|32|190000|gpu:rtx6000:8|0/2/0/2|r[1-2]\n"
        "staff|up|infinite|4|idle|64|257000|(null)|0/4/0/4|s[1-4]\n"
        "long.q|up|14-00:00:00|4|idle|64|257000|(null)|0/4/0/4|l[1-4]",
    )
    + section(
        "partitions",
        "PartitionName=cpu AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL Default=YES DefaultTime=01:00:00 "
        "MaxNodes=4 MaxTime=3-00:00:00 State=UP TotalNodes=40\n"
        "PartitionName=a100 AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL Default=NO DefaultTime=NONE "
        "MaxNodes=2 MaxTime=2-00:00:00 State=UP TotalNodes=8\n"
        "PartitionName=mixed-gpu AllowGroups=ALL AllowAccounts=ml-lab AllowQos=gpu Default=NO DefaultTime=01:00:00 "
        "MaxNodes=UNLIMITED MaxTime=1-00:00:00 State=UP TotalNodes=4\n"
        "PartitionName=staff AllowGroups=ALL AllowAccounts=staff-acct AllowQos=ALL Default=NO DefaultTime=01:00:00 "
        "MaxNodes=UNLIMITED MaxTime=UNLIMITED State=UP TotalNodes=4\n"
        "PartitionName=long.q AllowGroups=ALL AllowAccounts=ALL DenyAccounts=students AllowQos=ALL Default=NO "
        "DefaultTime=1-00:00:00 MaxNodes=UNLIMITED MaxTime=14-00:00:00 State=DOWN TotalNodes=4",
    )
    + section(
        "assoc",
        "students|unicluster|students||normal|normal|500||\n"
        "students|unicluster|ml-lab||normal,gpu|normal||||\n"
        "students|othercluster|ml-lab||normal|normal|5||",
    )
    + section("qos", "normal|1000||\ngpu|50|8|2-00:00:00")
    + section("mpi", "MPI plugin types are...\n\tnone\n\tpmi2\n\tcray_shasta")
    + section(
        "runtimes",
        "apptainer|/usr/bin/apptainer|apptainer version 1.3.4\nenroot|/usr/bin/enroot|3.5.0\npyxis|srun|",
    )
    + section(
        "modules",
        "function=\nmoduleshome=\nlmod=\nlogin_function=function\nlogin_moduleshome=/usr/share/lmod/lmod\nlogin_lmod=8.7.32",
    )
    + section(
        "roots",
        "SCRATCH|/scratch/s1234567|writable|900000000\nguess|/scratch/s1234567|writable|900000000\n"
        "guess|/work/s1234567|missing|\nHOME|/home/s1234567|writable|20000000",
    )
    + section("python", "Python 3.9.18")
)


@pytest.fixture(scope="module")
def uni() -> onboard.Discovery:
    return onboard.parse_discovery(UNI)


def test_university_discovery(uni: onboard.Discovery) -> None:
    assert uni.slurm_version == "23.02.7" and uni.cluster_name == "unicluster"
    assert [p.name for p in uni.partitions] == ["cpu", "a100", "mixed-gpu", "staff", "long.q"]
    a100 = uni.partitions[1]
    assert (a100.gpus_per_node, a100.gpu_types, a100.max_nodes, a100.default_time) == (4, ["a100"], 2, None)
    mixed = uni.partitions[2]
    assert mixed.gpus_per_node == 8 and mixed.gpu_types == ["rtx6000", "v100"] and mixed.nodes == 4
    # rows of another cluster sharing the slurmdbd are not this cluster's
    assert uni.accounts == ["students", "ml-lab"]
    assert uni.qos == ["normal", "gpu"]
    assert uni.max_submit_jobs == 50  # the gpu QOS' MaxSubmitPU is the tightest
    assert uni.modules == onboard.ModuleSystem(kind="lmod", version="8.7.32", home="/usr/share/lmod/lmod", where="login shell")
    assert uni.mpi_plugins == ["none", "pmi2", "cray_shasta"]


def test_university_draft(uni: onboard.Discovery) -> None:
    d = onboard.draft_site(uni, "uni", runtime="auto")
    comps = d.data["computes"]
    # staff: only staff-acct may use it; long.q denies the default account, not ml-lab
    assert [s["partition"] for s in d.skipped] == ["staff"]
    assert list(comps) == ["cpu", "a100", "mixed-gpu", "long.q"]
    assert comps["long.q"]["account"] == "ml-lab"
    assert "It was DOWN when discovered" in d.text
    assert d.data["default_compute"] == "cpu"
    assert comps["cpu"]["aliases"] == ["cpu-cluster"] and comps["cpu"]["max_nodes"] == 4
    assert comps["a100"]["aliases"] == ["gpu-cluster"]
    assert comps["a100"]["gpu_type"] == "a100" and comps["a100"]["default_instance_type"] == "gpu-1"
    assert comps["a100"]["instance_types"]["gpu-4"] == {
        "gpus": 4,
        "cpus": 64,
        "memory": "515000M",
        "description": "4 of 4 GPUs (a whole node)",
    }
    assert comps["a100"]["max_nodes"] == 2
    # two GPU types: no gpu_type; the default account may not use it, so the config names one
    assert "gpu_type" not in comps["mixed-gpu"]
    assert comps["mixed-gpu"]["account"] == "ml-lab" and comps["mixed-gpu"]["qos"] == "gpu"
    assert d.data["job_root"] == "/scratch/$USER/hpcjobs"
    assert d.data["datastores"] == {"workspaceblobstore": "/scratch/$USER/hpcjobs/datastore"}
    assert d.data["environment"]["runtime"] == "apptainer"
    assert d.data["mpi"] == "pmi2"
    assert d.data["max_array_size"] == 5001 and d.data["max_submit_jobs"] == 50
    assert "No DefaultTime" in d.text and "lmod 8.7.32 (only in a login shell)" in d.text
    assert "Left out: partition staff" in d.text
    Site.model_validate(d.data)


def test_runtime_choice(uni: onboard.Discovery, disc: onboard.Discovery) -> None:
    assert onboard.draft_site(uni, "u").data["environment"]["runtime"] == "none"
    assert onboard.draft_site(uni, "u", runtime="pyxis").data["environment"]["runtime"] == "pyxis"
    with pytest.raises(UserError) as info:
        onboard.draft_site(disc, "u", runtime="apptainer")
    assert "ch-run (0.31)" in (info.value.hint or "")
    assert onboard.draft_site(disc, "u", runtime="auto").data["environment"]["runtime"] == "charliecloud"


def test_no_usable_partition_is_an_error(uni: onboard.Discovery) -> None:
    only_staff = onboard.Discovery(**{**uni.__dict__, "partitions": [uni.partitions[3]]})
    with pytest.raises(UserError) as info:
        onboard.draft_site(only_staff, "u")
    assert "staff: none of your accounts may use it (AllowAccounts=staff-acct)" in (info.value.hint or "")


def test_odd_partition_names(disc: onboard.Discovery) -> None:
    p = disc.partitions[0]

    def named(*names: str) -> onboard.Discovery:
        parts = [onboard.Partition(**{**p.__dict__, "name": n, "default": i == 0}) for i, n in enumerate(names)]
        return onboard.Discovery(**{**disc.__dict__, "partitions": parts})

    d = onboard.draft_site(named("GPU.v2@a100", "gpu:new"), "u")
    assert list(d.data["computes"]) == ["GPU.v2-a100", "gpu-new"]
    assert d.data["computes"]["GPU.v2-a100"]["partition"] == "GPU.v2@a100"
    # a name that cannot go into an #SBATCH line is left out, with the reason
    d = onboard.draft_site(named("debug", "gpu#1 (new)"), "u")
    assert list(d.data["computes"]) == ["debug"]
    assert d.skipped == [{"partition": "gpu#1 (new)", "why": "its name has characters hpcjobs does not put in #SBATCH lines"}]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("debug", "debug"),
        ("~/hpcjobs", "~/hpcjobs"),
        ("/scratch/$USER/hpcjobs", "/scratch/$USER/hpcjobs"),
        ("no", '"no"'),
        ("On", '"On"'),
        ("~", '"~"'),
        ("01:00:00", '"01:00:00"'),
        ("127.0.0.1", '"127.0.0.1"'),
        ("a #b", '"a #b"'),
        ('say "hi": now', '"say \\"hi\\": now"'),
        (2222, "2222"),
        (True, "true"),
    ],
)
def test_yaml_scalars_read_back_as_written(value: Any, text: str) -> None:
    assert onboard.yaml_scalar(value) == text
    loaded, _ = load_yaml_text(f"k: {text}  # comment\n", "t.yml")
    assert loaded == {"k": value}


# --------------------------------------------------------------------------- aliases in the site model
def test_aliases_must_not_be_ambiguous() -> None:
    base: dict[str, Any] = {"name": "s", "computes": {"a": {"partition": "a"}, "b": {"partition": "b"}}}
    with pytest.raises(Exception, match="alias 'b' of compute 'a' is already a name of compute 'b'"):
        Site.model_validate({**base, "computes": {"a": {"aliases": ["b"]}, "b": {}}})
    with pytest.raises(Exception, match="alias 'x' of compute 'b' is already a name of compute 'a'"):
        Site.model_validate({**base, "computes": {"a": {"aliases": ["x"]}, "b": {"aliases": ["x"]}}})
    s = Site.model_validate({**base, "computes": {"a": {"aliases": ["x"]}, "b": {}}})
    assert s.resolve_compute("azureml:x")[0] == "a"
    with pytest.raises(NotFoundError) as info:
        s.resolve_compute("y")
    assert "computes: a, b, x" in (info.value.hint or "")


def test_user_site_file_with_aliases_loads(tmp_path: Path) -> None:
    p = tmp_path / "x.yml"
    p.write_text("computes:\n  debug: {partition: debug, aliases: [cpu-cluster]}\n")
    assert load_site_file(p).compute_aliases() == {"cpu-cluster": "debug"}
    p.write_text("computes:\n  debug: {partition: debug, aliases: ['bad name']}\n")
    with pytest.raises(ValidationError):
        load_site_file(p)


# --------------------------------------------------------------------------- site check (recorded)
def broken_site(draft: onboard.SiteDraft) -> Site:
    data = dict(draft.data)
    data["computes"] = {"broken": {"partition": "nosuchpart"}, **data["computes"]}
    site = Site.model_validate(data)
    site.source = "uni.yml"
    return site


def test_check_cases_ask_what_real_jobs_ask(draft: onboard.SiteDraft) -> None:
    site = broken_site(draft)
    cases = onboard.check_cases(site)
    assert [(c.label, c.display) for c in cases] == [
        ("broken", "broken"),
        ("debug", "debug"),
        ("debug/gpu-1", "debug/gpu-1"),
        ("debug/gpu-2", "debug/gpu-2"),
        ("gpu", "gpu (gpu-1)"),
        ("gpu/gpu-2", "gpu/gpu-2"),
    ]
    assert "--gres=gpu:2" in cases[-1].options and "--partition=nosuchpart" in cases[0].options
    argv = onboard.check_argv(site, cases)
    # what was recorded is what check_argv builds (the script text aside)
    import json

    rec = json.loads(recorded("check_testcluster_broken.cmd"))
    assert argv[3:] == rec["argv"][3:]


def test_recorded_check_flags_the_broken_compute_with_the_fix(draft: onboard.SiteDraft) -> None:
    site = broken_site(draft)
    results = onboard.parse_check_output(
        recorded("check_testcluster_broken.stdout"), site, onboard.check_cases(site), local_epoch=100.0, remote_epoch=100.4
    )
    by = {r.check: r for r in results}
    assert by["slurm version"].status == "PASS" and by["slurm version"].detail == "Slurm 22.05.8, tested"
    assert by["clock"].status == "PASS"
    assert by["job root"].status == "PASS" and "/home/alice/hpcjobs" in by["job root"].detail
    assert by["runtime"].status == "PASS"
    bad = by["compute broken"]
    assert bad.status == "FAIL"
    assert bad.detail == "Invalid partition name specified (invalid partition specified: nosuchpart)"
    assert bad.fix is not None
    assert "computes.broken.partition in uni.yml to one of debug, gpu" in bad.fix
    others = [r for r in results if r.check.startswith("compute ") and r.check != "compute broken"]
    assert len(others) == 5 and all(r.status == "PASS" for r in others)
    assert "in partition gpu" in by["compute gpu (gpu-1)"].detail
    assert [r["ok"] for r in onboard.as_rows(results)].count(False) == 1


def test_check_reads_the_single_command_recordings(draft: onboard.SiteDraft) -> None:
    computes = {"a": {"partition": "nosuchpart"}, "b": {"partition": "debug"}}
    site = Site.model_validate({**draft.data, "default_compute": "b", "computes": computes})
    cases = onboard.check_cases(site)
    text = (
        section("version", "slurm-wlm 22.05.8")
        + section("root", "path=/home/alice/hpcjobs\nwritable=yes")
        + section("runtime", "runtime=none")
        + section("test:a", (SLURM / "sbatch_test_only_bad_partition.stderr").read_text(), 1)
        + section("test:b", (SLURM / "sbatch_test_only_ok.stderr").read_text())
    )
    res = {r.check: r for r in onboard.parse_check_output(text, site, cases)}
    assert res["compute a"].status == "FAIL" and "Invalid partition name specified" in res["compute a"].detail
    assert "(sinfo lists none)" in (res["compute a"].fix or "")
    assert res["compute b"].status == "PASS" and "node2" in res["compute b"].detail


@pytest.mark.parametrize(
    ("version", "status", "words"),
    [
        ("slurm 20.02.7", "FAIL", "older than 20.11"),
        ("slurm 20.11.9", "PASS", "supported (>= 20.11; tested: 22.05)"),
        ("slurm 23.11.1", "PASS", "supported"),
        ("slurm-wlm 22.05.8", "PASS", "tested"),
    ],
)
def test_slurm_version_check(draft: onboard.SiteDraft, version: str, status: str, words: str) -> None:
    site = Site.model_validate(draft.data)
    r = next(r for r in onboard.parse_check_output(section("version", version), site, []) if r.check == "slurm version")
    assert r.status == status and words in r.detail


def test_clock_job_root_and_runtime_failures_come_with_fixes(draft: onboard.SiteDraft) -> None:
    site = Site.model_validate({**draft.data, "environment": {"runtime": "apptainer"}})
    text = section(
        "root", "path=/readonly/hpcjobs\nwritable=no\nerror=mkdir: cannot create directory: Permission denied"
    ) + section("runtime", "")
    res = {r.check: r for r in onboard.parse_check_output(text, site, [], local_epoch=1000.0, remote_epoch=1300.0)}
    assert res["clock"].status == "FAIL" and "+300.0 s" in res["clock"].detail and "timedatectl" in (res["clock"].fix or "")
    assert res["job root"].status == "FAIL" and "Permission denied" in res["job root"].detail
    assert "job_root" in (res["job root"].fix or "")
    assert res["runtime"].status == "FAIL" and "apptainer" in res["runtime"].detail
    # a skew within the measurement's uncertainty is not held against the cluster
    ok = onboard.parse_check_output("", site, [], local_epoch=1000.0, remote_epoch=1061.0, skew_uncertainty=2.0)
    assert next(r for r in ok if r.check == "clock").status == "PASS"


def test_epoch_parsing() -> None:
    assert onboard._parse_epoch("1795920431.123456789\n") == (1795920431.123456789, False)
    assert onboard._parse_epoch("1795920431.N") == (1795920431.0, True)
    assert onboard._parse_epoch("garbage") == (None, False)


def test_mpi_and_version_parsers() -> None:
    assert onboard.parse_mpi_plugins((ONBOARD / "discovery_testcluster.stdout").read_text().split("mpi@@")[1].split("@@")[0]) == [
        "pmix",
        "none",
        "cray_shasta",
        "pmi2",
        "pmix_v4",
    ]
    assert onboard.parse_version("slurm-wlm 22.05.8") == (22, 5, 8)
    assert onboard.version_text("slurm 23.11.1") == "23.11.1"
    assert onboard.parse_version("nothing") is None


# --------------------------------------------------------------------------- the check script in real bash
@pytest.mark.parametrize("root", ["~/hpc jobs/$USER", "${HOME}/a'b/$(touch pwned)", "~", "/tmp/x;rm -rf y/${USER}/z"])
def test_check_script_expands_the_job_root_like_the_site_model(tmp_path: Path, root: str) -> None:
    # hostile job roots reach the script as data: expanded exactly as Site.expand does, never run
    home = tmp_path / "home"
    home.mkdir()
    site = Site.model_validate({"name": "t", "job_root": root, "computes": {"c": {"partition": "p"}}})
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    # PATH without Slurm: the Slurm sections fail, the root section is all this test reads
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    argv = onboard.check_argv(site, [])
    res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, check=False)
    sec = onboard.split_sections(res.stdout)
    got = dict(line.split("=", 1) for line in sec["root"].text.splitlines())
    want = site.expand(root, home=str(home), user=user)
    assert got["path"] == want
    if want.startswith(str(tmp_path)):
        assert got["writable"] == "yes" and Path(want).is_dir()
    assert not (tmp_path / "pwned").exists() and not any(p.name == "pwned" for p in tmp_path.rglob("*"))


def test_add_site_refuses_bad_input(hpcjobs_home: Path) -> None:
    with pytest.raises(UserError, match="invalid site name"):
        onboard.add_site("bad name", local=True)
    with pytest.raises(UserError, match="invalid site name"):
        onboard.add_site("local", local=True)
    with pytest.raises(UserError, match="--host LOGIN_NODE"):
        onboard.add_site("x")
    with pytest.raises(UserError, match="--host LOGIN_NODE"):
        onboard.add_site("x", host="h", local=True)
    with pytest.raises(UserError, match="unknown runtime"):
        onboard.add_site("x", local=True, runtime="docker")
    p = onboard.user_site_path("exists")
    p.parent.mkdir(parents=True)
    p.write_text("scheduler: local\n")
    with pytest.raises(UserError, match="--force"):
        onboard.add_site("exists", local=True)
    assert get_site("exists").scheduler == "local"
    assert os.fspath(p).startswith(os.fspath(hpcjobs_home))
