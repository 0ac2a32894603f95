"""Sweeps and tuning in the spec alone: expansion into runs, grids, labels, validation errors at their
exact location, and the run identity hash (what changes it and what does not). Nothing here trains."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from pydantic import ValidationError

from engine import identity
from engine.schedules import Cosine
from engine.spec import ComparisonSpec, with_run_params
from engine.sweeps import SEARCH, expand, grid, runs_per_entry

FUNCTION_PROBLEM = {"function": {"name": "quadratic", "params": {"center": [2.0]}}, "x0": [8.0]}
DATASET_PROBLEM = {
    "model": {"name": "linear"},
    "dataset": {"name": "synthetic_regression", "params": {"n_samples": 20, "n_features": 3, "n_targets": 1}},
    "loss": "mse_mean",
}
LRS = [1e-4, 1e-3, 1e-2, 1e-1]


def make(optimizers: list | None = None, **top: Any) -> dict:
    return {
        "name": "sweep under test",
        "problem": copy.deepcopy(FUNCTION_PROBLEM),
        "training": {"steps": 10},
        "optimizers": optimizers if optimizers is not None else [{"name": "adam", "sweep": {"lr": LRS}}],
        **top,
    }


def stored(data: dict) -> dict:
    return ComparisonSpec.model_validate(data).model_dump(mode="json")


def single_error(data: dict) -> tuple[tuple, str]:
    with pytest.raises(ValidationError) as caught:
        ComparisonSpec.model_validate(data)
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    return errors[0]["loc"], errors[0]["msg"]


# ---------------------------------------------------------------- expansion


def test_four_lrs_times_three_seeds_expand_to_twelve_runs_with_their_exact_params():
    spec = stored(make(seeds=[0, 1, 2]))
    runs = expand(spec)

    assert len(runs) == 12 == sum(runs_per_entry(spec))
    assert [(r.sweep_values["lr"], r.seed) for r in runs] == [(lr, seed) for lr in LRS for seed in (0, 1, 2)]
    defaults = {"betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False, "bias_correction": True}
    for run in runs:
        assert run.params == {"lr": run.sweep_values["lr"], **defaults}
        assert run.entry_index == 0 and run.phase is None
    assert [r.label for r in runs[::3]] == ["adam(lr=0.0001)", "adam(lr=0.001)", "adam(lr=0.01)", "adam(lr=0.1)"]


def test_entries_without_a_sweep_expand_as_before():
    spec = stored(make([{"name": "adam", "params": {"lr": 0.1}}, {"name": "sgd"}], seeds=[3, 4]))
    runs = expand(spec)
    assert [(r.label, r.seed, r.sweep_values) for r in runs] == [
        ("adam", 3, {}),
        ("adam", 4, {}),
        ("sgd", 3, {}),
        ("sgd", 4, {}),
    ]
    assert runs[0].params == spec["optimizers"][0]["params"]
    assert runs_per_entry(spec) == [2, 2]


def test_several_swept_params_give_the_cartesian_product_first_name_slowest():
    spec = stored(make([{"name": "sgd", "sweep": {"lr": [0.1, 0.01], "momentum": [0.0, 0.5, 0.9]}}]))
    runs = expand(spec)
    assert [r.sweep_values for r in runs] == [{"lr": lr, "momentum": m} for lr in (0.1, 0.01) for m in (0.0, 0.5, 0.9)]
    assert runs[1].label == "sgd(lr=0.1, momentum=0.5)"
    assert len({r.label for r in runs}) == 6
    assert all(
        r.params["lr"] == r.sweep_values["lr"] and r.params["momentum"] == r.sweep_values["momentum"] for r in runs
    )


def test_swept_values_are_normalised_by_the_optimizers_params():
    spec = stored(make([{"name": "adam", "sweep": {"lr": [1, 2], "betas": [[0.5, 0.9]]}}]))
    assert spec["optimizers"][0]["sweep"] == {"lr": [1.0, 2.0], "betas": [[0.5, 0.9]]}
    assert [r.label for r in expand(spec)] == ["adam(lr=1.0, betas=[0.5, 0.9])", "adam(lr=2.0, betas=[0.5, 0.9])"]
    # the stored form validates to itself: the worker re-reads it
    assert stored(spec) == spec


def test_a_swept_param_overrides_the_entrys_value_and_leaves_its_default_label():
    spec = stored(
        make([{"name": "sgd", "params": {"lr": 0.5, "momentum": 0.9}, "sweep": {"lr": [0.1]}}, {"name": "sgd"}])
    )
    (swept, plain) = expand(spec)
    assert swept.params["lr"] == 0.1 and swept.params["momentum"] == 0.9
    assert swept.label == "sgd(momentum=0.9)(lr=0.1)"  # the base lr 0.5 is not part of it
    assert plain.label == "sgd()"


def test_log_uniform_is_a_deterministic_grid_evenly_spaced_in_log_space_ends_included():
    points = grid("log_uniform", 1e-5, 1e-1, 8)
    assert len(points) == 8 and points[0] == 1e-5 and points[-1] == 1e-1
    assert points == sorted(points) and points == grid("log_uniform", 1e-5, 1e-1, 8)
    steps = [math.log(b) - math.log(a) for a, b in zip(points, points[1:])]
    assert all(s == pytest.approx(math.log(1e4) / 7, rel=1e-5) for s in steps)
    assert all(len(f"{p:g}") <= 11 for p in points)  # 6 significant digits at most
    assert grid("log_uniform", 1e-3, 1e-1, 3) == [1e-3, 1e-2, 1e-1]


def test_uniform_is_evenly_spaced_ends_included():
    assert grid("uniform", 0.0, 0.9, 4) == [0.0, 0.3, 0.6, 0.9]
    assert grid("uniform", 0.1, 0.2, 2) == [0.1, 0.2]


def test_a_grid_in_the_spec_is_stored_as_its_explicit_values():
    spec = stored(make([{"name": "adam", "sweep": {"lr": {"log_uniform": [1e-4, 1e-1], "n": 4}}}]))
    assert spec["optimizers"][0]["sweep"] == {"lr": [1e-4, 1e-3, 1e-2, 1e-1]}
    spec = stored(make([{"name": "sgd", "sweep": {"momentum": {"uniform": [0, 0.9], "n": 4}}}]))
    assert spec["optimizers"][0]["sweep"] == {"momentum": [0.0, 0.3, 0.6, 0.9]}


def test_a_tuning_job_expands_to_its_search_phase_on_the_first_seed():
    spec = stored(
        make(
            [{"name": "adam", "sweep": {"lr": LRS}}, {"name": "sgd", "params": {"lr": 0.1}}],
            tuning={"metric": "final_loss", "seeds": [7, 8, 9]},
        )
    )
    assert spec["seeds"] == [7, 8, 9]  # tuning.seeds replaces the default
    runs = expand(spec)
    assert [(r.label, r.seed, r.phase) for r in runs] == [
        *((f"adam(lr={lr})", 7, SEARCH) for lr in LRS),
        ("sgd", 7, SEARCH),
    ]
    assert runs_per_entry(spec) == [4 + 2, 1 + 2]  # the search runs and the final runs to come


def test_a_runs_own_params_replace_its_entrys_for_training():
    spec = ComparisonSpec.model_validate(make([{"name": "adam", "schedule": {"name": "cosine"}, "sweep": {"lr": LRS}}]))
    run = expand(spec.model_dump(mode="json"))[3]
    trained = with_run_params(spec, 0, run.params)
    assert trained.optimizers[0].typed_params.lr == 0.1 and trained.optimizers[0].schedule == Cosine(name="cosine")
    assert spec.optimizers[0].params["lr"] == 1e-3  # the original is untouched


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "data, loc",
    [
        (make([{"name": "adam", "sweep": {"lr": [0.1, 0.2, -1.0]}}]), ("optimizers", 0, "sweep", "lr", 2)),
        (
            make([{"name": "adam", "sweep": {"betas": [[0.9, 0.99], [0.9, 1.5]]}}]),
            ("optimizers", 0, "sweep", "betas", 1, 1),
        ),
        (
            make([{"name": "sgd"}, {"name": "adam", "sweep": {"amsgrad": [True, "maybe"]}}]),
            ("optimizers", 1, "sweep", "amsgrad", 1),
        ),
        (make([{"name": "adam", "sweep": {"momentum": [0.9]}}]), ("optimizers", 0, "sweep", "momentum")),
        (make([{"name": "adam", "sweep": {"lr": []}}]), ("optimizers", 0, "sweep", "lr")),
        (make([{"name": "adam", "sweep": {"lr": [0.1, 0.1]}}]), ("optimizers", 0, "sweep", "lr")),
        (
            make([{"name": "adam", "sweep": {"lr": {"log_uniform": [0, 1], "n": 3}}}]),
            ("optimizers", 0, "sweep", "lr", "log_uniform", 0),
        ),
        (
            make([{"name": "adam", "sweep": {"lr": {"log_uniform": [1, 0.1], "n": 3}}}]),
            ("optimizers", 0, "sweep", "lr", "log_uniform"),
        ),
        (
            make([{"name": "adam", "sweep": {"lr": {"log_uniform": [0.1, 1], "n": 1}}}]),
            ("optimizers", 0, "sweep", "lr", "n"),
        ),
        (
            make([{"name": "adam", "sweep": {"lr": {"log_uniform": [0.1, 1], "n": 3, "base": 2}}}]),
            ("optimizers", 0, "sweep", "lr", "base"),
        ),
        (make([{"name": "adam", "sweep": {"lr": {"geometric": [0.1, 1], "n": 3}}}]), ("optimizers", 0, "sweep", "lr")),
        (
            make([{"name": "sgd", "sweep": {"lr": {"uniform": [0.0, 1.0], "n": 3}}}]),
            ("optimizers", 0, "sweep", "lr", 0),
        ),
        # each value is valid alone, one setting is not: nesterov needs momentum
        (
            make([{"name": "sgd", "sweep": {"nesterov": [True, False], "momentum": [0.9, 0.0]}}]),
            ("optimizers", 0, "sweep"),
        ),
        (
            make(
                [
                    {
                        "name": "sgd",
                        "sweep": {"lr": {"uniform": [0.1, 1], "n": 100}, "momentum": {"uniform": [0, 0.9], "n": 11}},
                    }
                ]
            ),
            ("optimizers", 0, "sweep"),
        ),
        (make([{"name": "sgd", "label": "x" * 95, "sweep": {"lr": [0.1]}}]), ("optimizers", 0, "label")),
        (
            make([{"name": "sgd", "label": "a(lr=0.1)"}, {"name": "adam", "label": "a", "sweep": {"lr": [0.1]}}]),
            ("optimizers", 1, "label"),
        ),
        (make(tuning={"seeds": [1, 2]}, seeds=[3]), ("seeds",)),
        # an explicit [0] is not "left out", though it equals the default
        (make(tuning={"seeds": [1, 2]}, seeds=[0]), ("seeds",)),
        (make(tuning={"seeds": [1, 1]}), ("tuning", "seeds")),
        (make(tuning={"seeds": []}), ("tuning", "seeds")),
        (make(tuning={"metric": "accuracy", "seeds": [1]}), ("tuning", "metric")),
        (make([{"name": "sgd"}], tuning={"seeds": [1, 2]}), ("tuning",)),
        (make(tuning={"metric": "val_loss", "seeds": [1, 2]}), ("problem", "validation_fraction")),
        (
            make(problem={**DATASET_PROBLEM, "validation_fraction": 0.25}, tuning={"metric": "val_loss", "seeds": [1]}),
            ("training", "eval_every"),
        ),
        (make(baseline="rmsprop"), ("baseline",)),
        (make(target_loss=math.inf), ("target_loss",)),
        (make(reuse="sometimes"), ("reuse",)),
    ],
)
def test_errors_name_the_exact_field(data: dict, loc: tuple) -> None:
    found, message = single_error(data)
    assert found == loc, message
    assert message


def test_error_messages_say_what_to_do():
    assert "leave seeds out" in single_error(make(tuning={"seeds": [1, 2]}, seeds=[3]))[1]
    assert "no optimizer entry has a sweep" in single_error(make([{"name": "sgd"}], tuning={"seeds": [1]}))[1]
    assert "its parameters: lr, betas" in single_error(make([{"name": "adam", "sweep": {"x": [1]}}]))[1]
    assert (
        "nesterov requires momentum"
        in single_error(make([{"name": "sgd", "sweep": {"nesterov": [True], "momentum": [0.0]}}]))[1]
    )
    assert (
        "1100 settings"
        in single_error(
            make(
                [
                    {
                        "name": "sgd",
                        "sweep": {"lr": {"uniform": [0.1, 1], "n": 100}, "momentum": {"uniform": [0, 0.9], "n": 11}},
                    }
                ]
            )
        )[1]
    )


def test_settings_valid_only_together_are_accepted():
    # nesterov=True alone is invalid with the entry's momentum 0, but every setting sweeps a momentum
    spec = stored(make([{"name": "sgd", "sweep": {"nesterov": [True, False], "momentum": [0.9, 0.5]}}]))
    assert len(expand(spec)) == 4


def test_a_stored_tuning_spec_validates_again_unchanged():
    spec = stored(make(tuning={"seeds": [0, 1]}))
    assert spec["seeds"] == [0, 1] and stored(spec) == spec


def test_tuning_accepts_seeds_left_out_or_its_own_and_val_loss_with_evaluations():
    problem = {**DATASET_PROBLEM, "validation_fraction": 0.25}
    for seeds in ({}, {"seeds": [4, 5]}):
        spec = stored(
            make(
                problem=problem,
                training={"steps": 10, "eval_every": 5},
                **seeds,
                tuning={"metric": "val_loss", "seeds": [4, 5]},
            )
        )
        assert spec["seeds"] == [4, 5] and spec["tuning"] == {"metric": "val_loss", "seeds": [4, 5]}
    assert stored(make(tuning={"seeds": [1]}))["tuning"]["metric"] == "final_loss"


def test_baseline_may_name_an_entry_or_a_swept_setting_and_the_new_fields_keep_their_values():
    assert stored(make(baseline="adam"))["baseline"] == "adam"
    spec = stored(make(baseline="adam(lr=0.01)", target_loss=0.5, reuse=False))
    assert (spec["baseline"], spec["target_loss"], spec["reuse"]) == ("adam(lr=0.01)", 0.5, False)
    spec = stored(make())
    assert (spec["baseline"], spec["target_loss"], spec["reuse"], spec["tuning"]) == (None, None, True, None)


# ---------------------------------------------------------------- identity


def _hash(data: dict, run: int = 0, device: str | None = None) -> str:
    spec = stored(data)
    config = expand(spec)[run]
    return identity.run_config_hash(
        spec, config.entry_index, config.params, config.seed, device or identity.device_kind(spec["device"])
    )


BASE = make(
    [{"name": "adam", "params": {"lr": 0.01}}],
    training={"steps": 10, "batch_size": 4},
    problem=copy.deepcopy(DATASET_PROBLEM),
    seeds=[0],
)


def _changed(path: str, value: Any) -> dict:
    data = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    target = data
    for key in parents:
        target = target[int(key)] if key.isdigit() else target[key]
    target[last] = value
    return data


@pytest.mark.parametrize(
    "path, value",
    [
        ("problem.dataset.params", {"n_samples": 20, "n_features": 3, "n_targets": 1, "seed": 1}),
        ("problem.model.params", {"bias": False}),
        ("problem.loss", "mse_sum"),
        ("problem.validation_fraction", 0.25),
        ("problem.split_seed", 3),
        ("problem.standardize", True),
        ("training.steps", 11),
        ("training.shuffle", False),
        ("training.drop_last", True),
        ("training.eval_every", 5),
        ("training.extras", ["grad_norm"]),
        ("optimizers.0.params", {"lr": 0.02}),
        ("optimizers.0.params", {"lr": 0.01, "amsgrad": True}),
        ("optimizers.0.schedule", {"name": "cosine"}),
        ("optimizers.0.batch_size", 5),
        ("optimizers.0.name", "adamw"),
        ("seeds", [1]),
        ("dtype", "float64"),
        ("device", "cuda"),
    ],
)
def test_what_determines_the_result_changes_the_hash(path: str, value: Any) -> None:
    assert _hash(_changed(path, value)) != _hash(BASE)


@pytest.mark.parametrize(
    "path, value",
    [
        ("name", "another name"),
        ("tags", ["x"]),
        ("optimizers.0.label", "mine"),
        ("reuse", False),
        ("target_loss", 0.1),
        ("baseline", "adam"),
        ("optimizers.0.params", {"lr": 0.01, "eps": 1e-8}),  # the default, spelled out
        ("training.batch_size", 7),  # the entry's own batch size is the one used
    ],
)
def test_what_does_not_determine_the_result_leaves_the_hash(path: str, value: Any) -> None:
    data = _changed(path, value)
    if path == "training.batch_size":
        data["optimizers"][0]["batch_size"] = 4
    assert _hash(data) == _hash(BASE)


def test_a_run_hashes_alike_alone_in_a_sweep_or_in_a_tuning_job():
    alone = _hash(make([{"name": "adam", "params": {"lr": 0.01}}], seeds=[5]))
    swept = make([{"name": "adam", "sweep": {"lr": LRS}}], seeds=[4, 5])
    assert _hash(swept, run=5) == alone  # lr 0.01, seed 5
    assert _hash(swept, run=4) != alone  # lr 0.01, seed 4
    tuning = make([{"name": "adam", "sweep": {"lr": [0.01, 0.1]}}], tuning={"seeds": [5, 6]})
    assert _hash(tuning, run=0) == alone


def test_floats_are_normalised_and_keys_sorted():
    assert identity.canonical_json({"b": 1.0, "a": [-0.0, 0.1, 2.5e-7]}) == '{"a":[0,0.1,2.5e-07],"b":1}'
    assert identity.canonical_json({"lr": 1}) == identity.canonical_json({"lr": 1.0})
    with pytest.raises(ValueError):
        identity.canonical_json({"lr": math.nan})


def test_device_auto_is_the_kind_this_machine_would_pick(monkeypatch):
    import torch

    assert identity.device_kind("cpu") == "cpu" and identity.device_kind("cuda") == "cuda"
    for available, kind in ((False, "cpu"), (True, "cuda")):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        assert identity.device_kind("auto") == kind
        assert _hash(_changed("device", "auto"), device=identity.device_kind("auto")) == _hash(_changed("device", kind))


def test_the_engine_version_is_part_of_the_hash(monkeypatch):
    before = _hash(BASE)
    monkeypatch.setattr(identity, "ENGINE_VERSION", identity.ENGINE_VERSION + "-next")
    assert _hash(BASE) != before
