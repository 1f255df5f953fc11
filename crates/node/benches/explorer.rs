//! The explorer under 100,000 records: time to serve each page and each of
//! the JSON calls its pages make, over HTTP on a ledger holding 100,000
//! settled receipts (signed test records); then the first paint of every
//! page in headless Chromium (the Performance API's `first-contentful-paint`,
//! measured from navigation start), and the time until its data is shown.
//!
//! Run: `cargo bench -p verinfer-node --bench explorer` (`VERINFER_RECORDS`
//! changes the count; Chromium and `chromedriver` must be installed).

#[path = "../tests/support/webdriver.rs"]
#[allow(dead_code)]
mod webdriver;

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
        let url = f.url.clone();
        let pages = [
            "/".to_string(),
            "/explorer".to_string(),
            "/explorer/records".to_string(),
            format!("/explorer/receipt/{id}"),
            "/explorer/checkpoints".to_string(),
            "/explorer/settlement".to_string(),
            "/explorer/network".to_string(),
            "/explorer/check".to_string(),
        ];
        tokio::task::spawn_blocking(move || first_paint(&url, &pages)).await??;
        anyhow::Ok(())
    })
}

/// Loads each page 7 times in a fresh tab state and prints the medians of
/// first contentful paint and of the time until the page says it is loaded
/// (no element with `aria-busy="true"` left).
fn first_paint(url: &str, pages: &[String]) -> anyhow::Result<()> {
    let driver = webdriver::Driver::start()?;
    let session = driver.session(1280, 900, false)?;
    println!(
        "{:<58} {:>12} {:>12}",
        "page (headless Chromium)", "FCP ms", "data ms"
    );
    for p in pages {
        let (mut fcp, mut data) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            session.goto("about:blank")?;
            session.goto(&format!("{url}{p}"))?;
            let v = session.execute_async(
                "const t0 = performance.now();
                 for (let i = 0; i < 400; i++) {
                   if (!document.querySelector('[aria-busy=\"true\"]')) break;
                   await new Promise(r => setTimeout(r, 5));
                 }
                 const loaded = performance.now();
                 // The paint entry is queued after the frame; wait for it.
                 const paint = await new Promise((resolve) => {
                   const found = performance.getEntriesByName('first-contentful-paint')[0];
                   if (found) return resolve(found);
                   new PerformanceObserver((l) => {
                     const e = l.getEntries().find((x) => x.name === 'first-contentful-paint');
                     if (e) resolve(e);
                   }).observe({ type: 'paint', buffered: true });
                   setTimeout(() => resolve(null), 3000);
                 });
                 return [paint ? paint.startTime : -1, loaded];",
                serde_json::json!([]),
            )?;
            fcp.push(v[0].as_f64().unwrap_or(-1.0));
            data.push(v[1].as_f64().unwrap_or(-1.0));
        }
        println!("{p:<58} {:>12.1} {:>12.1}", median(fcp), median(data));
    }
    Ok(())
}
