//! What the network costs on top of inference: the devnet in this process
//! (2 inference nodes, 3 verifiers, quorum 2, 1 engine thread each), driven
//! through the API.
//!
//! - sequential verified chats (32 tokens): median latency, against the same
//!   generation on a bare engine in this process, measured alternately;
//! - time to the first streamed token;
//! - 50 concurrent chats (16 tokens): answers and output tokens per second;
//! - where a sequential chat's time goes: the medians of the nodes' debug
//!   events of target `latency` (gateway steps, the inference node's
//!   prefill, decode and signing, the verifiers' wait and scoring pass).
//!
//! Run: `cargo bench -p verinfer-node --bench network`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::Layer;
use verinfer_inference::{Engine, EngineOptions};
use verinfer_node::devnet::{self, DevnetOptions};
use verinfer_node::testing::chat;
use verinfer_types::records::{Decoding, Input, Message};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The `latency` events' values by step (`phase` for the gateway's, the
/// event's message and the field's name for the nodes').
#[derive(Clone, Default)]
struct Steps(Arc<Mutex<BTreeMap<String, Vec<f64>>>>);

impl<S: tracing::Subscriber> Layer<S> for Steps {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        #[derive(Default)]
        struct Fields {
            name: String,
            values: Vec<(&'static str, f64)>,
        }
        impl tracing::field::Visit for Fields {
            fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                if f.name() == "phase" {
                    self.name = v.to_string();
                }
            }
            fn record_f64(&mut self, f: &tracing::field::Field, v: f64) {
                self.values.push((f.name(), v));
            }
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.name = format!("{v:?}");
                }
            }
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut steps = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (field, v) in fields.values {
            let key = if field == "ms" {
                fields.name.clone()
            } else {
                format!("{}.{field}", fields.name)
            };
            steps.entry(key).or_default().push(v);
        }
    }
}

fn main() -> anyhow::Result<()> {
    let steps = Steps::default();
    let only_latency =
        tracing_subscriber::filter::Targets::new().with_target("latency", tracing::Level::DEBUG);
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(steps.clone().with_filter(only_latency)),
    )?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let mut opts = DevnetOptions::new(dir.path().to_path_buf());
        opts.listen = "127.0.0.1:0".into();
        let net = devnet::run(opts).await?;
        let http = Arc::new(reqwest::Client::new());
        let path = devnet::model_path(None)?;
        let mut engine = Engine::load(&path, EngineOptions { threads: 1, ..Default::default() })?;
        let prompts: Vec<String> = (0..15).map(|i| format!("Tell me something about the number {i}.")).collect();
        for p in prompts.iter().take(2) {
            chat(&http, &net.url, &net.api_key, p, 32, false).await?;
        }

        steps.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let (mut api, mut bare, mut ttft) = (Vec::new(), Vec::new(), Vec::new());
        let mut tokens = 0u64;
        for p in &prompts {
            let t = Instant::now();
            let r = chat(&http, &net.url, &net.api_key, p, 32, false).await?;
            anyhow::ensure!(r.verification() == "verified", "{}", r.text);
            api.push(t.elapsed().as_secs_f64() * 1e3);
            let input = Input::Messages(vec![Message { role: "user".into(), content: p.clone() }]);
            let decoding = Decoding { max_tokens: 32, ..Decoding::default() };
            let t = Instant::now();
            let prompt = verinfer_inference::respond::prompt_tokens(&engine, &input)?;
            let g = engine.generate(&prompt, &verinfer_inference::respond::generate_params(&decoding), &mut |_, _| {})?;
            bare.push(t.elapsed().as_secs_f64() * 1e3);
            tokens += g.tokens.len() as u64;
            // Time to first token, streamed.
            let t = Instant::now();
            let resp = http
                .post(format!("{}/v1/chat/completions", net.url))
                .bearer_auth(&net.api_key)
                .json(&serde_json::json!({"model": "smollm2-135m", "stream": true, "max_tokens": 32,
                    "messages": [{"role": "user", "content": p}]}))
                .send()
                .await?;
            let mut s = resp.bytes_stream();
            use futures_util::StreamExt;
            if s.next().await.is_some() {
                ttft.push(t.elapsed().as_secs_f64() * 1e3);
            }
            while s.next().await.is_some() {}
        }
        println!("sequential, {} chats of {} tokens on average:", prompts.len(), tokens / prompts.len() as u64);
        println!("  verified chat through the API   median {:7.1} ms", median(api.clone()));
        println!("  bare generation, same requests  median {:7.1} ms", median(bare.clone()));
        println!("  ratio                           {:7.2}x", median(api) / median(bare));
        println!("  first streamed token            median {:7.1} ms", median(ttft));
        println!("  where a verified chat's time goes (medians, ms):");
        for (step, v) in std::mem::take(&mut *steps.0.lock().unwrap_or_else(|e| e.into_inner())) {
            println!("    {step:<32} {:7.1}  ({} samples)", median(v.clone()), v.len());
        }

        for concurrency in [8usize, 50] {
            let t = Instant::now();
            let tasks: Vec<_> = (0..concurrency)
                .map(|i| {
                    let (http, url, key) = (http.clone(), net.url.clone(), net.api_key.clone());
                    tokio::spawn(async move { chat(&http, &url, &key, &format!("Count to {i}."), 16, false).await })
                })
                .collect();
            let mut out_tokens = 0u64;
            for task in tasks {
                let r = task.await??;
                anyhow::ensure!(r.verification() == "verified", "{}", r.text);
                out_tokens += r.text.split_whitespace().count() as u64;
            }
            let secs = t.elapsed().as_secs_f64();
            println!(
                "{concurrency} concurrent chats of 16 tokens: {secs:.2} s, {:.1} verified answers/s",
                concurrency as f64 / secs
            );
            let _ = out_tokens;
        }
        net.stop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        anyhow::Ok(())
    })
}
