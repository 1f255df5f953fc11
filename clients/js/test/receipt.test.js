// Receipt checks on a receipt bundle a devnet served
// (clients/testdata/receipt-bundle.json: a chat answer verified by a quorum
// of two, in a checkpoint cosigned by three witnesses).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import * as v from "../verinfer.js";

const FIXTURE = new URL("../../testdata/receipt-bundle.json", import.meta.url);
const bundle = () => JSON.parse(readFileSync(FIXTURE, "utf8"));
const pinned = (b, quorum = null) => v.pinTrust({ logKey: b.log_key, witnesses: b.witnesses, witnessQuorum: quorum });

/** A fresh cosignature key under `name`. */
async function freshKey(name, alg) {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const key = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const id = (await v.keyId(name, alg, key)).toString(16).padStart(8, "0");
  return `${name}+${id}+${v.b64(v.concat(Uint8Array.of(alg), key))}`;
}

async function fails(b, trust, check) {
  await assert.rejects(v.verifyReceipt(b, trust), (e) => {
    assert.ok(e instanceof v.VerificationError);
    const failed = e.report.checks.find((c) => c.ok === false);
    assert.equal(failed.id, check, e.message);
    return true;
  });
}

test("a fresh receipt verifies with pinned keys", async () => {
  const b = bundle();
  const r = await v.verifyReceipt(b, pinned(b));
  assert.equal(r.status, "verified");
  assert.deepEqual(r.trust.pinned, { logKey: true, witnesses: true, witnessQuorum: true });
  assert.equal(r.trust.witnessQuorum, Math.floor(b.witnesses.length / 2) + 1);
  assert.equal((await v.verifyReceipt(b)).trust.pinned.logKey, false);
});

test("without its text only the leaf is checked", async () => {
  const b = bundle();
  delete b.receipt;
  assert.equal((await v.verifyReceipt(b, pinned(b))).status, "leaf-only");
});

test("a changed field fails", async () => {
  const changes = [
    [(b) => (b.receipt.result.output_text += "!"), "commitments"],
    [(b) => (b.receipt.request.decoding.max_tokens = 1), "commitments"],
    [(b) => (b.receipt.note = "not part of the record"), "commitments"],
    [(b) => (b.extra = 1), "id"],
    [(b) => (b.witness_quorum = "2"), "id"],
    [(b) => (b.leaf.fees.total = "1"), "id"],
    [(b) => (b.index += 1), "checkpoint"],
    [(b) => b.inclusion_proof.push(v.b64(new Uint8Array(32))), "inclusion"],
    [(b) => (b.checkpoint = b.checkpoint.replace("\n", "\nx")), "checkpoint"],
    [(b) => (b.checkpoint = b.checkpoint.replace(/\n\n— (\S+) ./, "\n\n— $1 A")), "log"],
  ];
  for (const [change, check] of changes) {
    const b = bundle();
    change(b);
    await fails(b, pinned(b), check);
  }
});

test("a pending receipt passes only when allowed", async () => {
  const b = bundle();
  b.checkpoint = null;
  await fails(b, pinned(b), "checkpoint");
  const r = await v.verifyReceipt(b, pinned(b), { allowPending: true });
  assert.equal(r.pending, true);
});

test("another log key, or verdicts of unpinned verifiers, fail", async () => {
  const b = bundle();
  const name = b.log_key.split("+")[0];
  await fails(b, v.pinTrust({ logKey: await freshKey(name, v.ALG_ED25519), witnesses: b.witnesses }), "log");
  const others = [await freshKey("w0", v.ALG_COSIGNATURE_V1), await freshKey("w1", v.ALG_COSIGNATURE_V1)];
  await fails(b, v.pinTrust({ logKey: b.log_key, witnesses: others }), "verdicts");
});

test("nothing in the receipt lowers the quorum", async () => {
  const b = bundle();
  const extra = [];
  for (let i = 0; i < 3; i++) extra.push(await freshKey(`w${i}`, v.ALG_COSIGNATURE_V1));
  const lowered = { ...bundle(), witness_quorum: 0, witnesses: [] };
  // Three pinned witnesses who never cosigned: a majority of six is four.
  await fails(lowered, v.pinTrust({ logKey: b.log_key, witnesses: [...b.witnesses, ...extra] }), "cosignatures");
  await fails(lowered, pinned(b, b.witnesses.length + 1), "cosignatures");
  // One key listed twice is one witness.
  delete lowered.receipt;
  await fails(lowered, v.pinTrust({ logKey: b.log_key, witnesses: [b.witnesses[0], b.witnesses[0]], witnessQuorum: 2 }), "cosignatures");
});

test("an answer must be the text signed for the messages sent", async (t) => {
  const b = bundle();
  t.mock.method(globalThis, "fetch", async () => ({ ok: true, json: async () => bundle() }));
  const client = new v.VerifiedClient({ baseURL: "http://gateway", apiKey: "key", trust: pinned(b) });
  const info = { receipt_id: b.id, status: "verified", model_id: b.leaf.model };
  const body = { messages: b.receipt.request.input.messages.map(({ role, content }) => ({ role, content })) };
  const text = b.receipt.result.output_text;
  assert.equal((await client.check(body, info, text)).status, "verified");
  for (const [i, x, s] of [
    [info, text + " (edited)", body],
    [info, text, { messages: [{ role: "user", content: "another question" }] }],
    [{ ...info, model_id: "00".repeat(32) }, text, body],
    [{ ...info, status: "rejected", reason: "token_mismatch" }, text, body],
  ]) {
    await assert.rejects(client.check(s, i, x), v.VerificationError);
  }
});
