//! The contracts as seen from Rust: bindings (by `alloy::sol!`), deployment
//! from the checked-in artifact, and the calls the backend makes.

use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
pub use alloy::primitives::U256;
use alloy::primitives::{Address, Bytes, B256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolConstructor;

use super::netting::{Batch, Slash};
use super::EvmError;

sol! {
    /// The settlement contract (contracts/src/Verinfer.sol), the part used here.
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
        struct InitialModel {
            bytes32 id;
            uint128 priceIn;
            uint128 priceOut;
        }
        constructor(address token, Params params, InitialModel[] models);

        error StaleCheckpoint(uint64 settledSize, uint64 oldSize);
        error SizeNotIncreasing();
        error InvalidConsistencyProof();
        error QuorumNotMet(uint256 signatures, uint256 quorum);
        error InvalidSignature(uint256 index);
        error SignersNotAscending(uint256 index);
        error NotVerifier(address signer);
        error InsufficientBalance(address account, uint256 balance, uint256 needed);
        error TransfersNotSorted(uint256 index);
        error Unbalanced(int256 sum);
        error AlreadySlashed();
        error NothingToSlash();
        error AccusedInCommittee();

        function register(uint8 role, bytes32 nodeKey, string endpoint, uint256 amount) external;
        function deposit(address account, uint256 amount) external;
        function settle(uint64 oldSize, uint64 newSize, bytes32 newRoot, bytes32[] proof, bytes32[] transfers, bytes sigs) external;
        function slash(address accused, bytes32 resultHash, bytes32 reasonHash, bytes sigs) external;
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

/// How long to wait for a transaction's receipt before asking again.
const RECEIPT_TIMEOUT: Duration = Duration::from_secs(30);

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

/// A connection to the chain as one EVM account.
#[derive(Clone)]
pub struct Chain {
    provider: DynProvider,
    /// The settlement contract.
    pub contract: Address,
    /// The chain id.
    pub chain_id: u64,
}

/// Connects to `rpc`, sending as `signer` when given.
async fn provider(
    rpc: &str,
    signer: Option<PrivateKeySigner>,
) -> Result<(DynProvider, u64), EvmError> {
    let url: alloy::transports::http::reqwest::Url = rpc
        .parse()
        .map_err(|e| EvmError::Chain(format!("RPC URL {rpc}: {e}")))?;
    let p = match signer {
        // Nonces from the chain's pending count for every transaction (not a
        // local counter): after a restart, a revert or a lost transaction the
        // next one never leaves a gap.
        Some(s) => ProviderBuilder::new()
            .disable_recommended_fillers()
            .with_gas_estimation()
            .with_simple_nonce_management()
            .fetch_chain_id()
            .wallet(EthereumWallet::from(s))
            .connect_http(url)
            .erased(),
        None => ProviderBuilder::new().connect_http(url).erased(),
    };
    let id = p.get_chain_id().await.map_err(chain_err)?;
    Ok((p, id))
}

async fn mined(
    pending: Result<
        alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
        alloy::contract::Error,
    >,
) -> Result<Mined, EvmError> {
    let r = pending
        .map_err(call_err)?
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(chain_err)?;
    if !r.status() {
        return Err(EvmError::Chain(format!(
            "transaction {} reverted",
            r.transaction_hash
        )));
    }
    Ok(Mined {
        tx: r.transaction_hash,
        gas_used: r.gas_used,
        block: r.block_number.unwrap_or_default(),
    })
}

impl Chain {
    /// Connects to `rpc` as `signer`, for the contract at `contract`.
    pub async fn at(
        rpc: &str,
        signer: PrivateKeySigner,
        contract: Address,
    ) -> Result<Chain, EvmError> {
        Self::connect(rpc, Some(signer), contract).await
    }

    /// A read-only connection (for checking, not sending).
    pub async fn reader(rpc: &str, contract: Address) -> Result<Chain, EvmError> {
        Self::connect(rpc, None, contract).await
    }

    async fn connect(
        rpc: &str,
        signer: Option<PrivateKeySigner>,
        contract: Address,
    ) -> Result<Chain, EvmError> {
        let (provider, chain_id) = provider(rpc, signer).await?;
        let code = provider.get_code_at(contract).await.map_err(chain_err)?;
        if code.is_empty() {
            return Err(EvmError::Chain(format!(
                "no contract at {contract} on chain {chain_id} (a chain restarted without its state?)"
            )));
        }
        Ok(Chain {
            provider,
            contract,
            chain_id,
        })
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
        let call = v.settle(
            c.oldSize,
            c.newSize,
            c.newRoot,
            proof,
            c.transfers.clone(),
            sigs,
        );
        mined(call.send().await).await
    }

    /// Slashes on chain.
    pub async fn slash(&self, s: &Slash, sigs: Bytes) -> Result<Mined, EvmError> {
        let v = self.verinfer();
        mined(
            v.slash(s.accused, s.resultHash, s.reasonHash, sigs)
                .send()
                .await,
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
        Ok(self
            .verinfer()
            .accounts(account)
            .call()
            .await
            .map_err(call_err)?
            .balance)
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
        mined(t.transfer(to, amount).send().await).await
    }

    /// Deposits `amount` (approved first) into `account`'s escrow.
    pub async fn deposit(&self, account: Address, amount: U256) -> Result<Mined, EvmError> {
        let t = VerinferToken::new(self.token().await?, self.provider.clone());
        mined(t.approve(self.contract, amount).send().await).await?;
        mined(self.verinfer().deposit(account, amount).send().await).await
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
        mined(t.approve(self.contract, stake).send().await).await?;
        let v = self.verinfer();
        mined(
            v.register(role, node_key, endpoint.to_string(), stake)
                .send()
                .await,
        )
        .await
    }

    /// `account`'s balance of the chain's currency (for gas).
    pub async fn gas_balance(&self, account: Address) -> Result<U256, EvmError> {
        self.provider.get_balance(account).await.map_err(chain_err)
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
}

/// Deploys the devnet token (`supply` to the deployer) and the settlement
/// contract over it.
pub async fn deploy(
    rpc: &str,
    deployer: PrivateKeySigner,
    supply: U256,
    params: Verinfer::Params,
    models: Vec<Verinfer::InitialModel>,
) -> Result<Deployment, EvmError> {
    let (p, chain_id) = provider(rpc, Some(deployer)).await?;
    let create = |code: Vec<u8>| {
        let p = p.clone();
        async move {
            let r = send_plain(&p, TransactionRequest::default().with_deploy_code(code)).await?;
            match (r.status(), r.contract_address) {
                (true, Some(a)) => Ok(a),
                _ => Err(EvmError::Chain("contract creation failed".into())),
            }
        }
    };
    let token_args = VerinferToken::constructorCall { supply }.abi_encode();
    let token = create([bytecode("VerinferToken")?, token_args].concat()).await?;
    let args = Verinfer::constructorCall {
        token,
        params,
        models,
    }
    .abi_encode();
    let contract = create([bytecode("Verinfer")?, args].concat()).await?;
    Ok(Deployment {
        contract,
        token,
        chain_id,
    })
}

/// Sends a transaction that is not a contract call and waits for its receipt.
async fn send_plain(
    p: &DynProvider,
    tx: TransactionRequest,
) -> Result<alloy::rpc::types::TransactionReceipt, EvmError> {
    p.send_transaction(tx)
        .await
        .map_err(chain_err)?
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await
        .map_err(chain_err)
}

/// Sends `wei` of the chain's currency from `from` to each of `to` (gas
/// money for the accounts that send transactions).
pub async fn fund_gas(
    rpc: &str,
    from: PrivateKeySigner,
    to: &[Address],
    wei: U256,
) -> Result<(), EvmError> {
    let (p, _) = provider(rpc, Some(from)).await?;
    for a in to {
        let r = send_plain(
            &p,
            TransactionRequest::default().with_to(*a).with_value(wei),
        )
        .await?;
        if !r.status() {
            return Err(EvmError::Chain(format!("gas money to {a} failed")));
        }
    }
    Ok(())
}

/// The contract's parameters for a ledger's: the same quorum, slashing and
/// fee split; `slash_quorum` signatures to slash; delays in seconds.
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
        unbondDelay: 7 * 86_400,
        withdrawDelay: 86_400,
        votingPeriod: 86_400,
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
