//! Chaos: the network as separate processes (`verinfer node`, one per role)
//! under 32 concurrent clients, while every few seconds a random role
//! process (inference, verifier, gateway or ledger) is SIGKILLed and
//! restarted on its directory and port. Afterwards every acknowledged
//! receipt is in the log and verifies against the pinned keys, the supply is
//! conserved, escrow is back to 0 once the reservations of the requests cut
//! off have passed their deadline, no node lost stake (all are honest), and
//! every error a client was answered was a 429 or a 503 with `Retry-After`.
//!
//! Seeded: `VERINFER_CHAOS_SEED` (default: from the clock; printed) picks
//! the victims and the pauses; `VERINFER_CHAOS_SECS` (default 60) is how long
//! the load and the kills last.

mod support;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    chat_outcome, devnet_trust, free_port, init_devnet_with_ttl, node, wait_escrow_zero,
    wait_ready, write, Outcome, Proc,
};
use verinfer_node::start::SWEEP_INTERVAL;
use verinfer_node::testing::{bundle, get_json};
use verinfer_verify::receipt::{check_receipt, Status};

/// Reservations last this long (see `init_devnet_with_ttl`).
const TTL_SECS: u64 = 60;
const CLIENTS: usize = 32;

/// One role process: how to start it again.
struct Role {
    role: &'static str,
    config: PathBuf,
    proc: Option<Proc>,
}

impl Role {
    fn start(&mut self) -> String {
        let (p, url) = node(self.role, &self.config);
        self.proc = Some(p);
        url
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.child.kill().expect("SIGKILL");
            p.child.wait().expect("wait");
        }
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The configs of the whole network on fixed ports (a restarted process
/// serves where it is registered): the ledger, three verifiers, two
/// inference nodes, the gateway (last).
fn configure(d: &Path, model: &Path) -> Vec<Role> {
    let ledger_url = format!("http://127.0.0.1:{}", free_port());
    let mut roles = vec![Role {
        role: "ledger",
        config: write(
            d.join("ledger/node.toml"),
            format!(
                "role = \"ledger\"\nkey = \"node.key\"\nlisten = \"{}\"\n\n[ledger]\nwitness_quorum = 2\ncheckpoint_interval_ms = 300\n",
                ledger_url.trim_start_matches("http://")
            ),
        ),
        proc: None,
    }];
    let members = (0..3)
        .map(|i| ("verifier", format!("verifier-{i}")))
        .chain((0..2).map(|i| ("inference", format!("inference-{i}"))));
    for (role, name) in members {
        let config = write(
            d.join(&name).join("node.toml"),
            format!(
                "key = \"node.key\"\nlisten = \"127.0.0.1:{}\"\nledger_url = \"{ledger_url}\"\nmodel = \"{}\"\nthreads = 1\nheartbeat_ms = 500\n",
                free_port(),
                model.display()
            ),
        );
        roles.push(Role {
            role,
            config,
            proc: None,
        });
    }
    roles.push(Role {
        role: "gateway",
        config: write(
            d.join("gateway/node.toml"),
            format!(
                "key = \"node.key\"\nlisten = \"127.0.0.1:{}\"\nledger_url = \"{ledger_url}\"\n\n[gateway]\napi_keys = \"api-keys.toml\"\nquorum = 2\nliveness_ms = 3000\n",
                free_port()
            ),
        ),
        proc: None,
    });
    roles
}

/// Each registered node's stake.
async fn stakes(http: &reqwest::Client, url: &str) -> BTreeMap<String, u128> {
    let n: serde_json::Value = get_json(http, &format!("{url}/v1/network"))
        .await
        .expect("network");
    n["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|x| {
            (
                x["key"].as_str().unwrap_or_default().to_string(),
                x["stake"]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            )
        })
        .collect()
}

#[test]
fn the_network_survives_random_kills_under_load_and_loses_nothing() {
    let seed = env_u64("VERINFER_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos() as u64)
    });
    let secs = env_u64("VERINFER_CHAOS_SECS").unwrap_or(60);
    eprintln!("chaos: VERINFER_CHAOS_SEED={seed} VERINFER_CHAOS_SECS={secs}");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (api_key, model) = init_devnet_with_ttl(d, TTL_SECS);
    let trust = devnet_trust(d);
    let mut roles = configure(d, &model);
    let mut url = String::new();
    for r in &mut roles {
        url = r.start();
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    rt.block_on(wait_ready(&http, &url, 2, 3));
    let staked = rt.block_on(stakes(&http, &url));

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, url, key, stop) = (http.clone(), url.clone(), api_key.clone(), stop.clone());
            rt.spawn(async move {
                let mut outcomes = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let prompt = format!("Client {c} asks for a word, number {i}.");
                    let o = chat_outcome(&http, &url, &key, &prompt, 6).await;
                    // A refused client waits as told; one that found the
                    // gateway down waits for its restart.
                    let pause = match &o {
                        Outcome::Acked(_) | Outcome::Pending => 0,
                        Outcome::Refused(_, retry, _) => retry
                            .as_deref()
                            .and_then(|r| r.parse::<u64>().ok())
                            .map_or(1_000, |s| s.min(5) * 1_000),
                        Outcome::Unreachable(_) => 250,
                    };
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    outcomes.push(o);
                    i += 1;
                }
                outcomes
            })
        })
        .collect();

    // The kills: one process at a time, restarted before the next; the
    // roles in a random order each round of four, so that each is hit.
    let t = Instant::now();
    let mut kills: BTreeMap<&str, usize> = BTreeMap::new();
    let mut round = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(rng.gen_range(2_000..6_000)));
        if t.elapsed() >= Duration::from_secs(secs) {
            break;
        }
        if round.is_empty() {
            round = vec!["inference", "verifier", "gateway", "ledger"];
            round.shuffle(&mut rng);
        }
        let role = round.pop().unwrap_or("ledger");
        let of_role: Vec<usize> = (0..roles.len())
            .filter(|&i| roles[i].role == role)
            .collect();
        let victim = &mut roles[of_role[rng.gen_range(0..of_role.len())]];
        eprintln!(
            "chaos: {:.1} s: SIGKILL {}",
            t.elapsed().as_secs_f64(),
            victim.config.display()
        );
        victim.kill();
        *kills.entry(victim.role).or_default() += 1;
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..1_500)));
        victim.start();
    }
    stop.store(true, Ordering::SeqCst);
    let outcomes: Vec<Outcome> = rt.block_on(async {
        let mut all = Vec::new();
        for c in clients {
            all.extend(c.await.expect("client"));
        }
        all
    });

    let acked: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Acked(id) => Some(*id),
            _ => None,
        })
        .collect();
    let refused: Vec<_> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Refused(s, r, b) => Some((*s, r.clone(), b.clone())),
            _ => None,
        })
        .collect();
    let pending = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Pending))
        .count();
    let unreachable = outcomes.len() - acked.len() - refused.len() - pending;
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (status, _, _) in &refused {
        *by_status.entry(*status).or_default() += 1;
    }
    eprintln!(
        "chaos: {} requests in {secs} s: {} acknowledged, {pending} pending, refused {by_status:?}, {unreachable} without an answer (gateway down); kills {kills:?}",
        outcomes.len(),
        acked.len(),
    );
    for (status, retry, body) in &refused {
        assert!(
            matches!(status, 429 | 503) && retry.is_some(),
            "a client was answered {status} (Retry-After {retry:?}): {body}"
        );
    }
    assert!(!acked.is_empty(), "no request was served");

    rt.block_on(async {
        wait_ready(&http, &url, 2, 3).await;
        let took = wait_escrow_zero(&http, &url, TTL_SECS + SWEEP_INTERVAL.as_secs() + 15).await;
        eprintln!("chaos: escrow back to 0 {took:?} after the load");
        for id in &acked {
            let b = bundle(&http, &url, &api_key, id, Duration::from_secs(60))
                .await
                .expect("an acknowledged receipt is served");
            let report = check_receipt(&b, &trust).expect("the receipt verifies");
            assert_eq!(report.status, Status::Verified);
        }
        let now = stakes(&http, &url).await;
        for (key, stake) in &staked {
            assert!(
                now.get(key).is_some_and(|s| s >= stake),
                "node {key} staked {stake}, now {:?}: an honest node was slashed",
                now.get(key)
            );
        }
    });
}
