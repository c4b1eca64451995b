"""A pipeline's steps as data (``job show -o json``: ``steps``) and as a text DAG (``job show -o table``).

The text drawing is a tree over the DAG: each step is drawn under the last of the steps it
waits for (in topological order), and a step that waits for more than one names the
others (``also after: a, b``), so every edge is visible without crossing lines::

    get_data   Completed  101  reused from p1_get_data
    └─▶ train  Running    102
        └─▶ evaluate  Queued  103
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hpcjobs.store import JobRecord

#: one mark per state, readable without colour
MARKS = {
    "Completed": "[ok]",
    "Failed": "[FAILED]",
    "Canceled": "[canceled]",
    "Running": "[running]",
    "Queued": "[queued]",
    "NotStarted": "[waiting]",
    "Starting": "[starting]",
    "Finalizing": "[finalizing]",
    "Paused": "[held]",
}


def _order(names: list[str], deps: dict[str, list[str]]) -> list[str]:
    """*names* in dependency order, stable by their given order."""
    placed: list[str] = []
    seen: set[str] = set()
    remaining = list(names)
    while remaining:
        ready = [n for n in remaining if all(d in seen or d not in names for d in deps.get(n, []))]
        if not ready:
            # a cycle cannot come from the planner; show what is left as it is
            ready = remaining[:]
        for n in ready:
            placed.append(n)
            seen.add(n)
        remaining = [n for n in remaining if n not in seen]
    return placed


def steps_view(
    parent: JobRecord, children: list[JobRecord], *, trials: dict[str, list[JobRecord]] | None = None
) -> list[dict[str, Any]]:
    """The ``steps`` list of a pipeline's ``job show``: one entry per step, in dependency order.

    A sweep step (``type: sweep``) also has ``trials`` (how many, in which states; from
    *trials*, its trials by step job name, when given) and ``best_trial`` once known.
    """
    from hpcjobs.sweep_step import trials_summary

    meta: dict[str, dict[str, Any]] = parent.extra.get("steps") or {}
    by_step = {str(c.extra.get("step", c.name)): c for c in children}
    declared = [s for s in meta if s in by_step] + [s for s in by_step if s not in meta]
    deps = {s: list((meta.get(s) or {}).get("depends_on", [])) for s in declared}
    out: list[dict[str, Any]] = []
    for step in _order(declared, deps):
        c = by_step[step]
        out.append(
            {
                "name": step,
                "job_name": c.name,
                "status": c.status,
                "slurm_id": c.slurm_ids[0] if c.slurm_ids and not c.slurm_ids[0].startswith("local:") else None,
                "job_ids": c.slurm_ids,
                "depends_on": deps.get(step, []),
                "reused": bool(c.extra.get("reused_from")),
                "reused_from": c.extra.get("reused_from"),
                "exit_code": c.exit_code,
                "reason": c.reason,
                "compute": c.compute,
                "role": (meta.get(step) or {}).get("role"),
                "type": "sweep" if c.type == "sweep" else "command",
            }
        )
        if c.type == "sweep":
            if trials is not None and c.name in trials:
                out[-1]["trials"] = trials_summary(trials[c.name])
            out[-1]["best_trial"] = c.properties.get("best_child_run_id")
    return out


def summary(steps: list[dict[str, Any]]) -> str:
    """``3 steps: 2 Completed (1 reused), 1 Running``."""
    counts: dict[str, int] = {}
    for s in steps:
        counts[str(s.get("status"))] = counts.get(str(s.get("status")), 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in counts.items())
    reused = sum(1 for s in steps if s.get("reused"))
    if reused:
        parts = parts.replace(f"{counts['Completed']} Completed", f"{counts['Completed']} Completed ({reused} reused)", 1)
    return f"{len(steps)} step{'s' if len(steps) != 1 else ''}: {parts}"


def render_dag(steps: list[dict[str, Any]]) -> str:
    """The steps as an indented tree over the DAG, one line per step, columns aligned."""
    if not steps:
        return "(no steps)\n"
    names = [str(s["name"]) for s in steps]
    index = {n: i for i, n in enumerate(names)}
    info = {str(s["name"]): s for s in steps}
    parent_of: dict[str, str | None] = {}
    kids: dict[str | None, list[str]] = {}
    for n in names:
        ups = [d for d in info[n].get("depends_on") or [] if d in index]
        # draw it under the upstream step placed last: it is the one it waits for longest
        par = max(ups, key=lambda d: index[d]) if ups else None
        parent_of[n] = par
        kids.setdefault(par, []).append(n)
    rows: list[tuple[str, str]] = []

    def walk(node: str, prefix: str, last: bool, depth: int) -> None:
        if depth == 0:
            left = node
            child_prefix = ""
        else:
            left = prefix + ("└─▶ " if last else "├─▶ ") + node
            child_prefix = prefix + ("    " if last else "│   ")
        rows.append((left, _describe(info[node], parent_of[node])))
        children = kids.get(node, [])
        for i, k in enumerate(children):
            walk(k, child_prefix, i == len(children) - 1, depth + 1)

    for root in kids.get(None, []):
        walk(root, "", True, 0)
    width = max(len(left) for left, _ in rows)
    lines = [f"{left.ljust(width)}  {right}".rstrip() for left, right in rows]
    return summary(steps) + "\n" + "\n".join(lines) + "\n"


def _describe(step: dict[str, Any], drawn_under: str | None) -> str:
    status = str(step.get("status"))
    parts = [f"{MARKS.get(status, '[' + status + ']')} {status}"]
    if step.get("slurm_id"):
        parts.append(f"slurm {step['slurm_id']}")
    if step.get("reused_from"):
        parts.append(f"reused from {step['reused_from']}")
    if step.get("type") == "sweep":
        got = step.get("trials") or {}
        counts = ", ".join(f"{n} {k}" for k, n in (got.get("counts") or {}).items())
        parts.append(f"sweep: {got.get('total', '?')} trials" + (f" ({counts})" if counts else ""))
        if step.get("best_trial"):
            parts.append(f"best {step['best_trial']}")
    others = [d for d in step.get("depends_on") or [] if d != drawn_under]
    if others:
        kind = "after (any outcome)" if step.get("role") == "finalize" else "also after"
        parts.append(f"{kind}: {', '.join(others)}")
    if step.get("exit_code") not in (None, 0):
        parts.append(f"exit {step['exit_code']}")
    reason = step.get("reason")
    if reason and status in ("Failed", "Canceled") and reason != f"exit code {step.get('exit_code')}":
        parts.append(str(reason))
    return "  ".join(parts)
