//! The durable log: appends, proofs, reopening, torn tails and damage.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Arc;
use verinfer_log::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use verinfer_log::tiles::{parse_bundle, Tile};
use verinfer_log::{Log, LogError, SignedCheckpoint};
use verinfer_types::SecretKey;

fn entry(i: u64) -> Vec<u8> {
    format!("entry number {i}").into_bytes()
}

fn filled(n: u64) -> (tempfile::TempDir, Log) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::init(dir.path(), "example.org/test").unwrap();
    for i in 0..n {
        assert_eq!(log.append(entry(i)).unwrap(), i);
    }
    (dir, log)
}

#[test]
fn append_read_prove_and_reopen() {
    let (dir, log) = filled(300);
    assert_eq!(log.size(), 300);
    assert_eq!(log.entry(299).unwrap(), entry(299));
    let cp = log.checkpoint().unwrap();
    assert_eq!(cp.checkpoint.size, 300);
    for i in [0, 1, 150, 299] {
        let p = log.inclusion_proof(i, 300).unwrap();
        verify_inclusion(i, 300, &leaf_hash(&entry(i)), &p, &cp.checkpoint.root).unwrap();
    }
    let old_root = log.root(17).unwrap();
    let p = log.consistency_proof(17, 300).unwrap();
    verify_consistency(17, 300, &old_root, &cp.checkpoint.root, &p).unwrap();
    let vk = log.verifier_key().clone();
    drop(log);

    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.size(), 300);
    assert_eq!(log.verifier_key(), &vk);
    assert_eq!(log.latest_checkpoint().unwrap(), cp);
    assert_eq!(log.append(entry(300)).unwrap(), 300);
    assert_eq!(log.append_batch(vec![entry(301), entry(302)]).unwrap(), 301);
    // The checkpoint text verifies with the printed verifier key.
    let reparsed =
        SignedCheckpoint::open(&log.checkpoint().unwrap().note.to_string(), &vk).unwrap();
    assert_eq!(reparsed.checkpoint.size, 303);
}

#[test]
fn concurrent_appenders_get_distinct_contiguous_indices() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::init(dir.path(), "example.org/test").unwrap());
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| {
                        let e = format!("t{t} i{i}").into_bytes();
                        (log.append(e.clone()).unwrap(), e)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<(u64, Vec<u8>)> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(all.len(), 800);
    for (i, (idx, e)) in all.iter().enumerate() {
        assert_eq!(*idx, i as u64);
        assert_eq!(&log.entry(*idx).unwrap(), e);
    }
}

#[test]
fn torn_tail_is_cut_off_and_never_trusted() {
    let (dir, log) = filled(10);
    let cp = log.checkpoint().unwrap();
    drop(log);
    let path = dir.path().join("entries");
    let good_len = std::fs::metadata(&path).unwrap().len();
    // A frame header that promises more bytes than were written.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[
        200, 0, 0, 0, 10, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, b'p', b'a',
    ])
    .unwrap();
    drop(f);
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.size(), 10);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(log.latest_checkpoint().unwrap(), cp);
    assert_eq!(log.append(entry(10)).unwrap(), 10);
    drop(log);

    // A whole frame with a bad checksum at the end is torn too.
    let len = std::fs::metadata(&path).unwrap().len();
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.size(), 10);
    assert!(std::fs::metadata(&path).unwrap().len() < len);
}

#[test]
fn damage_in_the_middle_is_an_error() {
    let (dir, log) = filled(20);
    drop(log);
    let path = dir.path().join("entries");
    let mut bytes = std::fs::read(&path).unwrap();
    // Flip a byte inside entry 5's data.
    let frame = 16 + entry(0).len();
    bytes[5 * frame + 20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    match Log::open(dir.path()) {
        Err(LogError::Corrupt(msg)) => assert!(msg.contains("entry 5"), "{msg}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a damaged log"),
    }
}

#[test]
fn lost_acknowledged_entries_are_detected_by_the_checkpoint() {
    let (dir, log) = filled(20);
    log.checkpoint().unwrap();
    drop(log);
    let path = dir.path().join("entries");
    let len = std::fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len / 2).unwrap();
    drop(f);
    assert!(matches!(Log::open(dir.path()), Err(LogError::Corrupt(_))));
}

#[test]
fn checkpoint_from_another_log_is_refused() {
    let (dir, log) = filled(3);
    drop(log);
    let (_other_dir, other) = filled(3);
    std::fs::write(
        dir.path().join("checkpoint"),
        other.checkpoint().unwrap().note.to_string(),
    )
    .unwrap();
    let err = Log::open(dir.path())
        .err()
        .expect("foreign checkpoint accepted");
    assert!(
        err.to_string().contains("does not verify") || err.to_string().contains("no signature"),
        "{err}"
    );
}

#[test]
fn bad_requests_are_errors_not_panics() {
    let (dir, log) = filled(5);
    assert!(matches!(log.inclusion_proof(0, 6), Err(LogError::Proof(_))));
    assert!(matches!(log.inclusion_proof(5, 5), Err(LogError::Proof(_))));
    assert!(matches!(
        log.consistency_proof(2, 9),
        Err(LogError::Proof(_))
    ));
    assert!(matches!(log.entry(5), Err(LogError::NoEntry { .. })));
    assert!(matches!(log.root(6), Err(LogError::Proof(_))));
    assert!(matches!(
        log.append(vec![0; 70_000]),
        Err(LogError::EntryTooLarge(70_000, 65_535))
    ));
    assert!(matches!(
        Log::init(dir.path(), "example.org/again"),
        Err(LogError::Setup(_))
    ));
    assert!(matches!(
        Log::open(&dir.path().join("missing")),
        Err(LogError::Setup(_))
    ));
    std::fs::write(dir.path().join("config.json"), b"{not json").unwrap();
    assert!(matches!(Log::open(dir.path()), Err(LogError::Corrupt(_))));
    assert!(Log::init(&dir.path().join("x"), "bad origin").is_err());
}

#[test]
fn tiles_and_bundles_match_entries() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::init_with_key(
        dir.path(),
        "example.org/tiles",
        &SecretKey::from_seed(&[5; 32]),
    )
    .unwrap();
    let entries: Vec<Vec<u8>> = (0..600).map(entry).collect();
    log.append_batch(entries.clone()).unwrap();
    let bundle = log
        .tile(&Tile::parse("tile/entries/001").unwrap())
        .unwrap()
        .unwrap();
    let parsed = parse_bundle(&bundle).unwrap();
    assert_eq!(parsed.len(), 256);
    assert_eq!(parsed[0], &entries[256][..]);
    let tile = log
        .tile(&Tile::parse("tile/0/002.p/88").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(tile.len(), 88 * 32);
    assert_eq!(&tile[..32], &leaf_hash(&entries[512]).0);
    assert!(log
        .tile(&Tile::parse("tile/0/002").unwrap())
        .unwrap()
        .is_none());

    let out = tempfile::tempdir().unwrap();
    let n = log.export_tiles(out.path()).unwrap();
    // level 0: 2 full + 1 partial, same for entries, level 1: partial width 2.
    assert_eq!(n, 7);
    assert!(out.path().join("tile/1/000.p/2").exists());
    assert!(out.path().join("checkpoint").exists());
}
