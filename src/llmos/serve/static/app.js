// The llmos web UI: chat (streamed over /v1/chat/completions), the model library, training runs.
// No framework and no build step. Model text is rendered with Markdown.render (DOM nodes only).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { messages: [], controller: null, busy: false };

// -- API access -----------------------------------------------------------------------------------
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem("llmos-api-key");
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function getJSON(path) {
  const r = await fetch(path, { headers: headers() });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || r.status + " " + r.statusText);
  return body;
}

function setStatus(text) { $("status").textContent = text; }

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- views ------------------------------------------------------------------------------------------
function show() {
  const view = (location.hash || "#chat").slice(1);
  for (const name of ["chat", "models", "runs"]) {
    $("view-" + name).hidden = name !== view;
    $("nav-" + name).classList.toggle("active", name === view);
  }
  if (view === "models") loadLibrary();
  if (view === "runs") loadRuns();
}

// -- chat -------------------------------------------------------------------------------------------
async function loadModels() {
  try {
    const list = await getJSON("/v1/models");
    const select = $("model-select");
    const previous = select.value;
    select.replaceChildren(...list.data.map((m) => { const o = el("option", "", m.id); o.value = m.id; return o; }));
    if (previous && list.data.some((m) => m.id === previous)) select.value = previous;
    setStatus(list.data.length ? "" : "No models: run `llmos pull smollm2:135m-instruct`.");
  } catch (e) {
    setStatus("Cannot list models: " + e.message);
  }
}

function addMessage(role, text, model) {
  const box = el("div", "msg " + role);
  const head = el("div", "who", role === "user" ? "You" : "Assistant");
  if (model) head.appendChild(el("span", "model-tag", model));
  const body = el("div", "body");
  box.append(head, body);
  $("messages").appendChild(box);
  setBody(box, role, text);
  return box;
}

function setBody(box, role, text) {
  const body = box.querySelector(".body");
  if (role === "assistant") body.replaceChildren(Markdown.render(text));
  else body.textContent = text;
  $("messages").scrollTop = $("messages").scrollHeight;
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
  $("stop").hidden = !busy;
}

function requestBody(model) {
  const messages = [];
  const system = $("system-prompt").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...state.messages);
  const body = { model, messages, stream: true, stream_options: { include_usage: true } };
  const t = parseFloat($("temperature").value);
  const p = parseFloat($("top-p").value);
  const n = parseInt($("max-tokens").value, 10);
  if (!Number.isNaN(t)) body.temperature = t;
  if (!Number.isNaN(p)) body.top_p = p;
  if (!Number.isNaN(n)) body.max_tokens = n;
  return body;
}

// Yields each parsed `data:` payload of a server-sent-event stream ("[DONE]" ends it).
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

async function send(text) {
  const model = $("model-select").value;
  if (!model) { setStatus("Pick a model first."); return; }
  state.messages.push({ role: "user", content: text });
  addMessage("user", text);
  const box = addMessage("assistant", "", model);
  box.classList.add("streaming");
  let reply = "";
  let pending = false;
  const redraw = () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; setBody(box, "assistant", reply); });
  };
  state.controller = new AbortController();
  setBusy(true);
  setStatus("Generating...");
  const started = performance.now();
  let tokens = 0;
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(requestBody(model)), signal: state.controller.signal,
    });
    if (!r.ok) {
      const err = await r.json().catch(() => ({}));
      throw new Error((err.error && err.error.message) || r.status + " " + r.statusText);
    }
    for await (const chunk of sseEvents(r)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.model) box.querySelector(".model-tag").textContent = chunk.model;
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) { reply += choice.delta.content; redraw(); }
      }
    }
    const seconds = (performance.now() - started) / 1000;
    setStatus(tokens ? `${tokens} tokens in ${seconds.toFixed(1)} s (${(tokens / seconds).toFixed(1)} tok/s)` : "");
  } catch (e) {
    if (e.name === "AbortError") {
      box.classList.add("stopped");
      setStatus("Stopped.");
    } else {
      box.classList.add("error");
      box.appendChild(el("div", "error-text", "Error: " + e.message));
      setStatus("");
    }
  } finally {
    box.classList.remove("streaming");
    setBody(box, "assistant", reply);
    if (reply) state.messages.push({ role: "assistant", content: reply });
    else state.messages.pop();  // keep the conversation well-formed: drop the unanswered turn
    state.controller = null;
    setBusy(false);
  }
}

// -- models page ------------------------------------------------------------------------------------
function formatSize(bytes) {
  if (!bytes) return "";
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (bytes >= 1000 && i < units.length - 1) { bytes /= 1000; i += 1; }
  return bytes.toFixed(i ? 1 : 0) + " " + units[i];
}

async function loadLibrary() {
  const tbody = $("models-table").querySelector("tbody");
  try {
    const data = await getJSON("/api/models");
    const served = new Set(data.served.map((m) => m.name));
    const loaded = new Set(data.served.filter((m) => m.loaded).map((m) => m.name));
    const rows = data.library.map((m) => {
      const tr = el("tr");
      const source = (m.lineage && m.lineage.source) || {};
      const lineage = [source.kind, source.file || source.path, m.lineage && m.lineage.base_model]
        .filter(Boolean).join(" · ");
      const evals = Object.entries(m.evals || {}).map(([k, v]) => `${k}: ${typeof v === "number" ? v.toFixed(3) : JSON.stringify(v)}`).join(", ");
      const status = loaded.has(m.name) ? "loaded" : served.has(m.name) ? "yes" : "";
      for (const value of [m.name, status, formatSize(m.size_bytes), m.architecture, m.quantization, m.context_length, lineage, evals]) {
        tr.appendChild(el("td", "", value === undefined || value === null ? "" : String(value)));
      }
      return tr;
    });
    // Served models that are not library entries (given by path with an alias).
    for (const m of data.served) {
      if (data.library.some((l) => l.name === m.name)) continue;
      const tr = el("tr");
      [m.name, m.loaded ? "loaded" : "yes", "", "", "", "", "(path given to llmos serve)", ""].forEach((v) => tr.appendChild(el("td", "", v)));
      rows.push(tr);
    }
    tbody.replaceChildren(...rows);
  } catch (e) {
    tbody.replaceChildren(el("tr", "", "Cannot load the library: " + e.message));
  }
}

// -- runs page --------------------------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";

function lossChart(curves) {
  const width = 520, height = 200, pad = 36;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  const series = Object.entries(curves).filter(([, pts]) => pts.length);
  const all = series.flatMap(([, pts]) => pts);
  if (!all.length) return el("p", "hint", "No loss recorded yet.");
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + ((x - x0) / ((x1 - x0) || 1)) * (width - 2 * pad);
  const sy = (y) => height - pad + -((y - y0) / ((y1 - y0) || 1)) * (height - 2 * pad);
  const colors = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c"];
  series.forEach(([key, pts], k) => {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colors[k % colors.length]);
    line.setAttribute("stroke-width", "1.5");
    svg.appendChild(line);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("x", String(width - pad));
    label.setAttribute("y", String(14 + 14 * k));
    label.setAttribute("text-anchor", "end");
    label.setAttribute("fill", colors[k % colors.length]);
    label.textContent = `${key} (last ${pts[pts.length - 1][1].toFixed(3)})`;
    svg.appendChild(label);
  });
  for (const [text, x, y] of [[y1.toFixed(2), 2, pad], [y0.toFixed(2), 2, height - pad], [`step ${x1}`, width - pad, height - 8]]) {
    const t = document.createElementNS(SVG, "text");
    t.setAttribute("x", String(x));
    t.setAttribute("y", String(y));
    t.setAttribute("class", "axis");
    if (x > pad) t.setAttribute("text-anchor", "end");
    t.textContent = text;
    svg.appendChild(t);
  }
  return svg;
}

async function loadRuns() {
  const list = $("runs-list");
  try {
    const data = await getJSON("/api/runs");
    if (!data.runs.length) {
      list.replaceChildren(el("p", "hint", "No training runs yet (they appear here once `llmos train` has run)."));
      return;
    }
    list.replaceChildren(...data.runs.slice().reverse().map((run) => {
      const card = el("div", "run");
      card.appendChild(el("h3", "", `${run.name} — ${run.kind}, ${run.status}`));
      card.appendChild(el("p", "hint", `${run.id} · started ${new Date(run.created * 1000).toLocaleString()}`));
      card.appendChild(lossChart(run.curves || {}));
      return card;
    }));
  } catch (e) {
    list.replaceChildren(el("p", "error-text", "Cannot load runs: " + e.message));
  }
}

// -- wiring -----------------------------------------------------------------------------------------
function init() {
  const key = $("api-key");
  key.value = localStorage.getItem("llmos-api-key") || "";
  key.addEventListener("change", () => {
    localStorage.setItem("llmos-api-key", key.value.trim());
    loadModels();
  });
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || state.busy) return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => { if (state.controller) state.controller.abort(); });
  $("new-chat").addEventListener("click", () => {
    if (state.controller) state.controller.abort();
    state.messages = [];
    $("messages").replaceChildren();
    setStatus("");
  });
  window.addEventListener("hashchange", show);
  show();
  loadModels();
}

init();
