// chat.js: one conversation with a model the network serves (the default
// one unless the user picks another from /v1/models). Answers stream in by
// server-sent events; each one gets a badge that follows its receipt from
// "verified · awaiting checkpoint" to "checked in your browser" (or to
// "check failed") and opens the receipt.

import { checkReceipt } from "./verinfer.js";
import { el, receiptView, finalityText } from "./receipt.js";

const MODEL = "smollm2-135m";
const picker = document.getElementById("model");
// `?max_tokens=N` shortens answers (tests use it); the default suits chat.
const MAX_TOKENS = Math.min(Number(new URLSearchParams(location.search).get("max_tokens")) || 256, 4096);
const KEY_STORE = "verinfer.apiKey";
// Messages sent with each question: the last exchanges and the question
// (a small model's context is short, and the gateway refuses long prompts).
const CONTEXT_MESSAGES = 9;

const $ = (id) => document.getElementById(id);
const log = $("log");
const form = $("composer");
const prompt = $("prompt");
const send = $("send");
const notice = $("notice");
const dialog = $("receipt-dialog");
const keyDialog = $("key-dialog");

/** The conversation so far, as the API takes it (rejected answers left out). */
const history = [];
let demoKey;

/** The key to send: the one the user entered, else the devnet's demo key. */
async function apiKey() {
  const mine = localStorage.getItem(KEY_STORE);
  if (mine) return mine;
  if (demoKey === undefined) {
    const r = await fetch("/v1/devnet").catch(() => null);
    demoKey = r && r.ok ? (await r.json()).api_key : null;
  }
  return demoKey;
}

function say(text) {
  notice.textContent = text;
}

// ---- Sending and streaming -------------------------------------------------

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = prompt.value.trim();
  if (text && !send.disabled) ask(text);
});
prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    form.requestSubmit();
  }
});

async function ask(text) {
  const key = await apiKey();
  if (!key) {
    say("No API key: enter one to chat.");
    openKeyDialog();
    return;
  }
  prompt.value = "";
  send.disabled = true;
  log.append(el("li", { class: "msg user" }, el("span", { class: "who" }, "You"), text));
  history.push({ role: "user", content: text });
  const entry = newAnswer();
  say("Answering…");
  try {
    await stream(key, entry);
  } catch (err) {
    history.pop();
    entry.li.classList.add("error");
    entry.body.textContent = err.message;
    entry.badge.remove();
    say(`The request failed: ${err.message}`);
    if (err.status === 401) openKeyDialog();
  } finally {
    send.disabled = false;
    if (!keyDialog.open) prompt.focus();
  }
}

/** An answer's list item, text and badge, and the state the badge opens. */
function newAnswer() {
  const body = el("span", { class: "answer" });
  const badge = el("button", { type: "button", class: "badge streaming", disabled: true, "aria-haspopup": "dialog" }, "answering…");
  const li = el("li", { class: "msg assistant", "data-chunks": "0" }, el("span", { class: "who" }, "verinfer"), body, el("div", { class: "meta" }, badge));
  log.append(li);
  li.scrollIntoView({ block: "end" });
  const entry = { li, body, badge, info: null, bundle: null, report: null };
  badge.addEventListener("click", () => openReceipt(entry));
  return entry;
}

/** Posts the conversation with `stream: true` and renders the events as they come. */
async function stream(key, entry) {
  const resp = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${key}` },
    // `history` alternates user and assistant and ends with the question, so
    // an odd count from the end starts with a user message.
    body: JSON.stringify({ model: picker.value || MODEL, messages: history.slice(-CONTEXT_MESSAGES), max_tokens: MAX_TOKENS, stream: true }),
  });
  if (!resp.ok) {
    const body = await resp.json().catch(() => null);
    const err = new Error((body && body.error && body.error.message) || `HTTP ${resp.status}`);
    err.status = resp.status;
    throw err;
  }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let text = "";
  let chunks = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the stream ended before the answer was complete");
    buf += value;
    // Events are separated by a blank line; each has `data:` lines.
    let cut;
    while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
      const data = block
        .split(/\r?\n/)
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(5).replace(/^ /, ""))
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return finish(entry, text);
      const ev = JSON.parse(data);
      if (ev.error) throw new Error(ev.error.message);
      const v = ev.verinfer;
      if (v && v.retracted) {
        // The text so far was withdrawn (its node was caught); the answer restarts.
        text = "";
        entry.body.textContent = "";
        entry.body.before(el("p", { class: "withdrawn" }, `An answer was withdrawn: the verifiers rejected it (${v.reason || "no reason given"}). Asking another node…`));
        continue;
      }
      const delta = ev.choices && ev.choices[0] && ev.choices[0].delta && ev.choices[0].delta.content;
      if (delta) {
        text += delta;
        entry.body.append(delta);
        entry.li.dataset.chunks = String(++chunks);
      }
      if (v) {
        entry.info = v;
        entry.model = ev.model;
      }
    }
  }
}

function finish(entry, text) {
  const v = entry.info;
  if (!v) throw new Error("the answer carried no verinfer status");
  // A rejected answer leaves the conversation with its question, so that
  // `history` keeps alternating question and answer.
  if (v.status !== "rejected") history.push({ role: "assistant", content: text });
  else history.pop();
  entry.li.dataset.status = v.status;
  if (v.receipt_id) entry.li.dataset.receipt = v.receipt_id;
  if (v.status === "rejected" || !v.receipt_id) {
    setBadge(entry, "rejected", `rejected: ${v.reason || "no quorum accepted the answer"}`);
    say("The answer was rejected by the verifiers.");
    return;
  }
  setBadge(entry, v.status === "verified" ? "verified" : "provisional", `${v.status} · awaiting checkpoint`);
  say(`Answer received: ${v.status}. Waiting for a cosigned checkpoint to check its receipt.`);
  follow(entry);
}

function setBadge(entry, kind, text) {
  entry.badge.className = `badge ${kind}`;
  entry.badge.disabled = false;
  entry.badge.textContent = text;
  entry.badge.setAttribute("aria-label", `${text}. Open the receipt`);
  entry.li.dataset.badge = kind;
  if (dialog.open && dialog.entry === entry) render(entry);
}

// ---- Following the receipt ---------------------------------------------------

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls the receipt until a cosigned checkpoint covers it, then checks it here. */
async function follow(entry) {
  const id = entry.info.receipt_id;
  const started = Date.now();
  for (let wait = 500; Date.now() - started < 600_000; wait = Math.min(wait * 1.5, 5000)) {
    const key = await apiKey();
    const r = await fetch(`/v1/receipts/${id}`, { headers: key ? { Authorization: `Bearer ${key}` } : {} }).catch(() => null);
    if (r && r.ok) {
      entry.bundle = await r.json();
      if (entry.bundle.checkpoint) break;
    }
    await sleep(wait);
  }
  if (!entry.bundle || !entry.bundle.checkpoint) {
    setBadge(entry, "pending", `${entry.info.status} · no checkpoint yet`);
    return;
  }
  try {
    entry.report = await checkReceipt(entry.bundle);
  } catch (e) {
    entry.report = { ok: false, error: e.message, checks: [], facts: {}, trust: {} };
  }
  if (entry.report.ok) {
    setBadge(entry, entry.report.status === "verified" ? "verified" : "provisional", `${entry.report.status} · checked in your browser`);
    say("The receipt was checked in your browser.");
    if (entry.bundle.finality) followFinality(entry);
  } else {
    setBadge(entry, "failed", `check failed: ${entry.report.error}`);
    say(`The receipt check failed: ${entry.report.error}`);
  }
}

const FINALITY_BADGE = { provisional: "provisional", final: "verified", overturned: "failed" };

/** Follows an optimistic answer until the ledger states it final or overturned (ten minutes at most). */
async function followFinality(entry) {
  const id = entry.info.receipt_id;
  const started = Date.now();
  for (;;) {
    const f = entry.bundle.finality;
    if (!f) return;
    entry.li.dataset.finality = f.state;
    setBadge(entry, FINALITY_BADGE[f.state] || "pending", `${f.state} · ${f.state === "overturned" ? "fee refunded" : "checked in your browser"}`);
    entry.badge.title = finalityText(f);
    if (f.state !== "provisional" || Date.now() - started > 600_000) {
      if (f.state !== "provisional") say(`The answer is ${f.state}.`);
      return;
    }
    await sleep(Math.min(Math.max(f.until_ms - Date.now() + 500, 1000), 5000));
    const key = await apiKey();
    const r = await fetch(`/v1/receipts/${id}`, { headers: key ? { Authorization: `Bearer ${key}` } : {} }).catch(() => null);
    if (r && r.ok) entry.bundle = await r.json();
  }
}

// ---- The receipt dialog --------------------------------------------------------

function render(entry) {
  const body = $("receipt-body");
  const v = entry.info;
  const waiting = v.status === "rejected" ? `Rejected: ${v.reason || "no quorum accepted the answer"}. No receipt was written and the account was not charged.` : undefined;
  body.replaceChildren(receiptView({ bundle: entry.bundle, report: entry.report, info: v, modelName: entry.model || MODEL, waiting }));
}

function openReceipt(entry) {
  if (!entry.info) return;
  dialog.entry = entry;
  dialog.opener = entry.badge;
  render(entry);
  dialog.showModal();
}

function openKeyDialog() {
  keyDialog.opener = document.activeElement;
  $("key-input").value = localStorage.getItem(KEY_STORE) || "";
  // Only a devnet has a demo key to go back to.
  $("key-demo").hidden = demoKey === null;
  keyDialog.showModal();
}

for (const d of [dialog, keyDialog]) {
  // Focus goes back to what opened the dialog; a click on the backdrop closes it.
  // Blur first: when Chromium itself restores focus to a text box on close,
  // the box looks focused but takes no typing until focused anew.
  d.addEventListener("close", () => {
    const o = d.opener;
    if (!o) return;
    o.blur();
    o.focus();
  });
  d.addEventListener("click", (e) => e.target === d && d.close());
}
dialog.querySelector("[data-close]").addEventListener("click", () => dialog.close());
$("key-button").addEventListener("click", openKeyDialog);
keyDialog.addEventListener("close", () => {
  const what = keyDialog.returnValue;
  const key = $("key-input").value.trim();
  if (what === "save" && key) {
    localStorage.setItem(KEY_STORE, key);
    say("Using your API key.");
  } else if (what === "demo" || (what === "save" && !key)) {
    localStorage.removeItem(KEY_STORE);
    say("Using the devnet's demo key.");
  }
});

// ---- Models ------------------------------------------------------------------

/** Offers every model the gateway lists, the default one first selected. */
async function listModels() {
  const r = await fetch("/v1/models").catch(() => null);
  const names = r && r.ok ? ((await r.json()).data || []).map((m) => m.id) : [];
  if (!names.length) return;
  picker.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  picker.value = names.includes(MODEL) ? MODEL : names[0];
}
listModels();
