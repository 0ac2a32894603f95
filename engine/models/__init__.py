"""Models. Each module here defines one; see engine.registry for how they are found."""

from __future__ import annotations

from torch import nn

from engine.registry import Component, Params


class Model(Component):
    kind = "model"

    @classmethod
    def build(cls, params: Params, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
        """A freshly initialised module; the caller seeds the RNG, so initialisation is reproducible."""
        raise NotImplementedError


