// The ministry's page: asks for a token once (session storage), then draws /v1/dashboard
// and follows /v1/stream live. No data is in the page itself; nothing loads from elsewhere.
"use strict";

const KEY = "incentives.oversight.token";
const $ = (id) => document.getElementById(id);
const won = new Intl.NumberFormat("en-US");
let source = null;
let live = 0;
let refreshTimer = null;
let eventTypes = [];
let listening = new Set();
let handler = null;

// each event's SSE name is its type: listen to every type the programmes publish, as soon
// as the figures have named them (a first call that failed is made good by the next)
function listen() {
  if (!source || !handler) return;
  eventTypes.filter((t) => !listening.has(t)).forEach((t) => {
    source.addEventListener(t, handler);
    listening.add(t);
  });
}

function token() { return sessionStorage.getItem(KEY); }

function showSignIn() {
  $("sign-in").hidden = false; $("board").hidden = true; $("sign-out").hidden = true;
}

function cell(text, numeric) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "n";
  return td;
}

function fill(id, head, rows) {
  const table = $(id);
  table.replaceChildren();
  const tr = document.createElement("tr");
  head.forEach((h) => { const th = document.createElement("th"); th.textContent = h; tr.append(th); });
  table.append(tr);
  rows.forEach((row) => {
    const line = document.createElement("tr");
    row.forEach((v) => line.append(cell(typeof v === "number" ? won.format(v) : (v ?? ""), typeof v === "number")));
    table.append(line);
  });
}

async function call(path) {
  const response = await fetch(path, { headers: { Authorization: "Bearer " + token() } });
  if (response.status === 401 || response.status === 403) {
    sessionStorage.removeItem(KEY);
    if (source) source.close();
    showSignIn();
    throw new Error("the token was refused");
  }
  if (!response.ok) throw new Error(path + " answered " + response.status);
  return response.json();
}

function drawChart(svg, points, value) {
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const minutes = [...new Set(points.map((p) => p.minute))].sort();
  const series = {};
  points.forEach((p) => {
    const name = p.service + " " + p.stage;
    (series[name] = series[name] || {})[p.minute] = value(p);
  });
  const max = Math.max(1, ...points.map(value));
  const colours = ["#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477", "#66aa00"];
  Object.entries(series).slice(0, 8).forEach(([name, byMinute], i) => {
    const path = minutes.map((m, j) => {
      const x = minutes.length > 1 ? 10 + (j * 580) / (minutes.length - 1) : 300;
      const y = 190 - ((byMinute[m] || 0) * 170) / max;
      return (j ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
    }).join(" ");
    const line = document.createElementNS(ns, "path");
    line.setAttribute("d", path); line.setAttribute("fill", "none");
    line.setAttribute("stroke", colours[i]); line.setAttribute("stroke-width", "2");
    svg.append(line);
    minutes.forEach((m, j) => {  // a dot per minute: one minute of data is a point, not a line
      if (!(m in byMinute)) return;
      const dot = document.createElementNS(ns, "circle");
      dot.setAttribute("cx", (minutes.length > 1 ? 10 + (j * 580) / (minutes.length - 1) : 300).toFixed(1));
      dot.setAttribute("cy", (190 - (byMinute[m] * 170) / max).toFixed(1));
      dot.setAttribute("r", "3"); dot.setAttribute("fill", colours[i]);
      const tip = document.createElementNS(ns, "title");
      tip.textContent = name + " at " + m + ": " + won.format(byMinute[m]);
      dot.append(tip);
      svg.append(dot);
    });
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", "12"); label.setAttribute("y", String(14 + i * 12));
    label.setAttribute("font-size", "10"); label.setAttribute("fill", colours[i]);
    label.textContent = name;
    svg.append(label);
  });
  const top = document.createElementNS(ns, "text");
  top.setAttribute("x", "590"); top.setAttribute("y", "14"); top.setAttribute("text-anchor", "end");
  top.setAttribute("font-size", "10"); top.textContent = "max " + won.format(Math.round(max));
  svg.append(top);
}

function render(d) {
  fill("money", ["service", "programme", "figure", "won"], d.programmes.flatMap((p) =>
    Object.entries(p.money).map(([k, v]) => [p.service, p.programme_id, k, v])));
  const statuses = [...new Set(d.programmes.flatMap((p) => Object.keys(p.statuses)))].sort();
  fill("statuses", ["service", "programme", ...statuses], d.programmes.map((p) =>
    [p.service, p.programme_id, ...statuses.map((s) => p.statuses[s] || 0)]));
  const clusterStatuses = [...new Set(d.clusters.flatMap((c) => Object.keys(c.statuses)))].sort();
  fill("clusters", ["cluster", ...clusterStatuses], d.clusters.map((c) =>
    [c.cluster, ...clusterStatuses.map((s) => c.statuses[s] || 0)]));
  drawChart($("throughput"), d.series.points, (p) => p.count);
  drawChart($("latency"), d.series.points, (p) => p.mean_seconds);
  $("stuck-after").textContent = "(open, in one status over " + d.stuck_after_seconds + " s)";
  fill("stuck", ["service", "application", "status", "since"], d.stuck.map((s) =>
    [s.service, s.application_id, s.status, s.since]));
  fill("lag", ["service", "topic", "lag"], d.lag.map((l) => [l.service, l.topic, l.lag]));
  fill("checkpoints", ["service", "verified tree size", "verified", "finding"], d.checkpoints.map((c) =>
    [c.service, c.tree_size, c.verified ? "yes" : "no", c.finding || "none"]));
  $("conflict-count").textContent = won.format(d.conflicts);
  fill("conflicts", ["when", "firm", "kind", "applications"], d.conflict_events.map((e) =>
    [e.occurred_at, e.firm_id, e.payload.kind || "", JSON.stringify(e.payload.applications || e.payload)]));
}

async function refresh() {
  try {
    const figures = await call("/v1/dashboard");
    eventTypes = figures.event_types;
    listen();
    render(figures);
    $("error").hidden = true;
  } catch (error) {
    $("error").textContent = String(error.message || error);
    $("error").hidden = false;
  }
}

function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; refresh(); }, 500);
}

function follow() {
  source = new EventSource("/v1/stream?access_token=" + encodeURIComponent(token()));
  const state = $("connection");
  source.onopen = () => { state.textContent = "live"; state.className = "badge live"; };
  source.onerror = () => { state.textContent = "reconnecting"; state.className = "badge down"; };
  const onEvent = (message) => {
    live += 1;
    $("live-count").textContent = won.format(live);
    const envelope = JSON.parse(message.data);
    const table = $("live");
    if (!table.firstChild) fill("live", ["#", "when", "type", "application", "firm"], []);
    const row = document.createElement("tr");
    [message.lastEventId, envelope.occurred_at, envelope.type, envelope.aggregate_id, envelope.firm_id || ""]
      .forEach((v) => row.append(cell(v)));
    table.firstChild.after(row);
    while (table.rows.length > 51) table.deleteRow(51);
    scheduleRefresh();
  };
  handler = onEvent;
  listening = new Set();
  listen();
}

let ticking = null;

async function open() {
  $("sign-in").hidden = true; $("board").hidden = false; $("sign-out").hidden = false;
  await refresh();
  if (!ticking) ticking = setInterval(refresh, 10000);
  if (source) source.close();
  follow();
}

$("sign-in").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("token").value.trim());
  open();
});
$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(KEY);
  if (source) source.close();
  showSignIn();
});

if (token()) open(); else showSignIn();
