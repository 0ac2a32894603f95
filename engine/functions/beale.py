import torch

from engine.functions import Function
from engine.registry import NoParams


class Beale(Function[NoParams]):
    name = "beale"
    description = "Beale: (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2, minimum 0 at (3, 0.5)."
    Params = NoParams
    vmap_safe = True

    @classmethod
    def value(cls, x: torch.Tensor, params: NoParams) -> torch.Tensor:
        u, v = x[0], x[1]
        return (1.5 - u + u * v) ** 2 + (2.25 - u + u * v**2) ** 2 + (2.625 - u + u * v**3) ** 2

    @classmethod
    def default_x0(cls, params: NoParams) -> list[float]:
        return [1.0, 1.0]

    @classmethod
    def minimizers(cls, params: NoParams) -> list[list[float]]:
        return [[3.0, 0.5]]
