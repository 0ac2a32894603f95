"""Learning-rate schedules: each factor at known points, its shape, agreement with torch's own schedulers,
and the validation of its parameters."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from engine.schedules import SCHEDULES, Constant, Cosine, Schedule, Step, WarmupCosine, describe

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
        ({"name": "linear"}, (), "union_tag_invalid"),
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
        == {"constant", "cosine", "step", "warmup_cosine"}
        == {cls.model_fields["name"].annotation.__args__[0] for cls in SCHEDULES}
    )
    params = {name: {p["name"]: p for p in entry["params"]} for name, entry in entries.items()}
    assert params["constant"] == {}
    assert set(params["cosine"]) == {"min_factor"} and not params["cosine"]["min_factor"]["required"]
    assert params["step"]["step_size"]["required"] and not params["step"]["gamma"]["required"]
    assert params["step"]["gamma"]["default"] == 0.1
    assert params["warmup_cosine"]["warmup_steps"]["required"]
    assert all(entry["description"] for entry in entries.values())
