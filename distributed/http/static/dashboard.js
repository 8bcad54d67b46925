// dashboard.js: draws the dashboard pages from /api/v1/* and the event stream.
//
// One EventSource per tab on /api/v1/stream; each "snapshot" event carries the
// whole picture (cluster totals, per-prefix counts, workers, new task-stream
// records), so a tab never polls for it.  The one exception is the profile's
// call tree (too big for every frame): the /profile page fetches
// /json/profile.json every 2 s while the tab is visible.  Every string from
// the cluster (keys, prefix and worker names, function and file names) reaches
// the page through textContent or setAttribute only, never innerHTML: a key
// such as <img src=x onerror=...> shows as text.
// Every chart has a table twin under it (for screen readers, tests and copy).
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const page = document.body.dataset.page || "status";
  const main = document.getElementById("main");
  const conn = document.getElementById("connection");
  const banner = document.getElementById("banner");
  const STREAM_KEEP = page === "tasks" ? 20000 : 5000;
  const STREAM_DRAW = page === "tasks" ? 5000 : 1000;

  // ---- small DOM helpers ------------------------------------------------
  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function svgEl(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = String(text);
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmtBytes(n) {
    if (!n) return "0 B";
    const u = ["B", "kiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function hue(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) % 360;
    return "hsl(" + h + ",60%,55%)";
  }
  // A table whose rows are arrays of cell values (numbers right-aligned).
  function fillTable(tableEl, headers, rows) {
    clear(tableEl);
    const thead = el("thead"), tr = el("tr");
    headers.forEach(h => tr.appendChild(el("th", {}, h)));
    thead.appendChild(tr);
    const tbody = el("tbody");
    rows.forEach(r => {
      const row = el("tr");
      r.forEach(c => row.appendChild(el("td", typeof c === "number" ? { class: "n" } : {}, c)));
      tbody.appendChild(row);
    });
    tableEl.appendChild(thead);
    tableEl.appendChild(tbody);
  }
  function panel(id, title, wide) {
    const s = el("section", { id: id, class: wide ? "wide" : "" });
    s.appendChild(el("h2", {}, title));
    const note = el("p", { class: "note" });  // a line of text under the title (the ETA)
    s.appendChild(note);
    const chart = svgEl("svg", { role: "img", "aria-label": title });
    // Charts first; the table twins open on click (and on pages that are tables).
    const details = el("details", TABLE_PAGES.has(page) ? { open: "" } : {});
    details.appendChild(el("summary", {}, "table"));
    const table = el("table", { id: id + "-table" });
    details.appendChild(table);
    s.appendChild(chart);
    s.appendChild(details);
    main.appendChild(s);
    return { chart: chart, table: table, section: s, note: note };
  }
  function bar(svg, y, h, width, parts, label) {
    // parts: [[fraction, color], ...] laid left to right on a grey track.
    svg.appendChild(svgEl("rect", { x: 0, y: y, width: width, height: h, fill: "var(--rel)" }));
    let x = 0;
    parts.forEach(p => {
      const w = Math.max(0, Math.min(1, p[0])) * width;
      if (w > 0) svg.appendChild(svgEl("rect", { x: x, y: y, width: w, height: h, fill: p[1] }));
      x += w;
    });
    if (label !== undefined) svg.appendChild(svgEl("text", { x: 4, y: y + h - 4, class: "label" }, label));
  }

  // ---- panels ------------------------------------------------------------
  const W = 600;
  const TABLE_PAGES = new Set(["workers", "groups", "individual-workers", "individual-groups"]);
  const panels = {
    "cluster-memory": {
      title: "Cluster memory",
      draw(p, s) {
        const c = s.cluster, limit = c.memory_limit || Math.max(c.memory_process, 1);
        clear(p.chart); p.chart.setAttribute("viewBox", "0 0 " + W + " 24");
        bar(p.chart, 0, 24, W, [[c.managed / limit, "var(--mem)"], [c.unmanaged / limit, "var(--unmanaged)"],
          [c.spilled / limit, "var(--spill)"]], fmtBytes(c.memory_process) + " / " + fmtBytes(c.memory_limit));
        fillTable(p.table, ["managed", "unmanaged", "spilled", "process", "limit"],
          [[fmtBytes(c.managed), fmtBytes(c.unmanaged), fmtBytes(c.spilled), fmtBytes(c.memory_process),
            fmtBytes(c.memory_limit)]]);
      },
    },
    "workers-memory": {
      title: "Memory per worker",
      draw(p, s) {
        const h = 18, ws = s.workers;
        clear(p.chart); p.chart.setAttribute("viewBox", "0 0 " + W + " " + Math.max(h, ws.length * (h + 2)));
        ws.forEach((w, i) => {
          const limit = w.memory_limit || Math.max(w.memory, 1);
          bar(p.chart, i * (h + 2), h, W, [[w.managed / limit, "var(--mem)"], [w.unmanaged / limit, "var(--unmanaged)"]],
            w.name + ": " + fmtBytes(w.memory));
        });
        fillTable(p.table, ["worker", "managed", "unmanaged", "spilled", "limit"],
          ws.map(w => [w.name, fmtBytes(w.managed), fmtBytes(w.unmanaged), fmtBytes(w.spilled), fmtBytes(w.memory_limit)]));
      },
    },
    "nprocessing": {
      title: "Tasks processing per worker",
      draw(p, s) {
        const h = 18, ws = s.workers, most = Math.max(1, ...ws.map(w => w.processing));
        clear(p.chart); p.chart.setAttribute("viewBox", "0 0 " + W + " " + Math.max(h, ws.length * (h + 2)));
        ws.forEach((w, i) => bar(p.chart, i * (h + 2), h, W, [[w.processing / most, "var(--proc)"]],
          w.name + ": " + w.processing));
        fillTable(p.table, ["worker", "processing", "threads"], ws.map(w => [w.name, w.processing, w.nthreads]));
      },
    },
    "progress": {
      title: "Progress",
      draw(p, s) {
        p.note.textContent = etaText(s);
        const h = 18, gs = s.groups;
        clear(p.chart); p.chart.setAttribute("viewBox", "0 0 " + W + " " + Math.max(h, gs.length * (h + 2)));
        gs.forEach((g, i) => {
          const t = Math.max(g.total, 1);
          bar(p.chart, i * (h + 2), h, W, [[g.memory / t, "var(--mem)"], [g.erred / t, "var(--err)"],
            [g.processing / t, "var(--proc)"]], g.name + ": " + g.memory + " / " + g.total);
        });
        fillTable(p.table, ["name", "total", "memory", "processing", "waiting", "erred", "released"],
          gs.map(g => [g.name, g.total, g.memory, g.processing, g.waiting + g.queued + g["no-worker"], g.erred,
            g.released]));
      },
    },
    "task-stream": {
      title: "Task stream",
      wide: true,
      draw(p) { drawStream(p); },
    },
    "workers": {
      title: "Workers",
      wide: true,
      draw(p, s) {
        clear(p.chart); p.chart.setAttribute("viewBox", "0 0 " + W + " 0");
        fillTable(p.table, ["name", "address", "threads", "status", "processing", "in memory", "memory", "limit",
          "managed", "cpu"], s.workers.map(w => [w.name, w.address, w.nthreads, w.status, w.processing, w.in_memory,
          fmtBytes(w.memory), fmtBytes(w.memory_limit), fmtBytes(w.managed), w.cpu]));
      },
    },
    "groups": {
      title: "Task groups",
      wide: true,
      draw(p, s) {
        p.note.textContent = etaText(s);
        const gs = s.groups, h = 18;
        clear(p.chart); p.chart.setAttribute("viewBox", "0 0 " + W + " " + Math.max(h, gs.length * (h + 2)));
        gs.forEach((g, i) => bar(p.chart, i * (h + 2), h, W, [[g.memory / Math.max(g.total, 1), "var(--mem)"]],
          g.name));
        fillTable(p.table, ["name", "total", "memory", "erred", "compute (s)", "mean (s)", "bytes in memory"],
          gs.map(g => [g.name, g.total, g.memory, g.erred, Number(g.compute_seconds.toFixed(3)),
            g.mean_duration === null ? "-" : Number(g.mean_duration.toFixed(4)), fmtBytes(g.nbytes)]));
      },
    },
    "system": {
      title: "Cluster over time",
      wide: true,
      draw(p) {
        const hist = history, h = 120;
        clear(p.chart); p.chart.setAttribute("viewBox", "0 0 " + W + " " + h);
        if (hist.length > 1) {
          const t0 = hist[0].t, t1 = hist[hist.length - 1].t || t0 + 1;
          [["memory", "var(--mem)"], ["processing", "var(--proc)"]].forEach(([k, color]) => {
            const most = Math.max(1, ...hist.map(x => x[k]));
            const pts = hist.map(x => ((x.t - t0) / Math.max(t1 - t0, 1e-9) * W).toFixed(1) + "," +
              (h - x[k] / most * (h - 4)).toFixed(1)).join(" ");
            p.chart.appendChild(svgEl("polyline", { points: pts, fill: "none", stroke: color }));
          });
        }
        fillTable(p.table, ["time", "process memory", "tasks processing", "tasks"],
          hist.slice(-10).reverse().map(x => [new Date(x.t * 1000).toLocaleTimeString(), fmtBytes(x.memory),
            x.processing, x.tasks]));
      },
    },
    "flame": {
      title: "Profile",
      wide: true,
      init(p) { flameInit(p); },
      // Frames carry the groups only: the tree comes from /json/profile.json.
      draw(p, s) { flamePrefixes(s.groups); },
    },
    "profile": {
      title: "Compute time per task prefix",
      wide: true,
      draw(p, s) {
        const gs = s.groups.slice().sort((a, b) => b.compute_seconds - a.compute_seconds), h = 18;
        const most = Math.max(1e-9, ...gs.map(g => g.compute_seconds));
        clear(p.chart); p.chart.setAttribute("viewBox", "0 0 " + W + " " + Math.max(h, gs.length * (h + 2)));
        gs.forEach((g, i) => bar(p.chart, i * (h + 2), h, W, [[g.compute_seconds / most, hue(g.name)]],
          g.name + ": " + g.compute_seconds.toFixed(3) + " s"));
        fillTable(p.table, ["prefix", "compute (s)", "tasks finished"],
          gs.map(g => [g.name, Number(g.compute_seconds.toFixed(3)), g.memory]));
      },
    },
  };
  const layouts = {
    status: ["cluster-memory", "progress", "workers-memory", "nprocessing", "task-stream"],
    workers: ["workers"], tasks: ["task-stream"], system: ["system", "cluster-memory"],
    profile: ["flame", "profile"], groups: ["groups", "progress"],
  };
  const names = page.startsWith("individual-") ? [page.slice("individual-".length)] : (layouts[page] || []);
  const shown = names.filter(n => panels[n]).map(n => [panels[n], panel(n, panels[n].title, panels[n].wide)]);

  // ---- task stream ----------------------------------------------------------
  let records = [], lastIndex = -1, streamChain = Promise.resolve();
  // Stream frames carry compact rows; /api/v1/task_stream carries records.
  function fromRow(r) {
    return { index: r[0], key: r[1], prefix: r[2], worker: r[3], status: r[6],
      startstops: [{ action: "compute", start: r[4] / 1000, stop: r[5] / 1000 }] };
  }
  function addRecords(recs) {
    recs.forEach(r => { if (r.index > lastIndex) { records.push(r); lastIndex = r.index; } });
    if (records.length > STREAM_KEEP) records = records.slice(records.length - STREAM_KEEP);
  }
  function fetchStream(after) {
    return fetch("/api/v1/task_stream?after=" + after + "&limit=20000").then(r => r.json())
      .then(d => addRecords(d.records));
  }
  function drawStream(p) {
    const recs = records.slice(-STREAM_DRAW), lanes = new Map();
    recs.forEach(r => { if (!lanes.has(r.worker)) lanes.set(r.worker, lanes.size); });
    const h = 16, height = Math.max(h, lanes.size * (h + 2));
    clear(p.chart); p.chart.setAttribute("viewBox", "0 0 " + W + " " + height);
    if (recs.length) {
      let t0 = Infinity, t1 = -Infinity;
      recs.forEach(r => { const ss = r.startstops[0]; t0 = Math.min(t0, ss.start); t1 = Math.max(t1, ss.stop); });
      const span = Math.max(t1 - t0, 1e-6);
      recs.forEach(r => {
        const ss = r.startstops[0], y = lanes.get(r.worker) * (h + 2);
        const rect = svgEl("rect", { x: ((ss.start - t0) / span * W).toFixed(2), y: y,
          width: Math.max(0.5, (ss.stop - ss.start) / span * W).toFixed(2), height: h,
          fill: r.status === "error" ? "var(--err)" : hue(r.prefix) });
        rect.appendChild(svgEl("title", {}, r.key));
        p.chart.appendChild(rect);
      });
    }
    const byPrefix = new Map();
    records.forEach(r => byPrefix.set(r.prefix, (byPrefix.get(r.prefix) || 0) + 1));
    const rows = Array.from(byPrefix.entries()).map(([k, n]) => [k, n]);
    const recent = records.slice(-20).reverse().map(r => [r.prefix, r.key, r.worker || "",
      Number((r.startstops[0].stop - r.startstops[0].start).toFixed(4))]);
    fillTable(p.table, ["prefix", "tasks"], rows);
    let last = document.getElementById("task-stream-recent");
    if (!last) {
      last = el("table", { id: "task-stream-recent" });
      p.table.parentNode.appendChild(last);
    }
    fillTable(last, ["prefix", "key", "worker", "seconds"], recent);
  }

  // ---- profile: the flame graph ---------------------------------------------
  // An icicle (root on top, each frame under its caller, width = samples) of
  // /json/profile.json, fetched every FLAME_EVERY ms while the tab is visible:
  // a tree is too big for every stream frame.  Click a frame to zoom into it,
  // the root bar to zoom out.  The twin table lists the top functions.
  const FLAME_EVERY = 2000, FLAME_ROW = 18;
  const flame = { p: null, data: null, zoom: [], seq: 0, busy: false, prefixes: "", controls: null };
  function choice(label, options) {
    const wrap = el("label", {}, label + " ");
    const sel = el("select");
    options.forEach(([value, text]) => sel.appendChild(el("option", { value: value }, text)));
    wrap.appendChild(sel);
    return [wrap, sel];
  }
  function flameInit(p) {
    flame.p = p;
    p.chart.classList.add("flame");
    const bar = el("div", { class: "controls" });
    const [l1, source] = choice("profile of", [["tasks", "tasks"], ["server", "workers' event loops"],
      ["scheduler", "scheduler's event loop"]]);
    const [l2, prefix] = choice("task prefix", [["", "all"]]);
    const [l3, win] = choice("time", [["10s", "last 10 s"], ["60s", "last minute"], ["600s", "last 10 minutes"],
      ["", "all"]]);
    win.value = "600s";
    source.id = "flame-source"; prefix.id = "flame-prefix"; win.id = "flame-window";
    [l1, l2, l3].forEach(l => bar.appendChild(l));
    p.section.insertBefore(bar, p.note);
    flame.controls = { source: source, prefix: prefix, win: win };
    [source, prefix, win].forEach(c => c.addEventListener("change", () => {
      prefix.disabled = source.value !== "tasks";
      flame.zoom = [];
      flameFetch();
    }));
    setInterval(() => { if (!document.hidden && !flame.busy) flameFetch(); }, FLAME_EVERY);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) flameFetch(); });
    flameFetch();
  }
  // The prefix selector follows the groups the stream reports (rebuilt only
  // when they change, so an open list is not disturbed).
  function flamePrefixes(groups) {
    const sel = flame.controls && flame.controls.prefix;
    if (!sel) return;
    const names = groups.map(g => g.name).sort();
    const sig = JSON.stringify(names);
    if (sig === flame.prefixes) return;
    flame.prefixes = sig;
    const keep = sel.value;
    while (sel.options.length > 1) sel.remove(1);
    names.forEach(n => sel.appendChild(el("option", { value: n }, n)));
    if (keep && !names.includes(keep)) sel.appendChild(el("option", { value: keep }, keep));
    sel.value = keep;
  }
  function flameURL() {  // the query of the current controls
    const c = flame.controls, q = new URLSearchParams();
    if (c.win.value) q.set("start", c.win.value);
    if (c.source.value === "server") q.set("server", "1");
    else if (c.source.value === "scheduler") q.set("scheduler", "1");
    else if (c.prefix.value) q.set("key", c.prefix.value);
    return "/json/profile.json?" + q.toString();
  }
  function flameFetch() {
    const seq = ++flame.seq, url = flameURL();
    flame.busy = true;
    fetch(url).then(r => r.text().then(body => {
      // 400s carry {"error"}; other failures (401, 503) are plain text.
      let d;
      try { d = JSON.parse(body); } catch (err) { d = { error: body.trim() }; }
      if (!r.ok) throw new Error(d.error || ("HTTP " + r.status));
      return d;
    })).then(d => {
      if (seq !== flame.seq) return;  // a newer request (other settings) is on its way
      flame.data = d;
      flameDraw();
      flame.p.section.dataset.query = url;  // what the graph shows (for tests and bug reports)
    }).catch(e => {
      if (seq === flame.seq) flame.p.note.textContent = "profile unavailable: " + e.message;
    }).finally(() => { if (seq === flame.seq) flame.busy = false; });
  }
  // The node at the end of the zoom path (the deepest one still in the tree).
  function flameTop(tree) {
    let node = tree;
    const kept = [];
    for (const id of flame.zoom) {
      const child = node.children[id];
      if (!child) break;
      node = child;
      kept.push(id);
    }
    flame.zoom = kept;
    return node;
  }
  function flameTip(node, total) {
    const d = node.description;
    return d.name + " (" + d.filename + ":" + d.line_number + ") " + node.count + " samples, " +
      (100 * node.count / Math.max(total, 1)).toFixed(1) + "%";
  }
  function fit(text, width) {
    const room = Math.floor((width - 6) / 6.5);
    if (room < 3) return "";
    return text.length <= room ? text : text.slice(0, room - 1) + "\u2026";
  }
  function flameDraw() {
    const p = flame.p, d = flame.data, svg = p.chart;
    const total = d.count, top = flameTop(d.tree);
    const width = Math.max(200, Math.round(svg.getBoundingClientRect().width) || W);
    const rows = [];  // [node, x, w, depth, path]
    const todo = [[top, 0, width, 0, flame.zoom.slice()]];
    while (todo.length) {
      const item = todo.pop(), node = item[0];
      rows.push(item);
      let x = item[1];
      Object.keys(node.children).sort().forEach(id => {
        const child = node.children[id], w = child.count / Math.max(top.count, 1) * width;
        if (w >= 0.5) todo.push([child, x, w, item[3] + 1, item[4].concat([id])]);
        x += w;
      });
    }
    const depth = rows.reduce((m, r) => Math.max(m, r[3]), 0) + 1;
    clear(svg);
    svg.setAttribute("viewBox", "0 0 " + width + " " + depth * FLAME_ROW);
    rows.forEach(([node, x, w, level, path]) => {
      const root = level === 0, g = svgEl("g", root ? { class: "flame-root" } : {});
      const name = root ? (flame.zoom.length ? node.description.name : "all") : node.description.name;
      const rect = svgEl("rect", { x: x.toFixed(2), y: level * FLAME_ROW, width: Math.max(0.5, w - 0.5).toFixed(2),
        height: FLAME_ROW - 1, fill: root ? "#c9c9c9" : flameColor(name) });
      const tip = root && !flame.zoom.length ? "all: " + total + " samples" : flameTip(node, total);
      rect.appendChild(svgEl("title", {}, tip + (root && flame.zoom.length ? " (click to zoom out)" : "")));
      g.appendChild(rect);
      const label = root ? (flame.zoom.length ? "\u2190 " + name : "all") + " (" + node.count + " samples)" : name;
      const text = fit(label, w);
      if (text) g.appendChild(svgEl("text", { x: (x + 3).toFixed(2), y: level * FLAME_ROW + FLAME_ROW - 5,
        class: "label" }, text));
      g.addEventListener("click", () => {
        flame.zoom = root ? [] : path;
        flameDraw();
      });
      svg.appendChild(g);
    });
    const dropped = d.dropped.samples;
    p.note.textContent = total ? total + " samples" + (dropped ? "; " + dropped + " in frames under " +
      (100 * d.min_share) + "% or deeper than " + d.max_depth + " not drawn" : "") :
      "No samples in this window (profiling is off, or nothing ran).";
    fillTable(p.table, ["function", "where", "samples", "self", "share"],
      d.functions.map(f => [f.name, f.filename + ":" + f.line_number, f.count, f.self,
        (100 * f.share).toFixed(1) + "%"]));
  }
  function flameColor(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return "hsl(" + (10 + h % 45) + "," + (65 + (h >>> 8) % 25) + "%," + (58 + (h >>> 16) % 14) + "%)";
  }

  // The scheduler's estimate of the time left (the remaining graph's critical
  // path, or its work over the threads), counted down since it was made.
  function etaText(s) {
    const e = s.eta;
    if (!e || !(e.eta > 0)) return "";
    const left = Math.max(0, e.eta - (s.time - e.made));
    let text = "ETA " + (left < 90 ? left.toFixed(1) + " s" : (left / 60).toFixed(1) + " min");
    if (e.bottleneck) text += " (critical path mostly " + e.bottleneck.prefix + ")";
    return text;
  }

  // ---- the stream -----------------------------------------------------------
  let history = [];
  function onSnapshot(s) {
    history.push({ t: s.time, memory: s.cluster.memory_process, processing: s.totals.processing,
      tasks: s.cluster.tasks });
    if (history.length > 7200) history = history.slice(-7200);
    // Tasks queued behind busy workers are normal back-pressure, not a stall.
    const stalled = Object.entries(s.stalled || {}).filter(([k]) => k !== "queued-saturated");
    if (stalled.length) {
      banner.hidden = false;
      banner.textContent = "Stalled tasks: " + stalled.map(([k, n]) => k + " " + n).join(", ");
    } else {
      banner.hidden = true;
    }
    // A frame holds the newest rows only: under heavy throughput the page
    // shows a sample of the stream rather than make the scheduler send more.
    streamChain = streamChain.then(() => {
      addRecords(s.stream.map(fromRow));
      shown.forEach(([spec, p]) => spec.draw(p, s));
      document.body.dataset.updated = String(s.time);
    }).catch(e => { console.warn("dashboard update failed:", e); });
  }
  function connect() {
    const src = new EventSource("/api/v1/stream");
    src.addEventListener("snapshot", ev => onSnapshot(JSON.parse(ev.data)));
    src.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
    src.onerror = () => { conn.textContent = "disconnected"; conn.className = "conn down"; };
  }
  // Panels with their own data source (the profile) start once all is defined.
  shown.forEach(([spec, p]) => { if (spec.init) spec.init(p); });
  streamChain = fetchStream(-1).catch(() => {});
  connect();
})();
