"""Losses: small enough to live together. A loss maps (prediction, target) to a scalar."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.nn import functional as F

from engine.datasets import IGNORE, Task
from engine.registry import Component, Params


class Loss(Component[Params]):
    kind = "loss"
    task: ClassVar[Task]
    #: how a whole-set loss is assembled from chunks: "sum" adds them, "mean" weights them by rows
    reduction: ClassVar[str] = "mean"

    @staticmethod
    def fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class MSESum(Loss):
    name = "mse_sum"
    description = "Sum of squared errors: torch.nn.MSELoss(reduction='sum'), as in the reference example."
    task = "regression"
    reduction = "sum"

    @staticmethod
    def fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(prediction, target, reduction="sum")


class MSEMean(Loss):
    name = "mse_mean"
    description = "Mean squared error: torch.nn.MSELoss()."
    task = "regression"

    @staticmethod
    def fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(prediction, target)


class L1(Loss):
    name = "l1"
    description = "Mean absolute error: torch.nn.L1Loss()."
    task = "regression"

    @staticmethod
    def fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(prediction, target)


class CrossEntropy(Loss):
    name = "cross_entropy"
    description = "Softmax cross-entropy on integer class labels: torch.nn.CrossEntropyLoss()."
    task = "classification"

    @staticmethod
    def fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(prediction, target)


class TokenCrossEntropy(Loss):
    name = "token_cross_entropy"
    description = (
        "Softmax cross-entropy per token of a sequence, (N, T, vocab) logits against (N, T) next tokens, "
        "averaged over the scored tokens (targets of -100 are not scored); exp of it is the perplexity."
    )
    task = "sequence"

    @staticmethod
    def fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(prediction.flatten(0, -2), target.flatten(), ignore_index=IGNORE)
