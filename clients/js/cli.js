#!/usr/bin/env node
// cli.js: `verinfer verify` in JavaScript (Node 20 or later).
//
//   node cli.js verify [FILE|-] [--url URL ID] [--api-key KEY] [--wait SECS]
//                      [--log-key VKEY] [--witness VKEY]... [--witness-quorum N]
//                      [--out FILE] [--json]
//
// Checks a receipt bundle from a file (`-`: stdin) or from a gateway, with
// the keys pinned here or else those the receipt names. Exit status as the
// Rust `verinfer verify`: 0 when every check holds, 1 when one fails, 2 when
// the receipt could not be checked (usage, unreadable file, HTTP failure).

import { readFileSync, writeFileSync } from "node:fs";
import { checkReceipt, fetchReceipt, pinTrust } from "./verinfer.js";

const USAGE = "usage: cli.js verify [FILE|-] [--url URL ID] [--api-key KEY] [--wait SECS] [--log-key VKEY] [--witness VKEY]... [--witness-quorum N] [--out FILE] [--json]";

function parse(argv) {
  if (argv[0] !== "verify") throw new Error(USAGE);
  const o = { witnesses: [], wait: 30, json: false, apiKey: process.env.VERINFER_API_KEY || null };
  const rest = [];
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--url") o.url = value();
    else if (a === "--api-key") o.apiKey = value();
    else if (a === "--wait") o.wait = Number(value());
    else if (a === "--log-key") o.logKey = value();
    else if (a === "--out") o.out = value();
    else if (a === "--witness") o.witnesses.push(value());
    else if (a === "--witness-quorum") {
      o.witnessQuorum = Number(value());
      if (!Number.isSafeInteger(o.witnessQuorum) || o.witnessQuorum < 1) throw new Error("--witness-quorum must be a whole number of at least 1");
    } else if (a === "--json") o.json = true;
    else if (a.startsWith("--") && a !== "--") throw new Error(`unknown option ${a}\n${USAGE}`);
    else rest.push(a);
  }
  if (rest.length > 1) throw new Error(USAGE);
  o.receipt = rest[0];
  return o;
}

async function main() {
  let o;
  let bundle;
  try {
    o = parse(process.argv.slice(2));
    if (o.url) {
      if (!o.receipt) throw new Error("--url needs the receipt ID to fetch");
      bundle = await fetchReceipt(o.url, o.receipt, { apiKey: o.apiKey, waitMs: o.wait * 1000 });
    } else {
      const file = o.receipt || "-";
      bundle = JSON.parse(readFileSync(file === "-" ? 0 : file, "utf8"));
      if (!bundle || typeof bundle !== "object" || Array.isArray(bundle)) throw new Error(`${file} is not a receipt bundle`);
    }
    if (o.out) writeFileSync(o.out, JSON.stringify(bundle, null, 2) + "\n");
  } catch (e) {
    console.error(`error: ${e.message}`);
    return 2;
  }
  const trust = pinTrust({ logKey: o.logKey, witnesses: o.witnesses, witnessQuorum: o.witnessQuorum });
  const report = await checkReceipt(bundle, trust);
  if (o.json) {
    console.log(JSON.stringify({ ok: report.ok, status: report.status, error: report.error, checks: report.checks, trust: report.trust }, (k, v) => (typeof v === "bigint" ? Number(v) : v), 2));
  } else if (report.ok) {
    console.log(`receipt ${bundle.id} (log index ${bundle.index})`);
    for (const c of report.checks) console.log(`  ${c.ok ? "ok" : "--"}  ${c.title}${c.detail ? `: ${c.detail}` : ""}`);
    console.log(`status: ${report.status}`);
  }
  if (!report.ok) console.error(`error: the receipt does not verify: ${report.error}`);
  return report.ok ? 0 : 1;
}

process.exitCode = await main();
