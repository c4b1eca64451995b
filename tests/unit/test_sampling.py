"""Search-space parsing, grid / random / Sobol sampling and the bayesian sampler."""

from __future__ import annotations

import itertools
import json
import math
import sys
import time
from collections import Counter
from typing import Any

import pytest

from hpcjobs.errors import UserError, ValidationError
from hpcjobs.sweep import sampling as S

PLAIN = (int, float, str, bool)


def _err(space: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        S.parse_search_space(space)
    return info.value


# --------------------------------------------------------------------------- parsing


def test_parse_every_distribution_type_case_insensitively() -> None:
    space = {
        "a": {"type": "Choice", "values": [1, "x", 2.5, True]},
        "b": {"type": "RANDINT", "upper": 3},
        "c": {"type": "uniform", "min_value": 0, "max_value": 1.5},
        "d": {"type": "loguniform", "min_value": -3, "max_value": 0},
        "e": {"type": "quniform", "min_value": 0, "max_value": 10, "q": 2},
        "f": {"type": "qloguniform", "min_value": 0, "max_value": 3, "q": 0.5},
        "g": {"type": "normal", "mu": 0, "sigma": 1},
        "h": {"type": "lognormal", "mu": 0, "sigma": 0.5},
        "i": {"type": "qnormal", "mu": 10, "sigma": 2, "q": 1},
        "j": {"type": "qlognormal", "mu": 1, "sigma": 0.2, "q": 0.1},
    }
    parsed = S.parse_search_space(space)
    assert list(parsed) == list(space)
    assert [d.type for d in parsed.values()] == [
        "choice",
        "randint",
        "uniform",
        "loguniform",
        "quniform",
        "qloguniform",
        "normal",
        "lognormal",
        "qnormal",
        "qlognormal",
    ]
    assert parsed["a"] == S.Choice((1, "x", 2.5, True))
    assert parsed["e"] == S.QUniform(min_value=0, max_value=10, q=2)
    assert parsed["c"].to_dict() == {
        "type": "uniform",
        "min_value": 0,
        "max_value": 1.5,
    }


def test_numeric_strings_are_accepted_for_float_parameters() -> None:
    # YAML 1.1 writers emit 1e-3 as a string; Azure's float fields accept it.
    parsed = S.parse_search_space({"lr": {"type": "uniform", "min_value": "1e-3", "max_value": 1}})
    assert parsed["lr"] == S.Uniform(min_value=0.001, max_value=1)


def test_unknown_key_names_the_field_and_suggests() -> None:
    e = _err({"lr": {"type": "uniform", "min_value": 0, "max_valu": 1}})
    assert e.field == "search_space.lr.max_valu"
    assert e.hint is not None
    assert "did you mean 'max_value'?" in e.hint
    assert "min_value" in e.hint and "max_value" in e.hint


def test_missing_key_names_the_field() -> None:
    e = _err({"lr": {"type": "uniform", "min_value": 0}})
    assert e.field == "search_space.lr.max_value"
    assert "missing" in e.message


def test_unknown_type_suggests_a_known_one() -> None:
    e = _err({"lr": {"type": "unifrom", "min_value": 0, "max_value": 1}})
    assert e.field == "search_space.lr.type"
    assert e.hint is not None and "did you mean 'uniform'?" in e.hint


def test_missing_type() -> None:
    e = _err({"lr": {"min_value": 0, "max_value": 1}})
    assert e.field == "search_space.lr.type"
    assert e.hint is not None and "loguniform" in e.hint


def test_randint_has_no_lower_bound() -> None:
    e = _err({"n": {"type": "randint", "lower": 1, "upper": 5}})
    assert e.field == "search_space.n.lower"
    assert e.hint is not None and "randint always starts at 0" in e.hint


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        (
            {"type": "uniform", "min_value": 2, "max_value": 1},
            "search_space.p.min_value",
        ),
        (
            {"type": "uniform", "min_value": "abc", "max_value": 1},
            "search_space.p.min_value",
        ),
        (
            {"type": "uniform", "min_value": True, "max_value": 1},
            "search_space.p.min_value",
        ),
        ({"type": "randint", "upper": 0}, "search_space.p.upper"),
        ({"type": "randint", "upper": 4.0}, "search_space.p.upper"),
        ({"type": "normal", "mu": 0, "sigma": 0}, "search_space.p.sigma"),
        ({"type": "qnormal", "mu": 0, "sigma": 1, "q": -1}, "search_space.p.q"),
        (
            {"type": "loguniform", "min_value": 0, "max_value": 800},
            "search_space.p.max_value",
        ),
        ({"type": "loguniform", "min_value": -800, "max_value": 0}, "search_space.p.min_value"),
        ({"type": "choice", "values": []}, "search_space.p.values"),
        ({"type": "choice", "values": "abc"}, "search_space.p.values"),
        ({"type": "choice", "values": [1, [2, 3]]}, "search_space.p.values[1]"),
        ({"type": "choice", "values": [1, None]}, "search_space.p.values[1]"),
        (
            {"type": "uniform", "min_value": 0, "max_value": float("inf")},
            "search_space.p.max_value",
        ),
    ],
)
def test_bad_parameters_name_the_field(entry: dict[str, Any], field: str) -> None:
    assert _err({"p": entry}).field == field


def test_bad_spaces() -> None:
    assert _err({}).field == "search_space"
    assert _err([1, 2]).field == "search_space"
    bare = _err({"lr": 0.1})
    assert bare.field == "search_space.lr"
    assert bare.hint is not None and "choice" in bare.hint
    assert _err({"my-x": {"type": "randint", "upper": 2}}).field == "search_space.my-x"


def test_nested_errors_name_the_nested_path() -> None:
    e = _err(
        {
            "model": {
                "type": "choice",
                "values": [{"C": {"type": "uniform", "min_value": 0, "max_vale": 1}}],
            }
        }
    )
    assert e.field == "search_space.model.values[0].C.max_vale"


def test_nested_keys_may_not_collide_with_top_level_keys() -> None:
    e = _err(
        {
            "model": {"type": "choice", "values": [{"lr": 0.1}, {"depth": 3}]},
            "lr": {"type": "uniform", "min_value": 0, "max_value": 1},
        }
    )
    assert e.field == "search_space.lr"
    assert "'lr'" in e.message
    # The same key in sibling options is fine: only one option is chosen.
    S.parse_search_space({"m": {"type": "choice", "values": [{"lr": 0.1}, {"lr": 0.2}]}})


# --------------------------------------------------------------------------- grid

GRID: dict[str, Any] = {
    "bs": {"type": "choice", "values": [16, 32, 64]},
    "opt": {"type": "choice", "values": ["adam", "sgd"]},
    "wd": {"type": "choice", "values": [0.0, 0.1]},
}


def test_grid_enumerates_every_combination_exactly_once_in_yaml_order() -> None:
    points = S.grid(GRID)
    expected = [{"bs": bs, "opt": opt, "wd": wd} for bs, opt, wd in itertools.product([16, 32, 64], ["adam", "sgd"], [0.0, 0.1])]
    assert points == expected
    assert len({json.dumps(p, sort_keys=True) for p in points}) == 12
    assert S.grid_size(GRID) == 12
    assert all(list(p) == ["bs", "opt", "wd"] for p in points)


def test_grid_size_does_not_enumerate() -> None:
    big = {f"p{i}": {"type": "choice", "values": list(range(10))} for i in range(12)}
    t = time.perf_counter()
    assert S.grid_size(big) == 10**12
    assert time.perf_counter() - t < 0.5


def test_grid_rejects_non_choice_with_a_hint() -> None:
    space = {**GRID, "lr": {"type": "uniform", "min_value": 0, "max_value": 1}}
    for call in (S.grid, S.grid_size):
        with pytest.raises(ValidationError) as info:
            call(space)
        assert info.value.field == "search_space.lr.type"
        assert info.value.hint is not None and "random" in info.value.hint


def test_grid_expands_nested_choices() -> None:
    space = {
        "model": {
            "type": "choice",
            "values": [
                {"name": "svm", "C": {"type": "choice", "values": [1, 10]}},
                "linear",
            ],
        },
        "seed": {"type": "choice", "values": [0, 1]},
    }
    points = S.grid(space)
    assert S.grid_size(space) == len(points) == 6
    assert points == [
        {"name": "svm", "C": 1, "seed": 0},
        {"name": "svm", "C": 1, "seed": 1},
        {"name": "svm", "C": 10, "seed": 0},
        {"name": "svm", "C": 10, "seed": 1},
        {"model": "linear", "seed": 0},
        {"model": "linear", "seed": 1},
    ]


def test_trials_grid_default_and_truncated() -> None:
    assert len(S.trials(GRID, "grid", max_total_trials=None)) == 12
    assert len(S.trials(GRID, "Grid", max_total_trials=100)) == 12
    assert S.trials(GRID, "grid", max_total_trials=5) == S.grid(GRID)[:5]


# --------------------------------------------------------------------------- random

MIXED: dict[str, Any] = {
    "c": {"type": "choice", "values": ["a", "b", "c", 4]},
    "n": {"type": "randint", "upper": 5},
    "u": {"type": "uniform", "min_value": -2, "max_value": 3},
    "lu": {"type": "loguniform", "min_value": -6, "max_value": -1},
    "qu": {"type": "quniform", "min_value": 0, "max_value": 100, "q": 5},
    "quf": {"type": "quniform", "min_value": 0, "max_value": 1, "q": 0.05},
    "qlu": {"type": "qloguniform", "min_value": 0, "max_value": 4, "q": 2},
    "nm": {"type": "normal", "mu": 10, "sigma": 2},
    "ln": {"type": "lognormal", "mu": 0, "sigma": 0.5},
    "qn": {"type": "qnormal", "mu": 0, "sigma": 1, "q": 0.25},
    "qln": {"type": "qlognormal", "mu": 2, "sigma": 0.3, "q": 1},
}


def _is_multiple(v: float, q: float) -> bool:
    return abs(v / q - round(v / q)) < 1e-9


@pytest.mark.parametrize("rule", ["random", "sobol"])
def test_samples_fall_in_the_documented_ranges(rule: S.Rule) -> None:
    rows = S.sample_random(MIXED, 2048, seed=7, rule=rule)
    assert len(rows) == 2048
    cols = {k: [r[k] for r in rows] for k in MIXED}
    for row in rows:
        assert list(row) == list(MIXED)
        assert all(type(v) in PLAIN for v in row.values())
    assert set(cols["c"]) == {"a", "b", "c", 4}
    assert set(cols["n"]) == {0, 1, 2, 3, 4}
    assert all(type(v) is int for v in cols["n"])
    assert all(-2 <= v <= 3 and type(v) is float for v in cols["u"])
    assert all(math.exp(-6) <= v <= math.exp(-1) for v in cols["lu"])
    # loguniform is uniform in log space: about half below exp(-3.5).
    assert 0.4 < sum(v < math.exp(-3.5) for v in cols["lu"]) / 2048 < 0.6
    assert all(type(v) is int and v % 5 == 0 and 0 <= v <= 100 for v in cols["qu"])
    assert all(type(v) is float and _is_multiple(v, 0.05) for v in cols["quf"])
    assert any(v == 0.15 for v in cols["quf"])  # rounded to q's decimals, not 0.15000000000000002
    assert all(type(v) is int and v % 2 == 0 and 0 <= v <= round(math.exp(4)) + 1 for v in cols["qlu"])
    assert abs(sum(cols["nm"]) / 2048 - 10) < 0.3
    sd = math.sqrt(sum((v - 10) ** 2 for v in cols["nm"]) / 2048)
    assert 1.8 < sd < 2.2
    assert all(v > 0 for v in cols["ln"])
    assert abs(sum(math.log(v) for v in cols["ln"]) / 2048) < 0.05
    assert all(_is_multiple(v, 0.25) for v in cols["qn"])
    assert all(type(v) is int for v in cols["qln"])
    json.dumps(rows)  # plain types only


def test_choice_is_roughly_uniform() -> None:
    rows = S.sample_random({"c": {"type": "choice", "values": [1, 2, 3, 4]}}, 4000, seed=1)
    counts = Counter(r["c"] for r in rows)
    assert all(850 < counts[v] < 1150 for v in (1, 2, 3, 4))


@pytest.mark.parametrize("rule", ["random", "sobol"])
def test_seeded_sampling_is_reproducible(rule: S.Rule) -> None:
    a = S.sample_random(MIXED, 50, seed=42, rule=rule)
    b = S.sample_random(MIXED, 50, seed=42, rule=rule)
    c = S.sample_random(MIXED, 50, seed=43, rule=rule)
    assert a == b
    assert a != c
    assert [r["u"] for r in a] != [r["u"] for r in c]


def test_unseeded_sampling_differs() -> None:
    a = S.sample_random(MIXED, 20, seed=None)
    b = S.sample_random(MIXED, 20, seed=None)
    assert a != b


def test_sobol_fills_the_unit_square_evenly() -> None:
    unit = {
        "x": {"type": "uniform", "min_value": 0, "max_value": 1},
        "y": {"type": "uniform", "min_value": 0, "max_value": 1},
    }
    rows = S.sample_random(unit, 1024, seed=3, rule="sobol")
    cells = Counter((int(r["x"] * 4), int(r["y"] * 4)) for r in rows)
    # A scrambled Sobol net puts exactly n/16 points in each 1/4 x 1/4 cell; random
    # sampling would typically be off by ~8.
    assert len(cells) == 16
    assert all(abs(c - 64) <= 1 for c in cells.values())
    bins = Counter(int(r["x"] * 32) for r in rows)
    assert all(abs(c - 32) <= 1 for c in bins.values())
    rand = S.sample_random(unit, 1024, seed=3, rule="random")
    rand_cells = Counter((int(r["x"] * 4), int(r["y"] * 4)) for r in rand)
    assert max(abs(c - 64) for c in rand_cells.values()) > max(abs(c - 64) for c in cells.values())


def test_nested_choice_is_flattened_into_the_trial() -> None:
    space = {
        "model": {
            "type": "choice",
            "values": [
                {
                    "name": "svm",
                    "C": {"type": "uniform", "min_value": 0, "max_value": 1},
                },
                {"name": "rf", "trees": {"type": "randint", "upper": 100}},
                "linear",
            ],
        },
        "seed": {"type": "choice", "values": [0, 1]},
    }
    rules: tuple[S.Rule, ...] = ("random", "sobol")
    for rule in rules:
        rows = S.sample_random(space, 300, seed=5, rule=rule)
        kinds = Counter(r.get("name", r.get("model")) for r in rows)
        assert set(kinds) == {"svm", "rf", "linear"}
        for r in rows:
            assert r["seed"] in (0, 1)
            if r.get("name") == "svm":
                assert set(r) == {"name", "C", "seed"} and 0 <= r["C"] <= 1
            elif r.get("name") == "rf":
                assert set(r) == {"name", "trees", "seed"} and 0 <= r["trees"] < 100
            else:
                assert r == {"model": "linear", "seed": r["seed"]}
        assert rows == S.sample_random(space, 300, seed=5, rule=rule)


def test_parsed_and_raw_spaces_give_the_same_trials() -> None:
    parsed = S.parse_search_space(MIXED)
    assert S.sample_random(parsed, 10, seed=1) == S.sample_random(MIXED, 10, seed=1)


def test_trials_random_needs_max_total_trials() -> None:
    with pytest.raises(ValidationError) as info:
        S.trials(MIXED, "random", max_total_trials=None)
    assert info.value.field == "limits.max_total_trials"
    rows = S.trials(MIXED, "random", max_total_trials=7, seed=1, rule="sobol")
    assert rows == S.sample_random(MIXED, 7, seed=1, rule="sobol")


def test_trials_rejects_bad_algorithms() -> None:
    with pytest.raises(ValueError, match="controller"):
        S.trials(MIXED, "bayesian", max_total_trials=5)
    with pytest.raises(ValidationError) as info:
        S.trials(MIXED, "sobol", max_total_trials=5)
    assert info.value.hint is not None and "rule: sobol" in info.value.hint
    with pytest.raises(ValidationError) as info:
        S.trials(MIXED, "randon", max_total_trials=5)
    assert info.value.hint is not None and "did you mean 'random'?" in info.value.hint
    with pytest.raises(ValidationError) as info:
        S.trials(MIXED, "random", max_total_trials=5, rule="halton")
    assert info.value.field == "sampling_algorithm.rule"
    with pytest.raises(ValidationError):
        S.trials(GRID, "grid", max_total_trials=0)
    with pytest.raises(ValidationError) as info:
        S.trials(MIXED, "random", max_total_trials=5, seed=-1)
    assert info.value.field == "sampling_algorithm.seed"


def test_zero_samples() -> None:
    assert S.sample_random(MIXED, 0, seed=1) == []
    assert S.sample_random(MIXED, 0, seed=1, rule="sobol") == []


def test_ten_thousand_random_trials_are_fast() -> None:
    space = {k: MIXED[k] for k in ("c", "n", "u", "lu", "qu", "nm")}
    S.sample_random(space, 10, seed=0)  # warm the imports
    best = math.inf
    for _ in range(3):
        t = time.perf_counter()
        json.dumps(S.trials(space, "random", max_total_trials=10_000, seed=1))
        best = min(best, time.perf_counter() - t)
    # ~0.1 s on the development machine; the bound is loose for slow CI hosts.
    assert best < 0.5


# --------------------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (-7, "-7"),
        (0.1, "0.1"),
        (1e-05, "1e-05"),
        (2.0, "2.0"),
        (True, "True"),
        (False, "False"),
        ("adam", "adam"),
    ],
)
def test_format_value(value: Any, text: str) -> None:
    assert S.format_value(value) == text


def test_format_value_round_trips_sampled_floats() -> None:
    for row in S.sample_random(MIXED, 200, seed=9):
        for v in row.values():
            text = S.format_value(v)
            if type(v) is float:
                assert float(text) == v
            elif type(v) is int:
                assert int(text) == v


# --------------------------------------------------------------------------- bayes

BAYES_SPACE: dict[str, Any] = {
    "x": {"type": "uniform", "min_value": -5, "max_value": 5},
    "lr": {"type": "loguniform", "min_value": -9, "max_value": -2},
    "h": {"type": "quniform", "min_value": 32, "max_value": 512, "q": 32},
    "w": {"type": "qloguniform", "min_value": 0, "max_value": 3, "q": 0.5},
    "opt": {"type": "choice", "values": ["adam", "sgd", 3]},
    "n": {"type": "randint", "upper": 4},
}


def _objective(p: dict[str, Any]) -> float:
    return float(p["x"] - 2.0) ** 2 + (0.0 if p["opt"] == "adam" else 1.0)


def test_bayes_ask_tell_persist_and_resume(tmp_path: Any) -> None:
    pytest.importorskip("optuna", reason="optuna is not installed (pip install optuna)")
    from hpcjobs.sweep.bayes import BayesianSampler

    live = BayesianSampler(BAYES_SPACE, "minimize", seed=11)
    asked = live.ask(3)
    assert [n for n, _ in asked] == [0, 1, 2]
    for _, p in asked:
        assert -5 <= p["x"] <= 5
        assert math.exp(-9) <= p["lr"] <= math.exp(-2)
        assert type(p["h"]) is int and p["h"] % 32 == 0 and 32 <= p["h"] <= 512
        assert _is_multiple(p["w"], 0.5) and 0 <= p["w"] <= math.exp(3) + 0.5
        assert p["opt"] in ("adam", "sgd", 3)
        assert type(p["n"]) is int and 0 <= p["n"] < 4
    assert live.pending() == [0, 1, 2]
    live.tell(0, _objective(asked[0][1]))
    live.tell(1, None, failed=True)
    live.tell(2, None)  # stopped early without a result
    assert live.pending() == []

    path = tmp_path / "bayes.json"
    live.save(path)
    state = json.loads(path.read_text())
    assert [t["state"] for t in state["trials"]] == ["complete", "failed", "pruned"]
    resumed = BayesianSampler.load(path, BAYES_SPACE)
    assert resumed.state_dict() == live.state_dict()

    # Same history and seed: the resumed sampler asks exactly what the live one does.
    for _ in range(15):
        a, b = live.ask(2), resumed.ask(2)
        assert a == b
        for (n, p), sampler in itertools.product(a, (live, resumed)):
            sampler.tell(n, _objective(p))
    best = live.best()
    assert best is not None and best == resumed.best()
    told = [t["value"] for t in live.state_dict()["trials"] if t["state"] == "complete"]
    assert len(told) == 31
    assert best[2] == min(told) == _objective(best[1])


def test_bayes_improves_over_its_random_start() -> None:
    pytest.importorskip("optuna", reason="optuna is not installed (pip install optuna)")
    from hpcjobs.sweep.bayes import BayesianSampler

    s = BayesianSampler({"x": BAYES_SPACE["x"]}, "maximize", seed=1)
    for _ in range(40):
        ((n, p),) = s.ask(1)
        s.tell(n, -((p["x"] - 2.0) ** 2))
    best = s.best()
    assert best is not None and abs(best[1]["x"] - 2.0) < 0.3


def test_bayes_tell_is_idempotent_but_not_contradictory() -> None:
    pytest.importorskip("optuna", reason="optuna is not installed (pip install optuna)")
    from hpcjobs.sweep.bayes import BayesianSampler

    s = BayesianSampler(BAYES_SPACE, "maximize", seed=0)
    ((n, _),) = s.ask(1)
    s.tell(n, 0.5)
    s.tell(n, 0.5)
    with pytest.raises(ValueError, match="already complete"):
        s.tell(n, 0.7)
    with pytest.raises(ValueError, match="never asked"):
        s.tell(99, 0.1)
    ((m, _),) = s.ask(1)
    s.tell(m, float("nan"))
    assert s.state_dict()["trials"][1]["state"] == "failed"


def test_bayes_rejects_unsupported_distributions() -> None:
    pytest.importorskip("optuna", reason="optuna is not installed (pip install optuna)")
    from hpcjobs.sweep.bayes import BayesianSampler

    with pytest.raises(ValidationError) as info:
        BayesianSampler({"a": {"type": "normal", "mu": 0, "sigma": 1}}, "maximize")
    assert info.value.field == "search_space.a.type"
    assert "normal" in info.value.message
    assert info.value.hint is not None and "qloguniform" in info.value.hint
    with pytest.raises(ValidationError) as info:
        BayesianSampler({"m": {"type": "choice", "values": [{"a": 1}, {"b": 2}]}}, "maximize")
    assert info.value.field == "search_space.m.values"
    with pytest.raises(ValidationError):
        BayesianSampler(BAYES_SPACE, "maximise")


def test_bayes_refuses_a_changed_space_on_load() -> None:
    pytest.importorskip("optuna", reason="optuna is not installed (pip install optuna)")
    from hpcjobs.sweep.bayes import BayesianSampler

    s = BayesianSampler(BAYES_SPACE, "maximize", seed=0)
    s.ask(2)
    state = json.loads(json.dumps(s.state_dict()))
    renamed = {("y" if k == "x" else k): v for k, v in BAYES_SPACE.items()}
    with pytest.raises(ValidationError, match="changed"):
        BayesianSampler.from_state(state, renamed)
    narrowed = {**BAYES_SPACE, "opt": {"type": "choice", "values": ["lion"]}}
    with pytest.raises(ValidationError, match="changed") as info:
        BayesianSampler.from_state(state, narrowed)
    assert info.value.field == "search_space.opt"


def test_bayes_without_optuna_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hpcjobs.sweep import bayes

    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` fail
    with pytest.raises(UserError) as info:
        bayes.BayesianSampler(BAYES_SPACE, "maximize")
    assert info.value.hint is not None and "pip install optuna" in info.value.hint
