//! `verinfer check FILE`: one verifier check of a `{"request", "result"}`
//! object as `verinfer infer --json` prints it.
//!
//! Prints the signed Verdict as JSON on stdout. The exit status follows
//! `diff`: 0 when the verifier accepts, 1 when it rejects (the reason code,
//! first failing position and message go to stderr), and 2 when no verdict
//! could be given (unreadable file, bad JSON, wrong record types, a model
//! that is not the requested one), so a script can tell a caught cheat from a
//! broken invocation.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use verinfer_inference::{models, Engine, EngineOptions};
use verinfer_types::records::{Decision, InferenceResult, Request};
use verinfer_types::Hash;
use verinfer_verify::rules::reason_code;
use verinfer_verify::Checker;

/// `verinfer check [OPTIONS] FILE`
#[derive(Args, Debug)]
pub(crate) struct CheckArgs {
    /// Model name (e.g. smollm2-135m) or path to a GGUF file; its SHA-256
    /// must be the model the request names.
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    pub model: String,
    /// Verifier key signing the Verdict (created if missing; default:
    /// verifier.key in the verinfer data directory).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Worker threads (0 = all CPUs). The verdict does not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// The `verinfer infer --json` output to check ("-" reads stdin).
    pub file: String,
}

/// The object `verinfer infer --json` prints.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pair {
    request: Request,
    result: InferenceResult,
}

fn read_pair(file: &str) -> anyhow::Result<Pair> {
    let (text, name) = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        (s, "stdin".to_string())
    } else {
        let s =
            std::fs::read_to_string(Path::new(file)).with_context(|| format!("reading {file}"))?;
        (s, file.to_string())
    };
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{name} is not a {{\"request\": verinfer.request.v1, \"result\": verinfer.result.v1}} object as `verinfer infer --json` prints it"
        )
    })
}

/// Runs `verinfer check`; `Ok(true)` on accept, `Ok(false)` on reject.
pub(crate) fn run(args: CheckArgs) -> anyhow::Result<bool> {
    // Input first: a bad file should not cost a model load.
    let pair = read_pair(&args.file)?;
    let path = models::resolve(&args.model)?;
    let model_id: Hash = models::file_sha256(&path)?
        .parse()
        .map_err(|_| anyhow::anyhow!("bad model hash"))?;
    // A verifier can only check with the requested model. A Result naming
    // another model than its request is the node's fault, not the
    // verifier's: the checker rejects it (`wrong_model`) with a verdict.
    if pair.request.model != model_id {
        bail!(
            "the request asks for model {}, but {} ({}) has id {model_id}; pass the requested model with --model",
            pair.request.model,
            args.model,
            path.display()
        );
    }
    let engine = Engine::load(
        &path,
        EngineOptions {
            threads: args.threads,
            force_scalar: false,
        },
    )
    .with_context(|| format!("loading {}", path.display()))?;
    let key_path = match &args.key {
        Some(p) => p.clone(),
        None => crate::cmd_infer::default_key_path("verifier.key")?,
    };
    let key = crate::cmd_keys::load_or_create_key(&key_path)?;
    let mut checker = Checker::new(engine, model_id, key);
    let verdict = checker
        .verdict(&pair.request, &pair.result)
        .context("the verifier could not check this result")?;
    println!("{}", serde_json::to_string_pretty(&verdict)?);
    if verdict.decision == Decision::Accept {
        eprintln!(
            "accepted: {} output positions checked",
            verdict.checked_positions
        );
        return Ok(true);
    }
    let reason = verdict.reason.as_deref().unwrap_or("(no reason given)");
    eprintln!("rejected: {}", reason_code(reason));
    if let Some(p) = verdict.failed_position {
        eprintln!("  first failing position: {p}");
    }
    eprintln!("  reason: {reason}");
    Ok(false)
}
