//! The submitter: settles every final checkpoint of the receipts log on
//! chain, repeats every slash of the ledger there, and (with a bridge)
//! mirrors the escrow's movements logged on chain back into the ledger.
//!
//! Idempotent by construction: each round starts from what the chain says
//! (its settled size and root), never from what this process believes it
//! sent. A batch is always "from the chain's settled size to the latest final
//! checkpoint", so a transaction that was dropped, failed on an RPC error, or
//! was undone by a chain restarted from an older state is simply built and
//! sent again, and one that did land makes the next round start after it: the
//! contract's `oldSize == settledSize` rule refuses anything applied twice.
//! Nonces come from the chain's mined count for every transaction (see
//! `chain::FeePolicy`), so a restarted chain or a lost transaction leaves no
//! gap behind, and a stuck one is replaced rather than queued behind.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use verinfer_types::sync::lock;

use alloy::primitives::{Address, Bytes, B256};
use alloy::signers::Signature as EcdsaSignature;
use serde::{Deserialize, Serialize};
use verinfer_types::records::Amount;
use verinfer_types::{Hash, PublicKey, SecretKey};

use super::chain::{Chain, EscrowEvent, EscrowKind, Mined};
use super::netting::{
    check_claim, check_settlement, claim_digest, domain, evidence_subject, pack_signatures,
    slash_digest, slash_struct, vault, ClaimRequest, EvmSignature, HeldFee, SettlementEntry,
    SettlementRequest, SlashRequest,
};
use super::{invalid, EvmError, Link};
use crate::tx::{chain_event, Movement, TxBody};
use crate::{Ledger, Transaction};

/// A boxed future (the cosigners are reached over the network).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Who signs settlements and slashes: the verifiers, asked over the network.
/// Each answer is checked here before it is sent on chain.
pub trait Cosigners: Send + Sync {
    /// Signatures of a settlement request (whatever the verifiers gave).
    fn settlement<'a>(&'a self, req: &'a SettlementRequest) -> BoxFuture<'a, Vec<EvmSignature>>;
    /// Signatures of a slash request (also those of a challenge: the
    /// contract's `challenge` takes a slash's signatures).
    fn slash<'a>(&'a self, req: &'a SlashRequest) -> BoxFuture<'a, Vec<EvmSignature>>;
    /// Signatures of a vault's claim.
    fn claim<'a>(&'a self, req: &'a ClaimRequest) -> BoxFuture<'a, Vec<EvmSignature>>;
}

/// A final checkpoint of the receipts log: its note (with cosignatures).
#[derive(Clone, Debug)]
pub struct FinalCheckpoint {
    /// The cosigned note.
    pub note: String,
    /// Its size.
    pub size: u64,
}

/// One transaction the settler got mined (the explorer lists them).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settlement {
    /// When it was mined (ms since the epoch, local clock).
    pub time_ms: u64,
    /// `checkpoint`, `slash`, `challenge`, `release` (a held fee paid out)
    /// or `claim` (a vault moved to its linked address).
    pub kind: String,
    /// Settled size before (checkpoints).
    pub old_size: u64,
    /// Settled size after (checkpoints).
    pub new_size: u64,
    /// Transfer words (checkpoints), or 0.
    pub transfers: u64,
    /// The slashed or challenged node (slashes, challenges), the account
    /// whose vault moved (claims).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accused: Option<PublicKey>,
    /// Transaction hash.
    pub tx: B256,
    /// Gas used.
    pub gas_used: u64,
    /// Block number.
    pub block: u64,
}

impl Settlement {
    /// A mined transaction that moves no checkpoint (slash, challenge,
    /// release, claim), now.
    fn event(kind: &str, transfers: u64, accused: Option<PublicKey>, m: Mined) -> Settlement {
        Settlement {
            time_ms: now_ms(),
            kind: kind.into(),
            old_size: 0,
            new_size: 0,
            transfers,
            accused,
            tx: m.tx,
            gas_used: m.gas_used,
            block: m.block,
        }
    }
}

const LINKS_FILE: &str = "evm-links.json";
const HISTORY_FILE: &str = "evm-settlements.jsonl";
const BRIDGE_FILE: &str = "evm-bridge.json";
const HOLDS_FILE: &str = "evm-holds.json";

/// A fee a checkpoint holds on chain, kept until the chain no longer holds
/// it: its payout words are needed to release it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PendingHold {
    /// The checkpoint size that brings the hold: until the chain has settled
    /// it, a missing hold is one still to come.
    settled_by: u64,
    fee: HeldFee,
}

/// The bridge from the contract's escrow to the embedded ledger: every
/// deposit, withdrawal request, cancellation and withdrawal logged on chain
/// is mirrored by a [`TxBody::Bridge`] the treasury signs, so what the
/// ledger lets a requester reserve is what the chain will pay.
pub struct BridgeConfig {
    /// The treasury's key (it signs the bridge transactions).
    pub treasury: SecretKey,
    /// The first block to mirror (earlier movements were mirrored at
    /// genesis, or never happened).
    pub from_block: u64,
    /// Blocks a log must be under before it is mirrored (a reorganisation
    /// deeper than this could undo a deposit already credited).
    pub confirmations: u64,
}

/// Where the bridge is: the next block to read, and movements of accounts
/// not linked yet (mirrored once they are, in order).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct BridgeCursor {
    next_block: u64,
    waiting: Vec<EscrowEvent>,
}

struct Bridge {
    config: BridgeConfig,
    cursor: Mutex<BridgeCursor>,
}

/// The settler of one ledger.
pub struct Settler {
    chain: Chain,
    ledger: Arc<Ledger>,
    cosigners: Arc<dyn Cosigners>,
    dir: PathBuf,
    links: Mutex<BTreeMap<PublicKey, Link>>,
    history: Mutex<Vec<Settlement>>,
    holds: Mutex<Vec<PendingHold>>,
    bridge: Option<Bridge>,
}

fn io(what: &str, e: impl std::fmt::Display) -> EvmError {
    EvmError::Chain(format!("{what}: {e}"))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Settler {
    /// The settler for `ledger` whose files (links, history) live in `dir`.
    pub fn new(
        chain: Chain,
        ledger: Arc<Ledger>,
        cosigners: Arc<dyn Cosigners>,
        dir: PathBuf,
    ) -> Result<Settler, EvmError> {
        let links: Vec<Link> = match std::fs::read(dir.join(LINKS_FILE)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| io(LINKS_FILE, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(LINKS_FILE, e)),
        };
        let history = match std::fs::read_to_string(dir.join(HISTORY_FILE)) {
            // A line cut by a crash is the last one: skip what does not parse.
            Ok(t) => t
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(HISTORY_FILE, e)),
        };
        let holds = match std::fs::read(dir.join(HOLDS_FILE)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| io(HOLDS_FILE, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(HOLDS_FILE, e)),
        };
        let s = Settler {
            chain,
            ledger,
            cosigners,
            dir,
            links: Mutex::new(BTreeMap::new()),
            history: Mutex::new(history),
            holds: Mutex::new(holds),
            bridge: None,
        };
        for l in links {
            s.add_link_in_memory(l)?;
        }
        Ok(s)
    }

    /// Also mirrors the contract's escrow into the ledger (see
    /// [`BridgeConfig`]); resumes where an earlier run stopped.
    pub fn with_bridge(mut self, config: BridgeConfig) -> Result<Settler, EvmError> {
        if config.treasury.public() != self.ledger.with_state(|s| s.treasury) {
            return Err(invalid("the bridge key is not the ledger's treasury"));
        }
        let cursor = match std::fs::read(self.dir.join(BRIDGE_FILE)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| io(BRIDGE_FILE, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BridgeCursor {
                next_block: config.from_block,
                waiting: Vec::new(),
            },
            Err(e) => return Err(io(BRIDGE_FILE, e)),
        };
        self.bridge = Some(Bridge {
            config,
            cursor: Mutex::new(cursor),
        });
        Ok(self)
    }

    /// The account linked to an EVM address.
    fn account_of(&self, address: &Address) -> Option<PublicKey> {
        lock(&self.links)
            .values()
            .find(|l| l.address == *address)
            .map(|l| l.account)
    }

    /// Mirrors the escrow movements confirmed since the last call. Returns
    /// how many were applied. Exactly once: the ledger refuses an event it
    /// has applied, so a crash before the cursor is saved only re-reads.
    pub async fn bridge_once(&self) -> Result<usize, EvmError> {
        let Some(b) = &self.bridge else {
            return Ok(0);
        };
        let to = self
            .chain
            .head()
            .await?
            .saturating_sub(b.config.confirmations);
        let mut cursor = lock(&b.cursor).clone();
        let mut events = std::mem::take(&mut cursor.waiting);
        // Bounded ranges: RPC providers cap the blocks of one eth_getLogs.
        while cursor.next_block <= to {
            let end = to.min(cursor.next_block.saturating_add(4_999));
            events.extend(self.chain.escrow_events(cursor.next_block, end).await?);
            cursor.next_block = end + 1;
        }
        let treasury = b.config.treasury.public();
        let mut applied = 0;
        // An account whose movement waits: its later ones wait behind it.
        let mut held_back = std::collections::BTreeSet::new();
        for e in events {
            let id = chain_event(self.chain.chain_id, &e.tx.0, e.log_index);
            if self.ledger.with_state(|s| s.bridged.contains(&id)) {
                continue;
            }
            let account = match held_back.contains(&e.account) {
                true => None,
                false => self.account_of(&e.account),
            };
            let Some(account) = account else {
                held_back.insert(e.account);
                cursor.waiting.push(e);
                continue;
            };
            let movement = match e.kind {
                EscrowKind::Deposit { amount } => Movement::Deposit {
                    account,
                    amount: Amount(amount),
                },
                EscrowKind::WithdrawalRequested { amount } => Movement::WithdrawalRequested {
                    account,
                    amount: Amount(amount),
                },
                EscrowKind::WithdrawalCancelled => Movement::WithdrawalCancelled { account },
                EscrowKind::Withdrawn { amount } => Movement::Withdrawn {
                    account,
                    amount: Amount(amount),
                },
            };
            let nonce = self.ledger.with_state(|s| s.nonce(&treasury));
            let tx = Transaction::signed(
                &b.config.treasury,
                nonce,
                TxBody::Bridge {
                    event: id,
                    movement,
                },
            )?;
            match tokio::task::block_in_place(|| self.ledger.submit(&tx)) {
                Ok(_) => applied += 1,
                Err(err) => {
                    tracing::warn!(error = %err, tx = %e.tx, "escrow movement not mirrored yet");
                    held_back.insert(e.account);
                    cursor.waiting.push(e);
                }
            }
        }
        let bytes = serde_json::to_vec_pretty(&cursor).map_err(|e| io(BRIDGE_FILE, e))?;
        verinfer_log::write_atomic(&self.dir, BRIDGE_FILE, &bytes)
            .map_err(|e| io(BRIDGE_FILE, e))?;
        *lock(&b.cursor) = cursor;
        Ok(applied)
    }

    /// The chain connection.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    fn add_link_in_memory(&self, link: Link) -> Result<bool, EvmError> {
        link.verify()?;
        let mut links = lock(&self.links);
        Ok(links.insert(link.account, link.clone()).as_ref() != Some(&link))
    }

    /// Records an account's EVM address (checked, kept on disk).
    pub fn add_link(&self, link: Link) -> Result<(), EvmError> {
        if self.add_link_in_memory(link)? {
            let all: Vec<Link> = lock(&self.links).values().cloned().collect();
            let bytes = serde_json::to_vec_pretty(&all).map_err(|e| io(LINKS_FILE, e))?;
            verinfer_log::write_atomic(&self.dir, LINKS_FILE, &bytes)
                .map_err(|e| io(LINKS_FILE, e))?;
        }
        Ok(())
    }

    /// The EVM address linked to `account`.
    pub fn address_of(&self, account: &PublicKey) -> Option<alloy::primitives::Address> {
        lock(&self.links).get(account).map(|l| l.address)
    }

    /// The transactions mined so far, oldest first.
    pub fn history(&self) -> Vec<Settlement> {
        lock(&self.history).clone()
    }

    fn record(&self, s: Settlement) -> Result<(), EvmError> {
        let mut line = serde_json::to_vec(&s).map_err(|e| io(HISTORY_FILE, e))?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(HISTORY_FILE))
            .map_err(|e| io(HISTORY_FILE, e))?;
        f.write_all(&line)
            .and_then(|()| f.sync_data())
            .map_err(|e| io(HISTORY_FILE, e))?;
        lock(&self.history).push(s);
        Ok(())
    }

    /// Keeps only signatures that recover to the address they claim, over
    /// `digest`.
    fn valid(digest: B256, sigs: Vec<EvmSignature>) -> Vec<EvmSignature> {
        sigs.into_iter()
            .filter(|s| {
                EcdsaSignature::from_raw(&s.signature)
                    .ok()
                    .and_then(|sig| sig.recover_address_from_prehash(&digest).ok())
                    == Some(s.address)
            })
            .collect()
    }

    /// Settles up to `fin` if the chain is behind it. Returns the mined
    /// transaction, or `None` when there was nothing to do.
    pub async fn settle_once(&self, fin: &FinalCheckpoint) -> Result<Option<Mined>, EvmError> {
        let (settled, root) = self.chain.checkpoint().await?;
        if settled >= fin.size {
            return Ok(None);
        }
        let log = self.ledger.receipts().clone();
        let ours = if settled == 0 {
            verinfer_log::merkle::empty_root()
        } else {
            log.root(settled).map_err(|e| io("receipts log", e))?
        };
        if ours.0 != root.0 {
            return Err(invalid(format!(
                "the chain settled another history: root {root} at size {settled}, the log has {ours}"
            )));
        }
        let (old, new) = (settled, fin.size);
        let entries = tokio::task::block_in_place(|| -> Result<Vec<SettlementEntry>, EvmError> {
            let receipts = self.ledger.receipts_range(old, new)?;
            receipts
                .into_iter()
                .enumerate()
                .map(|(k, receipt)| {
                    Ok(SettlementEntry {
                        receipt,
                        proof: log
                            .inclusion_proof(old + k as u64, new)
                            .map_err(|e| io("receipts log", e))?,
                    })
                })
                .collect()
        })?;
        // The links of every account paid or charged that has one: the
        // netting pays an unlinked one to its vault (and refuses an unlinked
        // payer).
        let links: Vec<Link> = {
            let all = lock(&self.links);
            let mut want = std::collections::BTreeSet::new();
            want.insert(self.ledger.with_state(|s| s.treasury));
            for e in &entries {
                let r = &e.receipt;
                want.insert(r.request.requester);
                want.insert(r.result.node);
                want.extend(r.fees.publisher.map(|p| p.account));
                want.extend(r.certificate.verdicts.iter().map(|v| v.verifier));
            }
            want.iter().filter_map(|k| all.get(k).cloned()).collect()
        };
        let req = SettlementRequest {
            chain_id: self.chain.chain_id,
            contract: self.chain.contract,
            checkpoint: fin.note.clone(),
            old_size: old,
            old_root: Hash(root.0),
            treasury: self.ledger.with_state(|s| s.treasury),
            links,
            entries,
        };
        // Our own check of what we ask others to sign.
        let new_root = log.root(new).map_err(|e| io("receipts log", e))?;
        let batch = check_settlement(&req, new, &new_root)?;
        let digest = batch.digest(&domain(req.chain_id, req.contract));
        let sigs = Self::valid(digest, self.cosigners.settlement(&req).await);
        if sigs.is_empty() {
            return Err(EvmError::Chain("no verifier signed the settlement".into()));
        }
        let proof: Vec<B256> = if old == 0 {
            Vec::new()
        } else {
            log.consistency_proof(old, new)
                .map_err(|e| io("receipts log", e))?
                .iter()
                .map(|h| B256::from(h.0))
                .collect()
        };
        let transfers = batch.checkpoint.transfers.len() as u64;
        // Kept before sending: a hold mined while this process dies must
        // still be released.
        self.keep_holds(new, &batch.held)?;
        match self
            .chain
            .settle(&batch, proof, pack_signatures(sigs))
            .await
        {
            Ok(m) => {
                self.record(Settlement {
                    time_ms: now_ms(),
                    kind: "checkpoint".into(),
                    old_size: old,
                    new_size: new,
                    transfers,
                    accused: None,
                    tx: m.tx,
                    gas_used: m.gas_used,
                    block: m.block,
                })?;
                Ok(Some(m))
            }
            Err(e) => {
                // Landed after all (a receipt lost, another submitter)? Then
                // the next round starts after it; otherwise report.
                match self.chain.checkpoint().await {
                    Ok((s, _)) if s >= new => Ok(None),
                    _ => Err(e),
                }
            }
        }
    }

    fn save_holds(&self, holds: &[PendingHold]) -> Result<(), EvmError> {
        let bytes = serde_json::to_vec_pretty(holds).map_err(|e| io(HOLDS_FILE, e))?;
        verinfer_log::write_atomic(&self.dir, HOLDS_FILE, &bytes).map_err(|e| io(HOLDS_FILE, e))
    }

    fn keep_holds(&self, settled_by: u64, fees: &[HeldFee]) -> Result<(), EvmError> {
        if fees.is_empty() {
            return Ok(());
        }
        let mut holds = lock(&self.holds);
        for f in fees {
            if !holds.iter().any(|h| h.fee.result == f.result) {
                holds.push(PendingHold {
                    settled_by,
                    fee: f.clone(),
                });
            }
        }
        self.save_holds(&holds)
    }

    /// Pays out every held fee whose window has closed on chain, unless the
    /// ledger overturned its answer (its challenge is the chain's to take,
    /// [`Settler::slash_pending`]). Returns how many were paid out.
    pub async fn release_matured(&self) -> Result<usize, EvmError> {
        let pending = lock(&self.holds).clone();
        if pending.is_empty() {
            return Ok(0);
        }
        let (settled, _) = self.chain.checkpoint().await?;
        let now = self.chain.time().await?;
        let mut done = Vec::new();
        let mut released = 0;
        for h in &pending {
            match self.chain.held_until(h.fee.result).await? {
                None if settled >= h.settled_by => done.push(h.fee.result),
                Some(until)
                    if now >= until
                        && !self
                            .ledger
                            .with_state(|s| s.overturned.contains(&h.fee.request)) =>
                {
                    let m = self
                        .chain
                        .release(h.fee.result, h.fee.payout.clone())
                        .await?;
                    self.record(Settlement::event(
                        "release",
                        h.fee.payout.len() as u64,
                        None,
                        m,
                    ))?;
                    done.push(h.fee.result);
                    released += 1;
                }
                _ => {}
            }
        }
        let mut holds = lock(&self.holds);
        holds.retain(|h| !done.contains(&h.fee.result));
        self.save_holds(&holds)?;
        Ok(released)
    }

    /// Repeats on chain every slash and challenge of the ledger not yet
    /// there: a challenge while the chain still holds the answer's fee (it
    /// refunds the payer, and slashes unless that is done), otherwise the
    /// slash the ledger applied. Asks the chain each time rather than
    /// remembering what was sent: a chain restarted from older state may
    /// have lost a slash that was mined.
    pub async fn slash_pending(&self) -> Result<usize, EvmError> {
        let slashed: std::collections::BTreeSet<u64> =
            self.ledger.slashes().iter().map(|r| r.wal_index).collect();
        let mut todo = slashed.clone();
        todo.extend(self.ledger.challenges());
        let mut done = 0;
        for i in todo {
            let tx = tokio::task::block_in_place(|| self.ledger.transaction(i))?;
            let (evidence, challenge) = match tx.body {
                TxBody::Slash { evidence } => (evidence, false),
                TxBody::Challenge { evidence } => (evidence, true),
                _ => {
                    return Err(invalid(format!(
                        "WAL entry {i} is neither a slash nor a challenge"
                    )))
                }
            };
            let (result, accused) = evidence_subject(&evidence)?;
            let key = B256::from(result.0);
            let link = lock(&self.links)
                .get(&accused)
                .cloned()
                .ok_or_else(|| EvmError::Unlinked(accused.to_string()))?;
            let open = match (challenge, self.chain.held_until(key).await?) {
                (true, Some(until)) => self.chain.time().await? < until,
                _ => false,
            };
            let slash_owed =
                slashed.contains(&i) && !self.chain.is_slashed(key, link.address).await?;
            if !(open || slash_owed) {
                continue;
            }
            let req = SlashRequest {
                chain_id: self.chain.chain_id,
                contract: self.chain.contract,
                accused: link.clone(),
                evidence: *evidence.clone(),
            };
            // The ledger applied this slash, so it holds the anchor.
            let anchor = self
                .ledger
                .with_state(|s| s.commits.get(&result).copied())
                .ok_or_else(|| invalid(format!("no commitment anchors result {result}")))?;
            let s = slash_struct(link.address, &result, &evidence, anchor.time_ms)?;
            let digest = slash_digest(&s, &domain(req.chain_id, req.contract));
            let sigs = pack_signatures(Self::valid(digest, self.cosigners.slash(&req).await));
            let m = match open {
                true => self.chain.challenge(&s, sigs).await?,
                false => self.chain.slash(&s, sigs).await?,
            };
            self.record(Settlement::event(
                if open { "challenge" } else { "slash" },
                0,
                Some(accused),
                m,
            ))?;
            done += 1;
        }
        Ok(done)
    }

    /// Moves to its linked address every vault that settlement paid while
    /// its account had no link. Returns how many were moved.
    pub async fn claim_pending(&self) -> Result<usize, EvmError> {
        let links: Vec<Link> = lock(&self.links).values().cloned().collect();
        let mut done = 0;
        for link in links {
            if self.chain.balance(vault(&link.account)).await? == 0 {
                continue;
            }
            let req = ClaimRequest {
                chain_id: self.chain.chain_id,
                contract: self.chain.contract,
                link,
            };
            let claim = check_claim(&req)?;
            let digest = claim_digest(&claim, &domain(req.chain_id, req.contract));
            let sigs = Self::valid(digest, self.cosigners.claim(&req).await);
            let m = self.chain.claim(&claim, pack_signatures(sigs)).await?;
            self.record(Settlement::event("claim", 1, Some(req.link.account), m))?;
            done += 1;
        }
        Ok(done)
    }

    /// Settles and slashes forever, every `interval`, with the latest final
    /// checkpoint from `latest`.
    pub async fn run(
        self: Arc<Self>,
        latest: impl Fn() -> Option<FinalCheckpoint> + Send + Sync,
        interval: std::time::Duration,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.bridge_once().await {
                tracing::warn!(error = %e, "escrow movements not mirrored this round");
            }
            if let Some(fin) = latest() {
                if let Err(e) = self.settle_once(&fin).await {
                    tracing::warn!(error = %e, size = fin.size, "checkpoint not settled on chain this round");
                }
            }
            if let Err(e) = self.slash_pending().await {
                tracing::warn!(error = %e, "slash not repeated on chain this round");
            }
            if let Err(e) = self.release_matured().await {
                tracing::warn!(error = %e, "held fee not paid out on chain this round");
            }
            if let Err(e) = self.claim_pending().await {
                tracing::warn!(error = %e, "vault not claimed on chain this round");
            }
        }
    }
}

/// A verifier's signature of `digest` with its EVM key.
pub fn sign_digest(
    signer: &alloy::signers::local::PrivateKeySigner,
    digest: &B256,
) -> Result<EvmSignature, EvmError> {
    use alloy::signers::SignerSync as _;
    let sig = signer
        .sign_hash_sync(digest)
        .map_err(|e| EvmError::Key(e.to_string()))?;
    Ok(EvmSignature {
        address: signer.address(),
        signature: Bytes::from(sig.as_bytes().to_vec()),
    })
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeConfig").finish_non_exhaustive()
    }
}
