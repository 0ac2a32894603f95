"""Sweeps and the DeepOBS tuning protocol through the real Celery task, executed in-process with ``.apply``
on both databases: a swept run trains with its own params; the search phase's last finisher picks each
entry's best setting (the one a plain numpy computation picks) and starts the final phase in the same
transaction; failed, diverged and non-finite runs lose, ties go to the earlier setting; cancel ends it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from db import comparisons, history, leases
from db.models import Comparison, Run
from db.session import transaction
from engine.identity import ENSEMBLE
from engine.problem import steps_total
from engine.spec import ComparisonSpec
from engine.training import train
from worker.tasks import train_run

SGD_LRS = [0.001, 0.003, 0.005, 0.01]  # on Rosenbrock, 0.01 diverges
ADAM_LRS = [0.1, 0.3, 1.0, 3.0]
STEPS = 200


def _create(spec: dict, reuse: bool = False) -> str:
    parsed = ComparisonSpec.model_validate(spec)
    with transaction() as session:
        comparison = comparisons.create_comparison(
            session, parsed.model_dump(mode="json"), steps_total(parsed), reuse=reuse
        )
        return comparison.id


def _runs(comparison_id: str) -> list[Run]:
    with transaction() as session:
        return list(session.get(Comparison, comparison_id).runs)


def _status(comparison_id: str) -> str:
    with transaction() as session:
        return session.get(Comparison, comparison_id).status


def _execute(run_id: str) -> str:
    result = train_run.apply(args=[run_id])
    assert result.successful(), result.traceback
    return result.get()


def _execute_as_planned(runs: list[Run]) -> list[str]:
    """Train runs as the dispatcher would: those planned as an ensemble (one group in these specs) as one."""
    from worker.tasks import train_ensemble_runs

    ensemble = [run.id for run in runs if run.execution == ENSEMBLE]
    results = train_ensemble_runs.apply(args=[ensemble]).get() if ensemble else {}
    return [results[run.id] if run.id in results else _execute(run.id) for run in runs]


def _rosenbrock_tuning(**overrides) -> dict:
    spec = {
        "name": "tuning on rosenbrock",
        "problem": {"function": {"name": "rosenbrock"}},
        "training": {"steps": STEPS},
        "optimizers": [{"name": "sgd", "sweep": {"lr": SGD_LRS}}, {"name": "adam", "sweep": {"lr": ADAM_LRS}}],
        "tuning": {"metric": "final_loss", "seeds": [0, 1, 2]},
        "device": "cpu",
        "dtype": "float64",
        "reuse": False,
    }
    return spec | overrides


# --- the hand computation: plain numpy, from Rosenbrock's gradient -----------------------------


def _rosenbrock(x: np.ndarray) -> float:
    return float((1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2)


def _rosenbrock_grad(x: np.ndarray) -> np.ndarray:
    return np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])


def _final_loss_by_hand(rule: str, lr: float) -> float:
    """f after STEPS updates from (-1.2, 1): gradient descent, or Adam (β = 0.9, 0.999, ε = 1e-8)."""
    x, m, v = np.array([-1.2, 1.0]), np.zeros(2), np.zeros(2)
    with np.errstate(all="ignore"):
        for t in range(1, STEPS + 1):
            g = _rosenbrock_grad(x)
            if rule == "sgd":
                x = x - lr * g
            else:
                m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
                x = x - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        return _rosenbrock(x)


def _best_by_hand(rule: str, lrs: list[float]) -> float:
    losses = {lr: _final_loss_by_hand(rule, lr) for lr in lrs}
    finite = {lr: loss for lr, loss in losses.items() if math.isfinite(loss)}
    return min(finite, key=finite.get)


# --- tests -------------------------------------------------------------------------------------


def test_a_swept_run_trains_with_its_own_lr_scaled_by_the_schedule(use_database):
    spec = {
        "name": "own lr",
        "problem": {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]},
        "training": {"steps": 25},
        "device": "cpu",
        "dtype": "float64",
        "seeds": [0],
        "optimizers": [{"name": "sgd", "schedule": {"name": "cosine"}, "sweep": {"lr": [0.05, 0.2]}}],
    }
    runs = _runs(_create(spec))
    assert [r.optimizer_params["lr"] for r in runs] == [0.05, 0.2]
    assert [_execute(r.id) for r in runs] == ["succeeded", "succeeded"]

    cosine = ComparisonSpec.model_validate(spec).optimizers[0].schedule
    for run, lr in zip(runs, (0.05, 0.2)):
        with transaction() as session:
            steps = list(history.iter_steps(session, run.id))
        assert [s.lr for s in steps] == pytest.approx([lr * cosine.factor(k, 25) for k in range(25)], rel=1e-12)
        # the same as a plain run of that lr, trained directly
        single = ComparisonSpec.model_validate(
            {**spec, "optimizers": [{"name": "sgd", "params": {"lr": lr}, "schedule": {"name": "cosine"}}]}
        )
        batches = []
        train(single, 0, 0, lambda b: batches.append(b) or True, total_steps=25)
        assert [s.loss for s in steps] == np.concatenate([b.loss for b in batches]).tolist()
    with transaction() as session:
        first, second = ([s.loss for s in history.iter_steps(session, r.id)] for r in runs)
    assert first[0] == second[0] and first[1:] != second[1:]


def test_tuning_picks_the_setting_a_hand_computation_picks_then_reruns_it_on_the_other_seeds(use_database):
    comparison_id = _create(_rosenbrock_tuning())
    search = _runs(comparison_id)
    assert [(r.label, r.seed, r.phase) for r in search] == [
        *((f"sgd(lr={lr})", 0, "search") for lr in SGD_LRS),
        *((f"adam(lr={lr})", 0, "search") for lr in ADAM_LRS),
    ]

    statuses = [_execute(r.id) for r in search[:-1]]
    assert _status(comparison_id) == "running" and len(_runs(comparison_id)) == 8  # still searching
    statuses.append(_execute(search[-1].id))
    assert statuses == ["succeeded"] * 3 + ["diverged"] + ["succeeded"] * 4

    search = _runs(comparison_id)[:8]
    for run, (rule, lr) in zip(search, [("sgd", lr) for lr in SGD_LRS] + [("adam", lr) for lr in ADAM_LRS]):
        if run.status == "succeeded":
            assert run.final_loss == pytest.approx(_final_loss_by_hand(rule, lr), rel=1e-6)
    best_sgd, best_adam = _best_by_hand("sgd", SGD_LRS), _best_by_hand("adam", ADAM_LRS)
    assert (best_sgd, best_adam) == (0.005, 1.0)  # neither the largest lr nor the smallest

    # the last search run started the final phase: the chosen settings on seeds 1 and 2, published
    finals = _runs(comparison_id)[8:]
    assert [(r.label, r.seed, r.phase, r.status) for r in finals] == [
        (f"sgd(lr={best_sgd})", 1, "final", "queued"),
        (f"sgd(lr={best_sgd})", 2, "final", "queued"),
        (f"adam(lr={best_adam})", 1, "final", "queued"),
        (f"adam(lr={best_adam})", 2, "final", "queued"),
    ]
    chosen = {r.label: r for r in search}
    for run in finals:
        assert run.optimizer_params == chosen[run.label].optimizer_params
        assert run.sweep_values == chosen[run.label].sweep_values and run.entry_index == chosen[run.label].entry_index
        assert run.enqueued_at is not None and run.config_hash != chosen[run.label].config_hash
    assert _status(comparison_id) == "running"  # never 'succeeded' between the phases

    assert [_execute(r.id) for r in finals] == ["succeeded"] * 4
    assert _status(comparison_id) == "succeeded" and len(_runs(comparison_id)) == 12
    for run in _runs(comparison_id)[8:]:  # a function problem does not depend on the seed
        assert run.final_loss == chosen[run.label].final_loss


def test_val_loss_tuning_picks_the_lowest_last_validation_loss(use_database):
    spec = {
        "name": "tuning on validation loss",
        "problem": {
            "model": {"name": "linear"},
            "loss": "mse_mean",
            "validation_fraction": 0.25,
            "dataset": {"name": "synthetic_regression", "params": {"n_samples": 40, "n_features": 5, "n_targets": 1}},
        },
        "training": {"steps": 30, "eval_every": 10},
        "optimizers": [{"name": "sgd", "sweep": {"lr": [0.003, 0.03, 0.3]}}],
        "tuning": {"metric": "val_loss", "seeds": [0, 1]},
        "device": "cpu",
        "reuse": False,
    }
    comparison_id = _create(spec)
    search = _runs(comparison_id)
    assert _execute_as_planned(search) == ["succeeded"] * 3  # reuse takes runs trained as they will be
    with transaction() as session:
        last_val = {r.label: history.iter_evals(session, r.id)[-1] for r in search}
    assert all(e.step == 30 and math.isfinite(e.val_loss) for e in last_val.values())
    best = min(last_val, key=lambda label: last_val[label].val_loss)

    (final,) = _runs(comparison_id)[3:]
    assert (final.label, final.seed, final.phase) == (best, 1, "final")
    assert _execute(final.id) == "succeeded" and _status(comparison_id) == "succeeded"

    # resubmitted, the choice is made again from the reused runs' evaluations, which live under their sources
    again_id = _create(spec | {"reuse": True}, reuse=True)
    assert [(r.label, r.seed, r.phase, r.reused_from_id) for r in _runs(again_id)] == [
        (r.label, r.seed, r.phase, r.id) for r in _runs(comparison_id)
    ]
    assert _status(again_id) == "succeeded"


def _finish_by_hand(run_id: str, status: str, final_loss: float | None) -> None:
    with transaction() as session:
        claim = leases.claim_run(session, run_id, 60)
        assert leases.finish_run(session, run_id, claim.attempt, status, steps_done=5, final_loss=final_loss)


def test_failed_diverged_and_non_finite_runs_lose_and_a_tie_goes_to_the_earlier_setting(use_database):
    spec = {
        "name": "tuning outcomes",
        "problem": {"function": {"name": "quadratic"}},
        "training": {"steps": 5},
        "optimizers": [
            {"name": "sgd", "sweep": {"lr": [0.1, 0.2, 0.3, 0.4]}},
            {"name": "adam", "sweep": {"lr": [0.1, 0.2]}},
        ],
        "tuning": {"seeds": [5, 6, 7]},
        "reuse": False,
    }
    comparison_id = _create(spec)
    runs = _runs(comparison_id)
    outcomes = [
        ("failed", None),
        ("succeeded", 1.0),
        ("succeeded", 1.0),
        ("diverged", None),  # sgd
        ("succeeded", math.inf),
        ("failed", None),
    ]  # adam: nothing finite
    for run, (status, loss) in zip(runs, outcomes):
        assert _status(comparison_id) in ("queued", "running") and len(_runs(comparison_id)) == 6
        _finish_by_hand(run.id, status, loss)

    finals = _runs(comparison_id)[6:]
    assert [(r.label, r.seed) for r in finals] == [("sgd(lr=0.2)", 6), ("sgd(lr=0.2)", 7)]  # none for adam
    assert _status(comparison_id) == "running"
    for run in finals:
        _finish_by_hand(run.id, "succeeded", 1.0)
    assert _status(comparison_id) == "failed"  # two search runs failed
    assert len(_runs(comparison_id)) == 8  # the finished final phase starts nothing more


def test_cancelling_a_tuning_job_cancels_everything_and_creates_nothing_more(use_database):
    comparison_id = _create(_rosenbrock_tuning(training={"steps": 20}))
    first, *rest = _runs(comparison_id)
    assert _execute(first.id) == "succeeded"
    with transaction() as session:
        assert sorted(leases.cancel(session, comparison_id=comparison_id)) == sorted(r.id for r in rest)
    assert _status(comparison_id) == "cancelled"
    assert [_execute(r.id) for r in rest] == ["skipped"] * 7
    runs = _runs(comparison_id)
    assert len(runs) == 8 and [r.status for r in runs] == ["succeeded"] + ["cancelled"] * 7


def test_a_resubmitted_tuning_job_reuses_both_phases_and_has_succeeded_at_once(use_database):
    spec = {
        "name": "tuning reused",
        "problem": {"function": {"name": "quadratic", "params": {"center": [3.0]}}, "x0": [-1.0]},
        "training": {"steps": 20},
        "device": "cpu",
        "dtype": "float64",
        "optimizers": [{"name": "sgd", "sweep": {"lr": [0.1, 0.3, 0.45]}}],
        "tuning": {"seeds": [0, 1, 2]},
    }
    first_id = _create(spec)
    # the search phase, trained as planned (reuse takes runs trained as they will be); its last run starts
    # the final phase
    assert _execute_as_planned(_runs(first_id)) == ["succeeded"] * 3
    assert [_execute(r.id) for r in _runs(first_id)[3:]] == ["succeeded"] * 2
    originals = _runs(first_id)

    again_id = _create(spec, reuse=True)
    again = _runs(again_id)
    assert _status(again_id) == "succeeded"
    assert [(r.label, r.seed, r.phase, r.status) for r in again] == [
        (r.label, r.seed, r.phase, "succeeded") for r in originals
    ]
    assert [r.reused_from_id for r in again] == [r.id for r in originals]
    assert [r.final_loss for r in again] == [r.final_loss for r in originals]


def test_of_concurrent_last_finishers_exactly_one_starts_the_final_phase(use_database):
    import threading

    spec = {
        "name": "racing finishers",
        "problem": {"function": {"name": "quadratic"}},
        "training": {"steps": 5},
        "optimizers": [{"name": "sgd", "sweep": {"lr": [0.1, 0.2]}}],
        "tuning": {"seeds": [0, 1, 2]},
        "reuse": False,
    }
    for _ in range(5):
        comparison_id = _create(spec)
        runs = _runs(comparison_id)
        with transaction() as session:
            attempts = [leases.claim_run(session, r.id, 60).attempt for r in runs]
        start = threading.Barrier(len(runs))

        def finish(run_id: str, attempt: int, loss: float) -> None:
            start.wait()
            with transaction() as session:
                leases.finish_run(session, run_id, attempt, "succeeded", steps_done=5, final_loss=loss)

        threads = [
            threading.Thread(target=finish, args=(r.id, a, loss)) for r, a, loss in zip(runs, attempts, (2.0, 1.0))
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        finals = _runs(comparison_id)[2:]
        assert [(r.label, r.seed, r.phase) for r in finals] == [("sgd(lr=0.2)", seed, "final") for seed in (1, 2)]
        assert _status(comparison_id) == "running"
