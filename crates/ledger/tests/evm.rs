//! The EVM backend against a real chain (anvil from contracts/node_modules):
//! checkpoints settle with the netted fees, retries never pay twice, a chain
//! that lost blocks is settled again, slashes are repeated on chain, and the
//! token total is conserved throughout.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;

use alloy::primitives::{Address, B256, U256};
use alloy::providers::{Provider, ProviderBuilder};
use verinfer_ledger::evm::anvil::{dev_signer, Anvil};
use verinfer_ledger::evm::chain::{
    contract_params, deploy, fund_gas, initial_models, Chain, FeePolicy, Rpc,
};
use verinfer_ledger::evm::netting::{
    check_claim, check_settlement, check_slash, claim_digest, domain, vault, ClaimRequest,
    EvmSignature, SettlementRequest, SlashRequest,
};
use verinfer_ledger::evm::settler::{
    sign_digest, BoxFuture, BridgeConfig, Cosigners, FinalCheckpoint, Settler,
};
use verinfer_ledger::evm::{evm_signer, Link};
use verinfer_ledger::testing::{World, TOKEN};
use verinfer_ledger::tx::{Evidence, TxBody};
use verinfer_ledger::Ledger;
use verinfer_log::SignedCheckpoint;
use verinfer_types::records::Decision;
use verinfer_types::{Record, SecretKey};

/// Verifiers in this process: each runs the same checks a verifier role runs
/// before it signs.
struct LocalVerifiers {
    keys: Vec<SecretKey>,
    log_key: verinfer_types::note::VerifierKey,
    /// The registry a slash is judged against is the ledger's, read here.
    ledger: Arc<Ledger>,
}

impl Cosigners for LocalVerifiers {
    fn settlement<'a>(&'a self, req: &'a SettlementRequest) -> BoxFuture<'a, Vec<EvmSignature>> {
        Box::pin(async move {
            let cp = SignedCheckpoint::open(&req.checkpoint, &self.log_key)
                .unwrap()
                .checkpoint;
            let batch = check_settlement(req, cp.size, &cp.root).unwrap();
            let digest = batch.digest(&domain(req.chain_id, req.contract));
            self.keys
                .iter()
                .map(|k| sign_digest(&evm_signer(k).unwrap(), &digest).unwrap())
                .collect()
        })
    }
    fn slash<'a>(&'a self, req: &'a SlashRequest) -> BoxFuture<'a, Vec<EvmSignature>> {
        Box::pin(async move {
            let result = req.evidence.parts().0.hash().unwrap();
            let (anchor, eligible) = self
                .ledger
                .with_state(|s| verinfer_ledger::slashing::eligible_verifiers(s, &result))
                .unwrap();
            let s = check_slash(req, &eligible, anchor.time_ms, 2).unwrap();
            let digest = alloy::sol_types::SolStruct::eip712_signing_hash(
                &s,
                &domain(req.chain_id, req.contract),
            );
            self.keys
                .iter()
                .filter(|k| k.public() != req.accused.account)
                .map(|k| sign_digest(&evm_signer(k).unwrap(), &digest).unwrap())
                .collect()
        })
    }
    fn claim<'a>(&'a self, req: &'a ClaimRequest) -> BoxFuture<'a, Vec<EvmSignature>> {
        Box::pin(async move {
            let digest = claim_digest(
                &check_claim(req).unwrap(),
                &domain(req.chain_id, req.contract),
            );
            self.keys
                .iter()
                .map(|k| sign_digest(&evm_signer(k).unwrap(), &digest).unwrap())
                .collect()
        })
    }
}

fn addr(k: &SecretKey) -> Address {
    evm_signer(k).unwrap().address()
}

/// Reserves and settles `n` receipts of `w`'s users, certified by 2 verifiers.
fn settle_receipts(l: &Ledger, w: &mut World, first_seed: u64, n: u64) {
    let mut receipts = Vec::new();
    for s in first_seed..first_seed + n {
        let user = w.users[(s % 3) as usize].clone();
        let req = w.request(&user, s, 2);
        l.submit(&w.tx(
            &user,
            TxBody::Reserve {
                request: req.hash().unwrap(),
                amount: w.max_fee(),
                ttl_secs: verinfer_ledger::testing::RESERVE_TTL_SECS,
            },
        ))
        .unwrap();
        receipts.push(l.with_state(|st| w.receipt(st, &req, 2)));
    }
    let relayer = w.users[0].clone();
    l.submit(&w.tx(&relayer, TxBody::Settle { receipts }))
        .unwrap();
}

fn final_checkpoint(l: &Ledger) -> FinalCheckpoint {
    let c = l.receipts().checkpoint().unwrap();
    FinalCheckpoint {
        note: c.note.to_string(),
        size: c.checkpoint.size,
    }
}

async fn conserved(chain: &Chain, holders: &[Address]) {
    let (escrow, staked, unbonding) = chain.totals().await.unwrap();
    assert_eq!(
        chain.token_balance(chain.contract).await.unwrap(),
        escrow + staked + unbonding
    );
    let mut sum = chain.token_balance(chain.contract).await.unwrap();
    for h in holders {
        sum += chain.token_balance(*h).await.unwrap();
    }
    assert_eq!(
        sum,
        chain.token_supply().await.unwrap(),
        "every token is accounted for"
    );
}

/// A ledger with staked nodes and verifiers, the contracts deployed on a
/// fresh anvil with the same nodes registered and the users' deposits, and
/// a settler sending as the treasury under `policy`.
struct Fixture {
    dir: tempfile::TempDir,
    anvil: Anvil,
    rpc: String,
    w: World,
    ledger: Arc<Ledger>,
    holders: Vec<Address>,
    treasury: Chain,
    settler: Arc<Settler>,
    deposit: u128,
    /// Added to the ledger's clock (ms), to pass windows without waiting.
    skew: Arc<std::sync::atomic::AtomicU64>,
}

async fn fixture(policy: FeePolicy) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let anvil = Anvil::start(&dir.path().join("anvil-state.json"), 0).unwrap();
    let rpc = anvil.url();

    let mut w = World::new();
    let skew = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clock = {
        let skew = skew.clone();
        let system = verinfer_ledger::service::system_clock();
        Arc::new(move || system() + skew.load(std::sync::atomic::Ordering::SeqCst))
    };
    let ledger = Arc::new(
        Ledger::init(
            &dir.path().join("ledger"),
            &w.genesis(),
            "example.org/receipts",
            &SecretKey::from_seed(&[9; 32]),
        )
        .unwrap()
        .with_clock(clock),
    );
    for tx in w.setup() {
        ledger.submit(&tx).unwrap();
    }

    // Deploy; the treasury's EVM key holds the supply and is the treasury.
    let everyone: Vec<SecretKey> = [w.treasury.clone()]
        .into_iter()
        .chain(w.users.clone())
        .chain(w.nodes.clone())
        .chain(w.verifiers.clone())
        .collect();
    let holders: Vec<Address> = everyone.iter().map(addr).collect();
    fund_gas(&rpc, dev_signer(), &holders, U256::from(10u128 * TOKEN))
        .await
        .unwrap();
    let genesis = w.genesis();
    let params = contract_params(&genesis.params, 2, addr(&w.treasury)).unwrap();
    let d = deploy(
        &rpc,
        evm_signer(&w.treasury).unwrap(),
        U256::from(1_000_000 * TOKEN),
        params,
        initial_models(&genesis.models),
    )
    .await
    .unwrap();
    let treasury = Chain::open(
        &rpc,
        Some(evm_signer(&w.treasury).unwrap()),
        policy,
        d.contract,
    )
    .await
    .unwrap();
    let stake = U256::from(1_500 * TOKEN);
    for (role, keys) in [(1u8, w.nodes.clone()), (2u8, w.verifiers.clone())] {
        for k in keys {
            treasury.send_tokens(addr(&k), stake).await.unwrap();
            let c = Chain::at(&rpc, evm_signer(&k).unwrap(), d.contract)
                .await
                .unwrap();
            c.register(role, B256::from(k.public().to_bytes()), "http://x", stake)
                .await
                .unwrap();
        }
    }
    let deposit = 10_000 * TOKEN;
    for u in &w.users {
        treasury
            .deposit(addr(u), U256::from(deposit))
            .await
            .unwrap();
    }
    conserved(&treasury, &holders).await;

    let cosigners = Arc::new(LocalVerifiers {
        keys: w.verifiers.clone(),
        log_key: ledger.receipts().verifier_key().clone(),
        ledger: ledger.clone(),
    });
    let settler = Settler::new(
        treasury.clone(),
        ledger.clone(),
        cosigners,
        dir.path().to_path_buf(),
    )
    .unwrap();
    for k in &everyone {
        settler.add_link(Link::new(k).unwrap()).unwrap();
    }
    Fixture {
        dir,
        anvil,
        rpc,
        w,
        ledger,
        holders,
        treasury,
        settler: Arc::new(settler),
        deposit,
        skew,
    }
}

/// The users' escrow on chain is their deposits less every fee the embedded
/// ledger charged: nothing paid twice, nothing lost.
async fn users_paid_once(f: &Fixture) {
    let mut users = 0u128;
    for u in &f.w.users {
        users += f.treasury.balance(addr(u)).await.unwrap();
    }
    assert_eq!(users, 3 * f.deposit - f.ledger.fee_totals().total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_and_slashes_settle_on_anvil() {
    let Fixture {
        dir: _dir,
        mut anvil,
        rpc,
        mut w,
        ledger,
        holders,
        treasury,
        settler,
        deposit,
        ..
    } = fixture(FeePolicy::default()).await;
    let genesis = w.genesis();
    // First checkpoint: from the empty tree.
    settle_receipts(&ledger, &mut w, 0, 10);
    let fin = final_checkpoint(&ledger);
    assert!(settler.settle_once(&fin).await.unwrap().is_some());
    assert!(
        settler.settle_once(&fin).await.unwrap().is_none(),
        "nothing is settled twice"
    );
    let (size, root) = treasury.checkpoint().await.unwrap();
    assert_eq!(size, 10);
    assert_eq!(root.0, ledger.receipts().root(10).unwrap().0);

    // Second, with a consistency proof; then the chain loses it (reverted to
    // a snapshot, as a chain restarted from older state) and it is settled
    // again, once.
    settle_receipts(&ledger, &mut w, 10, 25);
    let fin = final_checkpoint(&ledger);
    let raw = ProviderBuilder::new().connect_http(rpc.parse().unwrap());
    let snap: U256 = raw.raw_request("evm_snapshot".into(), ()).await.unwrap();
    assert!(settler.settle_once(&fin).await.unwrap().is_some());
    let reverted: bool = raw.raw_request("evm_revert".into(), (snap,)).await.unwrap();
    assert!(reverted);
    assert_eq!(
        treasury.checkpoint().await.unwrap().0,
        10,
        "the chain lost the second batch"
    );
    assert!(
        settler.settle_once(&fin).await.unwrap().is_some(),
        "settled again"
    );
    assert!(settler.settle_once(&fin).await.unwrap().is_none());
    assert_eq!(treasury.checkpoint().await.unwrap().0, 35);

    // Anvil stopped and restarted on its state file: nothing is lost.
    anvil.stop();
    anvil.restart().unwrap();
    assert_eq!(treasury.checkpoint().await.unwrap().0, 35);

    // The chain paid what the embedded ledger paid.
    let f = ledger.fee_totals();
    assert_eq!(f.receipts, 35);
    let mut users = 0u128;
    for u in &w.users {
        users += treasury.balance(addr(u)).await.unwrap();
    }
    assert_eq!(users, 3 * deposit - f.total);
    let mut nodes = 0u128;
    for k in &w.nodes {
        nodes += treasury.balance(addr(k)).await.unwrap();
    }
    assert_eq!(nodes, f.node);
    let mut verifiers = 0u128;
    for k in &w.verifiers {
        verifiers += treasury.balance(addr(k)).await.unwrap();
    }
    assert_eq!(verifiers, f.verifiers);
    assert_eq!(
        treasury.balance(addr(&w.treasury)).await.unwrap(),
        f.treasury
    );
    conserved(&treasury, &holders).await;

    // A slash in the ledger is repeated on chain, once.
    let user = w.users[0].clone();
    let req = w.request(&user, 99, 2);
    let result = w.result(&req, 1);
    ledger.submit(&w.commit(&result)).unwrap();
    let committee = (0..3)
        .map(|v| w.verdict(&result, v, Decision::Reject))
        .collect();
    let slasher = w.verifiers[0].clone();
    ledger
        .submit(&w.tx(
            &slasher,
            TxBody::Slash {
                evidence: Box::new(Evidence::Node {
                    request: req,
                    result,
                    committee,
                }),
            },
        ))
        .unwrap();
    let accused = addr(&w.nodes[1]);
    let before = treasury.stake(accused).await.unwrap();
    assert_eq!(settler.slash_pending().await.unwrap(), 1);
    assert_eq!(settler.slash_pending().await.unwrap(), 0);
    let after = treasury.stake(accused).await.unwrap();
    assert_eq!(
        after,
        before - before * u128::from(genesis.params.slash_bps) / 10_000
    );
    conserved(&treasury, &holders).await;

    let kinds: Vec<String> = settler.history().into_iter().map(|s| s.kind).collect();
    assert_eq!(kinds, ["checkpoint", "checkpoint", "checkpoint", "slash"]);
}

/// The transaction `from` has waiting in anvil's pool: (hash, max fee).
async fn pooled(raw: &impl Provider, from: Address) -> Option<(B256, u128)> {
    let pool: serde_json::Value = raw.raw_request("txpool_content".into(), ()).await.unwrap();
    let by_nonce = pool["pending"]
        .as_object()?
        .iter()
        .find(|(a, _)| a.parse::<Address>().ok() == Some(from))?
        .1
        .as_object()?;
    let tx = by_nonce.values().next()?;
    let hash = tx["hash"].as_str()?.parse().ok()?;
    let fee =
        u128::from_str_radix(tx["maxFeePerGas"].as_str()?.trim_start_matches("0x"), 16).ok()?;
    Some((hash, fee))
}

/// Polls `pooled` until `want` holds of what it finds.
async fn pooled_until(
    raw: &impl Provider,
    from: Address,
    want: impl Fn(B256, u128) -> bool,
) -> (B256, u128) {
    for _ in 0..500 {
        if let Some((h, fee)) = pooled(raw, from).await {
            if want(h, fee) {
                return (h, fee);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the settler's transaction never showed up in the pool as expected");
}

/// Regression: a settlement stuck in the pool (nothing mined it) and then
/// dropped as underpriced (the base fee rose past it) must be replaced at
/// the same nonce with higher fees, not queued behind it, and be paid once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_then_dropped_settlement_is_replaced_with_higher_fees_and_paid_once() {
    let mut f = fixture(FeePolicy {
        stuck_after: std::time::Duration::from_millis(300),
        max_raises: 100,
        max_fee_per_gas: None,
    })
    .await;
    let raw = ProviderBuilder::new().connect_http(f.rpc.parse().unwrap());
    let from = addr(&f.w.treasury);
    let nonce = raw.get_transaction_count(from).await.unwrap();
    let () = raw
        .raw_request("evm_setAutomine".into(), (false,))
        .await
        .unwrap();

    settle_receipts(&f.ledger, &mut f.w, 0, 10);
    let fin = final_checkpoint(&f.ledger);
    let settler = f.settler.clone();
    let settling = tokio::spawn(async move { settler.settle_once(&fin).await });

    // Stuck: nothing is mined, so it is replaced with fees up by at least 1/8.
    let (first, first_fee) = pooled_until(&raw, from, |_, _| true).await;
    let (second, second_fee) = pooled_until(&raw, from, |h, _| h != first).await;
    assert!(
        second_fee >= first_fee + first_fee / 8,
        "{second_fee} after {first_fee}"
    );

    // Dropped: the base fee jumps past the pooled transaction, so the next
    // block leaves it out and anvil drops it; the settler must price the
    // next one over the new base fee.
    let base = 20 * second_fee;
    let () = raw
        .raw_request(
            "anvil_setNextBlockBaseFeePerGas".into(),
            (U256::from(base),),
        )
        .await
        .unwrap();
    let _: String = raw.raw_request("evm_mine".into(), ()).await.unwrap();
    let (last, _) = pooled_until(&raw, from, |_, fee| fee >= base).await;
    let _: String = raw.raw_request("evm_mine".into(), ()).await.unwrap();

    let mined = settling.await.unwrap().unwrap().expect("settled");
    assert_eq!(mined.tx, last);
    for h in [first, second] {
        assert!(
            raw.get_transaction_receipt(h).await.unwrap().is_none(),
            "a replaced transaction was mined"
        );
    }
    assert_eq!(raw.get_transaction_count(from).await.unwrap(), nonce + 1);
    assert_eq!(f.treasury.checkpoint().await.unwrap().0, 10);
    users_paid_once(&f).await;
    conserved(&f.treasury, &f.holders).await;

    // The next round has nothing to do, and sending works again once blocks
    // are mined on demand.
    let () = raw
        .raw_request("evm_setAutomine".into(), (true,))
        .await
        .unwrap();
    assert!(f
        .settler
        .settle_once(&final_checkpoint(&f.ledger))
        .await
        .unwrap()
        .is_none());
    settle_receipts(&f.ledger, &mut f.w, 10, 5);
    assert!(f
        .settler
        .settle_once(&final_checkpoint(&f.ledger))
        .await
        .unwrap()
        .is_some());
    users_paid_once(&f).await;
    f.anvil.stop();
}

/// Per user: escrow on chain less (balance + held) in the ledger. Once
/// every receipt is settled on chain, mirroring keeps it constant.
async fn mirror_gaps(f: &Fixture) -> Vec<i128> {
    let mut gaps = Vec::new();
    for u in &f.w.users {
        let chain = f.treasury.balance(addr(u)).await.unwrap() as i128;
        let here = f.ledger.with_state(|s| {
            s.balance(&u.public()) + s.withdrawing.get(&u.public()).map_or(0, |w| w.held)
        }) as i128;
        gaps.push(chain - here);
    }
    gaps
}

/// Deposits, withdrawal requests, cancellations and withdrawals made on
/// chain are mirrored in the ledger exactly once, across a restart that lost
/// the bridge's cursor; a movement for an address not linked yet waits for
/// its link; settlement goes on, and the chain and the ledger keep agreeing
/// on every user's escrow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escrow_movements_on_chain_are_mirrored_once_in_the_ledger() {
    let mut f = fixture(FeePolicy::default()).await;
    let raw = ProviderBuilder::new().connect_http(f.rpc.parse().unwrap());
    let from_block = f.treasury.head().await.unwrap() + 1;
    let bridge = || {
        let cosigners = Arc::new(LocalVerifiers {
            keys: f.w.verifiers.clone(),
            log_key: f.ledger.receipts().verifier_key().clone(),
            ledger: f.ledger.clone(),
        });
        Settler::new(
            f.treasury.clone(),
            f.ledger.clone(),
            cosigners,
            f.dir.path().to_path_buf(),
        )
        .unwrap()
        .with_bridge(BridgeConfig {
            treasury: f.w.treasury.clone(),
            from_block,
            confirmations: 0,
        })
        .unwrap()
    };
    let settler = bridge();
    let gaps = mirror_gaps(&f).await;
    let user = f.w.users[0].clone();
    let balance = |f: &Fixture| f.ledger.with_state(|s| s.balance(&user.public()));
    let b0 = balance(&f);

    // A deposit: credited once, and not again after a restart that lost the
    // bridge's cursor (it reads the chain from the start again).
    f.treasury
        .deposit(addr(&user), U256::from(5 * TOKEN))
        .await
        .unwrap();
    assert_eq!(settler.bridge_once().await.unwrap(), 1);
    assert_eq!(settler.bridge_once().await.unwrap(), 0);
    std::fs::remove_file(f.dir.path().join("evm-bridge.json")).unwrap();
    let settler = bridge();
    assert_eq!(settler.bridge_once().await.unwrap(), 0, "applied once");
    assert_eq!(balance(&f), b0 + 5 * TOKEN);

    // A withdrawal asked: held here at once; cancelled: spendable again;
    // asked again and paid after the delay: gone to the treasury.
    let own = Chain::at(&f.rpc, evm_signer(&user).unwrap(), f.treasury.contract)
        .await
        .unwrap();
    own.request_withdrawal(U256::from(3 * TOKEN)).await.unwrap();
    settler.bridge_once().await.unwrap();
    assert_eq!(balance(&f), b0 + 2 * TOKEN);
    assert_eq!(f.ledger.with_state(|s| s.summary().withdrawing), 3 * TOKEN);
    own.cancel_withdrawal().await.unwrap();
    settler.bridge_once().await.unwrap();
    assert_eq!(balance(&f), b0 + 5 * TOKEN);
    own.request_withdrawal(U256::from(3 * TOKEN)).await.unwrap();
    let _: i64 = raw
        .raw_request("evm_increaseTime".into(), (86_401u64,))
        .await
        .unwrap();
    let wallet = f.treasury.token_balance(addr(&user)).await.unwrap();
    own.withdraw().await.unwrap();
    assert_eq!(
        f.treasury.token_balance(addr(&user)).await.unwrap(),
        wallet + U256::from(3 * TOKEN)
    );
    let treasury_before = f.ledger.with_state(|s| s.balance(&s.treasury));
    assert_eq!(settler.bridge_once().await.unwrap(), 2);
    assert_eq!(balance(&f), b0 + 2 * TOKEN);
    assert_eq!(f.ledger.with_state(|s| s.summary().withdrawing), 0);
    assert_eq!(
        f.ledger.with_state(|s| s.balance(&s.treasury)),
        treasury_before + 3 * TOKEN
    );

    // A deposit for an address with no link waits for the link.
    let newcomer = SecretKey::from_seed(&[42; 32]);
    f.treasury
        .deposit(addr(&newcomer), U256::from(TOKEN))
        .await
        .unwrap();
    assert_eq!(settler.bridge_once().await.unwrap(), 0);
    settler.add_link(Link::new(&newcomer).unwrap()).unwrap();
    assert_eq!(settler.bridge_once().await.unwrap(), 1);
    assert_eq!(
        f.ledger.with_state(|s| s.balance(&newcomer.public())),
        TOKEN
    );

    // Settlement goes on; chain and ledger still agree on every escrow.
    settle_receipts(&f.ledger, &mut f.w, 0, 12);
    assert!(settler
        .settle_once(&final_checkpoint(&f.ledger))
        .await
        .unwrap()
        .is_some());
    assert_eq!(mirror_gaps(&f).await, gaps);
    f.ledger.with_state(|s| s.check_invariants()).unwrap();
    let mut holders = f.holders.clone();
    holders.push(addr(&newcomer));
    conserved(&f.treasury, &holders).await;
    f.anvil.stop();
}

/// A TLS endpoint in front of `upstream` (plain TCP), with a certificate for
/// `localhost` issued by a new private CA. Returns the port and the CA (PEM).
async fn tls_proxy(upstream: u16) -> (u16, String) {
    use tokio_rustls::rustls;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A client that does not trust the CA fails the handshake.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut up = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    (port, ca_cert.pem())
}

/// The chain reached over https: trusted through a private CA given with
/// the URL, refused without it (no silent fallback to plain http or to an
/// unchecked certificate); a settlement is sent and read back over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chain_is_reached_over_https_with_a_private_ca() {
    let mut f = fixture(FeePolicy::default()).await;
    let upstream: u16 = f.rpc.rsplit(':').next().unwrap().parse().unwrap();
    let (port, ca) = tls_proxy(upstream).await;
    let https = format!("https://localhost:{port}");

    let err = Chain::reader(https.as_str(), f.treasury.contract)
        .await
        .expect_err("an unknown issuer is refused");
    assert!(format!("{err}").contains("UnknownIssuer"), "{err}");

    let rpc = Rpc {
        url: https,
        ca_pem: Some(ca.into_bytes()),
    };
    let chain = Chain::open(
        rpc.clone(),
        Some(evm_signer(&f.w.treasury).unwrap()),
        FeePolicy::default(),
        f.treasury.contract,
    )
    .await
    .unwrap();
    assert_eq!(chain.chain_id, f.treasury.chain_id);
    settle_receipts(&f.ledger, &mut f.w, 0, 3);
    let cosigners = Arc::new(LocalVerifiers {
        keys: f.w.verifiers.clone(),
        log_key: f.ledger.receipts().verifier_key().clone(),
        ledger: f.ledger.clone(),
    });
    let settler = Settler::new(
        chain,
        f.ledger.clone(),
        cosigners,
        f.dir.path().to_path_buf(),
    )
    .unwrap();
    assert!(settler
        .settle_once(&final_checkpoint(&f.ledger))
        .await
        .unwrap()
        .is_some());
    let reader = Chain::reader(rpc, f.treasury.contract).await.unwrap();
    assert_eq!(reader.checkpoint().await.unwrap().0, 3);
    f.anvil.stop();
}

/// Escrow balances of `keys` on chain and in the ledger.
async fn balances(f: &Fixture, keys: &[SecretKey]) -> (Vec<u128>, Vec<u128>) {
    let mut chain = Vec::new();
    for k in keys {
        chain.push(f.treasury.balance(addr(k)).await.unwrap());
    }
    let ledger = f
        .ledger
        .with_state(|s| keys.iter().map(|k| s.balance(&k.public())).collect());
    (chain, ledger)
}

/// Two optimistic answers settle in one checkpoint: the chain holds both
/// fees as the ledger does; one is challenged inside its window (the payer
/// refunded, the node slashed), the other paid out after it; the chain and
/// the embedded ledger end with the same balances and stakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_answers_end_in_the_same_balances_on_chain_and_in_the_ledger() {
    let mut f = fixture(FeePolicy::default()).await;
    let raw = ProviderBuilder::new().connect_http(f.rpc.parse().unwrap());
    let user = f.w.users[0].clone();
    let node = f.w.nodes[0].clone();
    let mut paid: Vec<SecretKey> = vec![user.clone(), node.clone()];
    paid.extend(f.w.verifiers.clone());
    paid.push(f.w.treasury.clone());
    let (chain0, ledger0) = balances(&f, &paid).await;

    let window = 600;
    let mut answers = Vec::new();
    let mut receipts = Vec::new();
    for seed in [300, 301] {
        let req = f.w.optimistic_request(&user, seed, window);
        let reserve = f.w.tx(
            &user,
            TxBody::Reserve {
                request: req.hash().unwrap(),
                amount: f.w.max_fee(),
                ttl_secs: verinfer_ledger::testing::RESERVE_TTL_SECS,
            },
        );
        f.ledger.submit(&reserve).unwrap();
        let receipt = f.ledger.with_state(|s| f.w.receipt(s, &req, 0));
        f.ledger.submit(&f.w.commit(&receipt.result)).unwrap();
        answers.push((req, receipt.result.clone()));
        receipts.push(receipt);
    }
    let relayer = f.w.users[2].clone();
    f.ledger
        .submit(&f.w.tx(&relayer, TxBody::Settle { receipts }))
        .unwrap();
    assert!(f
        .settler
        .settle_once(&final_checkpoint(&f.ledger))
        .await
        .unwrap()
        .is_some());
    let fee = f.ledger.with_state(|s| {
        answers
            .iter()
            .map(|(r, _)| s.provisional[&r.hash().unwrap()].fees.total.0)
            .collect::<Vec<_>>()
    });
    let (chain1, _) = balances(&f, &paid).await;
    assert_eq!(
        chain1[0],
        chain0[0] - fee[0] - fee[1],
        "both fees left the payer"
    );
    assert_eq!(chain1[1..], chain0[1..], "nobody paid yet");
    for (_, result) in &answers {
        let key = B256::from(result.hash().unwrap().0);
        assert!(f.treasury.held_until(key).await.unwrap().is_some());
    }
    conserved(&f.treasury, &f.holders).await;

    // The first answer is challenged inside its window, in the ledger and
    // then on chain, once.
    let (req, result) = answers[0].clone();
    let committee = (0..3)
        .map(|v| f.w.verdict(&result, v, Decision::Reject))
        .collect();
    f.ledger
        .submit(&f.w.tx(
            &relayer,
            TxBody::Challenge {
                evidence: Box::new(Evidence::Node {
                    request: req,
                    result: result.clone(),
                    committee,
                }),
            },
        ))
        .unwrap();
    assert_eq!(f.settler.slash_pending().await.unwrap(), 1);
    assert_eq!(f.settler.slash_pending().await.unwrap(), 0);
    let key = B256::from(result.hash().unwrap().0);
    assert_eq!(f.treasury.held_until(key).await.unwrap(), None);
    assert!(f.treasury.is_slashed(key, addr(&node)).await.unwrap());

    // Inside the window nothing is paid out; after it the other answer is,
    // on chain and in the ledger.
    assert_eq!(f.settler.release_matured().await.unwrap(), 0);
    let _: i64 = raw
        .raw_request("evm_increaseTime".into(), (window + 1,))
        .await
        .unwrap();
    let _: String = raw.raw_request("evm_mine".into(), ()).await.unwrap();
    f.skew
        .fetch_add((window + 1) * 1000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(f.ledger.finalize_matured(&relayer).unwrap(), 1);
    assert_eq!(f.settler.release_matured().await.unwrap(), 1);
    assert_eq!(f.settler.release_matured().await.unwrap(), 0);

    // The same balances moved the same way in both backends: the payer paid
    // the second fee only, the node got its share of it and lost the same
    // stake; the verifiers and the treasury together got the same (the
    // committee's reward is shared among the evidence's members in the
    // ledger, among the signers on chain).
    let (chain2, ledger2) = balances(&f, &paid).await;
    let delta = |after: &[u128], before: &[u128]| -> Vec<i128> {
        after
            .iter()
            .zip(before)
            .map(|(a, b)| *a as i128 - *b as i128)
            .collect()
    };
    let (dc, dl) = (delta(&chain2, &chain0), delta(&ledger2, &ledger0));
    assert_eq!(dc[0], -(fee[1] as i128));
    assert_eq!(dc[..2], dl[..2], "payer and node");
    assert_eq!(
        dc[2..].iter().sum::<i128>(),
        dl[2..].iter().sum::<i128>(),
        "verifiers and treasury"
    );
    assert_eq!(
        f.treasury.stake(addr(&node)).await.unwrap(),
        f.ledger.with_state(|s| s.stake(&node.public()))
    );
    conserved(&f.treasury, &f.holders).await;
    let kinds: Vec<String> = f.settler.history().into_iter().map(|s| s.kind).collect();
    assert_eq!(kinds, ["checkpoint", "challenge", "release"]);
    f.anvil.stop();
}

/// A publisher that never links an EVM address does not hold up the
/// settlement of checkpoints with its receipts: its share waits in its
/// vault on chain, and moves to its address once it links one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_publisher_does_not_stall_settlement() {
    let mut f = fixture(FeePolicy::default()).await;
    let publisher = SecretKey::from_seed(&[77; 32]);
    for tx in f.w.publish(
        &publisher,
        verinfer_ledger::testing::World::listing("pub-model", 1_000),
    ) {
        f.ledger.submit(&tx).unwrap();
    }
    settle_receipts(&f.ledger, &mut f.w, 0, 4);
    assert!(f
        .settler
        .settle_once(&final_checkpoint(&f.ledger))
        .await
        .unwrap()
        .is_some());
    let share = f.ledger.fee_totals().publishers;
    assert!(share > 0);
    let vault = vault(&publisher.public());
    assert_eq!(f.treasury.balance(vault).await.unwrap(), share);
    users_paid_once(&f).await;
    assert_eq!(f.settler.claim_pending().await.unwrap(), 0, "no link yet");

    f.settler.add_link(Link::new(&publisher).unwrap()).unwrap();
    assert_eq!(f.settler.claim_pending().await.unwrap(), 1);
    assert_eq!(f.settler.claim_pending().await.unwrap(), 0);
    assert_eq!(f.treasury.balance(vault).await.unwrap(), 0);
    assert_eq!(
        f.treasury.balance(addr(&publisher)).await.unwrap(),
        share,
        "the publisher's share, as the ledger paid it"
    );
    conserved(&f.treasury, &f.holders).await;
    f.anvil.stop();
}
