"""engine.sizing: components size themselves from their params, and a run's memory is estimated
from the spec alone, with nothing loaded or built."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from engine import registry, sizing
from engine.datasets import DataShape
from engine.models import Model
from engine.spec import ComparisonSpec
from engine.training import train


def _spec(model: dict, dataset: dict, loss: str = "mse_sum", **top) -> ComparisonSpec:
    return ComparisonSpec.model_validate(
        {
            "name": "sizing",
            "problem": {"model": model, "dataset": dataset, "loss": loss},
            "training": top.pop("training", {"epochs": 1, "batch_size": 32}),
            "optimizers": top.pop("optimizers", [{"name": "sgd", "params": {}}]),
            **top,
        }
    )


@pytest.mark.parametrize(
    ("name", "params", "input_shape", "n_outputs"),
    [
        ("linear", {}, (13,), 3),
        ("linear", {"bias": False}, (1, 8, 8), 10),
        ("mlp", {"hidden": [7, 5], "bias": False}, (3, 4), 2),
        ("mlp", {"hidden": [100]}, (64,), 10),
        ("cnn", {}, (1, 8, 8), 10),
        ("cnn", {"channels": [3, 5, 7], "kernel_size": 5, "hidden": 0}, (3, 28, 20), 4),
        ("cnn", {"channels": [2]}, (1, 1), 3),
        ("cnn", {"activation": "tanh"}, (9, 9), 2),
    ],
)
def test_parameter_count_is_arithmetic_and_equals_the_built_module(name, params, input_shape, n_outputs):
    model = registry.get("model", name)
    typed = model.Params.model_validate(params)
    built = model.build(typed, input_shape, n_outputs)
    assert model.parameter_count(typed, input_shape, n_outputs) == sum(p.numel() for p in built.parameters())
    outputs = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel()))
        for m in built.modules()
        if not list(m.children()) and not isinstance(m, (nn.Flatten, nn.Unflatten))
    ]
    built(torch.zeros(1, *input_shape))
    for hook in hooks:
        hook.remove()
    assert model.activation_count(typed, input_shape, n_outputs) == sum(outputs)


class _PluginModel(Model):
    """A model that does not size itself (no ``name``: not registered): the default builds on meta."""

    @classmethod
    def build(cls, params, input_shape, n_outputs) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 50_000), nn.Linear(50_000, n_outputs))


def test_a_model_that_does_not_size_itself_is_sized_on_the_meta_device_without_allocating():
    params = registry.Params()
    assert _PluginModel.parameter_count(params, (4000,), 10) == 4000 * 50_000 + 50_000 + 50_000 * 10 + 10
    assert _PluginModel.activation_count(params, (4000,), 10) >= 50_000 + 10


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("iris", {}),
        ("wine", {}),
        ("breast_cancer", {}),
        ("digits", {}),
        ("digits", {"as_images": True}),
        ("synthetic_regression", {"n_samples": 30, "n_features": 7, "n_targets": 2}),
        ("synthetic_classification", {"n_samples": 30, "n_features": 5, "n_classes": 4}),
    ],
)
def test_a_dataset_shape_from_its_params_is_the_loaded_data_shape(name, params):
    dataset = registry.get("dataset", name)
    typed = dataset.Params.model_validate(params)
    data = dataset.load(typed)
    assert dataset.shape(typed) == DataShape(len(data), tuple(data.x.shape[1:]), data.n_outputs)


def test_the_estimate_counts_each_part_from_the_spec():
    spec = _spec(
        {"name": "mlp", "params": {"hidden": [100]}},
        {"name": "synthetic_regression", "params": {"n_samples": 1000, "n_features": 50, "n_targets": 5}},
        optimizers=[{"name": "adam", "params": {"amsgrad": True}}, {"name": "sgd", "params": {}}],
    )
    n_params = 50 * 100 + 100 + 100 * 5 + 5
    adam, sgd = sizing.estimate(spec, 0), sizing.estimate(spec, 1)
    assert adam.parts["parameters"] == adam.parts["gradients"] == n_params * 4
    assert adam.parts["optimizer state"] == 3 * n_params * 4 and sgd.parts["optimizer state"] == 0
    assert adam.parts["data"] == 1000 * (50 * (4 + 4) + 5 * (4 + 4))  # loaded float32 and its float32 copy
    stacked = sizing.estimate(spec, 0, members=8)
    assert stacked.parts["data"] == adam.parts["data"] and stacked.parts["parameters"] == 8 * adam.parts["parameters"]
    assert sizing.largest_run(spec) == adam
    lbfgs = _spec(
        {"name": "linear", "params": {}},
        {"name": "iris", "params": {}},
        loss="cross_entropy",
        training={"steps": 1},
        optimizers=[{"name": "lbfgs", "params": {"history_size": 1000}}],
    )
    assert sizing.estimate(lbfgs, 0).loc == ("optimizers", 0, "params", "history_size")


def test_a_sweep_is_sized_by_its_largest_setting():
    spec = _spec(
        {"name": "linear", "params": {}},
        {"name": "iris", "params": {}},
        loss="cross_entropy",
        training={"steps": 1},
        optimizers=[{"name": "lbfgs", "params": {}, "sweep": {"history_size": [1, 900]}}],
    )
    assert (
        sizing.largest_run(spec).parts["optimizer state"]
        == sizing.estimate(spec, 0, {**spec.optimizers[0].params, "history_size": 900}).parts["optimizer state"]
    )


def test_a_run_asked_to_stop_once_built_stops_before_its_first_step():
    spec = _spec(
        {"name": "linear", "params": {}}, {"name": "synthetic_regression", "params": {"n_samples": 16, "n_features": 3}}
    )
    flushed = []
    outcome = train(spec, 0, 0, flushed.append, total_steps=10, stop_requested=lambda: True)
    assert (outcome.status, outcome.steps_done, flushed) == ("cancelled", 0, [])
