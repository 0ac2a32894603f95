"""Training through a worker, with every step recorded, against a bare PyTorch loop on the same spec.

The worker side is the real Celery task (``worker.tasks.train_run``) called in-process against the
embedded SQLite database: claim, training with the recorder, the background writer, finish. The
bare side builds the same problem, optimizer and batch order and runs the same updates, recording
nothing. Both include building the problem. Trials alternate, and the fastest of each is compared (as
timeit does: on a shared machine, slower trials measure the neighbours, not the code).
"""

from __future__ import annotations

import statistics
import time

import torch

from bench.common import Result, example_spec
from db import comparisons
from db.session import transaction
from engine.problem import BatchPlan, build_problem, resolve_device, steps_total
from engine.spec import ComparisonSpec
from engine.training import DTYPES

#: trials per side: the short MLP run needs more for its fastest trial to be stable
TRIALS = {"mlp": 15, "function": 7}

FUNCTION_SPEC = {
    "name": "bench: adam on rosenbrock",
    "problem": {"function": {"name": "rosenbrock"}},
    "training": {"steps": 20_000},
    "optimizers": [{"name": "adam", "params": {"lr": 1e-3}}],
    "seeds": [0],
}


def bare_loop(spec: ComparisonSpec, seed: int = 0) -> float:
    """Seconds for the run's updates with nothing recorded."""
    started = time.perf_counter()
    device = resolve_device(spec.device)
    problem = build_problem(spec.problem, device, DTYPES[spec.dtype])
    entry = spec.optimizers[0]
    module = problem.make_module(seed)
    optimizer = entry.component.build([p for p in module.parameters() if p.requires_grad], entry.typed_params)
    batches = BatchPlan.for_training(problem.n_train, spec.training, seed, entry.batch_size).batches(device)
    for _ in range(steps_total(spec, 0)):
        _, indices = next(batches)

        def closure() -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = problem.batch_loss(module, indices)
            loss.backward()
            return loss

        optimizer.step(closure)  # type: ignore[arg-type]  # torch's stub wants a float closure; a tensor one is what it takes
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def through_worker(spec: ComparisonSpec) -> float:
    """Seconds for the Celery task to train and record the same run."""
    from worker.tasks import train_run

    with transaction() as session:
        run_id = comparisons.create_comparison(session, spec.model_dump(mode="json"), steps_total(spec, 0)).runs[0].id
    started = time.perf_counter()
    assert train_run(run_id) == "succeeded"
    return time.perf_counter() - started


def measure(name: str, spec: ComparisonSpec, trials: int) -> Result:
    steps = steps_total(spec, 0)
    bare, worker = [], []
    for _ in range(trials):
        bare.append(bare_loop(spec))
        worker.append(through_worker(spec))
    ratio = min(bare) / min(worker)
    return Result(
        f"recording overhead: {name}",
        "steps/s through a worker ÷ bare loop",
        ">= 0.95",
        ratio,
        ratio >= 0.95,
        {
            "steps": steps,
            "trials": trials,
            "bare_steps_per_s": steps / min(bare),
            "worker_steps_per_s": steps / min(worker),
            "median_ratio": statistics.median(bare) / statistics.median(worker),
        },
    )


def run() -> list[Result]:
    mlp = example_spec("mlp_adam_amsgrad.json")
    mlp = mlp.model_copy(update={"optimizers": mlp.optimizers[:1], "seeds": [0]})
    return [
        measure("MLP example (adam, 500 epochs)", mlp, TRIALS["mlp"]),
        measure("rosenbrock (adam, 20k steps)", ComparisonSpec.model_validate(FUNCTION_SPEC), TRIALS["function"]),
    ]
