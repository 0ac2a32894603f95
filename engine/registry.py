"""Component registries, filled by discovery rather than by a central if/elif.

A component is a class with a ``kind``, a ``name`` and a pydantic ``Params`` model. Defining a subclass
with a ``name`` in any module under ``engine/<kind>s/`` registers it; operators add their own through
the entry-point groups ``optibench.optimizers``, ``optibench.models``, ``optibench.datasets`` and
``optibench.functions``. A request only ever names a registered component, never an import path.
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
import types
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Generic, Literal, Self, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError, ValidatorFunctionWrapHandler, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

log = logging.getLogger(__name__)

KINDS = ("optimizer", "model", "dataset", "function", "loss")
_PACKAGES = {
    "optimizer": "engine.optimizers",
    "model": "engine.models",
    "dataset": "engine.datasets",
    "function": "engine.functions",
    "loss": "engine.losses",
}


def _admitted(annotation: Any) -> tuple[set[type], set[Any]]:
    """The scalar types an annotation admits anywhere inside it (union arms, list and tuple items),
    and its literal values. ``object`` stands for anything: Any, a nested model, a dict."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _admitted(get_args(annotation)[0])
    if origin is Literal:
        return set(), set(get_args(annotation))
    if origin in (Union, types.UnionType, list, tuple, set, frozenset):
        kinds: set[type] = set()
        literals: set[Any] = set()
        for arg in get_args(annotation):
            if arg is not Ellipsis:
                arg_kinds, arg_literals = _admitted(arg)
                kinds |= arg_kinds
                literals |= arg_literals
        return kinds, literals
    if annotation in (int, float, bool, str, type(None)):
        return {annotation}, set()
    return {object}, set()


def _lax(value: Any, kinds: set[type], literals: set[Any]) -> tuple[str, tuple[int, ...]] | None:
    """What a JSON value is that the field would only take by coercion, and where in it (list
    indices); None if it is fine."""
    if object in kinds or (isinstance(value, (str, bool)) and value in literals):
        return None
    if isinstance(value, bool):
        return None if bool in kinds else ("a boolean", ())
    if isinstance(value, str):  # a pure Literal's own error lists the choices
        return ("a string", ()) if str not in kinds and kinds & {int, float, bool} else None
    if isinstance(value, (int, float)):
        return ("a number", ()) if bool in kinds and not kinds & {int, float} else None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if (found := _lax(item, kinds, literals)) is not None:
                return found[0], (index, *found[1])
    return None


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def _always_taken(kinds: set[type]) -> frozenset[type]:
    """The types of JSON value that ``_lax`` passes for a field admitting ``kinds``, whatever the value."""
    taken: set[type] = {type(None), dict}
    if bool in kinds:
        taken.add(bool)
    if str in kinds or not kinds & {int, float, bool}:
        taken.add(str)
    if kinds & {int, float} or bool not in kinds:
        taken |= {int, float}
    return frozenset(taken)


@functools.cache
def _admitted_by_field(model: type[BaseModel]) -> dict[str, tuple[set[type], set[Any], frozenset[type]]]:
    """``_admitted`` of each of the model's fields that can refuse a value, with the types of value it never
    refuses, worked out once per model: a submit validates dozens."""
    admitted = {name: _admitted(field.annotation) for name, field in model.model_fields.items()}
    return {
        name: (kinds, literals, _always_taken(kinds))
        for name, (kinds, literals) in admitted.items()
        if object not in kinds
    }


def _lax_errors(model: type[BaseModel], data: Any) -> list[InitErrorDetails]:
    """The values of ``data`` that ``model``'s fields would only take by lax coercion."""
    if not isinstance(data, dict):
        return []
    errors: list[InitErrorDetails] = []
    admitted = _admitted_by_field(model)
    for name, value in data.items():
        field = admitted.get(name)
        if field is None or type(value) in field[2]:
            continue
        kinds, literals, _ = field
        lax = _lax(value, kinds, literals)
        if lax is not None:
            found, where = lax
            expected = " or ".join(sorted({_KIND_NAMES.get(kind, "null") for kind in kinds} | set(map(repr, literals))))
            errors.append(
                {
                    "type": PydanticCustomError(
                        "strict_type",
                        "{found} is not taken here: give {expected}",
                        {"found": found, "expected": expected},
                    ),
                    "loc": (name, *where),
                    "input": value,
                }
            )
    return errors


def validate_strictly(model: type[BaseModel], data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """A model validator (mode 'wrap') that takes JSON input strictly: a boolean is not a number, a
    string is neither a number nor a boolean, a number is not a boolean; an integer is still a float.
    It refuses only what lax validation would coerce, so stored specs validate again as they did. The
    model's other errors are reported beside these, so a form shows every bad field at once."""
    lax = _lax_errors(model, data)
    if not lax:
        return handler(data)
    refused = {tuple(error["loc"]) for error in lax}
    try:
        handler(data)
        others: list[InitErrorDetails] = []
    except ValidationError as exc:
        others = [
            {
                "type": PydanticCustomError(error["type"], "{message}", {"message": error["msg"]}),
                "loc": error["loc"],
                "input": error["input"],
            }
            for error in exc.errors()
            if not any(tuple(error["loc"])[: len(loc)] == loc for loc in refused)
        ]
    raise ValidationError.from_exception_data(model.__name__, lax + others)


class Params(BaseModel):
    """Typed, validated hyperparameters of a component. Unknown names are rejected, and so are values
    that only lax coercion would take (``"0.1"`` for a number, ``true`` for an integer)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _strict_scalars(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        return validate_strictly(cls, data, handler)


#: what a component with no parameters names as its ``Params`` (inside a class body, ``Params`` is the attribute)
NoParams = Params
P = TypeVar("P", bound=Params)


class Component(Generic[P]):
    """Generic in its params type, so a component's classmethods take its own ``Params`` (``Adam``
    is an ``Optimizer[AdamParams]``) and a type checker holds overrides to it."""

    kind: ClassVar[str]
    name: ClassVar[str]
    description: ClassVar[str] = ""
    if TYPE_CHECKING:
        Params: type[P]
    else:
        Params = Params

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _register(cls)

    @classmethod
    def registered(cls, name: str) -> type[Self]:
        """The component of this kind registered under ``name`` (KeyError if none)."""
        found = get(cls.kind, name)
        if not issubclass(found, cls):
            raise TypeError(f"{cls.kind} {name!r} is not a {cls.__name__}")
        return found


AnyComponent = Component[Any]
_registry: dict[str, dict[str, type[AnyComponent]]] = {kind: {} for kind in KINDS}
_discovered = False


def _register(cls: type[AnyComponent]) -> None:
    table = _registry[cls.kind]
    existing = table.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"{cls.kind} {cls.name!r} is defined twice: {existing.__module__} and {cls.__module__}")
    table[cls.name] = cls


def discover() -> None:
    """Import every built-in component module and every installed plug-in, once."""
    global _discovered
    if _discovered:
        return
    for kind, package_name in _PACKAGES.items():
        package = importlib.import_module(package_name)
        for module in pkgutil.iter_modules(getattr(package, "__path__", [])):
            importlib.import_module(f"{package_name}.{module.name}")
        for ep in entry_points(group=f"optibench.{kind}s"):
            try:
                plugin = ep.load()
            except Exception:  # a broken plug-in must not take the service down
                log.exception("could not load %s plug-in %r", kind, ep.name)
                continue
            if not (isinstance(plugin, type) and issubclass(plugin, Component) and plugin.kind == kind):
                log.error("entry point %r in optibench.%ss is not a %s component", ep.name, kind, kind)
                continue
            _register(plugin)
    _discovered = True


def get(kind: str, name: str) -> type[AnyComponent]:
    discover()
    return _registry[kind][name]


def names(kind: str) -> list[str]:
    discover()
    return sorted(_registry[kind])


def all_of(kind: str) -> dict[str, type[AnyComponent]]:
    discover()
    return dict(sorted(_registry[kind].items()))


def describe(cls: type[AnyComponent]) -> dict[str, Any]:
    """Catalogue entry: every parameter with its JSON-schema type, default and range."""
    schema = cls.Params.model_json_schema()
    required = set(schema.get("required", []))
    params = []
    for pname, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        prop.pop("title", None)
        params.append({"name": pname, "required": pname in required, **prop})
    entry: dict[str, Any] = {"name": cls.name, "description": cls.description, "params": params}
    if schema.get("$defs"):
        entry["definitions"] = schema["$defs"]
    return entry
