//! The embedded ledger: one data directory, crash-safe.
//!
//! - `wal/`: a write-ahead log (a `verinfer-log` log) whose first entry is
//!   the genesis and every later entry an applied transaction, in order,
//!   stamped with the ledger's time it applied at ([`WalEntry`]);
//! - `receipts/`: the transparency log of receipt leaves;
//! - `lock`: the owner's pid, exclusively locked while the ledger is open, so
//!   that one process at a time writes the directory (a second opener, such
//!   as a CLI command against a running node, gets "data directory in use").
//!
//! A transaction is checked and applied to the in-memory state under a lock,
//! queued on the WAL under the same lock (so WAL order is apply order), and
//! acknowledged once the WAL has synced it; concurrent submitters share
//! syncs. The ledger's time is its clock read under the lock, never below
//! the previous stamp; replay applies the recorded stamps, so the rebuilt
//! state is the same whenever it is rebuilt. Receipt leaves are appended only after their transaction is
//! durable, in WAL order, so the receipts log never holds a leaf the ledger
//! could forget. On open the state is rebuilt by replaying the WAL, and any
//! leaves of durable settlements missing from the receipts log (a crash
//! between the two syncs) are appended again.

use crate::state::{apply_checked, check_signatures, Effects, State, TxError};
use crate::tx::TxBody;
use crate::tx::{Genesis, Transaction, WalEntry, WalEntryTag};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use verinfer_log::{DirLock, DirLockError, Log, LogError};
use verinfer_types::records::{Leaf, Receipt};
use verinfer_types::sync::lock;
use verinfer_types::{Hash, PublicKey, Record, RecordError, SecretKey};

/// Origin of the write-ahead log (internal; it is never served).
const WAL_ORIGIN: &str = "verinfer.local/ledger-wal";
/// Largest WAL entry: a settlement batch of receipts.
const WAL_MAX_ENTRY: usize = 32 << 20;

/// Errors of the ledger service.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The transaction was refused; nothing changed.
    #[error(transparent)]
    Rejected(#[from] TxError),
    /// A log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Another process (or handle) has the ledger open.
    #[error(transparent)]
    Lock(#[from] DirLockError),
    /// A record failed to encode or decode.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The data directory was written under an older protocol version whose
    /// records this version refuses.
    #[error("the ledger cannot be opened: {0}")]
    Outdated(String),
    /// The data directory is inconsistent.
    #[error("ledger is damaged: {0}")]
    Corrupt(String),
    /// An earlier failure stopped the ledger; reopen it.
    #[error("ledger stopped after a failure: {0}")]
    Failed(String),
}

/// A clock: Unix time in ms.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// What an acknowledged transaction did.
#[derive(Clone, Debug)]
pub struct Applied {
    /// Ledger height after it.
    pub height: u64,
    /// The ledger's time it applied at.
    pub time_ms: u64,
    /// Its effects (leaves appended, proposal created).
    pub effects: Effects,
}

struct Publish {
    /// WAL index whose leaves are published next.
    next: u64,
    failed: Option<String>,
}

/// One transaction applied while the WAL is replayed, for replay consumers
/// ([`Ledger::open_with`]).
pub struct Replayed<'a> {
    /// Its WAL index.
    pub wal_index: u64,
    /// Ledger height after it.
    pub height: u64,
    /// The ledger's time it applied at.
    pub time_ms: u64,
    /// The transaction.
    pub tx: &'a Transaction,
    /// What it did.
    pub effects: &'a Effects,
    /// The state after it.
    pub state: &'a State,
}

/// The embedded ledger.
pub struct Ledger {
    wal: Log,
    clock: Clock,
    receipts: Arc<Log>,
    state: Mutex<State>,
    publish: Mutex<Publish>,
    published: Condvar,
    index: Mutex<ReceiptIndex>,
    /// Held while the ledger is open: one writer per directory.
    _lock: DirLock,
}

/// Where each receipt is: its leaf hash (the receipt id) maps to its leaf
/// index, and each leaf index to the WAL entry and position of the
/// settlement that holds its full text. Also the explorer's indices: the
/// leaves of each node and requester, the fees paid, and the slashes.
#[derive(Default)]
struct ReceiptIndex {
    by_id: HashMap<Hash, u64>,
    location: Vec<(u64, u32)>,
    by_key: HashMap<PublicKey, Vec<u64>>,
    fees: FeeTotals,
    by_model: HashMap<Hash, FeeTotals>,
    slashes: Vec<SlashRecord>,
    /// WAL indices of the applied challenges (the EVM settler repeats them).
    challenges: Vec<u64>,
}

/// Fees paid by all settled receipts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeeTotals {
    /// Receipts settled.
    pub receipts: u64,
    /// Charged to requesters.
    pub total: u128,
    /// Paid to inference nodes.
    pub node: u128,
    /// Paid to verifiers.
    pub verifiers: u128,
    /// Paid to the treasury.
    pub treasury: u128,
    /// Paid to the publishers of published models.
    pub publishers: u128,
}

impl FeeTotals {
    fn add(&mut self, f: &verinfer_types::records::Fees) {
        self.receipts += 1;
        self.total = self.total.saturating_add(f.total.0);
        self.node = self.node.saturating_add(f.node.0);
        self.verifiers = self.verifiers.saturating_add(f.verifiers.0);
        self.treasury = self.treasury.saturating_add(f.treasury.0);
        self.publishers = self.publishers.saturating_add(f.publisher_amount());
    }
}

/// One applied slash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlashRecord {
    /// WAL index of the transaction (its evidence is there).
    pub wal_index: u64,
    /// Ledger height after it.
    pub height: u64,
    /// Whose stake.
    pub accused: PublicKey,
    /// How much.
    pub amount: u128,
}

impl ReceiptIndex {
    fn add(&mut self, first_leaf: u64, wal_index: u64, leaves: &[Leaf], ids: &[Hash]) {
        for (k, (leaf, id)) in leaves.iter().zip(ids).enumerate() {
            let index = first_leaf + k as u64;
            if index as usize != self.location.len() {
                continue;
            }
            self.location.push((wal_index, k as u32));
            self.by_id.insert(*id, index);
            self.by_key.entry(leaf.node).or_default().push(index);
            if leaf.requester != leaf.node {
                self.by_key.entry(leaf.requester).or_default().push(index);
            }
            self.fees.add(&leaf.fees);
            self.by_model.entry(leaf.model).or_default().add(&leaf.fees);
        }
    }

    fn slashed(&mut self, wal_index: u64, height: u64, tx: &Transaction, effects: &Effects) {
        if matches!(tx.body, TxBody::Challenge { .. }) {
            self.challenges.push(wal_index);
        }
        if let Some((accused, amount)) = effects.slashed {
            self.slashes.push(SlashRecord {
                wal_index,
                height,
                accused,
                amount,
            });
        }
    }
}

fn leaf_ids(leaves: &[Leaf]) -> Result<Vec<Hash>, RecordError> {
    leaves
        .iter()
        .map(|l| {
            l.to_canonical()
                .map(|b| verinfer_log::merkle::leaf_hash(&b))
        })
        .collect()
}

/// The error for WAL entry `i` that does not decode: a clear refusal when it
/// holds a record version this protocol no longer accepts.
fn outdated(i: u64, bytes: &[u8], e: RecordError) -> LedgerError {
    const V1_VERDICT: &[u8] = b"\"verinfer.verdict.v1\"";
    if bytes.windows(V1_VERDICT.len()).any(|w| w == V1_VERDICT) {
        return LedgerError::Outdated(format!(
            "WAL entry {i} holds verinfer.verdict.v1 records, which are refused since \
             verdicts bind the request they checked (verinfer.verdict.v2); this data \
             directory was written by an older version: start a new ledger"
        ));
    }
    e.into()
}

impl Ledger {
    /// Creates a ledger in `dir` from `genesis`, with a receipts log named
    /// `receipts_origin` signed by `log_key`.
    pub fn init(
        dir: &Path,
        genesis: &Genesis,
        receipts_origin: &str,
        log_key: &SecretKey,
    ) -> Result<Ledger, LedgerError> {
        State::genesis(genesis)?;
        std::fs::create_dir_all(dir).map_err(|source| LogError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let lock = DirLock::acquire(dir)?;
        if dir.join("wal").exists() {
            return Err(LedgerError::Corrupt(format!(
                "{} already holds a ledger",
                dir.display()
            )));
        }
        Log::init_with_key(&dir.join("receipts"), receipts_origin, log_key)?;
        let wal = Log::create(
            &dir.join("wal"),
            WAL_ORIGIN,
            &SecretKey::generate(),
            WAL_MAX_ENTRY,
        )?;
        wal.append(genesis.to_canonical()?)?;
        drop(wal);
        Ledger::open_locked(dir, lock, |_| {})
    }

    /// Opens the ledger in `dir`, replaying its WAL. Fails with
    /// [`LedgerError::Lock`] while another handle has it open.
    pub fn open(dir: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(dir, |_| {})
    }

    /// Opens the ledger in `dir`, replaying its WAL and calling `on_replay`
    /// with each applied transaction, in order. Fails with
    /// [`LedgerError::Lock`] while another handle has it open.
    pub fn open_with(
        dir: &Path,
        on_replay: impl FnMut(Replayed<'_>),
    ) -> Result<Ledger, LedgerError> {
        if !dir.join("wal").exists() {
            return Err(LogError::Setup(format!(
                "no ledger in {} (run `verinfer ledger init` first)",
                dir.display()
            ))
            .into());
        }
        Ledger::open_locked(dir, DirLock::acquire(dir)?, on_replay)
    }

    fn open_locked(
        dir: &Path,
        lock: DirLock,
        mut on_replay: impl FnMut(Replayed<'_>),
    ) -> Result<Ledger, LedgerError> {
        let wal = Log::open(&dir.join("wal"))?;
        let receipts = Log::open(&dir.join("receipts"))?;
        if wal.size() == 0 {
            return Err(LedgerError::Corrupt(
                "the write-ahead log has no genesis".into(),
            ));
        }
        let genesis = Genesis::from_canonical(&wal.entry(0)?)?;
        let mut state = State::genesis(&genesis)?;
        let have = receipts.size();
        let mut missing: Vec<Leaf> = Vec::new();
        let mut index = ReceiptIndex::default();
        for i in 1..wal.size() {
            let bytes = wal.entry(i)?;
            let WalEntry { time_ms, tx, .. } =
                WalEntry::decode(&bytes, state.time_ms).map_err(|e| outdated(i, &bytes, e))?;
            if time_ms < state.time_ms {
                return Err(LedgerError::Corrupt(format!(
                    "WAL entry {i} is stamped before the entry preceding it"
                )));
            }
            // Signatures were checked before the transaction was logged.
            let effects = apply_checked(&mut state, &tx, time_ms)
                .map_err(|e| LedgerError::Corrupt(format!("WAL entry {i} does not apply: {e}")))?;
            on_replay(Replayed {
                wal_index: i,
                height: state.height,
                time_ms,
                tx: &tx,
                effects: &effects,
                state: &state,
            });
            index.add(
                effects.first_leaf,
                i,
                &effects.leaves,
                &leaf_ids(&effects.leaves)?,
            );
            index.slashed(i, state.height, &tx, &effects);
            for (k, leaf) in effects.leaves.into_iter().enumerate() {
                let index = effects.first_leaf + k as u64;
                if index + 1 == have
                    && receipts.leaf_hash(index)?
                        != verinfer_log::merkle::leaf_hash(&leaf.to_canonical()?)
                {
                    return Err(LedgerError::Corrupt(format!(
                        "receipt leaf {index} differs from the settlement in the WAL"
                    )));
                }
                if index >= have {
                    missing.push(leaf);
                }
            }
        }
        if have > state.leaves {
            return Err(LedgerError::Corrupt(format!(
                "the receipts log has {have} leaves but the WAL settled only {}",
                state.leaves
            )));
        }
        if !missing.is_empty() {
            tracing::warn!(
                count = missing.len(),
                "re-appending receipt leaves lost in a crash"
            );
            let bytes = missing
                .iter()
                .map(|l| l.to_canonical())
                .collect::<Result<Vec<_>, _>>()?;
            receipts.append_batch(bytes)?;
        }
        state
            .check_invariants()
            .map_err(|e| LedgerError::Corrupt(format!("after replay: {e}")))?;
        let next = wal.size();
        Ok(Ledger {
            wal,
            clock: system_clock(),
            receipts: Arc::new(receipts),
            state: Mutex::new(state),
            publish: Mutex::new(Publish { next, failed: None }),
            published: Condvar::new(),
            index: Mutex::new(index),
            _lock: lock,
        })
    }

    /// Replaces the clock that stamps transactions (tests move time by hand).
    pub fn with_clock(mut self, clock: Clock) -> Ledger {
        self.clock = clock;
        self
    }

    /// Checks, applies and durably records `tx`; returns once it is durable
    /// and its receipt leaves (if any) are in the receipts log.
    pub fn submit(&self, tx: &Transaction) -> Result<Applied, LedgerError> {
        check_signatures(tx)?;
        // The stamp is not known before the lock: leave room for the
        // entry's other fields (under 96 bytes with the largest stamp).
        let size = tx.to_canonical()?.len() + 96;
        if size > WAL_MAX_ENTRY {
            return Err(TxError::Rule(format!(
                "transaction of {size} bytes is larger than {WAL_MAX_ENTRY}; settle in smaller batches"
            ))
            .into());
        }
        let (index, applied) = {
            let mut state = lock(&self.state);
            self.check_failed()?;
            let time_ms = state.time_ms.max((self.clock)());
            let bytes = WalEntry {
                tag: WalEntryTag,
                time_ms,
                tx: tx.clone(),
            }
            .to_canonical()?;
            // apply_checked changes nothing on error. Once it succeeded, the
            // WAL must take the entry, or the ledger stops (and a reopen
            // replays only what the WAL holds).
            let effects = apply_checked(&mut state, tx, time_ms)?;
            let index = self.wal.submit(vec![bytes]).map_err(|e| self.fail(e))?;
            lock(&self.index).slashed(index, state.height, tx, &effects);
            (
                index,
                Applied {
                    height: state.height,
                    time_ms,
                    effects,
                },
            )
        };
        self.wal.wait_durable(index + 1).map_err(|e| self.fail(e))?;
        self.publish_leaves(index, &applied.effects)?;
        Ok(applied)
    }

    /// Appends the leaves of WAL entry `index` once all earlier entries have
    /// published theirs, then waits for them to be durable.
    fn publish_leaves(&self, index: u64, effects: &Effects) -> Result<(), LedgerError> {
        let mut p = lock(&self.publish);
        while p.next != index {
            if let Some(f) = &p.failed {
                return Err(LedgerError::Failed(f.clone()));
            }
            p = self.published.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        let n = effects.leaves.len() as u64;
        let result = (|| -> Result<(), LedgerError> {
            if n > 0 {
                let bytes = effects
                    .leaves
                    .iter()
                    .map(|l| l.to_canonical())
                    .collect::<Result<Vec<_>, _>>()?;
                let ids: Vec<Hash> = bytes
                    .iter()
                    .map(|b| verinfer_log::merkle::leaf_hash(b))
                    .collect();
                let first = self.receipts.submit(bytes)?;
                lock(&self.index).add(first, index, &effects.leaves, &ids);
                if first != effects.first_leaf {
                    return Err(LedgerError::Corrupt(format!(
                        "receipt leaf landed at {first}, expected {}",
                        effects.first_leaf
                    )));
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => p.next = index + 1,
            Err(ref e) => p.failed = Some(e.to_string()),
        }
        self.published.notify_all();
        drop(p);
        result?;
        if n > 0 {
            self.receipts
                .wait_durable(effects.first_leaf + n)
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    fn check_failed(&self) -> Result<(), LedgerError> {
        match &lock(&self.publish).failed {
            Some(f) => Err(LedgerError::Failed(f.clone())),
            None => Ok(()),
        }
    }

    fn fail(&self, e: impl std::fmt::Display) -> LedgerError {
        let msg = e.to_string();
        let mut p = lock(&self.publish);
        p.failed.get_or_insert(msg.clone());
        self.published.notify_all();
        LedgerError::Failed(msg)
    }

    /// Releases every reservation whose deadline has passed to its payer,
    /// each with a `Release` signed by `key`; returns how many. A
    /// reservation settled or released meanwhile is skipped.
    pub fn release_expired(&self, key: &SecretKey) -> Result<usize, LedgerError> {
        let now = (self.clock)();
        let expired = self.with_state(|s| s.expired(s.time_ms.max(now)));
        let mut released = 0;
        for request in expired {
            let nonce = self.with_state(|s| s.nonce(&key.public()));
            let tx = Transaction::signed(key, nonce, TxBody::Release { request })?;
            match self.submit(&tx) {
                Ok(_) => released += 1,
                Err(LedgerError::Rejected(e)) => {
                    tracing::debug!(%request, error = %e, "expired reservation not released");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(released)
    }

    /// Pays out the optimistic answers whose challenge window has closed
    /// (`Finalize`, signed with `key`); returns how many.
    pub fn finalize_matured(&self, key: &SecretKey) -> Result<usize, LedgerError> {
        let now = (self.clock)();
        let matured = self.with_state(|s| s.matured(s.time_ms.max(now)));
        let mut finalized = 0;
        for request in matured {
            let nonce = self.with_state(|s| s.nonce(&key.public()));
            let tx = Transaction::signed(key, nonce, TxBody::Finalize { request })?;
            match self.submit(&tx) {
                Ok(_) => finalized += 1,
                Err(LedgerError::Rejected(e)) => {
                    tracing::debug!(%request, error = %e, "matured answer not finalized");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(finalized)
    }

    /// Where the optimistic answer to `request` stands now (ledger time, or
    /// the clock if later: no transaction can be applied earlier).
    pub fn finality(&self, request: &Hash) -> Option<verinfer_types::records::Finality> {
        let now = (self.clock)();
        self.with_state(|s| s.finality(request, s.time_ms.max(now)))
    }

    /// Runs `f` on the current state.
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&lock(&self.state))
    }

    /// The transparency log of receipts.
    pub fn receipts(&self) -> &Arc<Log> {
        &self.receipts
    }

    /// The leaf index of the receipt whose id (the RFC 6962 leaf hash of its
    /// log leaf) is `id`, once its settlement is durable.
    pub fn receipt_index(&self, id: &Hash) -> Option<u64> {
        lock(&self.index).by_id.get(id).copied()
    }

    /// Leaf indices of the receipts whose node or requester is `key`, latest
    /// first, below `before`, at most `limit`.
    pub fn receipts_of(&self, key: &PublicKey, before: u64, limit: usize) -> Vec<u64> {
        lock(&self.index)
            .by_key
            .get(key)
            .map_or_else(Vec::new, |v| {
                v.iter()
                    .rev()
                    .copied()
                    .filter(|&i| i < before)
                    .take(limit)
                    .collect()
            })
    }

    /// Fees paid by every settled receipt.
    pub fn fee_totals(&self) -> FeeTotals {
        lock(&self.index).fees
    }

    /// Fees paid by the settled receipts of each model.
    pub fn fee_totals_by_model(&self) -> HashMap<Hash, FeeTotals> {
        lock(&self.index).by_model.clone()
    }

    /// Every applied slash, in order.
    pub fn slashes(&self) -> Vec<SlashRecord> {
        lock(&self.index).slashes.clone()
    }

    /// The WAL indices of every applied challenge, in order.
    pub fn challenges(&self) -> Vec<u64> {
        lock(&self.index).challenges.clone()
    }

    /// The transaction at WAL index `index` (0 is the genesis, not a transaction).
    pub fn transaction(&self, index: u64) -> Result<Transaction, LedgerError> {
        Ok(self.wal_entry(index)?.tx)
    }

    /// The WAL entry at `index` (0 is the genesis, not a transaction); an
    /// entry from before the ledger kept time reads with stamp 0.
    pub fn wal_entry(&self, index: u64) -> Result<WalEntry, LedgerError> {
        Ok(WalEntry::decode(&self.wal.entry(index)?, 0)?)
    }

    /// The full receipts at leaves `[from, to)`, reading each settlement
    /// in the WAL once.
    pub fn receipts_range(&self, from: u64, to: u64) -> Result<Vec<Receipt>, LedgerError> {
        let locations: Vec<(u64, u32)> = {
            let index = lock(&self.index);
            let end = (to as usize).min(index.location.len());
            index
                .location
                .get(from as usize..end)
                .unwrap_or_default()
                .to_vec()
        };
        if locations.len() as u64 != to.saturating_sub(from) {
            return Err(LedgerError::Corrupt(format!(
                "receipts {from}..{to} are not all settled"
            )));
        }
        let mut out = Vec::with_capacity(locations.len());
        let mut cached: Option<(u64, Vec<Receipt>)> = None;
        for (wal_index, pos) in locations {
            if cached.as_ref().map(|c| c.0) != Some(wal_index) {
                let tx = self.transaction(wal_index)?;
                let TxBody::Settle { receipts } = tx.body else {
                    return Err(LedgerError::Corrupt(format!(
                        "WAL entry {wal_index} is not a settlement"
                    )));
                };
                cached = Some((wal_index, receipts));
            }
            let r = cached
                .as_ref()
                .and_then(|c| c.1.get(pos as usize))
                .ok_or_else(|| {
                    LedgerError::Corrupt(format!("WAL entry {wal_index} lacks receipt {pos}"))
                })?;
            out.push(r.clone());
        }
        Ok(out)
    }

    /// The full receipt at leaf `index`, read from the settlement in the WAL
    /// that holds it (the text lives beside the log, not in it).
    pub fn receipt(&self, index: u64) -> Result<Option<Receipt>, LedgerError> {
        let Some((wal_index, pos)) = lock(&self.index).location.get(index as usize).copied() else {
            return Ok(None);
        };
        let tx = self.transaction(wal_index)?;
        match tx.body {
            TxBody::Settle { mut receipts } if (pos as usize) < receipts.len() => {
                Ok(Some(receipts.swap_remove(pos as usize)))
            }
            _ => Err(LedgerError::Corrupt(format!(
                "WAL entry {wal_index} does not hold receipt {index}"
            ))),
        }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for Replayed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayed").finish_non_exhaustive()
    }
}
