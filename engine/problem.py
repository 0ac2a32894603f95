"""Turns a spec's problem into tensors on a device, a seeded module, and a seeded batch order.

Fairness lives here: for one seed, every optimizer gets the same initial weights (the module is
built under ``torch.manual_seed(seed)`` on the CPU, then moved) and the same batch order (a pure
function of seed and epoch, so a resumed run can rebuild it without saved generator state).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engine.datasets import IGNORE
from engine.spec import ComparisonSpec, Problem, Training

EVAL_CHUNK_ROWS = 8192


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the spec asks for device 'cuda' but this worker has no CUDA device")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``; to a GPU through pinned memory, so the copy never waits for the device."""
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The sample order of one epoch: a fresh permutation per epoch, or one fixed order."""
    if not shuffle:
        return torch.arange(n)
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state) & (2**63 - 1))
    return torch.randperm(n, generator=generator)


@dataclass(frozen=True)
class BatchPlan:
    n: int
    batch_size: int | None  # None: the full batch
    shuffle: bool
    drop_last: bool
    seed: int

    @classmethod
    def for_training(cls, n: int, training: Training, seed: int, batch_size: int | str | None = None) -> BatchPlan:
        """``batch_size`` overrides the training's own (an optimizer entry may set its own)."""
        batch_size = batch_size or training.batch_size
        size = batch_size if isinstance(batch_size, int) and batch_size < n else None  # "full", or all n
        return cls(n=n, batch_size=size, shuffle=training.shuffle, drop_last=training.drop_last, seed=seed)

    @property
    def batches_per_epoch(self) -> int:
        if self.batch_size is None:
            return 1
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def batches(
        self, device: torch.device, start_step: int = 0, seeds: Sequence[int] | None = None
    ) -> Iterator[tuple[int, torch.Tensor | None]]:
        """(epoch, sample indices) for every step from ``start_step`` on, forever; None is the full batch.
        With ``seeds``, the batches of several runs at once: [len(seeds), B], each row its seed's order."""
        per_epoch = self.batches_per_epoch
        epoch, skip = divmod(start_step, per_epoch)
        while True:
            if self.batch_size is None:
                yield epoch, None
            else:
                if seeds is None:
                    order = epoch_order(self.n, self.seed, epoch, self.shuffle)
                else:
                    order = torch.stack([epoch_order(self.n, seed, epoch, self.shuffle) for seed in seeds])
                order = to_device(order, device)
                for b in range(skip, per_epoch):
                    yield epoch, order[..., b * self.batch_size : (b + 1) * self.batch_size]
            epoch, skip = epoch + 1, 0


def split_sizes(n: int, validation_fraction: float) -> tuple[int, int]:
    """(train, validation) sample counts; at least one training sample."""
    n_val = min(int(round(n * validation_fraction)), n - 1)
    return n - n_val, n_val


def split_indices(n: int, validation_fraction: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    n_train, _ = split_sizes(n, validation_fraction)
    if n_train == n:
        return torch.arange(n), torch.arange(0)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return order[:n_train].sort().values, order[n_train:].sort().values


class BuiltProblem:
    """What the training loop needs: a module per seed, a batch loss and a whole-set loss."""

    n_train: int
    is_function: bool

    def make_module(self, seed: int) -> nn.Module:
        raise NotImplementedError

    def batch_loss(self, module: nn.Module, indices: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def full_loss(self, module: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, module: nn.Module) -> dict[str, torch.Tensor]:
        """Whole-set metrics, left on the device: train_loss, and val_loss / accuracies where they apply."""
        return {"train_loss": self.full_loss(module)}

    def point(self, module: nn.Module) -> torch.Tensor | None:
        """For function problems, x: the live tensor, which every update changes in place; None otherwise."""
        return None


class _Point(nn.Module):
    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x = nn.Parameter(x0)


class FunctionProblem(BuiltProblem):
    n_train = 1
    is_function = True

    def __init__(self, problem: Problem, device: torch.device, dtype: torch.dtype) -> None:
        function = problem.function_ref
        self.function = function.component
        self.params = function.typed_params
        self.x0 = torch.tensor(problem.x0, dtype=dtype, device=device)

    def make_module(self, seed: int) -> nn.Module:
        return _Point(self.x0.clone())

    def batch_loss(self, module: nn.Module, indices: torch.Tensor | None) -> torch.Tensor:
        return self.function.value(_x(module), self.params)

    def full_loss(self, module: nn.Module) -> torch.Tensor:
        return self.function.value(_x(module), self.params)

    def point(self, module: nn.Module) -> torch.Tensor:
        return _x(module).detach()


def _x(module: nn.Module) -> torch.Tensor:
    """A function problem's point (the module make_module built)."""
    x = module.x
    assert isinstance(x, torch.Tensor)
    return x


class DatasetProblem(BuiltProblem):
    is_function = False

    def __init__(self, problem: Problem, device: torch.device, dtype: torch.dtype) -> None:
        dataset = problem.dataset_ref
        data = dataset.component.load(dataset.typed_params)
        if data.task == "regression" and tuple(data.y.shape) != (len(data), data.n_outputs):
            # the model outputs [N, n_outputs]; a loss would silently broadcast other targets against it
            raise ValueError(
                f"dataset '{dataset.name}' has regression targets of shape "
                f"{tuple(data.y.shape)}, but the model outputs {(len(data), data.n_outputs)} "
                f"for its {len(data)} samples and {data.n_outputs} targets"
            )
        train, val = split_indices(len(data), problem.validation_fraction, problem.split_seed)
        x = data.x
        if problem.standardize:  # in float64, in place: engine.sizing counts one float64 copy
            x = x.to(torch.float64, copy=True)
            mean, std = x[train].mean(dim=0), x[train].std(dim=0, correction=0)
            x.sub_(mean).div_(torch.where(std > 0, std, torch.ones_like(std)))
        x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)  # token ids stay integers
        y = data.y.to(device=device, dtype=dtype) if data.task == "regression" else data.y.to(device)
        if len(val):
            self.x, self.y = x[train.to(device)], y[train.to(device)]
        else:  # every sample trains, in order: no copy
            self.x, self.y = x, y
        self.x_val, self.y_val = x[val.to(device)], y[val.to(device)]
        self.classification = data.task != "regression"  # classes, or a sequence's next tokens
        self.n_train = len(train)
        self.n_outputs = data.n_outputs
        self.model = problem.model_ref
        self.loss = problem.loss_component
        self.device, self.dtype = device, dtype

    def make_module(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self.model.component.build(self.model.typed_params, tuple(self.x.shape[1:]), self.n_outputs)
        return module.to(device=self.device, dtype=self.dtype)

    def batch_loss(self, module: nn.Module, indices: torch.Tensor | None) -> torch.Tensor:
        if indices is None:
            return self.loss.fn(module(self.x), self.y)
        return self.loss.fn(module(self.x[indices]), self.y[indices])

    def full_loss(self, module: nn.Module) -> torch.Tensor:
        return self._whole_set(module, self.x, self.y)[0]

    def evaluate(self, module: nn.Module) -> dict[str, torch.Tensor]:
        metrics: dict[str, torch.Tensor] = {}
        sets = [("train", self.x, self.y)] + ([("val", self.x_val, self.y_val)] if len(self.x_val) else [])
        for name, x, y in sets:
            loss, accuracy = self._whole_set(module, x, y)
            metrics[f"{name}_loss"] = loss
            if accuracy is not None:
                metrics[f"{name}_accuracy"] = accuracy
        return metrics

    @torch.no_grad()
    def _whole_set(
        self, module: nn.Module, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Loss over a whole set in chunks, as the batch loss would be on all of it, and accuracy."""
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        for start in range(0, len(x), EVAL_CHUNK_ROWS):
            xb, yb = x[start : start + EVAL_CHUNK_ROWS], y[start : start + EVAL_CHUNK_ROWS]
            out = module(xb)
            chunk = self.loss.fn(out, yb).double()
            total += chunk if self.loss.reduction == "sum" else chunk * len(xb)
            if self.classification:  # the class is the last axis: (N, classes), or a sequence's (N, T, vocab)
                correct += (out.argmax(dim=-1) == yb).sum()
        loss = total if self.loss.reduction == "sum" else total / len(x)
        # every sample of a sequence dataset scores as many tokens as the others (IGNORE marks the rest)
        return loss, (correct / (y != IGNORE).sum() if self.classification else None)


def build_problem(problem: Problem, device: torch.device, dtype: torch.dtype) -> BuiltProblem:
    cls = FunctionProblem if problem.is_function else DatasetProblem
    return cls(problem, device, dtype)


def train_size(problem: Problem) -> int:
    if problem.is_function:
        return 1
    dataset = problem.dataset_ref
    n = dataset.component.size(dataset.typed_params)
    return split_sizes(n, problem.validation_fraction)[0]


def steps_total(spec: ComparisonSpec, entry_index: int = 0) -> int:
    """Updates per run of an optimizer entry, known at submit time without loading the data."""
    if spec.training.steps is not None:
        return spec.training.steps
    entry = spec.optimizers[entry_index]
    plan = BatchPlan.for_training(train_size(spec.problem), spec.training, seed=0, batch_size=entry.batch_size)
    if spec.training.epochs is None:
        raise ValueError("training gives neither steps nor epochs")
    return spec.training.epochs * plan.batches_per_epoch
