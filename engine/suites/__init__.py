"""Suites: named, versioned sets of workloads scored together (docs/suites.md).

One module per suite version in this package, each defining ``SUITE``; ``discover`` finds them, so there is
no central list. A published suite never changes: tests pin each one's ``content_hash``, and a change is a new
version in a new module.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from functools import cache
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.identity import canonical_json
from engine.spec import ComparisonSpec, OptimizerEntry, spec_error

Metric = Literal["val_loss", "val_accuracy"]
#: lower is better for a loss, higher for an accuracy
DIRECTION: dict[str, Literal["min", "max"]] = {"val_loss": "min", "val_accuracy": "max"}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Frozen):
    steps: int = Field(ge=1, description="optimizer updates per run")
    wall_s: float = Field(gt=0, description="seconds of training clock; later evaluations do not count")
    eval_every: int = Field(ge=1, description="steps between evaluations of the held-out set")

    @model_validator(mode="after")
    def _evaluated(self) -> Self:
        if self.eval_every > self.steps:
            raise spec_error(
                ("eval_every",), f"eval_every {self.eval_every} exceeds the budget's {self.steps} steps", 0
            )
        return self


class Workload(_Frozen):
    """A problem (the ComparisonSpec's parts), its budgets and the validation metric scored on it."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    problem: dict[str, Any]
    batch_size: int | Literal["full"] = "full"
    metric: Metric
    budget: Budget
    #: a few steps for tests and smoke runs: not comparable with the full budget, stored apart
    reduced: Budget
    #: a baseline's params tuned for this workload (by its label), over the suite's
    tuned: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def direction(self) -> Literal["min", "max"]:
        return DIRECTION[self.metric]

    def spec(self, optimizers: list[dict[str, Any]], seeds: list[int], budget: Budget, device: str) -> dict[str, Any]:
        """The comparison that runs ``optimizers`` on this workload within ``budget``, a baseline with its
        settings tuned for this workload."""
        optimizers = [
            entry | {"params": entry.get("params", {}) | self.tuned[entry["label"]]}
            if entry.get("label") in self.tuned
            else entry
            for entry in optimizers
        ]
        return {
            "name": self.name,
            "problem": self.problem,
            "training": {"steps": budget.steps, "batch_size": self.batch_size, "eval_every": budget.eval_every},
            "optimizers": optimizers,
            "seeds": seeds,
            "device": device,
        }


class Suite(_Frozen):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    version: int = Field(ge=1)
    description: str
    workloads: list[Workload] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    reduced_seeds: list[int] = Field(min_length=1)
    #: tuned settings, each an optimizer entry of a comparison with a distinct label
    baselines: list[dict[str, Any]] = Field(min_length=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: the ratio of the best time up to which the performance profile is integrated (AlgoPerf's r_max)
    tau_max: float = Field(4.0, gt=1)

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()

    def workload(self, name: str) -> Workload:
        return next(w for w in self.workloads if w.name == name)

    @model_validator(mode="after")
    def _runnable(self) -> Self:
        """Every workload's comparison of the baselines validates at both budgets and records its metric."""
        names = [w.name for w in self.workloads]
        if len(set(names)) != len(names):
            raise spec_error(("workloads",), "workload names must be distinct", names)
        for i, workload in enumerate(self.workloads):
            for budget_name in ("budget", "reduced"):
                budget = getattr(workload, budget_name)
                try:
                    spec = ComparisonSpec.model_validate(workload.spec(self.baselines, self.seeds, budget, self.device))
                except ValidationError as exc:
                    error = exc.errors()[0]
                    raise spec_error(("workloads", i, *error["loc"]), error["msg"], error.get("input")) from None
                check_metric(spec, workload.metric, ("workloads", i, "metric"))
        return self


def check_metric(spec: ComparisonSpec, metric: str, loc: tuple[str | int, ...]) -> None:
    """A metric the comparison's evaluations record: a held-out set, and accuracy only for classification."""
    if spec.problem.is_function or not spec.problem.validation_fraction:
        raise spec_error(loc, f"'{metric}' needs a dataset problem with validation_fraction > 0", metric)
    if metric == "val_accuracy" and spec.problem.dataset_ref.component.task not in ("classification", "sequence"):
        raise spec_error(loc, "'val_accuracy' is recorded for classification and sequence datasets only", metric)


def baseline_entries(suite: Suite) -> list[OptimizerEntry]:
    return [OptimizerEntry.model_validate(b) for b in suite.baselines]


@cache
def discover() -> dict[str, Suite]:
    """Every suite in this package, by id (lite-v1)."""
    found: dict[str, Suite] = {}
    for module in pkgutil.iter_modules(__path__):
        suite = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SUITE", None)
        if isinstance(suite, Suite):
            if suite.id in found:
                raise RuntimeError(f"two modules define suite {suite.id}")
            found[suite.id] = suite
    return found
