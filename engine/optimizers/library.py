"""Every optimizer of pytorch-optimizer (the field's library, pinned in pyproject), one catalogue entry each.

An entry is named ``pytorch_optimizer.<its name in the library>`` (``pytorch_optimizer.lion``), so the names
never change when a built-in of the same name is added (``adam`` is torch's, ``pytorch_optimizer.adam`` the
library's). Its ``Params`` are derived from the constructor's signature: names, types from the defaults and
annotations, defaults, ranges where the name says what they are (a rate > 0, betas in [0, 1), eps > 0, a
decay ≥ 0) and descriptions from the docstring's ``Args:`` section; a parameter that takes an object (a
callable, a dtype, an enum, a dict) or only tunes the implementation (``foreach``, ``maximize``) is kept at
its default and listed in the entry's ``fixed``. Validation also builds the optimizer on a tiny tensor, so
what the library itself refuses is a validation error at submit, not a failed run.

What cannot be derived lives here, declared per library name: the family, the capabilities the training
loop must honour, the test settings, and the optimizers that cannot run here, with the reason.
"""

from __future__ import annotations

import enum
import importlib.metadata
import inspect
import math
import re
import types
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import pytorch_optimizer
import torch
from pydantic import Field, ValidationError, create_model, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError
from pytorch_optimizer.optimizer.muon.base import MuonBase

from engine.optimizers import Optimizer, TestSettings
from engine.registry import Params

SOURCE = "pytorch-optimizer"
VERSION = importlib.metadata.version("pytorch-optimizer")
PREFIX = "pytorch_optimizer."

#: constructor arguments that tune the implementation, not the rule: kept at their defaults
IMPLEMENTATION = {
    "foreach": "an implementation choice (batched tensor operations)",
    "maximize": "optibench minimises",
    "capturable": "an implementation choice (CUDA graphs)",
    "differentiable": "an implementation choice (autograd through the step)",
    "fused": "an implementation choice (fused kernels)",
}


@dataclass(frozen=True)
class Declared:
    """What the adapter knows of one library optimizer beyond its signature."""

    family: str
    elementwise: bool = False
    needs_closure: bool = False
    needs_loss: bool = False
    #: a rate other than ``lr`` is what the step used (AliG's Polyak step size); None: its step has no rate
    rate_key: str | None = "lr"
    #: the constructor argument that takes the run's total steps (Optimizer.total_steps_arg)
    total_steps_arg: str | None = None
    #: params its step also takes as tensors over stacked ensemble members (Optimizer.stacked_params)
    stacked_params: frozenset[str] = frozenset()
    #: defaults for constructor arguments the library leaves required
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: parameters kept at their defaults, with the reason
    fixed: Mapping[str, str] = field(default_factory=dict)
    test: TestSettings = TestSettings()
    unsupported: str | None = None


SIGN = "a sign-based update at a constant rate oscillates within lr of the minimum"
FAMILIES = {
    "adaptive": "a2grad adabelief adabound adadelta adagc adai adam adamax adamc adamod adamp adams adamw adamwsn "
    "adan adanorm adapnm adashift adasmooth adatam ademamix adopt aida amos avagrad conda diffgrad dualadam "
    "emonavi exadam fadam flashadamw grokfastadamw kate laprop madgrad mars msvag nadam padam qhadam radam "
    "ranger ranger21 rmsprop rose sara simplifiedademamix spam stableadamw stablespam swats yogi magma",
    "sign-based": "lion signsgd tiger emolynx focus ano grams",
    "momentum/SGD": "accsgd aggmo asgd pid pnm qhm sgd sgdp sgdsai sgdw srmm tam vsgd gravity ftrl bcos racs",
    "layer-wise": "lamb lars novograd fromage nero",
    "second-order": "adahessian sophiah shampoo scalableshampoo soap kron splus apollodqn dash lorarite lbfgs",
    "schedule-free": "schedulefreeadamw schedulefreeradam schedulefreesgd",
    "matrix/orthogonalising": "muon adamuon adago normuon muonclip distributedmuon scion scionlight spectralsphere",
    "parameter-free": "dadaptadagrad dadaptadam dadaptadan dadaptlion dadaptsgd prodigy adamg",
    "memory-efficient": "adafactor came sm3 adalite emofact galore fira apollo alice lomo adalomo adammini demo",
    "loss-based step size": "alig",
    "sharpness-aware": "bsam",
}
FAMILY = {name: family for family, names in FAMILIES.items() for name in names.split()}

#: the update of each coordinate reads only that coordinate's gradient and state (no norms over a tensor, no
#: randomness), so members stacked side by side in one tensor update as they would alone (engine.vectorized)
ELEMENTWISE = set(
    "adabelief adabound adadelta adam adamax adamod adamw adan adapnm ademamix adopt aggmo accsgd diffgrad grams "
    "kate laprop lion madgrad nadam padam pid pnm qhadam qhm radam rmsprop sgd sgdw signsgd simplifiedademamix "
    "tiger yogi".split()
)

#: GaLore's and Fira's low-rank projection is switched on by options of the matrices' param group, not by the
#: constructor: offered as params, they go to a group of the 2-D parameters only
PROJECTED = {"galore", "fira"}
PROJECTION_FIELDS: dict[str, tuple[Any, Any]] = {
    "rank": (int, Field(128, ge=1, description="rank of each matrix's gradient projection")),
    "update_proj_gap": (int, Field(200, ge=1, description="steps between recomputations of the projection (an SVD)")),
    "scale": (float, Field(0.25, gt=0.0, description="scale of the update projected back")),
    "projection_type": (
        Literal["std", "reverse_std", "right", "left", "full"],
        Field("std", description="which side(s) of the matrix the gradient is projected on"),
    ),
}

UNSUPPORTED = {
    "adalomo": "updates inside the backward pass (fused_backward on the model), not through step()",
    "lomo": "updates inside the backward pass (fused_backward on the model), not through step()",
    "adammini": "partitions a transformer's parameters by their names (model, num_heads, num_embeds)",
    "distributedmuon": "needs an initialised torch.distributed process group",
    "demo": "exchanges compressed momentum between distributed workers, and needs einops, which is not installed",
    "lorarite": "optimises LoRA factor pairs (lora_l_dim, lora_r_dim); no model here has LoRA adapters",
    "bsam": "its step fails on a plain parameter list in pytorch-optimizer 4.1.0 (KeyError 's' in its perturbation)",
}

#: test steps per problem: the library's 128 entries would otherwise cost the suite a minute
TEST_STEPS = 200
#: params on the test problems where the library's defaults do not halve the loss in TEST_STEPS (found by a
#: sweep over the rate's decades; the other problem keeps the defaults). Muon's family takes a 1-D point in
#: its AdamW group, so its rate there is adamw_lr; A2Grad has no rate, its Lipschitz constant sets the step.
TESTS: dict[str, dict[str, dict[str, float]]] = {
    "a2grad": {"rosenbrock": {"lips": 100.0}},
    "adabelief": {"parabola": {"lr": 0.3}},
    "adabound": {"parabola": {"lr": 3.0}},
    "adadelta": {"parabola": {"lr": 10.0}},
    "adagc": {"parabola": {"lr": 10.0}},
    "adago": {"parabola": {"adamw_lr": 0.3}},
    "adalite": {"parabola": {"lr": 10.0}},
    "adam": {"parabola": {"lr": 3.0}},
    "adamax": {"parabola": {"lr": 3.0}},
    "adamc": {"parabola": {"lr": 3.0}},
    "adamod": {"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 10.0}},
    "adamp": {"parabola": {"lr": 3.0}},
    "adams": {"parabola": {"lr": 3.0}},
    "adamuon": {"parabola": {"adamw_lr": 3.0}},
    "adamw": {"parabola": {"lr": 10.0}},
    "adamwsn": {"parabola": {"lr": 3.0}},
    "adan": {"parabola": {"lr": 10.0}},
    "adanorm": {"parabola": {"lr": 0.3}},
    "adapnm": {"parabola": {"lr": 0.3}},
    "adashift": {"parabola": {"lr": 3.0}},
    "adasmooth": {"parabola": {"lr": 0.1}},
    "ademamix": {"parabola": {"lr": 3.0}},
    "adopt": {"parabola": {"lr": 3.0}},
    "aggmo": {"parabola": {"lr": 0.1}},
    "aida": {"parabola": {"lr": 0.3}},
    "alice": {"parabola": {"lr": 10.0}},
    "amos": {"parabola": {"lr": 3.0}},
    "ano": {"parabola": {"lr": 1.0}, "rosenbrock": {"lr": 10.0}},
    "apollo": {"parabola": {"lr": 3.0}},
    "apollodqn": {"parabola": {"lr": 0.003}, "rosenbrock": {"lr": 0.001}},
    "avagrad": {"parabola": {"lr": 0.3}, "rosenbrock": {"lr": 0.01}},
    "bcos": {"parabola": {"lr": 10.0}},
    "came": {"parabola": {"lr": 1.0}, "rosenbrock": {"lr": 10.0}},
    "conda": {"parabola": {"lr": 3.0}},
    "dadaptadagrad": {"parabola": {"lr": 10.0}},
    "dadaptadan": {"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 10.0}},
    "dash": {"parabola": {"lr": 10.0}},
    "diffgrad": {"parabola": {"lr": 10.0}},
    "emofact": {"parabola": {"lr": 1.0}},
    "emolynx": {"parabola": {"lr": 1.0}},
    "emonavi": {"parabola": {"lr": 10.0}},
    "exadam": {"parabola": {"lr": 10.0}},
    "fadam": {"parabola": {"lr": 10.0}},
    "fira": {"parabola": {"lr": 3.0}},
    "flashadamw": {"parabola": {"lr": 10.0}},
    "ftrl": {"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 3.0}},
    "galore": {"parabola": {"lr": 3.0}},
    "grams": {"parabola": {"lr": 10.0}},
    "grokfastadamw": {"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 1.0}},
    "kate": {"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 10.0}},
    "kron": {"parabola": {"lr": 3.0}},
    "lamb": {"parabola": {"lr": 1.0}},
    "laprop": {"parabola": {"lr": 3.0}},
    "lars": {"parabola": {"lr": 0.1}},
    "lbfgs": {"dataset": {"lr": 0.1}},  # torch's L-BFGS without a line search: lr 1 overshoots on the MLP
    "lion": {"parabola": {"lr": 1.0}, "rosenbrock": {"lr": 0.1}},
    "madgrad": {"parabola": {"lr": 3.0}},
    "msvag": {"parabola": {"lr": 0.3}, "rosenbrock": {"lr": 0.003}},
    "muon": {"parabola": {"adamw_lr": 0.3}},
    "muonclip": {"parabola": {"adamw_lr": 0.3}},
    "nadam": {"parabola": {"lr": 1.0}},
    "nero": {"parabola": {"lr": 0.3}},
    "normuon": {"parabola": {"adamw_lr": 0.3}},
    "padam": {"parabola": {"lr": 3.0}},
    "pid": {"parabola": {"lr": 0.03}},
    "qhadam": {"parabola": {"lr": 3.0}},
    "qhm": {"parabola": {"lr": 0.03}},
    "racs": {"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 10.0}},
    "radam": {"parabola": {"lr": 1.0}, "rosenbrock": {"lr": 10.0}},
    "ranger21": {"parabola": {"lr": 3.0}, "rosenbrock": {"lr": 3.0}},
    "rmsprop": {"parabola": {"lr": 10.0}},
    "rose": {"parabola": {"lr": 3.0}},
    "scalableshampoo": {"parabola": {"lr": 0.03}},
    "schedulefreeadamw": {"parabola": {"lr": 10.0}},
    "schedulefreeradam": {"parabola": {"lr": 10.0}},
    "schedulefreesgd": {"parabola": {"lr": 0.3}, "rosenbrock": {"lr": 0.003}},
    "scion": {"parabola": {"lr": 3.0}},
    "scionlight": {"parabola": {"lr": 3.0}},
    "sgd": {"parabola": {"lr": 0.03}},
    "sgdp": {"parabola": {"lr": 0.03}},
    "sgdsai": {"rosenbrock": {"lr": 0.0001}},
    "sgdw": {"parabola": {"lr": 0.03}},
    "shampoo": {"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 10.0}},
    "signsgd": {"parabola": {"lr": 3.0}},
    "simplifiedademamix": {"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 1.0}},
    "sm3": {"parabola": {"lr": 10.0}},
    "soap": {"parabola": {"lr": 10.0}},
    "sophiah": {"parabola": {"lr": 10.0}},
    "spam": {"parabola": {"lr": 3.0}},
    "splus": {"rosenbrock": {"lr": 10.0}},
    "srmm": {"parabola": {"lr": 0.1}, "rosenbrock": {"lr": 0.003}},
    "stableadamw": {"parabola": {"lr": 10.0}},
    "stablespam": {"parabola": {"lr": 10.0}},
    "swats": {"parabola": {"lr": 3.0}},
    "tiger": {"parabola": {"lr": 3.0}},
    "vsgd": {"rosenbrock": {"lr": 0.03}},
    "yogi": {"parabola": {"lr": 10.0}},
}
#: reach the parabola's neighbourhood but not within 1e-4 of its minimum at these settings (sign-based rules at a
#: fixed rate oscillate within lr of it; clipped, factored, averaged or slowly adapting rules stall near it)
NOT_LANDING = set(
    "a2grad accsgd adadelta adafactor adagc adai adalite adamg adamod adamw adashift adatam alice amos apollodqn "
    "bcos dadaptadan dadaptlion dadaptsgd dash diffgrad dualadam emofact emolynx emonavi fadam flashadamw focus "
    "fromage grokfastadamw kate kron lamb novograd pnm prodigy racs ranger21 rose scion scionlight sgdsai "
    "signsgd simplifiedademamix soap sophiah stableadamw stablespam tam tiger vsgd".split()
)
#: problem -> why the optimizer is not expected to halve the loss there at any rate we tried
EXCEPTIONS: dict[str, dict[str, str]] = {
    "mars": {"parabola": "its variance-reduced step does not halve the parabola in 200 steps at any rate tried"},
    "splus": {"parabola": "its whitened step does not halve the parabola in 200 steps at any rate tried"},
    "dualadam": {"rosenbrock": "its inverse-Adam term diverges on the Rosenbrock valley at every rate tried"},
    "gravity": {
        "parabola": "its kinematic update does not descend on the test functions at any rate tried",
        "rosenbrock": "its kinematic update does not descend on the test functions at any rate tried",
    },
    "magma": {"parabola": "it wraps a torch Adam at lr 1e-3 whose rate it does not expose; too slow for 200 steps"},
    "ranger": {
        "parabola": "the library's Ranger rises on the test functions at every rate tried",
        "rosenbrock": "the library's Ranger rises on the test functions at every rate tried",
    },
    "sara": {
        "parabola": "it only updates the weights its masks select (small magnitudes); a 2-D start point has none",
        "rosenbrock": "it only updates the weights its masks select (small magnitudes); a 2-D start point has none",
        "dataset": "it only updates the weights its masks select (small magnitudes); the MLP's initial ones have none",
    },
}
DECLARED_EXTRA: dict[str, dict[str, Any]] = {
    "alig": {"needs_loss": True, "rate_key": "step_size"},
    # no rate: each tensor's step is 1 / (2 lips / (t + 1) + beta * sqrt(its gradient variation)); lr is ignored
    "a2grad": {"rate_key": None},
    "emonavi": {"needs_loss": True},
    "emofact": {"needs_loss": True},
    "emolynx": {"needs_loss": True},
    "bsam": {"needs_closure": True, "defaults": {"num_data": 1000}},
    # its Newton-Schulz and bisection solves cost ~10 ms a step: 15 steps suffice at this rate
    "spectralsphere": {
        "test": TestSettings({"matrix": {"lr": 0.1, "weight_decay": 0.0}}, lands_on_minimum=False, steps=15)
    },
    "lbfgs": {"needs_closure": True},
    # its step reads a tensor lr as one (``p.add_(update * -lr)``), so a sweep's rates stack as an [M, 1] tensor
    "lion": {"stacked_params": frozenset({"lr"})},
    # its warm-up and warm-down are fractions of num_iterations: the run's own steps
    "ranger21": {"total_steps_arg": "num_iterations"},
    # its states follow the parameters' dtype (the library's float32 default fails on float64 parameters)
    "fadam": {"defaults": {"momentum_dtype": None, "fim_dtype": None}},
}


def declared(name: str) -> Declared:
    test = TestSettings(
        TESTS.get(name, {}),
        lands_on_minimum=name not in NOT_LANDING,
        steps=TEST_STEPS,
        exceptions=EXCEPTIONS.get(name, {}),
    )
    facts: dict[str, Any] = {
        "family": FAMILY[name],
        "elementwise": name in ELEMENTWISE,
        "unsupported": UNSUPPORTED.get(name),
        "test": test,
    }
    return Declared(**(facts | DECLARED_EXTRA.get(name, {})))


# --- Params from the constructor --------------------------------------------------------------------------


def _arms(annotation: Any) -> list[Any]:
    """The arms of a union (or the annotation itself)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return [arm for arg in get_args(annotation) for arm in _arms(arg)]
    return [annotation]


def _literals(annotation: Any) -> tuple[Any, ...]:
    return tuple(value for arm in _arms(annotation) if get_origin(arm) is Literal for value in get_args(arm))


def _admits(annotation: Any, kind: type) -> bool:
    return any(arm is kind for arm in _arms(annotation))


def _arg_docs(doc: str) -> dict[str, str]:
    """``name: description`` lines of a Google-style ``Args:`` section, continuation lines joined."""
    found: dict[str, str] = {}
    section = re.search(r"\n\s*Args:\s*\n(.*?)(\n\s*\n|\Z)", doc, re.S)
    if section is None:
        return found
    current = None
    for line in section.group(1).splitlines():
        match = re.match(r"\s*(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)", line)
        if match and not line.startswith(" " * 12):
            current = match.group(1)
            found[current] = match.group(2).strip()
        elif current is not None and line.strip():
            found[current] += " " + line.strip()
    return found


Unit = Annotated[float, Field(ge=0.0, lt=1.0)]


def _bounds(name: str, default: Any) -> dict[str, Any]:
    """The range a parameter's name makes knowable, where its default lies in it."""
    if not isinstance(default, (int, float)) or isinstance(default, bool):
        return {}
    if name == "lr" or name.endswith("_lr") or name == "max_lr":
        return {"gt": 0.0} if default > 0 else {}
    if "eps" in name:
        return {"gt": 0.0} if default > 0 else {"ge": 0.0} if default == 0 else {}
    if "weight_decay" in name or name in ("adamw_wd", "lambda_1", "lambda_2"):
        return {"ge": 0.0} if default >= 0 else {}
    if (name.startswith("beta") or name in ("momentum", "rho", "dampening")) and 0 <= default < 1:
        return {"ge": 0.0, "lt": 1.0}
    return {}


def _field(name: str, parameter: inspect.Parameter, default: Any, doc: str) -> tuple[Any, Any] | str:
    """(annotation, pydantic Field) for one constructor argument, or why it is kept at its default."""
    annotation = parameter.annotation
    literals = _literals(annotation)
    bounds = _bounds(name, default)
    kind: Any
    if default is inspect.Parameter.empty:
        return "required by the library, with no default"
    if isinstance(default, float) and not math.isfinite(default):
        return "its default is infinite (no bound), which JSON cannot carry"
    if isinstance(default, bool):
        kind = bool
    elif isinstance(default, enum.Enum):
        return "takes an enum member"
    elif isinstance(default, str):
        if default not in literals:
            return "takes a free-form string or an object"
        kind = Literal[literals]
    elif isinstance(default, int):
        kind = float if _admits(annotation, float) else int
        if kind is int and default >= 0 and not bounds:
            bounds = {"ge": 0}
    elif isinstance(default, float):
        kind = float
    elif isinstance(default, tuple) and default and all(isinstance(v, (int, float)) for v in default):
        items = []
        for value in default:
            item: Any = (
                int if isinstance(value, int) and not isinstance(value, bool) and name.endswith("steps") else float
            )
            if name.endswith("betas") and 0 <= value < 1:
                item = Unit
            items.append(item)
        kind = tuple[tuple(items)]  # type: ignore[misc]
    elif default is None:
        if literals:
            kind = Literal[literals] | None
        elif _admits(annotation, float):
            kind = Annotated[float, Field(**bounds)] | None
            bounds = {}
        elif _admits(annotation, int):
            kind = Annotated[int, Field(ge=0)] | None
        else:
            return "takes an object"
    else:
        return f"takes a {type(default).__name__}"
    return kind, Field(default, description=doc or None, **bounds)


def _fixed_error(field_names: Iterable[str], message: str, params: Mapping[str, Any]) -> ValidationError:
    """The library's refusal as a validation error, at the parameter its message names (else at params)."""
    named = [name for name in field_names if re.search(rf"\b{re.escape(name)}\b", message, re.I)]
    loc: tuple[str, ...] = (max(named, key=len),) if named else ()
    details: InitErrorDetails = {
        "type": PydanticCustomError("library_refused", "{message}", {"message": message}),
        "loc": loc,
        "input": params.get(loc[0]) if loc else dict(params),
    }
    return ValidationError.from_exception_data("Params", [details])


class LibraryParams(Params):
    """Params of a library optimizer: validated by pydantic, then by the library's own constructor."""

    library_class: ClassVar[type[torch.optim.Optimizer]]
    fixed_defaults: ClassVar[Mapping[str, Any]] = {}
    #: the constructor argument the run's total steps fill (Optimizer.total_steps_arg)
    total_steps_arg: ClassVar[str | None] = None
    #: params that are options of the matrices' param group rather than constructor arguments
    matrix_group_keys: ClassVar[tuple[str, ...]] = ()
    #: False for an optimizer that cannot run here: its constructor is never called
    runs: ClassVar[bool] = True

    @model_validator(mode="after")
    def _library_accepts(self) -> LibraryParams:
        if not self.runs:
            return self
        probe = [torch.zeros(2, 2, requires_grad=True), torch.zeros(2, requires_grad=True)]
        # the probe never steps, so any run length stands for the run's own
        arguments = {} if self.total_steps_arg is None else {self.total_steps_arg: 1}
        try:
            LibraryOptimizer.construct(self.library_class, probe, self, arguments)
        except (ValueError, TypeError) as exc:
            raise _fixed_error(type(self).model_fields, str(exc).lstrip("[-] "), self.model_dump()) from None
        return self


def _uses_muon_groups(cls: type) -> bool:
    """The Muon family's constructors read a ``use_muon`` flag from every parameter group."""
    return issubclass(cls, MuonBase)


class LibraryOptimizer(Optimizer[Any]):
    """A pytorch-optimizer class, built with the params the run validated (plus the declared fixed ones)."""

    source = SOURCE
    version = VERSION
    library_name: ClassVar[str]
    library_class: ClassVar[type[torch.optim.Optimizer]]
    #: the Muon family: matrices (ndim ≥ 2) in a group with use_muon=True, the rest in its AdamW group
    muon_groups: ClassVar[bool] = False
    #: constructor arguments kept at their defaults, with the reason (listed in the catalogue)
    fixed: ClassVar[Mapping[str, str]] = {}

    @staticmethod
    def construct(
        library_class: type[torch.optim.Optimizer],
        parameters: list[torch.Tensor],
        params: Params,
        arguments: Mapping[str, Any] | None = None,
    ) -> torch.optim.Optimizer:
        """``library_class`` over ``parameters`` with ``params``, the declared fixed defaults and the run's
        ``arguments`` (Optimizer.run_arguments)."""
        kwargs = {**getattr(params, "fixed_defaults", {}), **params.model_dump(), **(arguments or {})}
        if keys := getattr(params, "matrix_group_keys", ()):
            options = {key: kwargs.pop(key) for key in keys}
            matrices = [p for p in parameters if p.ndim == 2]
            others = [p for p in parameters if p.ndim != 2]
            groups = [{"params": matrices, **options}] if matrices else []
            groups += [{"params": others}] if others else []
            return library_class(groups, **kwargs)
        if _uses_muon_groups(library_class):
            matrices = [p for p in parameters if p.ndim >= 2]
            others = [p for p in parameters if p.ndim < 2]
            groups = [{"params": matrices, "use_muon": True}] if matrices else []
            groups += [{"params": others, "use_muon": False}] if others else []
            return library_class(groups, **kwargs)
        return library_class(parameters, **kwargs)

    @classmethod
    def build(cls, parameters: list[torch.Tensor], params: Any, **arguments: Any) -> torch.optim.Optimizer:
        return cls.construct(cls.library_class, parameters, params, arguments)

    @classmethod
    def state_multiple(cls, params: Any) -> float:
        return 3.0  # most keep two moments; a margin for the ones that keep a third buffer


#: library name -> the row of the library's paper table that describes it, where the names differ
PAPER_ROWS = {
    **dict.fromkeys(["dadaptadagrad", "dadaptadam", "dadaptadan", "dadaptlion", "dadaptsgd"], "dadaptation"),
    **dict.fromkeys(["schedulefreeadamw", "schedulefreeradam", "schedulefreesgd"], "schedulefree"),
    **dict.fromkeys(["racs", "alice"], "racsalice"),
    **dict.fromkeys(["emofact", "emolynx"], "emonavi"),
    "sophiah": "sophia",
    "kron": "psgd",
    "grokfastadamw": "grokfast",
    "scionlight": "scion",
    "adatam": "tam",
    "apollodqn": "Apollo",  # the table's "Apollo" (quasi-Newton) and "APOLLO" (low-rank) differ only in case
}


def _papers() -> dict[str, str]:
    """Optimizer name, as the table writes it and in lower case letters and digits -> 'title, paper URL', from
    the README table the package's metadata carries."""
    found: dict[str, str] = {}
    text = importlib.metadata.metadata("pytorch-optimizer").get_payload() or ""  # type: ignore[attr-defined]
    for row in re.finditer(r"^\|\s*([^|]+?)\s*\|\s*\*([^*|]+)\*\s*\|[^|]*\|\s*([^|]*)\|", text, re.M):
        name, title, links = row.groups()
        paper = re.search(r"\[paper\]\((\S+?)\)", links)
        reference = f"{title.strip()}" + (f", {paper.group(1)}" if paper else "")
        found.setdefault(name, reference)
        found.setdefault(re.sub(r"[^a-z0-9]", "", name.lower()), reference)
    return found


def params_model(
    library_class: type,
    docs: Mapping[str, str],
    *,
    module: str,
    skipped: Collection[str] = ("params",),
    fixed: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    total_steps_arg: str | None = None,
    matrix_group_fields: Mapping[str, tuple[Any, Any]] | None = None,
    runs: bool = True,
) -> tuple[type[LibraryParams], dict[str, str]]:
    """A library class's ``Params``, derived from its constructor's arguments (descriptions from ``docs``), and
    the arguments kept at their defaults, with the reason. ``skipped`` arguments are the optimizer's inputs, not
    params; ``fixed`` ones are declared kept at their defaults; ``defaults`` replace the library's (those that are
    not params are passed as they are); ``total_steps_arg`` takes the run's steps; ``matrix_group_fields`` go to
    the matrices' param group instead."""
    defaults = defaults or {}
    fields: dict[str, Any] = {}
    kept: dict[str, str] = dict(fixed or {})
    for pname, parameter in inspect.signature(library_class).parameters.items():
        if parameter.kind in (parameter.VAR_KEYWORD, parameter.VAR_POSITIONAL) or pname in skipped:
            continue
        if pname in IMPLEMENTATION:
            kept[pname] = IMPLEMENTATION[pname]
            continue
        if pname in kept:
            continue
        if pname == total_steps_arg:
            kept[pname] = "the run's total number of steps, which the engine passes"
            continue
        derived = _field(pname, parameter, defaults.get(pname, parameter.default), docs.get(pname, ""))
        if isinstance(derived, str):
            kept[pname] = derived
        else:
            fields[pname] = derived
    fixed_defaults = {pname: value for pname, value in defaults.items() if pname not in fields}
    fields.update(matrix_group_fields or {})
    model = create_model(f"{library_class.__name__}Params", __base__=LibraryParams, __module__=module, **fields)
    model.library_class = library_class
    model.fixed_defaults = fixed_defaults
    model.runs = runs
    model.total_steps_arg = total_steps_arg
    if matrix_group_fields:
        model.matrix_group_keys = tuple(matrix_group_fields)
    return model, kept


def has_modes(library_class: type) -> bool:
    """The optimizer has ``train()`` and ``eval()`` (its parameters differ while training and evaluating)."""
    return callable(getattr(library_class, "eval", None)) and callable(getattr(library_class, "train", None))


def _entry(name: str, library_class: type[torch.optim.Optimizer], papers: Mapping[str, str]) -> type[Optimizer]:
    facts = declared(name)
    params, fixed = params_model(
        library_class,
        _arg_docs(library_class.__doc__ or ""),
        module=__name__,
        # magma's first argument is the parameters, or an optimizer to wrap
        skipped=("params", "model", "optimizer") if name == "magma" else ("params", "model"),
        fixed=facts.fixed,
        defaults=facts.defaults,
        total_steps_arg=facts.total_steps_arg,
        matrix_group_fields=PROJECTION_FIELDS if name in PROJECTED else None,
        runs=facts.unsupported is None,
    )
    doc = (library_class.__doc__ or "").strip()
    summary = doc.split("\n\n")[0].replace("\n", " ").strip()
    key = re.sub(r"[^a-z0-9]", "", library_class.__name__.lower())
    attrs: dict[str, Any] = {
        "name": PREFIX + name,
        "library_name": name,
        "library_class": library_class,
        "torch_optimizer": library_class,
        "description": f"{summary} pytorch_optimizer.{library_class.__name__} ({SOURCE} {VERSION}).",
        "Params": params,
        "family": facts.family,
        "reference": papers.get(
            library_class.__name__, papers.get(PAPER_ROWS.get(name, key), papers.get(key, papers.get(name, "")))
        ),
        "elementwise": facts.elementwise,
        "needs_closure": facts.needs_closure,
        "needs_loss": facts.needs_loss,
        # the Hessian-based ones say so: "Use `loss.backward(create_graph=True)`"
        "needs_hvp": "create_graph=True" in doc,
        "train_eval_modes": has_modes(library_class),
        "param_shapes": "matrices" if "only supports 2D parameters" in _source(library_class) else "any",
        "full_batch_only": library_class is torch.optim.LBFGS,
        "rate_key": facts.rate_key,
        "total_steps_arg": facts.total_steps_arg,
        "stacked_params": facts.stacked_params,
        "unsupported": facts.unsupported,
        "fixed": fixed,
        "test_settings": facts.test,
        "__module__": __name__,
        "__doc__": doc,
    }
    return type(f"Library{library_class.__name__}", (LibraryOptimizer,), attrs)


def _source(cls: type) -> str:
    try:
        return inspect.getsource(inspect.getmodule(cls) or cls)
    except (OSError, TypeError):
        return ""


def _register_all() -> dict[str, type[Optimizer]]:
    papers = _papers()
    return {
        name: _entry(name, pytorch_optimizer.load_optimizer(name), papers)
        for name in pytorch_optimizer.get_supported_optimizers()
    }


#: library name -> its catalogue entry (registered as ``pytorch_optimizer.<name>`` by being defined)
ENTRIES = _register_all()
