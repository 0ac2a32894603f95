"use strict";
// The compare page: each run's own loss curve (/api/v1/runs/{id}/curve), one trace per run.

const RUNS = readJSON("page-data");
const colors = new Colors();
const state = {x: "step"};

async function drawRuns() {
  const curves = await Promise.all(RUNS.map((run) => api(`/api/v1/runs/${run.id}/curve?x=${state.x}&points=500`)));
  const traces = curves.map((curve, i) => {
    const run = RUNS[i];
    const trace = runTrace(curve, `${run.comparison_name} · ${run.label} seed ${run.seed}`, colors.of(run.id));
    return {...trace, line: {width: 2, color: trace.line.color}};
  });
  const logY = document.getElementById("log-y").checked;
  await draw("compare-chart", traces, baseLayout(AXIS_TITLE[state.x], "loss", {
    yaxis: {title: {text: "loss"}, type: logY ? "log" : "linear"}}));
}

for (const radio of document.querySelectorAll('input[name="x-axis"]')) {
  radio.addEventListener("change", () => { state.x = radio.value; drawRuns(); });
}
document.getElementById("log-y").addEventListener("change", (event) => {
  Plotly.relayout("compare-chart", {"yaxis.type": event.target.checked ? "log" : "linear"});
});
drawRuns().catch((error) => showProblem("compare-chart", `Could not draw the runs: ${error.message}`));
