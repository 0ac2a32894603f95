"use strict";
// The submit form. One spec object is the truth; the form's fields and the JSON editor both show it, and
// an edit in either updates the other. Fields are generated from JSON schemas: the ComparisonSpec's own
// (training, an entry's label, batch size, groups, ...) and, per component, the catalogue's parameters
// (defaults prefilled, ranges as limits and help, booleans as checkboxes, literals as selects, tuples
// as one input per item). Every field carries its spec path in data-path, so a 422's detail[].loc lands
// at its field; each error is also listed under the editor at the line of its path.

const STARTS = readJSON("page-data");
const {catalog: CATALOG, schema: SCHEMA} = readJSON("form-data");
const DEFS = SCHEMA.$defs || {};
const BLANK = {name: "", seeds: [0], tags: [], training: {steps: 200},
               problem: {function: {name: "rosenbrock", params: {}}, x0: [-1.2, 1.0]},
               optimizers: [{name: "adam", params: {lr: 0.01}}, {name: "sgd", params: {lr: 0.001}}]};
// the catalogue's entries by kind and name: catalog.optimizers -> ENTRIES.optimizer.adam
const SINGULAR = {optimizers: "optimizer", models: "model", datasets: "dataset", functions: "function",
                  losses: "loss", schedules: "schedule"};
const ENTRIES = {optimizer: {}, model: {}, dataset: {}, function: {}, loss: {}, schedule: {}};
for (const [plural, entries] of Object.entries(CATALOG)) {
  ENTRIES[SINGULAR[plural] || plural] = Object.fromEntries(entries.map((entry) => [entry.name, entry]));
}
// the parts of the spec the form lays out itself; every other property is a generated field
const BY_HAND = {spec: ["problem", "training", "optimizers"], entry: ["name", "params", "schedule", "sweep"],
                 problem: ["model", "dataset", "loss", "function", "x0"]};
const editor = document.getElementById("spec-editor");
const builder = document.getElementById("builder");
let spec = {};
let editorValid = true;
let lastEdit = "form";
// "optimizers.0.params.lr" -> the editor line (from 1) where that value starts
let pathLines = new Map();

// --- the spec object -----------------------------------------------------------------------------

function getAt(path, from = spec) {
  return path.reduce((node, key) => (node === undefined || node === null ? undefined : node[key]), from);
}

function setAt(path, value) {
  let node = spec;
  path.slice(0, -1).forEach((key, i) => {
    if (node[key] === undefined || node[key] === null || typeof node[key] !== "object") {
      node[key] = typeof path[i + 1] === "number" ? [] : {};
    }
    node = node[key];
  });
  if (value === undefined) delete node[path.at(-1)];
  else node[path.at(-1)] = value;
}

// --- the JSON editor -----------------------------------------------------------------------------

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

function setEditor() {
  const {text, lines} = pretty(spec);
  editor.value = text;
  pathLines = lines;
  editorValid = true;
  document.getElementById("editor-status").textContent = "";
}

// After a form edit: the editor follows, unless it holds JSON that does not parse (never thrown away).
function formEdited() {
  lastEdit = "form";
  if (editorValid) setEditor();
}

function editorEdited() {
  lastEdit = "editor";
  let parsed;
  try {
    parsed = JSON.parse(editor.value);
  } catch (error) {
    editorValid = false;
    document.getElementById("editor-status").textContent = `not valid JSON: ${error.message}`;
    return;
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    editorValid = false;
    document.getElementById("editor-status").textContent = "the spec must be a JSON object {…}";
    return;
  }
  spec = parsed;
  editorValid = true;
  document.getElementById("editor-status").textContent = "";
  pathLines = pretty(spec).lines;
  renderForm();
}

// --- fields from JSON schemas --------------------------------------------------------------------

function resolve(schema) {
  let found = schema || {};
  while (found.$ref) found = {...DEFS[found.$ref.split("/").at(-1)], ...Object.fromEntries(Object.entries(found).filter(([k]) => k !== "$ref"))};
  return found;
}

const pathId = (path) => path.join("-");
const SCALAR = new Set(["number", "integer", "string", "boolean"]);

// "≥ 0, < 1, one of …" as the catalogue page writes it
function rangeText(prop) {
  const bounds = [["minimum", "≥"], ["exclusiveMinimum", ">"], ["maximum", "≤"], ["exclusiveMaximum", "<"]]
    .filter(([key]) => prop[key] !== undefined).map(([key, symbol]) => `${symbol} ${prop[key]}`);
  return bounds.join(", ");
}

// What a property admits: its arms without null, whether null is one, and its literal values.
function shape(prop) {
  const resolved = resolve(prop);
  const arms = (resolved.anyOf || resolved.oneOf || [resolved]).map(resolve);
  const solid = arms.filter((arm) => arm.type !== "null");
  const literals = solid.flatMap((arm) => arm.enum || (arm.const !== undefined ? [arm.const] : []));
  return {resolved, arms: solid, nullable: solid.length < arms.length, literals};
}

function widgetKind({arms, literals}) {
  if (arms.length === 1) {
    const arm = arms[0];
    if (arm.enum || arm.const !== undefined) return "select";
    if (arm.type === "boolean") return "checkbox";
    if (arm.type === "number" || arm.type === "integer") return "number";
    if (arm.type === "string") return "text";
    if (arm.type === "array" && arm.prefixItems) return "tuple";
    if (arm.type === "array" && SCALAR.has(resolve(arm.items).type)) return "list";
    if (arm.type === "array" && resolve(arm.items).properties) return "objects";
    if (arm.type === "object" && arm.properties) return "object";
    return "json";
  }
  if (arms.every((arm) => SCALAR.has(arm.type) || arm.enum || arm.const !== undefined)) {
    return arms.some((arm) => arm.type === "boolean") && literals.length === 0 ? "json" : "scalar";
  }
  return "json";
}

// Of a union with a structured arm (a list of seeds or an object), the arm that fits the value shown.
function fitting(info, shown) {
  if (info.arms.length < 2 || widgetKind(info) !== "json") return info;
  const type = shown === undefined || shown === null ? null : Array.isArray(shown) ? "array" : typeof shown;
  const arm = info.arms.find((a) => !type || a.type === type || (type === "number" && a.type === "integer"));
  return arm ? {...info, arms: [arm], literals: arm.enum || []} : info;
}

// "0.1" -> 0.1, "true" -> true, anything else as typed: the server names what it does not take.
function parseToken(token) {
  if (/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(token)) return Number(token);
  if (token === "true" || token === "false") return token === "true";
  return token;
}

function showable(value) {
  if (value === undefined || value === null) return "";
  return typeof value === "string" ? value : JSON.stringify(value);
}

function clearFieldError(path) {
  const box = document.getElementById(`error-${pathId(path)}`);
  if (box) {
    box.textContent = "";
    box.closest(".field")?.classList.remove("has-error");
  }
}

// One field: a label, its control(s), help (description and range), and the box its errors go to.
function field(path, name, prop, {required = false, label = name} = {}) {
  const id = `field-${pathId(path)}`;
  const current = getAt(path);
  const declared = shape(prop);
  const fallback = prop.default !== undefined ? prop.default : declared.resolved.default;
  const shown = current !== undefined ? current : fallback;
  const info = fitting(declared, shown);
  const kind = widgetKind(info);
  const commit = (value) => {
    setAt(path, value);
    clearFieldError(path);
    formEdited();
  };
  const arm = info.arms[0] || {};
  const help = [prop.description || info.resolved.description, rangeText(arm)].filter(Boolean).join("; ");
  let control;
  if (kind === "checkbox") {
    control = el("input", {type: "checkbox", id, checked: Boolean(shown), onchange: (e) => commit(e.target.checked)});
    return el("div", {class: "field check", "data-path": path.join(".")},
      el("label", {for: id}, control, " ", label), help ? el("div", {class: "muted small"}, help) : null,
      el("div", {class: "field-error", id: `error-${pathId(path)}`, role: "alert"}));
  }
  if (kind === "select") {
    const options = info.literals;
    const blank = info.nullable || (!required && fallback === undefined);
    control = el("select", {id, onchange: (e) => commit(e.target.value === "" ? undefined : JSON.parse(e.target.value))},
      blank ? el("option", {value: ""}, "—") : null,
      options.map((option) => el("option", {value: JSON.stringify(option), selected: option === shown}, String(option))));
    if (shown !== undefined && shown !== null && !options.includes(shown)) {  // a value it does not list, kept as given
      control.append(el("option", {value: JSON.stringify(shown), selected: true}, showable(shown)));
    }
  } else if (kind === "number") {
    const attrs = {type: "number", id, step: arm.type === "integer" ? "1" : "any", value: showable(shown),
                   min: arm.minimum, max: arm.maximum, placeholder: fallback === undefined || fallback === null ? "—" : showable(fallback)};
    control = el("input", {...attrs, oninput: (e) => commit(e.target.value === "" ? undefined : Number(e.target.value))});
  } else if (kind === "text") {
    // a group's own optimizer is searched in the catalogue like an entry's
    const names = name === "name" && path.at(-2) === "optimizer" ? "optimizer-names" : null;
    control = el("input", {type: "text", id, value: showable(shown), maxlength: arm.maxLength, list: names,
                           oninput: (e) => commit(e.target.value === "" && !required ? undefined : e.target.value)});
  } else if (kind === "scalar") {
    const listId = `${id}-choices`;
    control = el("span", {},
      el("input", {type: "text", id, list: info.literals.length ? listId : null, value: showable(shown),
                   placeholder: info.arms.map((a) => a.type === "string" && a.const !== undefined ? JSON.stringify(a.const) : a.type).join(" or "),
                   oninput: (e) => commit(e.target.value.trim() === "" ? undefined : parseToken(e.target.value.trim()))}),
      info.literals.length ? el("datalist", {id: listId}, info.literals.map((v) => el("option", {value: String(v)}))) : null);
  } else if (kind === "list") {
    const items = resolve(arm.items);
    control = el("input", {type: "text", id, value: Array.isArray(shown) ? shown.join(", ") : showable(shown),
                           placeholder: `${items.type}s, comma-separated`,
                           oninput: (e) => {
                             const tokens = e.target.value.split(/[\s,]+/).filter(Boolean);
                             commit(tokens.length ? tokens.map(items.type === "string" ? (t) => t : parseToken) : undefined);
                           }});
  } else if (kind === "tuple") {
    const items = arm.prefixItems.map(resolve);
    const values = Array.isArray(shown) ? [...shown] : items.map(() => undefined);
    control = el("span", {class: "tuple", id},
      items.map((item, i) => el("input", {type: "number", id: `${id}-${i}`, step: item.type === "integer" ? "1" : "any",
        value: showable(values[i]), title: rangeText(item), "aria-label": `${label}[${i}]`,
        oninput: (e) => {
          values[i] = e.target.value === "" ? undefined : Number(e.target.value);
          commit(values.every((v) => v === undefined) ? undefined : values.map((v, j) => (v === undefined ? (fallback || [])[j] : v)));
        }})));
  } else if (kind === "objects") {
    return objectsField(path, name, arm, help);
  } else if (kind === "object" && arm.properties.name && arm.properties.params) {
    return optimizerRefField(path, label, help);
  } else if (kind === "object") {  // an optional part of the spec (tuning): folded until given
    return el("details", {class: "nested field", "data-path": path.join("."), open: current !== undefined},
      el("summary", {}, label), help ? el("div", {class: "muted small"}, help) : null,
      el("div", {class: "field-error", id: `error-${pathId(path)}`, role: "alert"}),
      schemaFields(path, arm, []));
  } else {
    control = el("textarea", {id, class: "json-field", rows: 2, spellcheck: "false", placeholder: "JSON",
      oninput: (e) => {
        const text = e.target.value.trim();
        try {
          commit(text === "" ? undefined : JSON.parse(text));
        } catch (error) {
          document.getElementById(`error-${pathId(path)}`).textContent = `not valid JSON: ${error.message}`;
        }
      }}, current === undefined ? "" : JSON.stringify(current));
  }
  return el("div", {class: "field", "data-path": path.join(".")},
    el("label", {for: kind === "tuple" ? `${id}-0` : id}, label, required ? el("span", {class: "error"}, " *") : null),
    control, help ? el("div", {class: "muted small"}, help) : null,
    el("div", {class: "field-error", id: `error-${pathId(path)}`, role: "alert"}));
}

// Another optimizer, by name, with its parameters (a parameter group's own): empty for none.
function optimizerRefField(path, label, help) {
  const id = `field-${pathId([...path, "name"])}`;
  const name = getAt([...path, "name"]);
  return el("fieldset", {class: "nested", "data-path": path.join(".")}, el("legend", {}, label),
    help ? el("div", {class: "muted small"}, help) : null,
    el("div", {class: "field-error", id: `error-${pathId(path)}`, role: "alert"}),
    el("div", {class: "field", "data-path": [...path, "name"].join(".")},
      el("label", {for: id}, "name"),
      el("input", {type: "search", id, list: "optimizer-names", autocomplete: "off", value: showable(name),
                   placeholder: "none", onchange: (e) => {
          const picked = e.target.value.trim();
          setAt(path, picked ? {name: picked, params: {}} : undefined);
          structureEdited();
        }}),
      el("div", {class: "field-error", id: `error-${pathId([...path, "name"])}`, role: "alert"})),
    paramFields([...path, "params"], ENTRIES.optimizer[name]));
}

// A list of objects (parameter groups, ...): one fieldset per item, each property a field.
function objectsField(path, name, arm, help) {
  const items = resolve(arm.items);
  const current = getAt(path) || [];
  return el("fieldset", {class: "nested", "data-path": path.join(".")}, el("legend", {}, name),
    help ? el("div", {class: "muted small"}, help) : null,
    el("div", {class: "field-error", id: `error-${pathId(path)}`, role: "alert"}),
    current.map((_, i) => el("div", {class: "item", "data-path": [...path, i].join(".")},
      el("div", {class: "field-error", id: `error-${pathId([...path, i])}`, role: "alert"}),
      schemaFields([...path, i], items, []),
      el("button", {type: "button", class: "small", onclick: () => { current.splice(i, 1); setAt(path, current.length ? current : undefined); structureEdited(); }},
         `remove ${name} ${i}`))),
    el("button", {type: "button", id: `add-${pathId(path)}`, onclick: () => { setAt(path, [...current, {}]); structureEdited(); }},
       `add to ${name}`));
}

// A field for each property of an object schema, but those laid out by hand.
function schemaFields(path, schema, skip) {
  const object = resolve(schema);
  const required = new Set(object.required || []);
  return Object.entries(object.properties || {}).filter(([name]) => !skip.includes(name))
    .map(([name, prop]) => field([...path, name], name, prop, {required: required.has(name)}));
}

// A component's parameters, from its catalogue entry.
function paramFields(path, entry) {
  if (!entry) return [];
  return el("div", {class: "params-grid"},
    (entry.params || []).map((param) => field([...path, param.name], param.name, param, {required: param.required})));
}

// --- the parts laid out by hand ------------------------------------------------------------------

function structureEdited() {
  formEdited();
  renderForm();
}

function nameSelect(path, kind, names, onPick) {
  const current = getAt(path);
  const id = `field-${pathId(path)}`;
  const select = el("select", {id, onchange: (e) => { onPick(e.target.value); structureEdited(); }},
    names.map((name) => el("option", {value: name, selected: name === current}, name)));
  if (current !== undefined && !names.includes(current)) select.append(el("option", {value: current, selected: true}, current));
  return el("div", {class: "field", "data-path": path.join(".")}, el("label", {for: id}, kind), select,
    el("div", {class: "field-error", id: `error-${pathId(path)}`, role: "alert"}));
}

// problem.model, problem.dataset, problem.function: a name and its parameters
function componentFields(kind, path) {
  const names = Object.keys(ENTRIES[kind] || {});
  const entry = ENTRIES[kind][getAt([...path, "name"])];
  return el("fieldset", {class: "nested", "data-path": path.join(".")}, el("legend", {}, kind),
    el("div", {class: "field-error", id: `error-${pathId(path)}`, role: "alert"}),
    nameSelect([...path, "name"], `${kind}`, names, (name) => {
      setAt(path, {name});
      if (kind === "dataset") matchLoss();
      if (kind === "function") setAt(["problem", "x0"], undefined);
    }),
    entry ? el("div", {class: "muted small"}, entry.description) : null,
    paramFields([...path, "params"], entry));
}

function lossesFor(task) {
  return Object.values(ENTRIES.loss || {}).filter((loss) => !task || !loss.task || loss.task === task).map((loss) => loss.name);
}

// a dataset of another task takes another loss
function matchLoss() {
  const task = (ENTRIES.dataset[getAt(["problem", "dataset", "name"])] || {}).task;
  const fitting = lossesFor(task);
  if (!fitting.includes(getAt(["problem", "loss"]))) setAt(["problem", "loss"], fitting[0]);
}

function problemFields() {
  const isFunction = Boolean(getAt(["problem", "function"]));
  const choose = (kind) => {
    if (kind === "function") setAt(["problem"], {function: {name: ENTRIES.function.rosenbrock ? "rosenbrock" : Object.keys(ENTRIES.function)[0]}});
    else {
      setAt(["problem"], {model: {name: ENTRIES.model.mlp ? "mlp" : Object.keys(ENTRIES.model)[0]},
                          dataset: {name: ENTRIES.dataset.iris ? "iris" : Object.keys(ENTRIES.dataset)[0]}});
      matchLoss();
    }
    structureEdited();
  };
  const problem = DEFS.Problem || {properties: {}};
  const radio = (kind, text) => el("label", {class: "inline"},
    el("input", {type: "radio", name: "problem-kind", id: `problem-kind-${kind}`, value: kind,
                 checked: (kind === "function") === isFunction, onchange: () => choose(kind)}), ` ${text}`);
  const parts = isFunction
    ? [componentFields("function", ["problem", "function"]), field(["problem", "x0"], "x0", problem.properties.x0 || {})]
    : [componentFields("model", ["problem", "model"]), componentFields("dataset", ["problem", "dataset"]),
       nameSelect(["problem", "loss"], "loss", lossesFor((ENTRIES.dataset[getAt(["problem", "dataset", "name"])] || {}).task),
                  (name) => setAt(["problem", "loss"], name))];
  const skip = [...BY_HAND.problem, ...(isFunction ? ["validation_fraction", "standardize"] : [])];
  return el("fieldset", {id: "problem-section", "data-path": "problem"}, el("legend", {}, "Problem"),
    el("div", {class: "controls"}, radio("function", "a function"), radio("dataset", "a model trained on a dataset")),
    el("div", {class: "field-error", id: "error-problem", role: "alert"}),
    parts, el("div", {class: "params-grid"}, schemaFields(["problem"], problem, skip)));
}

function scheduleFields(path) {
  const schedules = Object.keys(ENTRIES.schedule || {});
  const current = getAt([...path, "name"]) || "constant";
  const id = `field-${pathId(path)}-name`;
  const select = el("select", {id, onchange: (e) => {
    setAt(path, e.target.value === "constant" ? undefined : {name: e.target.value});
    structureEdited();
  }}, schedules.map((name) => el("option", {value: name, selected: name === current}, name)));
  const entry = ENTRIES.schedule[current];
  return el("div", {class: "nested-plain", "data-path": path.join(".")},
    el("div", {class: "field", "data-path": [...path, "name"].join(".")}, el("label", {for: id}, "schedule"), select,
      entry ? el("div", {class: "muted small"}, entry.description) : null,
      el("div", {class: "field-error", id: `error-${pathId([...path, "name"])}`, role: "alert"})),
    el("div", {class: "field-error", id: `error-${pathId(path)}`, role: "alert"}),
    current === "constant" ? null : paramFields(path, entry));
}

// sweep: {"lr": [1e-3, 1e-2]} or {"lr": {"log_uniform": [1e-5, 1e-1], "n": 8}}
function sweepFields(path, entry) {
  const sweep = getAt(path) || {};
  const names = (entry ? entry.params : []).map((param) => param.name);
  const rebuild = (rows) => { setAt(path, rows.length ? Object.fromEntries(rows) : undefined); };
  const rows = () => Object.entries(getAt(path) || {});
  const axisRow = ([name, axis], i) => {
    const base = [...path, name];
    const mode = Array.isArray(axis) ? "values" : axis && axis.uniform ? "uniform" : "log_uniform";
    const setAxis = (value) => { const all = rows(); all[i] = [name, value]; rebuild(all); };
    const grid = Array.isArray(axis) ? {} : axis || {};
    const bounds = grid[mode] || [];
    // a grid as it is now (the other inputs may have changed it since this row was drawn)
    const now = () => { const g = getAt(base); return g && !Array.isArray(g) ? g : {}; };
    const setBound = (j) => (v) => { const g = now(); const b = [...(g[mode] || [])]; b[j] = v; setAxis({...g, [mode]: b}); };
    const number = (label, value, onValue, suffix) => el("input", {type: "number", step: "any", value: showable(value),
      id: `field-${pathId(base)}-${suffix}`, "aria-label": label, placeholder: label, class: "short",
      oninput: (e) => { onValue(e.target.value === "" ? undefined : Number(e.target.value)); clearFieldError(base); formEdited(); }});
    return el("div", {class: "field sweep-row", "data-path": base.join(".")},
      el("select", {id: `field-${pathId(base)}-param`, "aria-label": "swept parameter", onchange: (e) => {
        const all = rows(); all[i] = [e.target.value, all[i][1]]; rebuild(all); structureEdited();
      }}, names.map((n) => el("option", {value: n, selected: n === name}, n))),
      el("select", {id: `field-${pathId(base)}-mode`, "aria-label": "sweep kind", onchange: (e) => {
        const value = getAt(["optimizers", path[1], "params", name]);
        setAxis(e.target.value === "values" ? (value === undefined ? [] : [value])
                                            : {[e.target.value]: bounds.length ? bounds : [1e-4, 1e-1], n: grid.n || 4});
        structureEdited();
      }}, [["values", "values"], ["log_uniform", "log-uniform grid"], ["uniform", "uniform grid"]]
        .map(([value, text]) => el("option", {value, selected: value === mode}, text))),
      mode === "values"
        ? el("input", {type: "text", id: `field-${pathId(base)}`, value: Array.isArray(axis) ? axis.map(showable).join(", ") : "",
                       placeholder: "values, comma-separated", oninput: (e) => {
            setAxis(e.target.value.split(/[\s,]+/).filter(Boolean).map(parseToken)); clearFieldError(base); formEdited();
          }})
        : el("span", {id: `field-${pathId(base)}`},
            number("from", bounds[0], setBound(0), "lo"),
            number("to", bounds[1], setBound(1), "hi"),
            number("points", grid.n, (v) => setAxis({...now(), n: v}), "n")),
      el("button", {type: "button", class: "small", onclick: () => { rebuild(rows().filter((_, j) => j !== i)); structureEdited(); }}, "remove"),
      el("div", {class: "field-error", id: `error-${pathId(base)}`, role: "alert"}));
  };
  const free = names.filter((name) => !(name in sweep));
  return el("div", {class: "sweep", "data-path": path.join(".")},
    el("div", {class: "muted small"}, "Sweep: one run per setting and seed"),
    el("div", {class: "field-error", id: `error-${pathId(path)}`, role: "alert"}),
    Object.entries(sweep).map(axisRow),
    free.length ? el("button", {type: "button", id: `add-sweep-${path[1]}`, onclick: () => {
      const name = free.includes("lr") ? "lr" : free[0];
      const value = getAt(["optimizers", path[1], "params", name]);
      setAt([...path, name], value === undefined ? [] : [value]);
      structureEdited();
    }}, "add a swept parameter") : null);
}

function optimizerCard(entryValue, i) {
  const path = ["optimizers", i];
  const entry = ENTRIES.optimizer[entryValue && entryValue.name];
  const nameId = `field-${pathId([...path, "name"])}`;
  const entrySchema = DEFS.OptimizerEntry || {properties: {}};
  return el("fieldset", {class: "optimizer", "data-path": path.join(".")},
    el("legend", {}, `optimizer ${i + 1}`),
    el("div", {class: "field-error", id: `error-${pathId(path)}`, role: "alert"}),
    el("div", {class: "field", "data-path": [...path, "name"].join(".")},
      el("label", {for: nameId}, "name"),
      el("input", {type: "search", id: nameId, list: "optimizer-names", value: showable(entryValue && entryValue.name),
                   autocomplete: "off", onchange: (e) => {
          setAt([...path, "name"], e.target.value.trim());
          setAt([...path, "params"], {});
          setAt([...path, "sweep"], undefined);
          structureEdited();
        }}),
      " ", el("button", {type: "button", class: "small", id: `remove-optimizer-${i}`, onclick: () => {
        spec.optimizers.splice(i, 1);
        structureEdited();
      }}, "remove"),
      entry ? el("div", {class: "muted small"}, entry.description, " ",
                 el("a", {href: `/catalog#optimizers-${entry.name}`}, "catalog")) : null,
      entry && entry.supported === false ? el("div", {class: "error small"}, `unsupported: ${entry.unsupported_reason || ""}`) : null,
      el("div", {class: "field-error", id: `error-${pathId([...path, "name"])}`, role: "alert"})),
    paramFields([...path, "params"], entry),
    el("div", {class: "params-grid"}, schemaFields(path, entrySchema, BY_HAND.entry)),
    scheduleFields([...path, "schedule"]),
    sweepFields([...path, "sweep"], entry));
}

function addOptimizer() {
  const search = document.getElementById("optimizer-search");
  const name = search.value.trim();
  const box = document.getElementById("error-optimizer-search");
  if (!ENTRIES.optimizer[name]) {
    box.textContent = name ? `no optimizer '${name}' in the catalogue` : "type a name to search the catalogue";
    return;
  }
  spec.optimizers = [...(Array.isArray(spec.optimizers) ? spec.optimizers : []), {name}];
  structureEdited();
  document.getElementById("optimizer-search").focus();
}

function optimizersFields() {
  const entries = Array.isArray(spec.optimizers) ? spec.optimizers : [];
  const count = Object.keys(ENTRIES.optimizer).length;
  return el("fieldset", {id: "optimizers-section", "data-path": "optimizers"}, el("legend", {}, "Optimizers"),
    el("div", {class: "field-error", id: "error-optimizers", role: "alert"}),
    entries.map(optimizerCard),
    el("div", {class: "field add-optimizer"},
      el("label", {for: "optimizer-search"}, `Add an optimizer (${count} in the catalogue)`),
      el("input", {type: "search", id: "optimizer-search", list: "optimizer-names", autocomplete: "off",
                   placeholder: "search by name", onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); addOptimizer(); } }}),
      " ", el("button", {type: "button", id: "add-optimizer", onclick: addOptimizer}, "Add"),
      el("div", {class: "field-error", id: "error-optimizer-search", role: "alert"})));
}

function renderForm() {
  const focused = document.activeElement && builder.contains(document.activeElement) ? document.activeElement.id : null;
  const training = DEFS.Training || {properties: {}};
  builder.replaceChildren(
    el("fieldset", {id: "general-section"}, el("legend", {}, "Comparison"),
       el("div", {class: "params-grid"}, schemaFields([], SCHEMA, BY_HAND.spec))),
    problemFields(),
    el("fieldset", {id: "training-section", "data-path": "training"}, el("legend", {}, "Training budget"),
       el("div", {class: "field-error", id: "error-training", role: "alert"}),
       el("div", {class: "params-grid"}, schemaFields(["training"], training, []))),
    optimizersFields());
  if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
}

// --- submitting ----------------------------------------------------------------------------------

function load(key) {
  spec = structuredClone(key === "blank" ? BLANK : STARTS[key].spec);
  setEditor();
  renderForm();
  clearErrors();
}

function clearErrors() {
  for (const box of builder.querySelectorAll(".field-error")) box.textContent = "";
  for (const node of builder.querySelectorAll(".has-error")) node.classList.remove("has-error");
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

function showEditorErrors(errors, select) {
  editor.classList.add("invalid");
  const items = errors.map(({path, message, line}) => el("li", {"data-path": path, "data-line": line},
    path ? el("code", {}, path) : null, path ? ": " : "", message,
    line ? el("span", {}, " (", el("a", {href: "#", onclick: (event) => { event.preventDefault(); selectLine(line); }},
                                     `line ${line}`), ")") : null));
  document.getElementById("editor-errors").replaceChildren(...items);
  const first = errors.find((error) => error.line);
  if (select && first) selectLine(first.line);
}

// An error's message at the field of its path, or of the nearest enclosing one, which names the rest.
function showAtField(path, message) {
  for (let n = path.length; n >= 1; n--) {
    const box = document.getElementById(`error-${pathId(path.slice(0, n))}`);
    if (!box || !builder.contains(box)) continue;
    const where = path.length > n ? `${path.slice(n).join(".")}: ` : "";
    box.textContent = [box.textContent, where + message].filter(Boolean).join("; ");
    (box.closest(".field, fieldset, .item, .sweep, .nested-plain") || box).classList.add("has-error");
    return box;
  }
  return null;
}

function showValidation(detail) {
  const listed = [];
  let firstBox = null;
  for (const error of detail) {
    const path = error.loc[0] === "body" ? error.loc.slice(1) : error.loc;
    const box = showAtField(path, error.msg);
    firstBox = firstBox || box;
    listed.push({path: path.join("."), message: error.msg, line: lineOf(path)});
  }
  showEditorErrors(listed, lastEdit === "editor" || !firstBox);
  if (lastEdit !== "editor" && firstBox) {
    const control = firstBox.closest(".field, fieldset, .item, .sweep, .nested-plain")?.querySelector("input, select, textarea");
    if (control) control.focus();
    firstBox.scrollIntoView({block: "center"});
  }
}

function showBanner(message) {
  const banner = document.getElementById("form-error");
  banner.textContent = message;
  banner.hidden = false;
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
  if (!editorValid) {
    try {
      JSON.parse(editor.value);
      showEditorErrors([{path: "", message: "the spec must be a JSON object {…}", line: 1}], true);
    } catch (error) {
      showEditorErrors([{path: "", message: `not valid JSON: ${error.message}`, line: jsonErrorLine(error)}], true);
    }
    return;
  }
  setEditor();  // one canonical layout, so that an error's path has a line
  const button = document.getElementById("submit");
  button.disabled = true;
  try {
    const created = await api("/api/v1/comparisons", {method: "POST", body: spec});
    window.location.assign(`/comparisons/${created.id}`);
  } catch (error) {
    if (error.status === 422 && Array.isArray(error.body && error.body.detail)) showValidation(error.body.detail);
    else showBanner(`Not submitted: ${error.message}`);
    button.disabled = false;
  }
}

const start = document.getElementById("start");
start.addEventListener("change", () => load(start.value));
editor.addEventListener("input", editorEdited);
document.getElementById("new-comparison").addEventListener("submit", submit);
load(start.value);
