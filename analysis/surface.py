"""The loss surface of a function problem, for drawing the optimizers' paths on it: the registered
function evaluated on a grid over a box around the paths, and which steps of a long path to draw."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.functions import Function

#: the box extends this share of its span beyond the paths on each side
MARGIN = 0.1


@dataclass(frozen=True)
class Box:
    """[lo, hi] per coordinate."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]


def box_around(points: Iterable[Sequence[float]], dim: int) -> Box:
    """The smallest box holding the finite points, widened by MARGIN of its span on each side (by
    1 where the points have no span). A diverged path's infinities are left out."""
    finite = np.array([p for p in points if len(p) == dim and all(map(math.isfinite, p))], dtype=np.float64)
    if finite.size == 0:
        finite = np.zeros((1, dim))
    lo, hi = finite.min(axis=0), finite.max(axis=0)
    pad = np.where(hi > lo, (hi - lo) * MARGIN, 1.0)
    return Box(tuple((lo - pad).tolist()), tuple((hi + pad).tolist()))


def evaluate(name: str, params: dict, points: np.ndarray) -> np.ndarray:
    """f at each row of ``points`` (n × dim), in float64, with the function the runs trained on."""
    function: type[Function[Any]] = Function.registered(name)
    typed = function.Params.model_validate(params)
    x = torch.as_tensor(points, dtype=torch.float64)
    with torch.no_grad():
        try:
            values = torch.vmap(lambda point: function.value(point, typed))(x)
        except RuntimeError:  # a plug-in written for one point at a time
            values = torch.stack([function.value(point, typed) for point in x])
    return values.numpy()


def grid(name: str, params: dict, box: Box, points: int) -> dict[str, list]:
    """f on ``points`` evenly spaced values per coordinate of a 1-D or 2-D box: {"x", "z"} in 1-D,
    {"x", "y", "z"} in 2-D with z[i][j] = f(x[j], y[i]) (the row-major layout of a contour plot)."""
    axes = [np.linspace(lo, hi, points) for lo, hi in zip(box.lo, box.hi)]
    if len(axes) == 1:
        return {"x": axes[0].tolist(), "z": evaluate(name, params, axes[0][:, None]).tolist()}
    xs, ys = np.meshgrid(*axes)
    z = evaluate(name, params, np.column_stack([xs.ravel(), ys.ravel()])).reshape(xs.shape)
    return {"x": axes[0].tolist(), "y": axes[1].tolist(), "z": z.tolist()}


def path_steps(last_step: int, points: int) -> list[int]:
    """At most ``points`` steps from 0 to ``last_step``, evenly spaced, both ends included: every
    step of a short path."""
    if last_step + 1 <= points:
        return list(range(last_step + 1))
    return np.unique(np.linspace(0, last_step, points).round().astype(np.int64)).tolist()
