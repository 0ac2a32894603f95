"""The maths of curves: equal-width buckets over x, what each bucket reports, and seed aggregation.

A bucket reports first, last, min and max (M4: enough to draw the line exactly at one bucket per
pixel), so spikes survive downsampling. min and max skip NaN but keep ±inf, so a blow-up shows as
an infinite max; NaN and ±inf are counted, never dropped silently; the mean is over finite values.

``downsample`` is the reference on arrays. ``db.curves`` computes the same buckets in SQL, and a
rollup path can build them from pre-aggregated blocks with ``Bucket.merge``: the property tests hold
all of them to the same invariants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

Band = Literal["ci", "minmax"]
#: how values are combined across runs: as they are, or as their logs (for positive quantities on a log axis)
Scale = Literal["linear", "log"]
#: confidence level of band=ci
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Grid:
    """``points`` equal-width buckets over [start, end]; the end itself falls in the last bucket."""

    start: float
    end: float
    points: int

    @property
    def scale(self) -> float:
        """Buckets per unit of x. A range of one x value, or one too narrow to divide, is one bucket."""
        scale = self.points / (self.end - self.start) if self.end > self.start else 0.0
        return scale if math.isfinite(scale) else 0.0

    def index(self, x: np.ndarray) -> np.ndarray:
        # the SQL computes the same (x - start) * scale in float64, so both agree bit for bit
        return np.minimum(np.floor((x - self.start) * self.scale), self.points - 1).astype(np.int64)


def is_raw(rows_in_range: int, points: int) -> bool:
    """With no more rows than points, every row is its own bucket: the raw rows unchanged."""
    return rows_in_range <= points


@dataclass(slots=True)  # not frozen: a long curve builds thousands, and frozen init is slow
class Bucket:
    #: the bucket's position on the grid (raw curves: the row's step)
    index: int
    #: x of the bucket's first and last rows (in step order)
    x_start: float
    x_end: float
    count: int
    first: float
    last: float
    #: over the values that are not NaN, so ±inf count; None when all are NaN
    min: float | None
    max: float | None
    #: sum of the finite values; None when there are none
    total: float | None
    nan: int = 0
    pos_inf: int = 0
    neg_inf: int = 0

    @property
    def finite(self) -> int:
        return self.count - self.nan - self.pos_inf - self.neg_inf

    @property
    def mean(self) -> float | None:
        return self.total / self.finite if self.total is not None and self.finite else None

    def merge(self, later: Bucket) -> Bucket:
        """The bucket of this one's rows followed by ``later``'s: how pre-aggregated blocks combine."""
        return Bucket(
            index=self.index,
            x_start=self.x_start,
            x_end=later.x_end,
            count=self.count + later.count,
            first=self.first,
            last=later.last,
            min=_none_aware(min, self.min, later.min),
            max=_none_aware(max, self.max, later.max),
            total=_none_aware(sum, self.total, later.total),
            nan=self.nan + later.nan,
            pos_inf=self.pos_inf + later.pos_inf,
            neg_inf=self.neg_inf + later.neg_inf,
        )


def _none_aware(combine, a, b):
    return a if b is None else b if a is None else combine((a, b))


@dataclass(frozen=True)
class Curve:
    raw: bool
    buckets: list[Bucket]
    #: the x range asked for, or the data's; None without data
    start: float | None = None
    end: float | None = None

    @property
    def rows(self) -> int:
        return sum(b.count for b in self.buckets)


def downsample(
    x: np.ndarray, values: np.ndarray, points: int, start: float | None = None, end: float | None = None
) -> Curve:
    """The curve of rows given in step order, x non-decreasing: the rows with x in [start, end]
    (default: all), in ``points`` buckets, or raw when they are no more than ``points``."""
    x, values = np.asarray(x, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if len(x) == 0:
        return Curve(raw=True, buckets=[])
    start, end = (float(x[0]) if start is None else start), (float(x[-1]) if end is None else end)
    keep = (x >= start) & (x <= end)
    x, values = x[keep], values[keep]
    raw = is_raw(len(x), points)
    keys = np.arange(len(x)) if raw else Grid(start, end, points).index(x)
    return Curve(raw=raw, buckets=_reduce(keys, x, values) if len(x) else [], start=start, end=end)


def _reduce(keys: np.ndarray, x: np.ndarray, values: np.ndarray) -> list[Bucket]:
    """One bucket per run of equal keys."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)] - 1
    nan, finite = np.isnan(values), np.isfinite(values)

    def count(mask: np.ndarray) -> list[int]:
        return np.add.reduceat(mask.astype(np.int64), starts).tolist()

    nans, pos_infs, neg_infs = count(nan), count(values == np.inf), count(values == -np.inf)
    counts = (ends - starts + 1).tolist()
    lows = np.minimum.reduceat(np.where(nan, np.inf, values), starts).tolist()
    highs = np.maximum.reduceat(np.where(nan, -np.inf, values), starts).tolist()
    totals = np.add.reduceat(np.where(finite, values, 0.0), starts).tolist()
    finites = count(finite)
    return [
        Bucket(
            index=int(keys[s]),
            x_start=float(x[s]),
            x_end=float(x[e]),
            count=n,
            first=float(values[s]),
            last=float(values[e]),
            min=lo if n > k else None,
            max=hi if n > k else None,
            total=t if f else None,
            nan=k,
            pos_inf=p,
            neg_inf=m,
        )
        for s, e, n, lo, hi, t, f, k, p, m in zip(
            starts, ends, counts, lows, highs, totals, finites, nans, pos_infs, neg_infs
        )
    ]


@dataclass(frozen=True)
class SeedPoint:
    """Across the runs that have a row in one grid bucket."""

    x: float
    n: int
    #: None only on the log scale, when no value in the bucket is positive
    mean: float | None
    lo: float | None
    hi: float | None
    nan: int
    pos_inf: int
    neg_inf: int
    #: log scale: the values <= 0 (-inf included), left out of the aggregate
    nonpositive: int = 0


def aggregate_seeds(runs: list[list[Bucket]], band: Band = "ci", scale: Scale = "linear") -> list[SeedPoint]:
    """Per grid bucket, the runs' values (each run's last value in the bucket) combined: n, the mean
    (IEEE: a NaN among them makes it NaN), and a band: the 95% t-interval of the mean (None for
    n < 2 or a non-finite value), or the min and max over the non-NaN values.

    ``scale="log"``: the same over the logs of the positive values, exponentiated: the geometric mean
    and exp(mean(log v) ∓ t · s(log v) / √m), which is never below 0; the values <= 0 are left out
    and counted (m: the values used); min and max are over the values used."""
    indices = sorted({b.index for buckets in runs for b in buckets})
    if not indices:
        return []
    column = {index: i for i, index in enumerate(indices)}
    shape = (len(runs), len(indices))
    values, present = np.zeros(shape), np.zeros(shape, dtype=bool)
    #: per bucket, the x of the latest row used (exact, and an int on integer axes)
    x_at: dict[int, float] = {}
    for r, buckets in enumerate(runs):
        cols = [column[b.index] for b in buckets]
        values[r, cols] = [b.last for b in buckets]
        present[r, cols] = True
        for c, b in zip(cols, buckets):
            x_at[c] = max(x_at.get(c, b.x_end), b.x_end)
    n = present.sum(axis=0)
    nonpositive = present & (values <= 0) if scale == "log" else np.zeros(shape, dtype=bool)
    used = present & ~nonpositive
    if scale == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            mean, lo, hi, defined = _mean_and_t_band(np.log(np.where(used, values, 1.0)), used)
        mean, lo, hi = np.exp(mean), np.exp(lo), np.exp(hi)
    else:
        mean, lo, hi, defined = _mean_and_t_band(values, used)
    if band == "minmax":
        not_nan = used & ~np.isnan(values)
        defined = np.asarray(not_nan.any(axis=0))
        lo = np.where(not_nan, values, np.inf).min(axis=0)
        hi = np.where(not_nan, values, -np.inf).max(axis=0)
    has_mean = np.asarray(used.any(axis=0))

    def count(mask: np.ndarray) -> np.ndarray:
        return (present & mask).sum(axis=0)

    nan, pos_inf, neg_inf = count(np.isnan(values)), count(values == np.inf), count(values == -np.inf)
    below = nonpositive.sum(axis=0)
    return [
        SeedPoint(
            x=x_at[c],
            n=int(n[c]),
            mean=float(mean[c]) if has_mean[c] else None,
            lo=float(lo[c]) if defined[c] else None,
            hi=float(hi[c]) if defined[c] else None,
            nan=int(nan[c]),
            pos_inf=int(pos_inf[c]),
            neg_inf=int(neg_inf[c]),
            nonpositive=int(below[c]),
        )
        for c in range(len(indices))
    ]


def _mean_and_t_band(values: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per column, over the rows ``used``: the mean, the 95% t-interval's ends, and where they are defined."""
    m = used.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(used, values, 0.0).sum(axis=0) / m
        squares = np.where(used, (values - mean) ** 2, 0.0).sum(axis=0)
        half = stats.t.ppf((1 + CONFIDENCE) / 2, m - 1) * np.sqrt(squares / (m - 1) / m)
    defined = (m >= 2) & np.isfinite(mean) & np.isfinite(half)
    return mean, np.where(defined, mean - half, np.nan), np.where(defined, mean + half, np.nan), defined
