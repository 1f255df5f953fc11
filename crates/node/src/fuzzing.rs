//! The checks run on every parser of untrusted input, one function per
//! parser, shared by the coverage-guided fuzz targets (`fuzz/`) and the
//! arbitrary-input property tests of the normal suite
//! (`tests/untrusted_input.rs`), so both drive exactly the same code. Each
//! takes any bytes and panics only when a property fails: a parser
//! panicked, or what it accepted does not print back as it came.

use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use std::sync::OnceLock;
use verinfer_inference::gguf::Gguf;
use verinfer_ledger::tx::{Genesis, Transaction};
use verinfer_log::tiles::{parse_bundle, Tile};
use verinfer_log::witness::{verify_cosignature, witness_key};
use verinfer_log::{Checkpoint, SignedCheckpoint};
use verinfer_types::note::{Note, VerifierKey, ALG_ED25519};
use verinfer_types::records::{Certificate, InferenceResult, Leaf, Receipt, Request, Verdict};
use verinfer_types::{Record, SecretKey};
use verinfer_verify::receipt::{check_receipt, ReceiptBundle, Trust};

/// A check: panics only when a property fails.
pub type Check = fn(&[u8]);

/// The fuzz targets by name (as in `fuzz/Cargo.toml` and `fuzz/seeds/`).
pub const TARGETS: [(&str, Check); 7] = [
    ("openai_request", openai_request),
    ("records", records),
    ("signed_note", signed_note),
    ("tile_path", tile_path),
    ("receipt_bundle", receipt_bundle),
    ("node_auth", node_auth),
    ("gguf_header", gguf_header),
];

/// OpenAI-compatible request bodies, as the gateway parses them: a parsed
/// request or a 400 naming the problem. Chat and plain completions parse
/// different fields of one body.
pub fn openai_request(data: &[u8]) {
    let _ = crate::roles::gateway::openai::parse(data, true);
    let _ = crate::roles::gateway::openai::parse(data, false);
}

fn record<T: Record>(data: &[u8]) {
    if let Ok(r) = T::from_canonical(data) {
        let again = r.to_canonical().expect("a parsed record encodes");
        assert_eq!(again, data, "{} has a second encoding", T::TYPE);
        let _ = r.hash();
    }
}

/// Canonical records from peers: every record type parses strictly, and
/// what parses is its own canonical encoding (one encoding per record).
pub fn records(data: &[u8]) {
    record::<Request>(data);
    record::<InferenceResult>(data);
    record::<Verdict>(data);
    record::<Certificate>(data);
    record::<Receipt>(data);
    record::<Leaf>(data);
    record::<Transaction>(data);
    record::<Genesis>(data);
}

/// The keys of the seed corpus (fixed seeds, so seeds can carry valid
/// signatures): a log key and a witness key.
fn note_keys() -> &'static (VerifierKey, VerifierKey) {
    static KEYS: OnceLock<(VerifierKey, VerifierKey)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let log = SecretKey::from_seed(&[1; 32]);
        let witness = SecretKey::from_seed(&[2; 32]);
        (
            VerifierKey::new("example.com/fuzz", ALG_ED25519, log.public()).expect("log key"),
            witness_key("witness.example/fuzz", &witness).expect("witness key"),
        )
    })
}

/// C2SP signed notes, verifier keys, checkpoints and cosignatures as they
/// arrive from logs and witnesses; a parsed note prints back as it came.
pub fn signed_note(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (log_key, witness) = note_keys();
    let _ = text.parse::<VerifierKey>();
    let _ = Checkpoint::parse_text(text);
    if let Ok(note) = Note::parse(text) {
        assert_eq!(Note::parse(&note.to_string()).expect("reparse"), note);
        let _ = note.verify(log_key);
        let _ = verify_cosignature(&note, witness);
    }
    let _ = SignedCheckpoint::open(text, log_key);
}

/// C2SP tlog-tiles paths from HTTP clients: a path parses to a tile whose
/// arithmetic cannot overflow and which prints back as the same path, or is
/// refused (a 400). Entry bundles from a log parse or are refused.
pub fn tile_path(data: &[u8]) {
    let _ = parse_bundle(data);
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tile) = Tile::parse(path) {
        assert_eq!(tile.path(), path.trim_start_matches('/'));
        assert!(tile.node_range().is_some());
        let _ = tile.exists_at(u64::MAX);
    }
}

/// Receipt bundles as `verinfer verify` and `/v1/receipts` clients read
/// them: arbitrary JSON checks out or is refused with an error.
pub fn receipt_bundle(data: &[u8]) {
    let Ok(bundle) = serde_json::from_slice::<ReceiptBundle>(data) else {
        return;
    };
    if let Ok(trust) = Trust::from_bundle(&bundle) {
        let _ = check_receipt(&bundle, &trust);
    }
}

/// Signed messages between nodes: the authentication headers (key,
/// receiver, time, nonce, signature) of any request are checked without a
/// panic. Input: lines of method, path, one value per header; the rest is
/// the body.
pub fn node_auth(data: &[u8]) {
    use crate::auth::{Gate, KEY, NONCE, SIGNATURE, TIME, TO};
    // One gate (and its nonce file) for the whole run.
    static GATE: OnceLock<(Gate, tempfile::TempDir)> = OnceLock::new();
    let (gate, _) = GATE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a directory for the nonce file");
        let me = SecretKey::from_seed(&[3; 32]).public();
        (Gate::open(me, dir.path()).expect("the gate"), dir)
    });
    let mut parts = data.splitn(8, |&b| b == b'\n');
    let mut next = || parts.next().unwrap_or_default();
    let method = Method::from_bytes(next()).unwrap_or(Method::POST);
    let uri = std::str::from_utf8(next())
        .ok()
        .and_then(|u| u.parse::<Uri>().ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for name in [KEY, TO, TIME, NONCE, SIGNATURE] {
        if let Ok(v) = HeaderValue::from_bytes(next()) {
            headers.insert(name, v);
        }
    }
    let body = next();
    let _ = gate.check(&method, &uri, &headers, body);
}

/// GGUF model files (downloaded, so untrusted): the header, metadata and
/// tensor directory parse or are refused, with every tensor inside the file.
pub fn gguf_header(data: &[u8]) {
    if let Ok(g) = Gguf::from_bytes(data) {
        for t in g.tensors.values() {
            assert!(g.tensor_data(t).len() == t.len);
        }
        let _ = g.get_u64("general.alignment");
        let _ = g.get_str("general.architecture");
    }
}
