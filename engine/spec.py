"""ComparisonSpec: what a user submits. Validation is complete here, before anything is queued.

Component names are checked against the registry and their ``params`` against the component's own
typed ``Params``, so errors carry the exact field path (``optimizers.0.params.lr``). After validation
every ``params`` dict is normalised with all defaults filled in.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from engine import groups, registry, sweeps
from engine.columns import Extra
from engine.datasets import Dataset
from engine.functions import Function
from engine.losses import Loss
from engine.models import Model
from engine.optimizers import Optimizer, OptimizerParams
from engine.schedules import Constant, Schedule

MAX_SEED = 2**31 - 1
MAX_STEPS = 10_000_000
#: the length of Run.label, which a swept run's label (entry label plus its values) must fit
MAX_LABEL = 100


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _strict_scalars(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return registry.validate_strictly(cls, data, handler)


def spec_error(loc: tuple[str | int, ...], message: str, value: Any) -> ValidationError:
    """A ValidationError at ``loc``; raised inside a validator, pydantic prefixes the parent's path."""
    details: InitErrorDetails = {
        "type": PydanticCustomError("invalid_spec", message),
        "loc": loc,
        "input": value,
    }
    return ValidationError.from_exception_data("ComparisonSpec", [details])


BatchSize = Annotated[int, Field(ge=1, le=1_000_000)] | Literal["full"]


def _distinct(seeds: list[int]) -> list[int]:
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be distinct")
    return seeds


Seeds = Annotated[list[Annotated[int, Field(ge=0, le=MAX_SEED)]], AfterValidator(_distinct)]
#: the most seeds a comparison's entry may have, listed or added by adaptive seeding
MAX_SEEDS = 100


class ComponentRef(_Strict):
    """A registered component by name, with its parameters."""

    kind: ClassVar[str]
    name: str = Field(max_length=100)
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        known = registry.names(cls.kind)
        if name not in known:
            raise PydanticCustomError(
                f"unknown_{cls.kind}",
                "unknown {kind} '{name}'; available: {available}",
                {"kind": cls.kind, "name": name, "available": ", ".join(known)},
            )
        unsupported = getattr(registry.get(cls.kind, name), "unsupported", None)
        if unsupported:  # listed in the catalogue with its reason, never queued
            raise PydanticCustomError(
                "unsupported",
                "{kind} '{name}' cannot run here: {reason}",
                {"kind": cls.kind, "name": name, "reason": unsupported},
            )
        return name

    @field_validator("params")
    @classmethod
    def _typed(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "name" not in info.data:  # the name already failed; its error says why
            return params
        component = registry.get(cls.kind, info.data["name"])
        return component.Params.model_validate(params).model_dump(mode="json")

    @property
    def component(self) -> type[registry.AnyComponent]:
        return registry.get(self.kind, self.name)

    @property
    def typed_params(self) -> registry.Params:
        return self.component.Params.model_validate(self.params)


class ModelRef(ComponentRef):
    kind = "model"

    @property
    def component(self) -> type[Model[Any]]:
        return Model.registered(self.name)


class DatasetRef(ComponentRef):
    kind = "dataset"

    @property
    def component(self) -> type[Dataset[Any]]:
        return Dataset.registered(self.name)


class FunctionRef(ComponentRef):
    kind = "function"

    @property
    def component(self) -> type[Function[Any]]:
        return Function.registered(self.name)


class _Grid(_Strict):
    n: int = Field(ge=2, le=sweeps.MAX_SETTINGS, description="points, both ends included")


class UniformGrid(_Grid):
    uniform: tuple[float, float] = Field(description="[lo, hi]: n evenly spaced points")


class LogUniformGrid(_Grid):
    log_uniform: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = Field(
        description="[lo, hi]: n points evenly spaced in log space"
    )


class OptimizerRef(ComponentRef):
    """A registered optimizer by name, with its params."""

    kind = "optimizer"

    @property
    def component(self) -> type[Optimizer[Any]]:
        return Optimizer.registered(self.name)

    @property
    def typed_params(self) -> OptimizerParams:
        return self.component.Params.model_validate(self.params)


class GroupOptimizer(OptimizerRef):
    """Another registered optimizer for a parameter group, with its own params."""


class ParamGroup(_Strict):
    """Some of the model's parameters, with their own optimizer or params (docs/groups.md)."""

    select: list[str] = Field(
        min_length=1,
        max_length=16,
        description="which parameters: hidden_matrices, biases, norms, embeddings, head, rest (what no other "
        "group selects), or name:<glob> over parameter names (name:0.*); several are their union",
        examples=[["hidden_matrices"], ["biases", "norms"], ["rest"], ["name:0.*"]],
    )
    optimizer: GroupOptimizer | None = Field(
        None, description="another optimizer for these parameters, with its own params; default: the entry's"
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="the entry's params that differ for these parameters (weight_decay: 0, a separate lr); "
        "with 'optimizer', give its params there",
    )

    @field_validator("select", mode="before")
    @classmethod
    def _listed(cls, select: Any) -> Any:
        return [select] if isinstance(select, str) else select

    @field_validator("select")
    @classmethod
    def _known_selectors(cls, select: list[str]) -> list[str]:
        for selector in select:
            try:
                groups.check_selector(selector)
            except ValueError as exc:
                raise PydanticCustomError("unknown_selector", str(exc)) from None
        return select

    @model_validator(mode="after")
    def _params_of_its_optimizer(self) -> Self:
        if self.optimizer is not None and self.params:
            raise spec_error(
                ("params",), "a group that names its optimizer gives that optimizer's params inside 'optimizer'", None
            )
        return self


class OptimizerEntry(OptimizerRef):
    @property
    def settings(self) -> list[dict[str, Any]]:
        """Every setting of its sweep ([{}] without one): validation has made each grid its list of values."""
        return sweeps.settings(cast(dict[str, list[Any]], self.sweep))

    @property
    def given_label(self) -> str:
        """Its label, which the comparison's validation fills in where the request gave none."""
        if self.label is None:
            raise ValueError(f"optimizer entry '{self.name}' has no label before its comparison is validated")
        return self.label

    label: str | None = Field(
        None, min_length=1, max_length=MAX_LABEL, description="default: derived from name and params"
    )
    schedule: Schedule = Field(default_factory=Constant, description="learning-rate schedule; default constant")
    batch_size: BatchSize | None = Field(
        None, description="this entry's own batch size, to compare update rules; default: training.batch_size"
    )
    sweep: dict[str, list[Any] | dict[str, Any]] = Field(
        default_factory=dict,
        description="params to sweep, each a list of values or a grid {'log_uniform': [lo, hi], 'n': k} / "
        "{'uniform': [lo, hi], 'n': k}; one run per setting (the Cartesian product) and seed. "
        "Normalised to explicit lists; see docs/sweeps.md",
    )

    @field_validator("sweep")
    @classmethod
    def _valid_sweep(cls, sweep: dict[str, Any], info: ValidationInfo) -> dict[str, list[Any]]:
        if not sweep or "name" not in info.data or "params" not in info.data:  # those errors say why
            return sweep
        params_model = registry.get(cls.kind, info.data["name"]).Params
        base = info.data["params"]
        axes = {name: _sweep_values(params_model, name, axis) for name, axis in sweep.items()}
        count = math.prod(len(values) for values in axes.values())
        if count > sweeps.MAX_SETTINGS:
            raise spec_error(
                (),
                f"the sweep has {count} settings (the product of its value counts); at most {sweeps.MAX_SETTINGS}",
                count,
            )
        # each setting as a whole (params may constrain each other), normalised as its run will get it
        normalised: dict[str, list[Any]] = {name: list(values) for name, values in axes.items()}
        for indices in itertools.product(*(range(len(values)) for values in axes.values())):
            where = dict(zip(axes, indices))
            setting = {name: axes[name][i] for name, i in where.items()}
            try:
                params = params_model.model_validate({**base, **setting}).model_dump(mode="json")
            except ValidationError as exc:
                error = exc.errors()[0]
                name = error["loc"][0] if error["loc"] else None
                if name in where:  # one value's own error
                    raise spec_error((name, where[name], *error["loc"][1:]), error["msg"], setting[name]) from None
                raise spec_error(
                    (), f"the setting {sweeps.describe(setting)} is invalid: {error['msg']}", setting
                ) from None
            for name, i in where.items():
                normalised[name][i] = params[name]
        for name, values in normalised.items():
            if len(set(map(repr, values))) != len(values):
                raise spec_error((name,), "the swept values must be distinct", values)
        return normalised

    groups: list[ParamGroup] = Field(
        default_factory=list,
        max_length=16,
        description="parameter groups, each with its own optimizer or params; every parameter in exactly one. "
        "An entry with groups trains alone, not in an ensemble; see docs/groups.md",
    )

    @field_validator("groups")
    @classmethod
    def _valid_groups(cls, given: list[ParamGroup], info: ValidationInfo) -> list[ParamGroup]:
        if not given or "name" not in info.data or "params" not in info.data:  # those errors say why
            return given
        component: type[Optimizer[Any]] = Optimizer.registered(info.data["name"])
        settings = sweeps.settings(info.data.get("sweep") or {})
        for k, group in enumerate(given):
            for setting in settings:  # the group's params over each of the sweep's settings
                try:
                    merged = component.Params.model_validate({**info.data["params"], **setting, **group.params})
                except ValidationError as exc:
                    error = exc.errors()[0]
                    where = f" with the sweep's setting {sweeps.describe(setting)}" if setting else ""
                    raise spec_error((k, "params", *error["loc"]), error["msg"] + where, error["input"]) from None
            group.params = {name: merged.model_dump(mode="json")[name] for name in group.params}
        uses: list[tuple[tuple[str | int, ...], type[Optimizer[Any]]]] = [((), component)]
        uses += [((k, "optimizer", "name"), g.optimizer.component) for k, g in enumerate(given) if g.optimizer]
        for loc, optimizer in uses:
            if optimizer.needs_closure or optimizer.full_batch_only:
                raise spec_error(
                    loc,
                    f"'{optimizer.name}' re-evaluates the loss in a closure: it cannot share a step with other groups",
                    optimizer.name,
                )
        return given

    @property
    def composed_name(self) -> str:
        """Its optimizers' names in the order of its groups (muon+adamw), or its name without groups."""
        return "+".join(dict.fromkeys(optimizer.name for optimizer, _ in self.group_optimizers())) or self.name

    def group_optimizers(self) -> list[tuple[type[Optimizer[Any]], OptimizerParams]]:
        """Each group's optimizer and its params; the entry's own params are the run's (``with_run_params``)."""
        found: list[tuple[type[Optimizer[Any]], OptimizerParams]] = []
        for group in self.groups:
            if group.optimizer is not None:
                found.append((group.optimizer.component, group.optimizer.typed_params))
            else:
                found.append((self.component, self.component.Params.model_validate({**self.params, **group.params})))
        return found

    @model_validator(mode="after")
    def _schedule_free_schedule(self) -> Self:
        uses = [self.component] + [g.optimizer.component for g in self.groups if g.optimizer is not None]
        # by family, not by train/eval modes: a *Closure variant has none (it evaluates at y inside step) and is
        # schedule-free all the same, while SPlus's modes only swap in an average of its iterates, which any
        # schedule suits
        free = [o.name for o in uses if o.family == "schedule-free"]
        if free and self.schedule.name != "constant":
            raise spec_error(
                ("schedule",),
                f"'{free[0]}' is schedule-free: it takes a constant rate (with a warm-up or not), "
                f"not the schedule '{self.schedule.name}'",
                self.schedule.name,
            )
        return self


def group_parameters(problem: Problem, entry: OptimizerEntry) -> list[list[groups.Parameter]]:
    """Each of ``entry.groups``' parameters in the problem's model (engine.groups), from shapes alone."""
    dataset, model = problem.dataset_ref, problem.model_ref
    shape = dataset.component.shape(dataset.typed_params)
    found = groups.of_model(model.component, model.typed_params, shape.sample_shape, shape.n_outputs)
    return groups.partition(found, [group.select for group in entry.groups])


def _sweep_values(params_model: type[registry.Params], name: str, axis: Any) -> list[Any]:
    """One swept parameter's values: the list given, or its grid's points."""
    if name not in params_model.model_fields:
        raise spec_error(
            (name,),
            f"'{name}' is not a parameter of this optimizer; its parameters: {', '.join(params_model.model_fields)}",
            name,
        )
    if not isinstance(axis, dict):
        if not 1 <= len(axis) <= sweeps.MAX_SETTINGS:
            raise spec_error((name,), f"give 1 to {sweeps.MAX_SETTINGS} values", axis)
        return axis
    if "log_uniform" not in axis and "uniform" not in axis:
        raise spec_error((name,), "a grid is {'log_uniform': [lo, hi], 'n': k} or {'uniform': [lo, hi], 'n': k}", axis)
    grid_model = LogUniformGrid if "log_uniform" in axis else UniformGrid
    try:
        grid = grid_model.model_validate(axis)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise spec_error((name, *error["loc"]), error["msg"], error["input"]) from None
    kind = "log_uniform" if grid_model is LogUniformGrid else "uniform"
    lo, hi = getattr(grid, kind)
    if not lo < hi:
        raise spec_error((name, kind), "give [lo, hi] with lo < hi", [lo, hi])
    return sweeps.grid(kind, lo, hi, grid.n)


_Part = TypeVar("_Part")


class Problem(_Strict):
    """Either a dataset problem (model, dataset, loss) or a function problem (function, x0)."""

    model: ModelRef | None = None
    dataset: DatasetRef | None = None
    loss: str | None = Field(None, description="one of the catalogue's losses")
    function: FunctionRef | None = None
    x0: list[Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        None, max_length=10_000, description="function problems: starting point; default: the function's own"
    )
    validation_fraction: float = Field(0.0, ge=0.0, le=0.9, description="dataset problems: share held out")
    split_seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the train/validation split, shared by all runs")
    standardize: bool | None = Field(
        None, description="scale features to zero mean, unit variance (train statistics); default: the dataset's own"
    )

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, loss: str | None) -> str | None:
        known = registry.names("loss")
        if loss is not None and loss not in known:
            raise PydanticCustomError(
                "unknown_loss",
                "unknown loss '{name}'; available: {available}",
                {"name": loss, "available": ", ".join(known)},
            )
        return loss

    @property
    def is_function(self) -> bool:
        return self.function is not None

    # the parts a validated problem of its kind always has (a dataset problem: model, dataset, loss)
    @property
    def model_ref(self) -> ModelRef:
        return self._given(self.model, "model")

    @property
    def dataset_ref(self) -> DatasetRef:
        return self._given(self.dataset, "dataset")

    @property
    def function_ref(self) -> FunctionRef:
        return self._given(self.function, "function")

    @property
    def start(self) -> list[float]:
        """A function problem's x0 (validation fills in the function's default)."""
        return self._given(self.x0, "x0")

    @property
    def loss_component(self) -> type[Loss]:
        return Loss.registered(self._given(self.loss, "loss"))

    def _given(self, part: _Part | None, name: str) -> _Part:
        if part is None:
            raise ValueError(f"a {'function' if self.is_function else 'dataset'} problem has no '{name}'")
        return part

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.function is not None:
            for other in ("model", "dataset", "loss", "standardize"):
                if getattr(self, other) is not None:
                    raise spec_error((other,), f"a function problem takes no '{other}'", getattr(self, other))
            if self.validation_fraction:
                raise spec_error(
                    ("validation_fraction",), "a function problem has no data to hold out", self.validation_fraction
                )
            self._fill_x0()
            return self
        if self.x0 is not None:
            raise spec_error(("x0",), "x0 is only for function problems", self.x0)
        for required in ("model", "dataset", "loss"):
            if getattr(self, required) is None:
                raise spec_error(
                    (required,),
                    f"a dataset problem needs '{required}' (or give 'function' for a function problem)",
                    None,
                )
        dataset, model_ref = self.dataset_ref, self.model_ref
        try:
            shape = dataset.component.shape(dataset.typed_params)
        except (OSError, ValueError) as exc:
            raise spec_error(
                ("dataset", "params"), f"dataset '{dataset.name}' cannot be read: {exc}", dataset.params
            ) from None
        model = model_ref.component
        if model.input_ranks is not None and len(shape.sample_shape) not in model.input_ranks:
            ranks = " or ".join(map(str, sorted(model.input_ranks)))
            raise spec_error(
                ("model", "name"),
                f"model '{model_ref.name}' takes samples of rank {ranks}, but "
                f"dataset '{dataset.name}' has samples of shape {shape.sample_shape}",
                model_ref.name,
            )
        if model.takes_tokens != (dataset.component.task == "sequence"):
            wanted = "token ids (a sequence dataset)" if model.takes_tokens else "features, not token ids"
            raise spec_error(
                ("model", "name"),
                f"model '{model_ref.name}' takes {wanted}; "
                f"dataset '{dataset.name}' is a {dataset.component.task} dataset",
                model_ref.name,
            )
        try:  # arithmetic (or a build on the meta device): a model that cannot take this data says so here
            model.parameter_count(model_ref.typed_params, shape.sample_shape, shape.n_outputs)
        except ValueError as exc:
            raise spec_error(
                ("model",), f"model '{model_ref.name}' cannot take dataset '{dataset.name}': {exc}", model_ref.name
            ) from None
        if self.standardize is None:
            self.standardize = dataset.component.standardize_by_default
        elif self.standardize and dataset.component.task == "sequence":
            raise spec_error(("standardize",), f"dataset '{dataset.name}' holds token ids: they cannot be scaled", True)
        dataset_task = dataset.component.task
        loss_task = self.loss_component.task
        if dataset_task != loss_task:
            raise spec_error(
                ("loss",),
                f"loss '{self.loss}' is for {loss_task}, but dataset '{dataset.name}' is a {dataset_task} dataset",
                self.loss,
            )
        return self

    def _fill_x0(self) -> None:
        function = self.function_ref
        params = function.typed_params
        dim = function.component.dim(params)
        if self.x0 is None:
            self.x0 = list(function.component.default_x0(params))
        elif dim is not None and len(self.x0) != dim:
            raise spec_error(("x0",), f"x0 has {len(self.x0)} coordinates; '{function.name}' takes {dim}", self.x0)


class Training(_Strict):
    epochs: int | None = Field(None, ge=1, le=MAX_STEPS, description="passes over the training set")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="optimizer updates")
    batch_size: BatchSize = Field("full", description="'full' is the epoch rule, k mini-batches, 1 the per-sample rule")
    shuffle: bool = Field(True, description="draw a new batch order every epoch; false keeps one order")
    drop_last: bool = False
    eval_every: int | None = Field(
        None, ge=1, le=MAX_STEPS, description="steps between evaluations of the full train and validation sets"
    )
    extras: list[Extra] = Field(
        default_factory=list, description="optional per-step extras; the learning rate is always recorded"
    )

    @model_validator(mode="after")
    def _one_budget(self) -> Self:
        if (self.epochs is None) == (self.steps is None):
            raise spec_error(("epochs",), "give exactly one of 'epochs' or 'steps'", self.epochs)
        return self


class Tuning(_Strict):
    """The DeepOBS protocol as one job: sweep on the first seed, pick each entry's best setting by
    ``metric``, rerun it on the remaining seeds."""

    metric: Literal["final_loss", "val_loss"] = Field(
        "final_loss", description="final_loss: the run's final training loss; val_loss: its last evaluation's"
    )
    seeds: Seeds = Field(
        min_length=1,
        max_length=100,
        description="the first for the search, the rest for the chosen settings; replaces the top-level seeds",
    )


class Adaptive(_Strict):
    """Seeds added in rounds until each optimizer's comparison with the baseline is decided
    (analysis.sequential; docs/statistics.md, "Adaptive seeding"). Seeds are 0, 1, 2, ... in order."""

    min: int = Field(3, ge=2, le=MAX_SEEDS, description="seeds of the first round, before the first look")
    max: int = Field(30, ge=2, le=MAX_SEEDS, description="seeds at most, per optimizer setting")
    round: int = Field(3, ge=1, le=MAX_SEEDS, description="seeds added per round to the pairs still undecided")
    alpha: float = Field(
        0.05, gt=0, lt=1, description="the chance of any wrong decision, over all pairs (Bonferroni) and all looks"
    )
    equivalence: float = Field(
        0.0,
        ge=0,
        le=1e300,
        description="the margin within which a pair is 'equivalent': on scale 'log' a relative difference "
        "(0.05: the losses' geometric means within a factor 1.05), on scale 'raw' a loss difference; 0: never",
    )
    scale: Literal["log", "raw"] = Field(
        "log", description="log: differences of ln(final loss), for positive losses; raw: of the final loss"
    )
    spending: Literal["obrien_fleming", "pocock"] = Field(
        "obrien_fleming", description="the Lan-DeMets alpha-spending function"
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.max < self.min:
            raise spec_error(("max",), f"max ({self.max}) must be at least min ({self.min})", self.max)
        return self

    @property
    def margin(self) -> float:
        """The equivalence margin on the scale of the differences tested."""
        return math.log1p(self.equivalence) if self.scale == "log" else self.equivalence


class AdaptiveSeeds(_Strict):
    adaptive: Adaptive


def _seeds_or_adaptive(value: Any) -> list[int] | AdaptiveSeeds:
    """A list of seeds, or {"adaptive": {...}}; errors at the exact field either way (a plain union
    would put the arm's name in their path)."""
    if isinstance(value, dict | AdaptiveSeeds):
        return AdaptiveSeeds.model_validate(value)
    try:  # as a field of a _Strict model, so that lax types get the same refusal as everywhere
        return _SeedList.model_validate({"seeds": value}).seeds
    except ValidationError as exc:
        errors: list[InitErrorDetails] = [
            {
                "type": PydanticCustomError(error["type"], "{message}", {"message": error["msg"]}),
                "loc": tuple(error["loc"][1:]),
                "input": error["input"],
            }
            for error in exc.errors()
        ]
        raise ValidationError.from_exception_data("ComparisonSpec", errors) from None


class _SeedList(_Strict):
    seeds: Seeds = Field(min_length=1, max_length=MAX_SEEDS)


def _seeds_as_json(seeds: list[int] | AdaptiveSeeds) -> list[int] | dict[str, Any]:
    return seeds.model_dump(mode="json") if isinstance(seeds, AdaptiveSeeds) else list(seeds)


class ComparisonSpec(_Strict):
    name: str = Field(min_length=1, max_length=200)
    problem: Problem
    training: Training
    optimizers: list[OptimizerEntry] = Field(min_length=1, max_length=100)
    seeds: Annotated[
        list[int] | AdaptiveSeeds,
        PlainValidator(_seeds_or_adaptive, json_schema_input_type=Seeds | AdaptiveSeeds),
        PlainSerializer(_seeds_as_json),
    ] = Field(
        [0], description="distinct seeds, or {'adaptive': {...}}: seeds added in rounds until the answer is clear"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=32)
    tuning: Tuning | None = Field(None, description="run the DeepOBS tuning protocol over the entries' sweeps")
    reuse: bool = Field(True, description="reuse the team's identical succeeded runs instead of training again")
    target_loss: float | None = Field(None, description="the loss to reach, for time-to-target in the summary")
    baseline: str | None = Field(
        None,
        max_length=MAX_LABEL,
        description="label the other entries are compared "
        "with: an entry's, or one setting's of a swept entry; default: the first entry",
    )

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for i, entry in enumerate(self.optimizers):
            if entry.batch_size is None:
                entry.batch_size = self.training.batch_size
            full_batch = entry.batch_size == "full" or self.problem.is_function
            if entry.component.full_batch_only and not full_batch:
                raise spec_error(
                    ("optimizers", i, "name"),
                    f"'{entry.name}' re-evaluates the loss in a closure and needs batch_size = 'full'",
                    entry.name,
                )
            self._check_groups(i, entry)
            self._check_shapes(i, entry)
        labels = _default_labels(self.optimizers, self.training.batch_size)
        for i, entry in enumerate(self.optimizers):
            if entry.label is None:
                entry.label = labels[i]
        seen: dict[str, int] = {}
        for i, entry in enumerate(self.optimizers):
            if entry.given_label in seen:
                raise spec_error(
                    ("optimizers", i, "label"),
                    f"label '{entry.label}' is already used by "
                    f"optimizers.{seen[entry.given_label]}; labels must be distinct",
                    entry.label,
                )
            seen[entry.given_label] = i
        run_labels = self._check_run_labels()
        if self.adaptive is not None and len(run_labels) < 2:
            raise spec_error(
                ("seeds", "adaptive"),
                "adaptive seeding compares optimizer settings with the baseline: give at least two",
                None,
            )
        self._check_tuning()
        if self.baseline is not None and self.baseline not in seen and self.baseline not in run_labels:
            raise spec_error(
                ("baseline",),
                f"baseline '{self.baseline}' is not the label of an optimizer entry "
                f"or of a swept setting; entry labels: {', '.join(seen)}",
                self.baseline,
            )
        return self

    @property
    def adaptive(self) -> Adaptive | None:
        """Adaptive seeding, where the seeds ask for it."""
        return self.seeds.adaptive if isinstance(self.seeds, AdaptiveSeeds) else None

    def _check_groups(self, i: int, entry: OptimizerEntry) -> None:
        """Every parameter in exactly one group, and each group's optimizer takes its parameters' shapes."""
        if not entry.groups:
            return
        if self.problem.is_function:
            raise spec_error(
                ("optimizers", i, "groups"), "a function problem has one parameter, x: groups are for models", None
            )
        try:
            selected = group_parameters(self.problem, entry)
        except groups.GroupError as exc:
            given = entry.groups[exc.loc[1]].select if len(exc.loc) > 1 else None  # type: ignore[index]
            raise spec_error(("optimizers", i, *exc.loc), exc.message, given) from None
        for k, ((optimizer, _), chosen) in enumerate(zip(entry.group_optimizers(), selected)):
            others = [p for p in chosen if len(p.shape) != 2]
            if optimizer.param_shapes == "matrices" and others:
                raise spec_error(
                    ("optimizers", i, "groups", k, "select"),
                    f"'{optimizer.name}' only takes matrices, but this group selects "
                    f"{', '.join(p.describe() for p in others)}; select hidden_matrices for it",
                    entry.groups[k].select,
                )

    def _check_shapes(self, i: int, entry: OptimizerEntry) -> None:
        """An optimizer of matrices only (torch's Muon) without groups takes every parameter: all must be 2-D."""
        if entry.groups or entry.component.param_shapes != "matrices":
            return
        if self.problem.is_function:
            others = f"a function problem's x, of {len(self.problem.start)} coordinates"
        else:
            dataset, model = self.problem.dataset_ref, self.problem.model_ref
            shape = dataset.component.shape(dataset.typed_params)
            found = groups.of_model(model.component, model.typed_params, shape.sample_shape, shape.n_outputs)
            others = ", ".join(p.describe() for p in found if len(p.shape) != 2)
        if others:
            raise spec_error(
                ("optimizers", i, "name"),
                f"'{entry.name}' only takes matrices (2-D parameters), but this problem has {others}: give it the "
                "hidden matrices with groups ([{'select': 'hidden_matrices'}, {'select': 'rest', "
                "'optimizer': {'name': 'adamw'}}], docs/groups.md)",
                entry.name,
            )

    def _check_run_labels(self) -> set[str]:
        """A swept run's label is its entry's label plus its values: it must fit and be distinct."""
        labels: dict[str, int] = {}
        for i, entry in enumerate(self.optimizers):
            for setting in entry.settings:
                label = sweeps.swept_label(entry.given_label, setting)
                if len(label) > MAX_LABEL:
                    raise spec_error(
                        ("optimizers", i, "label"),
                        f"the run label '{label}' is longer than "
                        f"{MAX_LABEL} characters; give the entry a shorter label",
                        entry.label,
                    )
                if labels.setdefault(label, i) != i:
                    raise spec_error(
                        ("optimizers", i, "label"),
                        f"run label '{label}' is also a run label of "
                        f"optimizers.{labels[label]}; labels must be distinct",
                        entry.label,
                    )
        return set(labels)

    def _check_tuning(self) -> None:
        if self.tuning is None:
            return
        if isinstance(self.seeds, AdaptiveSeeds):
            raise spec_error(("seeds", "adaptive"), "adaptive seeding does not combine with tuning", None)
        # an explicit seeds list, even the default's [0], is the user's: it is never silently replaced
        if "seeds" in self.model_fields_set and self.seeds != self.tuning.seeds:
            raise spec_error(
                ("seeds",),
                "with tuning, tuning.seeds replaces seeds: leave seeds out (or give the same list)",
                self.seeds,
            )
        self.seeds = list(self.tuning.seeds)
        if not any(entry.sweep for entry in self.optimizers):
            raise spec_error(
                ("tuning",), "tuning picks the best setting of a sweep, but no optimizer entry has a sweep", None
            )
        if self.tuning.metric == "val_loss":
            if not self.problem.validation_fraction:
                raise spec_error(
                    ("problem", "validation_fraction"),
                    "tuning.metric 'val_loss' needs a validation set: a dataset problem with validation_fraction > 0",
                    self.problem.validation_fraction,
                )
            if self.training.eval_every is None:
                raise spec_error(
                    ("training", "eval_every"),
                    "tuning.metric 'val_loss' needs evaluations: set training.eval_every",
                    None,
                )


def _default_labels(entries: list[OptimizerEntry], batch_size: int | str) -> list[str]:
    """The name alone where it is unambiguous, else the name with what sets the entry apart: the
    parameters that differ from their defaults, a schedule, its own batch size."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.composed_name] = counts.get(entry.composed_name, 0) + 1
    labels = []
    for entry in entries:
        if counts[entry.composed_name] == 1:
            labels.append(entry.composed_name)
            continue
        defaults = entry.component.Params().model_dump(mode="json")
        changed = {k: v for k, v in entry.params.items() if defaults.get(k) != v and k not in entry.sweep}
        details = [f"{k}={json.dumps(v)}" for k, v in sorted(changed.items())]
        if entry.schedule.name != "constant":
            details.append(f"schedule={entry.schedule.name}")
        if entry.batch_size != batch_size:
            details.append(f"batch_size={entry.batch_size}")
        labels.append(f"{entry.composed_name}({', '.join(details)})")
    return labels


def with_run_params(spec: ComparisonSpec, entry_index: int, params: dict[str, Any]) -> ComparisonSpec:
    """The spec whose entry ``entry_index`` carries a run's own params (a swept run's), to train that run."""
    optimizers = list(spec.optimizers)
    optimizers[entry_index] = optimizers[entry_index].model_copy(update={"params": params})
    return spec.model_copy(update={"optimizers": optimizers})
