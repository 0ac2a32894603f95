"""The schedulefree package's entries: one per exported class, with the capabilities its class has, Params the
constructor validates, and a *Closure variant (no modes: it evaluates at y inside step) that trains as the moded
one does (the same rule, the same x at the end)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import schedulefree
import torch
from pydantic import ValidationError

from engine import registry
from engine.optimizers.schedulefree_library import ENTRIES, VERSION, snake_name
from engine.spec import ComparisonSpec
from engine.training import train

OPTIMIZERS = registry.all_of("optimizer")


def test_every_exported_class_is_an_entry_with_its_capabilities() -> None:
    exported = {name for name, value in vars(schedulefree).items() if inspect.isclass(value)}
    assert {cls.library_class.__name__ for cls in ENTRIES.values()} == exported
    assert snake_name("AdamWScheduleFreeClosure") == "adamw_closure" and snake_name("ScheduleFreeWrapper") == "wrapper"
    for name, cls in ENTRIES.items():
        assert OPTIMIZERS[f"schedulefree.{name}"] is cls
        assert (cls.source, cls.version, cls.family) == ("schedulefree", VERSION, "schedule-free")
        assert "2405.15682" in cls.reference and cls.description
        assert cls.needs_closure == name.endswith("_closure") and not cls.full_batch_only
        assert cls.train_eval_modes == (not name.endswith("_closure"))
        assert ("warmup_steps" in cls.Params.model_fields) == (
            "warmup_steps" in inspect.signature(cls.library_class).parameters
        )
    assert {name for name, cls in ENTRIES.items() if cls.unsupported} == {"wrapper", "wrapper_reference"}
    assert sum(cls.unsupported is None for cls in ENTRIES.values()) == 9


@pytest.mark.parametrize(
    ("name", "values", "field"),
    [
        ("sgd", {"momentum": 0.0}, "momentum"),  # the library's own refusal, at the field it names
        ("sgd_closure", {"lr": -1.0}, "lr"),
        ("adamw", {"betas": (0.9, 1.0)}, "betas"),
        ("adamw_reference", {"warmup_steps": -1}, "warmup_steps"),
        ("radam", {"eps": 0.0}, "eps"),
        ("adamw_paper", {"weight_decay": -0.1}, "weight_decay"),
    ],
)
def test_bad_params_are_errors_at_their_field(name: str, values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ENTRIES[name].Params(**values)
    assert field in {error["loc"][0] for error in caught.value.errors() if error["loc"]}


def test_a_closure_variant_trains_as_the_moded_one_and_ends_at_x() -> None:
    spec = ComparisonSpec.model_validate(
        {
            "name": "closure",
            "problem": {"function": {"name": "rosenbrock"}, "x0": [-1.2, 1.0]},
            "training": {"steps": 30},
            "optimizers": [
                {"name": f"schedulefree.{name}", "params": {"lr": 0.3, "warmup_steps": 5}}
                for name in ("adamw", "adamw_closure")
            ],
            "device": "cpu",
            "dtype": "float64",
        }
    )
    outcomes, losses = [], []
    for index in range(2):
        rows: list[Any] = []
        outcomes.append(train(spec, index, 0, lambda batch: rows.append(batch) or True, total_steps=30))
        losses.append([loss for batch in rows for loss in batch.loss])
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-12, atol=0)
    # the moded one's final loss is taken in eval mode, at x; the closure variant's parameters hold x already
    assert outcomes[0].final_loss == pytest.approx(outcomes[1].final_loss, rel=1e-12)


@pytest.mark.parametrize("wrapper", [schedulefree.ScheduleFreeWrapper, schedulefree.ScheduleFreeWrapperReference])
def test_the_unsupported_wrappers_around_sgd_are_schedulefree_sgd(wrapper: type) -> None:
    """What their catalogue reason says: wrapping plain SGD makes the rule schedulefree.sgd builds."""
    sgd = ENTRIES["sgd"]
    runs = []
    for build in (
        lambda x: sgd.build([x], sgd.Params(lr=0.05, momentum=0.8)),
        lambda x: wrapper(torch.optim.SGD([x], lr=0.05), momentum=0.8),
    ):
        x = torch.tensor([-3.0, 2.0], dtype=torch.float64, requires_grad=True)
        optimizer = build(x)
        optimizer.train()
        losses = []
        for _ in range(20):
            optimizer.zero_grad()
            loss = (x[0] - 1) ** 2 + 10 * (x[1] + 2) ** 2
            loss.backward()
            losses.append(loss.item())
            optimizer.step()
        optimizer.eval()
        runs.append((torch.tensor(losses), x.detach().clone()))
    (losses, x), (wrapped_losses, wrapped_x) = runs
    torch.testing.assert_close(wrapped_losses, losses, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(wrapped_x, x, rtol=1e-12, atol=1e-12)
    assert ENTRIES["wrapper"].unsupported and "schedulefree.sgd" in ENTRIES["wrapper"].unsupported


def test_adamw_reference_switches_modes_without_printing(capsys: pytest.CaptureFixture[str]) -> None:
    """AdamWScheduleFreeReference printed "Switching to train/eval mode" at every switch (around each evaluation
    and the final loss), which floods a worker's log: a run with evaluations prints nothing, while other output
    still reaches stdout."""
    spec = ComparisonSpec.model_validate(
        {
            "name": "quiet",
            "problem": {"function": {"name": "rosenbrock"}, "x0": [-1.2, 1.0]},
            "training": {"steps": 12, "eval_every": 3},
            "optimizers": [{"name": "schedulefree.adamw_reference", "params": {"lr": 0.3}}],
            "device": "cpu",
            "dtype": "float64",
        }
    )
    rows: list[Any] = []
    outcome = train(spec, 0, 0, lambda batch: rows.append(batch) or True, total_steps=12)
    assert outcome.status == "succeeded" and len([e for batch in rows for e in batch.evals]) == 5
    print("the process's own output")
    assert capsys.readouterr().out == "the process's own output\n"
