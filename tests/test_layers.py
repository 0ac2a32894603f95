"""The layers point one way: api → services → worker → db → analysis → engine, with optibench.settings and
optibench.status beneath them all but the engine (which is handed what it needs: engine.config). Every import
of every module counts, function-level ones included; the graph of modules has no cycle."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("api", "services", "worker", "db", "analysis", "engine", "optibench")
#: what each package may not import: every layer above it
FORBIDDEN = {
    "engine": ("api", "services", "worker", "db", "analysis", "optibench.cli", "optibench.admin", "optibench.settings"),
    "analysis": ("api", "services", "worker", "db", "optibench.settings"),
    "db": ("api", "services", "worker"),
    "worker": ("api", "services"),
    "services": ("api",),
}


def _modules() -> dict[str, set[str]]:
    """Every module of the packages, with the modules of this project it imports."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            imported = set()
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.add(node.module)
                    imported.update(f"{node.module}.{alias.name}" for alias in node.names)
            found[name] = {m for m in imported if m.split(".")[0] in (*PACKAGES, "optibench")}
    return found


MODULES = _modules()


@pytest.mark.parametrize("package", FORBIDDEN)
def test_no_package_imports_a_layer_above_it(package):
    wrong = {
        (module, target)
        for module, targets in MODULES.items()
        if module.split(".")[0] == package
        for target in targets
        for above in FORBIDDEN[package]
        if target == above or target.startswith(above + ".")
    }
    assert not wrong, sorted(wrong)


def test_the_cli_imports_no_api_module():
    """The CLI and the client work without FastAPI's app: keys are minted in services.keys, and
    optibench.serving names the app by string for uvicorn."""
    wrong = {
        (module, target)
        for module, targets in MODULES.items()
        if module.split(".")[0] == "optibench"
        for target in targets
        if target.split(".")[0] == "api"
    }
    assert not wrong, sorted(wrong)


def test_no_route_imports_another_route():
    """What two routes share lives in services (or api.reads, for query parameters and response models)."""
    wrong = {
        (module, target)
        for module, targets in MODULES.items()
        if module.startswith("api.routes.")
        for target in targets
        if target.startswith("api.routes.") and not target.startswith(module)
    }
    assert not wrong, sorted(wrong)


def test_the_modules_import_each_other_without_a_cycle():
    graph = {module: {t for t in targets if t in MODULES and t != module} for module, targets in MODULES.items()}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " → ".join([*path[path.index(target) :], target]))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_api_and_the_worker_hand_the_engine_its_data_root(settings_env, tmp_path, monkeypatch):
    """The engine reads no settings: the processes above it copy OPTIBENCH_IDX_ROOT into engine.config."""
    from api.main import create_app
    from db.leases import Claim
    from engine import config as engine_config
    from worker.tasks import _run_spec

    monkeypatch.setattr(engine_config.config, "data_root", pathlib.Path("data"))
    settings_env("OPTIBENCH_IDX_ROOT", str(tmp_path / "api"))
    create_app()
    assert engine_config.config.data_root == tmp_path / "api"

    settings_env("OPTIBENCH_IDX_ROOT", str(tmp_path / "worker"))
    spec = {
        "name": "t",
        "training": {"steps": 1},
        "optimizers": [{"name": "sgd"}],
        "problem": {"function": {"name": "rosenbrock"}},
    }
    _run_spec(Claim("run", 1, "comparison", 0, 0, 1, spec, {}))
    assert engine_config.config.data_root == tmp_path / "worker"
