//! Writes the synthetic model of the llama.cpp reference test
//! (`testing::tiny_model_for_llama_cpp` with the default `TinySpec`) to a file, so
//! `scripts/llama_logits/record.py` can run llama.cpp on the same bytes.
//!
//!     cargo build --workspace --example tiny_gguf && target/debug/examples/tiny_gguf OUT.gguf

use std::process::ExitCode;

use verinfer_inference::testing::{tiny_model_for_llama_cpp, TinySpec};

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: tiny_gguf OUT.gguf");
        return ExitCode::from(2);
    };
    match std::fs::write(&out, tiny_model_for_llama_cpp(&TinySpec::default())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writing {}: {e}", out.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}
