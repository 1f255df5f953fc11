//! Canonical records from peers: every record type parses strictly, and
//! what parses is its own canonical encoding (one encoding per record).
#![no_main]

use libfuzzer_sys::fuzz_target;
use verinfer_ledger::tx::{Genesis, Transaction};
use verinfer_types::records::{Certificate, InferenceResult, Leaf, Receipt, Request, Verdict};
use verinfer_types::Record;

fn check<T: Record>(data: &[u8]) {
    if let Ok(r) = T::from_canonical(data) {
        let again = r.to_canonical().expect("a parsed record encodes");
        assert_eq!(again, data, "{} has a second encoding", T::TYPE);
        let _ = r.hash();
    }
}

fuzz_target!(|data: &[u8]| {
    check::<Request>(data);
    check::<InferenceResult>(data);
    check::<Verdict>(data);
    check::<Certificate>(data);
    check::<Receipt>(data);
    check::<Leaf>(data);
    check::<Transaction>(data);
    check::<Genesis>(data);
});
