//! C2SP signed notes, verifier keys, checkpoints and cosignatures as they
//! arrive from logs and witnesses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use verinfer_log::witness::{verify_cosignature, witness_key};
use verinfer_log::{Checkpoint, SignedCheckpoint};
use verinfer_types::note::{Note, VerifierKey, ALG_ED25519};
use verinfer_types::SecretKey;

/// The keys of the seed corpus (fixed seeds, so seeds can carry valid
/// signatures): a log key and a witness key.
fn keys() -> &'static (VerifierKey, VerifierKey) {
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

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (log_key, witness) = keys();
    let _ = text.parse::<VerifierKey>();
    let _ = Checkpoint::parse_text(text);
    if let Ok(note) = Note::parse(text) {
        // A parsed note prints back as it came.
        assert_eq!(Note::parse(&note.to_string()).expect("reparse"), note);
        let _ = note.verify(log_key);
        let _ = verify_cosignature(&note, witness);
    }
    let _ = SignedCheckpoint::open(text, log_key);
});
