//! Ledger records: signed transactions, the genesis, governance changes and
//! slashing evidence. All use the canonical encoding of this crate; the
//! ledger (`verinfer-ledger`, which re-exports this module as its `tx`)
//! applies them. They live here, with the other records, so that whoever
//! parses them from peers needs no ledger.

use crate::records::{Amount, InferenceResult, Receipt, Request, Verdict};
use crate::{Hash, PublicKey, Record, Signature, SignedRecord};
use serde::{Deserialize, Serialize};

/// Role of a registered node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs models and signs Results.
    Inference,
    /// Checks Results and signs Verdicts; witnesses checkpoints.
    Verifier,
    /// Takes requests from clients, reserves their fees and sends the work
    /// to inference nodes and verifiers (which serve only registered
    /// gateways).
    Gateway,
}

/// Fee split in basis points (parts of 10,000); the three sum to 10,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeSplit {
    /// Share of the inference node.
    pub node_bps: u32,
    /// Share of the certificate's verifiers, together.
    pub verifiers_bps: u32,
    /// Share of the treasury.
    pub treasury_bps: u32,
}

/// Governed parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// How fees are split.
    pub fee_split: FeeSplit,
    /// Fewest accepting verdicts a certificate needs, whatever the request asks.
    pub quorum: u32,
    /// Fewest rejecting committee verdicts that prove a fault.
    pub dispute_quorum: u32,
    /// Least stake to register a node.
    pub min_stake: Amount,
    /// Seconds of ledger time between unstaking and withdrawal.
    pub unbonding_delay_secs: u64,
    /// Share of a proven cheater's stake (bonded and unbonding) that is
    /// slashed, in basis points.
    pub slash_bps: u32,
    /// Share of a slashed amount paid to the committee that proved the fault.
    pub slash_reward_bps: u32,
    /// How long an open dispute freezes the accused's withdrawals, seconds.
    pub dispute_window_secs: u64,
    /// How long a proposal takes votes, seconds.
    pub voting_period_secs: u64,
    /// Longest time a reservation may ask before it expires, seconds.
    pub reserve_ttl_max_secs: u64,
    /// Flat fee, to the treasury, of every transaction outside the
    /// settlement path (see `state::pays_fee`).
    pub tx_fee: Amount,
    /// What registering a model costs its publisher, to the treasury, so
    /// nobody fills the registry for free. Omitted from the encoding at its
    /// default, so parameters written before it existed keep their bytes.
    #[serde(
        default = "default_publish_fee",
        skip_serializing_if = "is_default_publish_fee"
    )]
    pub publish_fee: Amount,
}

/// [`Params::publish_fee`] unless governance changed it: 10 tokens.
pub const DEFAULT_PUBLISH_FEE: Amount = Amount(10 * TOKEN);

fn default_publish_fee() -> Amount {
    DEFAULT_PUBLISH_FEE
}

fn is_default_publish_fee(a: &Amount) -> bool {
    *a == DEFAULT_PUBLISH_FEE
}

impl Default for Params {
    fn default() -> Self {
        Params {
            fee_split: FeeSplit {
                node_bps: 7000,
                verifiers_bps: 2000,
                treasury_bps: 1000,
            },
            quorum: 1,
            dispute_quorum: 3,
            min_stake: Amount(1_000_000_000_000_000_000_000), // 1,000 tokens
            unbonding_delay_secs: 7 * DAY,
            slash_bps: 5000,
            slash_reward_bps: 2000,
            dispute_window_secs: DAY,
            voting_period_secs: DAY,
            reserve_ttl_max_secs: HOUR,
            tx_fee: Amount(1_000_000_000_000_000), // 0.001 token
            publish_fee: DEFAULT_PUBLISH_FEE,
        }
    }
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;
const TOKEN: u128 = 1_000_000_000_000_000_000;

/// A governed number. The variants are in [`BOUNDS`]' order (checked when
/// compiling), so `BOUNDS[param as usize]` is its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Param {
    /// [`Params::quorum`].
    Quorum,
    /// [`Params::dispute_quorum`].
    DisputeQuorum,
    /// [`Params::min_stake`].
    MinStake,
    /// [`Params::unbonding_delay_secs`].
    UnbondingDelaySecs,
    /// [`Params::slash_bps`].
    SlashBps,
    /// [`Params::slash_reward_bps`].
    SlashRewardBps,
    /// [`Params::dispute_window_secs`].
    DisputeWindowSecs,
    /// [`Params::voting_period_secs`].
    VotingPeriodSecs,
    /// [`Params::reserve_ttl_max_secs`].
    ReserveTtlMaxSecs,
    /// [`Params::tx_fee`].
    TxFee,
    /// [`Params::publish_fee`].
    PublishFee,
}

/// A governed number: where it lives in [`Params`], the range it must stay
/// in, and why.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// Which number.
    pub param: Param,
    /// Least value.
    pub min: u128,
    /// Greatest value.
    pub max: u128,
    /// Why the range is what it is.
    pub reason: &'static str,
    /// The field of [`Params`] that holds it.
    pub field: for<'a> fn(&'a mut Params) -> Field<'a>,
}

/// Every governed number, in one table: its field, its bounds and their
/// reason. Genesis and every change are read and checked through it (the
/// fee split is bounded by its sum). The majority that passes a proposal
/// is not a parameter, so no proposal can lower it. The contract's
/// `paramBounds` holds the same ranges.
pub const BOUNDS: [Bound; 11] = [
    Bound {
        param: Param::Quorum,
        min: 1,
        max: 32,
        reason: "a certificate needs a verifier, and a quorum must stay reachable",
        field: |p| Field::U32(&mut p.quorum),
    },
    Bound {
        param: Param::DisputeQuorum,
        min: 1,
        max: 32,
        reason: "a fault needs a witness, and a slash must stay reachable",
        field: |p| Field::U32(&mut p.dispute_quorum),
    },
    Bound {
        param: Param::MinStake,
        min: TOKEN,
        max: 1_000_000_000 * TOKEN,
        reason: "a node must risk something, and registering must stay possible",
        field: |p| Field::Amount(&mut p.min_stake),
    },
    Bound {
        param: Param::UnbondingDelaySecs,
        min: HOUR as u128,
        max: 90 * DAY as u128,
        reason:
            "a fault needs time to be proven before stake leaves, and stake must be able to leave",
        field: |p| Field::U64(&mut p.unbonding_delay_secs),
    },
    Bound {
        param: Param::SlashBps,
        min: 100,
        max: 10_000,
        reason: "cheating must always cost, at most the whole stake",
        field: |p| Field::U32(&mut p.slash_bps),
    },
    Bound {
        param: Param::SlashRewardBps,
        min: 0,
        max: 10_000,
        reason: "a share of what is slashed",
        field: |p| Field::U32(&mut p.slash_reward_bps),
    },
    Bound {
        param: Param::DisputeWindowSecs,
        min: 60,
        max: 30 * DAY as u128,
        reason: "a dispute committee needs time to answer, and a freeze must end",
        field: |p| Field::U64(&mut p.dispute_window_secs),
    },
    Bound {
        param: Param::VotingPeriodSecs,
        min: HOUR as u128,
        max: 30 * DAY as u128,
        reason: "stakers need time to vote, and a vote must end",
        field: |p| Field::U64(&mut p.voting_period_secs),
    },
    Bound {
        param: Param::ReserveTtlMaxSecs,
        min: 60,
        max: DAY as u128,
        reason: "inference and verification need time, and escrow must come back",
        field: |p| Field::U64(&mut p.reserve_ttl_max_secs),
    },
    Bound {
        param: Param::TxFee,
        min: 1_000_000_000_000,
        max: 1_000 * TOKEN,
        reason: "writing to the ledger must cost something, and stay affordable",
        field: |p| Field::Amount(&mut p.tx_fee),
    },
    Bound {
        param: Param::PublishFee,
        min: TOKEN / 10,
        max: 1_000_000 * TOKEN,
        reason: "filling the model registry must cost something, and publishing must stay possible",
        field: |p| Field::Amount(&mut p.publish_fee),
    },
];

// Each row sits at its parameter's index, so looking a row up cannot fail.
const _: () = {
    let mut i = 0;
    while i < BOUNDS.len() {
        assert!(
            BOUNDS[i].param as usize == i,
            "BOUNDS is out of Param order"
        );
        i += 1;
    }
};

impl Param {
    /// Its row of [`BOUNDS`].
    pub fn bound(self) -> &'static Bound {
        &BOUNDS[self as usize]
    }
}

/// A governed number in [`Params`], to read or write.
#[derive(Debug)]
pub enum Field<'a> {
    /// A `u32` field.
    U32(&'a mut u32),
    /// A `u64` field.
    U64(&'a mut u64),
    /// An amount.
    Amount(&'a mut Amount),
}

impl Field<'_> {
    /// Its value.
    pub fn get(&self) -> u128 {
        match self {
            Field::U32(v) => u128::from(**v),
            Field::U64(v) => u128::from(**v),
            Field::Amount(v) => v.0,
        }
    }

    /// Sets it; false when `value` does not fit the field.
    pub fn set(self, value: u128) -> bool {
        match self {
            Field::U32(v) => u32::try_from(value).map(|x| *v = x).is_ok(),
            Field::U64(v) => u64::try_from(value).map(|x| *v = x).is_ok(),
            Field::Amount(v) => {
                *v = Amount(value);
                true
            }
        }
    }
}

impl Params {
    /// The field that holds `param`.
    pub fn field(&mut self, param: Param) -> Field<'_> {
        (param.bound().field)(self)
    }
}

/// An admitted model and its prices: admitted by the genesis or governance
/// (prices per token), or registered by a publisher ([`TxBody::Publish`]:
/// prices per 1,000 tokens, and the publisher's share of each fee).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Model id (SHA-256 of the file).
    pub id: Hash,
    /// Human name.
    pub name: String,
    /// Price per `per_tokens` prompt tokens.
    pub price_in: Amount,
    /// Price per `per_tokens` output tokens.
    pub price_out: Amount,
    /// How many tokens the prices are for (absent: 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub per_tokens: u32,
    /// Who registered it, for a published model (absent: admitted by the
    /// genesis or governance, no publisher paid).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub publisher: Option<Publisher>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl ModelEntry {
    /// The fee of `prompt` prompt tokens and `completion` output tokens:
    /// `floor((prompt * price_in + completion * price_out) / per_tokens)`.
    /// It grows with both counts, so the fee of bounds bounds the fee.
    /// None on overflow.
    pub fn cost(&self, prompt: u64, completion: u64) -> Option<u128> {
        let a = u128::from(prompt).checked_mul(self.price_in.0)?;
        let b = u128::from(completion).checked_mul(self.price_out.0)?;
        Some(a.checked_add(b)? / u128::from(self.per_tokens.max(1)))
    }
}

/// The publisher of a registered model and what its listing says beyond
/// the name and prices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    /// The publisher's account (the key that signed the registration).
    pub account: PublicKey,
    /// Its share of each fee, in basis points, taken before the split.
    pub share_bps: u32,
    /// Model architecture (`llama`, `gemma3`, ...).
    pub architecture: String,
    /// Context window, in tokens.
    pub context: u32,
    /// Licence (an SPDX id or a name).
    pub licence: String,
}

crate::type_tag!(
    /// Tag of [`ModelListing`].
    ModelTag = "verinfer.model.v1"
);

/// What a publisher registers, under its own key ([`TxBody::Publish`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelListing {
    /// `verinfer.model.v1`.
    #[serde(rename = "type")]
    pub tag: ModelTag,
    /// Model id: SHA-256 of the model file.
    pub id: Hash,
    /// Human name, 1 to 64 bytes.
    pub name: String,
    /// Model architecture, 1 to 32 bytes.
    pub architecture: String,
    /// Context window in tokens, at least 1.
    pub context: u32,
    /// Licence, 1 to 64 bytes.
    pub licence: String,
    /// Price per 1,000 prompt tokens, base units.
    pub price_in_per_1k: Amount,
    /// Price per 1,000 output tokens, base units.
    pub price_out_per_1k: Amount,
    /// The publisher's share of each fee, 0 to 10,000 basis points.
    pub share_bps: u32,
}

impl ModelListing {
    /// Why the listing is refused, if it is.
    pub fn check(&self) -> Result<(), String> {
        let text = |what: &str, v: &str, max: usize| {
            if v.is_empty() || v.len() > max {
                Err(format!("model {what} must be 1 to {max} bytes"))
            } else {
                Ok(())
            }
        };
        text("name", &self.name, 64)?;
        text("architecture", &self.architecture, 32)?;
        text("licence", &self.licence, 64)?;
        if self.context == 0 {
            return Err("model context must be at least 1 token".into());
        }
        if self.share_bps > 10_000 {
            return Err("share_bps must be at most 10000".into());
        }
        Ok(())
    }

    /// The registry entry this listing makes for `publisher`, or why it is
    /// refused.
    pub fn entry(&self, publisher: PublicKey) -> Result<ModelEntry, String> {
        self.check()?;
        Ok(ModelEntry {
            id: self.id,
            name: self.name.clone(),
            price_in: self.price_in_per_1k,
            price_out: self.price_out_per_1k,
            per_tokens: 1000,
            publisher: Some(Publisher {
                account: publisher,
                share_bps: self.share_bps,
                architecture: self.architecture.clone(),
                context: self.context,
                licence: self.licence.clone(),
            }),
        })
    }
}

/// A change that governance can make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "param", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Set the fee split.
    FeeSplit {
        /// New split.
        split: FeeSplit,
    },
    /// Set a governed number, within its [`BOUNDS`].
    Set {
        /// Which.
        name: Param,
        /// New value.
        value: Amount,
    },
    /// Admit a model or change its prices (not one a publisher registered).
    AdmitModel {
        /// The model.
        model: ModelEntry,
    },
    /// Remove a model: delists a published one (its id can never be
    /// registered again).
    RemoveModel {
        /// Model id.
        id: Hash,
    },
    /// Create new tokens.
    Mint {
        /// Receiving account.
        to: PublicKey,
        /// Amount.
        amount: Amount,
    },
}

/// Proof that a node or a verifier cheated: the signed Request, the signed
/// Result that answers it, and a dispute committee's rejecting verdicts on
/// that pair (and, against a verifier, its own accepting verdict on the same
/// pair). `verinfer_ledger::slashing::committee` is the rule that decides whether it
/// proves a fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "accused", rename_all = "snake_case", deny_unknown_fields)]
pub enum Evidence {
    /// The inference node that signed `result`.
    Node {
        /// The Request the Result answers.
        request: Request,
        /// The Result the committee rejected.
        result: InferenceResult,
        /// The committee's rejecting verdicts.
        committee: Vec<Verdict>,
    },
    /// A verifier that accepted a Result the committee rejected.
    Verifier {
        /// The Request the Result answers.
        request: Request,
        /// The Result.
        result: InferenceResult,
        /// The accused verifier's accepting verdict.
        verdict: Box<Verdict>,
        /// The committee's rejecting verdicts.
        committee: Vec<Verdict>,
    },
}

impl Evidence {
    /// The Result, the accused's accepting verdict (a verifier fault), and
    /// the committee's verdicts.
    pub fn parts(&self) -> (&InferenceResult, Option<&Verdict>, &[Verdict]) {
        match self {
            Evidence::Node {
                result, committee, ..
            } => (result, None, committee),
            Evidence::Verifier {
                result,
                verdict,
                committee,
                ..
            } => (result, Some(verdict), committee),
        }
    }

    /// The Request the Result answers.
    pub fn request(&self) -> &Request {
        match self {
            Evidence::Node { request, .. } | Evidence::Verifier { request, .. } => request,
        }
    }

    /// Whose stake: the node that signed the Result, or the verifier whose
    /// verdict accepted it.
    pub fn accused(&self) -> PublicKey {
        match self {
            Evidence::Node { result, .. } => result.node,
            Evidence::Verifier { verdict, .. } => verdict.verifier,
        }
    }
}

/// What a transaction does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum TxBody {
    /// Move tokens to another account.
    Transfer {
        /// Receiver.
        to: PublicKey,
        /// Amount.
        amount: Amount,
    },
    /// Lock tokens as stake.
    Stake {
        /// Amount.
        amount: Amount,
    },
    /// Start unbonding stake.
    Unstake {
        /// Amount.
        amount: Amount,
    },
    /// Move matured unbonding stake back to the balance.
    Withdraw,
    /// Register a model under the signer's key, which is paid its share of
    /// the model's fees; costs `publish_fee` besides `tx_fee`.
    Publish {
        /// The listing.
        model: ModelListing,
    },
    /// Register as a node.
    Register {
        /// Role.
        role: Role,
        /// Where the node serves.
        endpoint: String,
    },
    /// Declare the registered models an inference node serves (replaces
    /// its earlier declaration; at most [`MAX_SERVED_MODELS`], each admitted).
    Serve {
        /// Model ids, strictly increasing.
        models: Vec<Hash>,
    },
    /// Leave the registry.
    Deregister,
    /// Report liveness.
    Heartbeat,
    /// Reserve the maximum fee of a request in escrow, until `ttl_secs`
    /// of ledger time have passed (at most `reserve_ttl_max_secs`).
    Reserve {
        /// Hash of the Request.
        request: Hash,
        /// Amount reserved.
        amount: Amount,
        /// Seconds the reservation lasts; settling after that is refused.
        ttl_secs: u64,
    },
    /// Return a reservation to its payer (the result was rejected or never
    /// came). The payer may release at any time; anyone, once it expired.
    Release {
        /// Hash of the Request.
        request: Hash,
    },
    /// Settle verified inferences: pay from escrow, append the leaves.
    Settle {
        /// The receipts, all-or-nothing.
        receipts: Vec<Receipt>,
    },
    /// Slash a proven cheater.
    Slash {
        /// The proof.
        evidence: Box<Evidence>,
    },
    /// Open a dispute against the inference node that signed `result`: a
    /// registered verifier rejected it for a node fault. Freezes the node's
    /// withdrawals for `dispute_window_secs` or until a slash lands.
    Dispute {
        /// The node's signed Result.
        result: Box<InferenceResult>,
        /// The verifier's signed rejecting verdict on it.
        verdict: Box<Verdict>,
    },
    /// Challenge an optimistic answer inside its window: the evidence (as
    /// for a slash against the node) proves the settled Result a fault.
    /// Refunds the whole fee to the requester, withholds the node's share,
    /// and slashes the node.
    Challenge {
        /// The proof against the node that answered.
        evidence: Box<Evidence>,
    },
    /// Commit to a Result before its verifiers are drawn: fixes the
    /// committee's anchor (the registry a slash of this Result is judged
    /// against). Only a registered gateway sends it, once per Result; it
    /// needs no nonce (always 0, never advanced), so a gateway commits many
    /// Results at once.
    Commit {
        /// Hash of the Result.
        result: Hash,
    },
    /// Pay out an optimistic answer whose challenge window has passed
    /// unchallenged. Anyone may send it; it applies once per answer.
    Finalize {
        /// Hash of the Request.
        request: Hash,
    },
    /// Propose a parameter change.
    Propose {
        /// The change.
        change: Change,
    },
    /// Vote on a proposal, weighted by stake.
    Vote {
        /// Proposal id.
        proposal: u64,
        /// For or against.
        yes: bool,
    },
    /// Destroy tokens from the balance.
    Burn {
        /// Amount.
        amount: Amount,
    },
    /// Mirror a movement of the settlement contract's escrow on an EVM chain
    /// (the EVM backend's bridge). Only the treasury signs it: its balance
    /// stands for the tokens outside the escrow. Each chain event applies
    /// once.
    Bridge {
        /// The chain event: [`chain_event`] of where it was logged.
        event: Hash,
        /// What it did.
        movement: Movement,
    },
}

/// Most models one inference node declares it serves.
pub const MAX_SERVED_MODELS: usize = 64;

/// A movement of the on-chain escrow, as the embedded ledger mirrors it.
///
/// A withdrawal asked on chain is paid after a delay, as much of the
/// account's escrow as it then holds, up to the amount asked. Until then
/// the ledger *holds* that much of the account's balance (and of what it is
/// credited meanwhile), so nothing reserved here is left unpaid there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Movement {
    /// Tokens deposited on chain for `account`: credited from the treasury.
    Deposit {
        /// The account credited.
        account: PublicKey,
        /// Amount.
        amount: Amount,
    },
    /// `account` asked to withdraw `amount`; replaces an earlier request.
    WithdrawalRequested {
        /// The account.
        account: PublicKey,
        /// Amount asked.
        amount: Amount,
    },
    /// `account` cancelled its request: what was held is spendable again.
    WithdrawalCancelled {
        /// The account.
        account: PublicKey,
    },
    /// The withdrawal paid `amount` out of the escrow, back to the treasury.
    Withdrawn {
        /// The account.
        account: PublicKey,
        /// Amount paid.
        amount: Amount,
    },
}

/// The id of a chain event: SHA-256 of the chain id (8 bytes, big-endian),
/// the transaction hash and the log index (8 bytes, big-endian).
pub fn chain_event(chain_id: u64, tx: &[u8; 32], log_index: u64) -> Hash {
    Hash::of(&[&chain_id.to_be_bytes()[..], tx, &log_index.to_be_bytes()].concat())
}

crate::type_tag!(
    /// Tag of [`Transaction`].
    TxTag = "verinfer.tx.v1"
);
crate::type_tag!(
    /// Tag of [`Genesis`] (v2: parameters in ledger time, bounds, fees).
    GenesisTag = "verinfer.genesis.v2"
);
crate::type_tag!(
    /// Tag of [`WalEntry`].
    WalEntryTag = "verinfer.wal-entry.v1"
);

/// A signed ledger transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    /// `verinfer.tx.v1`.
    #[serde(rename = "type")]
    pub tag: TxTag,
    /// The acting account.
    pub signer: PublicKey,
    /// Must equal the signer's count of applied transactions.
    pub nonce: u64,
    /// What it does.
    pub body: TxBody,
    /// Signature by `signer`.
    pub signature: Signature,
}

impl Record for Transaction {
    const TYPE: &'static str = TxTag::TYPE;
}

impl SignedRecord for Transaction {
    fn signer(&self) -> &PublicKey {
        &self.signer
    }
    fn signature_mut(&mut self) -> &mut Signature {
        &mut self.signature
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
}

impl Transaction {
    /// A transaction signed by `key`.
    pub fn signed(
        key: &crate::SecretKey,
        nonce: u64,
        body: TxBody,
    ) -> Result<Self, crate::RecordError> {
        let mut tx = Transaction {
            tag: TxTag,
            signer: key.public(),
            nonce,
            body,
            signature: Signature::default(),
        };
        tx.sign(key)?;
        Ok(tx)
    }
}

/// The first record of a ledger: the whole supply in the treasury.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    /// `verinfer.genesis.v2`.
    #[serde(rename = "type")]
    pub tag: GenesisTag,
    /// The treasury account.
    pub treasury: PublicKey,
    /// Initial supply, all in the treasury.
    pub supply: Amount,
    /// Initial parameters.
    pub params: Params,
    /// Initially admitted models.
    pub models: Vec<ModelEntry>,
}

impl Record for Genesis {
    const TYPE: &'static str = GenesisTag::TYPE;
}

/// A transaction as the write-ahead log holds it: stamped with the ledger's
/// time when it was applied, so a replay applies it at the same time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalEntry {
    /// `verinfer.wal-entry.v1`.
    #[serde(rename = "type")]
    pub tag: WalEntryTag,
    /// The ledger's time (Unix ms, never decreasing) the transaction applied at.
    pub time_ms: u64,
    /// The transaction.
    pub tx: Transaction,
}

impl Record for WalEntry {
    const TYPE: &'static str = WalEntryTag::TYPE;
}

impl WalEntry {
    /// Decodes a WAL entry after the genesis. Entries written before the
    /// ledger kept time are bare transactions: they apply at `previous`, the
    /// stamp of the entry before them (0 at genesis).
    pub fn decode(bytes: &[u8], previous: u64) -> Result<WalEntry, crate::RecordError> {
        // Canonical keys are sorted: a stamped entry starts with `time_ms`,
        // a bare transaction with `body`.
        if bytes.starts_with(br#"{"time_ms":"#) {
            WalEntry::from_canonical(bytes)
        } else {
            Ok(WalEntry {
                tag: WalEntryTag,
                time_ms: previous,
                tx: Transaction::from_canonical(bytes)?,
            })
        }
    }
}
