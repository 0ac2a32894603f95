"use strict";
// The submit form: name, seeds and tags as fields, the rest of the spec as JSON, posted to
// POST /api/v1/comparisons. A 422's errors go next to what they name: a field, or the editor's line
// of a path inside the JSON.

const STARTS = readJSON("page-data");
const FIELDS = ["name", "seeds", "tags"];
const BLANK = {name: "", seeds: [0], tags: [], training: {steps: 200},
               problem: {function: {name: "rosenbrock", params: {}}, x0: [-1.2, 1.0]},
               optimizers: [{name: "adam", params: {lr: 0.01}}, {name: "sgd", params: {lr: 0.001}}]};
const editor = document.getElementById("spec-editor");
// "optimizers.0.params.lr" -> the editor line (from 1) where that value starts
let pathLines = new Map();

// JSON.stringify(value, null, 2), noting the line on which each path starts.
function pretty(value) {
  const out = [];
  const lines = new Map();
  const write = (v, path, indent, prefix, suffix) => {
    lines.set(path.join("."), out.length + 1);
    const entries = Array.isArray(v) ? v.map((item, i) => [i, item]) : v && typeof v === "object" ? Object.entries(v) : null;
    if (!entries || !entries.length) {
      out.push(indent + prefix + JSON.stringify(v) + suffix);
      return;
    }
    out.push(indent + prefix + (Array.isArray(v) ? "[" : "{"));
    entries.forEach(([key, item], i) => write(item, [...path, key], indent + "  ",
                                              Array.isArray(v) ? "" : `${JSON.stringify(key)}: `, i < entries.length - 1 ? "," : ""));
    out.push(indent + (Array.isArray(v) ? "]" : "}") + suffix);
  };
  write(value, [], "", "", "");
  return {text: out.join("\n"), lines};
}

function setEditor(spec) {
  const {text, lines} = pretty(spec);
  editor.value = text;
  pathLines = lines;
}

function fieldInput(name) {
  return document.getElementById(`field-${name}`);
}

function load(key) {
  const spec = structuredClone(key === "blank" ? BLANK : STARTS[key].spec);
  fieldInput("name").value = spec.name || "";
  fieldInput("seeds").value = (spec.seeds || [0]).join(", ");
  fieldInput("tags").value = (spec.tags || []).join(", ");
  for (const name of FIELDS) delete spec[name];
  setEditor(spec);
  clearErrors();
}

function clearErrors() {
  for (const name of FIELDS) {
    document.getElementById(`error-${name}`).textContent = "";
    fieldInput(name).classList.remove("invalid");
  }
  editor.classList.remove("invalid");
  document.getElementById("editor-errors").replaceChildren();
  document.getElementById("form-error").hidden = true;
}

function selectLine(line) {
  const starts = [0];
  for (const text of editor.value.split("\n")) starts.push(starts.at(-1) + text.length + 1);
  editor.focus();
  editor.setSelectionRange(starts[line - 1], starts[line] - 1);
  editor.scrollTop = Math.max(0, (line - 4) * parseFloat(getComputedStyle(editor).lineHeight));
}

// The line of a path, or of its nearest enclosing value (a missing key is reported at its parent).
function lineOf(path) {
  for (let n = path.length; n >= 0; n--) {
    const line = pathLines.get(path.slice(0, n).join("."));
    if (line !== undefined) return line;
  }
  return null;
}

function showEditorErrors(errors) {
  editor.classList.add("invalid");
  const items = errors.map(({path, message, line}) => el("li", {"data-path": path, "data-line": line},
    path ? el("code", {}, path) : null, path ? ": " : "", message,
    line ? el("span", {}, " (", el("a", {href: "#", onclick: (event) => { event.preventDefault(); selectLine(line); }},
                                     `line ${line}`), ")") : null));
  document.getElementById("editor-errors").replaceChildren(...items);
  const first = errors.find((error) => error.line);
  if (first) selectLine(first.line);
}

function showValidation(detail) {
  const inEditor = [];
  for (const error of detail) {
    const path = error.loc[0] === "body" ? error.loc.slice(1) : error.loc;
    if (FIELDS.includes(path[0])) {
      const box = document.getElementById(`error-${path[0]}`);
      const where = path.length > 1 ? `${path.slice(1).join(".")}: ` : "";
      box.textContent = [box.textContent, where + error.msg].filter(Boolean).join("; ");
      fieldInput(path[0]).classList.add("invalid");
    } else {
      inEditor.push({path: path.join("."), message: error.msg, line: lineOf(path)});
    }
  }
  if (inEditor.length) showEditorErrors(inEditor);
}

function showBanner(message) {
  const banner = document.getElementById("form-error");
  banner.textContent = message;
  banner.hidden = false;
}

// "0, 1 2" -> [0, 1, 2]; a token that is no integer goes as typed, for the server to name.
function listField(name, parse = (token) => token) {
  return fieldInput(name).value.split(/[\s,]+/).filter(Boolean).map(parse);
}

function jsonErrorLine(error) {
  const explicit = /line (\d+)/.exec(error.message);
  if (explicit) return Number(explicit[1]);
  const position = /position (\d+)/.exec(error.message);
  return position ? editor.value.slice(0, Number(position[1])).split("\n").length : null;
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  let rest;
  try {
    rest = JSON.parse(editor.value);
  } catch (error) {
    showEditorErrors([{path: "", message: `not valid JSON: ${error.message}`, line: jsonErrorLine(error)}]);
    return;
  }
  if (!rest || typeof rest !== "object" || Array.isArray(rest)) {
    showEditorErrors([{path: "", message: "the spec must be a JSON object {…}", line: 1}]);
    return;
  }
  for (const name of FIELDS) delete rest[name];
  setEditor(rest);  // one canonical layout, so that an error's path has a line
  const seeds = listField("seeds", (token) => (/^-?\d+$/.test(token) ? Number(token) : token));
  const body = {name: fieldInput("name").value, ...rest, tags: listField("tags"), ...(seeds.length ? {seeds} : {})};
  const button = document.getElementById("submit");
  button.disabled = true;
  try {
    const created = await api("/api/v1/comparisons", {method: "POST", body});
    window.location.assign(`/comparisons/${created.id}`);
  } catch (error) {
    if (error.status === 422 && Array.isArray(error.body && error.body.detail)) showValidation(error.body.detail);
    else showBanner(`Not submitted: ${error.message}`);
    button.disabled = false;
  }
}

const start = document.getElementById("start");
start.addEventListener("change", () => load(start.value));
document.getElementById("new-comparison").addEventListener("submit", submit);
load(start.value);
