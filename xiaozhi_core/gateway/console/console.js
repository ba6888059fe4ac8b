// xiaozhi console: reads the operator API (/api/v1/, docs/api.md). No framework, no build.
// Every string from the server goes into the page as text (textContent), never as HTML.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "xiaozhi-admin-token";
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

let timer = null;          // the current view's refresh
let turnsBefore = null;    // paging of the device view
let currentDevice = null;

// ------------------------------------------------------------------ helpers
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

function ago(iso) {
  if (!iso) return "";
  const t = typeof iso === "number" ? iso * 1000 : Date.parse(iso);
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function ms(v) { return v === null || v === undefined ? "–" : Math.round(v) + " ms"; }

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

class AuthError extends Error {}

async function api(path, options) {
  const opts = Object.assign({ headers: {} }, options || {});
  opts.headers = Object.assign({ "Authorization": "Bearer " + token() }, opts.headers);
  if (opts.json !== undefined) {
    opts.body = JSON.stringify(opts.json);
    opts.headers["Content-Type"] = "application/json";
    delete opts.json;
  }
  const res = await fetch(API + path, opts);
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (res.status === 401) throw new AuthError((body && body.error) || "unauthorized");
  if (!res.ok && !(res.status === 422 && body && body.errors)) {
    throw new Error((body && body.error) || ("HTTP " + res.status));
  }
  return body;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function failed(err) {
  if (err instanceof AuthError) { showLogin(err.message); return; }
  showError(err.message || String(err));
}

// ------------------------------------------------------------------ login
function showLogin(message) {
  stopTimer();
  sessionStorage.removeItem(TOKEN_KEY);
  for (const s of document.querySelectorAll("main > section")) s.hidden = true;
  $("bar").hidden = true;
  showError("");
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").value = "";
  $("token").focus();
}

async function login(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  try {
    await api("/sessions");
  } catch (err) {
    if (err instanceof AuthError) { showLogin(err.message); return; }
    $("login-error").textContent = err.message;
    return;
  }
  $("login").hidden = true;
  if (!location.hash || location.hash === "#/login") location.hash = "#/sessions";
  else route();
}

// ------------------------------------------------------------------ routing
function stopTimer() { if (timer) { clearInterval(timer); timer = null; } }

function every(seconds, fn) {
  stopTimer();
  fn();
  timer = setInterval(fn, seconds * 1000);
}

function show(view) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "view-" + view;
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.view === view ||
                                 (view === "device" && a.dataset.view === "devices"));
  }
  $("bar").hidden = false;
  showError("");
}

function route() {
  if (!token()) { showLogin(""); return; }
  const hash = location.hash.replace(/^#\/?/, "");
  const [view, ...rest] = hash.split("/");
  if (view === "devices" && rest.length) {
    show("device");
    stopTimer();
    openDevice(decodeURIComponent(rest.join("/")));
  } else if (view === "devices") {
    show("devices");
    every(10, loadDevices);
  } else if (view === "charts") {
    show("charts");
    every(10, loadCharts);
  } else {
    show("sessions");
    every(2, loadSessions);
  }
}

// ------------------------------------------------------------------ live sessions
async function loadSessions() {
  let data;
  try { data = await api("/sessions"); } catch (err) { failed(err); return; }
  $("status").textContent = "updated " + new Date().toLocaleTimeString();
  $("sessions-count").textContent = String(data.count);
  $("sessions-empty").hidden = data.count > 0;
  const rows = data.sessions.map((s) => {
    const turn = s.turn ? `#${s.turn.id} ${s.turn.kind}, ${ms(s.turn.elapsed_ms)}` :
      (s.last_turn ? `last #${s.last_turn.turn}: TTFA ${ms(s.last_turn.first_frame_sent_ms)}` : "");
    return el("tr", { "data-session": s.session_id },
      el("td", {}, el("a", { href: "#/devices/" + encodeURIComponent(s.device_id),
                             text: s.device_id })),
      el("td", { text: s.profile || "default" }),
      el("td", {}, el("span", { class: "state state-" + s.state, text: s.state })),
      el("td", { text: turn }),
      el("td", { text: `${s.transport} v${s.protocol_version}` }),
      el("td", { class: "num", text: `${ms(s.lane.lag_ms)} / ${ms(s.lane.lag_max_ms)}` }),
      el("td", { class: "num", text: `${s.lane.frames_in} / ${s.lane.frames_lost}` }),
      el("td", { text: ago(s.connected_at) }));
  });
  $("sessions-body").replaceChildren(...rows);
}

// ------------------------------------------------------------------ devices
async function loadDevices() {
  let data;
  try { data = await api("/devices"); } catch (err) { failed(err); return; }
  $("status").textContent = "updated " + new Date().toLocaleTimeString();
  $("devices-count").textContent = String(data.count);
  $("devices-empty").hidden = data.count > 0;
  const rows = data.devices.map((d) => el("tr", { "data-device": d.device_id },
    el("td", {}, el("a", { href: "#/devices/" + encodeURIComponent(d.device_id),
                           text: d.device_id })),
    el("td", {}, d.online ? el("span", { class: "online", text: "online" }) : ""),
    el("td", { title: d.last_seen, text: ago(d.last_seen) }),
    el("td", { text: d.board || "" }),
    el("td", { text: d.firmware || "" }),
    el("td", { text: d.profile || "default" })));
  $("devices-body").replaceChildren(...rows);
}

async function openDevice(id) {
  currentDevice = id;
  turnsBefore = null;
  $("device-title").textContent = id;
  $("device-facts").replaceChildren();
  $("turns").replaceChildren();
  $("profile-msg").textContent = "";
  let data, profiles;
  try {
    [data, profiles] = await Promise.all([api("/devices/" + encodeURIComponent(id)),
                                          api("/profiles")]);
  } catch (err) { failed(err); return; }
  const d = data.device;
  $("device-online").textContent = data.online.length ? "online" : "offline";
  const facts = [["Client id", d.client_id], ["Board", d.board], ["Firmware", d.firmware],
                 ["First seen", d.first_seen], ["Last seen", `${ago(d.last_seen)} (${d.last_seen})`],
                 ["Sessions", data.sessions.map((s) =>
                   `${s.started.slice(0, 19).replace("T", " ")} ${s.transport || ""}` +
                   (s.close_reason ? ` (${s.close_reason})` : "")).slice(0, 3).join("; ")]];
  $("device-facts").replaceChildren(...facts.flatMap(([k, v]) =>
    [el("dt", { text: k }), el("dd", { text: v || "–" })]));
  const select = $("profile-select");
  const names = profiles.profiles.slice();
  if (d.profile && !names.includes(d.profile)) names.push(d.profile);
  select.replaceChildren(el("option", { value: "", text: "(default)" }),
    ...names.map((n) => el("option", { value: n, text: n })));
  select.value = d.profile || "";
  await loadTurns(false);
}

async function saveProfile(event) {
  event.preventDefault();
  const value = $("profile-select").value;
  $("profile-msg").textContent = "saving…";
  try {
    const data = await api("/devices/" + encodeURIComponent(currentDevice),
                           { method: "PUT", json: { profile: value || null } });
    $("profile-msg").textContent = "Saved: " + (data.device.profile || "default") +
      " (new turns use it)";
  } catch (err) {
    $("profile-msg").textContent = "";
    failed(err);
  }
}

function latencyBar(lat) {
  const t = (k) => (lat && typeof lat[k] === "number" ? lat[k] : null);
  const marks = [["asr", t("asr_final_ms")], ["llm", t("llm_first_token_ms")],
                 ["tts", t("tts_first_audio_ms")], ["send", t("first_frame_sent_ms")],
                 ["rest", t("total_ms")]];
  const total = t("total_ms") || t("first_frame_sent_ms");
  const bar = el("div", { class: "bar", title: "ASR | LLM | TTS | first frame | speaking" });
  if (!total) return bar;
  let prev = 0;
  for (const [name, v] of marks) {
    if (v === null) continue;
    const seg = el("i", { class: "seg-" + name, title: `${name}: ${Math.round(v - prev)} ms` });
    seg.style.width = (100 * Math.max(0, v - prev) / total).toFixed(2) + "%";
    bar.append(seg);
    prev = Math.max(prev, v);
  }
  return bar;
}

function turnCard(t) {
  const lat = t.latency || {};
  const meta = `#${t.turn_no} · ${t.kind} · ${t.outcome} · ${t.at.slice(0, 19).replace("T", " ")}` +
    (t.speaker ? ` · speaker ${t.speaker}` : "");
  return el("div", { class: "turn" + (t.outcome === "ok" ? "" : " failed"), "data-turn": t.id },
    el("div", { class: "meta", text: meta }),
    t.text ? el("p", { class: "said", text: t.text }) : null,
    t.reply ? el("p", { class: "reply", text: t.reply }) : null,
    t.error ? el("p", { class: "err", text: "Error: " + t.error }) : null,
    el("div", { class: "lat" },
      el("span", {}, el("i", { class: "sw seg-asr" }), "ASR ",
         el("b", { text: ms(lat.asr_final_ms) })),
      el("span", {}, el("i", { class: "sw seg-llm" }), "LLM first token ",
         el("b", { text: ms(lat.llm_first_token_ms) })),
      el("span", {}, el("i", { class: "sw seg-tts" }), "TTS first audio ",
         el("b", { text: ms(lat.tts_first_audio_ms) })),
      el("span", {}, el("i", { class: "sw seg-send" }), "TTFA ",
         el("b", { text: ms(lat.first_frame_sent_ms) })),
      el("span", {}, el("i", { class: "sw seg-rest" }), "total ",
         el("b", { text: ms(lat.total_ms) }))),
    latencyBar(lat));
}

async function loadTurns(more) {
  const q = "?limit=20" + (more && turnsBefore ? "&before=" + turnsBefore : "");
  let data;
  try {
    data = await api("/devices/" + encodeURIComponent(currentDevice) + "/turns" + q);
  } catch (err) { failed(err); return; }
  const cards = data.turns.map(turnCard);
  if (more) $("turns").append(...cards); else $("turns").replaceChildren(...cards);
  if (!more && !cards.length) $("turns").append(el("p", { class: "muted", text: "No turns yet." }));
  turnsBefore = data.next_before;
  $("turns-more").hidden = !turnsBefore;
}

// ------------------------------------------------------------------ charts
function chart(box, points, series, span) {
  const W = 520, H = 180, L = 44, R = 8, T = 8, B = 20;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img" });
  const now = Date.now() / 1000;
  const x = (t) => L + (W - L - R) * (1 - Math.min(span, Math.max(0, now - t)) / span);
  let max = 0;
  for (const p of points) for (const [k] of series) if (p[k] !== null && p[k] > max) max = p[k];
  max = max > 0 ? max * 1.1 : 1;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
              svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  const label = (text, attrs) => { const n = svg("text", attrs); n.textContent = text; return n; };
  root.append(label(max >= 10 ? Math.round(max) : max.toFixed(1), { x: L - 4, y: T + 8, "text-anchor": "end" }),
              label("0", { x: L - 4, y: H - B, "text-anchor": "end" }),
              label("-60 min", { x: L, y: H - 4 }), label("-30 min", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }),
              label("now", { x: W - R, y: H - 4, "text-anchor": "end" }));
  let drawn = 0;
  series.forEach(([key, name], i) => {
    let run = [];
    const flush = () => {
      if (run.length) root.append(svg("polyline", { class: "l" + i, points: run.join(" ") }));
      run = [];
    };
    for (const p of points) {
      if (p[key] === null || p[key] === undefined) { flush(); continue; }
      const px = x(p.t).toFixed(1), py = y(p[key]).toFixed(1);
      run.push(`${px},${py}`);
      if (points.length <= 60) root.append(svg("circle", { class: "d" + i, cx: px, cy: py, r: 2.5 }));
      drawn++;
    }
    flush();
    root.append(label(name, { class: "k" + i, x: W - R - 4, y: T + 10 + 12 * i, "text-anchor": "end" }));
  });
  if (!drawn) root.append(label("no data in the last hour", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }));
  box.replaceChildren(root);
}

async function loadCharts() {
  let data;
  try { data = await api("/stats"); } catch (err) { failed(err); return; }
  $("status").textContent = "updated " + new Date().toLocaleTimeString();
  const points = data.samples.concat([data.current]);
  const span = data.span_s;
  chart($("chart-ttfa"), points, [["ttfa_p50_ms", "p50"], ["ttfa_max_ms", "max"]], span);
  chart($("chart-lane"), points, [["lane_lag_mean_ms", "mean"], ["lane_lag_max_ms", "max"]], span);
  chart($("chart-loop"), points, [["loop_lag_p99_ms", "p99"], ["loop_lag_max_ms", "max"]], span);
  chart($("chart-sessions"), points, [["sessions", "sessions"]], span);
}

// ------------------------------------------------------------------ reload
async function reloadConfig() {
  try {
    const data = await api("/reload", { method: "POST" });
    if (data.applied) {
      showError("");
      $("status").textContent = "configuration reloaded";
      $("status").title = (data.messages || []).join("\n");
    }
    else showError("Reload refused: " + data.errors.join("; "));
  } catch (err) { failed(err); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", () => { location.hash = "#/login"; showLogin(""); });
  $("reload").addEventListener("click", reloadConfig);
  $("profile-form").addEventListener("submit", saveProfile);
  $("turns-more").addEventListener("click", () => loadTurns(true));
  window.addEventListener("hashchange", () => { if (token()) route(); });
  route();
});
