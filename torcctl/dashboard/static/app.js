// The dashboard's page: plain DOM, no build step. Every change goes through /api/rpc, which
// calls the daemon's own methods; text from the daemon is set with textContent, never as HTML.

const CSRF = document.querySelector('meta[name="csrf"]').content;
const STATUSES = ["blocked", "ready", "pending", "running", "recovering", "completed", "pending_failed",
  "failed", "canceled", "terminated", "disabled", "uninitialized"];
const ATTENTION = ["pending_failed", "failed"];
const PAGE = 100;
const main = document.getElementById("main");
if (location.search.includes("token=")) history.replaceState(null, "", "/" + location.hash);

// -- small helpers --

function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "rect", "path", "text", "title", "line"].includes(tag);
  const el = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (k === "style") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

async function rpc(method, params = {}) {
  const r = await fetch("/api/rpc", {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Torc-CSRF": CSRF },
    body: JSON.stringify({ method, params }),
  });
  const body = await r.json().catch(() => ({ error: { message: `HTTP ${r.status}` } }));
  if (!r.ok) throw new Error(body.error ? body.error.message : `HTTP ${r.status}`);
  return body.result;
}

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json().catch(() => ({ error: { message: `HTTP ${r.status}` } }));
  if (!r.ok) throw new Error(body.error ? body.error.message : `HTTP ${r.status}`);
  return body.result;
}

function toast(text, error = false) {
  const el = h("div", { class: error ? "error" : "" }, text);
  document.getElementById("toast").append(el);
  setTimeout(() => el.remove(), error ? 9000 : 4000);
}

const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
const clock = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "");
function seconds(s) {
  if (s === null || s === undefined) return "";
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  if (s < 3600) return `${(s / 60).toFixed(1)} min`;
  return `${(s / 3600).toFixed(2)} h`;
}
function bytes(b) {
  if (b === null || b === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${units[i]}`;
}
const chip = (status, n, big = false) =>
  h("span", { class: `chip ${big ? "big" : ""} status-${status}`, style: { background: `var(--${status})` } },
    n === undefined ? status.replace("_", " ") : `${status.replace("_", " ")} ${n}`);
const total = (counts) => Object.values(counts || {}).reduce((a, b) => a + b, 0);

function bar(counts) {
  const n = total(counts) || 1;
  return h("div", { class: "bar", title: Object.entries(counts).map(([k, v]) => `${k}: ${v}`).join(", ") },
    STATUSES.filter((s) => counts[s]).map((s) =>
      h("span", { style: { width: `${(100 * counts[s]) / n}%`, background: `var(--${s})` } })));
}

function crumbs(...parts) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(...parts.flatMap((p, i) => [i ? " / " : "", p]));
}

// -- live updates: WebSockets (they do not count against the browser's six HTTP connections to a
// host, so many tabs stay usable); each reopens after a cut. Refreshes are throttled to one a
// second. What a page opens is closed when the page changes.

const opened = [];  // sockets and timers of the page shown now

function socket(path, onMessage, onState = () => {}) {
  let ws = null, closed = false, delay = 250;
  const open = () => {
    ws = new WebSocket(`ws://${location.host}${path}`);
    ws.onopen = () => { delay = 250; onState(true); };
    ws.onmessage = async (m) => onMessage(JSON.parse(await m.data.text()));
    ws.onclose = () => {
      onState(false);
      if (!closed) setTimeout(() => { if (!closed) open(); }, delay = Math.min(2 * delay, 5000));
    };
  };
  open();
  const handle = { close() { closed = true; ws.close(); } };
  opened.push(handle);
  return handle;
}

function every(ms, fn) {
  const t = setInterval(fn, ms);
  opened.push({ close() { clearInterval(t); } });
}

function closePage() {
  while (opened.length) opened.pop().close();
}

function follow(workflowId, onMessage) {
  const badge = document.getElementById("live");
  return socket(workflowId ? `/api/stream?workflow_id=${workflowId}` : "/api/stream", onMessage, (up) => {
    badge.textContent = up ? "live" : "reconnecting";
    badge.className = up ? "live on" : "live off";
  });
}

function gone(what) {
  closePage();
  main.replaceChildren(h("p", { class: "error", id: "gone" }, `${what}: it was deleted.`), h("p", {}, h("a", { href: "#/" }, "All workflows")));
}

// At most one refresh a second, and never more than a tenth of the time: a view that takes the
// daemon 120 ms to answer (the graph of 100,000 jobs) refreshes every 1.2 s at most.
function throttled(fn, ms = 1000) {
  let last = 0, cost = 0, timer = null;
  return () => {
    if (timer) return;
    const wait = Math.max(0, last + Math.max(ms, 10 * cost) - Date.now());
    timer = setTimeout(async () => {
      timer = null; last = Date.now();
      try { await fn(); } catch (e) { toast(e.message, true); }  // the daemon may be restarting
      cost = Date.now() - last;
    }, wait);
  };
}

// -- workflows --

async function workflowsPage() {
  crumbs(h("a", { href: "#/" }, "workflows"));
  const body = h("tbody");
  main.replaceChildren(h("h1", {}, "Workflows"),
    h("table", { id: "workflows" }, h("thead", {}, h("tr", {},
      ["id", "name", "state", "progress", "jobs", "pending failed", "failed", "created", "ended / last event"].map((c) =>
        h("th", { class: ["id", "pending failed", "failed"].includes(c) ? "num" : "" }, c)))), body));
  async function refresh() {
    const wfs = await rpc("workflows.list");
    body.replaceChildren(...wfs.slice().reverse().map((w) => {
      const c = w.counts || {}, n = total(c);
      const done = (c.completed || 0);
      return h("tr", { "data-id": w.id, class: (c.pending_failed || c.failed) ? "attention" : "" },
        h("td", { class: "num" }, w.id),
        h("td", {}, h("a", { href: `#/workflow/${w.id}` }, w.name)),
        h("td", { class: "state" }, w.state),
        h("td", {}, bar(c), h("span", { class: "muted progress" }, `${done} / ${n}`)),
        h("td", {}, STATUSES.filter((s) => c[s] && !ATTENTION.includes(s)).map((s) => chip(s, c[s]))),
        h("td", { class: "num pending-failed" }, c.pending_failed ? chip("pending_failed", c.pending_failed, true) : "0"),
        h("td", { class: "num failed" }, c.failed ? chip("failed", c.failed, true) : "0"),
        h("td", {}, when(w.created)),
        h("td", { class: "ended" }, w.state === "active" ? h("span", { class: "muted" }, when(w.last_event)) : when(w.last_event)));
    }));
    if (!wfs.length) body.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No workflows yet: `torcctl submit SPEC`.")));
  }
  const again = throttled(refresh);
  follow(null, (m) => { if (m.changed.length) again(); });
  every(10000, again);  // a deletion sends no event
  await refresh();
}

// -- one workflow --

const TABS = ["graph", "jobs", "events", "actions", "allocations", "resources"];

async function workflowPage(id, tab = "graph", query = {}) {
  const state = { id, tab };
  const head = h("div");
  const tabs = h("div", { class: "tabs" }, TABS.map((t) =>
    h("a", { href: `#/workflow/${id}/${t}`, class: t === tab ? "on" : "", "data-tab": t }, t)));
  const panel = h("div", { id: "panel" });
  main.replaceChildren(head, tabs, panel);
  let wf;
  async function refreshHead() {
    wf = await rpc("workflows.show", { workflow_id: id });
    crumbs(h("a", { href: "#/" }, "workflows"), h("a", { href: `#/workflow/${id}` }, `${wf.name} (#${id})`));
    head.replaceChildren(
      h("h1", {}, `${wf.name} `, h("span", { class: "muted" }, `#${id} · ${wf.state} · run ${wf.run_id}`)),
      h("div", { class: "toolbar", id: "counts" }, bar(wf.counts),
        STATUSES.filter((s) => wf.counts[s]).map((s) => chip(s, wf.counts[s], ATTENTION.includes(s)))),
      workflowActions(id, refreshAll));
  }
  const render = { graph: graphTab, jobs: jobsTab, events: eventsTab, actions: actionsTab, allocations: allocationsTab, resources: resourcesTab }[tab];
  const view = await render(panel, id, state, query);
  async function refreshAll() { await refreshHead(); if (view && view.refresh) await view.refresh(); }
  const again = throttled(refreshAll);
  // The stream opens first and what it brings waits for the backlog: nothing falls in between.
  let lastSeq = null;
  const early = [];
  const take = (m) => {
    const fresh = m.events.filter((e) => e.seq > lastSeq);  // the stream may repeat what the list gave
    if (fresh.length) {
      lastSeq = fresh[fresh.length - 1].seq;
      if (view && view.events) view.events(fresh.reverse(), true, m.skipped);
    }
    if (m.changed.includes(id)) again();
  };
  follow(id, (m) => (lastSeq === null ? early.push(m) : take(m)));
  const shown = (await rpc("events.list", { workflow_id: id, last: 500 })).reverse();
  lastSeq = shown.length ? shown[0].seq : 0;
  if (view && view.events) view.events(shown, false);
  early.splice(0).forEach(take);
  // A deletion sends no event: look now and then.
  every(5000, async () => {
    try { await rpc("workflows.show", { workflow_id: id }); } catch (e) { if (/no workflow/.test(e.message)) gone(e.message); }
  });
  await refreshHead();
}

function reasonInput(placeholder = "reason (kept with the change)") {
  return h("input", { class: "reason", placeholder, maxlength: 4096 });
}

function workflowActions(id, after) {
  const act = async (label, method, params) => {
    try {
      const r = await rpc(method, params);
      toast(`${label}: ${JSON.stringify(r).slice(0, 160)}`);
      await after();
    } catch (e) { toast(`${label}: ${e.message}`, true); }
  };
  return h("div", { class: "toolbar" },
    h("button", { id: "reset-failed", onclick: () => act("reset failed", "workflows.reset_status", { workflow_id: id, failed_only: true }) },
      "Reset failed jobs"),
    h("button", { id: "recover-preview", onclick: () => { location.hash = `#/workflow/${id}/resources`; } }, "Recover…"),
    h("button", { class: "danger", id: "cancel", onclick: () => { if (confirm("Cancel this workflow?")) act("cancel", "workflows.cancel", { workflow_id: id }); } },
      "Cancel workflow"));
}

// -- graph: nodes are jobs, or templates with counts when the workflow is large --

async function graphTab(panel, id) {
  const holder = h("div", { class: "graph", id: "graph" });
  const expanded = h("div", { id: "expanded" });
  const note = h("p", { class: "muted" });
  panel.replaceChildren(note, holder, expanded);
  async function refresh() {
    const g = await getJSON(`/api/graph/${id}`);
    note.textContent = g.grouping === "job"
      ? `${g.nodes.length} jobs; click one to open it.`
      : `${g.nodes.reduce((a, n) => a + n.jobs, 0).toLocaleString()} jobs in ${g.nodes.length} groups by name template; click a group to see its jobs.`;
    holder.replaceChildren(drawGraph(g, (n) => {
      if (n.job_id) location.hash = `#/job/${n.job_id}`;
      else expandGroup(expanded, id, n);
    }));
  }
  await refresh();
  return { refresh };
}

function drawGraph(g, onClick) {
  const W = g.node_width, H = g.node_height, pad = 10;
  const at = Object.fromEntries(g.nodes.map((n) => [n.key, n]));
  const svg = h("svg", { width: g.width + 2 * pad, height: g.height + 2 * pad, viewBox: `${-pad} ${-pad} ${g.width + 2 * pad} ${g.height + 2 * pad}` });
  for (const e of g.edges) {
    const a = at[e.source], b = at[e.target];
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mid = (x1 + x2) / 2;
    svg.append(h("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` },
      h("title", {}, `${e.count} dependencies`)));
  }
  for (const n of g.nodes) {
    const node = h("g", { class: "node", transform: `translate(${n.x},${n.y})`, "data-key": n.key, onclick: () => onClick(n) });
    node.append(h("rect", { class: "frame", width: W, height: H, rx: 5 }));
    let x = 0;
    const jobs = n.jobs || 1;
    for (const s of STATUSES) {
      if (!n.counts[s]) continue;
      const w = (W * n.counts[s]) / jobs;
      node.append(h("rect", { x, y: H - 8, width: w, height: 8, fill: `var(--${s})` }));
      x += w;
    }
    const label = n.label.length > 28 ? n.label.slice(0, 27) + "…" : n.label;
    node.append(h("text", { x: 8, y: 18 }, label));
    const worst = ATTENTION.filter((s) => n.counts[s]).map((s) => `${n.counts[s]} ${s.replace("_", " ")}`).join(", ");
    const line = n.job_id
      ? (Object.keys(n.counts)[0] || "").replace("_", " ")
      : `${n.jobs.toLocaleString()} jobs${worst ? ` · ${worst}` : ""}`;
    node.append(h("text", { x: 8, y: 36, fill: worst ? "#b00020" : "#6b6b70" }, line));
    node.append(h("title", {}, `${n.label}\n` + Object.entries(n.counts).map(([k, v]) => `${k}: ${v}`).join("\n")));
    svg.append(node);
  }
  return svg;
}

async function expandGroup(box, id, n) {
  const jobs = await rpc("jobs.list", { workflow_id: id, template: n.key, limit: 2000 });
  box.replaceChildren(h("h2", {}, `${n.label}: ${n.jobs.toLocaleString()} jobs`),
    h("p", {}, h("a", { href: `#/workflow/${id}/jobs?template=${encodeURIComponent(n.key)}` }, "open in the job table"),
      n.jobs > jobs.length ? h("span", { class: "muted" }, ` (the first ${jobs.length} shown)`) : ""),
    h("div", { class: "cells" }, jobs.map((j) =>
      h("a", { href: `#/job/${j.id}`, title: `${j.name}: ${j.status}`, style: { background: `var(--${j.status})` } }))));
}

// -- jobs: filtered, sorted and paged by the daemon --

async function jobsTab(panel, id, state, query) {
  const q = { status: query.status || "", name: query.name || "", template: query.template || "", sort: "id", descending: false, offset: 0 };
  const status = h("select", { id: "status-filter", onchange: () => { q.status = status.value; q.offset = 0; selected.clear(); refresh(); } },
    h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s, selected: s === q.status }, s)));
  let typing;
  const name = h("input", { id: "name-filter", placeholder: "name contains", value: q.name,
    oninput: () => { clearTimeout(typing); typing = setTimeout(() => { q.name = name.value; q.offset = 0; selected.clear(); refresh(); }, 250); } });
  const pager = h("span", { class: "muted", id: "pager" });
  const prev = h("button", { onclick: () => { q.offset = Math.max(0, q.offset - PAGE); refresh(); } }, "‹ prev");
  const next = h("button", { id: "next-page", onclick: () => { q.offset += PAGE; refresh(); } }, "next ›");
  const reason = reasonInput();
  const selected = new Set();
  const act = async (method) => {
    if (!selected.size) return toast("select jobs first", true);
    try {
      const r = await rpc(method, { job_ids: [...selected], reason: reason.value });
      toast(`${method.split(".")[1]}: ${r.changed.length} changed`);
      selected.clear();
      await refresh();
    } catch (e) { toast(e.message, true); }
  };
  const body = h("tbody");
  const cols = [["", null], ["id", "id"], ["name", "name"], ["status", "status"], ["attempt", "attempt_id"],
    ["exit", null], ["handler", null], ["template", "template"], ["reason", null]];
  const headRow = h("tr", {}, cols.map(([label, key]) => h("th", {
    class: key ? `sortable ${q.sort === key ? "sorted" : ""}` : "", "data-sort": key,
    onclick: key ? () => { q.descending = q.sort === key ? !q.descending : false; q.sort = key; q.offset = 0; selected.clear(); refresh(); } : null,
  }, label)));
  const filterNote = h("span", { class: "muted" });
  panel.replaceChildren(
    h("div", { class: "toolbar" }, status, name, filterNote, prev, pager, next),
    h("div", { class: "toolbar" }, reason,
      h("button", { class: "primary", id: "retry-selected", onclick: () => act("jobs.retry") }, "Retry selected"),
      h("button", { class: "danger", id: "fail-selected", onclick: () => act("jobs.fail") }, "Fail selected")),
    h("table", { id: "jobs" }, h("thead", {}, headRow), body));
  async function refresh() {
    const filters = { workflow_id: id };
    for (const k of ["status", "name", "template"]) if (q[k]) filters[k] = q[k];
    const [jobs, count] = await Promise.all([
      rpc("jobs.list", { ...filters, sort: q.sort, descending: q.descending, limit: PAGE, offset: q.offset }),
      rpc("jobs.count", filters),
    ]);
    filterNote.textContent = q.template ? `template ${q.template}` : "";
    for (const th of headRow.children) {
      th.classList.toggle("sorted", th.dataset.sort === q.sort);
      th.classList.toggle("desc", th.dataset.sort === q.sort && q.descending);
    }
    pager.textContent = count.count ? `${q.offset + 1}–${q.offset + jobs.length} of ${count.count.toLocaleString()}` : "no jobs";
    prev.disabled = q.offset === 0;
    next.disabled = q.offset + PAGE >= count.count;
    body.replaceChildren(...jobs.map((j) => h("tr", { "data-id": j.id, class: ATTENTION.includes(j.status) ? "attention" : "" },
      h("td", {}, h("input", { type: "checkbox", checked: selected.has(j.id), onchange: (e) => e.target.checked ? selected.add(j.id) : selected.delete(j.id) })),
      h("td", { class: "num" }, j.id),
      h("td", {}, h("a", { href: `#/job/${j.id}` }, j.name)),
      h("td", { class: "status" }, chip(j.status)),
      h("td", { class: "num" }, j.attempt_id),
      h("td", { class: "num" }, j.return_code ?? ""),
      h("td", {}, j.failure_handler || ""),
      h("td", { class: "muted" }, j.template || ""),
      h("td", { class: "muted" }, j.reason || ""))));
  }
  await refresh();
  return { refresh };
}

// -- events: a live log --

function eventLine(e, fresh) {
  const what = [e.job_name || (e.job_id ? `job ${e.job_id}` : ""), e.message || "", e.count !== undefined && e.count !== null ? `(${e.count})` : ""]
    .filter(Boolean).join(" ");
  return h("div", { class: fresh ? "fresh" : "", "data-kind": e.kind }, `${clock(e.time)}  #${e.seq}  ${e.kind}  ${what}`);
}

async function eventsTab(panel) {
  const log = h("div", { class: "events", id: "events" });
  const note = h("p", { class: "muted" }, "Newest first; live.");
  panel.replaceChildren(note, log);
  return {
    events(list, fresh, skipped = 0) {
      if (skipped) log.prepend(h("div", { class: "muted" }, `… ${skipped} more events (see \`torcctl events\`)`));
      log.prepend(...list.map((e) => eventLine(e, fresh)));
      while (log.childElementCount > 2000) log.lastChild.remove();
    },
  };
}

// -- workflow actions and their firings --

async function actionsTab(panel, id) {
  const runs = h("div", { class: "events", id: "action-runs" });
  const table = h("div");
  panel.replaceChildren(table, h("h2", {}, "Firings"), runs);
  async function refresh() {
    const actions = await rpc("actions.list", { workflow_id: id });
    table.replaceChildren(actions.length
      ? h("table", { id: "actions" }, h("thead", {}, h("tr", {}, ["#", "when", "does", "state", "run", "last said"].map((c) => h("th", {}, c)))),
        h("tbody", {}, actions.map((a) => h("tr", { "data-state": a.state },
          h("td", { class: "num" }, a.index), h("td", {}, a.trigger.replaceAll("_", " ") + (a.persistent ? " (every run)" : "")),
          h("td", {}, a.action_type === "run_commands" ? h("pre", { class: "command" }, a.commands.join("\n")) : a.action_type),
          h("td", { class: "state" }, a.state), h("td", { class: "num" }, a.run_id ?? ""), h("td", { class: "muted" }, a.message || "")))))
      : h("p", { class: "muted" }, "This workflow has no actions."));
  }
  await refresh();
  return {
    refresh,
    events(list, fresh) {
      runs.prepend(...list.filter((e) => e.kind.startsWith("action_")).map((e) => eventLine(e, fresh)));
    },
  };
}

// -- allocations and workers --

async function allocationsTab(panel, id) {
  async function refresh() {
    const [allocs, workers] = await Promise.all([rpc("allocations.list", { workflow_id: id }), rpc("workers.list", { workflow_id: id })]);
    panel.replaceChildren(
      h("h2", {}, "Slurm allocations"),
      allocs.length ? h("table", { id: "allocations" }, h("thead", {}, h("tr", {}, ["id", "scheduler", "state", "slurm job", "slurm state", "cpus", "submitted", "started", "ended", "reason"].map((c) => h("th", {}, c)))),
        h("tbody", {}, allocs.map((a) => h("tr", {}, [a.id, a.scheduler, a.state, a.slurm_job_id, a.slurm_state, a.cpus, when(a.submitted), when(a.started), when(a.ended), a.reason].map((v) => h("td", {}, v ?? ""))))))
        : h("p", { class: "muted" }, "No allocations: this workflow runs on this machine."),
      h("h2", {}, "Workers"),
      workers.length ? h("table", { id: "workers" }, h("thead", {}, h("tr", {}, ["id", "allocation", "node", "cpus", "state", "running", "registered", "last heard", "ended", "reason"].map((c) => h("th", {}, c)))),
        h("tbody", {}, workers.map((w) => h("tr", {}, [w.id, w.allocation_id, w.host, w.cpus, w.state, w.running, when(w.registered), when(w.last_heartbeat), when(w.ended), w.reason].map((v) => h("td", {}, v ?? ""))))))
        : h("p", { class: "muted" }, "No workers have registered."));
  }
  await refresh();
  return { refresh };
}

// -- resources: plots, and what recover would change --

async function resourcesTab(panel, id) {
  const stamp = () => Date.now();
  const plots = h("div", { class: "plots" });
  const preview = h("div", { id: "recover" });
  const reason = reasonInput("why (kept with each change)");
  const memory = h("input", { id: "memory-multiplier", type: "number", step: "0.1", min: "1", value: "1.5", style: { width: "5rem" } });
  const runtime = h("input", { id: "runtime-multiplier", type: "number", step: "0.1", min: "1", value: "1.4", style: { width: "5rem" } });
  const params = (dry) => ({ workflow_id: id, dry_run: dry, memory_multiplier: Number(memory.value), runtime_multiplier: Number(runtime.value), reason: reason.value });
  async function show() {
    try {
      const r = await rpc("workflows.recover", params(true));
      preview.replaceChildren(r.adjustments.length
        ? h("table", { id: "adjustments" }, h("thead", {}, h("tr", {}, ["job", "diagnosis", "why", "memory", "runtime", "retry"].map((c) => h("th", {}, c)))),
          h("tbody", {}, r.adjustments.map((a) => h("tr", {},
            h("td", {}, h("a", { href: `#/job/${a.job_id}` }, a.name)), h("td", {}, a.diagnosis), h("td", {}, a.why),
            h("td", {}, a.memory ? `${bytes(a.memory[0])} → ${bytes(a.memory[1])}` : ""),
            h("td", {}, a.runtime ? `${seconds(a.runtime[0])} → ${seconds(a.runtime[1])}` : ""),
            h("td", {}, a.retry ? "yes" : "no")))))
        : h("p", { class: "muted" }, "recover would change nothing."),
      h("div", { class: "toolbar" }, h("button", { class: "primary", id: "recover-apply", disabled: !r.adjustments.some((a) => a.retry), onclick: apply }, "Apply")));
    } catch (e) { preview.replaceChildren(h("p", { class: "error" }, e.message)); }
  }
  async function apply() {
    try {
      const r = await rpc("workflows.recover", params(false));
      toast(`recover: ${r.reset} jobs put back to run`);
      preview.replaceChildren(h("p", {}, `Applied: ${r.reset} jobs put back to run.`));
    } catch (e) { toast(e.message, true); }
  }
  function refresh() {
    const t = stamp();
    plots.replaceChildren(...["memory", "runtime", "timeline"].map((n) => h("img", { src: `/api/plots/${id}/${n}.svg?t=${t}`, alt: `${n} plot`, id: `plot-${n}` })));
  }
  panel.replaceChildren(
    h("h2", {}, "Recover"),
    h("p", { class: "muted" }, "Jobs that ran out of memory or time get more and run again. Preview first: nothing changes until Apply."),
    h("div", { class: "toolbar" }, "memory ×", memory, "runtime ×", runtime, reason,
      h("button", { id: "recover-show", onclick: show }, "Preview")),
    preview, h("h2", {}, "Use against limits"), plots);
  refresh();
  return { refresh: () => {} };
}

// -- one job --

async function jobPage(id) {
  const job = await rpc("jobs.show", { job_id: id });
  const wf = await rpc("workflows.show", { workflow_id: job.workflow_id });
  crumbs(h("a", { href: "#/" }, "workflows"), h("a", { href: `#/workflow/${wf.id}` }, `${wf.name} (#${wf.id})`),
    h("a", { href: `#/job/${id}` }, job.name));
  const head = h("div"), attempts = h("div"), explain = h("div"), logs = h("div");
  const reason = reasonInput();
  // Built once and shown or hidden, never rebuilt: a live refresh must not take the reason box
  // out of the page (and its focus with it) while the user types.
  const retryButton = h("button", { class: "primary", id: "retry-job", onclick: () => act("jobs.retry") }, "Retry");
  const failButton = h("button", { class: "danger", id: "fail-job", onclick: () => act("jobs.fail") }, "Fail");
  const actions = h("div", { class: "toolbar" }, reason, retryButton, failButton);
  main.replaceChildren(head, actions, h("h2", {}, "Attempts"), attempts, h("h2", {}, "What its failure handler does"), explain,
    h("h2", {}, "Logs"), logs);
  const act = async (method) => {
    try {
      const r = await rpc(method, { job_ids: [id], reason: reason.value });
      toast(`${method.split(".")[1]}: ${r.changed.length ? "done" : "nothing changed"}`);
      await refresh();
    } catch (e) { toast(e.message, true); }
  };
  async function refresh() {
    const j = await rpc("jobs.show", { job_id: id });
    head.replaceChildren(h("h1", {}, `${j.name} `, chip(j.status, undefined, true)),
      h("dl", { class: "facts" },
        h("dt", {}, "workflow"), h("dd", {}, h("a", { href: `#/workflow/${wf.id}` }, `${wf.name} (#${wf.id})`)),
        h("dt", {}, "attempt"), h("dd", {}, `${j.attempt_id} (run ${j.run_id})`),
        h("dt", {}, "failure handler"), h("dd", {}, j.failure_handler || "none"),
        h("dt", {}, "limits"), h("dd", {}, `${j.num_cpus} cpu, ${bytes(j.memory_bytes) || "no memory limit"}, ${seconds(j.runtime_seconds) || "no runtime limit"}`),
        j.reason ? [h("dt", {}, "reason"), h("dd", {}, j.reason)] : null,
        h("dt", {}, "command"), h("dd", {}, h("pre", { class: "command" }, j.command))));
    actions.style.display = ATTENTION.includes(j.status) ? "" : "none";
    failButton.style.display = j.status === "pending_failed" ? "" : "none";
    const atts = await rpc("jobs.attempts", { job_id: id });
    attempts.replaceChildren(atts.length ? h("table", { id: "attempts" }, h("thead", {}, h("tr", {},
      ["run", "attempt", "host", "started", "ran", "exit", "cause", "rule", "action", "recovery", "peak memory", "cpu time", "message"].map((c) => h("th", {}, c)))),
    h("tbody", {}, atts.map((a) => h("tr", {},
      h("td", { class: "num" }, a.run_id), h("td", { class: "num" }, a.attempt_id), h("td", {}, a.host || ""),
      h("td", {}, clock(a.start_time)),
      h("td", {}, a.end_time ? `${seconds(a.end_time - a.start_time)}${a.runtime_limit ? ` of ${seconds(a.runtime_limit)}` : ""}` : "running"),
      h("td", { class: "num" }, a.return_code ?? ""), h("td", {}, a.cause || ""),
      h("td", {}, a.rule_index ?? ""), h("td", {}, a.action || ""), h("td", {}, a.recovery_outcome || ""),
      h("td", {}, a.peak_memory ? `${bytes(a.peak_memory)}${a.memory_limit ? ` of ${bytes(a.memory_limit)}` : ""}` : ""),
      h("td", {}, seconds(a.cpu_seconds)), h("td", { class: "muted" }, a.message || "")))))
      : h("p", { class: "muted" }, "No attempt yet."));
    try {
      const x = await rpc("jobs.explain", { job_id: id });
      explain.replaceChildren(h("p", {}, x.failure_handler ? `Failure handler ${x.failure_handler}` : "No failure handler",
        `; exit codes so far: ${x.exit_codes.length ? x.exit_codes.join(", ") : "none"}.`),
      h("ol", { id: "explain" }, x.steps.map((s) => h("li", {}, `exit ${s.return_code}${s.cause ? ` (${s.cause})` : ""} → ${s.action}${s.rule_index !== null && s.rule_index !== undefined ? ` [rule ${s.rule_index}]` : ""}: ${s.reason}`))),
      h("p", { class: "muted" }, `final status: ${x.final_status}`));
    } catch (e) { explain.replaceChildren(h("p", { class: "error" }, e.message)); }
    return atts;
  }
  const atts = await refresh();
  logViewer(logs, id, atts);
  const again = throttled(async () => {
    try { await refresh(); } catch (e) { if (/no (job|workflow)/.test(e.message)) gone(e.message); else throw e; }
  });
  follow(job.workflow_id, (m) => { if (m.changed.includes(job.workflow_id)) again(); });
  every(5000, again);
}

function logViewer(box, id, atts) {
  const stream = h("select", { id: "log-stream" }, ["stdout", "stderr", "recovery"].map((s) => h("option", { value: s }, s)));
  const attempt = h("select", { id: "log-attempt" }, h("option", { value: "" }, "latest attempt"),
    atts.map((a) => h("option", { value: a.attempt_id }, `attempt ${a.attempt_id} (run ${a.run_id})`)));
  const pre = h("pre", { class: "log", id: "log" });
  const note = h("span", { class: "muted", id: "log-note" });
  let source = null;
  const open = () => {
    if (source) source.close();
    const params = new URLSearchParams({ stream: stream.value });
    if (attempt.value) params.set("attempt", attempt.value);
    source = socket(`/api/log/${id}?${params}`, (piece) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      if (piece.note === "truncated") pre.textContent = "";
      note.textContent = piece.note === "missing" ? "no output yet" : piece.note;
      if (piece.text) {
        pre.append(piece.text);
        if (pre.textContent.length > 2_000_000) pre.textContent = pre.textContent.slice(-1_000_000);
      }
      if (atEnd) pre.scrollTop = pre.scrollHeight;
      if (piece.note.startsWith("unreadable")) source.close();
    }, (up) => {
      if (up) pre.textContent = "";  // (again) from the tail
      else note.textContent = "log stream cut; retrying";
    });
  };
  stream.onchange = open;
  attempt.onchange = open;
  box.replaceChildren(h("div", { class: "toolbar" }, stream, attempt, note, h("span", { class: "muted" }, "following")), pre);
  if (atts.length) open(); else note.textContent = "no attempt yet";
}

// -- routing --

async function route() {
  closePage();
  const [path, qs] = (location.hash.slice(1) || "/").split("?");
  const query = Object.fromEntries(new URLSearchParams(qs || ""));
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "workflow" && parts[1]) await workflowPage(Number(parts[1]), TABS.includes(parts[2]) ? parts[2] : "graph", query);
    else if (parts[0] === "job" && parts[1]) await jobPage(Number(parts[1]));
    else await workflowsPage();
    document.body.dataset.ready = location.hash || "#/";
  } catch (e) {
    main.replaceChildren(h("p", { class: "error" }, e.message));
  }
}
window.addEventListener("hashchange", route);
route();
