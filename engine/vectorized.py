"""Many small runs of one comparison trained as one ensemble, to the same results as one by one.

Runs that share the problem, the optimizer and the batch size (a learning-rate sweep × seeds, say) become
the members of an ensemble. Each member's module is built exactly as ``train`` builds it for its seed; the
members' parameters are stacked (``torch.func.stack_module_state``) into one ``[M, P]`` tensor, the forward
pass is ``functional_call`` under ``vmap`` on a stacked batch (each seed keeps its own batch order). The
update is one rule over the stacked state with per-member hyperparameter tensors of shape ``[M, 1]``, each
line the same arithmetic as torch.optim's, in torch.optim's order, where the optimizer has a rule; otherwise
(torch.optim's own classes, a library's) each member's own torch optimizer updates its rows, one parameter
group per member in one optimizer. A step costs one pass of Python for all M members instead of M passes,
which is where the time goes for small runs.

Each member's sink receives the rows ``train`` would send it. Its ``time_s`` and ``step_time_ms`` are the
ensemble's: the members share every step, so per-member timing is the ensemble's timing. A member whose loss
turns non-finite (diverged) or whose sink returns False (cancelled) leaves the ensemble at that flush, just
as ``train`` stops there; the others go on. Ensembles neither checkpoint nor resume: a run with a checkpoint
to resume from trains alone. See docs/vectorized.md for where vectorizing pays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap

from engine import sizing
from engine.optimizers import OptimizerParams
from engine.problem import (
    BatchPlan,
    BuiltProblem,
    DatasetProblem,
    FunctionProblem,
    build_problem,
    resolve_device,
    to_device,
    train_size,
)
from engine.recorder import StepBatch, StepRecorder
from engine.schedules import Constant, Schedule
from engine.spec import ComparisonSpec
from engine.training import DTYPES, FlushSink, RunOutcome, Stepper, Track, run_loop
from engine.transforms import GradientTransformation

#: steps of learning rates moved to the device at once
RATE_BLOCK_STEPS = 256
#: Where it pays on the CPU (measured in docs/vectorized.md): small models on small batches, where the
#: per-step overhead dominates. Larger ones lose the cache (the stacked state of M members outgrows it,
#: where one run's fits) or are bound by arithmetic either way.
CPU_MAX_PARAMS = 20_000
CPU_MAX_WORK_PER_MEMBER = 4_000_000  # parameters × batch rows
#: on CUDA nearly always: the stacked parameters, gradients and two moments must fit well inside memory
CUDA_MAX_STACKED_ELEMENTS = 500_000_000


class Member(NamedTuple):
    """One run: an optimizer entry, a seed, and the run's own optimizer params (a sweep's), else the entry's."""

    entry_index: int
    seed: int
    params: dict[str, Any] | None = None


@dataclass(frozen=True)
class Eligibility:
    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok


# The update over stacked tensors is the optimizer's own rule (engine.transforms), the code a single run of a
# rule-built optimizer runs, with each member's numbers as [M, 1] tensors where one run has Python floats.
# What a rule computes per step on the host (the rate, bias corrections) ``scalars`` computes in float64
# for a block of steps at once: from the rates [S, M], the step numbers [S, 1] and the numbers [M].
Scalars = Callable[[np.ndarray, np.ndarray, dict[str, np.ndarray]], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Update:
    """The members' shared rule. ``constants``: the numbers that are zero for every member, passed as the
    float 0.0 so that the rule skips their term as torch.optim does at zero (weight decay)."""

    transform: GradientTransformation
    constants: dict[str, float]

    def scalars(self, lr: np.ndarray, step: np.ndarray, hyper: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h = {**self.constants, **hyper, "lr": lr}
        return {**(self.transform.scalars(h, step) if self.transform.scalars else {}), "lr": lr}

    def apply(self, param: Tensor, grad: Tensor, state: dict[str, Tensor], h: dict[str, Tensor], step: int) -> None:
        """One step of every member: ``param`` [M, P] and ``state`` are updated in place."""
        if not state:
            state.update(self.transform.init(param))
        delta, new_state = self.transform.update(grad, state, param, {**self.constants, **h, "step": step})
        param.add_(delta)
        state.update(new_state)


def _rule(spec: ComparisonSpec, member: Member) -> GradientTransformation | None:
    entry = spec.optimizers[member.entry_index]
    return entry.component.rule(_hyperparams(spec, member))


def _ensemble_update(spec: ComparisonSpec, members: Sequence[Member]) -> tuple[Update, dict[str, np.ndarray]]:
    """The members' rule, and each of its numbers as a float64 array over the members."""
    rules = [_rule(spec, member) for member in members]
    assert all(rule is not None for rule in rules)
    rows = [dict(rule.hyper) for rule in rules if rule is not None]
    arrays = {name: np.array([row[name] for row in rows], dtype=np.float64) for name in rows[0]}
    constants = {name: 0.0 for name, values in arrays.items() if not values.any()}
    update = Update(rules[0], constants)  # type: ignore[arg-type]
    return update, {name: values for name, values in arrays.items() if name not in constants}


def _hyperparams(spec: ComparisonSpec, member: Member) -> OptimizerParams:
    entry = spec.optimizers[member.entry_index]
    return entry.typed_params if member.params is None else entry.component.Params.model_validate(member.params)


def can_vectorize(spec: ComparisonSpec, entry_index: int) -> Eligibility:
    """Whether runs of this optimizer entry can join an ensemble, and if not, why: by the capabilities the
    optimizer and the model or function declare. An elementwise optimizer without a rule ensembles through
    its members' own torch optimizers (``_OwnOptimizers``)."""
    entry = spec.optimizers[entry_index]
    optimizer = entry.component
    if entry.groups:
        return Eligibility(False, "an entry with parameter groups trains alone")
    if not optimizer.elementwise:
        return Eligibility(False, f"optimizer '{entry.name}' is not elementwise, so its members cannot be stacked")
    needs = [
        need
        for need in ("full_batch_only", "needs_closure", "needs_loss", "needs_hvp", "train_eval_modes")
        if getattr(optimizer, need)
    ]
    if needs:
        return Eligibility(False, f"optimizer '{entry.name}' declares {', '.join(needs)}, which ensembles do not do")
    problem = spec.problem
    component = problem.function_ref if problem.is_function else problem.model_ref
    if not component.component.vmap_safe:
        what = "function" if problem.is_function else "model"
        return Eligibility(False, f"{what} '{component.name}' is not declared to run under vmap (vmap_safe)")
    return Eligibility(True, f"optimizer '{entry.name}' on this problem runs vectorized")


def _group_key(
    spec: ComparisonSpec, member: Member, n_train: int, signatures: dict[tuple[int, str], Any] | None = None
) -> tuple:
    """What ensemble members share: the optimizer, the batch size and the update's code path. ``signatures``
    keeps the rules' by entry and params, so that one is built per setting rather than per seed."""
    entry = spec.optimizers[member.entry_index]
    plan = BatchPlan.for_training(n_train, spec.training, member.seed, entry.batch_size)
    signatures = {} if signatures is None else signatures
    setting = (member.entry_index, repr(member.params))
    if setting not in signatures:
        rule = _rule(spec, member)
        signatures[setting] = None if rule is None else rule.signature
    return entry.name, plan.batch_size, signatures[setting]


def group_runs(
    spec: ComparisonSpec, members: Sequence[Member], max_members: int = 256, *, n_train: int | None = None
) -> list[list[Member]]:
    """Partition a comparison's runs into ensembles of at most ``max_members`` that may train together
    (same optimizer, batch size and update code path); a run that cannot join one is a group of its own.
    Whether a group is worth vectorizing is ``should_vectorize``'s call. ``n_train``: the problem's
    ``train_size``, where the caller has it."""
    n_train = train_size(spec.problem) if n_train is None else n_train
    eligible = {index: bool(can_vectorize(spec, index)) for index in {member.entry_index for member in members}}
    signatures: dict[tuple[int, str], Any] = {}
    groups: dict[tuple, list[Member]] = {}
    singles: list[list[Member]] = []
    for member in members:
        if eligible[member.entry_index]:
            groups.setdefault(_group_key(spec, member, n_train, signatures), []).append(member)
        else:
            singles.append([member])
    chunks = [group[i : i + max_members] for group in groups.values() for i in range(0, len(group), max_members)]
    return chunks + singles


def _check_group(spec: ComparisonSpec, members: Sequence[Member]) -> None:
    if not members:
        raise ValueError("an ensemble needs at least one member")
    for member in members:
        eligible = can_vectorize(spec, member.entry_index)
        if not eligible:
            raise ValueError(f"optimizers.{member.entry_index} cannot be vectorized: {eligible.reason}")
    n_train = train_size(spec.problem)
    keys = {_group_key(spec, member, n_train) for member in members}
    if len(keys) > 1:
        raise ValueError(
            "ensemble members must share the optimizer, the batch size and the update code path "
            f"(use group_runs); got {sorted(map(str, keys))}"
        )


def should_vectorize(
    spec: ComparisonSpec,
    members: Sequence[Member],
    device: torch.device | str,
    *,
    n_params: int | None = None,
    n_train: int | None = None,
) -> bool:
    """Whether training ``members`` (one group of ``group_runs``) as an ensemble beats training them one
    by one on ``device``, by the measurements in docs/vectorized.md. ``n_params`` and ``n_train``: the
    spec's ``parameter_count`` and its problem's ``train_size``, where the caller has them."""
    if len(members) < 2 or not all(can_vectorize(spec, index) for index in {m.entry_index for m in members}):
        return False
    n_params = parameter_count(spec) if n_params is None else n_params
    if torch.device(device).type == "cuda":
        return len(members) * n_params * 4 <= CUDA_MAX_STACKED_ELEMENTS  # params, grads, two moments
    plan = BatchPlan.for_training(
        train_size(spec.problem) if n_train is None else n_train,
        spec.training,
        0,
        spec.optimizers[members[0].entry_index].batch_size,
    )
    rows = plan.batch_size or plan.n
    return n_params <= CPU_MAX_PARAMS and n_params * rows <= CPU_MAX_WORK_PER_MEMBER


def parameter_count(spec: ComparisonSpec) -> int:
    """Trainable numbers per run, by arithmetic from the spec (engine.sizing): the API asks at every
    submit, and must build neither the data nor the model."""
    return sizing.parameter_count(spec)


class _StepScalars:
    """Each member's per-step scalars: its rate (its lr times its schedule's factor, as ``train`` computes
    it) and the rule's own, computed on the host and moved to the device a block of steps at a time."""

    def __init__(
        self,
        lrs: np.ndarray,
        schedules: list[Schedule],
        hyper: dict[str, np.ndarray],
        scalars: Scalars,
        total_steps: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.unique = list(dict.fromkeys(schedules))
        self.which = np.array([self.unique.index(s) for s in schedules])
        self.lrs, self.hyper, self.scalars = lrs, hyper, scalars
        self.total_steps, self.device, self.dtype = total_steps, device, dtype
        self.start = self.stop = 0

    def keep(self, rows: np.ndarray) -> None:
        self.lrs, self.which = self.lrs[rows], self.which[rows]
        self.hyper = {k: v[rows] for k, v in self.hyper.items()}
        self.start = self.stop = 0

    def at(self, step: int) -> tuple[np.ndarray, dict[str, Tensor]]:
        """(the rates [M] on the host, every scalar as a [M, 1] tensor on the device)."""
        if not self.start <= step < self.stop:
            self.start, self.stop = step, min(step + RATE_BLOCK_STEPS, self.total_steps)
            steps = range(self.start, self.stop)
            factors = np.array([[s.factor(t, self.total_steps) for s in self.unique] for t in steps])
            self.rates = self.lrs[None, :] * factors[:, self.which]
            numbers = np.arange(self.start + 1, self.stop + 1, dtype=np.float64)[:, None]
            table = self.scalars(self.rates, numbers, self.hyper)
            self.names = list(table)
            stacked = np.stack([np.broadcast_to(table[name], self.rates.shape) for name in self.names], axis=1)
            self.table = to_device(torch.from_numpy(stacked).to(self.dtype)[..., None], self.device)  # [S, K, M, 1]
        i = step - self.start
        return self.rates[i], dict(zip(self.names, self.table[i].unbind(0)))


@dataclass
class _Ensemble:
    """The stacked state of the members still training; ``keep`` drops the others."""

    problem: BuiltProblem
    base: torch.nn.Module
    layout: list[tuple[str, int, tuple[int, ...]]]  # (parameter name, offset in a row, shape)
    flat: Tensor  # [M, P]: row i is member i's parameters, in ``layout`` order
    hyper: dict[str, Tensor]  # [M, 1]
    state: dict[str, Tensor] = field(default_factory=dict)
    leaves: list[Tensor] = field(init=False)

    def __post_init__(self) -> None:
        self._alias()

    def _alias(self) -> None:
        """Per-parameter [M, ...] leaves for autograd, sharing the stacked tensor's memory."""
        self.leaves = [
            self.flat[:, offset : offset + math.prod(shape)].unflatten(1, shape).detach().requires_grad_()
            for _, offset, shape in self.layout
        ]

    def bind(self, modules: Sequence[torch.nn.Module]) -> None:
        """Make each module's parameters views of its row, so that whole-set losses see every update."""
        for row, module in enumerate(modules):
            for name, offset, shape in self.layout:
                module.get_parameter(name).data = self.flat[row, offset : offset + math.prod(shape)].view(shape)

    def keep(self, rows: Tensor) -> None:
        self.flat = self.flat[rows]
        self.hyper = {k: v[rows] for k, v in self.hyper.items()}
        self.state = {k: v[rows] for k, v in self.state.items()}
        self._alias()

    def losses(self, indices: Tensor | None) -> Tensor:
        """Every member's loss on its own batch, [M], differentiable with respect to ``leaves``."""
        problem = self.problem
        if isinstance(problem, FunctionProblem):
            return vmap(lambda x: problem.function.value(x, problem.params))(self.leaves[0])
        assert isinstance(problem, DatasetProblem)
        params = {name: leaf for (name, _, _), leaf in zip(self.layout, self.leaves)}

        def one(member_params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return problem.loss.fn(functional_call(self.base, member_params, (x,)), y)

        if indices is None:
            return vmap(one, in_dims=(0, None, None))(params, problem.x, problem.y)
        return vmap(one)(params, problem.x[indices], problem.y[indices])

    def gradient(self, losses: Tensor) -> Tensor:
        """[M, P]: each member's gradient (the members are independent, so the sum's gradient is theirs)."""
        grads = torch.autograd.grad(losses.sum(), self.leaves)
        return torch.cat([g.flatten(1) for g in grads], dim=1) if len(grads) > 1 else grads[0].flatten(1)


class _RuleUpdate:
    """The members' shared rule over the stacked state, its per-step scalars computed on the host."""

    def __init__(self, ensemble: _Ensemble, update: Update, scalars: _StepScalars) -> None:
        self.ensemble, self.update, self.scalars = ensemble, update, scalars

    def apply(self, step: int, grad: Tensor) -> np.ndarray:
        ensemble = self.ensemble
        rates, step_scalars = self.scalars.at(step)
        self.update.apply(ensemble.flat, grad, ensemble.state, {**ensemble.hyper, **step_scalars}, step + 1)
        return rates

    def keep(self, rows: Sequence[int], modules: Sequence[torch.nn.Module]) -> None:
        self.scalars.keep(np.array(rows))


@functools.cache
def _base_attributes() -> frozenset[str]:
    """What every torch optimizer's instance holds (its groups, state, defaults, hooks)."""
    return frozenset(vars(torch.optim.Optimizer([torch.zeros(1, requires_grad=True)], {})))


_SCALARS = (bool, int, float, str, type(None))


def _sharing_key(optimizer: torch.optim.Optimizer, params: OptimizerParams) -> tuple | None:
    """Members whose optimizers have equal keys may share one optimizer, one parameter group each: its class,
    the params its groups do not hold, and what it keeps on the instance (a library may keep ``maximize``
    there). None where it keeps anything but plain values (a list per group, say): it stays alone."""
    group = optimizer.param_groups[0]
    held = [(name, value) for name, value in params.model_dump().items() if name not in group]
    extra = [(name, value) for name, value in vars(optimizer).items() if name not in _base_attributes()]
    if not all(isinstance(value, _SCALARS) for _, value in extra):
        return None
    return type(optimizer), repr(held), tuple(extra)


class _OwnOptimizers:
    """Each member's own torch optimizer, built by its ``build`` on its module's parameters exactly as ``train``
    builds it. The modules' parameters are views of their rows of the stacked tensor, so the optimizer's
    in-place update is the ensemble's; each step hands every parameter its view of the stacked gradient.
    Members whose optimizers differ only in their parameter groups (a learning-rate sweep) share one optimizer
    with one group each: its step updates each group with the class's own code, as it would alone, for one
    Python call instead of M; a member configured otherwise beyond its groups keeps an optimizer of its own."""

    def __init__(
        self,
        ensemble: _Ensemble,
        components: Sequence[Any],
        hypers: Sequence[OptimizerParams],
        modules: Sequence[torch.nn.Module],
        schedules: Sequence[Schedule],
        total_steps: int,
    ) -> None:
        self.ensemble, self.total_steps = ensemble, total_steps
        self._schedules(schedules)
        self.rate_keys = [component.rate_key for component in components]
        self.params: list[list[torch.nn.Parameter]] = []
        self.groups: list[list[dict[str, Any]]] = []
        self.lrs: list[list[float]] = []
        self.optimizers: list[torch.optim.Optimizer] = []
        hosts: dict[tuple, torch.optim.Optimizer] = {}
        for component, hyper, module in zip(components, hypers, modules):
            params = [p for p in module.parameters() if p.requires_grad]
            optimizer = component.build(params, hyper, **component.run_arguments(total_steps))
            self.params.append(params)
            self.groups.append(list(optimizer.param_groups))
            self.lrs.append([group["lr"] for group in optimizer.param_groups])
            key = _sharing_key(optimizer, hyper)
            host = None if key is None else hosts.get(key)
            if host is None:
                self.optimizers.append(optimizer)
                if key is not None:
                    hosts[key] = optimizer
            else:
                host.param_groups.extend(optimizer.param_groups)
                host.state.update(optimizer.state)
        self._views(modules)
        self.checked = False

    def _schedules(self, schedules: Sequence[Schedule]) -> None:
        """The distinct schedules that are not constant, and each member's among them (None: constant)."""
        self.schedules = list(schedules)
        self.varying = [s for s in dict.fromkeys(schedules) if s != Constant()]
        self.which = [self.varying.index(s) if s in self.varying else None for s in schedules]

    def _views(self, modules: Sequence[torch.nn.Module]) -> None:
        """Each member's parameters' views of their rows of the stacked gradient."""
        self.grad = torch.empty_like(self.ensemble.flat)
        where = {name: (offset, shape) for name, offset, shape in self.ensemble.layout}
        self.grad_views = [
            [
                self.grad[row, where[name][0] : where[name][0] + math.prod(where[name][1])].view(where[name][1])
                for name, p in module.named_parameters()
                if p.requires_grad
            ]
            for row, module in enumerate(modules)
        ]

    def apply(self, step: int, grad: Tensor) -> np.ndarray:
        self.grad.copy_(grad)
        for params, views in zip(self.params, self.grad_views):
            for param, view in zip(params, views):
                param.grad = view
        # as ModuleStepper: a scheduled member's every group gets its own lr times the schedule's factor
        if self.varying:
            factors = [s.factor(step, self.total_steps) for s in self.varying]
            for lrs, which, groups in zip(self.lrs, self.which, self.groups):
                if which is not None:
                    for group, lr in zip(groups, lrs):
                        group["lr"] = lr * factors[which]
        for optimizer in self.optimizers:
            optimizer.step()
        if not self.checked:
            self._check_aliasing()
        return np.array([float(groups[0][key]) for groups, key in zip(self.groups, self.rate_keys)], dtype=np.float64)

    def _check_aliasing(self) -> None:
        """An optimizer that replaced a parameter's tensor (``p.data = ...``) would update a copy the ensemble
        never reads: refuse it at once rather than train it wrong."""
        flat = self.ensemble.flat
        for row, params in enumerate(self.params):
            base = flat[row].data_ptr()
            if any(not base <= p.data_ptr() < base + flat.shape[1] * flat.element_size() for p in params):
                raise RuntimeError(
                    "the optimizer replaced a parameter's tensor, so its runs cannot train as an ensemble"
                )
        self.checked = True

    def keep(self, rows: Sequence[int], modules: Sequence[torch.nn.Module]) -> None:
        """Drop the members that left: their groups and their state. The parameters stay the same objects (the
        stepper rebinds their data to the new rows), so the state of those staying is still theirs."""
        staying = {id(group) for row in rows for group in self.groups[row]}
        for row in set(range(len(self.params))) - set(rows):
            for optimizer in self.optimizers:
                for param in self.params[row]:
                    optimizer.state.pop(param, None)
        for optimizer in self.optimizers:
            optimizer.param_groups[:] = [g for g in optimizer.param_groups if id(g) in staying]
        self.optimizers = [o for o in self.optimizers if o.param_groups]
        self.params = [self.params[row] for row in rows]
        self.groups = [self.groups[row] for row in rows]
        self.lrs = [self.lrs[row] for row in rows]
        self._schedules([self.schedules[row] for row in rows])
        self.rate_keys = [self.rate_keys[row] for row in rows]
        self._views(modules)


def _differing(dumps: Sequence[dict[str, Any]]) -> set[str]:
    """The params whose values are not the same for every member."""
    return {name for name in dumps[0] if len({repr(d[name]) for d in dumps}) > 1}


def _stackable(component: Any, hypers: Sequence[OptimizerParams], schedules: Sequence[Schedule]) -> bool:
    """Whether the members differ only in params the optimizer takes as stacked tensors (``stacked_params``)."""
    differing = _differing([h.model_dump() for h in hypers]) | ({"lr"} if len(set(schedules)) > 1 else set())
    return bool(component.stacked_params) and component.rate_key == "lr" and differing <= component.stacked_params


class _StackedOptimizer:
    """One torch optimizer over the whole stacked ``[M, P]`` tensor, for an elementwise optimizer whose members
    differ only in params it declares ``stacked_params`` (its step takes them as tensors: Lion's ``lr``): each such
    param that differs between the members is an ``[M, 1]`` tensor in its one parameter group, so one call of the
    library's own step updates every member's row with that member's numbers. Batched (foreach) kernels take
    one number per list, so the group steps one tensor at a time (``foreach`` off) where it has the option."""

    def __init__(
        self,
        ensemble: _Ensemble,
        component: Any,
        hypers: Sequence[OptimizerParams],
        schedules: Sequence[Schedule],
        total_steps: int,
    ) -> None:
        self.ensemble, self.total_steps = ensemble, total_steps
        flat = ensemble.flat
        self.param = flat.detach()  # the stacked tensor itself, a leaf for the optimizer
        self.optimizer = component.build([self.param], hypers[0], **component.run_arguments(total_steps))
        [self.group] = self.optimizer.param_groups
        if "foreach" in self.group:
            self.group["foreach"] = False
        dumps = [h.model_dump() for h in hypers]
        self.tensors = {name: [d[name] for d in dumps] for name in _differing(dumps) & component.stacked_params}
        self.lrs = np.array([h.lr for h in hypers])
        self.unique = list(dict.fromkeys(schedules))
        self.which = np.array([self.unique.index(s) for s in schedules])
        self.scheduled = any(s != Constant() for s in self.unique)
        # the rate: the members' own, as a tensor, where they differ; set at every step where it is scheduled
        self.rates_differ = "lr" in self.tensors or len(self.unique) > 1
        if self.scheduled:
            self.tensors.pop("lr", None)
        self._set_tensors()

    def _set_tensors(self) -> None:
        flat = self.ensemble.flat
        for name, values in self.tensors.items():
            self.group[name] = torch.tensor(values, dtype=flat.dtype, device=flat.device)[:, None]

    def apply(self, step: int, grad: Tensor) -> np.ndarray:
        rates = self.lrs
        if self.scheduled:
            factors = np.array([s.factor(step, self.total_steps) for s in self.unique])
            rates = self.lrs * factors[self.which]
            flat = self.ensemble.flat
            self.group["lr"] = (
                torch.from_numpy(rates).to(flat.device, flat.dtype)[:, None] if self.rates_differ else float(rates[0])
            )
        self.param.grad = grad
        self.optimizer.step()
        return rates

    def keep(self, rows: Sequence[int], modules: Sequence[torch.nn.Module]) -> None:
        """The rows of the members staying: the stacked tensor (new, from the ensemble), the optimizer's state
        (whatever has the stacked shape) and the per-member numbers."""
        old = self.param.shape
        index = torch.tensor(rows, device=self.param.device)
        self.param.data = self.ensemble.flat
        state = self.optimizer.state.get(self.param, {})
        for key, value in state.items():
            if isinstance(value, Tensor) and value.shape == old:
                state[key] = value[index]
        self.tensors = {name: [values[row] for row in rows] for name, values in self.tensors.items()}
        self.lrs, self.which = self.lrs[rows], self.which[rows]
        self._set_tensors()


class _EnsembleStepper(Stepper):
    """The members' update as one: a vmapped forward pass on their stacked batches, then their rule over the
    stacked state, or their own torch optimizers on their rows."""

    stacked = True

    def __init__(
        self,
        ensemble: _Ensemble,
        update: _RuleUpdate | _OwnOptimizers | _StackedOptimizer,
        extras: Sequence[str],
        modules: list[torch.nn.Module],
    ) -> None:
        self.ensemble, self.update, self.modules = ensemble, update, modules
        self.grad_norm, self.update_norm = "grad_norm" in extras, "update_norm" in extras
        self.point = ensemble.flat if ensemble.problem.is_function else None

    def step(self, step: int, indices: Tensor | None) -> tuple[Tensor, np.ndarray, dict[str, Tensor]]:
        ensemble = self.ensemble
        losses = ensemble.losses(indices)
        grad = ensemble.gradient(losses)
        extras = {}
        if self.grad_norm:
            extras["grad_norm"] = torch.linalg.vector_norm(grad, dim=1)
        with torch.no_grad():
            before = ensemble.flat.clone() if self.update_norm else None
            rates = self.update.apply(step, grad)
            if before is not None:
                extras["update_norm"] = torch.linalg.vector_norm(ensemble.flat - before, dim=1)
        # the recorder is indifferent to shapes: with [M] losses and rates it records M runs at once
        return losses.detach(), rates, extras

    def evaluate(self, problem: BuiltProblem, modules: Sequence[torch.nn.Module]) -> dict[str, Tensor]:
        metrics = [problem.evaluate(module) for module in modules]
        return {k: torch.stack([m[k] for m in metrics]) for k in metrics[0]}

    def member_rows(self, batch: StepBatch, row: int) -> StepBatch:
        """One member's share of an ensemble flush, whose per-run columns are [steps, M] (evaluations: [M])."""
        evals = [{k: v if k in ("step", "epoch") else v[row] for k, v in e.items()} for e in batch.evals]
        if not len(batch):
            return StepBatch.empty(evals)
        return StepBatch(
            step=batch.step,
            epoch=batch.epoch,
            loss=batch.loss[:, row],
            time_s=batch.time_s,
            step_time_ms=batch.step_time_ms,
            lr=None if batch.lr is None else batch.lr[:, row],
            x=None if batch.x is None else batch.x[:, row],
            extras={k: v[:, row] for k, v in batch.extras.items()},
            evals=evals,
        )

    def keep(self, rows: Sequence[int]) -> None:
        self.ensemble.keep(torch.tensor(rows, device=self.ensemble.flat.device))
        self.modules = [self.modules[row] for row in rows]
        self.ensemble.bind(self.modules)
        self.update.keep(rows, self.modules)
        if self.point is not None:
            self.point = self.ensemble.flat


def train_ensemble(
    spec: ComparisonSpec,
    members: Sequence[Member],
    sinks: Sequence[FlushSink],
    *,
    total_steps: int,
    flush_every: int = 10_000,
    flush_interval_s: float = 1.0,
) -> list[RunOutcome]:
    """Train ``members`` (one group of ``group_runs``) together, handing each member's flushes to its sink
    as ``train`` would; one RunOutcome per member, in order."""
    _check_group(spec, members)
    if len(sinks) != len(members):
        raise ValueError(f"{len(members)} members need as many sinks, got {len(sinks)}")
    device, dtype = resolve_device(spec.device), DTYPES[spec.dtype]
    problem = build_problem(spec.problem, device, dtype)
    entries = [spec.optimizers[m.entry_index] for m in members]
    hypers = [_hyperparams(spec, m) for m in members]
    by_rule = _rule(spec, members[0]) is not None
    update, hyper = _ensemble_update(spec, members) if by_rule else (None, {})

    modules = [problem.make_module(m.seed) for m in members]
    stacked, _ = stack_module_state(modules)
    layout, offset = [], 0
    for name, value in stacked.items():
        layout.append((name, offset, tuple(value.shape[1:])))
        offset += value[0].numel()
    flat = torch.cat([value.detach().flatten(1) for value in stacked.values()], dim=1)
    ensemble = _Ensemble(
        problem,
        modules[0],
        layout,
        flat,
        {k: torch.tensor(v, dtype=dtype, device=device)[:, None] for k, v in hyper.items()},
    )
    ensemble.bind(modules)
    schedules = [e.schedule for e in entries]
    updater: _RuleUpdate | _OwnOptimizers | _StackedOptimizer
    if update is not None:
        lrs = np.array([h.lr for h in hypers])
        scalars = _StepScalars(lrs, schedules, hyper, update.scalars, total_steps, device, dtype)
        updater = _RuleUpdate(ensemble, update, scalars)
    elif _stackable(entries[0].component, hypers, schedules):
        updater = _StackedOptimizer(ensemble, entries[0].component, hypers, schedules, total_steps)
    else:
        updater = _OwnOptimizers(ensemble, [e.component for e in entries], hypers, modules, schedules, total_steps)
    stepper = _EnsembleStepper(ensemble, updater, spec.training.extras, modules)
    tracks = [Track(sink, module, m.seed) for sink, module, m in zip(sinks, modules, members)]
    plan = BatchPlan.for_training(problem.n_train, spec.training, 0, entries[0].batch_size)
    recorder = StepRecorder(device, flush_every, flush_interval_s)
    return run_loop(problem, stepper, tracks, plan, spec.training, recorder, device, total_steps=total_steps)
