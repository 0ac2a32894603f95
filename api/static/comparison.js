"use strict";
// The comparison page (and its read-only share view): figures drawn from the JSON API under
// PAGE.api; while the comparison is queued or running it is polled every POLL_MS and updated in place.

const PAGE = readJSON("page-data");
const SPEC = PAGE.comparison.spec;
const UNFINISHED = new Set(["queued", "running"]);
const POLL_MS = 2000;
const CURVE_POINTS = 500;
// beyond this many groups the loss chart draws lines only (no bands, one trace per colour)
const MANY_GROUPS = 30;
const BAND_NAME = {ci: "95% CI", minmax: "min–max"};
const state = {comparison: PAGE.comparison, x: "step", logY: null, positive: null, shown: new Set(), groupBy: "setting", band: "ci",
               smoothing: 0, colors: new Colors(PAGE.comparison.runs.map((run) => run.label))};

// Points per curve: fewer as runs grow, so the server's buckets (runs × points) and the page's stay bounded.
function curvePoints() {
  return Math.max(50, Math.min(CURVE_POINTS, Math.round(50_000 / Math.max(1, state.comparison.runs.length))));
}

// --- header and runs ---------------------------------------------------------------------------

function renderProgress(comparison) {
  const status = document.getElementById("status");
  status.textContent = comparison.status;
  status.className = `status status-${comparison.status}`;
  const p = comparison.progress;
  document.getElementById("progress-bar").style.width = `${p.steps_total ? (100 * p.steps_done) / p.steps_total : 0}%`;
  document.getElementById("progress-text").textContent =
    `${p.runs_done}/${p.runs_total} runs · ${p.steps_done.toLocaleString("en")}/${p.steps_total.toLocaleString("en")} steps`;
  const cancel = document.getElementById("cancel");
  if (cancel) cancel.hidden = !UNFINISHED.has(comparison.status);
}

function renderRuns(comparison) {
  const rows = comparison.runs.map((run) => el("tr", {"data-run": run.id},
    el("td", {}, el("input", {type: "checkbox", "aria-label": `show ${run.label} seed ${run.seed}`,
                              checked: state.shown.has(run.id), onchange: (event) => toggleRun(run.id, event.target.checked)})),
    el("td", {}, run.label,
       run.reused_from_id ? el("span", {class: "muted small", title: "reused an identical run"}, " (reused)") : null),
    el("td", {class: "num"}, String(run.seed)),
    el("td", {}, statusBadge(run.status), run.error ? el("div", {class: "error small"}, run.error) : null),
    el("td", {}, progressBar(run.steps_done, run.steps_total), ` ${run.steps_done}/${run.steps_total}`),
    el("td", {class: "num"}, fmt(run.final_loss)),
    el("td", {class: "num"}, fmt(run.best_loss)),
    el("td", {class: "num"}, fmt(run.wall_time_s, 3))));
  document.querySelector("#runs tbody").replaceChildren(...rows);
}

// --- figures -----------------------------------------------------------------------------------

function runName(runId) {
  const run = state.comparison.runs.find((r) => r.id === runId);
  return run ? `${run.label} seed ${run.seed}` : runId;
}

// While every value is positive (a loss) the server aggregates the logs (scale=log), on either axis: the
// line is the geometric mean and the band exp(mean ∓ t·s) of the logs, never below zero. With a value
// <= 0 the linear mean and band, unless log y is asked for (the values <= 0 are then left out, counted).
// Log y is the default when every value is positive.
function lossScale() {
  return state.positive === false && !state.logY ? "linear" : "log";
}

async function drawLoss() {
  const scale = lossScale();
  const query = new URLSearchParams({x: state.x, band: state.band, points: curvePoints(), scale, group_by: state.groupBy});
  const curves = await api(`${PAGE.api}/curves?${query}`);
  const runs = [];
  for (const runId of state.shown) {
    const curve = await api(`${PAGE.run_curve.replace("{run_id}", runId)}?x=${state.x}&points=${curvePoints()}`);
    const run = state.comparison.runs.find((r) => r.id === runId);
    runs.push(runTrace(curve, runName(runId), state.colors.of(run.label)));
  }
  state.loss = {groups: curves.groups, runs, scale};
  await renderLoss();
}

function positive(groups, runs) {
  return groups.every((g) => g.points.every((p) => !p.nonpositive && (num(p.mean) === null || p.mean > 0)))
    && allPositive(runs);
}

// A run drawn alone, smoothed like the means: the raw line faint behind.
function smoothedRun(trace) {
  if (!(state.smoothing > 0)) return [trace];
  return [{...trace, opacity: 0.3, showlegend: false, meta: {...trace.meta, kind: "raw"}},
          {...trace, y: ema(trace.y, state.smoothing, state.logY)}];
}

function lossNote(groups, scale) {
  const over = state.groupBy === "setting" ? "its seeds" : "every run of the group";
  const line = `${scale === "log" ? "geometric mean" : "mean"} over ${over}`;
  if (groups.length > MANY_GROUPS) return `${groups.length} groups: ${line}, lines only; group by optimizer to see bands`;
  const band = state.band === "ci" ? `95% CI of the ${scale === "log" ? "geometric mean (on the logs)" : "mean"}` : "min–max";
  const left = groups.reduce((sum, g) => sum + g.points.reduce((n, p) => n + (p.nonpositive || 0), 0), 0);
  const out = left ? `; ${left} values ≤ 0 left out of the log scale` : "";
  return `${line}; band: ${band}${out}; tick runs below to draw them alone`;
}

async function renderLoss() {
  const {groups, runs, scale} = state.loss;
  if (state.positive === null && scale === "log" && groups.some((g) => g.points.length)) {
    state.positive = positive(groups, runs);
    if (state.logY === null) document.getElementById("log-y").checked = state.logY = state.positive;
  }
  if (scale !== lossScale()) return drawLoss();
  const options = {smoothing: state.smoothing, logY: Boolean(state.logY), bandName: BAND_NAME[state.band]};
  const curves = groups.length > MANY_GROUPS
    ? manyLines(groups, (g) => g.optimizer || "all", state.colors, options)
    : seedTraces(groups, state.colors, options);
  document.getElementById("loss-note").textContent = lossNote(groups, scale);
  await draw("loss-chart", [...curves, ...runs.flatMap(smoothedRun)], baseLayout(AXIS_TITLE[state.x], "loss", {
    yaxis: {title: {text: "loss"}, type: state.logY ? "log" : "linear"}}));
}

// What the loss chart may group by: each setting's seeds, the optimizer, an entry (all its sweep
// points), the batch size, or any parameter of the runs' optimizers.
function groupingOptions() {
  const options = [["setting", "optimizer setting (its seeds)"], ["optimizer", "optimizer"]];
  if (sweptParams().length) options.push(["label", "entry (all its sweep points)"]);
  options.push(["batch_size", "batch size"]);
  const keys = new Set(state.comparison.runs.flatMap((run) => Object.keys(run.optimizer.params)));
  return [...options, ...[...keys].sort().map((key) => [`params.${key}`, key])];
}

async function drawEvaluations() {
  if (!SPEC.training.eval_every) return;
  const metric = document.getElementById("eval-metric").value;
  const curves = await api(`${PAGE.api}/curves?metric=${metric}&x=step&band=ci&points=${CURVE_POINTS}`);
  if (!curves.groups.some((g) => g.points.length)) {
    showProblem("val-chart", metric.startsWith("val") && !SPEC.problem.validation_fraction
      ? "No validation set: the spec's validation_fraction is 0." : "No evaluation recorded yet.");
    return;
  }
  await draw("val-chart", seedTraces(curves.groups, state.colors), baseLayout("step", metric.replace("_", " ")));
}

function sweptParams() {
  return [...new Set(state.comparison.runs.flatMap((run) => Object.keys(run.sweep_values || {})))].sort();
}

async function drawSensitivity() {
  const params = sweptParams();
  if (!params.length) return;
  const section = document.getElementById("sensitivity-section");
  const select = document.getElementById("sensitivity-param");
  if (section.hidden) {
    section.hidden = false;
    select.replaceChildren(...params.map((p) => el("option", {value: p}, p)));
    if (params.includes("lr")) select.value = "lr";
  }
  const found = await api(`${PAGE.api}/sensitivity?param=${encodeURIComponent(select.value)}`);
  const traces = found.series.map((series) => {
    const points = series.points.filter((p) => typeof p.value === "number");
    // the interval's centre: the geometric mean where the interval is on the log scale, else the mean
    const mean = points.map((p) => num(p.final_loss.ci_method === "log_t" ? p.final_loss.geometric_mean : p.final_loss.mean));
    const fixed = Object.entries(series.fixed).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(", ");
    // error bars: the CI's distance from the centre, where there is a CI
    const above = points.map((p, i) => (num(p.final_loss.ci_high) === null ? null : p.final_loss.ci_high - mean[i]));
    const below = points.map((p, i) => (num(p.final_loss.ci_low) === null ? null : mean[i] - p.final_loss.ci_low));
    return {x: points.map((p) => p.value), y: mean, mode: "lines+markers",
            name: plain(fixed ? `${series.label} (${fixed})` : series.label),
            line: {color: state.colors.of(series.label)}, meta: {kind: "series", label: series.label},
            error_y: {type: "data", symmetric: false, array: above, arrayminus: below}};
  });
  const values = traces.flatMap((t) => t.x);
  const logX = values.length && values.every((v) => v > 0) && Math.max(...values) / Math.min(...values) >= 10;
  await draw("sensitivity-chart", traces, baseLayout(found.param, "final loss", {
    hovermode: "closest", xaxis: {title: {text: found.param}, type: logX ? "log" : "linear"}}));
}

// Contours over many orders of magnitude (a Rosenbrock valley) read better on a log scale.
function contourValues(z) {
  const finite = z.flat().filter((v) => v !== null);
  const low = Math.min(...finite), high = Math.max(...finite);
  if (!(high - low > 100)) return {z, title: "f"};
  return {z: z.map((row) => row.map((v) => (v === null ? null : Math.log10(1 + v - low)))), title: "log10(1 + f − min f)"};
}

async function drawTrajectory() {
  if (document.getElementById("trajectory-section").hidden) return;
  const surface = await api(`${PAGE.api}/surface`);
  const traces = [];
  const marks = [];
  const pathName = (path) => plain(`${path.label} seed ${path.seed}`);
  if (surface.dim === 2) {
    const {z, title} = contourValues(surface.grid.z.map((row) => row.map(num)));
    traces.push({type: "contour", x: surface.grid.x, y: surface.grid.y, z, name: "f", ncontours: 30,
                 colorscale: "Viridis", reversescale: true, opacity: 0.75, contours: {coloring: "heatmap"},
                 colorbar: {title: {text: title}}, hoverinfo: "skip", meta: {kind: "surface"}});
    for (const path of surface.paths) {
      traces.push({type: "scatter", mode: "lines+markers", name: pathName(path), x: path.x.map((p) => num(p[0])),
                   y: path.x.map((p) => num(p[1])), line: {color: state.colors.of(path.label), width: 2},
                   marker: {size: 3}, meta: {kind: "path", run_id: path.run_id}});
    }
    marks.push(...surface.minimizers.map(([x, y]) => ({x, y, text: "min", showarrow: true, arrowhead: 0, ax: 18, ay: -18})),
               {x: surface.x0[0], y: surface.x0[1], text: "start", showarrow: true, arrowhead: 0, ax: -18, ay: -18});
  } else {
    traces.push({type: "scatter", mode: "lines", name: "f(x)", x: surface.grid.x, y: surface.grid.z.map(num),
                 line: {color: "#8c959f", width: 2}, meta: {kind: "surface"}});
    for (const path of surface.paths) {
      traces.push({type: "scatter", mode: "lines+markers", name: pathName(path), x: path.x.map((p) => num(p[0])),
                   y: path.loss.map(num), line: {color: state.colors.of(path.label), width: 1},
                   marker: {size: 5}, meta: {kind: "path", run_id: path.run_id}});
    }
    marks.push(...surface.minimizers.map(([x]) => ({x, y: 0, yref: "paper", text: "min", showarrow: false})));
  }
  await draw("trajectory-chart", traces, baseLayout("x₁", surface.dim === 2 ? "x₂" : "f(x)", {
    hovermode: "closest", annotations: marks,
    xaxis: {title: {text: surface.dim === 2 ? "x₁" : "x"}, range: [surface.box.lo[0], surface.box.hi[0]]},
    ...(surface.dim === 2 ? {yaxis: {title: {text: "x₂"}, range: [surface.box.lo[1], surface.box.hi[1]]}} : {})}));
}

async function drawStepTimes() {
  const histogram = await api(`${PAGE.api}/step-times`);
  if (!histogram.edges.length) {
    showProblem("step-time-chart", "No step recorded yet.");
    return;
  }
  const traces = histogram.groups.map((group) => ({
    x: histogram.edges, y: [...group.counts, group.counts.at(-1)], mode: "lines", name: plain(group.label),
    line: {shape: "hv", color: state.colors.of(group.label)}, meta: {kind: "histogram", label: group.label}}));
  await draw("step-time-chart", traces, baseLayout("step time (ms)", "steps", {
    hovermode: "closest", xaxis: {title: {text: "step time (ms)"}, type: "log"}}));
}

// --- updates -----------------------------------------------------------------------------------

// Each figure draws on its own: one that fails says so in its place and leaves the others drawn.
async function drawEach(...figures) {
  await Promise.all(figures.map(([id, drawing]) => drawing()
    .catch((error) => showProblem(id, `Could not draw this: ${error.message}`))));
}

const ALL = [["loss-chart", drawLoss], ["leaderboard", drawLeaderboard], ["val-chart", drawEvaluations],
             ["sensitivity-chart", drawSensitivity], ["trajectory-chart", drawTrajectory], ["step-time-chart", drawStepTimes]];
const LIVE = ALL.filter(([id]) => ["loss-chart", "leaderboard", "val-chart"].includes(id));

// One pending poll at most, however often something asks for one.
function schedulePoll(delay = POLL_MS) {
  clearTimeout(state.timer);
  state.timer = setTimeout(poll, delay);
}

async function poll() {
  let comparison;
  try {
    comparison = await api(PAGE.api);
  } catch (error) {
    schedulePoll(POLL_MS * 2);  // the server may be restarting: keep the page and try again
    return;
  }
  state.comparison = comparison;
  renderProgress(comparison);
  renderRuns(comparison);
  if (UNFINISHED.has(comparison.status)) {
    await drawEach(...LIVE);
    schedulePoll();
  } else {
    await drawEach(...ALL);
  }
}

async function toggleRun(runId, shown) {
  if (shown) state.shown.add(runId); else state.shown.delete(runId);
  await drawEach(ALL[0]);
}

function wireControls() {
  for (const radio of document.querySelectorAll('input[name="x-axis"]')) {
    radio.addEventListener("change", () => { state.x = radio.value; drawEach(ALL[0]); });
  }
  document.getElementById("log-y").addEventListener("change", (event) => {
    state.logY = event.target.checked;
    drawEach(state.loss ? ["loss-chart", renderLoss] : ALL[0]);
  });
  const groupBy = document.getElementById("group-by");
  groupBy.replaceChildren(...groupingOptions().map(([value, name]) => el("option", {value}, name)));
  groupBy.addEventListener("change", () => { state.groupBy = groupBy.value; drawEach(ALL[0]); });
  document.getElementById("band").addEventListener("change", (event) => {
    state.band = event.target.value;
    drawEach(ALL[0]);
  });
  const smoothing = document.getElementById("smoothing");
  smoothing.addEventListener("input", () => {
    state.smoothing = Number(smoothing.value);
    document.getElementById("smoothing-value").textContent = smoothing.value;
    if (state.loss) drawEach(["loss-chart", renderLoss]);
  });
  document.getElementById("eval-metric").addEventListener("change", () => drawEach(ALL[2]));
  document.getElementById("sensitivity-param").addEventListener("change", () => drawEach(ALL[3]));
  const cancel = document.getElementById("cancel");
  if (cancel) {
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      await api(`${PAGE.api}/cancel`, {method: "POST"}).catch((error) => alert(error.message));
      cancel.disabled = false;
      schedulePoll(0);
    });
  }
  const compare = document.getElementById("compare-selected");
  if (compare) {
    compare.addEventListener("click", () => {
      const ids = state.shown.size ? [...state.shown] : state.comparison.runs.map((run) => run.id);
      window.location.assign(`/compare?runs=${ids.join(",")}`);
    });
  }
}

renderProgress(state.comparison);
renderRuns(state.comparison);
wireControls();
drawEach(...ALL).then(() => {
  if (UNFINISHED.has(state.comparison.status)) schedulePoll();
});
