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
  fill($("values").tBodies[0], values.map((v) => {
    const spark = cell(null, "spark");
    const line = sparklines.get(v.tag);
    if (line) spark.append(line);
    spark.title = `trend of ${v.tag}`;
    spark.addEventListener("click", () => openTrend(v.tag));
    return [
      cell(v.tag),
      // the value as its type prints it (no float noise), a code with its name from the config
      cell(v.text === null || v.text === undefined || v.text === "-" ? dash
        : (v.name ? `${v.name} (${v.text})` : v.text), "num value"),
      cell(v.unit, "muted"),
      cell(v.reason ? `${v.quality}: ${v.reason}` : v.quality, `quality ${v.quality.replace(" ", "-")}`),
      spark,
    ];
  }));
}

// Trends: the server reads its store and downsamples (api/trend: min, max, last per bucket).
// The sparklines of the chosen machine are fetched every 30 s and kept as nodes, so the values
// table's redraw every second moves them instead of drawing them again.
const sparklines = new Map();
let sparkMachine = null, sparkTags = [], sparkTimer = null;
const trendPicks = new Set();

async function fetchTrend(tags, points) {
  const query = new URLSearchParams({ machine, minutes: "60", points: String(points) });
  tags.forEach((t) => query.append("tag", t));
  const answer = await fetch(`api/trend?${query}`);
  if (!answer.ok) throw new Error((await answer.json()).error || answer.statusText);
  return answer.json();
}

function path(series, x, y) {
  return series.t.map((t, i) => `${i ? "L" : "M"}${x(t).toFixed(1)},${y(series.last[i]).toFixed(1)}`).join("");
}

function scale(trend, names, width, height, pad) {
  const all = names.flatMap((n) => [...trend.tags[n].min, ...trend.tags[n].max]);
  let lo = Math.min(...all), hi = Math.max(...all);
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  if (hi === lo) { hi += 1; lo -= 1; }
  const t0 = trend.from_ns / 1e6, t1 = trend.to_ns / 1e6;
  return {
    x: (t) => pad + ((t - t0) / (t1 - t0)) * (width - 2 * pad),
    y: (v) => height - pad - ((v - lo) / (hi - lo)) * (height - 2 * pad),
    lo, hi,
  };
}

async function refreshSparklines(values) {
  const tags = values.map((v) => v.tag);
  if (machine === sparkMachine && tags.join() === sparkTags.join() && sparkTimer) return;
  sparkMachine = machine; sparkTags = tags;
  clearInterval(sparkTimer);
  const draw = async () => {
    try {
      const trend = await fetchTrend(sparkTags, 60);
      for (const name of sparkTags) {
        const series = trend.tags[name];
        const chart = svg("svg", { viewBox: "0 0 120 24", width: 120, height: 24, role: "img",
          "aria-label": `${name}, last hour`, "data-tag": name, "data-points": series.t.length });
        if (series.t.length) {
          const s = scale(trend, [name], 120, 24, 2);
          chart.append(svg("path", { d: path(series, s.x, s.y), class: "spark-line" }));
          // the latest value as a dot: alone it is all there is (an agent started a minute ago)
          const i = series.t.length - 1;
          chart.append(svg("circle", { cx: s.x(series.t[i]), cy: s.y(series.last[i]), r: 2,
            class: "spark-dot" }));
        }
        sparklines.set(name, chart);
      }
    } catch (error) { /* the sparklines wait for the next round; the values still show */ }
  };
  await draw();
  sparkTimer = setInterval(draw, 30000);
}

function openTrend(tag) {
  trendPicks.clear();
  trendPicks.add(tag);
  $("trend-box").hidden = false;
  drawTrend();
}

async function drawTrend() {
  const picks = $("trend-picks");
  picks.replaceChildren(...sparkTags.map((name) => {
    const label = el("label");
    const box = el("input");
    box.type = "checkbox"; box.checked = trendPicks.has(name); box.value = name;
    box.addEventListener("change", () => {
      if (box.checked) trendPicks.add(name); else trendPicks.delete(name);
      drawTrend();
    });
    label.append(box, ` ${name}`);
    return label;
  }));
  const names = [...trendPicks].slice(0, 8);
  $("trend-of").textContent = `(${machine}, last hour)`;
  if (!names.length) { $("trend").replaceChildren(); return; }
  let trend;
  try { trend = await fetchTrend(names, 300); } catch (error) {
    $("trend").replaceChildren(el("p", `no trend: ${error.message}`, "error")); return;
  }
  const width = 640, height = 240, pad = 28;
  const s = scale(trend, names, width, height, pad);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "trend", role: "img",
    "aria-label": `trend of ${names.join(", ")}` });
  chart.append(svg("text", { x: 2, y: pad }, num(s.hi, 4)), svg("text", { x: 2, y: height - pad }, num(s.lo, 4)));
  names.forEach((name, k) => {
    const series = trend.tags[name];
    // the band from min to max of each bucket, then the last value as the line
    const band = series.t.map((t, i) => `${i ? "L" : "M"}${s.x(t).toFixed(1)},${s.y(series.max[i]).toFixed(1)}`).join("") +
      series.t.map((t, i) => i).reverse().map((i) => `L${s.x(series.t[i]).toFixed(1)},${s.y(series.min[i]).toFixed(1)}`).join("");
    if (series.t.length) chart.append(svg("path", { d: band + "Z", class: `band c${k}` }));
    chart.append(svg("path", { d: series.t.length ? path(series, s.x, s.y) : "", class: `line c${k}`,
      "data-tag": name, "data-points": series.t.length }));
    if (series.t.length) {
      const i = series.t.length - 1;
      chart.append(svg("circle", { cx: s.x(series.t[i]), cy: s.y(series.last[i]), r: 3, class: `c${k}` }));
    }
    chart.append(svg("text", { x: pad + 4 + 110 * k, y: 14, class: `legend c${k}` }, name));
  });
  $("trend").replaceChildren(chart);
}

$("trend-close").addEventListener("click", () => { $("trend-box").hidden = true; trendPicks.clear(); });

// The andon board: a row per machine, its state in colour, how long, good parts against the
// shift's target, and the state timeline of the shift.
const STATE_NAMES = { running: "running", idle: "idle", down: "down", setup: "setup",
  planned_stop: "planned stop", unknown: "unknown" };

function drawAndon(andon, now_ns) {
  const w = andon.window;
  $("andon-window").textContent = w ? `(${w.kind} ${w.name})` : "";
  $("andon").replaceChildren(...andon.rows.map((r) => {
    const row = el("div", null, `andon-row st-${r.state}`);
    row.dataset.machine = r.machine;
    const name = el("div", r.machine, "andon-name");
    const state = el("div", r.reason ? `${STATE_NAMES[r.state]}: ${r.reason}` : STATE_NAMES[r.state],
      "andon-state");
    const since = el("div", `${r.since_start ? "≥ " : ""}${age(r.in_state_s)}`, "andon-since");
    let parts = dash;
    if (r.good !== null && r.good !== undefined) {
      // counts are shared out over the time between two readings: whole parts on the board
      const good = Math.floor(r.good);
      parts = r.target ? `${num(good)} / ${num(r.target)} good` : `${num(good)} good`;
    }
    const count = el("div", parts, "andon-parts");
    if (r.target && r.good !== null) {
      const bar = el("div", null, "andon-bar");
      const done = el("span");
      done.style.width = `${Math.min(100, (100 * r.good) / r.target).toFixed(1)}%`;
      bar.append(done);
      count.append(bar);
    }
    row.append(name, state, since, count, timeline(r.timeline, w, now_ns));
    return row;
  }));
  const first = andon.rows.length && andon.rows[0].timeline.length ? andon.rows[0].timeline[0].start_ns : null;
  $("timeline-from").textContent = first ? new Date(first / 1e6).toLocaleTimeString() : "the agent started";
}

function timeline(stretches, w, now_ns) {
  const start = w ? w.start_ns : (stretches.length ? stretches[0].start_ns : now_ns);
  const end = w ? Math.max(w.end_ns, now_ns) : now_ns;
  const width = 600, chart = svg("svg", { viewBox: `0 0 ${width} 14`, preserveAspectRatio: "none",
    class: "timeline", role: "img", "aria-label": "state timeline" });
  chart.append(svg("rect", { x: 0, y: 0, width, height: 14, class: "track" }));
  const x = (t) => ((t - start) / Math.max(1, end - start)) * width;
  stretches.forEach((s, i) => {
    const until = i + 1 < stretches.length ? stretches[i + 1].start_ns : now_ns;
    const rect = svg("rect", { x: x(s.start_ns), y: 0, width: Math.max(0.5, x(until) - x(s.start_ns)), height: 14,
      class: `st-${s.state}` });
    rect.append(svg("title", {}, `${STATE_NAMES[s.state]}${s.reason ? ": " + s.reason : ""} from ` +
      new Date(s.start_ns / 1e6).toLocaleTimeString()));
    chart.append(rect);
  });
  return chart;
}

// Active alarms, each acknowledgeable (POST with the page's header; the cookie carries a token).
function drawAlarms(alarms) {
  $("alarms-empty").hidden = alarms.length > 0;
  $("alarms").hidden = !alarms.length;
  $("alarm-count").textContent = alarms.length ? `(${alarms.length} active)` : "";
  fill($("alarms").tBodies[0], alarms.map((a) => {
    const action = cell(null);
    if (a.acknowledged) {
      action.textContent = "acknowledged";
      action.className = "muted";
    } else {
      const button = el("button", "acknowledge");
      button.type = "button";
      button.dataset.alarm = a.alarm;
      button.addEventListener("click", () => acknowledge(a.alarm));
      action.append(button);
    }
    return [cell(a.alarm), cell(a.machine), cell(a.severity, `severity ${a.severity}`),
      cell(a.reason), cell(age(a.active_s), "num"), action];
  }));
}

async function acknowledge(name) {
  const answer = await fetch(`api/alarms/ack?alarm=${encodeURIComponent(name)}`,
    { method: "POST", headers: { "X-Lineside-Action": "ack" } });
  $("ack-error").hidden = answer.ok;
  if (!answer.ok) $("ack-error").textContent = `not acknowledged: ${(await answer.json()).error}`;
}

// The health banner: what has failed now, in one line per thing.
function drawBanner(state) {
  const problems = [];
  for (const s of state.sources) {
    if (s.state === "lost") problems.push(`source ${s.name} is ${s.state}${s.last_error ? ": " + s.last_error : ""}`);
  }
  for (const s of state.sinks) {
    if (s.state === "failing") problems.push(`sink ${s.name} is ${s.state}${s.last_error ? ": " + s.last_error : ""}`);
  }
  if (state.store.store_full) problems.push(`the store is full: ${state.store.full_reason || ""}`);
  if (state.store.last_error) problems.push(`store: ${state.store.last_error}`);
  $("banner").hidden = !problems.length;
  $("banner").replaceChildren(...problems.map((p) => el("div", p)));
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
    title.append(...targets(row));
    box.append(title);
    const kpis = [["A", "availability", "bar-a"], ["P", "performance", "bar-p"],
      ["Q", "quality", "bar-q"], ["OEE", "oee", "bar-oee"]];
    const chart = svg("svg", { viewBox: `0 0 ${width} ${kpis.length * (barH + gap)}`,
      class: "oee-bars", role: "img", "aria-label": `OEE of ${row.name}` });
    kpis.forEach(([label, key, cls], i) => {
      const y = i * (barH + gap), span = width - labelW - valueW, v = row[key];
      chart.append(svg("text", { x: 0, y: y + barH - 3 }, label));
      chart.append(svg("rect", { x: labelW, y, width: span, height: barH, class: "track" }));
      if (v !== null && v !== undefined) {
        const w = Math.max(0, Math.min(1, v)) * span;
        chart.append(svg("rect", { x: labelW, y, width: w, height: barH, class: cls }));
      }
      if (key === "oee" && row.target_oee) {  // the target as a mark across the OEE bar
        const tx = labelW + Math.min(1, row.target_oee) * span;
        chart.append(svg("line", { x1: tx, x2: tx, y1: y - 2, y2: y + barH + 2, class: "target-mark" }));
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

// A machine's targets: its OEE, big, green at or above `target_oee` and red below, and its
// good units against the plan of the shift so far (`target_output` pro rata), with a bar.
function targets(row) {
  if (row.scope !== "machine" || (!row.target_oee && !row.plan_shift)) return [];
  const out = [];
  const mark = (ok) => (ok === null || ok === undefined ? "" : ok ? " ok" : " behind");
  if (row.target_oee) {
    const head = el("div", null, "oee-vs");
    const big = el("span", pct(row.oee), `oee-big${mark(row.on_target)}`);
    big.dataset.oeeOf = row.name;
    const gap = row.oee_vs_target_pp;
    const versus = gap === null || gap === undefined ? "" : ` · ${gap > 0 ? "+" : ""}${gap.toFixed(1)} pp`;
    head.append(big, el("span", ` target ${pct(row.target_oee)}${versus}`, "oee-target"));
    out.push(head);
  }
  if (row.plan_shift) {
    const line = el("div", null, `oee-plan${mark(row.on_plan)}`);
    line.dataset.planOf = row.name;
    const good = row.good === null || row.good === undefined ? dash : num(Math.floor(row.good));
    const plan = row.plan === null || row.plan === undefined ? dash : num(Math.round(row.plan));
    line.append(el("span", `${good} good`, "oee-good"));
    const bar = el("div", null, "plan-bar");
    const done = el("span");
    done.style.width = `${Math.min(100, (100 * (row.good || 0)) / row.plan_shift).toFixed(1)}%`;
    const planned = el("i");  // where the plan stands now
    planned.style.left = `${Math.min(100, (100 * (row.plan || 0)) / row.plan_shift).toFixed(1)}%`;
    bar.append(done, planned);
    line.append(bar, el("div", `plan so far ${plan} · shift ${num(row.plan_shift)}`, "oee-of"));
    out.push(line);
  }
  return out;
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

// Live or not: the page says "live" only while states arrive; 5 s without one, or a dropped
// stream, greys the page out so nobody reads old values as current.
let lastState = 0;
function setLink(live, text) {
  const link = $("connection");
  link.className = `link ${live ? "live" : "lost"}`;
  link.textContent = text;
  document.body.classList.toggle("stale", !live);
}
setInterval(() => {
  if (lastState && Date.now() - lastState > 5000) {
    setLink(false, `not live: no update since ${new Date(lastState).toLocaleTimeString()}, retrying…`);
  }
}, 1000);

function draw(state) {
  lastState = Date.now();
  $("agent-id").textContent = state.agent_id;
  setLink(true, `live · ${new Date(state.now_ns / 1e6).toLocaleTimeString()} · ${num(state.tags)} tags`);
  machine = state.machine;
  drawBanner(state);
  if (state.andon) drawAndon(state.andon, state.now_ns);
  drawAlarms(state.alarms || []);
  drawSources(state.sources);
  drawErrors(state.sources);
  drawMachines(state.machines, state.machine);
  drawValues(state.values);
  refreshSparklines(state.values);
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
    const when = lastState ? ` since ${new Date(lastState).toLocaleTimeString()}` : "";
    setLink(false, `not live: the event stream was lost${when}, retrying…`);
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
