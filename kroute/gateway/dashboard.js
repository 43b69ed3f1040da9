// The dashboard's script (served by AdminHandler at /dashboard.js; no external asset).
// Each panel names an admin API URL and renders its JSON; every 2 s all are fetched again.
// To add a panel: panel("api/...", json => fill("tbody-id", rows)) and a table in the page.
"use strict";

const PANELS = [];
function panel(url, render) { PANELS.push({url, render}); }

const SVG = "http://www.w3.org/2000/svg";
function cell(content, cls) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "";
  if (cls) td.className = cls;
  return td;
}
function fill(id, rows) {
  document.getElementById(id).replaceChildren(...rows.map(cells => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}
function ago(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}
function number(value, unit) {
  if (value == null) return "–";
  const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2;
  return `${value.toFixed(digits)}${unit}`;
}

// A small line chart of `values` (oldest first; null: no data) as inline SVG: one polyline per
// run of values, `latest` (or the latest value) written beside it, the maximum as its tooltip.
function chart(values, unit, cls, latest) {
  const width = 180, height = 34, known = values.filter(v => v != null);
  const top = Math.max(...known, 0) || 1;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", `chart ${cls}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const axis = document.createElementNS(SVG, "line");
  axis.setAttribute("x1", 0); axis.setAttribute("x2", width);
  axis.setAttribute("y1", height - 1); axis.setAttribute("y2", height - 1);
  svg.append(axis);
  let run = [];
  const flush = () => {  // a run of one value is a dot
    const line = document.createElementNS(SVG, run.length > 1 ? "polyline" : "circle");
    if (run.length > 1) line.setAttribute("points", run.join(" "));
    if (run.length === 1) {
      const [x, y] = run[0].split(",");
      line.setAttribute("cx", x); line.setAttribute("cy", y); line.setAttribute("r", 2);
    }
    if (run.length) svg.append(line);
    run = [];
  };
  values.forEach((v, i) => {
    if (v == null) { flush(); return; }
    const x = 3 + (values.length > 1 ? (i * (width - 6)) / (values.length - 1) : width - 6);
    run.push(`${x.toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`);
  });
  flush();
  const title = document.createElementNS(SVG, "title");
  title.textContent = `max ${number(Math.max(...known, 0), unit)}`;
  svg.append(title);
  const box = document.createElement("div");
  box.className = "plot";
  const label = document.createElement("span");
  label.textContent = number(latest ?? [...values].reverse().find(v => v != null), unit);
  box.append(svg, label);
  return box;
}

function trafficRows(rows, kind) {
  return rows.map(r => [
    cell(r[kind] || "(no route)", r[kind] ? "" : "muted"),
    cell(chart(r.rate, "/s", "rate", r.last_minute_rate)),
    cell(chart(r.error_rate, "/s", "errors", r.last_minute_error_rate), r.errors ? "down" : ""),
    cell(chart(r.p95_ms, " ms", "latency")),
    cell(`${r.requests} requests, ${r.errors} 5xx, p95 ${number(r.latency_p95_ms, " ms")}`,
         "muted"),
  ]);
}

panel("api/sources", sources => {
  const state = document.getElementById("state");
  state.textContent = sources.ready ? "ready" : "not ready";
  state.className = sources.ready ? "up" : "down";
  fill("kinds", sources.kinds.map(k => [cell(k.kind), cell(k.synced ? "yes" : "no",
    k.synced ? "up" : "down"), cell(k.objects), cell(k.relists), cell(k.reconnects),
    cell(k.last_error, "muted")]));
});

panel("api/traffic", traffic => {
  const minutes = Math.round(traffic.bucket_seconds * traffic.buckets / 60);
  document.getElementById("window").textContent =
    `last ${minutes} minutes, ${traffic.bucket_seconds} s per point`;
  fill("route-traffic", trafficRows(traffic.routes, "route"));
  fill("service-traffic", trafficRows(traffic.services, "service"));
  document.getElementById("traffic").hidden = false;
});

panel("api/services", services => {
  fill("services", services.services.flatMap(s => s.endpoints.length
    ? s.endpoints.map(e => [cell(s.service), cell(e.endpoint),
        cell(e.state, e.state === "up" ? "up" : "down"), cell(e.reason),
        cell(`${ago(e.since)}`, "muted"), cell(e.in_flight), transitions(e.transitions)])
    : [[cell(s.service), cell("no endpoint", "down"), cell(""), cell(""), cell(""), cell(""),
        cell("")]]));
});
function transitions(list) {
  const ul = document.createElement("ul");
  ul.className = "transitions";
  ul.append(...list.slice().reverse().map(t => {
    const li = document.createElement("li");
    li.className = t.state === "up" ? "up" : "down";
    const what = t.reason.startsWith(t.state) ? t.reason : `${t.state}: ${t.reason}`;
    li.textContent = `${ago(t.ago)}: ${what}`;
    return li;
  }));
  return cell(ul);
}

panel("api/routes", routes => {
  fill("routes", routes.routes.map((r, i) => [cell(i + 1), cell(r.route), cell(r.match),
    cell(r.steps.join(" → ") || "–", r.steps.length ? "" : "muted"),
    cell(r.backends.map(b => `${b.namespace}/${b.name}:${b.port} (${b.weight})`).join(", ")),
    cell(r.priority, "muted")]));
  fill("errors", routes.errors.map(e => [cell(e.object), cell(e.field), cell(e.reason)]));
  fill("refused", routes.refused.map(e => [cell(e.object), cell(e.field),
    cell(e.reason, "down")]));
});

panel("api/middlewares", mws => {
  fill("middlewares", mws.middlewares.map(m => [cell(`${m.namespace}/${m.name}`),
    cell(m.types.join(", ")), cell(m.routes.join(", ") || "(unused)", m.routes.length ? "" : "muted"),
    cell([m.error, ...m.refused].filter(Boolean).join("; "), "down")]));
});

panel("api/certificates", tls => {
  document.getElementById("tls").hidden = !tls.tls;
  fill("certificates", tls.certificates.map(c => [cell(c.secret), cell(c.names.join(", ")),
    cell(c.not_after), cell(c.subject, "muted")]));
});

panel("api/acme", acme => {  // each certificate the routes ask an ACME resolver for
  document.getElementById("acme").hidden = !acme.acme;
  if (!acme.acme) return;
  fill("acme-certificates", acme.certificates.map(c => [cell(c.names.join(", ")),
    cell(c.resolver), cell(c.stored ? c.stored.issuer : "(none yet)", "muted"),
    cell(c.stored ? c.stored.not_after : ""), cell(c.renew_at || "", "muted"),
    cell(c.last_error ? `${c.last_error}${c.permanent ? " (not retried)" : ""}` : "", "down")]));
});

async function refresh() {
  const answers = await Promise.all(PANELS.map(p =>
    fetch(p.url).then(r => (r.ok ? r.json() : null), () => null)));
  if (answers.every(a => a === null)) {
    document.getElementById("state").textContent = "admin API unreachable";
    return;
  }
  PANELS.forEach((p, i) => { if (answers[i] !== null) p.render(answers[i]); });
  document.getElementById("updated").textContent =
    `updated ${new Date().toLocaleTimeString()}, every 2 s`;
}
refresh();
setInterval(refresh, 2000);
