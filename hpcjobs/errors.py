"""One error hierarchy for hpcjobs.

Every error a user can see carries a message, an optional hint and, where known, a
location (``file:line:col``) and the dotted path of the field at fault.  The CLI maps
:class:`UserError` (and subclasses) to exit code 2 and everything else to exit code 1,
and never prints a traceback for an :class:`HpcjobsError`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where in a file something is (1-based line and column)."""

    file: str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        out = self.file
        if self.line is not None:
            out += f":{self.line}"
            if self.col is not None:
                out += f":{self.col}"
        return out


class HpcjobsError(Exception):
    """Base class of every error hpcjobs raises on purpose."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        location: Location | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.location = location
        self.field = field

    def render(self) -> str:
        """Return the one-line (plus hint) form shown to users."""
        parts: list[str] = []
        if self.location is not None:
            parts.append(f"{self.location}: ")
        if self.field:
            parts.append(f"{self.field}: ")
        parts.append(self.message)
        out = "".join(parts)
        if self.hint:
            out += f"\n  hint: {self.hint}"
        return out

    def __str__(self) -> str:
        return self.render()


class UserError(HpcjobsError):
    """Bad input from the user: a job file, a site config, a CLI argument.  Exit 2."""

    exit_code = 2


class ValidationError(UserError):
    """A job file or site config does not match its schema."""


class NotFoundError(UserError):
    """A named thing (job, site, compute, asset) does not exist."""


class SchedulerRejected(UserError):
    """Slurm refused the job for a permanent reason (bad partition, account, limit).

    Never retried; the message is Slurm's own.
    """


class RuntimeFailure(HpcjobsError):
    """Something outside the user's input failed (network, scheduler, filesystem).  Exit 1."""


class TransientError(RuntimeFailure):
    """A failure that may go away if retried (slurmctld busy, socket timed out)."""


class SubmissionUncertain(TransientError):
    """The connection was lost while sbatch may have been running, and retrying could not tell.

    The job store keeps such a job (state Unknown) instead of forgetting it: a later
    refresh looks its token up in Slurm and adopts it if Slurm has it.
    """

    def __init__(self, message: str, *, known: dict[str, str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or "hpcjobs job show NAME looks the job up by its token once the cluster answers")
        #: script key -> Slurm id of the scripts that are known to be submitted
        self.known = dict(known or {})


class HostKeyError(UserError):
    """An SSH host key is unknown, changed or revoked.  Never auto-accepted."""


def did_you_mean(word: str, known: Iterable[str]) -> str | None:
    """Return a ``did you mean 'x'?`` suggestion for *word* among *known*, or None."""
    matches = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    if matches:
        return f"did you mean '{matches[0]}'?"
    return None


def known_list_hint(word: str, known: Iterable[str], what: str = "known") -> str:
    """A hint naming the closest match (if any) and listing everything that is known."""
    known_sorted = sorted(set(known))
    parts = []
    suggestion = did_you_mean(word, known_sorted)
    if suggestion:
        parts.append(suggestion)
    if known_sorted:
        parts.append(f"{what}: " + ", ".join(known_sorted))
    else:
        parts.append(f"{what}: none defined")
    return "; ".join(parts)
