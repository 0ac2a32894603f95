"""The catalogue: every registered component with its parameters, and the lr schedules."""

from __future__ import annotations

from engine import registry, schedules

PLURAL = {
    "optimizer": "optimizers",
    "model": "models",
    "dataset": "datasets",
    "function": "functions",
    "loss": "losses",
}
#: class attributes that matter to a user beyond the parameters
TRAITS = {
    "optimizer": ("full_batch_only",),
    "dataset": ("task", "standardize_by_default"),
    "loss": ("task",),
    "model": (),
    "function": (),
}


def catalog() -> dict[str, list[dict]]:
    found = {
        PLURAL[kind]: [
            registry.describe(cls) | {t: getattr(cls, t) for t in TRAITS[kind]}
            for cls in registry.all_of(kind).values()
        ]
        for kind in registry.KINDS
    }
    found["schedules"] = schedules.describe()
    return found
