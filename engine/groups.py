"""Parameter groups: which of a model's parameters each group of an optimizer entry takes.

A group selects parameters by role or by name (``SELECTORS``, or ``name:<glob>`` over the names of
``module.named_parameters()``, such as ``0.weight``). The roles are read from the built module: its layer
types, parameter shapes and names, and the order its forward pass runs its layers. Validation works on a
module built on the meta device (nothing allocated) and training on the real one, through the same
``partition``, so a run trains exactly the groups its submit checked. Every parameter belongs to exactly
one group; anything else is a ``GroupError`` naming the group and the field (docs/groups.md).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.models import Model
from engine.registry import Params

SELECTORS = {
    "hidden_matrices": "2-D weights outside the embeddings, the norms and the head: Muon's parameters",
    "biases": "every parameter named bias (those of norms and of the head included)",
    "norms": "every parameter of a normalisation layer (LayerNorm, BatchNorm, GroupNorm, RMSNorm, ...)",
    "embeddings": "every parameter of an embedding layer",
    "head": "the output layer's parameters: the last layer with parameters that the forward pass runs",
    "rest": "every parameter that no other group of the entry selects",
}
GLOB = "name:"
REST = "rest"
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
_EMBEDDINGS = (nn.Embedding, nn.EmbeddingBag)


class GroupError(ValueError):
    """A selection that is not a partition. ``loc``: where, relative to the optimizer entry
    (``("groups", 1, "select")``, or ``("groups",)`` for parameters no group selects)."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc, self.message = loc, message


def check_selector(selector: str) -> None:
    """ValueError unless ``selector`` is one of ``SELECTORS`` or a ``name:`` glob."""
    if selector in SELECTORS:
        return
    if selector.startswith(GLOB) and len(selector) > len(GLOB):
        return
    raise ValueError(
        f"unknown selector '{selector}'; selectors: {', '.join(SELECTORS)}, or 'name:<glob>' over parameter names"
    )


@dataclass(frozen=True)
class Parameter:
    name: str
    shape: tuple[int, ...]
    roles: frozenset[str]

    def describe(self) -> str:
        return f"{self.name} {'×'.join(map(str, self.shape)) or 'scalar'}"


def of_model(model: type[Model[Any]], params: Params, input_shape: tuple[int, ...], n_outputs: int) -> list[Parameter]:
    """The trainable parameters of ``model`` built with ``params``, in ``named_parameters`` order, with their
    roles; built on the meta device, so nothing is allocated and a run's seeded initialisation is untouched."""
    with torch.device("meta"):
        module = model.build(params, input_shape, n_outputs)
    head = _head(module, input_shape)
    owners = {id(p): m for m in module.modules() for p in m.parameters(recurse=False)}
    found = []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        owner = owners[id(param)]
        roles = set()
        if isinstance(owner, _EMBEDDINGS):
            roles.add("embeddings")
        if isinstance(owner, _NORMS):
            roles.add("norms")
        if owner is head:
            roles.add("head")
        if name.rsplit(".", 1)[-1] == "bias":
            roles.add("biases")
        if param.ndim == 2 and not roles & {"embeddings", "norms", "head"}:
            roles.add("hidden_matrices")
        found.append(Parameter(name, tuple(param.shape), frozenset(roles)))
    return found


def _head(module: nn.Module, input_shape: tuple[int, ...]) -> nn.Module | None:
    """The last layer holding parameters that a forward pass (on the meta device) runs; the last one
    registered where the forward pass does not run on a float sample."""
    holders = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    ran: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, _i, _o: ran.append(m)) for m in holders]
    try:
        with torch.no_grad():
            module(torch.empty(1, *input_shape, device="meta"))
    except Exception:  # a model whose input is not a float sample (token ids): registration order decides
        ran = []
    finally:
        for hook in hooks:
            hook.remove()
    found = ran or holders
    return found[-1] if found else None


def partition(found: Sequence[Parameter], selects: Sequence[Sequence[str]]) -> list[list[Parameter]]:
    """Each group's parameters, from the groups' selectors (``selects[k]`` is group k's), in
    ``found`` order. GroupError for a selector matching nothing, a parameter selected twice or by no group."""
    names = [p.name for p in found]
    chosen: list[set[str]] = []
    for k, selectors in enumerate(selects):
        mine: set[str] = set()
        for selector in selectors:
            if selector == REST:
                continue
            matched = {p.name for p in found if _matches(p, selector)}
            if not matched:
                raise GroupError(
                    ("groups", k, "select"),
                    f"selector '{selector}' matches no parameter; the parameters: {_listing(found)}",
                )
            mine |= matched
        chosen.append(mine)
    rest = [k for k, selectors in enumerate(selects) if REST in selectors]
    if len(rest) > 1:
        raise GroupError(("groups", rest[1], "select"), f"'rest' is already taken by groups.{rest[0]}")
    if rest:
        others = set().union(*(c for k, c in enumerate(chosen) if k != rest[0]))
        left = set(names) - others
        if not left:
            raise GroupError(
                ("groups", rest[0], "select"), "selector 'rest' matches no parameter: the other groups select them all"
            )
        chosen[rest[0]] |= left
    owner: dict[str, int] = {}
    for k, mine in enumerate(chosen):
        for name in names:
            if name in mine and owner.setdefault(name, k) != k:
                raise GroupError(
                    ("groups", k, "select"),
                    f"'{name}' is also selected by groups.{owner[name]}; every parameter belongs to exactly one group",
                )
    missed = [p for p in found if p.name not in owner]
    if missed:
        raise GroupError(
            ("groups",),
            f"no group selects {_listing(missed)}; add them to a group, or add a group with select 'rest'",
        )
    return [[p for p in found if p.name in mine] for mine in chosen]


def _matches(param: Parameter, selector: str) -> bool:
    if selector.startswith(GLOB):
        return fnmatch.fnmatchcase(param.name, selector[len(GLOB) :])
    return selector in param.roles


def _listing(found: Sequence[Parameter]) -> str:
    return ", ".join(p.describe() for p in found)
