//! `verinfer infer`: run a language model locally, streaming the answer, or
//! print the signed Request and Result records with `--json`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use verinfer_inference::{
    models, ChatMessage, Engine, EngineOptions, GenerateParams, SamplingParams,
};
use verinfer_types::records::{
    Decoding, FinishReason, InferenceResult, Input, Message, Nonce, Policy, Request, RequestTag,
    ResultTag, Usage,
};
use verinfer_types::{Hash, Record, Signature, SignedRecord};

/// `verinfer infer [OPTIONS] PROMPT`
#[derive(Args, Debug)]
pub struct InferArgs {
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
    /// The prompt ("-" reads it from stdin).
    pub prompt: String,
}

const MAX_SEED: u64 = (1 << 53) - 1;

fn default_key_path() -> anyhow::Result<PathBuf> {
    let dir = models::models_dir()?;
    Ok(dir
        .parent()
        .map_or_else(|| dir.clone(), |p| p.to_path_buf())
        .join("node.key"))
}

/// Runs `verinfer infer`.
pub fn run(args: InferArgs) -> anyhow::Result<()> {
    if args.seed > MAX_SEED {
        bail!("--seed must be at most 2^53 - 1");
    }
    if args.top_p_milli > 1000 {
        bail!("--top-p-milli must be at most 1000");
    }
    let prompt = if args.prompt == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("reading the prompt from stdin")?;
        s
    } else {
        args.prompt.clone()
    };
    let path = models::resolve(&args.model)?;
    let model_id = models::file_sha256(&path)?;
    let mut engine = Engine::load(
        &path,
        EngineOptions {
            threads: args.threads,
            force_scalar: false,
        },
    )
    .with_context(|| format!("loading {}", path.display()))?;

    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s));
    }
    messages.push(ChatMessage::new("user", &prompt));
    let (input, tokens) = if args.raw {
        let toks = engine.model().tokenizer.encode(&prompt, false);
        (Input::Prompt(prompt.clone()), toks)
    } else {
        let toks = engine.chat_prompt(&messages)?;
        let msgs = messages
            .iter()
            .map(|m| Message {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect();
        (Input::Messages(msgs), toks)
    };
    let params = GenerateParams {
        max_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature_milli: args.temperature_milli,
            top_k: args.top_k,
            top_p_milli: args.top_p_milli,
            seed: args.seed,
        },
        stop: args.stop.clone(),
    };

    let start = std::time::Instant::now();
    let generation = if args.json {
        engine.generate(&tokens, &params, &mut |_, _| {})?
    } else {
        let mut out = std::io::stdout().lock();
        let g = engine.generate(&tokens, &params, &mut |_, piece| {
            let _ = out.write_all(piece.as_bytes());
            let _ = out.flush();
        })?;
        let _ = writeln!(out);
        g
    };
    let secs = start.elapsed().as_secs_f64();
    if args.stats {
        eprintln!(
            "[{} prompt + {} generated tokens in {:.2}s, {:.1} tokens/s, {} threads, finish: {:?}]",
            generation.usage.prompt_tokens,
            generation.usage.completion_tokens,
            secs,
            f64::from(generation.usage.completion_tokens) / secs.max(1e-9),
            engine.threads(),
            generation.finish_reason
        );
    }
    if !args.json {
        return Ok(());
    }

    let key_path = match &args.key {
        Some(p) => p.clone(),
        None => default_key_path()?,
    };
    let key = crate::cmd_keys::load_or_create_key(&key_path)?;
    let model: Hash = model_id
        .parse()
        .map_err(|_| anyhow::anyhow!("bad model hash"))?;
    let mut request = Request {
        tag: RequestTag,
        model,
        input,
        decoding: Decoding {
            temperature_milli: args.temperature_milli,
            top_k: args.top_k,
            top_p_milli: args.top_p_milli,
            seed: args.seed,
            max_tokens: args.max_tokens,
            stop: args.stop.clone(),
        },
        policy: Policy::default(),
        requester: key.public(),
        nonce: Nonce::random(),
        signer: key.public(),
        signature: Signature::default(),
    };
    request.sign(&key)?;
    let finish_reason = match generation.finish_reason {
        verinfer_inference::FinishReason::Eos => FinishReason::Eos,
        verinfer_inference::FinishReason::Stop => FinishReason::Stop,
        verinfer_inference::FinishReason::Length => FinishReason::Length,
    };
    let mut result = InferenceResult {
        tag: ResultTag,
        request: request.hash()?,
        model,
        engine: verinfer_inference::ENGINE_VERSION.to_string(),
        output_tokens: generation.tokens.clone(),
        output_text: generation.text.clone(),
        finish_reason,
        usage: Usage {
            prompt_tokens: generation.usage.prompt_tokens,
            completion_tokens: generation.usage.completion_tokens,
        },
        node: key.public(),
        signature: Signature::default(),
    };
    result.sign(&key)?;
    let out = serde_json::json!({ "request": request, "result": result });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
