// receipt.js: DOM helpers shared by the chat page and the explorer, and the
// view of one receipt with its in-browser check.

import { explain } from "./verinfer.js";

/** Creates an element: el("a", {href: "/"}, "text", child...). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c !== null && c !== undefined && c !== false) e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

/** A key or hash shortened for display; the full value in the title and for copying. */
export function short(h, n = 12) {
  if (!h) return "";
  return el("code", { title: h }, h.length > n + 4 ? h.slice(0, n) + "…" : h);
}

/** A full hex value, wrapped. */
export function full(h) {
  return el("code", { class: "full" }, h ?? "");
}

/** An amount in base units (18 decimals, a decimal string) as tokens. */
export function amount(base) {
  let v;
  try {
    v = BigInt(base);
  } catch {
    return String(base);
  }
  const unit = 10n ** 18n;
  const frac = (v % unit).toString().padStart(18, "0").replace(/0+$/, "");
  return (v / unit).toString() + (frac ? "." + frac : "");
}

/** "12 s ago" for a time in ms since the epoch, relative to `now` (ms). */
export function ago(ms, now = Date.now()) {
  if (!ms) return "unknown";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

/** Local date and time of ms since the epoch. */
export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "";
}

/** A definition list from [term, value] pairs (values may be nodes). */
export function facts(pairs) {
  return el("dl", { class: "facts" }, pairs.filter(Boolean).map(([t, v]) => [el("dt", {}, t), el("dd", {}, v)]));
}

/** A table: caption, header labels ("#label" for numbers) and rows of cells. */
export function table(caption, heads, rows) {
  const th = heads.map((h) => (h.startsWith("#") ? el("th", { class: "num", scope: "col" }, h.slice(1)) : el("th", { scope: "col" }, h)));
  // data-label lets narrow screens show each row as a labelled block.
  const label = (h) => h.replace(/^#/, "");
  const body = rows.map((r) => el("tr", {}, r.map((c, i) => el("td", { class: heads[i].startsWith("#") ? "num" : null, "data-label": label(heads[i]) }, c))));
  return el("div", { class: "scroll" }, el("table", { class: "stack" }, caption ? el("caption", {}, caption) : null, el("thead", {}, el("tr", {}, th)), el("tbody", {}, body)));
}

/** The list of checks of a report (verinfer.js `checkReceipt`). */
export function checkList(report) {
  return el(
    "ol",
    { class: "checks", "aria-label": "Checks run in your browser" },
    report.checks.map((c) => {
      const state = c.ok === true ? "ok" : c.ok === false ? "fail" : "na";
      const said = { ok: "passed", fail: "failed", na: "not applicable" }[state];
      return el("li", { class: state, "data-check": c.id, "data-state": state }, el("strong", {}, c.title), el("span", { class: "sr-only" }, ` (${said})`), el("span", { class: "detail" }, c.detail));
    })
  );
}

/** One line saying how the in-browser check came out. */
export function resultLine(report, waiting) {
  if (!report) return el("p", { class: "result wait", "data-result": "pending" }, waiting || "Waiting for a cosigned checkpoint to cover this receipt…");
  const n = report.checks.filter((c) => c.ok === true).length;
  return report.ok
    ? el("p", { class: "result ok", "data-result": "pass" }, `Checked in your browser: ${report.status}, ${n} checks passed.`)
    : el("p", { class: "result fail", "data-result": "fail" }, `Check failed: ${report.error}`);
}

/** A link that downloads the bundle as JSON (to check it elsewhere, e.g. `verinfer verify`). */
export function downloadLink(bundle) {
  const url = URL.createObjectURL(new Blob([JSON.stringify(bundle, null, 2)], { type: "application/json" }));
  return el("a", { href: url, download: `receipt-${bundle.id.slice(0, 16)}.json` }, "Download the receipt (JSON)");
}

/** Where an optimistic answer stands (the ledger's `finality`), in words; null for other modes. */
export function finalityText(f) {
  if (!f || !f.state) return null;
  if (f.state === "provisional") return `provisional: a challenge may overturn it until ${when(f.until_ms)}`;
  if (f.state === "overturned") return "overturned: a challenge proved it wrong; the fee was refunded and the node slashed";
  return "final: its challenge window passed";
}

/**
 * The receipt view: what was checked first, then the model, node, verifiers
 * and their verdicts, fees, log position, and the raw material.
 * `info` is the answer's `verinfer` object when known (chat), `modelName`
 * the model's name.
 */
export function receiptView({ bundle, report, info, modelName, waiting }) {
  const out = el("div", { class: "receipt" });
  out.append(resultLine(report, waiting));
  const leaf = bundle ? bundle.leaf : null;
  const r = bundle && bundle.receipt;
  out.append(
    facts([
      ["Model", modelName || "unknown name"],
      ["Model id", full(leaf ? leaf.model : info && info.model_id)],
      ["Inference node", full(leaf ? leaf.node : info && info.node)],
      leaf && ["Paid by", full(leaf.requester)],
      ["Log index", String(bundle ? bundle.index : info && info.log_index != null ? info.log_index : "not in the log")],
      ["Receipt id", full(bundle ? bundle.id : (info && info.receipt_id) || "none")],
      bundle && finalityText(bundle.finality) && ["Finality", el("span", { "data-finality": bundle.finality.state }, finalityText(bundle.finality))],
      r && ["Engine", r.result.engine],
      r && ["Finish", `${r.result.finish_reason}, ${r.result.usage.prompt_tokens} prompt + ${r.result.usage.completion_tokens} answer tokens`],
    ])
  );
  if (r) {
    out.append(
      table(
        "Verifiers and their verdicts",
        ["Verifier", "Decision", "#Checked positions", "#Cost (ms)"],
        r.certificate.verdicts.map((v) => [short(v.verifier, 16), v.decision + (v.reason ? `: ${v.reason}` : ""), String(v.checked_positions), (v.cost_micros / 1000).toFixed(1)])
      )
    );
  } else if (info && info.verifiers && info.verifiers.length) {
    out.append(el("p", {}, "Verifiers: ", info.verifiers.map((k, i) => [i ? ", " : "", short(k, 16)]), el("span", { class: "muted" }, " (their signed verdicts come with the receipt)")));
  } else if (bundle) {
    out.append(el("p", { class: "muted" }, "The verdicts are in the receipt's text, which only the account that paid can open; the leaf commits to them through the certificate hash."));
  }
  if (leaf) {
    const f = leaf.fees;
    out.append(
      table(
        "Fee paid (tokens)",
        ["To", "#Amount"],
        [
          ["Inference node", el("span", { title: `${f.node} base units` }, amount(f.node))],
          ["Verifiers (together)", el("span", { title: `${f.verifiers} base units` }, amount(f.verifiers))],
          ["Treasury", el("span", { title: `${f.treasury} base units` }, amount(f.treasury))],
          [el("strong", {}, "Total charged"), el("strong", { title: `${f.total} base units` }, amount(f.total))],
        ]
      )
    );
  }
  if (report) {
    out.append(el("h3", {}, "What your browser checked"), checkList(report));
    out.append(el("div", { class: "statement" }, explain(report, bundle).map((p) => el("p", {}, p))));
  }
  if (bundle) {
    out.append(
      el(
        "details",
        {},
        el("summary", {}, "Checkpoint, proof and keys"),
        bundle.checkpoint ? el("pre", { "aria-label": "Checkpoint note" }, bundle.checkpoint) : el("p", {}, "No cosigned checkpoint yet."),
        el("p", {}, `Inclusion proof (${bundle.inclusion_proof.length} hashes):`),
        el("pre", {}, bundle.inclusion_proof.join("\n") || "(empty: the tree has one leaf)"),
        el("p", {}, "Log key:"),
        el("pre", {}, bundle.log_key),
        el("p", {}, `Witness keys (quorum ${bundle.witness_quorum}):`),
        el("pre", {}, bundle.witnesses.join("\n"))
      ),
      el("p", {}, downloadLink(bundle), " · ", el("a", { href: `/explorer/receipt/${bundle.id}` }, "Open in the explorer"), " · ", el("a", { href: "/explorer/check" }, "Check with pinned keys"))
    );
  }
  return out;
}
