"""Discovery: built-in modules and operators' entry points join the catalogue; nothing else does."""

from importlib.metadata import EntryPoint

import pytest
from pydantic import ValidationError

from engine import registry
from engine.spec import ComparisonSpec


@pytest.fixture
def fresh_registry(monkeypatch):
    """Rediscover with the given entry points, then restore the real registry."""
    registry.discover()
    saved = {kind: dict(table) for kind, table in registry._registry.items()}

    def discover_with(points: list[EntryPoint]):
        monkeypatch.setattr(registry, "entry_points", lambda group: [p for p in points if p.group == group])
        monkeypatch.setattr(registry, "_discovered", False)
        registry.discover()

    yield discover_with
    for kind, table in saved.items():
        registry._registry[kind].clear()
        registry._registry[kind].update(table)


def _spec(name: str) -> dict:
    return {
        "name": "plugin",
        "problem": {"function": {"name": "quadratic"}},
        "training": {"steps": 5},
        "optimizers": [{"name": name, "params": {"lr": 0.1}}],
    }


def test_an_entry_point_optimizer_joins_the_catalogue_and_validates(fresh_registry):
    import tests.engine.plugin_example as plugin_module

    plugin_module.PluginSignSGD = plugin_module.make_plugin()
    fresh_registry(
        [
            EntryPoint("signsgd", "tests.engine.plugin_example:PluginSignSGD", "optibench.optimizers"),
            EntryPoint("broken", "tests.engine.no_such_module:Nothing", "optibench.optimizers"),
            EntryPoint("wrong", "tests.engine.plugin_example:not_a_component", "optibench.optimizers"),
        ]
    )
    assert "plugin_signsgd" in registry.names("optimizer")
    assert registry.describe(registry.get("optimizer", "plugin_signsgd"))["params"][0]["name"] == "lr"
    spec = ComparisonSpec.model_validate(_spec("plugin_signsgd"))
    assert spec.optimizers[0].params == {"lr": 0.1}
    with pytest.raises(ValidationError) as error:
        ComparisonSpec.model_validate(
            _spec("plugin_signsgd") | {"optimizers": [{"name": "plugin_signsgd", "params": {"lr": -1}}]}
        )
    assert error.value.errors()[0]["loc"] == ("optimizers", 0, "params", "lr")
    # the broken and the wrong entry points were skipped, and the built-ins are all still there
    assert {"adam", "sgd", "local_gain"} <= set(registry.names("optimizer"))


@pytest.mark.parametrize("name", ["os:system", "torch.optim.Adam", "engine.optimizers.adam:Adam", "../adam"])
def test_a_request_cannot_name_an_import_path(name):
    with pytest.raises(ValidationError) as error:
        ComparisonSpec.model_validate(_spec(name))
    assert error.value.errors()[0]["loc"] == ("optimizers", 0, "name")


def test_two_components_with_one_name_are_refused():
    from engine.optimizers import Optimizer

    with pytest.raises(ValueError, match="defined twice"):
        type("AnotherAdam", (Optimizer,), {"name": "adam", "__module__": "elsewhere"})


def test_the_strict_checks_shortcut_passes_only_what_the_full_check_passes():
    """A field's value whose type it always takes skips the full check: the two agree on every JSON
    value, for every kind of annotation the components use."""
    from typing import Any, Literal

    annotations: list[Any] = [
        int,
        float,
        bool,
        str,
        int | None,
        float | bool,
        bool | None,
        str | int,
        Literal["a", "b"],
        Literal["full"] | int,
        list[float],
        tuple[float, float],
        dict[str, Any],
        Any,
    ]
    values = [0, 1.5, True, False, "a", "0.1", None, {"k": 1}, [1.0, 2.0], [True], ["x", 1]]
    for annotation in annotations:
        kinds, literals = registry._admitted(annotation)
        if object in kinds:
            continue
        taken = registry._always_taken(kinds)
        for value in values:
            if type(value) in taken:
                assert registry._lax(value, kinds, literals) is None, (annotation, value)
