//! The checks run on every parser of untrusted input, one function per
//! parser, shared by the coverage-guided fuzz targets (`fuzz/`) and the
//! arbitrary-input property tests of the normal suite
//! (`tests/untrusted_input.rs`), so both drive exactly the same code. Each
//! takes any bytes and panics only when a property fails: a parser
//! panicked, or what it accepted does not print back as it came.
//!
//! This crate depends only on the light crates that hold the parsers: the
//! fuzz build instruments every dependency, so it stays a minute's build.

use std::sync::OnceLock;
use verinfer_gguf::Gguf;
use verinfer_receipt::{check_receipt, ReceiptBundle, Trust};
use verinfer_tlog::tiles::{parse_bundle, Tile};
use verinfer_tlog::witness::{verify_cosignature, witness_key};
use verinfer_tlog::{Checkpoint, SignedCheckpoint};
use verinfer_types::envelope::{Envelope, KEY, NONCE, SIGNATURE, TIME, TO};
use verinfer_types::note::{Note, VerifierKey, ALG_ED25519};
use verinfer_types::records::{Certificate, InferenceResult, Leaf, Receipt, Request, Verdict};
use verinfer_types::tx::{Genesis, Transaction};
use verinfer_types::{PublicKey, Record, SecretKey};

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

/// OpenAI-compatible request bodies, as the gateway parses them: a parsed
/// request or a 400 (naming the field when one is at fault). Chat and plain
/// completions parse different fields of one body. Whether a JSON schema
/// compiles is the engine's to say (not built here): every schema passes, so
/// the fuzzer spends its time in the parser.
pub fn openai_request(data: &[u8]) {
    for chat in [true, false] {
        if let Err(e) = verinfer_openai::parse(data, chat, &|_| Ok(())) {
            assert_eq!(e.status.as_u16(), 400, "{}", e.message);
        }
    }
}

/// Signed messages between nodes: the envelope headers (key, receiver,
/// time, nonce, signature) of any request parse or are refused by name;
/// what parses prints back as it came and is checked without a panic.
/// Input: lines of method, path, one value per header; the rest is the
/// body.
pub fn node_auth(data: &[u8]) {
    static ME: OnceLock<PublicKey> = OnceLock::new();
    let me = ME.get_or_init(|| SecretKey::from_seed(&[3; 32]).public());
    let parts: Vec<&[u8]> = data.splitn(8, |&b| b == b'\n').collect();
    let text = |i: usize| parts.get(i).and_then(|p| std::str::from_utf8(p).ok());
    let names = [KEY, TO, TIME, NONCE, SIGNATURE];
    let header = |name| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| text(2 + i))
    };
    let Ok(e) = Envelope::parse(header) else {
        return;
    };
    let printed = e.headers();
    let again = Envelope::parse(|name| {
        printed
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    });
    assert_eq!(again.as_ref(), Ok(&e), "an envelope prints back as it came");
    // At the sender's own time, so that the signature is checked too.
    let body = parts.get(7).copied().unwrap_or_default();
    let _ = e.verify(
        me,
        e.time,
        text(0).unwrap_or("POST"),
        text(1).unwrap_or("/"),
        body,
    );
}
