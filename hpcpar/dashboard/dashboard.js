// The hpcpar dashboard page: server-sent events in, canvases and a virtualised list out.
// Drawing is throttled to animation frames, and the clock-driven parts (task stream,
// "running for") redraw 4 times a second, so 1,000 engines cost a few milliseconds a frame.
"use strict";
(function () {
  const ROW_H = 22;
  const MAX_TASKS = 50000; // as the server keeps: bounds memory and drawing time
  const S = {
    engines: new Map(), order: [], tasks: [], series: [], failures: [], jobs: [], totals: {},
    seq: -1, offset: 0, window: 300, status: false, error: null, title: "", lastPoint: null,
  };
  const dirty = { summary: true, engines: true, map: true, stream: true, series: true, jobs: true, failures: true, mpi: true };
  const $ = (id) => document.getElementById(id);
  const serverNow = () => Date.now() / 1000 + S.offset;

  // -- colours -----------------------------------------------------------------------------
  const STATE_COLOURS = { idle: "#9ccc65", busy: "#42a5f5", draining: "#ffb300", dead: "#9e9e9e" };
  const FAIL = "#d32f2f";
  // Functions get distinct colours in the order the page meets them, then hashed hues.
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31"];
  const colours = new Map();
  function colourOf(name) {
    let c = colours.get(name);
    if (c === undefined) {
      if (colours.size < PALETTE.length) c = PALETTE[colours.size];
      else {
        let h = 0;
        for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
        c = "hsl(" + (h % 360) + ",55%,45%)";
      }
      colours.set(name, c);
    }
    return c;
  }
  // "dir/file.py:12 fn" -> "file.py:12 fn" (the full text is the cell's tooltip)
  const shortCall = (call) => (call ? call.replace(/^.*\//, "") : "");
  const callName = (call) => (call ? call.split(" ").pop() : null);

  // -- formatting --------------------------------------------------------------------------
  function dur(s) {
    if (s === null || s === undefined || !isFinite(s)) return "";
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(Math.floor(s % 60)).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }
  function bytes(b) {
    if (b === null || b === undefined) return "";
    if (b < 1 << 20) return (b / 1024).toFixed(0) + " KiB";
    if (b < 1 << 30) return (b / (1 << 20)).toFixed(0) + " MiB";
    return (b / (1 << 30)).toFixed(2) + " GiB";
  }
  const show = (v) => (v === null || v === undefined ? "" : String(v));
  const clock = (t) => new Date(t * 1000).toLocaleTimeString();
  function rangeText(nums) {
    const out = [];
    for (let i = 0; i < nums.length; i++) {
      let j = i;
      while (j + 1 < nums.length && nums[j + 1] === nums[j] + 1) j++;
      out.push(j > i ? nums[i] + "-" + nums[j] : String(nums[i]));
      i = j;
    }
    return out.join(",");
  }

  // -- applying messages -------------------------------------------------------------------
  function setEngines(rows) {
    let added = false;
    for (const e of rows) {
      if (!S.engines.has(e.id)) added = true;
      S.engines.set(e.id, e);
    }
    if (added) S.order = Array.from(S.engines.keys()).sort((a, b) => a - b);
  }
  function trimTasks() {
    const horizon = serverNow() - S.window;
    let i = Math.max(0, S.tasks.length - MAX_TASKS); // a very busy cluster: the newest bars only
    while (i < S.tasks.length && S.tasks[i].c < horizon) i++;
    if (i > 0) S.tasks.splice(0, i);
    let j = 0;
    while (j < S.series.length && S.series[j].t < horizon) j++;
    if (j > 0) S.series.splice(0, j);
  }
  function handle(m) {
    if (m.now) S.offset = m.now - Date.now() / 1000;
    if (m.type === "snapshot") {
      S.seq = m.seq; S.window = m.window; S.title = m.title || "";
      S.engines = new Map(); S.order = [];
      setEngines(m.engines);
      S.tasks = m.tasks.slice(); S.series = m.series.slice();
      S.failures = m.failures.slice(); S.jobs = m.jobs || []; S.totals = m.totals || {};
      S.error = m.error; S.status = m.status;
      S.lastPoint = S.series.length ? S.series[S.series.length - 1] : null;
      for (const k in dirty) dirty[k] = true;
      $("title").textContent = S.title;
      return;
    }
    if (m.seq <= S.seq) return; // already in the snapshot
    S.seq = m.seq;
    if ("error" in m) { S.error = m.error; dirty.summary = true; }
    if (m.engines) { setEngines(m.engines); dirty.engines = dirty.map = dirty.mpi = dirty.summary = dirty.stream = dirty.jobs = true; }
    if (m.removed) {
      for (const id of m.removed) S.engines.delete(id);
      S.order = Array.from(S.engines.keys()).sort((a, b) => a - b);
      dirty.engines = dirty.map = dirty.mpi = dirty.summary = true;
    }
    if (m.tasks) { for (const t of m.tasks) S.tasks.push(t); dirty.stream = true; }
    if (m.point) { S.series.push(m.point); S.lastPoint = m.point; dirty.series = dirty.summary = true; }
    if (m.failures) {
      for (const f of m.failures) S.failures.push(f);
      if (S.failures.length > 25) S.failures.splice(0, S.failures.length - 25);
      dirty.failures = true;
    }
    if (m.jobs) { S.jobs = m.jobs; dirty.jobs = true; }
    if (m.totals) { S.totals = m.totals; dirty.summary = true; }
    if ("status" in m) S.status = m.status;
    trimTasks();
  }

  // -- drawing -----------------------------------------------------------------------------
  function fitCanvas(cv, cssHeight) {
    const ratio = window.devicePixelRatio || 1;
    const w = cv.clientWidth;
    if (cssHeight !== undefined) cv.style.height = cssHeight + "px";
    const h = cssHeight !== undefined ? cssHeight : cv.clientHeight;
    if (cv.width !== Math.round(w * ratio) || cv.height !== Math.round(h * ratio)) {
      cv.width = Math.round(w * ratio);
      cv.height = Math.round(h * ratio);
    }
    const ctx = cv.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return { ctx, w, h };
  }

  function counts() {
    const c = { idle: 0, busy: 0, draining: 0, dead: 0 };
    for (const e of S.engines.values()) c[e.state] = (c[e.state] || 0) + 1;
    return c;
  }

  function drawSummary() {
    const c = counts();
    $("n-engines").textContent = S.engines.size - c.dead;
    $("n-busy").textContent = c.busy; $("n-idle").textContent = c.idle;
    $("n-draining").textContent = c.draining; $("n-dead").textContent = c.dead;
    const p = S.lastPoint;
    $("n-queued").textContent = p ? p.queued : 0;
    $("rate").textContent = p ? p.rate.toFixed(1) : "0";
    $("n-finished").textContent = S.totals.finished !== undefined ? S.totals.finished : 0;
    const conn = $("conn");
    if (S.error) { conn.className = "conn-error"; conn.textContent = S.error; }
    else if (S.seq >= 0 && source && source.readyState === 1) { conn.className = "conn-live"; conn.textContent = "live"; }
    $("engines-note").textContent = S.status ? "" : "(engines do not report memory, cpu or current call)";
  }

  function drawMap() {
    const cv = $("engine-map");
    const n = S.order.length;
    const w = cv.clientWidth || 600;
    let cell = 12;
    while (cell > 3 && Math.ceil(n / Math.floor(w / (cell + 2))) * (cell + 2) > 120) cell--;
    const cols = Math.max(1, Math.floor(w / (cell + 2)));
    const rows = Math.max(1, Math.ceil(n / cols));
    mapLayout = { cell, cols };
    const { ctx, h } = fitCanvas(cv, rows * (cell + 2));
    ctx.clearRect(0, 0, w, h);
    for (let i = 0; i < n; i++) {
      const e = S.engines.get(S.order[i]);
      ctx.fillStyle = STATE_COLOURS[e.state] || "#ccc";
      ctx.fillRect((i % cols) * (cell + 2), Math.floor(i / cols) * (cell + 2), cell, cell);
    }
  }

  // A click on an engine's square scrolls the list to its row.
  let mapLayout = { cell: 12, cols: 1 };
  function onMapClick(ev) {
    const r = ev.target.getBoundingClientRect();
    const step = mapLayout.cell + 2;
    const idx = Math.floor((ev.clientY - r.top) / step) * mapLayout.cols + Math.floor((ev.clientX - r.left) / step);
    if (idx >= 0 && idx < S.order.length) { $("engines").scrollTop = idx * ROW_H; dirty.engines = true; schedule(); }
  }

  // The engines list: a fixed pool of row elements over a tall spacer (only visible rows exist).
  const pool = [];
  function drawEngines() {
    const box = $("engines");
    const spacer = box.firstElementChild;
    spacer.style.height = S.order.length * ROW_H + "px";
    box.style.height = Math.min(11, Math.max(1, S.order.length)) * ROW_H + "px";
    const first = Math.floor(box.scrollTop / ROW_H);
    const visible = Math.ceil(box.clientHeight / ROW_H) + 1;
    const now = serverNow();
    while (pool.length < visible) {
      const row = document.createElement("div");
      row.className = "engine-row";
      for (let k = 0; k < 12; k++) row.appendChild(document.createElement("span"));
      for (const k of [0, 2, 3, 6, 8, 9, 10, 11]) row.children[k].className = "num";
      box.appendChild(row);
      pool.push(row);
    }
    for (let r = 0; r < pool.length; r++) {
      const row = pool[r];
      const idx = first + r;
      if (r >= visible || idx >= S.order.length) { row.style.display = "none"; continue; }
      const e = S.engines.get(S.order[idx]);
      row.style.display = "";
      row.style.top = idx * ROW_H + "px";
      row.dataset.engine = e.id;
      row.dataset.state = e.state;
      const cells = [e.id, e.host, e.pid, e.mpi_rank, null, e.task ? e.task.slice(0, 12) : "",
        e.task && e.since ? dur(now - e.since) : "",
        e.callee && e.call ? shortCall(e.call) + " \u2192 " + e.callee : shortCall(e.call), bytes(e.rss),
        e.cpu === null || e.cpu === undefined ? "" : e.cpu.toFixed(0) + "%", e.done, e.queued];
      for (let k = 0; k < 12; k++) {
        const span = row.children[k];
        if (k === 4) {
          if (span.dataset.state !== e.state) {
            span.dataset.state = e.state;
            span.innerHTML = "";
            const b = document.createElement("span");
            b.className = "badge " + e.state;
            b.textContent = e.state;
            span.appendChild(b);
          }
          continue;
        }
        const text = show(cells[k]);
        if (span.textContent !== text) span.textContent = text;
        if (k === 5 || k === 7) span.title = show(k === 5 ? e.task : e.call);
      }
    }
  }

  function drawStream() {
    const cv = $("stream");
    const n = Math.max(1, S.order.length);
    const lane = Math.max(0.2, Math.min(22, 240 / n));
    const axis = 16;
    const { ctx, w, h } = fitCanvas(cv, Math.max(60, Math.ceil(lane * n) + axis));
    const win = Number($("stream-window").value);
    const now = serverNow();
    const t0 = now - win;
    const xOf = (t) => ((t - t0) / win) * w;
    const laneOf = new Map();
    for (let i = 0; i < S.order.length; i++) laneOf.set(S.order[i], i);
    ctx.clearRect(0, 0, w, h);
    ctx.fillStyle = "#f5f5f5";
    for (let i = 0; i < S.order.length; i += 2) if (lane >= 3) ctx.fillRect(0, i * lane, w, lane);
    const pad = lane >= 4 ? 1 : 0;
    let bars = 0, failed = 0;
    const names = new Map();
    for (const t of S.tasks) {
      if (t.c < t0) continue;
      const i = laneOf.get(t.e);
      if (i === undefined) continue;
      const x1 = Math.max(0, xOf(t.s));
      const x2 = Math.max(x1 + 1, xOf(t.c));
      ctx.fillStyle = t.ok ? colourOf(t.f) : FAIL;
      ctx.fillRect(x1, i * lane + pad, x2 - x1, Math.max(lane - 2 * pad, 0.5));
      bars++;
      if (!t.ok) failed++;
      else names.set(t.f, (names.get(t.f) || 0) + 1);
    }
    let running = 0;
    ctx.globalAlpha = 0.55;
    for (let i = 0; i < S.order.length; i++) {
      const e = S.engines.get(S.order[i]);
      if (!e.task || !e.since) continue;
      const name = callName(e.call) || "running";
      ctx.fillStyle = colourOf(name);
      const x1 = Math.max(0, xOf(e.since));
      ctx.fillRect(x1, i * lane + pad, Math.max(1, w - x1), Math.max(lane - 2 * pad, 0.5));
      running++;
    }
    ctx.globalAlpha = 1;
    // dead engines' lanes are hatched grey from when they died
    ctx.fillStyle = "rgba(158,158,158,0.35)";
    for (let i = 0; i < S.order.length; i++) {
      const e = S.engines.get(S.order[i]);
      if (e.state === "dead" && e.dead_at) {
        const x1 = Math.max(0, xOf(e.dead_at));
        ctx.fillRect(x1, i * lane, w - x1, Math.max(lane, 0.5));
      }
    }
    ctx.fillStyle = "#757575";
    ctx.font = "11px system-ui, sans-serif";
    const step = win <= 60 ? 10 : win <= 120 ? 20 : 60;
    for (let s = 0; s <= win; s += step) {
      const x = w - (s / win) * w;
      ctx.fillRect(x, h - axis, 1, 4);
      const label = s === 0 ? "now" : "-" + s + "s";
      ctx.fillText(label, Math.min(Math.max(0, x - 12), w - 26), h - 3);
    }
    cv.dataset.bars = bars; cv.dataset.failed = failed; cv.dataset.running = running; cv.dataset.lanes = S.order.length;
    $("stream-note").textContent = bars + " tasks shown, " + failed + " failed, " + running + " running";
    drawLegend(names, failed);
  }

  let legendKey = "";
  function drawLegend(names, failed) {
    const top = Array.from(names.entries()).sort((a, b) => b[1] - a[1]).slice(0, 12).map((x) => x[0]);
    const key = top.join("\u0000") + "|" + (failed > 0);
    if (key === legendKey) return;
    legendKey = key;
    const box = $("legend");
    box.innerHTML = "";
    const add = (colour, text) => {
      const s = document.createElement("span");
      const k = document.createElement("span");
      k.className = "key"; k.style.background = colour;
      s.appendChild(k); s.appendChild(document.createTextNode(text));
      box.appendChild(s);
    };
    for (const name of top) add(colourOf(name), name);
    if (failed > 0) add(FAIL, "failed");
  }

  function drawSeries() {
    const { ctx, w, h } = fitCanvas($("series"), 180);
    ctx.clearRect(0, 0, w, h);
    const pts = S.series;
    if (pts.length < 2) return;
    const win = Number($("stream-window").value);
    const t1 = serverNow(), t0 = t1 - win;
    let maxQ = 1, maxR = 1;
    for (const p of pts) { if (p.t < t0) continue; maxQ = Math.max(maxQ, p.queued, p.running); maxR = Math.max(maxR, p.rate); }
    const bottom = h - 14;
    const line = (colour, get, max) => {
      ctx.strokeStyle = colour; ctx.lineWidth = 1.5; ctx.beginPath();
      let first = true;
      for (const p of pts) {
        if (p.t < t0) continue;
        const x = ((p.t - t0) / (t1 - t0)) * w, y = bottom - (get(p) / max) * (bottom - 12);
        if (first) ctx.moveTo(x, y); else ctx.lineTo(x, y);
        first = false;
      }
      ctx.stroke();
    };
    line("#ef6c00", (p) => p.queued, maxQ);
    line("#42a5f5", (p) => p.running, maxQ);
    line("#6a1b9a", (p) => p.rate, maxR);
    ctx.fillStyle = "#757575"; ctx.font = "11px system-ui, sans-serif";
    ctx.fillText("tasks: " + maxQ, 2, 10);
    const r = "tasks/s: " + maxR.toFixed(1);
    ctx.fillText(r, w - ctx.measureText(r).width - 2, 10);
    ctx.fillText("-" + win + " s", 2, h - 2);
    ctx.fillText("now", w - 22, h - 2);
  }

  // Engines a job holds: those reporting its job id (batch), or running as its processes (local).
  const baseId = (id) => String(id).split(".")[0];
  function held(j) {
    let k = 0, reporting = false;
    for (const e of S.engines.values()) {
      if (e.state === "dead") continue;
      if (e.job_id) reporting = true;
      if ((e.job_id && baseId(e.job_id) === baseId(j.id)) || (j.pids && j.pids.includes(e.pid))) k++;
    }
    if (j.role !== "engines") return "";
    return reporting || j.pids ? k + " of " + show(j.n) : show(j.n);
  }

  function drawJobs() {
    const body = $("jobs").tBodies[0];
    body.innerHTML = "";
    for (const j of S.jobs) {
      const tr = document.createElement("tr");
      const left = j.walltime_left !== undefined ? (j.walltime_bound ? "\u2264 " : "") + dur(j.walltime_left) : "";
      for (const v of [j.system, j.id, j.role, j.state, left, held(j)]) {
        const td = document.createElement("td");
        td.textContent = show(v);
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    $("jobs-note").textContent = S.jobs.length ? "" : "No jobs recorded for this cluster (or not readable from here).";
  }

  function drawFailures() {
    const box = $("failures");
    box.innerHTML = "";
    $("n-failures").textContent = S.failures.length ? "(" + S.failures.length + ")" : "";
    if (!S.failures.length) {
      const p = document.createElement("p");
      p.className = "note"; p.textContent = "No task has failed.";
      box.appendChild(p);
      return;
    }
    for (let i = S.failures.length - 1; i >= 0; i--) {
      const f = S.failures[i];
      const d = document.createElement("details");
      d.className = "failure";
      d.dataset.msgId = f.msg_id;
      if (i === S.failures.length - 1) d.open = true;
      const s = document.createElement("summary");
      s.textContent = clock(f.time) + "  engine " + show(f.engine) + "  " + (f.name ? f.name + ": " : "") + f.ename + ": " + f.evalue;
      const pre = document.createElement("pre");
      pre.textContent = f.traceback || f.ename + ": " + f.evalue;
      d.appendChild(s); d.appendChild(pre);
      box.appendChild(d);
    }
  }

  function drawMpi() {
    const box = $("mpi");
    const groups = new Map();
    for (const e of S.engines.values()) {
      if (e.mpi_rank === null || e.mpi_rank === undefined || e.state === "dead") continue;
      const call = e.task ? e.callee || shortCall(e.call) || "(running, call not reported)" : "(" + e.state + ")";
      if (!groups.has(call)) groups.set(call, []);
      groups.get(call).push(e.mpi_rank);
    }
    box.innerHTML = "";
    if (!groups.size) {
      const p = document.createElement("p");
      p.className = "note"; p.textContent = "No MPI engines.";
      box.appendChild(p);
      return;
    }
    for (const [call, ranks] of Array.from(groups.entries()).sort((a, b) => b[1].length - a[1].length)) {
      ranks.sort((a, b) => a - b);
      const div = document.createElement("div");
      div.className = "mpi-call";
      const code = document.createElement("code");
      code.textContent = call;
      div.appendChild(code);
      div.appendChild(document.createTextNode("  ranks " + rangeText(ranks) + " (" + ranks.length + ")"));
      box.appendChild(div);
    }
  }

  function frame() {
    scheduled = false;
    if (dirty.summary) { dirty.summary = false; drawSummary(); }
    if (dirty.map) { dirty.map = false; drawMap(); }
    if (dirty.engines) { dirty.engines = false; drawEngines(); }
    if (dirty.stream) { dirty.stream = false; drawStream(); }
    if (dirty.series) { dirty.series = false; drawSeries(); }
    if (dirty.jobs) { dirty.jobs = false; drawJobs(); }
    if (dirty.failures) { dirty.failures = false; drawFailures(); }
    if (dirty.mpi) { dirty.mpi = false; drawMpi(); }
  }
  let scheduled = false;
  function schedule() {
    if (!scheduled) { scheduled = true; requestAnimationFrame(frame); }
  }

  // -- wiring ------------------------------------------------------------------------------
  let source = null;
  function connect() {
    source = new EventSource("events");
    source.onopen = () => { dirty.summary = true; schedule(); };
    source.onmessage = (ev) => { handle(JSON.parse(ev.data)); schedule(); };
    source.onerror = () => {
      const conn = $("conn");
      conn.className = "conn-wait";
      conn.textContent = "reconnecting…";
    };
  }
  setInterval(() => { dirty.stream = dirty.engines = dirty.series = true; schedule(); }, 250);
  $("engine-map").addEventListener("click", onMapClick);
  $("engines").addEventListener("scroll", () => { dirty.engines = true; schedule(); }, { passive: true });
  $("stream-window").addEventListener("change", () => { dirty.stream = dirty.series = true; schedule(); });
  window.addEventListener("resize", () => { for (const k in dirty) dirty[k] = true; schedule(); });

  // For tests and the curious: the page's state, and a way to feed it messages.
  window.hpcparDashboard = {
    state: S,
    apply(msg) { handle(msg); for (const k in dirty) dirty[k] = true; frame(); },
    disconnect() { if (source) source.close(); },
    layout() { return mapLayout; },
  };
  connect();
})();
