// devline live dashboard. Vanilla JS, no build step, no third-party code.
//
// Loads the plan's structure once (GET /api/ui/plans/<id>), then follows the read side's
// WebSocket (/ws, protocol in streams/observe/ws.py): `plan:<id>` deltas recolour nodes,
// `workers` snapshots feed the swimlanes, `metric:<name>` windows the sparklines, and
// `rollout:<plan>` the rollout panel when the service provides that channel (otherwise the
// panel is read from GET /api/rollouts/<plan> now and then).
"use strict";

(function () {
  const params = new URLSearchParams(location.search);
  const planId = params.get("plan");
  const token = params.get("token");
  const metricNames = (params.get("metrics") || "qa.chain_seconds,qa.check_seconds,integration.shard_seconds")
    .split(",").map((s) => s.trim()).filter(Boolean);
  const SVGNS = "http://www.w3.org/2000/svg";
  const STATES = {
    waiting: "#9aa5b1", ready: "#4c9aff", dispatched: "#f5a623", retry_wait: "#d4b106",
    failed: "#e5533d", fixing: "#b04ce0", done: "#56b870", verified: "#1f8a4c",
    dead: "#5c1a1a",
  };
  const COUNTER_EVENTS = new Set(["TaskFailed", "TaskRetryScheduled", "TaskRedriveRequested",
    "TaskCompleted"]);
  const LANE_WINDOW_MS = 120000;

  // What the page knows; window.devlineUI exposes it to tests and the console.
  const ui = {
    plan: null, nodes: new Map(), critical: new Set(), seq: {}, epoch: null,
    live: { events: 0, changes: 0, snapshots: 0, resyncs: 0, reconnects: 0 },
    workers: new Map(), samples: [], metrics: new Map(), rolloutChannel: null,
  };
  window.devlineUI = ui;

  function el(tag, attrs, text) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function $(id) { return document.getElementById(id); }
  function headers() { return token ? { Authorization: "Bearer " + token } : {}; }
  async function getJSON(path) {
    const r = await fetch(path, { headers: headers(), cache: "no-store" });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw Object.assign(new Error(body.error || r.statusText), { status: r.status });
    return body;
  }

  // -- the plan's DAG -----------------------------------------------------------------------
  function levelsOf(tasks) {
    // Longest-path layering: a task sits one level right of its deepest dependency.
    const byId = new Map(tasks.map((t) => [t.id, t]));
    const level = new Map();
    const visit = (id, stack) => {
      if (level.has(id)) return level.get(id);
      if (stack.has(id)) return 0; // a cycle cannot be accepted; guard anyway
      stack.add(id);
      const deps = (byId.get(id) || { depends_on: [] }).depends_on.filter((d) => byId.has(d));
      const l = deps.length ? 1 + Math.max(...deps.map((d) => visit(d, stack))) : 0;
      stack.delete(id);
      level.set(id, l);
      return l;
    };
    tasks.forEach((t) => visit(t.id, new Set()));
    return level;
  }

  function drawDag(plan) {
    const svg = $("dag");
    svg.replaceChildren();
    ui.nodes.clear();
    ui.critical = new Set(plan.critical_path || []);
    const level = levelsOf(plan.tasks);
    const columns = [];
    for (const t of plan.tasks) (columns[level.get(t.id)] ||= []).push(t);
    const W = 180, H = 42, GX = 60, GY = 14, PAD = 10;
    const pos = new Map();
    columns.forEach((col, x) => {
      // Order each column by the mean row of its dependencies: fewer crossings.
      col.sort((a, b) => bary(a) - bary(b) || a.id.localeCompare(b.id));
      col.forEach((t, y) => pos.set(t.id, { x: PAD + x * (W + GX), y: PAD + y * (H + GY), row: y }));
    });
    function bary(t) {
      const rows = t.depends_on.filter((d) => pos.has(d)).map((d) => pos.get(d).row);
      return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : 0;
    }
    const height = PAD * 2 + Math.max(1, ...columns.map((c) => c.length)) * (H + GY);
    svg.setAttribute("width", PAD * 2 + columns.length * (W + GX));
    svg.setAttribute("height", height);
    const cp = plan.critical_path || [];
    const critEdges = new Set(cp.slice(1).map((id, i) => cp[i] + "\u0000" + id));
    const edges = el("g", { class: "edges" });
    for (const t of plan.tasks) {
      for (const d of t.depends_on) {
        if (!pos.has(d)) continue;
        const a = pos.get(d), b = pos.get(t.id);
        const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
        const crit = critEdges.has(d + "\u0000" + t.id);
        edges.appendChild(el("path", {
          class: "edge" + (crit ? " critical" : ""),
          d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`,
        }));
      }
    }
    svg.appendChild(edges);
    for (const t of plan.tasks) {
      const p = pos.get(t.id);
      const g = el("g", { class: "node" + (ui.critical.has(t.id) ? " critical" : ""),
        transform: `translate(${p.x},${p.y})`, "data-task": t.id });
      const title = el("title");
      const rect = el("rect", { width: W, height: H, rx: 5 });
      const name = t.path.split("/").pop();
      const label = el("text", { x: 8, y: 16 }, name.length > 26 ? name.slice(0, 25) + "…" : name);
      const counters = el("text", { x: 8, y: 33, class: "counters" });
      g.append(title, rect, label, counters);
      svg.appendChild(g);
      ui.nodes.set(t.id, { task: t, g, rect, title, counters });
      paint(t.id);
    }
    $("dag-note").textContent = cp.length
      ? `critical path: ${cp.join(" → ")}` : "";
  }

  function paint(id, changed) {
    const n = ui.nodes.get(id);
    if (!n) return;
    const t = n.task;
    n.g.setAttribute("data-state", t.state);
    n.rect.setAttribute("fill", STATES[t.state] || "#777");
    n.counters.textContent = `${t.state} · try ${t.attempt} · fix ${t.fixes}` +
      (t.cached ? " · cached" : "");
    n.title.textContent = `${t.path}\nstate ${t.state}, attempt ${t.attempt}, fixes ${t.fixes}` +
      `\nlevel ${t.level}, priority ${t.priority.toFixed(2)}` +
      (ui.critical.has(id) ? "\non the critical path" : "");
    if (changed) {
      n.g.classList.remove("changed");
      void n.g.getBBox(); // restart the flash animation
      n.g.classList.add("changed");
    }
  }

  function setState(id, state) {
    const n = ui.nodes.get(id);
    if (!n || !state || n.task.state === state) return false;
    n.task.state = state;
    paint(id, true);
    ui.live.changes += 1;
    return true;
  }

  function showPlanHeader(status, done, files) {
    if (status) $("plan-status").textContent = status;
    if (ui.plan) {
      if (done !== undefined) ui.plan.done = done;
      if (files !== undefined) ui.plan.files = files;
      $("plan-progress").textContent = `${ui.plan.done}/${ui.plan.files} files`;
    }
  }

  let counterTimer = null;
  function refreshCountersSoon() {
    // Attempts and fix counts are not in the deltas: read them again, at most once a second.
    if (counterTimer) return;
    counterTimer = setTimeout(async () => {
      counterTimer = null;
      try {
        const plan = await getJSON(`/api/ui/plans/${encodeURIComponent(planId)}`);
        for (const t of plan.tasks) {
          const n = ui.nodes.get(t.id);
          if (!n) continue;
          if (n.task.attempt !== t.attempt || n.task.fixes !== t.fixes || n.task.cached !== t.cached) {
            Object.assign(n.task, { attempt: t.attempt, fixes: t.fixes, cached: t.cached });
            paint(t.id);
          }
        }
        showPlanHeader(undefined, plan.done, plan.files);
      } catch (e) { /* the plan may have been evicted; deltas go on */ }
    }, 1000);
  }

  function onPlan(msg) {
    if (msg.type === "snapshot") {
      const d = msg.data;
      ui.live.snapshots += 1;
      for (const [id, st] of Object.entries(d.task_states || {})) setState(id, st);
      showPlanHeader(d.status, d.done, d.files);
      refreshCountersSoon();
      return;
    }
    const d = msg.data;
    ui.live.events += 1;
    if (d.task) setState(d.task, d.status);
    if (d.plan_status) showPlanHeader(d.plan_status);
    if (d.type === "TaskCompleted" && ui.plan) {
      ui.plan.done = [...ui.nodes.values()].filter((n) => ["done", "verified"].includes(n.task.state)).length;
      showPlanHeader();
    }
    if (COUNTER_EVENTS.has(d.type)) refreshCountersSoon();
  }

  // -- workers --------------------------------------------------------------------------------
  function onWorkers(msg) {
    const snap = msg.data || {};
    const now = Date.now();
    ui.samples.push({ at: now, workers: (snap.workers || []).map((w) => ({ ...w })) });
    while (ui.samples.length && now - ui.samples[0].at > LANE_WINDOW_MS * 1.5) ui.samples.shift();
    $("workers-count").textContent = `${snap.current ?? 0} live` +
      (snap.desired != null ? `, ${snap.desired} desired` : "");
    drawLanes();
  }

  function drawLanes() {
    const svg = $("lanes");
    const width = Math.max(300, svg.parentElement.clientWidth - 24);
    const now = Date.now(), t0 = now - LANE_WINDOW_MS;
    const ids = [...new Set(ui.samples.flatMap((s) => s.workers.map((w) => w.worker_id)))].sort();
    const LH = 22, LX = 110, top = 4;
    svg.replaceChildren();
    svg.setAttribute("width", width);
    svg.setAttribute("height", top + Math.max(1, ids.length) * LH + 16);
    const x = (t) => LX + ((Math.max(t, t0) - t0) / LANE_WINDOW_MS) * (width - LX - 4);
    if (!ids.length) {
      svg.appendChild(el("text", { x: 4, y: 16, class: "axis" }, "no live workers"));
      return;
    }
    ids.forEach((id, i) => {
      const y = top + i * LH;
      svg.appendChild(el("text", { x: 2, y: y + 14, class: "lane-label" },
        id.length > 16 ? "…" + id.slice(-15) : id));
      svg.appendChild(el("rect", { x: LX, y: y + 2, width: width - LX - 4, height: LH - 6,
        fill: "#eef1f4" }));
      // Each sample holds until the next one: a bar per interval, shaded by load.
      for (let k = 0; k < ui.samples.length; k++) {
        const s = ui.samples[k], next = ui.samples[k + 1];
        const w = s.workers.find((v) => v.worker_id === id);
        if (!w) continue;
        const end = next ? next.at : now;
        if (end < t0) continue;
        const cap = Math.max(1, w.capacity || 1), load = Math.min(1, (w.running || 0) / cap);
        const fill = w.running ? `rgba(245,166,35,${0.35 + 0.65 * load})` : "#c9d6e3";
        const r = el("rect", { x: x(s.at), y: y + 2, width: Math.max(1, x(end) - x(s.at)),
          height: LH - 6, fill });
        r.appendChild(el("title", {}, `${id}: ${w.state}, running ${w.running}/${cap}`));
        svg.appendChild(r);
      }
    });
    svg.appendChild(el("text", { x: LX, y: top + ids.length * LH + 12, class: "axis" }, "-2 min"));
    svg.appendChild(el("text", { x: width - 30, y: top + ids.length * LH + 12, class: "axis" }, "now"));
  }

  // -- metric sparklines ----------------------------------------------------------------------
  function onMetric(name, msg) {
    let m = ui.metrics.get(name);
    if (!m) ui.metrics.set(name, (m = new Map()));
    const add = (w) => {
      if (!w || w.window_start == null) return;
      // Smallest window size only; several series (dims) of one window: keep the worst.
      const key = `${w.window_size_ms}:${w.window_start}`;
      const old = m.get(key);
      m.set(key, old ? { ...w, p50: Math.max(old.p50, w.p50), p95: Math.max(old.p95, w.p95) } : w);
    };
    if (msg.type === "snapshot") (msg.data.windows || []).forEach(add);
    else add(msg.data);
    drawSpark(name);
  }

  function drawSpark(name) {
    const row = document.querySelector(`.spark[data-metric="${CSS.escape(name)}"]`);
    const m = ui.metrics.get(name) || new Map();
    const all = [...m.values()];
    const size = Math.min(...all.map((w) => w.window_size_ms));
    const pts = all.filter((w) => w.window_size_ms === size)
      .sort((a, b) => a.window_start - b.window_start).slice(-40);
    while (m.size > 200) m.delete(m.keys().next().value);
    const svg = row.querySelector("svg");
    svg.replaceChildren();
    const W = 160, H = 30;
    if (!pts.length) {
      row.querySelector(".vals").textContent = "no closed window yet";
      return;
    }
    const top = Math.max(...pts.map((p) => p.p95), 1e-9);
    const line = (key) => pts.map((p, i) =>
      `${pts.length === 1 ? W / 2 : (i / (pts.length - 1)) * W},${H - 2 - (p[key] / top) * (H - 4)}`).join(" ");
    svg.appendChild(el("polyline", { class: "p95", points: line("p95") }));
    svg.appendChild(el("polyline", { class: "p50", points: line("p50") }));
    const last = pts[pts.length - 1];
    row.querySelector(".vals").textContent = `p50 ${fmt(last.p50)} · p95 ${fmt(last.p95)}`;
  }
  function fmt(v) { return v >= 10 ? v.toFixed(0) : v >= 1 ? v.toFixed(2) : v.toFixed(3); }

  function buildSparkRows() {
    const box = $("sparklines");
    for (const name of metricNames) {
      const row = document.createElement("div");
      row.className = "spark";
      row.dataset.metric = name;
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = name;
      label.title = name;
      const svg = el("svg", { width: 160, height: 30 });
      const vals = document.createElement("span");
      vals.className = "vals";
      vals.textContent = "waiting for windows";
      row.append(label, svg, vals);
      box.appendChild(row);
    }
  }

  // -- rollout ----------------------------------------------------------------------------------
  let rolloutPoll = null;
  function showRollout(r) {
    const body = $("rollout-body");
    body.replaceChildren();
    const open = r && r.rollout && !["done", "aborted", "rolled_back", "failed", "superseded"].includes(r.phase);
    $("promote").disabled = !open;
    $("abort").disabled = !open;
    if (!r || !r.rollout) {
      body.textContent = r && r.error ? r.error : "no rollout for this plan";
      return;
    }
    const dl = document.createElement("dl");
    const add = (k, v) => {
      const dt = document.createElement("dt"), dd = document.createElement("dd");
      dt.textContent = k;
      dd.textContent = v;
      dl.append(dt, dd);
    };
    add("phase", r.phase);
    add("step", `${r.step + 1}/${(r.steps || []).length}`);
    add("weight", r.weight == null ? "?" : `${r.weight}%` + (r.deployed ? " (live)" : ""));
    for (const v of r.verdicts || []) add(v.metric, JSON.stringify(v.last));
    if (r.judgement) add("judgement", JSON.stringify(r.judgement));
    if (r.failure) add("failure", r.failure.reason || JSON.stringify(r.failure));
    if (r.last_control) add("last control", `${r.last_control.action} by ${r.last_control.by}`);
    body.appendChild(dl);
  }

  async function loadRollout() {
    try {
      showRollout(await getJSON(`/api/rollouts/${encodeURIComponent(planId)}`));
    } catch (e) {
      showRollout({ rollout: false, error: `rollout not readable (${e.message})` });
    }
  }

  function pollRollout() {
    if (rolloutPoll) return;
    loadRollout();
    rolloutPoll = setInterval(loadRollout, 15000);
  }

  async function control(action) {
    if (action === "abort" && !confirm(`Abort the rollout of ${planId}?`)) return;
    $("rollout-msg").textContent = `sending ${action}…`;
    try {
      const r = await fetch(`/api/rollouts/${encodeURIComponent(planId)}/${action}`, {
        method: "POST", headers: { ...headers(), "X-Devline-UI": "1" } });
      const body = await r.json().catch(() => ({}));
      $("rollout-msg").textContent = r.ok ? `${action} sent (${body.event_id})`
        : `${action} refused: ${body.error || r.status}`;
      if (r.ok && !ui.rolloutChannel) setTimeout(loadRollout, 1500);
    } catch (e) {
      $("rollout-msg").textContent = `${action} not sent: ${e.message}`;
    }
  }

  // -- the WebSocket ----------------------------------------------------------------------------
  let ws = null, backoff = 500;
  const channels = new Map(); // channel -> handler

  function send(op) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(op)); }

  function subscribe(channel, resume) {
    const op = { op: "subscribe", channel };
    if (resume && ui.seq[channel] != null && ui.epoch) {
      op.since_seq = ui.seq[channel];
      op.epoch = ui.epoch;
    }
    send(op);
  }

  function setConn(state, text) {
    $("conn").dataset.state = state;
    $("conn").textContent = text || state;
  }

  function connect() {
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (token) url.searchParams.set("token", token);
    ws = new WebSocket(url);
    ws.onopen = () => {
      backoff = 500;
      setConn("live");
      for (const ch of channels.keys()) subscribe(ch, true);
    };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      onMessage(msg);
    };
    ws.onclose = (ev) => {
      ui.live.reconnects += 1;
      setConn(ev.code === 1006 && ui.live.reconnects > 3 ? "closed" : "reconnecting",
        `reconnecting (${ev.code})`);
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 10000);
    };
  }

  function onMessage(msg) {
    switch (msg.type) {
      case "snapshot":
        ui.epoch = msg.epoch;
        ui.seq[msg.channel] = msg.seq;
        dispatch(msg);
        break;
      case "event": {
        const last = ui.seq[msg.channel];
        if (last != null && msg.seq > last + 1) { subscribe(msg.channel, true); return; } // a gap
        if (last != null && msg.seq <= last) return; // replayed twice
        ui.seq[msg.channel] = msg.seq;
        dispatch(msg);
        break;
      }
      case "heartbeat":
        if (ui.epoch && msg.epoch !== ui.epoch) {
          ui.epoch = msg.epoch; // the service restarted: start every channel over
          ui.seq = {};
          for (const ch of channels.keys()) subscribe(ch, false);
          break;
        }
        for (const [ch, seq] of Object.entries(msg.seq_by_channel || {})) {
          if (ui.seq[ch] != null && seq > ui.seq[ch]) subscribe(ch, true);
        }
        break;
      case "resync_required":
        ui.live.resyncs += 1;
        delete ui.seq[msg.channel];
        subscribe(msg.channel, false);
        break;
      case "error":
        if (msg.channel && msg.channel.startsWith("rollout:")) {
          channels.delete(msg.channel);
          ui.rolloutChannel = null;
          pollRollout(); // no rollout channel on this service: read the log now and then
        } else if (msg.channel && msg.channel.startsWith("plan:")) {
          $("dag-note").textContent = `live updates stopped: ${msg.message} (finished and evicted?)`;
        } else if (msg.channel && msg.channel.startsWith("metric:")) {
          const row = document.querySelector(`.spark[data-metric="${CSS.escape(msg.channel.slice(7))}"] .vals`);
          if (row) row.textContent = msg.message;
        }
        break;
      default:
        break;
    }
  }

  function dispatch(msg) {
    const handler = channels.get(msg.channel);
    if (handler) handler(msg);
  }

  // -- start ------------------------------------------------------------------------------------
  async function showPicker() {
    $("picker").hidden = false;
    $("rollout-body").textContent = "pick a plan";
    try {
      const { plans } = await getJSON("/api/ui/plans");
      const list = $("plan-list");
      for (const p of plans) {
        const li = document.createElement("li"), a = document.createElement("a");
        const q = new URLSearchParams({ plan: p.plan_id });
        if (token) q.set("token", token);
        a.href = "/?" + q;
        a.textContent = `${p.plan_id} ${p.name || ""}`;
        li.append(a, ` ${p.status} ${p.done}/${p.files}`);
        list.appendChild(li);
      }
      $("picker-note").textContent = plans.length ? "" : "no live plan: submit one, or open /?plan=<id>";
    } catch (e) {
      $("picker-note").textContent = `plans not readable: ${e.message}`;
    }
  }

  async function start() {
    buildSparkRows();
    channels.set("workers", onWorkers);
    for (const name of metricNames) channels.set(`metric:${name}`, (msg) => onMetric(name, msg));
    $("promote").addEventListener("click", () => control("promote"));
    $("abort").addEventListener("click", () => control("abort"));
    setInterval(drawLanes, 2000);
    setInterval(() => send({ op: "ping" }), 20000);
    if (!planId) {
      showPicker();
      connect();
      return;
    }
    $("plan-title").textContent = `plan ${planId}`;
    try {
      ui.plan = await getJSON(`/api/ui/plans/${encodeURIComponent(planId)}`);
    } catch (e) {
      $("picker-note").textContent = `plan ${planId}: ${e.message}`;
      showPicker();
      connect();
      return;
    }
    $("plan-title").textContent = `plan ${planId}` + (ui.plan.name ? ` · ${ui.plan.name}` : "");
    $("dag-panel").hidden = false;
    $("legend").replaceChildren(...Object.entries(STATES).map(([s, c]) => {
      const span = document.createElement("span");
      span.style.setProperty("--c", c);
      span.textContent = s;
      return span;
    }));
    drawDag(ui.plan);
    showPlanHeader(ui.plan.status, ui.plan.done, ui.plan.files);
    channels.set(`plan:${planId}`, onPlan);
    ui.rolloutChannel = `rollout:${planId}`;
    channels.set(ui.rolloutChannel, (msg) => showRollout(msg.data));
    document.body.dataset.ready = "1";
    connect();
  }

  start();
})();
