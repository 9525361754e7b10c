// The Pocket Agent dashboard: polls GET /v1/monitor every 2 s (the session cookie
// authenticates it) and draws tables and small SVG charts. No library, no build step.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function badge(value) {
  return el("span", String(value).replace(/_/g, " "), "badge " + value);
}

function bar(fraction) {
  const b = el("span", null, "bar");
  const i = el("i");
  i.style.width = Math.max(0, Math.min(100, fraction * 100)).toFixed(0) + "%";
  b.appendChild(i);
  return b;
}

// Fills a table: a header row, then one row per item (cells are text or nodes).
function fill(table, headers, rows, empty) {
  const out = [];
  const head = el("tr");
  for (const h of headers) head.appendChild(el("th", h));
  out.push(head);
  for (const cells of rows) {
    const tr = el("tr");
    for (const c of cells) {
      const td = el("td");
      if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "" : String(c);
      tr.appendChild(td);
    }
    out.push(tr);
  }
  if (rows.length === 0) {
    const tr = el("tr");
    const td = el("td", empty, "empty");
    td.colSpan = headers.length;
    tr.appendChild(td);
    out.push(tr);
  }
  table.replaceChildren(...out);
  return out;
}

function time(unixSecs) {
  return new Date(unixSecs * 1000).toLocaleTimeString();
}

function duration(secs) {
  if (secs < 90) return secs.toFixed(0) + " s";
  if (secs < 5400) return (secs / 60).toFixed(0) + " min";
  if (secs < 172800) return (secs / 3600).toFixed(1) + " h";
  return (secs / 86400).toFixed(1) + " d";
}

function num(v, digits) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return Number(v).toFixed(digits === undefined ? 0 : digits);
}

// --- charts ---------------------------------------------------------------------------

// The four series of the selected range: [{at, value|null}].
function series(data, range) {
  if (range === "live") {
    return data.live.points.map((p) => ({
      at: p.at,
      throughput: p.secs > 0 ? (p.finished / p.secs) * 60 : 0,
      latency: p.mean_run_ms,
      errors: p.finished > 0 ? (p.failed / p.finished) * 100 : 0,
      queue: p.queued + p.waiting_approval,
    }));
  }
  return data.history.map((s) => ({
    at: s.at,
    throughput: s.runs,
    latency: s.runs > 0 ? s.mean_run_ms : null,
    errors: s.runs > 0 ? (s.failures / s.runs) * 100 : 0,
    queue: s.queue_depth,
  }));
}

const CHARTS = [
  {key: "throughput", title: "Throughput", unit: "/min", digits: 1, color: "#3e7bfa"},
  {key: "latency", title: "Latency (mean run)", unit: " ms", digits: 0, color: "#8e44ad"},
  {key: "errors", title: "Error rate", unit: " %", digits: 1, color: "#d64545"},
  {key: "queue", title: "Queue depth", unit: "", digits: 0, color: "#e08a00"},
];

function chart(spec, points) {
  const box = el("div", null, "chart");
  box.dataset.chart = spec.key;
  const values = points.filter((p) => p[spec.key] !== null && p[spec.key] !== undefined);
  const last = values.length ? values[values.length - 1][spec.key] : null;
  const label = el("div", null, "label");
  label.append(el("span", spec.title), el("b", last === null ? "–" : num(last, spec.digits) + spec.unit));
  box.appendChild(label);

  const W = 300, H = 90, PAD = 4;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1e-9, ...values.map((p) => p[spec.key]));
  const t0 = points.length ? points[0].at : 0;
  const t1 = points.length ? points[points.length - 1].at : 1;
  const x = (t) => PAD + ((t - t0) / Math.max(1e-9, t1 - t0)) * (W - 2 * PAD);
  const y = (v) => H - PAD - (v / max) * (H - 2 * PAD);
  const grid = document.createElementNS(SVG, "line");
  for (const [k, v] of Object.entries({x1: 0, x2: W, y1: H - PAD, y2: H - PAD, stroke: "#ddd"})) grid.setAttribute(k, v);
  svg.appendChild(grid);
  if (values.length > 0) {
    const coords = values.map((p) => [values.length === 1 ? W / 2 : x(p.at), y(p[spec.key])]);
    const line = coords.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(" ");
    const area = document.createElementNS(SVG, "polygon");
    area.setAttribute("points", `${coords[0][0].toFixed(1)},${H - PAD} ${line} ${coords[coords.length - 1][0].toFixed(1)},${H - PAD}`);
    area.setAttribute("fill", spec.color);
    area.setAttribute("fill-opacity", "0.12");
    const poly = document.createElementNS(SVG, "polyline");
    poly.setAttribute("points", line);
    poly.setAttribute("fill", "none");
    poly.setAttribute("stroke", spec.color);
    poly.setAttribute("stroke-width", "1.8");
    poly.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(area, poly);
    // Dots, so a short series (or a single sample) shows too.
    const dots = coords.length <= 60 ? coords : coords.slice(-1);
    for (const [a, b] of dots) {
      const dot = document.createElementNS(SVG, "circle");
      dot.setAttribute("cx", a.toFixed(1));
      dot.setAttribute("cy", b.toFixed(1));
      dot.setAttribute("r", "2.2");
      dot.setAttribute("fill", spec.color);
      svg.appendChild(dot);
    }
  }
  box.appendChild(svg);
  const foot = el("div", null, "label");
  foot.append(
    el("span", points.length ? time(t0) + " – " + time(t1) : "no samples yet"),
    el("span", values.length ? "max " + num(max, spec.digits) + spec.unit : ""),
  );
  box.appendChild(foot);
  return box;
}

function drawCharts(data) {
  const range = $("range").value;
  const points = series(data, range);
  $("range-note").textContent = range === "live"
    ? `${points.length} samples every ${num(data.live.every_secs)} s since this server started`
    : `${points.length} one-minute samples from the monitor`;
  $("charts").replaceChildren(...CHARTS.map((spec) => chart(spec, points)));
}

// --- sections -------------------------------------------------------------------------

function tiles(data) {
  const c = data.cluster, o = c.overview, p = c.performance, q = c.queue, h = data.health || {};
  const list = [
    ["instances", o.total_instances, `${o.active} idle · ${o.busy} busy · ${o.overloaded} full · ${o.failed} failed`],
    ["queued", o.queue_size, `${q.running || 0} running · ${q.waiting_approval || 0} waiting approval`],
    ["utilisation", num(p.utilisation * 100) + " %", `${p.in_flight} of ${p.capacity} slots`],
    ["mean load", num(p.mean_load) + " %", `mean health ${num(p.mean_health)}`],
    ["succeeded", q.succeeded || 0, `${q.failed || 0} failed · ${q.cancelled || 0} cancelled`],
    ["error rate", h.error_rate === undefined ? "–" : num(h.error_rate * 100, 1) + " %", "recent runs (monitor)"],
    ["uptime", h.uptime_secs === undefined ? "–" : duration(h.uptime_secs),
      h.memory_bytes ? (h.memory_bytes / 1048576).toFixed(0) + " MiB resident" : ""],
  ];
  $("tiles").replaceChildren(...list.map(([name, value, note]) => {
    const t = el("div", null, "tile");
    t.dataset.tile = name.replace(/ /g, "-");
    t.append(el("span", name), el("b", value), el("span", note));
    return t;
  }));
}

function instances(data) {
  const rows = data.cluster.instances.map((i) => [
    el("code", i.id), i.agent, i.model, badge(i.status),
    (() => { const s = el("span"); s.append(bar(i.load / 100), " " + num(i.load) + " %"); return s; })(),
    i.health, `${i.in_flight}/${i.capacity}`, i.succeeded, i.failed,
    num(i.mean_duration_secs, 2) + " s", num(i.last_heartbeat_secs_ago, 1) + " s ago",
  ]);
  fill($("instances"), ["id", "agent", "model", "status", "load", "health", "in flight", "ok", "failed", "mean run", "heartbeat"], rows, "no instances");
  $("instances-note").textContent = "worker " + data.cluster.worker;
}

function queue(data) {
  const q = data.cluster.queue;
  fill($("queue"), ["status", "tasks"], Object.entries(q).map(([k, v]) => [badge(k), v]), "empty");
  const top = Math.max(1, ...data.queued_by_priority.map((p) => p.queued));
  fill($("priorities"), ["priority", "queued", ""],
    data.queued_by_priority.map((p) => [p.priority, p.queued, bar(p.queued / top)]), "nothing queued");
}

function breakers(data) {
  const r = data.resilience;
  const list = r ? r.breakers : [];
  fill($("breakers"), ["breaker", "state", "fails in a row", "failure rate", "opened", "retry in"],
    list.map((b) => [b.key, badge(b.state), b.consecutive_failures, num(b.failure_rate * 100) + " %",
      b.opened_total, b.retry_in_secs === undefined ? "" : num(b.retry_in_secs, 1) + " s"]),
    "no breakers yet (they appear with the first guarded call)");
  $("resilience-note").textContent = r ? `health score ${r.health_score}` : "";
}

function alerts(data) {
  fill($("alerts"), ["time", "kind", "message"],
    data.alerts.map((a) => [time(a.at), badge(a.kind), a.message]),
    "no alerts");
  fill($("errors"), ["time", "level", "agent", "message"],
    data.errors.map((e) => [time(e.at), badge(e.level), e.agent || "", e.message]),
    "no warnings or errors");
}

function approvals(data) {
  const rows = data.approvals.map((a) => {
    const actions = el("span");
    const yes = el("button", "Approve", "approve");
    yes.onclick = () => decide(a.id, "approve", yes);
    const no = el("button", "Deny", "deny");
    no.onclick = () => decide(a.id, "deny", no);
    actions.append(yes, " ", no);
    return [el("code", a.id), a.agent, el("code", a.tool), badge(a.risk), el("code", JSON.stringify(a.arguments)), a.requested_at, actions];
  });
  const trs = fill($("approvals"), ["id", "agent", "tool", "risk", "arguments", "asked", ""], rows, "none waiting");
  data.approvals.forEach((a, i) => { trs[i + 1].dataset.approvalId = a.id; });
  $("approvals-count").textContent = data.approvals.length ? `${data.approvals.length} waiting` : "";
}

async function decide(id, decision, button) {
  const body = {decision};
  if (decision === "deny") {
    const reason = prompt("Reason for denying?");
    if (reason === null) return;
    if (reason) body.reason = reason;
  }
  button.disabled = true;
  try {
    const resp = await fetch("/v1/approvals/" + encodeURIComponent(id), {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
    });
    if (!resp.ok) {
      const err = await resp.json().catch(() => ({}));
      setStatus((err.error && err.error.message) || resp.statusText, true);
    }
  } finally {
    refresh();
  }
}

function setStatus(text, bad) {
  const s = $("status");
  s.textContent = text;
  s.className = bad ? "bad" : "muted";
}

// --- polling --------------------------------------------------------------------------

let last = null;
let timer = null;

async function refresh() {
  clearTimeout(timer);
  const range = $("range").value;
  const history = range === "live" ? 1 : Number(range);
  try {
    const resp = await fetch("/v1/monitor?history=" + history, {credentials: "same-origin"});
    if (resp.status === 401) { location.reload(); return; }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const data = await resp.json();
    last = data;
    render(data);
    setStatus("updated " + time(data.at), false);
  } catch (e) {
    setStatus("cannot reach the server: " + e.message, true);
  } finally {
    timer = setTimeout(refresh, POLL_MS);
  }
}

function render(data) {
  const h = data.health;
  const b = $("health-badge");
  const status = h ? h.status : "unknown";
  b.textContent = status;
  b.className = "badge " + status;
  b.title = h && h.reasons.length ? h.reasons.join("; ") : "";
  $("worker").textContent = data.cluster.worker;
  for (const part of [tiles, drawCharts, approvals, instances, queue, breakers, alerts]) {
    try { part(data); } catch (e) { setStatus(part.name + ": " + e.message, true); }
  }
}

$("range").onchange = () => { if (last) drawCharts(last); refresh(); };
refresh();
