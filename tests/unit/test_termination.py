"""Early-termination policies on small hand-computed cases."""

from __future__ import annotations

from typing import Any

import pytest

from hpcjobs.errors import ValidationError
from hpcjobs.sweep.termination import (
    BanditPolicy,
    MedianStoppingPolicy,
    TruncationSelectionPolicy,
    parse_policy,
)


def h(*values: float) -> list[tuple[int, float]]:
    """A history logged at steps 1, 2, 3, ..."""
    return [(i + 1, v) for i, v in enumerate(values)]


# --------------------------------------------------------------------------- parsing


def test_no_policy() -> None:
    assert parse_policy(None) is None


def test_parse_each_policy_with_azure_casing() -> None:
    bandit = parse_policy({"type": "Bandit", "slack_factor": 0.1, "delay_evaluation": 5})
    assert bandit == BanditPolicy(slack_factor=0.1, delay_evaluation=5)
    median = parse_policy({"type": "MedianStopping", "evaluation_interval": 2})
    assert median == MedianStoppingPolicy(evaluation_interval=2)
    trunc = parse_policy({"type": "truncation_selection", "truncation_percentage": 20})
    assert trunc == TruncationSelectionPolicy(truncation_percentage=20)
    assert trunc.to_dict() == {
        "type": "truncation_selection",
        "evaluation_interval": 1,
        "delay_evaluation": 0,
        "truncation_percentage": 20,
    }


def test_bandit_slack_rules() -> None:
    # The SDK writes slack_amount: 0 beside a slack_factor: that means "unset".
    p = parse_policy({"type": "bandit", "slack_factor": 0.2, "slack_amount": 0})
    assert p == BanditPolicy(slack_factor=0.2)
    p = parse_policy({"type": "bandit", "slack_factor": 0, "slack_amount": 0.5})
    assert p == BanditPolicy(slack_amount=0.5)
    with pytest.raises(ValidationError, match="not both"):
        parse_policy({"type": "bandit", "slack_factor": 0.2, "slack_amount": 0.5})
    with pytest.raises(ValidationError) as info:
        parse_policy({"type": "bandit"})
    assert info.value.field == "early_termination.slack_factor"
    with pytest.raises(ValidationError) as info:
        parse_policy({"type": "bandit", "slack_factor": -1})
    assert info.value.field == "early_termination.slack_factor"


def test_evaluation_interval_zero_means_every_interval() -> None:
    p = parse_policy({"type": "median_stopping", "evaluation_interval": 0})
    assert p == MedianStoppingPolicy(evaluation_interval=1)


@pytest.mark.parametrize(
    ("data", "field", "hint_part"),
    [
        ({"type": "bandt", "slack_factor": 0.1}, "early_termination.type", "'bandit'"),
        ({"slack_factor": 0.1}, "early_termination.type", "median_stopping"),
        (
            {"type": "bandit", "slack_factr": 0.1},
            "early_termination.slack_factr",
            "did you mean 'slack_factor'?",
        ),
        (
            {"type": "truncation_selection"},
            "early_termination.truncation_percentage",
            "truncation_percentage: 20",
        ),
        (
            {"type": "truncation_selection", "truncation_percentage": 100},
            "early_termination.truncation_percentage",
            None,
        ),
        (
            {"type": "median_stopping", "delay_evaluation": -1},
            "early_termination.delay_evaluation",
            None,
        ),
        (
            {"type": "median_stopping", "evaluation_interval": 1.5},
            "early_termination.evaluation_interval",
            None,
        ),
        ("bandit", "early_termination", "type: bandit"),
    ],
)
def test_bad_policies_name_the_field(data: Any, field: str, hint_part: str | None) -> None:
    with pytest.raises(ValidationError) as info:
        parse_policy(data)
    assert info.value.field == field
    if hint_part is not None:
        assert info.value.hint is not None and hint_part in info.value.hint


# --------------------------------------------------------------------------- when


def test_evaluation_points() -> None:
    p = MedianStoppingPolicy(evaluation_interval=2, delay_evaluation=5)
    assert [p.evaluation_point(n) for n in range(9)] == [
        None,
        None,
        None,
        None,
        None,
        None,  # 5 is not a multiple of 2
        6,
        6,
        8,
    ]
    q = MedianStoppingPolicy()
    assert [q.evaluation_point(n) for n in range(3)] == [None, 1, 2]


# --------------------------------------------------------------------------- bandit


def test_bandit_slack_factor_maximize_matches_the_azure_example() -> None:
    # Azure: best 0.8 with slack_factor 0.1 => runs whose best is below
    # 0.8 / 1.1 = 0.727 are stopped.
    policy = BanditPolicy(slack_factor=0.1)
    metrics = {
        "best": h(0.5, 0.8),
        "bad": h(0.6, 0.72),
        "close": h(0.75, 0.74),  # its best (0.75) counts, not its last value
    }
    assert policy.decide(metrics, "maximize") == {"bad"}


def test_bandit_slack_factor_minimize() -> None:
    policy = BanditPolicy(slack_factor=0.5)
    metrics = {"best": h(2.0, 1.0), "ok": h(1.4, 1.6), "bad": h(1.7, 1.51)}
    # threshold = 1.0 * 1.5 = 1.5: "ok" reached 1.4, "bad" never got below 1.51.
    assert policy.decide(metrics, "minimize") == {"bad"}


def test_bandit_slack_amount_and_cut_histories() -> None:
    policy = BanditPolicy(slack_amount=0.2)
    metrics = {"a": h(1.0, 0.5), "b": h(0.9, 0.8), "young": h(0.6)}
    # At interval 2 the best is 0.5, so b (0.8 > 0.7) is stopped.  "young" is judged
    # at interval 1 against the first values only (best 0.6), and kept.
    assert policy.decide(metrics, "minimize") == {"b"}


def test_bandit_never_stops_the_best_trial_even_with_negative_metrics() -> None:
    policy = BanditPolicy(slack_factor=0.1)
    # maximize, best = -1.0: the allowed distance is 1.0 * 0.1 / 1.1 = 0.0909.
    metrics = {"best": h(-1.0), "near": h(-1.05), "far": h(-1.2)}
    assert policy.decide(metrics, "maximize") == {"far"}
    # minimize, best = -2.0: threshold -2.0 + 2.0 * 0.1 = -1.8.
    metrics = {"best": h(-2.0), "near": h(-1.85), "far": h(-1.7)}
    assert policy.decide(metrics, "minimize") == {"far"}


def test_nothing_is_stopped_before_delay_evaluation() -> None:
    policy = BanditPolicy(slack_amount=0.1, delay_evaluation=3)
    metrics = {"good": h(0.9, 0.9), "awful": h(0.0, 0.0)}
    assert policy.decide(metrics, "maximize") == set()
    metrics = {"good": h(0.9, 0.9, 0.9), "awful": h(0.0, 0.0, 0.0)}
    assert policy.decide(metrics, "maximize") == {"awful"}


def test_evaluation_interval_judges_only_at_multiples() -> None:
    policy = BanditPolicy(slack_amount=0.1, evaluation_interval=2)
    # "dip" is fine at interval 2 and awful at 3: not judged until interval 4.
    metrics = {"good": h(0.9, 0.9, 0.9, 0.9), "dip": h(0.9, 0.9, 0.0)}
    assert policy.decide(metrics, "maximize") == set()


def test_history_is_ordered_by_step_and_step_zero_works() -> None:
    policy = BanditPolicy(slack_amount=0.1, delay_evaluation=2)
    # Out-of-order steps are sorted; scripts that log with step 0 count by position.
    metrics = {"a": [(2, 0.9), (1, 0.1)], "b": [(0, 0.3), (0, 0.4)]}
    assert policy.decide(metrics, "maximize") == {"b"}


def test_nan_counts_as_the_worst_value() -> None:
    policy = BanditPolicy(slack_factor=0.5)
    metrics = {"ok": h(1.0), "diverged": h(float("nan"))}
    assert policy.decide(metrics, "maximize") == {"diverged"}
    assert policy.decide(metrics, "minimize") == {"diverged"}


def test_only_active_trials_are_stopped_but_all_are_references() -> None:
    policy = BanditPolicy(slack_amount=0.1)
    metrics = {"finished_best": h(1.0), "finished_bad": h(0.1), "running": h(0.5)}
    assert policy.decide(metrics, "maximize", active={"running"}) == {"running"}
    assert policy.decide(metrics, "maximize", active={"running", "gone"}) == {"running"}
    assert policy.decide(metrics, "maximize", active=[]) == set()


# --------------------------------------------------------------------------- median


MEDIAN_CASE = {
    # running averages over 3 intervals: 0.2, 0.6, 0.9, 0.25 -> median 0.425
    "a": h(0.1, 0.2, 0.3),
    "b": h(0.5, 0.6, 0.7),
    "c": h(0.8, 0.9, 1.0),
    "d": h(0.2, 0.25, 0.3),
}


def test_median_stopping_maximize() -> None:
    policy = MedianStoppingPolicy(delay_evaluation=3)
    # Bests: a 0.3, b 0.7, c 1.0, d 0.3 -> a and d are below 0.425.
    assert policy.decide(MEDIAN_CASE, "maximize") == {"a", "d"}


def test_median_stopping_minimize() -> None:
    policy = MedianStoppingPolicy(delay_evaluation=3)
    # Bests (minima): a 0.1, b 0.5, c 0.8, d 0.2 -> b and c are above 0.425.
    assert policy.decide(MEDIAN_CASE, "minimize") == {"b", "c"}


def test_median_stopping_uses_only_trials_that_reached_the_interval() -> None:
    policy = MedianStoppingPolicy()
    # "new" is judged at interval 1 against the first values 0.1, 0.5, 0.8, 0.2 and
    # its own: with 0.21 the median is 0.21 (kept, equal); with 0.19 it is 0.2
    # (stopped).  Against the others' 3-interval averages (median 0.425) both would
    # have been stopped.
    metrics = {**MEDIAN_CASE, "new": h(0.21)}
    assert "new" not in policy.decide(metrics, "maximize")
    metrics["new"] = h(0.19)
    assert "new" in policy.decide(metrics, "maximize")


def test_median_stopping_alone_or_before_delay_stops_nothing() -> None:
    assert MedianStoppingPolicy().decide({"only": h(0.1, 0.0)}, "maximize") == set()
    assert MedianStoppingPolicy(delay_evaluation=4).decide(MEDIAN_CASE, "maximize") == set()


# --------------------------------------------------------------------------- truncation


def test_truncation_cancels_the_lowest_percentage() -> None:
    metrics = {f"t{i}": h(0.1 * i) for i in range(1, 6)}  # 0.1 .. 0.5
    assert TruncationSelectionPolicy(truncation_percentage=20).decide(metrics, "maximize") == {"t1"}
    assert TruncationSelectionPolicy(truncation_percentage=40).decide(metrics, "maximize") == {
        "t1",
        "t2",
    }
    assert TruncationSelectionPolicy(truncation_percentage=40).decide(metrics, "minimize") == {
        "t5",
        "t4",
    }


def test_truncation_rounds_down_and_spares_ties() -> None:
    four = {f"t{i}": h(float(i)) for i in range(4)}
    # 20% of 4 trials is 0.8 -> no trial.
    assert TruncationSelectionPolicy(truncation_percentage=20).decide(four, "maximize") == set()
    same = {f"t{i}": h(0.5) for i in range(5)}
    assert TruncationSelectionPolicy(truncation_percentage=40).decide(same, "maximize") == set()


def test_truncation_ranks_by_the_value_at_the_interval() -> None:
    policy = TruncationSelectionPolicy(truncation_percentage=25, delay_evaluation=2)
    metrics = {
        "fell": h(0.99, 0.1),  # best ever, but lowest at interval 2
        "b": h(0.5, 0.5),
        "c": h(0.6, 0.6),
        "d": h(0.7, 0.7),
        "early": h(0.0),  # not yet at interval 2: neither judged nor a reference
    }
    assert policy.decide(metrics, "maximize") == {"fell"}


# --------------------------------------------------------------------------- purity


@pytest.mark.parametrize(
    "policy",
    [
        BanditPolicy(slack_factor=0.1),
        MedianStoppingPolicy(),
        TruncationSelectionPolicy(truncation_percentage=30),
    ],
)
def test_decisions_are_deterministic_and_order_independent(policy: Any) -> None:
    def case() -> dict[str, list[tuple[int, float]]]:
        return {f"t{i}": h(*[i * 0.1 + 0.05 * ((k * i) % 3) for k in range(5)]) for i in range(9)}

    metrics = case()
    for goal in ("maximize", "minimize"):
        first = policy.decide(metrics, goal)
        assert first  # the case is chosen so that something is stopped
        assert first == policy.decide(metrics, goal)
        assert first == policy.decide(dict(reversed(list(metrics.items()))), goal)
    assert policy.decide(metrics, "maximize") != policy.decide(metrics, "minimize")
    assert metrics == case()  # inputs untouched
