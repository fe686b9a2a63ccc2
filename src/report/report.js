// tal report: lays out the panels of one session from the JSON in
// #tal-data, with uPlot. Every time chart shares one x axis (s from the
// session's start): a drag selects a range and zooms every chart to it; a
// double click zooms all back out.
//
// Reading at a glance: the header has the session's key facts (failures
// linked to their rows); every series of a chart has its own colour from
// a categorical palette, with a legend; byte series are rates per second
// on axes of 1-2-5 steps in B/KB/MB/GB per second; every axis is as wide
// as its widest label. Custom events are dashed marks on every time axis.
//
// Geometry: the page records every text it draws on a canvas, mapped
// through the canvas's transform, and publishes what tests check in
// data-tal-geometry on <body>: per chart, the texts that would be cut off
// and the series' colours; the timeline's lane height and its smallest
// task's drawn width; the heatmap's row height and labels.
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("tal-data").textContent);
  const app = document.getElementById("app");
  const dur = Math.max(D.duration_s, 1e-3);
  const STATE = ["completed", "failed", "canceled"];
  const STATE_COLOUR = ["#59a14f", "#d62728", "#9aa0a6"];
  // Tableau 10 and two more: as many as the tasks the report draws.
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
    "#b07aa1", "#ff9da7", "#9c755f", "#79706e", "#17becf", "#2f4b7c"];
  const colour = (i) => PALETTE[i % PALETTE.length];
  const MARK_COLOUR = "#6a3d9a";
  const AXIS_FONT = "11px system-ui, -apple-system, 'Segoe UI', sans-serif";
  const LABEL_FONT = "bold 11px system-ui, -apple-system, 'Segoe UI', sans-serif";
  // Timeline lanes and heatmap rows, CSS px; past LANE_AREA px of lanes
  // the timeline scrolls (its time axis stays on top).
  const LANE = 16, ROW = 12, LANE_AREA = 640;
  const charts = [];
  // Charts of other axes (the duration histogram and CDF).
  const others = [];
  const geometry = { charts: [], timeline: null, heatmap: null };
  let syncing = false;

  // ---- what is drawn where: every canvas text, mapped to the canvas ----
  const drawn = new WeakMap();
  const fillText = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, x, y, maxWidth) {
    const list = drawn.get(this.canvas);
    if (list) {
      const m = this.measureText(text);
      const tf = this.getTransform();
      const xs = [], ys = [];
      for (const [dx, dy] of [[-m.actualBoundingBoxLeft, -m.actualBoundingBoxAscent], [m.actualBoundingBoxRight, -m.actualBoundingBoxAscent],
        [-m.actualBoundingBoxLeft, m.actualBoundingBoxDescent], [m.actualBoundingBoxRight, m.actualBoundingBoxDescent]]) {
        const p = tf.transformPoint(new DOMPoint(x + dx, y + dy));
        xs.push(p.x); ys.push(p.y);
      }
      list.push({ text: String(text), box: [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)] });
    }
    return fillText.call(this, text, x, y, maxWidth);
  };
  function track(u) {
    drawn.set(u.ctx.canvas, []);
    u.hooks.drawClear = (u.hooks.drawClear || []).concat([(u) => drawn.set(u.ctx.canvas, [])]);
  }

  // ---- formatting ----
  function hms(s) {
    if (s == null || !isFinite(s)) return "-";
    if (s < 60) return s < 1 ? (s * 1000).toPrecision(3) + " ms" : s.toFixed(s < 10 ? 2 : 1) + " s";
    const h = Math.floor(s / 3600), m = Math.floor(s % 3600 / 60), r = Math.floor(s % 60);
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(r).padStart(2, "0") + (h ? " h" : " min");
  }
  const secs = hms;
  const UNITS = ["B", "KB", "MB", "GB", "TB", "PB"];
  // A number of up to 3 significant digits, no trailing zeros.
  const short = (v) => String(+v.toPrecision(3));
  function bytes(b) {
    if (b == null || !isFinite(b)) return "-";
    let i = 0;
    while (Math.abs(b) >= 1000 && i < UNITS.length - 1) { b /= 1000; i++; }
    return short(b) + " " + UNITS[i];
  }
  const rate = (b) => b == null || !isFinite(b) ? "-" : bytes(b) + "/s";
  const pct = (v) => v == null || !isFinite(v) ? "-" : short(v) + " %";
  // Steps of 1, 2 and 5 times a power of ten.
  const INCRS = [];
  for (let e = -3; e <= 16; e++) for (const m of [1, 2, 5]) INCRS.push(+(m * Math.pow(10, e)).toPrecision(1));
  // Steps of a count: whole numbers.
  const COUNTS = INCRS.filter((x) => x >= 1);
  // Tick labels of a byte axis: one unit, the largest tick's.
  function byteTicks(per) {
    return (u, vals) => {
      const top = Math.max(...vals.map((v) => Math.abs(v || 0)));
      let i = 0;
      while (top >= Math.pow(1000, i + 1) && i < UNITS.length - 1) i++;
      const f = Math.pow(1000, i);
      return vals.map((v) => v == null ? "" : v === 0 ? "0" : short(v / f) + " " + UNITS[i] + per);
    };
  }
  // An axis as wide as its widest label (plus ticks and gap).
  const measure = document.createElement("canvas").getContext("2d");
  function fitSize(u, values, axisIdx) {
    const ax = u.axes[axisIdx];
    measure.font = AXIS_FONT;
    let w = 0;
    for (const v of values || []) w = Math.max(w, measure.measureText(String(v)).width);
    return Math.ceil(w + (ax.ticks && ax.ticks.show !== false ? ax.ticks.size : 0) + ax.gap + 6);
  }
  function yAxis(extra) {
    return Object.assign({ font: AXIS_FONT, labelFont: LABEL_FONT, labelSize: 18, size: fitSize, incrs: INCRS }, extra || {});
  }
  const byteAxis = (label, per) => yAxis({ label, values: byteTicks(per) });
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    for (const k of kids) e.append(k);
    return e;
  }
  function section(title, note, id) {
    const s = el("section", id ? { id } : {}, el("h2", {}, title));
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

  // ---- custom events: dashed marks on every time chart ----
  const F = D.facts || {};
  const MARKS = F.marks || [];
  function drawMarks(u, labels) {
    if (MARKS.length === 0) return;
    const ctx = u.ctx, { left, top, width: w, height: h } = u.bbox;
    const x0 = u.scales.x.min, x1 = u.scales.x.max;
    ctx.save();
    ctx.beginPath(); ctx.rect(left, top, w, h); ctx.clip();
    ctx.strokeStyle = MARK_COLOUR; ctx.lineWidth = 1.5 * devicePixelRatio;
    ctx.setLineDash([4 * devicePixelRatio, 3 * devicePixelRatio]);
    ctx.font = (10 * devicePixelRatio) + "px system-ui, sans-serif";
    ctx.fillStyle = MARK_COLOUR; ctx.textBaseline = "bottom"; ctx.textAlign = "left";
    const xs = [];
    for (const [t, ty, label] of MARKS) {
      if (t < x0 || t > x1) continue;
      const x = Math.round(u.valToPos(t, "x", true));
      ctx.beginPath(); ctx.moveTo(x, top); ctx.lineTo(x, top + h); ctx.stroke();
      xs.push([x, label || F.mark_types[ty]]);
    }
    ctx.restore();
    // Labels in the strip above the plot (the chart's top padding), right
    // of their mark, where they fit and do not overlap.
    if (labels) {
      ctx.save();
      ctx.font = (10 * devicePixelRatio) + "px system-ui, sans-serif";
      ctx.fillStyle = MARK_COLOUR; ctx.textBaseline = "bottom"; ctx.textAlign = "left";
      let lastEnd = -Infinity;
      for (const [x, text] of xs) {
        const tw = ctx.measureText(text).width;
        if (x + 3 > lastEnd && x + 3 + tw < left + w) {
          ctx.fillText(text, x + 3, top - 2 * devicePixelRatio);
          lastEnd = x + 3 + tw + 6;
        }
      }
      ctx.restore();
    }
    u.talMarks = MARKS.filter((m) => m[0] >= x0 && m[0] <= x1).length;
  }

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
  const X_AXIS = { label: "s from the session's start", font: AXIS_FONT, labelFont: LABEL_FONT, labelSize: 18, incrs: INCRS };
  const syncHook = (u, key) => {
    if (key !== "x" || syncing) return;
    const { min, max } = u.scales.x;
    syncing = true;
    for (const c of charts) if (c !== u) c.setScale("x", { min, max });
    syncing = false;
  };
  function timeOpts(box, height, series, extra) {
    const o = Object.assign({
      width: width(box),
      height,
      scales: { x: XSCALE, y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.08 : 1] } },
      axes: [X_AXIS, yAxis()],
      series: [{ label: "s", value: (u, v) => v == null ? "-" : v.toFixed(3) }].concat(series),
      cursor: {
        drag: { x: true, y: false, setScale: true },
        bind: { dblclick: () => null },
      },
    }, extra || {});
    const hooks = o.hooks || {};
    o.hooks = Object.assign({}, hooks, {
      setScale: [syncHook],
      draw: (hooks.draw || []).concat([(u) => drawMarks(u, u.talMarkLabels)]),
    });
    return o;
  }
  function timeChart(box, height, series, data, extra, markLabels) {
    const opts = timeOpts(box, height, series, extra);
    const u = new uPlot(opts, data, box);
    u.talMarkLabels = !!markLabels;
    // What the page says of itself (data-tal-charts, below): its panel,
    // and the chart's own note.
    const sec = box.closest("section");
    u.talPanel = sec ? sec.querySelector("h2").textContent : "";
    const note = box.querySelector(".note");
    u.talTitle = note ? note.textContent : u.talPanel;
    u.over.addEventListener("dblclick", () => zoomAll(0, dur));
    track(u);
    u.redraw(false, true);
    charts.push(u);
    return u;
  }
  // Gives `u` a plot area `px` CSS px tall (its axes take the rest),
  // once uPlot has laid it out (see the end).
  function plotHeight(u, px) { u.talPlotPx = px; }
  function fitPlotHeights() {
    for (const u of charts) {
      if (u.talPlotPx == null) continue;
      const have = u.bbox.height / devicePixelRatio;
      if (Math.abs(have - u.talPlotPx) >= 0.5) u.setSize({ width: u.width, height: Math.round(u.height + u.talPlotPx - have) });
    }
  }
  // Aligns series from several sources on one x array.
  function joined(list) {
    if (list.length === 0) return null;
    if (list.length === 1) return [list[0][0], list[0][1]];
    return uPlot.join(list);
  }
  // A chart of one or more series: [{t, v, label, colour, fmt, points}].
  function seriesChart(box, height, lines, axis, yRange) {
    const list = lines.map((l) => [l.t, l.v]);
    const series = lines.map((l) => ({
      label: l.label, stroke: l.colour, width: l.points ? 2.5 : 1.5, spanGaps: !!l.points,
      value: (u, v) => l.fmt(v),
      points: l.points ? { show: true, size: 7, fill: l.colour, stroke: l.colour } : (l.t.length <= 2 ? { show: true, size: 6 } : {}),
    }));
    const extra = { axes: [X_AXIS, axis], legend: { show: true } };
    if (yRange) extra.scales = { x: XSCALE, y: { auto: false, range: yRange } };
    return timeChart(box, height, series, joined(list), extra);
  }
  function chartBox(row, title) {
    const box = el("div", {}, el("div", { class: "note" }, title));
    row.append(box);
    return box;
  }

  // Series times from their quarter-column indices.
  for (const x of D.series.concat(D.gpus, D.task_series, D.across ? [D.across] : [])) x.t = x.k.map((k) => k / 4 * D.column_s);
  const S = D.summary;
  const t = D.tasks;
  const reusedRuns = new Map((F.reused && F.reused.ids || []).map(([id, n]) => [id, n]));

  // ---- header: the key facts ----
  (function header() {
    document.getElementById("meta").textContent =
      `started ${new Date(D.start_time_s * 1000).toISOString().replace("T", " ").slice(0, 19)} UTC · ${D.written_by}`;
    const facts = el("div", { id: "facts" });
    const fact = (name, value, cls) => {
      const v = el("div", { class: "v" + (cls ? " " + cls : "") });
      if (value instanceof Node) v.append(value); else v.textContent = value;
      facts.append(el("div", { class: "fact" }, el("div", { class: "k" }, name), v));
      return v;
    };
    fact("wall time", hms(D.duration_s));
    fact("nodes", String(D.nodes.length - 1));
    const by = [0, 0, 0];
    for (const s of t.state) by[s]++;
    fact("tasks", `${t.id.length} · ${by[0]} completed` + (by[1] ? ` · ${by[1]} failed` : "") + (by[2] ? ` · ${by[2]} canceled` : ""), by[1] ? "bad" : "");
    const peak = (p, fmt) => p ? `${fmt(p.value)} on ${p.node || "session"} at ${hms(p.t)}` : "not measured";
    fact("CPU peak (node, busy % of its CPUs)", peak(F.cpu_percent, pct));
    fact("memory peak (node, % used)", peak(F.memory_percent, pct));
    fact("GPU peak (utilisation)", peak(F.gpu_percent, pct));
    const j = F.gpu_energy_j;
    fact("GPU energy", j == null ? "not measured" : j >= 3.6e5 ? short(j / 3.6e6) + " kWh" : short(j) + " J");
    const a = S.agent;
    fact("tal's own cost", a ? `${short(a.agent_cpu_seconds || 0)} CPU-s` +
      (a.agent_peak_rss_bytes != null ? `, peak RSS ${bytes(a.agent_peak_rss_bytes)}` : "") +
      (a.agent_samples_dropped ? `, ${a.agent_samples_dropped} samples dropped` : "") : "not in this file");
    if (MARKS.length) fact("custom events (dashed marks)", `${MARKS.length + (F.marks_more || 0)}: ` + F.mark_types.join(", "));
    document.querySelector("header").append(facts);
    // Failures and reused ids: named, each linked to its row in the table.
    const failed = t.id.map((_, i) => i).filter((i) => t.state[i] === 1);
    const alerts = el("div", { id: "alerts" });
    if (failed.length) {
      const line = el("div", { class: "alert" }, el("b", {}, `${failed.length} failed: `));
      failed.slice(0, 20).forEach((i, k) => {
        if (k) line.append(", ");
        line.append(el("a", { href: "#task-" + i, class: "failed-link" }, t.id[i]), ` (${t.error[i] || "failed"})`);
      });
      if (failed.length > 20) line.append(` and ${failed.length - 20} more (the table lists them first)`);
      alerts.append(line);
    }
    if (reusedRuns.size) {
      const line = el("div", { class: "alert" }, el("b", {}, `${reusedRuns.size + (F.reused.more || 0)} task id(s) reused: `));
      [...reusedRuns].forEach(([id, n], k) => {
        if (k) line.append(", ");
        const i = t.id.indexOf(id);
        line.append(i >= 0 ? el("a", { href: "#task-" + i, class: "reused-link" }, id) : id, ` (${n} runs)`);
      });
      line.append(" — each id's last run is the one drawn; give every run its own id.");
      alerts.append(line);
    }
    if (alerts.childNodes.length) document.querySelector("header").append(alerts);
  })();

  // ---- the tasks that used the most ----
  (function top() {
    if (t.id.length === 0) return;
    const io = (i) => t.read[i] == null && t.write[i] == null ? null : (t.read[i] || 0) + (t.write[i] || 0);
    // Title, key, figure, format, the figure's short name.
    const lists = [
      ["CPU time", "cpu", (i) => t.cpu_s[i], secs, "CPU time"],
      ["RSS peak", "rss", (i) => t.rss[i], bytes, "RSS peak"],
      ["I/O (read + written)", "io", io, bytes, "I/O"],
      ["GPU memory peak", "gpu", (i) => t.gpu_mem[i], bytes, "GPU memory"],
    ].filter(([, , get]) => t.id.some((_, i) => get(i) > 0));
    if (lists.length === 0) return;
    const s = section("Top tasks", "The tasks that used the most, from their terminal events' figures; click one for its row in the table.", "top");
    const row = el("div", { class: "row tops" });
    s.append(row);
    for (const [title, key, get, fmt, name] of lists) {
      const idx = t.id.map((_, i) => i).filter((i) => get(i) > 0).sort((a, b) => get(b) - get(a) || a - b).slice(0, 5);
      const tb = el("table", { class: "top", "data-top": key },
        el("tr", {}, el("th", {}, "by " + title), el("th", {}, "node"), el("th", { class: "num" }, name)));
      for (const i of idx) {
        tb.append(el("tr", t.state[i] === 1 ? { class: "failed", title: "failed" } : {},
          el("td", {}, el("a", { href: "#task-" + i }, t.id[i])), el("td", {}, D.nodes[t.node[i]] || "-"),
          el("td", { class: "num", "data-v": String(get(i)) }, fmt(get(i)))));
      }
      row.append(el("div", {}, tb));
    }
  })();

  // ---- task timeline ----
  (function timeline() {
    const s = section("Task timeline",
      "One lane per node and slot (overlapping tasks take different slots), coloured by final state; every task at least 2 px wide, failures drawn on top. Hover a task for its figures; drag to zoom every chart, double-click to zoom out.");
    const legend = el("div", { class: "note" });
    STATE.forEach((st, i) => {
      legend.append(el("span", { class: "legend-box", style: "background:" + STATE_COLOUR[i] }), st);
    });
    if (MARKS.length) legend.append(el("span", { class: "legend-mark" }), "custom event");
    s.append(legend);
    if (t.id.length === 0) { s.append(el("div", { class: "note" }, "No task spans in this session.")); return; }
    // Lanes: nodes by name (node2 before node10), each with its slots;
    // lane 0 on top.
    const byName = D.nodes.map((_, n) => n).sort((a, b) =>
      (D.nodes[a] || "").localeCompare(D.nodes[b] || "", undefined, { numeric: true }));
    const laneBase = new Array(D.nodes.length).fill(0);
    let lanes = 0;
    for (const n of byName) { laneBase[n] = lanes; lanes += t.slots[n] || 0; }
    const lane = (i) => laneBase[t.node[i]] + t.slot[i];
    // Tasks per lane, by start, for hover.
    const byLane = Array.from({ length: lanes }, () => []);
    for (let i = 0; i < t.id.length; i++) byLane[lane(i)].push(i);
    for (const l of byLane) l.sort((a, b) => t.start[a] - t.start[b]);
    const laneNames = [];
    for (const n of byName) {
      const name = D.nodes[n] || "session";
      for (let k = 0; k < (t.slots[n] || 0); k++) laneNames.push(t.slots[n] > 1 ? name + " · " + k : name);
    }
    // Failures last: drawn over their neighbours.
    const order = t.id.map((_, i) => i).sort((a, b) => (t.state[a] === 1) - (t.state[b] === 1));
    const box = el("div");
    const scroll = lanes * LANE > LANE_AREA;
    if (scroll) s.append(el("div", { class: "note" }, `${lanes} lanes, 16 px each: the lane area scrolls, with a time axis above and below.`));
    const wrap = el("div", scroll ? { class: "lanes", style: `max-height:${LANE_AREA + 60}px` } : {}, box);
    s.append(wrap);
    const height = lanes * LANE + 60;
    const g = { lanes, lane_px: null, min_task_px: null, names_on_bars: 0, label_px: 11, scrolls: scroll };
    geometry.timeline = g;
    const u = timeChart(box, height, [{ label: "tasks", show: true, points: { show: false }, stroke: "transparent" }],
      [[0, dur], [null, null]], {
        scales: { x: XSCALE, y: { auto: false, range: [0, Math.max(lanes, 1)] } },
        legend: { show: false },
        axes: [X_AXIS, yAxis({
          label: "node · slot",
          splits: () => laneNames.map((_, i) => i + 0.5),
          values: (u, vals) => vals.map((v) => laneNames[lanes - 1 - Math.floor(v)] || ""),
          grid: { show: false },
          incrs: undefined,
        })].concat(scroll ? [Object.assign({}, X_AXIS, { side: 0, scale: "x", label: null })] : []),
        hooks: {
          draw: [(u) => {
            const ctx = u.ctx, px = devicePixelRatio;
            const { left, top, width: w, height: h } = u.bbox;
            const x0 = u.scales.x.min, x1 = u.scales.x.max;
            const laneH = h / Math.max(lanes, 1);
            g.lane_px = laneH / px;
            let minW = Infinity, named = 0;
            ctx.save();
            ctx.beginPath(); ctx.rect(left, top, w, h); ctx.clip();
            ctx.font = (10 * px) + "px system-ui, sans-serif";
            ctx.textBaseline = "middle"; ctx.textAlign = "left";
            for (const i of order) {
              if (t.end[i] < x0 || t.start[i] > x1) continue;
              const a = u.valToPos(t.start[i], "x", true);
              const b = u.valToPos(t.end[i], "x", true);
              const y = top + lane(i) * laneH;
              const bw = Math.max(2 * px, b - a);
              minW = Math.min(minW, bw);
              ctx.fillStyle = STATE_COLOUR[t.state[i]];
              // A gap of 1 px to the next task, where the bar is wide.
              ctx.fillRect(a, y + laneH * 0.1, bw > 4 * px ? bw - px : bw, laneH * 0.8);
              // Its name, where it fits.
              const name = t.id[i];
              if (bw > 24 * px && ctx.measureText(name).width + 6 * px < bw) {
                const xa = Math.max(a, left) + 3 * px;
                if (xa + ctx.measureText(name).width < Math.min(a + bw, left + w)) {
                  ctx.fillStyle = "#fff";
                  ctx.fillText(name, xa, y + laneH / 2);
                  named++;
                }
              }
            }
            ctx.restore();
            g.min_task_px = isFinite(minW) ? minW / px : null;
            g.names_on_bars = named;
          }],
        },
        // A strip above the lanes for the custom events' labels.
        padding: scroll || MARKS.length === 0 ? undefined : [16, null, null, null],
      }, !scroll);
    // Tall enough for the axis title too.
    plotHeight(u, Math.max(lanes * LANE, 64));
    u.talTasks = t.id.length;
    u.over.addEventListener("mousemove", (e) => {
      const r = u.over.getBoundingClientRect();
      const x = u.posToVal(e.clientX - r.left, "x");
      const l = lanes - 1 - Math.floor(u.posToVal(e.clientY - r.top, "y"));
      const list = byLane[l];
      if (!list) return hideTip();
      // The task under the cursor, or within 2 px of it.
      const slack = (u.scales.x.max - u.scales.x.min) / u.bbox.width * 2 * devicePixelRatio;
      const hit = list.find((i) => t.start[i] - slack <= x && x <= t.end[i] + slack);
      if (hit == null) return hideTip();
      showTip(taskText(hit).join("\n"), e.clientX, e.clientY);
    });
    u.over.addEventListener("mouseleave", hideTip);
  })();
  function taskText(i) {
    const lines = [
      t.id[i] + "  (" + (t.types[t.type[i]] || "task") + ")",
      "state: " + STATE[t.state[i]] + (t.error[i] ? "  " + t.error[i] : ""),
      "node: " + (D.nodes[t.node[i]] || "-") + ", slot " + t.slot[i],
      "start " + secs(t.start[i]) + ", end " + secs(t.end[i]) + ", duration " + secs(t.end[i] - t.start[i]),
    ];
    if (t.cpu_s[i] != null) lines.push("CPU time: " + secs(t.cpu_s[i]));
    if (t.rss[i] != null) lines.push("RSS peak: " + bytes(t.rss[i]));
    if (t.read[i] != null || t.write[i] != null) lines.push("I/O: read " + bytes(t.read[i]) + ", written " + bytes(t.write[i]));
    if (t.gpu_mem[i] != null) lines.push("GPU memory peak: " + bytes(t.gpu_mem[i]));
    if (t.cpu_peak[i] != null) lines.push("CPU % peak (sampled): " + pct(t.cpu_peak[i]) + " of one CPU");
    if (reusedRuns.has(t.id[i])) lines.push("id reused: " + reusedRuns.get(t.id[i]) + " runs, the last one shown");
    return lines;
  }

  // ---- concurrency, completions, throughput ----
  (function concurrency() {
    if (t.id.length === 0) return;
    // Throughput per second, minute or hour, by the session's length.
    const [bin, per] = dur <= 120 ? [1, "second"] : dur <= 7200 ? [60, "minute"] : [3600, "hour"];
    const s = section("Tasks over time", `Running tasks (most at once per column), tasks completed so far, and tasks completed per ${per} (bins of ${bin} s).`);
    const cols = 1000;
    const w = dur / cols;
    const edges = [];
    for (let i = 0; i < t.id.length; i++) { edges.push([t.start[i], 1]); edges.push([t.end[i], -1]); }
    edges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    const xs = [], running = [], done = [];
    let now = 0, e = 0, finished = 0;
    const ends = t.end.map((x, i) => [x, t.state[i]]).sort((a, b) => a[0] - b[0]);
    let k = 0;
    for (let c = 0; c < cols; c++) {
      const hi = (c + 1) * w;
      let peak = now;
      while (e < edges.length && edges[e][0] <= hi) { now += edges[e][1]; peak = Math.max(peak, now); e++; }
      while (k < ends.length && ends[k][0] <= hi) { if (ends[k][1] === 0) finished++; k++; }
      xs.push((c + 0.5) * w); running.push(peak); done.push(finished);
    }
    const nb = Math.max(1, Math.ceil(dur / bin));
    const bx = [], by = new Array(nb).fill(0);
    for (let b = 0; b < nb; b++) bx.push((b + 0.5) * bin);
    for (const [x, st] of ends) if (st === 0) by[Math.min(nb - 1, Math.floor(x / bin))]++;
    const row = el("div", { class: "row" });
    s.append(row);
    const a = chartBox(row, "running and completed tasks"), b = chartBox(row, `tasks completed per ${per}`);
    timeChart(a, 220, [
      { label: "running", stroke: colour(0), fill: "rgba(78,121,167,.15)", paths: uPlot.paths.stepped({ align: 1 }) },
      { label: "completed so far", stroke: colour(1), scale: "n" },
    ], [xs, running, done], {
      scales: { x: XSCALE, y: { range: (u, min, max) => [0, Math.max(1, max)] }, n: { range: (u, min, max) => [0, Math.max(1, max)] } },
      axes: [X_AXIS, yAxis({ label: "running", incrs: COUNTS }), yAxis({ side: 1, scale: "n", label: "completed", grid: { show: false }, incrs: COUNTS })],
    });
    timeChart(b, 220, [{ label: `completed / ${per}`, stroke: colour(4), fill: "rgba(89,161,79,.35)", paths: uPlot.paths.bars({ size: [0.9, Infinity], align: 0 }) }],
      [bx, by], {
        scales: { x: XSCALE, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
        axes: [X_AXIS, yAxis({ label: `tasks per ${per}`, incrs: COUNTS })],
      });
    geometry.throughput_bin_s = bin;
  })();

  // ---- node series ----
  (function nodes() {
    if (D.series.length === 0) return;
    const combined = D.across != null;
    const s = section("Nodes", combined
      ? `${D.series.length} nodes, more than a chart tells apart by colour: the nodes combined per column — CPU and memory as the nodes' mean and their highest, disk and network as the sum of all nodes' rates. A node between two samples holds its last figure.`
      : "Per node, down-sampled per pixel column keeping each column's minimum and maximum. Disk and network are rates per second over each sample's window; a gap is a window too short to measure.");
    const row = el("div", { class: "row" });
    s.append(row);
    const lines = (pairs) => {
      const out = [];
      if (combined) {
        for (const [name, label, fmt] of pairs) {
          const f = D.across.fields.indexOf(name);
          if (f >= 0 && D.across.v[f].some((v) => v != null)) out.push({ t: D.across.t, v: D.across.v[f], label, fmt });
        }
      } else {
        D.series.forEach((x) => {
          for (const [name, label, fmt] of pairs) {
            const f = x.fields.indexOf(name);
            if (f < 0 || x.v[f].every((v) => v == null)) continue;
            out.push({ t: x.t, v: x.v[f], label: (x.node || "session") + " " + label, fmt });
          }
        });
      }
      out.forEach((l, i) => { l.colour = colour(i); });
      return out;
    };
    const P = (name) => combined ? [[name + "_mean", "mean of nodes", pct], [name + "_max", "highest node", pct]] : [[name, "", pct]];
    const R = (a, b, la, lb) => combined ? [[a + "_sum", la + ", all nodes", rate], [b + "_sum", lb + ", all nodes", rate]] : [[a, la, rate], [b, lb, rate]];
    for (const [pairs, title, axis] of [
      [P("cpu_percent"), "CPU %", yAxis({ label: "busy % of all CPUs" })],
      [P("memory_percent"), "memory %", yAxis({ label: "% of memory used" })],
      [R("disk_read_per_s", "disk_write_per_s", "read", "write"), "disk read and write per second", byteAxis("per second", "/s")],
      [R("net_recv_per_s", "net_sent_per_s", "received", "sent"), "network received and sent per second", byteAxis("per second", "/s")],
    ]) {
      const ls = lines(pairs);
      if (ls.length === 0) continue;
      seriesChart(chartBox(row, title), 200, ls, axis, title.endsWith("%") ? [0, 100] : null);
    }
  })();

  // ---- tasks' own resources ----
  (function taskResources() {
    if (D.task_series.length === 0) return;
    const shown = D.task_series.length;
    const all = D.tasks_with_figures || shown;
    const ended = D.task_series.filter((x) => x.end_only).length;
    const s = section("Task resources", "What each task's processes used over time (tal.TaskResourceUpdate samples): CPU as % of one CPU (100 = one busy core) and resident memory, one colour per task." +
      (ended ? " Tasks that ended before their first sample are drawn through their end-of-task figures (CPU time over the duration, RSS peak): a filled point at their start and end, joined." : "") +
      (all > shown ? ` The ${shown} of ${all} tasks with the highest peaks are drawn; the table below has every task's figures.` : ""));
    const row = el("div", { class: "row" });
    s.append(row);
    for (const [name, title, fmt, axis] of [
      ["cpu_percent", "task CPU (% of one CPU)", pct, yAxis({ label: "% of one CPU" })],
      ["rss_bytes", "task resident memory", bytes, byteAxis("resident memory", "")],
    ]) {
      const ls = [];
      D.task_series.forEach((x, i) => {
        const f = x.fields.indexOf(name);
        if (f < 0 || x.v[f].every((v) => v == null)) return;
        ls.push({ t: x.t, v: x.v[f], label: x.task + (D.nodes.length > 2 ? " @" + x.node : ""), fmt, colour: colour(i), points: x.end_only });
      });
      if (ls.length === 0) continue;
      seriesChart(chartBox(row, title), 240, ls, axis);
    }
  })();

  // ---- per-core heatmap ----
  (function cores() {
    const withCores = D.cores.filter((c) => c.n > 0);
    if (withCores.length === 0) return;
    const cut = D.cores_cut, grouped = withCores.some((c) => c.group > 1);
    const s = section("Per-core CPU", "Busy % of each core per column (mean), darker is busier; a blank cell had no sample." +
      (grouped ? ` More cores than rows: a row is the mean of ${withCores[0].group} cores, labelled first–last core.` : "") +
      (cut ? ` ${cut.nodes} node(s) of ${cut.cores} cores in all are left out (too many cells for one page).` : ""));
    const pick = el("select");
    withCores.forEach((c, i) => pick.append(el("option", { value: i }, c.node || "session")));
    const scale = el("span", { class: "heat-scale" });
    for (const v of [0, 25, 50, 75, 100]) {
      const g = Math.round(238 - v * 2.1);
      scale.append(el("span", { class: "legend-box", style: `background:rgb(${g},${g},255)` }), v + " %");
    }
    s.append(el("div", { class: "note" }, withCores.length > 1 ? "node: " : "", withCores.length > 1 ? pick : "", scale));
    const box = el("div");
    s.append(box);
    let cur = withCores[0];
    const rowName = (c, r) => c.group > 1 ? `${r * c.group}–${Math.min(c.cores, (r + 1) * c.group) - 1}` : String(r);
    const g = { rows: cur.n, row_px: null, labels: 0, label_px: 10 };
    geometry.heatmap = g;
    const maxRows = Math.max(...withCores.map((c) => c.n));
    const u = timeChart(box, maxRows * ROW + 60, [{ label: "cores", stroke: "transparent", points: { show: false } }],
      [[0, dur], [null, null]], {
        legend: { show: false },
        scales: { x: XSCALE, y: { auto: false, range: () => [0, cur.n] } },
        axes: [X_AXIS, yAxis({
          label: grouped ? "cores" : "core", font: "10px system-ui, sans-serif",
          splits: () => Array.from({ length: cur.n }, (_, r) => r + 0.5),
          values: (u, vals) => vals.map((v) => rowName(cur, Math.floor(v))),
          grid: { show: false }, incrs: undefined,
        })],
        hooks: {
          draw: [(u) => {
            const c = cur, ctx = u.ctx;
            const { left, top, width: w, height: h } = u.bbox;
            const cols = c.columns, cw = dur / cols, rh = h / c.n;
            g.rows = c.n; g.row_px = rh / devicePixelRatio;
            ctx.save(); ctx.beginPath(); ctx.rect(left, top, w, h); ctx.clip();
            for (let core = 0; core < c.n; core++) {
              // A sample's figure covers its window, back to the sample
              // before: an empty cell takes the next sample's figure.
              let v = null;
              for (let j = cols - 1; j >= 0; j--) {
                const x = c.v[core * cols + j];
                if (x != null) v = x;
                if (v == null) continue;
                const a = u.valToPos(j * cw, "x", true), b = u.valToPos((j + 1) * cw, "x", true);
                const gr = Math.round(238 - Math.min(100, Math.max(0, v)) * 2.1);
                ctx.fillStyle = `rgb(${gr},${gr},255)`;
                ctx.fillRect(a, top + h - (core + 1) * rh, Math.max(1, b - a + 0.5), Math.max(1, rh - 1));
              }
            }
            ctx.restore();
          }],
        },
      });
    plotHeight(u, maxRows * ROW);
    // The rows whose label was drawn, counted from the canvas (publish).
    g.count = () => {
      const names = new Set((drawn.get(u.ctx.canvas) || []).map((x) => x.text));
      g.labels = Array.from({ length: cur.n }, (_, r) => rowName(cur, r)).filter((n) => names.has(n)).length;
    };
    pick.addEventListener("change", () => {
      cur = withCores[+pick.value];
      u.setScale("y", { min: 0, max: cur.n });
      u.redraw();
    });
  })();

  // ---- GPUs ----
  (function gpus() {
    if (D.gpus.length === 0) return;
    const s = section("GPUs", "Per device: utilisation, memory used and power" +
      (D.gpus.length > PALETTE.length ? `; past ${PALETTE.length} devices, the devices combined (mean and highest).` : "."));
    const row = el("div", { class: "row" });
    s.append(row);
    for (const [name, title, fmt, axis] of [
      ["gpu_percent", "utilisation %", pct, yAxis({ label: "%" })],
      ["gpu_memory_used_bytes", "memory used", bytes, byteAxis("memory used", "")],
      ["gpu_power_watts", "power (W)", (v) => v == null ? "-" : short(v) + " W", yAxis({ label: "W" })],
    ]) {
      const ls = [];
      D.gpus.forEach((gp) => {
        const f = gp.fields.indexOf(name);
        if (f < 0 || gp.v[f].every((v) => v == null)) return;
        ls.push({ t: gp.t, v: gp.v[f], label: (gp.node || "session") + " gpu" + gp.gpu, fmt, colour: colour(ls.length) });
      });
      if (ls.length === 0) continue;
      seriesChart(chartBox(row, title), 200, gpusTogether(ls, fmt), axis);
    }
  })();

  // More devices than colours: the devices combined, as the node charts
  // combine nodes, into the mean and the highest of each column, so that
  // no two lines share a colour.
  function gpusTogether(ls, fmt) {
    if (ls.length <= PALETTE.length) return ls;
    const by = new Map();
    for (const l of ls) {
      l.t.forEach((x, i) => {
        const v = l.v[i];
        if (v == null) return;
        let e = by.get(x);
        if (!e) by.set(x, (e = { sum: 0, n: 0, max: -Infinity }));
        e.sum += v;
        e.n += 1;
        e.max = Math.max(e.max, v);
      });
    }
    const t = [...by.keys()].sort((a, b) => a - b);
    return [
      { t, v: t.map((x) => by.get(x).sum / by.get(x).n), label: `mean of ${ls.length} GPUs`, fmt, colour: colour(0) },
      { t, v: t.map((x) => by.get(x).max), label: `highest of ${ls.length} GPUs`, fmt, colour: colour(1) },
    ];
  }

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
    const a = chartBox(row, "histogram"), b = chartBox(row, "CDF");
    const xa = { label: "duration (s)", font: AXIS_FONT, labelFont: LABEL_FONT, labelSize: 18 };
    const h = new uPlot({ width: width(a), height: 200, scales: { x: { time: false } },
      axes: [xa, yAxis({ label: "tasks", incrs: COUNTS })],
      series: [{ label: "s" }, { label: "tasks", fill: "rgba(78,121,167,.5)", stroke: colour(0), paths: uPlot.paths.bars({ size: [0.9, 100] }) }] },
      [xs, counts], a);
    const step = Math.max(1, Math.floor(d.length / 2000));
    const cx = [], cy = [];
    for (let i = 0; i < d.length; i += step) { cx.push(d[i]); cy.push((i + 1) / d.length); }
    cx.push(d[d.length - 1]); cy.push(1);
    const c = new uPlot({ width: width(b), height: 200, scales: { x: { time: false } },
      axes: [xa, yAxis({ label: "fraction", incrs: undefined })],
      series: [{ label: "s" }, { label: "fraction ≤", stroke: colour(6) }] }, [cx, cy], b);
    for (const u of [h, c]) { track(u); u.redraw(false, true); u.talPanel = "Task durations"; u.talTitle = u.root.parentNode.querySelector(".note").textContent; others.push(u); }
  })();

  // ---- events, tasks table, agent and logs ----
  (function tables() {
    if (t.id.length > 0) taskTable();
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
  function taskTable() {
    const LIMIT = 2000;
    const ts = section("Tasks", `Failures first, then by duration; click a heading to sort. ${t.id.length > LIMIT ? "The first " + LIMIT + " of " + t.id.length + " rows are shown." : ""}`, "tasks");
    const num1 = (v) => v == null ? "-" : short(v);
    const cpuMean = (i) => t.cpu_s[i] != null && t.end[i] > t.start[i] ? t.cpu_s[i] / (t.end[i] - t.start[i]) * 100 : null;
    // Name, value, numeric, format, what it is.
    const cols = [
      ["task", (i) => t.id[i], false, null, "the task's id"],
      ["node", (i) => D.nodes[t.node[i]] || "-", false, null, "where it ran"],
      ["state", (i) => STATE[t.state[i]], false, null, "its final state"],
      ["error", (i) => t.error[i] || "", false, null, "why it failed"],
      ["start", (i) => t.start[i], true, secs, "s from the session's start"],
      ["duration", (i) => t.end[i] - t.start[i], true, secs, "its span, start to terminal event"],
      ["CPU time", (i) => t.cpu_s[i], true, secs, "user + system CPU seconds (terminal event)"],
      ["CPU % mean", cpuMean, true, num1, "CPU time over duration, % of one CPU"],
      ["CPU % peak", (i) => t.cpu_peak[i], true, num1, "highest sampled CPU, % of one CPU (sampled tasks only)"],
      ["RSS peak", (i) => t.rss[i], true, bytes, "peak resident memory (terminal event)"],
      ["read", (i) => t.read[i], true, bytes, "bytes read from storage"],
      ["written", (i) => t.write[i], true, bytes, "bytes written to storage"],
      ["GPU memory peak", (i) => t.gpu_mem[i], true, bytes, "peak GPU memory, all devices"],
    ];
    let order = t.id.map((_, i) => i).sort((a, b) => (t.state[b] === 1) - (t.state[a] === 1) || (t.end[b] - t.start[b]) - (t.end[a] - t.start[a]));
    const wrap = el("div", { class: "tablewrap" });
    ts.append(wrap);
    let sortCol = -1, asc = true;
    const render = () => {
      const tb = el("table");
      const head = el("tr");
      cols.forEach(([name, , num, , what], c) => {
        const th = el("th", Object.assign({ title: what }, num ? { class: "num" } : {}), name + (c === sortCol ? (asc ? " ▲" : " ▼") : ""));
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
        const tr = el("tr", Object.assign({ id: "task-" + i }, t.state[i] === 1 ? { class: "failed" } : {}));
        for (const [name, get, num, fmt] of cols) {
          const v = get(i);
          let text = fmt ? fmt(v) : String(v);
          if (name === "task" && reusedRuns.has(t.id[i])) text += ` (id reused: ${reusedRuns.get(t.id[i])} runs, the last shown)`;
          tr.append(el("td", num ? { class: "num" } : {}, text));
        }
        tb.append(tr);
      }
      wrap.replaceChildren(tb);
    };
    render();
  }

  // Every chart as wide as its box, now that each row has all its boxes.
  const fit = () => {
    for (const c of charts.concat(others)) c.setSize({ width: width(c.root.parentNode), height: c.height });
  };
  fit();
  addEventListener("resize", fit);
  // `#zoom=A,B` zooms the first chart to [A, B] s at load (every other
  // follows, as a drag would make them); the page then lists its time
  // charts, their series and their x ranges in data-tal-charts, and what
  // it drew where in data-tal-geometry, for tests and scripts.
  const zoom = /#zoom=([0-9.]+),([0-9.]+)/.exec(location.hash);
  if (zoom && charts.length) charts[0].setScale("x", { min: +zoom[1], max: +zoom[2] });
  // After uPlot has applied the sizes and scales (it commits them
  // asynchronously).
  setTimeout(() => { fitPlotHeights(); setTimeout(publish, 0); }, 0);
  function publish() {
    document.body.setAttribute("data-tal-charts", JSON.stringify(charts.map((c) => ({
      panel: c.talPanel, title: c.talTitle, series: c.series.length - 1, tasks: c.talTasks,
      x: [c.scales.x.min, c.scales.x.max],
    }))));
    for (const c of charts.concat(others)) {
      const cv = c.ctx.canvas;
      const texts = drawn.get(cv) || [];
      const shown = c.series.slice(1).filter((x) => x.show !== false && x.stroke && typeof x.stroke === "function");
      geometry.charts.push({
        panel: c.talPanel, title: c.talTitle, canvas: [cv.width, cv.height], texts: texts.length,
        cut: texts.filter((x) => x.box[0] < -0.5 || x.box[1] < -0.5 || x.box[2] > cv.width + 0.5 || x.box[3] > cv.height + 0.5)
          .map((x) => x.text + " @" + x.box.map(Math.round).join(",")),
        colours: shown.map((x) => x.stroke(c, 1)).filter((x) => x !== "transparent"),
        // The y axis's tick steps (1, 2 or 5 times a power of ten).
        steps: [...new Set(((c.axes[1] || {})._splits || []).slice(1).map((v, i) => +(v - c.axes[1]._splits[i]).toPrecision(6)))],
        // Points with no value (null: a gap in the line, not a zero).
        gaps: c.data.slice(1).reduce((n, ys) => n + ys.filter((y) => y === null).length, 0),
        marks: c.talMarks || 0,
      });
    }
    if (geometry.heatmap) geometry.heatmap.count();
    document.body.setAttribute("data-tal-geometry", JSON.stringify(geometry));
    document.body.setAttribute("data-tal-ready", String(charts.length));
  }
})();
