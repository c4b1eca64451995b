"""Bringing outputs back: one tar stream from the cluster, extracted safely.

Layout (as ``az ml job download``)::

    DOWNLOAD_PATH/artifacts/outputs/...      the job's ./outputs
    DOWNLOAD_PATH/artifacts/logs/...         the job's ./logs
    DOWNLOAD_PATH/artifacts/user_logs/...    stdout/stderr (std_log.txt)
    DOWNLOAD_PATH/named-outputs/NAME/...     named outputs (--all or --output-name NAME)

Sweeps download every trial under ``trials/INDEX/`` (its own log as
``artifacts/user_logs/std_log.txt``) and ``trials.json``; pipelines every step under
``steps/STEP/``.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcjobs.errors import NotFoundError, known_list_hint

if TYPE_CHECKING:
    from hpcjobs.backends.base import Backend
    from hpcjobs.store import JobRecord, Store


def _sed_escape(path: str) -> str:
    return re.sub(r"([.\[\]*^$\\+?(){}|,])", r"\\\1", path)


def tar_members(rec: JobRecord, prefix: str = "", *, all_outputs: bool, output_name: str | None) -> list[tuple[str, str]]:
    """(path on the cluster, path in the download) pairs for one job, trial or step."""
    assert rec.job_dir
    base = rec.extra.get("task_dir") or rec.job_dir
    pairs: list[tuple[str, str]] = []
    outputs: dict[str, str] = rec.extra.get("outputs", {})
    if output_name is not None:
        if output_name not in outputs:
            raise NotFoundError(
                f"job '{rec.name}' has no output named '{output_name}'",
                hint=known_list_hint(output_name, outputs, "its outputs") if outputs else "it has no named outputs",
            )
        return [(outputs[output_name], f"{prefix}named-outputs/{output_name}")]
    pairs.append((f"{base}/wd/outputs", f"{prefix}artifacts/outputs"))
    pairs.append((f"{base}/wd/logs", f"{prefix}artifacts/logs"))
    if "trial_index" in rec.extra:
        # a trial's log is one file in its sweep's user_logs/, beside every other trial's
        trial_log = f"{rec.job_dir}/user_logs/std_log_{int(rec.extra['trial_index'])}.txt"
        pairs.append((trial_log, f"{prefix}artifacts/user_logs/std_log.txt"))
    else:
        pairs.append((f"{rec.job_dir}/user_logs", f"{prefix}artifacts/user_logs"))
    if all_outputs:
        for oname, opath in outputs.items():
            pairs.append((opath, f"{prefix}named-outputs/{oname}"))
    return pairs


def tar_command(pairs: list[tuple[str, str]]) -> list[str]:
    """One ``tar`` invocation that streams every pair, renamed on the way (GNU tar)."""
    argv = ["tar", "-czf", "-", "--ignore-failed-read", "--warning=no-file-changed"]
    for src, dst in pairs:
        stored = src.lstrip("/")
        # flag S: leave symlink targets alone (they are checked on extraction instead)
        argv.append(f"--transform=s,^{_sed_escape(stored)},{dst},S")
    argv.extend(src for src, _ in pairs)
    return argv


def _extract_stream(get_tar: Any, argv: list[str], dest: Path, where: str) -> Any:
    """Run *argv* through ``transport.get_tar`` and extract its stdout safely as it arrives."""
    import tarfile
    import zlib

    from hpcjobs.errors import TransientError
    from hpcjobs.tarsafe import safe_extract

    try:
        with get_tar(argv) as stream:
            return safe_extract(stream, dest)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        # files already in place are complete (written under a temporary name, then renamed)
        raise TransientError(f"the download from {where} was cut short: {exc}", hint="run the download again") from None


def download(
    backend: Backend,
    store: Store,
    rec: JobRecord,
    *,
    all_outputs: bool,
    output_name: str | None,
    download_path: Path,
) -> dict[str, Any]:
    """Fetch the job's outputs into *download_path*; return a report."""
    from hpcjobs.tarsafe import safe_extract

    pairs: list[tuple[str, str]] = []
    if rec.type in ("sweep", "pipeline"):
        kids = store.children(rec.name)
        for c in kids:
            label = (
                f"trials/{c.extra.get('trial_index', c.name)}/"
                if rec.type == "sweep"
                else f"steps/{c.extra.get('step', c.name)}/"
            )
            try:
                pairs.extend(tar_members(c, label, all_outputs=all_outputs, output_name=output_name))
            except NotFoundError:
                if output_name is None:
                    raise
        if output_name is not None and not pairs:
            raise NotFoundError(f"no step or trial of '{rec.name}' has an output named '{output_name}'")
        if rec.type == "sweep":
            pairs.append((f"{rec.job_dir}/trials.json", "trials.json"))
    else:
        pairs = tar_members(rec, all_outputs=all_outputs, output_name=output_name)
    download_path.mkdir(parents=True, exist_ok=True)
    # missing members (a job that wrote no ./logs) are skipped by --ignore-failed-read
    get_tar = getattr(backend.transport, "get_tar", None)
    if get_tar is not None:
        # SSH: extract while the stream arrives (one channel, constant memory)
        report = _extract_stream(get_tar, tar_command(pairs), download_path, backend.transport.name)
    else:
        res = backend.transport.run(tar_command(pairs))
        report = safe_extract(io.BytesIO(res.stdout), download_path)
    return {
        "name": rec.name,
        "download_path": str(download_path.resolve()),
        "written": report.written,
        "skipped_same": report.skipped_same,
        "refused": report.warnings,
        "members": [dst for _, dst in pairs],
    }
