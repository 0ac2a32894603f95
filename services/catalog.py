"""The catalogue: every registered component with its parameters, the lr schedules and the group selectors."""

from __future__ import annotations

import functools
import re
from typing import Any

from engine import groups, registry, schedules
from engine.optimizers import Optimizer

PLURAL = {
    "optimizer": "optimizers",
    "model": "models",
    "dataset": "datasets",
    "function": "functions",
    "loss": "losses",
}
#: class attributes that matter to a user beyond the parameters
TRAITS = {
    "optimizer": ("full_batch_only", "source", "version", "family"),
    "dataset": ("task", "standardize_by_default", "validation_metric", "higher_is_better"),
    "loss": ("task",),
    "model": ("takes_tokens",),
    "function": (),
}
#: what the training loop owes an optimizer (docs/catalogue.md)
CAPABILITIES = (
    "elementwise",
    "full_batch_only",
    "needs_closure",
    "needs_hvp",
    "needs_loss",
    "train_eval_modes",
    "param_shapes",
)


def _reference(text: str) -> dict[str, str] | None:
    """'title, URL' (or a bare URL) as {"title", "url"}."""
    if not text:
        return None
    url = re.search(r"https?://\S+", text)
    title = text[: url.start()].rstrip(", ").strip() if url else text
    return {"title": title or (url.group(0) if url else text), **({"url": url.group(0)} if url else {})}


def optimizer_entry(cls: type[Optimizer[Any]]) -> dict[str, Any]:
    """An optimizer's catalogue entry: parameters, source, family, reference, capabilities, and whether it runs."""
    return registry.describe(cls) | {
        **{trait: getattr(cls, trait) for trait in TRAITS["optimizer"]},
        "reference": _reference(cls.reference),
        "capabilities": {name: getattr(cls, name) for name in CAPABILITIES},
        "supported": cls.unsupported is None,
        "unsupported_reason": cls.unsupported,
        "fixed": dict(getattr(cls, "fixed", {})),
    }


def catalog() -> dict[str, list[dict]]:
    """The catalogue, described once per set of registered components (150 optimizers take 0.3 s to describe)."""
    return _catalog_of(tuple(tuple(registry.names(kind)) for kind in registry.KINDS))


@functools.lru_cache(maxsize=2)
def _catalog_of(names: tuple[tuple[str, ...], ...]) -> dict[str, list[dict]]:
    found = {
        PLURAL[kind]: [
            optimizer_entry(cls)  # type: ignore[arg-type]
            if kind == "optimizer"
            else registry.describe(cls) | {t: getattr(cls, t) for t in TRAITS[kind]}
            for cls in registry.all_of(kind).values()
        ]
        for kind in registry.KINDS
    }
    found["schedules"] = schedules.describe()
    found["selectors"] = [{"name": name, "description": text} for name, text in groups.SELECTORS.items()] + [
        {"name": f"{groups.GLOB}<glob>", "description": "parameters whose name matches the glob (name:0.*)"}
    ]
    return found
