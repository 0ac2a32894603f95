"""Datasets. Each module here defines one; see engine.registry for how they are found."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import torch

from engine.registry import Component, Params

#: "sequence": x holds token ids (N, T) and y the next token at each position (N, T), IGNORE where not scored
Task = Literal["regression", "classification", "sequence"]
ValidationMetric = Literal["accuracy", "loss", "perplexity"]
#: a sequence target that is not scored (torch's cross-entropy ignore_index)
IGNORE = -100
#: what a task is judged by on held-out data, unless its dataset declares otherwise
_DEFAULT_METRIC: dict[str, tuple[ValidationMetric, bool]] = {
    "classification": ("accuracy", True),
    "regression": ("loss", False),
    "sequence": ("perplexity", False),
}


@dataclass(frozen=True)
class Data:
    x: torch.Tensor
    y: torch.Tensor
    task: Task
    n_outputs: int  # regression targets, or classes

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class DataShape:
    """A dataset's sizes, known from its params alone: what the API sizes a run with."""

    n_samples: int
    sample_shape: tuple[int, ...]
    n_outputs: int  # regression targets, or classes (an upper bound where only the data would tell)


DP = TypeVar("DP", bound=Params)


class Dataset(Component[DP]):
    kind = "dataset"
    task: ClassVar[Task]
    #: real data comes in its own units; synthetic data is already standard normal
    standardize_by_default: ClassVar[bool] = True
    #: the parameter a refusal for memory names (the one that sets the size); None names the dataset
    size_param: ClassVar[str | None] = None
    #: what its held-out evaluations are judged by (val_accuracy, val_loss, or exp(val_loss)), and which way is
    #: better; by default the task's (classification: accuracy, regression: loss, sequence: perplexity)
    validation_metric: ClassVar[ValidationMetric]
    higher_is_better: ClassVar[bool]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        task = getattr(cls, "task", None)
        if task is not None and not hasattr(cls, "validation_metric"):
            cls.validation_metric, cls.higher_is_better = _DEFAULT_METRIC[task]

    @classmethod
    def load(cls, params: DP) -> Data:
        """The whole dataset on the CPU, deterministic in ``params``."""
        raise NotImplementedError

    @classmethod
    def shape(cls, params: DP) -> DataShape:
        """Sizes from ``params`` alone, at submit time, without loading the data. Built-in datasets
        answer by arithmetic or from a file header; this default, for a plug-in that does not say,
        has to load the data once."""
        data = cls.load(params)
        return DataShape(len(data), tuple(data.x.shape[1:]), data.n_outputs)

    @classmethod
    def size(cls, params: DP) -> int:
        """Number of samples, cheaply, for planning step counts at submit time."""
        return cls.shape(params).n_samples


class SklearnTable(Dataset[Params]):
    """A classification table that ships with scikit-learn, in its own units (the spec's
    ``standardize`` scales it with training-set statistics)."""

    task = "classification"
    loader: ClassVar[Callable[[], Any]]
    n_samples: ClassVar[int]
    n_features: ClassVar[int]
    n_classes: ClassVar[int]

    @classmethod
    def load(cls, params: Params) -> Data:
        bunch = cls.loader()
        x = torch.tensor(bunch.data, dtype=torch.float32)
        return Data(
            x=x, y=torch.tensor(bunch.target, dtype=torch.int64), task="classification", n_outputs=cls.n_classes
        )

    @classmethod
    def shape(cls, params: Params) -> DataShape:
        return DataShape(cls.n_samples, (cls.n_features,), cls.n_classes)


def validation_value(metric: ValidationMetric, evaluation: dict[str, Any]) -> float | None:
    """A dataset's validation metric from one stored evaluation (its val_loss and val_accuracy); None if absent."""
    if metric == "accuracy":
        return evaluation.get("val_accuracy")
    loss = evaluation.get("val_loss")
    if loss is None or metric == "loss":
        return loss
    return math.exp(min(loss, 700.0))  # perplexity; beyond e^700 a float overflows
