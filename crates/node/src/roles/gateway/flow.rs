//! One request through the network (docs/design.md, "Flow of one chat request"):
//! reserve the maximum fee, infer on a healthy node (retrying on another when
//! one fails), draw verifiers by randomness fixed after the Result, gather a
//! certificate or settle a dispute (slashing who was wrong and serving the
//! request again elsewhere), then settle the receipt in the log.

use super::directory::Member;
use super::metrics::Counters;
use super::openai::{ApiError, Status};
use super::pending::{Outcome, Pending};
use super::{Account, Gateway};
use crate::client::ClientError;
use crate::wire::{CheckRequest, InferenceEvent};
use futures_util::StreamExt;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use verinfer_ledger::tx::{Evidence, ModelEntry, Role, TxBody};
use verinfer_types::records::{
    reason_code, Amount, Certificate, CertificateTag, Decision, InferenceResult, Input, Receipt,
    ReceiptTag, Request, RequestTag, Salt, TokenLogprob, Verdict, VerificationMode,
};
use verinfer_types::{Hash, PublicKey, Record, Signature, SignedRecord};
use verinfer_verify::committee::{
    assemble_certificate, plan, resolve_dispute, select, selection_seed, CertificateError, Offender,
};

/// Inference nodes tried per request before giving up.
const MAX_ATTEMPTS: usize = 3;
/// How long a node that failed a call is skipped.
const DOWN_FOR: Duration = Duration::from_secs(15);
/// Longest wait for one inference.
const INFERENCE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for one verdict.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a reservation lasts (capped by the ledger's
/// `reserve_ttl_max_secs`): the inference with its retries, the checks and
/// a dispute, and the settlement batch after them.
const RESERVE_TTL_SECS: u64 = 3600;
/// Longest wait for a verifier to take a warm-up.
const WARM_TIMEOUT: Duration = Duration::from_secs(5);
/// Checks of one Result before it is given up for lack of verifiers.
const CHECK_ATTEMPTS: u32 = 3;
/// Pause between those checks (the directory reads the registry every second).
const CHECK_PAUSE: Duration = Duration::from_secs(2);
/// Pause between attempts to certify a pending answer.
const PENDING_PAUSE: Duration = Duration::from_secs(2);
/// How long before the reservation's deadline a pending answer is given up
/// (at most; a quarter of the reservation when that is shorter): a
/// settlement must reach the ledger before the deadline.
const PENDING_MARGIN_MS: u64 = 60_000;
/// Template tokens allowed per message when bounding the prompt (role, markers).
const PER_MESSAGE: u64 = 8;
/// Template tokens allowed per prompt (a default system prompt, the
/// assistant header).
const PER_PROMPT: u64 = 64;

/// What the client sees while the answer is produced.
#[derive(Debug, Clone)]
pub enum Event {
    /// More answer text, with the log-probability records of the tokens
    /// that released it (when asked; none yet for a token still held).
    Text(String, Vec<TokenLogprob>),
    /// The text sent so far is withdrawn (the verifiers rejected it, or the
    /// node failed mid-answer); the answer starts again.
    Retract {
        /// Why.
        reason: String,
    },
    /// The outcome; the last event.
    Done(Box<Result<Answer, ApiError>>),
}

/// The final answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The Result (the rejected one when `status` is rejected).
    pub result: InferenceResult,
    /// Verification status.
    pub status: Status,
    /// Receipt id and log index once settled.
    pub settled: Option<(Hash, u64)>,
    /// Verifiers in the certificate.
    pub verifiers: Vec<PublicKey>,
    /// Rejection reason.
    pub reason: Option<String>,
}

/// An upper bound on the prompt tokens of `input`: a byte-level BPE token
/// covers at least one byte, plus the chat template's markers.
pub fn prompt_bound(input: &Input) -> u64 {
    match input {
        Input::Messages(m) => {
            m.iter()
                .map(|m| (m.role.len() + m.content.len()) as u64 + PER_MESSAGE)
                .sum::<u64>()
                + PER_PROMPT
        }
        Input::Prompt(p) => p.len() as u64 + 8,
        Input::Tokens(t) => t.len() as u64,
    }
}

/// The most a request can cost: the bound on its prompt and `max_tokens`.
pub fn max_fee(model: &ModelEntry, prompt_bound: u64, max_tokens: u32) -> Option<u128> {
    model.cost(prompt_bound, u64::from(max_tokens))
}

enum Checked {
    Certified(Certificate),
    /// No verifier checks it now; the Result's committee seed.
    Unchecked(Hash),
    /// A committee majority rejected the result for a node fault (the node
    /// was slashed).
    Cheated(String),
    /// A committee majority rejected the result for a reason the node is not
    /// answerable for (its code is not a node fault): nobody is slashed.
    NotAnswerable {
        reason: String,
        code: String,
    },
}

/// An answer delivered without a certificate yet (`why` not).
fn pending(result: InferenceResult, why: ApiError) -> Answer {
    tracing::warn!(error = why.message, result = %result.request, "no certificate yet; the answer is pending");
    Answer {
        result,
        status: Status::Pending,
        settled: None,
        verifiers: Vec::new(),
        reason: None,
    }
}

impl Gateway {
    /// Serves one request for `account`, sending text to `events` as it comes.
    pub async fn serve(
        self: &Arc<Self>,
        account: &Account,
        model: &ModelEntry,
        mut request: Request,
        events: &mpsc::Sender<Event>,
    ) -> Result<Answer, ApiError> {
        if let VerificationMode::Optimistic { window_secs } = request.policy.verification {
            // The ledger settles windows of 1 to `dispute_window_secs`:
            // refused here, before any node runs or anything is reserved.
            let max = self
                .directory
                .params()
                .ok_or_else(|| ApiError::unavailable("the gateway has not read the ledger yet"))?
                .params
                .dispute_window_secs;
            if window_secs == 0 || window_secs > max {
                return Err(ApiError::field(
                    "verification",
                    format!("an optimistic window must be 1 to {max} seconds"),
                ));
            }
        }
        request.sign(&account.key).map_err(ApiError::internal)?;
        let request_hash = request.hash().map_err(ApiError::internal)?;
        let bound = prompt_bound(&request.input);
        let fee = max_fee(model, bound, request.decoding.max_tokens)
            .ok_or_else(|| ApiError::field("max_tokens", "the request's maximum fee overflows"))?;
        let ttl_ms = self.reserve_ttl() * 1000;
        let until_ms = crate::auth::now_ms() + ttl_ms - (ttl_ms / 4).min(PENDING_MARGIN_MS);
        let t = Instant::now();
        self.reserve(account, request_hash, fee).await?;
        latency(&request_hash, "reserve", t);
        let outcome = self.infer_and_check(model, &request, events).await;
        match outcome {
            Ok(a) if a.settled.is_some() => Ok(a),
            Ok(a) if a.status == Status::Pending => {
                // Delivered: kept (on disk first) and certified later.
                let p = Pending {
                    model: model.id,
                    request,
                    result: a.result.clone(),
                    until_ms,
                    outcome: None,
                };
                if let Err(e) = self.pending.put(&p) {
                    tracing::error!(error = %e, "cannot keep a pending answer on disk; certifying it from memory");
                }
                tokio::spawn(self.clone().certify_later(p));
                Ok(a)
            }
            other => {
                // Nothing settled: the requester gets the reservation back.
                if let Err(e) = self.release(account, request_hash).await {
                    tracing::error!(error = %e, request = %request_hash, "cannot release a reservation");
                }
                other
            }
        }
    }

    /// How long a reservation is asked for, in seconds.
    fn reserve_ttl(&self) -> u64 {
        self.directory.params().map_or(RESERVE_TTL_SECS, |p| {
            p.params.reserve_ttl_max_secs.min(RESERVE_TTL_SECS)
        })
    }

    /// Keeps trying to certify a delivered answer until `p.until_ms`;
    /// settles it when certified, releases the reservation when a committee
    /// rejects it or time runs out, and records the outcome.
    pub(super) async fn certify_later(self: Arc<Self>, mut p: Pending) {
        let mut seed = None;
        let outcome = loop {
            if crate::auth::now_ms() >= p.until_ms {
                break Outcome::Expired;
            }
            tokio::time::sleep(PENDING_PAUSE).await;
            let Some(model) = self
                .directory
                .params()
                .and_then(|ps| ps.models.into_iter().find(|m| m.id == p.model))
            else {
                continue;
            };
            let Ok(hash) = p.result.hash() else {
                break Outcome::Expired;
            };
            // One committee seed for every attempt: the ranking it gives is
            // read again over the verifiers live at each attempt.
            let s = match seed {
                Some(s) => s,
                None => match self.committee_seed(&hash).await {
                    Ok(s) => *seed.insert(s),
                    Err(_) => continue,
                },
            };
            let (certificate, status) = match self
                .check_drawn(&model, &p.request, &p.result, hash, s)
                .await
            {
                Ok(Checked::Certified(c)) => (c, Status::Verified),
                Ok(Checked::Unchecked(_)) => (
                    Certificate {
                        tag: CertificateTag,
                        result: hash,
                        verdicts: Vec::new(),
                    },
                    Status::Provisional,
                ),
                Ok(Checked::Cheated(reason) | Checked::NotAnswerable { reason, .. }) => {
                    break Outcome::Rejected { reason }
                }
                Err(e) => {
                    tracing::debug!(error = e.message, result = %hash, "pending answer not certified yet");
                    continue;
                }
            };
            match self
                .settle(&model, &p.request, p.result.clone(), certificate, status)
                .await
            {
                Ok(Answer {
                    settled: Some((receipt_id, log_index)),
                    ..
                }) => {
                    break if status == Status::Verified {
                        Outcome::Verified {
                            receipt_id,
                            log_index,
                        }
                    } else {
                        Outcome::Provisional {
                            receipt_id,
                            log_index,
                        }
                    }
                }
                Ok(_) => continue,
                Err(e) => tracing::warn!(
                    error = e.message,
                    "pending answer certified, not settled yet"
                ),
            }
        };
        if matches!(outcome, Outcome::Rejected { .. } | Outcome::Expired) {
            let request = p.result.request;
            match self.account_of(&p.request.requester) {
                Some(a) => {
                    if let Err(e) = self.release(&a, request).await {
                        tracing::error!(error = %e, %request, "cannot release a reservation");
                    }
                }
                // The ledger releases it to its payer at its deadline.
                None => {
                    tracing::warn!(%request, "pending answer of an account this gateway no longer holds")
                }
            }
        }
        tracing::info!(request = %p.result.request, ?outcome, "pending answer done");
        p.outcome = Some(outcome);
        if let Err(e) = self.pending.put(&p) {
            tracing::error!(error = %e, "cannot record a pending answer's outcome");
        }
    }

    async fn reserve(&self, account: &Account, request: Hash, fee: u128) -> Result<(), ApiError> {
        let _turn = account.turn.lock().await;
        let r = self
            .ledger
            .submit_as(
                &account.key,
                TxBody::Reserve {
                    request,
                    amount: Amount(fee),
                    ttl_secs: self.reserve_ttl(),
                },
            )
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(ClientError::Refused(r)) if r.code == "insufficient" => Err(ApiError::payment(format!(
                "the balance of this API key's account is too low for this request's maximum fee of {fee} base units ({})",
                r.error
            ))),
            Err(e) if e.is_unavailable() => Err(ApiError::unavailable(format!("the ledger is unavailable: {e}"))),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    async fn release(&self, account: &Account, request: Hash) -> Result<(), ClientError> {
        let _turn = account.turn.lock().await;
        self.ledger
            .submit_as(&account.key, TxBody::Release { request })
            .await
            .map(|_| ())
    }

    /// Serves the call on the nodes in turn; then reports to the ledger, once
    /// for the whole call, what its transactions will not show.
    async fn infer_and_check(
        &self,
        model: &ModelEntry,
        request: &Request,
        events: &mpsc::Sender<Event>,
    ) -> Result<Answer, ApiError> {
        let id = request.hash().map_err(ApiError::internal)?;
        let (outcome, mut report) =
            super::report::tracked(id, self.attempts(model, request, events)).await;
        report.rejected = matches!(&outcome, Ok(a) if a.status == Status::Rejected);
        if !report.is_empty() {
            self.report(report);
        }
        outcome
    }

    async fn attempts(
        &self,
        model: &ModelEntry,
        request: &Request,
        events: &mpsc::Sender<Event>,
    ) -> Result<Answer, ApiError> {
        let mut tried: Vec<PublicKey> = Vec::new();
        let mut sent = Sent::default();
        let mut rejected: Option<(InferenceResult, String)> = None;
        let mut last_error: Option<ApiError> = None;
        for attempt in 0..MAX_ATTEMPTS {
            let Some((node, busy)) = self.directory.pick_inference(&model.id, &tried) else {
                break;
            };
            tried.push(node.view.key);
            if attempt > 0 {
                Counters::inc(&self.counters.retries);
            }
            let answer = self.infer(&node, request, events, &mut sent).await;
            // The node is free again once it answered; verification is not its load.
            drop(busy);
            let result = match answer {
                Ok(r) => r,
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::Declined(msg)) => {
                    tracing::info!(node = %node.view.key, error = msg, "inference node declined; trying another");
                    last_error = Some(ApiError::unavailable(msg));
                    continue;
                }
                Err(Failure::Unavailable(msg)) => {
                    tracing::warn!(node = %node.view.key, error = msg, "inference node failed; trying another");
                    self.directory.mark_down(node.view.key, DOWN_FOR);
                    last_error = Some(ApiError::unavailable(msg));
                    continue;
                }
            };
            let checked = match self.check_retrying(model, request, &result).await {
                Ok(c) => c,
                // The text is delivered: the answer is kept and certified
                // when verifiers can be had (docs/design.md).
                Err(e) if e.status == 503 => return Ok(pending(result, e)),
                Err(e) => return Err(e),
            };
            match checked {
                Checked::NotAnswerable { reason, code } => {
                    if code == "wrong_engine" {
                        // The node runs another engine than the verifiers:
                        // its answer cannot be checked here, so try another.
                        tracing::warn!(node = %node.view.key, reason, "result not checkable; trying another node");
                        self.directory.mark_down(node.view.key, DOWN_FOR);
                        last_error = Some(ApiError::unavailable(reason));
                        continue;
                    }
                    // The request itself cannot be answered as asked.
                    return Err(ApiError::bad_request(format!(
                        "the verifiers cannot hold any node to this request: {reason}"
                    )));
                }
                Checked::Cheated(reason) => {
                    Counters::inc(&self.counters.rejected);
                    super::report::node_rejected(result.node);
                    if !sent.text.is_empty() {
                        let _ = events
                            .send(Event::Retract {
                                reason: reason.clone(),
                            })
                            .await;
                        sent = Sent::default();
                    }
                    rejected = Some((result, reason));
                }
                Checked::Certified(c) => {
                    return match self
                        .settle(model, request, result.clone(), c, Status::Verified)
                        .await
                    {
                        Err(e) if e.status == 503 => Ok(pending(result, e)),
                        other => other,
                    };
                }
                Checked::Unchecked(seed) => {
                    let certificate = Certificate {
                        tag: CertificateTag,
                        result: result.hash().map_err(ApiError::internal)?,
                        verdicts: Vec::new(),
                    };
                    let answer = self
                        .settle(
                            model,
                            request,
                            result.clone(),
                            certificate,
                            Status::Provisional,
                        )
                        .await?;
                    if matches!(
                        request.policy.verification,
                        VerificationMode::Optimistic { .. }
                    ) {
                        self.watch(model, request, result, seed);
                    }
                    return Ok(answer);
                }
            }
        }
        match rejected {
            Some((result, reason)) => Ok(Answer {
                result,
                status: Status::Rejected,
                settled: None,
                verifiers: Vec::new(),
                reason: Some(reason),
            }),
            None => Err(last_error.unwrap_or_else(|| {
                ApiError::unavailable("no healthy inference node serves this model right now")
            })),
        }
    }

    /// Has the verifiers that may be drawn for `request` compute its prompt
    /// while a node answers it (`/verifier/warm`), so that the check of its
    /// Result scores the answer only: the committee is drawn after the
    /// Result, so every live verifier is asked, and only when they are at
    /// most twice the quorum (beyond, most warm-ups would be for verifiers
    /// not drawn). Best effort: not awaited, failures ignored.
    fn warm_verifiers(&self, request: &Request) {
        let VerificationMode::Quorum { k } = request.policy.verification else {
            return;
        };
        let quorum = self.directory.params().map_or(0, |p| p.params.quorum);
        let k = k.max(quorum) as usize;
        let live = self.directory.live(Role::Verifier, &request.model);
        if live.len() > 2 * k {
            return;
        }
        let Ok(body) = serde_json::to_vec(request) else {
            return;
        };
        for m in live {
            let (peer, body) = (self.peer.clone(), body.clone());
            tokio::spawn(async move {
                let to = &m.view.key;
                let r = peer
                    .post(to, &m.view.endpoint, "/verifier/warm", body, WARM_TIMEOUT)
                    .await;
                if let Err(e) = r {
                    tracing::debug!(verifier = %to, error = %e, "warm-up not taken");
                }
            });
        }
    }

    /// [`Self::check`], again while no certificate could be had for lack of
    /// verifiers (they may be back, or others live, a moment later): the
    /// text may already be with the client, and an answer that cannot be
    /// certified is not paid for (docs/threat-model.md).
    async fn check_retrying(
        &self,
        model: &ModelEntry,
        request: &Request,
        result: &InferenceResult,
    ) -> Result<Checked, ApiError> {
        let mut attempt = 1;
        loop {
            match self.check(model, request, result).await {
                Err(e) if e.status == 503 && attempt < CHECK_ATTEMPTS => {
                    tracing::warn!(
                        error = e.message,
                        attempt,
                        "no certificate yet; checking again"
                    );
                    attempt += 1;
                    tokio::time::sleep(CHECK_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// Runs the request on `node`, forwarding text beyond what was already
    /// `sent` to the client (a retry on a deterministic engine repeats it).
    async fn infer(
        &self,
        node: &Member,
        request: &Request,
        events: &mpsc::Sender<Event>,
        sent: &mut Sent,
    ) -> Result<InferenceResult, Failure> {
        let body =
            serde_json::to_vec(request).map_err(|e| Failure::Refused(ApiError::internal(e)))?;
        let id = request
            .hash()
            .map_err(|e| Failure::Refused(ApiError::internal(e)))?;
        let t = Instant::now();
        let resp = self
            .peer
            .post(
                &node.view.key,
                &node.view.endpoint,
                "/inference/respond",
                body,
                INFERENCE_TIMEOUT,
            )
            .await
            .map_err(|e| match e {
                ClientError::Status {
                    status: status @ (400 | 413 | 422),
                    body,
                    ..
                } => Failure::Refused(refusal(status, body)),
                ClientError::Status { status, body, .. } if status < 500 => {
                    Failure::Declined(format!("node declined the request ({status}): {body}"))
                }
                e => Failure::Unavailable(e.to_string()),
            })?;
        latency(&id, "dispatch", t);
        let t = Instant::now();
        let mut first = true;
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut text = String::new();
        let mut logprobs: Vec<TokenLogprob> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Failure::Unavailable(format!("stream broke: {e}")))?;
            buf.extend_from_slice(&chunk);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let event: InferenceEvent = serde_json::from_slice(&line)
                    .map_err(|e| Failure::Unavailable(format!("bad event from node: {e}")))?;
                if first && !matches!(event, InferenceEvent::Result(_)) {
                    first = false;
                    latency(&id, "first_text", t);
                    // The node has its prompt done: warm-ups now share the
                    // cores with its decoding, never with its prefill.
                    self.warm_verifiers(request);
                }
                match event {
                    InferenceEvent::Text(t) => {
                        text.push_str(&t);
                        self.forward(&text, &logprobs, sent, events).await;
                    }
                    InferenceEvent::Tokens {
                        text: t,
                        logprobs: l,
                    } => {
                        text.push_str(&t);
                        logprobs.extend(l);
                        self.forward(&text, &logprobs, sent, events).await;
                    }
                    InferenceEvent::Result(r) => {
                        latency(&id, "result", t);
                        return self
                            .accept_result(node, request, *r, &logprobs, sent, events)
                            .await;
                    }
                    InferenceEvent::Error(e) => {
                        return Err(match e.status {
                            400 | 413 | 422 => Failure::Refused(refusal(e.status, e.message)),
                            s if s < 500 => Failure::Declined(e.message),
                            _ => Failure::Unavailable(e.message),
                        })
                    }
                }
            }
        }
        Err(Failure::Unavailable(
            "the node closed the stream without a result".into(),
        ))
    }

    /// Sends the client what of `text` (with the records `logprobs` of its
    /// tokens) goes beyond what was `sent`.
    async fn forward(
        &self,
        text: &str,
        logprobs: &[TokenLogprob],
        sent: &mut Sent,
        events: &mpsc::Sender<Event>,
    ) {
        if let Some(rest) = text.strip_prefix(sent.text.as_str()) {
            if !rest.is_empty() {
                let new = logprobs.get(sent.logprobs..).unwrap_or_default().to_vec();
                let _ = events.send(Event::Text(rest.to_string(), new)).await;
                sent.text.push_str(rest);
                sent.logprobs = sent.logprobs.max(logprobs.len());
            }
        } else if !sent.text.starts_with(text) {
            let _ = events
                .send(Event::Retract {
                    reason: "the answer changed on retry".into(),
                })
                .await;
            let _ = events
                .send(Event::Text(text.to_string(), logprobs.to_vec()))
                .await;
            *sent = Sent {
                text: text.to_string(),
                logprobs: logprobs.len(),
            };
        }
    }

    /// What the gateway checks itself before paying verifiers: the Result is
    /// signed by the node that was asked and answers the Request sent, with
    /// the model asked. A Result that does not is the node's failure to
    /// answer (skip it, try another), never a dispute: a committee's
    /// `wrong_request` rejection proves nothing the ledger can slash.
    async fn accept_result(
        &self,
        node: &Member,
        request: &Request,
        result: InferenceResult,
        streamed: &[TokenLogprob],
        sent: &mut Sent,
        events: &mpsc::Sender<Event>,
    ) -> Result<InferenceResult, Failure> {
        if result.node != node.view.key || result.verify_signature().is_err() {
            return Err(Failure::Unavailable(
                "the node's result is not signed by the node".into(),
            ));
        }
        let request_hash = request
            .hash()
            .map_err(|e| Failure::Refused(ApiError::internal(e)))?;
        if result.request != request_hash || result.model != request.model {
            return Err(Failure::Unavailable(
                "the node's result does not answer the request sent (other request or model)"
                    .into(),
            ));
        }
        let signed = result.logprobs.as_deref().unwrap_or_default();
        if !signed.starts_with(streamed) {
            // What the client was shown is not what the node signed.
            let _ = events
                .send(Event::Retract {
                    reason: "the node streamed log-probabilities its Result does not hold".into(),
                })
                .await;
            *sent = Sent::default();
            return Err(Failure::Unavailable(
                "the node streamed log-probabilities its Result does not hold".into(),
            ));
        }
        // Text streamed must be the Result's text.
        self.forward(&result.output_text, signed, sent, events)
            .await;
        Ok(result)
    }

    /// Draws the committee and gathers verdicts; on a rejection, escalates.
    async fn check(
        &self,
        model: &ModelEntry,
        request: &Request,
        result: &InferenceResult,
    ) -> Result<Checked, ApiError> {
        let hash = result.hash().map_err(ApiError::internal)?;
        let t = Instant::now();
        let seed = self.committee_seed(&hash).await?;
        latency(&result.request, "commit", t);
        let t = Instant::now();
        let checked = self.check_drawn(model, request, result, hash, seed).await;
        latency(&result.request, "verdicts", t);
        checked
    }

    /// [`Self::check`] with the committee seed `seed` of `result` (hash `hash`).
    async fn check_drawn(
        &self,
        model: &ModelEntry,
        request: &Request,
        result: &InferenceResult,
        hash: Hash,
        seed: Hash,
    ) -> Result<Checked, ApiError> {
        let params = self
            .directory
            .params()
            .ok_or_else(|| ApiError::unavailable("the gateway has not read the ledger yet"))?;
        let p = plan(&request.policy.verification, &seed);
        let k = match request.policy.verification {
            VerificationMode::Quorum { .. } => p.verifiers.max(params.params.quorum as usize),
            _ => p.verifiers,
        };
        if k == 0 {
            return Ok(Checked::Unchecked(seed));
        }
        let live = self.directory.live(Role::Verifier, &model.id);
        let keys: Vec<PublicKey> = live.iter().map(|m| m.view.key).collect();
        let ranking = select(&keys, keys.len(), &seed, 0);
        if ranking.len() < k {
            return Err(ApiError::unavailable(format!(
                "{} live verifiers, {k} needed",
                ranking.len()
            )));
        }
        let by_key = |k: &PublicKey| live.iter().find(|m| m.view.key == *k).cloned();
        // The first k of the ranking; a verifier that fails is replaced by
        // the next one.
        let mut next = 0usize;
        let mut committee: Vec<PublicKey> = Vec::new();
        let mut verdicts: Vec<Verdict> = Vec::new();
        while verdicts.len() < k && next < ranking.len() {
            let want = k - verdicts.len();
            let batch: Vec<Member> = ranking[next..(next + want).min(ranking.len())]
                .iter()
                .filter_map(by_key)
                .collect();
            next += want;
            for (m, v) in self.ask(&batch, request, result, &hash).await {
                if let Some(v) = v {
                    committee.push(m);
                    verdicts.push(v);
                }
            }
        }
        match assemble_certificate(&result.request, &hash, &committee, k, &verdicts) {
            Ok(c) => Ok(Checked::Certified(c)),
            Err(CertificateError::Rejected(_)) => {
                self.dispute(request, result, &hash, &live, committee, verdicts, k)
                    .await
            }
            Err(e) => Err(ApiError::unavailable(format!("no certificate: {e}"))),
        }
    }

    /// Asks each of `members` for a verdict on `result` (hash `hash`)
    /// checked against `request` (which it answers), concurrently.
    async fn ask(
        &self,
        members: &[Member],
        request: &Request,
        result: &InferenceResult,
        hash: &Hash,
    ) -> Vec<(PublicKey, Option<Verdict>)> {
        let body = serde_json::to_vec(&CheckRequest {
            request: request.clone(),
            result: result.clone(),
        })
        .unwrap_or_default();
        let calls = members.iter().map(|m| {
            let body = body.clone();
            async move {
                let r = self
                    .peer
                    .post(
                        &m.view.key,
                        &m.view.endpoint,
                        "/verifier/check",
                        body,
                        CHECK_TIMEOUT,
                    )
                    .await;
                let v = match r {
                    Ok(resp) => crate::client::json::<Verdict>(m.view.endpoint.clone(), resp)
                        .await
                        .ok(),
                    Err(e) => {
                        tracing::warn!(verifier = %m.view.key, error = %e, "verifier failed");
                        if self.directory.call_failed(m.view.key, &e, DOWN_FOR) {
                            super::report::missed(m.view.key);
                        }
                        None
                    }
                };
                // Only a verdict signed by the member on this pair counts.
                let v = v.filter(|v| {
                    v.verifier == m.view.key
                        && v.result == *hash
                        && v.request == result.request
                        && v.verify_signature().is_ok()
                });
                if v.is_some() {
                    Counters::inc(&self.counters.verdicts);
                }
                (m.view.key, v)
            }
        });
        futures_util::future::join_all(calls).await
    }

    /// A rejection: every live verifier registered at the Result's anchor
    /// checks; the majority of them decides (verdicts of verifiers
    /// registered later count for nothing, as in the ledger); who was wrong
    /// is slashed with the signed evidence.
    #[allow(clippy::too_many_arguments)]
    async fn dispute(
        &self,
        request: &Request,
        result: &InferenceResult,
        hash: &Hash,
        live: &[Member],
        first: Vec<PublicKey>,
        earlier: Vec<Verdict>,
        k: usize,
    ) -> Result<Checked, ApiError> {
        let eligible = self.eligible(hash).await?;
        let (first, earlier): (Vec<PublicKey>, Vec<Verdict>) = first
            .into_iter()
            .zip(earlier)
            .filter(|(m, _)| eligible.contains(m))
            .unzip();
        let rest: Vec<Member> = live
            .iter()
            .filter(|m| !first.contains(&m.view.key) && eligible.contains(&m.view.key))
            .cloned()
            .collect();
        self.open_dispute(result, &earlier).await;
        let mut escalation = earlier.clone();
        let mut committee = first;
        for (m, v) in self.ask(&rest, request, result, hash).await {
            if let Some(v) = v {
                committee.push(m);
                escalation.push(v);
            }
        }
        let outcome = resolve_dispute(result, &earlier, &committee, &escalation)
            .map_err(|e| ApiError::unavailable(format!("the verifiers disagree: {e}")))?;
        match outcome.decision {
            Decision::Reject => {
                let reason = outcome
                    .evidence
                    .majority
                    .first()
                    .and_then(|v| v.reason.clone())
                    .unwrap_or_else(|| "rejected".into());
                // Only rejections for a node fault prove anything: a request
                // no node can meet (schema, bad_request) or a setup mismatch
                // (wrong_engine) slashes nobody.
                let faults: Vec<Verdict> = outcome
                    .evidence
                    .majority
                    .iter()
                    .filter(|v| v.proves_node_fault())
                    .cloned()
                    .collect();
                if faults.len() * 2 <= committee.len() {
                    let code = reason_code(&reason).to_string();
                    tracing::info!(result = %hash, reason, "rejected for a reason the node is not answerable for; nobody slashed");
                    return Ok(Checked::NotAnswerable { reason, code });
                }
                // Slash only with evidence the ledger's rule takes: a
                // majority of the verifiers registered at the anchor.
                let dispute_quorum = self
                    .directory
                    .params()
                    .map_or(u32::MAX, |p| p.params.dispute_quorum);
                let proof = Evidence::Node {
                    request: request.clone(),
                    result: result.clone(),
                    committee: faults.clone(),
                };
                if let Err(e) =
                    verinfer_ledger::slashing::committee(&proof, &eligible, dispute_quorum)
                {
                    tracing::warn!(result = %hash, error = %e, "rejected, but without a committee the ledger takes; nobody slashed");
                    return Ok(Checked::Cheated(reason));
                }
                self.slash(
                    &outcome.wrong,
                    request,
                    result,
                    &faults,
                    &outcome.evidence.losing,
                )
                .await;
                Ok(Checked::Cheated(reason))
            }
            Decision::Accept => {
                for w in &outcome.wrong {
                    // The ledger's evidence proves faults of rejected results
                    // only; a verifier that rejects an honest result is
                    // outvoted and reported, not slashed.
                    tracing::warn!(offender = ?w, result = %hash, "verifier outvoted: it rejected an honest result");
                }
                assemble_certificate(
                    &result.request,
                    hash,
                    &committee,
                    k,
                    &outcome.evidence.majority,
                )
                .map(Checked::Certified)
                .map_err(|e| {
                    ApiError::unavailable(format!("no certificate after the dispute: {e}"))
                })
            }
        }
    }

    /// The verifiers registered at `result`'s anchor: the only ones whose
    /// verdicts a slash or a challenge of it counts
    /// (`GET /ledger/anchor/{result}`).
    pub(super) async fn eligible(&self, result: &Hash) -> Result<BTreeSet<PublicKey>, ApiError> {
        match self.ledger.anchor(result).await {
            Ok(Some(a)) => Ok(a.eligible.into_iter().collect()),
            Ok(None) => Err(ApiError::unavailable(format!(
                "the result {result} was never committed"
            ))),
            Err(e) => Err(ApiError::unavailable(format!(
                "cannot read the result's anchor: {e}"
            ))),
        }
    }

    /// Freezes the node's withdrawals while the committee re-checks, on the
    /// first rejection that blames the node (the ledger checks the code).
    async fn open_dispute(&self, result: &InferenceResult, verdicts: &[Verdict]) {
        let Some(verdict) = verdicts.iter().find(|v| v.proves_node_fault()) else {
            return;
        };
        let body = TxBody::Dispute {
            result: Box::new(result.clone()),
            verdict: Box::new(verdict.clone()),
        };
        if let Err(e) = self.settler.signer().submit(body).await {
            tracing::warn!(node = %result.node, error = %e, "dispute refused");
        }
    }

    /// Submits evidence against each of `wrong`: the signed Request and
    /// Result and the committee's node-fault rejections (`majority`).
    async fn slash(
        &self,
        wrong: &[Offender],
        request: &Request,
        result: &InferenceResult,
        majority: &[Verdict],
        losing: &[Verdict],
    ) {
        for w in wrong {
            let evidence = match w {
                Offender::Node(_) => Evidence::Node {
                    request: request.clone(),
                    result: result.clone(),
                    committee: majority.to_vec(),
                },
                Offender::Verifier(v) => match losing
                    .iter()
                    .find(|l| l.verifier == *v && l.decision == Decision::Accept)
                {
                    Some(verdict) => Evidence::Verifier {
                        request: request.clone(),
                        result: result.clone(),
                        verdict: Box::new(verdict.clone()),
                        committee: majority.to_vec(),
                    },
                    None => continue,
                },
            };
            match self
                .settler
                .signer()
                .submit(TxBody::Slash {
                    evidence: Box::new(evidence),
                })
                .await
            {
                Ok(_) => {
                    Counters::inc(&self.counters.slashes);
                    tracing::info!(offender = ?w, "slashed");
                }
                Err(e) => tracing::warn!(offender = ?w, error = %e, "slash refused"),
            }
        }
    }

    /// Has a settled optimistic answer re-checked during its window, after
    /// the client has it (see [`super::watch`]).
    fn watch(&self, model: &ModelEntry, request: &Request, result: InferenceResult, seed: Hash) {
        if !self.watching.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let watch = super::watch::Watch {
            peer: self.peer.clone(),
            ledger: self.ledger.clone(),
            settler: self.settler.clone(),
            verifiers: self.directory.live(Role::Verifier, &model.id),
            request: request.clone(),
            result,
            seed,
        };
        tokio::spawn(watch.run());
    }

    /// Randomness for the committee, fixed after the Result (docs/design.md):
    /// the ledger appends a commitment to the Result hash and answers with
    /// the signed checkpoint that first includes it; the seed hashes that
    /// note with the Result hash. The node signed its Result before the note
    /// existed and cannot compute the log's signature, so it can neither
    /// predict nor grind its committee.
    async fn committee_seed(&self, result: &Hash) -> Result<Hash, ApiError> {
        // The signed commit also fixes the registry a slash of this Result
        // is judged against (docs/design.md, "Settlement").
        let tx = verinfer_ledger::tx::Transaction::signed(
            self.peer.key(),
            0,
            TxBody::Commit { result: *result },
        )
        .map_err(ApiError::internal)?;
        let body = serde_json::to_vec(&crate::wire::Commit { tx }).map_err(ApiError::internal)?;
        let url = format!("{}/ledger/commit", self.ledger.base);
        let resp = self
            .ledger
            .post("/ledger/commit", body, Duration::from_secs(10))
            .await
            .map_err(|e| {
                ApiError::unavailable(format!("the ledger did not take the commitment: {e}"))
            })?;
        let v: serde_json::Value = crate::client::json(url, resp)
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        let note = v["checkpoint"].as_str().ok_or_else(|| {
            ApiError::unavailable("the ledger's commitment answer has no checkpoint")
        })?;
        Ok(selection_seed(note.as_bytes(), result))
    }

    async fn settle(
        &self,
        model: &ModelEntry,
        request: &Request,
        result: InferenceResult,
        certificate: Certificate,
        status: Status,
    ) -> Result<Answer, ApiError> {
        let params = self
            .directory
            .params()
            .ok_or_else(|| ApiError::unavailable("the gateway has not read the ledger yet"))?;
        let fees = verinfer_ledger::fees(
            model,
            &params.params.fee_split,
            &result.usage,
            certificate.verdicts.len(),
        )
        .map_err(ApiError::internal)?;
        let verifiers = certificate.verdicts.iter().map(|v| v.verifier).collect();
        let receipt = Receipt {
            tag: ReceiptTag,
            request: request.clone(),
            result: result.clone(),
            certificate,
            fees,
            salt: Salt::random(),
        };
        let id = receipt_id(&receipt).map_err(ApiError::internal)?;
        let t = Instant::now();
        let index = self
            .settler
            .settle(receipt)
            .await
            .map_err(|e| ApiError::unavailable(format!("settlement failed: {e}")))?;
        latency(&result.request, "settle", t);
        let c = &self.counters;
        Counters::inc(if status == Status::Verified {
            &c.verified
        } else {
            &c.provisional
        });
        c.prompt_tokens.fetch_add(
            u64::from(result.usage.prompt_tokens),
            std::sync::atomic::Ordering::Relaxed,
        );
        c.completion_tokens.fetch_add(
            u64::from(result.usage.completion_tokens),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(Answer {
            result,
            status,
            settled: Some((id, index)),
            verifiers,
            reason: None,
        })
    }
}

/// Records how long a step of `request`'s way took since `since`, as a
/// debug event of target `latency` (the network bench sums these up).
fn latency(request: &Hash, phase: &'static str, since: Instant) {
    tracing::debug!(target: "latency", %request, phase, ms = since.elapsed().as_secs_f64() * 1e3);
}

/// A receipt's id: the RFC 6962 leaf hash of its log leaf.
pub fn receipt_id(receipt: &Receipt) -> Result<Hash, verinfer_types::RecordError> {
    Ok(verinfer_log::merkle::leaf_hash(
        &receipt.leaf()?.to_canonical()?,
    ))
}

/// A fresh request by `account`, to be signed by it.
pub fn new_request(
    account: PublicKey,
    model: Hash,
    input: Input,
    decoding: verinfer_types::records::Decoding,
    policy: verinfer_types::records::Policy,
) -> Request {
    Request {
        tag: RequestTag,
        model,
        input,
        decoding,
        policy,
        requester: account,
        nonce: verinfer_types::records::Nonce::random(),
        signer: account,
        signature: Signature::default(),
    }
}

/// What the client was sent of the answer so far: its text and how many
/// log-probability records came with it.
#[derive(Debug, Default)]
pub(super) struct Sent {
    text: String,
    logprobs: usize,
}

/// How one inference node's attempt failed. Only a node that failed
/// (transport errors, 5xx, broken streams) is marked down: a node that said
/// the input is bad answered correctly, and must not be taken offline by
/// whoever sends bad input.
enum Failure {
    /// The request itself is at fault (400, 413, 422): back to the client,
    /// no retry.
    Refused(ApiError),
    /// The node would not take it now (another 4xx): try another.
    Declined(String),
    /// The node failed: mark it down and try another.
    Unavailable(String),
}

/// A node's refusal of the input, as the client's error.
fn refusal(status: u16, message: String) -> ApiError {
    if status == 413 {
        ApiError::too_large(Some("messages"), message)
    } else {
        ApiError::bad_request(message)
    }
}
