//! A stop stops everything, and a start right after resumes: `verinfer
//! devnet --settlement anvil` and `verinfer node` processes are stopped the
//! ways operators stop them (SIGTERM from systemd or a container runtime,
//! SIGINT from Ctrl-C, SIGKILL when those time out). SIGTERM and SIGINT exit
//! 0; after any of the three no process they started is left (checked by pid
//! and by a /proc scan for an anvil on the data directory's state file), and
//! the next start on the same directory and ports serves verified chats that
//! settle on the same chain, its settled history kept.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{bin, free_port, member_config, node, spawn_ready, write, Proc};
use verinfer_ledger::evm::anvil::Anvil;
use verinfer_ledger::evm::chain::{Chain, Deployment};
use verinfer_node::testing::chat;

/// The two tests each run a network: one at a time on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SIGNALS: [&str; 3] = ["TERM", "INT", "KILL"];

fn state_file(d: &Path) -> PathBuf {
    d.join("chain/anvil-state.json")
}

/// Whether `pid` is a live process (a zombie is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // After "pid (comm) ": the state letter.
            let state = s.rsplit_once(") ")?.1.chars().next()?;
            Some(!matches!(state, 'Z' | 'X'))
        })
        .unwrap_or(false)
}

/// Every live anvil started on `state`: (pid, port), from a /proc scan.
fn anvils_on(state: &Path) -> Vec<(u32, u16)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let on_state = args
            .windows(2)
            .any(|w| w[0] == "--state" && Path::new(&w[1]) == state);
        let port = args
            .windows(2)
            .find(|w| w[0] == "--port")
            .and_then(|w| w[1].parse().ok());
        if args[0].ends_with("anvil") && on_state && alive(pid) {
            found.push((pid, port.unwrap()));
        }
    }
    found
}

/// The children of `pid` (from /proc: each thread lists those it forked), to
/// check after a stop that none is left.
fn children(pid: u32) -> Vec<u32> {
    let mut kids = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        kids.extend(list.split_whitespace().map(|c| c.parse::<u32>().unwrap()));
    }
    kids
}

/// Waits up to `secs` for `ok`.
fn wait_for(secs: u64, what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIG`sig` to `p`, waits (up to 40 s) for it to exit, checks that
/// SIGTERM and SIGINT exit 0 and that no child of it is left.
fn stop(p: &mut Proc, sig: &str) {
    let pid = p.child.id();
    let kids = children(pid);
    let sent = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "{} did not exit within 40 s of SIG{sig}",
            p.name
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    if sig != "KILL" {
        assert!(status.success(), "{} on SIG{sig}: {status}", p.name);
    }
    // After SIGKILL the kernel sends the children SIGTERM: they may take a
    // moment to write their state and exit.
    wait_for(15, &format!("{}'s children {kids:?} exit", p.name), || {
        !kids.iter().any(|&k| alive(k))
    });
}

/// One chat through the gateway at `url`; it must verify.
fn verified_chat(rt: &tokio::runtime::Runtime, url: &str, api_key: &str, i: u64) {
    let r = rt
        .block_on(chat(
            &reqwest::Client::new(),
            url,
            api_key,
            &format!("Name a colour, number {i}."),
            6,
            i.is_multiple_of(2),
        ))
        .unwrap();
    assert_eq!(
        (r.status, r.verification()),
        (200, "verified"),
        "{}",
        r.text
    );
}

/// Waits (up to 90 s) until the contract at `rpc` has settled `size` receipts.
fn settled(rt: &tokio::runtime::Runtime, rpc: &str, d: &Path, size: u64) {
    let dep: Deployment =
        serde_json::from_slice(&std::fs::read(d.join("chain/deployment.json")).unwrap()).unwrap();
    let chain = rt.block_on(Chain::reader(rpc, dep.contract)).unwrap();
    let t = Instant::now();
    loop {
        let (now, _) = rt.block_on(chain.checkpoint()).unwrap();
        assert!(now <= size, "settled {now} of {size} receipts");
        if now == size {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the chain settled {now} of {size} receipts"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `verinfer devnet --settlement anvil` on `d`, its gateway on `port`.
fn devnet(d: &Path, port: u16) -> (Proc, String) {
    let mut cmd = bin();
    cmd.args(["devnet", "--settlement", "anvil", "--inference", "1"])
        .args(["--verifiers", "2", "--quorum", "2", "--data-dir"])
        .arg(d)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    spawn_ready(cmd, "devnet")
}

/// The devnet's one anvil: its pid and RPC URL.
fn one_anvil(d: &Path) -> (u32, String) {
    let found = anvils_on(&state_file(d));
    assert_eq!(found.len(), 1, "one anvil on {}", d.display());
    let (pid, port) = found[0];
    (pid, format!("http://127.0.0.1:{port}"))
}

#[test]
fn a_stopped_devnet_leaves_no_anvil_and_restarts_on_its_chain() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = free_port();
    let mut chats = 0;
    // Each way of stopping, then a start after the last (SIGKILL).
    for sig in SIGNALS.into_iter().chain(["TERM"]) {
        let (mut p, url) = devnet(d, port);
        let api_key = std::fs::read_to_string(d.join("api-key")).unwrap();
        let (anvil, rpc) = one_anvil(d);
        assert!(children(p.child.id()).contains(&anvil));
        // The chain kept what it settled before the stop, and settles more.
        settled(&rt, &rpc, d, chats);
        verified_chat(&rt, &url, api_key.trim(), chats);
        chats += 1;
        settled(&rt, &rpc, d, chats);
        stop(&mut p, sig);
        assert!(
            !alive(anvil),
            "anvil {anvil} outlived the devnet's SIG{sig}"
        );
        wait_for(15, "no anvil on the state file", || {
            anvils_on(&state_file(d)).is_empty()
        });
    }
}

#[test]
fn stopped_node_processes_restart_on_the_same_directory_and_chain() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The devnet deploys the contracts and registers the nodes on its chain.
    let (mut p, _) = devnet(d, free_port());
    stop(&mut p, "TERM");
    assert!(anvils_on(&state_file(d)).is_empty());

    // The chain, run apart from the nodes as on a real network.
    let mut anvil = Anvil::start(&state_file(d), 0).unwrap();
    let rpc = anvil.url();
    let dep: Deployment =
        serde_json::from_slice(&std::fs::read(d.join("chain/deployment.json")).unwrap()).unwrap();
    let from_block = std::fs::read_to_string(d.join("chain/bridge-from-block")).unwrap();
    let ledger_url = format!("http://127.0.0.1:{}", free_port());
    let ledger_cfg = write(
        d.join("ledger/node.toml"),
        format!(
            "role = \"ledger\"\nkey = \"node.key\"\nlisten = \"{}\"\n\n[ledger]\nwitness_quorum = 2\ncheckpoint_interval_ms = 300\nbackend = \"evm\"\nrpc_url = \"{rpc}\"\ncontract = \"{}\"\nstuck_after_secs = 3\nbridge_key = \"../treasury.key\"\nbridge_from_block = {}\nconfirmations = 0\n",
            ledger_url.trim_start_matches("http://"),
            dep.contract,
            from_block.trim(),
        ),
    );
    let model = verinfer_inference::models::resolve("smollm2-135m").unwrap();
    let members = [
        (
            "verifier",
            member_config(d, "verifier-0", &ledger_url, &model),
        ),
        (
            "verifier",
            member_config(d, "verifier-1", &ledger_url, &model),
        ),
        (
            "inference",
            member_config(d, "inference-0", &ledger_url, &model),
        ),
    ];
    let gateway_cfg = write(
        d.join("gateway/node.toml"),
        format!(
            "key = \"node.key\"\nlisten = \"127.0.0.1:{}\"\nledger_url = \"{ledger_url}\"\n\n[gateway]\napi_keys = \"api-keys.toml\"\nquorum = 2\n",
            free_port()
        ),
    );
    let api_key = std::fs::read_to_string(d.join("api-key")).unwrap();
    let mut chats = 0;
    for sig in SIGNALS.into_iter().chain(["TERM"]) {
        let mut procs = vec![node("ledger", &ledger_cfg).0];
        for (role, cfg) in &members {
            procs.push(node(role, cfg).0);
        }
        let (gw, url) = node("gateway", &gateway_cfg);
        procs.push(gw);
        rt.block_on(support::wait_ready(&reqwest::Client::new(), &url, 1, 2));
        // The history settled before the stop is still there, and grows.
        settled(&rt, &rpc, d, chats);
        verified_chat(&rt, &url, api_key.trim(), chats);
        chats += 1;
        settled(&rt, &rpc, d, chats);
        for p in procs.iter_mut().rev() {
            stop(p, sig);
        }
    }
    anvil.stop();
    assert!(anvils_on(&state_file(d)).is_empty());
}
