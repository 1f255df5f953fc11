//! Ledger records: signed transactions, the genesis, governance changes and
//! slashing evidence. All use the canonical encoding of `verinfer-types`.

use serde::{Deserialize, Serialize};
use verinfer_types::records::{Amount, InferenceResult, Receipt, Verdict};
use verinfer_types::{Hash, PublicKey, Record, Signature, SignedRecord};

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
    /// Ledger heights between unstaking and withdrawal.
    pub unbonding_delay: u64,
    /// Share of a proven cheater's stake that is slashed, in basis points.
    pub slash_bps: u32,
    /// Share of a slashed amount paid to the committee that proved the fault.
    pub slash_reward_bps: u32,
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
            unbonding_delay: 100,
            slash_bps: 5000,
            slash_reward_bps: 2000,
        }
    }
}

/// An admitted model and its prices per token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Model id (SHA-256 of the file).
    pub id: Hash,
    /// Human name.
    pub name: String,
    /// Price per prompt token.
    pub price_in: Amount,
    /// Price per output token.
    pub price_out: Amount,
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
    /// Set the minimum certificate quorum.
    Quorum {
        /// New value.
        value: u32,
    },
    /// Set the dispute quorum.
    DisputeQuorum {
        /// New value.
        value: u32,
    },
    /// Set the minimum stake.
    MinStake {
        /// New value.
        value: Amount,
    },
    /// Set the unbonding delay.
    UnbondingDelay {
        /// New value.
        value: u64,
    },
    /// Set the slash share and the committee's reward share.
    Slash {
        /// Share of stake slashed.
        slash_bps: u32,
        /// Share of the slashed amount paid to the committee.
        reward_bps: u32,
    },
    /// Admit a model or change its prices.
    AdmitModel {
        /// The model.
        model: ModelEntry,
    },
    /// Remove a model.
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

/// Proof that a node or a verifier cheated: a signed Result and a dispute
/// committee's rejecting verdicts on it (and, against a verifier, its own
/// accepting verdict on the same Result).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "accused", rename_all = "snake_case", deny_unknown_fields)]
pub enum Evidence {
    /// The inference node that signed `result`.
    Node {
        /// The Result the committee rejected.
        result: InferenceResult,
        /// The committee's rejecting verdicts.
        committee: Vec<Verdict>,
    },
    /// A verifier that accepted a Result the committee rejected.
    Verifier {
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
            Evidence::Node { result, committee } => (result, None, committee),
            Evidence::Verifier {
                result,
                verdict,
                committee,
            } => (result, Some(verdict), committee),
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
    /// Register as a node.
    Register {
        /// Role.
        role: Role,
        /// Where the node serves.
        endpoint: String,
    },
    /// Leave the registry.
    Deregister,
    /// Report liveness.
    Heartbeat,
    /// Reserve the maximum fee of a request in escrow.
    Reserve {
        /// Hash of the Request.
        request: Hash,
        /// Amount reserved.
        amount: Amount,
    },
    /// Return a reservation to its payer (the result was rejected or never came).
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

verinfer_types::type_tag!(
    /// Tag of [`Transaction`].
    TxTag = "verinfer.tx.v1"
);
verinfer_types::type_tag!(
    /// Tag of [`Genesis`].
    GenesisTag = "verinfer.genesis.v1"
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
        key: &verinfer_types::SecretKey,
        nonce: u64,
        body: TxBody,
    ) -> Result<Self, verinfer_types::RecordError> {
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
    /// `verinfer.genesis.v1`.
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
