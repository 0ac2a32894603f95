"""Adaptive seeding's rounds through the real Celery tasks, executed in-process with ``.apply`` on both
databases: the comparison stays running between rounds, the round task adds the next seeds only to the
undecided pairs and to the baseline, a second delivery of a round adds nothing, and a cancel between
rounds ends it; the last run of a round sends the round task, and the sweeper sends it again when it
is left due."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

from db import adaptive, comparisons, leases
from db.models import Comparison, Run, utcnow
from db.session import transaction
from engine.problem import steps_total
from engine.spec import ComparisonSpec
from tests.specs import adaptive_regression
from worker import adaptive as adaptive_tasks
from worker import dispatch
from worker.adaptive import adaptive_round
from worker.tasks import train_run


def _spec(**adaptive_seeds) -> dict:
    # 'fast' ends some e^-9 below 'base'; 'same' is base's sgd again, so every difference from it is 0
    return adaptive_regression(
        "adaptive",
        {"base": 1e-4, "fast": 0.05, "same": 1e-4},
        {"min": 3, "max": 6, "round": 1, "equivalence": 0.0, **adaptive_seeds},
    )


def _create(spec: dict) -> str:
    parsed = ComparisonSpec.model_validate(spec)
    with transaction() as session:
        return comparisons.create_comparison(session, parsed.model_dump(mode="json"), steps_total(parsed)).id


def _comparison(comparison_id: str) -> tuple[Comparison, list[Run]]:
    with transaction() as session:
        comparison = session.get(Comparison, comparison_id)
        return comparison, list(comparison.runs)


def _train_queued(comparison_id: str) -> None:
    for run in _comparison(comparison_id)[1]:
        if run.status == "queued":
            assert train_run.apply(args=[run.id]).get() == "succeeded"


def _round(comparison_id: str, round_: int) -> int:
    return adaptive_round.apply(args=[comparison_id, round_]).get()


def test_rounds_add_seeds_to_undecided_pairs_only_and_redelivery_adds_nothing(use_database):
    comparison_id = _create(_spec())
    comparison, runs = _comparison(comparison_id)
    assert sorted((run.label, run.seed) for run in runs) == sorted(
        (label, seed) for label in ("base", "fast", "same") for seed in (0, 1, 2)
    )
    assert comparison.adaptive == {"round": 1, "done": False, "stopped": None, "pairs": []}
    _train_queued(comparison_id)
    comparison, _ = _comparison(comparison_id)
    assert comparison.status == "running" and comparison.adaptive_due_at is not None and comparison.finished_at is None
    with transaction() as session:
        assert adaptive.due(session, comparison_id) == 1
    assert _round(comparison_id, 2) == 0  # not the round due: nothing
    rounds = 1
    while True:
        comparison, runs = _comparison(comparison_id)
        if comparison.adaptive["done"]:
            break
        added = _round(comparison_id, rounds)
        assert _round(comparison_id, rounds) == 0  # a second delivery of the same round
        comparison, runs = _comparison(comparison_id)
        undecided = [pair["label"] for pair in comparison.adaptive["pairs"] if not pair["done"]]
        if comparison.adaptive["done"]:
            assert added == 0
            break
        rounds += 1
        new = [run for run in runs if run.status == "queued"]
        assert added == len(new) and sorted(run.label for run in new) == sorted(["base", *undecided])
        assert {run.seed for run in new} == {rounds + 1}  # min 3 seeds (0, 1, 2), then one per round
        _train_queued(comparison_id)
    comparison, runs = _comparison(comparison_id)
    pairs = {pair["label"]: pair for pair in comparison.adaptive["pairs"]}
    # 'same' trains exactly as 'base' does: every difference is 0, never a difference, and no margin: max
    assert pairs["same"]["decision"] == "undecided" and pairs["same"]["seeds"] == 6
    assert pairs["same"]["reason"] == "undecided at max" and pairs["same"]["mean_diff"] == 0
    assert pairs["fast"]["decision"] == "better" and pairs["fast"]["seeds"] < 6
    assert pairs["fast"]["ci_high"] < 0 and pairs["fast"]["ratio_high"] < 1
    assert abs(pairs["fast"]["statistic"]) > pairs["fast"]["boundary"]
    assert comparison.status == "succeeded" and comparison.finished_at is not None
    assert comparison.adaptive_due_at is None
    assert comparison.adaptive["alpha_per_pair"] == 0.05 / 2 and comparison.adaptive["correction"] == "bonferroni"
    assert sorted(run.seed for run in runs if run.label == "same") == [0, 1, 2, 3, 4, 5]
    assert sorted(run.seed for run in runs if run.label == "fast") == list(range(pairs["fast"]["seeds"]))


def test_equal_settings_are_equivalent_within_the_margin_at_the_first_look(use_database):
    comparison_id = _create(_spec(equivalence=0.01))
    _train_queued(comparison_id)
    assert _round(comparison_id, 1) >= 0
    comparison, _ = _comparison(comparison_id)
    pairs = {pair["label"]: pair for pair in comparison.adaptive["pairs"]}
    assert pairs["same"]["decision"] == "equivalent" and pairs["same"]["seeds"] == 3


def test_cancel_between_rounds_ends_adaptive_seeding(use_database):
    comparison_id = _create(_spec())
    _train_queued(comparison_id)
    with transaction() as session:
        assert leases.cancel(session, comparison_id=comparison_id) == []
    comparison, runs = _comparison(comparison_id)
    assert comparison.status == "cancelled" and comparison.adaptive["stopped"] == "cancelled"
    assert _round(comparison_id, 1) == 0 and len(_comparison(comparison_id)[1]) == len(runs)


def test_the_last_run_of_a_round_sends_the_round_task_and_the_sweeper_resends_it(redis_dispatch, monkeypatch):
    monkeypatch.setattr(adaptive_tasks, "celery_app", dispatch.celery_app)  # the test's own Redis queues

    def round_messages() -> list[list]:
        found = []
        for raw in redis_dispatch.messages("cpu"):
            message = json.loads(raw)
            if message["headers"]["task"] == "optibench.adaptive_round":
                found.append(json.loads(base64.b64decode(message["body"]))[0])
        return found

    comparison_id = _create(_spec())
    *first, last = [run for run in _comparison(comparison_id)[1]]
    for run in first:
        train_run.apply(args=[run.id]).get()
    assert round_messages() == []  # the round is not over
    train_run.apply(args=[last.id]).get()
    assert round_messages() == [[comparison_id, 1]]
    assert adaptive_tasks.send_overdue() == 0  # due for less than OPTIBENCH_REPUBLISH_AFTER_S
    with transaction() as session:
        session.get(Comparison, comparison_id).adaptive_due_at = utcnow() - timedelta(hours=1)
    assert adaptive_tasks.send_overdue() == 1
    assert round_messages() == [[comparison_id, 1], [comparison_id, 1]]
    _round(comparison_id, 1)
    assert adaptive_tasks.send_overdue() == 0  # evaluated: no longer due


def test_a_rerun_reuses_every_round_and_is_evaluated_round_after_round_in_one_task(use_database, settings_env):
    settings_env("OPTIBENCH_VECTORIZE", "false")  # runs trained alone: the rerun's plan is the same
    spec = _spec() | {"reuse": True}
    first = _create(spec)
    while not _comparison(first)[0].adaptive["done"]:
        _train_queued(first)
        _round(first, _comparison(first)[0].adaptive["round"])
    parsed = ComparisonSpec.model_validate(spec)
    with transaction() as session:
        again = comparisons.create_comparison(
            session, parsed.model_dump(mode="json"), steps_total(parsed), reuse=True
        ).id
    comparison, runs = _comparison(again)
    assert comparison.status == "running" and all(run.reused_from_id for run in runs)
    assert _round(again, 1) == 0  # every later round reused too: nothing to train
    comparison, runs = _comparison(again)
    assert comparison.status == "succeeded" and comparison.adaptive["done"]
    assert comparison.adaptive["pairs"] == _comparison(first)[0].adaptive["pairs"]
    assert len(runs) == len(_comparison(first)[1]) and all(run.status == "succeeded" for run in runs)
