"""Learning-rate schedules: each factor at known points, its shape, agreement with torch's own schedulers,
and the validation of its parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from engine.schedules import (
    SCHEDULES,
    WSD,
    Constant,
    Cosine,
    InverseSqrt,
    Linear,
    OneCycle,
    Schedule,
    Step,
    WarmupCosine,
    describe,
)

SCHEDULE = TypeAdapter(Schedule)


def factors(schedule, total: int) -> list[float]:
    return [schedule.factor(t, total) for t in range(total)]


def non_increasing(values: list[float]) -> bool:
    return all(b <= a for a, b in zip(values, values[1:]))


# ---------------------------------------------------------------- known points


@pytest.mark.parametrize("total", [1, 2, 10, 1000])
def test_constant_is_one_everywhere(total: int) -> None:
    assert factors(Constant(), total) == [1.0] * total
    assert Constant().factor(total + 5, total) == 1.0


@pytest.mark.parametrize("min_factor", [0.0, 0.1, 0.5, 1.0])
def test_cosine_goes_from_one_to_min_factor(min_factor: float) -> None:
    schedule = Cosine(name="cosine", min_factor=min_factor)
    total = 11
    assert schedule.factor(0, total) == 1.0
    assert schedule.factor(total - 1, total) == pytest.approx(min_factor, abs=1e-15)
    # halfway through (step 5 of 0..10) the cosine is at its mean
    assert schedule.factor(5, total) == pytest.approx(min_factor + (1 - min_factor) * 0.5, abs=1e-15)
    # a quarter of the way: 0.5 (1 + cos(pi/4))
    assert schedule.factor(2.5, total) == pytest.approx(min_factor + (1 - min_factor) * 0.5 * (1 + math.sqrt(0.5)))
    # past the end it stays at the floor
    assert schedule.factor(total + 3, total) == pytest.approx(min_factor, abs=1e-15)


def test_cosine_of_a_single_step_run_is_the_full_rate() -> None:
    assert Cosine(name="cosine", min_factor=0.2).factor(0, 1) == 1.0


def test_cosine_is_non_increasing_and_stays_between_its_bounds() -> None:
    schedule = Cosine(name="cosine", min_factor=0.25)
    values = factors(schedule, 200)
    assert non_increasing(values)
    assert all(0.25 - 1e-15 <= v <= 1.0 for v in values)
    assert values[0] > values[1] and values[-2] > values[-1]  # strictly moving at both ends


def test_step_decays_by_gamma_every_step_size_steps() -> None:
    schedule = Step(name="step", step_size=3, gamma=0.5)
    assert factors(schedule, 10) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    assert non_increasing(factors(schedule, 100))


def test_step_default_gamma_is_a_tenth() -> None:
    schedule = Step(name="step", step_size=2)
    assert schedule.gamma == 0.1
    assert schedule.factor(1, 10) == 1.0
    assert schedule.factor(4, 10) == pytest.approx(0.01, rel=1e-15)


def test_step_with_gamma_one_is_constant() -> None:
    assert factors(Step(name="step", step_size=1, gamma=1.0), 20) == [1.0] * 20


def test_warmup_cosine_warms_up_linearly_then_anneals() -> None:
    schedule = WarmupCosine(name="warmup_cosine", warmup_steps=4, min_factor=0.1)
    total = 14
    values = factors(schedule, total)
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]  # from lr/warmup_steps up to lr
    assert values[4] == 1.0  # the cosine part starts at the full rate
    assert values[-1] == pytest.approx(0.1, abs=1e-15)  # and ends at min_factor on the last step
    # the cosine part is the plain cosine over the remaining steps
    tail = Cosine(name="cosine", min_factor=0.1)
    assert values[4:] == pytest.approx([tail.factor(t, total - 4) for t in range(total - 4)], abs=1e-15)
    assert all(b > a for a, b in zip(values[:4], values[1:4]))
    assert non_increasing(values[3:])


def test_warmup_longer_than_the_run_only_warms_up() -> None:
    schedule = WarmupCosine(name="warmup_cosine", warmup_steps=10)
    assert factors(schedule, 5) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


# ---------------------------------------------------------------- agreement with torch


def torch_lrs(make_scheduler, total: int, lr: float = 0.3) -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_is_torchs_cosine_annealing_in_closed_form() -> None:
    total, lr, min_factor = 25, 0.3, 0.2
    expected = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - 1, eta_min=min_factor * lr), total, lr
    )
    schedule = Cosine(name="cosine", min_factor=min_factor)
    assert [lr * f for f in factors(schedule, total)] == pytest.approx(expected, rel=1e-9)


def test_step_is_torchs_step_lr_counted_in_steps() -> None:
    total, lr = 30, 0.3
    expected = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.3), total, lr)
    schedule = Step(name="step", step_size=7, gamma=0.3)
    assert [lr * f for f in factors(schedule, total)] == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- validation


def test_the_discriminated_union_picks_each_schedule() -> None:
    assert SCHEDULE.validate_python({"name": "constant"}) == Constant()
    assert SCHEDULE.validate_python({"name": "cosine"}) == Cosine(name="cosine", min_factor=0.0)
    assert SCHEDULE.validate_python({"name": "step", "step_size": 5}) == Step(name="step", step_size=5, gamma=0.1)
    assert SCHEDULE.validate_python({"name": "warmup_cosine", "warmup_steps": 2}) == WarmupCosine(
        name="warmup_cosine", warmup_steps=2, min_factor=0.0
    )


@pytest.mark.parametrize(
    ("value", "loc", "error_type"),
    [
        ({"name": "exponential"}, (), "union_tag_invalid"),
        ({}, (), "union_tag_not_found"),
        ({"name": "constant", "lr": 1.0}, ("constant", "lr"), "extra_forbidden"),
        ({"name": "cosine", "min_factor": -0.1}, ("cosine", "min_factor"), "greater_than_equal"),
        ({"name": "cosine", "min_factor": 1.5}, ("cosine", "min_factor"), "less_than_equal"),
        ({"name": "cosine", "min_factor": float("nan")}, ("cosine", "min_factor"), "finite_number"),
        (
            {"name": "cosine", "min_factor": "half"},
            ("cosine", "min_factor"),
            "strict_type",
        ),  # a string is never a number
        ({"name": "step"}, ("step", "step_size"), "missing"),
        ({"name": "step", "step_size": 0}, ("step", "step_size"), "greater_than_equal"),
        ({"name": "step", "step_size": 2.5}, ("step", "step_size"), "int_from_float"),
        ({"name": "step", "step_size": 2, "gamma": 0.0}, ("step", "gamma"), "greater_than"),
        ({"name": "step", "step_size": 2, "gamma": 1.01}, ("step", "gamma"), "less_than_equal"),
        ({"name": "step", "step_size": 2, "gamma": float("inf")}, ("step", "gamma"), "finite_number"),
        ({"name": "warmup_cosine"}, ("warmup_cosine", "warmup_steps"), "missing"),
        ({"name": "warmup_cosine", "warmup_steps": 0}, ("warmup_cosine", "warmup_steps"), "greater_than_equal"),
        (
            {"name": "warmup_cosine", "warmup_steps": 3, "min_factor": 2},
            ("warmup_cosine", "min_factor"),
            "less_than_equal",
        ),
        (
            {"name": "warmup_cosine", "warmup_steps": 3, "step_size": 2},
            ("warmup_cosine", "step_size"),
            "extra_forbidden",
        ),
    ],
)
def test_bad_params_are_rejected_at_their_field(value: dict, loc: tuple, error_type: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SCHEDULE.validate_python(value)
    errors = caught.value.errors()
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, error_type)]


def test_schedules_are_frozen() -> None:
    schedule = Step(name="step", step_size=2)
    with pytest.raises(ValidationError):
        schedule.gamma = 0.5  # type: ignore[misc]


def test_describe_lists_every_schedule_with_its_parameters() -> None:
    entries = {entry["name"]: entry for entry in describe()}
    assert (
        set(entries)
        == {"constant", "cosine", "step", "warmup_cosine", "linear", "inverse_sqrt", "wsd", "one_cycle"}
        == {cls.model_fields["name"].annotation.__args__[0] for cls in SCHEDULES}
    )
    params = {name: {p["name"]: p for p in entry["params"]} for name, entry in entries.items()}
    assert set(params["constant"]) == {"warmup_steps", "warmup_fraction"}  # every schedule takes a warm-up
    assert all({"warmup_steps", "warmup_fraction"} <= set(p) for p in params.values())
    assert params["constant"]["warmup_steps"]["default"] == 0 and not params["constant"]["warmup_steps"]["required"]
    assert [p["name"] for p in entries["wsd"]["params"]][-2:] == ["warmup_steps", "warmup_fraction"]
    assert set(params["cosine"]) == {"min_factor", "warmup_steps", "warmup_fraction"}
    assert not params["cosine"]["min_factor"]["required"]
    assert params["step"]["step_size"]["required"] and not params["step"]["gamma"]["required"]
    assert params["step"]["gamma"]["default"] == 0.1
    assert params["warmup_cosine"]["warmup_steps"]["required"]
    assert all(entry["description"] for entry in entries.values())


# ---------------------------------------------------------------- the field's schedules, and warm-up for any


def test_linear_goes_in_a_straight_line_and_is_torchs_linear_lr() -> None:
    schedule = Linear(name="linear", min_factor=0.2)
    assert factors(schedule, 5) == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2], abs=1e-15)
    assert Linear(name="linear").factor(0, 1) == 1.0
    total, lr = 17, 0.3
    expected = torch_lrs(
        lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=total - 1),
        total,
        lr,
    )
    assert [lr * f for f in factors(schedule, total)] == pytest.approx(expected, rel=1e-12)


def test_inverse_sqrt_halves_at_three_timescales_and_is_fairseqs_after_its_warmup() -> None:
    schedule = InverseSqrt(name="inverse_sqrt", timescale=4)
    assert schedule.factor(0, 100) == 1.0
    assert schedule.factor(12, 100) == 0.5
    assert schedule.factor(4, 100) == pytest.approx(math.sqrt(0.5), rel=1e-15)
    warm = InverseSqrt(name="inverse_sqrt", timescale=4, warmup_steps=4)
    assert factors(warm, 6) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, math.sqrt(4 / 5)], rel=1e-15)
    assert [warm.factor(t, 100) for t in range(4, 100)] == pytest.approx(
        [math.sqrt(4 / t) for t in range(4, 100)], rel=1e-14
    )  # lr·sqrt(W / step): fairseq's inverse_sqrt


@pytest.mark.parametrize(
    ("shape", "half"), [("linear", 0.5), ("cosine", 0.5), ("sqrt", 1 - math.sqrt(0.5))], ids=lambda v: str(v)
)
def test_wsd_is_flat_then_cools_down_over_its_fraction(shape: str, half: float) -> None:
    schedule = WSD(name="wsd", cooldown_fraction=0.2, decay_shape=shape, min_factor=0.1)
    values = factors(schedule, 10)  # a cooldown of 2 steps: progress 1/2 then 1
    assert values[:8] == [1.0] * 8
    assert values[8:] == pytest.approx([0.1 + 0.9 * half, 0.1], rel=1e-15)
    long = factors(WSD(name="wsd", cooldown_fraction=0.25, decay_shape=shape), 400)
    assert long[:300] == [1.0] * 300 and non_increasing(long) and long[-1] == 0.0
    p = np.arange(1, 101) / 100
    expected = {"linear": 1 - p, "cosine": 0.5 * (1 + np.cos(np.pi * p)), "sqrt": 1 - np.sqrt(p)}[shape]
    assert long[300:] == pytest.approx(expected.tolist(), abs=1e-15)


def test_wsd_with_a_warmup_is_a_trapezoid() -> None:
    schedule = WSD(name="wsd", warmup_steps=2, cooldown_fraction=0.5)
    assert factors(schedule, 10) == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0], abs=1e-15)
    assert WSD(name="wsd", cooldown_fraction=0.01).factor(0, 3) == 1.0  # at least one cooldown step
    assert WSD(name="wsd", cooldown_fraction=0.01).factor(2, 3) == 0.0


ONE_CYCLES = [
    {},
    {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0},
    {"anneal_strategy": "linear"},
    {"three_phase": True, "pct_start": 0.2},
    {"three_phase": True, "anneal_strategy": "linear", "pct_start": 0.4},
]


@pytest.mark.parametrize("options", ONE_CYCLES, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
@pytest.mark.parametrize("total", [7, 50])
def test_one_cycle_is_torchs_one_cycle_lr(options: dict, total: int) -> None:
    lr = 0.3
    expected = torch_lrs(
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=lr, total_steps=total, cycle_momentum=False, **options),
        total,
        lr,
    )
    schedule = OneCycle(name="one_cycle", **options)
    assert [lr * f for f in factors(schedule, total)] == pytest.approx(expected, rel=1e-12)
    assert schedule.factor(total + 5, total) == schedule.factor(total - 1, total)  # past the end it stays


def test_a_warmup_goes_before_any_schedule_which_then_runs_over_the_remaining_steps() -> None:
    total = 14
    tails: list = [Cosine(name="cosine", min_factor=0.1), Linear(name="linear"), Step(name="step", step_size=3)]
    tails += [InverseSqrt(name="inverse_sqrt", timescale=2), WSD(name="wsd"), OneCycle(name="one_cycle")]
    for tail in tails:
        warm = tail.model_copy(update={"warmup_steps": 4})
        assert factors(warm, total) == pytest.approx([0.25, 0.5, 0.75, 1.0] + factors(tail, total - 4), abs=1e-15)
    # cosine with a warm-up is warmup_cosine
    cosine = Cosine(name="cosine", min_factor=0.1, warmup_steps=4)
    assert factors(cosine, total) == factors(WarmupCosine(name="warmup_cosine", warmup_steps=4, min_factor=0.1), total)
    # warmup-then-constant; a fraction rounds to whole steps of the run
    assert factors(Constant(warmup_steps=3), 6) == pytest.approx([1 / 3, 2 / 3, 1, 1, 1, 1])
    assert Constant(warmup_fraction=0.25).warmup(12) == 3 and Constant(warmup_fraction=0.25).warmup(10) == 2
    assert factors(Constant(warmup_fraction=0.25), 12)[:4] == pytest.approx([1 / 3, 2 / 3, 1, 1])


def test_a_schedule_without_warmup_is_written_as_before() -> None:
    """Stored specs and run hashes of schedules from before warm-ups existed do not change."""
    assert Cosine(name="cosine").model_dump(mode="json") == {"name": "cosine", "min_factor": 0.0}
    assert Constant().model_dump() == {"name": "constant"}
    assert Constant(warmup_steps=5).model_dump() == {"name": "constant", "warmup_steps": 5}
    assert SCHEDULE.validate_python({"name": "wsd", "warmup_fraction": 0.1}).model_dump(mode="json") == {
        "name": "wsd",
        "warmup_fraction": 0.1,
        "cooldown_fraction": 0.2,
        "decay_shape": "linear",
        "min_factor": 0.0,
    }


@pytest.mark.parametrize(
    ("value", "loc", "error_type"),
    [
        ({"name": "cosine", "warmup_steps": 2, "warmup_fraction": 0.1}, ("cosine",), "value_error"),
        ({"name": "constant", "warmup_steps": -1}, ("constant", "warmup_steps"), "greater_than_equal"),
        ({"name": "constant", "warmup_fraction": 1.0}, ("constant", "warmup_fraction"), "less_than"),
        ({"name": "linear", "min_factor": 1.5}, ("linear", "min_factor"), "less_than_equal"),
        ({"name": "inverse_sqrt"}, ("inverse_sqrt", "timescale"), "missing"),
        ({"name": "inverse_sqrt", "timescale": 0}, ("inverse_sqrt", "timescale"), "greater_than_equal"),
        ({"name": "wsd", "cooldown_fraction": 0.0}, ("wsd", "cooldown_fraction"), "greater_than"),
        ({"name": "wsd", "decay_shape": "exp"}, ("wsd", "decay_shape"), "literal_error"),
        ({"name": "one_cycle", "pct_start": 1.0}, ("one_cycle", "pct_start"), "less_than"),
        ({"name": "one_cycle", "div_factor": 0.5}, ("one_cycle", "div_factor"), "greater_than_equal"),
        ({"name": "one_cycle", "three_phase": 1}, ("one_cycle", "three_phase"), "strict_type"),
    ],
)
def test_bad_params_of_the_new_schedules_are_rejected_at_their_field(value: dict, loc: tuple, error_type: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SCHEDULE.validate_python(value)
    assert [(e["loc"], e["type"]) for e in caught.value.errors()] == [(loc, error_type)]
