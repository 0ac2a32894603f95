"""Sweeps and the tuning protocol: the runs a spec asks for.

An optimizer entry's ``sweep`` maps parameter names to values: a list, or a grid of ``n`` points over
``[lo, hi]`` (``uniform``: evenly spaced; ``log_uniform``: evenly spaced in log space). Grids are
deterministic, not random (DeepOBS tunes on a grid too): the ends exactly as given, the points between
rounded to 6 significant digits, so that they, the labels and the runs' hashes are short and the same on
every machine. Several swept parameters give the Cartesian product, the first name varying slowest.

Validation (engine.spec) turns every sweep into explicit lists of normalised values. From there on,
everything here works on the validated spec in its JSON form (``ComparisonSpec.model_dump(mode="json")``),
which is what the database stores, so the API, the database layer and the worker expand it alike.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: tuning jobs: the sweep on the first seed, then the chosen setting on the remaining seeds
SEARCH, FINAL = "search", "final"
#: settings per optimizer entry
MAX_SETTINGS = 1000
GRID_DIGITS = 6


@dataclass(frozen=True)
class RunConfig:
    entry_index: int
    label: str
    #: the run's exact, full optimizer params
    params: dict[str, Any]
    #: the swept ones among them; empty without a sweep
    sweep_values: dict[str, Any]
    seed: int
    #: tuning jobs only: SEARCH or FINAL
    phase: str | None = None


def grid(kind: str, lo: float, hi: float, n: int) -> list[float]:
    """``n`` points from ``lo`` to ``hi``, both included: evenly spaced ('uniform') or evenly spaced in
    log space ('log_uniform')."""
    if kind == "log_uniform":
        a, b = math.log(lo), math.log(hi)
        inner = (math.exp(a + (b - a) * i / (n - 1)) for i in range(1, n - 1))
    else:
        inner = (lo + (hi - lo) * i / (n - 1) for i in range(1, n - 1))
    return [lo, *(float(f"{x:.{GRID_DIGITS}g}") for x in inner), hi]


def settings(sweep: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the swept values, the first name varying slowest; [{}] without a sweep."""
    return [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]


def describe(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={json.dumps(value)}" for name, value in values.items())


def swept_label(label: str, values: Mapping[str, Any]) -> str:
    """The entry's label plus the swept values, e.g. ``adam(lr=0.001)``; the label alone without a sweep."""
    return f"{label}({describe(values)})" if values else label


def expand(spec: Mapping[str, Any]) -> list[RunConfig]:
    """The runs to create at submit: every setting × seed, entry by entry; for a tuning job only the
    search phase (every setting on the first tuning seed)."""
    tuning = spec.get("tuning")
    seeds, phase = ([tuning["seeds"][0]], SEARCH) if tuning else (first_seeds(spec), None)
    return [
        RunConfig(i, swept_label(entry["label"], values), {**entry["params"], **values}, values, seed, phase)
        for i, entry in enumerate(spec["optimizers"])
        for values in settings(entry.get("sweep", {}))
        for seed in seeds
    ]


def runs_per_entry(spec: Mapping[str, Any]) -> list[int]:
    """How many runs each entry will have in all, counted without expanding (for the limits): a tuning
    job's search runs plus its final runs; with adaptive seeding, as many as its max seeds."""
    tuning = spec.get("tuning")
    counts = [math.prod(len(values) for values in entry.get("sweep", {}).values()) for entry in spec["optimizers"]]
    if tuning:
        return [n + len(tuning["seeds"]) - 1 for n in counts]
    adaptive = adaptive_seeds(spec)
    return [n * (adaptive["max"] if adaptive else len(spec["seeds"])) for n in counts]


def adaptive_seeds(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The spec's adaptive seeding, in its JSON form, or None for a list of seeds."""
    seeds = spec.get("seeds")
    return seeds["adaptive"] if isinstance(seeds, Mapping) else None


def first_seeds(spec: Mapping[str, Any]) -> list[int]:
    """The seeds its runs start with: the list, or adaptive seeding's first round (0, 1, ..., min - 1)."""
    adaptive = adaptive_seeds(spec)
    return list(range(adaptive["min"])) if adaptive else list(spec["seeds"])
