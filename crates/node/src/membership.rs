//! How inference nodes and verifiers join the network: stake, register their
//! endpoint in the ledger, then send heartbeats.

use crate::client::{ClientError, LedgerClient};
use std::time::Duration;
use verinfer_ledger::tx::{Role, TxBody};
use verinfer_types::records::Amount;
use verinfer_types::SecretKey;

/// Stakes up to the minimum and registers `endpoint` for `role` (replacing an
/// older registration of this key with another endpoint or role).
pub async fn join(
    ledger: &LedgerClient,
    key: &SecretKey,
    role: Role,
    endpoint: &str,
) -> anyhow::Result<()> {
    let me = key.public();
    // Where value settles on a chain, this node is paid (and slashed) at its
    // EVM address.
    ledger.link(&verinfer_ledger::evm::Link::new(key)?).await?;
    let params = ledger.params().await?.params;
    let min = params.min_stake.0;
    let acct = ledger.account(&me).await?;
    if acct.stake < min {
        let need = min - acct.stake;
        // Staking and registering each pay the transaction fee.
        if acct.balance < need.saturating_add(params.tx_fee.0.saturating_mul(2)) {
            anyhow::bail!(
                "node {me} has {} staked and {} spendable but the minimum stake is {min}: \
                 fund it first (verinfer ledger transfer --to {me} ...)",
                acct.stake,
                acct.balance
            );
        }
        ledger
            .submit_as(
                key,
                TxBody::Stake {
                    amount: Amount(need),
                },
            )
            .await?;
    }
    let current = ledger.nodes().await?.into_iter().find(|n| n.key == me);
    match current {
        Some(n) if n.role == role && n.endpoint == endpoint => {
            ledger.submit_as(key, TxBody::Heartbeat).await?;
        }
        Some(_) => {
            ledger.submit_as(key, TxBody::Deregister).await?;
            register(ledger, key, role, endpoint).await?;
        }
        None => register(ledger, key, role, endpoint).await?,
    }
    tracing::info!(node = %me, ?role, endpoint, "registered in the ledger");
    Ok(())
}

async fn register(
    ledger: &LedgerClient,
    key: &SecretKey,
    role: Role,
    endpoint: &str,
) -> Result<(), ClientError> {
    ledger
        .submit_as(
            key,
            TxBody::Register {
                role,
                endpoint: endpoint.to_string(),
            },
        )
        .await
        .map(|_| ())
}

/// Sends a heartbeat every `every`; joins again when the ledger no longer
/// knows the node (for example after a slash took its stake below the
/// minimum). Runs until the task is dropped.
pub async fn heartbeats(
    ledger: LedgerClient,
    key: SecretKey,
    role: Role,
    endpoint: String,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        match ledger.submit_as(&key, TxBody::Heartbeat).await {
            Ok(_) => {}
            Err(ClientError::Refused(r)) if r.error.contains("not registered") => {
                if let Err(e) = join(&ledger, &key, role, &endpoint).await {
                    tracing::warn!(error = %e, "cannot rejoin the network");
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}
