/* smartmeter dashboard: plain JS over the local REST API and the live stream (/api/live, SSE).
   No build step, no CDN: uPlot is vendored under /static/vendor/uplot. */
"use strict";

const TOKEN_KEY = "smartmeter.token";
const HISTORY_EVERY_MS = 60000;   // history, cost and capacity: at least this often
const HISTORY_MIN_MS = 5000;      // ...and at most this often when a new quarter-hour begins
const STATUS_EVERY_MS = 5000;
const $ = (id) => document.getElementById(id);

let token = localStorage.getItem(TOKEN_KEY) || "";
let meterDay = null;      // YYYY-MM-DD of the latest reading, in the meter's own time
let lastQuarter = null;   // the quarter-hour of the latest reading
let historyAt = 0;
let historyTimer = null;
let currency = "EUR";
let source = null;
let loginWait = null;
const charts = {};

/* ------------------------------------------------------------ API */

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options = {}) {
  const headers = Object.assign({ Accept: "application/json" }, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) {
    await askToken(Boolean(token));
    return api(path, options);
  }
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) throw new ApiError(resp.status, (body && body.error) || resp.statusText);
  return body;
}

function askToken(refused) {
  if (loginWait) return loginWait;
  const dialog = $("login");
  $("login-error").hidden = !refused;
  loginWait = new Promise((resolve) => {
    $("login-form").onsubmit = () => {
      token = $("login-token").value.trim();
      localStorage.setItem(TOKEN_KEY, token);
      dialog.close();
      loginWait = null;
      resolve();
      connectLive();
    };
  });
  if (!dialog.open) dialog.showModal();
  return loginWait;
}

/* ------------------------------------------------------------ formatting */

function fmtPower(w) {
  if (w === null || w === undefined || Number.isNaN(w)) return "–";
  if (Math.abs(w) >= 10000) return (w / 1000).toFixed(1) + " kW";
  return Math.round(w).toLocaleString("en-US").replace(/,/g, "\u202f") + " W";
}

function fmtMoney(x) {
  if (x === null || x === undefined) return "–";
  try {
    return new Intl.NumberFormat(undefined, { style: "currency", currency }).format(x);
  } catch (e) {
    return x.toFixed(2) + " " + currency;
  }
}

function fmtKw(x) { return x === null || x === undefined ? "–" : x.toFixed(3) + " kW"; }

function fmtTime(iso) {
  if (!iso) return "–";
  // the meter's own local time as sent (YYYY-MM-DDTHH:MM:SS+hh:mm)
  return iso.slice(0, 10) + " " + iso.slice(11, 19);
}

function setNum(id, value, text) {
  const el = $(id);
  el.dataset.value = value === null || value === undefined ? "" : String(value);
  el.textContent = text;
}

function esc(s) {
  return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

/* ------------------------------------------------------------ dates (YYYY-MM-DD strings) */

function addDays(day, n) {
  const [y, m, d] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}

function monthStart(day, back = 0) {
  const [y, m] = day.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1 - back, 1)).toISOString().slice(0, 10);
}

function browserDay() {
  const t = new Date();
  return new Date(Date.UTC(t.getFullYear(), t.getMonth(), t.getDate())).toISOString().slice(0, 10);
}

/* ------------------------------------------------------------ live */

function connectLive() {
  if (source) source.close();
  const url = "/api/live" + (token ? "?access_token=" + encodeURIComponent(token) : "");
  source = new EventSource(url);
  source.onmessage = (ev) => {
    let cur;
    try { cur = JSON.parse(ev.data); } catch (e) { return; }
    showCurrent(cur);
  };
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {  // refused (401, 503): find out why, then retry
      setTimeout(() => { refreshStatus().finally(connectLive); }, 3000);
    }
  };
}

function showCurrent(cur) {
  const f = cur.fields || {};
  const imp = f.actual_total_consumption;
  const exp = f.actual_total_injection;
  setNum("live-import", imp === undefined ? null : Math.round(imp * 1000 * 1000) / 1000,
    imp === undefined ? "–" : fmtPower(imp * 1000));
  setNum("live-export", exp === undefined ? null : Math.round(exp * 1000 * 1000) / 1000,
    exp === undefined ? "–" : fmtPower(exp * 1000));
  setNum("live-net", cur.power_w, fmtPower(cur.power_w));
  const t = $("live-time");
  t.dateTime = cur.timestamp;
  t.textContent = fmtTime(cur.timestamp);
  t.dataset.seq = cur.seq;
  const phases = [1, 2, 3].map((n) => f["l" + n + "_voltage"]).filter((v) => v !== undefined);
  $("live-phases").textContent = phases.length ? "· " + phases.map((v) => v.toFixed(0) + " V").join(" / ") : "";
  for (const [name, state] of Object.entries(cur.relays || {})) {
    const el = document.querySelector(`[data-relay="${CSS.escape(name)}"] .relay-state`);
    if (el && el.textContent !== state) { el.textContent = state; el.className = "relay-state " + state; }
  }
  setBadge(true);
  const day = (cur.timestamp || "").slice(0, 10);
  const quarter = (cur.timestamp || "").slice(0, 14) + String(Math.floor(Number(cur.timestamp.slice(14, 16)) / 15));
  if (day && day !== meterDay) { meterDay = day; scheduleHistory(0); }
  else if (quarter !== lastQuarter) scheduleHistory(HISTORY_MIN_MS);
  lastQuarter = quarter;
}

function setBadge(online, label) {
  const b = $("meter-badge");
  const text = label || (online ? "online" : "offline");
  b.className = "badge " + text;
  b.textContent = text;
}

/* ------------------------------------------------------------ status and relays */

async function refreshStatus() {
  try {
    const s = await api("/api/energy/smart-meter/status");
    const c = s.counters || {};
    const errors = (c.crc_errors || 0) + (c.parse_errors || 0) + (c.decrypt_errors || 0);
    const state = s.connected === false ? "error" : (s.online ? "online" : "offline");
    setBadge(s.online, state);
    $("st-online").textContent = state;
    $("st-online").title = s.source || "";
    $("st-last").textContent = fmtTime(s.last_reading);
    $("st-meter").textContent = [s.meter_id, s.protocol].filter(Boolean).join(" · ") || "–";
    setNum("st-ok", c.telegrams_ok, String(c.telegrams_ok ?? "–"));
    setNum("st-errors", errors, `${errors} (CRC ${c.crc_errors || 0}, parse ${c.parse_errors || 0}, ` +
      `decrypt ${c.decrypt_errors || 0}, rejected ${c.rejected || 0})`);
    setNum("st-dropped", c.dropped, String(c.dropped ?? "–"));
    $("footer-version").textContent = s.version ? "smartmeter " + s.version : "";
    if (!meterDay && s.last_reading) meterDay = s.last_reading.slice(0, 10);
  } catch (e) {
    setBadge(false, "error");
    $("st-online").textContent = "web API: " + e.message;
  }
}

async function refreshRelays() {
  let relays;
  try { relays = (await api("/api/relays")).relays || []; } catch (e) { return; }
  renderRelays(relays);
}

function renderRelays(relays) {
  const ul = $("relays");
  if (!relays.length) { ul.innerHTML = '<li class="sub">none configured</li>'; return; }
  ul.innerHTML = relays.map((r) => {
    const blocked = (r.blocked_by || []).filter((x) => x !== "manual");
    const next = r.next_switch_allowed && blocked.length
      ? `<br>next switch from ${esc(fmtTime(r.next_switch_allowed))} (${esc(blocked.join(", "))})` : "";
    const buttons = ["on", "off", "auto"].map((m) =>
      `<button type="button" data-mode="${m}" aria-pressed="${r.mode === m}">${m}</button>`).join("");
    return `<li data-relay="${esc(r.name)}">
      <div class="relay-head"><strong>${esc(r.name)}</strong>
        <span class="relay-state ${esc(r.state)}">${esc(r.state)}</span>
        <span class="modes" role="group" aria-label="mode of ${esc(r.name)}">${buttons}</span></div>
      <div class="sub">mode ${esc(r.mode)}${r.reason ? " · " + esc(r.reason) : ""}${
        r.since ? " · since " + esc(fmtTime(r.since)) : ""}${next}</div></li>`;
  }).join("");
  for (const li of ul.querySelectorAll("li[data-relay]")) {
    for (const btn of li.querySelectorAll("button[data-mode]")) {
      btn.onclick = () => setMode(li.dataset.relay, btn.dataset.mode, li);
    }
  }
}

async function setMode(name, mode, li) {
  for (const b of li.querySelectorAll("button")) b.disabled = true;
  try {
    await api("/api/relays/" + encodeURIComponent(name), {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ mode }),
    });
  } catch (e) {
    li.querySelector(".sub").textContent = "refused: " + e.message;
  }
  await refreshRelays();
}

/* ------------------------------------------------------------ history, cost, capacity */

function scheduleHistory(delay) {
  if (historyTimer !== null) return;
  const wait = Math.max(delay, historyAt + HISTORY_MIN_MS - Date.now(), 0);
  historyTimer = setTimeout(() => { historyTimer = null; refreshHistory(); }, delay === 0 ? 0 : wait);
}

async function optional(promise) {
  try { return await promise; } catch (e) { if (e.status === 401) throw e; return null; }
}

async function refreshHistory() {
  historyAt = Date.now();
  const day = meterDay || browserDay();
  const q = (res, from, to) => `/api/energy/smart-meter/history?resolution=${res}&from=${from}&to=${to}`;
  const [today, yesterday, days, months, cost, cap] = await Promise.all([
    optional(api(q("quarter", day, addDays(day, 1)))),
    optional(api(q("quarter", addDays(day, -1), day))),
    optional(api(q("day", addDays(day, -30), addDays(day, 1)))),
    optional(api(q("month", monthStart(day, 11), addDays(day, 1)))),
    optional(api(`/api/energy/smart-meter/cost?from=${monthStart(day)}&to=${addDays(day, 1)}`)),
    optional(api("/api/energy/smart-meter/capacity")),
  ]);
  if (cost) currency = cost.currency || currency;
  $("today-date").textContent = day;
  drawToday(today ? today.rows : [], yesterday ? yesterday.rows : []);
  drawBars("days", days ? days.rows : [], Array.from({ length: 31 }, (_, i) => addDays(day, i - 30)),
    (s) => s.slice(0, 10));
  drawBars("months", months ? months.rows : [], Array.from({ length: 12 }, (_, i) => monthStart(day, 11 - i).slice(0, 7)),
    (s) => s.slice(0, 7));
  showCost(cost);
  showCapacity(cap);
}

function showCost(cost) {
  const so = cost ? cost.total.total : null;
  const month = cost && cost.projection ? cost.projection.month : null;
  const pr = month && month.projected ? month.projected.total : null;
  setNum("cost-month", so, fmtMoney(so));
  setNum("cost-projected", pr, fmtMoney(pr));
}

function showCapacity(cap) {
  const peak = cap ? cap.month_peak_kw : null;
  const mean = cap ? cap.mean_12m_kw : null;
  const floor = cap ? cap.floor_kw : null;
  $("cap-month").textContent = cap ? cap.month : "";
  setNum("cap-peak", peak, fmtKw(peak) + (cap && cap.month_peak_at ? " at " + fmtTime(cap.month_peak_at).slice(5, 16) : ""));
  setNum("cap-mean", mean, fmtKw(mean));
  setNum("cap-floor", floor, fmtKw(floor));
  const top = Math.max(peak || 0, mean || 0, floor || 0) * 1.15 || 1;
  $("cap-bar").style.width = ((peak || 0) / top * 100).toFixed(1) + "%";
  $("cap-mean-mark").style.left = (Math.max(mean || 0, floor || 0) / top * 100).toFixed(1) + "%";
}

/* ------------------------------------------------------------ charts (uPlot) */

function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

function size(el) { return { width: Math.max(el.clientWidth, 200), height: 220 }; }

function axes(yLabel, xValues, y2Label) {
  const grid = { stroke: css("--line"), width: 1 };
  const stroke = css("--muted");
  const a = [
    { stroke, grid, values: xValues },
    { stroke, grid, label: yLabel, size: 50 },
  ];
  if (y2Label) a.push({ stroke, grid: { show: false }, side: 1, scale: "money", label: y2Label, size: 50 });
  return a;
}

function quarterOfDay(iso) { return Number(iso.slice(11, 13)) + Number(iso.slice(14, 16)) / 60; }

function drawToday(rows, prev) {
  const xs = Array.from({ length: 96 }, (_, i) => i / 4);
  const col = (list, key) => {
    const out = new Array(96).fill(null);
    for (const r of list) out[Math.round(quarterOfDay(r.start) * 4) % 96] = Math.round(r[key] * 4 * 1000) / 1000;
    return out;
  };
  const data = [xs, col(rows, "import_kwh"), col(rows, "export_kwh"), col(prev, "import_kwh"), col(prev, "export_kwh")];
  $("today-empty").hidden = rows.length > 0 || prev.length > 0;
  const el = $("chart-today");
  el.dataset.rows = String(rows.length);
  if (!charts.today) {
    const imp = css("--import"), exp = css("--export");
    charts.today = new uPlot({
      ...size(el),
      scales: { x: { time: false, range: [0, 24] } },
      axes: axes("kW", (u, splits) => splits.map((h) => String(Math.floor(h)).padStart(2, "0") + ":00")),
      series: [
        { label: "time", value: (u, h) => h === null ? "–" :
          String(Math.floor(h)).padStart(2, "0") + ":" + String(Math.round((h % 1) * 60)).padStart(2, "0") },
        { label: "import", stroke: imp, width: 2, fill: imp + "22", points: { show: false } },
        { label: "export", stroke: exp, width: 2, fill: exp + "22", points: { show: false } },
        { label: "import yesterday", stroke: imp, width: 1, dash: [5, 4], points: { show: false } },
        { label: "export yesterday", stroke: exp, width: 1, dash: [5, 4], points: { show: false } },
      ],
    }, data, el);
  } else {
    charts.today.setData(data);
  }
}

function drawBars(name, rows, slots, key) {
  const el = $("chart-" + name);
  el.dataset.rows = String(rows.length);
  const byKey = new Map(rows.map((r) => [key(r.start), r]));
  const pick = (f) => slots.map((k) => (byKey.has(k) ? f(byKey.get(k)) : null));
  const labels = slots.map((k) => (name === "days" ? k.slice(5) : k));
  const data = [
    slots.map((_, i) => i),
    pick((r) => r.import_kwh),
    pick((r) => r.export_kwh),
    pick((r) => (r.cost ? r.cost.total : null)),
  ];
  const chart = charts[name];
  if (chart) {
    chart.holder.labels = labels;
    chart.setData(data);
    return;
  }
  const bars = (align) => uPlot.paths.bars({ size: [0.4, 40], align });
  const holder = { labels };
  const xValues = (u, splits) => splits.map((i) => holder.labels[i] || "");
  const c = new uPlot({
    ...size(el),
    scales: { x: { time: false, range: (u, lo, hi) => [lo - 0.6, hi + 0.6] }, money: { auto: true } },
    axes: axes("kWh", xValues, currency),
    series: [
      { label: name === "days" ? "day" : "month", value: (u, i) => (i === null ? "–" : holder.labels[i] || "") },
      { label: "import kWh", stroke: css("--import"), fill: css("--import") + "cc", paths: bars(-1), points: { show: false } },
      { label: "export kWh", stroke: css("--export"), fill: css("--export") + "cc", paths: bars(1), points: { show: false } },
      { label: "cost", stroke: css("--cost"), width: 2, scale: "money", spanGaps: false, points: { show: true, size: 5 },
        value: (u, v) => fmtMoney(v) },
    ],
  }, data, el);
  c.holder = holder;
  charts[name] = c;
}

function resizeCharts() {
  for (const [name, chart] of Object.entries(charts)) chart.setSize(size($("chart-" + name)));
}

/* ------------------------------------------------------------ start */

async function start() {
  connectLive();
  await refreshStatus();
  refreshRelays();
  scheduleHistory(0);
  setInterval(refreshStatus, STATUS_EVERY_MS);
  setInterval(refreshRelays, STATUS_EVERY_MS * 2);
  setInterval(() => scheduleHistory(0), HISTORY_EVERY_MS);
  let resizing = null;
  window.addEventListener("resize", () => { clearTimeout(resizing); resizing = setTimeout(resizeCharts, 150); });
}

start();
