"""Loss rollups: min/max/sum/count per block of 2**level steps, written with every flush.

A flush adds its rows' aggregates to the blocks it touches (an upsert that merges). Whenever step
rows are removed or rewritten (a resumed run truncates its tail; a retried flush finds its rows
already there), the affected blocks are rebuilt from the step rows instead, so rollups always
describe exactly the rows that exist.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import and_, case, delete, or_, select, true
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from db.models import Step, StepRollup

#: block sizes 64, 256, ... 65536 steps: a curve reads between 2 and 8 blocks per point. No finer level:
#: each one costs a merged row per 2^level steps at every flush, and finer ones cost ingest more than they save
LEVELS = (6, 8, 10, 12, 14, 16)
_INSERT = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def aggregate(run_id: str, step: np.ndarray, loss: np.ndarray, time_s: np.ndarray,
              epoch: Sequence[int | None] | None = None) -> list[dict]:
    """The rollup rows of consecutive steps (sorted by step), for every level."""
    if len(step) == 0:
        return []
    nan = np.isnan(loss)
    low, high = np.where(nan, np.inf, loss), np.where(nan, -np.inf, loss)
    finite_values = np.where(np.isfinite(loss), loss, 0.0)
    flags = np.stack([nan, loss == np.inf, loss == -np.inf]).astype(np.int64)
    epochs = [None] * len(step) if epoch is None else list(epoch)
    rows = []
    for level in LEVELS:
        blocks = step >> level
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
        ends = np.r_[starts[1:], len(step)] - 1
        counts = (ends - starts + 1).tolist()
        nans, pos_infs, neg_infs = np.add.reduceat(flags, starts, axis=1).tolist()
        mins, maxs = np.minimum.reduceat(low, starts).tolist(), np.maximum.reduceat(high, starts).tolist()
        sums = np.add.reduceat(finite_values, starts).tolist()
        for i, (start, end) in enumerate(zip(starts.tolist(), ends.tolist())):
            only_nan = nans[i] == counts[i]
            rows.append({
                "run_id": run_id, "level": level, "block": int(blocks[start]), "count": counts[i],
                "nan_count": nans[i], "pos_inf_count": pos_infs[i], "neg_inf_count": neg_infs[i],
                "finite_sum": sums[i], "min": None if only_nan else mins[i], "max": None if only_nan else maxs[i],
                "first": float(loss[start]), "last": float(loss[end]),
                "first_step": int(step[start]), "last_step": int(step[end]),
                "first_time_s": float(time_s[start]), "last_time_s": float(time_s[end]),
                "first_epoch": epochs[start], "last_epoch": epochs[end],
            })
    return rows


def _extreme(existing, incoming, pick_incoming):
    return case((existing.is_(None), incoming), (incoming.is_(None), existing),
                (pick_incoming, incoming), else_=existing)


def merge(session: Session, rows: Sequence[dict]) -> None:
    """Add a flush's aggregates (steps after every step already rolled up) to the stored blocks."""
    if not rows:
        return
    statement = _INSERT[session.get_bind().dialect.name](StepRollup)
    new, old = statement.excluded, StepRollup
    statement = statement.on_conflict_do_update(
        index_elements=["run_id", "level", "block"],
        set_={
            **{c: getattr(old, c) + getattr(new, c)
               for c in ("count", "nan_count", "pos_inf_count", "neg_inf_count", "finite_sum")},
            "min": _extreme(old.min, new.min, new.min < old.min),
            "max": _extreme(old.max, new.max, new.max > old.max),
            **{c: getattr(new, c) for c in ("last", "last_step", "last_time_s", "last_epoch")},
        },
    )
    session.execute(statement, list(rows))


def rebuild(session: Session, run_id: str, from_step: int, to_step: int | None = None) -> None:
    """Recompute every block that overlaps steps [from_step, to_step] from the step rows."""
    span = 1 << LEVELS[-1]
    first = (from_step // span) * span
    last = None if to_step is None else (to_step // span + 1) * span - 1
    session.execute(delete(StepRollup).where(StepRollup.run_id == run_id, or_(*(
        and_(StepRollup.level == level, StepRollup.block >= (from_step >> level),
             true() if to_step is None else StepRollup.block <= (to_step >> level))
        for level in LEVELS))))
    query = select(Step.step, Step.loss, Step.time_s, Step.epoch).where(Step.run_id == run_id, Step.step >= first)
    if last is not None:
        query = query.where(Step.step <= last)
    found = session.execute(query.order_by(Step.step)).all()
    if not found:
        return
    step, loss, time_s, epoch = zip(*found)
    # the rows read cover whole top-level blocks; keep the blocks of each level that were deleted
    rebuilt = [r for r in aggregate(run_id, np.array(step, dtype=np.int64), np.array(loss, dtype=np.float64),
                                    np.array(time_s, dtype=np.float64), epoch)
               if r["block"] >= (from_step >> r["level"]) and (to_step is None or r["block"] <= (to_step >> r["level"]))]
    session.execute(_INSERT[session.get_bind().dialect.name](StepRollup), rebuilt)
