//! `verinfer log ...` from the command line, as other tools script it.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use verinfer_log::merkle::{leaf_hash, verify_consistency, verify_inclusion};
use verinfer_log::SignedCheckpoint;
use verinfer_types::note::VerifierKey;
use verinfer_types::Hash;

fn verinfer(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_verinfer"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: &[u8]) -> String {
    let out = verinfer(args, stdin);
    assert!(
        out.status.success(),
        "verinfer {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn hashes(text: &str) -> Vec<Hash> {
    use base64::Engine as _;
    text.lines()
        .map(|l| {
            let b = base64::engine::general_purpose::STANDARD.decode(l).unwrap();
            Hash(b.try_into().unwrap())
        })
        .collect()
}

#[test]
fn init_append_checkpoint_prove() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let d = dir.to_str().unwrap();
    let key_line = ok(
        &["log", "init", "--dir", d, "--origin", "example.org/cli"],
        b"",
    );
    assert_eq!(key_line.lines().count(), 1);
    let vk: VerifierKey = key_line.trim().parse().unwrap();
    assert_eq!(vk.name, "example.org/cli");

    let indices = ok(&["log", "append", "--dir", d], b"alpha\nbeta\n\ngamma");
    assert_eq!(indices, "0\n1\n2\n3\n");
    assert_eq!(ok(&["log", "append", "--dir", d], b"delta\n"), "4\n");

    let note = ok(&["log", "checkpoint", "--dir", d], b"");
    let cp = SignedCheckpoint::open(&note, &vk).unwrap().checkpoint;
    assert_eq!(cp.size, 5);

    let proof = hashes(&ok(
        &[
            "log",
            "prove-inclusion",
            "--dir",
            d,
            "--index",
            "2",
            "--size",
            "5",
        ],
        b"",
    ));
    verify_inclusion(2, 5, &leaf_hash(b""), &proof, &cp.root).unwrap();
    verify_inclusion(
        3,
        5,
        &leaf_hash(b"gamma"),
        &hashes(&ok(
            &[
                "log",
                "prove-inclusion",
                "--dir",
                d,
                "--index",
                "3",
                "--size",
                "5",
            ],
            b"",
        )),
        &cp.root,
    )
    .unwrap();

    let old_note = {
        // A checkpoint at size 5, then grow and prove consistency.
        ok(&["log", "append", "--dir", d], b"epsilon\nzeta\n");
        note
    };
    let new_cp = SignedCheckpoint::open(&ok(&["log", "checkpoint", "--dir", d], b""), &vk)
        .unwrap()
        .checkpoint;
    assert_eq!(new_cp.size, 7);
    let old_cp = SignedCheckpoint::open(&old_note, &vk).unwrap().checkpoint;
    let proof = hashes(&ok(
        &[
            "log",
            "prove-consistency",
            "--dir",
            d,
            "--old",
            "5",
            "--new",
            "7",
        ],
        b"",
    ));
    verify_consistency(5, 7, &old_cp.root, &new_cp.root, &proof).unwrap();
}

#[test]
fn errors_are_clear_and_exit_nonzero() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("log");
    let d = d.to_str().unwrap();
    let out = verinfer(&["log", "checkpoint", "--dir", d], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("verinfer log init"));

    ok(
        &["log", "init", "--dir", d, "--origin", "example.org/cli"],
        b"",
    );
    let out = verinfer(
        &["log", "init", "--dir", d, "--origin", "example.org/cli"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));

    ok(&["log", "append", "--dir", d], b"one\n");
    let out = verinfer(
        &[
            "log",
            "prove-inclusion",
            "--dir",
            d,
            "--index",
            "0",
            "--size",
            "9",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("larger than the tree"), "{err}");
    assert!(!err.contains("panicked"));

    let out = verinfer(&["log", "init", "--dir", d, "--origin", "has space"], b"");
    assert_eq!(out.status.code(), Some(1));
}

fn http_get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..nl]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + n]);
        b = &b[nl + 2 + n + 2..];
    }
}

#[test]
fn serve_checkpoint_tiles_and_proofs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let d = dir.to_str().unwrap();
    let vk: VerifierKey = ok(
        &["log", "init", "--dir", d, "--origin", "example.org/http"],
        b"",
    )
    .trim()
    .parse()
    .unwrap();
    let lines: String = (0..300).map(|i| format!("entry {i}\n")).collect();
    ok(&["log", "append", "--dir", d], lines.as_bytes());

    let mut server = Server(
        Command::new(env!("CARGO_BIN_EXE_verinfer"))
            .args(["log", "serve", "--dir", d, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(server.0.stderr.take().unwrap());
    let mut addr = String::new();
    for _ in 0..10 {
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            addr = rest.trim().trim_end_matches("/log").to_string();
            break;
        }
    }
    assert!(!addr.is_empty(), "server did not print its address");

    let (status, body) = http_get(&addr, "/log/checkpoint");
    assert_eq!(status, 200);
    let cp = SignedCheckpoint::open(std::str::from_utf8(&body).unwrap(), &vk)
        .unwrap()
        .checkpoint;
    assert_eq!(cp.size, 300);

    let (status, tile) = http_get(&addr, "/log/tile/0/001.p/44");
    assert_eq!(status, 200);
    assert_eq!(tile.len(), 44 * 32);
    assert_eq!(&tile[..32], &leaf_hash(b"entry 256").0);
    assert_eq!(http_get(&addr, "/log/tile/0/001").0, 404);
    // Malformed paths are the client's error; see tiles.rs for the table.
    assert_eq!(http_get(&addr, "/log/tile/0/1").0, 400);
    assert_eq!(
        http_get(&addr, "/log/tile/0/x072/x057/x594/x037/x927/936").0,
        400
    );
    let (status, bundle) = http_get(&addr, "/log/tile/entries/000");
    assert_eq!(status, 200);
    assert_eq!(&bundle[..9], b"\x00\x07entry 0");

    let (status, body) = http_get(&addr, "/log/proof/inclusion?index=7&size=300");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let proof: Vec<Hash> = v["proof"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| hashes(h.as_str().unwrap()))
        .collect();
    verify_inclusion(7, 300, &leaf_hash(b"entry 7"), &proof, &cp.root).unwrap();

    let (status, body) = http_get(&addr, "/log/proof/consistency?old=10&new=300");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let proof: Vec<Hash> = v["proof"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|h| hashes(h.as_str().unwrap()))
        .collect();
    let old_root = hashes(v["old_root"].as_str().unwrap())[0];
    assert_eq!(hashes(v["new_root"].as_str().unwrap())[0], cp.root);
    verify_consistency(10, 300, &old_root, &cp.root, &proof).unwrap();

    let (status, body) = http_get(&addr, "/log/proof/inclusion?index=0&size=301");
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("larger than the tree"));
    assert_eq!(
        http_get(&addr, "/log/proof/inclusion?index=x&size=1").0,
        400
    );

    // The server owns the directory: a second writer is refused, not raced.
    let out = verinfer(&["log", "append", "--dir", d], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let in_use = format!("data directory in use (pid {})", server.0.id());
    assert!(err.contains(&in_use), "{err}");
    let (_, body) = http_get(&addr, "/log/checkpoint");
    let cp = SignedCheckpoint::open(std::str::from_utf8(&body).unwrap(), &vk).unwrap();
    assert_eq!(cp.checkpoint.size, 300);
}

/// Kills the server when the test ends, pass or fail.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}
