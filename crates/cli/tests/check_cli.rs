//! `verinfer check` on `verinfer infer --json` outputs, with the real default
//! model: the honest answer is accepted (exit 0) and every `--fault` kind is
//! rejected (exit 1) with its reason code on stderr; bad input is an error
//! (exit 2), never a panic.
//!
//! Each run loads the model, so the runs are few and short (12 tokens).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn verinfer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verinfer"))
        .args(args)
        .env("VERINFER_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `verinfer infer --json` with 12 tokens, written to `dir/name`.
fn infer(dir: &Path, name: &str, extra: &[&str]) -> (String, Value) {
    let key = dir.join("node.key");
    let mut args = vec![
        "infer",
        "--json",
        "--max-tokens",
        "12",
        "--threads",
        "2",
        "--key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    args.push("Name three colours.");
    let out = verinfer(&args);
    assert!(out.status.success(), "infer {extra:?}: {}", stderr(&out));
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    (path.to_str().unwrap().to_string(), json)
}

fn check(dir: &Path, file: &str) -> Output {
    let key = dir.join("verifier.key");
    verinfer(&[
        "check",
        "--threads",
        "2",
        "--key",
        key.to_str().unwrap(),
        file,
    ])
}

#[test]
fn check_accepts_honest_answers_and_rejects_every_fault() {
    let model = verinfer_inference::models::ensure_default_model().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let (honest, json) = infer(d, "honest.json", &[]);
    let out = check(d, &honest);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(verdict["type"], "verinfer.verdict.v2");
    assert_eq!(verdict["decision"], "accept");
    assert!(d.join("verifier.key").exists());

    // What `extend` runs past first depends on how the honest answer ended.
    let result = &json["result"];
    let n = result["output_tokens"].as_array().unwrap().len();
    let extend_code = match (n + 2 > 12, result["finish_reason"].as_str().unwrap()) {
        (true, _) => "past_max_tokens",
        (false, "eos") => "past_eos",
        (false, _) => "past_stop",
    };

    let swapped = d.join("swapped.gguf");
    std::fs::write(
        &swapped,
        verinfer_verify::testing::same_tokenizer_model(&model, 7).unwrap(),
    )
    .unwrap();
    let swap = format!("swap-model:{}", swapped.display());
    let replay = format!("replay:{honest}");
    let sampled = ["--temperature-milli", "800", "--seed", "5"];
    let cases: [(&str, &[&str], &str, Option<&str>); 7] = [
        ("edit-token:3", &[], "token_mismatch", Some("3")),
        ("off-mask:1", &["--json-object"], "outside_mask", Some("1")),
        ("truncate:4", &[], "finish_reason", None),
        ("extend:2", &[], extend_code, None),
        ("wrong-seed", &sampled, "token_mismatch", None),
        (&replay, &[], "wrong_request", None),
        (&swap, &[], "token_mismatch", None),
    ];
    for (i, (fault, extra, code, position)) in cases.iter().enumerate() {
        let mut args = extra.to_vec();
        args.extend_from_slice(&["--fault", fault]);
        let (file, _) = infer(d, &format!("fault-{i}.json"), &args);
        let out = check(d, &file);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{fault}: {err}");
        assert!(
            err.contains(&format!("rejected: {code}\n")),
            "{fault}: {err}"
        );
        if let Some(p) = position {
            assert!(
                err.contains(&format!("first failing position: {p}\n")),
                "{fault}: {err}"
            );
        }
        let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(verdict["decision"], "reject", "{fault}");
    }
}

#[test]
fn bad_input_is_an_error_not_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let err_of = |file: &str| {
        let out = check(d, file);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(out.stdout.is_empty());
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    let missing = d.join("missing.json");
    assert!(err_of(missing.to_str().unwrap()).contains("reading"));

    let bad = d.join("bad.json");
    std::fs::write(&bad, "{ not json").unwrap();
    assert!(err_of(bad.to_str().unwrap()).contains("is not a"));

    // The records swapped: each has the other's type.
    let swapped = serde_json::json!({
        "request": {"type": "verinfer.result.v1"},
        "result": {"type": "verinfer.request.v1"},
    });
    let wrong = d.join("wrong.json");
    std::fs::write(&wrong, swapped.to_string()).unwrap();
    let err = err_of(wrong.to_str().unwrap());
    assert!(err.contains("record type"), "{err}");

    // --fault needs --json; refused before any model is loaded.
    let out = verinfer(&["infer", "--fault", "wrong-seed", "hello"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--fault needs --json"),
        "{}",
        stderr(&out)
    );
    let out = verinfer(&["infer", "--json", "--fault", "nonsense", "hello"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad fault"), "{}", stderr(&out));
}
