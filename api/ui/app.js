// Bismuth's dashboard: plain JavaScript, no framework, no build step.
// Three views chosen by the URL's hash: #/ (functions), #/function/ID and
// #/nodes. Every view refreshes from the api every REFRESH_MS; a function's
// page also follows its logs (Server-Sent Events from /function/ID/logs).
"use strict";

const REFRESH_MS = 2000;
const BASE = location.pathname.replace(/\/ui\/.*$/, "");
const main = document.getElementById("main");
let timer = null;
let logs = null; // the open EventSource, if any

async function api(path) {
  const resp = await fetch(BASE + path, { credentials: "same-origin", cache: "no-store" });
  if (resp.status === 401) { location.href = BASE + "/ui/login"; throw new Error("login needed"); }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

const fmt = {
  rate: (r) => (r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2)),
  ms: (v) => (v == null ? "–" : v >= 100 ? v.toFixed(0) + " ms" : v.toFixed(2) + " ms"),
  pct: (v) => (v * 100).toFixed(v > 0 && v < 0.01 ? 2 : 1) + " %",
  bytes: (b) => (b >= 1 << 30 ? (b / (1 << 30)).toFixed(1) + " GiB" : (b / (1 << 20)).toFixed(0) + " MiB"),
  short: (id) => id.slice(0, 8),
};

function status(s) { return el("span", { class: s }, el("span", { class: "dot" }), s); }

function setUpdated(summary) {
  const since = summary && summary.since ? " · sampling since " + new Date(summary.since).toLocaleTimeString() : "";
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString() + since;
}

function fail(err) {
  document.getElementById("updated").textContent = "";
  document.getElementById("updated").append(el("span", { class: "error", text: "cannot refresh: " + err.message }));
}

// ---- functions ------------------------------------------------------------

async function functionsView() {
  const s = await api("/stats");
  setUpdated(s);
  const order = { Failed: 0, Starting: 1, Running: 2, Idle: 3 };
  const fns = s.functions.slice().sort((a, b) => order[a.status] - order[b.status] || b.rate - a.rate || (a.id < b.id ? -1 : 1));
  const head = ["Status", "Function", "Image", "Instances", "Req/s", "Errors", "p50", "p99", "Cold starts", "Requests"];
  const rows = fns.map((f) => el("tr", { "data-function": f.id, class: f.status === "Failed" ? "failed" : "" },
    el("td", { class: "status" }, status(f.status)),
    el("td", {}, el("a", { href: "#/function/" + f.id, text: f.routes[0] || fmt.short(f.id) }),
      f.routes[0] ? el("span", { class: "muted", text: " " + fmt.short(f.id) }) : null),
    el("td", { class: "muted", text: f.image }),
    el("td", { class: "num instances", text: f.running + " / " + f.desired }),
    el("td", { class: "num rate", text: fmt.rate(f.rate) }),
    el("td", { class: "num errors", text: fmt.pct(f.error_ratio) }),
    el("td", { class: "num", text: fmt.ms(f.p50_ms) }),
    el("td", { class: "num", text: fmt.ms(f.p99_ms) }),
    el("td", { class: "num cold", text: String(f.cold_starts) }),
    el("td", { class: "num requests", text: String(f.requests) })));
  const failing = fns.filter((f) => f.status === "Failed").length;
  main.replaceChildren(
    el("h1", { text: "Functions" }),
    el("p", { class: "muted", text: fns.length + " functions, " + failing + " failing · rates over the last " + Math.round(s.window_s) + " s · " + s.frontends + " frontends, " + s.nodes_read + " nodes read" + (s.unreachable.length ? " · unreachable: " + s.unreachable.join(", ") : "") }),
    fns.length ? table(head, rows, [3, 4, 5, 6, 7, 8, 9]) : el("p", { text: "No functions yet: deploy one with bismuthctl deploy -f def.json." }));
}

function table(head, rows, numeric) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h, i) => el("th", { class: numeric.includes(i) ? "num" : "", text: h })))),
    el("tbody", {}, ...rows));
}

// ---- one function ---------------------------------------------------------

async function functionView(id, first) {
  const [f, hist, calls] = await Promise.all([
    api("/function/" + id), api("/stats/function/" + id), api("/function/" + id + "/calls?limit=15")]);
  setUpdated(null);
  const me = hist.now || {};
  if (first) {
    main.replaceChildren(
      el("h1", {}, el("a", { href: "#/", text: "Functions" }), " / " + ((f.definition.routes[0] || {}).hostname || id)),
      el("div", { id: "fn-summary" }),
      el("div", { class: "cards" },
        el("div", { class: "card" }, el("h3", { text: "Requests per second" }), el("div", { id: "chart-rate" })),
        el("div", { class: "card" }, el("h3", { text: "Latency (ms)" }), el("div", { id: "chart-latency" })),
        el("div", { class: "card" }, el("h3", { text: "Instances" }), el("div", { id: "chart-instances" }))),
      el("h2", { text: "Live logs" }), el("pre", { id: "logs" }),
      el("h2", { text: "Recent calls" }), el("div", { id: "calls" }),
      el("h2", { text: "Definition" }), el("pre", { class: "def", id: "definition" }));
    followLogs(id);
  }
  document.getElementById("fn-summary").replaceChildren(el("table", { class: "kv" }, el("tbody", {},
    kv("id", id), kv("status", status(me.status || "?")), kv("image", f.definition.image),
    kv("instances", (me.running ?? "?") + " running of " + (me.desired ?? "?") + " wanted" + (f.instances ? " (min " + f.instances.min + ", max " + f.instances.max + ")" : "")),
    kv("now", fmt.rate(me.rate || 0) + " req/s · errors " + fmt.pct(me.error_ratio || 0) + " · p50 " + fmt.ms(me.p50_ms) + " · p99 " + fmt.ms(me.p99_ms)),
    kv("since sampling began", (me.requests || 0) + " requests, " + (me.cold_starts || 0) + " cold starts"),
    kv("backends", f.backends.map((b) => b.backend.ip + " " + b.status + (b.reason ? " (" + b.reason + ")" : "")).join(", ") || "none"))));
  const pts = hist.points;
  chart(document.getElementById("chart-rate"), pts, [{ key: "rate", name: "req/s", color: "#3b5bdb" }]);
  chart(document.getElementById("chart-latency"), pts, [{ key: "p50_ms", name: "p50", color: "#1f9d55" }, { key: "p99_ms", name: "p99", color: "#d98a00" }]);
  chart(document.getElementById("chart-instances"), pts, [{ key: "desired", name: "desired", color: "#8a93a6" }, { key: "running", name: "running", color: "#3b5bdb" }]);
  document.getElementById("calls").replaceChildren(calls.calls.length
    ? table(["Start", "Status", "Duration", "Cold", "Container", "Node", "Trace"], calls.calls.map((c) => el("tr", {},
      el("td", { text: new Date(c.start).toLocaleTimeString() }), el("td", { class: "num", text: String(c.status) }),
      el("td", { class: "num", text: c.duration_ms.toFixed(1) + " ms" }), el("td", { text: c.cold ? "cold" : "" }),
      el("td", { class: "muted", text: fmt.short(c.container_id) }), el("td", { text: c.node }), el("td", { class: "muted", text: c.id }))), [1, 2])
    : el("p", { class: "muted", text: "No calls yet." }));
  document.getElementById("definition").textContent = JSON.stringify(f.definition, null, 2);
}

function kv(k, v) { return el("tr", {}, el("td", { text: k }), el("td", {}, v)); }

function followLogs(id) {
  const pre = document.getElementById("logs");
  logs = new EventSource(BASE + "/function/" + id + "/logs?follow=true&tail=100", { withCredentials: true });
  logs.onmessage = (e) => {
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.append(e.data + "\n");
    while (pre.childNodes.length > 2000) pre.removeChild(pre.firstChild);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  };
  // The stream ends when the function has no instance; try again later.
  logs.onerror = () => { if (logs) { logs.close(); setTimeout(() => { if (logs && logs.readyState === 2 && location.hash === "#/function/" + id) followLogs(id); }, 3000); } };
}

// A line chart of `series` over the points' time, as SVG.
function chart(box, points, series) {
  const W = 420, H = 140, L = 36, B = 16;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  const vals = points.flatMap((p) => series.map((s) => p[s.key]).filter((v) => v != null));
  const max = Math.max(1e-9, ...vals) * 1.1;
  const t0 = points.length ? points[0].t : 0, t1 = points.length ? points[points.length - 1].t : 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - 4);
  const y = (v) => H - B - (v / max) * (H - B - 6);
  const add = (tag, attrs, text) => { const e = document.createElementNS(svg.namespaceURI, tag); for (const k in attrs) e.setAttribute(k, attrs[k]); if (text) e.textContent = text; svg.append(e); };
  add("line", { x1: L, y1: H - B, x2: W, y2: H - B, stroke: "#e3e6ec" });
  add("text", { x: 2, y: 12 }, max >= 10 ? max.toFixed(0) : max.toPrecision(2));
  add("text", { x: 2, y: H - B }, "0");
  if (points.length) {
    add("text", { x: L, y: H - 2 }, new Date(t0).toLocaleTimeString());
    add("text", { x: W - 60, y: H - 2 }, new Date(t1).toLocaleTimeString());
  }
  for (const s of series) {
    const d = points.filter((p) => p[s.key] != null).map((p) => x(p.t).toFixed(1) + "," + y(p[s.key]).toFixed(1)).join(" ");
    if (d) add("polyline", { points: d, fill: "none", stroke: s.color, "stroke-width": 1.8 });
  }
  const legend = el("div", { class: "legend" }, ...series.map((s) => el("span", {}, el("i", { style: "background:" + s.color }), s.name)));
  if (!points.length) legend.append(el("span", { class: "muted", text: "no points yet (sampled every 2 s while the dashboard is open)" }));
  box.replaceChildren(svg, legend);
}

// ---- nodes ----------------------------------------------------------------

async function nodesView() {
  const s = await api("/stats");
  setUpdated(s);
  const bar = (used, cap) => el("span", {}, el("span", { class: "bar" }, el("b", { style: "width:" + Math.min(100, cap ? (100 * used) / cap : 0).toFixed(0) + "%" })));
  const rows = s.nodes.map((n) => el("tr", { "data-node": n.ip },
    el("td", {}, el("span", { class: n.alive ? "alive" : "dead" }, el("span", { class: "dot" }), n.alive ? "alive" : "dead")),
    el("td", { text: n.ip }), el("td", { text: n.state }),
    el("td", {}, bar(n.used.cpu, n.capacity ? n.capacity.cpu : 0), n.used.cpu.toFixed(2) + " / " + (n.capacity ? n.capacity.cpu : "–")),
    el("td", {}, bar(n.used.memory, n.capacity ? n.capacity.memory : 0), fmt.bytes(n.used.memory) + " / " + (n.capacity ? fmt.bytes(n.capacity.memory) : "–")),
    el("td", { class: "num", text: String(n.containers) }), el("td", { class: "num", text: fmt.rate(n.rate) })));
  main.replaceChildren(el("h1", { text: "Nodes" }),
    s.nodes.length ? table(["Liveness", "Node", "State", "CPU (cores)", "Memory", "Containers", "Req/s"], rows, [5, 6])
      : el("p", { text: "No nodes: provision one with bismuthctl provision IP." }));
}

// ---- routing --------------------------------------------------------------

function route() {
  clearTimeout(timer);
  if (logs) { logs.close(); logs = null; }
  const hash = location.hash || "#/";
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", (a.dataset.nav === "nodes") === hash.startsWith("#/nodes"));
  const m = hash.match(/^#\/function\/([0-9a-f-]{36})$/);
  const view = m ? (first) => functionView(m[1], first) : hash.startsWith("#/nodes") ? nodesView : functionsView;
  let first = true;
  const tick = async () => {
    try { await view(first); first = false; } catch (e) { fail(e); }
    timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
}

window.addEventListener("hashchange", route);
route();
