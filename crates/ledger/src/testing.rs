//! A small world of keys, models and signed records for tests and benches
//! (feature `testing`): a treasury, users, inference nodes and verifiers,
//! with nonces tracked so transactions apply in order.

use crate::state::State;
use crate::tx::*;
use std::collections::BTreeMap;
use verinfer_types::records::*;
use verinfer_types::testing;
use verinfer_types::{Hash, PublicKey, Record, SecretKey, SignedRecord};

/// One token in base units.
pub const TOKEN: u128 = 1_000_000_000_000_000_000;

/// How long test reservations last.
pub const RESERVE_TTL_SECS: u64 = 600;

/// Keys and nonces of the test world.
pub struct World {
    /// Treasury key.
    pub treasury: SecretKey,
    /// Plain users, who pay for requests.
    pub users: Vec<SecretKey>,
    /// Inference nodes.
    pub nodes: Vec<SecretKey>,
    /// Verifiers.
    pub verifiers: Vec<SecretKey>,
    /// A gateway, which commits to Results before their verifiers are drawn.
    pub gateway: SecretKey,
    /// The admitted model.
    pub model: ModelEntry,
    nonces: BTreeMap<PublicKey, u64>,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// Three users, two nodes, four verifiers, a gateway.
    pub fn new() -> World {
        World {
            treasury: testing::key(100),
            users: (0..3).map(|i| testing::key(110 + i)).collect(),
            nodes: (0..2).map(|i| testing::key(120 + i)).collect(),
            verifiers: (0..4).map(|i| testing::key(130 + i)).collect(),
            gateway: testing::key(140),
            model: ModelEntry {
                id: Hash::of(b"test model"),
                name: "test-model".into(),
                price_in: Amount(1_000_000_000_000),
                price_out: Amount(2_000_000_000_000),
                per_tokens: 1,
                publisher: None,
            },
            nonces: BTreeMap::new(),
        }
    }

    /// Genesis with a million tokens and the model admitted.
    pub fn genesis(&self) -> Genesis {
        Genesis {
            tag: GenesisTag,
            treasury: self.treasury.public(),
            supply: Amount(1_000_000 * TOKEN),
            params: Params {
                dispute_quorum: 2,
                unbonding_delay_secs: 86_400,
                voting_period_secs: 3_600,
                ..Params::default()
            },
            models: vec![self.model.clone()],
        }
    }

    /// A transaction by `key` with its next nonce (advancing it).
    pub fn tx(&mut self, key: &SecretKey, body: TxBody) -> Transaction {
        let n = self.nonces.entry(key.public()).or_insert(0);
        let tx = Transaction::signed(key, *n, body).expect("test key signs");
        *n += 1;
        tx
    }

    /// Forgets a nonce advance (after a transaction was refused).
    pub fn unuse_nonce(&mut self, key: &PublicKey) {
        if let Some(n) = self.nonces.get_mut(key) {
            *n -= 1;
        }
    }

    /// Transactions that fund users, stake and register every node,
    /// verifier and the gateway: the usual starting point.
    pub fn setup(&mut self) -> Vec<Transaction> {
        let mut txs = Vec::new();
        let treasury = self.treasury.clone();
        let stakers: Vec<SecretKey> = self
            .nodes
            .iter()
            .chain(&self.verifiers)
            .chain([&self.gateway])
            .cloned()
            .collect();
        for k in self.users.clone().iter().chain(&stakers) {
            txs.push(self.tx(
                &treasury,
                TxBody::Transfer {
                    to: k.public(),
                    amount: Amount(10_000 * TOKEN),
                },
            ));
        }
        for (i, k) in stakers.iter().enumerate() {
            let role = if i < self.nodes.len() {
                Role::Inference
            } else if i < self.nodes.len() + self.verifiers.len() {
                Role::Verifier
            } else {
                Role::Gateway
            };
            txs.push(self.tx(
                k,
                TxBody::Stake {
                    amount: Amount(1_500 * TOKEN),
                },
            ));
            txs.push(self.tx(
                k,
                TxBody::Register {
                    role,
                    endpoint: format!("http://127.0.0.1:{}", 9000 + i),
                },
            ));
        }
        txs
    }

    /// The gateway's commitment to `result` (nonce 0: commits have none),
    /// which anchors its committee at the registry of that moment.
    pub fn commit(&self, result: &InferenceResult) -> Transaction {
        let result = result.hash().expect("hash");
        Transaction::signed(&self.gateway, 0, TxBody::Commit { result }).expect("test key signs")
    }

    /// A signed request by `user` with a fresh nonce from `seed`.
    pub fn request(&self, user: &SecretKey, seed: u64, k: u32) -> Request {
        let mut r = testing::request(self.model.id);
        r.requester = user.public();
        r.signer = user.public();
        r.nonce = Nonce(
            Hash::of(&seed.to_le_bytes()).0[..16]
                .try_into()
                .expect("16 bytes"),
        );
        r.policy.verification = VerificationMode::Quorum { k };
        r.sign(user).expect("user signs");
        r
    }

    /// A signed `optimistic(window_secs)` request by `user` with a fresh
    /// nonce from `seed`.
    pub fn optimistic_request(&self, user: &SecretKey, seed: u64, window_secs: u64) -> Request {
        let mut r = self.request(user, seed, 1);
        r.policy.verification = VerificationMode::Optimistic { window_secs };
        r.sign(user).expect("user signs");
        r
    }

    /// A result for `req` by node `node`.
    pub fn result(&self, req: &Request, node: usize) -> InferenceResult {
        let mut r = testing::result(req);
        r.node = self.nodes[node].public();
        r.sign(&self.nodes[node]).expect("node signs");
        r
    }

    /// A verdict on `res` (checked against the request it answers) by
    /// verifier `v`; a rejection names a node fault.
    pub fn verdict(&self, res: &InferenceResult, v: usize, decision: Decision) -> Verdict {
        let mut verdict = testing::verdict(res, 0);
        verdict.verifier = self.verifiers[v].public();
        verdict.decision = decision;
        if decision == Decision::Reject {
            verdict.reason = Some("token_mismatch: position 0".into());
            verdict.failed_position = Some(0);
        }
        verdict.sign(&self.verifiers[v]).expect("verifier signs");
        verdict
    }

    /// A rejecting verdict on `res` by verifier `v`, for `reason` (a
    /// reason code and detail, as verifiers write it).
    pub fn rejection(&self, res: &InferenceResult, v: usize, reason: &str) -> Verdict {
        let mut verdict = testing::verdict(res, 0);
        verdict.verifier = self.verifiers[v].public();
        verdict.decision = Decision::Reject;
        verdict.reason = Some(reason.into());
        verdict.sign(&self.verifiers[v]).expect("verifier signs");
        verdict
    }

    /// A receipt for `req` answered by node 0 and certified by the first `k`
    /// verifiers, with the fees `state` computes.
    pub fn receipt(&self, state: &State, req: &Request, k: usize) -> Receipt {
        let result = self.result(req, 0);
        let verdicts: Vec<Verdict> = (0..k)
            .map(|v| self.verdict(&result, v, Decision::Accept))
            .collect();
        let fees = state.fees_for(&result, k).expect("fees");
        Receipt {
            tag: ReceiptTag,
            certificate: Certificate {
                tag: CertificateTag,
                result: result.hash().expect("hash"),
                verdicts,
            },
            request: req.clone(),
            result,
            fees,
            salt: Salt([7; 32]),
        }
    }

    /// A listing of the model named `name` (its id the hash of the name),
    /// 2 tokens per 1k prompt tokens and 5 per 1k output tokens, the
    /// publisher taking `share_bps`.
    pub fn listing(name: &str, share_bps: u32) -> ModelListing {
        ModelListing {
            tag: ModelTag,
            id: Hash::of(name.as_bytes()),
            name: name.into(),
            architecture: "llama".into(),
            context: 2048,
            licence: "Apache-2.0".into(),
            price_in_per_1k: Amount(2 * TOKEN),
            price_out_per_1k: Amount(5 * TOKEN),
            share_bps,
        }
    }

    /// Funds `publisher` from the treasury and publishes `listing` under its
    /// key; afterwards requests from [`World::request`] are for that model.
    pub fn publish(&mut self, publisher: &SecretKey, listing: ModelListing) -> Vec<Transaction> {
        let treasury = self.treasury.clone();
        let fund = self.tx(
            &treasury,
            TxBody::Transfer {
                to: publisher.public(),
                amount: Amount(100 * TOKEN),
            },
        );
        if let Ok(entry) = listing.entry(publisher.public()) {
            self.model = entry;
        }
        let publish = self.tx(publisher, TxBody::Publish { model: listing });
        vec![fund, publish]
    }

    /// Maximum fee to reserve for a request of the fixture's size.
    pub fn max_fee(&self) -> Amount {
        Amount(self.model.cost(1_000, 1_000).unwrap_or(u128::MAX))
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World").finish_non_exhaustive()
    }
}
