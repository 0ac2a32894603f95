"""Models. Each module here defines one; see engine.registry for how they are found."""

from __future__ import annotations

import math
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from engine.registry import Component, Params

MP = TypeVar("MP", bound=Params)


class Model(Component[MP]):
    kind = "model"
    #: the sample ranks (len of one sample's shape) the model takes; None takes any
    input_ranks: ClassVar[frozenset[int] | None] = None
    #: it takes token ids (a sequence dataset's), not features; the two never mix
    takes_tokens: ClassVar[bool] = False
    #: the parameter a refusal for memory names (the one that sets the size); None names the model
    size_param: ClassVar[str | None] = None
    #: its forward pass is pure tensor maths (no reads back to the host, no buffers changed), so that runs of
    #: it can be stacked under torch.func.vmap into an ensemble (engine.vectorized)
    vmap_safe: ClassVar[bool] = False
    #: the rest of a small problem the tests train it on (its params, a dataset, a loss), benchopt's test_config
    test_problem: ClassVar[dict[str, Any]] = {"dataset": {"name": "iris"}, "loss": "cross_entropy"}

    @classmethod
    def build(cls, params: MP, input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
        """A freshly initialised module; the caller seeds the RNG, so initialisation is reproducible."""
        raise NotImplementedError

    @classmethod
    def parameter_count(cls, params: MP, input_shape: tuple[int, ...], n_outputs: int) -> int:
        """Trainable numbers, without building the module. Built-in models answer by arithmetic; this
        default, for a plug-in that does not say, builds on the meta device, which allocates nothing."""
        return _meta_probe(cls, params, input_shape, n_outputs)[0]

    @classmethod
    def activation_count(cls, params: MP, input_shape: tuple[int, ...], n_outputs: int) -> int:
        """Numbers one sample's forward pass produces (every layer's output, kept for the backward
        pass). The default runs a forward pass on the meta device and counts each leaf module's output."""
        return _meta_probe(cls, params, input_shape, n_outputs)[1]


def _meta_probe(cls: type[Model[MP]], params: MP, input_shape: tuple[int, ...], n_outputs: int) -> tuple[int, int]:
    with torch.device("meta"):
        module = cls.build(params, input_shape, n_outputs)
    produced = 0

    def count(_module, _inputs, output) -> None:
        nonlocal produced
        if isinstance(output, torch.Tensor):
            produced += output.numel()

    hooks = [m.register_forward_hook(count) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            module(torch.empty(1, *input_shape, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return sum(p.numel() for p in module.parameters() if p.requires_grad), max(produced, math.prod(input_shape))
