//! HTTP clients of the roles: signed messages to peers, and the ledger's API.

use crate::auth;
use crate::wire::{
    AccountView, EscrowView, NodeInfo, NodeView, ParamsView, SummaryView, TxApplied, TxRefused,
};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use verinfer_ledger::tx::{Transaction, TxBody};
use verinfer_types::{Hash, PublicKey, Record, SecretKey};

/// Why a call to another node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached or the connection broke.
    #[error("{url}: {source}")]
    Transport {
        /// What was called.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The node answered with an error status.
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        /// What was called.
        url: String,
        /// The status.
        status: u16,
        /// The body (an error message).
        body: String,
    },
    /// The ledger refused a transaction.
    #[error("ledger refused the transaction: {}", .0.error)]
    Refused(TxRefused),
    /// A body did not parse.
    #[error("{url}: bad response: {reason}")]
    Decode {
        /// What was called.
        url: String,
        /// Why.
        reason: String,
    },
}

impl ClientError {
    /// Whether the peer is unreachable or failing (as opposed to refusing).
    pub fn is_unavailable(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// An HTTP client that signs what it sends with a node key.
#[derive(Clone)]
pub struct Peer {
    http: reqwest::Client,
    key: SecretKey,
}

impl Peer {
    /// A client signing with `key`.
    pub fn new(key: SecretKey) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Peer { http, key }
    }

    /// The signing key.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// The underlying client, for unsigned reads.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// POSTs `body` (JSON) to `base` + `path`, signed for the node whose
    /// key is `to`; returns the response once its status is a success.
    pub async fn post(
        &self,
        to: &PublicKey,
        base: &str,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let headers = auth::sign(&self.key, to, "POST", path, &body);
        let resp = send(
            &url,
            self.http
                .post(&url)
                .headers(headers)
                .header("content-type", "application/json")
                .timeout(timeout)
                .body(body),
        )
        .await?;
        check(url, resp).await
    }

    /// GETs JSON from `base` + `path`, a read signed (empty body) for the
    /// node whose key is `to`.
    pub async fn get_signed<T: DeserializeOwned>(
        &self,
        to: &PublicKey,
        base: &str,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let headers = auth::sign(&self.key, to, "GET", path, b"");
        let request = self
            .http
            .get(&url)
            .headers(headers)
            .timeout(Duration::from_secs(10));
        let resp = send(&url, request).await?;
        json(url.clone(), check(url, resp).await?).await
    }

    /// GETs JSON from `base` + `path`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        let resp = send(&url, self.http.get(&url).timeout(Duration::from_secs(10))).await?;
        json(url.clone(), check(url, resp).await?).await
    }
}

/// Sends `request` to `url`, naming the URL when the transport fails.
async fn send(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ClientError> {
    request
        .send()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })
}

async fn check(url: String, resp: reqwest::Response) -> Result<reqwest::Response, ClientError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let body = resp.text().await.unwrap_or_default();
    if status.as_u16() == 409 {
        if let Ok(r) = serde_json::from_str::<TxRefused>(&body) {
            return Err(ClientError::Refused(r));
        }
    }
    Err(ClientError::Status {
        url,
        status: status.as_u16(),
        body,
    })
}

/// Parses a JSON response body.
pub async fn json<T: DeserializeOwned>(
    url: String,
    resp: reqwest::Response,
) -> Result<T, ClientError> {
    let bytes = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
        url,
        reason: e.to_string(),
    })
}

/// The ledger role's API.
#[derive(Clone)]
pub struct LedgerClient {
    /// Base URL of the ledger node.
    pub base: String,
    peer: Peer,
    /// The ledger node's key, asked once (`/node/info`).
    node_key: Arc<tokio::sync::OnceCell<PublicKey>>,
}

impl LedgerClient {
    /// A client of the ledger at `base`, for a node holding `key`.
    pub fn new(base: &str, key: SecretKey) -> Self {
        LedgerClient {
            base: base.trim_end_matches('/').to_string(),
            peer: Peer::new(key),
            node_key: Arc::default(),
        }
    }

    /// The ledger node's key: signed messages are addressed to it, and the
    /// ledger's calls to other roles are signed with it. Whoever runs at the
    /// configured ledger URL is trusted with the ledger anyway.
    pub async fn node_key(&self) -> Result<PublicKey, ClientError> {
        self.node_key
            .get_or_try_init(|| async {
                let info: NodeInfo = self.peer.get_json(&self.base, "/node/info").await?;
                Ok(info.key)
            })
            .await
            .copied()
    }

    /// POSTs `body` to the ledger's `path`, signed for the ledger node.
    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let to = self.node_key().await?;
        self.peer.post(&to, &self.base, path, body, timeout).await
    }

    /// Submits a signed transaction; returns once it is durable.
    pub async fn submit(&self, tx: &Transaction) -> Result<TxApplied, ClientError> {
        let body = tx.to_canonical().map_err(|e| ClientError::Decode {
            url: "transaction".into(),
            reason: e.to_string(),
        })?;
        let url = format!("{}/ledger/tx", self.base);
        let resp = self
            .post("/ledger/tx", body, Duration::from_secs(60))
            .await?;
        json(url, resp).await
    }

    /// Signs `body` with `key` at the account's next nonce and submits it.
    /// The caller serialises submissions per key (the nonce is read first).
    pub async fn submit_as(&self, key: &SecretKey, body: TxBody) -> Result<TxApplied, ClientError> {
        let mut retried = false;
        loop {
            let nonce = self.account(&key.public()).await?.nonce;
            let tx =
                Transaction::signed(key, nonce, body.clone()).map_err(|e| ClientError::Decode {
                    url: "transaction".into(),
                    reason: e.to_string(),
                })?;
            match self.submit(&tx).await {
                // Another submitter of the same key raced us: read again, once.
                Err(ClientError::Refused(r)) if r.code == "nonce" && !retried => retried = true,
                other => return other,
            }
        }
    }

    /// An account's balance, nonce and stake.
    pub async fn account(&self, key: &PublicKey) -> Result<AccountView, ClientError> {
        self.peer
            .get_json(&self.base, &format!("/ledger/account/{key}"))
            .await
    }

    /// Publishes an account's EVM address to a ledger that settles on a
    /// chain. `Ok(false)`: this ledger does not (embedded backend).
    pub async fn link(&self, link: &verinfer_ledger::evm::Link) -> Result<bool, ClientError> {
        let body = serde_json::to_vec(link).unwrap_or_default();
        match self
            .post("/ledger/evm/link", body, Duration::from_secs(10))
            .await
        {
            Ok(_) => Ok(true),
            Err(ClientError::Status { status: 404, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The reservation (escrow) of the request whose hash is `request`;
    /// `None` when there is none (never reserved, released or settled).
    pub async fn escrow(&self, request: &Hash) -> Result<Option<EscrowView>, ClientError> {
        match self
            .peer
            .get_json(&self.base, &format!("/ledger/escrow/{request}"))
            .await
        {
            Ok(e) => Ok(Some(e)),
            Err(ClientError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where the committee of the Result `result` is judged, and the
    /// verifiers registered then (none when it was never committed).
    pub async fn anchor(
        &self,
        result: &Hash,
    ) -> Result<Option<crate::wire::AnchorView>, ClientError> {
        match self
            .peer
            .get_json(&self.base, &format!("/ledger/anchor/{result}"))
            .await
        {
            Ok(a) => Ok(Some(a)),
            Err(ClientError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The optimistic answers inside their window after position `after`
    /// (from the first when none), read as this client's key: the ledger
    /// lists them to registered verifiers only.
    pub async fn provisional(
        &self,
        after: Option<u64>,
    ) -> Result<Vec<crate::wire::ProvisionalView>, ClientError> {
        let to = self.node_key().await?;
        let path = match after {
            Some(a) => format!("/ledger/provisional?after={a}"),
            None => "/ledger/provisional".to_string(),
        };
        self.peer.get_signed(&to, &self.base, &path).await
    }

    /// The registered nodes.
    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.peer.get_json(&self.base, "/ledger/nodes").await
    }

    /// Parameters, models and the log key.
    pub async fn params(&self) -> Result<ParamsView, ClientError> {
        self.peer.get_json(&self.base, "/ledger/params").await
    }

    /// Supply totals.
    pub async fn summary(&self) -> Result<SummaryView, ClientError> {
        self.peer.get_json(&self.base, "/v1/ledger/summary").await
    }

    /// The HTTP client.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl std::fmt::Debug for LedgerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerClient").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer").finish_non_exhaustive()
    }
}
