//! The contracts as seen from Rust: bindings (by `alloy::sol!`), deployment
//! from the checked-in artifact, and the calls the backend makes.

use std::sync::Arc;
use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
pub use alloy::primitives::U256;
use alloy::primitives::{Address, Bytes, B256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolConstructor;

use super::netting::{Batch, Claim, Slash};
use super::EvmError;

sol! {
    /// The settlement contract (contracts/src/Verinfer.sol), the part used here.
    #[allow(clippy::too_many_arguments)] // `settle` takes the contract's seven
    #[sol(rpc, all_derives)]
    contract Verinfer {
        struct Params {
            uint128 minStake;
            uint16 quorum;
            uint16 slashQuorum;
            uint16 slashBps;
            uint16 slashRewardBps;
            uint16 feeInferenceBps;
            uint16 feeVerifierBps;
            uint16 feeTreasuryBps;
            uint32 unbondDelay;
            uint32 withdrawDelay;
            uint32 votingPeriod;
            address treasury;
        }
        struct Hold {
            bytes32 result;
            address payer;
            address node;
            uint128 amount;
            uint64 window;
            bytes32 payout;
        }
        struct InitialModel {
            bytes32 id;
            uint128 priceIn;
            uint128 priceOut;
        }
        constructor(address token, Params params, InitialModel[] models);

        error InvalidParam();
        error ZeroAmount();
        error ZeroAddress();
        error AmountTooLarge();
        error TokenTransferFailed();
        error InvalidRole();
        error InvalidNodeKey();
        error NodeKeyTaken();
        error AlreadyRegistered();
        error NotRegistered(address node);
        error StakeBelowMinimum(uint256 stake, uint256 minimum);
        error InsufficientStake(uint256 stake, uint256 needed);
        error NothingUnbonding();
        error StillLocked(uint64 unlockAt);
        error BadSignatureLength();
        error QuorumNotMet(uint256 signatures, uint256 quorum);
        error InvalidSignature(uint256 index);
        error SignersNotAscending(uint256 index);
        error NotVerifier(address signer);
        error AccusedInCommittee();
        error AlreadySlashed();
        error RegisteredAfterAnchor(address signer, uint64 since, uint64 anchor);
        error AnchorInFuture(uint64 anchor);
        error NothingToSlash();
        error InsufficientBalance(address account, uint256 balance, uint256 needed);
        error NoPendingWithdrawal();
        error StaleCheckpoint(uint64 settledSize, uint64 oldSize);
        error SizeNotIncreasing();
        error InvalidConsistencyProof();
        error TransfersNotSorted(uint256 index);
        error ZeroTransfer(uint256 index);
        error Unbalanced(int256 sum);
        error HoldExists(bytes32 result);
        error NoHold(bytes32 result);
        error WindowOpen(uint64 until);
        error WindowClosed(uint64 until);
        error WrongPayout();
        error StakeHeld(uint64 until);
        error CommitteeNotMajority(uint256 signatures, uint256 verifiers);
        error NotStaker();
        error UnknownProposal();
        error VotingClosed();
        error VotingOpen();
        error AlreadyVoted();
        error AlreadyExecuted();
        error ProposalExpired();
        error NotPassed();

        event Deposited(address indexed from, address indexed account, uint256 amount);
        event WithdrawalRequested(address indexed account, uint256 amount, uint64 unlockAt);
        event WithdrawalCancelled(address indexed account);
        event Withdrawn(address indexed account, uint256 amount);

        function register(uint8 role, bytes32 nodeKey, string endpoint, uint256 amount) external;
        function requestWithdrawal(uint256 amount) external;
        function cancelWithdrawal() external;
        function withdraw() external;
        function deposit(address account, uint256 amount) external;
        function settle(uint64 oldSize, uint64 newSize, bytes32 newRoot, bytes32[] proof, bytes32[] transfers, Hold[] holds, bytes sigs) external;
        function challenge(bytes32 resultHash, bytes32 reasonHash, uint64 anchor, bytes sigs) external;
        function release(bytes32 resultHash, bytes32[] payout) external;
        function claim(bytes32 account, address to, bytes sigs) external;
        function held(bytes32 result) external view returns (address payer, uint64 until, address node, uint128 amount, bytes32 payout);
        function heldUntil(address node) external view returns (uint64);
        function withdrawUnbonded() external;
        function unbond(uint256 amount) external;
        function slash(address accused, bytes32 resultHash, bytes32 reasonHash, uint64 anchor, bytes sigs) external;
        function checkpoint() external view returns (uint64 size, bytes32 root);
        function isSlashed(bytes32 resultHash, address accused) external view returns (bool);
        function accounts(address account) external view returns (uint128 balance, uint128 pending, uint64 unlockAt);
        function nodes(address node) external view returns (uint128 stake, uint64 unbondAt, uint8 role, uint128 unbonding, bytes32 nodeKey, string endpoint);
        function totals() external view returns (uint256 escrow, uint256 staked, uint256 unbonding);
        function token() external view returns (address);
    }

    /// The devnet's ERC-20 (contracts/src/VerinferToken.sol).
    #[sol(rpc)]
    contract VerinferToken {
        constructor(uint256 supply);
        function balanceOf(address account) external view returns (uint256);
        function totalSupply() external view returns (uint256);
        function transfer(address to, uint256 amount) external returns (bool);
        function approve(address spender, uint256 amount) external returns (bool);
    }
}

/// The compiled contracts, checked in CI against a fresh compile.
const ARTIFACT: &str = include_str!("../../../../contracts/artifacts/verinfer.json");

/// The creation bytecode of contract `name` in the artifact.
fn bytecode(name: &str) -> Result<Vec<u8>, EvmError> {
    let v: serde_json::Value =
        serde_json::from_str(ARTIFACT).map_err(|e| EvmError::Chain(format!("artifact: {e}")))?;
    let hex = v[name]["bytecode"]
        .as_str()
        .ok_or_else(|| EvmError::Chain(format!("artifact has no bytecode for {name}")))?;
    hex::decode(hex.trim_start_matches("0x")).map_err(|e| EvmError::Chain(format!("artifact: {e}")))
}

fn chain_err(e: impl std::fmt::Display) -> EvmError {
    EvmError::Chain(e.to_string())
}

/// A contract call's error, with the contract's revert decoded when it is one.
fn call_err(e: alloy::contract::Error) -> EvmError {
    match e.as_decoded_interface_error::<Verinfer::VerinferErrors>() {
        Some(rev) => EvmError::Chain(format!("reverted: {rev:?}")),
        None => chain_err(e),
    }
}

/// An RPC error, with the contract's revert decoded when it is one (gas
/// estimation runs the call, so this is where a doomed call is caught).
fn rpc_err(e: alloy::transports::TransportError) -> EvmError {
    match e
        .as_error_resp()
        .and_then(|r| r.as_decoded_interface_error::<Verinfer::VerinferErrors>())
    {
        Some(rev) => EvmError::Chain(format!("reverted: {rev:?}")),
        None => {
            // With its causes: "error sending request" alone hides a refused
            // certificate or a refused connection.
            let mut m = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                let c_text = c.to_string();
                if !m.contains(&c_text) {
                    m = format!("{m}: {c_text}");
                }
                cause = c.source();
            }
            EvmError::Chain(m)
        }
    }
}

/// A mined transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mined {
    /// Its hash.
    pub tx: B256,
    /// Gas it used.
    pub gas_used: u64,
    /// Block number.
    pub block: u64,
}

/// How long receipts may lag behind the mined count before a used nonce is
/// put down to another sender.
const RECEIPT_GRACE: Duration = Duration::from_secs(5);

/// A movement of the contract's escrow, as logged on chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EscrowEvent {
    /// Block number.
    pub block: u64,
    /// Transaction hash.
    pub tx: B256,
    /// Index of the log in its block.
    pub log_index: u64,
    /// The account whose escrow moved.
    pub account: Address,
    /// How.
    pub kind: EscrowKind,
}

/// What an [`EscrowEvent`] did (amounts in base units).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EscrowKind {
    /// `Deposited`.
    Deposit {
        /// Amount.
        amount: u128,
    },
    /// `WithdrawalRequested`.
    WithdrawalRequested {
        /// Amount asked.
        amount: u128,
    },
    /// `WithdrawalCancelled`.
    WithdrawalCancelled,
    /// `Withdrawn`.
    Withdrawn {
        /// Amount paid.
        amount: u128,
    },
}

fn amount_u128(v: U256) -> Result<u128, EvmError> {
    u128::try_from(v).map_err(|_| EvmError::Chain(format!("amount {v} does not fit 128 bits")))
}

/// How transactions are priced, and when one counts as stuck.
///
/// A transaction not mined within `stuck_after` is sent again at the same
/// nonce with both fees raised by 1/8 (nodes ask at least 1/10 to replace)
/// or to the chain's current estimate if that is higher; whichever of them
/// is mined, the nonce makes the others void. The fees reached are kept for
/// the next transaction at that nonce, so a caller that gives up and retries
/// goes on raising.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeePolicy {
    /// How long a transaction may wait unmined before its fees are raised.
    pub stuck_after: Duration,
    /// Fee raises in one call before it gives up with an error.
    pub max_raises: u32,
    /// The most to offer per gas (wei), raises included; `None`: no cap.
    pub max_fee_per_gas: Option<u128>,
}

impl Default for FeePolicy {
    fn default() -> Self {
        FeePolicy {
            stuck_after: Duration::from_secs(45),
            max_raises: 4,
            max_fee_per_gas: None,
        }
    }
}

/// Fees of one transaction (EIP-1559).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Fees {
    max_fee: u128,
    priority: u128,
}

impl Fees {
    /// Both fees up by 1/8 (and at least 1 wei), or `floor` where it is higher.
    fn raised(self, floor: Fees) -> Fees {
        let up = |v: u128| v.saturating_add(v / 8).saturating_add(1);
        let priority = up(self.priority).max(floor.priority);
        Fees {
            max_fee: up(self.max_fee).max(floor.max_fee).max(priority),
            priority,
        }
    }
}

/// The transactions sent at one nonce, not known to be mined.
#[derive(Clone, Debug)]
struct InFlight {
    nonce: u64,
    fees: Fees,
    hashes: Vec<B256>,
}

/// Sends transactions as one account: sets nonce, gas and fees itself, waits
/// for the receipt, and replaces a stuck transaction (see [`FeePolicy`]).
///
/// The nonce is the account's count of *mined* transactions, so a new
/// transaction replaces one still pending rather than queueing behind it:
/// callers are idempotent (each re-reads the chain before it sends), so the
/// replaced one was either going to be refused or is rebuilt. One sender per
/// account: two processes sending with the same key take each other's
/// nonces (reported as an error, never paid twice).
struct Sender {
    provider: DynProvider,
    from: Address,
    chain_id: u64,
    policy: FeePolicy,
    in_flight: std::sync::Mutex<Option<InFlight>>,
}

/// Why a send was refused, as far as it changes what to do next.
enum Refusal {
    /// Fees too low for the pool (a pending transaction to replace, or a base
    /// fee above our cap): raise and send again.
    Underpriced,
    /// The nonce was used, or the pool already has this one: wait and see.
    Taken,
    Other(EvmError),
}

fn refusal(e: alloy::transports::TransportError) -> Refusal {
    let m = e.to_string().to_ascii_lowercase();
    if m.contains("underpriced")
        || m.contains("less than block base fee")
        || m.contains("fee too low")
    {
        Refusal::Underpriced
    } else if m.contains("nonce too low") || m.contains("already known") {
        Refusal::Taken
    } else {
        Refusal::Other(rpc_err(e))
    }
}

impl Sender {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, Option<InFlight>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn estimate(&self) -> Result<Fees, EvmError> {
        let f = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(rpc_err)?;
        Ok(Fees {
            max_fee: f.max_fee_per_gas,
            priority: f.max_priority_fee_per_gas,
        })
    }

    async fn mined_count(&self) -> Result<u64, EvmError> {
        self.provider
            .get_transaction_count(self.from)
            .latest()
            .await
            .map_err(rpc_err)
    }

    /// The receipt of whichever of `hashes` was mined.
    async fn receipt(
        &self,
        hashes: &[B256],
    ) -> Result<Option<alloy::rpc::types::TransactionReceipt>, EvmError> {
        for h in hashes {
            if let Some(r) = self
                .provider
                .get_transaction_receipt(*h)
                .await
                .map_err(rpc_err)?
            {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Sends `tx` and waits until it is mined, raising its fees while it is
    /// stuck. Errors if it reverts (or would: gas estimation runs it first).
    async fn submit(
        &self,
        tx: TransactionRequest,
    ) -> Result<alloy::rpc::types::TransactionReceipt, EvmError> {
        let tx = tx.with_from(self.from).with_chain_id(self.chain_id);
        let gas = self
            .provider
            .estimate_gas(tx.clone())
            .await
            .map_err(rpc_err)?;
        // A margin: the state may change between estimate and inclusion.
        let tx = tx.with_gas_limit(gas.saturating_add(gas / 5));
        let nonce = self.mined_count().await?;
        let fresh = self.estimate().await?;
        // Pick up where an earlier call at this nonce left off.
        let (mut fees, mut hashes) = match self.in_flight().clone() {
            Some(f) if f.nonce == nonce => (f.fees.raised(fresh), f.hashes),
            _ => (fresh, Vec::new()),
        };
        let poll =
            (self.policy.stuck_after / 20).clamp(Duration::from_millis(20), Duration::from_secs(2));
        for raise in 0..=self.policy.max_raises {
            if raise > 0 {
                fees = fees.raised(self.estimate().await?);
            }
            if let Some(cap) = self.policy.max_fee_per_gas {
                if fees.max_fee > cap {
                    return Err(EvmError::Chain(format!(
                        "transaction at nonce {nonce} not mined, and raising its fees would pass \
                         the cap of {cap} wei per gas"
                    )));
                }
            }
            let req = tx
                .clone()
                .with_nonce(nonce)
                .with_max_fee_per_gas(fees.max_fee)
                .with_max_priority_fee_per_gas(fees.priority);
            let mut underpriced = false;
            match self.provider.send_transaction(req).await {
                Ok(p) => hashes.push(*p.tx_hash()),
                Err(e) => match refusal(e) {
                    Refusal::Other(e) => return Err(e),
                    r => underpriced = matches!(r, Refusal::Underpriced),
                },
            }
            *self.in_flight() = Some(InFlight {
                nonce,
                fees,
                hashes: hashes.clone(),
            });
            if underpriced {
                continue;
            }
            let deadline = tokio::time::Instant::now() + self.policy.stuck_after;
            // When the nonce was seen used with no receipt of ours: a node
            // may count a block's transactions before it serves their
            // receipts (anvil does), so give the receipts a moment.
            let mut used_since: Option<tokio::time::Instant> = None;
            loop {
                // The count first: if it has passed our nonce, a receipt of
                // ours read after it is there, unless another took the nonce.
                let used = self.mined_count().await? > nonce;
                if let Some(r) = self.receipt(&hashes).await? {
                    *self.in_flight() = None;
                    if !r.status() {
                        return Err(EvmError::Chain(format!(
                            "transaction {} reverted",
                            r.transaction_hash
                        )));
                    }
                    return Ok(r);
                }
                if used {
                    let since = *used_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= RECEIPT_GRACE {
                        *self.in_flight() = None;
                        return Err(EvmError::Chain(format!(
                            "nonce {nonce} of {} was used by a transaction not sent here \
                             (another process with the same key?)",
                            self.from
                        )));
                    }
                    tokio::time::sleep(poll).await;
                    continue;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(
                        nonce,
                        max_fee = fees.max_fee,
                        priority = fees.priority,
                        "transaction not mined in {:?}: raising its fees",
                        self.policy.stuck_after
                    );
                    break;
                }
                tokio::time::sleep(poll).await;
            }
        }
        Err(EvmError::Chain(format!(
            "transaction at nonce {nonce} not mined after {} fee raises (max fee {} wei per gas)",
            self.policy.max_raises, fees.max_fee
        )))
    }

    /// [`Self::submit`], as a [`Mined`].
    async fn send(&self, tx: TransactionRequest) -> Result<Mined, EvmError> {
        let r = self.submit(tx).await?;
        Ok(Mined {
            tx: r.transaction_hash,
            gas_used: r.gas_used,
            block: r.block_number.unwrap_or_default(),
        })
    }
}

/// A connection to the chain, sending as one EVM account when it has one.
#[derive(Clone)]
pub struct Chain {
    provider: DynProvider,
    sender: Option<Arc<Sender>>,
    /// The settlement contract.
    pub contract: Address,
    /// The chain id.
    pub chain_id: u64,
}

/// Where a chain's JSON-RPC is: an `http://` or `https://` URL and, for a
/// server whose certificate a private CA issued, that CA (PEM), trusted
/// besides the system's roots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rpc {
    /// The URL.
    pub url: String,
    /// Extra trusted roots (PEM).
    pub ca_pem: Option<Vec<u8>>,
}

impl From<&str> for Rpc {
    fn from(url: &str) -> Rpc {
        Rpc {
            url: url.to_string(),
            ca_pem: None,
        }
    }
}

impl From<&String> for Rpc {
    fn from(url: &String) -> Rpc {
        Rpc::from(url.as_str())
    }
}

/// Connects to `rpc`; with a signer, also returns its [`Sender`].
async fn connect(
    rpc: &Rpc,
    signer: Option<PrivateKeySigner>,
    policy: FeePolicy,
) -> Result<(DynProvider, Option<Arc<Sender>>, u64), EvmError> {
    use alloy::transports::http::reqwest;
    let url: reqwest::Url = rpc
        .url
        .parse()
        .map_err(|e| EvmError::Chain(format!("RPC URL {}: {e}", rpc.url)))?;
    let mut http = reqwest::Client::builder();
    if let Some(pem) = &rpc.ca_pem {
        let roots = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| EvmError::Chain(format!("RPC CA certificates: {e}")))?;
        if roots.is_empty() {
            return Err(EvmError::Chain("RPC CA file has no certificate".into()));
        }
        http = http.tls_certs_merge(roots);
    }
    let http = http
        .build()
        .map_err(|e| EvmError::Chain(format!("HTTP client: {e}")))?;
    let reader = ProviderBuilder::new()
        .connect_reqwest(http.clone(), url.clone())
        .erased();
    let chain_id = reader.get_chain_id().await.map_err(rpc_err)?;
    let sender = signer.map(|s| {
        let from = s.address();
        // Only the wallet filler: the sender sets nonce, gas and fees itself.
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .wallet(EthereumWallet::from(s))
            .connect_reqwest(http, url)
            .erased();
        Arc::new(Sender {
            provider,
            from,
            chain_id,
            policy,
            in_flight: std::sync::Mutex::new(None),
        })
    });
    Ok((reader, sender, chain_id))
}

impl Chain {
    /// Connects to `rpc` as `signer`, for the contract at `contract`.
    pub async fn at(
        rpc: impl Into<Rpc>,
        signer: PrivateKeySigner,
        contract: Address,
    ) -> Result<Chain, EvmError> {
        Self::open(rpc, Some(signer), FeePolicy::default(), contract).await
    }

    /// A read-only connection (for checking, not sending).
    pub async fn reader(rpc: impl Into<Rpc>, contract: Address) -> Result<Chain, EvmError> {
        Self::open(rpc, None, FeePolicy::default(), contract).await
    }

    /// Connects to `rpc` for the contract at `contract`, sending as `signer`
    /// (when given) under `policy`.
    pub async fn open(
        rpc: impl Into<Rpc>,
        signer: Option<PrivateKeySigner>,
        policy: FeePolicy,
        contract: Address,
    ) -> Result<Chain, EvmError> {
        let (provider, sender, chain_id) = connect(&rpc.into(), signer, policy).await?;
        let code = provider.get_code_at(contract).await.map_err(rpc_err)?;
        if code.is_empty() {
            return Err(EvmError::Chain(format!(
                "no contract at {contract} on chain {chain_id} (a chain restarted without its state?)"
            )));
        }
        Ok(Chain {
            provider,
            sender,
            contract,
            chain_id,
        })
    }

    /// Sends `tx` as this connection's account and waits until it is mined.
    async fn send(&self, tx: TransactionRequest) -> Result<Mined, EvmError> {
        self.sender
            .as_ref()
            .ok_or_else(|| EvmError::Chain("a read-only connection cannot send".into()))?
            .send(tx)
            .await
    }

    fn verinfer(&self) -> Verinfer::VerinferInstance<DynProvider> {
        Verinfer::new(self.contract, self.provider.clone())
    }

    /// The settled checkpoint (size, root).
    pub async fn checkpoint(&self) -> Result<(u64, B256), EvmError> {
        let c = self
            .verinfer()
            .checkpoint()
            .call()
            .await
            .map_err(call_err)?;
        Ok((c.size, c.root))
    }

    /// Settles `batch` with its consistency proof and packed signatures.
    pub async fn settle(
        &self,
        batch: &Batch,
        proof: Vec<B256>,
        sigs: Bytes,
    ) -> Result<Mined, EvmError> {
        let c = &batch.checkpoint;
        let v = self.verinfer();
        let holds = c
            .holds
            .iter()
            .map(|h| Verinfer::Hold {
                result: h.result,
                payer: h.payer,
                node: h.node,
                amount: h.amount,
                window: h.window,
                payout: h.payout,
            })
            .collect();
        let call = v.settle(
            c.oldSize,
            c.newSize,
            c.newRoot,
            proof,
            c.transfers.clone(),
            holds,
            sigs,
        );
        self.send(call.into_transaction_request()).await
    }

    /// Overturns a held optimistic answer with a slash's evidence and signatures.
    pub async fn challenge(&self, s: &Slash, sigs: Bytes) -> Result<Mined, EvmError> {
        let v = self.verinfer();
        self.send(
            v.challenge(s.resultHash, s.reasonHash, s.anchor, sigs)
                .into_transaction_request(),
        )
        .await
    }

    /// Pays out a held fee whose window has closed.
    pub async fn release(&self, result: B256, payout: Vec<B256>) -> Result<Mined, EvmError> {
        let v = self.verinfer();
        self.send(v.release(result, payout).into_transaction_request())
            .await
    }

    /// Moves `account`'s vault to `to` (the address it linked).
    pub async fn claim(&self, claim: &Claim, sigs: Bytes) -> Result<Mined, EvmError> {
        let v = self.verinfer();
        self.send(
            v.claim(claim.account, claim.to, sigs)
                .into_transaction_request(),
        )
        .await
    }

    /// When the window of the fee held for `result` closes (block time,
    /// seconds), or `None` when no fee is held for it (never, paid out or
    /// refunded).
    pub async fn held_until(&self, result: B256) -> Result<Option<u64>, EvmError> {
        let h = self
            .verinfer()
            .held(result)
            .call()
            .await
            .map_err(call_err)?;
        Ok((h.until != 0).then_some(h.until))
    }

    /// The latest block's time (seconds), the contract's clock.
    pub async fn time(&self) -> Result<u64, EvmError> {
        let b = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(rpc_err)?
            .ok_or_else(|| EvmError::Chain("no latest block".into()))?;
        Ok(b.header.timestamp)
    }

    /// Slashes on chain.
    pub async fn slash(&self, s: &Slash, sigs: Bytes) -> Result<Mined, EvmError> {
        let v = self.verinfer();
        self.send(
            v.slash(s.accused, s.resultHash, s.reasonHash, s.anchor, sigs)
                .into_transaction_request(),
        )
        .await
    }

    /// Whether (result, accused) was slashed on chain.
    pub async fn is_slashed(&self, result: B256, accused: Address) -> Result<bool, EvmError> {
        self.verinfer()
            .isSlashed(result, accused)
            .call()
            .await
            .map_err(call_err)
    }

    /// An account's escrow balance.
    pub async fn balance(&self, account: Address) -> Result<u128, EvmError> {
        Ok(self.account(account).await?.0)
    }

    /// The latest block number.
    pub async fn head(&self) -> Result<u64, EvmError> {
        self.provider.get_block_number().await.map_err(rpc_err)
    }

    /// The escrow's movements logged in blocks `from..=to`, in chain order.
    pub async fn escrow_events(&self, from: u64, to: u64) -> Result<Vec<EscrowEvent>, EvmError> {
        use alloy::sol_types::SolEvent as _;
        use Verinfer::{Deposited, WithdrawalCancelled, WithdrawalRequested, Withdrawn};
        let filter = alloy::rpc::types::Filter::new()
            .address(self.contract)
            .from_block(from)
            .to_block(to)
            .event_signature(vec![
                Deposited::SIGNATURE_HASH,
                WithdrawalRequested::SIGNATURE_HASH,
                WithdrawalCancelled::SIGNATURE_HASH,
                Withdrawn::SIGNATURE_HASH,
            ]);
        let logs = self.provider.get_logs(&filter).await.map_err(rpc_err)?;
        let mut out = Vec::with_capacity(logs.len());
        for log in logs {
            let (Some(block), Some(tx), Some(log_index)) =
                (log.block_number, log.transaction_hash, log.log_index)
            else {
                continue; // pending: not yet in a block
            };
            let bad = |e: alloy::sol_types::Error| EvmError::Chain(format!("log in {tx}: {e}"));
            let (account, kind) = match log.topic0() {
                Some(&Deposited::SIGNATURE_HASH) => {
                    let e = Deposited::decode_log(&log.inner).map_err(bad)?;
                    (
                        e.account,
                        EscrowKind::Deposit {
                            amount: amount_u128(e.amount)?,
                        },
                    )
                }
                Some(&WithdrawalRequested::SIGNATURE_HASH) => {
                    let e = WithdrawalRequested::decode_log(&log.inner).map_err(bad)?;
                    (
                        e.account,
                        EscrowKind::WithdrawalRequested {
                            amount: amount_u128(e.amount)?,
                        },
                    )
                }
                Some(&WithdrawalCancelled::SIGNATURE_HASH) => {
                    let e = WithdrawalCancelled::decode_log(&log.inner).map_err(bad)?;
                    (e.account, EscrowKind::WithdrawalCancelled)
                }
                Some(&Withdrawn::SIGNATURE_HASH) => {
                    let e = Withdrawn::decode_log(&log.inner).map_err(bad)?;
                    (
                        e.account,
                        EscrowKind::Withdrawn {
                            amount: amount_u128(e.amount)?,
                        },
                    )
                }
                _ => continue,
            };
            out.push(EscrowEvent {
                block,
                tx,
                log_index,
                account,
                kind,
            });
        }
        Ok(out)
    }

    /// Asks to withdraw `amount` of the sender's escrow after the delay.
    pub async fn request_withdrawal(&self, amount: U256) -> Result<Mined, EvmError> {
        self.send(
            self.verinfer()
                .requestWithdrawal(amount)
                .into_transaction_request(),
        )
        .await
    }

    /// Cancels the sender's withdrawal request.
    pub async fn cancel_withdrawal(&self) -> Result<Mined, EvmError> {
        self.send(
            self.verinfer()
                .cancelWithdrawal()
                .into_transaction_request(),
        )
        .await
    }

    /// Completes the sender's withdrawal (after the delay).
    pub async fn withdraw(&self) -> Result<Mined, EvmError> {
        self.send(self.verinfer().withdraw().into_transaction_request())
            .await
    }

    /// An account's escrow: (balance, pending withdrawal, unlock time).
    pub async fn account(&self, account: Address) -> Result<(u128, u128, u64), EvmError> {
        let a = self
            .verinfer()
            .accounts(account)
            .call()
            .await
            .map_err(call_err)?;
        Ok((a.balance, a.pending, a.unlockAt))
    }

    /// A node's bonded stake.
    pub async fn stake(&self, node: Address) -> Result<u128, EvmError> {
        Ok(self
            .verinfer()
            .nodes(node)
            .call()
            .await
            .map_err(call_err)?
            .stake)
    }

    /// The contract's (escrow, staked, unbonding) totals.
    pub async fn totals(&self) -> Result<(U256, U256, U256), EvmError> {
        let t = self.verinfer().totals().call().await.map_err(call_err)?;
        Ok((t.escrow, t.staked, t.unbonding))
    }

    /// The settlement token.
    pub async fn token(&self) -> Result<Address, EvmError> {
        self.verinfer().token().call().await.map_err(call_err)
    }

    /// `account`'s balance of the settlement token.
    pub async fn token_balance(&self, account: Address) -> Result<U256, EvmError> {
        let t = VerinferToken::new(self.token().await?, self.provider.clone());
        t.balanceOf(account).call().await.map_err(call_err)
    }

    /// The token's total supply.
    pub async fn token_supply(&self) -> Result<U256, EvmError> {
        let t = VerinferToken::new(self.token().await?, self.provider.clone());
        t.totalSupply().call().await.map_err(call_err)
    }

    /// Sends `amount` of the token to `to`.
    pub async fn send_tokens(&self, to: Address, amount: U256) -> Result<Mined, EvmError> {
        let t = VerinferToken::new(self.token().await?, self.provider.clone());
        self.send(t.transfer(to, amount).into_transaction_request())
            .await
    }

    /// Deposits `amount` (approved first) into `account`'s escrow.
    pub async fn deposit(&self, account: Address, amount: U256) -> Result<Mined, EvmError> {
        let t = VerinferToken::new(self.token().await?, self.provider.clone());
        self.send(t.approve(self.contract, amount).into_transaction_request())
            .await?;
        self.send(
            self.verinfer()
                .deposit(account, amount)
                .into_transaction_request(),
        )
        .await
    }

    /// Registers the sender as a node (`role` 1 inference, 2 verifier) with
    /// an initial stake (approved first).
    pub async fn register(
        &self,
        role: u8,
        node_key: B256,
        endpoint: &str,
        stake: U256,
    ) -> Result<Mined, EvmError> {
        let t = VerinferToken::new(self.token().await?, self.provider.clone());
        self.send(t.approve(self.contract, stake).into_transaction_request())
            .await?;
        let v = self.verinfer();
        self.send(
            v.register(role, node_key, endpoint.to_string(), stake)
                .into_transaction_request(),
        )
        .await
    }

    /// `account`'s balance of the chain's currency (for gas).
    pub async fn gas_balance(&self, account: Address) -> Result<U256, EvmError> {
        self.provider.get_balance(account).await.map_err(rpc_err)
    }
}

/// Where the contracts of a deployment are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Deployment {
    /// The settlement contract.
    pub contract: Address,
    /// Its token.
    pub token: Address,
    /// The chain id.
    pub chain_id: u64,
    /// The block the contract was created in: nothing of it is logged before
    /// (where a bridge starts reading).
    #[serde(default)]
    pub block: u64,
}

/// Deploys the devnet token (`supply` to the deployer) and the settlement
/// contract over it.
pub async fn deploy(
    rpc: impl Into<Rpc>,
    deployer: PrivateKeySigner,
    supply: U256,
    params: Verinfer::Params,
    models: Vec<Verinfer::InitialModel>,
) -> Result<Deployment, EvmError> {
    deploy_over(rpc, deployer, Token::New(supply), params, models).await
}

/// The token a deployment settles in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// An ERC-20 already on the chain.
    Existing(Address),
    /// A new plain ERC-20 (18 decimals) with this supply, all to the deployer.
    New(U256),
}

/// Deploys the settlement contract over `token` (deploying a new one first
/// if asked).
pub async fn deploy_over(
    rpc: impl Into<Rpc>,
    deployer: PrivateKeySigner,
    token: Token,
    params: Verinfer::Params,
    models: Vec<Verinfer::InitialModel>,
) -> Result<Deployment, EvmError> {
    let (reader, sender, chain_id) =
        connect(&rpc.into(), Some(deployer), FeePolicy::default()).await?;
    let sender = sender.ok_or_else(|| EvmError::Chain("no deployer".into()))?;
    let create = |code: Vec<u8>| {
        let sender = sender.clone();
        async move {
            let r = sender
                .submit(TransactionRequest::default().with_deploy_code(code))
                .await?;
            match (r.contract_address, r.block_number) {
                (Some(a), Some(b)) => Ok((a, b)),
                _ => Err(EvmError::Chain("contract creation failed".into())),
            }
        }
    };
    let token = match token {
        Token::Existing(a) => {
            if reader.get_code_at(a).await.map_err(rpc_err)?.is_empty() {
                return Err(EvmError::Chain(format!(
                    "no token contract at {a} on chain {chain_id}"
                )));
            }
            a
        }
        Token::New(supply) => {
            let args = VerinferToken::constructorCall { supply }.abi_encode();
            create([bytecode("VerinferToken")?, args].concat()).await?.0
        }
    };
    let args = Verinfer::constructorCall {
        token,
        params,
        models,
    }
    .abi_encode();
    let (contract, block) = create([bytecode("Verinfer")?, args].concat()).await?;
    Ok(Deployment {
        contract,
        token,
        chain_id,
        block,
    })
}

/// Sends `wei` of the chain's currency from `from` to each of `to` (gas
/// money for the accounts that send transactions).
pub async fn fund_gas(
    rpc: impl Into<Rpc>,
    from: PrivateKeySigner,
    to: &[Address],
    wei: U256,
) -> Result<(), EvmError> {
    let (_, sender, _) = connect(&rpc.into(), Some(from), FeePolicy::default()).await?;
    let sender = sender.ok_or_else(|| EvmError::Chain("no sender".into()))?;
    for a in to {
        sender
            .submit(TransactionRequest::default().with_to(*a).with_value(wei))
            .await?;
    }
    Ok(())
}

/// The contract's parameters for a ledger's: the same quorum, slashing, fee
/// split, unbonding delay and voting period; `slash_quorum` signatures to
/// slash; escrow withdrawals after a day.
pub fn contract_params(
    p: &crate::tx::Params,
    slash_quorum: u16,
    treasury: Address,
) -> Result<Verinfer::Params, EvmError> {
    let small = |v: u32, what: &str| {
        u16::try_from(v)
            .map_err(|_| EvmError::Invalid(format!("{what} {v} does not fit the contract")))
    };
    Ok(Verinfer::Params {
        minStake: p.min_stake.0,
        quorum: small(p.quorum, "quorum")?,
        slashQuorum: slash_quorum,
        slashBps: small(p.slash_bps, "slash_bps")?,
        slashRewardBps: small(p.slash_reward_bps, "slash_reward_bps")?,
        feeInferenceBps: small(p.fee_split.node_bps, "fee split")?,
        feeVerifierBps: small(p.fee_split.verifiers_bps, "fee split")?,
        feeTreasuryBps: small(p.fee_split.treasury_bps, "fee split")?,
        unbondDelay: u32::try_from(p.unbonding_delay_secs).map_err(|_| {
            EvmError::Invalid("unbonding_delay_secs does not fit the contract".into())
        })?,
        withdrawDelay: 86_400,
        votingPeriod: u32::try_from(p.voting_period_secs).map_err(|_| {
            EvmError::Invalid("voting_period_secs does not fit the contract".into())
        })?,
        treasury,
    })
}

/// The contract's admitted models for a ledger's.
pub fn initial_models(models: &[crate::tx::ModelEntry]) -> Vec<Verinfer::InitialModel> {
    models
        .iter()
        .map(|m| Verinfer::InitialModel {
            id: B256::from(m.id.0),
            priceIn: m.price_in.0,
            priceOut: m.price_out.0,
        })
        .collect()
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain").finish_non_exhaustive()
    }
}
