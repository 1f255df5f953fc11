//! What the explorer shows over time, per minute: calls verified,
//! provisional and rejected, node-level rejections, verdicts, answers and
//! missed tasks of each node, which nodes were heard from, and slashes; also
//! when each settlement and slash happened and when each node was last heard
//! from.
//!
//! Every count follows from durable data and is rebuilt on open; what is in
//! memory is only a cache of it:
//! - the ledger's write-ahead log, replayed with the ledger's time of each
//!   transaction ([`Tally::transaction`]): settlements (one call per receipt,
//!   verified when its certificate holds verdicts), heartbeats and
//!   registrations (liveness), slashes;
//! - the `reports` log in the ledger directory (a `verinfer-log` log): what
//!   only the gateway sees about an API call, one entry per call (rejected
//!   answer, node-level rejections, verifiers that missed a task). A report
//!   is appended and synced before it is acknowledged or counted, and a
//!   call reported again (a retried report) is not counted twice.
//!
//! So a stop, however abrupt, loses no acknowledged call: there is nothing
//! to flush.

use crate::wire::Report;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use verinfer_ledger::state::Effects;
use verinfer_ledger::tx::{Role, Transaction, TxBody};
use verinfer_ledger::{Ledger, LedgerError};
use verinfer_log::{Log, LogError};
use verinfer_types::{Hash, PublicKey};

/// Directory (in the ledger directory) of the reports log.
const REPORTS: &str = "reports";
const REPORTS_ORIGIN: &str = "verinfer.local/call-reports";
/// Minutes kept in memory and served (30 days).
pub const KEEP_MINUTES: u64 = 30 * 24 * 60;
/// The width of a minute, in ms (tests may narrow it).
pub const MINUTE_MS: u64 = 60_000;

/// Errors of the chronicle.
#[derive(Debug, thiserror::Error)]
pub enum ChronicleError {
    /// The reports log failed.
    #[error("reports log: {0}")]
    Log(#[from] LogError),
    /// A report did not encode.
    #[error("report: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One minute of activity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Minute {
    /// Start of the minute, Unix ms.
    pub t: u64,
    /// Calls settled with a certificate.
    pub verified: u64,
    /// Calls settled without a check.
    pub provisional: u64,
    /// Calls answered with a rejected result (once per call, whatever its
    /// retries).
    pub rejected: u64,
    /// Results the verifiers rejected, by inference node (a call retried
    /// after a rejection counts once here per node).
    pub node_rejections: BTreeMap<PublicKey, u64>,
    /// Verdicts in settled certificates, by verifier.
    pub verdicts: BTreeMap<PublicKey, u64>,
    /// Answers settled, by inference node.
    pub answers: BTreeMap<PublicKey, u64>,
    /// Verifier tasks that got no verdict, by verifier.
    pub missed: BTreeMap<PublicKey, u64>,
    /// Verifiers heard from.
    pub verifiers: BTreeSet<PublicKey>,
    /// Inference nodes heard from.
    pub inference: BTreeSet<PublicKey>,
    /// Heights of slashes applied.
    pub slashes: Vec<u64>,
}

/// One entry of the reports log: a gateway's report with the ledger's time
/// of its arrival.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReportEntry {
    /// When the ledger took it (Unix ms).
    pub time_ms: u64,
    /// The report.
    #[serde(flatten)]
    pub report: Report,
}

/// The chronicle's counts: a pure function of the transactions applied
/// (with their times) and the reports taken, in any order.
#[derive(Debug)]
pub struct Tally {
    minute_ms: u64,
    minutes: BTreeMap<u64, Minute>,
    /// First leaf of each settlement -> its time.
    leaf_times: BTreeMap<u64, u64>,
    /// Ledger height of each slash -> its time.
    slash_times: HashMap<u64, u64>,
    roles: HashMap<PublicKey, Role>,
    last_seen: HashMap<PublicKey, u64>,
}

impl Tally {
    /// An empty tally with minutes `minute_ms` wide.
    pub fn new(minute_ms: u64) -> Tally {
        Tally {
            minute_ms: minute_ms.max(1),
            minutes: BTreeMap::new(),
            leaf_times: BTreeMap::new(),
            slash_times: HashMap::new(),
            roles: HashMap::new(),
            last_seen: HashMap::new(),
        }
    }

    fn minute(&mut self, time_ms: u64) -> &mut Minute {
        let t = time_ms - time_ms % self.minute_ms;
        self.minutes.entry(t).or_insert_with(|| Minute {
            t,
            ..Minute::default()
        })
    }

    /// Bounds memory: at most [`KEEP_MINUTES`] minutes, the latest.
    fn trim(&mut self) {
        while self.minutes.len() as u64 > KEEP_MINUTES {
            self.minutes.pop_first();
        }
    }

    /// Counts transaction `tx`, applied at ledger height `height` and time
    /// `time_ms`; a settlement's receipts took leaves from `first_leaf` on,
    /// and `slashed` says whether it slashed.
    pub fn transaction(
        &mut self,
        time_ms: u64,
        height: u64,
        tx: &Transaction,
        first_leaf: u64,
        slashed: bool,
    ) {
        match &tx.body {
            TxBody::Register { role, .. } => {
                self.roles.insert(tx.signer, *role);
                self.heard(tx.signer, time_ms);
            }
            TxBody::Heartbeat => self.heard(tx.signer, time_ms),
            TxBody::Settle { receipts } => {
                self.leaf_times.insert(first_leaf, time_ms);
                let m = self.minute(time_ms);
                for r in receipts {
                    if r.certificate.verdicts.is_empty() {
                        m.provisional += 1;
                    } else {
                        m.verified += 1;
                    }
                    *m.answers.entry(r.result.node).or_default() += 1;
                    for v in &r.certificate.verdicts {
                        *m.verdicts.entry(v.verifier).or_default() += 1;
                    }
                }
            }
            _ => {}
        }
        if slashed {
            self.slash_times.insert(height, time_ms);
            self.minute(time_ms).slashes.push(height);
        }
        self.trim();
    }

    fn heard(&mut self, key: PublicKey, time_ms: u64) {
        let seen = self.last_seen.entry(key).or_default();
        *seen = (*seen).max(time_ms);
        let role = self.roles.get(&key).copied();
        let m = self.minute(time_ms);
        if role == Some(Role::Verifier) {
            m.verifiers.insert(key);
        } else if role == Some(Role::Inference) {
            m.inference.insert(key);
        }
    }

    /// Counts a report (once per call: the caller keeps duplicates out).
    pub fn report(&mut self, e: &ReportEntry) {
        let m = self.minute(e.time_ms);
        if e.report.rejected {
            m.rejected += 1;
        }
        for k in &e.report.node_rejections {
            *m.node_rejections.entry(*k).or_default() += 1;
        }
        for k in &e.report.missed {
            *m.missed.entry(*k).or_default() += 1;
        }
        self.trim();
    }

    /// The width of a minute, in ms.
    pub fn minute_ms(&self) -> u64 {
        self.minute_ms
    }

    /// Unix ms of the settlement of leaf `index` (0 if unknown).
    pub fn time_of_leaf(&self, index: u64) -> u64 {
        self.leaf_times
            .range(..=index)
            .next_back()
            .map_or(0, |(_, t)| *t)
    }

    /// Unix ms of the slash at ledger height `height` (0 if unknown).
    pub fn time_of_slash(&self, height: u64) -> u64 {
        self.slash_times.get(&height).copied().unwrap_or(0)
    }

    /// When each node was last heard from (Unix ms).
    pub fn last_seen(&self) -> &HashMap<PublicKey, u64> {
        &self.last_seen
    }

    /// The minutes from `from` (Unix ms) on, oldest first.
    pub fn minutes_since(&self, from: u64) -> Vec<Minute> {
        self.minutes.range(from..).map(|(_, m)| m.clone()).collect()
    }
}

struct Inner {
    tally: Tally,
    /// Calls reported, with their entry in the reports log.
    reported: HashMap<Hash, u64>,
}

/// The ledger role's chronicle: the [`Tally`] and the reports log.
pub struct Chronicle {
    reports: Log,
    inner: Mutex<Inner>,
}

impl Chronicle {
    /// Opens (or creates) the reports log in ledger directory `dir` and
    /// counts its entries; the caller then counts the ledger's transactions
    /// with [`Chronicle::replay`].
    pub fn open(dir: &Path, minute_ms: u64) -> Result<Chronicle, ChronicleError> {
        let d = dir.join(REPORTS);
        let reports = if d.join("config.json").exists() {
            Log::open(&d)?
        } else {
            Log::init(&d, REPORTS_ORIGIN)?
        };
        let mut tally = Tally::new(minute_ms);
        let mut reported = HashMap::new();
        for i in 0..reports.size() {
            match serde_json::from_slice::<ReportEntry>(&reports.entry(i)?) {
                Ok(e) => {
                    if reported.insert(e.report.call, i).is_none() {
                        tally.report(&e);
                    }
                }
                // An entry this version cannot read (written by a later
                // one): the chart lacks it, nothing else depends on it.
                Err(err) => tracing::warn!(index = i, error = %err, "unreadable call report"),
            }
        }
        Ok(Chronicle {
            reports,
            inner: Mutex::new(Inner { tally, reported }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        verinfer_types::sync::lock(&self.inner)
    }

    /// Counts an applied (durable) transaction with its effects.
    pub fn transaction(&self, time_ms: u64, height: u64, tx: &Transaction, effects: &Effects) {
        self.lock().tally.transaction(
            time_ms,
            height,
            tx,
            effects.first_leaf,
            effects.slashed.is_some(),
        );
    }

    /// Counts every transaction the ledger's WAL holds, at the ledger's time
    /// of each. Call it before the role serves: a transaction applied later
    /// is counted by [`Chronicle::transaction`] instead.
    pub fn replay(&self, ledger: &Ledger) -> Result<(), LedgerError> {
        let slashed: HashSet<u64> = ledger.slashes().iter().map(|s| s.wal_index).collect();
        // Every WAL entry after the genesis is one applied transaction, so
        // the height after entry `i` is `i`; a settlement takes one leaf per
        // receipt, all or none.
        let size = ledger.with_state(|s| s.height);
        let mut leaves = 0u64;
        let mut inner = self.lock();
        for i in 1..=size {
            let e = ledger.wal_entry(i)?;
            let first = leaves;
            if let TxBody::Settle { receipts } = &e.tx.body {
                leaves += receipts.len() as u64;
            }
            inner
                .tally
                .transaction(e.time_ms, i, &e.tx, first, slashed.contains(&i));
        }
        Ok(())
    }

    /// Records a gateway's report of one call at `now`: returns once it is
    /// durable (and counted). A call already reported is not counted again;
    /// the answer then waits until its first report is durable.
    pub fn report(&self, report: &Report, now: u64) -> Result<(), ChronicleError> {
        let entry = ReportEntry {
            time_ms: now,
            report: report.clone(),
        };
        let index = {
            let mut inner = self.lock();
            if let Some(&i) = inner.reported.get(&report.call) {
                drop(inner);
                return Ok(self.reports.wait_durable(i + 1)?);
            }
            // Queued under the lock, so a second report of the same call
            // finds the first.
            let i = self.reports.submit(vec![serde_json::to_vec(&entry)?])?;
            inner.reported.insert(report.call, i);
            i
        };
        self.reports.wait_durable(index + 1)?;
        self.lock().tally.report(&entry);
        Ok(())
    }

    /// Runs `f` on the counts.
    pub fn with<T>(&self, f: impl FnOnce(&Tally) -> T) -> T {
        f(&self.lock().tally)
    }
}

impl std::fmt::Debug for Chronicle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chronicle").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u8) -> PublicKey {
        verinfer_types::SecretKey::from_seed(&[i; 32]).public()
    }

    fn report(call: u8, rejected: bool, nodes: &[u8], missed: &[u8]) -> Report {
        Report {
            call: Hash([call; 32]),
            rejected,
            node_rejections: nodes.iter().map(|&k| key(k)).collect(),
            missed: missed.iter().map(|&k| key(k)).collect(),
        }
    }

    #[test]
    fn a_call_reported_twice_counts_once_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t0 = 1_800_000_000_000u64;
        {
            let c = Chronicle::open(dir.path(), MINUTE_MS).expect("open");
            // Rejected on two nodes in turn: one rejected call, two node
            // rejections; then the same report again (a retry).
            let r = report(1, true, &[1, 2], &[3]);
            c.report(&r, t0 + 5).expect("report");
            c.report(&r, t0 + 6).expect("report again");
            c.report(&report(2, false, &[1], &[]), t0 + MINUTE_MS)
                .expect("report");
        }
        let c = Chronicle::open(dir.path(), MINUTE_MS).expect("reopen");
        c.report(&report(1, true, &[1, 2], &[3]), t0 + 2 * MINUTE_MS)
            .expect("a retry after the restart");
        let m = c.with(|t| t.minutes_since(0));
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].t, m[0].rejected), (t0, 1));
        assert_eq!(m[0].node_rejections.get(&key(1)), Some(&1));
        assert_eq!(m[0].node_rejections.get(&key(2)), Some(&1));
        assert_eq!(m[0].missed.get(&key(3)), Some(&1));
        assert_eq!((m[1].rejected, m[1].node_rejections.len()), (0, 1));
    }

    #[test]
    fn minutes_narrow_for_tests() {
        let mut t = Tally::new(1_000);
        t.report(&ReportEntry {
            time_ms: 10_500,
            report: report(1, true, &[], &[]),
        });
        t.report(&ReportEntry {
            time_ms: 11_999,
            report: report(2, true, &[], &[]),
        });
        let m = t.minutes_since(0);
        assert_eq!(
            m.iter().map(|m| (m.t, m.rejected)).collect::<Vec<_>>(),
            vec![(10_000, 1), (11_000, 1)]
        );
    }

    #[test]
    fn replaying_the_wal_rebuilds_what_was_counted_live() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        use verinfer_ledger::testing::World;
        use verinfer_types::records::Amount;
        use verinfer_types::Record;

        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = World::new();
        let t0 = 1_800_000_000_000u64;
        let clock = Arc::new(AtomicU64::new(t0));
        let c = clock.clone();
        let ledger = Ledger::init(
            dir.path(),
            &w.genesis(),
            "verinfer.test/receipts",
            &verinfer_types::SecretKey::from_seed(&[9; 32]),
        )
        .expect("init")
        .with_clock(Arc::new(move || c.load(Ordering::SeqCst)));
        let live = Chronicle::open(dir.path(), MINUTE_MS).expect("open");
        let submit = |ledger: &Ledger, tx: Transaction| {
            let a = ledger.submit(&tx).expect("applied");
            live.transaction(a.time_ms, a.height, &tx, &a.effects);
        };
        for tx in w.setup() {
            submit(&ledger, tx);
        }
        clock.store(t0 + MINUTE_MS + 7, Ordering::SeqCst);
        for k in w.verifiers.clone().iter().chain(&w.nodes.clone()) {
            let tx = w.tx(k, TxBody::Heartbeat);
            submit(&ledger, tx);
        }
        clock.store(t0 + 3 * MINUTE_MS, Ordering::SeqCst);
        let user = w.users[0].clone();
        let mut receipts = Vec::new();
        for seed in 0..3 {
            let req = w.request(&user, seed, 2);
            let body = TxBody::Reserve {
                request: req.hash().expect("hash"),
                amount: Amount(w.max_fee().0),
                ttl_secs: verinfer_ledger::testing::RESERVE_TTL_SECS,
            };
            let tx = w.tx(&user, body);
            submit(&ledger, tx);
            receipts.push(ledger.with_state(|s| w.receipt(s, &req, 2)));
        }
        let relayer = w.verifiers[0].clone();
        let tx = w.tx(&relayer, TxBody::Settle { receipts });
        submit(&ledger, tx);
        drop(ledger);

        let view = |c: &Chronicle| {
            c.with(|t| (t.minutes_since(0), t.last_seen().clone(), t.time_of_leaf(2)))
        };
        // One owner per directory: the live chronicle closes before the reopen.
        let counted_live = view(&live);
        drop(live);
        let ledger = Ledger::open(dir.path()).expect("reopen");
        let rebuilt = Chronicle::open(dir.path(), MINUTE_MS).expect("open");
        rebuilt.replay(&ledger).expect("replay");
        let (minutes, seen, leaf_time) = view(&rebuilt);
        assert_eq!((minutes.clone(), seen.clone(), leaf_time), counted_live);
        // The heartbeats' minute shows every node live; the settlement's
        // minute its three verified calls and their verdicts.
        let beat = &minutes[1];
        assert_eq!(
            (beat.t, beat.verifiers.len(), beat.inference.len()),
            (t0 + MINUTE_MS, 4, 2)
        );
        let settled = minutes.last().expect("settlement minute");
        assert_eq!((settled.t, settled.verified), (t0 + 3 * MINUTE_MS, 3));
        assert_eq!(settled.verdicts.get(&w.verifiers[1].public()), Some(&3));
        assert_eq!(leaf_time, t0 + 3 * MINUTE_MS);
        assert_eq!(seen.get(&w.nodes[0].public()), Some(&(t0 + MINUTE_MS + 7)));
    }
}
