"""How much memory a run needs, from its spec alone: nothing is loaded and nothing is built.

The API refuses a spec whose runs would not fit a worker's memory budget before storing it, and the
worker checks again before it builds anything (see docs/reliability.md). Components describe their own
size: a dataset its shape (``Dataset.shape``), a model its parameters and the activations of one sample
(``Model.parameter_count``, ``Model.activation_count``), an optimizer its state as a multiple of the
parameters (``Optimizer.state_multiple``). The estimate follows what ``engine.problem`` and
``engine.training`` allocate:

- data: the loaded float32 table, its float64 copy while it is standardized, the copy in the run's dtype
  and, with a validation set, the train/validation split of it; and the targets;
- parameters and their gradients, in the run's dtype;
- optimizer state, and a copy of the parameters when ``update_norm`` is recorded;
- activations of a training batch (the inputs, every layer's output and its gradient) or of an
  evaluation chunk, whichever is larger;
- an ensemble of M stacked runs (engine.vectorized) shares the data and multiplies the rest by M.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine.problem import EVAL_CHUNK_ROWS, BatchPlan, split_sizes
from engine.spec import ComparisonSpec

DTYPE_BYTES = {"float32": 4, "float64": 8}
#: datasets load their features as float32 and class labels as int64
SOURCE_BYTES = 4
LABEL_BYTES = 8

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per part of one run (or ensemble), and the spec field that drives each part."""

    parts: dict[str, int]
    locs: dict[str, Loc]

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    @property
    def loc(self) -> Loc:
        """The field to change to make the run smaller: the one behind its largest part."""
        groups = {
            "data": self.parts["data"],
            "activations": self.parts["activations"],
            "model": self.parts["parameters"] + self.parts["gradients"] + self.parts["optimizer state"],
        }
        largest = max(groups, key=lambda group: groups[group])
        if largest != "model":
            return self.locs[largest]
        state_dominates = self.parts["optimizer state"] > self.parts["parameters"] + self.parts["gradients"]
        return self.locs["optimizer state" if state_dominates else "parameters"]

    def describe(self) -> str:
        parts = ", ".join(f"{name} {human_bytes(size)}" for name, size in self.parts.items() if size)
        return f"about {human_bytes(self.total)} ({parts})"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def estimate(
    spec: ComparisonSpec, entry_index: int = 0, optimizer_params: dict[str, Any] | None = None, members: int = 1
) -> MemoryEstimate:
    """The peak memory of one run of ``spec.optimizers[entry_index]`` (with a swept run's own
    ``optimizer_params``), or of an ensemble of ``members`` such runs trained together."""
    entry = spec.optimizers[entry_index]
    hyper = entry.typed_params if optimizer_params is None else entry.component.Params.model_validate(optimizer_params)
    # with parameter groups, the largest of their optimizers' multiples: an upper bound over every parameter
    multiples = [entry.component.state_multiple(hyper)] + [o.state_multiple(p) for o, p in entry.group_optimizers()]
    state_multiple = max(multiples) + ("update_norm" in spec.training.extras)
    width = DTYPE_BYTES[spec.dtype]
    problem = spec.problem
    optimizer_loc: Loc = (
        ("optimizers", entry_index, "params", entry.component.size_param)
        if entry.component.size_param
        else ("optimizers", entry_index, "name")
    )
    if problem.is_function:
        n_params = len(problem.start)
        parts = {
            "data": 0,
            "parameters": n_params * width,
            "gradients": n_params * width,
            "optimizer state": math.ceil(state_multiple * n_params * width),
            "activations": n_params * width,
        }
        locs = dict.fromkeys(parts, ("problem", "x0")) | {"optimizer state": optimizer_loc}
        return _stacked(parts, locs, members)

    dataset, model = problem.dataset_ref, problem.model_ref
    shape = dataset.component.shape(dataset.typed_params)
    features = math.prod(shape.sample_shape)
    n_train, n_val = split_sizes(shape.n_samples, problem.validation_fraction)
    copies = width * (2 if n_val else 1)  # the run's dtype, and its train/validation split
    x_bytes = features * (SOURCE_BYTES + (8 if problem.standardize else 0) + copies)
    if dataset.component.task == "regression":
        y_bytes = shape.n_outputs * (SOURCE_BYTES + copies)
    elif dataset.component.task == "sequence":  # token ids in and next tokens out, int64 each, never standardized
        x_bytes = y_bytes = LABEL_BYTES * features * (2 if n_val else 1)
    else:
        y_bytes = LABEL_BYTES * (2 if n_val else 1)
    n_params = model.component.parameter_count(model.typed_params, shape.sample_shape, shape.n_outputs)
    per_sample = model.component.activation_count(model.typed_params, shape.sample_shape, shape.n_outputs)
    rows = BatchPlan.for_training(n_train, spec.training, 0, entry.batch_size).batch_size or n_train
    training = rows * (features + 2 * per_sample) * width  # the batch, each layer's output and its gradient
    evaluation = min(EVAL_CHUNK_ROWS, n_train) * (features + per_sample) * width
    parts = {
        "data": shape.n_samples * (x_bytes + y_bytes),
        "parameters": n_params * width,
        "gradients": n_params * width,
        "optimizer state": math.ceil(state_multiple * n_params * width),
        "activations": max(training, evaluation),
    }
    model_loc: Loc = (
        ("problem", "model", "params", model.component.size_param)
        if model.component.size_param
        else ("problem", "model", "name")
    )
    own_batch = entry.batch_size != spec.training.batch_size
    locs = {
        "data": (
            ("problem", "dataset", "params", dataset.component.size_param)
            if dataset.component.size_param
            else ("problem", "dataset", "name")
        ),
        "parameters": model_loc,
        "gradients": model_loc,
        "optimizer state": optimizer_loc,
        "activations": ("optimizers", entry_index, "batch_size") if own_batch else ("training", "batch_size"),
    }
    return _stacked(parts, locs, members)


def _stacked(parts: dict[str, int], locs: dict[str, Loc], members: int) -> MemoryEstimate:
    return MemoryEstimate({name: size * (members if name != "data" else 1) for name, size in parts.items()}, locs)


def largest_run(spec: ComparisonSpec) -> MemoryEstimate:
    """The estimate of the comparison's largest run, over every entry and every swept setting."""
    runs = [
        estimate(spec, i, {**entry.params, **setting} if setting else None)
        for i, entry in enumerate(spec.optimizers)
        for setting in entry.settings
    ]
    return max(runs, key=lambda run: run.total)


def parameter_count(spec: ComparisonSpec) -> int:
    """Trainable numbers per run: the model's parameters, or a function problem's coordinates."""
    problem = spec.problem
    if problem.is_function:
        return len(problem.start)
    dataset, model = problem.dataset_ref, problem.model_ref
    shape = dataset.component.shape(dataset.typed_params)
    return model.component.parameter_count(model.typed_params, shape.sample_shape, shape.n_outputs)
