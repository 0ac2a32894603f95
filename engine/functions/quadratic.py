import torch
from pydantic import Field, model_validator

from engine.functions import Function
from engine.registry import Params


class QuadraticParams(Params):
    center: list[float] = Field([0.0], min_length=1, max_length=10_000, description="the minimizer")
    scale: list[float] | None = Field(None, description="positive curvature per axis; default all 1")

    @model_validator(mode="after")
    def _scale_matches(self) -> "QuadraticParams":
        if self.scale is not None:
            if len(self.scale) != len(self.center):
                raise ValueError("scale must have as many entries as center")
            if any(s <= 0 for s in self.scale):
                raise ValueError("every scale must be > 0")
        return self


class Quadratic(Function[QuadraticParams]):
    name = "quadratic"
    description = "f(x) = sum_i scale_i * (x_i - center_i)^2; the reference notes use center 2, x0 8."
    Params = QuadraticParams
    vmap_safe = True

    @classmethod
    def value(cls, x: torch.Tensor, params: QuadraticParams) -> torch.Tensor:
        center = torch.tensor(params.center, dtype=x.dtype, device=x.device)
        sq = (x - center) ** 2
        if params.scale is not None:
            sq = torch.tensor(params.scale, dtype=x.dtype, device=x.device) * sq
        return sq.sum()

    @classmethod
    def dim(cls, params: QuadraticParams) -> int:
        return len(params.center)

    @classmethod
    def default_x0(cls, params: QuadraticParams) -> list[float]:
        return [c + 6.0 for c in params.center]

    @classmethod
    def minimizers(cls, params: QuadraticParams) -> list[list[float]]:
        return [list(params.center)]
