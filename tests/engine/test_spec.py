"""ComparisonSpec validation alone: defaults filled in, labels derived, errors at their exact location, and a
normalised spec surviving a JSON round trip. Nothing here trains."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from engine import registry
from engine.schedules import Constant, Cosine
from engine.spec import ComparisonSpec

FUNCTION_PROBLEM = {"function": {"name": "quadratic", "params": {"center": [2.0]}}}
DATASET_PROBLEM = {
    "model": {"name": "linear"},
    "dataset": {"name": "synthetic_regression", "params": {"n_samples": 10, "n_features": 3, "n_targets": 2}},
    "loss": "mse_mean",
}
CLASSIFICATION_PROBLEM = {
    "model": {"name": "mlp", "params": {"hidden": [4]}},
    "dataset": {"name": "synthetic_classification", "params": {"n_samples": 30, "n_features": 4}},
    "loss": "cross_entropy",
}


def make(problem: dict | None = None, training: dict | None = None, optimizers: list | None = None, **top: Any) -> dict:
    return {
        "name": "spec under test",
        "problem": copy.deepcopy(problem if problem is not None else DATASET_PROBLEM),
        "training": training if training is not None else {"epochs": 2},
        "optimizers": optimizers if optimizers is not None else [{"name": "sgd"}],
        **top,
    }


def errors_of(data: dict) -> list[tuple[tuple, str]]:
    with pytest.raises(ValidationError) as caught:
        ComparisonSpec.model_validate(data)
    return [(e["loc"], e["type"]) for e in caught.value.errors()]


def single_error(data: dict) -> tuple[tuple, str, str]:
    with pytest.raises(ValidationError) as caught:
        ComparisonSpec.model_validate(data)
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    return errors[0]["loc"], errors[0]["type"], errors[0]["msg"]


# ---------------------------------------------------------------- normalisation


#: what runs on this module's problem (an MLP with biases): matrices-only optimizers take it with groups
RUNNABLE = [
    name
    for name, cls in registry.all_of("optimizer").items()
    if cls.unsupported is None and cls.param_shapes == "any"  # type: ignore[attr-defined]
]


@pytest.mark.parametrize("name", RUNNABLE)
def test_every_optimizers_params_are_filled_with_all_defaults(name: str) -> None:
    spec = ComparisonSpec.model_validate(make(training={"steps": 3}, optimizers=[{"name": name}]))
    entry = spec.optimizers[0]
    defaults = registry.get("optimizer", name).Params().model_dump(mode="json")
    assert entry.params == defaults
    assert "lr" in entry.params or registry.get("optimizer", name).source != "torch.optim"  # type: ignore[attr-defined]
    assert entry.schedule == Constant()
    assert entry.label == name


def test_given_params_are_kept_and_the_rest_filled() -> None:
    spec = ComparisonSpec.model_validate(make(optimizers=[{"name": "adam", "params": {"lr": 0.5, "amsgrad": True}}]))
    params = spec.optimizers[0].params
    assert params["lr"] == 0.5 and params["amsgrad"] is True
    assert params["betas"] == [0.9, 0.999] and params["eps"] == 1e-8 and params["bias_correction"] is True


def test_component_params_of_the_problem_are_filled() -> None:
    spec = ComparisonSpec.model_validate(make(problem=CLASSIFICATION_PROBLEM))
    for ref, given in [
        (spec.problem.model, {"hidden": [4]}),
        (spec.problem.dataset, {"n_samples": 30, "n_features": 4}),
    ]:
        assert set(ref.params) == set(ref.component.Params.model_fields)  # every field, given or not
        assert ref.params == ref.component.Params(**given).model_dump(mode="json")
    assert spec.problem.model.params["activation"] == "relu"
    assert spec.problem.dataset.params["n_samples"] == 30


def test_training_and_top_level_defaults() -> None:
    spec = ComparisonSpec.model_validate(make(training={"epochs": 3}))
    training = spec.training
    assert (training.epochs, training.steps) == (3, None)
    assert training.batch_size == "full"
    assert training.shuffle is True and training.drop_last is False
    assert training.eval_every is None and training.extras == []
    assert spec.seeds == [0] and spec.device == "auto" and spec.dtype == "float32" and spec.tags == []
    problem = spec.problem
    assert problem.validation_fraction == 0.0 and problem.split_seed == 0


@pytest.mark.parametrize(
    ("dataset", "loss", "expected"),
    [
        ({"name": "synthetic_regression", "params": {"n_samples": 10}}, "mse_mean", False),
        ({"name": "synthetic_classification", "params": {"n_samples": 10}}, "cross_entropy", False),
        ({"name": "iris"}, "cross_entropy", True),
    ],
)
def test_standardize_defaults_to_the_datasets_own(dataset: dict, loss: str, expected: bool) -> None:
    problem = {"model": {"name": "linear"}, "dataset": dataset, "loss": loss}
    spec = ComparisonSpec.model_validate(make(problem=problem))
    assert spec.problem.standardize is expected
    assert registry.get("dataset", dataset["name"]).standardize_by_default is expected
    # an explicit choice wins over the dataset's default
    spec = ComparisonSpec.model_validate(make(problem={**problem, "standardize": not expected}))
    assert spec.problem.standardize is (not expected)


def test_function_problem_gets_the_functions_x0_and_no_standardize() -> None:
    spec = ComparisonSpec.model_validate(make(problem=FUNCTION_PROBLEM, training={"steps": 5}))
    assert spec.problem.x0 == [8.0]  # quadratic: center + 6
    assert spec.problem.standardize is None
    assert spec.problem.is_function
    given = ComparisonSpec.model_validate(make(problem={**FUNCTION_PROBLEM, "x0": [-1]}, training={"steps": 5}))
    assert given.problem.x0 == [-1.0]


# ---------------------------------------------------------------- labels


def test_a_name_used_once_is_its_own_label() -> None:
    spec = ComparisonSpec.model_validate(make(optimizers=[{"name": "sgd"}, {"name": "adam"}]))
    assert [e.label for e in spec.optimizers] == ["sgd", "adam"]


def test_default_labels_of_one_optimizer_with_different_params_are_distinct() -> None:
    spec = ComparisonSpec.model_validate(
        make(
            optimizers=[
                {"name": "adam", "params": {"lr": 0.01}},
                {"name": "adam", "params": {"lr": 0.1}},
                {"name": "adam", "params": {"lr": 0.1, "amsgrad": True}},
                {"name": "sgd"},
            ]
        )
    )
    labels = [e.label for e in spec.optimizers]
    assert len(set(labels)) == 4
    assert labels[1] == "adam(lr=0.1)"
    assert labels[2] == "adam(amsgrad=true, lr=0.1)"  # the changed params, sorted, as JSON
    assert labels[3] == "sgd"
    assert all(label.startswith("adam") for label in labels[:3])


def test_default_labels_tell_apart_entries_that_differ_only_in_their_schedule() -> None:
    """Comparing one optimizer under two schedules is what schedules are for; the spec must accept it
    without the user inventing labels."""
    spec = ComparisonSpec.model_validate(
        make(
            optimizers=[
                {"name": "sgd", "params": {"lr": 0.1}},
                {"name": "sgd", "params": {"lr": 0.1}, "schedule": {"name": "cosine"}},
            ]
        )
    )
    labels = [e.label for e in spec.optimizers]
    assert len(set(labels)) == 2 and all(label.startswith("sgd") for label in labels)
    assert spec.optimizers[1].schedule == Cosine(name="cosine")


def test_given_labels_are_kept() -> None:
    spec = ComparisonSpec.model_validate(
        make(
            optimizers=[
                {"name": "adam", "label": "mine"},
                {"name": "adam", "params": {"lr": 0.1}},
            ]
        )
    )
    assert spec.optimizers[0].label == "mine"
    assert spec.optimizers[1].label == "adam(lr=0.1)"


def test_duplicate_labels_are_rejected_at_the_later_entry() -> None:
    loc, kind, message = single_error(
        make(
            optimizers=[
                {"name": "sgd", "label": "same"},
                {"name": "adam"},
                {"name": "adam", "label": "same"},
            ]
        )
    )
    assert (loc, kind) == (("optimizers", 2, "label"), "invalid_spec")
    assert "optimizers.0" in message
    # identical entries have identical default labels
    loc, kind, _ = single_error(make(optimizers=[{"name": "sgd"}, {"name": "sgd"}]))
    assert (loc, kind) == (("optimizers", 1, "label"), "invalid_spec")


# ---------------------------------------------------------------- errors at exact locations


@pytest.mark.parametrize(
    ("patch", "loc", "error_type"),
    [
        # unknown names
        ({"optimizers": [{"name": "sgd"}, {"name": "adamx"}]}, ("optimizers", 1, "name"), "unknown_optimizer"),
        (
            {"problem": {**DATASET_PROBLEM, "model": {"name": "perceiver"}}},
            ("problem", "model", "name"),
            "unknown_model",
        ),
        (
            {"problem": {**DATASET_PROBLEM, "dataset": {"name": "imagenet"}}},
            ("problem", "dataset", "name"),
            "unknown_dataset",
        ),
        ({"problem": {**DATASET_PROBLEM, "loss": "hinge"}}, ("problem", "loss"), "unknown_loss"),
        ({"problem": {"function": {"name": "ackley"}}}, ("problem", "function", "name"), "unknown_function"),
        # unknown or out-of-range parameters
        ({"optimizers": [{"name": "sgd", "params": {"lr": 0}}]}, ("optimizers", 0, "params", "lr"), "greater_than"),
        (
            {"optimizers": [{"name": "sgd", "params": {"lr": float("nan")}}]},
            ("optimizers", 0, "params", "lr"),
            "finite_number",
        ),
        (
            {"optimizers": [{"name": "sgd"}, {"name": "adam", "params": {"betas": [0.9, 1.0]}}]},
            ("optimizers", 1, "params", "betas", 1),
            "less_than",
        ),
        (
            {"optimizers": [{"name": "sgd", "params": {"learning_rate": 0.1}}]},
            ("optimizers", 0, "params", "learning_rate"),
            "extra_forbidden",
        ),
        ({"optimizers": [{"name": "sgd", "lr": 0.1}]}, ("optimizers", 0, "lr"), "extra_forbidden"),
        (
            {"problem": {**DATASET_PROBLEM, "model": {"name": "mlp", "params": {"hidden": [0]}}}},
            ("problem", "model", "params", "hidden", 0),
            "greater_than_equal",
        ),
        (
            {"problem": {**DATASET_PROBLEM, "dataset": {"name": "synthetic_regression", "params": {"n_samples": 0}}}},
            ("problem", "dataset", "params", "n_samples"),
            "greater_than_equal",
        ),
        (
            {"problem": {**DATASET_PROBLEM, "validation_fraction": 0.95}},
            ("problem", "validation_fraction"),
            "less_than_equal",
        ),
        ({"problem": {**DATASET_PROBLEM, "split_seed": -1}}, ("problem", "split_seed"), "greater_than_equal"),
        ({"training": {"epochs": 0}}, ("training", "epochs"), "greater_than_equal"),
        ({"training": {"steps": 10_000_001}}, ("training", "steps"), "less_than_equal"),
        ({"training": {"epochs": 1, "eval_every": 0}}, ("training", "eval_every"), "greater_than_equal"),
        ({"training": {"epochs": 1, "extras": ["hessian"]}}, ("training", "extras", 0), "literal_error"),
        ({"seeds": [0, -1]}, ("seeds", 1), "greater_than_equal"),
        ({"seeds": [3, 3]}, ("seeds",), "value_error"),
        ({"seeds": []}, ("seeds",), "too_short"),
        ({"optimizers": []}, ("optimizers",), "too_short"),
        ({"dtype": "float16"}, ("dtype",), "literal_error"),
        ({"device": "tpu"}, ("device",), "literal_error"),
        ({"name": ""}, ("name",), "string_too_short"),
        ({"priority": 1}, ("priority",), "extra_forbidden"),
        # budget: exactly one of epochs / steps
        ({"training": {"epochs": 2, "steps": 5}}, ("training", "epochs"), "invalid_spec"),
        ({"training": {}}, ("training", "epochs"), "invalid_spec"),
        # L-BFGS re-evaluates the loss, so it needs the full batch
        (
            {"training": {"epochs": 1, "batch_size": 4}, "optimizers": [{"name": "sgd"}, {"name": "lbfgs"}]},
            ("optimizers", 1, "name"),
            "invalid_spec",
        ),
        # loss and dataset must be for the same task
        ({"problem": {**DATASET_PROBLEM, "loss": "cross_entropy"}}, ("problem", "loss"), "invalid_spec"),
        ({"problem": {**CLASSIFICATION_PROBLEM, "loss": "mse_mean"}}, ("problem", "loss"), "invalid_spec"),
        # a dataset problem needs all three parts and no x0
        ({"problem": {k: v for k, v in DATASET_PROBLEM.items() if k != "loss"}}, ("problem", "loss"), "invalid_spec"),
        ({"problem": {k: v for k, v in DATASET_PROBLEM.items() if k != "model"}}, ("problem", "model"), "invalid_spec"),
        ({"problem": {**DATASET_PROBLEM, "x0": [1.0]}}, ("problem", "x0"), "invalid_spec"),
        # a function problem takes none of the dataset fields
        (
            {"problem": {**FUNCTION_PROBLEM, "dataset": DATASET_PROBLEM["dataset"]}},
            ("problem", "dataset"),
            "invalid_spec",
        ),
        ({"problem": {**FUNCTION_PROBLEM, "model": {"name": "linear"}}}, ("problem", "model"), "invalid_spec"),
        ({"problem": {**FUNCTION_PROBLEM, "loss": "mse_mean"}}, ("problem", "loss"), "invalid_spec"),
        ({"problem": {**FUNCTION_PROBLEM, "standardize": True}}, ("problem", "standardize"), "invalid_spec"),
        (
            {"problem": {**FUNCTION_PROBLEM, "validation_fraction": 0.2}},
            ("problem", "validation_fraction"),
            "invalid_spec",
        ),
        # x0 must have the function's dimension and be finite
        ({"problem": {**FUNCTION_PROBLEM, "x0": [1.0, 2.0]}}, ("problem", "x0"), "invalid_spec"),
        ({"problem": {"function": {"name": "rosenbrock"}, "x0": [1.0]}}, ("problem", "x0"), "invalid_spec"),
        ({"problem": {**FUNCTION_PROBLEM, "x0": [float("inf")]}}, ("problem", "x0", 0), "finite_number"),
        # schedules: errors under the entry's schedule
        (
            {"optimizers": [{"name": "sgd"}, {"name": "sgd", "params": {"lr": 0.1}, "schedule": {"name": "exp"}}]},
            ("optimizers", 1, "schedule"),
            "union_tag_invalid",
        ),
        (
            {"optimizers": [{"name": "sgd", "schedule": {"name": "step", "step_size": 0}}]},
            ("optimizers", 0, "schedule", "step", "step_size"),
            "greater_than_equal",
        ),
        (
            {"optimizers": [{"name": "sgd", "schedule": {"name": "step"}}]},
            ("optimizers", 0, "schedule", "step", "step_size"),
            "missing",
        ),
        (
            {"optimizers": [{"name": "sgd"}, {"name": "adam", "schedule": {"name": "cosine", "min_factor": 1.5}}]},
            ("optimizers", 1, "schedule", "cosine", "min_factor"),
            "less_than_equal",
        ),
        (
            {"optimizers": [{"name": "sgd", "schedule": {"name": "warmup_cosine", "warmup_steps": -2}}]},
            ("optimizers", 0, "schedule", "warmup_cosine", "warmup_steps"),
            "greater_than_equal",
        ),
    ],
)
def test_errors_carry_their_exact_location(patch: dict, loc: tuple, error_type: str) -> None:
    data = make()
    data.update(copy.deepcopy(patch))
    if "problem" in patch and "function" in patch["problem"] and "training" not in patch:
        data["training"] = {"steps": 5}
    assert errors_of(data) == [(loc, error_type)]


@pytest.mark.parametrize("batch_size", [0, -3, "half", 2.5, 1_000_001])
def test_bad_batch_sizes_are_rejected_under_training_batch_size(batch_size: Any) -> None:
    errors = errors_of(make(training={"epochs": 1, "batch_size": batch_size}))
    assert errors and all(loc[:2] == ("training", "batch_size") for loc, _ in errors)


def test_function_problem_error_messages_name_the_field() -> None:
    loc, _, message = single_error(make(problem={**FUNCTION_PROBLEM, "x0": [1.0, 2.0, 3.0]}, training={"steps": 5}))
    assert loc == ("problem", "x0")
    assert "3 coordinates" in message and "takes 1" in message
    loc, _, message = single_error(
        make(problem={**FUNCTION_PROBLEM, "validation_fraction": 0.1}, training={"steps": 5})
    )
    assert loc == ("problem", "validation_fraction")


def test_lbfgs_is_accepted_on_the_full_batch_and_on_function_problems() -> None:
    ComparisonSpec.model_validate(make(training={"epochs": 1}, optimizers=[{"name": "lbfgs"}]))
    # batch_size is irrelevant to a function problem: there is no data to batch
    ComparisonSpec.model_validate(
        make(problem=FUNCTION_PROBLEM, training={"steps": 3, "batch_size": 4}, optimizers=[{"name": "lbfgs"}])
    )
    loc, _, message = single_error(make(training={"epochs": 1, "batch_size": 1}, optimizers=[{"name": "lbfgs"}]))
    assert loc == ("optimizers", 0, "name") and "full" in message


def test_errors_from_separate_fields_are_all_reported() -> None:
    data = make(training={"epochs": 0}, optimizers=[{"name": "nope"}], seeds=[-1])
    found = {loc for loc, _ in errors_of(data)}
    assert {("training", "epochs"), ("optimizers", 0, "name"), ("seeds", 0)} <= found


# ---------------------------------------------------------------- round trip


ROUND_TRIP_CASES = {
    "dataset": make(
        problem={**CLASSIFICATION_PROBLEM, "validation_fraction": 0.2, "split_seed": 7},
        training={
            "epochs": 3,
            "batch_size": 8,
            "shuffle": False,
            "drop_last": True,
            "eval_every": 2,
            "extras": ["grad_norm", "update_norm"],
        },
        optimizers=[
            {"name": "adam", "params": {"lr": 0.01}, "schedule": {"name": "warmup_cosine", "warmup_steps": 3}},
            {"name": "adam", "params": {"lr": 0.1, "betas": [0.8, 0.99]}, "schedule": {"name": "step", "step_size": 4}},
            {"name": "sgd", "label": "plain", "params": {"momentum": 0.9, "nesterov": True}},
        ],
        seeds=[0, 5, 9],
        dtype="float64",
        device="cpu",
        tags=["a", "b"],
    ),
    "function": make(
        problem={"function": {"name": "rastrigin", "params": {"dim": 3}}},
        training={"steps": 50},
        optimizers=[{"name": "lbfgs"}, {"name": "rprop"}],
    ),
    "minimal": make(),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIP_CASES))
def test_a_normalised_spec_round_trips_through_json(case: str) -> None:
    spec = ComparisonSpec.model_validate(copy.deepcopy(ROUND_TRIP_CASES[case]))
    dumped = spec.model_dump(mode="json")
    again = ComparisonSpec.model_validate(dumped)
    assert again == spec
    assert again.model_dump(mode="json") == dumped
    # and via a JSON string, as the API and the worker exchange it
    assert ComparisonSpec.model_validate_json(spec.model_dump_json()) == spec
