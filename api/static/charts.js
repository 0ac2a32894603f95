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
  constructor(labels = []) { this.labels = [...new Set(labels)]; }
  of(label) {
    if (!this.labels.includes(label)) this.labels.push(label);
    return PALETTE[this.labels.indexOf(label) % PALETTE.length];
  }
}

// The lowest edge a band may have on a log axis: a decade below the lowest positive mean. A 95% CI
// of few seeds often reaches below 0, which a log axis cannot show: the band then runs to this floor.
function logFloor(groups) {
  const means = groups.flatMap((g) => g.points.map((p) => num(p.mean))).filter((v) => v !== null && v > 0);
  return means.length ? Math.min(...means) / 10 : null;
}

// Per group of /curves: the band as two traces (its lower edge, then its upper edge filled down to
// it) and the mean line over the seeds. ``floor``: the lowest lower edge drawn (for a log axis).
function seedTraces(groups, colors, floor = null, bandName = "95% CI") {
  const traces = [];
  const lower = (value) => (value === null || floor === null ? value : Math.max(value, floor));
  for (const group of groups) {
    const color = colors.of(group.label);
    const x = group.points.map((p) => p.x);
    const common = {x, mode: "lines", legendgroup: group.label, hoverinfo: "skip", showlegend: false};
    traces.push({...common, name: `${plain(group.label)} ${bandName} low`, y: group.points.map((p) => lower(num(p.lo))),
                 line: {width: 0, color}, meta: {kind: "band", label: group.label}});
    traces.push({...common, name: `${plain(group.label)} ${bandName}`, y: group.points.map((p) => num(p.hi)),
                 line: {width: 0, color}, fill: "tonexty", fillcolor: rgba(color, 0.18),
                 meta: {kind: "band", label: group.label}});
    traces.push({x, y: group.points.map((p) => num(p.mean)), mode: "lines", legendgroup: group.label,
                 name: `${plain(group.label)} (${group.run_ids.length} seed${group.run_ids.length === 1 ? "" : "s"})`,
                 line: {width: 2, color}, meta: {kind: "mean", label: group.label},
                 customdata: group.points.map((p) => p.n), hovertemplate: "%{y:.4g} (n=%{customdata})"});
  }
  return traces;
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
