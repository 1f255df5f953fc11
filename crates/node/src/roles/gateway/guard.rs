//! What the gateway refuses before it does any work.
//!
//! - Proxied reads (`/log/...`, `/v1/explorer/...`) are forwarded only when
//!   the raw request target is plainly one of the allowed paths: the URL
//!   library that sends them on resolves `..` and decodes `%2e`, so anything
//!   it could rewrite (percent-encoding, backslashes, dot or empty segments)
//!   is a 400 before any proxying.
//! - A chat request a node would refuse (token ids outside the vocabulary,
//!   in the prompt or in `logit_bias`, a
//!   prompt or `max_tokens` beyond the context window), or that could not be
//!   verified (a quorum larger than the live verifiers, an invalid JSON
//!   schema), is a 400 or 503 before any money is reserved, any node runs or
//!   any text is streamed: a node's refusal of bad input is then never
//!   mistaken for a node failure, and no answer streams that cannot be paid
//!   for.

use super::openai::ApiError;
use verinfer_types::records::{Decoding, Input, Policy, VerificationMode};

/// Largest quorum a request may ask for.
pub const MAX_QUORUM: u32 = 64;

/// Ledger reads the gateway serves under its own paths.
const LOG_READS: [&str; 3] = ["checkpoint", "proof/inclusion", "proof/consistency"];
const EXPLORER_READS: [&str; 4] = ["records", "checkpoints", "settlement", "network"];

/// The ledger path and query to forward a proxied read to, from the raw
/// request target's `path` (as received, not decoded) and `query`.
/// `Ok(None)`: a plain path that is not served (404).
pub fn proxy_target(path: &str, query: Option<&str>) -> Result<Option<String>, ApiError> {
    let bad = |why: &str| {
        ApiError::field(
            "path",
            format!("the request path {why}; only plain paths are forwarded"),
        )
    };
    if path.contains('%') {
        return Err(bad("is percent-encoded"));
    }
    if path.contains('\\') {
        return Err(bad("contains a backslash"));
    }
    let segments: Vec<&str> = path
        .strip_prefix('/')
        .ok_or_else(|| bad("is not absolute"))?
        .split('/')
        .collect();
    for s in &segments {
        if s.is_empty() || *s == "." || *s == ".." {
            return Err(bad("has an empty, `.` or `..` segment"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(bad(
                "has a character other than letters, digits, `.`, `_`, `-`",
            ));
        }
    }
    let target = match segments.as_slice() {
        ["log", "tile", _, ..] => path.to_string(),
        ["log", rest @ ..] if LOG_READS.contains(&rest.join("/").as_str()) => path.to_string(),
        ["v1", "explorer", what] if EXPLORER_READS.contains(what) => {
            format!("/ledger/explorer/{what}")
        }
        _ => return Ok(None),
    };
    Ok(Some(match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{target}?{q}"),
        None => target,
    }))
}

/// What the live nodes of a model announce, for [`precheck`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Capacity {
    /// The model's vocabulary size (0: no live node said).
    pub vocab_size: u32,
    /// The model's context window in tokens (0: no live node said).
    pub context_len: u32,
    /// Live verifiers of the model.
    pub verifiers: usize,
    /// The ledger's minimum quorum.
    pub quorum: u32,
}

/// Refuses, naming the field, a request no node could answer or no
/// committee could verify.
pub fn precheck(
    input: &Input,
    decoding: &Decoding,
    policy: &Policy,
    cap: &Capacity,
) -> Result<(), ApiError> {
    if let Input::Tokens(tokens) = input {
        if tokens.is_empty() {
            return Err(ApiError::field("prompt", "the token prompt is empty"));
        }
        if cap.vocab_size > 0 {
            if let Some((i, t)) = tokens
                .iter()
                .enumerate()
                .find(|(_, t)| **t >= cap.vocab_size)
            {
                return Err(ApiError::field(
                    "prompt",
                    format!(
                        "token id {t} at prompt[{i}] is outside the model's vocabulary of {} tokens",
                        cap.vocab_size
                    ),
                ));
            }
        }
        if cap.context_len > 0 && tokens.len() as u64 >= u64::from(cap.context_len) {
            return Err(ApiError::field(
                "prompt",
                format!(
                    "the prompt has {} tokens; the model's context window is {}",
                    tokens.len(),
                    cap.context_len
                ),
            ));
        }
    }
    if let Some(b) = decoding
        .logit_bias
        .iter()
        .find(|b| cap.vocab_size > 0 && b.token >= cap.vocab_size)
    {
        return Err(ApiError::field(
            "logit_bias",
            format!(
                "token id {} in `logit_bias` is outside the model's vocabulary of {} tokens",
                b.token, cap.vocab_size
            ),
        ));
    }
    if cap.context_len > 0 && decoding.max_tokens > cap.context_len {
        return Err(ApiError::field(
            "max_tokens",
            format!(
                "`max_tokens` is {}; the model's context window is {} tokens",
                decoding.max_tokens, cap.context_len
            ),
        ));
    }
    let needed = match policy.verification {
        VerificationMode::Quorum { k } if k > MAX_QUORUM => {
            return Err(ApiError::field(
                "verification",
                format!("quorum k must be at most {MAX_QUORUM}"),
            ))
        }
        VerificationMode::Quorum { k } => k.max(cap.quorum),
        VerificationMode::Sampled { p_milli } if p_milli > 1000 => {
            return Err(ApiError::field(
                "verification",
                "sampled p_milli must be at most 1000",
            ))
        }
        VerificationMode::Sampled { p_milli } => u32::from(p_milli > 0),
        VerificationMode::None | VerificationMode::Optimistic { .. } => 0,
    };
    if cap.verifiers < needed as usize {
        return Err(ApiError::unavailable(format!(
            "{} live verifiers serve this model; the request's verification policy needs {needed}",
            cap.verifiers
        )));
    }
    if let Some(schema) = &policy.json_schema {
        jsonschema::validator_for(schema).map_err(|e| {
            ApiError::field(
                "response_format.json_schema.schema",
                format!("invalid JSON schema: {e}"),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_allowed_paths_are_forwarded() {
        let id = "ab".repeat(32);
        let refused = [
            format!("/log/%2e%2e/ledger/receipts/{id}"),
            format!("/log/%2E%2E/ledger/receipts/{id}"),
            format!("/log/..%2fledger/receipts/{id}"),
            format!("/log/..%2Fledger%2Freceipts%2F{id}"),
            format!("/log/%252e%252e/ledger/receipts/{id}"),
            format!("/log/..%5cledger/receipts/{id}"),
            format!("/log/..\\..\\ledger/receipts/{id}"),
            format!("/v1/explorer/../receipts/{id}"),
            format!("/v1/explorer/./../../ledger/receipts/{id}"),
            format!("/log/tile/../../ledger/receipts/{id}"),
            "/log/tile/0/./x001".into(),
            "/log//checkpoint".into(),
            "/v1/explorer/records/".into(),
            "/log/checkpoint;x".into(),
        ];
        for p in &refused {
            let e = proxy_target(p, None).expect_err(p);
            assert_eq!(e.status.as_u16(), 400, "{p}");
            assert_eq!(e.param.as_deref(), Some("path"), "{p}");
        }
        let allowed = [
            ("/log/checkpoint", None, "/log/checkpoint"),
            ("/log/tile/0/x001/234.p/5", None, "/log/tile/0/x001/234.p/5"),
            ("/log/tile/entries/000", None, "/log/tile/entries/000"),
            (
                "/log/proof/inclusion",
                Some("index=3&size=9"),
                "/log/proof/inclusion?index=3&size=9",
            ),
            (
                "/log/proof/consistency",
                Some("old=1&new=2"),
                "/log/proof/consistency?old=1&new=2",
            ),
            (
                "/v1/explorer/records",
                Some("limit=10&q=a%20b"),
                "/ledger/explorer/records?limit=10&q=a%20b",
            ),
            (
                "/v1/explorer/checkpoints",
                None,
                "/ledger/explorer/checkpoints",
            ),
            (
                "/v1/explorer/settlement",
                Some(""),
                "/ledger/explorer/settlement",
            ),
            ("/v1/explorer/network", None, "/ledger/explorer/network"),
        ];
        for (p, q, want) in allowed {
            assert_eq!(proxy_target(p, q).expect(p).as_deref(), Some(want), "{p}");
        }
        for p in [
            "/log/tile",
            "/log/proof",
            "/log/ledger/receipts/00",
            "/v1/explorer/receipts",
            "/v1/explorer/records/more",
        ] {
            assert!(proxy_target(p, None).expect(p).is_none(), "{p}");
        }
    }

    fn tokens(t: Vec<u32>) -> Input {
        Input::Tokens(t)
    }

    fn decoding(max_tokens: u32) -> Decoding {
        Decoding {
            temperature_milli: 0,
            top_k: 0,
            top_p_milli: 1000,
            seed: 0,
            max_tokens,
            stop: Vec::new(),
            ..Default::default()
        }
    }

    fn quorum(k: u32) -> Policy {
        Policy {
            verification: VerificationMode::Quorum { k },
            json_schema: None,
        }
    }

    const CAP: Capacity = Capacity {
        vocab_size: 100,
        context_len: 50,
        verifiers: 3,
        quorum: 2,
    };

    fn refused(input: Input, max_tokens: u32, policy: Policy) -> (u16, Option<String>) {
        let e = precheck(&input, &decoding(max_tokens), &policy, &CAP).expect_err("refused");
        (e.status.as_u16(), e.param)
    }

    #[test]
    fn requests_no_node_could_answer_or_no_committee_verify_are_refused() {
        let ok = precheck(&tokens(vec![0, 99]), &decoding(50), &quorum(3), &CAP);
        assert!(ok.is_ok(), "{ok:?}");
        let prompt = (400, Some("prompt".to_string()));
        assert_eq!(refused(tokens(vec![1, 100]), 4, quorum(2)), prompt);
        assert_eq!(refused(tokens(vec![u32::MAX]), 4, quorum(2)), prompt);
        assert_eq!(refused(tokens(vec![]), 4, quorum(2)), prompt);
        assert_eq!(refused(tokens(vec![1; 50]), 4, quorum(2)), prompt);
        assert_eq!(
            refused(Input::Prompt("hi".into()), 51, quorum(2)),
            (400, Some("max_tokens".into()))
        );
        assert_eq!(
            refused(Input::Prompt("hi".into()), 4, quorum(65)),
            (400, Some("verification".into()))
        );
        // More verifiers than are live: unavailable, before any text.
        assert_eq!(
            refused(Input::Prompt("hi".into()), 4, quorum(64)),
            (503, None)
        );
        assert_eq!(
            refused(Input::Prompt("hi".into()), 4, quorum(4)),
            (503, None)
        );
        let sampled = Policy {
            verification: VerificationMode::Sampled { p_milli: 1001 },
            json_schema: None,
        };
        assert_eq!(
            refused(Input::Prompt("hi".into()), 4, sampled),
            (400, Some("verification".into()))
        );
        let schema = Policy {
            verification: VerificationMode::None,
            json_schema: Some(serde_json::json!({"type": 12})),
        };
        assert_eq!(
            refused(Input::Prompt("hi".into()), 4, schema),
            (400, Some("response_format.json_schema.schema".into()))
        );
        // Nothing announced yet: only the policy is checked.
        let unknown = Capacity {
            verifiers: 2,
            ..Capacity::default()
        };
        assert!(precheck(
            &tokens(vec![u32::MAX]),
            &decoding(1 << 20),
            &quorum(2),
            &unknown
        )
        .is_ok());
    }
}
