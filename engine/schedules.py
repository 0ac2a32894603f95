"""Learning-rate schedules: the factor applied to an optimizer entry's ``lr`` at each step.

Each is a closed form in (step, total steps), so a resumed run needs no scheduler state, and the rate
actually used is stored with every step row. Every schedule takes a linear warm-up (``warmup_steps``, or
``warmup_fraction`` of the run): over its W steps the factor rises as (t + 1) / W, and the schedule then
runs over the remaining steps as if they were the whole run (docs/schedules.md).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from engine.registry import validate_strictly

_WARMUP = ("warmup_steps", "warmup_fraction")


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    warmup_steps: int = Field(0, ge=0, le=10_000_000, description="steps of linear warm-up before the schedule")
    warmup_fraction: float = Field(
        0.0, ge=0.0, lt=1.0, description="warm-up as a share of the run's steps (rounded); instead of warmup_steps"
    )

    @model_validator(mode="wrap")
    @classmethod
    def _strict_scalars(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_strictly(cls, data, handler)

    @model_validator(mode="after")
    def _one_warmup(self) -> Self:
        if self.warmup_steps and self.warmup_fraction:
            raise ValueError("give warmup_steps or warmup_fraction, not both")
        return self

    @model_serializer(mode="wrap")
    def _without_no_warmup(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a schedule without warm-up is written as it was before warm-ups existed: stored specs and run hashes keep
        return {k: v for k, v in handler(self).items() if not (k in _WARMUP and not v)}

    def warmup(self, total: int) -> int:
        return self.warmup_steps or round(self.warmup_fraction * total)

    def factor(self, step: int, total: int) -> float:
        warmup = self.warmup(total)
        if step < warmup:
            return (step + 1) / warmup
        return self.decay(step - warmup, max(total - warmup, 1))

    def decay(self, step: int, total: int) -> float:
        """The factor at ``step`` of a run of ``total`` steps, the warm-up left out."""
        raise NotImplementedError


class Constant(_Schedule):
    """lr at every step (after the warm-up, if any)."""

    name: Literal["constant"] = "constant"

    def decay(self, step: int, total: int) -> float:
        return 1.0


class Cosine(_Schedule):
    """Cosine annealing from lr to min_factor·lr over the run (torch's CosineAnnealingLR, closed form)."""

    name: Literal["cosine"]
    min_factor: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of lr")

    def decay(self, step: int, total: int) -> float:
        return _cosine(step, total, self.min_factor)


class Step(_Schedule):
    """lr · gamma^(step // step_size) (torch's StepLR, counted in steps)."""

    name: Literal["step"]
    step_size: int = Field(ge=1, description="steps between decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor")

    def decay(self, step: int, total: int) -> float:
        return self.gamma ** (step // self.step_size)


class WarmupCosine(Cosine):
    """Linear warm-up over warmup_steps, from lr/warmup_steps to lr, then cosine annealing (the same as
    cosine with warmup_steps)."""

    name: Literal["warmup_cosine"]  # type: ignore[assignment]
    warmup_steps: int = Field(ge=1, le=10_000_000, description="steps of linear warm-up")


class Linear(_Schedule):
    """Linear decay from lr at the first step to min_factor·lr at the last (torch's LinearLR)."""

    name: Literal["linear"]
    min_factor: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of lr")

    def decay(self, step: int, total: int) -> float:
        return 1.0 - (1.0 - self.min_factor) * _progress(step, total)


class InverseSqrt(_Schedule):
    """lr·sqrt(timescale / (timescale + t)) at t steps after the warm-up: the rate halves at t = 3·timescale.
    With warmup_steps = timescale = W it is lr·sqrt(W / step) after the warm-up, fairseq's inverse_sqrt."""

    name: Literal["inverse_sqrt"]
    timescale: int = Field(ge=1, le=10_000_000, description="steps after which the rate has fallen by 1/sqrt(2)")

    def decay(self, step: int, total: int) -> float:
        return math.sqrt(self.timescale / (self.timescale + step))


class WSD(_Schedule):
    """Warmup-stable-decay (trapezoid): the full rate, then a cooldown over the last cooldown_fraction of the
    steps (after the warm-up) down to min_factor·lr at the last step, in the shape decay_shape."""

    name: Literal["wsd"]
    cooldown_fraction: float = Field(
        0.2, gt=0.0, le=1.0, description="share of the steps after the warm-up spent cooling down (at least one step)"
    )
    decay_shape: Literal["linear", "cosine", "sqrt"] = Field(
        "linear", description="the cooldown's shape in its progress p: 1 − p, (1 + cos πp)/2, or 1 − √p"
    )
    min_factor: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of lr")

    def cooldown(self, total: int) -> int:
        return min(max(round(self.cooldown_fraction * total), 1), total)

    def decay(self, step: int, total: int) -> float:
        cooldown = self.cooldown(total)
        into = step - (total - cooldown)
        if into < 0:
            return 1.0
        p = min((into + 1) / cooldown, 1.0)
        shape = {"linear": 1.0 - p, "cosine": 0.5 * (1.0 + math.cos(math.pi * p)), "sqrt": 1.0 - math.sqrt(p)}
        return self.min_factor + (1.0 - self.min_factor) * shape[self.decay_shape]


class OneCycle(_Schedule):
    """torch's OneCycleLR on the rate (no momentum cycling), with lr as its max_lr: from lr/div_factor up to
    lr over pct_start of the run, then down to lr/(div_factor·final_div_factor); with three_phase, back to
    lr/div_factor over as many steps first."""

    name: Literal["one_cycle"]
    pct_start: float = Field(0.3, gt=0.0, lt=1.0, description="share of the run spent rising to lr")
    div_factor: float = Field(25.0, ge=1.0, description="the first rate is lr/div_factor")
    final_div_factor: float = Field(1e4, ge=1.0, description="the last rate is lr/(div_factor·final_div_factor)")
    anneal_strategy: Literal["cos", "linear"] = Field("cos", description="the shape of every phase")
    three_phase: bool = Field(False, description="fall back to lr/div_factor before the final annealing")

    def decay(self, step: int, total: int) -> float:
        initial = 1.0 / self.div_factor
        lowest = initial / self.final_div_factor
        rise_end = float(self.pct_start * total) - 1
        if self.three_phase:
            phases = [(rise_end, initial, 1.0), (float(2 * self.pct_start * total) - 2, 1.0, initial)]
        else:
            phases = [(rise_end, initial, 1.0)]
        phases.append((float(total - 1), phases[-1][2], lowest))
        step = min(step, total - 1)
        start = 0.0
        for i, (end, first, last) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                pct = (step - start) / (end - start) if end > start else 1.0
                if self.anneal_strategy == "cos":
                    return last + (first - last) / 2.0 * (math.cos(math.pi * pct) + 1)
                return (last - first) * pct + first
            start = end
        raise AssertionError("unreachable: the last phase always answers")


def _progress(step: int, total: int) -> float:
    return min(step / max(total - 1, 1), 1.0)


def _cosine(step: int, total: int, min_factor: float) -> float:
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * _progress(step, total)))


Schedule = Annotated[
    Constant | Cosine | Step | WarmupCosine | Linear | InverseSqrt | WSD | OneCycle, Field(discriminator="name")
]
SCHEDULES: tuple[type[_Schedule], ...] = (Constant, Cosine, Step, WarmupCosine, Linear, InverseSqrt, WSD, OneCycle)


def describe() -> list[dict]:
    """Catalogue entries for the schedules."""
    entries = []
    for cls in SCHEDULES:
        schema = cls.model_json_schema()
        params = [
            {
                "name": k,
                "required": k in schema.get("required", []),
                **{kk: vv for kk, vv in v.items() if kk != "title"},
            }
            for k, v in sorted(schema["properties"].items(), key=lambda item: item[0] in _WARMUP)
            if k != "name"
        ]
        entries.append(
            {"name": get_args(cls.model_fields["name"].annotation)[0], "description": cls.__doc__, "params": params}
        )
    return entries
