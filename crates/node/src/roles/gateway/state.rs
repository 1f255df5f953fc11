//! The gateway's state: its settings, the API keys' accounts, and what it
//! asks of the ledger on its own behalf (the directory of nodes, call
//! reports).

use super::counters::{Counters, Snapshot};
use super::directory::Directory;
use super::openai::ApiError;
use super::settle::Settler;
use super::{guard, limits, pending, report};
use crate::client::{LedgerClient, Peer};
use axum::http::{header, HeaderMap};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use verinfer_ledger::tx::{ModelEntry, Role};
use verinfer_types::records::VerificationMode;
use verinfer_types::{Hash, SecretKey};

/// An API key's ledger account.
pub struct Account {
    /// The account key the gateway signs with.
    pub key: SecretKey,
    /// Serialises this account's transactions (their nonces are sequential).
    pub turn: tokio::sync::Mutex<()>,
}

/// Gateway settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The SHA-256 of each API key and the account key it maps to (the
    /// gateway never holds the API keys themselves).
    pub api_keys: Vec<(Hash, SecretKey)>,
    /// Verification mode of requests that do not ask for one.
    pub default_verification: VerificationMode,
    /// Requests per minute per API key.
    pub rate_per_minute: u32,
    /// Burst of requests per API key.
    pub burst: u32,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// A node is live while its last heartbeat is younger than this.
    pub liveness: Duration,
    /// The devnet's demo API key, served to the chat page at `/v1/devnet`
    /// so that a newcomer chats without typing it (devnet only; to loopback
    /// clients only).
    pub demo_api_key: Option<String>,
    /// Where answers delivered before they were certified are kept until
    /// they settle ([`super::pending`]); `None` keeps them in memory only.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            api_keys: Vec::new(),
            default_verification: VerificationMode::Quorum { k: 2 },
            rate_per_minute: 600,
            burst: 100,
            max_body_bytes: 1 << 20,
            liveness: Duration::from_secs(10),
            demo_api_key: None,
            data_dir: None,
        }
    }
}

/// The gateway's state.
pub struct Gateway {
    pub(super) ledger: LedgerClient,
    pub(super) peer: Peer,
    pub(super) directory: Directory,
    pub(super) settler: Settler,
    pub(super) counters: Counters,
    /// By the SHA-256 of their API key.
    pub(super) accounts: Vec<(Hash, Arc<Account>)>,
    pub(super) limiter: limits::RateLimiter,
    /// Answers delivered before they were certified.
    pub(super) pending: pending::Store,
    pub(super) config: GatewayConfig,
    /// Whether it watches the optimistic answers it served (always, but in
    /// tests that show the verifiers watch on their own).
    pub(super) watching: std::sync::atomic::AtomicBool,
}

impl Gateway {
    /// Stops watching the optimistic answers it serves, so a test can show
    /// that the verifiers alone overturn a cheat.
    #[cfg(feature = "testing")]
    pub fn stop_watching(&self) {
        self.watching
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts a gateway signing with `key`, settling in the ledger at
    /// `ledger_url`; reads the registry every second.
    pub async fn start(
        key: SecretKey,
        ledger_url: &str,
        config: GatewayConfig,
    ) -> Result<Arc<Self>, pending::StoreError> {
        let pending = pending::Store::open(
            config
                .data_dir
                .as_deref()
                .map(|d| d.join("pending"))
                .as_deref(),
        )?;
        let ledger = LedgerClient::new(ledger_url, key.clone());
        let accounts = config
            .api_keys
            .iter()
            .map(|(hash, k)| {
                (
                    *hash,
                    Arc::new(Account {
                        key: k.clone(),
                        turn: tokio::sync::Mutex::new(()),
                    }),
                )
            })
            .collect();
        let gw = Arc::new(Gateway {
            directory: Directory::new(ledger.clone(), config.liveness),
            settler: Settler::start(ledger.clone(), key.clone()),
            peer: Peer::new(key),
            ledger,
            counters: Counters::default(),
            accounts,
            limiter: limits::RateLimiter::new(config.rate_per_minute, config.burst),
            pending,
            watching: std::sync::atomic::AtomicBool::new(true),
            config,
        });
        if let Err(e) = gw.directory.refresh(&gw.peer).await {
            tracing::warn!(error = %e, "cannot read the registry yet");
        }
        let g = gw.clone();
        tokio::spawn(async move {
            g.directory
                .refresh_loop(g.peer.clone(), Duration::from_secs(1))
                .await
        });
        // Answers a previous run delivered and could not certify yet.
        for p in gw.pending.open_answers() {
            tokio::spawn(gw.clone().certify_later(p));
        }
        Ok(gw)
    }

    /// The account this gateway signs for with key `key`.
    pub(super) fn account_of(&self, key: &verinfer_types::PublicKey) -> Option<Arc<Account>> {
        self.accounts
            .iter()
            .find(|(_, a)| a.key.public() == *key)
            .map(|(_, a)| a.clone())
    }

    /// The gateway's counters.
    pub fn counters(&self) -> Snapshot {
        self.counters.snapshot()
    }

    /// Tells the ledger what only the gateway saw of one call (a rejected
    /// answer, results rejected per node, verifiers that missed a task), for
    /// the explorer's charts. In the background, retried until the ledger
    /// acknowledges it (it counts a call once, so a retry is harmless).
    pub(super) fn report(&self, report: crate::wire::Report) {
        let body = match serde_json::to_vec(&report) {
            Ok(b) => b,
            Err(_) => return,
        };
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(200);
            for attempt in 1..=report::ATTEMPTS {
                match ledger
                    .post("/ledger/report", body.clone(), Duration::from_secs(5))
                    .await
                {
                    Ok(_) => return,
                    // Refused (403, 400): a retry gets the same answer.
                    Err(crate::client::ClientError::Status { status, body, .. })
                        if status < 500 =>
                    {
                        tracing::warn!(status, body, "call report refused");
                        return;
                    }
                    Err(e) if attempt == report::ATTEMPTS => {
                        tracing::warn!(error = %e, call = %report.call, "call report not taken");
                    }
                    Err(_) => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
    }

    /// The directory of nodes.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Whether a live inference node and enough live verifiers serve some model.
    pub fn ready(&self) -> bool {
        let Some(p) = self.directory.params() else {
            return false;
        };
        p.models.iter().any(|m| self.ready_for(&m.id))
    }

    /// Whether it sees a live inference node and a quorum of live verifiers
    /// serving `model`.
    pub fn ready_for(&self, model: &Hash) -> bool {
        let quorum = self.directory.params().map_or(0, |p| p.params.quorum);
        !self.directory.live(Role::Inference, model).is_empty()
            && self.directory.live(Role::Verifier, model).len() >= quorum as usize
    }

    /// The account of the request's API key, and the key's hash (hex, what
    /// the rate limiter counts by). Every stored hash is compared, in
    /// constant time, so the timing tells nothing about any of them.
    pub(super) fn account(&self, headers: &HeaderMap) -> Result<(String, Arc<Account>), ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("missing API key: send `Authorization: Bearer KEY`")
            })?;
        let hash = crate::config::api_key_hash(token);
        let mut found = None;
        for (h, a) in &self.accounts {
            if bool::from(h.as_bytes()[..].ct_eq(&hash.as_bytes()[..])) {
                found = Some(a.clone());
            }
        }
        found
            .map(|a| (hash.to_hex(), a))
            .ok_or_else(|| ApiError::unauthorized("invalid API key"))
    }

    /// What the live nodes of `model` announce; 503 when no inference node
    /// serves it.
    pub(super) fn capacity(&self, model: &ModelEntry) -> Result<guard::Capacity, ApiError> {
        let nodes = self.directory.live(Role::Inference, &model.id);
        if nodes.is_empty() {
            return Err(ApiError::unavailable(
                "no live inference node serves this model right now",
            ));
        }
        // The nodes of one model id run the same file; the smallest figure
        // any announces is the safe one.
        let least = |f: fn((u32, u32)) -> u32| {
            nodes
                .iter()
                .filter_map(|m| m.info.as_ref().map(|i| f(i.limits(&model.id))))
                .filter(|n| *n > 0)
                .min()
                .unwrap_or(0)
        };
        Ok(guard::Capacity {
            vocab_size: least(|(_, vocab)| vocab),
            context_len: least(|(context, _)| context),
            verifiers: self.directory.live(Role::Verifier, &model.id).len(),
            quorum: self.directory.params().map_or(0, |p| p.params.quorum),
        })
    }

    pub(super) fn model(&self, name: &str) -> Result<ModelEntry, ApiError> {
        let params = self
            .directory
            .params()
            .ok_or_else(|| ApiError::unavailable("the gateway has not read the ledger yet"))?;
        let id: Option<Hash> = name.parse().ok();
        params
            .models
            .into_iter()
            .find(|m| m.name == name || Some(m.id) == id)
            .ok_or_else(|| ApiError::unknown_model(name))
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").finish_non_exhaustive()
    }
}
