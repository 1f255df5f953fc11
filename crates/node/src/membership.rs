//! How gateways, inference nodes and verifiers join the network (stake,
//! register their endpoint in the ledger, then send heartbeats), and how a
//! role learns from the ledger whom it serves ([`Registry`]).

use crate::client::{ClientError, LedgerClient};
use crate::http::HttpError;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use verinfer_ledger::tx::{Role, TxBody};
use verinfer_types::records::Amount;
use verinfer_types::{Hash, PublicKey, SecretKey};

/// Stakes up to the minimum and registers `endpoint` for `role` (replacing an
/// older registration of this key with another endpoint or role); an
/// inference node then declares which of `models` it serves (those the
/// ledger admits).
pub async fn join(
    ledger: &LedgerClient,
    key: &SecretKey,
    role: Role,
    endpoint: &str,
    models: &[Hash],
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
    if role == Role::Inference {
        declare(ledger, key, models).await?;
    }
    Ok(())
}

/// Declares in the ledger the admitted ones of `models` (gateways route
/// only to declared models), unless the ledger holds that declaration
/// already; the others are named in a warning.
async fn declare(ledger: &LedgerClient, key: &SecretKey, models: &[Hash]) -> anyhow::Result<()> {
    let admitted: HashSet<Hash> = ledger.params().await?.models.iter().map(|m| m.id).collect();
    let (mut serve, missing): (Vec<Hash>, Vec<Hash>) =
        models.iter().partition(|m| admitted.contains(m));
    if !missing.is_empty() {
        tracing::warn!(
            ?missing,
            "models not admitted by the ledger are not declared"
        );
    }
    serve.sort();
    serve.dedup();
    let me = key.public();
    let declared = ledger
        .nodes()
        .await?
        .into_iter()
        .find(|n| n.key == me)
        .map(|n| n.models);
    if declared.as_ref() != Some(&serve) {
        ledger
            .submit_as(key, TxBody::Serve { models: serve })
            .await?;
    }
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
    models: Vec<Hash>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        match ledger.submit_as(&key, TxBody::Heartbeat).await {
            Ok(_) => {}
            Err(ClientError::Refused(r)) if r.error.contains("not registered") => {
                if let Err(e) = join(&ledger, &key, role, &endpoint, &models).await {
                    tracing::warn!(error = %e, "cannot rejoin the network");
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// How often a role reads the registry again.
pub const REGISTRY_REFRESH: Duration = Duration::from_secs(2);
/// An unknown caller makes a role read the registry again at most this often
/// (a gateway registered a moment ago is served at once; a stranger cannot
/// make the role hammer the ledger).
const MISS_REFRESH: Duration = Duration::from_millis(500);
/// How long a reservation seen in the ledger is taken as live.
const ESCROW_CACHE: Duration = Duration::from_secs(5);
/// Reservations remembered at most (the cache is emptied when full).
const ESCROW_CACHE_MAX: usize = 10_000;

/// What an inference node or a verifier knows of the ledger: its node key
/// (the only sender of the ledger's duties) and the registered gateways (the
/// only senders of work), read again every [`REGISTRY_REFRESH`]; and the
/// live reservations, read on demand and kept briefly.
pub struct Registry {
    ledger: LedgerClient,
    ledger_key: PublicKey,
    gateways: RwLock<HashSet<PublicKey>>,
    /// Registered verifiers: they ask each other to check a watched answer.
    verifiers: RwLock<HashSet<PublicKey>>,
    refreshed: tokio::sync::Mutex<Instant>,
    escrows: Mutex<HashMap<Hash, (PublicKey, Instant)>>,
}

impl Registry {
    /// Asks `ledger` for its key and its registry.
    pub async fn connect(ledger: LedgerClient) -> Result<Arc<Self>, ClientError> {
        let ledger_key = ledger.node_key().await?;
        let r = Arc::new(Registry {
            ledger,
            ledger_key,
            gateways: RwLock::default(),
            verifiers: RwLock::default(),
            refreshed: tokio::sync::Mutex::new(Instant::now()),
            escrows: Mutex::default(),
        });
        r.refresh().await?;
        Ok(r)
    }

    /// The ledger node's key.
    pub fn ledger_key(&self) -> &PublicKey {
        &self.ledger_key
    }

    /// Reads the registered gateways again.
    pub async fn refresh(&self) -> Result<(), ClientError> {
        let mut refreshed = self.refreshed.lock().await;
        self.read().await?;
        *refreshed = Instant::now();
        Ok(())
    }

    async fn read(&self) -> Result<(), ClientError> {
        let nodes = self.ledger.nodes().await?;
        let of = |role: Role| -> HashSet<PublicKey> {
            nodes
                .iter()
                .filter(|n| n.role == role)
                .map(|n| n.key)
                .collect()
        };
        *self.gateways.write().unwrap_or_else(|e| e.into_inner()) = of(Role::Gateway);
        *self.verifiers.write().unwrap_or_else(|e| e.into_inner()) = of(Role::Verifier);
        Ok(())
    }

    /// Refreshes every [`REGISTRY_REFRESH`]; runs until the task is dropped.
    pub async fn refresh_loop(self: Arc<Self>) {
        loop {
            tokio::time::sleep(REGISTRY_REFRESH).await;
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot read the registry");
            }
        }
    }

    fn known_gateway(&self, key: &PublicKey) -> bool {
        self.gateways
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    fn known_verifier(&self, key: &PublicKey) -> bool {
        self.verifiers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    /// Ok for a registered gateway; 403 for anyone else.
    pub async fn require_gateway(&self, key: PublicKey) -> Result<(), HttpError> {
        if self.known(&key, Self::known_gateway).await {
            return Ok(());
        }
        Err(HttpError::forbidden(format!(
            "{key} is not a gateway registered in the ledger: this node takes work only from registered gateways"
        )))
    }

    /// Ok for a registered gateway or verifier (a watcher asking the other
    /// verifiers to check an answer it rejected); 403 for anyone else.
    pub async fn require_gateway_or_verifier(&self, key: PublicKey) -> Result<(), HttpError> {
        let either = |r: &Self, k: &PublicKey| r.known_gateway(k) || r.known_verifier(k);
        if self.known(&key, either).await {
            return Ok(());
        }
        Err(HttpError::forbidden(format!(
            "{key} is neither a gateway nor a verifier registered in the ledger"
        )))
    }

    /// Whether `is` holds for `key`, reading the registry again once when
    /// it does not.
    async fn known(&self, key: &PublicKey, is: impl Fn(&Self, &PublicKey) -> bool) -> bool {
        if is(self, key) {
            return true;
        }
        {
            // A gateway that registered just after the last read must not be
            // refused: wait out the spacing rather than skip the read (the
            // spacing only bounds how often unknown senders make us read).
            let mut refreshed = self.refreshed.lock().await;
            let wait = MISS_REFRESH.saturating_sub(refreshed.elapsed());
            tokio::time::sleep(wait).await;
            if let Err(e) = self.read().await {
                tracing::warn!(error = %e, "cannot read the registry");
            }
            *refreshed = Instant::now();
        }
        is(self, key)
    }

    /// Ok for the ledger's node key; 403 for anyone else.
    pub async fn require_ledger(&self, key: PublicKey) -> Result<(), HttpError> {
        if key == self.ledger_key {
            Ok(())
        } else {
            Err(HttpError::forbidden(format!(
                "{key} is not this network's ledger: only the ledger asks for this"
            )))
        }
    }

    /// Ok when the ledger holds a reservation for `request` paid by `payer`;
    /// 403 when it holds none, 503 when the ledger cannot be asked.
    pub async fn require_reservation(
        &self,
        request: &Hash,
        payer: &PublicKey,
    ) -> Result<(), HttpError> {
        let cached = {
            let mut escrows = verinfer_types::sync::lock(&self.escrows);
            escrows.retain(|_, (_, at)| at.elapsed() < ESCROW_CACHE);
            escrows.get(request).map(|(p, _)| *p)
        };
        let found = match cached {
            Some(p) => Some(p),
            None => self
                .ledger
                .escrow(request)
                .await
                .map_err(|e| {
                    HttpError(
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        format!("cannot read the reservation from the ledger: {e}"),
                    )
                })?
                .map(|e| e.payer),
        };
        match found {
            Some(p) if p == *payer => {
                let mut escrows = verinfer_types::sync::lock(&self.escrows);
                if escrows.len() >= ESCROW_CACHE_MAX {
                    escrows.clear();
                }
                escrows.entry(*request).or_insert((p, Instant::now()));
                Ok(())
            }
            Some(_) => Err(HttpError::forbidden(format!(
                "the reservation of request {request} is not paid by its requester"
            ))),
            None => Err(HttpError::forbidden(format!(
                "request {request} has no live reservation in the ledger: this node answers only paid requests"
            ))),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}
