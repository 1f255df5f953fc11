//! Receipt bundles as `verinfer verify` and `/v1/receipts` clients read
//! them: arbitrary JSON checks out or is refused with an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verinfer_verify::receipt::{check_receipt, ReceiptBundle, Trust};

fuzz_target!(|data: &[u8]| {
    let Ok(bundle) = serde_json::from_slice::<ReceiptBundle>(data) else {
        return;
    };
    if let Ok(trust) = Trust::from_bundle(&bundle) {
        let _ = check_receipt(&bundle, &trust);
    }
});
