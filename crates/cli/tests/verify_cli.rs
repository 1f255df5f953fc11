//! `verinfer verify` on signed receipt bundles: the honest one exits 0, one
//! changed byte exits 1 with the reason on stderr, and a receipt that cannot
//! be read or fetched exits 2. `--url` is run against a minimal HTTP server
//! that serves the bundle first without a checkpoint, then with one.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use verinfer_verify::testing::signed_bundle;

fn verinfer(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verinfer"))
        .args(args)
        .env("VERINFER_LOG", "warn")
        .env_remove("VERINFER_API_KEY")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn write_bundle(dir: &Path, name: &str, json: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, json).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn honest_bundle_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let json = serde_json::to_string_pretty(&signed_bundle()).unwrap();
    let file = write_bundle(dir.path(), "r.json", &json);
    let out = verinfer(&["verify", &file], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("status: verified"), "{stdout}");
    assert!(stdout.contains("taken from the receipt"), "{stdout}");

    // From stdin, as JSON.
    let out = verinfer(&["verify", "--json", "-"], Some(json.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["report"]["status"], "verified");
    assert_eq!(v["report"]["checkpoint"]["cosignatures"], 3);
}

#[test]
fn one_changed_byte_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let json = serde_json::to_string_pretty(&signed_bundle()).unwrap();
    let at = json.find("Jupiter").unwrap();
    let mut bytes = json.into_bytes();
    bytes[at] = b'K';
    let file = write_bundle(dir.path(), "r.json", &text(&bytes));
    let out = verinfer(&["verify", &file], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains("result commitment"), "{stderr}");
}

#[test]
fn pinned_keys_are_used() {
    let dir = tempfile::tempdir().unwrap();
    let b = signed_bundle();
    let file = write_bundle(dir.path(), "r.json", &serde_json::to_string(&b).unwrap());
    // The bundle's own keys, pinned: passes, and says so.
    let out = verinfer(
        &[
            "verify",
            "--log-key",
            &b.log_key,
            "--witness",
            &b.witnesses[0],
            "--witness",
            &b.witnesses[1],
            &file,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("signed by the log key (pinned)"));
    // Another log's key: fails the check.
    let other = verinfer_types::note::VerifierKey::new(
        "test.verinfer/receipts",
        verinfer_types::note::ALG_ED25519,
        verinfer_types::SecretKey::from_seed(&[0x99; 32]).public(),
    )
    .unwrap()
    .to_string();
    let out = verinfer(&["verify", "--log-key", &other, &file], None);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    // A quorum the witnesses cannot meet: fails.
    let out = verinfer(&["verify", "--witness-quorum", "4", &file], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("3 trusted witness cosignature(s)"));
    // A malformed pinned key is a usage error.
    let out = verinfer(&["verify", "--log-key", "nonsense", &file], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn pinned_witnesses_pin_the_quorum() {
    // A receipt edited to need no cosignature, with every one removed.
    let dir = tempfile::tempdir().unwrap();
    let b = signed_bundle();
    let mut edited = b.clone();
    edited.witness_quorum = 0;
    edited.checkpoint = Some(
        b.checkpoint
            .clone()
            .unwrap()
            .split_inclusive('\n')
            .filter(|l| !l.starts_with("\u{2014} witness.verinfer/"))
            .collect(),
    );
    let file = write_bundle(
        dir.path(),
        "edited.json",
        &serde_json::to_string(&edited).unwrap(),
    );
    let pinned = |extra: &[&str]| {
        let mut args = vec!["verify", "--log-key", &b.log_key];
        for w in &b.witnesses {
            args.extend(["--witness", w.as_str()]);
        }
        args.extend(extra);
        args.push(&file);
        verinfer(&args, None)
    };
    // Default: a majority of the three pinned witnesses.
    let out = pinned(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("0 trusted witness cosignature(s) on the checkpoint; 2 needed"),
        "{}",
        text(&out.stderr)
    );
    // An explicit quorum is the caller's; 0 is not a quorum.
    let out = pinned(&["--witness-quorum", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let out = pinned(&["--witness-quorum", "0"]);
    assert_eq!(out.status.code(), Some(2));
    // Unpinned, the receipt's own (edited) keys are used, and the output says so.
    let out = verinfer(&["verify", &file], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("quorum taken from the receipt"));
}

#[test]
fn unreadable_receipts_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let out = verinfer(&["verify", missing.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing.json"));

    let bad = write_bundle(dir.path(), "bad.json", "{\"not\": \"a bundle\"}");
    let out = verinfer(&["verify", &bad], None);
    assert_eq!(out.status.code(), Some(2));
}

/// Serves `bodies` (status, body) one per connection, recording each
/// request's head.
fn serve(bodies: Vec<(u16, String)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let n = bodies.len();
        for (i, stream) in listener.incoming().enumerate() {
            let mut stream = stream.unwrap();
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            log.lock().unwrap().push(head);
            let (status, body) = &bodies[i.min(n - 1)];
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    (url, seen)
}

#[test]
fn fetches_waits_for_the_checkpoint_and_saves() {
    let b = signed_bundle();
    let mut pending = b.clone();
    pending.checkpoint = None;
    pending.inclusion_proof.clear();
    let (url, seen) = serve(vec![
        (200, serde_json::to_string(&pending).unwrap()),
        (200, serde_json::to_string(&b).unwrap()),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("saved.json");
    let id = b.id.to_hex();
    let out = verinfer(
        &[
            "verify",
            "--url",
            &url,
            "--api-key",
            "sk-test",
            "--out",
            saved.to_str().unwrap(),
            &id,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[0].starts_with(&format!("GET /v1/receipts/{id} ")));
    assert!(heads[0]
        .to_lowercase()
        .contains("authorization: bearer sk-test"));
    let back: verinfer_verify::receipt::ReceiptBundle =
        serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(back, b);
}

#[test]
fn fetch_without_checkpoint_in_time_exits_1() {
    let mut pending = signed_bundle();
    pending.checkpoint = None;
    let (url, _) = serve(vec![(200, serde_json::to_string(&pending).unwrap())]);
    let id = pending.id.to_hex();
    let out = verinfer(&["verify", "--url", &url, "--wait", "0", &id], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no cosigned checkpoint covers this receipt yet"));
}

#[test]
fn fetch_of_another_receipt_exits_1() {
    let b = signed_bundle();
    let (url, _) = serve(vec![(200, serde_json::to_string(&b).unwrap())]);
    let other = "ab".repeat(32);
    let out = verinfer(&["verify", "--url", &url, &other], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("asked for receipt"));
}

#[test]
fn http_errors_exit_2_with_their_message() {
    let body = r#"{"error":{"message":"receipt not found","type":"invalid_request_error","param":null,"code":"not_found"}}"#;
    let (url, _) = serve(vec![(404, body.to_string())]);
    let out = verinfer(&["verify", "--url", &url, &"cd".repeat(32)], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("receipt not found"));
}
