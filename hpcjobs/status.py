"""Job status names (Azure ML's) and the one explicit Slurm state -> status table."""

from __future__ import annotations

from enum import Enum


class JobStatus(str, Enum):
    """The states a user sees; the same names as Azure ML jobs."""

    NOT_STARTED = "NotStarted"
    QUEUED = "Queued"
    STARTING = "Starting"
    RUNNING = "Running"
    FINALIZING = "Finalizing"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"
    NOT_RESPONDING = "NotResponding"
    PAUSED = "Paused"
    UNKNOWN = "Unknown"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL

    def __str__(self) -> str:
        return self.value


TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED})
