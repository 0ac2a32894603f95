"""Vectorized ensembles against the same runs trained one by one (engine/vectorized.py).

Both sides include everything a worker would do per run or per ensemble: building the problem and the
modules, training with every step recorded into a sink that keeps nothing, and the final whole-set loss.
A warm-up run first keeps one-off costs (imports, CUDA context) out of both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from bench.common import Result
from engine.problem import steps_total
from engine.spec import ComparisonSpec
from engine.training import train
from engine.vectorized import Member, parameter_count, train_ensemble

SWEEP_TARGET = 20.0
MLP_TARGET = 10.0


def _keep_nothing(batch: Any) -> bool:
    return True


def _sweep_spec(n_lrs: int, steps: int, optimizer: str, device: str) -> ComparisonSpec:
    lrs = np.logspace(-4, -1, n_lrs)
    return ComparisonSpec.model_validate(
        {
            "name": "bench: lr sweep on rosenbrock",
            "problem": {"function": {"name": "rosenbrock"}},
            "training": {"steps": steps},
            "device": device,
            "dtype": "float64",
            "optimizers": [{"name": optimizer, "params": {"lr": float(lr)}} for lr in lrs],
        }
    )


def _mlp_spec(
    n_lrs: int, n_seeds: int, hidden: list[int], training: dict, device: str, dataset: dict | None = None
) -> ComparisonSpec:
    lrs = np.logspace(-3, -1.5, n_lrs)
    return ComparisonSpec.model_validate(
        {
            "name": "bench: small MLPs",
            "device": device,
            "seeds": list(range(n_seeds)),
            "problem": {
                "model": {"name": "mlp", "params": {"hidden": hidden}},
                "dataset": dataset or {"name": "digits"},
                "loss": "cross_entropy",
            },
            "training": training,
            "optimizers": [{"name": "adam", "params": {"lr": float(lr)}} for lr in lrs],
        }
    )


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _seconds(work: Callable[[], Any], device: str) -> float:
    started = time.perf_counter()
    work()
    _sync(device)
    return time.perf_counter() - started


def compare(spec: ComparisonSpec, trials: int = 1) -> dict[str, float]:
    """Seconds for every (entry, seed) run of ``spec`` one by one, and as one ensemble, and their ratio:
    the fastest of ``trials`` alternating trials of each, which is robust to other load on the machine."""
    assert isinstance(spec.seeds, list)  # the bench's specs list their seeds (none is adaptive)
    members = [Member(i, seed) for i in range(len(spec.optimizers)) for seed in spec.seeds]
    total = steps_total(spec)
    device = "cuda" if spec.device == "cuda" else "cpu"

    def vectorized(steps: int = total) -> None:
        train_ensemble(spec, members, [_keep_nothing] * len(members), total_steps=steps)

    def sequential(steps: int = total) -> None:
        for member in members:
            train(spec, member.entry_index, member.seed, _keep_nothing, total_steps=steps)

    vectorized(min(total, 20))
    sequential(min(total, 20))
    times = [(_seconds(vectorized, device), _seconds(sequential, device)) for _ in range(trials)]
    best_vectorized, best_sequential = min(t[0] for t in times), min(t[1] for t in times)
    return {
        "members": len(members),
        "steps": total,
        "sequential_s": best_sequential,
        "vectorized_s": best_vectorized,
        "speedup": best_sequential / best_vectorized,
    }


def lr_sweep(n_lrs: int = 64, steps: int = 2000, optimizer: str = "adam", device: str = "cpu") -> dict[str, Any]:
    """A log-spaced lr sweep on Rosenbrock, one seed."""
    timing = compare(_sweep_spec(n_lrs, steps, optimizer, device))
    return {
        "name": f"{n_lrs}-config lr sweep on rosenbrock ({optimizer}, {steps} steps, {device})",
        "target": SWEEP_TARGET,
        "measured": timing["speedup"],
        "unit": "x faster than sequential",
        "passed": timing["speedup"] >= SWEEP_TARGET,
        **timing,
    }


def small_mlps(
    device: str,
    n_lrs: int = 4,
    n_seeds: int = 4,
    hidden: list[int] | None = None,
    batch_size: int = 32,
    epochs: int = 2,
    trials: int = 3,
) -> dict[str, Any]:
    """n_lrs × n_seeds Adam runs of an MLP on digits (1797 samples), mini-batches, shuffled epochs."""
    hidden = [64] if hidden is None else hidden
    timing = compare(_mlp_spec(n_lrs, n_seeds, hidden, {"epochs": epochs, "batch_size": batch_size}, device), trials)
    return {
        "name": f"{n_lrs * n_seeds} MLP{hidden} runs on digits (batch {batch_size}, {device})",
        "target": MLP_TARGET if device == "cuda" else None,
        "measured": timing["speedup"],
        "unit": "x faster than sequential",
        "passed": timing["speedup"] >= MLP_TARGET if device == "cuda" else None,
        **timing,
    }


#: (width, batch size) pairs around the CPU's break-even point
GRID = (
    (16, 16),
    (16, 128),
    (16, 1024),
    (64, 16),
    (64, 128),
    (64, 1024),
    (256, 16),
    (256, 128),
    (256, 512),
    (512, 16),
    (512, 64),
)


def where_it_pays(
    device: str, grid: tuple[tuple[int, int], ...] = GRID, members: int = 16, steps: int = 30, trials: int = 2
) -> Iterator[dict]:
    """Speed-up of ``members`` runs of a two-hidden-layer MLP (width × width) as one ensemble, over width ×
    batch size, on 2048 synthetic samples × 64 features: the measurements behind ``should_vectorize``."""
    dataset = {"name": "synthetic_classification", "params": {"n_samples": 2048, "n_features": 64, "n_classes": 10}}
    for width, batch_size in grid:
        spec = _mlp_spec(members, 1, [width, width], {"steps": steps, "batch_size": batch_size}, device, dataset)
        n_params = parameter_count(spec)
        yield {
            "width": width,
            "batch_size": batch_size,
            "params": n_params,
            "work_per_member": n_params * batch_size,
            **compare(spec, trials),
        }


#: a library optimizer without a rule: its ensemble steps the library's own Lion once over all members (stacked_params)
LIBRARY_OPTIMIZER = "pytorch_optimizer.lion"


def run() -> Iterator[Result]:
    """The targets of `make bench`: the lr sweep by a rule (Adam) and by a library's optimizer (Lion), and the
    MLPs, which count on a GPU only."""
    yield _result(lr_sweep(), "vectorized vs sequential, CPU")
    yield _result(lr_sweep(optimizer=LIBRARY_OPTIMIZER), "vectorized vs sequential, CPU, the library's own step")
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        yield _result(small_mlps(device), f"vectorized vs sequential, {device.upper()}")
    if not torch.cuda.is_available():
        yield Result(
            "16 small MLP runs",
            "vectorized vs sequential, GPU",
            f">= {MLP_TARGET:g}x",
            None,
            None,
            {"reason": "no CUDA device on this machine"},
        )


def _result(measured: dict[str, Any], measure: str) -> Result:
    details = {k: v for k, v in measured.items() if k not in ("name", "target", "measured", "passed")}
    target = (
        f">= {measured['target']:g}x" if measured["target"] is not None else f"none on CPU (GPU: >= {MLP_TARGET:g}x)"
    )
    return Result(measured["name"], measure, target, measured["measured"], measured["passed"], details)
