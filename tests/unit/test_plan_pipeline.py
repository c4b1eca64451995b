"""The pipeline planner (pure): order, dependencies, bindings resolved to paths, quoting, reuse keys, the DAG view."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from hpcjobs import api, reuse
from hpcjobs.backends.slurm import SlurmBackend
from hpcjobs.dag import render_dag, steps_view
from hpcjobs.errors import ValidationError
from hpcjobs.plan import Plan, Target
from hpcjobs.plan_pipeline import plan_pipeline, prepare_target, resolve_steps, step_job_name
from hpcjobs.shellquote import shq
from hpcjobs.site import get_site, local_site
from hpcjobs.spec.load import load_job
from hpcjobs.store import JobRecord, Store
from hpcjobs.transport.local import LocalTransport

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "pipelines"
PIPELINE_EXAMPLES = sorted(EXAMPLES.glob("*.yml")) + [EXAMPLES / "train-pipeline" / "pipeline.yml"]
TARGET = Target(home="/home/u", user="u")

DIAMOND = """
type: pipeline
inputs:
  greeting: hello
jobs:
  a:
    command: echo ${{inputs.g}} > ${{outputs.o}}/x
    inputs:
      g: ${{parent.inputs.greeting}}
    outputs:
      o:
  b:
    command: cat ${{inputs.i}}/x > ${{outputs.o}}/y
    inputs:
      i: ${{parent.jobs.a.outputs.o}}
    outputs:
      o:
  c:
    command: cat ${{inputs.i}}/x
    inputs:
      i:
        path: ${{parent.jobs.a.outputs.o}}
        mode: download
  d:
    command: cat ${{inputs.left}}/y
    inputs:
      left: ${{parent.jobs.b.outputs.o}}
      right: ${{parent.jobs.c.inputs.i}}
"""


def _write(tmp_path: Path, text: str, name: str = "p.yml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _plan(path: Path, sets: list[str] | None = None, site: Any = None, target: Target | None = None, name: str = "pipe") -> Plan:
    loaded = load_job(path, sets or [])
    return plan_pipeline(loaded, site or local_site(), target or Target(home="/home/u", user="u"), name=name, token="t" * 16)


def _script(plan: Plan, key: str) -> Any:
    return next(s for s in plan.scripts if s.key == key)


def _exports(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.startswith("export AZURE_ML_"):
            k, _, v = line[len("export ") :].partition("=")
            out[k] = v
    return out


# --------------------------------------------------------------------------- order and dependencies
def test_steps_in_topological_order_with_afterok_data_dependencies(tmp_path: Path) -> None:
    plan = _plan(_write(tmp_path, DIAMOND))
    keys = [s.key for s in plan.scripts]
    assert keys.index("a") < keys.index("b") < keys.index("d")
    assert keys.index("c") < keys.index("d")
    assert _script(plan, "a").depends_on == []
    assert _script(plan, "b").depends_on == ["a"]
    # d reads c's input, which is a's output: it waits for a (and for b, whose output it reads)
    assert set(_script(plan, "d").depends_on) == {"a", "b"}
    assert {s.dependency_type for s in plan.scripts} == {"afterok"}
    assert plan.meta["steps"]["d"]["depends_on"] == _script(plan, "d").depends_on
    # every step in its own folder under the pipeline's
    assert _script(plan, "b").script_path == f"{plan.job_dir}/steps/b/job.sh"
    assert [c["name"] for c in plan.children] == ["pipe_a", "pipe_b", "pipe_c", "pipe_d"]


def test_slurm_program_chains_steps_with_kill_on_invalid_dep(tmp_path: Path) -> None:
    site = get_site("testcluster")
    plan = _plan(_write(tmp_path, DIAMOND), site=site)
    program = SlurmBackend(site, LocalTransport())._program(plan, {})
    lines = [ln for ln in program.splitlines() if ln.startswith("submit ")]
    assert [ln.split()[1] for ln in lines] == [s.key for s in plan.scripts]
    d_line = next(ln for ln in lines if ln.startswith("submit d "))
    assert '"--dependency=afterok:${ids[a]}:${ids[b]}"' in d_line
    assert "--kill-on-invalid-dep=yes" in d_line
    assert "--dependency" not in next(ln for ln in lines if ln.startswith("submit a "))


def test_bindings_resolve_to_upstream_output_folders(tmp_path: Path) -> None:
    plan = _plan(_write(tmp_path, DIAMOND))
    a_out = f"{plan.job_dir}/steps/a/named-outputs/o"
    assert plan.children[0]["extra"]["outputs"] == {"o": a_out}
    assert _exports(_script(plan, "b").text)["AZURE_ML_INPUT_i"] == shq(a_out)
    # mode: download gets a private copy in the step's own folder
    c_text = _script(plan, "c").text
    assert f"cp -R {shq(a_out)} {shq(plan.job_dir + '/steps/c/inputs/i')}" in c_text
    assert _exports(c_text)["AZURE_ML_INPUT_i"] == shq(f"{plan.job_dir}/steps/c/inputs/i")
    # the pipeline input reaches the step as a literal
    assert _exports(_script(plan, "a").text)["AZURE_ML_INPUT_g"] == "hello"
    assert plan.inputs == {"greeting": "hello"}


HOSTILE = [
    "$(touch /tmp/hpcjobs-pwned) `id` ${HOME}",
    'it\'s "quoted" \\ back\\slash; rm -rf ~ &',
    "line one\nline two\ttab *glob* ?",
    "--flag=-1 ${{not.an.expression}}",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_pipeline_literal_reaches_the_step_byte_for_byte(tmp_path: Path, value: str) -> None:
    job = _write(
        tmp_path,
        "type: pipeline\ninputs:\n  msg: placeholder\njobs:\n  s:\n    command: printf '%s' ${{inputs.m}}\n"
        "    inputs:\n      m: ${{parent.inputs.msg}}\n",
    )
    loaded = load_job(job, [])
    loaded.job.inputs["msg"] = value  # as if the YAML said so (--set cannot carry a newline)
    plan = plan_pipeline(loaded, local_site(), TARGET, name="pipe", token="t" * 16)
    word = _exports(plan.scripts[0].text)["AZURE_ML_INPUT_m"]
    assert word == shq(value)
    # bash gives back exactly the value
    res = subprocess.run(["bash", "-c", f"x={word}; printf '%s' \"$x\""], capture_output=True, text=True, check=True)
    assert res.stdout == value


def test_set_overrides_a_pipeline_input(tmp_path: Path) -> None:
    plan = _plan(_write(tmp_path, DIAMOND), ["inputs.greeting=bonjour"])
    assert _exports(_script(plan, "a").text)["AZURE_ML_INPUT_g"] == "bonjour"


# --------------------------------------------------------------------------- compute, datastore, outputs
def test_step_compute_beats_default_compute(tmp_path: Path) -> None:
    job = _write(
        tmp_path,
        "type: pipeline\nsettings:\n  default_compute: azureml:gpu-cluster\njobs:\n"
        "  on_gpu:\n    command: nvidia-smi\n"
        "  on_cpu:\n    command: hostname\n    compute: azureml:cpu-cluster\n",
    )
    plan = _plan(job, site=get_site("testcluster"))
    assert "--partition=gpu" in _script(plan, "on_gpu").sbatch_options
    assert "--partition=debug" in _script(plan, "on_cpu").sbatch_options
    assert plan.compute == "gpu-cluster"
    assert [c["compute"] for c in plan.children] == ["gpu-cluster", "cpu-cluster"]


def test_unknown_compute_is_located_with_a_suggestion(tmp_path: Path) -> None:
    job = _write(
        tmp_path, "type: pipeline\nsettings:\n  default_compute: azureml:cpu-clustr\njobs:\n  s:\n    command: hostname\n"
    )
    with pytest.raises(ValidationError) as exc:
        _plan(job, site=get_site("testcluster"))
    assert exc.value.location is not None and exc.value.location.line == 3
    assert "cpu-cluster" in (exc.value.hint or "")


def test_default_datastore_places_outputs(tmp_path: Path) -> None:
    text = "type: pipeline\nsettings:\n  default_datastore: azureml:{ds}\njobs:\n  s:\n    command: touch ${{{{outputs.o}}}}/x\n    outputs:\n      o:\n"
    plan = _plan(_write(tmp_path, text.format(ds="workspaceblobstore")), site=get_site("testcluster"))
    assert plan.children[0]["extra"]["outputs"]["o"] == "/srv/hpcjobs/datastore/azureml/pipe_s/o"
    with pytest.raises(ValidationError) as exc:
        _plan(_write(tmp_path, text.format(ds="workspaceblobstor")), site=get_site("testcluster"))
    assert "workspaceblobstore" in (exc.value.hint or "")
    # a site without datastores keeps outputs in the job folder, and says so
    plan = _plan(_write(tmp_path, text.format(ds="workspaceblobstore")))
    assert plan.children[0]["extra"]["outputs"]["o"] == f"{plan.job_dir}/steps/s/named-outputs/o"
    assert any("defines no datastores" in w for w in plan.warnings)


def test_step_output_routed_to_a_pipeline_output(tmp_path: Path) -> None:
    text = """
type: pipeline
outputs:
  final:
  elsewhere:
    path: azureml://datastores/workspaceblobstore/paths/results/${{name}}
jobs:
  s:
    command: touch ${{outputs.o}}/x ${{outputs.p}}/y
    outputs:
      o: ${{parent.outputs.final}}
      p:
        path: ${{parent.outputs.elsewhere}}
"""
    plan = _plan(_write(tmp_path, text), site=get_site("testcluster"))
    assert plan.outputs == {
        "final": f"{plan.job_dir}/named-outputs/final",
        "elsewhere": "/srv/hpcjobs/datastore/results/pipe",
    }
    assert plan.children[0]["extra"]["outputs"] == {"o": plan.outputs["final"], "p": plan.outputs["elsewhere"]}


def test_two_steps_cannot_feed_one_pipeline_output(tmp_path: Path) -> None:
    text = "type: pipeline\noutputs:\n  z:\njobs:\n" + "".join(
        f"  {n}:\n    command: touch ${{{{outputs.o}}}}/x\n    outputs:\n      o: ${{{{parent.outputs.z}}}}\n" for n in ("a", "b")
    )
    with pytest.raises(ValidationError, match="already bound"):
        _plan(_write(tmp_path, text))


# --------------------------------------------------------------------------- components
def test_component_defaults_optional_inputs_and_coercion() -> None:
    path = EXAMPLES / "train-pipeline" / "pipeline.yml"
    plan = _plan(path)
    train = _script(plan, "train")
    env = _exports(train.text)
    assert env["AZURE_ML_INPUT_learning_rate"] == "0.5"  # the pipeline input beats the default 0.1
    assert env["AZURE_ML_INPUT_epochs"] == "200"  # the component default
    assert "AZURE_ML_INPUT_l2" not in env and "--l2" not in train.text  # optional and unset: $[[...]] dropped
    # --set gives strings: an integer input takes "300", and an optional input comes alive
    plan = _plan(path, ["inputs.n_samples=300", "jobs.train.inputs.l2=0.01"])
    assert _exports(_script(plan, "get_data").text)["AZURE_ML_INPUT_n_samples"] == "300"
    assert "--l2" in _script(plan, "train").text
    with pytest.raises(ValidationError, match="expected an integer"):
        _plan(path, ["inputs.n_samples=many"])
    with pytest.raises(ValidationError, match="below the minimum 10"):
        _plan(path, ["inputs.n_samples=5"])


def test_every_component_code_folder_becomes_a_snapshot() -> None:
    loaded = load_job(EXAMPLES / "hello-pipeline-abc.yml", [])
    target = Target(home="/home/u", user="u")
    prepare_target(loaded, local_site(), target, None)
    assert len(target.digests) == 3
    plan = plan_pipeline(loaded, local_site(), target, name="pipe", token="t" * 16)
    assert sorted(Path(src).name for src in plan.snapshots.values()) == ["a_src", "b_src", "c_src"]
    assert all(d.endswith(target.digests[src]) for d, src in plan.snapshots.items())
    for s in plan.scripts:
        assert [d for d in plan.snapshots if d in s.text], s.key


def test_slurm_backend_ships_only_missing_snapshots(tmp_path: Path) -> None:
    site = get_site("testcluster")
    loaded = load_job(EXAMPLES / "hello-pipeline-abc.yml", [])
    target = Target(home=str(tmp_path), user="u")
    prepare_target(loaded, site, target, None)
    plan = plan_pipeline(loaded, site, target, name="pipe", token="t" * 16)
    # pretend the job root is here and one snapshot is already there
    plan.snapshots = {str(tmp_path / "root" / ".snapshots" / Path(d).name): src for d, src in plan.snapshots.items()}
    first = next(iter(plan.snapshots))
    Path(first).mkdir(parents=True)
    backend = SlurmBackend(site, LocalTransport())
    missing = backend._missing_snapshots(plan)
    assert set(missing) == set(plan.snapshots) - {first}
    assert backend.transport.stats.commands == 1  # one check for all of them
    import io
    import tarfile

    plan.job_dir = str(tmp_path / "root" / "pipe")
    plan.files = {}
    plan.scripts = []
    names = tarfile.open(fileobj=io.BytesIO(backend._payload(plan, str(tmp_path / "root"), missing))).getnames()
    assert sorted({n.split("/")[1] for n in names}) == sorted(Path(d).name for d in missing)


TUNE = EXAMPLES / "train-pipeline" / "tune-pipeline.yml"


def test_sweep_step_is_its_arrays_and_a_finalize_job(tmp_path: Path) -> None:
    for site in (local_site(), get_site("testcluster")):
        plan = _plan(TUNE, site=site, name="tp")
        keys = [s.key for s in plan.scripts]
        assert keys == ["get_data", "tune_Trials", "tune", "evaluate"]
        arrays, fin = _script(plan, "tune_Trials"), _script(plan, "tune")
        step_dir = f"{plan.job_dir}/steps/tune"
        # the arrays wait for the data they read; the finalize job (the step's own script)
        # for that data too, and for the arrays whatever became of their trials
        assert (arrays.depends_on, arrays.dependency_type, arrays.after_any) == (["get_data"], "afterok", [])
        assert (fin.depends_on, fin.dependency_type, fin.after_any) == (["get_data"], "afterok", ["tune_Trials"])
        assert _script(plan, "evaluate").depends_on == ["get_data", "tune"]
        assert arrays.script_path == f"{step_dir}/array.sh" and fin.script_path == f"{step_dir}/job.sh"
        assert arrays.array == "0-2%2" and arrays.tasks == 3 and fin.array is None
        assert "-m hpcjobs.sweep.controller finalize" in fin.text
        if not site.is_local:
            # limits.timeout cancels the sweep's arrays by their name: never the finalize job
            assert "--job-name=tp_tune" in arrays.sbatch_options and "--job-name=tp_tune-finalize" in fin.sbatch_options
            assert fin.job_name == "tp_tune-finalize" and not any(o.startswith("--gres") for o in fin.sbatch_options)
        # the step's output is the pipeline output it is routed to; each trial writes its own
        best = f"{plan.job_dir}/named-outputs/best_model"
        cfg = json.loads(plan.files[f"{step_dir}/.hpcjobs/sweep.json"])
        assert cfg["best_outputs"] == {
            "model": {"trial": f"{step_dir}/trials/$HPCJOBS_TASK_INDEX/named-outputs/model", "path": best, "type": "uri_folder"}
        }
        assert cfg["name"] == "tp_tune" and cfg["objective"] == {"goal": "minimize", "primary_metric": "train_loss"}
        assert _exports(_script(plan, "evaluate").text)["AZURE_ML_INPUT_model"] == shq(best)
        assert plan.outputs["best_model"] == best
        # records: the step (a sweep, parent of its trials), its trials, the other steps
        kids = {c["name"]: c for c in plan.children}
        step = kids["tp_tune"]
        assert step["type"] == "sweep" and step["script_keys"] == ["tune", "tune_Trials"]
        assert step["extra"]["outputs"] == {"model": best} and step["extra"]["finalize"]["job_name"] == fin.job_name
        assert (
            step["extra"]["sweep"]["trials"] == 3
            and step["extra"]["inputs"]["learning_rate"] == "${{search_space.learning_rate}}"
        )
        trials = [c for c in plan.children if c.get("parent") == "tp_tune"]
        assert [t["name"] for t in trials] == ["tp_tune_0", "tp_tune_1", "tp_tune_2"]
        assert [t["extra"]["params"] for t in trials] == [{"learning_rate": v} for v in (0.01, 0.1, 1.0)]
        assert trials[1]["extra"]["outputs"] == {"model": f"{step_dir}/trials/1/named-outputs/model"}
        assert all(t["script_key"] == "tune_Trials" for t in trials)
        assert plan.meta["steps"]["tune"]["type"] == "sweep"


def test_sweep_step_trial_gets_hyperparameter_default_and_upstream_data(tmp_path: Path) -> None:
    plan = _plan(TUNE, name="tp")
    text = _script(plan, "tune_Trials").text
    exports = _exports(text)
    assert exports["AZURE_ML_INPUT_training_data"] == shq(f"{plan.job_dir}/steps/get_data/named-outputs/train_data")
    assert exports["AZURE_ML_INPUT_epochs"] == "200"  # the component's default
    assert "AZURE_ML_INPUT_learning_rate" not in exports  # the sampled value, per trial (trials.sh)
    assert '--learning_rate "${AZUREML_SWEEP_learning_rate}"' in text
    assert "--l2" not in text  # optional, not given: its $[[...]] segment is dropped
    trials_sh = plan.files[f"{plan.job_dir}/steps/tune/trials.sh"].decode()
    for i, lr in enumerate(("0.01", "0.1", "1.0")):
        res = subprocess.run(
            [
                "bash",
                "-c",
                'HPCJOBS_TASK_INDEX=$1; . /dev/stdin; printf "%s|%s" "$AZURE_ML_INPUT_learning_rate" "$AZUREML_PARAMETER_learning_rate"',
                "t",
                str(i),
            ],
            input=trials_sh.replace('[ -n "${HPCJOBS_TRIAL_FOUND:-}" ] && .', ": "),
            capture_output=True,
            text=True,
            check=True,
        )
        assert res.stdout == f"{lr}|{lr}"


def test_sweep_step_is_never_reused(tmp_path: Path, hpcjobs_home: Path) -> None:
    loaded = load_job(TUNE)
    target = Target(home="/home/u", user="u")
    prepare_target(loaded, local_site(), target, None)
    keys = {s.name: s.key for s in resolve_steps(loaded, local_site(), target)}
    assert keys["get_data"] is not None
    # sampled anew on every run: no key, and neither has what reads from it
    assert keys["tune"] is None and keys["evaluate"] is None


def test_sweep_step_split_into_chunks_keeps_every_chunk_behind_its_data(tmp_path: Path, hpcjobs_home: Path) -> None:
    d = hpcjobs_home / "config" / "sites"
    d.mkdir(parents=True, exist_ok=True)
    text = (REPO / "site-configs" / "testcluster.yml").read_text().replace("name: testcluster", "name: small")
    (d / "small.yml").write_text(text + "max_array_size: 2\n")
    pipe = _write(tmp_path, TUNE.read_text().replace("values: [0.01, 0.1, 1.0]", "values: [0.01, 0.1, 1.0, 2.0, 3.0]"))
    for f in ("get_data.yml", "train.yml", "evaluate.yml"):
        (tmp_path / f).write_text((TUNE.parent / f).read_text().replace("code: ./src", f"code: {TUNE.parent / 'src'}"))
    plan = _plan(pipe, site=get_site("small"), name="tp")
    chunks = [s for s in plan.scripts if s.key.startswith("tune_Trials")]
    assert [c.key for c in chunks] == ["tune_Trials", "tune_Trials_chunk1", "tune_Trials_chunk2"]
    # lanes: max_concurrent_trials 2 -> two chunks at once, the third after the first
    assert [(c.depends_on, c.after_any) for c in chunks] == [
        (["get_data"], []),
        (["get_data"], []),
        (["get_data"], ["tune_Trials"]),
    ]
    assert _script(plan, "tune").after_any == [c.key for c in chunks]
    program = SlurmBackend(get_site("small"), LocalTransport())._program(plan, {})
    line = next(ln for ln in program.splitlines() if ln.startswith("submit tune_Trials_chunk2 "))
    assert '"--dependency=afterok:${ids[get_data]},afterany:${ids[tune_Trials]}"' in line
    assert "--kill-on-invalid-dep=yes" in line
    fin = next(ln for ln in program.splitlines() if ln.startswith("submit tune "))
    assert (
        '"--dependency=afterok:${ids[get_data]},afterany:${ids[tune_Trials]}:${ids[tune_Trials_chunk1]}:${ids[tune_Trials_chunk2]}"'
        in fin
    )
    step = next(c for c in plan.children if c["name"] == "tp_tune")
    assert step["script_keys"] == ["tune", *(c.key for c in chunks)]


def test_sweep_step_trial_names_must_not_be_a_steps(tmp_path: Path) -> None:
    text = TUNE.read_text() + "  tune_1:\n    command: echo\n"
    for f in ("get_data.yml", "train.yml", "evaluate.yml"):
        (tmp_path / f).write_text((TUNE.parent / f).read_text().replace("code: ./src", f"code: {TUNE.parent / 'src'}"))
    with pytest.raises(ValidationError, match="step 'tune_1' would have the job name of trial 1 of sweep step 'tune'"):
        api.plan(_write(tmp_path, text), name="tp")


# --------------------------------------------------------------------------- failure handling
def test_continue_on_step_failure_false_renders_the_fail_fast_hook(tmp_path: Path) -> None:
    plan = _plan(_write(tmp_path, DIAMOND))
    assert all("continue_on_step_failure is false" not in s.text for s in plan.scripts)
    assert plan.meta["pipeline"]["continue_on_step_failure"] is True
    plan = _plan(_write(tmp_path, DIAMOND), ["settings.continue_on_step_failure=false"])
    assert all("continue_on_step_failure is false" in s.text for s in plan.scripts)
    assert all(s.text.startswith("#!/bin/bash\n") for s in plan.scripts)
    assert plan.meta["pipeline"]["continue_on_step_failure"] is False
    # the exit hook spares no job by name when there is no on_finalize step
    assert plan.spare_job == ""
    assert all("hpcjobs_spare=''\n" in s.text for s in plan.scripts)


def test_fail_fast_hook_spares_the_on_finalize_step_by_its_job_name(tmp_path: Path) -> None:
    text = DIAMOND.replace(
        "jobs:",
        "settings:\n  continue_on_step_failure: false\n  on_finalize: cleanup\njobs:\n  cleanup:\n    command: echo cleanup",
    )
    plan = _plan(_write(tmp_path, text), name="my-pipe")
    assert plan.spare_job == "my-pipe_cleanup"
    for s in plan.scripts:
        assert "hpcjobs_spare=my-pipe_cleanup\n" in s.text, s.key
        # nothing is spared for its afterany edges (a sweep step's finalize job has them too)
        assert "*afterany*" not in s.text


def test_on_init_and_on_finalize(tmp_path: Path) -> None:
    text = DIAMOND.replace(
        "jobs:",
        "settings:\n  on_init: setup\n  on_finalize: cleanup\njobs:\n  setup:\n    command: echo setup\n  cleanup:\n    command: echo cleanup",
    )
    plan = _plan(_write(tmp_path, text))
    keys = [s.key for s in plan.scripts]
    assert keys[0] == "setup" and keys[-1] == "cleanup"
    assert _script(plan, "a").depends_on == ["setup"]
    fin = _script(plan, "cleanup")
    assert fin.dependency_type == "afterany" and set(fin.depends_on) == {"setup", "a", "b", "c", "d"}
    with pytest.raises(ValidationError, match="did you mean 'cleanup'"):
        _plan(_write(tmp_path, text.replace("on_finalize: cleanup", "on_finalize: clean_up")))


# --------------------------------------------------------------------------- reuse
def _keys(path: Path, sets: list[str] | None = None, digests: dict[str, str] | None = None) -> dict[str, str | None]:
    loaded = load_job(path, sets or [])
    target = Target(home="/home/u", user="u", digests=dict(digests or {}))
    return {s.name: s.key for s in resolve_steps(loaded, local_site(), target)}


def test_reuse_keys_are_stable_and_follow_what_decides_the_result(tmp_path: Path) -> None:
    path = _write(tmp_path, DIAMOND)
    base = _keys(path)
    assert all(base.values()) and len(set(base.values())) == 4
    assert _keys(path) == base
    # a changed literal changes the step that reads it and everything downstream of it
    changed = _keys(path, ["inputs.greeting=hi"])
    assert all(changed[s] != base[s] for s in "abcd")
    # a changed command in b changes b and d, not a or c
    changed = _keys(_write(tmp_path, DIAMOND.replace("> ${{outputs.o}}/y", "> ${{outputs.o}}/z"), "p2.yml"))
    assert changed["a"] == base["a"] and changed["c"] == base["c"]
    assert changed["b"] != base["b"] and changed["d"] != base["d"]
    # the step's name and the pipeline's file do not matter
    renamed = _keys(_write(tmp_path, DIAMOND.replace("  a:", "  first:").replace("jobs.a.", "jobs.first."), "p3.yml"))
    assert renamed["first"] == base["a"] and renamed["d"] == base["d"]
    # run settings do
    assert _keys(path, ["jobs.a.environment_variables.X=1"])["a"] != base["a"]


def test_reuse_key_follows_the_code_snapshot_and_determinism(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    comp = "name: comp\nversion: 1\ncode: ./src\ncommand: python3 run.py\n"
    (tmp_path / "comp.yml").write_text(comp)
    path = _write(tmp_path, "type: pipeline\njobs:\n  s:\n    component: ./comp.yml\n")
    code = str((tmp_path / "src").resolve())
    assert _keys(path)["s"] is None  # code never hashed (job validate): never claim a match
    one = _keys(path, digests={code: "1" * 32})["s"]
    assert one and one != _keys(path, digests={code: "2" * 32})["s"]
    (tmp_path / "comp.yml").write_text(comp + "is_deterministic: false\n")
    assert _keys(path, digests={code: "1" * 32})["s"] is None


def _reused_entry(job_dir: str) -> dict[str, Any]:
    return {"name": "old_a", "job_dir": job_dir, "outputs": {"o": f"{job_dir}/named-outputs/o"}, "started": 1.0, "ended": 2.0}


def test_reused_step_is_not_planned_and_downstream_reads_its_outputs(tmp_path: Path) -> None:
    path = _write(tmp_path, DIAMOND)
    key_a = _keys(path)["a"]
    assert key_a
    target = Target(home="/home/u", user="u", reusable={key_a: _reused_entry("/old/steps/a")})
    plan = _plan(path, target=target)
    assert [s.key for s in plan.scripts] == ["b", "c", "d"]
    assert _script(plan, "b").depends_on == []
    assert _exports(_script(plan, "b").text)["AZURE_ML_INPUT_i"] == "/old/steps/a/named-outputs/o"
    child = plan.children[0]
    assert child["status"] == "Completed" and child["extra"]["reused_from"] == "old_a" and child["job_dir"] == "/old/steps/a"
    assert plan.meta["steps"]["a"]["reused_from"] == "old_a"
    # force_rerun: everything is planned again
    plan = _plan(path, ["settings.force_rerun=true"], target=target)
    assert plan.scripts[0].key == "a"


def test_reuse_index_finds_completed_runs_only(tmp_path: Path) -> None:
    store = Store(tmp_path / "jobs.db")
    for name, status in (("p1_a", "Completed"), ("p2_a", "Failed"), ("p3_b", "Running")):
        store.add(
            JobRecord(
                name=name,
                type="command",
                site="local",
                status=status,
                token=name,
                parent=name[:2],
                job_dir=f"/jobs/{name}",
                created=time.time(),
                ended=time.time(),
                extra={"outputs": {"o": f"/jobs/{name}/o"}},
            )
        )
    children = [{"name": n, "extra": {"reuse_key": k}} for n, k in (("p1_a", "ka"), ("p2_a", "ka"), ("p3_b", "kb"))]
    assert reuse.record(store, "local", children) == 3
    found = reuse.lookup(store, "local", ["ka", "kb", "kc"])
    assert set(found) == {"ka"}
    assert found["ka"]["name"] == "p1_a" and found["ka"]["outputs"] == {"o": "/jobs/p1_a/o"}
    assert reuse.lookup(store, "elsewhere", ["ka"]) == {}


def test_fingerprint_changes_with_the_data(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / "x.csv").write_text("1\n")
    one = reuse.fingerprint(str(d))
    assert one == reuse.fingerprint(str(d))
    (d / "x.csv").write_text("12\n")
    assert reuse.fingerprint(str(d)) != one
    assert reuse.fingerprint(str(tmp_path / "missing")) is None


# --------------------------------------------------------------------------- names, DAG view, speed
def test_step_job_names_stay_within_the_limit() -> None:
    assert step_job_name("p", "train") == "p_train"
    long = step_job_name("x" * 250, "train")
    assert len(long) == 255 and long != step_job_name("x" * 250, "trainer")


def _rec(name: str, step: str, status: str, ids: list[str], **extra: Any) -> JobRecord:
    return JobRecord(name=name, type="command", site="s", status=status, token=name, slurm_ids=ids, extra={"step": step, **extra})


def test_dag_view_orders_steps_and_draws_every_edge() -> None:
    parent = JobRecord(
        name="p",
        type="pipeline",
        site="s",
        status="Running",
        token="t",
        extra={
            "steps": {
                "d": {"depends_on": ["b", "c"]},
                "b": {"depends_on": ["a"]},
                "c": {"depends_on": ["a"]},
                "a": {"depends_on": []},
            }
        },
    )
    kids = [
        _rec("p_d", "d", "NotStarted", ["104"]),
        _rec("p_a", "a", "Completed", [], reused_from="old_a"),
        _rec("p_c", "c", "Failed", ["103"]),
        _rec("p_b", "b", "Running", ["102"]),
    ]
    steps = steps_view(parent, kids)
    assert [s["name"] for s in steps] == ["a", "b", "c", "d"]
    assert steps[1]["slurm_id"] == "102" and steps[0]["reused_from"] == "old_a" and steps[3]["depends_on"] == ["b", "c"]
    text = render_dag(steps)
    lines = text.splitlines()
    assert lines[0] == "4 steps: 1 Completed (1 reused), 1 Running, 1 Failed, 1 NotStarted"
    assert lines[1].startswith("a ") and "reused from old_a" in lines[1]
    assert lines[2].startswith("├─▶ b ") and "slurm 102" in lines[2]
    assert lines[3].startswith("└─▶ c ") and "[FAILED]" in lines[3]
    assert lines[4].startswith("    └─▶ d ") and "also after: b" in lines[4]


def test_examples_plan_everywhere() -> None:
    for path in PIPELINE_EXAMPLES:
        for site in (local_site(), get_site("testcluster")):
            plan = _plan(path, site=site)
            assert plan.kind == "pipeline" and plan.scripts, path
            assert len(plan.children) == len(load_job(path, []).job.jobs)


def test_two_hundred_step_pipeline_plans_quickly(tmp_path: Path) -> None:
    lines = ["type: pipeline", "jobs:", "  s0:", "    command: echo 0 > ${{outputs.o}}/x", "    outputs:", "      o:"]
    for i in range(1, 200):
        lines += [f"  s{i}:", "    command: cat ${{inputs.i}}/x > ${{outputs.o}}/x", "    inputs:"]
        lines += [f"      i: ${{{{parent.jobs.s{(i - 1) // 2}.outputs.o}}}}", "    outputs:", "      o:"]
    path = _write(tmp_path, "\n".join(lines) + "\n")
    start = time.perf_counter()
    plan = _plan(path, site=get_site("testcluster"))
    elapsed = time.perf_counter() - start
    assert len(plan.scripts) == 200
    assert _script(plan, "s199").depends_on == ["s99"]
    # measured ~0.5 s on the development machine; generous for loaded CI machines
    assert elapsed < 10, elapsed


def test_sweep_step_timeout_counts_from_its_first_trial_not_the_submission(tmp_path: Path) -> None:
    import os

    from hpcjobs.sweep import controller

    for f in ("get_data.yml", "train.yml", "evaluate.yml"):
        (tmp_path / f).write_text((TUNE.parent / f).read_text().replace("code: ./src", f"code: {TUNE.parent / 'src'}"))
    pipe = _write(tmp_path, TUNE.read_text().replace("trial_timeout: 600", "trial_timeout: 600\n      timeout: 900"))
    plan = _plan(pipe, name="tp")
    step_dir = f"{plan.job_dir}/steps/tune"
    task = plan.files[f"{step_dir}/.hpcjobs/sweep_task.sh"].decode()
    assert '( set -C; : > "$HPCJOBS_JOB_DIR/.hpcjobs/started_at" ) 2>/dev/null' in task
    assert "trials.json" not in task.split("limits.timeout", 1)[1].split("fi", 1)[0]
    assert json.loads(plan.files[f"{step_dir}/.hpcjobs/sweep.json"])["clock"] == "first_trial"
    # the first trial creates the marker once; the watchers count from it, not from trials.json
    job = tmp_path / "job"
    (job / ".hpcjobs").mkdir(parents=True)
    (job / "trials.json").write_text("{}")
    os.utime(job / "trials.json", (1000, 1000))
    assert controller.sweep_start(str(job)) == 1000
    first_trial = '( set -C; : > "$1/.hpcjobs/started_at" ) 2>/dev/null; stat -c %Y "$1/.hpcjobs/started_at"'
    subprocess.run(["bash", "-c", first_trial, "t", str(job)], check=True)
    os.utime(job / ".hpcjobs" / "started_at", (2000, 2000))
    res = subprocess.run(["bash", "-c", first_trial, "t", str(job)], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "2000"  # the second trial did not move the clock
    assert controller.sweep_start(str(job)) == 2000
