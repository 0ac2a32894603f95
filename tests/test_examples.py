"""Every spec in examples/ is valid, and every run in it trains (a few steps of each)."""

import json
from pathlib import Path

import pytest

from engine.problem import steps_total
from engine.spec import ComparisonSpec
from engine.training import train

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.json"))


def test_there_is_one_example_per_reference_situation():
    assert {p.stem for p in EXAMPLES} >= {
        "mlp_adam_amsgrad",
        "adam_vs_sgd_quadratic",
        "update_rules",
        "local_gain_vs_rmsprop_momentum_adam",
        "adam_bias_correction",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_valid_and_every_entry_trains(path):
    spec = ComparisonSpec.model_validate(json.loads(path.read_text()))
    for i, entry in enumerate(spec.optimizers):
        steps = min(steps_total(spec, i), 20)
        batches = []
        outcome = train(spec, i, spec.seeds[0], lambda b: batches.append(b) or True, total_steps=steps)
        assert outcome.status == "succeeded", (entry.label, outcome)
        assert sum(len(b) for b in batches) == steps


def test_update_rules_example_has_the_three_rules():
    spec = ComparisonSpec.model_validate(json.loads((EXAMPLES[0].parent / "update_rules.json").read_text()))
    per_epoch = [steps_total(spec, i) // spec.training.epochs for i in range(3)]
    n_train = 142  # wine: 178 samples, 20% held out
    assert per_epoch == [1, -(-n_train // 16), n_train]
