"use strict";
// The catalogue's filters: rows are hidden in place (no request), and the filters live in the URL's
// query, so a filtered catalogue can be linked to (/catalog?q=adam&capability=elementwise).

const FILTERS = ["q", "kind", "family", "source", "capability"];
const control = (name) => document.getElementById(`filter-${name}`);
const rows = [...document.querySelectorAll("tr.entry")];
const sections = [...document.querySelectorAll("section[data-kind]")];

function matches(row, wanted) {
  const data = row.dataset;
  return (!wanted.q || wanted.q.every((word) => data.search.includes(word)))
    && (!wanted.kind || data.kind === wanted.kind)
    && (!wanted.family || data.family === wanted.family)
    && (!wanted.source || data.source === wanted.source)
    && (!wanted.capability || data.capabilities.split(" ").includes(wanted.capability));
}

function apply() {
  const wanted = {};
  for (const name of FILTERS) wanted[name] = control(name).value.trim();
  wanted.q = wanted.q ? wanted.q.toLowerCase().split(/\s+/) : null;
  let shown = 0;
  for (const row of rows) {
    row.hidden = !matches(row, wanted);
    if (!row.hidden) shown++;
  }
  // a short list shows its parameters open
  if (shown <= 3) for (const row of rows) if (!row.hidden) row.querySelector("details")?.setAttribute("open", "");
  for (const section of sections) section.hidden = !section.querySelector("tr.entry:not([hidden])");
  document.getElementById("catalog-count").textContent = `${shown} of ${rows.length} shown`;
  document.getElementById("catalog-empty").hidden = shown > 0;
  const query = new URLSearchParams();
  for (const name of FILTERS) if (control(name).value.trim()) query.set(name, control(name).value.trim());
  const search = query.toString();
  history.replaceState(null, "", search ? `?${search}${location.hash}` : location.pathname + location.hash);
}

const given = new URLSearchParams(location.search);
for (const name of FILTERS) {
  if (given.has(name)) control(name).value = given.get(name);
  control(name).addEventListener(name === "q" ? "input" : "change", apply);
}
apply();
// a link to one entry (/catalog#optimizers-adam) opens its parameters
if (location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.querySelector("details")?.setAttribute("open", "");
