// verinfer.js: checks verinfer receipts and gets checked answers, trusting
// no node. One ES module with no dependencies: it runs in browsers (the
// gateway serves this very file to its chat page and explorer) and in Node 20
// or later, using only Web Crypto (SHA-256 and Ed25519) and `fetch`.
//
// What a receipt is and how it is checked is docs/design.md: the receipt id
// is the RFC 6962 leaf hash of its log leaf; a disclosed receipt opens the
// leaf's salted commitments, its request, result and verdicts are signed,
// and its certificate meets the request's policy with verdicts of trusted
// verifiers; the leaf is included in a checkpoint signed by the log and
// cosigned by a quorum of witnesses. The report lists every check rather
// than stopping at the first failure, so a page can show what holds and what
// does not; `verifyReceipt` throws when any fails.
//
// Formats: canonical JSON is RFC 8785 restricted to safe integers; record
// signatures cover "verinfer-signature-v1\n" + TYPE + "\n" +
// canonical(record minus "signature"); notes, key ids and cosignatures follow
// C2SP signed-note, tlog-checkpoint and tlog-cosignature; proofs follow
// RFC 6962 / RFC 9162.

const utf8 = new TextEncoder();

/** Lowercase hex of bytes. */
export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Bytes of lowercase hex of `len` bytes (any length when len is omitted). */
export function unhex(s, len) {
  if (typeof s !== "string" || !/^(?:[0-9a-f]{2})*$/.test(s) || (len !== undefined && s.length !== 2 * len)) {
    throw new Error(`expected ${len ?? "some"} bytes of lowercase hex, got ${JSON.stringify(s)}`.slice(0, 120));
  }
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(2 * i, 2), 16);
  return out;
}

/** Standard base64 (with padding) of bytes. */
export function b64(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Bytes of standard base64; only the canonical encoding is accepted, as in Rust. */
export function unb64(s) {
  let bytes;
  try {
    bytes = Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  } catch {
    throw new Error("not base64");
  }
  if (b64(bytes) !== s) throw new Error("not canonical base64");
  return bytes;
}

/** The concatenation of byte arrays. */
export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/**
 * RFC 8785 canonical JSON of a value with integers only. Object keys sort by
 * UTF-16 code units (the default Array sort); strings escape exactly as
 * JSON.stringify does, which is what RFC 8785 specifies. `skip` leaves out
 * one top-level member (the signature, to get the signed bytes).
 */
export function canonical(v, skip) {
  if (v === null) return "null";
  switch (typeof v) {
    case "boolean":
      return v ? "true" : "false";
    case "number":
      // Records hold integers only; larger amounts are decimal strings.
      if (!Number.isSafeInteger(v)) throw new Error(`number ${v} is not an integer within +/-(2^53-1)`);
      return String(v);
    case "string":
      return JSON.stringify(v);
    case "object":
      if (Array.isArray(v)) return "[" + v.map((x) => canonical(x)).join(",") + "]";
      return (
        "{" +
        Object.keys(v)
          .filter((k) => k !== skip)
          .sort()
          .map((k) => JSON.stringify(k) + ":" + canonical(v[k]))
          .join(",") +
        "}"
      );
  }
  throw new Error(`a ${typeof v} cannot be encoded canonically`);
}

/** SHA-256 of bytes, with Web Crypto. */
export async function sha256(bytes) {
  return new Uint8Array(await subtle().digest("SHA-256", bytes));
}

function subtle() {
  // Web Crypto exists only in secure contexts (https, localhost, 127.0.0.1).
  if (!globalThis.crypto || !crypto.subtle) {
    throw new Error("Web Crypto is not available: open the page over https or on localhost");
  }
  return crypto.subtle;
}

const keyCache = new Map();

/**
 * Whether `sig` is a valid Ed25519 signature of `msg` by the 32-byte public
 * key `pub`. Keys that are not valid points verify nothing. A browser without
 * Ed25519 in Web Crypto throws, so that this is not mistaken for a bad signature.
 */
export async function ed25519Verify(pub, msg, sig) {
  if (pub.length !== 32 || sig.length !== 64) return false;
  const id = hex(pub);
  let key = keyCache.get(id);
  if (!key) {
    try {
      key = await subtle().importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
    } catch (e) {
      if (e && e.name === "NotSupportedError") throw new Error("this browser's Web Crypto has no Ed25519");
      return false;
    }
    keyCache.set(id, key);
  }
  return subtle().verify({ name: "Ed25519" }, key, sig, msg);
}

// ---- Records -------------------------------------------------------------

export const TYPES = {
  request: "verinfer.request.v1",
  result: "verinfer.result.v1",
  verdict: "verinfer.verdict.v2",
  certificate: "verinfer.certificate.v1",
  receipt: "verinfer.receipt.v1",
  leaf: "verinfer.leaf.v1",
};

/** SHA-256 of a record's canonical bytes. */
export async function recordHash(record) {
  return sha256(utf8.encode(canonical(record)));
}

/** Whether a record's signature by the key in field `signer` verifies. */
export async function verifyRecord(record, type, signer) {
  if (record.type !== type) throw new Error(`record type is ${JSON.stringify(record.type)}, expected ${type}`);
  const msg = utf8.encode("verinfer-signature-v1\n" + type + "\n" + canonical(record, "signature"));
  return ed25519Verify(unhex(record[signer], 32), msg, unhex(record.signature, 64));
}

/** Accepting verdicts a verification mode requires (`required_verdicts`). */
export function requiredVerdicts(verification) {
  return verification && verification.mode === "quorum" ? Math.max(verification.k, 1) : 0;
}

// ---- Signed notes, checkpoints, keys -------------------------------------

export const ALG_ED25519 = 1;
export const ALG_COSIGNATURE_V1 = 4;

function checkKeyName(name) {
  if (!name || /[\s+]/u.test(name)) throw new Error(`invalid key name ${JSON.stringify(name)}`);
}

/** C2SP key id: the first 4 bytes of SHA-256(name || "\n" || alg || key), as a number. */
export async function keyId(name, alg, key) {
  const d = await sha256(concat(utf8.encode(name + "\n"), Uint8Array.of(alg), key));
  return ((d[0] << 24) | (d[1] << 16) | (d[2] << 8) | d[3]) >>> 0;
}

/**
 * Parses a C2SP verifier key `name+keyid+base64(alg || key)` and checks its
 * key id; `alg` is the signature type it must have (1 for the log, 4 for
 * witnesses).
 */
export async function parseVerifierKey(text, alg) {
  const t = text.trim();
  const a = t.indexOf("+");
  const b = t.indexOf("+", a + 1);
  if (a < 0 || b < 0) throw new Error("a verifier key is name+keyid+base64");
  const name = t.slice(0, a);
  const idText = t.slice(a + 1, b);
  checkKeyName(name);
  if (!/^[0-9a-f]{8}$/.test(idText)) throw new Error("key id must be 8 lowercase hex digits");
  const material = unb64(t.slice(b + 1));
  if (material.length !== 33) throw new Error("key material must be a type byte and a 32-byte Ed25519 key");
  if (material[0] !== alg) {
    throw new Error(alg === ALG_ED25519 ? "not an Ed25519 note key (type 0x01)" : "not a tlog-cosignature key (type 0x04)");
  }
  const key = material.slice(1);
  const id = await keyId(name, alg, key);
  if (id !== parseInt(idText, 16)) throw new Error("key id does not match name and key");
  return { name, alg, key, id, text: t };
}

/** Parses a C2SP signed note into its text and signature lines. */
export function parseNote(s) {
  if (!s.endsWith("\n")) throw new Error("note must end with a newline");
  if (/[\u0000-\u0009\u000b-\u001f]/.test(s)) throw new Error("control character in note");
  const split = s.lastIndexOf("\n\n");
  if (split < 0) throw new Error("no blank line before the signatures");
  const text = s.slice(0, split + 1);
  const signatures = [];
  for (const line of s.slice(split + 2, -1).split("\n")) {
    if (!line.startsWith("\u2014 ")) throw new Error("signature line must start with an em dash");
    const rest = line.slice(2);
    const sp = rest.indexOf(" ");
    if (sp < 0) throw new Error("signature line needs a name and a signature");
    const name = rest.slice(0, sp);
    checkKeyName(name);
    const raw = unb64(rest.slice(sp + 1));
    if (raw.length < 5) throw new Error("signature too short");
    const keyId = ((raw[0] << 24) | (raw[1] << 16) | (raw[2] << 8) | raw[3]) >>> 0;
    signatures.push({ name, keyId, sig: raw.slice(4) });
  }
  if (signatures.length > 64) throw new Error("too many signatures");
  return { text, signatures };
}

/** Parses checkpoint note text: origin, tree size, base64 root, extensions. */
export function parseCheckpoint(text) {
  const lines = text.slice(0, -1).split("\n");
  const [origin, size, root] = lines;
  if (!origin) throw new Error("empty origin line");
  if (!/^(?:0|[1-9][0-9]*)$/.test(size ?? "")) throw new Error("tree size must be decimal without leading zeros");
  if (BigInt(size) >= 2n ** 64n) throw new Error("tree size out of range");
  const rootBytes = root === undefined ? null : unb64(root);
  if (!rootBytes || rootBytes.length !== 32) throw new Error("root hash must be base64 of 32 bytes");
  const extensions = lines.slice(3);
  if (extensions.some((e) => e === "")) throw new Error("empty extension line");
  return { origin, size: BigInt(size), root: rootBytes, extensions };
}

function signaturesBy(note, vk) {
  return note.signatures.filter((s) => s.name === vk.name && s.keyId === vk.id).map((s) => s.sig);
}

/** Whether the note carries the log key's signature, and every one it carries verifies. */
export async function verifyNoteSignature(note, vk) {
  const sigs = signaturesBy(note, vk);
  if (!sigs.length) return `no signature by ${vk.name}`;
  for (const sig of sigs) {
    if (!(await ed25519Verify(vk.key, utf8.encode(note.text), sig))) return `signature by ${vk.name} does not verify`;
  }
  return null;
}

/** Checks a witness's tlog-cosignature on the note; returns null or why not. */
export async function verifyCosignature(note, vk) {
  const sigs = signaturesBy(note, vk);
  if (!sigs.length) return `no cosignature by ${vk.name}`;
  for (const raw of sigs) {
    if (raw.length !== 72) return `cosignature by ${vk.name} is malformed`;
    const time = new DataView(raw.buffer, raw.byteOffset).getBigUint64(0);
    if (time > 2n ** 63n - 1n) return `cosignature by ${vk.name} has a bad timestamp`;
    const msg = utf8.encode(`cosignature/v1\ntime ${time}\n${note.text}`);
    if (!(await ed25519Verify(vk.key, msg, raw.slice(8)))) return `cosignature by ${vk.name} does not verify`;
  }
  return null;
}

// ---- Merkle tree (RFC 6962) ----------------------------------------------

/** RFC 6962 leaf hash: SHA-256(0x00 || leaf). */
export function leafHash(bytes) {
  return sha256(concat(Uint8Array.of(0), bytes));
}

function nodeHash(l, r) {
  return sha256(concat(Uint8Array.of(1), l, r));
}

/** Checks an inclusion proof (RFC 9162 2.1.3.2); returns null or why not. */
export async function verifyInclusion(index, size, leaf, proof, root) {
  let f = BigInt(index);
  let s = BigInt(size);
  if (f >= s) return `index ${f} is not below size ${s}`;
  if (leaf.length !== 32) return "the leaf hash is not 32 bytes";
  s -= 1n;
  let r = leaf;
  for (const p of proof) {
    if (s === 0n) return "the proof is too long";
    if ((f & 1n) === 1n || f === s) {
      r = await nodeHash(p, r);
      while ((f & 1n) === 0n && f !== 0n) {
        f >>= 1n;
        s >>= 1n;
      }
    } else {
      r = await nodeHash(r, p);
    }
    f >>= 1n;
    s >>= 1n;
  }
  if (s !== 0n) return "the proof is too short";
  return equal(r, root) ? null : "the proof does not lead to the checkpoint's root";
}

/**
 * Checks a consistency proof from a tree of `size1` leaves with root `root1`
 * to one of `size2` leaves with root `root2` (RFC 9162 2.1.4.2); returns
 * null or why not. A proof from the empty tree proves nothing and fails.
 */
export async function verifyConsistency(size1, size2, proof, root1, root2) {
  let f = BigInt(size1);
  let s = BigInt(size2);
  if (f === 0n) return "a proof from the empty tree proves nothing";
  if (f > s) return `size ${f} is larger than size ${s}`;
  if (f === s) {
    if (proof.length) return "equal sizes need an empty proof";
    return equal(root1, root2) ? null : "equal sizes but different roots";
  }
  if (!proof.length) return "the proof is empty";
  // When size1 is a power of two, its root is the first node of the path.
  const path = (f & (f - 1n)) === 0n ? [root1, ...proof] : proof;
  f -= 1n;
  s -= 1n;
  while ((f & 1n) === 1n) {
    f >>= 1n;
    s >>= 1n;
  }
  let fr = path[0];
  let sr = path[0];
  for (const c of path.slice(1)) {
    if (s === 0n) return "the proof is too long";
    if ((f & 1n) === 1n || f === s) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while ((f & 1n) === 0n && f !== 0n) {
        f >>= 1n;
        s >>= 1n;
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    f >>= 1n;
    s >>= 1n;
  }
  if (s !== 0n) return "the proof is too short";
  if (!equal(fr, root1)) return "the proof does not lead to the first root";
  return equal(sr, root2) ? null : "the proof does not lead to the second root";
}

// ---- The receipt check ---------------------------------------------------

/**
 * Keys the caller pins: the log's key (C2SP vkey, type 0x01), the witnesses'
 * keys (type 0x04; they are also the verifiers whose verdicts count) and the
 * cosignatures a checkpoint needs (default: a strict majority of the
 * distinct pinned witnesses). Whatever is left out is taken from the
 * receipt, and the report says so. Nothing in a receipt lowers a pinned
 * quorum, nor the default one of pinned witnesses.
 */
export function pinTrust({ logKey = null, witnesses = [], witnessQuorum = null } = {}) {
  return { logKey, witnesses: [...witnesses], witnessQuorum };
}

/** The keys a check uses: the pinned ones, the bundle's for the rest. */
async function resolveTrust(pins, bundle) {
  const pinnedWitnesses = (pins.witnesses || []).length > 0;
  const logKey = await parseVerifierKey(pins.logKey || bundle.log_key || "", ALG_ED25519).catch((e) => {
    throw new Error(`log key: ${e.message}`);
  });
  const witnesses = [];
  for (const w of pinnedWitnesses ? pins.witnesses : bundle.witnesses || []) {
    witnesses.push(
      await parseVerifierKey(w, ALG_COSIGNATURE_V1).catch((e) => {
        throw new Error(`witness key ${w}: ${e.message}`);
      })
    );
  }
  let quorum = pins.witnessQuorum ?? null;
  if (quorum === null) quorum = pinnedWitnesses ? Math.floor(new Set(witnesses.map((w) => hex(w.key))).size / 2) + 1 : bundle.witness_quorum;
  if (!Number.isSafeInteger(quorum) || quorum < 0) throw new Error("the witness quorum is not a number");
  const origin = (p) => (p ? "pinned" : "taken from the receipt");
  return {
    logKey,
    witnesses,
    quorum,
    pinned: { logKey: !!pins.logKey, witnesses: pinnedWitnesses, witnessQuorum: pins.witnessQuorum != null || pinnedWitnesses },
    describe: `log ${logKey.name} (${origin(!!pins.logKey)}), ${witnesses.length} witnesses (${origin(pinnedWitnesses)}), quorum ${quorum}`,
  };
}

// A bundle's members and what each must be; the first six are required.
const BUNDLE = {
  id: "string",
  index: "integer",
  leaf: "object",
  log_key: "string",
  witnesses: "strings",
  witness_quorum: "integer",
  receipt: "object?",
  checkpoint: "string?",
  inclusion_proof: "strings",
};

/**
 * Throws unless `bundle` has the members of a receipt bundle, each of its
 * kind, and no other: a bundle is refused as a whole when malformed, even
 * in a member pinned keys make unused.
 */
function checkBundleShape(bundle) {
  const isObject = (x) => x !== null && typeof x === "object" && !Array.isArray(x);
  const kinds = {
    string: (x) => typeof x === "string",
    integer: (x) => Number.isSafeInteger(x) && x >= 0,
    object: isObject,
    strings: (x) => Array.isArray(x) && x.every((s) => typeof s === "string"),
    "object?": (x) => x === null || isObject(x),
    "string?": (x) => x === null || typeof x === "string",
  };
  for (const name of Object.keys(bundle)) {
    if (!(name in BUNDLE)) throw new Error(`the bundle is malformed: unknown member ${JSON.stringify(name)}`);
  }
  Object.entries(BUNDLE).forEach(([name, kind], i) => {
    if (!(name in bundle)) {
      if (i < 6) throw new Error(`the bundle is malformed: no ${JSON.stringify(name)}`);
    } else if (!kinds[kind](bundle[name])) {
      throw new Error(`the bundle is malformed: ${JSON.stringify(name)} is not of its kind`);
    }
  });
  if (bundle.witness_quorum >= 2 ** 32) throw new Error("the bundle is malformed: a number is out of range");
}

/**
 * Checks a ReceiptBundle (what `GET /v1/receipts/{id}` serves) against the
 * keys pinned in `trust` (see `pinTrust`; default: none, so the keys the
 * bundle names are used). Returns {ok, status, pending, error, checks: [{id,
 * title, ok, detail}], facts, trust}; `ok` of a check is true, false, or
 * null when it could not apply (e.g. no text disclosed). `pending` is true
 * when no cosigned checkpoint covers the receipt yet.
 */
export async function checkReceipt(bundle, trust = {}) {
  const checks = [];
  const facts = {};
  // Runs one check: `fn` returns a detail (string) on success or throws on
  // failure; `skip` marks it as not applicable with a reason.
  const run = async (id, title, fn) => {
    try {
      const detail = await fn();
      checks.push({ id, title, ok: true, detail: detail || "" });
      return true;
    } catch (e) {
      checks.push({ id, title, ok: false, detail: e.message || String(e) });
      return false;
    }
  };
  const skip = (id, title, why) => checks.push({ id, title, ok: null, detail: why });
  const fail = (why) => {
    throw new Error(why);
  };

  // Keys.
  let resolved = null;
  let logKey = null;
  let witnesses = [];
  await run("keys", "The log's key and the witnesses' keys are well-formed", async () => {
    resolved = await resolveTrust(trust, bundle);
    ({ logKey, witnesses } = resolved);
    return resolved.describe;
  });

  // The id is the leaf hash.
  const leaf = bundle.leaf || {};
  await run("id", "The receipt id is the hash of its log leaf", async () => {
    checkBundleShape(bundle);
    if (leaf.type !== TYPES.leaf) fail(`the leaf's type is ${JSON.stringify(leaf.type)}`);
    const computed = hex(await leafHash(utf8.encode(canonical(leaf))));
    if (computed !== bundle.id) fail(`the leaf hashes to ${computed}, not to the id ${bundle.id}`);
    return `SHA-256(0x00 || leaf) = ${computed}`;
  });

  // The disclosed receipt.
  const r = bundle.receipt;
  const titles = {
    commitments: "The disclosed request and answer open the leaf's commitments",
    request: "The request is signed by its signer",
    result: "The answer is signed by the inference node",
    binding: "The answer is for this request and this model",
    certificate: "The certificate is about this answer",
    verdicts: "Each verdict is signed by a trusted verifier and accepts this answer",
    quorum: "Enough verifiers accepted, as the request's policy requires",
  };
  if (!r) {
    for (const [id, title] of Object.entries(titles)) {
      skip(id, title, "not disclosed: only the account that paid sees the text (log in with its API key)");
    }
  } else {
    let requestHash = null;
    let resultHash = null;
    await run("commitments", titles.commitments, async () => {
      if (r.type !== TYPES.receipt) fail(`the receipt's type is ${JSON.stringify(r.type)}`);
      // The receipt itself is not hashed, only its parts: hold it to its members.
      if (canonical(Object.keys(r).sort()) !== canonical(["certificate", "fees", "request", "result", "salt", "type"])) {
        fail(`the receipt's members are not those of ${TYPES.receipt}`);
      }
      const salt = unhex(r.salt, 32);
      const reqBytes = utf8.encode(canonical(r.request));
      const resBytes = utf8.encode(canonical(r.result));
      const opened = {
        "request commitment": [hex(await sha256(concat(salt, reqBytes))), leaf.request],
        "result commitment": [hex(await sha256(concat(salt, resBytes))), leaf.result],
        "certificate hash": [hex(await recordHash(r.certificate)), leaf.certificate],
        fees: [canonical(r.fees), canonical(leaf.fees ?? null)],
        model: [r.result.model, leaf.model],
        "inference node": [r.result.node, leaf.node],
        requester: [r.request.requester, leaf.requester],
      };
      for (const [field, [mine, theirs]] of Object.entries(opened)) {
        if (mine !== theirs) fail(`the receipt does not match its log leaf: the ${field} differs`);
      }
      requestHash = hex(await sha256(reqBytes));
      resultHash = hex(await sha256(resBytes));
      return "SHA-256(salt || request) and SHA-256(salt || answer) equal the leaf's; so do the certificate hash, fees, model, node and requester";
    });
    await run("request", titles.request, async () => {
      if (!(await verifyRecord(r.request, TYPES.request, "signer"))) fail("the request's signature does not verify");
      return `signed by ${r.request.signer}`;
    });
    await run("result", titles.result, async () => {
      if (!(await verifyRecord(r.result, TYPES.result, "node"))) fail("the answer's signature by its inference node does not verify");
      return `signed by node ${r.result.node}`;
    });
    await run("binding", titles.binding, async () => {
      const req = requestHash || hex(await recordHash(r.request));
      if (r.result.request !== req) fail(`the answer is for request ${r.result.request}, not this request (${req})`);
      if (r.result.model !== r.request.model) fail(`the answer was produced by model ${r.result.model}, but the request asks for ${r.request.model}`);
      return `model ${r.request.model}, engine ${r.result.engine}`;
    });
    await run("certificate", titles.certificate, async () => {
      if (r.certificate.type !== TYPES.certificate) fail(`the certificate's type is ${JSON.stringify(r.certificate.type)}`);
      const res = resultHash || hex(await recordHash(r.result));
      if (r.certificate.result !== res) fail(`the certificate is about answer ${r.certificate.result}, not this answer (${res})`);
      return `answer hash ${res}`;
    });
    const counted = [];
    await run("verdicts", titles.verdicts, async () => {
      const res = resultHash || hex(await recordHash(r.result));
      const req = requestHash || hex(await recordHash(r.request));
      const seen = new Set();
      for (const v of r.certificate.verdicts) {
        if (!(await verifyRecord(v, TYPES.verdict, "verifier"))) fail(`the verdict by verifier ${v.verifier} has a signature that does not verify`);
        if (v.decision !== "accept") fail(`verifier ${v.verifier} rejected the answer: ${v.reason || "no reason given"}`);
        if (v.result !== res) fail(`the verdict by verifier ${v.verifier} is about another answer`);
        if (v.request !== req) fail(`the verdict by verifier ${v.verifier} checked the answer against another request`);
        if (seen.has(v.verifier)) fail(`verifier ${v.verifier} has more than one verdict in the certificate`);
        seen.add(v.verifier);
        const w = witnesses.find((w) => hex(w.key) === v.verifier);
        if (!w) fail(`the verdict by ${v.verifier} is not from a trusted verifier (not one of the witness keys)`);
        counted.push(w.name);
      }
      return counted.length ? `accepted by ${counted.join(", ")}` : "no verdicts";
    });
    await run("quorum", titles.quorum, async () => {
      const need = requiredVerdicts(r.request.policy && r.request.policy.verification);
      facts.verdicts = counted.length;
      facts.verdictsRequired = need;
      if (counted.length < need) fail(`the certificate has ${counted.length} accepting verdict(s); the request's policy needs ${need}`);
      return need ? `${counted.length} accepting verdicts, ${need} required` : "the policy requires no verdict (provisional)";
    });
  }

  // The checkpoint and the inclusion proof.
  let note = null;
  let cp = null;
  const covered = await run("checkpoint", "A final checkpoint covers the receipt", async () => {
    if (!bundle.checkpoint) fail("no cosigned checkpoint covers this receipt yet");
    note = parseNote(bundle.checkpoint);
    cp = parseCheckpoint(note.text);
    if (BigInt(bundle.index) >= cp.size) fail(`the checkpoint (size ${cp.size}) does not cover log index ${bundle.index}`);
    facts.size = cp.size;
    facts.root = b64(cp.root);
    return `tree size ${cp.size}, root ${b64(cp.root)}`;
  });
  const inclusionTitles = {
    log: "The checkpoint is signed by the log's key",
    inclusion: "The leaf is in the checkpoint's tree (Merkle inclusion proof)",
    cosignatures: "A quorum of witnesses cosigned the checkpoint",
  };
  if (!covered || !logKey) {
    const why = !logKey ? "no usable log key" : "no checkpoint to check against";
    for (const [id, title] of Object.entries(inclusionTitles)) skip(id, title, why);
  } else {
    await run("log", inclusionTitles.log, async () => {
      if (cp.origin !== logKey.name) fail(`the checkpoint is for origin ${JSON.stringify(cp.origin)}, expected ${JSON.stringify(logKey.name)}`);
      const bad = await verifyNoteSignature(note, logKey);
      if (bad) fail(bad);
      return `Ed25519 signature by ${logKey.name} (key id ${logKey.id.toString(16).padStart(8, "0")})`;
    });
    await run("inclusion", inclusionTitles.inclusion, async () => {
      const proof = (bundle.inclusion_proof || []).map((h, i) => {
        let b = null;
        try {
          b = unb64(h);
        } catch {
          /* reported below */
        }
        if (!b || b.length !== 32) fail(`inclusion proof element ${i} is not base64 of 32 bytes`);
        return b;
      });
      const bad = await verifyInclusion(bundle.index, cp.size, unhex(bundle.id, 32), proof, cp.root);
      if (bad) fail(`the leaf is not at index ${bundle.index} of the checkpoint's tree: ${bad}`);
      return `leaf ${bundle.index} of ${cp.size}, ${proof.length} proof hashes`;
    });
    await run("cosignatures", inclusionTitles.cosignatures, async () => {
      // Count signers, not names: one key listed twice is one witness.
      const keys = new Set();
      const names = [];
      const problems = [];
      for (const w of witnesses) {
        if (keys.has(hex(w.key))) continue;
        const bad = await verifyCosignature(note, w);
        if (bad) problems.push(bad);
        else {
          keys.add(hex(w.key));
          names.push(w.name);
        }
      }
      facts.cosigners = names;
      if (names.length < resolved.quorum) {
        fail(`${names.length} trusted witness cosignature(s) on the checkpoint; ${resolved.quorum} needed` + (problems.length ? ` (${problems.join("; ")})` : ""));
      }
      return `${names.length} of ${witnesses.length} witnesses (quorum ${resolved.quorum}): ${names.join(", ")}`;
    });
  }

  const failed = checks.find((c) => c.ok === false);
  const pending = !bundle.checkpoint;
  let status = null;
  if (!failed) status = !r ? "leaf-only" : facts.verdictsRequired > 0 ? "verified" : "provisional";
  return {
    ok: !failed,
    status,
    pending,
    error: failed ? failed.detail : null,
    checks,
    facts,
    trust: {
      pinned: resolved ? resolved.pinned : { logKey: false, witnesses: false, witnessQuorum: false },
      logKey: logKey && logKey.text,
      witnesses: witnesses.map((w) => w.text),
      witnessQuorum: resolved && resolved.quorum,
    },
  };
}

/** Plain words for what a passing report proves, and what it does not. */
export function explain(report, bundle) {
  const f = report.facts;
  const out = [];
  if (!report.ok) {
    out.push(`The check failed: ${report.error}. Do not rely on this receipt: it is not what the network signed and logged, or it was altered on the way to you.`);
    return out;
  }
  out.push(
    "Your browser checked this receipt itself, with Web Crypto (SHA-256 and Ed25519), without trusting the gateway that served it."
  );
  if (bundle.receipt) {
    const v = f.verdictsRequired > 0 ? `${f.verdicts} verifiers signed verdicts accepting this exact answer (the request's policy needs ${f.verdictsRequired})` : "the request's policy asked for no verdict, so nothing vouches for the answer beyond its node (provisional)";
    out.push(
      `It proves that the inference node ${bundle.leaf.node.slice(0, 16)}… signed this answer to this request for model ${bundle.leaf.model.slice(0, 16)}…; that ${v}; and that the log's leaf commits (salted hashes) to exactly this question, this answer and these fees.`
    );
  } else {
    out.push(
      "The text was not disclosed to you (only the account that paid sees it), so what is checked is the log leaf: its commitments to the request and the answer, the model, the node, the requester and the fees."
    );
  }
  out.push(
    `The leaf is entry ${bundle.index} of the transparency log: the Merkle inclusion proof leads to the root of a tree of ${f.size} entries, signed by the log and cosigned by ${(f.cosigners || []).length} witnesses (${report.trust.witnessQuorum} needed). The log can no longer drop or change it without the witnesses signing two different histories.`
  );
  out.push(
    report.trust.pinned.logKey && report.trust.pinned.witnesses
      ? "The log's key and the witnesses' keys were the ones you pinned."
      : report.trust.pinned.logKey || report.trust.pinned.witnesses
        ? `${report.trust.pinned.logKey ? "The log's key you pinned was used; the witnesses' keys were" : "The witnesses' keys you pinned were used; the log's key was"} taken from the receipt itself. Pin both to rule out a forged network.`
        : "The log's key and the witnesses' keys were taken from the receipt itself: this proves the receipt is consistent, not that these keys are the network's. Compare them with keys you trust (or pin them on the check page) to rule out a forged network."
  );
  return out;
}

/**
 * Checks the evidence of a slash (the ledger's `Evidence`): the signed
 * request, the accused node's signed answer to it, the committee's signed
 * verdicts rejecting that very pair and, against a verifier, its own signed
 * verdict accepting it.
 * Returns {ok, detail}. It does not re-decide the dispute (committee size
 * and draw are the ledger's rules); it shows the signed records hold.
 */
export async function checkEvidence(ev) {
  try {
    const r = ev.result;
    if (!(await verifyRecord(ev.request, TYPES.request, "signer"))) throw new Error("the request's signature does not verify");
    if (!(await verifyRecord(r, TYPES.result, "node"))) throw new Error("the answer's signature by its node does not verify");
    const q = hex(await recordHash(ev.request));
    if (r.request !== q) throw new Error("the answer is for another request than the evidence's");
    const h = hex(await recordHash(r));
    const seen = new Set();
    for (const v of ev.committee || []) {
      if (!(await verifyRecord(v, TYPES.verdict, "verifier"))) throw new Error(`the verdict by ${v.verifier.slice(0, 16)}… does not verify`);
      if (v.result !== h || v.request !== q) throw new Error(`the verdict by ${v.verifier.slice(0, 16)}… is about another request or answer`);
      if (v.decision !== "reject") throw new Error(`the verdict by ${v.verifier.slice(0, 16)}… does not reject`);
      seen.add(v.verifier);
    }
    let detail = `Node ${r.node.slice(0, 16)}… signed this answer (hash ${h.slice(0, 16)}…); ${seen.size} distinct verifiers signed verdicts rejecting it`;
    const reasons = [...new Set((ev.committee || []).map((v) => v.reason).filter(Boolean))];
    if (reasons.length) detail += ` (${reasons.join("; ")})`;
    if (ev.accused === "verifier") {
      const v = ev.verdict;
      if (!(await verifyRecord(v, TYPES.verdict, "verifier"))) throw new Error("the accused verifier's verdict does not verify");
      if (v.result !== h || v.request !== q || v.decision !== "accept") throw new Error("the accused verifier's verdict does not accept this answer to this request");
      detail += `; verifier ${v.verifier.slice(0, 16)}… signed a verdict accepting it`;
    }
    return { ok: true, detail: detail + "." };
  } catch (e) {
    return { ok: false, detail: e.message };
  }
}

// ---- Checked answers -------------------------------------------------------

/** A receipt or an answer that does not check; `report` holds every check when there is one. */
export class VerificationError extends Error {
  constructor(message, report = null) {
    super(message);
    this.name = "VerificationError";
    this.report = report;
  }
}

/**
 * Checks `bundle` against the pinned keys in `trust` (see `pinTrust`) and
 * returns the report, or throws a VerificationError naming the first check
 * that fails. With `allowPending`, a receipt no cosigned checkpoint covers
 * yet passes when everything else holds (its report says `pending`).
 */
export async function verifyReceipt(bundle, trust = {}, { allowPending = false } = {}) {
  const report = await checkReceipt(bundle, trust);
  const failed = report.checks.filter((c) => c.ok === false);
  const onlyPending = report.pending && failed.length === 1 && failed[0].id === "checkpoint";
  if (report.ok || (allowPending && onlyPending)) return report;
  throw new VerificationError(`the receipt does not verify: ${report.error}`, report);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Fetches receipt `id` from the gateway at `url` (`GET {url}/v1/receipts/{id}`;
 * with the owner's `apiKey` the text is disclosed), re-fetching every 500 ms
 * for up to `waitMs` while no cosigned checkpoint covers it.
 */
export async function fetchReceipt(url, id, { apiKey = null, waitMs = 0 } = {}) {
  if (!/^[0-9a-f]{64}$/.test(id)) throw new Error(`${JSON.stringify(id)} is not a receipt id (64 lowercase hex digits)`);
  const endpoint = `${url.replace(/\/+$/, "")}/v1/receipts/${id}`;
  const deadline = Date.now() + waitMs;
  for (;;) {
    const r = await fetch(endpoint, { headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {} });
    if (!r.ok) throw new Error(`fetching ${endpoint}: HTTP ${r.status}: ${(await r.text()).trim()}`);
    const bundle = await r.json();
    if (bundle.id !== id) throw new VerificationError(`asked for receipt ${id}, got receipt ${bundle.id}`);
    if (bundle.checkpoint || Date.now() >= deadline) return bundle;
    await sleep(500);
  }
}

/**
 * Chat completions from a verinfer gateway, each checked before it is
 * returned: the answer's receipt is fetched and checked (`verifyReceipt`),
 * and the text received must be the text the inference node signed for the
 * messages sent. The answer (the gateway's OpenAI-format JSON) gets a
 * `verinfer` member: {receipt, status, final, report}. A failed check
 * throws a VerificationError.
 *
 * Options: `baseURL` (the gateway's root URL: scheme, host and port),
 * `apiKey`, `trust` (pinned keys, `pinTrust`), `waitFinal` (wait for a
 * cosigned checkpoint and require it; default false: a receipt no
 * checkpoint covers yet passes with `final: false`), `waitMs` (how long to
 * wait for it, default 60 s).
 */
export class VerifiedClient {
  constructor({ baseURL, apiKey, trust = {}, waitFinal = false, waitMs = 60_000 }) {
    this.baseURL = baseURL.replace(/\/+$/, "").replace(/\/v1$/, "");
    this.apiKey = apiKey;
    this.trust = trust;
    this.waitFinal = waitFinal;
    this.waitMs = waitMs;
  }

  async #post(body) {
    const r = await fetch(`${this.baseURL}/v1/chat/completions`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${this.apiKey}` },
      body: JSON.stringify(body),
    });
    if (!r.ok) {
      const text = await r.text();
      let message = text.trim() || `HTTP ${r.status}`;
      try {
        message = JSON.parse(text).error.message;
      } catch {
        /* not an OpenAI error body */
      }
      throw new Error(`chat completion: HTTP ${r.status}: ${message}`);
    }
    return r;
  }

  /** A non-streamed chat completion (`body` as OpenAI's), checked. */
  async chat(body) {
    const r = await this.#post({ ...body, stream: false });
    const answer = await r.json();
    const text = answer.choices && answer.choices[0] && answer.choices[0].message ? answer.choices[0].message.content : null;
    answer.verinfer = await this.check(body, answer.verinfer, text);
    return answer;
  }

  /**
   * A streamed chat completion: yields the gateway's chunks as they come
   * and checks the answer after the last one (throwing there when it does
   * not check); the checked `verinfer` is then on the last chunk.
   */
  async *stream(body) {
    const r = await this.#post({ ...body, stream: true });
    const reader = r.body.getReader();
    const utf8in = new TextDecoder();
    let buffer = "";
    let text = "";
    let info = null;
    let last = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (value) buffer += utf8in.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event
          .split("\n")
          .filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trim())
          .join("\n");
        if (!data || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(`chat completion stream: ${chunk.error.message || JSON.stringify(chunk.error)}`);
        for (const c of chunk.choices || []) if (c.delta && c.delta.content) text += c.delta.content;
        if (chunk.verinfer) {
          info = chunk.verinfer;
          last = chunk;
          continue;
        }
        yield chunk;
      }
      if (done) break;
    }
    if (!last) throw new VerificationError("the stream ended without its verinfer receipt");
    last.verinfer = await this.check(body, info, text);
    yield last;
  }

  /**
   * Checks one answer: `info` is its `verinfer` object, `text` the text
   * received. Returns {receipt, status, final, report}.
   */
  async check(body, info, text) {
    if (!info || info.status === "rejected") {
      throw new VerificationError(`the answer was not verified: ${(info && info.reason) || "no verinfer receipt"}`);
    }
    const bundle = await fetchReceipt(this.baseURL, info.receipt_id, {
      apiKey: this.apiKey,
      waitMs: this.waitFinal ? this.waitMs : 0,
    });
    const report = await verifyReceipt(bundle, this.trust, { allowPending: !this.waitFinal });
    const r = bundle.receipt;
    if (!r) throw new VerificationError("the receipt's text was not disclosed: use the API key of the account that paid");
    if (text !== r.result.output_text) throw new VerificationError("the text received is not the text the inference node signed", report);
    if (info.model_id !== bundle.leaf.model) throw new VerificationError("the answer names another model than its receipt", report);
    const sent = (body.messages || []).map((m) => [m.role, m.content]);
    const signed = ((r.request.input && r.request.input.messages) || []).map((m) => [m.role, m.content]);
    if (sent.every(([, c]) => typeof c === "string") && canonical(sent) !== canonical(signed)) {
      throw new VerificationError("the receipt's request holds other messages than the ones sent", report);
    }
    // Before a checkpoint covers it, the status is what the certificate shows.
    const status = report.status || (report.facts.verdictsRequired > 0 ? "verified" : "provisional");
    return { receipt: bundle, status, final: !report.pending, report };
  }
}
