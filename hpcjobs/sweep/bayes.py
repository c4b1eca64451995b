"""Bayesian sampling for sweeps: a thin wrapper over Optuna's ask/tell with TPE.

The sweep controller runs as short, separate invocations, so the sampler's whole
state is a small JSON document (:meth:`BayesianSampler.state_dict`): the trials
asked so far, with the parameters Optuna sampled and their outcome.  Each
:meth:`BayesianSampler.ask` rebuilds an in-memory Optuna study from the finished
trials and seeds TPE from ``(seed, trial number)``, so a controller that saves and
reloads between calls asks exactly what one that never stopped would.

Distributions map as Azure ML allows for bayesian sampling: ``choice``, ``uniform``,
``quniform``, ``loguniform``, ``qloguniform`` and ``randint``.  ``quniform`` is
searched over the integer ``k`` of ``k * q`` and ``qloguniform`` over its unquantized
value, which is quantized on the way out; the state keeps Optuna's own values.

Optuna is imported lazily (it takes a good fraction of a second) and is optional:
without it, creating a sampler raises a :class:`UserError` saying how to install it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

from hpcjobs.errors import UserError, ValidationError
from hpcjobs.sweep.sampling import (
    Choice,
    Distribution,
    QUniform,
    RandInt,
    SpaceLike,
    Uniform,
    _ensure_parsed,
    quantize,
)

if TYPE_CHECKING:
    from optuna.distributions import (  # type: ignore[import-not-found,unused-ignore]
        BaseDistribution,
    )

Goal = Literal["maximize", "minimize"]
TrialState = Literal["pending", "complete", "failed", "pruned"]

STATE_FORMAT = "hpcjobs-bayes/1"
SUPPORTED = ("choice", "uniform", "quniform", "loguniform", "qloguniform", "randint")


def _optuna() -> ModuleType:
    try:
        import optuna
    except ImportError:
        raise UserError(
            "bayesian sampling needs the optuna package, which is not installed",
            hint="pip install optuna  (or: pip install 'hpcjobs[bayes]')",
        ) from None
    # Optuna logs every finished trial at INFO; the controller reports on its own.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass
class _Param:
    """How one hyperparameter is searched by Optuna and turned back into a value."""

    dist: BaseDistribution
    to_value: Callable[[Any], Any]


def _identity(x: Any) -> Any:
    return x


def _map_distribution(name: str, d: Distribution, optuna: ModuleType) -> _Param:
    od = optuna.distributions
    field = f"search_space.{name}"
    if isinstance(d, Choice):
        if d.nested:
            raise ValidationError(
                "bayesian sampling does not support nested choices (dict values)",
                field=f"{field}.values",
                hint="flatten the space, or use sampling_algorithm: random",
            )
        return _Param(od.CategoricalDistribution(list(d.values)), _identity)
    if isinstance(d, RandInt):
        return _Param(od.IntDistribution(0, d.upper - 1), int)
    if d.type == "uniform" and isinstance(d, Uniform):
        return _Param(od.FloatDistribution(float(d.min_value), float(d.max_value)), float)
    if d.type == "loguniform" and isinstance(d, Uniform):
        lo, hi = math.exp(d.min_value), math.exp(d.max_value)
        return _Param(od.FloatDistribution(lo, hi, log=True), float)
    if d.type == "quniform" and isinstance(d, QUniform):
        q = d.q
        # Search k in k*q: exact multiples of q, as round(uniform/q)*q gives, and no
        # float-step divisibility trouble in Optuna.
        k_lo, k_hi = round(d.min_value / q), round(d.max_value / q)

        def from_k(k: Any, q: float = q) -> Any:
            import numpy as np

            return quantize(np.array([float(k) * q]), q)[0]

        return _Param(od.IntDistribution(k_lo, k_hi), from_k)
    if d.type == "qloguniform" and isinstance(d, QUniform):
        q = d.q
        lo, hi = math.exp(d.min_value), math.exp(d.max_value)

        def from_x(x: Any, q: float = q) -> Any:
            import numpy as np

            return quantize(np.array([float(x)]), q)[0]

        return _Param(od.FloatDistribution(lo, hi, log=True), from_x)
    raise ValidationError(
        f"bayesian sampling does not support {d.type} distributions",
        field=f"{field}.type",
        hint="bayesian supports " + ", ".join(SUPPORTED) + " (as Azure ML does); "
        "use sampling_algorithm: random for the normal family",
    )


@dataclass
class _Record:
    number: int
    params: dict[str, Any]  # Optuna's values, before quantization
    state: TrialState = "pending"
    value: float | None = None


class BayesianSampler:
    """Ask for trials' parameters and tell their results, persisting between runs."""

    def __init__(self, space: SpaceLike, goal: str, seed: int | None = None) -> None:
        """Prepare a sampler for *space* (parsed or raw) optimizing towards *goal*."""
        self._optuna = _optuna()
        parsed = _ensure_parsed(space)
        g = goal.lower()
        if g not in ("maximize", "minimize"):
            raise ValidationError(
                f"unknown goal {goal!r}",
                field="objective.goal",
                hint="goal is maximize or minimize",
            )
        self.goal: Goal = "maximize" if g == "maximize" else "minimize"
        self.seed = seed
        self._params = {k: _map_distribution(k, d, self._optuna) for k, d in parsed.items()}
        self._records: dict[int, _Record] = {}
        self._next = 0

    # -- ask / tell -------------------------------------------------------------------

    def _study(self) -> Any:
        optuna = self._optuna
        study = optuna.create_study(direction=self.goal)
        dists = {k: p.dist for k, p in self._params.items()}
        states = {
            "complete": optuna.trial.TrialState.COMPLETE,
            "failed": optuna.trial.TrialState.FAIL,
            "pruned": optuna.trial.TrialState.PRUNED,
        }
        finished = sorted(self._records.values(), key=lambda r: r.number)
        study.add_trials(
            [
                optuna.trial.create_trial(
                    state=states[r.state],
                    value=r.value if r.state == "complete" else None,
                    params=r.params,
                    distributions=dists,
                )
                for r in finished
                if r.state != "pending"
            ]
        )
        return study

    def ask(self, n: int = 1) -> list[tuple[int, dict[str, Any]]]:
        """Sample *n* new trials: ``(trial number, parameters)`` pairs.

        Numbers start at 0 and never repeat; parameters are plain Python values.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0:
            return []
        optuna = self._optuna
        study = self._study()
        dists = {k: p.dist for k, p in self._params.items()}
        out: list[tuple[int, dict[str, Any]]] = []
        for _ in range(n):
            number = self._next
            # Seeding per trial number makes a reloaded sampler ask the same as one
            # kept in memory (an Optuna sampler's RNG state is not persisted).
            sub_seed = None if self.seed is None else (self.seed * 1_000_003 + number) % 2**32
            study.sampler = optuna.samplers.TPESampler(seed=sub_seed)
            trial = study.ask(fixed_distributions=dists)
            raw = dict(trial.params)
            self._records[number] = _Record(number, raw)
            self._next += 1
            values = {k: self._params[k].to_value(raw[k]) for k in self._params}
            out.append((number, values))
        return out

    def tell(self, trial_number: int, value: float | None, failed: bool = False) -> None:
        """Record a trial's outcome.

        ``failed=True`` marks it failed; ``value=None`` (not failed) marks it stopped
        without a result (pruned); a non-finite value counts as failed.  Telling the
        same outcome twice is harmless; a different outcome for a finished trial is a
        ValueError.
        """
        rec = self._records.get(trial_number)
        if rec is None:
            raise ValueError(f"trial {trial_number} was never asked for")
        state: TrialState
        if failed or (value is not None and not math.isfinite(float(value))):
            state, val = "failed", None
        elif value is None:
            state, val = "pruned", None
        else:
            state, val = "complete", float(value)
        if rec.state != "pending":
            if (rec.state, rec.value) == (state, val):
                return
            raise ValueError(
                f"trial {trial_number} is already {rec.state}" + (f" with value {rec.value}" if rec.value is not None else "")
            )
        rec.state, rec.value = state, val

    def pending(self) -> list[int]:
        """Numbers of trials asked for but not yet told."""
        return sorted(n for n, r in self._records.items() if r.state == "pending")

    def best(self) -> tuple[int, dict[str, Any], float] | None:
        """The best completed trial as ``(number, parameters, value)``, if any."""
        done = [r for r in self._records.values() if r.state == "complete"]
        if not done:
            return None
        sign = 1.0 if self.goal == "maximize" else -1.0
        # Ties go to the earliest trial.
        rec = max(done, key=lambda r: (sign * float(r.value or 0.0), -r.number))
        values = {k: self._params[k].to_value(rec.params[k]) for k in self._params}
        return rec.number, values, float(rec.value or 0.0)

    # -- persistence ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of everything asked and told so far."""
        return {
            "format": STATE_FORMAT,
            "goal": self.goal,
            "seed": self.seed,
            "next_number": self._next,
            "trials": [
                {
                    "number": r.number,
                    "params": r.params,
                    "state": r.state,
                    "value": r.value,
                }
                for r in sorted(self._records.values(), key=lambda r: r.number)
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], space: SpaceLike) -> BayesianSampler:
        """Rebuild a sampler saved by :meth:`state_dict` for the same *space*."""
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a bayesian sampler state (format {state.get('format')!r})")
        self = cls(space, state["goal"], state.get("seed"))
        names = set(self._params)
        for t in state.get("trials", []):
            params = dict(t["params"])
            if set(params) != names:
                raise ValidationError(
                    "the search space changed since this sweep started "
                    f"(trial {t['number']} has {sorted(params)}, the space has "
                    f"{sorted(names)})",
                    field="search_space",
                    hint="start a new sweep for a different search space",
                )
            for k, v in params.items():
                if not self._contains(k, v):
                    raise ValidationError(
                        f"the search space changed since this sweep started (trial {t['number']}: {k}={v!r} is outside it)",
                        field=f"search_space.{k}",
                        hint="start a new sweep for a different search space",
                    )
            st = t.get("state", "pending")
            if st not in ("pending", "complete", "failed", "pruned"):
                raise ValueError(f"unknown trial state {st!r} in bayesian sampler state")
            self._records[int(t["number"])] = _Record(int(t["number"]), params, st, t.get("value"))
        self._next = max(int(state.get("next_number", 0)), max(self._records, default=-1) + 1)
        return self

    def _contains(self, name: str, value: Any) -> bool:
        # create_trial validates each value against its distribution (public API).
        optuna = self._optuna
        try:
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED,
                params={name: value},
                distributions={name: self._params[name].dist},
            )
        except (ValueError, TypeError):
            return False
        return True

    def save(self, path: str | Path) -> None:
        """Write :meth:`state_dict` to *path* as JSON, atomically (write, then rename)."""
        target = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.state_dict(), fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path, space: SpaceLike) -> BayesianSampler:
        """Read a sampler written by :meth:`save`."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_state(json.load(fh), space)
