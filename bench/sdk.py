"""Issue 17's client side, against a real `optibench serve` on PostgreSQL: what the SDK costs a training loop.

- ``run.log`` in a loop of a million steps on the CPU, flushes, Arrow encoding and spool writes included, the
  uploads running beside it on their thread: microseconds per step.
- The MLP example (Adam with AMSGrad, 500 epochs) as a bare PyTorch loop against the same loop logging every
  step through ``start_run``/``run.log`` and against ``sdk.train`` (the engine's loop). Each side builds its
  problem and ends with every row on the server. The three sides take turns, in an order that rotates from
  trial to trial (whichever ran first was a few percent faster here), and the figure is the median of the
  trials' ratios: on two shared cores the fastest trials of a 0.5 s run differ by ±4 % between identical loops.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch

from bench.api import _api_key, _server
from bench.common import Result, example_spec, postgres_database
from db.migrate import upgrade
from optibench import sdk
from optibench.client import Client

LOG_STEPS = 1_000_000
LOG_TARGET_US = 1.0
LOOP_TARGET = 0.97
TRIALS = 15


def _spec() -> dict:
    spec = example_spec("mlp_adam_amsgrad.json").model_dump(mode="json")
    return spec | {"optimizers": spec["optimizers"][:1], "seeds": [0], "device": "cpu", "reuse": False}


def _adam(params) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-4, eps=1e-8, amsgrad=True)


def _bare(client: Client, comparison_id: str) -> tuple[float, float]:
    """(seconds of the training loop, seconds from fetching the problem to the end)."""
    started = time.perf_counter()
    problem = sdk.LocalProblem.from_comparison(client, comparison_id)
    model = problem.model(0)
    optimizer = _adam(model.parameters())
    loop = time.perf_counter()
    for batch in problem.batches(0):
        loss = problem.loss(model, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ended = time.perf_counter()
    return ended - loop, ended - started


def _own_loop(client: Client, comparison_id: str, spool: str, label: str) -> tuple[float, float]:
    """The same, logging every step through ``run.log``; the end is the server having every row and the finish."""
    started = time.perf_counter()
    problem = sdk.LocalProblem.from_comparison(client, comparison_id)
    with sdk.start_run(client, problem, seed=0, label=label, spool_dir=spool) as run:
        model = run.model
        optimizer = _adam(model.parameters())
        loop = time.perf_counter()
        for batch in run.batches():
            loss = problem.loss(model, batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log(loss)
        loop_s = time.perf_counter() - loop
    return loop_s, time.perf_counter() - started


def _engine_loop(client: Client, comparison_id: str, spool: str, label: str) -> tuple[float, float]:
    """``sdk.train``: its loop is the run's training clock (the recorder's), its end the server's finish."""
    started = time.perf_counter()
    [stored] = sdk.train(client, comparison_id, _adam, label=label, seeds=[0], spool_dir=spool)
    return stored["wall_time_s"], time.perf_counter() - started


def _log_cost(client: Client, comparison_id: str, spool: str) -> tuple[float, int]:
    """Microseconds per ``run.log`` over LOG_STEPS steps, and the rows the server stored."""
    problem = sdk.LocalProblem.from_comparison(client, comparison_id)
    loss = torch.tensor(1.5)
    run = sdk.start_run(client, problem, seed=0, label="log cost", spool_dir=spool)
    for _ in run.batches():  # only the first: the clock starts
        break
    log = run.log
    started = time.perf_counter()
    for _ in range(LOG_STEPS):
        log(loss)
    elapsed = time.perf_counter() - started
    run.finish(final_loss=1.5)
    return elapsed / LOG_STEPS * 1e6, client.run(run.id)["steps_done"]


def run() -> list[Result]:
    torch.set_num_threads(1)
    spool = tempfile.mkdtemp(prefix="optibench-bench-spool-")
    with postgres_database() as database_url:
        upgrade(database_url)
        with _server(database_url) as url, Client(url, api_key=_api_key(database_url)) as client:
            comparison_id = client.submit(_spec())["id"]
            micros, stored = _log_cost(client, comparison_id, spool)
            times: dict[str, list[tuple[float, float]]] = {"bare": [], "own loop": [], "sdk.train": []}
            sides = {
                "bare": lambda trial: _bare(client, comparison_id),
                "own loop": lambda trial: _own_loop(client, comparison_id, spool, f"own {trial}"),
                "sdk.train": lambda trial: _engine_loop(client, comparison_id, spool, f"train {trial}"),
            }
            names = list(sides)
            for trial in range(TRIALS):
                for name in names[trial % 3 :] + names[: trial % 3]:
                    times[name].append(sides[name](trial))
    results = [
        Result(
            "SDK run.log in a loop (CPU)",
            f"µs per step over {LOG_STEPS:,} steps, flushes and spooling included",
            f"<= {LOG_TARGET_US:g}",
            micros,
            micros <= LOG_TARGET_US and stored == LOG_STEPS,
            {"rows_stored": stored},
        )
    ]
    for side in ("own loop", "sdk.train"):
        loop_ratios = [bare[0] / sdk_side[0] for bare, sdk_side in zip(times["bare"], times[side])]
        total_ratios = [bare[1] / sdk_side[1] for bare, sdk_side in zip(times["bare"], times[side])]
        ratio = statistics.median(loop_ratios)
        results.append(
            Result(
                f"MLP example through the SDK ({side})",
                f"training loop steps/s ÷ bare PyTorch loop's, median of {TRIALS} paired trials",
                f">= {LOOP_TARGET}",
                ratio,
                ratio >= LOOP_TARGET,
                {
                    "fastest_ratio": min(b[0] for b in times["bare"]) / min(s[0] for s in times[side]),
                    "bare_loop_s": statistics.median(b[0] for b in times["bare"]),
                    "sdk_loop_s": statistics.median(s[0] for s in times[side]),
                    # the run's fixed costs too: fetching the problem, creating the run, the last upload, the finish
                    "end_to_end_ratio": statistics.median(total_ratios),
                },
            )
        )
    return results
