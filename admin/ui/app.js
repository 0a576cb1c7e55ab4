// canaryd dashboard: polls the admin API every 2 s and draws each route:
// the live split, per-pool charts, instance health, the rollout's progress,
// timeline and verdicts, and buttons to steer it. No framework, no build.
"use strict";

const POLL_MS = 2000;
const COLORS = ["var(--c0)", "var(--c1)", "var(--c2)", "var(--c3)"];
const tokenInput = document.getElementById("token");
tokenInput.value = sessionStorage.getItem("canaryd-token") || "";
tokenInput.addEventListener("change", () => sessionStorage.setItem("canaryd-token", tokenInput.value));

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

async function api(method, path) {
  const headers = {};
  if (tokenInput.value) headers["Authorization"] = "Bearer " + tokenInput.value;
  const r = await fetch(path, { method, headers });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// chart draws one metric of every pool as lines, with a max label.
function chart(title, series, pick, unit, colorOf) {
  const W = 300, H = 110, P = 18;
  const s = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "data-chart": title });
  let max = 0, n = 0;
  for (const pts of Object.values(series)) {
    n = Math.max(n, pts.length);
    for (const p of pts) max = Math.max(max, pick(p));
  }
  const shown = max;
  if (max === 0) max = 1;
  for (let i = 1; i <= 3; i++) {
    const y = P + ((H - 2 * P) * i) / 4;
    s.append(svg("line", { class: "grid", x1: 0, x2: W, y1: y, y2: y }));
  }
  const label = svg("text", { class: "axis", x: 4, y: 11 });
  label.textContent = `${title} (max ${fmt(shown, unit)})`;
  s.append(label);
  for (const [pool, pts] of Object.entries(series)) {
    if (pts.length < 2) continue;
    const d = pts.map((p, i) => {
      const x = (W * i) / (n - 1 || 1);
      const y = H - P / 2 - ((H - 2 * P) * pick(p)) / max;
      return (i ? "L" : "M") + x.toFixed(1) + "," + y.toFixed(1);
    }).join(" ");
    s.append(svg("path", { class: "line", d, stroke: colorOf(pool), "data-pool": pool }));
  }
  return s;
}

function fmt(v, unit) {
  if (unit === "%") return (v * 100).toFixed(v < 0.01 ? 2 : 1) + "%";
  if (unit === "ms") return v.toFixed(v < 10 ? 2 : 0) + " ms";
  return v.toFixed(1) + " " + unit;
}

function since(t) {
  const s = Math.max(0, Math.round((Date.now() - new Date(t)) / 1000));
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${s % 60}s`;
}

function routeCard(r, series) {
  const colorOf = (pool) => COLORS[r.pools.findIndex((p) => p.name === pool) % COLORS.length];
  const card = el("section", { class: "route", "data-route": r.name });
  card.append(el("h2", {}, `route ${r.name} `, el("span", { class: "muted" }, (r.host || "*") + r.path_prefix)));

  const split = el("div", { class: "split", "data-split": r.name });
  for (const p of r.pools) {
    if (p.effective_weight <= 0) continue;
    split.append(el("div", { style: { flexGrow: p.effective_weight, background: colorOf(p.name) }, title: p.name }, `${p.name} ${p.effective_weight}%`));
  }
  card.append(split);

  const rows = r.pools.map((p) => {
    const healthy = p.instances.filter((i) => i.healthy).length;
    return el("tr", { "data-pool": p.name },
      el("td", {}, el("span", { class: "swatch", style: { background: colorOf(p.name) } }), p.name),
      el("td", { "data-weight": p.name }, p.weight + "%", p.effective_weight !== p.weight ? ` (serving ${p.effective_weight}%)` : "", p.panic ? " panic" : ""),
      el("td", { class: healthy === p.instances.length ? "healthy" : "unhealthy" }, `${healthy}/${p.instances.length} healthy`),
      el("td", { "data-rate": p.name, title: "over the last 10 s" }, p.recent_rate.toFixed(1) + " req/s"),
      el("td", {}, fmt(p.last_minute.error_rate, "%")),
      el("td", {}, "p99 " + fmt(p.last_minute.p99_ms, "ms")),
      el("td", { class: "muted", "data-preview": p.name }, p.preview_requests ? `${p.preview_requests} preview (${p.preview_errors} failed)` : ""));
  });
  card.append(el("table", {}, el("tr", {}, ...["pool", "weight", "instances", "now", "errors (last minute)", "latency (last minute)", "preview"].map((h) => el("th", {}, h))), rows));

  card.append(el("h3", {}, "last 5 minutes"));
  card.append(el("div", { class: "charts" },
    chart("requests/s", series, (p) => p.rps, "/s", colorOf),
    chart("error rate", series, (p) => p.error_rate, "%", colorOf),
    chart("p99", series, (p) => p.p99_ms, "ms", colorOf)));

  const ro = r.rollout;
  if (ro) {
    card.append(el("h3", {}, "rollout"));
    const next = ro.phase === "progressing" || ro.phase === "shadowing"
      ? ` · step began ${since(ro.step_started)} ago` + (ro.next_analysis ? `, next analysis in ${Math.max(0, Math.round((new Date(ro.next_analysis) - Date.now()) / 1000))}s` : "")
      : "";
    card.append(el("p", {},
      el("span", { class: "phase " + ro.phase, "data-phase": r.name }, ro.phase.replace("_", " ")),
      ro.shadow
        ? ` ${ro.strategy} ${ro.stable} → ${ro.canary}: shadow phase, copies of ${ro.shadow_percent}% of requests, no live traffic, failures ${ro.failures}/${ro.failure_limit}${next}`
        : ` ${ro.strategy} ${ro.stable} → ${ro.canary}: step ${ro.step} of ${ro.steps.length} (canary ${ro.canary_weight}%), failures ${ro.failures}/${ro.failure_limit}${next}`));
    if (ro.reason) card.append(el("p", { class: "muted" }, ro.reason));
    const actions = el("div", { class: "actions" });
    for (const a of ["promote", "abort", "pause", "resume"]) {
      actions.append(el("button", {
        "data-action": a, "data-route": r.name,
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
    if (ro.last_verdicts && ro.last_verdicts.length) {
      card.append(el("h3", {}, ro.phase === "rolled_back" ? "why it rolled back" : "last analysis"));
      card.append(el("table", {}, ro.last_verdicts.map((v) =>
        el("tr", {}, el("td", { class: "verdict " + v.result }, v.advisory ? v.result + " (advisory)" : v.result), el("td", {}, v.check), el("td", { class: "muted" }, v.reason)))));
    }
    card.append(el("h3", {}, "timeline"));
    card.append(el("ol", { class: "timeline", reversed: true }, ro.history.slice().reverse().map((e) =>
      el("li", {}, new Date(e.at).toLocaleTimeString(), " ", el("span", { class: "phase " + e.to }, e.to.replace("_", " ")),
        ` ${e.weight_bp / 100}% — ${e.reason}` + (e.repeats ? ` (×${e.repeats + 1})` : "")))));
  }
  return card;
}

let busy = false;
async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const routes = await api("GET", "/api/v1/routes");
    const cards = await Promise.all(routes.map(async (r) => {
      const series = await api("GET", `/api/v1/routes/${encodeURIComponent(r.name)}/series?last=5m&step=5s`).catch(() => ({}));
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
