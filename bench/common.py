from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.spec import ComparisonSpec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@dataclass
class Result:
    name: str
    measure: str
    target: str
    value: float | None
    passed: bool | None  # None: not measured here (e.g. no GPU)
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def example_spec(filename: str) -> ComparisonSpec:
    return ComparisonSpec.model_validate(json.loads((EXAMPLES / filename).read_text()))
