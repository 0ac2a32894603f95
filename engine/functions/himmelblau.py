import torch

from engine.functions import Function
from engine.registry import NoParams

# (3, 2) is exact; the other three are roots of a cubic, given to float64 precision.
_MINIMIZERS = [
    [3.0, 2.0],
    [-2.805118086952745, 3.131312518250573],
    [-3.7793102533777465, -3.2831859912861696],
    [3.5844283403304917, -1.8481265269644036],
]


class Himmelblau(Function[NoParams]):
    name = "himmelblau"
    description = "Himmelblau's function: (x^2 + y - 11)^2 + (x + y^2 - 7)^2, four minima of value 0."
    Params = NoParams
    vmap_safe = True

    @classmethod
    def value(cls, x: torch.Tensor, params: NoParams) -> torch.Tensor:
        return (x[0] ** 2 + x[1] - 11) ** 2 + (x[0] + x[1] ** 2 - 7) ** 2

    @classmethod
    def default_x0(cls, params: NoParams) -> list[float]:
        return [0.0, 0.0]

    @classmethod
    def minimizers(cls, params: NoParams) -> list[list[float]]:
        return [list(m) for m in _MINIMIZERS]
