// The lineside status page: one EventSource on api/events pushes the agent's state every
// second; this script draws it (tables, OEE bars and the downtime Pareto as inline SVG).
// No framework and no build step; data goes into the page as text, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
let stream = null;
let machine = new URLSearchParams(location.search).get("machine");

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}

const dash = "–";
const num = (v, digits = 6) =>
  v === null || v === undefined ? dash : Number(v).toLocaleString(undefined, { maximumSignificantDigits: digits });
const pct = (v) => (v === null || v === undefined ? dash : (100 * v).toFixed(1) + "%");
const ms = (s) => (s === null || s === undefined ? dash : (1000 * s).toFixed(1) + " ms");

function age(seconds) {
  if (seconds === null || seconds === undefined) return dash;
  if (seconds < 90) return `${seconds.toFixed(0)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function cell(text, className) { return el("td", text, className); }

function drawSources(sources) {
  fill($("sources").tBodies[0], sources.map((s) => [
    cell(s.name), cell(s.endpoint, "muted"), cell(s.state, `state ${s.state}`),
    cell(num(s.poll_rate_hz, 3), "num"), cell(num(s.errors_total), "num"),
    cell(num(s.overruns), "num"), cell(ms(s.latency_p50_s), "num"),
    cell(s.last_good_age_s === null ? "never" : `${age(s.last_good_age_s)} ago`),
    // why tags read bad now (an exception, a timeout) before the link's last error
    cell(s.problem || s.last_error || "", "error"),
  ]));
}

// Every reason a source's tags read bad for since start: first and last seen, how often.
function drawErrors(sources) {
  const when = (s) => new Date(1000 * s).toLocaleString();
  const rows = sources.flatMap((s) => (s.error_list || []).map((e) => [
    cell(s.name), cell(e.reason, e.active ? "error" : "muted"), cell(when(e.first_s)),
    cell(when(e.last_s)), cell(num(e.count), "num"), cell(e.active ? "now" : "cleared"),
  ]));
  if (!rows.length) {
    const none = el("td", "no errors since start", "muted");
    none.colSpan = 6;
    rows.push([none]);
  }
  fill($("errors").tBodies[0], rows);
}

function drawSinks(sinks, store) {
  const rows = sinks.map((s) => [
    cell(s.name), cell(s.endpoint, "muted"), cell(s.state, `state ${s.state}`),
    cell(num(s.backlog), "num"), cell(age(s.oldest_unsent_age_s), "num"),
    cell(num(s.sent), "num"), cell(num(s.dropped), s.dropped ? "num error" : "num"),
    cell(num(s.quarantined), "num"), cell(s.last_error || "", "error"),
  ]);
  if (!rows.length) {
    const none = el("td", "no sink configured: readings stay in the store", "muted");
    none.colSpan = 9;
    rows.push([none]);
  }
  fill($("sinks").tBodies[0], rows);
  const depth = Object.entries(store.depth || {}).map(([k, v]) => `${k} ${num(v)}`).join(", ");
  const mb = (store.bytes / 1e6).toFixed(1);
  let text = `Store: ${depth || dash} records, ${mb} MB; ${num(store.readings_written)} readings written, ` +
    `${num(store.dropped_readings)} dropped by the bounds.`;
  if (store.store_full) text += " The store is full: events wait in memory.";
  if (store.last_error) text += ` Last error: ${store.last_error}`;
  $("store").textContent = text;
}

function drawMachines(machines, chosen) {
  const select = $("machine");
  const have = Array.from(select.options).map((o) => o.value);
  if (have.join() !== machines.join()) {
    select.replaceChildren(...machines.map((m) => el("option", m)));
  }
  if (chosen) select.value = chosen;
}

function drawValues(values) {
  fill($("values").tBodies[0], values.map((v) => [
    cell(v.tag),
    // the value as its type prints it (no float noise), a code with its name from the config
    cell(v.text === null || v.text === "-" ? dash : (v.name ? `${v.name} (${v.text})` : v.text), "num value"),
    cell(v.unit, "muted"),
    cell(v.reason ? `${v.quality}: ${v.reason}` : v.quality, `quality ${v.quality.replace(" ", "-")}`),
  ]));
}

// One row of four bars (A, P, Q, OEE) per machine and line; a figure above 100 % (performance
// with a wrong ideal rate) is drawn full and written as it is.
function drawOee(oee, chosen) {
  $("oee-empty").hidden = oee.available;
  const w = oee.window;
  $("oee-window").textContent = !w ? "" : typeof w === "string" ? `(${w})` : `(${w.kind || ""} ${w.name || ""})`;
  const width = 320, barH = 14, gap = 4, labelW = 34, valueW = 56;
  $("oee").replaceChildren(...oee.rows.map((row) => {
    const box = el("div", null, "oee-row");
    const title = el("div");
    title.append(el("b", row.name), el("span", ` ${row.scope}`, "muted"));
    // data-quality flags (e.g. performance_above_100: the ideal rate is set too low)
    if (row.flags && row.flags.length) title.append(el("div", row.flags.join(", "), "flags"));
    box.append(title);
    const kpis = [["A", "availability", "bar-a"], ["P", "performance", "bar-p"],
      ["Q", "quality", "bar-q"], ["OEE", "oee", "bar-oee"]];
    const chart = svg("svg", { width: width, height: kpis.length * (barH + gap), role: "img",
      "aria-label": `OEE of ${row.name}` });
    kpis.forEach(([label, key, cls], i) => {
      const y = i * (barH + gap), span = width - labelW - valueW, v = row[key];
      chart.append(svg("text", { x: 0, y: y + barH - 3 }, label));
      chart.append(svg("rect", { x: labelW, y, width: span, height: barH, class: "track" }));
      if (v !== null && v !== undefined) {
        const w = Math.max(0, Math.min(1, v)) * span;
        chart.append(svg("rect", { x: labelW, y, width: w, height: barH, class: cls }));
      }
      chart.append(svg("text", { x: width - valueW + 6, y: y + barH - 3, "data-kpi": key,
        "data-name": row.name }, pct(v)));
    });
    box.append(chart);
    return box;
  }));
  const withPareto = oee.rows.filter((r) => r.pareto.length);
  const pick = withPareto.find((r) => r.scope === "machine" && r.name === chosen) || withPareto[0];
  drawPareto(pick);
}

function drawPareto(row) {
  $("pareto-of").textContent = row ? `(${row.name})` : "";
  $("pareto-empty").hidden = Boolean(row) || !$("oee-empty").hidden;
  if (!row) { $("pareto").replaceChildren(); return; }
  const items = row.pareto.slice(0, 8), barH = 16, gap = 4, labelW = 130, width = 360;
  const max = Math.max(...items.map((p) => p.seconds || 0), 1);
  const chart = svg("svg", { width, height: items.length * (barH + gap), role: "img",
    "aria-label": `downtime Pareto of ${row.name}` });
  items.forEach((p, i) => {
    const y = i * (barH + gap), span = width - labelW - 70;
    chart.append(svg("text", { x: 0, y: y + barH - 4 }, p.reason.slice(0, 20)));
    chart.append(svg("rect", { x: labelW, y, width: ((p.seconds || 0) / max) * span, height: barH,
      class: "bar-down" }));
    const share = p.share === null || p.share === undefined ? "" : ` ${pct(p.share)}`;
    chart.append(svg("text", { x: width - 66, y: y + barH - 4 }, `${age(p.seconds)}${share}`));
  });
  $("pareto").replaceChildren(chart);
}

function drawInspections(view) {
  $("inspections-empty").hidden = view.available;
  $("inspections").hidden = !view.rows.length;
  fill($("inspections").tBodies[0], view.rows.map((r) => [
    cell(r.inspection), cell(r.machine), cell(r.verdict || "waiting", `verdict ${r.verdict}`),
    cell(r.label || ""), cell(num(r.score, 3), "num"), cell(ms(r.latency_s), "num"),
    cell(r.model || "", "muted"),
  ]));
  drawRejects(view.rejects || []);
}

// The latest NotOK parts with a thumbnail of the saved image. Redrawn only when the list
// changes, so the images are not fetched again every second.
let shownRejects = "";
function drawRejects(rejects) {
  const key = rejects.map((r) => `${r.inspection}/${r.ts_ns}`).join();
  if (key === shownRejects) return;
  shownRejects = key;
  $("rejects-title").hidden = !rejects.length;
  $("rejects").replaceChildren(...rejects.map((r) => {
    const item = el("li");
    if (r.image_url) {
      const img = el("img");
      img.src = r.image_url;
      img.alt = `reject ${r.source || ""}`;
      img.loading = "lazy";
      img.width = 96;
      img.height = 96;
      const link = el("a");
      link.href = r.image_url;
      link.append(img);
      item.append(link);
    } else {
      item.append(el("div", "no image", "noimage muted"));
    }
    const when = new Date(r.ts_ns / 1e6).toLocaleTimeString();
    item.append(el("div", `${r.inspection} · ${when}`),
      el("div", `${r.label || "NotOK"} ${num(r.score, 3)}`, "muted"));
    return item;
  }));
}

function draw(state) {
  $("agent-id").textContent = state.agent_id;
  $("connection").textContent = `live · ${new Date(state.now_ns / 1e6).toLocaleTimeString()} · ` +
    `${num(state.tags)} tags`;
  machine = state.machine;
  drawSources(state.sources);
  drawErrors(state.sources);
  drawMachines(state.machines, state.machine);
  drawValues(state.values);
  drawOee(state.oee, state.machine);
  drawInspections(state.inspections);
  drawSinks(state.sinks, state.store);
}

function listen() {
  if (stream) stream.close();
  const query = machine ? `?machine=${encodeURIComponent(machine)}` : "";
  stream = new EventSource(`api/events${query}`);
  stream.addEventListener("state", (event) => draw(JSON.parse(event.data)));
  stream.onerror = () => {
    $("connection").textContent = "connection lost: retrying…";
    // A refused stream (503: the page's stream cap is full) is closed for good by the browser,
    // which retries only dropped ones: try again ourselves after a few seconds, spread out.
    if (stream.readyState === EventSource.CLOSED) setTimeout(listen, 2000 + Math.random() * 6000);
  };
}

$("machine").addEventListener("change", (event) => {
  machine = event.target.value;
  const url = new URL(location.href);
  url.searchParams.set("machine", machine);
  url.searchParams.delete("token"); // the cookie carries it from here on
  history.replaceState(null, "", url);
  listen();
});

if (new URLSearchParams(location.search).has("token")) {
  const url = new URL(location.href);
  url.searchParams.delete("token"); // keep it out of the history; the cookie carries it now
  history.replaceState(null, "", url);
}
listen();
