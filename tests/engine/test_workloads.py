"""The workloads of issue 16 at their small sizes: each learns (its declared validation metric moves by a stated
margin with a standard optimizer, through engine.training.train), two runs of one seed are the same run (init
and batches), the references they expose are right (logistic_l2's optimum against scipy, noisy_quadratic's
against least squares), the sequence loss and accuracy against hand computation, the text corpus stays under
the data root, sizing refuses a transformer too large, and evaluations are not training time."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.optimize
import torch
from pydantic import ValidationError
from sklearn.datasets import load_digits

import engine.recorder as recorder_module
from engine import config as engine_config
from engine import registry
from engine.datasets import IGNORE, validation_value
from engine.problem import DatasetProblem, build_problem
from engine.recorder import StepBatch
from engine.sizing import estimate
from engine.spec import ComparisonSpec
from engine.training import train
from tests.engine.test_problems import idx_bytes, write_idx

CORPUS = "to be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 30

TRANSFORMER = {"name": "transformer", "params": {"layers": 1, "heads": 2, "width": 32}}
SMALL_RESNET = {"name": "resnet", "params": {"width": 4, "stages": 2, "groups": 2}}
WIDER_RESNET = {"name": "resnet", "params": {"width": 8, "stages": 2, "groups": 2}}

#: id: (problem, training, optimizer, how the metric must move); margins measured at these sizes and halved
WORKLOADS: dict[str, tuple[dict, dict, dict, str]] = {
    "transformer-modular": (
        {
            "model": TRANSFORMER,
            "dataset": {"name": "modular_arithmetic", "params": {"p": 11}},
            "loss": "token_cross_entropy",
            "validation_fraction": 0.3,
        },
        {"steps": 100, "batch_size": "full"},
        {"name": "adamw", "params": {"lr": 0.01, "weight_decay": 1.0}},
        "twice chance",
    ),
    "transformer-text": (
        {
            "model": TRANSFORMER,
            "dataset": {"name": "text_corpus", "params": {"path": "corpus.txt", "context": 16}},
            "loss": "token_cross_entropy",
            "validation_fraction": 0.2,
        },
        {"steps": 40, "batch_size": 32},
        {"name": "adam", "params": {"lr": 0.01}},
        "halved",
    ),
    "resnet-digits": (
        {
            "model": SMALL_RESNET,
            "dataset": {"name": "digits", "params": {"as_images": True}},
            "loss": "cross_entropy",
            "validation_fraction": 0.2,
        },
        {"steps": 25, "batch_size": 32},
        {"name": "adam", "params": {"lr": 0.01}},
        "+0.1",
    ),
    "resnet-idx": (
        {
            "model": SMALL_RESNET,
            "dataset": {"name": "idx", "params": {"path": "digits-idx"}},
            "loss": "cross_entropy",
            "validation_fraction": 0.2,
        },
        {"steps": 25, "batch_size": 32},
        {"name": "adam", "params": {"lr": 0.01}},
        "+0.1",
    ),
    "resnet-mnist1d": (
        {
            "model": WIDER_RESNET,
            "dataset": {"name": "mnist1d", "params": {"as_images": True, "n_samples": 1000}},
            "loss": "cross_entropy",
            "validation_fraction": 0.25,
        },
        {"steps": 60, "batch_size": 32},
        {"name": "adam", "params": {"lr": 0.003}},
        "+0.1",
    ),
    "linear-noisy-quadratic": (
        {
            "model": {"name": "linear"},
            "dataset": {"name": "noisy_quadratic", "params": {"n_samples": 500, "dim": 20}},
            "loss": "mse_mean",
            "validation_fraction": 0.2,
        },
        {"steps": 40, "batch_size": 32},
        {"name": "sgd", "params": {"lr": 0.01}},
        "a tenth",
    ),
    "autoencoder-digits": (
        {
            "model": {"name": "autoencoder", "params": {"encoder": [16], "code": 4}},
            "dataset": {"name": "digits_reconstruction"},
            "loss": "mse_mean",
            "validation_fraction": 0.2,
        },
        {"steps": 30, "batch_size": 64},
        {"name": "adam", "params": {"lr": 0.01}},
        "halved",
    ),
}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: one intra-op thread is 5-30x faster than two fighting the load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    (root / "corpus.txt").write_text(CORPUS)
    digits = load_digits()  # MNIST-format files of real digits, so that learning them means something
    pixels = np.round(digits.images * 255 / 16).astype(np.uint8)
    write_idx(root / "digits-idx", idx_bytes(pixels), idx_bytes(digits.target.astype(np.uint8)))
    monkeypatch.setattr(engine_config.config, "data_root", root)
    return root


def make_spec(problem: dict, training: dict, optimizer: dict) -> ComparisonSpec:
    return ComparisonSpec.model_validate(
        {"name": "workload", "problem": problem, "training": training, "optimizers": [optimizer], "device": "cpu"}
    )


def run(spec: ComparisonSpec, seed: int = 0) -> list[StepBatch]:
    batches: list[StepBatch] = []
    train(spec, 0, seed, lambda b: batches.append(b) or True, total_steps=spec.training.steps or 0)
    return batches


@pytest.mark.parametrize("workload", WORKLOADS, ids=list(WORKLOADS))
def test_each_workload_learns_at_its_small_size(workload: str) -> None:
    problem, training, optimizer, margin = WORKLOADS[workload]
    spec = make_spec(problem, {**training, "eval_every": training["steps"]}, optimizer)
    evals = [e for b in run(spec) for e in b.evals]
    dataset = spec.problem.dataset_ref.component
    first, last = (validation_value(dataset.validation_metric, e) for e in (evals[0], evals[-1]))
    assert first is not None and last is not None
    if margin == "twice chance":  # modular arithmetic: the answer is one of p classes
        assert dataset.validation_metric == "accuracy" and last >= 2 / 11 > first
    elif margin == "+0.1":
        assert dataset.validation_metric == "accuracy" and last >= first + 0.1
    else:
        assert not dataset.higher_is_better
        assert last <= first * (0.5 if margin == "halved" else 0.1)
    if dataset.validation_metric == "perplexity":
        assert first == pytest.approx(math.exp(evals[0]["val_loss"])) and first > 20  # about the vocabulary's size


@pytest.mark.parametrize("workload", WORKLOADS, ids=list(WORKLOADS))
def test_one_seed_gives_the_same_init_and_batches_twice(workload: str) -> None:
    problem, training, optimizer, _ = WORKLOADS[workload]
    spec = make_spec(problem, {**training, "steps": 3}, optimizer)
    built = [build_problem(spec.problem, torch.device("cpu"), torch.float32) for _ in range(2)]
    assert torch.equal(built[0].x, built[1].x) and torch.equal(built[0].y, built[1].y)
    states = [b.make_module(seed).state_dict() for b, seed in zip(built + built[:1], (0, 0, 1))]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[0])
    losses = [np.concatenate([b.loss for b in run(spec, seed)]) for seed in (0, 0, 1)]
    np.testing.assert_array_equal(losses[0], losses[1])  # same init and batches: the same losses, bit for bit
    assert not np.array_equal(losses[0], losses[2])


def test_logistic_l2_optimum_is_scipys_and_gradient_descent_reaches_it() -> None:
    cls = registry.get("function", "logistic_l2")
    params = cls.Params(n_samples=150, n_features=6, l2=0.05)
    optimum = np.array(cls.minimizers(params)[0])

    def f(x: np.ndarray) -> float:
        return float(cls.value(torch.tensor(x), params))

    reference = scipy.optimize.minimize(f, np.zeros(6), method="BFGS", options={"gtol": 1e-12})
    np.testing.assert_allclose(optimum, reference.x, atol=1e-6)
    assert f(optimum) <= reference.fun + 1e-15
    spec = make_spec(
        {"function": {"name": "logistic_l2", "params": params.model_dump()}},
        {"steps": 100},
        {"name": "sgd", "params": {"lr": 1.0}},
    )
    points = np.concatenate([b.x for b in run(spec)])  # the point before each update: distance to the optimum
    distances = np.linalg.norm(points - optimum, axis=1)
    assert distances[-1] < 1e-5 * distances[0]  # down to float32's resolution
    assert np.all(np.diff(distances[distances > 1e-4]) < 0)  # a contraction: closer at every step


def test_noisy_quadratic_has_its_spectrum_and_optimum() -> None:
    cls = registry.get("dataset", "noisy_quadratic")
    params = cls.Params(dim=50, n_samples=20_000, noise=0.0)
    data = cls.load(params)
    x = data.x.double()
    eigenvalues = torch.linalg.eigvalsh(x.T @ x / len(x))
    assert 30 * 0.9 < eigenvalues[-5:].min() and eigenvalues[-1] < 60 * 1.1  # the 10% large ones of DeepOBS's
    assert eigenvalues[:45].max() < 1.1
    solution = torch.linalg.lstsq(x, data.y.double()).solution.squeeze(1)
    torch.testing.assert_close(solution, cls.optimum(params), atol=1e-4, rtol=0)
    inverse = torch.linalg.eigvalsh(
        cls.load(cls.Params(dim=10, n_samples=50_000, spectrum="inverse")).x.double().T.cov()
    )
    torch.testing.assert_close(inverse.flip(0), 1 / torch.arange(1.0, 11, dtype=torch.float64), rtol=0.05, atol=0)


def test_token_loss_and_accuracy_score_only_the_scored_tokens() -> None:
    spec = make_spec(
        {
            "model": TRANSFORMER,
            "dataset": {"name": "modular_arithmetic", "params": {"p": 5}},
            "loss": "token_cross_entropy",
        },
        {"steps": 1},
        {"name": "sgd"},
    )
    built = build_problem(spec.problem, torch.device("cpu"), torch.float32)
    assert isinstance(built, DatasetProblem) and built.x.dtype == torch.int64 and built.n_outputs == 7
    module = built.make_module(0)
    logits = module(built.x)
    assert logits.shape == (25, 4, 7)
    answers = built.y[:, -1]
    assert torch.equal(answers, (built.x[:, 0] + built.x[:, 2]) % 5) and (built.y[:, :-1] == IGNORE).all()
    expected = -torch.log_softmax(logits[:, -1].double(), dim=-1).gather(1, answers[:, None]).mean()
    metrics = built.evaluate(module)
    torch.testing.assert_close(metrics["train_loss"], expected, rtol=1e-5, atol=0)
    assert metrics["train_accuracy"].item() == (logits[:, -1].argmax(-1) == answers).double().mean().item()
    assert validation_value("perplexity", {"val_loss": 2.0}) == pytest.approx(math.exp(2.0))


def test_the_transformer_is_causal() -> None:
    cls = registry.get("model", "transformer")
    torch.manual_seed(0)
    module = cls.build(cls.Params(layers=2, heads=4, width=16), (8,), 13)
    tokens = torch.randint(0, 13, (3, 8))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 13
    out, out_changed = module(tokens), module(changed)
    torch.testing.assert_close(out[:, :5], out_changed[:, :5], rtol=0, atol=0)
    assert not torch.allclose(out[:, 5:], out_changed[:, 5:])


def test_text_corpus_is_read_under_the_root_only(data_root: Path) -> None:
    cls = registry.get("dataset", "text_corpus")
    data = cls.load(cls.Params(path="corpus.txt", context=10))
    alphabet = sorted(set(CORPUS))
    assert data.n_outputs == len(alphabet) and data.x.shape == ((len(CORPUS) - 1) // 10, 10)
    assert "".join(alphabet[i] for i in data.x[0]) == CORPUS[:10]
    torch.testing.assert_close(data.y[:, :-1], data.x[:, 1:], rtol=0, atol=0)  # targets: the next token
    as_bytes = cls.load(cls.Params(path="corpus.txt", context=10, level="byte"))
    assert as_bytes.n_outputs == 256 and bytes(as_bytes.x[0].tolist()) == CORPUS[:10].encode()
    (data_root.parent / "outside.txt").write_text(CORPUS)
    for path, message in [("../outside.txt", "outside the IDX data root"), ("missing.txt", "no file 'missing.txt'")]:
        with pytest.raises(ValidationError) as caught:
            make_spec(
                {
                    "model": TRANSFORMER,
                    "dataset": {"name": "text_corpus", "params": {"path": path}},
                    "loss": "token_cross_entropy",
                },
                {"steps": 1},
                {"name": "sgd"},
            )
        [error] = caught.value.errors()
        assert error["loc"] == ("problem", "dataset", "params", "path") and message in error["msg"]


def test_sizing_counts_the_transformer_and_names_its_width() -> None:
    problem = {
        "model": {"name": "transformer", "params": {"layers": 2, "heads": 2, "width": 24}},
        "dataset": {"name": "modular_arithmetic", "params": {"p": 7}},
        "loss": "token_cross_entropy",
    }
    spec = make_spec(problem, {"steps": 1}, {"name": "adam"})
    built = build_problem(spec.problem, torch.device("cpu"), torch.float32)
    module = built.make_module(0)
    assert estimate(spec).parts["parameters"] == 4 * sum(p.numel() for p in module.parameters())
    huge = make_spec(
        {**problem, "model": {"name": "transformer", "params": {"layers": 96, "width": 16384}}},
        {"steps": 1},
        {"name": "adam"},
    )
    assert estimate(huge).total > 2**40 and estimate(huge).loc == ("problem", "model", "params", "width")


class FakeClock:
    """perf_counter that only moves when told: each call 1 ms, an evaluation 100 s."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 0.001
        return self.now

    def monotonic(self) -> float:
        return self.now


def test_evaluations_are_not_training_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(recorder_module, "time", clock)
    evaluate = DatasetProblem.evaluate

    def slow_evaluate(self: DatasetProblem, module: Any) -> dict[str, torch.Tensor]:
        clock.now += 100.0
        return evaluate(self, module)

    monkeypatch.setattr(DatasetProblem, "evaluate", slow_evaluate)
    problem, _, optimizer, _ = WORKLOADS["autoencoder-digits"]
    spec = make_spec(problem, {"steps": 6, "batch_size": 64, "eval_every": 2}, optimizer)
    batches: list[StepBatch] = []
    outcome = train(spec, 0, 0, lambda b: batches.append(b) or True, total_steps=6, flush_every=3, flush_interval_s=1e9)
    time_s = np.concatenate([b.time_s for b in batches])
    assert len([e for b in batches for e in b.evals]) == 4  # at 0, 2, 4 and 6 updates: 400 s of evaluation
    assert time_s[-1] < 1.0 and outcome.wall_time_s < 1.0
    assert np.all(np.concatenate([b.step_time_ms for b in batches]) < 100)
