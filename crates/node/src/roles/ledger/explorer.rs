//! The explorer's JSON API, served by the ledger role (the gateway passes it
//! through at `/v1/explorer/...`): records, checkpoints, settlement and the
//! network's liveness and growth. Public: it shows leaves (commitments),
//! never the text of a request or answer.

use crate::auth::now_ms;
use crate::chronicle::Minute;
use crate::http::{blocking, HttpError};
use crate::roles::ledger::LedgerNode;
use crate::wire::{u128_string, SummaryView};
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use verinfer_ledger::tx::{Evidence, Role, TxBody};
use verinfer_types::records::{Fees, Finality, Leaf};
use verinfer_types::{Hash, PublicKey, Record};

const MAX_LIMIT: usize = 200;

/// Paging query.
#[derive(Deserialize, Debug)]
pub struct Page {
    /// Most items (default 50, at most 200).
    pub limit: Option<usize>,
    /// Items before this index (exclusive), for the next page.
    pub before: Option<u64>,
    /// Search: a receipt id or a public key.
    pub q: Option<String>,
}

impl Page {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, MAX_LIMIT)
    }
}

/// One record in the list.
#[derive(Serialize, Debug)]
pub struct RecordView {
    /// Leaf index.
    pub index: u64,
    /// Receipt id (leaf hash).
    pub id: Hash,
    /// When it was settled (Unix ms; 0 if unknown).
    pub time_ms: u64,
    /// Model id.
    pub model: Hash,
    /// Inference node.
    pub node: PublicKey,
    /// Paying account.
    pub requester: PublicKey,
    /// Fees.
    pub fees: Fees,
    /// For an optimistic answer: provisional, final or overturned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finality: Option<Finality>,
}

fn record(node: &LedgerNode, index: u64) -> Result<RecordView, HttpError> {
    let log = node.ledger.receipts();
    let leaf = Leaf::from_canonical(&log.entry(index).map_err(HttpError::internal)?)
        .map_err(HttpError::internal)?;
    let finality = match node.ledger.receipt(index).map_err(HttpError::internal)? {
        Some(r) => node.finality(&r).map_err(HttpError::internal)?,
        None => None,
    };
    Ok(RecordView {
        finality,
        index,
        id: log.leaf_hash(index).map_err(HttpError::internal)?,
        time_ms: node.chronicle.with(|t| t.time_of_leaf(index)),
        model: leaf.model,
        node: leaf.node,
        requester: leaf.requester,
        fees: leaf.fees,
    })
}

/// `GET /ledger/explorer/records?limit=&before=&q=`.
pub async fn records(
    State(node): State<Arc<LedgerNode>>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, HttpError> {
    let n = node.clone();
    blocking(move || {
        let size = n.ledger.receipts().size();
        let limit = page.limit();
        let before = page.before.unwrap_or(size).min(size);
        let indices: Vec<u64> = match page.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            None => (0..before).rev().take(limit).collect(),
            Some(q) => {
                let id: Option<Hash> = q.parse().ok();
                let by_id = id
                    .and_then(|h| n.ledger.receipt_index(&h))
                    .filter(|&i| i < before);
                match (by_id, q.parse::<PublicKey>()) {
                    (Some(i), _) => vec![i],
                    (None, Ok(key)) => n.ledger.receipts_of(&key, before, limit),
                    (None, Err(_)) if id.is_some() => Vec::new(),
                    (None, Err(_)) => {
                        return Err(HttpError::bad_request(
                            "search for a receipt id or a public key (64 hex digits)",
                        ))
                    }
                }
            }
        };
        let next = if indices.len() == limit {
            indices.last().copied().filter(|&i| i > 0)
        } else {
            None
        };
        let records = indices
            .into_iter()
            .map(|i| record(&n, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Json(
            json!({"size": size, "records": records, "next_before": next}),
        ))
    })
    .await?
}

/// `GET /ledger/explorer/checkpoints?limit=&before=`: final checkpoints,
/// latest first (`before` is a position in their history).
pub async fn checkpoints(
    State(node): State<Arc<LedgerNode>>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, HttpError> {
    let n = node.clone();
    blocking(move || {
        let h = &n.checkpoints;
        let before = page.before.unwrap_or(h.size()).min(h.size());
        let limit = page.limit();
        let mut out = Vec::new();
        for i in (0..before).rev().take(limit) {
            let e: Value = serde_json::from_slice(&h.entry(i).map_err(HttpError::internal)?)
                .map_err(HttpError::internal)?;
            let note = e["note"].as_str().unwrap_or_default();
            let parsed = verinfer_types::note::Note::parse(note).map_err(HttpError::internal)?;
            let cp =
                verinfer_log::Checkpoint::parse_text(&parsed.text).map_err(HttpError::internal)?;
            let signers: Vec<&str> = parsed.signatures.iter().map(|s| s.name.as_str()).collect();
            out.push(json!({
                "position": i,
                "size": cp.size,
                "root": cp.root,
                "time_ms": e["time_ms"],
                "note": note,
                "log": signers.first(),
                "cosigners": signers.get(1..).unwrap_or_default(),
            }));
        }
        let next = (before > limit as u64).then(|| before - limit as u64);
        Ok(Json(json!({"checkpoints": out, "next_before": next})))
    })
    .await?
}

#[derive(Serialize)]
struct FeesPaid {
    receipts: u64,
    #[serde(with = "u128_string")]
    total: u128,
    #[serde(with = "u128_string")]
    node: u128,
    #[serde(with = "u128_string")]
    verifiers: u128,
    #[serde(with = "u128_string")]
    treasury: u128,
}

/// `GET /ledger/explorer/settlement`: supply, fees paid, slashes with evidence.
pub async fn settlement(State(node): State<Arc<LedgerNode>>) -> Result<Json<Value>, HttpError> {
    let chain = match node.settler() {
        None => Value::Null,
        Some(s) => {
            let c = s.chain();
            let settled = c.checkpoint().await.ok();
            json!({
                "chain_id": c.chain_id,
                "contract": c.contract,
                "settled_size": settled.map(|x| x.0),
                "transactions": s.history().into_iter().rev().take(50).collect::<Vec<_>>(),
            })
        }
    };
    let n = node.clone();
    blocking(move || {
        let summary = n
            .ledger
            .with_state(|s| SummaryView::new(&s.summary(), s.height));
        let f = n.ledger.fee_totals();
        let mut slashes = Vec::new();
        for s in n.ledger.slashes().iter().rev() {
            let tx = n
                .ledger
                .transaction(s.wal_index)
                .map_err(HttpError::internal)?;
            let TxBody::Slash { evidence } = tx.body else {
                continue;
            };
            let (kind, result, committee) = match evidence.as_ref() {
                Evidence::Node {
                    result, committee, ..
                } => ("node", result, committee),
                Evidence::Verifier {
                    result, committee, ..
                } => ("verifier", result, committee),
            };
            slashes.push(json!({
                "height": s.height,
                "time_ms": n.chronicle.with(|t| t.time_of_slash(s.height)),
                "accused": s.accused,
                "kind": kind,
                "result": result.hash().map_err(HttpError::internal)?,
                "amount": s.amount.to_string(),
                "committee": committee.iter().map(|v| v.verifier).collect::<Vec<_>>(),
                "reasons": committee.iter().filter_map(|v| v.reason.clone()).collect::<Vec<_>>(),
                "evidence": evidence,
                "reporter": tx.signer,
            }));
        }
        Ok(Json(json!({
            "summary": summary,
            "fees_paid": FeesPaid {
                receipts: f.receipts,
                total: f.total,
                node: f.node,
                verifiers: f.verifiers,
                treasury: f.treasury,
            },
            "slashes": slashes,
            "chain": chain,
        })))
    })
    .await?
}

/// A point of a series.
#[derive(Serialize, Clone, Copy, Default)]
struct Point {
    t: u64,
    verified: u64,
    rejected: u64,
    provisional: u64,
    /// Results rejected, over all inference nodes (a call retried after a
    /// rejection is one call but may be several of these).
    node_rejections: u64,
    active_verifiers: u64,
    active_inference: u64,
}

/// Buckets `minutes` into points of `step` ms from `from` to `now`, every
/// bucket present (zero when nothing happened).
fn series(minutes: &[Minute], from: u64, now: u64, step: u64) -> Vec<Point> {
    let start = from - from % step;
    let n = ((now - start) / step + 1) as usize;
    let mut points: Vec<Point> = (0..n)
        .map(|k| Point {
            t: start + k as u64 * step,
            ..Point::default()
        })
        .collect();
    let mut sets: Vec<(BTreeSet<PublicKey>, BTreeSet<PublicKey>)> = vec![Default::default(); n];
    for m in minutes.iter().filter(|m| m.t >= start) {
        let k = ((m.t - start) / step) as usize;
        if let (Some(p), Some(s)) = (points.get_mut(k), sets.get_mut(k)) {
            p.verified += m.verified;
            p.rejected += m.rejected;
            p.provisional += m.provisional;
            p.node_rejections += m.node_rejections.values().sum::<u64>();
            s.0.extend(m.verifiers.iter().copied());
            s.1.extend(m.inference.iter().copied());
        }
    }
    for (p, s) in points.iter_mut().zip(sets) {
        p.active_verifiers = s.0.len() as u64;
        p.active_inference = s.1.len() as u64;
    }
    points
}

/// `GET /ledger/explorer/network`: liveness of each node and the growth of
/// calls, per minute over the last day and per hour over the last 30 days
/// (minutes are [`crate::chronicle::MINUTE_MS`] wide but in tests).
pub async fn network(State(node): State<Arc<LedgerNode>>) -> Json<Value> {
    let now = now_ms();
    let (minute, minutes, seen) = node.chronicle.with(|t| {
        let minute = t.minute_ms();
        let from = now.saturating_sub(30 * 24 * 60 * minute);
        (minute, t.minutes_since(from), t.last_seen().clone())
    });
    let hour = 60 * minute;
    let hour_ago = now.saturating_sub(hour);
    let mut last_hour = Minute::default();
    for m in minutes.iter().filter(|m| m.t >= hour_ago) {
        let add = |to: &mut std::collections::BTreeMap<PublicKey, u64>,
                   from: &std::collections::BTreeMap<PublicKey, u64>| {
            for (k, v) in from {
                *to.entry(*k).or_default() += v;
            }
        };
        add(&mut last_hour.verdicts, &m.verdicts);
        add(&mut last_hour.missed, &m.missed);
        add(&mut last_hour.answers, &m.answers);
        add(&mut last_hour.node_rejections, &m.node_rejections);
    }
    let nodes: Vec<Value> = node.ledger.with_state(|s| {
        s.nodes
            .iter()
            .map(|(k, n)| {
                let last = seen.get(k).copied().unwrap_or(0);
                let count = |m: &std::collections::BTreeMap<PublicKey, u64>| {
                    m.get(k).copied().unwrap_or(0)
                };
                json!({
                    "key": k,
                    "role": match n.role { Role::Inference => "inference", Role::Verifier => "verifier", Role::Gateway => "gateway" },
                    "endpoint": n.endpoint,
                    "stake": s.stake(k).to_string(),
                    "live": now.saturating_sub(last) < 10_000,
                    "last_seen_ms": last,
                    "last_heartbeat_height": n.last_heartbeat,
                    "verdicts_1h": count(&last_hour.verdicts),
                    "missed_1h": count(&last_hour.missed),
                    "answers_1h": count(&last_hour.answers),
                    "rejections_1h": count(&last_hour.node_rejections),
                })
            })
            .collect()
    });
    Json(json!({
        "now_ms": now,
        "minute_ms": minute,
        "nodes": nodes,
        "minutes": series(&minutes, now.saturating_sub(24 * hour - minute), now, minute),
        "hours": series(&minutes, now.saturating_sub(30 * 24 * hour - hour), now, hour),
    }))
}
