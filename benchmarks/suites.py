"""The benchmarks themselves (registered in :mod:`benchmarks.__main__`)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.core import REPO, Context, Result, benchmark, timed

HOLD_SITE = """
name: bench
scheduler: slurm
job_root: {root}
default_compute: cpu-cluster
computes:
  cpu-cluster:
    partition: debug
    sbatch_options: ["--hold"]
tracking: {{mode: none}}
"""

SWEEP = """
type: sweep
trial:
  command: echo ${{{{search_space.x}}}}
sampling_algorithm: grid
search_space:
  x: {{type: choice, values: {values}}}
objective: {{goal: maximize, primary_metric: acc}}
limits: {{max_total_trials: {n}, max_concurrent_trials: 4}}
"""

SUBMITIT = """
import sys, submitit
def f(i):
    return i
ex = submitit.AutoExecutor(folder=sys.argv[1], cluster="slurm")
ex.update_parameters(slurm_partition="debug", slurm_array_parallelism=4, timeout_min=5,
                     slurm_additional_parameters={"hold": True})
jobs = ex.map_array(f, range(int(sys.argv[2])))
print(jobs[0].job_id.split("_")[0])
"""


def _site(ctx: Context) -> None:
    sites = ctx.home / "config" / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    root = ctx.tmp / "jobs"
    (sites / "bench.yml").write_text(HOLD_SITE.format(root=root))


def _ids_from_view(out: bytes) -> list[str]:
    view = json.loads(out)
    return [i.split("_")[0] for i in view["scheduler"]["job_ids"]]


@benchmark("sweep_submit")
def sweep_submit(ctx: Context) -> Result:
    """Sweep submission, whole process until the job ids are known, N = 1 / 100 / 1000."""
    _site(ctx)
    res = Result(
        "sweep_submit",
        "Sweep submission (whole process, until job ids are known)",
        baseline="sbatch --array N=1",
        target="1000-trial sweep within 0.1 s of a 1-trial sweep, and faster than submitit's map_array",
    )
    sizes = [1, 100] if ctx.quick else [1, 100, 1000]
    files = {n: ctx.write(f"sweep{n}.yml", SWEEP.format(values=list(range(n)), n=n)) for n in sizes}
    subprocess.run([sys.executable, "-c", "import submitit"], check=True)
    loop = ctx.write("loop.sh", 'for i in $(seq "$1"); do sbatch --parsable --hold -p debug -J hpcjobs-bench -o /dev/null --wrap true; done\n')
    sub = ctx.write("submitit_bench.py", SUBMITIT)
    for _rep in range(ctx.reps):
        for n in sizes:
            dt, out = ctx.cli("job", "create", "-f", str(files[n]), "--site", "bench", "-o", "json")
            res.add(f"hpcjobs N={n}", dt)
            ctx.to_cancel.extend(_ids_from_view(out.stdout))
            dt, out = timed(["sbatch", "--parsable", "--hold", f"--array=0-{n - 1}%4", "-p", "debug", "-J", "hpcjobs-bench", "-o", "/dev/null", "--wrap", "true"])
            res.add(f"sbatch --array N={n}", dt)
            dt, out = timed([sys.executable, str(sub), str(ctx.tmp / "submitit"), str(n)])
            res.add(f"submitit map_array N={n}", dt)
            ctx.to_cancel.append(out.stdout.decode().strip())
            dt, out = timed(["bash", str(loop), str(n)])
            res.add(f"{n} separate sbatch", dt)
            ctx.to_cancel.extend(out.stdout.decode().split())
        ctx.cancel_all()
    big, small = max(sizes), min(sizes)
    res.facts[f"hpcjobs N={big} minus N={small} (medians)"] = (
        f"{(res.series[f'hpcjobs N={big}'].median - res.series[f'hpcjobs N={small}'].median) * 1000:.0f} ms"
    )
    res.facts[f"hpcjobs / submitit at N={big}"] = round(
        res.series[f"hpcjobs N={big}"].median / res.series[f"submitit map_array N={big}"].median, 2
    )
    return res


def _pipeline_yaml(steps: int) -> str:
    lines = ["type: pipeline", "jobs:"]
    for i in range(steps):
        lines.append(f"  s{i}:")
        lines.append("    command: echo step > ${{outputs.o}}/f")
        lines.append("    outputs: {o: {type: uri_folder}}")
        if i:
            lines.append(f"    inputs: {{i: \"${{{{parent.jobs.s{i - 1}.outputs.o}}}}\"}}")
            lines[-3] = "    command: cat ${{inputs.i}}/f > ${{outputs.o}}/f"
    return "\n".join(lines) + "\n"


@benchmark("pipeline_submit")
def pipeline_submit(ctx: Context) -> Result:
    """A 20-step chain: hpcjobs vs a shell script chaining 20 sbatch --dependency calls."""
    _site(ctx)
    res = Result("pipeline_submit", "Pipeline submission, 20 dependent steps", baseline="shell script, 20 sbatch")
    f = ctx.write("pipe20.yml", _pipeline_yaml(20))
    chain = ctx.write(
        "chain.sh",
        'prev=$(sbatch --parsable --hold -p debug -J hpcjobs-bench -o /dev/null --wrap true)\necho $prev\n'
        'for i in $(seq 19); do prev=$(sbatch --parsable -p debug -J hpcjobs-bench -o /dev/null '
        '--dependency=afterok:$prev --kill-on-invalid-dep=yes --wrap true); echo $prev; done\n',
    )
    for _rep in range(ctx.reps):
        dt, out = ctx.cli("job", "create", "-f", str(f), "--site", "bench", "-o", "json")
        res.add("hpcjobs", dt)
        name = json.loads(out.stdout)["name"]
        _, kids = ctx.cli("job", "list", "--parent-job-name", name, "-o", "json", "--all-results")
        for k in json.loads(kids.stdout):
            ctx.to_cancel.extend(i.split("_")[0] for i in k["scheduler"]["job_ids"])
        dt, out = timed(["bash", str(chain)])
        res.add("shell script, 20 sbatch", dt)
        ctx.to_cancel.extend(out.stdout.decode().split())
        ctx.cancel_all()
    return res


@benchmark("status_refresh")
def status_refresh(ctx: Context) -> Result:
    """Status of 1000 tracked jobs: `hpcjobs job list` (refreshes all) vs one raw squeue."""
    _site(ctx)
    res = Result(
        "status_refresh",
        "Status of 1000 tracked jobs (whole process)",
        baseline="squeue --me -r",
        target="≤ 1 squeue + ≤ 1 sacct per refresh, whatever the number of jobs",
    )
    f = ctx.write("sweep1000.yml", SWEEP.format(values=list(range(1000)), n=1000))
    _, out = ctx.cli("job", "create", "-f", str(f), "--site", "bench", "-o", "json")
    view = json.loads(out.stdout)
    ctx.to_cancel.extend(_ids_from_view(out.stdout))
    for _rep in range(ctx.reps):
        dt, _ = ctx.cli("job", "show", "-n", view["name"], "-o", "none")
        res.add("hpcjobs job show (sweep of 1000 trials)", dt)
        dt, _ = timed(["squeue", "--me", "-r", "-h"])
        res.add("squeue --me -r", dt)
    # count the Slurm commands of one refresh, in-process
    code = (
        "import json, sys\n"
        "from hpcjobs import api, backends\n"
        "from hpcjobs.store import Store\n"
        "from hpcjobs.site import get_site\n"
        "st = Store(); name = sys.argv[1]\n"
        "recs = [st.get(name), *st.children(name)]\n"
        "for r in recs: st.update(r.name, status='Queued')\n"
        "recs = [st.get(name), *st.children(name)]\n"
        "t = backends.transport_for(get_site('bench')); before = len(t.stats.argv_log)\n"
        "api.refresh(recs, st)\n"
        "cmds = [a[0] for a in t.stats.argv_log[before:]]\n"
        "print(json.dumps({'jobs': len(recs), 'commands': cmds}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, view["name"]], capture_output=True, text=True, env=ctx.env, check=True)
    counted = json.loads(run.stdout.strip().splitlines()[-1])
    res.facts["tracked jobs refreshed"] = counted["jobs"]
    res.facts["Slurm commands in one refresh"] = ", ".join(counted["commands"]) or "none"
    return res


def _wait_local(home: Path, out: bytes, timeout: float = 30.0) -> None:
    """Wait (untimed) until a local job has finished, so its runner does not load the next sample."""
    marker = home / "state" / "jobs" / json.loads(out)["name"] / ".hpcjobs" / "exit_code"
    deadline = time.monotonic() + timeout
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@benchmark("cli_startup")
def cli_startup(ctx: Context) -> Result:
    """Whole-process start-up of common commands, against a bare interpreter start in the same run."""
    _site(ctx)
    res = Result(
        "cli_startup",
        "CLI start-up (whole process)",
        baseline="python3 -c pass",
        target="--help ≤ 0.25 s; job list of 10,000 jobs ≤ 0.5 s; job create of a command job on the login node ≤ 0.4 s",
    )
    # 10,000 finished jobs in a separate store
    home2 = ctx.tmp / "home10k"
    env2 = dict(ctx.env, HPCJOBS_HOME=str(home2))
    subprocess.run(
        [sys.executable, "-c", "from hpcjobs.store import Store; Store().list(limit=1)"], env=env2, check=True
    )
    db = home2 / "state" / "jobs.db"
    con = sqlite3.connect(db)
    now = time.time()
    con.executemany(
        "INSERT INTO jobs (name, type, site, compute, status, token, created, tags, properties, slurm_ids, extra, experiment_name, display_name)"
        " VALUES (?, 'command', 'local', 'local', 'Completed', ?, ?, '{\"team\": \"a\"}', '{}', '[\"local:1\"]', '{}', 'exp', ?)",
        [(f"job_{i:05d}", f"t{i}", now - i, f"job {i}") for i in range(10_000)],
    )
    con.commit()
    con.close()
    hello = REPO / "examples" / "hello-world.yml"
    # the embedded default site, with the user's tracking (MLflow file store) and with HPCJOBS_TRACKING=none
    home_local = ctx.tmp / "home-local"
    env_local = dict(ctx.env, HPCJOBS_HOME=str(home_local))
    env_local.pop("HPCJOBS_TRACKING", None)
    env_none = dict(env_local, HPCJOBS_TRACKING="none")
    create = [*ctx.hpcjobs, "job", "create", "-f", str(hello), "-o", "json"]
    login = [*create, "--site", "bench"]

    def slurm_ids(out: bytes) -> list[str]:
        return [i.split("_")[0] for i in json.loads(out)["scheduler"]["job_ids"]]

    # untimed warm-up: the first run of a new install compiles the script templates once
    ctx.to_cancel.extend(slurm_ids(timed(login, env=ctx.env, cwd=ctx.tmp)[1].stdout))
    for env in (env_local, env_none):
        _wait_local(home_local, timed(create, env=env, cwd=ctx.tmp)[1].stdout)
    for _rep in range(ctx.reps):
        dt, _ = timed([sys.executable, "-c", "pass"])
        res.add("python3 -c pass", dt)
        dt, _ = ctx.cli("--help")
        res.add("hpcjobs --help", dt)
        dt, _ = timed([*ctx.hpcjobs, "job", "list", "-o", "json"], env=env2)
        res.add("hpcjobs job list (10,000 jobs in the store)", dt)
        dt, out = timed(login, env=ctx.env, cwd=ctx.tmp)
        res.add("hpcjobs job create (command job, login node)", dt)
        ctx.to_cancel.extend(slurm_ids(out.stdout))
        dt, out = timed(create, env=env_local, cwd=ctx.tmp)
        res.add("hpcjobs job create (command job, embedded local site)", dt)
        _wait_local(home_local, out.stdout)
        dt, out = timed(create, env=env_none, cwd=ctx.tmp)
        res.add("hpcjobs job create (local site, HPCJOBS_TRACKING=none)", dt)
        _wait_local(home_local, out.stdout)
        dt, out = timed(["sbatch", "--parsable", "--hold", "-p", "debug", "-J", "hpcjobs-bench", "-o", "/dev/null", "--wrap", "echo hello world"])
        res.add("sbatch --wrap (raw submit)", dt)
        ctx.to_cancel.append(out.stdout.decode().strip().split(";")[0])
    ctx.cancel_all()
    login_s = res.series["hpcjobs job create (command job, login node)"].median
    res.facts["job create on the login node / python3 -c pass (medians)"] = round(login_s / res.series["python3 -c pass"].median, 2)
    res.facts["job create on the login node minus sbatch --wrap (medians)"] = (
        f"{(login_s - res.series['sbatch --wrap (raw submit)'].median) * 1000:.0f} ms"
    )
    heavy = ("mlflow", "paramiko", "numpy", "scipy", "optuna")
    mods = subprocess.run(
        [sys.executable, "-c", f"import sys, hpcjobs.cli.app; print(','.join(m for m in {heavy!r} if m in sys.modules))"],
        capture_output=True, text=True, check=True, env=ctx.env,
    )
    res.facts["heavy modules imported by the CLI at start-up"] = mods.stdout.strip() or "none"
    probe = (
        "import sys\n"
        "from hpcjobs.cli.main import main\n"
        "sys.argv = ['hpcjobs', 'job', 'create', '-f', sys.argv[1], '--dry-run', '-o', 'none']\n"
        "try:\n    main()\nfinally:\n"
        f"    print(','.join(m for m in {(*heavy, 'typer', 'rich')!r} if m in sys.modules))\n"
    )
    mods = subprocess.run([sys.executable, "-c", probe, str(hello)], capture_output=True, text=True, check=True, env=env_none)
    res.facts["heavy modules (or typer, rich) imported by job create"] = (mods.stdout.splitlines() or [""])[-1].strip() or "none"
    return res


@benchmark("dry_run")
def dry_run(ctx: Context) -> Result:
    """Planning and rendering without submitting: a 10,000-trial sweep and a 200-step pipeline."""
    res = Result("dry_run", "Dry-run render (whole process, plan as JSON)", baseline="hello-world --dry-run")
    big = ctx.write(
        "sweep10k.yml",
        "type: sweep\ntrial:\n  command: python train.py --lr ${{search_space.lr}} --b ${{search_space.b}}\n"
        "sampling_algorithm: {type: random, seed: 1}\nsearch_space:\n  lr: {type: loguniform, min_value: -9, max_value: -1}\n"
        "  b: {type: choice, values: [16, 32, 64]}\nobjective: {goal: maximize, primary_metric: acc}\n"
        "limits: {max_total_trials: 10000, max_concurrent_trials: 50}\n",
    )
    pipe = ctx.write("pipe200.yml", _pipeline_yaml(200))
    hello = REPO / "examples" / "hello-world.yml"
    for _rep in range(ctx.reps):
        dt, _ = ctx.cli("job", "create", "-f", str(hello), "--dry-run", "-o", "json")
        res.add("hello-world --dry-run", dt)
        dt, _ = ctx.cli("job", "create", "-f", str(big), "--dry-run", "-o", "json")
        res.add("10,000-trial sweep --dry-run", dt)
        dt, _ = ctx.cli("job", "create", "-f", str(pipe), "--dry-run", "-o", "json")
        res.add("200-step pipeline --dry-run", dt)
    return res


def _ssh_site(ctx: Context) -> bool:
    key = Path("/etc/hpcjobs-test/ssh/alice_ed25519")
    kh = Path("/etc/hpcjobs-test/ssh/known_hosts")
    if not key.exists() or not kh.exists():
        return False
    sites = ctx.home / "config" / "sites"
    sites.mkdir(parents=True, exist_ok=True)
    (sites / "bench-ssh.yml").write_text(
        "name: bench-ssh\nscheduler: slurm\njob_root: /srv/hpcjobs/alice/bench\ndefault_compute: cpu-cluster\n"
        f"ssh: {{host: 127.0.0.1, port: 2222, user: alice, identity_file: {key}, known_hosts: {kh}}}\n"
        "computes:\n  cpu-cluster: {partition: debug, sbatch_options: [--hold]}\ntracking: {mode: none}\n"
    )
    return True


@benchmark("ssh")
def ssh(ctx: Context) -> Result:
    """Over SSH: connections and remote commands per submission; code upload vs raw tar | ssh."""
    res = Result(
        "ssh",
        "Over SSH (test sshd on 127.0.0.1:2222)",
        baseline="tar czf - | ssh (2000 files, 50 MB)",
        target="one connection and ≤ 3 remote commands per submission; unchanged code re-upload sends 0 bytes of file content",
    )
    if not _ssh_site(ctx):
        res.error = "the test sshd keys are missing (tests/cluster/sshd-up.sh)"
        return res
    code = ctx.tmp / "code"
    (code / "data").mkdir(parents=True)
    payload = os.urandom(25_000)
    for i in range(2000):
        # half random (incompressible), half text
        (code / "data" / f"f{i:04d}.bin").write_bytes(payload if i % 2 else (b"x" * 25_000))
    job = ctx.write("code-job.yml", f"command: ls data | wc -l\ncode: {code}\n")
    sweep = ctx.write("sweep1000-ssh.yml", SWEEP.format(values=list(range(1000)), n=1000))
    pipe = ctx.write("pipe20-ssh.yml", _pipeline_yaml(20))
    hello = REPO / "examples" / "hello-world.yml"
    probe = (
        "import json, sys, time\n"
        "from hpcjobs import api, backends\n"
        "from hpcjobs.site import get_site\n"
        "t0 = time.perf_counter()\n"
        "v = api.create_job(sys.argv[1], site='bench-ssh')\n"
        "dt = time.perf_counter() - t0\n"
        "st = backends.transport_for(get_site('bench-ssh')).stats\n"
        "print(json.dumps({'seconds': dt, 'connections': st.connections, 'commands': st.commands, 'bytes_sent': st.bytes_sent, 'ids': v['scheduler']['job_ids']}))\n"
    )

    def submit(path: Path) -> dict[str, object]:
        run = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, env=ctx.env, check=False)
        if run.returncode != 0:
            raise RuntimeError(run.stderr[-1500:])
        data = json.loads(run.stdout.strip().splitlines()[-1])
        ctx.to_cancel.extend(str(i).split("_")[0] for i in data["ids"])  # type: ignore[union-attr]
        return data

    for label, path in (("command job", hello), ("1000-trial sweep", sweep), ("20-step pipeline", pipe)):
        d = submit(path)
        res.facts[f"{label}: connections / remote commands"] = f"{d['connections']} / {d['commands']}"
    ctx.cancel_all()
    ssh_base = ["ssh", "-p", "2222", "-i", "/etc/hpcjobs-test/ssh/alice_ed25519", "-o", "UserKnownHostsFile=/etc/hpcjobs-test/ssh/known_hosts",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "alice@127.0.0.1"]
    for rep in range(ctx.reps):
        # a fresh snapshot each time: touch one file so the digest changes
        (code / "rev.txt").write_text(f"rev {rep} {time.time()}")
        d = submit(job)
        res.add("hpcjobs job create with code: (first upload)", float(d["seconds"]))  # type: ignore[arg-type]
        d2 = submit(job)
        res.add("hpcjobs job create, unchanged code (in-process)", float(d2["seconds"]))  # type: ignore[arg-type]
        res.facts["bytes sent for an unchanged 50 MB snapshot (scripts only)"] = d2["bytes_sent"]
        res.facts["bytes sent for a new 50 MB snapshot"] = d["bytes_sent"]
        dest = f"/srv/hpcjobs/alice/bench/raw{rep}"
        t0 = time.perf_counter()
        tar = subprocess.Popen(["tar", "-czf", "-", "-C", str(code), "."], stdout=subprocess.PIPE)
        subprocess.run([*ssh_base, f"mkdir -p {dest} && tar -xzf - -C {dest}"], stdin=tar.stdout, check=True, capture_output=True)
        tar.wait()
        res.add("tar czf - | ssh (2000 files, 50 MB)", time.perf_counter() - t0)
    ctx.cancel_all()
    subprocess.run([*ssh_base, "rm -rf /srv/hpcjobs/alice/bench"], capture_output=True, check=False)
    return res
