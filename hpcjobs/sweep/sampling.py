"""Search spaces of sweep jobs and the grid / random / Sobol samplers over them.

Works on plain data (the YAML already parsed into dicts), so it does not depend on
the job models.  Semantics follow Azure ML CLI v2 (``search_space`` distributions,
``sampling_algorithm`` ``grid`` and ``random`` with ``rule: random|sobol``):

* ``randint(upper)`` gives integers in ``[0, upper)``;
* ``loguniform(min_value, max_value)`` is ``exp(uniform(min_value, max_value))``: the
  bounds are natural-log exponents, not the range of the values;
* ``q``-variants are ``round(x / q) * q``; they give ints when ``q`` is an int;
* ``lognormal`` is ``exp(normal(mu, sigma))``;
* a ``choice`` may offer dicts whose values are distributions (a nested, conditional
  space); when such a dict is chosen, its resolved keys are merged into the trial's
  parameters and the choice's own key is not set.

Every sampled value is a plain Python ``int``, ``float``, ``str`` or ``bool`` (never a
numpy scalar) so that trials serialise to JSON/YAML as they are.

numpy (and scipy, for Sobol) are imported only inside the samplers: parsing and
validating a search space must not slow down the CLI's start.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeAlias

from hpcjobs.errors import ValidationError, did_you_mean
from hpcjobs.expr import format_value as format_value  # defined there: command jobs use it without the samplers

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray: TypeAlias = npt.NDArray[np.float64]

Scalar: TypeAlias = int | float | str | bool
#: A choice option: a scalar, or a nested space (name -> distribution or constant).
Option: TypeAlias = "Scalar | dict[str, Distribution | Scalar]"
#: A search space as the samplers accept it: parsed (name -> Distribution, from
#: :func:`parse_search_space`) or the raw YAML mapping, which is parsed first.
SpaceLike: TypeAlias = Mapping[str, Any]

Rule = Literal["random", "sobol"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# exp() of anything larger overflows a double; Azure's loguniform bounds are exponents.
_MAX_EXP = 709.0


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Distribution:
    """One hyperparameter's distribution; subclasses hold its parameters."""

    type: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """The distribution in its YAML form (``{"type": ..., <params>}``)."""
        out: dict[str, Any] = {"type": self.type}
        out.update(self.__dict__)
        return out


@dataclass(frozen=True)
class Choice(Distribution):
    """``choice(values)``: one of a list; dict options are nested spaces."""

    type: ClassVar[str] = "choice"
    values: tuple[Option, ...]

    @property
    def nested(self) -> bool:
        """True if any option is a dict (a nested, conditional space)."""
        return any(isinstance(v, dict) for v in self.values)

    def to_dict(self) -> dict[str, Any]:
        """The distribution in its YAML form, nested options included."""

        def opt(v: Option) -> Any:
            if isinstance(v, dict):
                return {k: d.to_dict() if isinstance(d, Distribution) else d for k, d in v.items()}
            return v

        return {"type": self.type, "values": [opt(v) for v in self.values]}


@dataclass(frozen=True)
class RandInt(Distribution):
    """``randint(upper)``: an int in ``[0, upper)``."""

    type: ClassVar[str] = "randint"
    upper: int


@dataclass(frozen=True)
class _Continuous(Distribution):
    """Shared sampling for the uniform and normal families.

    A value is drawn from the base (uniform or normal), then optionally ``exp``-ed
    (log variants), then optionally quantized with ``q``.
    """

    base: ClassVar[Literal["uniform", "normal"]] = "uniform"
    log: ClassVar[bool] = False

    @property
    def quantum(self) -> int | float | None:
        """The ``q`` of a q-variant, else None."""
        return None

    def _base_params(self) -> tuple[float, float]:
        raise NotImplementedError

    def _finish(self, x: FloatArray) -> list[Any]:
        import numpy as np

        if self.log:
            x = np.exp(x)
        q = self.quantum
        if q is None:
            return [float(v) for v in x.tolist()]
        return quantize(x, q)

    def from_random(self, rng: np.random.Generator, n: int) -> list[Any]:
        """*n* independent samples drawn with *rng*."""
        a, b = self._base_params()
        if self.base == "uniform":
            x = rng.uniform(a, b, n)
        else:
            x = rng.normal(a, b, n)
        return self._finish(x)

    def from_unit(self, u: FloatArray) -> list[Any]:
        """Map points of ``[0, 1)`` through the inverse CDF (for quasi-random rules)."""
        import numpy as np

        a, b = self._base_params()
        if self.base == "uniform":
            x = a + (b - a) * u
        else:
            # ndtri is the standard normal's inverse CDF (scipy.stats.norm.ppf).
            from scipy.special import ndtri  # type: ignore[import-untyped,unused-ignore]

            # A scrambled Sobol point can be exactly 0, whose ppf is -inf.
            tiny = np.finfo(np.float64).tiny
            x = a + b * ndtri(np.clip(u, tiny, 1.0 - 2.0**-53))
        return self._finish(x)


@dataclass(frozen=True)
class Uniform(_Continuous):
    """``uniform(min_value, max_value)``: a float in the closed range."""

    type: ClassVar[str] = "uniform"
    min_value: float
    max_value: float

    def _base_params(self) -> tuple[float, float]:
        return float(self.min_value), float(self.max_value)


@dataclass(frozen=True)
class LogUniform(Uniform):
    """``loguniform(min_value, max_value)``: ``exp(uniform(min_value, max_value))``."""

    type: ClassVar[str] = "loguniform"
    log: ClassVar[bool] = True


@dataclass(frozen=True)
class QUniform(Uniform):
    """``quniform(min_value, max_value, q)``: ``round(uniform / q) * q``."""

    type: ClassVar[str] = "quniform"
    q: int | float

    @property
    def quantum(self) -> int | float | None:
        """The quantization step ``q``."""
        return self.q


@dataclass(frozen=True)
class QLogUniform(QUniform):
    """``qloguniform(min_value, max_value, q)``: ``round(exp(uniform) / q) * q``."""

    type: ClassVar[str] = "qloguniform"
    log: ClassVar[bool] = True


@dataclass(frozen=True)
class Normal(_Continuous):
    """``normal(mu, sigma)``."""

    type: ClassVar[str] = "normal"
    base: ClassVar[Literal["uniform", "normal"]] = "normal"
    mu: float
    sigma: float

    def _base_params(self) -> tuple[float, float]:
        return float(self.mu), float(self.sigma)


@dataclass(frozen=True)
class LogNormal(Normal):
    """``lognormal(mu, sigma)``: ``exp(normal(mu, sigma))``."""

    type: ClassVar[str] = "lognormal"
    log: ClassVar[bool] = True


@dataclass(frozen=True)
class QNormal(Normal):
    """``qnormal(mu, sigma, q)``: ``round(normal / q) * q``."""

    type: ClassVar[str] = "qnormal"
    q: int | float

    @property
    def quantum(self) -> int | float | None:
        """The quantization step ``q``."""
        return self.q


@dataclass(frozen=True)
class QLogNormal(QNormal):
    """``qlognormal(mu, sigma, q)``: ``round(exp(normal) / q) * q``."""

    type: ClassVar[str] = "qlognormal"
    log: ClassVar[bool] = True


_CLASSES: dict[str, type[Distribution]] = {
    c.type: c
    for c in (
        Choice,
        RandInt,
        Uniform,
        LogUniform,
        QUniform,
        QLogUniform,
        Normal,
        LogNormal,
        QNormal,
        QLogNormal,
    )
}
# Parameter keys of each type, in the order they are documented.
_PARAMS: dict[str, tuple[str, ...]] = {
    "choice": ("values",),
    "randint": ("upper",),
    "uniform": ("min_value", "max_value"),
    "loguniform": ("min_value", "max_value"),
    "quniform": ("min_value", "max_value", "q"),
    "qloguniform": ("min_value", "max_value", "q"),
    "normal": ("mu", "sigma"),
    "lognormal": ("mu", "sigma"),
    "qnormal": ("mu", "sigma", "q"),
    "qlognormal": ("mu", "sigma", "q"),
}
DISTRIBUTION_TYPES: tuple[str, ...] = tuple(_PARAMS)


def quantize(x: FloatArray, q: float) -> list[Any]:
    """``round(x / q) * q`` as plain Python numbers: ints if *q* is an int.

    For a float *q* the product is rounded to *q*'s own decimals, so that ``q: 0.1``
    gives ``0.3`` rather than ``0.30000000000000004`` in a command line.
    """
    import numpy as np

    k = np.round(x / q)
    if isinstance(q, int):
        return [int(v) * q for v in k.tolist()]
    exponent = Decimal(repr(float(q))).as_tuple().exponent
    digits = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return [float(v) for v in np.round(k * q, digits).tolist()]


# --------------------------------------------------------------------------- parsing


def parse_search_space(space: Mapping[str, Any], *, field: str = "search_space") -> dict[str, Distribution]:
    """Validate a ``search_space`` mapping and return its distributions, in key order.

    Raises :class:`ValidationError` naming the dotted field at fault (for example
    ``search_space.lr.max_value``) with a hint listing the expected keys.
    """
    if not isinstance(space, Mapping):
        raise ValidationError(
            "must be a mapping of hyperparameter names to distributions",
            field=field,
            hint="e.g. lr: {type: loguniform, min_value: -9, max_value: -2}",
        )
    if not space:
        raise ValidationError(
            "is empty; a sweep needs at least one hyperparameter",
            field=field,
            hint="e.g. lr: {type: choice, values: [0.01, 0.1]}",
        )
    out: dict[str, Distribution] = {}
    for name, data in space.items():
        _check_name(name, field)
        out[str(name)] = _parse_distribution(data, f"{field}.{name}")
    _check_disjoint(out, field)
    return out


def _check_name(name: object, field: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(
            f"hyperparameter name {name!r} is not valid",
            field=f"{field}.{name}",
            hint="names must match ^[A-Za-z_][A-Za-z0-9_]*$ (letters, digits, underscores)",
        )


def _parse_distribution(data: object, field: str) -> Distribution:
    if not isinstance(data, Mapping):
        raise ValidationError(
            "must be a distribution (a mapping with a 'type' key)",
            field=field,
            hint=f"to fix a single value use {{type: choice, values: [{data!r}]}}",
        )
    if "type" not in data:
        raise ValidationError(
            "missing required key 'type'",
            field=f"{field}.type",
            hint="type is one of: " + ", ".join(DISTRIBUTION_TYPES),
        )
    raw_type = data["type"]
    kind = raw_type.lower() if isinstance(raw_type, str) else None
    if kind not in _PARAMS:
        hint = "type is one of: " + ", ".join(DISTRIBUTION_TYPES)
        if isinstance(raw_type, str):
            suggestion = did_you_mean(raw_type.lower(), DISTRIBUTION_TYPES)
            if raw_type.lower() == "sobol":
                suggestion = "sobol is a sampling rule, not a distribution"
            if suggestion:
                hint = f"{suggestion}; {hint}"
        raise ValidationError(f"unknown distribution type {raw_type!r}", field=f"{field}.type", hint=hint)
    expected = ("type", *_PARAMS[kind])
    for key in data:
        if key not in expected:
            parts = []
            suggestion = did_you_mean(str(key), expected)
            if suggestion:
                parts.append(suggestion)
            parts.append(f"a {kind} distribution takes: " + ", ".join(expected))
            if kind == "randint" and key == "lower":
                parts.append("randint always starts at 0 (Azure has no lower bound)")
            raise ValidationError(
                f"unknown key {key!r} for a {kind} distribution",
                field=f"{field}.{key}",
                hint="; ".join(parts),
            )
    for key in _PARAMS[kind]:
        if key not in data:
            raise ValidationError(
                f"missing required key {key!r} for a {kind} distribution",
                field=f"{field}.{key}",
                hint=f"a {kind} distribution takes: " + ", ".join(expected),
            )
    if kind == "choice":
        return _parse_choice(data["values"], f"{field}.values")
    if kind == "randint":
        upper = _integer(data["upper"], f"{field}.upper")
        if upper < 1:
            raise ValidationError(
                f"must be at least 1 (randint draws from [0, upper)), got {upper}",
                field=f"{field}.upper",
            )
        return RandInt(upper)
    cls = _CLASSES[kind]
    params: dict[str, Any] = {}
    for key in _PARAMS[kind]:
        params[key] = _number(data[key], f"{field}.{key}")
    if "min_value" in params:
        lo, hi = params["min_value"], params["max_value"]
        if lo > hi:
            raise ValidationError(
                f"min_value ({lo}) is greater than max_value ({hi})",
                field=f"{field}.min_value",
                hint="swap the two bounds",
            )
        if kind in ("loguniform", "qloguniform") and hi > _MAX_EXP:
            raise ValidationError(
                f"exp({hi}) overflows: loguniform bounds are natural-log exponents",
                field=f"{field}.max_value",
                hint=f"for values up to X write max_value: ln(X), e.g. {math.log(1000):.4g} for 1000",
            )
        if kind in ("loguniform", "qloguniform") and lo < -_MAX_EXP:
            raise ValidationError(
                f"exp({lo}) underflows to 0: loguniform bounds are natural-log exponents",
                field=f"{field}.min_value",
                hint=f"for values from X write min_value: ln(X), e.g. {math.log(1e-6):.4g} for 1e-6",
            )
    if "sigma" in params and params["sigma"] <= 0:
        raise ValidationError(f"must be greater than 0, got {params['sigma']}", field=f"{field}.sigma")
    if "q" in params and params["q"] <= 0:
        raise ValidationError(f"must be greater than 0, got {params['q']}", field=f"{field}.q")
    return cls(**params)


def _parse_choice(values: object, field: str) -> Choice:
    if not isinstance(values, Sequence) or isinstance(values, str | bytes):
        raise ValidationError("must be a list of values", field=field, hint="e.g. values: [16, 32, 64]")
    if not values:
        raise ValidationError("must not be empty", field=field)
    out: list[Option] = []
    for i, v in enumerate(values):
        where = f"{field}[{i}]"
        if isinstance(v, bool | int | float | str):
            if isinstance(v, float) and not math.isfinite(v):
                raise ValidationError(f"must be a finite number, got {v}", field=where)
            out.append(v)
        elif isinstance(v, Mapping):
            nested: dict[str, Distribution | Scalar] = {}
            for k, d in v.items():
                _check_name(k, where)
                if isinstance(d, Mapping):
                    nested[str(k)] = _parse_distribution(d, f"{where}.{k}")
                elif isinstance(d, bool | int | float | str):
                    nested[str(k)] = d
                else:
                    raise ValidationError(
                        f"must be a distribution or a scalar, got {type(d).__name__}",
                        field=f"{where}.{k}",
                    )
            _check_disjoint(nested, where)
            out.append(nested)
        else:
            raise ValidationError(
                f"choice values must be numbers, strings or dicts, got {type(v).__name__}",
                field=where,
                hint="lists of lists are not allowed (as in Azure ML); use a string such as '1,2' and split it in your script",
            )
    return Choice(tuple(out))


def _integer(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"must be an integer, got {value!r}", field=field)
    return value


def _number(value: object, field: str) -> int | float:
    # Numeric strings are accepted because Azure's float fields accept them and
    # YAML 1.1 tools write 1e-3 (no dot) as a string.
    if isinstance(value, bool):
        raise ValidationError(f"must be a number, got {value!r}", field=field)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        out = value
    elif isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            raise ValidationError(f"must be a number, got {value!r}", field=field) from None
    else:
        raise ValidationError(f"must be a number, got {value!r}", field=field)
    if not math.isfinite(out):
        raise ValidationError(f"must be a finite number, got {value!r}", field=field)
    return out


def _keys_of(name: str, d: Distribution | Scalar) -> set[str]:
    """The parameter names an entry can set: its own, or its nested options' keys."""
    if isinstance(d, Choice) and d.nested:
        keys: set[str] = set()
        for opt in d.values:
            if isinstance(opt, dict):
                for k, v in opt.items():
                    keys |= _keys_of(k, v)
            else:
                keys.add(name)
        return keys
    return {name}


def _check_disjoint(entries: Mapping[str, Distribution | Scalar], field: str) -> None:
    # A nested option merges its keys into the trial; two entries at the same level
    # able to set the same name would silently overwrite each other.
    seen: dict[str, str] = {}
    for name, d in entries.items():
        for k in sorted(_keys_of(name, d)):
            if k in seen and seen[k] != name:
                raise ValidationError(
                    f"hyperparameter {k!r} can be set by both {seen[k]!r} and {name!r}",
                    field=f"{field}.{name}",
                    hint="rename one of them; keys of nested choice options are merged into the trial's parameters",
                )
            seen[k] = name


def _ensure_parsed(space: SpaceLike) -> dict[str, Distribution]:
    if space and all(isinstance(v, Distribution) for v in space.values()):
        return {str(k): v for k, v in space.items() if isinstance(v, Distribution)}
    return parse_search_space(space)


# --------------------------------------------------------------------------- grid


def _grid_supported(space: Mapping[str, Distribution | Scalar], field: str) -> None:
    for name, d in space.items():
        if not isinstance(d, Distribution):
            continue
        if not isinstance(d, Choice):
            raise ValidationError(
                f"grid sampling supports only choice, but this is {d.type}",
                field=f"{field}.{name}.type",
                hint="list the values with {type: choice, values: [...]}, or use sampling_algorithm: random (or bayesian)",
            )
        for i, opt in enumerate(d.values):
            if isinstance(opt, dict):
                _grid_supported(opt, f"{field}.{name}.values[{i}]")


def _grid_count(space: Mapping[str, Distribution | Scalar]) -> int:
    total = 1
    for d in space.values():
        if isinstance(d, Choice):
            total *= sum(_grid_count(o) if isinstance(o, dict) else 1 for o in d.values)
    return total


def _grid_iter(space: Mapping[str, Distribution | Scalar]) -> Iterator[dict[str, Any]]:
    # Per key, the list of partial assignments it contributes, in values order;
    # itertools.product then varies the last key fastest (stable, YAML order).
    per_key: list[list[dict[str, Any]]] = []
    for name, d in space.items():
        if isinstance(d, Choice):
            parts: list[dict[str, Any]] = []
            for opt in d.values:
                if isinstance(opt, dict):
                    parts.extend(_grid_iter(opt))
                else:
                    parts.append({name: opt})
            per_key.append(parts)
        else:
            per_key.append([{name: d}])
    for combo in itertools.product(*per_key):
        out: dict[str, Any] = {}
        for part in combo:
            out.update(part)
        yield out


def grid_size(space: SpaceLike) -> int:
    """Number of grid points of *space*, computed without enumerating them."""
    parsed = _ensure_parsed(space)
    _grid_supported(parsed, "search_space")
    return _grid_count(parsed)


def grid(space: SpaceLike, limit: int | None = None) -> list[dict[str, Any]]:
    """Every combination of the choices, once each, in a stable order.

    The first hyperparameter varies slowest and values keep their YAML order.  A
    chosen nested dict contributes every combination of its own choices.  Only
    ``choice`` is allowed (as in Azure ML); *limit* keeps the first *limit* points.
    """
    parsed = _ensure_parsed(space)
    _grid_supported(parsed, "search_space")
    it = _grid_iter(parsed)
    if limit is not None:
        return list(itertools.islice(it, max(limit, 0)))
    return list(it)


# --------------------------------------------------------------------------- random


@dataclass
class _Slot:
    """One sampled column: a distribution at some place in the (nested) space."""

    name: str
    dist: Distribution
    column: int
    # Per option of a nested choice, the slots of that option (constants inline).
    options: list[list[_Slot | tuple[str, Scalar]]] | None = None


def _layout(space: Mapping[str, Distribution | Scalar], counter: list[int]) -> list[_Slot | tuple[str, Scalar]]:
    # Columns are allocated depth-first in YAML order, so a seed always maps to the
    # same draws whatever branch is taken.
    out: list[_Slot | tuple[str, Scalar]] = []
    for name, d in space.items():
        if not isinstance(d, Distribution):
            out.append((name, d))
            continue
        slot = _Slot(name, d, counter[0])
        counter[0] += 1
        if isinstance(d, Choice) and d.nested:
            slot.options = [_layout(opt, counter) if isinstance(opt, dict) else [] for opt in d.values]
        out.append(slot)
    return out


def _slots(layout: list[_Slot | tuple[str, Scalar]]) -> Iterator[_Slot]:
    for item in layout:
        if isinstance(item, _Slot):
            yield item
            for opt in item.options or []:
                yield from _slots(opt)


def _choice_pick(d: Choice, index: npt.NDArray[np.int64]) -> list[Any]:
    values = d.values
    return [values[i] for i in index.tolist()]


def _fill(
    rows: list[dict[str, Any]],
    which: list[int] | None,
    layout: list[_Slot | tuple[str, Scalar]],
    columns: list[list[Any]],
) -> None:
    """Write the columns into the rows listed in *which* (None = all rows)."""
    for item in layout:
        if not isinstance(item, _Slot):
            name, const = item
            for r in which if which is not None else range(len(rows)):
                rows[r][name] = const
            continue
        col = columns[item.column]
        if item.options is None:
            if which is None:
                for row, v in zip(rows, col, strict=True):
                    row[item.name] = v
            else:
                for r in which:
                    rows[r][item.name] = col[r]
            continue
        # A nested choice: the column holds option indices; split rows by option.
        assert isinstance(item.dist, Choice)
        by_option: dict[int, list[int]] = {}
        for r in which if which is not None else range(len(rows)):
            by_option.setdefault(col[r], []).append(r)
        for i, members in sorted(by_option.items()):
            opt = item.dist.values[i]
            if isinstance(opt, dict):
                _fill(rows, members, item.options[i], columns)
            else:
                for r in members:
                    rows[r][item.name] = opt


def sample_random(space: SpaceLike, n: int, seed: int | None = None, rule: Rule = "random") -> list[dict[str, Any]]:
    """*n* trials drawn independently (``random``) or quasi-randomly (``sobol``).

    With the same *seed* the result is identical; ``seed=None`` draws fresh entropy.
    ``sobol`` maps scrambled Sobol points of ``[0, 1)^d`` (one dimension per
    hyperparameter, nested ones included) through each distribution's inverse CDF.
    """
    import numpy as np

    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    parsed = _ensure_parsed(space)
    rule_l = rule.lower()
    if rule_l not in ("random", "sobol"):
        raise ValidationError(
            f"unknown sampling rule {rule!r}",
            field="sampling_algorithm.rule",
            hint="rule is one of: random, sobol",
        )
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValidationError(f"must be a non-negative integer, got {seed!r}", field="sampling_algorithm.seed")
    layout = _layout(parsed, counter := [0])
    d = counter[0]
    slots = sorted(_slots(layout), key=lambda s: s.column)
    columns: list[list[Any]] = []
    if rule_l == "sobol":
        from scipy.stats import qmc  # type: ignore[import-untyped,unused-ignore]

        try:
            engine = qmc.Sobol(d, scramble=True, rng=seed)
        except TypeError:  # scipy < 1.15 names the argument `seed`
            engine = qmc.Sobol(d, scramble=True, seed=seed)
        with warnings.catch_warnings():
            # n need not be a power of two: fine for a sweep, if slightly less balanced.
            warnings.simplefilter("ignore", UserWarning)
            unit = engine.random(n) if n else np.empty((0, d))
        for s in slots:
            u = unit[:, s.column]
            if isinstance(s.dist, Choice):
                idx = np.minimum((u * len(s.dist.values)).astype(np.int64), len(s.dist.values) - 1)
                columns.append(idx.tolist() if s.options is not None else _choice_pick(s.dist, idx))
            elif isinstance(s.dist, RandInt):
                idx = np.minimum((u * s.dist.upper).astype(np.int64), s.dist.upper - 1)
                columns.append(idx.tolist())
            else:
                assert isinstance(s.dist, _Continuous)
                columns.append(s.dist.from_unit(u))
    else:
        rng = np.random.default_rng(seed)
        for s in slots:
            if isinstance(s.dist, Choice):
                idx = rng.integers(0, len(s.dist.values), n)
                columns.append(idx.tolist() if s.options is not None else _choice_pick(s.dist, idx))
            elif isinstance(s.dist, RandInt):
                columns.append(rng.integers(0, s.dist.upper, n).tolist())
            else:
                assert isinstance(s.dist, _Continuous)
                columns.append(s.dist.from_random(rng, n))
    if all(isinstance(item, _Slot) and item.options is None for item in layout):
        # The common flat case: one dict per row straight from the columns.
        names = [item.name for item in layout if isinstance(item, _Slot)]
        ordered = [columns[item.column] for item in layout if isinstance(item, _Slot)]
        return [dict(zip(names, row, strict=True)) for row in zip(*ordered, strict=True)]
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    _fill(rows, None, layout, columns)
    return rows


# --------------------------------------------------------------------------- trials


def trials(
    space: SpaceLike,
    algorithm: str,
    *,
    max_total_trials: int | None,
    seed: int | None = None,
    rule: str = "random",
) -> list[dict[str, Any]]:
    """The parameter sets of a sweep's trials, in array-index order.

    ``grid``: every combination, cut to *max_total_trials* when that is smaller
    (default: the whole grid).  ``random``: *max_total_trials* samples (required),
    drawn by *rule* (``random`` or ``sobol``) with *seed*.  ``bayesian`` trials
    depend on earlier results and are asked for by the controller
    (:mod:`hpcjobs.sweep.bayes`), so this raises ValueError for it.
    """
    algo = algorithm.lower()
    if max_total_trials is not None and max_total_trials < 1:
        raise ValidationError(
            f"must be at least 1, got {max_total_trials}",
            field="limits.max_total_trials",
        )
    if algo == "grid":
        return grid(space, limit=max_total_trials)
    if algo == "random":
        if max_total_trials is None:
            raise ValidationError(
                "is required for random sampling",
                field="limits.max_total_trials",
                hint="set limits: {max_total_trials: N}",
            )
        if rule.lower() not in ("random", "sobol"):
            raise ValidationError(
                f"unknown sampling rule {rule!r}",
                field="sampling_algorithm.rule",
                hint="rule is one of: random, sobol",
            )
        return sample_random(
            space,
            max_total_trials,
            seed,
            "sobol" if rule.lower() == "sobol" else "random",
        )
    if algo == "bayesian":
        raise ValueError("bayesian trials are asked for by the controller")
    hint = "sampling_algorithm is one of: random, grid, bayesian"
    if algo == "sobol":
        hint = "sobol is a rule of random sampling: sampling_algorithm: {type: random, rule: sobol}"
    else:
        suggestion = did_you_mean(algo, ("random", "grid", "bayesian"))
        if suggestion:
            hint = f"{suggestion}; {hint}"
    raise ValidationError(
        f"unknown sampling algorithm {algorithm!r}",
        field="sampling_algorithm",
        hint=hint,
    )
