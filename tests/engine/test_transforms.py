"""The update rules of engine.transforms against torch.optim and against hand-written numpy loops."""

import copy

import numpy as np
import pytest
import torch

from engine import registry
from engine.transforms import GradientTransformation, TransformOptimizer, adam, local_gain

Tensor = torch.Tensor


def make_closure(optimizer: torch.optim.Optimizer, loss_fn):
    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    return closure


def small_mlp(dtype: torch.dtype) -> tuple[torch.nn.Module, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(dtype)
    x = torch.randn(32, 4, generator=generator, dtype=torch.float64)
    y = torch.sin(x.sum(dim=1, keepdim=True))  # learnable, so training makes the updates matter
    return model, x.to(dtype), y.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_rule_matches_torch_adam(dtype: torch.dtype, amsgrad: bool, weight_decay: float) -> None:
    ours, x, y = small_mlp(dtype)
    theirs = copy.deepcopy(ours)
    hyper = {"eps": 1e-8, "weight_decay": weight_decay, "amsgrad": amsgrad}
    ours_opt = TransformOptimizer(ours.parameters(), adam(0.9, 0.99, **hyper), lr=1e-2)
    theirs_opt = torch.optim.Adam(theirs.parameters(), lr=1e-2, betas=(0.9, 0.99), **hyper)
    ours_step = make_closure(ours_opt, lambda: torch.nn.functional.mse_loss(ours(x), y))
    theirs_step = make_closure(theirs_opt, lambda: torch.nn.functional.mse_loss(theirs(x), y))

    first = ours_step()
    for _ in range(250):
        torch.testing.assert_close(ours_opt.step(ours_step), theirs_opt.step(theirs_step))
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b)
        assert a.dtype == dtype
    assert ours_step() < 0.5 * first  # it trained, so the comparison covered real updates


def seed_adam_reference() -> list[float]:
    """The numpy loop of /work/shared/seeds/002_*.txt (Adam part, plotting left out)."""

    def grad(x):
        return 2 * (x - 2)

    alpha = 0.1
    beta1 = 0.9
    beta2 = 0.999
    eps = 1e-8
    steps = 50
    x_adam = 8.0
    m = 0
    v = 0
    adam_traj = [x_adam]
    for t in range(1, steps + 1):
        g = grad(x_adam)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * (g**2)
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        x_adam -= alpha * m_hat / (np.sqrt(v_hat) + eps)
        adam_traj.append(x_adam)
    return adam_traj


def seed_problem_trajectory(build) -> list[float]:
    x = torch.tensor([8.0], dtype=torch.float64, requires_grad=True)
    optimizer = build([x])
    closure = make_closure(optimizer, lambda: ((x - 2) ** 2).sum())
    trajectory = [x.item()]
    for _ in range(50):
        optimizer.step(closure)
        trajectory.append(x.item())
    return trajectory


def test_registry_adam_matches_the_seed_numpy_loop() -> None:
    adam_cls = registry.get("optimizer", "adam")
    trajectory = seed_problem_trajectory(lambda params: adam_cls.build(params, adam_cls.Params(lr=0.1)))
    np.testing.assert_allclose(trajectory, seed_adam_reference(), rtol=0, atol=1e-12)


def test_adam_rule_matches_the_seed_numpy_loop() -> None:
    trajectory = seed_problem_trajectory(lambda params: TransformOptimizer(params, adam(), lr=0.1))
    reference = seed_adam_reference()
    np.testing.assert_allclose(trajectory, reference, rtol=0, atol=1e-12)
    assert abs(reference[-1] - 2) < abs(reference[0] - 2) / 2


# A separable quadratic whose gradients shrink as it converges, so v decays and AMSGrad's maximum differs from v.
CURVATURE = np.array([0.5, 4.0, 1.0, 0.0])
TARGET = np.array([1.0, -2.0, 0.5, 0.3])
START = np.array([-3.0, 2.0, -0.5, 1.0])


def quadratic_grad(w: np.ndarray) -> np.ndarray:
    return 2 * CURVATURE * (w - TARGET)


def run_quadratic(optimizer_cls: str, steps: int, **params) -> np.ndarray:
    cls = registry.get("optimizer", optimizer_cls)
    w = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    optimizer = cls.build([w], cls.Params(**params))
    curvature, target = torch.from_numpy(CURVATURE), torch.from_numpy(TARGET)
    closure = make_closure(optimizer, lambda: (curvature * (w - target) ** 2).sum())
    trajectory = []
    for _ in range(steps):
        optimizer.step(closure)
        trajectory.append(w.detach().numpy().copy())
    return np.array(trajectory)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
def test_adam_without_bias_correction_matches_the_equations(amsgrad: bool, weight_decay: float) -> None:
    lr, b1, b2, eps, steps = 0.05, 0.9, 0.99, 1e-8, 300
    w, m, v, v_max = START.copy(), np.zeros(4), np.zeros(4), np.zeros(4)
    reference, max_was_used = [], False
    for _ in range(steps):
        g = quadratic_grad(w) + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        v_max = np.maximum(v_max, v)
        max_was_used |= bool((v_max > v).any())
        v_hat = v_max if amsgrad else v  # no bias correction: m̂ = m, v̂ = v
        w = w - lr * m / (np.sqrt(v_hat) + eps)
        reference.append(w)

    trajectory = run_quadratic(
        "adam",
        steps,
        lr=lr,
        betas=(b1, b2),
        eps=eps,
        weight_decay=weight_decay,
        amsgrad=amsgrad,
        bias_correction=False,
    )
    np.testing.assert_allclose(trajectory, np.array(reference), rtol=0, atol=1e-12)
    assert max_was_used
    if weight_decay == 0:
        assert np.abs(trajectory[-1] - TARGET)[:3].max() < 0.1


def test_local_gain_matches_the_rule() -> None:
    lr, beta, steps = 0.15, 0.05, 400
    w, gain, previous = START.copy(), np.ones(4), np.zeros(4)
    reference, increased, decreased, unchanged = [], 0, 0, 0
    for step in range(steps):
        g = quadratic_grad(w)
        agreement = g * previous
        gain = np.where(agreement > 0, gain + beta, np.where(agreement < 0, gain * (1 - beta), gain))
        w = w - lr * gain * g
        previous = g
        reference.append(w)
        if step > 0:  # the first step always leaves the gains alone: there is no previous gradient
            increased += int((agreement > 0).sum())
            decreased += int((agreement < 0).sum())
            unchanged += int((agreement == 0).sum())
    assert increased > 0 and decreased > 0 and unchanged > 0

    trajectory = run_quadratic("local_gain", steps, lr=lr, beta=beta)
    np.testing.assert_allclose(trajectory, np.array(reference), rtol=0, atol=1e-12)
    assert np.abs(trajectory[-1] - TARGET)[:3].max() < 1e-6


def test_local_gain_first_step_is_plain_gradient_descent() -> None:
    w = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    optimizer = TransformOptimizer([w], local_gain(0.5), lr=0.1)
    curvature, target = torch.from_numpy(CURVATURE), torch.from_numpy(TARGET)
    optimizer.step(make_closure(optimizer, lambda: (curvature * (w - target) ** 2).sum()))
    np.testing.assert_array_equal(w.detach().numpy(), START - 0.1 * quadratic_grad(START))
    assert torch.equal(optimizer.state[w]["gain"], torch.ones(4, dtype=torch.float64))


@pytest.mark.parametrize(
    "rule",
    [adam(amsgrad=True, weight_decay=0.01), adam(bias_correction=False), local_gain(0.1)],
    ids=["adam-amsgrad", "adam-no-bias-correction", "local_gain"],
)
def test_state_dict_round_trip_resumes_identically(rule: GradientTransformation) -> None:
    model, x, y = small_mlp(torch.float64)
    optimizer = TransformOptimizer(model.parameters(), rule, lr=1e-2)
    closure = make_closure(optimizer, lambda: torch.nn.functional.mse_loss(model(x), y))
    for _ in range(10):
        optimizer.step(closure)

    saved = optimizer.state_dict()
    resumed_model = copy.deepcopy(model)
    resumed = TransformOptimizer(resumed_model.parameters(), rule, lr=1.0)  # lr comes back from the state dict
    resumed.load_state_dict(saved)
    resumed_closure = make_closure(resumed, lambda: torch.nn.functional.mse_loss(resumed_model(x), y))
    assert resumed.param_groups[0]["lr"] == 1e-2
    for _ in range(10):
        assert torch.equal(optimizer.step(closure), resumed.step(resumed_closure))

    for a, b in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(optimizer.state.values(), resumed.state.values(), strict=True):
        assert a["step"] == b["step"] == 20
        assert a.keys() == b.keys()
        assert all(torch.equal(a[key], b[key]) for key in a if key != "step")


def test_lr_is_read_from_the_param_group_at_every_step() -> None:
    w = torch.tensor(START, dtype=torch.float64, requires_grad=True)
    optimizer = TransformOptimizer([w], local_gain(), lr=0.1)
    closure = make_closure(optimizer, lambda: (w**2).sum())
    optimizer.step(closure)
    before = w.detach().clone()
    optimizer.param_groups[0]["lr"] = 0.0
    optimizer.step(closure)
    assert torch.equal(w.detach(), before)
    optimizer.param_groups[0]["lr"] = 0.1
    optimizer.step(closure)
    assert not torch.equal(w.detach(), before)
    assert optimizer.state[w]["step"] == 3


def test_step_returns_the_closure_loss_and_skips_params_without_grad() -> None:
    used = torch.tensor([1.0, 2.0], requires_grad=True)
    unused = torch.tensor([3.0], requires_grad=True)
    optimizer = TransformOptimizer([used, unused], adam(), lr=0.1)
    loss = optimizer.step(make_closure(optimizer, lambda: (used**2).sum()))
    assert loss.item() == 5.0
    assert unused.item() == 3.0 and unused not in optimizer.state
    assert optimizer.step() is None  # without a closure, the gradients already there are used
    assert optimizer.state[used]["step"] == 2


# Every optimizer that names a torch.optim class and also has a rule (the ensemble runs the rule): the rule
# through TransformOptimizer agrees with torch.optim step by step, on each code path.
RULE_PATHS = {
    "sgd": [{}, {"momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01}, {"momentum": 0.8, "nesterov": True}],
    "adam": [{"weight_decay": 0.01}, {"amsgrad": True, "betas": (0.8, 0.99)}],
    "adamw": [{"weight_decay": 0.1}, {"amsgrad": True}],
    "rmsprop": [{}, {"centered": True, "momentum": 0.5, "weight_decay": 0.01}],
}


@pytest.mark.parametrize(
    "name",
    [
        name
        for name, cls in registry.all_of("optimizer").items()
        if cls.torch_optimizer is not None and cls.rule(cls.Params()) is not None
    ],
)
def test_an_optimizers_rule_matches_its_torch_optimizer(name: str) -> None:
    cls = registry.get("optimizer", name)
    for extra in RULE_PATHS.get(name, [{}]):
        params = cls.Params(**{**cls.test_settings.params.get("rosenbrock", {}), **extra, "lr": 1e-2})
        ours, x, y = small_mlp(torch.float64)
        theirs = copy.deepcopy(ours)
        ours_opt = TransformOptimizer(ours.parameters(), cls.rule(params), lr=params.lr)
        theirs_opt = cls.build(list(theirs.parameters()), params)
        assert type(theirs_opt) is cls.torch_optimizer
        ours_step = make_closure(ours_opt, lambda: torch.nn.functional.mse_loss(ours(x), y))
        theirs_step = make_closure(theirs_opt, lambda: torch.nn.functional.mse_loss(theirs(x), y))
        for _ in range(100):
            torch.testing.assert_close(ours_opt.step(ours_step), theirs_opt.step(theirs_step), rtol=1e-12, atol=0)
        for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
