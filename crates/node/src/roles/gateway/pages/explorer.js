// explorer.js: the explorer, one page that routes on location.pathname.
// Every view renders its shell at once and fills in data as it arrives from
// the gateway's public JSON API (/v1/explorer/..., /v1/receipts/...).

import { checkReceipt, checkEvidence, pinTrust } from "./verinfer.js";
import { el, short, amount, ago, when, facts, table, receiptView, finalityText } from "./receipt.js";

const view = document.getElementById("view");
const title = document.getElementById("title");
const main = document.getElementById("main");
const KEY_STORE = "verinfer.apiKey";

/** Fetches JSON, turning an API error body into an Error with its message. */
async function getJSON(path, headers = {}) {
  const r = await fetch(path, { headers });
  const body = await r.json().catch(() => null);
  if (!r.ok) {
    const e = new Error((body && body.error && body.error.message) || `${path}: HTTP ${r.status}`);
    e.status = r.status;
    throw e;
  }
  return body;
}

let models = null;
/** Model names by id, from /v1/models (loaded once). */
async function modelNames() {
  if (!models) {
    models = getJSON("/v1/models")
      .then((m) => new Map(m.data.map((d) => [d.verinfer.model_id, d.id])))
      .catch(() => new Map());
  }
  return models;
}

// Each navigation bumps `generation`; async work of an older view checks
// `live()` and stops, so a slow response never paints over a newer page.
let generation = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A section that shows "Loading…", then what `fill` returns, or the error. */
function section(parent, heading, fill) {
  const box = el("section", {}, heading ? el("h2", {}, heading) : null, el("p", { class: "muted" }, "Loading…"));
  parent.append(box);
  const gen = generation;
  Promise.resolve()
    .then(fill)
    .then((node) => gen === generation && box.lastChild.replaceWith(node))
    .catch((e) => gen === generation && box.lastChild.replaceWith(el("p", { class: "result fail", role: "alert" }, e.message)));
  return box;
}

const link = (href, ...text) => el("a", { href }, ...text);
const receiptLink = (id) => link(`/explorer/receipt/${id}`, short(id, 16));

function recordRows(records, names) {
  return records.map((r) => [
    String(r.index),
    receiptLink(r.id),
    el("span", { title: when(r.time_ms) }, ago(r.time_ms)),
    names.get(r.model) || short(r.model),
    link(`/explorer/records?q=${r.node}`, short(r.node)),
    link(`/explorer/records?q=${r.requester}`, short(r.requester)),
    el("span", { title: `${r.fees.total} base units` }, amount(r.fees.total)),
    r.finality ? el("span", { "data-finality": r.finality.state, title: finalityText(r.finality) }, r.finality.state) : "settled",
  ]);
}
const RECORD_HEADS = ["#Index", "Receipt", "Time", "Model", "Node", "Paid by", "#Fee (tokens)", "Status"];

// ---- Views -------------------------------------------------------------------

async function overview() {
  const cards = el("div", { class: "cards" });
  view.append(el("p", { class: "hint" }, "Every answer the network verifies becomes a record in an append-only transparency log, cosigned by the verifiers. This is what the network has accumulated."), cards);
  const card = (label, fill) => {
    const value = el("span", { class: "big" }, "…");
    const sub = el("span", { class: "muted" });
    cards.append(el("div", { class: "card" }, el("span", { class: "muted" }, label), value, sub));
    const gen = generation;
    fill()
      .then(([v, s]) => gen === generation && (value.textContent = v, sub.textContent = s || ""))
      .catch((e) => gen === generation && (value.textContent = "?", sub.textContent = e.message));
  };
  const net = getJSON("/v1/explorer/network");
  card("Receipts in the log", async () => [String((await getJSON("/v1/explorer/records?limit=1")).size), "verified inferences"]);
  card("Latest final checkpoint", async () => {
    const c = (await getJSON("/v1/explorer/checkpoints?limit=1")).checkpoints[0];
    return c ? [`size ${c.size}`, `${ago(c.time_ms)}, ${c.cosigners.length} cosignatures`] : ["none yet", ""];
  });
  const live = (role) => async () => {
    const n = (await net).nodes.filter((x) => x.role === role);
    return [`${n.filter((x) => x.live).length} of ${n.length}`, "live now"];
  };
  card("Verifiers", live("verifier"));
  card("Inference nodes", live("inference"));
  card("Calls in the last hour", async () => {
    const m = (await net).minutes.slice(-60);
    const v = m.reduce((a, p) => a + p.verified + (p.provisional || 0), 0);
    const r = m.reduce((a, p) => a + p.rejected, 0);
    return [String(v + r), `${v} answered, ${r} rejected`];
  });
  card("Fees paid", async () => {
    const f = (await getJSON("/v1/explorer/settlement")).fees_paid;
    return [amount(f.total), `tokens, over ${f.receipts} receipts`];
  });
  section(view, "Latest records", async () => {
    const [page, names] = await Promise.all([getJSON("/v1/explorer/records?limit=10"), modelNames()]);
    if (!page.records.length) return el("p", {}, "No records yet: ", link("/", "ask something in the chat"), ".");
    return el("div", {}, table(null, RECORD_HEADS, recordRows(page.records, names)), el("p", {}, link("/explorer/records", "All records →")));
  });
}

async function records(_, params) {
  const q = (params.get("q") || "").trim().toLowerCase();
  const input = el("input", { id: "q", name: "q", value: q, autocomplete: "off", spellcheck: "false", "aria-describedby": "q-hint", placeholder: "64 hex digits" });
  view.append(
    el(
      "form",
      { role: "search", action: "/explorer/records", class: "card" },
      el("label", { for: "q" }, "Search by receipt id, account or node"),
      el("p", { class: "row" }, input, el("button", { type: "submit", class: "primary" }, "Search"), q ? link("/explorer/records", "Clear") : null),
      el("span", { id: "q-hint", class: "hint" }, "A receipt id shows that record; an account or node key shows the records it paid for or answered.")
    )
  );
  if (q && !/^[0-9a-f]{64}$/.test(q)) {
    view.append(el("p", { class: "result fail", role: "alert" }, "A receipt id or a key is 64 hexadecimal digits."));
    return;
  }
  const before = params.get("before");
  section(view, q ? "Matching records" : "Latest records", async () => {
    const qs = new URLSearchParams({ limit: "25" });
    if (q) qs.set("q", q);
    if (before) qs.set("before", before);
    const [page, names] = await Promise.all([getJSON(`/v1/explorer/records?${qs}`), modelNames()]);
    const nav = el("p", { class: "row" });
    if (before) nav.append(link(`/explorer/records${q ? `?q=${q}` : ""}`, "← Newest"));
    if (page.next_before !== null && page.next_before !== undefined) {
      const next = new URLSearchParams({ before: String(page.next_before) });
      if (q) next.set("q", q);
      nav.append(link(`/explorer/records?${next}`, "Older →"));
    }
    const note = el("p", { class: "muted" }, `${page.size} receipts in the log, latest first.`);
    if (!page.records.length) return el("div", {}, note, el("p", {}, q ? "No record matches." : "No records yet."), nav);
    return el("div", {}, note, table(null, RECORD_HEADS, recordRows(page.records, names)), nav);
  });
}

async function receipt(match) {
  const id = match[1];
  const gen = generation;
  const box = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  view.append(box);
  const key = localStorage.getItem(KEY_STORE);
  let useKey = null;
  const load = async () => {
    const headers = useKey ? { Authorization: `Bearer ${useKey}` } : {};
    const names = await modelNames();
    // Poll until a final checkpoint covers the receipt (a fresh one waits for the next).
    let bundle;
    for (let i = 0; gen === generation; i++) {
      try {
        bundle = await getJSON(`/v1/receipts/${id}`, headers);
      } catch (e) {
        if (e.status !== 404 || i > 60) throw e;
      }
      if (bundle && (bundle.checkpoint || i > 60)) break;
      if (bundle) box.replaceChildren(receiptView({ bundle, report: null, modelName: names.get(bundle.leaf.model) }));
      await sleep(2000);
    }
    if (gen !== generation) return;
    const report = bundle.checkpoint ? await checkReceipt(bundle) : null;
    const parts = [];
    const r = bundle.receipt;
    if (r) {
      const input = r.request.input;
      const asked = input.messages ? input.messages.map((m) => `${m.role}: ${m.content}`).join("\n") : input.prompt ?? `${input.tokens.length} prompt tokens`;
      parts.push(el("h2", {}, "Question and answer"), el("pre", { "aria-label": "Question" }, asked), el("pre", { "aria-label": "Answer" }, r.result.output_text));
    } else if (useKey) {
      parts.push(el("p", { class: "muted" }, "This API key's account did not pay for this answer, so its text stays closed."));
    } else {
      const opener = el("button", { type: "button" }, "Open the text with an API key");
      opener.addEventListener("click", async () => {
        useKey = key || (await getJSON("/v1/devnet").then((d) => d.api_key, () => null));
        if (!useKey) return opener.replaceWith(el("p", {}, "Enter your API key on the ", link("/", "chat page"), " first."));
        box.replaceChildren(el("p", { class: "muted" }, "Loading…"));
        load().catch(fail);
      });
      parts.push(el("p", { class: "muted" }, "Only the account that paid for this answer can open its text; the log holds salted commitments to it. ", opener));
    }
    box.replaceChildren(...parts, el("h2", {}, "Record and its check"), receiptView({ bundle, report, modelName: names.get(bundle.leaf.model) }));
  };
  const fail = (e) => gen === generation && box.replaceChildren(el("p", { class: "result fail", role: "alert" }, e.status === 404 ? `No receipt ${id} (yet).` : e.message));
  load().catch(fail);
}

async function checkpoints(_, params) {
  view.append(el("p", { class: "hint" }, "A checkpoint is the log's signed tree head (C2SP tlog-checkpoint). It is final once a quorum of witnesses, the network's verifiers, have checked it extends the previous one and cosigned it."));
  const before = params.get("before");
  section(view, null, async () => {
    const page = await getJSON(`/v1/explorer/checkpoints?limit=20${before ? `&before=${before}` : ""}`);
    const rows = page.checkpoints.map((c) => [
      String(c.size),
      el("span", { title: when(c.time_ms) }, ago(c.time_ms)),
      el("code", {}, c.root),
      el("span", {}, `${c.cosigners.length}: `, c.cosigners.join(", ")),
      el("details", {}, el("summary", {}, "note"), el("pre", {}, c.note)),
    ]);
    const nav = el("p", { class: "row" });
    if (before) nav.append(link("/explorer/checkpoints", "← Latest"));
    if (page.next_before !== null && page.next_before !== undefined) nav.append(link(`/explorer/checkpoints?before=${page.next_before}`, "Older →"));
    if (!rows.length) return el("p", {}, "No final checkpoint yet.");
    return el("div", {}, table(null, ["#Size", "Time", "Root", "Cosigned by", "Signed note"], rows), nav);
  });
}

async function settlement() {
  section(view, "Fees paid", async () => {
    const s = await getJSON("/v1/explorer/settlement");
    const f = s.fees_paid;
    const sum = s.summary;
    const slashes = s.slashes.length
      ? table(
          null,
          ["Height", "Time", "Accused", "Kind", "Why", "#Slashed (tokens)", "Committee", "Evidence"],
          s.slashes.map((x) => [
            String(x.height),
            el("span", { title: when(x.time_ms) }, ago(x.time_ms)),
            link(`/explorer/records?q=${x.accused}`, short(x.accused)),
            x.kind,
            (x.reasons && x.reasons[0]) || "",
            amount(x.amount),
            el("span", { title: x.committee.join("\n") }, `${x.committee.length} verifiers`),
            evidence(x.evidence),
          ])
        )
      : el("p", {}, "No slashes: no node or verifier has been proven to cheat.");
    return el(
      "div",
      {},
      facts([
        ["Receipts settled", String(f.receipts)],
        ["Total charged", `${amount(f.total)} tokens`],
        ["To inference nodes", `${amount(f.node)} tokens`],
        ["To verifiers", `${amount(f.verifiers)} tokens`],
        ["To the treasury", `${amount(f.treasury)} tokens`],
        ["To model publishers", `${amount(f.publishers)} tokens`],
      ]),
      el("h2", {}, "Models"),
      modelsTable(s.models || []),
      ...onChain(s.chain),
      el("h2", {}, "Slashes"),
      el("p", { class: "hint" }, "A node whose signed answer a dispute committee of verifiers contradicts loses stake; so does a verifier on the losing side. The evidence is the signed records."),
      slashes,
      el("h2", {}, "Supply"),
      facts(Object.entries(sum).map(([k, v]) => [k.replace(/_/g, " "), AMOUNTS.has(k) ? `${amount(v)} tokens` : String(v)]))
    );
  });
}

/** Each model's calls, fees and publisher (and the publisher's share). */
function modelsTable(list) {
  if (!list.length) return el("p", {}, "No model admitted.");
  const per = (m) => (m.per_tokens === 1 ? "token" : `${m.per_tokens} tokens`);
  return table(
    null,
    ["Model", "Publisher", "Price in / out", "#Calls", "#Fees (tokens)", "#To publisher (tokens)"],
    list.map((m) => [
      el("span", { title: m.id }, m.name + (m.delisted ? " (delisted)" : "")),
      m.publisher
        ? el("span", { title: `${m.publisher.licence}, ${m.publisher.architecture}, context ${m.publisher.context}` },
            link(`/explorer/records?q=${m.publisher.account}`, short(m.publisher.account)), ` ${m.publisher.share_bps / 100} %`)
        : "governance",
      `${amount(m.price_in)} / ${amount(m.price_out)} per ${per(m)}`,
      String(m.fees_paid.receipts),
      amount(m.fees_paid.total),
      amount(m.fees_paid.publishers),
    ])
  );
}

/** The chain's side, when value settles on one: its settlement transactions. */
function onChain(c) {
  if (!c) return [];
  const rows = c.transactions.map((t) => [
    String(t.block),
    el("span", { title: when(t.time_ms) }, ago(t.time_ms)),
    t.kind,
    t.kind === "checkpoint"
      ? `${t.old_size} → ${t.new_size} (${t.transfers} transfers)`
      : t.accused
        ? link(`/explorer/records?q=${t.accused}`, short(t.accused))
        : `${t.transfers} transfers`, // a held fee paid out
    String(t.gas_used),
    el("code", {}, t.tx),
  ]);
  return [
    el("h2", {}, "On chain"),
    el("p", { class: "hint" }, "Value settles on an EVM chain: each final checkpoint is one transaction with the netted fees of its receipts, signed by a quorum of verifiers; slashes are repeated there."),
    facts([
      ["Chain id", String(c.chain_id)],
      ["Contract", c.contract],
      ["Receipts settled on chain", c.settled_size === null ? "unknown (chain not answering)" : String(c.settled_size)],
    ]),
    rows.length ? table(null, ["#Block", "Time", "Kind", "What", "#Gas", "Transaction"], rows) : el("p", {}, "No settlement transaction yet."),
  ];
}

/** Supply totals that are amounts (the summary also has e.g. the ledger height). */
const AMOUNTS = new Set(["total_supply", "balances", "escrow", "stakes", "unbonding", "treasury"]);

/** A slash's evidence: checked in the browser, with the signed records to read. */
function evidence(ev) {
  const said = el("span", { class: "muted" }, "checking…");
  const box = el("details", {}, el("summary", {}, "evidence ", said), el("pre", {}, JSON.stringify(ev, null, 2)));
  checkEvidence(ev).then((r) => {
    said.replaceWith(el("span", { class: r.ok ? "live" : "dead", "data-evidence": r.ok ? "ok" : "fail" }, r.ok ? "✓ signatures hold" : "✗ does not hold"));
    box.insertBefore(el("p", {}, r.detail), box.lastChild);
  });
  return box;
}

// ---- Network: liveness and growth ---------------------------------------------

/** The minutes window shown, in minutes (kept across refreshes; null until the first data picks one). */
let windowMinutes = null;
const WINDOWS = [[60, "Last hour"], [180, "Last 3 hours"], [1440, "Last 24 hours"]];

/** The shortest window that holds every call of the last 24 hours. */
function defaultWindow(minutes) {
  const first = minutes.findIndex((p) => p.verified + (p.provisional || 0) + p.rejected > 0);
  const span = first < 0 ? 0 : minutes.length - first;
  return (WINDOWS.find(([m]) => span <= m) || WINDOWS[2])[0];
}

async function network() {
  const liveBox = el("section", {}, el("h2", {}, "Is the verification network live?"), el("p", { class: "muted" }, "Loading…"));
  const picker = el("div", { class: "row", role: "group", "aria-label": "Time window of the per-minute charts" });
  const growthBox = el("div", {}, el("p", { class: "muted" }, "Loading…"));
  view.append(liveBox, el("section", {}, el("h2", {}, "Do real calls grow?"), picker, growthBox));
  const press = () => {
    for (const x of picker.children) x.setAttribute("aria-pressed", String(Number(x.value) === windowMinutes));
  };
  for (const [m, label] of WINDOWS) {
    const b = el("button", { type: "button", value: String(m), "aria-pressed": "false" }, label);
    b.addEventListener("click", () => {
      windowMinutes = m;
      press();
      if (last) drawGrowth(growthBox, last);
    });
    picker.append(b);
  }
  let last = null;
  const gen = generation;
  const refresh = async (first) => {
    try {
      last = await getJSON("/v1/explorer/network");
      if (gen !== generation) return;
      if (windowMinutes === null) {
        windowMinutes = defaultWindow(last.minutes);
        press();
      }
      drawLive(liveBox, last);
      drawGrowth(growthBox, last);
    } catch (e) {
      if (first) liveBox.lastChild.replaceWith(el("p", { class: "result fail", role: "alert" }, e.message));
    }
  };
  // The page is loaded once the first data is drawn; then it refreshes
  // every 10 s while it is shown.
  await refresh(true);
  (async () => {
    while (gen === generation) {
      await sleep(10000);
      if (gen === generation) await refresh(false);
    }
  })();
}

function drawLive(box, n) {
  const verifiers = n.nodes.filter((x) => x.role === "verifier");
  const inference = n.nodes.filter((x) => x.role === "inference");
  const liveCell = (x) => (x.live ? el("span", { class: "live" }, "● live") : el("span", { class: "dead" }, "○ down"));
  const beat = (x) => el("span", { title: when(x.last_seen_ms) }, ago(x.last_seen_ms, n.now_ms));
  const count = (xs) => `${xs.filter((x) => x.live).length} of ${xs.length}`;
  const content = el(
    "div",
    { id: "liveness" },
    el("p", { class: "big" }, `${count(verifiers)} verifiers and ${count(inference)} inference nodes live`),
    el("p", { class: "hint" }, "Live: a heartbeat signed by the node reached the ledger recently. Verdicts, answers, rejected results and missed tasks (drawn for a task but no answer) count the last hour."),
    table(
      "Verifiers",
      ["Key", "Status", "Last heartbeat", "#Verdicts (1 h)", "#Missed (1 h)", "#Stake (tokens)", "Endpoint"],
      verifiers.map((x) => [short(x.key, 16), liveCell(x), beat(x), String(x.verdicts_1h), String(x.missed_1h), amount(x.stake), x.endpoint])
    ),
    table(
      "Inference nodes",
      ["Key", "Status", "Last heartbeat", "#Answers (1 h)", "#Rejected (1 h)", "#Stake (tokens)", "Endpoint"],
      inference.map((x) => [short(x.key, 16), liveCell(x), beat(x), String(x.answers_1h), String(x.rejections_1h || 0), amount(x.stake), x.endpoint])
    )
  );
  box.replaceChildren(box.firstChild, content);
}

function drawGrowth(box, n) {
  const minutes = n.minutes.slice(-windowMinutes);
  const span = windowMinutes === 60 ? "last hour" : windowMinutes === 180 ? "last 3 hours" : "last 24 hours";
  box.replaceChildren(
    callsChart("calls-minutes", `Calls per minute, ${span}`, minutes, "minute"),
    activeChart("active-minutes", `Active verifiers per minute, ${span}`, minutes),
    callsChart("calls-hours", "Calls per hour, last 30 days", n.hours, "hour"),
    activeChart("active-hours", "Active verifiers per hour, last 30 days", n.hours)
  );
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

/**
 * An inline SVG chart over points `pts` (each with `t`, ms). `series` is
 * [{key, cls, bar}]: bar series are stacked bars (one path of rectangles
 * each, so a chart of 1440 points stays a few elements), the others lines.
 */
function chart(pts, series, label) {
  const w = Math.max(280, Math.min(view.clientWidth || 640, 900));
  const h = 170;
  const pad = { l: 36, r: 8, t: 10, b: 22 };
  const bars = series.filter((s) => s.bar);
  const stack = (p) => bars.reduce((a, s) => a + (p[s.key] || 0), 0);
  const max = Math.max(1, ...pts.map(stack), ...pts.flatMap((p) => series.map((s) => p[s.key] || 0)));
  const top = niceCeil(max);
  const step = (w - pad.l - pad.r) / Math.max(pts.length, 1);
  const x = (i) => pad.l + (i + 0.5) * step;
  const y = (v) => h - pad.b - (v / top) * (h - pad.t - pad.b);
  const out = svg("svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img", "aria-label": label });
  for (const v of [0, top / 2, top].filter(Number.isInteger)) {
    out.append(svg("line", { class: "grid", x1: pad.l, x2: w - pad.r, y1: y(v), y2: y(v) }), svg("text", { x: pad.l - 4, y: y(v) + 4, "text-anchor": "end" }, String(v)));
  }
  if (pts.length) {
    const long = pts[pts.length - 1].t - pts[0].t > 2 * 86400000;
    const fmt = (t) => (long ? new Date(t).toLocaleDateString([], { month: "short", day: "numeric" }) : new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
    out.append(svg("text", { x: pad.l, y: h - 6 }, fmt(pts[0].t)), svg("text", { x: w - pad.r, y: h - 6, "text-anchor": "end" }, fmt(pts[pts.length - 1].t)));
  }
  const bw = Math.max(1, step * 0.8);
  const base = pts.map(() => 0);
  for (const s of bars) {
    let d = "";
    pts.forEach((p, i) => {
      const v = p[s.key] || 0;
      if (v > 0) d += `M${(x(i) - bw / 2).toFixed(1)},${y(base[i] + v).toFixed(1)}h${bw.toFixed(1)}V${y(base[i]).toFixed(1)}h${(-bw).toFixed(1)}Z`;
      base[i] += v;
    });
    out.append(svg("path", { class: s.cls, d, "data-series": s.key }));
  }
  for (const s of series.filter((s) => !s.bar)) {
    const d = pts.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p[s.key] || 0).toFixed(1)}`).join("");
    out.append(svg("path", { class: s.cls, d, "data-series": s.key }));
  }
  return out;
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * p).find((c) => c >= v);
}

function callsChart(id, label, pts, unit) {
  const sum = (k) => pts.reduce((a, p) => a + (p[k] || 0), 0);
  const [verified, provisional, rejected] = [sum("verified"), sum("provisional"), sum("rejected")];
  const total = verified + provisional + rejected;
  const peak = Math.max(0, ...pts.map((p) => p.verified + (p.provisional || 0) + p.rejected));
  // A call retried after a rejection is one call; the rejections on nodes are told apart.
  const onNodes = sum("node_rejections");
  const summary = `${total} calls: ${verified} verified, ${provisional ? `${provisional} provisional, ` : ""}${rejected} rejected; at most ${peak} in one ${unit}.${onNodes ? ` ${onNodes} results rejected on inference nodes.` : ""}`;
  return el(
    "figure",
    { class: "chart card", id, "data-total": String(total), "data-node-rejections": String(onNodes), "data-points": String(pts.length) },
    el("figcaption", {}, el("strong", {}, label)),
    chart(pts, [{ key: "verified", cls: "verified", bar: true }, { key: "provisional", cls: "provisional", bar: true }, { key: "rejected", cls: "rejected", bar: true }], `${label}. ${summary}`),
    el(
      "p",
      { class: "legend" },
      el("span", {}, el("span", { class: "swatch verified" }), "verified"),
      provisional ? el("span", {}, el("span", { class: "swatch provisional" }), "provisional") : null,
      el("span", {}, el("span", { class: "swatch rejected" }), "rejected"),
      el("span", {}, summary)
    )
  );
}

function activeChart(id, label, pts) {
  const peak = Math.max(0, ...pts.map((p) => p.active_verifiers));
  const now = pts.length ? pts[pts.length - 1].active_verifiers : 0;
  const summary = `${now} active in the latest point, at most ${peak}.`;
  return el(
    "figure",
    { class: "chart card", id, "data-peak": String(peak) },
    el("figcaption", {}, el("strong", {}, label)),
    chart(pts, [{ key: "active_verifiers", cls: "active" }], `${label}. ${summary}`),
    el("p", { class: "legend" }, el("span", {}, summary, " Active: verifiers the ledger heard from (a heartbeat or a verdict) in that interval."))
  );
}

// ---- Check a receipt in the browser ------------------------------------------

async function check() {
  const area = el("textarea", { id: "bundle", rows: "8", spellcheck: "false", "aria-describedby": "bundle-hint" });
  const file = el("input", { id: "file", type: "file", accept: "application/json,.json" });
  const logKey = el("input", { id: "log-key", autocomplete: "off", spellcheck: "false", placeholder: "origin+keyid+base64" });
  const wits = el("textarea", { id: "witness-keys", rows: "3", spellcheck: "false" });
  const quorum = el("input", { id: "quorum", type: "number", min: "0", inputmode: "numeric" });
  const out = el("div", { id: "check-result", "aria-live": "polite" });
  const form = el(
    "form",
    { class: "card" },
    el("label", { for: "bundle" }, "Receipt JSON"),
    el("p", { id: "bundle-hint", class: "hint" }, "Paste what GET /v1/receipts/{id} serves (the chat's receipts have a download link), or load a file."),
    area,
    el("p", {}, el("label", { for: "file" }, "Or load a file: "), file),
    el(
      "details",
      {},
      el("summary", {}, "Pin the keys you trust (optional)"),
      el("p", { class: "hint" }, "Without pinned keys the check uses the keys the receipt names, which proves it is consistent but not that the keys are the network's."),
      el("label", { for: "log-key" }, "Log key"),
      logKey,
      el("label", { for: "witness-keys" }, "Witness keys, one per line"),
      wits,
      el("label", { for: "quorum" }, "Cosignatures needed"),
      quorum
    ),
    el("p", {}, el("button", { type: "submit", class: "primary", id: "check-button" }, "Check in this browser"))
  );
  view.append(el("p", { class: "hint" }, "Checks a receipt with no trust in any node: every hash and signature is recomputed here with Web Crypto."), form, out);
  file.addEventListener("change", async () => {
    if (file.files[0]) area.value = await file.files[0].text();
  });
  // Shows the outcome and moves focus to it, so it is announced and the next Tab goes on from there.
  const show = (node) => {
    out.replaceChildren(node);
    const result = out.querySelector(".result");
    if (result) {
      result.tabIndex = -1;
      result.focus();
    }
  };
  const failed = (text) => el("p", { class: "result fail", "data-result": "fail", role: "alert" }, text);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let bundle;
    try {
      bundle = JSON.parse(area.value);
      if (!bundle || typeof bundle !== "object" || !bundle.leaf) throw new Error("this is not a receipt bundle (no leaf)");
    } catch (err) {
      return show(failed(`Not a receipt: ${err.message}`));
    }
    // Left empty, a field is taken from the receipt; pinned witnesses with
    // no quorum need a majority of them, whatever the receipt says.
    const trust = pinTrust({
      logKey: logKey.value.trim() || null,
      witnesses: wits.value.trim() ? wits.value.trim().split(/\s*\n\s*/) : [],
      witnessQuorum: quorum.value === "" ? null : Number(quorum.value),
    });
    out.replaceChildren(el("p", { class: "muted" }, "Checking…"));
    try {
      const report = await checkReceipt(bundle, trust);
      const names = await modelNames();
      show(receiptView({ bundle, report, modelName: bundle.leaf && names.get(bundle.leaf.model) }));
    } catch (err) {
      show(failed(`Check failed: ${err.message}`));
    }
  });
}

// ---- Routing ------------------------------------------------------------------

const ROUTES = [
  [/^\/explorer\/?$/, "Overview", overview, "/explorer"],
  [/^\/explorer\/records\/?$/, "Records", records, "/explorer/records"],
  [/^\/explorer\/receipt\/([0-9a-f]{64})\/?$/, "Receipt", receipt, "/explorer/records"],
  [/^\/explorer\/checkpoints\/?$/, "Checkpoints", checkpoints, "/explorer/checkpoints"],
  [/^\/explorer\/settlement\/?$/, "Settlement", settlement, "/explorer/settlement"],
  [/^\/explorer\/network\/?$/, "Network", network, "/explorer/network"],
  [/^\/explorer\/check\/?$/, "Check a receipt", check, "/explorer/check"],
];

function route(focus) {
  generation++;
  const path = location.pathname;
  const found = ROUTES.map(([re, name, fn, nav]) => [path.match(re), name, fn, nav]).find(([m]) => m);
  view.replaceChildren();
  for (const a of document.querySelectorAll("#nav a")) {
    if (found && a.getAttribute("href") === found[3]) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!found) {
    title.textContent = "Not found";
    view.append(el("p", {}, "No such page. ", link("/explorer", "Go to the overview"), "."));
    return;
  }
  const [match, name, fn] = found;
  title.textContent = name;
  document.title = `${name} · verinfer explorer`;
  view.dataset.view = name;
  // aria-busy while the page's data loads (assistive technology waits for
  // it; the first-paint bench reads it too).
  const gen = generation;
  view.setAttribute("aria-busy", "true");
  Promise.resolve(fn(match, new URLSearchParams(location.search))).finally(() => {
    if (gen === generation) view.removeAttribute("aria-busy");
  });
  // Move focus to the new content so keyboard and screen reader users land on it.
  if (focus) main.focus();
}

// Links inside the explorer navigate without reloading the page.
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[href]");
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/explorer")) return;
  e.preventDefault();
  history.pushState(null, "", url);
  route(true);
});
// The search form too.
document.addEventListener("submit", (e) => {
  const f = e.target;
  if (f.getAttribute("action") !== "/explorer/records") return;
  e.preventDefault();
  history.pushState(null, "", `/explorer/records?${new URLSearchParams(new FormData(f))}`);
  route(true);
});
addEventListener("popstate", () => route(true));
route(false);
