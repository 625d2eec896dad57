// proxytool's chat page: the base alone and the proxy-tuned model answer side by side, streamed.
// Each proxy token is coloured by log p_proxy(token) - log p_base(token) at its position (from the
// server's proxy_trace field); hovering shows both models' top candidates. No build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, histories: { base: [], proxy: [] }, busy: false };

function alpha() { return parseFloat($("alpha").value); }

function showAlpha() {
  const text = alpha().toFixed(1);
  $("alpha-value").textContent = text;
  $("alpha-label").textContent = text;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
    state.model = body.data[0].id;
    $("model").textContent = state.model;
  } catch (err) {
    $("status").textContent = "cannot list models: " + err.message;
  }
}

function turn(log, text) {
  const div = document.createElement("div");
  div.className = "turn";
  const user = document.createElement("div");
  user.className = "user";
  user.textContent = text;
  const reply = document.createElement("div");
  reply.className = "reply";
  reply.dataset.done = "false";
  div.append(user, reply);
  log.append(div);
  log.scrollTop = log.scrollHeight;
  return reply;
}

function colour(delta) {
  const strength = Math.min(Math.abs(delta) / 3, 1) * 0.6;
  if (strength < 0.03) return "";
  return delta > 0 ? `rgba(22, 163, 74, ${strength})` : `rgba(220, 38, 38, ${strength})`;
}

// A span of text and the tokens that produced it (several when a character spans byte tokens, or
// when text was held back until a possible stop string was ruled out): its change is the sum of theirs.
function addToken(reply, text, traces, coloured) {
  if (!text) return;
  const span = document.createElement("span");
  span.textContent = text;
  if (traces.length) {
    span.className = "token";
    span.dataset.trace = JSON.stringify(traces);
    const delta = traces.reduce((sum, t) => sum + t.logprob - t.base_logprob, 0);
    span.dataset.delta = delta.toFixed(3);
    if (coloured) span.style.background = colour(delta);
  }
  reply.append(span);
}

// Read an SSE response: yields each parsed `data:` payload until [DONE].
async function* events(response) {
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

async function answer(which, reply, a) {
  const history = state.histories[which];
  reply.dataset.alpha = String(a);
  const body = {
    model: state.model,
    messages: history,
    stream: true,
    max_tokens: parseInt($("max-tokens").value, 10) || 64,
    temperature: parseFloat($("temperature").value) || 0,
    seed: 0,
    alpha: a,
    proxy_trace: true,
  };
  let text = "";
  let tokens = 0;
  let pending = [];
  try {
    const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    if (!response.ok) {
      const err = await response.json().catch(() => ({}));
      throw new Error(err.error ? err.error.message : response.statusText);
    }
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const piece = (choice.delta && choice.delta.content) || "";
      if (choice.proxy_trace) {
        pending = pending.concat(choice.proxy_trace);
        tokens += choice.proxy_trace.length;
      }
      if (piece) {
        addToken(reply, piece, pending, which === "proxy");
        pending = [];
      }
      text += piece;
      if (choice.finish_reason) reply.dataset.finish = choice.finish_reason;
      reply.parentElement.parentElement.scrollTop = reply.parentElement.parentElement.scrollHeight;
    }
  } catch (err) {
    const span = document.createElement("span");
    span.className = "error";
    span.textContent = " [" + err.message + "]";
    reply.append(span);
  }
  reply.dataset.tokens = String(tokens);
  reply.dataset.done = "true";
  history.push({ role: "assistant", content: text });
  return tokens;
}

async function send(event) {
  event.preventDefault();
  const text = $("message").value.trim();
  if (!text || state.busy) return;
  if (!state.model) await loadModel();
  state.busy = true;
  $("send").disabled = true;
  $("message").value = "";
  const a = alpha();
  const started = performance.now();
  $("status").textContent = "streaming…";
  const runs = ["base", "proxy"].map((which) => {
    state.histories[which].push({ role: "user", content: text });
    return answer(which, turn($(which + "-log"), text), which === "base" ? 0 : a);
  });
  const counts = await Promise.all(runs);
  const seconds = (performance.now() - started) / 1000;
  $("status").textContent = `done: ${counts[0]} + ${counts[1]} tokens in ${seconds.toFixed(1)} s (α = ${a.toFixed(1)})`;
  state.busy = false;
  $("send").disabled = false;
}

function percent(logprob) { return (100 * Math.exp(logprob)).toFixed(1) + "%"; }

function showTooltip(event) {
  const span = event.target.closest(".token");
  const tip = $("tooltip");
  if (!span) { tip.hidden = true; return; }
  tip.innerHTML = JSON.parse(span.dataset.trace).map(table).join("");
  tip.hidden = false;
  const x = Math.min(event.clientX + 12, window.innerWidth - tip.offsetWidth - 8);
  const y = event.clientY + 16 + tip.offsetHeight > window.innerHeight ? event.clientY - tip.offsetHeight - 8 : event.clientY + 16;
  tip.style.left = x + "px";
  tip.style.top = y + "px";
}

// One token: its probability under the base alone and the proxy, and both models' top candidates.
function table(t) {
  const rows = [];
  const n = Math.max(t.top.length, t.base_top.length);
  const cell = (pair) => {
    if (!pair) return "<td></td><td></td>";
    const chosen = pair[0] === t.token ? "chosen" : "";
    return `<td class="${chosen}">${escape(JSON.stringify(pair[0]))}</td><td>${percent(pair[1])}</td>`;
  };
  for (let i = 0; i < n; i++) rows.push(`<tr>${cell(t.top[i])}${cell(t.base_top[i])}</tr>`);
  const head = `<b>${escape(JSON.stringify(t.token))}</b>: base ${percent(t.base_logprob)} → proxy ${percent(t.logprob)}`;
  return `<div>${head}</div><table><tr><th>proxy top</th><th></th><th>base top</th><th></th></tr>${rows.join("")}</table>`;
}

function escape(s) {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

function reset() {
  state.histories = { base: [], proxy: [] };
  $("base-log").textContent = "";
  $("proxy-log").textContent = "";
  $("status").textContent = "conversation reset";
}

$("alpha").addEventListener("input", showAlpha);
$("send-form").addEventListener("submit", send);
$("message").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) send(e);
});
$("reset").addEventListener("click", reset);
document.addEventListener("mouseover", showTooltip);
$("api-key").addEventListener("change", loadModel);
showAlpha();
loadModel();
