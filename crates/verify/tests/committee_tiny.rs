#![allow(clippy::unwrap_used)]
//! Committees with real checkers on a tiny GGUF model: certificates from
//! honest verifiers, and verifiers that always accept or always reject
//! outvoted and named in disputes.

use verinfer_inference::respond::{falsify, respond, Fault};
use verinfer_inference::testing::{tiny_model, TinySpec};
use verinfer_inference::{Engine, EngineOptions};
use verinfer_types::records::{
    Decision, Decoding, FinishReason, InferenceResult, Input, Nonce, Policy, Request, RequestTag,
    Verdict,
};
use verinfer_types::testing::key;
use verinfer_types::{Hash, PublicKey, Record, SecretKey, SignedRecord};
use verinfer_verify::checker::{Checker, Outcome};
use verinfer_verify::committee::{
    assemble_certificate, resolve_dispute, select, selection_seed, verify_certificate,
    CertificateError, Offender,
};
use verinfer_verify::rules::Rejection;

/// A verifier: honest (recomputes), or lazy with a fixed decision.
#[allow(clippy::large_enum_variant)]
enum Verifier {
    Honest(Checker<Engine>),
    Always(SecretKey, Decision),
}

impl Verifier {
    fn public(&self) -> PublicKey {
        match self {
            Verifier::Honest(c) => c.key().public(),
            Verifier::Always(k, _) => k.public(),
        }
    }

    fn verdict(&mut self, req: &Request, res: &InferenceResult) -> Verdict {
        match self {
            Verifier::Honest(c) => c.verdict(req, res).unwrap(),
            Verifier::Always(k, d) => Outcome {
                request: req.hash().unwrap(),
                result: res.hash().unwrap(),
                rejection: (*d == Decision::Reject).then(|| Rejection::TokenMismatch {
                    position: 0,
                    claimed: res.output_tokens[0],
                    expected: 0,
                }),
                checked_positions: 0,
                cost_micros: 1,
            }
            .to_verdict(k)
            .unwrap(),
        }
    }
}

struct Net {
    _dir: tempfile::TempDir,
    node: Engine,
    model: Hash,
    verifiers: Vec<Verifier>,
}

fn net() -> Net {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_model(&TinySpec::default());
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let model = Hash::of(&bytes);
    let load = || {
        Engine::load(
            &path,
            EngineOptions {
                threads: 1,
                force_scalar: false,
            },
        )
        .unwrap()
    };
    // Verifiers 40..45 honest, 46 always accepts, 47 always rejects.
    let mut verifiers: Vec<Verifier> = (40..46)
        .map(|s| Verifier::Honest(Checker::new(load(), model, key(s))))
        .collect();
    verifiers.push(Verifier::Always(key(46), Decision::Accept));
    verifiers.push(Verifier::Always(key(47), Decision::Reject));
    Net {
        _dir: dir,
        node: load(),
        model,
        verifiers,
    }
}

fn request(model: Hash, nonce: u8) -> Request {
    let k = key(1);
    let mut r = Request {
        tag: RequestTag,
        model,
        input: Input::Prompt("hello world".into()),
        decoding: Decoding {
            temperature_milli: 800,
            top_k: 20,
            top_p_milli: 950,
            seed: 4,
            max_tokens: 16,
            stop: Vec::new(),
            ..Default::default()
        },
        policy: Policy::default(),
        requester: k.public(),
        nonce: Nonce([nonce; 16]),
        signer: k.public(),
        signature: Default::default(),
    };
    r.sign(&k).unwrap();
    r
}

/// An honest answer, or with `edit` the `edit-token` fault at that position.
fn answer(engine: &mut Engine, req: &Request, edit: Option<u32>) -> InferenceResult {
    let res = respond(engine, req.model, req, &key(2), &mut |_, _| {}).unwrap();
    assert_eq!(res.finish_reason, FinishReason::Length);
    match edit {
        Some(p) => falsify(engine, req, &res, &Fault::EditToken(p), &key(2)).unwrap(),
        None => res,
    }
}

fn verdicts(net: &mut Net, who: &[usize], req: &Request, res: &InferenceResult) -> Vec<Verdict> {
    who.iter()
        .map(|&i| net.verifiers[i].verdict(req, res))
        .collect()
}

fn keys(net: &Net, who: &[usize]) -> Vec<PublicKey> {
    who.iter().map(|&i| net.verifiers[i].public()).collect()
}

#[test]
fn honest_committee_certifies_and_drawn_members_are_candidates() {
    let mut net = net();
    let req = request(net.model, 1);
    let res = answer(&mut net.node, &req, None);
    let h = res.hash().unwrap();
    let honest: Vec<PublicKey> = keys(&net, &[0, 1, 2, 3, 4, 5]);
    let seed = selection_seed(b"example.org/log\n7\nroot\n", &h);
    let drawn = select(&honest, 3, &seed, 0);
    assert_eq!(drawn.len(), 3);
    let idx: Vec<usize> = drawn
        .iter()
        .map(|k| honest.iter().position(|h| h == k).unwrap())
        .collect();
    let vs = verdicts(&mut net, &idx, &req, &res);
    let cert = assemble_certificate(&res.request, &h, &drawn, 3, &vs).unwrap();
    verify_certificate(&cert, &res.request, &h, &drawn, 3).unwrap();
}

#[test]
fn always_reject_verifier_is_outvoted_and_named() {
    let mut net = net();
    let req = request(net.model, 2);
    let res = answer(&mut net.node, &req, None);
    let h = res.hash().unwrap();
    // First round: two honest and the always-reject verifier.
    let first = [0, 1, 7];
    let vs = verdicts(&mut net, &first, &req, &res);
    let err = assemble_certificate(&res.request, &h, &keys(&net, &first), 3, &vs).unwrap_err();
    assert!(matches!(err, CertificateError::Rejected(ref r) if r.len() == 1));
    // Escalation: five verifiers including the always-reject one.
    let second = [2, 3, 4, 5, 7];
    let esc = verdicts(&mut net, &second, &req, &res);
    let out = resolve_dispute(&res, &vs, &keys(&net, &second), &esc).unwrap();
    assert_eq!(out.decision, Decision::Accept);
    assert_eq!(out.wrong, vec![Offender::Verifier(key(47).public())]);
    assert_eq!(out.evidence.majority.len(), 4);
    assert!(out
        .evidence
        .losing
        .iter()
        .all(|v| v.verifier == key(47).public()));
}

#[test]
fn cheating_node_and_always_accept_verifier_are_named() {
    let mut net = net();
    let req = request(net.model, 3);
    let res = answer(&mut net.node, &req, Some(5));
    let h = res.hash().unwrap();
    // First round: the always-accept verifier and one honest verifier.
    let first = [6, 0];
    let vs = verdicts(&mut net, &first, &req, &res);
    let honest = vs.iter().find(|v| v.verifier == key(40).public()).unwrap();
    assert_eq!(honest.decision, Decision::Reject);
    assert_eq!(honest.failed_position, Some(5));
    assert!(matches!(
        assemble_certificate(&res.request, &h, &keys(&net, &first), 2, &vs),
        Err(CertificateError::Rejected(_))
    ));
    let second = [1, 2, 3, 4, 6];
    let esc = verdicts(&mut net, &second, &req, &res);
    let out = resolve_dispute(&res, &vs, &keys(&net, &second), &esc).unwrap();
    assert_eq!(out.decision, Decision::Reject);
    assert_eq!(
        out.wrong,
        vec![
            Offender::Node(key(2).public()),
            Offender::Verifier(key(46).public())
        ]
    );
    assert_eq!(out.evidence.result, res);
    assert!(out
        .evidence
        .majority
        .iter()
        .all(|v| v.failed_position == Some(5)));
}
