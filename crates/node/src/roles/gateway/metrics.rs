//! `/metrics`: the gateway's counters and the nodes it sees, in Prometheus
//! text format.

pub use super::counters::{Counters, Snapshot};
use super::state::Gateway;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use verinfer_ledger::tx::Role;

/// Appends one metric family to `out` in Prometheus text format.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    out.push_str(&format!(
        "# HELP verinfer_{name} {help}\n# TYPE verinfer_{name} {kind}\n"
    ));
    for (labels, v) in samples {
        if labels.is_empty() {
            out.push_str(&format!("verinfer_{name} {v}\n"));
        } else {
            out.push_str(&format!("verinfer_{name}{{{labels}}} {v}\n"));
        }
    }
}

pub(super) async fn metrics_text(State(gw): State<Arc<Gateway>>) -> Response {
    let c = gw.counters.snapshot();
    let mut out = String::new();
    family(
        &mut out,
        "requests_total",
        "counter",
        "API requests received.",
        &[("", c.requests)],
    );
    family(
        &mut out,
        "answers_total",
        "counter",
        "Answers by verification status.",
        &[
            ("status=\"verified\"", c.verified),
            ("status=\"provisional\"", c.provisional),
            ("status=\"rejected\"", c.rejected),
        ],
    );
    family(
        &mut out,
        "errors_total",
        "counter",
        "Requests answered with an error.",
        &[("", c.errors)],
    );
    family(
        &mut out,
        "slashes_total",
        "counter",
        "Slashes submitted.",
        &[("", c.slashes)],
    );
    family(
        &mut out,
        "retries_total",
        "counter",
        "Requests retried on another inference node.",
        &[("", c.retries)],
    );
    family(
        &mut out,
        "verdicts_total",
        "counter",
        "Verdicts received.",
        &[("", c.verdicts)],
    );
    family(
        &mut out,
        "tokens_total",
        "counter",
        "Tokens of settled answers.",
        &[
            ("kind=\"prompt\"", c.prompt_tokens),
            ("kind=\"completion\"", c.completion_tokens),
        ],
    );
    let members = gw.directory.members();
    let count = |role: Role, live: bool| {
        members
            .iter()
            .filter(|m| m.view.role == role && gw.directory.is_live(m) == live)
            .count() as u64
    };
    family(
        &mut out,
        "nodes",
        "gauge",
        "Registered nodes by role and liveness.",
        &[
            (
                "role=\"inference\",live=\"true\"",
                count(Role::Inference, true),
            ),
            (
                "role=\"inference\",live=\"false\"",
                count(Role::Inference, false),
            ),
            (
                "role=\"verifier\",live=\"true\"",
                count(Role::Verifier, true),
            ),
            (
                "role=\"verifier\",live=\"false\"",
                count(Role::Verifier, false),
            ),
        ],
    );
    if let Some(p) = gw.directory.params() {
        family(
            &mut out,
            "ledger_height",
            "gauge",
            "Transactions applied by the ledger.",
            &[("", p.height)],
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
