// tal report: lays out the panels of one session from the JSON in
// #tal-data, with uPlot. Every time chart shares one x axis (s from the
// session's start): a drag selects a range and zooms every chart to it; a
// double click zooms all back out.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("tal-data").textContent);
  const app = document.getElementById("app");
  const dur = Math.max(D.duration_s, 1e-3);
  const STATE = ["completed", "failed", "canceled"];
  const STATE_COLOUR = ["#34a853", "#d93025", "#9aa0a6"];
  const PALETTE = ["#1a73e8", "#e8710a", "#188038", "#d01884", "#9334e6", "#12b5cb",
    "#f9ab00", "#5f6368", "#b31412", "#0d652d", "#174ea6", "#a142f4"];
  const colour = (i) => PALETTE[i % PALETTE.length];
  const charts = [];
  let syncing = false;

  // ---- formatting ----
  function secs(s) {
    if (s == null || !isFinite(s)) return "-";
    if (s >= 3600) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
    if (s >= 60) return Math.floor(s / 60) + "m" + (s % 60).toFixed(1).padStart(4, "0") + "s";
    if (s >= 1) return s.toFixed(2) + "s";
    return (s * 1000).toFixed(1) + "ms";
  }
  function bytes(b) {
    if (b == null || !isFinite(b)) return "-";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
    return b.toFixed(1) + " " + u[i];
  }
  // Axis ticks in bytes, short.
  const byteTicks = (u, vals) => vals.map((v) => v == null ? "" : v === 0 ? "0" : bytes(v).replace(".0 ", " "));
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    for (const k of kids) e.append(k);
    return e;
  }
  function section(title, note) {
    const s = el("section", {}, el("h2", {}, title));
    if (note) s.append(el("div", { class: "note" }, note));
    app.append(s);
    return s;
  }
  const tip = el("div", { id: "tip" });
  document.body.append(tip);
  function showTip(text, x, y) {
    tip.textContent = text;
    tip.style.display = "block";
    tip.style.left = Math.min(x + 14, innerWidth - tip.offsetWidth - 8) + "px";
    tip.style.top = Math.min(y + 14, innerHeight - tip.offsetHeight - 8) + "px";
  }
  function hideTip() { tip.style.display = "none"; }

  // ---- shared time axis ----
  function width(box) { return Math.max(320, (box.clientWidth || app.clientWidth || 900) - 4); }
  function zoomAll(min, max) {
    syncing = true;
    for (const c of charts) c.setScale("x", { min, max });
    syncing = false;
  }
  // The shared time scale: the whole session until a zoom sets a range (a
  // fixed range array would override every zoom).
  const XSCALE = {
    time: false,
    auto: false,
    range: (u, min, max) => (isFinite(min) && isFinite(max) && min < max ? [min, max] : [0, dur]),
  };
  function timeOpts(box, height, series, extra) {
    const o = Object.assign({
      width: width(box),
      height,
      scales: { x: XSCALE },
      axes: [{ label: "s from the session's start" }, {}],
      series: [{ label: "s", value: (u, v) => v == null ? "-" : v.toFixed(3) }].concat(series),
      cursor: {
        drag: { x: true, y: false, setScale: true },
        bind: { dblclick: () => null },
      },
      hooks: {
        setScale: [(u, key) => {
          if (key !== "x" || syncing) return;
          const { min, max } = u.scales.x;
          syncing = true;
          for (const c of charts) if (c !== u) c.setScale("x", { min, max });
          syncing = false;
        }],
      },
    }, extra || {});
    return o;
  }
  function timeChart(box, height, series, data, extra) {
    const u = new uPlot(timeOpts(box, height, series, extra), data, box);
    // What the page says of itself (data-tal-charts, below): its panel,
    // and the chart's own note.
    const sec = box.closest("section");
    u.talPanel = sec ? sec.querySelector("h2").textContent : "";
    const note = box.querySelector(".note");
    u.talTitle = note ? note.textContent : u.talPanel;
    u.over.addEventListener("dblclick", () => zoomAll(0, dur));
    charts.push(u);
    return u;
  }
  // Aligns series of one field from several sources on one x array.
  function joined(list) {
    if (list.length === 0) return null;
    if (list.length === 1) return [list[0][0], list[0][1]];
    return uPlot.join(list);
  }

  // ---- header ----
  // Series times from their quarter-column indices.
  for (const x of D.series.concat(D.gpus, D.task_series)) x.t = x.k.map((k) => k / 4 * D.column_s);
  const S = D.summary;
  const t = D.tasks;
  document.getElementById("meta").textContent =
    `started ${new Date(D.start_time_s * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC · ` +
    `ran ${secs(D.duration_s)} · ${D.nodes.length - 1} node(s) · ${t.id.length} task(s) · ${D.written_by}`;

  // ---- task timeline ----
  (function timeline() {
    const s = section("Task timeline",
      "One lane per node and slot (overlapping tasks take different slots), coloured by final state. Hover a task for its figures; drag to zoom every chart, double-click to zoom out.");
    const legend = el("div", { class: "note" });
    STATE.forEach((st, i) => {
      legend.append(el("span", { class: "legend-box", style: "background:" + STATE_COLOUR[i] }), st);
    });
    s.append(legend);
    if (t.id.length === 0) { s.append(el("div", { class: "note" }, "No task spans in this session.")); return; }
    // Lanes: nodes in order, each with its slots.
    const laneBase = [];
    let lanes = 0;
    for (let n = 0; n < D.nodes.length; n++) { laneBase.push(lanes); lanes += t.slots[n] || 0; }
    const lane = (i) => laneBase[t.node[i]] + t.slot[i];
    // Tasks per lane, by start, for hover.
    const byLane = Array.from({ length: lanes }, () => []);
    for (let i = 0; i < t.id.length; i++) byLane[lane(i)].push(i);
    for (const l of byLane) l.sort((a, b) => t.start[a] - t.start[b]);
    const laneNames = [];
    for (let n = 0; n < D.nodes.length; n++)
      for (let k = 0; k < (t.slots[n] || 0); k++) laneNames.push((D.nodes[n] || "session") + " / " + k);
    const box = el("div");
    s.append(box);
    const height = Math.max(120, Math.min(700, lanes * 14 + 60));
    const u = timeChart(box, height, [{ label: "tasks", show: true, points: { show: false }, stroke: "transparent" }],
      [[0, dur], [null, null]], {
        scales: { x: XSCALE, y: { auto: false, range: [0, Math.max(lanes, 1)] } },
        legend: { show: false },
        axes: [{ label: "s from the session's start" }, {
          label: "node / slot",
          splits: () => laneNames.length <= 40 ? laneNames.map((_, i) => i + 0.5) : [],
          values: (u, vals) => vals.map((v) => laneNames[Math.floor(v)] || ""),
          size: 110,
        }],
        hooks: {
          setScale: timeOpts(box, 0, []).hooks.setScale,
          draw: [(u) => {
            const ctx = u.ctx;
            const { left, top, width: w, height: h } = u.bbox;
            const x0 = u.scales.x.min, x1 = u.scales.x.max;
            const laneH = h / Math.max(lanes, 1);
            ctx.save();
            ctx.beginPath();
            ctx.rect(left, top, w, h);
            ctx.clip();
            for (let i = 0; i < t.id.length; i++) {
              if (t.end[i] < x0 || t.start[i] > x1) continue;
              const a = u.valToPos(t.start[i], "x", true);
              const b = u.valToPos(t.end[i], "x", true);
              const y = top + h - (lane(i) + 1) * laneH;
              ctx.fillStyle = STATE_COLOUR[t.state[i]];
              ctx.fillRect(a, y + laneH * 0.1, Math.max(1, b - a), Math.max(1, laneH * 0.8));
            }
            ctx.restore();
          }],
        },
      });
    u.talTasks = t.id.length;
    u.over.addEventListener("mousemove", (e) => {
      const r = u.over.getBoundingClientRect();
      const x = u.posToVal(e.clientX - r.left, "x");
      const l = Math.floor(u.posToVal(e.clientY - r.top, "y"));
      const list = byLane[l];
      if (!list) return hideTip();
      const hit = list.find((i) => t.start[i] <= x && x <= t.end[i]);
      if (hit == null) return hideTip();
      const i = hit;
      const lines = [
        t.id[i] + "  (" + (t.types[t.type[i]] || "task") + ")",
        "state: " + STATE[t.state[i]] + (t.error[i] ? "  " + t.error[i] : ""),
        "node: " + (D.nodes[t.node[i]] || "-") + ", slot " + t.slot[i],
        "start " + secs(t.start[i]) + ", end " + secs(t.end[i]) + ", duration " + secs(t.end[i] - t.start[i]),
      ];
      if (t.cpu_s[i] != null) lines.push("CPU time: " + secs(t.cpu_s[i]));
      if (t.rss[i] != null) lines.push("peak RSS: " + bytes(t.rss[i]));
      if (t.read[i] != null || t.write[i] != null) lines.push("I/O: read " + bytes(t.read[i]) + ", written " + bytes(t.write[i]));
      if (t.gpu_mem[i] != null) lines.push("GPU memory (peak): " + bytes(t.gpu_mem[i]));
      if (t.cpu_peak[i] != null) lines.push("sampled: CPU peak " + t.cpu_peak[i].toFixed(1) + " % of one CPU, RSS peak " + bytes(t.rss_peak[i]));
      showTip(lines.join("\n"), e.clientX, e.clientY);
    });
    u.over.addEventListener("mouseleave", hideTip);
  })();

  // ---- concurrency, completions, throughput ----
  (function concurrency() {
    if (t.id.length === 0) return;
    const s = section("Tasks over time", "Running tasks (most at once per column), tasks completed so far, and completion throughput.");
    const cols = 1000;
    const w = dur / cols;
    const edges = [];
    for (let i = 0; i < t.id.length; i++) { edges.push([t.start[i], 1]); edges.push([t.end[i], -1]); }
    edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    const xs = [], running = [], done = [], rate = [];
    let now = 0, e = 0, finished = 0;
    const ends = t.end.map((x, i) => [x, t.state[i]]).sort((a, b) => a[0] - b[0]);
    let k = 0;
    for (let c = 0; c < cols; c++) {
      const hi = (c + 1) * w;
      let peak = now;
      while (e < edges.length && edges[e][0] <= hi) { now += edges[e][1]; peak = Math.max(peak, now); e++; }
      let inCol = 0;
      while (k < ends.length && ends[k][0] <= hi) { if (ends[k][1] === 0) { finished++; inCol++; } k++; }
      xs.push((c + 0.5) * w); running.push(peak); done.push(finished); rate.push(inCol / w);
    }
    const row = el("div", { class: "row" });
    s.append(row);
    const a = el("div"), b = el("div");
    row.append(a, b);
    timeChart(a, 220, [
      { label: "running", stroke: "#1a73e8", fill: "rgba(26,115,232,.15)", paths: uPlot.paths.stepped({ align: 1 }) },
      { label: "completed so far", stroke: "#34a853", scale: "n" },
    ], [xs, running, done], { axes: [{ label: "s from the session's start" }, { label: "running" }, { side: 1, scale: "n", label: "completed", grid: { show: false } }] });
    timeChart(b, 220, [{ label: "completed / s", stroke: "#188038", fill: "rgba(24,128,56,.15)" }], [xs, rate]);
  })();

  // ---- node series ----
  (function nodes() {
    if (D.series.length === 0) return;
    const s = section("Nodes", "Per node, down-sampled per pixel column keeping each column's minimum and maximum.");
    const many = D.series.length > 12;
    const field = (name, label, fmt) => {
      const list = [], series = [];
      D.series.forEach((x, i) => {
        const f = x.fields.indexOf(name);
        if (f < 0 || x.v[f].every((v) => v == null)) return;
        list.push([x.t, x.v[f]]);
        series.push({ label: (x.node || "session") + " " + label, stroke: colour(i), spanGaps: true, value: (u, v) => fmt(v) });
      });
      return [list, series];
    };
    const pct = (v) => v == null ? "-" : v.toFixed(1) + " %";
    const by = (v) => v == null ? "-" : bytes(v);
    const row = el("div", { class: "row" });
    s.append(row);
    for (const [names, title, fmt] of [
      [["cpu_percent"], "CPU %", pct],
      [["memory_percent"], "memory %", pct],
      [["disk_read_bytes", "disk_write_bytes"], "disk bytes per interval", by],
      [["net_recv_bytes", "net_sent_bytes"], "network bytes per interval", by],
    ]) {
      let list = [], series = [];
      for (const n of names) {
        const [l, sr] = field(n, n.replace(/_bytes$/, "").replace(/_percent$/, "").replace("_", " "), fmt);
        list = list.concat(l); series = series.concat(sr);
      }
      if (list.length === 0) continue;
      const box = el("div", {}, el("div", { class: "note" }, title));
      row.append(box);
      const axes = [{ label: "s from the session's start" }, fmt === by ? { values: byteTicks, size: 70 } : {}];
      timeChart(box, 200, series, joined(list), { legend: { show: !many }, axes });
    }
  })();

  // ---- tasks' own resources ----
  (function taskResources() {
    if (D.task_series.length === 0) return;
    const shown = D.task_series.length;
    const s = section("Task resources", "What each task's processes used over time (tal.TaskResourceUpdate samples): CPU as % of one CPU (100 = one busy core) and resident memory. " +
      (D.sampled_tasks > shown ? `The ${shown} of ${D.sampled_tasks} sampled tasks with the highest peaks are drawn; the table below has every task's peaks.` : ""));
    const row = el("div", { class: "row" });
    s.append(row);
    const many = shown > 12;
    for (const [name, title, fmt] of [
      ["cpu_percent", "task CPU (% of one CPU)", (v) => v == null ? "-" : v.toFixed(1) + " %"],
      ["rss_bytes", "task resident memory", (v) => v == null ? "-" : bytes(v)],
    ]) {
      const list = [], series = [];
      D.task_series.forEach((x, i) => {
        const f = x.fields.indexOf(name);
        if (f < 0 || x.v[f].every((v) => v == null)) return;
        list.push([x.t, x.v[f]]);
        series.push({ label: x.task + (D.nodes.length > 2 ? " @" + x.node : ""), stroke: colour(i), spanGaps: true, value: (u, v) => fmt(v) });
      });
      if (list.length === 0) continue;
      const box = el("div", {}, el("div", { class: "note" }, title));
      row.append(box);
      const axes = [{ label: "s from the session's start" }, name === "rss_bytes" ? { values: byteTicks, size: 70 } : {}];
      timeChart(box, 220, series, joined(list), { legend: { show: !many }, axes });
    }
  })();

  // ---- per-core heatmap ----
  (function cores() {
    const withCores = D.cores.filter((c) => c.n > 0);
    if (withCores.length === 0) return;
    const cut = D.cores_cut, grouped = withCores.some((c) => c.group > 1);
    const s = section("Per-core CPU", "Busy % of each core per column (mean), darker is busier." +
      (grouped ? ` Too many cores for one row each: a row is the mean of ${withCores[0].group} cores.` : "") +
      (cut ? ` ${cut.nodes} node(s) of ${cut.cores} cores in all are left out (too many cells for one page).` : ""));
    const pick = el("select");
    withCores.forEach((c, i) => pick.append(el("option", { value: i }, c.node || "session")));
    s.append(el("div", { class: "note" }, "node: ", pick));
    const box = el("div");
    s.append(box);
    let cur = withCores[0];
    const u = timeChart(box, Math.max(120, Math.min(500, cur.n * 6 + 50)), [{ label: "cores", stroke: "transparent", points: { show: false } }],
      [[0, dur], [null, null]], {
        legend: { show: false },
        scales: { x: XSCALE, y: { auto: false, range: [0, cur.n] } },
        axes: [{ label: "s from the session's start" }, { label: grouped ? "cores (row × group)" : "core" }],
        hooks: {
          setScale: timeOpts(box, 0, []).hooks.setScale,
          draw: [(u) => {
            const c = cur, ctx = u.ctx;
            const { left, top, width: w, height: h } = u.bbox;
            const cols = c.columns, cw = dur / cols, rh = h / c.n;
            ctx.save(); ctx.beginPath(); ctx.rect(left, top, w, h); ctx.clip();
            for (let core = 0; core < c.n; core++) {
              for (let j = 0; j < cols; j++) {
                const v = c.v[core * cols + j];
                if (v == null) continue;
                const a = u.valToPos(j * cw, "x", true), b = u.valToPos((j + 1) * cw, "x", true);
                const g = Math.round(238 - Math.min(100, Math.max(0, v)) * 2.1);
                ctx.fillStyle = `rgb(${g},${g},255)`;
                ctx.fillRect(a, top + h - (core + 1) * rh, Math.max(1, b - a + 0.5), Math.max(1, rh));
              }
            }
            ctx.restore();
          }],
        },
      });
    pick.addEventListener("change", () => {
      cur = withCores[+pick.value];
      u.setScale("y", { min: 0, max: cur.n });
      u.redraw();
    });
  })();

  // ---- GPUs ----
  (function gpus() {
    if (D.gpus.length === 0) return;
    const s = section("GPUs", "Per device: utilisation, memory used and power.");
    const row = el("div", { class: "row" });
    s.append(row);
    for (const [name, title, fmt] of [
      ["gpu_percent", "utilisation %", (v) => v == null ? "-" : v.toFixed(1) + " %"],
      ["gpu_memory_used_bytes", "memory used", (v) => v == null ? "-" : bytes(v)],
      ["gpu_power_watts", "power (W)", (v) => v == null ? "-" : v.toFixed(1) + " W"],
    ]) {
      const list = [], series = [];
      D.gpus.forEach((g, i) => {
        const f = g.fields.indexOf(name);
        if (f < 0 || g.v[f].every((v) => v == null)) return;
        list.push([g.t, g.v[f]]);
        series.push({ label: (g.node || "session") + " gpu" + g.gpu, stroke: colour(i), spanGaps: true, value: (u, v) => fmt(v) });
      });
      if (list.length === 0) continue;
      const box = el("div", {}, el("div", { class: "note" }, title));
      row.append(box);
      const axes = [{ label: "s from the session's start" }, name === "gpu_memory_used_bytes" ? { values: byteTicks, size: 70 } : {}];
      timeChart(box, 200, series, joined(list), { legend: { show: series.length <= 12 }, axes });
    }
  })();

  // ---- durations ----
  (function durations() {
    if (t.id.length === 0) return;
    const d = t.start.map((s0, i) => t.end[i] - s0).sort((a, b) => a - b);
    const q = (p) => d[Math.min(d.length - 1, Math.max(0, Math.ceil(p * d.length) - 1))];
    const s = section("Task durations",
      `p50 ${secs(q(0.5))} · p90 ${secs(q(0.9))} · p99 ${secs(q(0.99))} · max ${secs(d[d.length - 1])} (from the spans)`);
    const row = el("div", { class: "row" });
    s.append(row);
    const bins = 50, max = d[d.length - 1] || 1e-3, bw = max / bins;
    const xs = [], counts = new Array(bins).fill(0);
    for (let i = 0; i < bins; i++) xs.push((i + 0.5) * bw);
    for (const v of d) counts[Math.min(bins - 1, Math.floor(v / bw))]++;
    const a = el("div", {}, el("div", { class: "note" }, "histogram")), b = el("div", {}, el("div", { class: "note" }, "CDF"));
    row.append(a, b);
    new uPlot({ width: width(a), height: 200, scales: { x: { time: false } },
      axes: [{ label: "duration (s)" }, { label: "tasks" }],
      series: [{ label: "s" }, { label: "tasks", fill: "rgba(26,115,232,.5)", stroke: "#1a73e8", paths: uPlot.paths.bars({ size: [0.9, 100] }) }] },
      [xs, counts], a);
    const step = Math.max(1, Math.floor(d.length / 2000));
    const cx = [], cy = [];
    for (let i = 0; i < d.length; i += step) { cx.push(d[i]); cy.push((i + 1) / d.length); }
    cx.push(d[d.length - 1]); cy.push(1);
    new uPlot({ width: width(b), height: 200, scales: { x: { time: false } },
      axes: [{ label: "duration (s)" }, { label: "fraction" }],
      series: [{ label: "s" }, { label: "fraction ≤", stroke: "#9334e6" }] }, [cx, cy], b);
  })();

  // ---- events, tasks table, agent and logs ----
  (function tables() {
    const more = D.event_types_more;
    const read = S.read || {};
    const notes = [];
    if (more) notes.push(`The ${D.event_types.length} most common event types; ${more.types} more event types (${more.events} events) are not listed.`);
    if (read.long_lines_skipped) notes.push(`${read.long_lines_skipped} line(s) of the file were too long to read and were skipped (the first is line ${read.first_long_line}).`);
    if (read.non_finite_numbers) notes.push(`${read.non_finite_numbers} NaN/Infinity number(s) were read as missing.`);
    const s = section("Events", notes.length ? notes.join(" ") : null);
    const ev = el("table", {}, el("tr", {}, el("th", {}, "event type"), el("th", { class: "num" }, "count")));
    for (const [k, n] of D.event_types) ev.append(el("tr", {}, el("td", {}, k), el("td", { class: "num" }, String(n))));
    if (more) ev.append(el("tr", {}, el("td", {}, `${more.types} more event types`), el("td", { class: "num" }, String(more.events))));
    s.append(ev);

    if (t.id.length > 0) {
      const LIMIT = 2000;
      const ts = section("Tasks", `Failures first, then by duration; click a heading to sort. ${t.id.length > LIMIT ? "The first " + LIMIT + " of " + t.id.length + " rows are shown." : ""}`);
      const cols = [
        ["task", (i) => t.id[i], false], ["node", (i) => D.nodes[t.node[i]] || "-", false],
        ["state", (i) => STATE[t.state[i]], false], ["error", (i) => t.error[i] || "", false],
        ["start", (i) => t.start[i], true, secs], ["duration", (i) => t.end[i] - t.start[i], true, secs],
        ["CPU", (i) => t.cpu_s[i], true, secs], ["peak RSS", (i) => t.rss[i], true, bytes],
        ["read", (i) => t.read[i], true, bytes], ["written", (i) => t.write[i], true, bytes],
        ["GPU mem", (i) => t.gpu_mem[i], true, bytes],
        ["CPU % peak", (i) => t.cpu_peak[i], true, (v) => v == null ? "-" : v.toFixed(1)], ["RSS peak", (i) => t.rss_peak[i], true, bytes],
      ];
      let order = t.id.map((_, i) => i).sort((a, b) => (t.state[b] === 1) - (t.state[a] === 1) || (t.end[b] - t.start[b]) - (t.end[a] - t.start[a]));
      const wrap = el("div", { class: "tablewrap" });
      ts.append(wrap);
      let sortCol = -1, asc = true;
      const render = () => {
        const tb = el("table");
        const head = el("tr");
        cols.forEach(([name, , num], c) => {
          const th = el("th", num ? { class: "num" } : {}, name + (c === sortCol ? (asc ? " ▲" : " ▼") : ""));
          th.addEventListener("click", () => {
            asc = sortCol === c ? !asc : true; sortCol = c;
            const get = cols[c][1];
            order = order.slice().sort((a, b) => {
              const x = get(a), y = get(b);
              const r = x == null ? 1 : y == null ? -1 : x < y ? -1 : x > y ? 1 : 0;
              return asc ? r : -r;
            });
            render();
          });
          head.append(th);
        });
        tb.append(head);
        for (const i of order.slice(0, LIMIT)) {
          const tr = el("tr", t.state[i] === 1 ? { class: "failed" } : {});
          for (const [, get, num, fmt] of cols) {
            const v = get(i);
            tr.append(el("td", num ? { class: "num" } : {}, fmt ? fmt(v) : String(v)));
          }
          tb.append(tr);
        }
        wrap.replaceChildren(tb);
      };
      render();
    }

    const as = section("tal's own cost and the logs", S.agent ? null : "Not in this file (not written by tal).");
    if (S.agent) {
      const kv = el("div", { class: "kv" });
      for (const k of Object.keys(S.agent)) {
        const v = S.agent[k];
        kv.append(el("div", {}, k), el("div", {}, typeof v === "object" ? JSON.stringify(v) : String(v)));
      }
      as.append(kv);
    }
    if (S.logs && S.logs.length) {
      const lt = el("table", {}, el("tr", {}, ...["node", "log", "records", "end", "damaged frames", "cut off"].map((h) => el("th", {}, h))));
      for (const l of S.logs) {
        lt.append(el("tr", {}, el("td", {}, String(l.node_id)), el("td", {}, String(l.path)), el("td", { class: "num" }, String(l.records)),
          el("td", {}, l.clean_end ? "clean" : "NO END MARKER"), el("td", { class: "num" }, String(l.corrupt_frames)), el("td", {}, l.truncated ? "yes" : "no")));
      }
      as.append(lt);
    }
  })();

  addEventListener("resize", () => {
    for (const c of charts) c.setSize({ width: width(c.root.parentNode), height: c.height });
  });
  // `#zoom=A,B` zooms the first chart to [A, B] s at load (every other
  // follows, as a drag would make them); the page then lists its time
  // charts, their series and their x ranges in data-tal-charts, for
  // tests and scripts.
  const zoom = /#zoom=([0-9.]+),([0-9.]+)/.exec(location.hash);
  if (zoom && charts.length) charts[0].setScale("x", { min: +zoom[1], max: +zoom[2] });
  // After uPlot has applied the scales (it commits them asynchronously).
  setTimeout(() => {
    document.body.setAttribute("data-tal-charts", JSON.stringify(charts.map((c) => ({
      panel: c.talPanel, title: c.talTitle, series: c.series.length - 1, tasks: c.talTasks,
      x: [c.scales.x.min, c.scales.x.max],
    }))));
    document.body.setAttribute("data-tal-ready", String(charts.length));
  }, 0);
})();
