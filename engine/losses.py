"""Losses: small enough to live together. A loss maps (prediction, target) to a scalar."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch.nn import functional as F

from engine.datasets import Task
from engine.registry import Component

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Loss(Component):
    kind = "loss"
    task: ClassVar[Task]
    fn: ClassVar[LossFn]
    #: how a whole-set loss is assembled from chunks: "sum" adds them, "mean" weights them by rows
    reduction: ClassVar[str] = "mean"


class MSESum(Loss):
    name = "mse_sum"
    description = "Sum of squared errors: torch.nn.MSELoss(reduction='sum'), as in the reference example."
    task = "regression"
    reduction = "sum"
    fn = staticmethod(lambda pred, target: F.mse_loss(pred, target, reduction="sum"))


class MSEMean(Loss):
    name = "mse_mean"
    description = "Mean squared error: torch.nn.MSELoss()."
    task = "regression"
    fn = staticmethod(lambda pred, target: F.mse_loss(pred, target))


class L1(Loss):
    name = "l1"
    description = "Mean absolute error: torch.nn.L1Loss()."
    task = "regression"
    fn = staticmethod(lambda pred, target: F.l1_loss(pred, target))


class CrossEntropy(Loss):
    name = "cross_entropy"
    description = "Softmax cross-entropy on integer class labels: torch.nn.CrossEntropyLoss()."
    task = "classification"
    fn = staticmethod(lambda logits, labels: F.cross_entropy(logits, labels))
