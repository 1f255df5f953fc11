//! `verinfer infer`: run a language model locally, streaming the answer, or
//! print the signed Request and Result records with `--json` (answered by
//! [`respond::respond`], or dishonestly by [`respond::respond_with_fault`]
//! with `--fault`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use verinfer_inference::respond::{self, Fault};
use verinfer_inference::{models, Engine, EngineOptions};
use verinfer_types::records::{
    Constraint, Decoding, Input, Message, Nonce, Policy, Request, RequestTag,
};
use verinfer_types::{Hash, Signature, SignedRecord};

/// `verinfer infer [OPTIONS] PROMPT`
#[derive(Args, Debug)]
pub(crate) struct InferArgs {
    /// Model name (e.g. smollm2-135m) or path to a GGUF file.
    #[arg(long, default_value = models::DEFAULT_MODEL)]
    pub model: String,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Temperature x 1000 (0 = greedy).
    #[arg(long, default_value_t = 0)]
    pub temperature_milli: u32,
    /// Keep only the k most likely tokens when sampling (0 = no limit).
    #[arg(long, default_value_t = 0)]
    pub top_k: u32,
    /// Nucleus threshold x 1000 when sampling (1000 = no limit).
    #[arg(long, default_value_t = 1000)]
    pub top_p_milli: u32,
    /// Sampler seed (at most 2^53 - 1).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop sequence (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Put log-probabilities in the Result, with this many best tokens per
    /// position (0 to 20).
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub logprobs: Option<u32>,
    /// Worker threads (0 = all CPUs). Output does not depend on it.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// A system message to put before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Use the prompt as raw text, without the model's chat template.
    #[arg(long)]
    pub raw: bool,
    /// Print one JSON object {"request": ..., "result": ...} instead of streaming.
    #[arg(long)]
    pub json: bool,
    /// Node key signing the Request and Result with --json (created if missing;
    /// default: node.key in the verinfer data directory).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Print token counts and speed to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Answer dishonestly, with a properly signed Result (needs --json; for
    /// testing verifiers): swap-model:PATH, edit-token:POS, truncate:N,
    /// extend:N, wrong-seed (sampled requests), replay:FILE (an earlier
    /// --json output), off-mask:POS (constrained requests) or edit-logprob:POS
    /// (with --logprobs).
    #[arg(long, value_name = "KIND")]
    pub fault: Option<Fault>,
    /// Constrain the output to the JSON schema in this file.
    #[arg(long, value_name = "FILE", conflicts_with = "json_object")]
    pub json_schema: Option<PathBuf>,
    /// Constrain the output to a JSON object.
    #[arg(long)]
    pub json_object: bool,
    /// The prompt ("-" reads it from stdin).
    pub prompt: String,
}

const MAX_SEED: u64 = (1 << 53) - 1;

/// The decoding constraint of `--json-schema` or `--json-object`.
fn constraint(args: &InferArgs) -> anyhow::Result<Option<Constraint>> {
    let c = match (&args.json_schema, args.json_object) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let schema = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            Constraint::JsonSchema(schema)
        }
        (None, true) => Constraint::JsonObject,
        (None, false) => return Ok(None),
    };
    verinfer_inference::constraint::validate(&c).context("--json-schema")?;
    Ok(Some(c))
}

/// `name` in the verinfer data directory (the parent of the models cache),
/// where keys live by default.
pub(crate) fn default_key_path(name: &str) -> anyhow::Result<PathBuf> {
    let dir = models::models_dir()?;
    Ok(dir
        .parent()
        .map_or_else(|| dir.clone(), |p| p.to_path_buf())
        .join(name))
}

/// Runs `verinfer infer`.
pub(crate) fn run(args: InferArgs) -> anyhow::Result<()> {
    check_args(&args)?;
    let prompt = read_prompt(&args.prompt)?;
    let path = models::resolve(&args.model)?;
    let model_id: Hash = models::file_sha256(&path)?
        .parse()
        .map_err(|_| anyhow::anyhow!("bad model hash"))?;
    let mut engine = Engine::load(
        &path,
        EngineOptions {
            threads: args.threads,
            force_scalar: false,
        },
    )
    .with_context(|| format!("loading {}", path.display()))?;
    let input = input_of(&args, prompt);
    let decoding = decoding_of(&args)?;
    let start = std::time::Instant::now();
    if args.json {
        respond_json(&args, &mut engine, model_id, input, decoding, start)
    } else {
        stream(&mut engine, &input, &decoding, args.stats, start)
    }
}

/// Refuses flags that do not go together or are out of range.
fn check_args(args: &InferArgs) -> anyhow::Result<()> {
    if args.fault.is_some() && !args.json {
        bail!("--fault needs --json: a fault is a dishonest signed Result, and only --json prints the Result record");
    }
    if args.seed > MAX_SEED {
        bail!("--seed must be at most 2^53 - 1");
    }
    if args.top_p_milli > 1000 {
        bail!("--top-p-milli must be at most 1000");
    }
    Ok(())
}

/// The prompt, read from stdin when it is `-`.
fn read_prompt(prompt: &str) -> anyhow::Result<String> {
    if prompt != "-" {
        return Ok(prompt.to_owned());
    }
    let mut s = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
        .context("reading the prompt from stdin")?;
    Ok(s)
}

/// The raw prompt, or a chat of the optional system message and the prompt.
fn input_of(args: &InferArgs, prompt: String) -> Input {
    if args.raw {
        return Input::Prompt(prompt);
    }
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(Message {
            role: "system".into(),
            content: s.clone(),
        });
    }
    messages.push(Message {
        role: "user".into(),
        content: prompt,
    });
    Input::Messages(messages)
}

fn decoding_of(args: &InferArgs) -> anyhow::Result<Decoding> {
    Ok(Decoding {
        temperature_milli: args.temperature_milli,
        top_k: args.top_k,
        top_p_milli: args.top_p_milli,
        seed: args.seed,
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        constraint: constraint(args)?,
        top_logprobs: args.logprobs,
        ..Default::default()
    })
}

/// Prints the answer as it is generated. Streaming needs no records, hence
/// no key: the same prompt and parameters as `respond`, without the signing.
fn stream(
    engine: &mut Engine,
    input: &Input,
    decoding: &Decoding,
    stats: bool,
    start: std::time::Instant,
) -> anyhow::Result<()> {
    let tokens = respond::prompt_tokens(engine, input)?;
    let mut out = std::io::stdout().lock();
    let g = engine.generate(
        &tokens,
        &respond::generate_params(decoding),
        &mut |_, piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        },
    )?;
    let _ = writeln!(out);
    if stats {
        print_stats(&g.usage, g.finish_reason, start, engine.threads());
    }
    Ok(())
}

/// Signs a request with the node key, answers it (or forges the asked
/// fault) and prints both records as JSON.
fn respond_json(
    args: &InferArgs,
    engine: &mut Engine,
    model_id: Hash,
    input: Input,
    decoding: Decoding,
    start: std::time::Instant,
) -> anyhow::Result<()> {
    let key_path = match &args.key {
        Some(p) => p.clone(),
        None => default_key_path("node.key")?,
    };
    let key = crate::cmd_keys::load_or_create_key(&key_path)?;
    let mut request = Request {
        tag: RequestTag,
        model: model_id,
        input,
        decoding,
        policy: Policy::default(),
        requester: key.public(),
        nonce: Nonce::random(),
        signer: key.public(),
        signature: Signature::default(),
    };
    request.sign(&key)?;
    let result = match &args.fault {
        None => respond::respond(engine, model_id, &request, &key, &mut |_, _| {})?,
        // The error names the fault already.
        Some(fault) => respond::respond_with_fault(engine, model_id, &request, &key, fault)?,
    };
    if args.stats {
        let usage = verinfer_inference::Usage {
            prompt_tokens: result.usage.prompt_tokens,
            completion_tokens: result.usage.completion_tokens,
        };
        print_stats(&usage, result.finish_reason, start, engine.threads());
    }
    let out = serde_json::json!({ "request": request, "result": result });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn print_stats(
    usage: &verinfer_inference::Usage,
    finish: impl std::fmt::Debug,
    start: std::time::Instant,
    threads: usize,
) {
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "[{} prompt + {} generated tokens in {:.2}s, {:.1} tokens/s, {} threads, finish: {:?}]",
        usage.prompt_tokens,
        usage.completion_tokens,
        secs,
        f64::from(usage.completion_tokens) / secs.max(1e-9),
        threads,
        finish
    );
}
