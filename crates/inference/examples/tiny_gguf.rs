//! Writes a synthetic model of the llama.cpp reference test
//! (`testing::reference_spec(NAME)`, written by
//! `testing::tiny_model_for_llama_cpp`) to a file, so
//! `scripts/llama_logits/record.py` can run llama.cpp on the same bytes; or,
//! with the name `qwen3-0.6b-q4_0` or `qwen3-0.6b-q4_k`, the benchmarks'
//! Qwen3-0.6B-shaped model (`testing::qwen3_06b_spec`).
//!
//!     cargo build --workspace --example tiny_gguf && target/debug/examples/tiny_gguf [NAME] OUT.gguf
//!
//! NAME defaults to `tiny-llama`.

use std::process::ExitCode;

use verinfer_inference::gguf::GgmlType;
use verinfer_inference::testing::{qwen3_06b_spec, reference_spec, tiny_model_for_llama_cpp};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let (name, out) = match &args[..] {
        [out] => ("tiny-llama".to_string(), out),
        [name, out] => (name.to_string_lossy().into_owned(), out),
        _ => {
            eprintln!("usage: tiny_gguf [NAME] OUT.gguf");
            return ExitCode::from(2);
        }
    };
    let spec = match name.as_str() {
        "qwen3-0.6b-q4_0" => Some(qwen3_06b_spec(GgmlType::Q4_0, GgmlType::Q8_0)),
        "qwen3-0.6b-q4_k" => Some(qwen3_06b_spec(GgmlType::Q4K, GgmlType::Q6K)),
        _ => reference_spec(&name),
    };
    let Some(spec) = spec else {
        eprintln!("unknown model name {name:?}");
        return ExitCode::from(2);
    };
    match std::fs::write(out, tiny_model_for_llama_cpp(&spec)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("writing {}: {e}", out.to_string_lossy());
            ExitCode::FAILURE
        }
    }
}
