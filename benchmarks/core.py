"""Run the benchmarks: ``python -m benchmarks [--reps N] [--only NAME ...] [--quick]``.

Each benchmark measures hpcjobs and its baseline(s) in the same run, alternating
repetitions so machine load hits both alike, and reports median and min-max of every
series plus the ratio of medians to the baseline.  Results go to
``benchmarks/results/latest.json`` and ``benchmarks/results/latest.md``.

Needs the test cluster (``tests/cluster/up.sh``) and, for the SSH benchmarks, the test
sshd; runs as root (like the test suite) with a private HPCJOBS_HOME.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


@dataclass
class Series:
    """Timings (seconds) of one contender."""

    label: str
    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "median_s": round(self.median, 5),
            "min_s": round(min(self.samples), 5) if self.samples else None,
            "max_s": round(max(self.samples), 5) if self.samples else None,
            "n": len(self.samples),
            "samples_s": [round(s, 5) for s in self.samples],
            "note": self.note,
        }


@dataclass
class Result:
    """One benchmark: a baseline and contenders, plus counted facts."""

    name: str
    title: str
    baseline: str
    series: dict[str, Series] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)
    target: str = ""
    error: str | None = None

    def add(self, label: str, seconds: float) -> None:
        self.series.setdefault(label, Series(label)).samples.append(seconds)

    def to_dict(self) -> dict[str, Any]:
        base = self.series.get(self.baseline)
        out = {
            "name": self.name,
            "title": self.title,
            "baseline": self.baseline,
            "target": self.target,
            "series": [s.to_dict() for s in self.series.values()],
            "ratios_to_baseline": {
                k: round(s.median / base.median, 3) if base and base.median and s.samples else None for k, s in self.series.items()
            },
            "facts": self.facts,
        }
        if self.error:
            out["error"] = self.error
        return out


def timed(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: bytes | None = None) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    """Wall time of a whole process, start to exit."""
    t0 = time.perf_counter()
    res = subprocess.run(argv, capture_output=True, env=env, cwd=cwd, input=stdin, check=False)
    dt = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... exited {res.returncode}: {res.stderr.decode(errors='replace')[-800:]}")
    return dt, res


class Context:
    """Shared state of one benchmark run."""

    def __init__(self, reps: int, quick: bool) -> None:
        self.reps = reps
        self.quick = quick
        self.tmp = Path(tempfile.mkdtemp(prefix="hpcjobs-bench-", dir="/srv" if Path("/srv").is_dir() else None))
        os.chmod(self.tmp, 0o755)
        self.home = self.tmp / "home"
        self.home.mkdir()
        self.env = dict(os.environ, HPCJOBS_HOME=str(self.home))
        for k in [k for k in self.env if k.startswith(("SBATCH_", "SLURM_"))]:
            del self.env[k]
        # measure an installation as users have it: with bytecode (pip compiles on install)
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        # measure this checkout, whichever one the installed console script was installed from
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), self.env.get("PYTHONPATH", "")) if p)
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "hpcjobs")], check=False, env=self.env)
        exe = Path(sys.executable).parent / "hpcjobs"
        self.hpcjobs = [str(exe)] if exe.exists() else [sys.executable, "-m", "hpcjobs.cli.main"]
        self.to_cancel: list[str] = []

    def cli(self, *args: str) -> tuple[float, subprocess.CompletedProcess[bytes]]:
        return timed([*self.hpcjobs, *args], env=self.env, cwd=self.tmp)

    def write(self, name: str, text: str) -> Path:
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    def cancel_all(self) -> None:
        """Cancel everything the benchmarks submitted (held jobs never run)."""
        subprocess.run(["scancel", "--me", "--name=hpcjobs-bench"], capture_output=True, check=False)
        if self.to_cancel:
            for i in range(0, len(self.to_cancel), 500):
                subprocess.run(["scancel", *self.to_cancel[i : i + 500]], capture_output=True, check=False)
            self.to_cancel.clear()

    def close(self) -> None:
        self.cancel_all()
        shutil.rmtree(self.tmp, ignore_errors=True)


BENCHMARKS: dict[str, Callable[[Context], Result]] = {}


def benchmark(name: str) -> Callable[[Callable[[Context], Result]], Callable[[Context], Result]]:
    def deco(fn: Callable[[Context], Result]) -> Callable[[Context], Result]:
        BENCHMARKS[name] = fn
        return fn

    return deco


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [
        "# hpcjobs benchmarks",
        "",
        f"Measured {meta['date']} on {meta['machine']} ({meta['cpus']} CPUs), Python {meta['python']}, "
        f"{meta['slurm']}; {meta['reps']} repetitions per series, alternating contenders. "
        "Times are whole-process wall times unless the row says otherwise; ratio = median / baseline median "
        "(measured in the same run).",
        "",
    ]
    for r in results:
        lines.append(f"## {r.title}")
        lines.append("")
        if r.target:
            lines.append(f"Target: {r.target}")
            lines.append("")
        if r.error:
            lines.append(f"**not measured**: {r.error}")
            lines.append("")
            continue
        d = r.to_dict()
        if r.series:
            lines.append("| contender | median | min – max | ratio to baseline | note |")
            lines.append("|---|---:|---:|---:|---|")
            for s in d["series"]:
                ratio = d["ratios_to_baseline"].get(s["label"])
                mark = " (baseline)" if s["label"] == r.baseline else ""
                lines.append(
                    f"| {s['label']}{mark} | {s['median_s'] * 1000:.1f} ms | {s['min_s'] * 1000:.1f} – {s['max_s'] * 1000:.1f} ms "
                    f"| {ratio if ratio is not None else '–'} | {s['note']} |"
                )
            lines.append("")
        if r.facts:
            for k, v in r.facts.items():
                lines.append(f"- {k}: **{v}**")
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks import suites  # noqa: F401 - registers the benchmarks

    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--reps", type=int, default=5, help="repetitions per series (at least 5 for published numbers)")
    ap.add_argument("--only", nargs="*", default=None, help=f"benchmarks to run: {', '.join(BENCHMARKS)}")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (for a smoke test)")
    ap.add_argument("--out", default=str(RESULTS), help="results folder")
    args = ap.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    # bytecode for every module, as `pip install` leaves it: with PYTHONDONTWRITEBYTECODE set
    # (as on CI machines) an editable checkout would otherwise recompile changed modules in
    # every measured process
    import compileall

    import hpcjobs

    compileall.compile_dir(str(Path(hpcjobs.__file__).parent), quiet=1)
    ctx = Context(args.reps, args.quick)
    results: list[Result] = []
    try:
        for n in names:
            print(f"[bench] {n} ...", file=sys.stderr, flush=True)
            t0 = time.time()
            try:
                r = BENCHMARKS[n](ctx)
            except Exception as exc:  # a failed benchmark is reported, the others still run
                r = Result(n, n, "", error=f"{type(exc).__name__}: {exc}")
            finally:
                ctx.cancel_all()
            results.append(r)
            print(f"[bench] {n} done in {time.time() - t0:.1f}s" + (f" (error: {r.error})" if r.error else ""), file=sys.stderr, flush=True)
    finally:
        ctx.close()
    slurm = subprocess.run(["sinfo", "--version"], capture_output=True, text=True, check=False).stdout.strip() or "no Slurm"
    meta = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "slurm": slurm,
        "reps": args.reps,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps({"meta": meta, "results": [r.to_dict() for r in results]}, indent=1) + "\n")
    (out / "latest.md").write_text(markdown(results, meta))
    print(markdown(results, meta))
    return 1 if any(r.error for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
