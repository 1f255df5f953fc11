//! The durable log: appends, proofs, reopening, torn tails and damage.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use verinfer_log::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use verinfer_log::tiles::{parse_bundle, Tile, TileKind};
use verinfer_log::{DirLockError, Log, LogError, SignedCheckpoint};
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
    // Flip a byte inside entry 5's data (each append is a batch: a 40-byte
    // marker, then the entry's frame).
    let batch = 40 + 16 + entry(0).len();
    bytes[5 * batch + 40 + 20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    match Log::open(dir.path()) {
        Err(LogError::Corrupt(msg)) => assert!(msg.contains("entry 5"), "{msg}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a damaged log"),
    }
}

/// A log of 10 acknowledged entries, then a batch of entries 10..15 (and
/// with `later`, one more batch after it). Returns the directory, the
/// entries file, and where the batch of 10..15 starts and ends.
fn with_batch(later: bool) -> (tempfile::TempDir, std::path::PathBuf, usize, usize) {
    let (dir, log) = filled(10);
    let path = dir.path().join("entries");
    let start = std::fs::metadata(&path).unwrap().len() as usize;
    log.append_batch((10..15).map(entry).collect()).unwrap();
    let end = std::fs::metadata(&path).unwrap().len() as usize;
    if later {
        log.append(entry(15)).unwrap();
    }
    drop(log);
    (dir, path, start, end)
}

fn scribble(path: &Path, range: std::ops::Range<usize>) {
    let mut bytes = std::fs::read(path).unwrap();
    for b in &mut bytes[range] {
        *b = 0xa5;
    }
    std::fs::write(path, &bytes).unwrap();
}

/// The last batch reached the disk out of order before a crash: its start
/// (marker and first entries) is garbage, its later frames are valid. It
/// was never acknowledged, so it is cut off and the acknowledged prefix kept.
#[test]
fn unacknowledged_batch_written_out_of_order_is_cut() {
    let frame = 16 + entry(10).len();
    for garbage in [
        // The marker and the first frame and a half never made it.
        0..40 + frame + frame / 2,
        // The marker made it, the second frame did not.
        40 + frame..40 + 2 * frame,
        // Only the last frame is missing.
        40 + 4 * frame..40 + 5 * frame,
    ] {
        let (dir, path, start, end) = with_batch(false);
        scribble(&path, start + garbage.start..start + garbage.end);
        let log = Log::open(dir.path())
            .unwrap_or_else(|e| panic!("garbage at {garbage:?} of the last batch: {e}"));
        assert_eq!(log.size(), 10, "{garbage:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, start);
        for i in 0..10 {
            assert_eq!(log.entry(i).unwrap(), entry(i));
        }
        assert_eq!(log.append(entry(10)).unwrap(), 10);
        drop(log);
        assert_eq!(Log::open(dir.path()).unwrap().size(), 11);
        assert!(end > start);
    }
}

/// The same garbage in a batch that a later batch follows is damage to
/// acknowledged entries: opening fails and the file is left as it is.
#[test]
fn garbage_inside_the_acknowledged_prefix_is_an_error() {
    let frame = 16 + entry(10).len();
    for garbage in [0..40 + frame + frame / 2, 40 + frame..40 + 2 * frame, 0..8] {
        let (dir, path, start, _) = with_batch(true);
        scribble(&path, start + garbage.start..start + garbage.end);
        let len = std::fs::metadata(&path).unwrap().len();
        match Log::open(dir.path()) {
            Err(LogError::Corrupt(msg)) => assert!(msg.contains("entry 10"), "{msg}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("garbage at {garbage:?} of an acknowledged batch was cut"),
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    }
}

/// Logs written before batch markers (format 1: entry frames only) open,
/// keep their entries, recover a torn tail, and get markers from then on.
#[test]
fn format_1_logs_stay_readable() {
    let (dir, log) = filled(0);
    drop(log);
    let legacy_frame = |i: u64, data: &[u8]| {
        let mut f = Vec::new();
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(&i.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&f);
        h.update(data);
        f.extend_from_slice(&h.finalize().to_le_bytes());
        f.extend_from_slice(data);
        f
    };
    let mut bytes: Vec<u8> = (0..5).flat_map(|i| legacy_frame(i, &entry(i))).collect();
    let good = bytes.len();
    bytes.extend_from_slice(&legacy_frame(5, &entry(5))[..20]); // torn
    let path = dir.path().join("entries");
    std::fs::write(&path, &bytes).unwrap();
    let config = dir.path().join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"format\": 2", "\"format\": 1")).unwrap();
    std::fs::remove_file(dir.path().join("checkpoint")).unwrap();

    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.size(), 5);
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, good);
    assert_eq!(log.entry(4).unwrap(), entry(4));
    assert_eq!(log.append_batch(vec![entry(5), entry(6)]).unwrap(), 5);
    drop(log);
    let upgraded = std::fs::read_to_string(&config).unwrap();
    assert!(
        upgraded.contains(&format!("\"legacy_end\": {good}")),
        "{upgraded}"
    );
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.size(), 7);
    assert_eq!(log.entry(6).unwrap(), entry(6));
    drop(log);

    // Damage among the old frames is damage to acknowledged entries.
    scribble(&path, 40..44);
    assert!(matches!(Log::open(dir.path()), Err(LogError::Corrupt(_))));
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
    let err = Log::open(dir.path()).expect_err("foreign checkpoint accepted");
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
    drop(log);
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
    // An index whose range overflows u64 is no tile at all, not tile 0.
    for kind in [TileKind::Hashes(0), TileKind::Hashes(1), TileKind::Entries] {
        let huge = Tile {
            kind,
            index: 1 << 56,
            width: 256,
        };
        assert!(log.tile(&huge).unwrap().is_none(), "{kind:?}");
    }

    let out = tempfile::tempdir().unwrap();
    let n = log.export_tiles(out.path()).unwrap();
    // level 0: 2 full + 1 partial, same for entries, level 1: partial width 2.
    assert_eq!(n, 7);
    assert!(out.path().join("tile/1/000.p/2").exists());
    assert!(out.path().join("checkpoint").exists());
}

const LOCK_CHILD_ENV: &str = "VERINFER_LOCK_CHILD";

/// Not a test on its own: run by `one_writer_per_directory_and_sigkill_frees_it`
/// with the variable set, opens the log, says so and waits to be killed.
#[test]
fn lock_child() {
    let Ok(dir) = std::env::var(LOCK_CHILD_ENV) else {
        return;
    };
    let _log = Log::open(Path::new(&dir)).expect("child opens log");
    println!("opened");
    std::thread::sleep(Duration::from_secs(60));
}

fn assert_in_use(dir: &Path, owner: u32) {
    match Log::open(dir) {
        Err(LogError::Lock(DirLockError::InUse { pid, .. })) => assert_eq!(pid, Some(owner)),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a second writer opened the log"),
    }
}

#[test]
fn one_writer_per_directory_and_sigkill_frees_it() {
    let (dir, log) = filled(3);
    // A second handle in the same process is refused too.
    assert_in_use(dir.path(), std::process::id());
    assert!(Log::open(dir.path())
        .err()
        .unwrap()
        .to_string()
        .starts_with(&format!(
            "data directory in use (pid {})",
            std::process::id()
        )));
    drop(log);

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "lock_child", "--nocapture", "--test-threads=1"])
        .env(LOCK_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(
        lines.any(|l| l.is_ok_and(|l| l.ends_with("opened"))),
        "the child did not open the log"
    );
    assert_in_use(dir.path(), child.id());
    child.kill().unwrap(); // SIGKILL: no destructor runs in the child
    child.wait().unwrap();
    let log = Log::open(dir.path()).unwrap();
    assert_eq!(log.size(), 3);
    assert_eq!(log.append(entry(3)).unwrap(), 3);
}
