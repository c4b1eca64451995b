"""Early-termination policies of sweep jobs (``early_termination``), as pure functions.

The sweep controller calls :meth:`Policy.decide` with every trial's primary-metric
history and cancels the trials it returns.  The rules follow Azure ML's documented
semantics:

*Intervals.*  Each logged value of the primary metric is one interval (Azure: "each
time the training script logs the primary metric counts as one interval").  A
trial's values are ordered by their step (stably, so equal steps keep log order)
and numbered 1, 2, 3, ...; the step numbers themselves are used only for ordering,
which keeps scripts that log every value with step 0 working.

*When.*  A policy applies at interval ``N`` when ``N`` is a multiple of
``evaluation_interval`` and ``N >= delay_evaluation``.  Each trial is judged at the
latest such interval it has reached, so repeated calls give the same answer until
the trial reaches its next evaluation point.

*Against whom.*  At interval ``N`` a trial is compared with the trials (itself
included, finished ones too) that have logged at least ``N`` values, each cut to
its first ``N`` values: a young trial is never compared with older trials' later,
better values.

*Bad values.*  NaN counts as the worst possible value.

Policies (``best(t, N)`` = the best of trial ``t``'s first ``N`` values):

* ``bandit``: stop ``t`` if ``best(t, N)`` is worse than ``B`` = the best ``best(r, N)``
  by more than the slack.  ``slack_factor`` ``s``: maximize stops when
  ``best(t, N) < B / (1 + s)``, minimize when ``best(t, N) > B * (1 + s)`` (for a
  negative ``B`` the same relative distance is applied on the other side, so the
  best trial is never stopped).  ``slack_amount`` ``a``: ``< B - a`` / ``> B + a``.
* ``median_stopping``: stop ``t`` if ``best(t, N)`` is worse than the median, over
  the reference trials, of the mean of their first ``N`` values.
* ``truncation_selection``: rank the reference trials by their value at interval
  ``N``; stop ``t`` if it is among the ``floor(n * truncation_percentage / 100)``
  worst.  Ties are resolved in the trial's favour: a trial is stopped only if at
  least ``n - k`` trials are strictly better.

All comparisons are strict, so equal values never stop a trial.
"""

from __future__ import annotations

import math
import re
import statistics
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from hpcjobs.errors import ValidationError, did_you_mean

Goal = Literal["maximize", "minimize"]
History = Sequence[tuple[int, float]]

POLICY_TYPES: tuple[str, ...] = ("bandit", "median_stopping", "truncation_selection")
_COMMON_KEYS: tuple[str, ...] = ("type", "evaluation_interval", "delay_evaluation")


@dataclass(frozen=True, kw_only=True)
class Policy(ABC):
    """An early-termination policy; see the module docstring for the exact rules."""

    type: ClassVar[str] = ""
    evaluation_interval: int = 1
    delay_evaluation: int = 0

    def evaluation_point(self, n_values: int) -> int | None:
        """The latest interval ``<= n_values`` at which the policy applies, if any."""
        step = max(self.evaluation_interval, 1)
        point = n_values - n_values % step
        if point < 1 or point < self.delay_evaluation:
            return None
        return point

    def decide(
        self,
        metrics: Mapping[str, History],
        goal: Goal,
        *,
        active: Collection[str] | None = None,
    ) -> set[str]:
        """The ids of the trials to stop now.

        *metrics* maps every trial id (running or finished: all of them are
        references) to its ``(step, value)`` history of the primary metric.  Only
        trials in *active* (default: all) can be stopped.
        """
        g = _goal(goal)
        series = {tid: _normalise(hist, g) for tid, hist in metrics.items()}
        candidates = series.keys() if active is None else [t for t in active if t in series]
        # Candidates that reached the same interval share the reference set.
        by_point: dict[int, list[str]] = {}
        for tid in candidates:
            point = self.evaluation_point(len(series[tid]))
            if point is not None:
                by_point.setdefault(point, []).append(tid)
        stop: set[str] = set()
        for point, tids in by_point.items():
            refs = {t: s[:point] for t, s in series.items() if len(s) >= point}
            stop.update(self._stop_at(point, tids, refs, g))
        return stop

    @abstractmethod
    def _stop_at(
        self,
        point: int,
        candidates: list[str],
        refs: dict[str, list[float]],
        goal: Goal,
    ) -> set[str]:
        """Which *candidates* to stop at interval *point* given the cut *refs*."""

    def to_dict(self) -> dict[str, Any]:
        """The policy in its YAML form."""
        out: dict[str, Any] = {"type": self.type}
        out.update(self.__dict__)
        return out


def _better(a: float, b: float, goal: Goal) -> bool:
    return a > b if goal == "maximize" else a < b


def _best(values: Sequence[float], goal: Goal) -> float:
    return max(values) if goal == "maximize" else min(values)


@dataclass(frozen=True, kw_only=True)
class BanditPolicy(Policy):
    """Stop trials whose best value trails the best trial's by more than the slack."""

    type: ClassVar[str] = "bandit"
    slack_factor: float | None = None
    slack_amount: float | None = None

    def threshold(self, best: float, goal: Goal) -> float:
        """The value a trial's best must not be worse than, given the overall best."""
        if self.slack_factor is not None:
            # Azure's B/(1+s) and B*(1+s), written as a distance from B so that a
            # negative B moves the threshold away from B, not past it.
            s = self.slack_factor
            if goal == "maximize":
                return best - abs(best) * s / (1.0 + s)
            return best + abs(best) * s
        a = self.slack_amount or 0.0
        return best - a if goal == "maximize" else best + a

    def _stop_at(
        self,
        point: int,
        candidates: list[str],
        refs: dict[str, list[float]],
        goal: Goal,
    ) -> set[str]:
        best = _best([_best(v, goal) for v in refs.values()], goal)
        limit = self.threshold(best, goal)
        if math.isnan(limit):
            return set()
        return {t for t in candidates if _better(limit, _best(refs[t], goal), goal)}


@dataclass(frozen=True, kw_only=True)
class MedianStoppingPolicy(Policy):
    """Stop trials whose best value is worse than the median of running averages."""

    type: ClassVar[str] = "median_stopping"

    def _stop_at(
        self,
        point: int,
        candidates: list[str],
        refs: dict[str, list[float]],
        goal: Goal,
    ) -> set[str]:
        # A nan average (inf and -inf mixed) has no place in an ordering: leave it out.
        averages = [a for a in (_mean(v) for v in refs.values()) if not math.isnan(a)]
        if not averages:
            return set()
        median = statistics.median(averages)
        return {t for t in candidates if _better(median, _best(refs[t], goal), goal)}


def _mean(values: Sequence[float]) -> float:
    if all(map(math.isfinite, values)):
        return math.fsum(values) / len(values)
    # fsum raises on inf - inf (a NaN mapped to -inf next to a +inf); sum gives nan.
    return sum(values) / len(values)


@dataclass(frozen=True, kw_only=True)
class TruncationSelectionPolicy(Policy):
    """Stop the worst ``truncation_percentage`` % of trials at each evaluation."""

    type: ClassVar[str] = "truncation_selection"
    truncation_percentage: int

    def _stop_at(
        self,
        point: int,
        candidates: list[str],
        refs: dict[str, list[float]],
        goal: Goal,
    ) -> set[str]:
        n = len(refs)
        k = n * self.truncation_percentage // 100
        if k == 0:
            return set()
        current = {t: v[-1] for t, v in refs.items()}
        stop = set()
        for t in candidates:
            better = sum(1 for v in current.values() if _better(v, current[t], goal))
            if better >= n - k:
                stop.add(t)
        return stop


_CLASSES: dict[str, type[Policy]] = {
    "bandit": BanditPolicy,
    "median_stopping": MedianStoppingPolicy,
    "truncation_selection": TruncationSelectionPolicy,
}
_EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "bandit": ("slack_factor", "slack_amount"),
    "median_stopping": (),
    "truncation_selection": ("truncation_percentage",),
}


def _goal(goal: str) -> Goal:
    g = goal.lower()
    if g == "maximize":
        return "maximize"
    if g == "minimize":
        return "minimize"
    raise ValidationError(
        f"unknown goal {goal!r}",
        field="objective.goal",
        hint="goal is maximize or minimize",
    )


def _normalise(history: History, goal: Goal) -> list[float]:
    worst = -math.inf if goal == "maximize" else math.inf
    ordered = sorted(history, key=lambda sv: sv[0])
    out = []
    for _, value in ordered:
        v = float(value)
        out.append(worst if math.isnan(v) else v)
    return out


def _snake(name: str) -> str:
    # Azure compares enum values after camel->snake and lower-casing ("MedianStopping").
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def parse_policy(data: Mapping[str, Any] | None, *, field: str = "early_termination") -> Policy | None:
    """Validate an ``early_termination`` mapping; None (no policy) gives None.

    Raises :class:`ValidationError` naming the field at fault.
    """
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ValidationError(
            "must be a mapping with a 'type' key",
            field=field,
            hint="e.g. early_termination: {type: bandit, slack_factor: 0.1, evaluation_interval: 1, delay_evaluation: 5}",
        )
    if "type" not in data:
        raise ValidationError(
            "missing required key 'type'",
            field=f"{field}.type",
            hint="type is one of: " + ", ".join(POLICY_TYPES),
        )
    raw = data["type"]
    kind = _snake(raw) if isinstance(raw, str) else None
    if kind not in _CLASSES:
        hint = "type is one of: " + ", ".join(POLICY_TYPES)
        suggestion = did_you_mean(kind, POLICY_TYPES) if kind else None
        if suggestion:
            hint = f"{suggestion}; {hint}"
        raise ValidationError(
            f"unknown early-termination policy {raw!r}",
            field=f"{field}.type",
            hint=hint,
        )
    expected = (*_COMMON_KEYS, *_EXTRA_KEYS[kind])
    for key in data:
        if key not in expected:
            parts = []
            suggestion = did_you_mean(str(key), expected)
            if suggestion:
                parts.append(suggestion)
            parts.append(f"a {kind} policy takes: " + ", ".join(expected))
            raise ValidationError(
                f"unknown key {key!r} for a {kind} policy",
                field=f"{field}.{key}",
                hint="; ".join(parts),
            )
    common = {
        # 0 is the SDK's constructor default and `az ml job show` prints it; it means
        # "every interval" here.
        "evaluation_interval": max(_int(data.get("evaluation_interval", 1), f"{field}.evaluation_interval"), 1),
        "delay_evaluation": _int(data.get("delay_evaluation", 0), f"{field}.delay_evaluation"),
    }
    if kind == "bandit":
        factor = _opt_float(data.get("slack_factor"), f"{field}.slack_factor")
        amount = _opt_float(data.get("slack_amount"), f"{field}.slack_amount")
        # The SDK writes slack_amount: 0 next to a slack_factor, so a zero beside a
        # non-zero other one means "not set".
        if factor is not None and amount is not None:
            if amount == 0:
                amount = None
            elif factor == 0:
                factor = None
            else:
                raise ValidationError(
                    "give slack_factor or slack_amount, not both",
                    field=f"{field}.slack_amount",
                    hint="slack_factor is a ratio of the best value, slack_amount an absolute distance from it",
                )
        if factor is None and amount is None:
            raise ValidationError(
                "a bandit policy needs slack_factor or slack_amount",
                field=f"{field}.slack_factor",
                hint="e.g. slack_factor: 0.1 (stop trials more than ~10% worse than the best)",
            )
        return BanditPolicy(slack_factor=factor, slack_amount=amount, **common)
    if kind == "truncation_selection":
        if "truncation_percentage" not in data:
            raise ValidationError(
                "missing required key 'truncation_percentage'",
                field=f"{field}.truncation_percentage",
                hint="e.g. truncation_percentage: 20 (cancel the worst 20% at each evaluation)",
            )
        pct = _int(data["truncation_percentage"], f"{field}.truncation_percentage")
        if not 1 <= pct <= 99:
            raise ValidationError(
                f"must be between 1 and 99, got {pct}",
                field=f"{field}.truncation_percentage",
            )
        return TruncationSelectionPolicy(truncation_percentage=pct, **common)
    return MedianStoppingPolicy(**common)


def _int(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"must be an integer, got {value!r}", field=field)
    if value < 0:
        raise ValidationError(f"must not be negative, got {value}", field=field)
    return value


def _opt_float(value: object, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"must be a number, got {value!r}", field=field)
    out = float(value)
    if not math.isfinite(out) or out < 0:
        raise ValidationError(f"must be a non-negative number, got {value!r}", field=field)
    return out
