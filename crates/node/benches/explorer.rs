//! The explorer under 100,000 records: time to serve each page and each of
//! the JSON calls its pages make, over HTTP on a ledger holding 100,000
//! settled receipts (signed test records).
//!
//! Run: `cargo bench -p verinfer-node --bench explorer` (`VERINFER_RECORDS`
//! changes the count).

use std::time::Instant;
use verinfer_node::testing::explorer_fixture;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("VERINFER_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let t = Instant::now();
        let f = explorer_fixture(n).await?;
        println!("{n} records settled in {:.1} s", t.elapsed().as_secs_f64());
        let http = reqwest::Client::new();
        let first: serde_json::Value = http
            .get(format!("{}/v1/explorer/records?limit=1", f.url))
            .send()
            .await?
            .json()
            .await?;
        let id = first["records"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let node = first["records"][0]["node"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let paths = [
            "/".to_string(),
            "/explorer/network".to_string(),
            "/assets/explorer.js".to_string(),
            "/v1/explorer/records?limit=50".to_string(),
            format!("/v1/explorer/records?limit=50&before={}", n / 2),
            format!("/v1/explorer/records?q={id}"),
            format!("/v1/explorer/records?q={node}&limit=50"),
            "/v1/explorer/network".to_string(),
            "/v1/explorer/settlement".to_string(),
            "/v1/explorer/checkpoints?limit=20".to_string(),
            format!("/v1/receipts/{id}"),
        ];
        println!("{:<58} {:>10} {:>10}", "GET", "median ms", "bytes");
        for p in &paths {
            let mut times = Vec::new();
            let mut bytes = 0;
            for _ in 0..21 {
                let t = Instant::now();
                let body = http
                    .get(format!("{}{p}", f.url))
                    .send()
                    .await?
                    .bytes()
                    .await?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                bytes = body.len();
            }
            println!("{p:<58} {:>10.2} {bytes:>10}", median(times));
        }
        anyhow::Ok(())
    })
}
