//! The records of the protocol: Request, Result, Verdict, Certificate,
//! Receipt, and the log leaf a receipt commits to.
//!
//! Each record names its type and version in a `"type"` field and has one
//! canonical encoding ([`crate::canonical`]). A record's hash is the SHA-256
//! of that encoding, signature included. A signature covers the canonical
//! encoding of the record without its `"signature"` field, prefixed by a
//! domain tag and the record type, so a signature made for one record type
//! never verifies as another.

use crate::canonical::{self, CanonicalError};
use crate::hash::{parse_hex_array, Hash};
use crate::keys::{KeyError, PublicKey, SecretKey, Signature};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Errors about records.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// Encoding or decoding failed.
    #[error(transparent)]
    Canonical(#[from] CanonicalError),
    /// A signature that does not verify.
    #[error("{record}: {source}")]
    Signature {
        /// Which record type.
        record: &'static str,
        /// The key error.
        source: KeyError,
    },
    /// A record that is well-formed but breaks a protocol rule.
    #[error("invalid {record}: {reason}")]
    Invalid {
        /// Which record type.
        record: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A record with a fixed type tag and a canonical encoding.
pub trait Record: Serialize + DeserializeOwned {
    /// The `"type"` value, e.g. `verinfer.result.v1`.
    const TYPE: &'static str;

    /// The canonical bytes.
    fn to_canonical(&self) -> Result<Vec<u8>, RecordError> {
        Ok(canonical::to_canonical(self)?)
    }

    /// Parses canonical bytes (strict: non-canonical input is rejected).
    fn from_canonical(bytes: &[u8]) -> Result<Self, RecordError> {
        Ok(canonical::from_canonical(bytes)?)
    }

    /// SHA-256 of the canonical bytes.
    fn hash(&self) -> Result<Hash, RecordError> {
        Ok(Hash::of(&self.to_canonical()?))
    }
}

/// A record carrying the signature of one key.
pub trait SignedRecord: Record {
    /// The key that signs this record.
    fn signer(&self) -> &PublicKey;
    /// The signature field.
    fn signature_mut(&mut self) -> &mut Signature;
    /// The signature field.
    fn signature(&self) -> &Signature;

    /// The bytes the signature covers.
    fn signing_bytes(&self) -> Result<Vec<u8>, RecordError> {
        let mut msg = Vec::with_capacity(512);
        msg.extend_from_slice(SIGNATURE_DOMAIN);
        msg.extend_from_slice(Self::TYPE.as_bytes());
        msg.push(b'\n');
        canonical::write_canonical(self, Some("signature"), &mut msg)?;
        Ok(msg)
    }

    /// Signs the record with `key`, which must be the record's signer.
    fn sign(&mut self, key: &SecretKey) -> Result<(), RecordError> {
        if key.public() != *self.signer() {
            return Err(RecordError::Invalid {
                record: Self::TYPE,
                reason: "signing key is not the record's signer".into(),
            });
        }
        let sig = key.sign(&self.signing_bytes()?);
        *self.signature_mut() = sig;
        Ok(())
    }

    /// Checks the signature against the record's signer.
    fn verify_signature(&self) -> Result<(), RecordError> {
        self.signer()
            .verify(&self.signing_bytes()?, self.signature())
            .map_err(|source| RecordError::Signature {
                record: Self::TYPE,
                source,
            })
    }
}

/// Domain-separation prefix of every record signature.
pub const SIGNATURE_DOMAIN: &[u8] = b"verinfer-signature-v1\n";

/// Defines a zero-sized `"type"` tag that serialises to one fixed string and
/// refuses any other on decode.
#[macro_export]
macro_rules! type_tag {
    ($(#[$m:meta])* $name:ident = $s:literal) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name;
        impl $name {
            /// The tag string.
            pub const TYPE: &'static str = $s;
        }
        impl $crate::__serde::Serialize for $name {
            fn serialize<S: $crate::__serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($s)
            }
        }
        impl<'de> $crate::__serde::Deserialize<'de> for $name {
            fn deserialize<D: $crate::__serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as $crate::__serde::Deserialize>::deserialize(d)?;
                if s == $s {
                    Ok($name)
                } else {
                    Err(<D::Error as $crate::__serde::de::Error>::custom(format!(
                        "record type is {s:?}, expected {:?}",
                        $s
                    )))
                }
            }
        }
    };
}

crate::type_tag!(/// Tag of [`Request`].
    RequestTag = "verinfer.request.v1");
crate::type_tag!(/// Tag of [`InferenceResult`].
    ResultTag = "verinfer.result.v1");
crate::type_tag!(/// Tag of [`Verdict`]. Version 2 binds the request as well as
    /// the result; `verinfer.verdict.v1` records are refused.
    VerdictTag = "verinfer.verdict.v2");
crate::type_tag!(/// Tag of [`Certificate`].
    CertificateTag = "verinfer.certificate.v1");
crate::type_tag!(/// Tag of [`Receipt`].
    ReceiptTag = "verinfer.receipt.v1");
crate::type_tag!(/// Tag of [`Leaf`].
    LeafTag = "verinfer.leaf.v1");

/// An amount in base units of the network token (18 decimals), written as a
/// decimal string because it can exceed the 2^53 range of JSON numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u128);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Amount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Canonical decimal: digits only, no sign, no leading zeros.
        if s.is_empty()
            || !s.bytes().all(|b| b.is_ascii_digit())
            || (s.len() > 1 && s.starts_with('0'))
        {
            return Err(format!("{s:?} is not a canonical decimal amount"));
        }
        s.parse::<u128>()
            .map(Amount)
            .map_err(|_| format!("amount {s} is too large"))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Sixteen random bytes, hex in records: request nonces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nonce(pub [u8; 16]);

impl Nonce {
    /// A fresh random nonce.
    pub fn random() -> Self {
        Nonce(rand::random())
    }
}

/// Thirty-two random bytes, hex in records: commitment salts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Salt(pub [u8; 32]);

impl Salt {
    /// A fresh random salt.
    pub fn random() -> Self {
        Salt(rand::random())
    }
}

macro_rules! hex_bytes_serde {
    ($t:ident, $n:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                crate::hash::serialize_hex(&self.0, s)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                parse_hex_array::<$n>(&s).map($t).ok_or_else(|| {
                    serde::de::Error::custom(concat!("expected ", $n, " bytes of lowercase hex"))
                })
            }
        }
    };
}
hex_bytes_serde!(Nonce, 16);
hex_bytes_serde!(Salt, 32);

/// Reads an optional field that is absent or holds a value. An explicit
/// `null` is refused, so a record has one encoding: its canonical form omits
/// the field, and a checker that hashes the bytes it was given (as the Python
/// and JavaScript verifiers do) reaches the same verdict as this one.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// One chat message, OpenAI style.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// What the model is asked: chat messages (rendered with the model's chat
/// template), a raw prompt string, or prompt token ids.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Input {
    /// Chat messages.
    Messages(Vec<Message>),
    /// A raw text prompt, tokenised without a chat template.
    Prompt(String),
    /// Prompt token ids, used as they are.
    Tokens(Vec<u32>),
}

/// Decoding parameters. No floats: temperature and top-p are in thousandths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decoding {
    /// Temperature x 1000; 0 means greedy (arg-max).
    pub temperature_milli: u32,
    /// Keep only the k most likely tokens; 0 means no limit.
    pub top_k: u32,
    /// Nucleus threshold x 1000; 1000 means no limit.
    pub top_p_milli: u32,
    /// Seed of the counter-based sampler RNG (at most 2^53 - 1).
    pub seed: u64,
    /// Most output tokens.
    pub max_tokens: u32,
    /// Stop sequences: generation ends when the output text contains one.
    pub stop: Vec<String>,
    /// A grammar the output must follow, enforced while decoding: at each
    /// position only tokens that keep the output a valid prefix are allowed
    /// (see [`Constraint`]). Absent in unconstrained requests, whose bytes
    /// are then those of records made before the field existed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub constraint: Option<Constraint>,
    /// Log-probabilities to report: `Some(n)` asks, at each output
    /// position, for the chosen token's log-probability and the `n` (at most
    /// [`MAX_TOP_LOGPROBS`]) most likely tokens with theirs.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub top_logprobs: Option<u32>,
    /// Frequency penalty x 1000 (-2000 to 2000): subtracted from a token's
    /// logit once per time it already occurs in the output.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub frequency_penalty_milli: i32,
    /// Presence penalty x 1000 (-2000 to 2000): subtracted from the logit of
    /// every token that already occurs in the output.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub presence_penalty_milli: i32,
    /// Added to the logits of the tokens named, in increasing token order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logit_bias: Vec<LogitBias>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// Most alternatives a request may ask for at each position.
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Largest penalty magnitude, x 1000.
pub const MAX_PENALTY_MILLI: i32 = 2000;
/// Largest logit bias magnitude, x 1000.
pub const MAX_LOGIT_BIAS_MILLI: i32 = 100_000;
/// Most tokens a logit bias may name.
pub const MAX_LOGIT_BIAS_TOKENS: usize = 1024;

/// A bias added to one token's logit at every position.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogitBias {
    /// The token id.
    pub token: u32,
    /// The bias x 1000 (-100000 to 100000).
    pub bias_milli: i32,
}

/// A grammar the output is constrained to while decoding (structured
/// outputs). The allowed tokens at each position are a deterministic
/// function of the model's vocabulary, the output tokens so far and this
/// value, so verifiers recompute them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Constraint {
    /// Any JSON object (OpenAI's `json_object`).
    JsonObject,
    /// A JSON document matching this JSON schema (OpenAI's `json_schema`).
    JsonSchema(serde_json::Value),
    /// Function calls (OpenAI's `tools`): one call object per line, each
    /// `{"name": NAME, "parameters": ARGUMENTS}` with the arguments matching
    /// that function's schema; or, when `text`, free text instead, which
    /// cannot start with `{`.
    ToolCalls(ToolCalls),
}

/// The functions a [`Constraint::ToolCalls`] answer may call, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolCalls {
    /// The functions, each with its parameters' JSON schema (distinct names).
    pub functions: Vec<ToolFunction>,
    /// Whether the answer may be text instead of calls (`tool_choice: auto`).
    pub text: bool,
    /// Whether the answer may hold several calls (`parallel_tool_calls`).
    pub parallel: bool,
}

/// One function a [`ToolCalls`] constraint offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFunction {
    /// The function's name.
    pub name: String,
    /// The JSON schema its arguments match.
    pub parameters: serde_json::Value,
}

impl Default for Decoding {
    fn default() -> Self {
        Decoding {
            temperature_milli: 0,
            top_k: 0,
            top_p_milli: 1000,
            seed: 0,
            max_tokens: 256,
            stop: Vec::new(),
            constraint: None,
            top_logprobs: None,
            frequency_penalty_milli: 0,
            presence_penalty_milli: 0,
            logit_bias: Vec::new(),
        }
    }
}

/// How a request's answer is verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum VerificationMode {
    /// Signature only.
    None,
    /// `k` verifiers, all must accept.
    Quorum {
        /// Committee size.
        k: u32,
    },
    /// Checked with probability `p_milli / 1000`, drawn after the result is fixed.
    Sampled {
        /// Probability x 1000.
        p_milli: u32,
    },
    /// Provisional at once, final when no challenge arrives within the window.
    Optimistic {
        /// Challenge window in seconds.
        window_secs: u64,
    },
}

/// Where an `optimistic` answer stands: provisional during its challenge
/// window, then final, or overturned by a challenge inside the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum Finality {
    /// Inside the window: a challenge may still overturn it.
    Provisional {
        /// Ledger time (Unix ms) at which the window closes.
        until_ms: u64,
    },
    /// The window passed with no valid challenge.
    Final,
    /// A challenge proved the answer a fault: the requester was refunded
    /// and the node slashed.
    Overturned,
}

impl Finality {
    /// `provisional`, `final` or `overturned`.
    pub fn name(&self) -> &'static str {
        match self {
            Finality::Provisional { .. } => "provisional",
            Finality::Final => "final",
            Finality::Overturned => "overturned",
        }
    }
}

/// The request's policy: verification mode and output constraints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Verification mode.
    pub verification: VerificationMode,
    /// A JSON schema the output must satisfy, if any.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub json_schema: Option<serde_json::Value>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            verification: VerificationMode::Quorum { k: 1 },
            json_schema: None,
        }
    }
}

/// A request for one inference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `verinfer.request.v1`.
    #[serde(rename = "type")]
    pub tag: RequestTag,
    /// Model id: SHA-256 of the model file.
    pub model: Hash,
    /// The input.
    pub input: Input,
    /// Decoding parameters.
    pub decoding: Decoding,
    /// Verification policy.
    pub policy: Policy,
    /// The account that pays.
    pub requester: PublicKey,
    /// Makes each request unique.
    pub nonce: Nonce,
    /// The requester, or the gateway signing for its API-key users.
    pub signer: PublicKey,
    /// Signature by `signer`.
    pub signature: Signature,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model emitted an end-of-sequence token.
    Eos,
    /// The output reached a stop sequence.
    Stop,
    /// `max_tokens` was reached.
    Length,
}

/// Token counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Tokens in the prompt (after the chat template).
    pub prompt_tokens: u32,
    /// Tokens generated.
    pub completion_tokens: u32,
}

/// An inference node's signed answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceResult {
    /// `verinfer.result.v1`.
    #[serde(rename = "type")]
    pub tag: ResultTag,
    /// Hash of the request answered.
    pub request: Hash,
    /// Model id used.
    pub model: Hash,
    /// Engine name and version, which fixes the numerics and the margin rule.
    pub engine: String,
    /// Output token ids.
    pub output_tokens: Vec<u32>,
    /// The decoding of the output tokens.
    pub output_text: String,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// One entry per output token when the request asks for
    /// log-probabilities (`decoding.top_logprobs`), absent otherwise.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The inference node.
    pub node: PublicKey,
    /// Signature by `node`.
    pub signature: Signature,
}

/// A token with its log-probability under the decoding rule's logits (after
/// penalties and logit bias, before temperature, top-k and top-p), in
/// micro-nats: `round(1e6 * ln p)`, so records hold integers only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLogprob {
    /// The token id.
    pub token: u32,
    /// The token's bytes (what the client shows as its text).
    pub bytes: HexBytes,
    /// Its log-probability in micro-nats (at most 0).
    pub logprob_micro: i64,
    /// For an output position: the most likely tokens, best first
    /// (`decoding.top_logprobs` of them). Empty inside that list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top: Vec<TokenLogprob>,
}

/// Bytes written as lowercase hex.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        crate::hash::serialize_hex(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(serde::de::Error::custom("expected lowercase hex"));
        }
        hex::decode(&s)
            .map(HexBytes)
            .map_err(|_| serde::de::Error::custom("expected lowercase hex"))
    }
}

/// A verifier's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The result follows the rules.
    Accept,
    /// The result breaks a rule.
    Reject,
}

/// A verifier's signed decision on one [`InferenceResult`] checked against
/// one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// `verinfer.verdict.v2`.
    #[serde(rename = "type")]
    pub tag: VerdictTag,
    /// Hash of the request the result was checked against. A rejection only
    /// means something about the pair: without it, an honest result checked
    /// against another request would read as the node's fault.
    pub request: Hash,
    /// Hash of the result checked.
    pub result: Hash,
    /// Accept or reject.
    pub decision: Decision,
    /// Why, for a rejection (a reason code and detail).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub reason: Option<String>,
    /// First output position that failed, for token-level rejections.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub failed_position: Option<u32>,
    /// Output positions checked by recomputation.
    pub checked_positions: u32,
    /// CPU time spent checking, in microseconds.
    pub cost_micros: u64,
    /// The verifier.
    pub verifier: PublicKey,
    /// Signature by `verifier`.
    pub signature: Signature,
}

/// Rejection reason codes that are the inference node's fault: a result
/// rejected for one of them is provable cheating, and only verdicts with
/// these codes count toward a slash. The other codes (`bad_signature`,
/// `bad_request`, `wrong_request`, `wrong_engine`, `schema`) describe a
/// request, a pairing or a setup the node is not answerable for.
pub const NODE_FAULT_CODES: &[&str] = &[
    "token_mismatch",
    "outside_mask",
    "bad_token",
    "past_max_tokens",
    "past_eos",
    "past_stop",
    "finish_reason",
    "text_mismatch",
    "usage",
    "wrong_model",
    "logprobs",
];

/// The reason code of a verdict's `reason` string (`"token_mismatch: ..."`
/// gives `"token_mismatch"`).
pub fn reason_code(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason).trim()
}

/// Whether `code` is on [`NODE_FAULT_CODES`].
pub fn is_node_fault(code: &str) -> bool {
    NODE_FAULT_CODES.contains(&code)
}

impl Verdict {
    /// Whether this verdict rejects its result for a node fault (a reason
    /// whose code is on [`NODE_FAULT_CODES`]).
    pub fn proves_node_fault(&self) -> bool {
        self.decision == Decision::Reject
            && self
                .reason
                .as_deref()
                .is_some_and(|r| is_node_fault(reason_code(r)))
    }
}

/// A quorum of verdicts on one result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    /// `verinfer.certificate.v1`.
    #[serde(rename = "type")]
    pub tag: CertificateTag,
    /// Hash of the result certified.
    pub result: Hash,
    /// The verdicts, ordered by verifier key.
    pub verdicts: Vec<Verdict>,
}

/// How a fee was split.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fees {
    /// Charged to the requester.
    pub total: Amount,
    /// Paid to the inference node.
    pub node: Amount,
    /// Paid to the verifiers together.
    pub verifiers: Amount,
    /// Paid to the treasury.
    pub treasury: Amount,
    /// Paid to the model's publisher (absent for a model no publisher
    /// registered, so such fees keep the bytes they always had).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub publisher: Option<PublisherFee>,
}

/// The publisher's part of a fee: who registered the model, and its share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublisherFee {
    /// The publisher's account.
    pub account: PublicKey,
    /// Its share of the total.
    pub amount: Amount,
}

impl Fees {
    /// The publisher's amount (0 when none is paid).
    pub fn publisher_amount(&self) -> u128 {
        self.publisher.map_or(0, |p| p.amount.0)
    }
}

/// A settled inference: its parts, its fees and the salt of its commitments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// `verinfer.receipt.v1`.
    #[serde(rename = "type")]
    pub tag: ReceiptTag,
    /// The request.
    pub request: Request,
    /// The signed result.
    pub result: InferenceResult,
    /// The certificate.
    pub certificate: Certificate,
    /// The fee breakdown.
    pub fees: Fees,
    /// Salt of the commitments in the log leaf.
    pub salt: Salt,
}

/// What the log holds for a receipt: commitments, not text.
///
/// `request` and `result` are salted hashes of the canonical records, so the
/// log reveals nothing about prompts or outputs, while a receipt opened by its
/// owner can be checked against the leaf.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Leaf {
    /// `verinfer.leaf.v1`.
    #[serde(rename = "type")]
    pub tag: LeafTag,
    /// Model id.
    pub model: Hash,
    /// Inference node.
    pub node: PublicKey,
    /// Paying account.
    pub requester: PublicKey,
    /// SHA-256(salt || canonical request).
    pub request: Hash,
    /// SHA-256(salt || canonical result).
    pub result: Hash,
    /// Hash of the certificate.
    pub certificate: Hash,
    /// The fees settled.
    pub fees: Fees,
}

/// Salted commitment to a record: SHA-256(salt || canonical bytes).
pub fn commitment<R: Record>(salt: &Salt, record: &R) -> Result<Hash, RecordError> {
    Ok(Hash::of_parts(&[&salt.0, &record.to_canonical()?]))
}

impl Receipt {
    /// The log leaf this receipt commits to.
    pub fn leaf(&self) -> Result<Leaf, RecordError> {
        self.leaf_from(&self.request.to_canonical()?, &self.result.to_canonical()?)
    }

    /// The leaf, from the canonical bytes of the request and result (for
    /// callers that already encoded them).
    pub fn leaf_from(&self, request: &[u8], result: &[u8]) -> Result<Leaf, RecordError> {
        Ok(Leaf {
            tag: LeafTag,
            model: self.result.model,
            node: self.result.node,
            requester: self.request.requester,
            request: Hash::of_parts(&[&self.salt.0, request]),
            result: Hash::of_parts(&[&self.salt.0, result]),
            certificate: self.certificate.hash()?,
            fees: self.fees,
        })
    }
}

macro_rules! record {
    ($t:ty, $tag:ty) => {
        impl Record for $t {
            const TYPE: &'static str = <$tag>::TYPE;
        }
    };
    ($t:ty, $tag:ty, signed by $signer:ident) => {
        record!($t, $tag);
        impl SignedRecord for $t {
            fn signer(&self) -> &PublicKey {
                &self.$signer
            }
            fn signature_mut(&mut self) -> &mut Signature {
                &mut self.signature
            }
            fn signature(&self) -> &Signature {
                &self.signature
            }
        }
    };
}
record!(Request, RequestTag, signed by signer);
record!(InferenceResult, ResultTag, signed by node);
record!(Verdict, VerdictTag, signed by verifier);
record!(Certificate, CertificateTag);
record!(Receipt, ReceiptTag);
record!(Leaf, LeafTag);

impl Request {
    /// Checks what can be checked without a model: the signature, and that
    /// numbers that must fit JSON's safe range do.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.decoding.seed > canonical::MAX_SAFE_INTEGER {
            return Err(RecordError::Invalid {
                record: Request::TYPE,
                reason: "seed must be at most 2^53 - 1".into(),
            });
        }
        let d = &self.decoding;
        let invalid = |reason: String| RecordError::Invalid {
            record: Request::TYPE,
            reason,
        };
        if d.top_logprobs.is_some_and(|n| n > MAX_TOP_LOGPROBS) {
            return Err(invalid(format!(
                "top_logprobs must be at most {MAX_TOP_LOGPROBS}"
            )));
        }
        for (name, p) in [
            ("frequency_penalty_milli", d.frequency_penalty_milli),
            ("presence_penalty_milli", d.presence_penalty_milli),
        ] {
            if p.unsigned_abs() > MAX_PENALTY_MILLI.unsigned_abs() {
                return Err(invalid(format!(
                    "{name} must be within +-{MAX_PENALTY_MILLI}"
                )));
            }
        }
        if d.logit_bias.len() > MAX_LOGIT_BIAS_TOKENS {
            return Err(invalid(format!(
                "logit_bias names at most {MAX_LOGIT_BIAS_TOKENS} tokens"
            )));
        }
        if d.logit_bias.windows(2).any(|w| w[0].token >= w[1].token) {
            return Err(invalid(
                "logit_bias tokens must be in increasing order".into(),
            ));
        }
        if d.logit_bias
            .iter()
            .any(|b| b.bias_milli.unsigned_abs() > MAX_LOGIT_BIAS_MILLI.unsigned_abs())
        {
            return Err(invalid(format!(
                "logit_bias values must be within +-{MAX_LOGIT_BIAS_MILLI}"
            )));
        }
        if self.decoding.top_p_milli > 1000 {
            return Err(RecordError::Invalid {
                record: Request::TYPE,
                reason: "top_p_milli must be at most 1000".into(),
            });
        }
        self.verify_signature()
    }
}
