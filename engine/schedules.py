"""Learning-rate schedules: the factor applied to an optimizer entry's ``lr`` at each step.

Each is a closed form in (step, total steps), so a resumed run needs no scheduler state, and the rate
actually used is stored with every step row.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidatorFunctionWrapHandler, model_validator

from engine.registry import validate_strictly


class _Schedule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _strict_scalars(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_strictly(cls, data, handler)

    def factor(self, step: int, total: int) -> float:
        raise NotImplementedError


class Constant(_Schedule):
    """lr at every step."""

    name: Literal["constant"] = "constant"

    def factor(self, step: int, total: int) -> float:
        return 1.0


class Cosine(_Schedule):
    """Cosine annealing from lr to min_factor·lr over the run (torch's CosineAnnealingLR, closed form)."""

    name: Literal["cosine"]
    min_factor: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of lr")

    def factor(self, step: int, total: int) -> float:
        return _cosine(step, total, self.min_factor)


class Step(_Schedule):
    """lr · gamma^(step // step_size) (torch's StepLR, counted in steps)."""

    name: Literal["step"]
    step_size: int = Field(ge=1, description="steps between decays")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="decay factor")

    def factor(self, step: int, total: int) -> float:
        return self.gamma ** (step // self.step_size)


class WarmupCosine(_Schedule):
    """Linear warm-up over warmup_steps, from lr/warmup_steps to lr, then cosine annealing."""

    name: Literal["warmup_cosine"]
    warmup_steps: int = Field(ge=1, description="steps of linear warm-up")
    min_factor: float = Field(0.0, ge=0.0, le=1.0, description="final lr as a fraction of lr")

    def factor(self, step: int, total: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        return _cosine(step - self.warmup_steps, max(total - self.warmup_steps, 1), self.min_factor)


def _cosine(step: int, total: int, min_factor: float) -> float:
    progress = min(step / max(total - 1, 1), 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


Schedule = Annotated[Constant | Cosine | Step | WarmupCosine, Field(discriminator="name")]
SCHEDULES: tuple[type[_Schedule], ...] = (Constant, Cosine, Step, WarmupCosine)


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
            for k, v in schema["properties"].items()
            if k != "name"
        ]
        entries.append(
            {"name": get_args(cls.model_fields["name"].annotation)[0], "description": cls.__doc__, "params": params}
        )
    return entries
