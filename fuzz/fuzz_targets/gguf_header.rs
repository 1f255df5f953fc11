//! GGUF model files (downloaded, so untrusted): the header, metadata and
//! tensor directory parse or are refused, with every tensor inside the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verinfer_inference::gguf::Gguf;

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gguf::from_bytes(data) {
        for t in g.tensors.values() {
            assert!(g.tensor_data(t).len() == t.len);
        }
        let _ = g.get_u64("general.alignment");
        let _ = g.get_str("general.architecture");
    }
});
