"""Component registries, filled by discovery rather than by a central if/elif.

A component is a class with a ``kind``, a ``name`` and a pydantic ``Params`` model. Defining a subclass
with a ``name`` in any module under ``engine/<kind>s/`` registers it; operators add their own through
the entry-point groups ``optibench.optimizers``, ``optibench.models``, ``optibench.datasets`` and
``optibench.functions``. A request only ever names a registered component, never an import path.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from importlib.metadata import entry_points
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

log = logging.getLogger(__name__)

KINDS = ("optimizer", "model", "dataset", "function", "loss")
_PACKAGES = {
    "optimizer": "engine.optimizers",
    "model": "engine.models",
    "dataset": "engine.datasets",
    "function": "engine.functions",
    "loss": "engine.losses",
}


class Params(BaseModel):
    """Typed, validated hyperparameters of a component. Unknown names are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Component:
    kind: ClassVar[str]
    name: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[Params]] = Params

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _register(cls)


_registry: dict[str, dict[str, type[Component]]] = {kind: {} for kind in KINDS}
_discovered = False


def _register(cls: type[Component]) -> None:
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


def get(kind: str, name: str) -> type[Component]:
    discover()
    return _registry[kind][name]


def names(kind: str) -> list[str]:
    discover()
    return sorted(_registry[kind])


def all_of(kind: str) -> dict[str, type[Component]]:
    discover()
    return dict(sorted(_registry[kind].items()))


def describe(cls: type[Component]) -> dict[str, Any]:
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
