//! Crash safety: a writer process is killed with SIGKILL at random moments
//! while it appends from several threads and signs checkpoints, 60 times.
//! After each kill the log must reopen with every acknowledged entry at its
//! index with its bytes, and be consistent with every checkpoint signed.
//!
//! The writer is this test binary itself, re-executed with
//! `VERINFER_CRASH_CHILD` set (see `crash_child`).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use verinfer_log::merkle::verify_consistency;
use verinfer_log::testing::run_and_kill;
use verinfer_log::{Log, SignedCheckpoint};
use verinfer_types::Hash;

const KILLS: usize = 60;
const CHILD_ENV: &str = "VERINFER_CRASH_CHILD";

/// Entry contents are derived from a (run, thread, counter) label so that the
/// parent can check bytes from the acknowledgement line alone.
fn make_entry(label: &str) -> Vec<u8> {
    let n = 1 + (Hash::of(label.as_bytes()).0[0] as usize) * 3;
    let mut e = label.as_bytes().to_vec();
    e.resize(label.len() + n, b'.');
    e
}

/// Not a test on its own: the writer process `crash_safety_under_sigkill`
/// runs (with the environment variable set); appends forever and reports on
/// stdout.
#[test]
#[ignore = "the writer process of crash_safety_under_sigkill, which runs it"]
fn crash_child() {
    let dir = std::env::var(CHILD_ENV)
        .expect("run by crash_safety_under_sigkill, with VERINFER_CRASH_CHILD set");
    let run = std::env::var("VERINFER_CRASH_RUN").unwrap_or_default();
    let log = Arc::new(Log::open(Path::new(&dir)).expect("child opens log"));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            let out = out.clone();
            let run = run.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let labels: Vec<String> = (0..1 + i % 3)
                        .map(|k| format!("r{run}-t{t}-{i}-{k}"))
                        .collect();
                    let entries = labels.iter().map(|l| make_entry(l)).collect();
                    let first = log.append_batch(entries).expect("append");
                    let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                    for (k, l) in labels.iter().enumerate() {
                        writeln!(o, "A {} {l}", first + k as u64).ok();
                    }
                    if t == 0 && i % 7 == 0 {
                        drop(o);
                        let cp = log.checkpoint().expect("checkpoint");
                        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                        writeln!(o, "C {}", B64.encode(cp.note.to_string())).ok();
                        o.flush().ok();
                    } else {
                        o.flush().ok();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().ok();
    }
}

#[test]
fn crash_safety_under_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let vk = Log::init(dir.path(), "example.org/crash")
        .unwrap()
        .verifier_key()
        .clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();
    let mut checkpoints: Vec<SignedCheckpoint> = Vec::new();
    let mut grew = 0;

    for run in 0..KILLS {
        let lines = run_and_kill(
            "crash_child",
            &[
                (CHILD_ENV, dir.path().display().to_string()),
                ("VERINFER_CRASH_RUN", run.to_string()),
            ],
            Duration::from_millis(rng.gen_range(20..120)),
        );

        let before = acked.len();
        for line in lines {
            // Lines other than ours come from the test harness.
            let Some((kind, rest)) = line.split_once(' ') else {
                continue;
            };
            match kind {
                "A" => {
                    let (idx, label) = rest.split_once(' ').unwrap();
                    let idx: u64 = idx.parse().unwrap();
                    assert!(
                        acked.insert(idx, label.to_string()).is_none(),
                        "index {idx} acknowledged twice"
                    );
                }
                "C" => {
                    let text = String::from_utf8(B64.decode(rest).unwrap()).unwrap();
                    checkpoints.push(SignedCheckpoint::open(&text, &vk).unwrap());
                }
                _ => {}
            }
        }
        if acked.len() > before {
            grew += 1;
        }

        let log = Log::open(dir.path()).unwrap_or_else(|e| panic!("reopen after kill {run}: {e}"));
        let size = log.size();
        if let Some((&max, _)) = acked.last_key_value() {
            assert!(
                max < size,
                "acknowledged index {max} missing after kill {run} (size {size})"
            );
        }
        for (&idx, label) in &acked {
            assert_eq!(
                log.entry(idx).unwrap(),
                make_entry(label),
                "entry {idx} after kill {run}"
            );
        }
        let root = log.root(size).unwrap();
        for cp in &checkpoints {
            let c = &cp.checkpoint;
            assert!(c.size <= size);
            if c.size > 0 {
                let proof = log.consistency_proof(c.size, size).unwrap();
                verify_consistency(c.size, size, &c.root, &root, &proof).unwrap_or_else(|e| {
                    panic!("checkpoint {} inconsistent after kill {run}: {e}", c.size)
                });
            }
        }
    }
    eprintln!(
        "{KILLS} kills: {} acknowledged entries, {} checkpoints, {grew} runs appended",
        acked.len(),
        checkpoints.len()
    );
    // The kills must land while work is going on, or the test proves nothing.
    assert!(
        grew >= KILLS / 2,
        "only {grew} of {KILLS} runs appended anything"
    );
    assert!(
        checkpoints.len() >= KILLS / 2,
        "only {} checkpoints",
        checkpoints.len()
    );
}
