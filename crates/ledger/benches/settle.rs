//! Settlement throughput: receipts settled per second, end to end into the
//! durable logs (WAL and receipts log both fsynced before acknowledgement).
//! A bench binary: `cargo bench -p verinfer-ledger --bench settle`.
//!
//! Each run makes a fresh ledger, reserves escrow for `RECEIPTS` requests
//! (not timed), then settles them in transactions of `BATCH` receipts from
//! `RELAYERS` threads at once. Signing the receipts is not timed; checking
//! every signature in them is. Prints the median of `RUNS` runs.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;
use verinfer_ledger::testing::World;
use verinfer_ledger::tx::TxBody;
use verinfer_ledger::{Ledger, Transaction};
use verinfer_types::records::Receipt;
use verinfer_types::{Record, SecretKey};

const RECEIPTS: usize = 20_480;
const BATCH: usize = 256;
const RELAYERS: usize = 2;
const RUNS: usize = 3;

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of stat(5), counted after the command name.
    (ticks(11) + ticks(12)) / 100.0
}

fn one_run() -> (f64, f64) {
    let dir = match std::env::var_os("VERINFER_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let mut w = World::new();
    let ledger = Arc::new(
        Ledger::init(
            dir.path(),
            &w.genesis(),
            "bench.example/receipts",
            &SecretKey::from_seed(&[1; 32]),
        )
        .unwrap(),
    );
    for tx in w.setup() {
        ledger.submit(&tx).unwrap();
    }
    // Reserve escrow for every request, one thread per user (group commit).
    let users = w.users.clone();
    let per_user = RECEIPTS / users.len() + 1;
    let requests: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = users
            .iter()
            .enumerate()
            .map(|(u, user)| {
                let ledger = ledger.clone();
                let w = &w;
                s.spawn(move || {
                    let mut reqs = Vec::new();
                    for i in 0..per_user {
                        let req = w.request(user, (u * per_user + i) as u64, 1);
                        let tx = Transaction::signed(
                            user,
                            i as u64,
                            TxBody::Reserve {
                                request: req.hash().unwrap(),
                                amount: w.max_fee(),
                                ttl_secs: verinfer_ledger::testing::RESERVE_TTL_SECS,
                            },
                        )
                        .unwrap();
                        ledger.submit(&tx).unwrap();
                        reqs.push(req);
                    }
                    reqs
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .take(RECEIPTS)
            .collect()
    });
    let receipts: Vec<Receipt> =
        ledger.with_state(|s| requests.iter().map(|r| w.receipt(s, r, 1)).collect());
    // Relayers are the verifiers' keys, whose nonces start at 2 after setup.
    let relayers: Vec<SecretKey> = w.verifiers[..RELAYERS].to_vec();
    let chunks: Vec<Vec<Transaction>> = relayers
        .iter()
        .enumerate()
        .map(|(r, key)| {
            let mut nonce = ledger.with_state(|s| s.nonce(&key.public()));
            receipts
                .chunks(BATCH)
                .skip(r)
                .step_by(RELAYERS)
                .map(|batch| {
                    let tx = Transaction::signed(
                        key,
                        nonce,
                        TxBody::Settle {
                            receipts: batch.to_vec(),
                        },
                    )
                    .unwrap();
                    nonce += 1;
                    tx
                })
                .collect()
        })
        .collect();
    drop(w.tx(&w.treasury.clone(), TxBody::Withdraw));

    let start = Instant::now();
    let cpu = cpu_seconds();
    std::thread::scope(|s| {
        for txs in &chunks {
            let ledger = ledger.clone();
            s.spawn(move || {
                for tx in txs {
                    ledger.submit(tx).unwrap();
                }
            });
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    assert_eq!(ledger.receipts().size(), RECEIPTS as u64);
    (RECEIPTS as f64 / elapsed, cpu * 1e6 / RECEIPTS as f64)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once, quickly.
    let mut runs: Vec<(f64, f64)> = (0..RUNS).map(|_| one_run()).collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "settle: {RECEIPTS} receipts in batches of {BATCH} from {RELAYERS} relayers: median {:.0} receipts/s, {:.0} us CPU per receipt (runs: {:?})",
        runs[RUNS / 2].0,
        runs[RUNS / 2].1,
        runs.iter().map(|r| r.0.round()).collect::<Vec<_>>()
    );
}
