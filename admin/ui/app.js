// canaryd dashboard: polls the admin API every 2 s and draws each route:
// the live split, per-pool charts, instance health, the rollout's progress,
// timeline and verdicts, and buttons to steer it. No framework, no build.
"use strict";

const POLL_MS = 2000;
const COLORS = ["var(--c0)", "var(--c1)", "var(--c2)", "var(--c3)"];
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("canaryd-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("canaryd-token", tokenInput.value));

// trafficClasses says how a pool's requests came to it: weighted,
// targeted (rules, the segment, propagated versions), preview, shadow.
function trafficClasses(p) {
  const t = p.traffic || {};
  const parts = [];
  for (const k of ["weighted", "targeted", "preview", "shadow"]) {
    const c = t[k];
    if (c && c.requests) parts.push(`${c.requests} ${k}` + (c.errors ? ` (${c.errors} failed)` : ""));
  }
  return parts.join(" · ");
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "style") Object.assign(e.style, v); // CSSOM: allowed by the CSP, unlike style="" attributes
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children.flat()) {
    if (c != null) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs = {}) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function toast(msg) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 5000);
}

async function api(method, path, payload) {
  const headers = {};
  if (tokenInput.value) headers["Authorization"] = "Bearer " + tokenInput.value;
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: payload === undefined ? undefined : JSON.stringify(payload) });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// chart draws one value of every pool over the time span [from, to]:
// real time on the x axis (ticks at a round step that fits the span,
// labelled with the clock, a label left out rather than drawn over
// another), the value on the y axis (0, half and the top, each labelled
// with its unit). Points are placed by their time, so 20 s of data fill
// 20 s of the axis, not its width. A single point is drawn as a dot, so a
// chart is never blank while data exists. With nothing to show but zeros,
// the y axis spans opts.empty (1% of errors, 10 ms), so its labels still
// differ and read as what they are.
function chart(title, series, pick, unit, colorOf, from, to, opts = {}) {
  const W = 320, H = 130, L = 40, R = 6, T = 16, B = 18;
  const s = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, "data-chart": title, "data-from": String(from), "data-to": String(to) });
  let max = opts.max || 0;
  for (const pts of Object.values(series)) for (const p of pts) if (p.t >= from) max = Math.max(max, pick(p));
  if (max === 0) max = opts.empty || 1;
  const x = (t) => L + ((W - L - R) * (t - from)) / (to - from || 1);
  const y = (v) => H - B - ((H - T - B) * v) / max;
  // y axis: 0, half and the top, labelled.
  for (const f of [0, 0.5, 1]) {
    s.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }));
    const lbl = svg("text", { class: "axis y", x: L - 3, y: y(max * f) + 3, "text-anchor": "end" });
    lbl.textContent = fmt(max * f, unit, true);
    s.append(lbl);
  }
  // x axis: the roundest step that gives at most five ticks.
  const span = to - from;
  const step = [5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3].find((st) => span / st <= 5) || 300e3;
  const xaxis = svg("g", { class: "xaxis", "data-axis": "time" });
  const clock = step < 60e3 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" };
  let lastRight = -Infinity;
  for (let t = Math.ceil(from / step) * step; t <= to; t += step) {
    xaxis.append(svg("line", { class: "tick", x1: x(t), x2: x(t), y1: H - B, y2: H - B + 3 }));
    const text = new Date(t).toLocaleTimeString([], clock);
    const width = text.length * 5.2; // the axis font's width, about
    // Labels near an edge are anchored inside the chart, not cut by it.
    const anchor = x(t) > W - R - width / 2 ? "end" : x(t) < L + width / 2 ? "start" : "middle";
    const left = anchor === "start" ? x(t) : anchor === "end" ? x(t) - width : x(t) - width / 2;
    if (left < lastRight + 4) continue; // would touch the label before it
    lastRight = left + width;
    const lbl = svg("text", { class: "axis x", x: x(t), y: H - 4, "text-anchor": anchor });
    lbl.textContent = text;
    xaxis.append(lbl);
  }
  s.append(xaxis);
  const label = svg("text", { class: "title", x: L, y: 11 });
  label.textContent = title;
  s.append(label);
  for (const [pool, pts] of Object.entries(series)) {
    const shownPts = pts.filter((p) => p.t >= from);
    if (shownPts.length === 0) continue;
    if (shownPts.length === 1) {
      s.append(svg("circle", { class: "dot", cx: x(shownPts[0].t), cy: y(pick(shownPts[0])), r: 2.5, fill: colorOf(pool), "data-pool": pool }));
      continue;
    }
    const d = shownPts.map((p, i) => (i ? "L" : "M") + x(p.t).toFixed(1) + "," + y(pick(p)).toFixed(1)).join(" ");
    s.append(svg("path", { class: "line", d, stroke: colorOf(pool), "data-pool": pool }));
  }
  return s;
}

// smoothed is a rate series averaged over the points of the last
// `window` ms: the one-second snapshots a 2 s point is cut from do not
// line up with it, and a steady rate drawn raw saw-tooths (300 to 746 for
// a steady 490).
function smoothed(pts, pick, window) {
  return pts.map((p, i) => {
    let sum = 0, n = 0;
    for (let j = i; j >= 0 && pts[j].t > p.t - window; j--) { sum += pick(pts[j]); n++; }
    return { ...p, avg: n ? sum / n : 0 };
  });
}

// weightSeries is each pool's weight over [from, to]: from the rollout's
// history (each transition's canary weight), else the weights as they are.
function weightSeries(r, from, to) {
  const out = {};
  const ro = r.rollout;
  for (const p of r.pools) out[p.name] = [];
  if (!ro) {
    for (const p of r.pools) out[p.name] = [{ t: from, w: p.weight }, { t: to, w: p.weight }];
    return out;
  }
  // The canary weight in force at each moment, as a step function.
  const events = ro.history.map((e) => ({ t: new Date(e.at).getTime(), w: e.weight_bp / 100 })).sort((a, b) => a.t - b.t);
  let w = events.length && events[0].t <= from ? events[0].w : 0;
  for (const e of events) if (e.t <= from) w = e.w;
  const steps = [{ t: from, w }];
  for (const e of events) {
    if (e.t <= from || e.t > to) continue;
    steps.push({ t: e.t, w: steps[steps.length - 1].w }, { t: e.t, w: e.w });
  }
  steps.push({ t: to, w: ro.canary_weight });
  for (const p of r.pools) {
    if (p.name === ro.canary) out[p.name] = steps;
    else if (p.name === ro.stable) out[p.name] = steps.map((s) => ({ t: s.t, w: 100 - s.w }));
    else out[p.name] = [{ t: from, w: 0 }, { t: to, w: 0 }];
  }
  return out;
}

// stepStrip shows the rollout's steps, the current one marked.
function stepStrip(ro) {
  const strip = el("ol", { class: "steps", "data-steps": ro.route });
  if (ro.shadow) strip.append(el("li", { class: "step current", "data-step": "shadow" }, "shadow"));
  ro.steps.forEach((w, i) => {
    const n = i + 1;
    let cls = "step";
    if (!ro.shadow && n < ro.step) cls += " done";
    if (!ro.shadow && n === ro.step) cls += " current " + ro.phase;
    if (ro.phase === "promoted") cls = "step done";
    strip.append(el("li", { class: cls, "data-step": String(n) }, w + "%"));
  });
  return strip;
}

// enabled says which actions mean something in a phase.
const enabledIn = {
  promote: ["progressing", "paused", "shadowing", "segment", "baking"],
  abort: ["progressing", "paused", "shadowing", "segment", "baking"],
  pause: ["progressing", "shadowing", "segment", "baking"],
  resume: ["paused"],
};

function fmt(v, unit, short) {
  if (unit === "%") return v === 0 ? "0%" : (v * 100).toFixed(v < 0.01 ? 2 : 1) + "%";
  if (unit === "w%") return v.toFixed(0) + "%";
  if (unit === "ms") return v.toFixed(v < 10 ? 1 : 0) + (short ? "ms" : " ms");
  return v.toFixed(v < 10 ? 1 : 0) + (short ? "" : " " + unit);
}

// nowRate is a pool's rate of the last 10 s, as the "now" column says it:
// a pool the schedule gives nothing is "0 req/s", or "draining" while the
// last 10 s still hold requests from before its weight went to 0.
function nowRate(p) {
  if (p.effective_weight <= 0) return p.recent_rate > 0 ? `draining (${p.recent_rate.toFixed(1)} req/s in the last 10 s)` : "0 req/s";
  return p.recent_rate.toFixed(1) + " req/s";
}

function since(t) {
  const s = Math.max(0, Math.round((Date.now() - new Date(t)) / 1000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60}s`;
}

function routeCard(r, series) {
  const colorOf = (pool) => COLORS[r.pools.findIndex((p) => p.name === pool) % COLORS.length];
  const card = el("section", { class: "route", "data-route": r.name });
  card.append(el("h2", {}, `route ${r.name} `, el("span", { class: "muted" }, `(${r.host || ""}${r.path_prefix})`)));

  const split = el("div", { class: "split", "data-split": r.name });
  for (const p of r.pools) {
    if (p.effective_weight <= 0) continue;
    split.append(el("div", { style: { flexGrow: p.effective_weight, background: colorOf(p.name) }, title: p.name }, `${p.name} ${p.effective_weight}%`));
  }
  card.append(split);

  const rows = r.pools.map((p) => {
    const healthy = p.instances.filter((i) => i.healthy).length;
    return el("tr", { "data-pool": p.name },
      el("td", {}, el("span", { class: "swatch", style: { background: colorOf(p.name) } }), p.name,
        p.version ? el("span", { class: "muted", "data-version": p.name }, " " + p.version) : "",
        r.rollout && (p.name === r.rollout.stable || p.name === r.rollout.canary) ? el("span", { class: "muted" }, p.name === r.rollout.canary ? " (canary)" : " (stable)") : ""),
      el("td", { "data-weight": p.name }, p.weight + "%", p.effective_weight !== p.weight ? ` (serving ${p.effective_weight}%)` : "", p.panic ? " panic" : ""),
      el("td", { class: healthy === p.instances.length ? "healthy" : "unhealthy" }, `${healthy}/${p.instances.length} healthy`),
      el("td", { "data-rate": p.name, title: "over the last 10 s" }, nowRate(p)),
      el("td", {}, fmt(p.last_minute.error_rate, "%")),
      el("td", {}, "p99 " + fmt(p.last_minute.p99_ms, "ms")),
      el("td", { class: "muted", "data-traffic": p.name, title: "since the pool's stats began, on this member" }, trafficClasses(p)));
  });
  card.append(el("table", {}, el("tr", {}, ...["pool", "weight", "instances", "now", "errors (last minute)", "latency (last minute)", "weighted · targeted · preview · shadow"].map((h) => el("th", {}, h))), rows));

  // The charts start where the data does (the process's start: nothing
  // is drawn from before it existed) and grow to the last 5 minutes; at
  // least 30 s, so a young process is not a smear across the width.
  const to = Date.now();
  const pts = {};
  let first = to;
  for (const [pool, ps] of Object.entries(series)) {
    pts[pool] = ps.map((p) => ({ ...p, t: new Date(p.at).getTime() }));
    for (const p of pts[pool]) first = Math.min(first, p.t - 2e3); // a point ends its 2 s step
  }
  const from = Math.min(to - 30e3, Math.max(to - 5 * 60e3, first));
  const withTraffic = {};
  for (const [pool, ps] of Object.entries(pts)) withTraffic[pool] = ps.filter((p) => p.has_traffic);
  const rates = {};
  for (const [pool, ps] of Object.entries(pts)) rates[pool] = smoothed(ps, (p) => p.rps, 10e3);
  const minutes = (to - from) / 60e3;
  card.append(el("h3", {}, minutes >= 4.9 ? "last 5 minutes" : `since ${minutes < 1 ? Math.round(minutes * 60) + " s" : minutes.toFixed(1) + " min"} ago (the data's start)`));
  card.append(el("div", { class: "charts" },
    chart("weight %", weightSeries(r, from, to), (p) => p.w, "w%", colorOf, from, to, { max: 100 }),
    chart("requests/s (10 s average)", rates, (p) => p.avg, "/s", colorOf, from, to),
    chart("error rate", withTraffic, (p) => p.error_rate, "%", colorOf, from, to, { empty: 0.01 }),
    chart("p99 latency", withTraffic, (p) => p.p99_ms, "ms", colorOf, from, to, { empty: 10 })));

  const ro = r.rollout;
  if (ro) {
    card.append(el("h3", {}, "rollout"));
    const judging = ["progressing", "shadowing", "segment"].includes(ro.phase);
    const next = judging
      ? ` · step began ${since(ro.step_started)} ago` + (ro.next_analysis ? `, next analysis in ${Math.max(0, Math.round((new Date(ro.next_analysis) - Date.now()) / 1000))}s` : "")
      : "";
    card.append(stepStrip(ro));
    // A rollout that is failing analyses says so on its badge.
    const failing = ro.failures > 0 && judging ? " failing" : "";
    card.append(el("p", {},
      el("span", { class: "phase " + ro.phase + failing, "data-phase": r.name }, ro.phase.replace("_", " ") + (failing ? ` (${ro.failures}/${ro.failure_limit} failed)` : "")),
      ro.shadow
        ? ` ${ro.strategy} ${versioned(ro.stable, ro.stable_version)} → ${versioned(ro.canary, ro.canary_version)}: shadow phase, copies of ${ro.shadow_percent}% of requests, no live traffic, failures ${ro.failures}/${ro.failure_limit}${next}`
        : ro.in_segment
        ? ` ${ro.strategy} ${versioned(ro.stable, ro.stable_version)} → ${versioned(ro.canary, ro.canary_version)}: segment phase, rule ${ro.segment}'s requests only, no weighted user, failures ${ro.failures}/${ro.failure_limit}${next}`
        : ` ${ro.strategy} ${versioned(ro.stable, ro.stable_version)} → ${versioned(ro.canary, ro.canary_version)}: step ${ro.step} of ${ro.steps.length} (canary ${ro.canary_weight}%), failures ${ro.failures}/${ro.failure_limit}${next}`));
    if (ro.reason) card.append(el("p", { class: "muted" }, ro.reason));
    const actions = el("div", { class: "actions" });
    // Abort also ends a gradual rollback still on its way down.
    const enabled = (a) => enabledIn[a].includes(ro.phase) || (a === "abort" && ro.phase === "rolled_back" && ro.canary_weight > 0);
    for (const a of ["promote", "abort", "pause", "resume"]) {
      actions.append(el("button", {
        "data-action": a, "data-route": r.name, disabled: !enabled(a),
        title: enabled(a) ? "" : `nothing to ${a} while ${ro.phase.replace("_", " ")}`,
        onclick: async () => {
          try {
            const st = await api("POST", `/api/v1/routes/${encodeURIComponent(r.name)}/${a}`);
            toast(`${r.name}: ${a} → ${st.phase}`);
          } catch (e) {
            toast(`${r.name}: ${a} refused: ${e.message}`);
          }
          refresh();
        },
      }, a));
    }
    card.append(actions);
    if (ro.gate) {
      // Waiting on outside gates: which, where, since when, and their last
      // answers when one failed or could not decide.
      card.append(el("h3", {}, `waiting on ${ro.gate.at.replace("_", " ")} gates`));
      card.append(el("p", { class: "gate-wait" }, `${ro.gate.gates.join(", ")} — since ${new Date(ro.gate.since).toLocaleTimeString()}`));
      if (ro.gate.verdicts && ro.gate.verdicts.length) {
        card.append(el("table", {}, ro.gate.verdicts.map((v) =>
          el("tr", {}, el("td", { class: "verdict " + v.result }, v.dry_run ? v.result + " (dry run)" : v.result), el("td", {}, v.check), el("td", { class: "muted" }, v.reason)))));
      }
      for (const gate of ro.gate.pending || []) card.append(approveForm(r.name, gate));
    }
    if (ro.estimate) card.append(el("p", { class: "estimate" }, `until a decision: ${ro.estimate.text}`));
    if (ro.bake_until) card.append(el("p", { class: "bake" }, `baking at 100% until ${new Date(ro.bake_until).toLocaleTimeString()}; ${ro.stable} stays configured to revert to`));
    if (ro.last_verdicts && ro.last_verdicts.length) {
      card.append(el("h3", {}, ro.phase === "rolled_back" ? "why it rolled back" : "last analysis"));
      card.append(el("table", {}, ro.last_verdicts.map((v) =>
        el("tr", {}, el("td", { class: "verdict " + v.result }, v.dry_run ? v.result + " (dry run)" : v.advisory ? v.result + " (advisory)" : v.result), el("td", {}, v.check), el("td", { class: "muted" }, v.reason)))));
    }
    card.append(el("h3", {}, "timeline"));
    card.append(el("ol", { class: "timeline", reversed: true }, ro.history.slice().reverse().map((e) =>
      el("li", {}, new Date(e.at).toLocaleTimeString(), " ", el("span", { class: "phase " + e.to }, e.to.replace("_", " ")),
        ` ${e.weight_bp / 100}% — ${e.reason}` + (e.repeats ? ` (×${e.repeats + 1})` : "")))));
  }
  return card;
}

// drafts keeps what was typed in an approval form across refreshes (the
// cards are rebuilt every poll), by route and gate.
const drafts = new Map();

// approveForm is the go-ahead for one pending approval gate: who, why,
// and the button; the history records them with source "dashboard".
function approveForm(route, gate) {
  const key = route + "\u0000" + gate;
  const d = drafts.get(key) || { by: "", reason: "" };
  drafts.set(key, d);
  const by = el("input", { class: "approve-by", placeholder: "your name", value: d.by, ariaLabel: "approved by" });
  const reason = el("input", { class: "approve-reason", placeholder: "why (for the history)", value: d.reason, ariaLabel: "reason" });
  by.oninput = () => (d.by = by.value);
  reason.oninput = () => (d.reason = reason.value);
  const button = el("button", {
    "data-action": "approve", "data-route": route, "data-gate": gate,
    onclick: async () => {
      try {
        const st = await api("POST", `/api/v1/routes/${encodeURIComponent(route)}/approve`, { gate, by: d.by, reason: d.reason, source: "dashboard" });
        drafts.delete(key);
        toast(`${route}: ${gate} approved → ${st.phase}, canary ${st.canary_weight}%`);
      } catch (e) {
        toast(`${route}: approval refused: ${e.message}`);
      }
      refresh();
    },
  }, `approve ${gate}`);
  return el("p", { class: "approve" }, `waiting for approval: ${gate} `, by, " ", reason, " ", button);
}

// clusterPanel shows a cluster member's view: who leads, whether this
// member reaches etcd, and which state each member serves.
function clusterPanel(v) {
  const conn = v.partitioned ? el("span", { class: "bad" }, "partitioned (past partition_timeout: routes under way serve stable here)")
    : v.connected ? el("span", { class: "healthy" }, "connected") : el("span", { class: "bad" }, "not connected to etcd: serving the last weights");
  const routes = Object.keys(v.states || {}).sort();
  const rows = v.members.map((m) => el("tr", {},
    el("td", {}, m.id + (m.id === v.member ? " (this one)" : "")),
    el("td", { class: "role " + (m.id === v.leader ? "leader" : "") }, m.id === v.leader ? "leader" : "follower"),
    el("td", {}, m.addr), el("td", { class: "muted" }, m.config_hash),
    el("td", {}, routes.map((r) => {
      const current = (m.acked[r] || 0) >= v.states[r];
      return el("span", { class: "acked " + (current ? "current" : "behind") }, `${r} ${current ? "current" : "behind"} `);
    }))));
  return [
    el("h2", {}, `cluster ${v.name}`, " ", el("span", { class: "muted" }, `· member ${v.member} · leader ${v.leader || "(none)"} · `), conn,
      el("span", { class: "muted" }, ` · ${v.members.length} members`)),
    el("table", {}, el("tr", {}, ["member", "role", "address", "config", "serves"].map((h) => el("th", {}, h))), rows),
  ];
}

let busy = false;
async function refresh() {
  // Not while someone types in an approval form: the rebuilt card would
  // take the focus away.
  if (busy || (document.activeElement && document.activeElement.matches(".approve input"))) return;
  busy = true;
  try {
    const resp = await fetch("/api/v1/routes");
    if (!resp.ok) throw new Error(resp.statusText);
    // The token box is there only when mutations need a token.
    document.querySelector(".token").hidden = resp.headers.get("X-Canaryd-Token-Required") !== "true";
    const routes = await resp.json();
    const panel = document.getElementById("cluster");
    if (resp.headers.get("X-Canaryd-Cluster") === "true") {
      const v = await api("GET", "/api/v1/cluster");
      panel.replaceChildren(...clusterPanel(v));
      panel.hidden = false;
    }
    const cards = await Promise.all(routes.map(async (r) => {
      const series = await api("GET", `/api/v1/routes/${encodeURIComponent(r.name)}/series?last=5m&step=2s`).catch(() => ({}));
      return routeCard(r, series);
    }));
    document.getElementById("routes").replaceChildren(...cards);
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (e) {
    document.getElementById("updated").textContent = "admin API unreachable: " + e.message;
  } finally {
    busy = false;
  }
}

refresh();
setInterval(refresh, POLL_MS);

// versioned is a pool's name with its version: "green (v2.4.0)".
function versioned(pool, version) {
  return version ? `${pool} (${version})` : pool;
}
