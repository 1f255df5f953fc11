//! The embedded ledger: durability across reopen and SIGKILL, and receipts
//! in the transparency log.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use verinfer_ledger::testkit::{World, TOKEN};
use verinfer_ledger::tx::TxBody;
use verinfer_ledger::{Ledger, LedgerError, TxError};
use verinfer_log::merkle::leaf_hash;
use verinfer_log::testutil::run_and_kill;
use verinfer_types::records::Amount;
use verinfer_types::{Record, SecretKey};

fn new_ledger(dir: &Path, w: &mut World) -> Ledger {
    let l = Ledger::init(
        dir,
        &w.genesis(),
        "example.org/receipts",
        &SecretKey::from_seed(&[9; 32]),
    )
    .unwrap();
    for tx in w.setup() {
        l.submit(&tx).unwrap();
    }
    l
}

#[test]
fn reopen_rebuilds_state_and_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new();
    let l = new_ledger(dir.path(), &mut w);
    let user = w.users[0].clone();
    let req = w.request(&user, 1, 1);
    l.submit(&w.tx(
        &user,
        TxBody::Reserve {
            request: req.hash().unwrap(),
            amount: w.max_fee(),
        },
    ))
    .unwrap();
    let receipt = l.with_state(|s| w.receipt(s, &req, 1));
    let relayer = w.users[1].clone();
    let applied = l
        .submit(&w.tx(
            &relayer,
            TxBody::Settle {
                receipts: vec![receipt.clone()],
            },
        ))
        .unwrap();
    assert_eq!(applied.effects.first_leaf, 0);
    assert_eq!(l.receipts().size(), 1);
    assert_eq!(
        l.receipts().entry(0).unwrap(),
        receipt.leaf().unwrap().to_canonical().unwrap()
    );

    // A refused transaction is an error and changes nothing.
    let state = l.with_state(|s| s.clone());
    let err = l.submit(&w.tx(
        &user,
        TxBody::Transfer {
            to: relayer.public(),
            amount: Amount(u128::MAX),
        },
    ));
    assert!(matches!(
        err,
        Err(LedgerError::Rejected(TxError::Insufficient { .. }))
    ));
    assert_eq!(l.with_state(|s| s.clone()), state);
    drop(l);

    let l = Ledger::open(dir.path()).unwrap();
    assert_eq!(l.with_state(|s| s.clone()), state);
    assert_eq!(l.receipts().size(), 1);
}

#[test]
fn lost_receipt_leaves_are_restored_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new();
    let l = new_ledger(dir.path(), &mut w);
    let user = w.users[0].clone();
    let relayer = w.users[1].clone();
    let mut receipts = Vec::new();
    for i in 0..3 {
        let req = w.request(&user, 10 + i, 1);
        l.submit(&w.tx(
            &user,
            TxBody::Reserve {
                request: req.hash().unwrap(),
                amount: w.max_fee(),
            },
        ))
        .unwrap();
        receipts.push(l.with_state(|s| w.receipt(s, &req, 1)));
    }
    l.submit(&w.tx(
        &relayer,
        TxBody::Settle {
            receipts: receipts.clone(),
        },
    ))
    .unwrap();
    drop(l);
    // Simulate a crash between the WAL sync and the receipts sync: the
    // receipts log lost its last two leaves (a torn tail).
    let entries = dir.path().join("receipts/entries");
    let bytes = std::fs::read(&entries).unwrap();
    let first_frame = 16 + receipts[0].leaf().unwrap().to_canonical().unwrap().len();
    std::fs::write(&entries, &bytes[..first_frame + 5]).unwrap();
    let l = Ledger::open(dir.path()).unwrap();
    assert_eq!(l.receipts().size(), 3);
    for (i, r) in receipts.iter().enumerate() {
        assert_eq!(
            l.receipts().entry(i as u64).unwrap(),
            r.leaf().unwrap().to_canonical().unwrap()
        );
    }
}

const CHILD_ENV: &str = "VERINFER_LEDGER_CRASH_CHILD";
const KILLS: usize = 30;

/// Not a test on its own: the writer process of `crash_safety_under_sigkill`,
/// which runs it with the environment variable set.
#[test]
#[ignore = "the writer process of crash_safety_under_sigkill, which runs it"]
fn ledger_crash_child() {
    let dir = std::env::var(CHILD_ENV)
        .expect("run by crash_safety_under_sigkill, with VERINFER_LEDGER_CRASH_CHILD set");
    let l = Arc::new(Ledger::open(Path::new(&dir)).unwrap());
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let world = World::new();
    let threads: Vec<_> = world
        .users
        .iter()
        .cloned()
        .enumerate()
        .map(|(u, user)| {
            let l = l.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                let w = World::new();
                let to = w.verifiers[u].public();
                loop {
                    let nonce = l.with_state(|s| s.nonce(&user.public()));
                    let seed = (u as u64) << 32 | nonce;
                    let body = if nonce.is_multiple_of(2) {
                        TxBody::Transfer {
                            to,
                            amount: Amount(TOKEN),
                        }
                    } else {
                        // Reserve for a request and settle it in one go.
                        let req = w.request(&user, seed, 1);
                        TxBody::Reserve {
                            request: req.hash().unwrap(),
                            amount: w.max_fee(),
                        }
                    };
                    let tx = verinfer_ledger::Transaction::signed(&user, nonce, body).unwrap();
                    let applied = l.submit(&tx).unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "T {u} {nonce} {}", applied.height).unwrap();
                    o.flush().unwrap();
                    drop(o);
                    if nonce % 2 == 1 {
                        let req = w.request(&user, seed, 1);
                        let receipt = l.with_state(|s| w.receipt(s, &req, 1));
                        let relayer = &w.nodes[u % 2];
                        let tx = loop {
                            let n = l.with_state(|s| s.nonce(&relayer.public()));
                            let tx = verinfer_ledger::Transaction::signed(
                                relayer,
                                n,
                                TxBody::Settle {
                                    receipts: vec![receipt.clone()],
                                },
                            )
                            .unwrap();
                            match l.submit(&tx) {
                                Err(LedgerError::Rejected(TxError::Nonce { .. })) => continue,
                                other => break (other.unwrap(), receipt.leaf().unwrap()),
                            }
                        };
                        let mut o = out.lock().unwrap();
                        writeln!(
                            o,
                            "R {} {}",
                            tx.0.effects.first_leaf,
                            leaf_hash(&tx.1.to_canonical().unwrap())
                        )
                        .unwrap();
                        o.flush().unwrap();
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
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new();
    drop(new_ledger(dir.path(), &mut w));
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut acked: BTreeMap<usize, u64> = BTreeMap::new();
    let mut leaves: BTreeMap<u64, String> = BTreeMap::new();
    for run in 0..KILLS {
        let lines = run_and_kill(
            "ledger_crash_child",
            &[(CHILD_ENV, dir.path().display().to_string())],
            Duration::from_millis(rng.gen_range(30..150)),
        );
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            match f.first() {
                Some(&"T") => {
                    let (u, n): (usize, u64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
                    let e = acked.entry(u).or_insert(0);
                    *e = (*e).max(n + 1);
                }
                Some(&"R") => {
                    leaves.insert(f[1].parse().unwrap(), f[2].to_string());
                }
                _ => {}
            }
        }
        let l = Ledger::open(dir.path()).unwrap_or_else(|e| panic!("reopen after kill {run}: {e}"));
        l.with_state(|s| {
            s.check_invariants().unwrap();
            for (&u, &n) in &acked {
                assert!(
                    s.nonce(&w.users[u].public()) >= n,
                    "user {u} lost acknowledged nonce {n} after kill {run}"
                );
            }
        });
        for (&i, h) in &leaves {
            assert_eq!(
                &l.receipts().leaf_hash(i).unwrap().to_hex(),
                h,
                "receipt leaf {i} after kill {run}"
            );
        }
    }
    eprintln!(
        "{KILLS} kills: {} transactions and {} receipts acknowledged",
        acked.values().sum::<u64>(),
        leaves.len()
    );
    assert!(
        acked.values().sum::<u64>() > KILLS as u64,
        "the writer barely ran"
    );
    assert!(!leaves.is_empty());
}
