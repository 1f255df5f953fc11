// The shared vectors: RFC 6962 inclusion and consistency proofs
// (transparency-dev/merkle), the C2SP signed-note example, and RFC 8785
// canonical JSON. The vectors live in the repository's testdata/ (see its
// README), or at $VERINFER_VECTORS.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as v from "../verinfer.js";

const VECTORS = process.env.VERINFER_VECTORS || fileURLToPath(new URL("../../../testdata", import.meta.url));

function cases(kind) {
  const out = [];
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith(".json")) out.push([p, JSON.parse(readFileSync(p, "utf8"))]);
    }
  };
  walk(join(VECTORS, "rfc6962", kind));
  assert.ok(out.length > 20, `found only ${out.length} ${kind} vectors under ${VECTORS}`);
  return out;
}

const bytes = (s) => (s == null ? new Uint8Array() : Uint8Array.from(Buffer.from(s, "base64")));

test("RFC 6962 inclusion vectors", async () => {
  for (const [path, c] of cases("inclusion")) {
    const why = await v.verifyInclusion(c.leafIdx, c.treeSize, bytes(c.leafHash), (c.proof || []).map(bytes), bytes(c.root));
    assert.equal(why !== null, c.wantErr, `${path} (${c.desc}): ${why}`);
  }
});

test("RFC 6962 consistency vectors", async () => {
  for (const [path, c] of cases("consistency")) {
    const why = await v.verifyConsistency(c.size1, c.size2, (c.proof || []).map(bytes), bytes(c.root1), bytes(c.root2));
    assert.equal(why !== null, c.wantErr, `${path} (${c.desc}): ${why}`);
  }
});

test("RFC 6962 known hashes", async () => {
  assert.equal(v.hex(await v.sha256(new Uint8Array())), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  assert.equal(v.hex(await v.leafHash(new Uint8Array())), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
});

test("C2SP signed-note example", async () => {
  const vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
  const note = "This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
  const key = await v.parseVerifierKey(vkey, v.ALG_ED25519);
  assert.equal(key.id, 0x530d903a);
  assert.equal(await v.verifyNoteSignature(v.parseNote(note), key), null);
  assert.notEqual(await v.verifyNoteSignature(v.parseNote(note.replace("example message", "example massage")), key), null);
  await assert.rejects(v.parseVerifierKey(vkey.replace("530d903a", "530d903b"), v.ALG_ED25519), /key id/);
  await assert.rejects(v.parseVerifierKey(vkey, v.ALG_COSIGNATURE_V1), /cosignature/);
});

test("RFC 8785 canonical JSON", () => {
  assert.equal(v.canonical({ b: 1, a: [true, null, "x"], "\u00e9": "\u20ac\n", "\ud83d\ude00": 0, "\u0080": -5 }), '{"a":[true,null,"x"],"b":1,"\u0080":-5,"\u00e9":"\u20ac\\n","\ud83d\ude00":0}');
  assert.equal(v.canonical({ s: "\u0007\"\\/" }), '{"s":"\\u0007\\"\\\\/"}');
  assert.equal(v.canonical({ "\ufb01": 1, "\ud83d\ude00": 2 }), "{\"\ud83d\ude00\":2,\"\ufb01\":1}");
  assert.equal(v.canonical({ a: 1, signature: "x" }, "signature"), '{"a":1}');
  assert.throws(() => v.canonical({ f: 1.5 }), /integer/);
  assert.throws(() => v.canonical({ n: 2 ** 53 }), /integer/);
});
