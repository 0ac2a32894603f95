"""Loss rollups: min/max/sum/count per block of 2**level steps, written with every flush.

A flush's steps come after every stored step, so the blocks that start inside it are new and are
inserted; only the first block of each level may already hold earlier steps, and gets the flush's
aggregates merged into it (an upsert). Whenever step rows are removed or rewritten (a resumed run
truncates its tail; a retried flush finds its rows already there), the affected blocks are rebuilt
from the step rows instead, so rollups always describe exactly the rows that exist.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache

import numpy as np
from sqlalchemy import and_, delete, or_, select, true
from sqlalchemy.orm import Session

from db import columnar
from db.models import Step, StepRollup

#: block sizes 64, 256, ... 65536 steps: a curve reads between 2 and 8 blocks per point. No finer level:
#: each one costs a row per 2^level steps at every flush, and finer ones cost ingest more than they save
LEVELS = (6, 8, 10, 12, 14, 16)
#: each column's kind (see ``db.columnar.KINDS``)
KINDS = {
    "level": "int4",
    "block": "int4",
    "count": "int4",
    "nan_count": "int4",
    "pos_inf_count": "int4",
    "neg_inf_count": "int4",
    "finite_sum": "float8",
    "min": "float8",
    "max": "float8",
    "first": "faithful",
    "last": "faithful",
    "first_step": "int4",
    "last_step": "int4",
    "first_time_s": "float8",
    "last_time_s": "float8",
    "first_epoch": "int4",
    "last_epoch": "int4",
}

#: a rollup row per block, as columns (KINDS's keys): arrays, None for epochs when steps have none
Blocks = dict[str, np.ndarray | None]


def aggregate(step: np.ndarray, loss: np.ndarray, time_s: np.ndarray, epoch: np.ndarray | None = None) -> Blocks:
    """The blocks of consecutive steps (at least one, sorted by step), level after level. min and
    max are masked (NULL) in blocks whose every loss is NaN; ``epoch`` may be a masked array, whose
    masked entries (steps without an epoch) stay NULL."""
    step, loss = np.asarray(step, dtype=np.int64), np.asarray(loss, dtype=np.float64)
    time_s = np.asarray(time_s, dtype=np.float64)
    if epoch is not None and not np.ma.isMaskedArray(epoch):
        epoch = np.asarray(epoch, dtype=np.int64)
    nan = np.isnan(loss)
    low, high = np.where(nan, np.inf, loss), np.where(nan, -np.inf, loss)
    finite_values = np.where(np.isfinite(loss), loss, 0.0)
    flags = np.stack([nan, loss == np.inf, loss == -np.inf]).astype(np.int64)
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    for level in LEVELS:
        blocks = step >> level
        starts = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
        parts["level"].append(np.full(len(starts), level))
        parts["block"].append(blocks[starts])
        parts["start"].append(starts)
        parts["end"].append(np.r_[starts[1:], len(step)] - 1)
        parts["flags"].append(np.add.reduceat(flags, starts, axis=1))
        parts["finite_sum"].append(np.add.reduceat(finite_values, starts))
        parts["min"].append(np.minimum.reduceat(low, starts))
        parts["max"].append(np.maximum.reduceat(high, starts))
    columns = {name: np.concatenate(values, axis=-1) for name, values in parts.items()}
    starts, ends = columns.pop("start"), columns.pop("end")
    columns["count"] = ends - starts + 1
    columns["nan_count"], columns["pos_inf_count"], columns["neg_inf_count"] = columns.pop("flags")
    only_nan = columns["nan_count"] == columns["count"]
    columns["min"] = np.ma.array(columns["min"], mask=only_nan)
    columns["max"] = np.ma.array(columns["max"], mask=only_nan)
    for edge, rows in (("first", starts), ("last", ends)):
        columns[edge] = loss[rows]
        columns[f"{edge}_step"] = step[rows]
        columns[f"{edge}_time_s"] = time_s[rows]
    aggregated: Blocks = {name: columns.get(name) for name in KINDS}  # the epochs: None
    if epoch is not None:
        aggregated["first_epoch"], aggregated["last_epoch"] = epoch[starts], epoch[ends]
    return aggregated


def _present(blocks: Blocks, name: str) -> np.ndarray:
    """A column that every block has (only the epochs may be None)."""
    values = blocks[name]
    assert values is not None, f"every block has a {name}"
    return values


def _select(blocks: Blocks, which: np.ndarray) -> Blocks:
    return {name: None if values is None else values[which] for name, values in blocks.items()}


def extend(session: Session, run_id: str, blocks: Blocks) -> None:
    """Store the blocks of a flush whose steps come after every stored step."""
    block, level = _present(blocks, "block"), _present(blocks, "level")
    started_before = (block << level) < _present(blocks, "first_step").min()
    _insert(session, run_id, _select(blocks, ~started_before))
    _merge(session, run_id, _select(blocks, started_before))


def _insert(session: Session, run_id: str, blocks: Blocks) -> None:
    rows = len(_present(blocks, "block"))
    if rows:
        columnar.insert(session, "step_rollups", {"run_id": "text", **KINDS}, {"run_id": run_id, **blocks}, rows)


def _merge(session: Session, run_id: str, blocks: Blocks) -> None:
    """Add the aggregates of a flush's first blocks (at most one a level) to the stored ones."""
    rows = len(_present(blocks, "block"))
    if rows:
        dialect = session.get_bind().dialect.name
        parameters = columnar.parameters(dialect, {"run_id": "text", **KINDS}, {"run_id": run_id, **blocks}, rows)
        session.connection().exec_driver_sql(_upsert("%s" if dialect == "postgresql" else "?"), parameters)


@cache
def _upsert(placeholder: str) -> str:
    """The merge of blocks into the stored ones, in the driver's SQL (it runs at every flush)."""

    def extreme(column: str, beats: str) -> str:  # min and max are NULL in a block of NaN only
        return (
            f'"{column}" = CASE WHEN step_rollups."{column}" IS NULL OR excluded."{column}" {beats} '
            f'step_rollups."{column}" THEN excluded."{column}" ELSE step_rollups."{column}" END'
        )

    names = ("run_id", *KINDS)
    merged = [
        f'"{c}" = step_rollups."{c}" + excluded."{c}"'
        for c in ("count", "nan_count", "pos_inf_count", "neg_inf_count", "finite_sum")
    ]
    merged += [extreme("min", "<"), extreme("max", ">")]
    merged += [f'"{c}" = excluded."{c}"' for c in ("last", "last_step", "last_time_s", "last_epoch")]
    return (
        f"INSERT INTO step_rollups ({columnar.column_list(names)}) "
        f"VALUES ({', '.join([placeholder] * len(names))}) "
        f"ON CONFLICT (run_id, level, block) DO UPDATE SET {', '.join(merged)}"
    )


def rebuild(session: Session, run_id: str, from_step: int, to_step: int | None = None) -> None:
    """Recompute every block that overlaps steps [from_step, to_step] from the step rows."""
    span = 1 << LEVELS[-1]
    first = (from_step // span) * span
    last = None if to_step is None else (to_step // span + 1) * span - 1
    session.execute(
        delete(StepRollup).where(
            StepRollup.run_id == run_id,
            or_(
                *(
                    and_(
                        StepRollup.level == level,
                        StepRollup.block >= (from_step >> level),
                        true() if to_step is None else StepRollup.block <= (to_step >> level),
                    )
                    for level in LEVELS
                )
            ),
        )
    )
    query = select(Step.step, Step.loss, Step.time_s, Step.epoch).where(Step.run_id == run_id, Step.step >= first)
    if last is not None:
        query = query.where(Step.step <= last)
    found = session.execute(query.order_by(Step.step)).all()
    if not found:
        return
    step, loss, time_s, epoch = zip(*found)
    unknown = [e is None for e in epoch]
    epochs = None if all(unknown) else np.ma.array([e or 0 for e in epoch], mask=unknown, dtype=np.int64)
    # the rows read cover whole top-level blocks; keep the blocks of each level that were deleted
    blocks = aggregate(np.array(step), np.array(loss, dtype=np.float64), np.array(time_s, dtype=np.float64), epochs)
    block, level = _present(blocks, "block"), _present(blocks, "level")
    deleted = block >= (from_step >> level)
    if to_step is not None:
        deleted &= block <= (to_step >> level)
    _insert(session, run_id, _select(blocks, deleted))
