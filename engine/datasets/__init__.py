"""Datasets. Each module here defines one; see engine.registry for how they are found."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch

from engine.registry import Component, Params

Task = Literal["regression", "classification"]


@dataclass(frozen=True)
class Data:
    x: torch.Tensor
    y: torch.Tensor
    task: Task
    n_outputs: int  # regression targets, or classes

    def __len__(self) -> int:
        return len(self.x)


class Dataset(Component):
    kind = "dataset"
    task: ClassVar[Task]
    #: real data comes in its own units; synthetic data is already standard normal
    standardize_by_default: ClassVar[bool] = True

    @classmethod
    def load(cls, params: Params) -> Data:
        """The whole dataset on the CPU, deterministic in ``params``."""
        raise NotImplementedError

    @classmethod
    def size(cls, params: Params) -> int:
        """Number of samples, cheaply, for planning step counts at submit time."""
        return len(cls.load(params))


class SklearnTable(Dataset):
    """A classification table that ships with scikit-learn, in its own units (the spec's
    ``standardize`` scales it with training-set statistics)."""

    task = "classification"
    loader: ClassVar[Callable[[], Any]]
    n_samples: ClassVar[int]
    n_classes: ClassVar[int]

    @classmethod
    def load(cls, params: Params) -> Data:
        bunch = cls.loader()
        x = torch.tensor(bunch.data, dtype=torch.float32)
        return Data(x=x, y=torch.tensor(bunch.target, dtype=torch.int64), task="classification", n_outputs=cls.n_classes)

    @classmethod
    def size(cls, params: Params) -> int:
        return cls.n_samples
