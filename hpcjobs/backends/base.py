"""The backend interface."""

from __future__ import annotations

import abc
import getpass
import io
import os
import tarfile
from typing import Any

from hpcjobs.plan import Plan, Target
from hpcjobs.site import Site
from hpcjobs.store import JobRecord
from hpcjobs.transport.base import Transport


class Backend(abc.ABC):
    """Carries out plans on a site and reports on the jobs it started."""

    def __init__(self, site: Site, transport: Transport) -> None:
        self.site = site
        self.transport = transport

    def target(self, *, offline: bool = False) -> Target:
        """What the planner needs about the target machine (home, user)."""
        if offline and self.site.ssh is not None:
            user = self.site.ssh.user or getpass.getuser()
            return Target(home=f"/home/{user}", user=user)
        if self.site.ssh is None:
            return Target(home=os.path.expanduser("~"), user=getpass.getuser())
        return Target(home=self.transport.home, user=self.remote_user())

    def remote_user(self) -> str:
        return getpass.getuser()

    @abc.abstractmethod
    def submit(self, plan: Plan, records: list[JobRecord]) -> dict[str, list[str]]:
        """Submit every script of *plan*; return script key -> scheduler ids."""

    @abc.abstractmethod
    def refresh(self, records: list[JobRecord]) -> dict[str, dict[str, Any]]:
        """Current state of *records* (all of one site): name -> changed fields."""

    @abc.abstractmethod
    def cancel(self, records: list[JobRecord]) -> None:
        """Cancel the jobs behind *records*."""

    def log_path(self, rec: JobRecord, task: int | None = None) -> str:
        """Where the job's stdout/stderr is on the target."""
        assert rec.job_dir
        if task is not None:
            return f"{rec.job_dir}/user_logs/std_log_{task}.txt"
        return f"{rec.job_dir}/user_logs/std_log.txt"

    def read_log(self, rec: JobRecord, offset: int = 0, task: int | None = None) -> bytes:
        """Bytes of the job's log from *offset* (b"" if nothing yet)."""
        try:
            return self.transport.read_file(self.log_path(rec, task), offset=offset)
        except FileNotFoundError:
            return b""

    def fetch_tar(self, base: str, members: list[str]) -> bytes:
        """One tar stream of *members* (relative to *base*) from the target."""
        res = self.transport.run(
            [
                "bash",
                "-c",
                'cd "$1" && shift && tar -czf - --ignore-failed-read "$@" 2>/dev/null || true',
                "hpcjobs-tar",
                base,
                *members,
            ]
        )
        return res.stdout


def files_tar(files: dict[str, bytes], root: str, mode_exec: set[str] | None = None) -> bytes:
    """A gzip'd tar of *files* (absolute paths under *root*) with paths relative to root."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, data in files.items():
            rel = os.path.relpath(path, root)
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o755 if mode_exec and path in mode_exec else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
