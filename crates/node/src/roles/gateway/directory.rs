//! The gateway's view of the network: registered nodes (from the ledger),
//! what each serves (asked once per endpoint), who is live, who failed
//! recently, and how busy each inference node is.

use crate::auth::now_ms;
use crate::client::{ClientError, LedgerClient, Peer};
use crate::wire::{NodeInfo, NodeView, ParamsView};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use verinfer_ledger::tx::Role;
use verinfer_types::sync::lock;
use verinfer_types::{Hash, PublicKey};

/// Longest wait for a node's description.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A registered node and what it serves.
#[derive(Clone, Debug)]
pub struct Member {
    /// The ledger's record.
    pub view: NodeView,
    /// Its own description (None while it could not be asked).
    pub info: Option<NodeInfo>,
}

impl Member {
    /// Whether it serves (or checks) `model`: what it says it runs, and for
    /// an inference node, what it declared in the ledger.
    pub fn serves(&self, model: &Hash) -> bool {
        self.info.as_ref().is_some_and(|i| i.models.contains(model))
            && (self.view.role != Role::Inference || self.view.models.contains(model))
    }
}

/// The directory.
pub struct Directory {
    ledger: LedgerClient,
    members: RwLock<Vec<Member>>,
    params: RwLock<Option<ParamsView>>,
    infos: Mutex<HashMap<(PublicKey, String), NodeInfo>>,
    down: Mutex<HashMap<PublicKey, Instant>>,
    busy: Mutex<HashMap<PublicKey, usize>>,
    turn: std::sync::atomic::AtomicUsize,
    liveness: Duration,
}

/// Marks an inference node busy while alive.
pub struct Busy<'a> {
    dir: &'a Directory,
    key: PublicKey,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.dir.busy).get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Directory {
    /// A directory fed by `ledger`; a node is live while its last heartbeat
    /// is younger than `liveness`.
    pub fn new(ledger: LedgerClient, liveness: Duration) -> Self {
        Directory {
            ledger,
            members: RwLock::new(Vec::new()),
            params: RwLock::new(None),
            infos: Mutex::new(HashMap::new()),
            down: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashMap::new()),
            turn: std::sync::atomic::AtomicUsize::new(0),
            liveness,
        }
    }

    /// Reads the registry and parameters again, asking new endpoints what
    /// they serve. The registry is published before the endpoints are
    /// asked, and they are asked all at once, each for at most
    /// [`PROBE_TIMEOUT`]: an endpoint that never answers delays neither the
    /// others nor the heartbeats the liveness of everyone is judged on.
    pub async fn refresh(&self, peer: &Peer) -> anyhow::Result<()> {
        let views = self.ledger.nodes().await?;
        let params = self.ledger.params().await?;
        *self.params.write().unwrap_or_else(|e| e.into_inner()) = Some(params);
        self.publish(&views);
        let unknown: Vec<&NodeView> = {
            let infos = lock(&self.infos);
            views
                .iter()
                .filter(|v| !infos.contains_key(&(v.key, v.endpoint.clone())))
                .collect()
        };
        if unknown.is_empty() {
            return Ok(());
        }
        let probes = unknown.into_iter().map(|view| async move {
            let info = tokio::time::timeout(
                PROBE_TIMEOUT,
                peer.get_json::<NodeInfo>(&view.endpoint, "/node/info"),
            )
            .await;
            match info {
                Ok(Ok(i)) if i.key == view.key => {
                    lock(&self.infos).insert((view.key, view.endpoint.clone()), i);
                }
                Ok(Ok(_)) => {
                    tracing::warn!(node = %view.key, endpoint = view.endpoint, "endpoint answers with another key");
                }
                Ok(Err(e)) => tracing::debug!(node = %view.key, error = %e, "node info unavailable"),
                Err(_) => tracing::debug!(node = %view.key, "node info timed out"),
            }
        });
        futures_util::future::join_all(probes).await;
        self.publish(&views);
        Ok(())
    }

    /// Publishes `views` with what each endpoint said it serves.
    fn publish(&self, views: &[NodeView]) {
        let infos = lock(&self.infos);
        let members = views
            .iter()
            .map(|view| Member {
                info: infos.get(&(view.key, view.endpoint.clone())).cloned(),
                view: view.clone(),
            })
            .collect();
        *self.members.write().unwrap_or_else(|e| e.into_inner()) = members;
    }

    /// Refreshes every `every`; runs until the task is dropped.
    pub async fn refresh_loop(&self, peer: Peer, every: Duration) {
        loop {
            if let Err(e) = self.refresh(&peer).await {
                tracing::warn!(error = %e, "cannot read the registry");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Parameters, models and the log key (None before the first refresh).
    pub fn params(&self) -> Option<ParamsView> {
        self.params
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// All registered nodes.
    pub fn members(&self) -> Vec<Member> {
        self.members
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether `m` sent a heartbeat recently and has not failed us lately.
    pub fn is_live(&self, m: &Member) -> bool {
        let fresh = now_ms().saturating_sub(m.view.last_seen_ms) < self.liveness.as_millis() as u64;
        let down = lock(&self.down)
            .get(&m.view.key)
            .is_some_and(|until| *until > Instant::now());
        fresh && !down && m.info.is_some()
    }

    /// Live nodes of `role` serving `model`.
    pub fn live(&self, role: Role, model: &Hash) -> Vec<Member> {
        self.members()
            .into_iter()
            .filter(|m| m.view.role == role && m.serves(model) && self.is_live(m))
            .collect()
    }

    /// The least busy live inference node serving `model` that is not in
    /// `exclude`, marked busy until the guard drops. Ties go round the
    /// candidates in turn, so idle nodes share sequential traffic.
    pub fn pick_inference(
        &self,
        model: &Hash,
        exclude: &[PublicKey],
    ) -> Option<(Member, Busy<'_>)> {
        let mut candidates: Vec<Member> = self
            .live(Role::Inference, model)
            .into_iter()
            .filter(|m| !exclude.contains(&m.view.key))
            .collect();
        candidates.sort_by_key(|m| m.view.key);
        let mut busy = lock(&self.busy);
        let load = |m: &Member| busy.get(&m.view.key).copied().unwrap_or(0);
        let least = candidates.iter().map(load).min()?;
        let idle: Vec<Member> = candidates
            .into_iter()
            .filter(|m| load(m) == least)
            .collect();
        let turn = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let m = idle.get(turn % idle.len())?.clone();
        *busy.entry(m.view.key).or_default() += 1;
        let key = m.view.key;
        Some((m, Busy { dir: self, key }))
    }

    /// Stops routing to `key` for `period` (it failed a call).
    pub fn mark_down(&self, key: PublicKey, period: Duration) {
        lock(&self.down).insert(key, Instant::now() + period);
    }

    /// `key`'s call ended in `error`: a failure marks it down for `period`
    /// (returns true), but a 404 is none: the node does not serve the
    /// model asked (what it said it serves changed since it was asked),
    /// and it stays live for the models it does serve.
    pub fn call_failed(&self, key: PublicKey, error: &ClientError, period: Duration) -> bool {
        if matches!(error, ClientError::Status { status: 404, .. }) {
            return false;
        }
        self.mark_down(key, period);
        true
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for Busy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Busy").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verinfer_types::SecretKey;

    fn verifier(key: PublicKey) -> Member {
        Member {
            view: NodeView {
                key,
                role: Role::Verifier,
                endpoint: "http://127.0.0.1:1".into(),
                stake: 1,
                registered: 1,
                last_heartbeat: 1,
                last_seen_ms: now_ms(),
                models: Vec::new(),
            },
            info: Some(NodeInfo::serving(key, "verifier", Vec::new())),
        }
    }

    fn status(status: u16) -> ClientError {
        ClientError::Status {
            url: "http://127.0.0.1:1/verifier/check".into(),
            status,
            body: "model: this node does not serve model 00".into(),
        }
    }

    /// A node that refuses a model it does not serve (404 naming `model`)
    /// is not marked down: it still serves its other models. A server
    /// error is a failure.
    #[test]
    fn a_node_refusing_a_model_it_does_not_serve_is_not_marked_down() {
        let key = SecretKey::generate();
        let dir = Directory::new(
            LedgerClient::new("http://127.0.0.1:1", key.clone()),
            Duration::from_secs(10),
        );
        let m = verifier(key.public());
        assert!(dir.is_live(&m));
        assert!(!dir.call_failed(m.view.key, &status(404), Duration::from_secs(15)));
        assert!(dir.is_live(&m), "a 404 is no failure");
        assert!(dir.call_failed(m.view.key, &status(500), Duration::from_secs(15)));
        assert!(!dir.is_live(&m), "a server error is one");
    }
}
