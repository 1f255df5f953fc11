//! `verinfer verify`: checks a receipt with no trust in any node.
//!
//! The receipt bundle comes from a file (`-` for stdin) or from a gateway
//! (`--url URL ID`, which waits for a cosigned checkpoint to cover it). The
//! check itself is [`verinfer_verify::receipt::check_receipt`]: commitments,
//! signatures, the certificate against the request's policy, inclusion in a
//! checkpoint signed by the log and cosigned by a quorum of witnesses.
//!
//! Keys are taken from the bundle unless pinned (`--log-key`, `--witness`,
//! `--witness-quorum`); the output says which. The exit status follows
//! `verinfer check`: 0 when every check holds, 1 when one fails (or the
//! ledger reports an optimistic answer overturned), 2 when the receipt could
//! not be checked (unreadable file, HTTP failure).

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use verinfer_types::note::VerifierKey;
use verinfer_types::records::Finality;
use verinfer_types::Hash;
use verinfer_verify::receipt::{
    check_receipt, parse_log_key, parse_witness_key, ReceiptBundle, ReceiptError, Report, Status,
    Trust,
};

/// `verinfer verify [OPTIONS] [RECEIPT]`
#[derive(Args, Debug)]
pub(crate) struct VerifyArgs {
    /// A receipt bundle (JSON, as `GET /v1/receipts/{id}` serves it; "-"
    /// reads stdin); with --url, the receipt id to fetch.
    #[arg(value_name = "RECEIPT|ID")]
    pub receipt: Option<String>,
    /// Gateway to fetch the receipt from: `GET {URL}/v1/receipts/{ID}`.
    #[arg(long)]
    pub url: Option<String>,
    /// API key for --url, sent as a bearer token (the receipt's text is
    /// disclosed to its owner only).
    #[arg(long, env = "VERINFER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// With --url: seconds to keep re-fetching while no cosigned checkpoint
    /// covers the receipt yet.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub wait: u64,
    /// Pin the log's verifier key (C2SP vkey); default: the receipt's own.
    #[arg(long, value_name = "VKEY")]
    pub log_key: Option<String>,
    /// Pin a witness (= verifier) key (C2SP vkey, repeatable); default: the
    /// receipt's own list.
    #[arg(long = "witness", value_name = "VKEY")]
    pub witnesses: Vec<String>,
    /// Cosignatures a checkpoint needs; default: a strict majority of the
    /// pinned witnesses (with --witness), else the receipt's own. Nothing in
    /// the receipt lowers it.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub witness_quorum: Option<u32>,
    /// Save the fetched bundle to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// EVM JSON-RPC URL of the chain value settles on: the receipt must also
    /// be included in the root the contract settled (with --contract).
    #[arg(long, value_name = "URL", requires = "contract")]
    pub rpc: Option<String>,
    /// For an https --rpc: also trust this CA (PEM file).
    #[arg(long, value_name = "FILE", requires = "rpc")]
    pub rpc_ca: Option<PathBuf>,
    /// The settlement contract's address (with --rpc).
    #[arg(long, value_name = "ADDRESS", requires = "rpc")]
    pub contract: Option<String>,
}

/// Keys the user pinned on the command line, parsed.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pins {
    /// The log's key.
    pub log_key: Option<VerifierKey>,
    /// The witnesses' keys (empty: not pinned).
    pub witnesses: Vec<VerifierKey>,
    /// The cosignature quorum.
    pub witness_quorum: Option<u32>,
}

impl Pins {
    /// Parses pinned keys; a malformed one is a usage error.
    pub(crate) fn parse(
        log_key: Option<&str>,
        witnesses: &[String],
        witness_quorum: Option<u32>,
    ) -> anyhow::Result<Pins> {
        Ok(Pins {
            log_key: log_key.map(parse_log_key).transpose()?,
            witnesses: witnesses
                .iter()
                .map(|w| parse_witness_key(w))
                .collect::<Result<_, _>>()?,
            witness_quorum,
        })
    }

    /// The keys to check `bundle` with: pinned ones, the bundle's for the
    /// rest. With pinned witnesses the quorum is never the bundle's: the
    /// pinned one, else a strict majority of the pinned witnesses. A bundle
    /// key that does not parse fails the check.
    pub(crate) fn trust(&self, bundle: &ReceiptBundle) -> Result<Trust, ReceiptError> {
        let log_key = match &self.log_key {
            Some(k) => k.clone(),
            None => parse_log_key(&bundle.log_key)?,
        };
        let quorum = self.witness_quorum.map(|q| q as usize);
        if !self.witnesses.is_empty() {
            return Ok(Trust::pinned(log_key, self.witnesses.clone(), quorum));
        }
        let mut trust = Trust::from_bundle(bundle)?;
        trust.log_key = log_key;
        if let Some(q) = quorum {
            trust.witness_quorum = q;
        }
        Ok(trust)
    }

    /// Where the cosignature quorum came from, for the report.
    pub(crate) fn quorum_origin(&self) -> &'static str {
        match (self.witness_quorum.is_some(), self.witnesses.is_empty()) {
            (true, _) => "pinned",
            (false, false) => "a majority of the pinned witnesses",
            (false, true) => "taken from the receipt",
        }
    }
}

/// Runs `verinfer verify`: `Ok(true)` when every check holds, `Ok(false)`
/// when one fails (reported on stderr), `Err` when it could not check.
pub(crate) fn run(args: VerifyArgs) -> anyhow::Result<bool> {
    let pins = Pins::parse(
        args.log_key.as_deref(),
        &args.witnesses,
        args.witness_quorum,
    )?;
    let (bundle, asked) = match &args.url {
        Some(url) => {
            let id = args
                .receipt
                .as_deref()
                .context("--url needs the receipt ID to fetch")?;
            let id = parse_id(id)?;
            let client = http_client(Some(Duration::from_secs(30)))?;
            let bundle = fetch_bundle(
                &client,
                url,
                &id,
                args.api_key.as_deref(),
                Duration::from_secs(args.wait),
            )?;
            (bundle, Some(id))
        }
        None => (read_bundle(args.receipt.as_deref().unwrap_or("-"))?, None),
    };
    if let Some(out) = &args.out {
        let text = serde_json::to_string_pretty(&bundle)?;
        std::fs::write(out, text + "\n").with_context(|| format!("writing {}", out.display()))?;
    }
    let mut outcome = check_bundle(&bundle, asked.as_ref(), &pins);
    let mut on_chain = None;
    if let (Ok(report), Some(rpc), Some(contract)) = (&outcome, &args.rpc, &args.contract) {
        let rpc = crate::cmd_chain::rpc(rpc, args.rpc_ca.as_deref())?;
        match check_on_chain(&bundle, report, rpc, contract, args.url.as_deref())? {
            Ok(line) => on_chain = Some(line),
            Err(e) => outcome = Err(e),
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json_report(&outcome, &pins))?
        );
    }
    match outcome {
        Ok(report) => {
            if !args.json {
                print_report(&report, &pins);
                if let Some(line) = on_chain {
                    println!("{line}");
                }
            }
            if report.finality == Some(Finality::Overturned) {
                eprintln!("error: a challenge overturned this optimistic answer (the requester was refunded and the node slashed)");
                return Ok(false);
            }
            Ok(true)
        }
        Err(e) => {
            eprintln!("error: the receipt does not verify: {e}");
            Ok(false)
        }
    }
}

/// Checks that the receipt is included in the root the settlement contract
/// at `contract` settled on the chain at `rpc`: `Ok(Ok(line))` when it is,
/// `Ok(Err(reason))` when it is not (or not yet), `Err` when the chain or the
/// log could not be asked. The contract's root is the only thing trusted
/// here; a proof at the settled size (when it differs from the receipt's
/// checkpoint) is fetched from the gateway's log and checked against it.
pub(crate) fn check_on_chain(
    bundle: &ReceiptBundle,
    report: &Report,
    rpc: verinfer_ledger::evm::chain::Rpc,
    contract: &str,
    url: Option<&str>,
) -> anyhow::Result<Result<String, String>> {
    use verinfer_ledger::evm::chain::Chain;
    use verinfer_types::Record;
    let address = contract
        .parse()
        .map_err(|e| anyhow::anyhow!("--contract {contract:?}: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let at = rpc.url.clone();
    let (size, root) = rt
        .block_on(async { Chain::reader(rpc, address).await?.checkpoint().await })
        .with_context(|| format!("reading the settled checkpoint from {at}"))?;
    let root = Hash(root.0);
    if bundle.index >= size {
        return Ok(Err(format!(
            "not settled on chain yet: the contract has settled {size} receipts, this is receipt {}",
            bundle.index
        )));
    }
    let proof: Vec<String> = if size == report.checkpoint.size {
        bundle.inclusion_proof.clone()
    } else {
        let url = url.context(
            "the chain settled another size than the receipt's checkpoint: \
             give --url so a proof at the settled size can be fetched (it is checked, not trusted)",
        )?;
        let endpoint = format!(
            "{}/log/proof/inclusion?index={}&size={size}",
            url.trim_end_matches('/'),
            bundle.index
        );
        let v: serde_json::Value = http_client(Some(Duration::from_secs(30)))?
            .get(&endpoint)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.json())
            .with_context(|| format!("fetching {endpoint}"))?;
        serde_json::from_value(v["proof"].clone())
            .with_context(|| format!("{endpoint} did not answer an inclusion proof"))?
    };
    let proof = proof
        .iter()
        .map(|h| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(h)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(Hash)
        })
        .collect::<Option<Vec<Hash>>>();
    let Some(proof) = proof else {
        return Ok(Err(
            "the inclusion proof is not base64 SHA-256 hashes".into()
        ));
    };
    let leaf = verinfer_log::merkle::leaf_hash(&bundle.leaf.to_canonical()?);
    Ok(
        match verinfer_log::merkle::verify_inclusion(bundle.index, size, &leaf, &proof, &root) {
            Ok(()) => Ok(format!(
                "settled on chain: included in the root {root} the contract {contract} settled at size {size}"
            )),
            Err(e) => Err(format!(
                "not in the root the contract settled at size {size} ({root}): {e}"
            )),
        },
    )
}

/// Checks `bundle`, which must be receipt `asked` when one was asked for
/// (a gateway serving another receipt than the one requested fails).
pub(crate) fn check_bundle(
    bundle: &ReceiptBundle,
    asked: Option<&Hash>,
    pins: &Pins,
) -> Result<Report, String> {
    if let Some(id) = asked {
        if bundle.id != *id {
            return Err(format!("asked for receipt {id}, got receipt {}", bundle.id));
        }
    }
    let trust = pins.trust(bundle).map_err(|e| e.to_string())?;
    check_receipt(bundle, &trust).map_err(|e| e.to_string())
}

fn json_report(outcome: &Result<Report, String>, pins: &Pins) -> serde_json::Value {
    let pinned = serde_json::json!({
        "log_key": pins.log_key.is_some(),
        "witnesses": !pins.witnesses.is_empty(),
        "witness_quorum": pins.witness_quorum.is_some() || !pins.witnesses.is_empty(),
    });
    match outcome {
        Ok(r) => serde_json::json!({ "ok": true, "report": r, "pinned": pinned }),
        Err(e) => serde_json::json!({ "ok": false, "error": e, "pinned": pinned }),
    }
}

/// A receipt id: 64 lowercase hex digits.
pub(crate) fn parse_id(id: &str) -> anyhow::Result<Hash> {
    id.parse()
        .map_err(|_| anyhow::anyhow!("{id:?} is not a receipt id (64 lowercase hex digits)"))
}

/// Reads a bundle from `file` ("-": stdin).
pub(crate) fn read_bundle(file: &str) -> anyhow::Result<ReceiptBundle> {
    let (text, name) = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        (s, "stdin")
    } else {
        let s = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        (s, file)
    };
    serde_json::from_str(&text).with_context(|| {
        format!("{name} is not a receipt bundle as GET /v1/receipts/{{id}} serves it")
    })
}

/// A blocking HTTP client; `timeout` bounds each request (None: no bound,
/// for streams).
pub(crate) fn http_client(timeout: Option<Duration>) -> anyhow::Result<reqwest::blocking::Client> {
    reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .context("creating the HTTP client")
}

/// The message of an OpenAI-format error body
/// (`{"error": {"message": ...}}`), else the body itself.
pub(crate) fn api_error_message(status: reqwest::StatusCode, body: &str) -> String {
    #[derive(Deserialize)]
    struct Body {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    match serde_json::from_str::<Body>(body) {
        Ok(b) => b.error.message,
        Err(_) if body.trim().is_empty() => format!("HTTP {status}"),
        Err(_) => format!("HTTP {status}: {}", body.trim()),
    }
}

/// Fetches receipt `id` from the gateway at `url`, re-fetching every 500 ms
/// for up to `wait` while no cosigned checkpoint covers it yet (the last
/// bundle is returned either way; the check then says what is missing).
pub(crate) fn fetch_bundle(
    client: &reqwest::blocking::Client,
    url: &str,
    id: &Hash,
    api_key: Option<&str>,
    wait: Duration,
) -> anyhow::Result<ReceiptBundle> {
    let endpoint = format!("{}/v1/receipts/{id}", url.trim_end_matches('/'));
    let deadline = Instant::now() + wait;
    loop {
        let mut req = client.get(&endpoint);
        if let Some(key) = api_key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().with_context(|| format!("fetching {endpoint}"))?;
        let status = resp.status();
        let body = resp.text().with_context(|| format!("reading {endpoint}"))?;
        if !status.is_success() {
            bail!("fetching {endpoint}: {}", api_error_message(status, &body));
        }
        let bundle: ReceiptBundle = serde_json::from_str(&body)
            .with_context(|| format!("{endpoint} did not serve a receipt bundle"))?;
        if bundle.checkpoint.is_some() || Instant::now() >= deadline {
            return Ok(bundle);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn short(hex: &str) -> String {
    if hex.len() > 16 {
        format!("{}…{}", &hex[..8], &hex[hex.len() - 4..])
    } else {
        hex.to_string()
    }
}

/// Prints what was checked, one line each.
pub(crate) fn print_report(r: &Report, pins: &Pins) {
    let origin = |pinned: bool| {
        if pinned {
            "pinned"
        } else {
            "taken from the receipt"
        }
    };
    println!("receipt {} (log index {})", r.id, r.index);
    println!("  ok  id is the hash of the log leaf");
    println!(
        "      model {}, node {}, requester {}, fee {}",
        short(&r.model.to_hex()),
        short(&r.node.to_hex()),
        short(&r.requester.to_hex()),
        r.fees.total
    );
    match &r.disclosed {
        Some(d) => {
            println!("  ok  the receipt opens the leaf's commitments (request, result, certificate, fees)");
            println!(
                "  ok  request and result signatures ({}, {} output tokens, finish {:?})",
                d.engine, d.output_tokens, d.finish_reason
            );
            println!(
                "  ok  certificate: {} accepting verdict(s) by trusted verifiers, {} required by the policy {}",
                d.verdicts,
                d.verdicts_required,
                mode_name(&d.verification)
            );
        }
        None => println!(
            "  --  the receipt's text and certificate were not disclosed: only the leaf was checked"
        ),
    }
    let c = &r.checkpoint;
    println!(
        "  ok  checkpoint of {} at size {} signed by the log key ({})",
        c.origin,
        c.size,
        origin(pins.log_key.is_some())
    );
    println!(
        "  ok  inclusion proof of index {} in the checkpoint's tree",
        r.index
    );
    println!(
        "  ok  {} witness cosignature(s), {} required (witnesses {}, quorum {})",
        c.cosignatures,
        c.witness_quorum,
        origin(!pins.witnesses.is_empty()),
        pins.quorum_origin()
    );
    println!("status: {}", r.status);
    if r.status == Status::Provisional {
        println!("  (the request's policy asks for no verdict at settlement: nothing vouches for the output beyond its node yet)");
    }
    match r.finality {
        Some(Finality::Provisional { until_ms }) => println!(
            "optimistic: provisional, a challenge may overturn it until {until_ms} ms (as the ledger reports)"
        ),
        Some(Finality::Final) => {
            println!("optimistic: final, its challenge window passed unchallenged (as the ledger reports)")
        }
        Some(Finality::Overturned) => println!(
            "optimistic: overturned by a challenge inside its window (as the ledger reports)"
        ),
        None => {}
    }
}

/// The verification mode as the design names it.
pub(crate) fn mode_name(m: &verinfer_types::records::VerificationMode) -> String {
    use verinfer_types::records::VerificationMode as M;
    match m {
        M::None => "none".into(),
        M::Quorum { k } => format!("quorum({k})"),
        M::Sampled { p_milli } => format!("sampled({p_milli}/1000)"),
        M::Optimistic { window_secs } => format!("optimistic({window_secs}s)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_errors_give_their_message() {
        let s = reqwest::StatusCode::PAYMENT_REQUIRED;
        assert_eq!(
            api_error_message(
                s,
                r#"{"error":{"message":"insufficient balance","type":"x","param":null,"code":"y"}}"#
            ),
            "insufficient balance"
        );
        assert_eq!(api_error_message(s, ""), "HTTP 402 Payment Required");
        assert_eq!(
            api_error_message(s, "oops"),
            "HTTP 402 Payment Required: oops"
        );
    }

    #[test]
    fn ids_must_be_hashes() {
        assert!(parse_id(&"ab".repeat(32)).is_ok());
        assert!(parse_id("../etc").is_err());
    }
}
