"""Query parameters and response models that more than one route reads: the analysis reads (curves,
summary) and a share link's copies of them (figures), and the history's filters (comparisons, pages)."""

from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from analysis.summary import Phase
from api.schemas import ComparisonStatus
from db import history

Points = Annotated[int, Query(ge=2, le=10_000, description="buckets (at most this many points come back)")]
Bound = Annotated[float | None, Query(allow_inf_nan=False, description="in units of x; default: the run's range")]
#: seeds are aggregated at equal x: steps or wall time
SeedAxis = Literal["step", "time"]
GroupBy = Annotated[
    str,
    Query(
        max_length=100,
        pattern=r"^(setting|optimizer|label|batch_size|params\.[A-Za-z_][A-Za-z0-9_]*)$",
        description="what a curve aggregates: 'setting' (runs that differ only in seed), 'optimizer', 'label', "
        "'batch_size', or 'params.<name>' (an optimizer parameter, e.g. params.lr)",
    ),
]
PhaseQuery = Annotated[
    Phase, Query(description="tuning jobs: 'chosen' shows the settings chosen for the final phase, 'all' every setting")
]
BaselineQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="a label, or an optimizer entry's label; default: the spec's baseline, else the first entry",
    ),
]
ParamQuery = Annotated[str, Query(min_length=1, max_length=100, description="a swept hyperparameter")]

Number = float | Literal["NaN", "Infinity", "-Infinity"] | None


IntervalMethod = Literal["log_t", "t_clipped", "t"]


class LossStats(BaseModel):
    """Over the runs with a finite final loss: the mean, a 95% interval (null below two runs), the
    median, the best (lowest) and the worst. While every loss is positive the interval is the
    geometric mean's, on the log scale (``ci_method`` "log_t"), so it never goes below 0; else the
    mean's t-interval ("t_clipped": clipped at 0, there being a loss of exactly 0; "t": a loss < 0)."""

    mean: Number
    ci_low: Number
    ci_high: Number
    median: Number
    best: Number
    worst: Number
    geometric_mean: Number
    ci_method: IntervalMethod | None


class Interval(BaseModel):
    """An estimate over the runs and its 95% interval, made by ``method`` (docs/statistics.md)."""

    estimate: Number
    low: Number
    high: Number
    method: IntervalMethod | None


class Robust(BaseModel):
    """From 5 runs on: median and interquartile mean with stratified bootstrap 95% intervals (rliable)."""

    n: int
    median: float
    median_ci_low: float
    median_ci_high: float
    iqm: float
    iqm_ci_low: float
    iqm_ci_high: float


class WallTime(BaseModel):
    total: Number
    mean: Number


class TimeToTarget(BaseModel):
    """The first step whose loss is ≤ target_loss, and its time_s: means over the ``reached`` runs,
    of the ``of`` finished ones."""

    steps: Number
    seconds: Number
    seconds_ci: Interval
    reached: int
    of: int


class LeaderboardRow(BaseModel):
    label: str
    optimizer: str
    params: dict[str, Any]
    n_seeds: int
    n_finished: int
    n_diverged: int
    final_loss: LossStats
    best_so_far: Number
    val_loss: Number
    val_loss_ci: Interval
    val_accuracy: Number
    val_accuracy_ci: Interval
    steps_per_s: Number
    wall_time_s: WallTime
    time_to_target: TimeToTarget
    auc_log_loss: Number
    #: trained as members of a vectorized ensemble: the times are the ensemble's, shared by its members
    timed_together: bool
    robust: Robust | None
    rank: int | None


class PairedComparison(BaseModel):
    """``label`` minus ``baseline`` in final loss, matched on seed."""

    label: str
    baseline: str
    n_pairs: int
    mean_diff: Number
    ci_low: Number
    ci_high: Number
    t_pvalue: Number
    wilcoxon_pvalue: Number
    #: Holm-adjusted over every setting compared with the baseline
    t_pvalue_holm: Number
    wilcoxon_pvalue_holm: Number
    #: P(label's final loss < baseline's), ties 1/2, over the matched seeds (rliable's definition)
    prob_improvement: Number
    prob_improvement_ci_low: Number
    prob_improvement_ci_high: Number


class BudgetRow(BaseModel):
    """A setting ranked on its mean loss at ``step`` (the step loss there, or the final loss at 1)."""

    label: str
    step: int | None
    mean_loss: Number
    n_finished: int
    n_diverged: int
    rank: int | None


class BudgetRanking(BaseModel):
    fraction: float
    #: some setting's rank differs from the previous budget's
    changed: bool
    rows: list[BudgetRow]


class SummaryOut(BaseModel):
    comparison_id: str
    status: ComparisonStatus
    phase: Phase
    target_loss: Number
    target_loss_source: Literal["spec", "default"]
    baseline: str
    metric: Literal["final_loss"]
    rows: list[LeaderboardRow]
    paired: list[PairedComparison]
    #: adaptive seeding's decisions, as GET /comparisons/{id} has them; null for a list of seeds
    adaptive: dict[str, Any] | None = None
    budgets: list[BudgetRanking]
    ranking_changes: bool


class SensitivityPoint(BaseModel):
    value: Any
    #: runs with a finite final loss, which the statistics cover
    n: int
    n_diverged: int
    final_loss: LossStats


class SensitivitySeries(BaseModel):
    label: str
    entry_index: int
    #: the entry's other swept values, held fixed along this series
    fixed: dict[str, Any]
    points: list[SensitivityPoint]


class SensitivityOut(BaseModel):
    comparison_id: str
    status: ComparisonStatus
    param: str
    swept: list[str]
    metric: Literal["final_loss"]
    series: list[SensitivitySeries]


Name = Annotated[str | None, Field(min_length=1, max_length=100)]


class HistoryQuery(BaseModel):
    """The history's filters; an empty value (an unset form field) is no filter."""

    model_config = ConfigDict(extra="ignore")

    status: ComparisonStatus | None = None
    optimizer: Name = Field(None, description="a registered optimizer name of any entry")
    model: Name = None
    dataset: Name = None
    function: Name = None
    tag: Name = None
    q: str | None = Field(None, max_length=200, description="part of the name, any case")

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, values: Any) -> Any:
        return {k: v for k, v in values.items() if v != ""} if isinstance(values, dict) else values

    def filter(self) -> history.HistoryFilter:
        return history.HistoryFilter(**self.model_dump())
