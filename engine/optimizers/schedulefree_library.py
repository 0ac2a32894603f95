"""Meta's ``schedulefree`` package (the reference implementation of Schedule-Free, pinned in pyproject): every
optimizer it exports, one catalogue entry each, named ``schedulefree.<snake name>`` (``AdamWScheduleFree`` is
``schedulefree.adamw``, ``SGDScheduleFreeClosure`` is ``schedulefree.sgd_closure``).

``Params`` are derived from the constructor as for pytorch-optimizer's entries (engine.optimizers.library), and
validated by the constructor too. The capabilities follow the class: one with ``train()``/``eval()`` keeps the
gradient point y in the parameters while training and the average x while evaluating; a ``*Closure`` one
evaluates the closure at y inside ``step`` and leaves x in the parameters, so it has no modes but needs a closure.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from typing import Any

import schedulefree
import schedulefree.adamw_schedulefree_reference
import torch

from engine.optimizers import Optimizer, TestSettings
from engine.optimizers.library import LibraryOptimizer, _arg_docs, has_modes, params_model

SOURCE = "schedulefree"
VERSION = importlib.metadata.version("schedulefree")
PREFIX = "schedulefree."
REFERENCE = "The Road Less Scheduled (Defazio et al., 2024), https://arxiv.org/abs/2405.15682"
UNSUPPORTED = {
    "wrapper": "wraps an already built base optimizer (ScheduleFreeWrapper(base)) instead of taking parameters, "
    "and is not a torch.optim.Optimizer; around SGD it is schedulefree.sgd, step by step",
}
UNSUPPORTED["wrapper_reference"] = UNSUPPORTED["wrapper"]


def _silent(*args: object, **kwargs: object) -> None:
    """Prints nothing."""


# AdamWScheduleFreeReference prints "Switching to train mode" / "Switching to eval mode" at every mode switch, two
# lines in a worker's log per evaluation; those are the only prints of its module, whose print this silences
setattr(schedulefree.adamw_schedulefree_reference, "print", _silent)
#: steps per test problem, as the other library's entries take
TEST_STEPS = 200
#: params on the test problems where the defaults do not halve the loss in TEST_STEPS (a sweep over the rate's
#: decades); "dataset": iris's MLP through the API (tests/e2e/test_catalogue.py)
TESTS: dict[str, dict[str, dict[str, float]]] = {
    "adamw": {"parabola": {"lr": 3.0}, "rosenbrock": {"lr": 1.0}},
    "adamw_closure": {"parabola": {"lr": 3.0}, "rosenbrock": {"lr": 1.0}},
    "adamw_paper": {"parabola": {"lr": 3.0}, "rosenbrock": {"lr": 1.0}},
    "adamw_reference": {"parabola": {"lr": 3.0}, "rosenbrock": {"lr": 1.0}},
    "radam": {"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 3.0}},
    "radam_closure": {"parabola": {"lr": 10.0}, "rosenbrock": {"lr": 3.0}},
    "sgd": {"parabola": {"lr": 0.3}, "rosenbrock": {"lr": 0.003}},
    "sgd_closure": {"parabola": {"lr": 0.3}, "rosenbrock": {"lr": 0.003}},
    "sgd_reference": {"parabola": {"lr": 0.3}, "rosenbrock": {"lr": 0.003}},
}


def snake_name(class_name: str) -> str:
    """``AdamWScheduleFreeClosure`` -> ``adamw_closure``, ``ScheduleFreeWrapper`` -> ``wrapper``."""
    rule, variant = re.fullmatch(r"(.*?)(Closure|Reference|Paper)?", class_name.replace("ScheduleFree", "")).groups()  # type: ignore[union-attr]
    return "_".join(part.lower() for part in (rule, variant) if part)


def _entry(name: str, library_class: type) -> type[Optimizer[Any]]:
    doc = inspect.cleandoc(library_class.__doc__ or "")
    docs = {pname: text.strip() for pname, text in _arg_docs("\n" + doc.replace("Arguments:", "Args:")).items()}
    params, fixed = params_model(
        library_class, docs, module=__name__, skipped=("params", "base"), runs=name not in UNSUPPORTED
    )
    summary = " ".join(doc.split("\n\n")[0].split())
    attrs: dict[str, Any] = {
        "name": PREFIX + name,
        "library_name": name,
        "library_class": library_class,
        "torch_optimizer": library_class,
        "source": SOURCE,
        "version": VERSION,
        "description": f"{summary} schedulefree.{library_class.__name__} ({SOURCE} {VERSION}).",
        "Params": params,
        "family": "schedule-free",
        "reference": REFERENCE,
        "needs_closure": name.endswith("_closure"),
        "train_eval_modes": has_modes(library_class),
        # the rate the step used, its warm-up (warmup_steps) included
        "rate_key": "scheduled_lr",
        "unsupported": UNSUPPORTED.get(name),
        "fixed": fixed,
        "test_settings": TestSettings(TESTS.get(name, {}), steps=TEST_STEPS),
        "__module__": __name__,
        "__doc__": doc,
    }
    return type(f"ScheduleFree{library_class.__name__}", (LibraryOptimizer,), attrs)


def _classes() -> dict[str, type]:
    """The package's exported optimizers (and wrappers) by snake name."""
    exported = (getattr(schedulefree, attr) for attr in dir(schedulefree))
    return {
        snake_name(cls.__name__): cls
        for cls in exported
        if isinstance(cls, type) and (issubclass(cls, torch.optim.Optimizer) or hasattr(cls, "step"))
    }


#: snake name -> its catalogue entry (registered as ``schedulefree.<name>`` by being defined)
ENTRIES = {name: _entry(name, cls) for name, cls in sorted(_classes().items())}
