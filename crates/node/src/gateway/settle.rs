//! Settlement from the gateway: verified receipts are batched into `Settle`
//! transactions (one ledger write and fsync for many answers), and the
//! gateway's other transactions (slashes) go through the same signer so its
//! nonces stay in order.

use crate::client::{ClientError, LedgerClient};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};
use verinfer_ledger::tx::TxBody;
use verinfer_types::records::Receipt;
use verinfer_types::SecretKey;

/// Most receipts in one settlement.
const MAX_BATCH: usize = 256;
/// How long the first receipt of a batch waits for company.
const GATHER: Duration = Duration::from_millis(5);

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
        tokio::time::sleep(GATHER).await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        submit(&signer, batch).await;
    }
}

/// Submits a batch; a receipt the ledger refuses is answered with the reason
/// and the rest are submitted again without it.
async fn submit(signer: &Signer, mut batch: Vec<(Receipt, Reply)>) {
    while !batch.is_empty() {
        let receipts: Vec<Receipt> = batch.iter().map(|(r, _)| r.clone()).collect();
        match signer.submit(TxBody::Settle { receipts }).await {
            Ok(applied) => {
                for (i, (_, reply)) in batch.into_iter().enumerate() {
                    let _ = reply.send(Ok(applied.first_leaf + i as u64));
                }
                return;
            }
            Err(ClientError::Refused(r))
                if r.code == "receipt" && r.index.is_some_and(|i| i < batch.len()) =>
            {
                let (_, reply) = batch.remove(r.index.unwrap_or(0));
                let _ = reply.send(Err(r.error));
            }
            Err(e) => {
                let msg = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(msg.clone()));
                }
                return;
            }
        }
    }
}
