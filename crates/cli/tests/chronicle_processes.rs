//! The explorer's growth and liveness charts across restarts of the
//! network's processes (`verinfer node`, one per role): calls made over
//! several minutes (narrowed to 3 s for the test), with the processes
//! stopped by SIGTERM, then SIGKILL, then SIGTERM again, each time restarted
//! on the same directories. Minute by minute, the chart served at
//! `/v1/explorer/network` counts exactly the acknowledged calls settled in
//! it, and the minutes and liveness already charted survive each restart.

mod support;

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::{free_port, init_devnet, member_config, node, wait_ready, write, Proc};
use verinfer_node::testing::{chat, get_json};

/// The explorer's minute, narrowed.
const MINUTE_MS: u64 = 3_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

/// Stops `procs` (the ledger last, so that nothing else is cut off from it
/// while it stops) and waits, at most 20 s each, for them to exit.
fn stop(procs: &mut Vec<Proc>, how: Stop) {
    for p in procs.iter_mut().rev() {
        match how {
            Stop::Kill => p.child.kill().expect("SIGKILL"),
            Stop::Term => {
                let ok = Command::new("kill")
                    .args(["-TERM", &p.child.id().to_string()])
                    .status()
                    .expect("kill -TERM");
                assert!(ok.success(), "SIGTERM to {}", p.name);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while p.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "{} did not exit", p.name);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    procs.clear();
}

struct Net {
    ledger_cfg: std::path::PathBuf,
    members: Vec<(&'static str, std::path::PathBuf)>,
    gateway_cfg: std::path::PathBuf,
}

impl Net {
    fn configure(d: &Path, model: &Path) -> Net {
        let ledger_url = format!("http://127.0.0.1:{}", free_port());
        let gateway_key = verinfer_node::config::load_key(&d.join("gateway/node.key"))
            .expect("gateway key")
            .public();
        let ledger_cfg = write(
            d.join("ledger/node.toml"),
            format!(
                "role = \"ledger\"\nkey = \"node.key\"\nlisten = \"{}\"\n\n[ledger]\nwitness_quorum = 2\ncheckpoint_interval_ms = 300\nreporters = [\"{gateway_key}\"]\nminute_ms = {MINUTE_MS}\n",
                ledger_url.trim_start_matches("http://")
            ),
        );
        let members = vec![
            (
                "verifier",
                member_config(d, "verifier-0", &ledger_url, model),
            ),
            (
                "verifier",
                member_config(d, "verifier-1", &ledger_url, model),
            ),
            (
                "inference",
                member_config(d, "inference-0", &ledger_url, model),
            ),
        ];
        let gateway_cfg = write(
            d.join("gateway/node.toml"),
            format!(
                "key = \"node.key\"\nlisten = \"127.0.0.1:0\"\nledger_url = \"{ledger_url}\"\n\n[gateway]\napi_keys = \"api-keys.toml\"\nquorum = 2\nliveness_ms = 3000\n"
            ),
        );
        Net {
            ledger_cfg,
            members,
            gateway_cfg,
        }
    }

    /// Starts the ledger alone; returns it and its URL.
    fn ledger(&self) -> (Proc, String) {
        node("ledger", &self.ledger_cfg)
    }

    /// Starts the members and the gateway; returns them and the gateway's URL.
    fn rest(&self) -> (Vec<Proc>, String) {
        let mut procs: Vec<Proc> = self
            .members
            .iter()
            .map(|(role, cfg)| node(role, cfg).0)
            .collect();
        let (gw, url) = node("gateway", &self.gateway_cfg);
        procs.push(gw);
        (procs, url)
    }
}

/// An acknowledged call: its receipt id and when it was sent and answered.
struct Acked {
    id: String,
    sent: u64,
    answered: u64,
}

fn minute(t: u64) -> u64 {
    t - t % MINUTE_MS
}

/// The chart's per-minute `field`, for the minutes where it is not zero.
fn chart(network: &Value, field: &str) -> BTreeMap<u64, u64> {
    network["minutes"]
        .as_array()
        .expect("minutes")
        .iter()
        .map(|p| (p["t"].as_u64().unwrap_or(0), p[field].as_u64().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Every acknowledged call is in the explorer's records, settled between
/// its sending and its answer; the chart counts, minute by minute, exactly
/// the calls settled in that minute, and so do the hours.
async fn check_calls(http: &reqwest::Client, url: &str, acked: &[Acked]) {
    let records: Value = get_json(http, &format!("{url}/v1/explorer/records?limit=200"))
        .await
        .expect("records");
    let times: BTreeMap<String, u64> = records["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or_default().to_string(),
                r["time_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(times.len(), acked.len(), "one record per acknowledged call");
    let mut want: BTreeMap<u64, u64> = BTreeMap::new();
    for a in acked {
        let t = *times
            .get(&a.id)
            .unwrap_or_else(|| panic!("record {}", a.id));
        assert!(
            (a.sent..=a.answered).contains(&t),
            "settled at {t}, between {} and {}",
            a.sent,
            a.answered
        );
        *want.entry(minute(t)).or_default() += 1;
    }
    let network: Value = get_json(http, &format!("{url}/v1/explorer/network"))
        .await
        .expect("network");
    assert_eq!(network["minute_ms"], MINUTE_MS);
    assert_eq!(chart(&network, "verified"), want, "calls per minute");
    let hours: u64 = network["hours"]
        .as_array()
        .expect("hours")
        .iter()
        .map(|p| p["verified"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(hours, acked.len() as u64, "calls per hour");
    assert!(chart(&network, "rejected").is_empty());
    assert!(chart(&network, "provisional").is_empty());
}

/// Each node's last heartbeat, and the active verifiers and inference nodes
/// of each minute.
type Liveness = (BTreeMap<String, u64>, BTreeMap<u64, (u64, u64)>);

/// The liveness the ledger at `ledger_url` serves, of the minutes closed
/// before `before`.
async fn liveness(http: &reqwest::Client, ledger_url: &str, before: u64) -> Liveness {
    let n: Value = get_json(http, &format!("{ledger_url}/ledger/explorer/network"))
        .await
        .expect("network");
    let seen = n["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|x| {
            (
                x["key"].as_str().unwrap_or_default().to_string(),
                x["last_seen_ms"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let active = n["minutes"]
        .as_array()
        .expect("minutes")
        .iter()
        .filter(|p| p["t"].as_u64().unwrap_or(0) + MINUTE_MS <= before)
        .map(|p| {
            (
                p["t"].as_u64().unwrap_or(0),
                (
                    p["active_verifiers"].as_u64().unwrap_or(0),
                    p["active_inference"].as_u64().unwrap_or(0),
                ),
            )
        })
        .filter(|(_, a)| *a != (0, 0))
        .collect();
    (seen, active)
}

#[test]
fn the_calls_chart_counts_every_acknowledged_call_across_sigterm_and_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (api_key, model) = init_devnet(d);
    let net = Net::configure(d, &model);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let http = reqwest::Client::new();
        let mut acked: Vec<Acked> = Vec::new();
        let mut before: Option<(u64, Liveness)> = None;
        let stops = [Some(Stop::Term), Some(Stop::Kill), Some(Stop::Term), None];
        for (round, how) in stops.into_iter().enumerate() {
            let (ledger, ledger_url) = net.ledger();
            // Before any other node is back: what was charted is still there.
            if let Some((at, (seen, active))) = before.take() {
                let (seen_now, active_now) = liveness(&http, &ledger_url, at).await;
                for (k, t) in &seen {
                    assert!(
                        seen_now.get(k).copied().unwrap_or(0) >= *t,
                        "round {round}: node {k} last heard at {t} before the stop"
                    );
                }
                assert_eq!(active_now, active, "round {round}: active nodes per minute");
                assert!(
                    active.values().any(|&(v, i)| v == 2 && i == 1),
                    "round {round}: the minutes show both verifiers and the inference node"
                );
            }
            let (rest, url) = net.rest();
            let mut procs = vec![ledger];
            procs.extend(rest);
            wait_ready(&http, &url, 1, 2).await;
            if round > 0 {
                // Counted before this round's calls: nothing of the last
                // run was lost.
                check_calls(&http, &url, &acked).await;
            }
            // Calls over at least two minutes.
            let first = now_ms();
            let mut i = 0;
            while now_ms() < first + MINUTE_MS + 500 || i < 3 {
                let sent = now_ms();
                let r = chat(
                    &http,
                    &url,
                    &api_key,
                    &format!("Count to {i}."),
                    4,
                    i % 2 == 0,
                )
                .await
                .expect("chat");
                let answered = now_ms();
                assert_eq!(
                    (r.status, r.verification()),
                    (200, "verified"),
                    "{}",
                    r.text
                );
                acked.push(Acked {
                    id: r.receipt().expect("receipt id").to_string(),
                    sent,
                    answered,
                });
                i += 1;
            }
            check_calls(&http, &url, &acked).await;
            // Heartbeats of at least one whole minute after the calls.
            tokio::time::sleep(Duration::from_millis(MINUTE_MS + 500)).await;
            let at = now_ms();
            before = Some((at, liveness(&http, &ledger_url, at).await));
            match how {
                Some(how) => stop(&mut procs, how),
                None => drop(procs),
            }
        }
    });
}
