//! Settlement from the gateway: verified receipts are batched into `Settle`
//! transactions (one ledger write and fsync for many answers), and the
//! gateway's other transactions (slashes) go through the same signer so its
//! nonces stay in order. A receipt never waits for company: a batch is what
//! queued while the previous settlement was in flight, so a lone answer
//! settles at once and many settle together. A batch stays below the
//! ledger's body limit by encoded size, and a batch the ledger still finds
//! too large is halved, so a receipt too large to settle fails alone.

use crate::client::{ClientError, LedgerClient};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};
use verinfer_ledger::tx::TxBody;
use verinfer_types::records::Receipt;
use verinfer_types::{Record, SecretKey};

/// Most receipts in one settlement.
const MAX_BATCH: usize = 256;
/// Most encoded receipt bytes in one settlement: the ledger's body limit,
/// less room for the transaction around them.
const MAX_BATCH_BYTES: usize = crate::wire::MAX_TX_BYTES - (1 << 20);

type Reply = oneshot::Sender<Result<u64, String>>;

/// Submits the gateway's transactions.
#[derive(Clone)]
pub struct Settler {
    queue: mpsc::Sender<(Receipt, Reply)>,
    signer: Arc<Signer>,
}

/// The gateway's key, with its submissions serialised (one nonce sequence).
pub struct Signer {
    ledger: LedgerClient,
    key: SecretKey,
    turn: Mutex<()>,
}

impl Signer {
    /// Signs and submits `body` as the gateway.
    pub async fn submit(&self, body: TxBody) -> Result<crate::wire::TxApplied, ClientError> {
        let _turn = self.turn.lock().await;
        self.ledger.submit_as(&self.key, body).await
    }
}

impl Settler {
    /// Starts the batching task.
    pub fn start(ledger: LedgerClient, key: SecretKey) -> Self {
        let signer = Arc::new(Signer {
            ledger,
            key,
            turn: Mutex::new(()),
        });
        let (queue, rx) = mpsc::channel(4096);
        tokio::spawn(run(rx, signer.clone()));
        Settler { queue, signer }
    }

    /// Settles `receipt`; returns its log index once durable.
    pub async fn settle(&self, receipt: Receipt) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        self.queue
            .send((receipt, tx))
            .await
            .map_err(|_| "the settlement task stopped".to_string())?;
        rx.await
            .map_err(|_| "the settlement task stopped".to_string())?
    }

    /// The gateway's signer, for other transactions.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
}

async fn run(mut rx: mpsc::Receiver<(Receipt, Reply)>, signer: Arc<Signer>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Receipts sent in the same instant (a multi-choice answer) join.
        tokio::task::yield_now().await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        for part in by_size(batch, MAX_BATCH_BYTES) {
            submit(&signer, part).await;
        }
    }
}

/// Splits `batch` in order into parts of at most `limit` encoded receipt
/// bytes (a receipt larger than `limit` is a part of its own).
fn by_size<T>(batch: Vec<(Receipt, T)>, limit: usize) -> Vec<Vec<(Receipt, T)>> {
    let mut parts: Vec<Vec<(Receipt, T)>> = Vec::new();
    let mut size = 0;
    for item in batch {
        // The canonical encoding is what the transaction carries.
        let n = item.0.to_canonical().map_or(0, |b| b.len());
        match parts.last_mut() {
            Some(part) if size + n <= limit => part.push(item),
            _ => {
                parts.push(vec![item]);
                size = 0;
            }
        }
        size += n;
    }
    parts
}

/// Submits a batch; a receipt the ledger refuses is answered with the reason
/// and the rest are submitted again without it; a batch the ledger finds too
/// large (413) is submitted again in halves.
async fn submit(signer: &Signer, batch: Vec<(Receipt, Reply)>) {
    let mut todo = vec![batch];
    while let Some(mut batch) = todo.pop() {
        while !batch.is_empty() {
            let receipts: Vec<Receipt> = batch.iter().map(|(r, _)| r.clone()).collect();
            match signer.submit(TxBody::Settle { receipts }).await {
                Ok(applied) => {
                    for (i, (_, reply)) in batch.into_iter().enumerate() {
                        let _ = reply.send(Ok(applied.first_leaf + i as u64));
                    }
                    break;
                }
                Err(ClientError::Refused(r))
                    if r.code == "receipt" && r.index.is_some_and(|i| i < batch.len()) =>
                {
                    let (_, reply) = batch.remove(r.index.unwrap_or(0));
                    let _ = reply.send(Err(r.error));
                }
                Err(ClientError::Status { status: 413, .. }) if batch.len() > 1 => {
                    // In order: the second half after the first.
                    let second = batch.split_off(batch.len() / 2);
                    todo.push(second);
                    todo.push(batch);
                    break;
                }
                Err(e) => {
                    let msg = e.to_string();
                    for (_, reply) in batch {
                        let _ = reply.send(Err(msg.clone()));
                    }
                    break;
                }
            }
        }
    }
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use verinfer_ledger::testing::World;
    use verinfer_ledger::Ledger;
    use verinfer_types::records::{Input, Message};
    use verinfer_types::SignedRecord;

    /// A ledger role over `w`'s ledger holding reservations for `n`
    /// requests whose prompts are `prompt_bytes` long, and the receipts that
    /// settle them.
    async fn reserved(
        dir: &std::path::Path,
        n: usize,
        prompt_bytes: usize,
    ) -> (crate::start::Running, Vec<Receipt>, SecretKey) {
        let mut w = World::new();
        let ledger = Arc::new(
            Ledger::init(dir, &w.genesis(), "settle.test/log", &SecretKey::generate())
                .expect("ledger"),
        );
        for tx in w.setup() {
            ledger.submit(&tx).expect("setup");
        }
        let payer = w.users[0].clone();
        let requests: Vec<_> = (0..n)
            .map(|i| {
                let mut r = w.request(&payer, i as u64, 1);
                r.input = Input::Messages(vec![Message {
                    role: "user".into(),
                    content: format!("{i} {}", "x".repeat(prompt_bytes)),
                }]);
                r.sign(&payer).expect("sign");
                r
            })
            .collect();
        for r in &requests {
            let body = TxBody::Reserve {
                request: r.hash().expect("hash"),
                amount: w.max_fee(),
                ttl_secs: verinfer_ledger::testing::RESERVE_TTL_SECS,
            };
            ledger.submit(&w.tx(&payer, body)).expect("reserve");
        }
        let receipts = ledger.with_state(|s| requests.iter().map(|r| w.receipt(s, r, 1)).collect());
        let role = crate::start::ledger(
            ledger,
            dir.to_path_buf(),
            SecretKey::generate(),
            "127.0.0.1:0",
            0,
            Duration::from_secs(3600),
            Vec::new(),
            60_000,
        )
        .await
        .expect("ledger role");
        (role, receipts, w.verifiers[0].clone())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_settlement_larger_than_2_mb_settles_in_one_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (role, receipts, relayer) = reserved(dir.path(), MAX_BATCH, 12_000).await;
        let size: usize = receipts
            .iter()
            .map(|r| r.to_canonical().expect("encode").len())
            .sum();
        assert!(size > 2 << 20, "the batch is {size} bytes");
        let settler = Settler::start(LedgerClient::new(&role.url, relayer.clone()), relayer);
        let all = receipts.into_iter().map(|r| {
            let s = settler.clone();
            async move { s.settle(r).await }
        });
        let indices = futures_util::future::join_all(all).await;
        for r in &indices {
            assert!(r.is_ok(), "{r:?}");
        }
        let mut indices: Vec<u64> = indices.into_iter().flatten().collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..MAX_BATCH as u64).collect::<Vec<_>>());
        role.stop();
    }

    #[test]
    fn batches_split_by_encoded_size_in_order() {
        let w = World::new();
        let state = verinfer_ledger::state::State::genesis(&w.genesis()).expect("genesis");
        let payer = w.users[0].clone();
        let receipts: Vec<(Receipt, usize)> = (0..5)
            .map(|i| (w.receipt(&state, &w.request(&payer, i, 1), 1), i as usize))
            .collect();
        let one = receipts[0].0.to_canonical().expect("encode").len();
        let parts = by_size(receipts, 2 * one + one / 2);
        let order: Vec<Vec<usize>> = parts
            .iter()
            .map(|p| p.iter().map(|(_, i)| *i).collect())
            .collect();
        assert_eq!(order, vec![vec![0, 1], vec![2, 3], vec![4]]);
        // A receipt over the limit is a part of its own.
        assert_eq!(
            by_size(vec![(w.receipt(&state, &w.request(&payer, 9, 1), 1), 0)], 1).len(),
            1
        );
    }
}
