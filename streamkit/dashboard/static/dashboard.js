// streamkit dashboard: reads /api/graph once and the live view from /api/events (server-sent
// events). Plain DOM and SVG, no dependencies, nothing fetched from anywhere else.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 190, NODE_H = 70, COL_GAP = 44, ROW_GAP = 20, PAD = 16;
// topics are the wires between stages: narrower boxes keep long pipelines on one screen
const WIDTH = {stage: NODE_W, topic: 150, sink: 150, table: 150, window: 160, timers: 130};
const widthOf = (n) => WIDTH[n.kind] || NODE_W;

function api(path) {
  if (!TOKEN) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

// h("td", {class: "num"}, "12"): an element; strings become text nodes (never HTML)
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined && v !== false) el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, v);
  }
  if (text !== undefined) el.textContent = text;
  return el;
}

function table(headers, rows) {
  const head = h("tr", {}, headers.map(([label, cls]) => h("th", {class: cls}, label)));
  return h("table", {}, h("thead", {}, head), h("tbody", {}, rows));
}

function fill(id, ...content) {
  const el = document.getElementById(id);
  el.replaceChildren(...content.flat());
  return el;
}

const fmt = {
  rate: (x) => x === null || x === undefined ? "–" : x >= 100 ? x.toFixed(0) : x.toFixed(1),
  int: (x) => x === null || x === undefined ? "–" : Number(x).toLocaleString("en"),
  pct: (x) => x === null || x === undefined ? "–" : Math.round(x * 100) + "%",
  bytes: (x) => {
    if (x === null || x === undefined) return "–";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (x >= 1024 && i < units.length - 1) { x /= 1024; i++; }
    return (i ? x.toFixed(1) : x) + " " + units[i];
  },
  ms: (s) => s === null || s === undefined ? "–" : (s * 1000).toFixed(1) + " ms",
  time: (t) => new Date(t * 1000).toLocaleTimeString("en-GB"),
  short: (text, n) => text.length > n ? text.slice(0, n - 1) + "…" : text,
};

// -- the graph ---------------------------------------------------------------------------------

let GRAPH = null;
const NODES = new Map(); // id -> {node, g, sub, bars}
const NODE_WIDTH = new Map();
const RATES = new Map(); // stage node id -> its last 60 rates (one per view), for the sparkline
const SPARK_W = 64, SPARK_H = 16;

function layout(graph) {
  const ids = graph.nodes.map((n) => n.id);
  const incoming = new Map(ids.map((id) => [id, []]));
  for (const e of graph.edges) incoming.get(e.to)?.push(e.from);
  const layer = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (layer.has(id)) return layer.get(id);
    if (visiting.has(id)) return 0; // a cycle: cut it
    visiting.add(id);
    const preds = incoming.get(id) || [];
    const d = preds.length ? Math.max(...preds.map(depth)) + 1 : 0;
    visiting.delete(id);
    layer.set(id, d);
    return d;
  };
  ids.forEach(depth);
  const columns = [];
  for (const n of graph.nodes) {
    const d = n.role === "dlq" ? 0 : layer.get(n.id);
    (columns[d] = columns[d] || []).push(n.id);
  }
  const row = new Map();
  columns.forEach((col) => {
    // order by the mean row of predecessors, so chains stay on a line
    const key = (id) => {
      const preds = (incoming.get(id) || []).filter((p) => row.has(p));
      return preds.length ? preds.reduce((a, p) => a + row.get(p), 0) / preds.length : 1e9;
    };
    col.sort((a, b) => key(a) - key(b));
    const used = new Set();
    col.forEach((id) => {
      let r = Math.max(0, Math.round(key(id) < 1e9 ? key(id) : 0));
      while (used.has(r)) r++;
      used.add(r);
      row.set(id, r);
    });
  });
  const byId = new Map(graph.nodes.map((n) => [n.id, n]));
  const colX = [PAD];
  columns.forEach((col, c) => {
    const w = Math.max(0, ...(col || []).map((id) => widthOf(byId.get(id))));
    colX[c + 1] = colX[c] + w + COL_GAP;
  });
  const pos = new Map();
  for (const [id, r] of row) {
    const n = byId.get(id);
    const col = n.role === "dlq" ? 0 : layer.get(id);
    pos.set(id, {x: colX[col], y: PAD + r * (NODE_H + ROW_GAP), w: widthOf(n)});
  }
  return pos;
}

function drawGraph(graph) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  const pos = layout(graph);
  let w = 0, hgt = 0;
  for (const p of pos.values()) { w = Math.max(w, p.x + p.w); hgt = Math.max(hgt, p.y + NODE_H); }
  svg.setAttribute("viewBox", `0 0 ${w + PAD} ${hgt + PAD}`);
  svg.setAttribute("width", w + PAD);
  svg.setAttribute("height", hgt + PAD);
  const defs = s("defs");
  const marker = s("marker", {id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse"});
  marker.append(s("path", {d: "M 0 0 L 10 5 L 0 10 z", fill: "#9aa3b5"}));
  defs.append(marker);
  svg.append(defs);
  for (const e of graph.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + a.w, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    svg.append(s("path", {class: `edge ${e.kind}`, "marker-end": "url(#arrow)",
      d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`, "data-kind": e.kind}));
    if (!["source", "sink", "state"].includes(e.kind)) {
      svg.append(s("text", {class: "edge-label", x: mid - 14, y: (y1 + y2) / 2 - 4}, e.kind));
    }
  }
  for (const n of graph.nodes) {
    const p = pos.get(n.id);
    const g = s("g", {class: `node ${n.kind}`, transform: `translate(${p.x},${p.y})`,
      "data-id": n.id, "data-kind": n.kind});
    g.append(s("rect", {class: "box", width: p.w, height: NODE_H, rx: 6}));
    const kind = n.kind === "topic" && n.role !== "topic" ? `${n.role} topic` : n.kind;
    g.append(s("text", {class: "kind", x: 8, y: 13}, kind));
    const title = s("title", {}, n.label);
    g.append(title);
    g.append(s("text", {class: "label", x: 8, y: 29}, fmt.short(n.label, Math.floor(p.w / 7))));
    const sub = s("text", {class: "sub", x: 8, y: 45}, describe(n));
    g.append(sub);
    const bars = s("g", {class: "pbars", transform: `translate(8, ${NODE_H - 8})`});
    NODE_WIDTH.set(n.id, p.w);
    g.append(bars);
    svg.append(g);
    NODES.set(n.id, {node: n, g, sub, bars});
  }
}

function drawSpark(id, g, rate) {
  const history = RATES.get(id) || [];
  history.push(rate || 0);
  if (history.length > 60) history.shift();
  RATES.set(id, history);
  let line = g.querySelector("polyline.spark");
  if (!line) {
    line = s("polyline", {class: "spark"});
    g.append(line);
  }
  const max = Math.max(1e-9, ...history);
  const x0 = (NODE_WIDTH.get(id) || NODE_W) - SPARK_W - 8;
  const step = SPARK_W / 59;
  line.setAttribute("points", history.map((r, i) =>
    `${(x0 + (60 - history.length + i) * step).toFixed(1)},${(4 + SPARK_H * (1 - r / max)).toFixed(1)}`
  ).join(" "));
}

function describe(n) {
  if (n.kind === "stage") return `x${n.parallelism ?? "?"} · ${fmt.short(n.ops, 22)}`;
  if (n.kind === "topic" || n.kind === "sink") return n.partitions ? `${n.partitions} partitions` : "";
  if (n.kind === "window") return `${n.window} · ${n.aggregation}`;
  if (n.kind === "table") return n.global ? "global, read-only" : n.read_only ? "read-only" : "table";
  return n.kind;
}

function updateGraph(snap) {
  const parts = snap.partitions || [];
  const stateBytes = {};
  for (const t of snap.tables || []) {
    stateBytes[t.table] = (stateBytes[t.table] || 0);
  }
  const perTask = new Map();
  for (const t of snap.tables || []) perTask.set(`${t.table}/${t.partition}`, t);
  const tableBytes = {};
  const tableRows = {};
  for (const t of perTask.values()) {
    tableBytes[t.table] = (tableBytes[t.table] || 0) + (t.store_bytes || 0);
    tableRows[t.table] = (tableRows[t.table] || 0) + (t.cached || 0);
  }
  const lateCount = {};
  for (const l of snap.late || []) lateCount[l.topic] = l.counted;
  const dlqCount = {};
  for (const d of snap.dead_letters || []) dlqCount[d.topic] = d.counted;
  for (const {node: n, g, sub, bars} of NODES.values()) {
    if (n.kind === "stage") {
      const st = (snap.stages || {})[n.stage];
      if (!st) continue;
      sub.textContent = `${fmt.rate(st.rate)}/s · lag ${fmt.int(st.lag)} · busy ${fmt.pct(st.busy)}`;
      g.setAttribute("data-rate", st.rate);
      g.setAttribute("data-lag", st.lag);
      drawSpark(n.id, g, st.rate);
      g.classList.toggle("hot", !!st.hot);
      g.classList.toggle("busy", (st.busy || 0) > 0.8);
      const mine = parts.filter((p) => p.topic === n.input);
      const max = Math.max(1e-9, ...mine.map((p) => p.rate || 0));
      const bw = Math.min(14, (NODE_W - 16) / Math.max(1, mine.length) - 2);
      bars.replaceChildren(...mine.map((p, i) => {
        const bh = 2 + 12 * ((p.rate || 0) / max);
        const bar = s("rect", {class: "pbar" + (p.hot ? " hot" : ""), x: i * (bw + 2), y: -bh,
          width: bw, height: bh, "data-partition": p.partition});
        bar.append(s("title", {}, `partition ${p.partition}: ${fmt.rate(p.rate)}/s, lag ${p.lag}` +
          (p.hot ? " (hot)" : "")));
        return bar;
      }));
    } else if (n.kind === "topic" || n.kind === "sink") {
      const out = (snap.topics || {})[n.topic];
      const count = n.partitions ?? (snap.topic_partitions || {})[n.topic];
      const bits = count ? [`${count} parts`] : [];
      if (out) bits.push(`in ${fmt.rate(out.rate_out)}/s`);
      if (n.role === "dlq") bits.push(`${fmt.int(dlqCount[n.topic] || 0)} dead letters`);
      if (n.role === "late") bits.push(`${fmt.int(lateCount[n.topic] || 0)} late`);
      sub.textContent = bits.join(" · ");
      g.setAttribute("data-rate", out ? out.rate_out : 0);
    } else if (n.kind === "table" && tableBytes[n.table] !== undefined) {
      sub.textContent = `${fmt.bytes(tableBytes[n.table])} · ${fmt.int(tableRows[n.table])} cached`;
    }
  }
}

// -- the panels --------------------------------------------------------------------------------

function updateSummary(snap) {
  const stages = Object.values(snap.stages || {});
  const rate = Object.entries(snap.stages || {}).filter(([name]) => name.endsWith(".0"))
    .reduce((a, [, st]) => a + st.rate, 0);
  const lag = stages.reduce((a, st) => a + st.lag, 0);
  const cps = snap.checkpoints || [];
  const last = cps[cps.length - 1];
  const items = [
    ["group", snap.group ? snap.group.state : "–"],
    ["members", snap.group ? snap.group.members.length : "–"],
    ["events/s in", fmt.rate(rate)],
    ["total lag", fmt.int(lag)],
    ["last checkpoint", last ? fmt.ms(last.duration_s) : "–"],
    ["updated", snap.at ? fmt.time(snap.at) : "–"],
  ];
  fill("summary", items.map(([k, v]) => h("div", {}, h("b", {}, String(v)), k)));
}

function updatePartitions(snap) {
  const rows = (snap.partitions || []).map((p) => h("tr",
    {class: p.hot ? "hot" : null, "data-topic": p.topic, "data-partition": p.partition,
     "data-hot": p.hot ? "1" : "0"},
    h("td", {}, p.stage), h("td", {}, p.topic), h("td", {class: "num"}, p.partition),
    h("td", {}, p.owner || "–"), h("td", {}, p.state || "–"),
    h("td", {class: "num"}, fmt.rate(p.rate)),
    h("td", {}, h("span", {class: "bar" + (p.hot ? " hot" : ""),
      style: `width:${Math.round(60 * (p.share || 0))}px`}), " ", fmt.pct(p.share),
      p.hot ? h("span", {class: "badge hot"}, "hot") : null),
    h("td", {class: "num"}, fmt.int(p.lag)), h("td", {class: "num"}, fmt.pct(p.busy)),
    h("td", {class: "num"}, fmt.pct(p.backpressured)),
    h("td", {class: "num"}, fmt.int(p.events_in)), h("td", {class: "num"}, fmt.int(p.committed)),
    h("td", {class: "num"}, fmt.bytes(p.state_bytes))));
  fill("partitions", table([["stage"], ["input"], ["part", "num"], ["owner"], ["task"],
    ["events/s", "num"], ["share"], ["lag", "num"], ["busy", "num"], ["backpressured", "num"],
    ["events in", "num"], ["committed", "num"], ["state", "num"]], rows));
}

function updateHot(snap) {
  const hotParts = snap.hot_partitions || [];
  const partsView = hotParts.length
    ? table([["input"], ["part", "num"], ["events/s", "num"], ["share", "num"], ["owner"]],
      hotParts.map((p) => h("tr", {class: "hot"}, h("td", {}, p.topic),
        h("td", {class: "num"}, p.partition), h("td", {class: "num"}, fmt.rate(p.rate)),
        h("td", {class: "num"}, fmt.pct(p.share)), h("td", {}, p.owner || "–"))))
    : h("p", {class: "muted"}, "no partition takes twice its share");
  const keys = snap.hot_keys || [];
  const keysView = keys.length
    ? table([["input"], ["key"], ["of the newest", "num"], ["share", "num"], [""]],
      keys.map((k) => h("tr", {class: k.hot ? "hot" : null}, h("td", {}, k.topic),
        h("td", {}, fmt.short(JSON.stringify(k.key), 40)),
        h("td", {class: "num"}, `${k.count} / ${k.of}`), h("td", {class: "num"}, fmt.pct(k.share)),
        h("td", {}, k.hot ? h("span", {class: "badge hot"}, "hot") : null))))
    : h("p", {class: "muted"}, "no keyed records read yet");
  fill("hot", h("h3", {}, "Partitions"), partsView,
    h("h3", {}, "Keys ", h("small", {class: "muted"}, "(counted over the newest records of each input partition)")),
    keysView);
}

function updateCheckpoints(snap) {
  const cps = snap.checkpoints || [];
  const svg = document.getElementById("checkpoint-chart");
  const width = svg.clientWidth || 500, height = 120;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.replaceChildren();
  const now = snap.at || Date.now() / 1000, span = 300;
  const shown = cps.filter((c) => c.at >= now - span);
  const max = Math.max(0.01, ...shown.map((c) => c.duration_s));
  for (const c of shown) {
    const x = width * (1 - (now - c.at) / span);
    const bh = Math.max(1, (height - 18) * c.duration_s / max);
    const r = s("rect", {class: c.failed ? "failed" : "ok", x: x - 1.5, y: height - 14 - bh,
      width: 3, height: bh});
    r.append(s("title", {}, `${c.worker} ${fmt.time(c.at)}: ${fmt.ms(c.duration_s)}, ` +
      `${c.records} records (${c.changelog_records} changelog), state ${fmt.bytes(c.state_bytes)}` +
      (c.failed ? ", FAILED" : "")));
    svg.append(r);
  }
  svg.append(s("text", {x: 4, y: 11}, `max ${fmt.ms(max)}`));
  svg.append(s("text", {x: 4, y: height - 2}, "−5 min"));
  svg.append(s("text", {x: width - 24, y: height - 2}, "now"));
  const failed = cps.filter((c) => c.failed).length;
  const recent = cps.slice(-8).reverse();
  fill("checkpoints",
    h("p", {}, `${cps.length} recent checkpoints, `, h("span", {class: failed ? "badge bad" : "badge"},
      `${failed} failed`)),
    table([["worker"], ["at"], ["duration", "num"], ["records", "num"], ["changelog", "num"],
      ["state", "num"], [""]],
      recent.map((c) => h("tr", {class: c.failed ? "hot" : null}, h("td", {}, c.worker),
        h("td", {}, fmt.time(c.at)), h("td", {class: "num"}, fmt.ms(c.duration_s)),
        h("td", {class: "num"}, fmt.int(c.records)), h("td", {class: "num"}, fmt.int(c.changelog_records)),
        h("td", {class: "num"}, fmt.bytes(c.state_bytes)),
        h("td", {}, c.failed ? h("span", {class: "badge bad"}, "failed") : "")))));
  const rbs = (snap.rebalances || []).slice(-8).reverse();
  fill("rebalances", rbs.length
    ? table([["worker"], ["at"], ["partitions after", "num"]], rbs.map((r) => h("tr", {},
      h("td", {}, r.worker), h("td", {}, fmt.time(r.at)), h("td", {class: "num"}, r.partitions))))
    : h("p", {class: "muted"}, "none"));
}

function updateMembers(snap) {
  const workers = new Map((snap.workers || []).map((w) => [w.member_id, w]));
  const members = (snap.group && snap.group.members) || [];
  fill("members", members.length ? table(
    [["client"], ["host"], ["http"], ["guarantee"], ["partitions"]],
    members.map((m) => {
      const w = workers.get(m.member_id) || {};
      const byTopic = {};
      for (const [t, p] of m.assigned) (byTopic[t] = byTopic[t] || []).push(p);
      return h("tr", {}, h("td", {}, m.client_id), h("td", {}, m.host), h("td", {}, m.endpoint || "–"),
        h("td", {}, w.guarantee || "–"),
        h("td", {}, Object.entries(byTopic).map(([t, ps]) =>
          h("div", {}, h("span", {class: "muted"}, fmt.short(t, 40) + " "), ps.join(",")))));
    })) : h("p", {class: "muted"}, "no members: is a worker running?"));
}

function updateState(snap) {
  const rows = (snap.tables || []).slice().sort((a, b) =>
    a.table.localeCompare(b.table) || a.partition - b.partition);
  fill("state", rows.length ? table(
    [["table"], ["part", "num"], ["worker"], ["cached", "num"], ["dirty", "num"], ["store", "num"]],
    rows.map((t) => h("tr", {}, h("td", {}, t.table), h("td", {class: "num"}, t.partition),
      h("td", {}, t.worker), h("td", {class: "num"}, fmt.int(t.cached)),
      h("td", {class: "num"}, fmt.int(t.dirty)), h("td", {class: "num"}, fmt.bytes(t.store_bytes)))))
    : h("p", {class: "muted"}, "no stateful task running"));
}

function letters(list, what) {
  return list.map((d) => h("div", {},
    h("h3", {}, `${d.topic} `, h("span", {class: "badge"}, `${fmt.int(d.counted)} ${what} counted by the workers`)),
    d.latest.length ? d.latest.map((r) => h("div", {class: "letter", "data-type": r.type || ""},
      h("b", {}, r.type || "?"), " ", r.error || "",
      h("div", {class: "muted"}, `from ${r.source.topic}[${r.source.partition}]@${r.source.offset}`,
        ` · ${r.agent || "?"} · ${r.timestamp ? new Date(r.timestamp).toLocaleString("en-GB") : ""}`,
        ` · here ${d.topic}[${r.partition}]@${r.offset}`),
      h("div", {}, "key ", h("code", {}, r.key === null ? "null" : fmt.short(r.key, 60)),
        " value ", h("code", {}, r.value === null ? "null" : fmt.short(r.value, 160)))))
      : h("p", {class: "muted"}, "empty")));
}

function updateLetters(snap) {
  fill("letters", letters(snap.dead_letters || [], "dead letters"),
    letters(snap.late || [], "late events"));
}

function updateErrors(snap) {
  const errs = snap.errors || [];
  const el = fill("errors", errs.length ? errs.map((e) => h("div", {}, e)) : "none");
  el.className = errs.length ? "" : "muted";
}

function render(snap) {
  document.getElementById("app-id").textContent = snap.app || "";
  if (!snap.partitions) { updateErrors(snap); return; }
  updateSummary(snap);
  updateGraph(snap);
  updatePartitions(snap);
  updateHot(snap);
  updateCheckpoints(snap);
  updateMembers(snap);
  updateState(snap);
  updateLetters(snap);
  updateErrors(snap);
  window.LAST_SNAPSHOT = snap;
}

// -- lookup --------------------------------------------------------------------------------------

function setupLookup(graph) {
  const select = document.getElementById("lookup-table");
  const tables = graph.nodes.filter((n) => n.kind === "table" && n.queryable);
  const windows = graph.nodes.filter((n) => n.kind === "window");
  const timers = graph.nodes.filter((n) => n.kind === "timers");  // answered by /windows too
  select.replaceChildren(
    ...tables.map((n) => h("option", {value: "table=" + encodeURIComponent(n.table)}, n.table)),
    ...windows.map((n) => h("option", {value: "window=" + encodeURIComponent(n.name)},
      `${n.name} (window)`)),
    ...timers.map((n) => h("option", {value: "window=" + encodeURIComponent(n.label)},
      `${n.label} (timers)`)));
  document.getElementById("lookup").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const key = document.getElementById("lookup-key").value;
    const out = document.getElementById("lookup-result");
    out.textContent = "…";
    try {
      const resp = await fetch(api(`api/lookup?${select.value}&key=${encodeURIComponent(key)}`));
      const body = await resp.json();
      out.textContent = JSON.stringify(body, null, 2);
    } catch (err) {
      out.textContent = String(err);
    }
  });
}

// -- start ---------------------------------------------------------------------------------------

async function start() {
  const resp = await fetch(api("api/graph"));
  GRAPH = await resp.json();
  document.getElementById("app-id").textContent = GRAPH.app;
  drawGraph(GRAPH);
  setupLookup(GRAPH);
  document.getElementById("fit").addEventListener("click", () => {
    const svg = document.getElementById("graph");
    const fitted = svg.getAttribute("width") === "100%";
    svg.setAttribute("width", fitted ? svg.viewBox.baseVal.width : "100%");
    svg.setAttribute("height", fitted ? svg.viewBox.baseVal.height : "");
  });
  const live = document.getElementById("live");
  const events = new EventSource(api("api/events"));
  events.onopen = () => { live.textContent = "live"; live.classList.remove("off"); };
  events.onerror = () => { live.textContent = "reconnecting"; live.classList.add("off"); };
  events.onmessage = (msg) => render(JSON.parse(msg.data));
}

start();
