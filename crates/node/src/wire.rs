//! The JSON messages the roles exchange (besides the protocol records
//! themselves, which travel in their canonical form).

use serde::{Deserialize, Serialize};
use verinfer_ledger::state::Summary;
use verinfer_ledger::tx::{ModelEntry, Params, Role};
use verinfer_types::records::{InferenceResult, Request, TokenLogprob};
use verinfer_types::{Hash, PublicKey};

/// `GET /node/info`: what a node is and serves.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The node key.
    pub key: PublicKey,
    /// `ledger`, `gateway`, `inference` or `verifier`.
    pub role: String,
    /// Model ids served (inference) or checked (verifier).
    #[serde(default)]
    pub models: Vec<Hash>,
    /// Engine version.
    #[serde(default)]
    pub engine: String,
    /// Context window of the model, in tokens.
    #[serde(default)]
    pub context_len: u32,
    /// Vocabulary size of the model (token ids are below it); 0 when the
    /// node serves no model or does not say.
    #[serde(default)]
    pub vocab_size: u32,
    /// Each model's own figures, for a node serving several (`context_len`
    /// and `vocab_size` above are then the smallest of them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served: Vec<ServedModel>,
}

/// One model a node serves, with its figures.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServedModel {
    /// Model id.
    pub id: Hash,
    /// Context window, in tokens.
    pub context_len: u32,
    /// Vocabulary size (0 for a verifier, which does not say).
    pub vocab_size: u32,
}

impl NodeInfo {
    /// A node's description from the models it serves: `models` and the
    /// smallest figures of them, and each one's own in `served`.
    pub fn serving(key: PublicKey, role: &str, served: Vec<ServedModel>) -> Self {
        let least = |f: fn(&ServedModel) -> u32| served.iter().map(f).min().unwrap_or(0);
        NodeInfo {
            key,
            role: role.into(),
            models: served.iter().map(|m| m.id).collect(),
            engine: verinfer_inference::ENGINE_VERSION.into(),
            context_len: least(|m| m.context_len),
            vocab_size: least(|m| m.vocab_size),
            served,
        }
    }

    /// The context window and vocabulary size of `model` on this node: its
    /// own figures when the node lists them, else the node's.
    pub fn limits(&self, model: &Hash) -> (u32, u32) {
        self.served
            .iter()
            .find(|m| m.id == *model)
            .map_or((self.context_len, self.vocab_size), |m| {
                (m.context_len, m.vocab_size)
            })
    }
}

/// One line of the newline-delimited JSON stream an inference node answers
/// `POST /inference/respond` with.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InferenceEvent {
    /// Text of the next token(s), as generated.
    Text(String),
    /// Text of the next token(s) with their log-probability records (the
    /// entries the Result will hold), when the request asks for them.
    Tokens {
        /// The text.
        text: String,
        /// The records of the tokens generated since the last line.
        logprobs: Vec<TokenLogprob>,
    },
    /// The signed Result; the last line.
    Result(Box<InferenceResult>),
    /// The node could not answer; the last line.
    Error(NodeError),
}

/// A node's refusal, with the HTTP status it maps to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeError {
    /// 400 bad request, 413 prompt too long, 503 busy or failed.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

/// `POST /verifier/check`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckRequest {
    /// The request.
    pub request: Request,
    /// The signed result to check.
    pub result: InferenceResult,
}

/// `POST /ledger/tx` on success.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxApplied {
    /// Ledger height after the transaction.
    pub height: u64,
    /// Log index of the first receipt leaf it appended.
    pub first_leaf: u64,
    /// Receipt leaves appended.
    pub leaves: u64,
    /// Id of a new proposal.
    #[serde(default)]
    pub proposal: Option<u64>,
}

/// `POST /ledger/tx` on refusal (status 409).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TxRefused {
    /// The ledger's reason.
    pub error: String,
    /// `nonce`, `insufficient`, `receipt`, `signature` or `rule`.
    pub code: String,
    /// For `receipt`: which receipt of a settlement.
    #[serde(default)]
    pub index: Option<usize>,
}

/// `GET /ledger/account/{key}`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccountView {
    /// Spendable balance (base units).
    #[serde(with = "u128_string")]
    pub balance: u128,
    /// Next nonce.
    pub nonce: u64,
    /// Stake.
    #[serde(with = "u128_string")]
    pub stake: u128,
}

/// `GET /ledger/escrow/{request}`: the reservation of a request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EscrowView {
    /// Who pays (the request's requester).
    pub payer: PublicKey,
    /// Amount reserved (base units).
    #[serde(with = "u128_string")]
    pub amount: u128,
}

/// One registered node in `GET /ledger/nodes`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeView {
    /// Node key.
    pub key: PublicKey,
    /// Role.
    pub role: Role,
    /// Where it serves.
    pub endpoint: String,
    /// Stake (base units).
    #[serde(with = "u128_string")]
    pub stake: u128,
    /// Ledger height of its registration.
    pub registered: u64,
    /// Ledger height of its last heartbeat.
    pub last_heartbeat: u64,
    /// Wall-clock time the ledger last heard from it (Unix ms; 0: not since
    /// the ledger started).
    pub last_seen_ms: u64,
    /// The models an inference node declared it serves, increasing.
    #[serde(default)]
    pub models: Vec<Hash>,
}

/// `GET /ledger/params`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParamsView {
    /// Governed parameters.
    pub params: Params,
    /// Admitted models.
    pub models: Vec<ModelEntry>,
    /// Ledger height.
    pub height: u64,
    /// The receipts log's verifier key.
    pub log_key: String,
    /// Cosignatures that make a checkpoint final.
    pub witness_quorum: u32,
}

/// `GET /v1/ledger/summary`: supply totals as decimal strings (JavaScript
/// numbers cannot hold 18-decimal amounts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryView {
    /// All tokens; equals the sum of the five others.
    #[serde(with = "u128_string")]
    pub total_supply: u128,
    /// Balances of all accounts but the treasury.
    #[serde(with = "u128_string")]
    pub balances: u128,
    /// Reserved for in-flight requests.
    #[serde(with = "u128_string")]
    pub escrow: u128,
    /// Staked.
    #[serde(with = "u128_string")]
    pub stakes: u128,
    /// Unstaked, not yet withdrawn.
    #[serde(with = "u128_string")]
    pub unbonding: u128,
    /// The treasury's balance.
    #[serde(with = "u128_string")]
    pub treasury: u128,
    /// Held for withdrawals asked on chain (EVM backend).
    #[serde(with = "u128_string", default)]
    pub withdrawing: u128,
    /// Ledger height.
    pub height: u64,
}

impl SummaryView {
    /// The view of `s` at `height`.
    pub fn new(s: &Summary, height: u64) -> Self {
        SummaryView {
            total_supply: s.total_supply,
            balances: s.balances,
            escrow: s.escrow,
            stakes: s.stakes,
            unbonding: s.unbonding,
            treasury: s.treasury,
            withdrawing: s.withdrawing,
            height,
        }
    }

    /// Whether the total supply is exactly what is held.
    pub fn conserved(&self) -> bool {
        [
            self.balances,
            self.escrow,
            self.stakes,
            self.unbonding,
            self.treasury,
            self.withdrawing,
        ]
        .iter()
        .try_fold(0u128, |a, b| a.checked_add(*b))
            == Some(self.total_supply)
    }
}

/// Largest transaction body. axum's default of 2 MB refused a gateway's
/// settlement of 256 long answers whole; the gateway's settler keeps its
/// batches below this by encoded size (a Request's input is bounded by the
/// gateway's body limit, not by this), so only a receipt larger than this
/// alone is refused, alone.
pub const MAX_TX_BYTES: usize = 32 << 20;

/// Amounts as decimal strings (they exceed JSON's safe integers).
pub mod u128_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises as a decimal string.
    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    /// Parses a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `POST /ledger/report`: what a gateway saw of one API call that the
/// ledger's transactions do not show. Sent once per call that had any of it;
/// the ledger counts a call once, however often it is reported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// The call: the hash of its Request.
    pub call: Hash,
    /// The call was answered with a rejected result.
    #[serde(default)]
    pub rejected: bool,
    /// Inference nodes whose Result for this call the verifiers rejected, in
    /// the order tried.
    #[serde(default)]
    pub node_rejections: Vec<PublicKey>,
    /// Verifiers drawn for a check of this call that gave no verdict.
    #[serde(default)]
    pub missed: Vec<PublicKey>,
}

impl Report {
    /// Most node rejections one report may carry.
    pub const MAX_NODE_REJECTIONS: usize = 16;
    /// Most missed tasks one report may carry.
    pub const MAX_MISSED: usize = 256;

    /// Whether there is anything to tell.
    pub fn is_empty(&self) -> bool {
        !self.rejected && self.node_rejections.is_empty() && self.missed.is_empty()
    }
}

/// `POST /ledger/commit`: the gateway's signed `Commit` transaction, which
/// the ledger applies (anchoring the Result's committee) before it logs the
/// commitment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    /// `TxBody::Commit` for the Result, signed by the gateway (nonce 0).
    pub tx: verinfer_ledger::tx::Transaction,
}

/// `GET /ledger/anchor/{result}`: where a Result's committee is judged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnchorView {
    /// Transactions applied before the Result's `Commit`.
    pub height: u64,
    /// The ledger's time of the `Commit` (Unix ms).
    pub time_ms: u64,
    /// The verifiers registered then: the set a committee must be a strict
    /// majority of.
    pub eligible: Vec<PublicKey>,
}

/// `GET /ledger/provisional`: one optimistic answer inside its challenge
/// window, with what a watcher needs to re-check and challenge it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProvisionalView {
    /// Its receipt's leaf index: pages are ordered by it.
    pub position: u64,
    /// The signed Request.
    pub request: Request,
    /// The signed Result the ledger settled.
    pub result: InferenceResult,
    /// Ledger time (Unix ms) at which the window closes.
    pub until_ms: u64,
    /// The Result's committee seed (from the commitments checkpoint that
    /// first included it), while the ledger remembers it; none after a
    /// restart, and then every eligible verifier watches.
    pub seed: Option<Hash>,
}

/// The longest page of `GET /ledger/provisional`.
pub const PROVISIONAL_PAGE: usize = 100;
