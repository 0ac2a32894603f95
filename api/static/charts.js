"use strict";
// Shared by the dashboards: the JSON API (its NaN and infinities are strings), safe DOM building,
// and the Plotly traces of curves aggregated over seeds.

const PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#1b7c83", "#bf3989", "#57606a",
                 "#953800", "#0550ae"];

function readJSON(id) {
  return JSON.parse(document.getElementById(id).textContent);
}

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]').content;
}

class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.detail;
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// Unsafe methods carry the session's CSRF token; a Bearer key is never used from the browser.
async function api(url, {method = "GET", body} = {}) {
  const headers = {"Accept": "application/json"};
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {method, headers, credentials: "same-origin",
                                     body: body === undefined ? undefined : JSON.stringify(body)});
  const parsed = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, parsed);
  return parsed;
}

// A chart skips what it cannot draw: null for "NaN", "Infinity", "-Infinity" and missing values.
function num(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  return Math.abs(value) >= 1e-3 && Math.abs(value) < 1e5 ? value.toPrecision(digits) : value.toExponential(digits - 1);
}

// An element with attributes and children; strings become text nodes, never HTML.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  node.append(...children.flat().filter((child) => child !== null && child !== undefined));
  return node;
}

function statusBadge(status) {
  return el("span", {class: `status status-${status}`}, status);
}

function progressBar(done, total) {
  const bar = el("span", {class: "bar", title: `${done} of ${total} steps`}, el("span"));
  bar.firstChild.style.width = `${total ? (100 * done) / total : 0}%`;
  return bar;
}

// Plotly reads a little HTML in names; a user's label is shown as typed.
function plain(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function rgba(hex, alpha) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `rgba(${r}, ${g}, ${b}, ${alpha})`;
}

// Colours by label, in first-seen order, so one optimizer has one colour in every figure of a page.
class Colors {
  constructor(labels = []) {
    this.index = new Map();
    for (const label of labels) this.of(label);
  }
  of(label) {
    if (!this.index.has(label)) this.index.set(label, this.index.size);
    return PALETTE[this.index.get(label) % PALETTE.length];
  }
}

// TensorBoard's debiased exponential moving average: after k points the weights sum to 1 - weight^k,
// and dividing by that keeps the first points from being pulled towards 0. On a log axis it averages
// log10(y), so a smoothed positive curve stays positive. A gap (null) stays a gap and is skipped.
function ema(values, weight, logY = false) {
  if (!(weight > 0)) return values;
  let last = 0, total = 0;
  return values.map((value) => {
    if (value === null || (logY && !(value > 0))) return null;
    last = last * weight + (1 - weight) * (logY ? Math.log10(value) : value);
    total = total * weight + (1 - weight);
    return logY ? 10 ** (last / total) : last / total;
  });
}

// Per group of /curves: the band as two traces (its lower edge, then its upper edge filled down to
// it) and the mean line over the group's runs. With smoothing (0 to 1, the EMA's weight), the line
// drawn is the smoothed mean and the raw mean stays faint behind it; the band is the data's, unsmoothed.
function seedTraces(groups, colors, {bandName = "95% CI", smoothing = 0, logY = false} = {}) {
  const traces = [];
  for (const group of groups) {
    const color = colors.of(group.label);
    const x = group.points.map((p) => p.x);
    const mean = group.points.map((p) => num(p.mean));
    const common = {x, mode: "lines", legendgroup: group.label, hoverinfo: "skip", showlegend: false};
    traces.push({...common, name: `${plain(group.label)} ${bandName} low`, y: group.points.map((p) => num(p.lo)),
                 line: {width: 0, color}, meta: {kind: "band", label: group.label}});
    traces.push({...common, name: `${plain(group.label)} ${bandName}`, y: group.points.map((p) => num(p.hi)),
                 line: {width: 0, color}, fill: "tonexty", fillcolor: rgba(color, 0.18),
                 meta: {kind: "band", label: group.label}});
    if (smoothing > 0) {
      traces.push({...common, name: `${plain(group.label)} unsmoothed`, y: mean, line: {width: 1, color},
                   opacity: 0.3, meta: {kind: "raw", label: group.label}});
    }
    const runs = group.run_ids.length;
    traces.push({x, y: ema(mean, smoothing, logY), mode: "lines", legendgroup: group.label,
                 name: `${plain(group.label)} (${runs} ${group.settings ? "run" : "seed"}${runs === 1 ? "" : "s"})`,
                 line: {width: 2, color}, meta: {kind: "mean", label: group.label},
                 customdata: group.points.map((p) => p.n), hovertemplate: "%{y:.4g} (n=%{customdata})"});
  }
  return traces;
}

// Too many groups for a band and a legend entry each: every group's line, unbanded, joined into one
// trace per colour (a gap between groups), so the figure costs a few traces whatever the number of runs.
function manyLines(groups, colorKey, colors, {smoothing = 0, logY = false} = {}) {
  const joined = new Map();
  for (const group of groups) {
    const key = colorKey(group);
    if (!joined.has(key)) joined.set(key, {x: [], y: [], groups: 0});
    const line = joined.get(key);
    line.x.push(...group.points.map((p) => p.x), null);
    line.y.push(...ema(group.points.map((p) => num(p.mean)), smoothing, logY), null);
    line.groups += 1;
  }
  return [...joined].map(([key, line]) => ({
    x: line.x, y: line.y, mode: "lines", name: `${plain(key)} (${line.groups} lines)`, hoverinfo: "skip",
    line: {width: 1, color: colors.of(key)}, opacity: 0.6, meta: {kind: "lines", label: key, groups: line.groups}}));
}

// A run's own curve from /runs/{id}/curve: each bucket's last value at its last x.
function runTrace(curve, name, color) {
  return {x: curve.buckets.map((b) => b.x_end), y: curve.buckets.map((b) => num(b.last)), mode: "lines",
          name: plain(name), line: {width: 1, color, dash: "dot"}, meta: {kind: "run", run_id: curve.run_id}};
}

function allPositive(traces) {
  return traces.every((trace) => trace.y.every((y) => y === null || y > 0));
}

function baseLayout(xTitle, yTitle, extra = {}) {
  return {margin: {l: 60, r: 20, t: 10, b: 45}, xaxis: {title: {text: xTitle}}, yaxis: {title: {text: yTitle}},
          legend: {orientation: "h", y: -0.2}, hovermode: "x unified", ...extra};
}

// data-drawn counts the draws, so a test (or a person) can tell a chart was redrawn in place.
async function draw(id, traces, layout) {
  const node = document.getElementById(id);
  await Plotly.react(node, traces, layout, {responsive: true, displaylogo: false});
  node.dataset.drawn = String(Number(node.dataset.drawn || 0) + 1);
}

function showProblem(id, message) {
  const node = document.getElementById(id);
  if (window.Plotly) Plotly.purge(node);
  node.replaceChildren(el("p", {class: "muted"}, message));
  node.dataset.drawn = String(Number(node.dataset.drawn || 0) + 1);
}

const AXIS_TITLE = {step: "step", time: "wall time (s)"};
