//! What the ledger role remembers over time for the explorer, on disk: when
//! each settlement happened, and per minute the calls verified and rejected,
//! the verdicts, answers and missed tasks of each node, and which nodes were
//! live. The charts of growth and liveness are drawn from it, so a restart
//! loses none of them.
//!
//! Two files in the ledger directory: `settle-times` (16-byte records: first
//! leaf index and Unix ms of each settlement, little-endian) and
//! `minutes.jsonl` (one JSON line per closed minute). Both are appended
//! without a sync per event and synced once a minute when the minute closes:
//! a crash loses at most the last minute of this bookkeeping, never a
//! settlement (those are in the ledger's write-ahead log).

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use verinfer_ledger::tx::Role;
use verinfer_types::PublicKey;

const TIMES: &str = "settle-times";
const MINUTES: &str = "minutes.jsonl";
/// Minutes kept in memory and served (30 days).
pub const KEEP_MINUTES: u64 = 30 * 24 * 60;
const MINUTE_MS: u64 = 60_000;

/// One minute of activity.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Minute {
    /// Start of the minute, Unix ms.
    pub t: u64,
    /// Answers settled with a certificate.
    pub verified: u64,
    /// Answers settled without a check.
    #[serde(default)]
    pub provisional: u64,
    /// Results the verifiers rejected.
    #[serde(default)]
    pub rejected: u64,
    /// Verdicts in settled certificates, by verifier.
    #[serde(default)]
    pub verdicts: BTreeMap<PublicKey, u64>,
    /// Answers settled, by inference node.
    #[serde(default)]
    pub answers: BTreeMap<PublicKey, u64>,
    /// Verifier tasks that got no verdict, by verifier.
    #[serde(default)]
    pub missed: BTreeMap<PublicKey, u64>,
    /// Verifiers heard from.
    #[serde(default)]
    pub verifiers: BTreeSet<PublicKey>,
    /// Inference nodes heard from.
    #[serde(default)]
    pub inference: BTreeSet<PublicKey>,
    /// Heights of slashes applied.
    #[serde(default)]
    pub slashes: Vec<u64>,
}

impl Minute {
    fn merge(&mut self, o: &Minute) {
        self.verified += o.verified;
        self.provisional += o.provisional;
        self.rejected += o.rejected;
        for (k, v) in &o.verdicts {
            *self.verdicts.entry(*k).or_default() += v;
        }
        for (k, v) in &o.answers {
            *self.answers.entry(*k).or_default() += v;
        }
        for (k, v) in &o.missed {
            *self.missed.entry(*k).or_default() += v;
        }
        self.verifiers.extend(o.verifiers.iter().copied());
        self.inference.extend(o.inference.iter().copied());
        self.slashes.extend(o.slashes.iter().copied());
    }
}

struct Inner {
    /// Totals per minute, for queries.
    minutes: BTreeMap<u64, Minute>,
    /// What is not on disk yet, per minute. The file holds deltas; lines of
    /// the same minute add up on load (a minute written at shutdown and
    /// again after a restart).
    pending: BTreeMap<u64, Minute>,
    times: Vec<(u64, u64)>,
    times_file: File,
}

/// The ledger role's chronicle.
pub struct Chronicle {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

fn io(path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("{}: {e}", path.display())
}

impl Chronicle {
    /// Opens (or creates) the chronicle in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let tp = dir.join(TIMES);
        let mut times_file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&tp)
            .map_err(|e| io(&tp, e))?;
        let mut raw = Vec::new();
        times_file.read_to_end(&mut raw).map_err(|e| io(&tp, e))?;
        // A torn last record (crash mid-write) is dropped.
        let times = raw
            .chunks_exact(16)
            .map(|c| {
                let mut a = [0u8; 8];
                let mut b = [0u8; 8];
                a.copy_from_slice(&c[..8]);
                b.copy_from_slice(&c[8..]);
                (u64::from_le_bytes(a), u64::from_le_bytes(b))
            })
            .collect();
        let mp = dir.join(MINUTES);
        let mut minutes = BTreeMap::new();
        if let Ok(f) = File::open(&mp) {
            for line in BufReader::new(f).lines() {
                let line = line.map_err(|e| io(&mp, e))?;
                // A torn last line is skipped; it is at most one minute.
                if let Ok(m) = serde_json::from_str::<Minute>(&line) {
                    minutes.entry(m.t).or_insert_with(Minute::default).merge(&m);
                    if let Some(x) = minutes.get_mut(&m.t) {
                        x.t = m.t;
                    }
                }
            }
        }
        Ok(Chronicle {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                minutes,
                pending: BTreeMap::new(),
                times,
                times_file,
            }),
        })
    }

    fn with(&self, now: u64, f: impl Fn(&mut Minute)) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let t = now - now % MINUTE_MS;
        let fresh = || Minute {
            t,
            ..Minute::default()
        };
        f(inner.minutes.entry(t).or_insert_with(fresh));
        f(inner.pending.entry(t).or_insert_with(fresh));
    }

    /// A settlement of `leaves` receipts from `first_leaf`, at `now`: each
    /// answer's node and its verifiers.
    pub fn settled(&self, first_leaf: u64, answers: &[(PublicKey, Vec<PublicKey>)], now: u64) {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let mut rec = [0u8; 16];
            rec[..8].copy_from_slice(&first_leaf.to_le_bytes());
            rec[8..].copy_from_slice(&now.to_le_bytes());
            if let Err(e) = inner.times_file.write_all(&rec) {
                tracing::warn!(error = %e, "cannot record a settlement time");
            }
            inner.times.push((first_leaf, now));
        }
        self.with(now, |m| {
            for (node, verifiers) in answers {
                if verifiers.is_empty() {
                    m.provisional += 1;
                } else {
                    m.verified += 1;
                }
                *m.answers.entry(*node).or_default() += 1;
                for v in verifiers {
                    *m.verdicts.entry(*v).or_default() += 1;
                }
            }
        });
    }

    /// A node was heard from (heartbeat, registration).
    pub fn seen(&self, key: PublicKey, role: Role, now: u64) {
        self.with(now, |m| {
            match role {
                Role::Verifier => m.verifiers.insert(key),
                Role::Inference => m.inference.insert(key),
                Role::Gateway => false,
            };
        });
    }

    /// A gateway's report: results rejected, verifier tasks missed.
    pub fn report(&self, rejected: u64, missed: &[PublicKey], now: u64) {
        self.with(now, |m| {
            m.rejected += rejected;
            for k in missed {
                *m.missed.entry(*k).or_default() += 1;
            }
        });
    }

    /// A slash applied at ledger height `height`.
    pub fn slash(&self, height: u64, now: u64) {
        self.with(now, |m| m.slashes.push(height));
    }

    /// Unix ms of the settlement of leaf `index` (0 if unknown).
    pub fn time_of_leaf(&self, index: u64) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let k = inner.times.partition_point(|(first, _)| *first <= index);
        if k == 0 {
            0
        } else {
            inner.times[k - 1].1
        }
    }

    /// Unix ms of the minute in which the slash at `height` was applied (0 if unknown).
    pub fn time_of_slash(&self, height: u64) -> u64 {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .minutes
            .values()
            .find(|m| m.slashes.contains(&height))
            .map_or(0, |m| m.t)
    }

    /// The minutes from `from` (Unix ms) on, oldest first.
    pub fn minutes_since(&self, from: u64) -> Vec<Minute> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .minutes
            .range(from..)
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Writes what is pending of the minutes closed before `now` (of every
    /// minute with `all`, at shutdown) and syncs both files; drops minutes
    /// older than [`KEEP_MINUTES`] from memory.
    pub fn flush(&self, now: u64, all: bool) -> anyhow::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let current = now - now % MINUTE_MS;
        let upto = if all { u64::MAX } else { current };
        let rest = inner.pending.split_off(&upto);
        let closed = std::mem::replace(&mut inner.pending, rest);
        let tp = self.dir.join(TIMES);
        inner.times_file.sync_data().map_err(|e| io(&tp, e))?;
        if !closed.is_empty() {
            let mp = self.dir.join(MINUTES);
            let mut text = String::new();
            for m in closed.values() {
                text.push_str(&serde_json::to_string(m)?);
                text.push('\n');
            }
            let written = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&mp)
                .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_data()));
            if let Err(e) = written {
                // Keep them pending: the next flush tries again.
                inner.pending.extend(closed);
                return Err(io(&mp, e));
            }
        }
        let keep = current.saturating_sub(KEEP_MINUTES * MINUTE_MS);
        inner.minutes = inner.minutes.split_off(&keep);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> PublicKey {
        verinfer_types::SecretKey::from_seed(&[i; 32]).public()
    }

    #[test]
    fn minutes_and_times_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = 1_800_000_000_000u64;
        {
            let c = Chronicle::open(dir.path()).expect("open");
            c.settled(
                0,
                &[(key(1), vec![key(2), key(3)]), (key(1), vec![])],
                t0 + 5,
            );
            c.seen(key(2), Role::Verifier, t0 + 6);
            c.report(1, &[key(3)], t0 + 7);
            c.settled(2, &[(key(4), vec![key(2)])], t0 + MINUTE_MS + 1);
            c.flush(t0 + MINUTE_MS + 2, false).expect("flush");
            // A shutdown writes the open minute too.
            c.flush(t0 + MINUTE_MS + 3, true).expect("flush");
        }
        // After a restart in the same minute, more of it adds up.
        let c = Chronicle::open(dir.path()).expect("reopen");
        c.settled(3, &[(key(4), vec![])], t0 + MINUTE_MS + 4);
        c.flush(t0 + 3 * MINUTE_MS, false).expect("flush");
        let c = Chronicle::open(dir.path()).expect("reopen");
        assert_eq!(c.time_of_leaf(0), t0 + 5);
        assert_eq!(c.time_of_leaf(1), t0 + 5);
        assert_eq!(c.time_of_leaf(2), t0 + MINUTE_MS + 1);
        let m = c.minutes_since(0);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].verified, m[0].provisional, m[0].rejected), (1, 1, 1));
        assert_eq!(m[0].verdicts.get(&key(2)), Some(&1));
        assert_eq!(m[0].missed.get(&key(3)), Some(&1));
        assert!(m[0].verifiers.contains(&key(2)));
        assert_eq!(m[1].answers.get(&key(4)), Some(&2));
        assert_eq!((m[1].verified, m[1].provisional), (1, 1));
    }
}
