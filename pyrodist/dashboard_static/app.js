const $ = (id) => document.getElementById(id);
const samples = [];  // finished tasks per second between two polls, the newest last
let previous = null, failureKey = null;
function el(tag, attrs, ...children) {  // text is always inserted as text, never parsed as HTML
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c ?? "")));
  return node;
}
function duration(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}
function render(st) {
  const m = st.master || {}, counts = st.counts || {};
  $("master-name").textContent = m.name ?? "?";
  $("master-info").textContent = "up " + duration(m.uptime || 0) + " · pid " + (m.pid ?? "?");
  $("store-error").textContent = m.store_error ? "store failing: " + m.store_error : "";
  for (const k of ["pending", "running"]) $("count-" + k).textContent = counts[k] ?? 0;
  for (const k of ["done", "failed", "cancelled"]) $("count-" + k).textContent = st[k] ?? counts[k] ?? 0;
  $("count-throughput").textContent = Number(st.throughput_1m || 0).toFixed(2);
  const rows = (st.workers || []).map((w) => el("tr", {"data-worker": w.id},
    el("td", {}, w.id), el("td", {}, w.host), el("td", {class: "n"}, w.pid), el("td", {}, w.state),
    el("td", {class: "n"}, w.running + " / " + w.concurrency), el("td", {class: "n"}, w.done),
    el("td", {class: "n"}, w.failed), el("td", {class: "n"}, duration(w.last_seen) + " ago")));
  if (!rows.length) rows.push(el("tr", {}, el("td", {colspan: 8, class: "muted"}, "no workers connected")));
  $("workers-body").replaceChildren(...rows);
  const lost = (st.lost_workers || []).length;
  $("workers-summary").textContent = (st.workers || []).length + " live" + (lost ? ", " + lost + " lost" : "");
  const now = performance.now() / 1000, finished = (st.done || 0) + (st.failed || 0);
  if (previous && now > previous.t) samples.push(Math.max(0, (finished - previous.n) / (now - previous.t)));
  previous = {t: now, n: finished};
  if (samples.length > 120) samples.splice(0, samples.length - 120);
  draw();
}
function draw() {
  const c = $("chart"), w = c.clientWidth || 600, h = c.clientHeight || 160, ctx = c.getContext("2d");
  c.width = w; c.height = h; c.dataset.samples = samples.length;
  const top = Math.max(1, ...samples) * 1.1, step = (w - 50) / 119;
  ctx.font = "11px sans-serif"; ctx.fillStyle = "#888"; ctx.strokeStyle = "#eee";
  for (const f of [0, 0.5, 1]) {
    const y = h - 15 - f * (h - 25);
    ctx.beginPath(); ctx.moveTo(45, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText((top * f).toFixed(top < 10 ? 1 : 0), 4, y + 4);
  }
  ctx.fillText("tasks finished per second, last " + samples.length + " s", 50, h - 2);
  if (samples.length < 2) return;
  ctx.beginPath(); ctx.strokeStyle = "#2f6fb3"; ctx.lineWidth = 2;
  samples.forEach((v, i) => {
    const x = w - (samples.length - 1 - i) * step, y = h - 15 - (v / top) * (h - 25);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}
function renderFailures(list) {
  const key = JSON.stringify(list.map((f) => f.id));
  if (key === failureKey) return;  // unchanged: keep what the reader opened
  const open = new Set([...$("failures").querySelectorAll("details[open]")].map((d) => d.dataset.task));
  if (failureKey === null && list.length) open.add(list[0].id);  // first load: show the newest traceback
  failureKey = key;
  const items = list.map((f) => {
    const e = f.error || {}, when = f.finished ? new Date(f.finished * 1000).toLocaleTimeString() : "";
    const d = el("details", {"data-task": f.id},
      el("summary", {}, when + " " + f.id + " " + f.func + " on " + (f.worker ?? "?") + ": ",
         el("b", {}, (e.type || "Error") + ": " + (e.message || ""))),
      el("pre", {}, e.traceback || "(no traceback)"));
    d.open = open.has(f.id);
    return d;
  });
  if (!items.length) items.push(el("p", {class: "muted"}, "no failures"));
  $("failures").replaceChildren(...items);
}
async function getJSON(path) {
  const r = await fetch(path, {cache: "no-store"});
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
async function refresh() {
  try {
    render(await getJSON("api/stats"));
    renderFailures(await getJSON("api/failures?limit=10"));
    $("status").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (err) {
    $("status").textContent = "cannot reach the master: " + err.message;
  }
  setTimeout(refresh, 1000);
}
refresh();
