// aiproxy console: reads /console/api/* every few seconds and draws the tab in view.
// No library and no build step; every value reaches the page through textContent.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const REFRESH_MS = 2000;
let timer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function notice(text, isError) {
  const box = document.getElementById("notice");
  box.textContent = text || "";
  box.className = isError ? "error" : "";
}

async function call(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") {
    options.headers["x-csrf-token"] = csrf;
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body || {});
  }
  const response = await fetch(path, options);
  if (response.status === 401) {
    // The session ended: the page itself asks for the key again.
    window.location.reload();
    throw new Error("signed out");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error((data.error && data.error.message) || response.statusText);
  }
  return data;
}

// One formatter for every number: toLocaleString builds a new one per call, which costs
// more than the rest of a 500-row table.
const integers = new Intl.NumberFormat("en-US");

const fmt = {
  int: (n) => (n === null || n === undefined ? "-" : integers.format(n)),
  num: (n, digits) => (n === null || n === undefined ? "-" : Number(n).toFixed(digits === undefined ? 2 : digits)),
  time: (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19),
  left: (iso) => {
    if (!iso) return "";
    const seconds = Math.max(0, Math.round((Date.parse(iso) - Date.now()) / 1000));
    return seconds >= 120 ? Math.round(seconds / 60) + " min left" : seconds + " s left";
  },
};

// ---- overview

function card(label, value, detail) {
  return el("div", { class: "card" }, el("span", { class: "label" }, label), el("strong", {}, value), detail ? el("small", {}, detail) : null);
}

function bars(svg, minutes, series) {
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const width = 600, height = 130, step = width / minutes.length;
  const max = Math.max(1, ...minutes.map((m) => series.reduce((sum, s) => sum + s.value(m), 0)));
  minutes.forEach((minute, i) => {
    let base = height;
    for (const s of series) {
      const h = (s.value(minute) / max) * (height - 10);
      if (h <= 0) continue;
      const rect = document.createElementNS(ns, "rect");
      rect.setAttribute("x", String(i * step + 1));
      rect.setAttribute("y", String(base - h));
      rect.setAttribute("width", String(Math.max(1, step - 2)));
      rect.setAttribute("height", String(h));
      rect.setAttribute("class", s.class);
      const title = document.createElementNS(ns, "title");
      title.textContent = new Date(minute.at * 1000).toISOString().slice(11, 16) + " " + s.name + ": " + fmt.num(s.value(minute), s.digits || 0);
      rect.append(title);
      svg.append(rect);
      base -= h;
    }
  });
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", "4");
  label.setAttribute("y", "12");
  label.setAttribute("class", "axis");
  label.textContent = "max " + fmt.num(max, series[0].digits || 0);
  svg.append(label);
}

async function overview() {
  const data = await call("GET", "/console/api/overview");
  const t = data.last_hour;
  const hitRate = t.cache_lookups ? fmt.num((100 * t.cache_hits) / t.cache_lookups, 0) + " %" : "-";
  document.getElementById("overview-cards").replaceChildren(
    card("Requests (hour)", fmt.int(t.requests)),
    card("Errors (hour)", fmt.int(t.errors), `${t.rate_limited} rate-limited, ${t.client_errors} client, ${t.upstream_errors} upstream`),
    card("Mean latency", t.requests ? fmt.int(Math.round(t.latency_ms_sum / t.requests)) + " ms" : "-", "slowest " + fmt.int(t.latency_ms_max) + " ms"),
    card("Tokens (hour)", fmt.int(t.input_tokens + t.output_tokens), `${fmt.int(t.input_tokens)} in, ${fmt.int(t.output_tokens)} out`),
    card("Credits (hour)", fmt.num(t.credits)),
    card("Cache hit rate", hitRate, `${fmt.int(t.cache_hits)} of ${fmt.int(t.cache_lookups)} lookups`),
    card("Rate-limit refusals", fmt.int(t.rate_limited)),
    card("Accounts serving", `${data.accounts.usable} of ${data.accounts.total}`, data.panic ? "PANIC MODE: kept-out accounts serve too" : "not in panic mode"),
    card("Uptime", fmt.int(Math.round(data.uptime_seconds / 60)) + " min", data.version),
  );
  const minutes = data.minutes;
  bars(document.getElementById("chart-requests"), minutes, [
    { name: "ok", class: "ok", value: (m) => m.requests - m.rate_limited - m.client_errors - m.upstream_errors },
    { name: "errors", class: "bad", value: (m) => m.rate_limited + m.client_errors + m.upstream_errors },
  ]);
  bars(document.getElementById("chart-latency"), minutes, [
    { name: "mean ms", class: "ok", value: (m) => (m.requests ? m.latency_ms_sum / m.requests : 0) },
  ]);
  bars(document.getElementById("chart-tokens"), minutes, [
    { name: "input", class: "ok", value: (m) => m.input_tokens },
    { name: "output", class: "alt", value: (m) => m.output_tokens },
  ]);
  bars(document.getElementById("chart-credits"), minutes, [
    { name: "credits", class: "alt", value: (m) => m.credits, digits: 2 },
  ]);
}

// ---- accounts

function stateText(a) {
  if (a.state === "cooldown") return `resting (${a.reason || "429"}) ${fmt.left(a.cooldown_until)}`;
  if (a.state === "disabled") return `disabled (${a.reason || "operator"})${a.cooldown_until ? " until " + a.cooldown_until : ""}`;
  if (a.state === "open") return `breaker open (${a.reason || "errors"}) ${fmt.left(a.cooldown_until)}`;
  if (a.state === "half_open") return "breaker half-open (trying)";
  return a.usable ? "serving" : a.state;
}

async function act(name, action) {
  if (action === "remove" && !window.confirm(`Remove ${name} from the pool file? Its credential file stays on disk.`)) return;
  try {
    const answer = await call("POST", `/console/api/accounts/${encodeURIComponent(name)}/${action}`);
    notice(answer.message);
  } catch (error) {
    notice(`${action} ${name}: ${error.message}`, true);
  }
  refresh();
}

async function accounts() {
  const data = await call("GET", "/console/api/accounts");
  const body = document.querySelector("#accounts-table tbody");
  body.replaceChildren(
    ...data.accounts.map((a) => {
      const usage = a.usage;
      const credits = usage
        ? `${fmt.num(usage.used)} used of ${fmt.num(usage.limit)}, ${fmt.num(usage.remaining)} left` + (usage.resets_at ? `, resets ${usage.resets_at.slice(0, 10)}` : "")
        : "not read yet";
      const actions = el("div", { class: "actions" },
        a.enabled === false
          ? el("button", { "data-action": "enable", onclick: () => act(a.name, "enable") }, "Enable")
          : el("button", { "data-action": "disable", onclick: () => act(a.name, "disable") }, "Disable"),
        el("button", { "data-action": "reset", onclick: () => act(a.name, "reset") }, "Reset breaker"),
        el("button", { "data-action": "refresh", onclick: () => act(a.name, "refresh") }, "Refresh token"),
        el("button", { "data-action": "probe", onclick: () => act(a.name, "probe") }, "Probe"),
        el("button", { "data-action": "remove", class: "danger", onclick: () => act(a.name, "remove") }, "Remove"),
      );
      const secrets = Object.entries(a.secrets || {}).map(([k, set]) => `${k.replace("_", " ")}: ${set ? "set" : "not set"}`).join(", ");
      return el("tr", { "data-account": a.name, "data-state": a.state },
        el("td", {}, el("strong", {}, a.name), el("br"), el("small", {}, a.format || "")),
        el("td", { class: "state " + a.state }, el("span", { class: "word" }, stateText(a)), a.last_error ? el("small", {}, el("br"), "last error: " + a.last_error) : null),
        el("td", {}, credits, el("br"), el("small", {}, "spent here: " + fmt.num(a.credits_spent))),
        el("td", {}, `${fmt.int(a.in_flight)} in flight, ${fmt.int(a.requests)} requests, ${fmt.int(a.errors)} errors`, el("br"),
          el("small", { title: (a.models || []).join(", ") || "not listed yet" }, `tokens ${fmt.int(a.tokens.input)} in / ${fmt.int(a.tokens.output)} out; models: ${(a.models || []).length}`)),
        el("td", {}, el("small", {}, "machine " + (a.machine_id_prefix || "-") + "…"), el("br"), el("small", {}, a.egress ? "via " + a.egress + (a.egress_password_set ? " (password set)" : "") : "direct")),
        el("td", {}, el("small", {}, secrets)),
        el("td", {}, actions),
      );
    }),
  );
  if (!data.pool_file) notice("No pool file: enable, disable, remove and add need aiproxy started with --provider-pools-file FILE.");
}

// ---- add an account

function watchSignin(id, box) {
  const poll = async () => {
    try {
      const state = await call("GET", `/console/api/signin/${id}`);
      if (state.state === "pending") return void setTimeout(poll, 1500);
      box.replaceChildren(el("p", { class: state.state === "done" ? "done" : "error" }, state.message));
      refresh();
    } catch (error) {
      box.replaceChildren(el("p", { class: "error" }, error.message));
    }
  };
  setTimeout(poll, 1000);
}

function form(id) {
  return Object.fromEntries(new FormData(document.getElementById(id)).entries());
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("add-device").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = document.getElementById("device-flow");
    try {
      const f = form("add-device");
      const flow = await call("POST", "/console/api/add/device", { name: f.name, kind: f.kind, start_url: f.start_url || null, region: f.region });
      box.replaceChildren(el("p", {}, "Open ", el("a", { href: flow.verification_uri_complete, target: "_blank", rel: "noopener noreferrer" }, flow.verification_uri), " and enter ", el("code", { class: "user-code" }, flow.user_code), ". Waiting for the approval…"));
      watchSignin(flow.id, box);
    } catch (error) {
      box.replaceChildren(el("p", { class: "error" }, error.message));
    }
  });
  document.getElementById("add-social").addEventListener("submit", async (event) => {
    event.preventDefault();
    const box = document.getElementById("social-flow");
    try {
      const flow = await call("POST", "/console/api/add/social", { name: form("add-social").name });
      const pasted = el("input", { name: "callback", placeholder: "http://localhost:3128/oauth/callback?code=…&state=…", class: "callback" });
      const finish = el("button", { type: "button", class: "finish" }, "Finish sign-in");
      finish.addEventListener("click", async () => {
        try {
          const answer = await call("POST", `/console/api/signin/${flow.id}/callback`, { url: pasted.value });
          box.replaceChildren(el("p", { class: "done" }, answer.message));
          refresh();
        } catch (error) {
          notice(error.message, true);
        }
      });
      box.replaceChildren(
        el("p", {}, "1. Open ", el("a", { href: flow.signin_url, target: "_blank", rel: "noopener noreferrer", class: "signin-link" }, "Kiro's sign-in page"), " and sign in with Google or GitHub."),
        el("p", {}, "2. The browser ends on a localhost address that does not load: copy that whole address and paste it here."),
        pasted, finish,
      );
    } catch (error) {
      box.replaceChildren(el("p", { class: "error" }, error.message));
    }
  });
  document.getElementById("add-credential").addEventListener("submit", async (event) => {
    event.preventDefault();
    const f = new FormData(event.target);
    const file = f.get("file");
    const text = file && file.size ? await file.text() : f.get("text");
    try {
      const answer = await call("POST", "/console/api/add/credential", { name: f.get("name") || null, text });
      notice(answer.message);
      event.target.reset();
    } catch (error) {
      notice(error.message, true);
    }
    refresh();
  });
  document.getElementById("requests-filter").addEventListener("input", () => {
    requestsPage = 0;
    refresh();
  });
  document.getElementById("requests-newer").addEventListener("click", () => {
    requestsPage = Math.max(0, requestsPage - 1);
    refresh();
  });
  document.getElementById("requests-older").addEventListener("click", () => {
    requestsPage += 1;
    refresh();
  });
  window.addEventListener("hashchange", show);
  show();
});

// ---- keys and requests

async function keys() {
  const data = await call("GET", "/console/api/keys");
  document.querySelector("#keys-table tbody").replaceChildren(
    ...data.keys.map((k) =>
      el("tr", { "data-key": k.label },
        el("td", {}, k.label),
        el("td", {}, fmt.int(k.requests)),
        el("td", {}, fmt.int(k.errors)),
        el("td", {}, fmt.int(k.rate_limited)),
        el("td", {}, `${fmt.int(k.input_tokens)} / ${fmt.int(k.output_tokens)}`),
        el("td", {}, fmt.num(k.credits)),
        el("td", {}, k.limits),
        el("td", {}, k.last_at_ms ? fmt.time(k.last_at_ms) : "-"),
      ),
    ),
  );
}

// Rows drawn at once: a 500-row table takes Chromium longer to lay out than the rest of the
// page to load; the pager walks the rest.
const PAGE = 100;
let requestsPage = 0;

async function requests() {
  const filter = document.getElementById("requests-filter").value.trim();
  const data = await call("GET", "/console/api/requests?q=" + encodeURIComponent(filter));
  document.querySelectorAll(".prompt").forEach((cell) => (cell.hidden = !data.bodies));
  const pages = Math.max(1, Math.ceil(data.requests.length / PAGE));
  requestsPage = Math.min(requestsPage, pages - 1);
  const shown = data.requests.slice(requestsPage * PAGE, (requestsPage + 1) * PAGE);
  document.getElementById("requests-page").textContent =
    `${data.requests.length ? requestsPage * PAGE + 1 : 0}–${requestsPage * PAGE + shown.length} of ${data.requests.length}`;
  document.getElementById("requests-newer").disabled = requestsPage === 0;
  document.getElementById("requests-older").disabled = requestsPage >= pages - 1;
  document.querySelector("#requests-table tbody").replaceChildren(
    ...shown.map((r) =>
      el("tr", { class: r.error ? "failed" : "" },
        el("td", {}, fmt.time(r.at_ms)),
        el("td", {}, r.key),
        el("td", {}, r.model),
        el("td", {}, r.account || "-"),
        el("td", {}, r.status + (r.error ? " " + r.error : "")),
        el("td", {}, r.attempts),
        el("td", {}, fmt.int(r.latency_ms) + " ms"),
        el("td", {}, `${fmt.int(r.input_tokens)} / ${fmt.int(r.output_tokens)}`),
        el("td", {}, fmt.num(r.credits)),
        el("td", {}, r.cache || "-"),
        data.bodies ? el("td", { class: "prompt" }, r.prompt || "") : null,
      ),
    ),
  );
}

// ---- tabs

const TABS = { overview, accounts, keys, requests };

function current() {
  const tab = window.location.hash.slice(1);
  return TABS[tab] ? tab : "overview";
}

async function refresh() {
  clearTimeout(timer);
  const tab = current();
  try {
    await TABS[tab]();
    if (document.body.dataset.loaded !== tab) {
      // Layout included: what the bench (benches/console/page_load.py) reads.
      void document.body.offsetHeight;
      document.body.dataset.drawnAt = String(Math.round(performance.now()));
    }
    document.body.dataset.loaded = tab;
  } catch (error) {
    notice(error.message, true);
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function show() {
  const tab = current();
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== tab;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.tab === tab);
  notice("");
  refresh();
}
