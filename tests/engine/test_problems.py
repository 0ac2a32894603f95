"""Every registered function, dataset and model, then the specifics of the ones we ship.

The generic tables come from ``registry.all_of``, so a new component (or an installed plug-in) is covered
without editing this file.
"""

import gzip
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from sklearn.datasets import load_breast_cancer, load_iris, load_wine

from engine import config as engine_config
from engine import registry
from engine.datasets import IGNORE, Data
from engine.problem import build_problem
from engine.spec import ComparisonSpec

Tensor = torch.Tensor

FUNCTIONS = registry.all_of("function")
DATASETS = registry.all_of("dataset")
MODELS = registry.all_of("model")

SHIPPED = {
    "function": {"quadratic", "rosenbrock", "beale", "himmelblau", "rastrigin", "booth", "saddle"},
    "dataset": {"synthetic_regression", "synthetic_classification", "digits", "iris", "wine", "breast_cancer", "idx"},
    "model": {"mlp", "linear", "cnn"},
}

# documented minimum value of the functions we ship; a plug-in's minimizers must merely agree with each other
MINIMUM = {"quadratic": 0.0, "rosenbrock": 0.0, "beale": 0.0, "himmelblau": 0.0, "rastrigin": 0.0, "booth": 0.0}

# every function on its defaults, plus non-default parameters where they move the minimizer or the dimension
FUNCTION_CASES: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in FUNCTIONS] + [
    ("rosenbrock", {"a": -0.5, "b": 10.0}),
    ("rastrigin", {"dim": 5, "A": 3.0}),
    ("quadratic", {"center": [1.0, -2.0, 3.0], "scale": [1.0, 2.0, 0.5]}),
]
CASE_IDS = [f"{name}{params or ''}" for name, params in FUNCTION_CASES]


def function_case(name: str, params: dict[str, Any]):
    cls = FUNCTIONS[name]
    typed = cls.Params(**params)
    return cls, typed, cls.dim(typed) or len(cls.default_x0(typed))


def value_and_grad(cls, x: list[float] | Tensor, params) -> tuple[float, Tensor]:
    x = torch.tensor(x, dtype=torch.float64, requires_grad=True) if isinstance(x, list) else x.requires_grad_()
    value = cls.value(x, params)
    (grad,) = torch.autograd.grad(value, x)
    return value.item(), grad


# ---------------------------------------------------------------- functions


def test_the_functions_we_ship_are_registered() -> None:
    assert SHIPPED["function"] <= set(FUNCTIONS)
    assert set(MINIMUM) == SHIPPED["function"] - {"saddle"}


@pytest.mark.parametrize(("name", "params"), FUNCTION_CASES, ids=CASE_IDS)
def test_default_x0_fits_the_function(name: str, params: dict[str, Any]) -> None:
    cls, typed, dim = function_case(name, params)
    x0 = cls.default_x0(typed)
    if cls.dim(typed) is not None:
        assert len(x0) == cls.dim(typed)
    assert cls.description
    value, grad = value_and_grad(cls, x0, typed)
    assert math.isfinite(value)
    assert grad.abs().max() > 1e-6, "a trajectory from x0 should have somewhere to go"
    for minimizer in cls.minimizers(typed):
        assert value > cls.value(torch.tensor(minimizer, dtype=torch.float64), typed).item()


@pytest.mark.parametrize(("name", "params"), FUNCTION_CASES, ids=CASE_IDS)
def test_minimizers_are_minima(name: str, params: dict[str, Any]) -> None:
    cls, typed, dim = function_case(name, params)
    minimizers = cls.minimizers(typed)
    if name in MINIMUM:
        assert minimizers
    values = []
    for minimizer in minimizers:
        assert len(minimizer) == dim
        value, grad = value_and_grad(cls, minimizer, typed)
        values.append(value)
        assert grad.abs().max() < 1e-9
        nearby = torch.tensor(minimizer, dtype=torch.float64) + 1e-3 * torch.randn(
            50, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        assert all(cls.value(point, typed).item() > value for point in nearby)
    expected = MINIMUM.get(name, values[0] if values else None)
    assert values == pytest.approx([expected] * len(values), abs=1e-12, rel=0)


@pytest.mark.parametrize(("name", "params"), FUNCTION_CASES, ids=CASE_IDS)
def test_autograd_matches_central_differences(name: str, params: dict[str, Any]) -> None:
    cls, typed, dim = function_case(name, params)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = 4 * torch.rand(dim, dtype=torch.float64, generator=generator) - 2
        _, grad = value_and_grad(cls, x.clone(), typed)
        h = 1e-6
        numeric = torch.stack(
            [
                (cls.value(x + h * e, typed) - cls.value(x - h * e, typed)) / (2 * h)
                for e in torch.eye(dim, dtype=torch.float64)
            ]
        )
        torch.testing.assert_close(grad, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_values_keep_the_dtype_of_x(name: str) -> None:
    cls = FUNCTIONS[name]
    params = cls.Params()
    for dtype in (torch.float32, torch.float64):
        value = cls.value(torch.tensor(cls.default_x0(params), dtype=dtype), params)
        assert value.dtype == dtype and value.shape == ()


@pytest.mark.parametrize("name", FUNCTIONS)
def test_a_spec_takes_each_function_and_fills_its_x0(name: str) -> None:
    cls = FUNCTIONS[name]
    spec = ComparisonSpec.model_validate(
        {
            "name": "t",
            "problem": {"function": {"name": name}},
            "training": {"steps": 1},
            "optimizers": [{"name": "sgd"}],
            "dtype": "float64",
        }
    )
    assert spec.problem.x0 == cls.default_x0(cls.Params())
    built = build_problem(spec.problem, torch.device("cpu"), torch.float64)
    module = built.make_module(0)
    expected = cls.value(torch.tensor(spec.problem.x0, dtype=torch.float64), cls.Params())
    assert built.full_loss(module).item() == expected.item()


def test_rosenbrock_minimum_moves_with_a() -> None:
    cls = FUNCTIONS["rosenbrock"]
    assert cls.minimizers(cls.Params(a=2.0)) == [[2.0, 4.0]]
    with pytest.raises(ValidationError) as caught:
        cls.Params(b=0.0)
    assert caught.value.errors()[0]["loc"] == ("b",)


def test_himmelblau_has_four_distinct_minima() -> None:
    minimizers = torch.tensor(FUNCTIONS["himmelblau"].minimizers(registry.Params()))
    assert minimizers.shape == (4, 2)
    assert torch.cdist(minimizers, minimizers).add(torch.eye(4) * 10).min() > 1


def test_rastrigin_is_multimodal_in_any_dimension() -> None:
    cls = FUNCTIONS["rastrigin"]
    params = cls.Params(dim=3)
    assert cls.dim(params) == 3 and len(cls.default_x0(params)) == 3
    # a local minimum near every integer point: zero-ish gradient, higher value than the origin
    value, grad = value_and_grad(cls, [0.99496, 0.0, 0.0], params)
    assert 0.9 < value < 1.1 and grad.abs().max() < 1e-3
    with pytest.raises(ValidationError):
        cls.Params(dim=0)


def test_saddle_has_no_minimum() -> None:
    cls = FUNCTIONS["saddle"]
    params = cls.Params()
    assert cls.minimizers(params) == []
    value, grad = value_and_grad(cls, [0.0, 0.0], params)
    assert value == 0.0 and grad.abs().max() == 0.0  # stationary, yet not a minimum:
    assert cls.value(torch.tensor([0.0, 1e3], dtype=torch.float64), params).item() == -1e6
    assert cls.default_x0(params)[1] != 0.0  # on the x axis the gradient would never leave it


# ---------------------------------------------------------------- datasets

IMAGES = (np.arange(20 * 5 * 5) * 7 % 256).astype(np.uint8).reshape(20, 5, 5)  # every byte value 0..255
LABELS = np.array([i % 4 for i in range(20)], dtype=np.uint8)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    magic = magic if magic is not None else 0x800 | array.ndim
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_idx(
    directory: Path,
    images: bytes,
    labels: bytes,
    gz: bool = False,
    names: tuple[str, str] = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in zip(names, (images, labels)):
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (directory / name).write_bytes(content)


@pytest.fixture(autouse=True)
def idx_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A root holding a small IDX set under the default names, so idx loads on its defaults like the rest."""
    root = tmp_path / "root"
    write_idx(root, idx_bytes(IMAGES), idx_bytes(LABELS))
    (root / "input.txt").write_text("to be, or not to be, that is the question: " * 20)  # text_corpus's default
    monkeypatch.setattr(engine_config.config, "data_root", root)
    return root


def test_the_datasets_we_ship_are_registered() -> None:
    assert SHIPPED["dataset"] <= set(DATASETS)


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_contract(name: str) -> None:
    cls = DATASETS[name]
    params = cls.Params()
    data = cls.load(params)
    assert cls.description
    assert isinstance(data, Data) and data.task == cls.task
    assert cls.size(params) == len(data) == len(data.y) > 0
    if cls.task == "sequence":  # token ids in, the next token out at each position (IGNORE where not scored)
        assert data.x.dtype == data.y.dtype == torch.int64 and data.y.shape == data.x.shape
        assert 0 <= data.x.min() and data.x.max() < data.n_outputs
        scored = data.y[data.y != IGNORE]
        assert len(scored) and 0 <= scored.min() and scored.max() < data.n_outputs
    else:
        assert data.x.dtype == torch.float32 and torch.isfinite(data.x).all()
    if cls.task == "classification":
        assert data.y.dtype == torch.int64 and data.y.shape == (len(data),)
        assert data.n_outputs >= 2
        assert 0 <= data.y.min() and data.y.max() < data.n_outputs
    elif cls.task == "regression":
        assert data.y.is_floating_point() and data.y.shape == (len(data), data.n_outputs)
    again = cls.load(cls.Params())
    assert torch.equal(data.x, again.x) and torch.equal(data.y, again.y) and data.n_outputs == again.n_outputs
    # what the API sizes a run with, from the params alone (an upper bound on the classes)
    shape = cls.shape(params)
    assert (shape.n_samples, shape.sample_shape) == (len(data), tuple(data.x.shape[1:]))
    assert shape.n_outputs >= data.n_outputs if cls.task == "classification" else shape.n_outputs == data.n_outputs
    assert cls.validation_metric in ("accuracy", "loss", "perplexity")
    assert cls.higher_is_better == (cls.validation_metric == "accuracy")


def test_synthetic_classification_is_seeded_balanced_and_separable_on_request() -> None:
    cls = DATASETS["synthetic_classification"]
    data = cls.load(cls.Params(n_samples=300, n_classes=3))
    assert data.y.bincount().tolist() == [100, 100, 100]
    assert not torch.equal(data.x, cls.load(cls.Params(n_samples=300, seed=1)).x)

    def nearest_centre_accuracy(class_sep: float) -> float:
        d = cls.load(cls.Params(n_samples=3000, n_features=10, n_classes=3, class_sep=class_sep))
        centres = torch.stack([d.x[d.y == k].mean(0) for k in range(3)])
        return (torch.cdist(d.x, centres).argmin(1) == d.y).float().mean().item()

    assert nearest_centre_accuracy(0.0) < 0.4 < 0.95 < nearest_centre_accuracy(8.0)  # chance is 1/3
    with pytest.raises(ValidationError) as caught:
        cls.Params(n_classes=1)
    assert caught.value.errors()[0]["loc"] == ("n_classes",)


def test_digits_as_images_are_the_same_pixels() -> None:
    cls = DATASETS["digits"]
    flat, images = cls.load(cls.Params()), cls.load(cls.Params(as_images=True))
    assert flat.x.shape == (1797, 64) and images.x.shape == (1797, 1, 8, 8)
    assert torch.equal(images.x.reshape(1797, 64), flat.x) and torch.equal(images.y, flat.y)
    assert flat.x.min() == 0 and flat.x.max() == 1 and flat.n_outputs == 10


@pytest.mark.parametrize(
    ("name", "loader", "n_classes"),
    [("iris", load_iris, 3), ("wine", load_wine, 3), ("breast_cancer", load_breast_cancer, 2)],
)
def test_tabular_data_is_sklearns_in_its_own_units(name: str, loader, n_classes: int) -> None:
    data, bunch = DATASETS[name].load(DATASETS[name].Params()), loader()
    assert torch.equal(data.x, torch.tensor(bunch.data, dtype=torch.float32))
    assert data.y.tolist() == bunch.target.tolist() and data.n_outputs == n_classes


@pytest.mark.parametrize(
    ("dataset", "standardized"),
    [
        ("iris", True),
        ("wine", True),
        ("breast_cancer", True),
        ("digits", False),
        ("idx", False),
        ("synthetic_classification", False),
    ],
)
def test_only_data_in_its_own_units_is_standardized_by_default(dataset: str, standardized: bool) -> None:
    spec = ComparisonSpec.model_validate(
        {
            "name": "t",
            "problem": {"model": {"name": "linear"}, "dataset": {"name": dataset}, "loss": "cross_entropy"},
            "training": {"steps": 1},
            "optimizers": [{"name": "sgd"}],
        }
    )
    assert spec.problem.standardize is standardized
    x = build_problem(spec.problem, torch.device("cpu"), torch.float64).x
    if standardized:
        torch.testing.assert_close(x.mean(0), torch.zeros(x.shape[1], dtype=torch.float64), atol=1e-9, rtol=0)
    else:
        assert torch.equal(x, DATASETS[dataset].load(DATASETS[dataset].Params()).x.double())


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_idx_round_trip(idx_root: Path, gz: bool) -> None:
    cls = DATASETS["idx"]
    write_idx(idx_root / "set", idx_bytes(IMAGES), idx_bytes(LABELS), gz=gz)
    params = cls.Params(path="set")
    data = cls.load(params)
    assert cls.size(params) == len(data) == 20
    assert data.x.dtype == torch.float32 and data.x.shape == (20, 1, 5, 5)
    torch.testing.assert_close(data.x, torch.tensor(IMAGES, dtype=torch.float32).unsqueeze(1) / 255)
    assert data.y.dtype == torch.int64 and data.y.tolist() == LABELS.tolist() and data.n_outputs == 4
    limited = cls.Params(path="set", limit=6)
    assert cls.size(limited) == len(cls.load(limited)) == 6
    assert torch.equal(cls.load(limited).x, data.x[:6])
    # an absolute path inside the root, and file names given with their .gz suffix, work as well
    names = {"images": "train-images-idx3-ubyte.gz", "labels": "train-labels-idx1-ubyte.gz"} if gz else {}
    assert torch.equal(cls.load(cls.Params(path=str(idx_root / "set"), **names)).x, data.x)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (idx_bytes(IMAGES, magic=0x00000801), idx_bytes(LABELS), "magic 0x00000803 expected, found 0x00000801"),
        (idx_bytes(IMAGES), idx_bytes(LABELS, magic=0x12345678), "magic 0x00000801 expected, found 0x12345678"),
        (b"\x00\x00", idx_bytes(LABELS), "truncated"),
        (idx_bytes(IMAGES)[:-1], idx_bytes(LABELS), r"a file of 516 bytes\) but it has 515"),
        (idx_bytes(IMAGES), idx_bytes(LABELS) + b"\x00", r"a file of 28 bytes\) but it has 29"),
        (idx_bytes(IMAGES), idx_bytes(LABELS[:19]), "20 images but 19 labels"),
        (idx_bytes(IMAGES[:0]), idx_bytes(LABELS[:0]), "empty"),
    ],
    ids=["images-magic", "labels-magic", "truncated-header", "short-body", "long-body", "count", "empty"],
)
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzipped"])
def test_idx_rejects_malformed_files(idx_root: Path, images: bytes, labels: bytes, message: str, gz: bool) -> None:
    cls = DATASETS["idx"]
    write_idx(idx_root / "bad", images, labels, gz=gz)
    params = cls.Params(path="bad")
    with pytest.raises(ValueError, match=message):
        cls.load(params)
    if not (gz and "bytes" in message):  # size() reads the header only, so it cannot see a gzipped body
        with pytest.raises(ValueError, match=message):
            cls.size(params)


def test_idx_missing_files_are_named_without_the_server_layout(idx_root: Path) -> None:
    (idx_root / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="'train-images-idx3-ubyte' .* not found in 'empty'") as caught:
        DATASETS["idx"].load(DATASETS["idx"].Params(path="empty"))
    assert str(idx_root) not in str(caught.value)


@pytest.mark.parametrize("path", ["..", "../root-sibling", "/etc", "set/../../..", "escape"])
def test_idx_paths_outside_the_root_are_validation_errors_on_path(idx_root: Path, path: str) -> None:
    (idx_root / "escape").symlink_to(idx_root.parent)  # a symlink out of the root is outside too
    with pytest.raises(ValidationError) as caught:
        DATASETS["idx"].Params(path=path)
    assert [error["loc"] for error in caught.value.errors()] == [("path",)]
    assert "outside the IDX data root" in caught.value.errors()[0]["msg"]


@pytest.mark.parametrize("field", ["images", "labels"])
@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", "sub/file"])
def test_idx_file_names_cannot_hold_directories(field: str, name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DATASETS["idx"].Params(**{field: name})
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_idx_outside_the_root_is_rejected_in_a_spec_at_params_path() -> None:
    with pytest.raises(ValidationError) as caught:
        ComparisonSpec.model_validate(
            {
                "name": "t",
                "training": {"epochs": 1},
                "optimizers": [{"name": "sgd"}],
                "problem": {
                    "model": {"name": "cnn"},
                    "dataset": {"name": "idx", "params": {"path": "/etc"}},
                    "loss": "cross_entropy",
                },
            }
        )
    assert [error["loc"] for error in caught.value.errors()] == [("problem", "dataset", "params", "path")]


def test_idx_load_checks_the_root_again(idx_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = DATASETS["idx"].Params(path=str(idx_root))
    monkeypatch.setattr(
        engine_config.config, "data_root", tmp_path / "elsewhere"
    )  # e.g. a worker configured differently
    with pytest.raises(ValueError, match="outside the IDX data root"):
        DATASETS["idx"].load(params)


# ---------------------------------------------------------------- models


def test_the_models_we_ship_are_registered() -> None:
    assert SHIPPED["model"] <= set(MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_every_model_counts_the_parameters_it_builds(name: str) -> None:
    """The parameter count the API sizes a run with, from the params alone, on the model's own test problem."""
    cls = MODELS[name]
    dataset = DATASETS[cls.test_problem["dataset"]["name"]]
    shape = dataset.shape(dataset.Params.model_validate(cls.test_problem["dataset"].get("params", {})))
    params = cls.Params.model_validate(cls.test_problem.get("params", {}))
    built = cls.build(params, shape.sample_shape, shape.n_outputs)
    assert cls.parameter_count(params, shape.sample_shape, shape.n_outputs) == sum(
        p.numel() for p in built.parameters()
    )
    assert cls.activation_count(params, shape.sample_shape, shape.n_outputs) > 0


@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_reproducibly_on_images(name: str) -> None:
    cls = MODELS[name]
    assert cls.description
    x, n_outputs = torch.rand(5, 1, 8, 8), 10
    if cls.input_ranks is not None and 3 not in cls.input_ranks:  # not an image model: on its own test data
        dataset = DATASETS[cls.test_problem["dataset"]["name"]]
        data = dataset.load(dataset.Params.model_validate(cls.test_problem["dataset"].get("params", {})))
        x, n_outputs = data.x[:5], data.n_outputs

    def build(seed: int) -> torch.nn.Module:
        with torch.random.fork_rng(devices=[]):  # as engine.problem does, leaving the global RNG alone
            torch.manual_seed(seed)
            return cls.build(cls.Params(), tuple(x.shape[1:]), n_outputs)

    first, second, other = build(0), build(0), build(1)
    assert first(x).shape[0] == 5 and first(x).shape[-1] == n_outputs
    state, same, different = first.state_dict(), second.state_dict(), other.state_dict()
    assert state.keys() == same.keys() and all(torch.equal(state[k], same[k]) for k in state)
    assert any(not torch.equal(state[k], different[k]) for k in state)
    torch.testing.assert_close(first(x), second(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "params", "input_shape"),
    [
        ("mlp", {}, (4,)),
        ("mlp", {"hidden": [7, 5]}, (2, 3)),
        ("linear", {}, (4,)),
        ("linear", {"bias": False}, (3, 2, 2)),
        ("cnn", {}, (1, 8, 8)),
        ("cnn", {}, (8, 8)),
        ("cnn", {"channels": [4, 4, 4, 4], "kernel_size": 5, "hidden": 0, "activation": "tanh"}, (1, 8, 8)),
        ("cnn", {"channels": [3], "activation": "gelu"}, (3, 28, 28)),
        ("cnn", {}, (2, 1, 9)),
    ],
)
def test_output_shapes(name: str, params: dict[str, Any], input_shape: tuple[int, ...]) -> None:
    cls = MODELS[name]
    module = cls.build(cls.Params(**params), input_shape, 3)
    assert module(torch.rand(6, *input_shape)).shape == (6, 3)


def test_linear_is_one_affine_map() -> None:
    cls = MODELS["linear"]
    module = cls.build(cls.Params(), (2, 3), 4)
    assert [p.shape for p in module.parameters()] == [(4, 6), (4,)]
    assert sum(p.numel() for p in cls.build(cls.Params(bias=False), (6,), 4).parameters()) == 24
    x = torch.rand(5, 2, 3)
    layer = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][0]
    torch.testing.assert_close(module(x), x.reshape(5, 6) @ layer.weight.T + layer.bias)


def test_cnn_rejects_flat_inputs_and_even_kernels() -> None:
    cls = MODELS["cnn"]
    with pytest.raises(ValueError, match=r"inputs of shape \(C, H, W\) or \(H, W\), got samples of shape \(64,\)"):
        cls.build(cls.Params(), (64,), 10)
    with pytest.raises(ValidationError) as caught:
        cls.Params(kernel_size=4)
    assert caught.value.errors()[0]["loc"] == ("kernel_size",)
    with pytest.raises(ValidationError):
        cls.Params(channels=[])


# ---------------------------------------------------------------- end to end through engine.problem


@pytest.mark.parametrize(
    ("model", "dataset"),
    [
        ({"name": "linear"}, {"name": "iris"}),
        (
            {"name": "cnn", "params": {"channels": [4, 8], "hidden": 16}},
            {"name": "digits", "params": {"as_images": True}},
        ),
        ({"name": "mlp", "params": {"hidden": [16]}}, {"name": "synthetic_classification"}),
        ({"name": "cnn", "params": {"channels": [8], "hidden": 32}}, {"name": "idx"}),
        ({"name": "linear"}, {"name": "breast_cancer"}),
    ],
    ids=["logistic-iris", "cnn-digits", "mlp-blobs", "cnn-idx", "logistic-breast-cancer"],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_classification_problems_train(model: dict, dataset: dict, dtype: str) -> None:
    spec = ComparisonSpec.model_validate(
        {
            "name": "t",
            "problem": {"model": model, "dataset": dataset, "loss": "cross_entropy"},
            "training": {"steps": 20},
            "optimizers": [{"name": "adam", "params": {"lr": 0.05}}],
            "dtype": dtype,
        }
    )
    built = build_problem(spec.problem, torch.device("cpu"), getattr(torch, dtype))
    module = built.make_module(0)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.05)
    batch = torch.arange(min(built.n_train, 256))  # a mini-batch keeps the cnn quick on a CPU
    before = built.full_loss(module).item()
    for _ in range(20):
        optimizer.zero_grad()
        built.batch_loss(module, batch).backward()
        optimizer.step()
    assert built.full_loss(module).item() < 0.8 * before
