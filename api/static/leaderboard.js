"use strict";
// The comparison page's leaderboard: the summary's rows, the paired tests against the baseline with
// their Holm-adjusted p-values, and the ranking at 25/50/75/100 % of the budget (docs/statistics.md).

// A positive loss's interval is the geometric mean's (ci_method "log_t"); otherwise the mean's.
function lossInterval(stats) {
  const center = stats.ci_method === "log_t" ? stats.geometric_mean : stats.mean;
  return stats.ci_low === null ? fmt(center) : `${fmt(center)} [${fmt(stats.ci_low)}, ${fmt(stats.ci_high)}]`;
}

function estimate(interval, digits) {
  return interval.low === null ? fmt(interval.estimate, digits)
    : `${fmt(interval.estimate, digits)} [${fmt(interval.low, digits)}, ${fmt(interval.high, digits)}]`;
}

function withHolm(raw, adjusted) {
  return raw === null ? "—" : `${fmt(raw, 3)} (${fmt(adjusted, 3)})`;
}

function timeToTarget(row) {
  const reach = row.time_to_target;
  if (!reach.reached) return `not reached (0/${reach.of})`;
  const seconds = row.timed_together ? "shared ensemble time" : `${fmt(reach.seconds, 3)} s`;
  return `${fmt(reach.steps)} steps, ${seconds} (${reach.reached}/${reach.of})`;
}

function tableHead(...names) {
  return el("thead", {}, el("tr", {}, names.map(([name, cls, title]) => el("th", {class: cls, title}, name))));
}

function leaderboardTable(summary) {
  const target = summary.target_loss === null ? "" : ` (loss ≤ ${fmt(summary.target_loss)}, ${summary.target_loss_source})`;
  const robust = summary.rows.some((row) => row.robust);
  const shared = "trained as an ensemble: the ensemble's time, shared by its members";
  return el("table", {id: "leaderboard-table"},
    tableHead(["Rank", "num"], ["Label"], ["Finished"],
      ["Final loss [95% CI]", "num", "geometric mean and its interval on the log scale while every loss is positive"],
      ["Median", "num"], ...(robust ? [["IQM [95% CI]", "num", "interquartile mean, bootstrap interval (5+ seeds)"]] : []),
      ["Best", "num"], ["Val loss", "num"], ["Val accuracy [95% CI]", "num"], [`Time to target${target}`, "num"],
      ["Steps/s", "num"]),
    el("tbody", {}, summary.rows.map((row) => el("tr", {"data-label": row.label},
      el("td", {class: "num"}, row.rank === null ? "—" : String(row.rank)),
      el("td", {}, row.label),
      el("td", {}, `${row.n_finished}/${row.n_seeds}`,
         row.n_diverged ? el("span", {class: "error"}, `, ${row.n_diverged} diverged`) : null),
      el("td", {class: "num final-loss"}, lossInterval(row.final_loss)),
      el("td", {class: "num"}, fmt(row.final_loss.median)),
      ...(robust ? [el("td", {class: "num"}, row.robust
        ? `${fmt(row.robust.iqm)} [${fmt(row.robust.iqm_ci_low)}, ${fmt(row.robust.iqm_ci_high)}]` : "—")] : []),
      el("td", {class: "num"}, fmt(row.final_loss.best)),
      el("td", {class: "num"}, fmt(row.val_loss)),
      el("td", {class: "num"}, estimate(row.val_accuracy_ci)),
      el("td", {class: "num time-to-target", title: row.timed_together ? shared : null}, timeToTarget(row)),
      el("td", {class: "num", title: row.timed_together ? shared : null},
         row.timed_together ? `${fmt(row.steps_per_s, 3)} (ensemble)` : fmt(row.steps_per_s, 3))))));
}

function pairedTable(summary) {
  const interval = (pair) => (pair.ci_low === null ? fmt(pair.mean_diff)
    : `${fmt(pair.mean_diff)} [${fmt(pair.ci_low)}, ${fmt(pair.ci_high)}]`);
  const improvement = (pair) => (pair.prob_improvement_ci_low === null ? fmt(pair.prob_improvement, 3)
    : `${fmt(pair.prob_improvement, 3)} [${fmt(pair.prob_improvement_ci_low, 3)}, ${fmt(pair.prob_improvement_ci_high, 3)}]`);
  const holm = `adjusted by Holm's method over the ${summary.paired.length} settings compared with the baseline`;
  return el("table", {id: "paired-table"},
    tableHead(["Label"], ["Pairs", "num"], ["Mean difference [95% CI]", "num"], ["t-test p (Holm)", "num", holm],
      ["Wilcoxon p (Holm)", "num", holm], ["P(lower) [95% CI]", "num", "P(a run of this setting ends below a baseline run), ties count 1/2"]),
    el("tbody", {}, summary.paired.map((pair) => el("tr", {"data-label": pair.label},
      el("td", {}, pair.label), el("td", {class: "num"}, String(pair.n_pairs)),
      el("td", {class: "num"}, interval(pair)),
      el("td", {class: "num"}, withHolm(pair.t_pvalue, pair.t_pvalue_holm)),
      el("td", {class: "num"}, withHolm(pair.wilcoxon_pvalue, pair.wilcoxon_pvalue_holm)),
      el("td", {class: "num"}, improvement(pair))))));
}

// One row per setting, one column per budget: its rank there and mean loss; a rank that differs from
// the previous budget's is marked.
function budgetTable(summary) {
  const byLabel = summary.budgets.map((budget) => new Map(budget.rows.map((row) => [row.label, row])));
  const labels = summary.budgets.at(-1).rows.map((row) => row.label);
  return el("table", {id: "budget-table"},
    tableHead(["Label"], ...summary.budgets.map((b) => [`${Math.round(100 * b.fraction)} %`, "num"])),
    el("tbody", {}, labels.map((label) => el("tr", {"data-label": label}, el("td", {}, label),
      ...byLabel.map((rows, i) => {
        const row = rows.get(label);
        const moved = i > 0 && row.rank !== byLabel[i - 1].get(label).rank;
        return el("td", {class: moved ? "num rank-changed" : "num", title: `step ${row.step}`},
          row.rank === null ? "—" : `${row.rank} (${fmt(row.mean_loss)})`, moved ? " ↕" : null);
      })))));
}

async function drawLeaderboard() {
  const summary = await api(`${PAGE.api}/summary`);
  const box = document.getElementById("leaderboard");
  if (!summary.rows.some((row) => row.n_finished)) {
    box.replaceChildren(el("p", {class: "muted"}, "Waiting for finished runs."));
    return;
  }
  const parts = [leaderboardTable(summary)];
  if (summary.paired.length) {
    parts.push(el("h3", {}, `Paired against ${summary.baseline} (final loss, matched seeds)`), pairedTable(summary));
  }
  parts.push(el("h3", {}, "Ranking at 25, 50, 75 and 100 % of the budget"),
    el("p", {class: "muted small", id: "budget-note"}, summary.ranking_changes
      ? "The ranking changes between budgets (↕): which optimizer wins depends on how long it trains."
      : "The ranking is the same at every budget.",
      " Rank (mean loss): below 100 %, the step losses of the last 1 % of steps before the budget; at 100 %, the final loss."),
    budgetTable(summary));
  box.replaceChildren(...parts);
}
