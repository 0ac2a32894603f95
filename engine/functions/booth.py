import torch

from engine.functions import Function
from engine.registry import NoParams


class Booth(Function[NoParams]):
    name = "booth"
    description = "Booth's function: (x + 2y - 7)^2 + (2x + y - 5)^2, a tilted quadratic bowl with minimum 0 at (1, 3)."
    Params = NoParams
    vmap_safe = True

    @classmethod
    def value(cls, x: torch.Tensor, params: NoParams) -> torch.Tensor:
        return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2

    @classmethod
    def default_x0(cls, params: NoParams) -> list[float]:
        return [-5.0, 5.0]

    @classmethod
    def minimizers(cls, params: NoParams) -> list[list[float]]:
        return [[1.0, 3.0]]
