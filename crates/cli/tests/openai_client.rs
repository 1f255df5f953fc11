//! The official OpenAI Python client works against the devnet gateway
//! unchanged: `tests/openai_client.py` lists models, makes non-streamed,
//! raw-response and streamed chat completions, log-probabilities with the
//! five best tokens (streamed and not), two choices (`n=2`, streamed and
//! not, each its own receipt), a legacy completion, structured outputs
//! (`chat.completions.parse` with a Pydantic model, and the schema
//! streamed) and a tool-call round trip streamed and not, reads the
//! `verinfer` extra field and the `x-verinfer-receipt` header through the
//! client, and checks that bad key, unknown model, `max_tokens=0` and an
//! unknown field raise the client's own exception types (401, 404, 400).
//! Every receipt it prints must
//! then pass `verinfer verify --url`.
//!
//! This guards the gateway's wire compatibility (paths, JSON shapes, SSE
//! framing, error bodies and status codes) with what real applications use.
//! It runs two pinned clients, the last 1.x release (the API most deployed
//! code is written against) and a current release, each with every
//! dependency pinned so a new httpx or pydantic cannot change the result
//! (openai 1.55.0 with an unpinned httpx 0.28 fails before sending a byte).
//!
//! The venvs are cached outside the clone, in
//! `$XDG_CACHE_HOME/verinfer/openai-venv-<version>` (else
//! `~/.cache/verinfer/...`), built under a file lock and moved into place
//! only once complete. A pip failure fails the test: it is never skipped.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// One pinned client: the openai version and the full requirement set
/// (`pip freeze` of a venv where it installed cleanly with Python 3.11).
struct Client {
    version: &'static str,
    requirements: &'static [&'static str],
}

const CLIENTS: &[Client] = &[
    Client {
        version: "1.109.1",
        requirements: support::OPENAI_1_109_1,
    },
    Client {
        version: "3.57.0",
        requirements: &[
            "openai==3.57.0",
            "annotated-types==0.8.0",
            "anyio==4.16.0",
            "h11==0.16.0",
            "httpcore2==2.16.2",
            "httpx2==2.16.2",
            "idna==3.20",
            "jiter==0.19.0",
            "pydantic==2.14.4",
            "pydantic_core==2.50.5",
            "sniffio==1.3.1",
            "truststore==0.10.5",
            "typing-inspection==0.4.5",
            "typing_extensions==4.16.0",
        ],
    },
];

/// The file in a finished venv that records what was installed in it.
const MARKER: &str = "verinfer-requirements.txt";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn report(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

fn cache_root() -> PathBuf {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let home = std::env::var_os("HOME").expect("neither XDG_CACHE_HOME nor HOME is set");
            PathBuf::from(home).join(".cache")
        }
    };
    base.join("verinfer")
}

fn pip(python: &Path) -> Command {
    let mut c = Command::new(python);
    c.args(["-m", "pip"])
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .stdin(Stdio::null());
    c
}

/// Whether `dir` is a finished venv for `client`: its marker lists exactly
/// the pinned set and its python imports that openai version.
fn venv_ready(dir: &Path, client: &Client) -> bool {
    let want = client.requirements.join("\n");
    if std::fs::read_to_string(dir.join(MARKER)).ok().as_deref() != Some(want.as_str()) {
        return false;
    }
    let check = format!(
        "import openai, sys; sys.exit(openai.__version__ != {:?})",
        client.version
    );
    Command::new(dir.join("bin/python"))
        .args(["-c", &check])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The venv's python for `client`, creating the venv on first use.
fn venv_python(client: &Client) -> PathBuf {
    let root = cache_root();
    std::fs::create_dir_all(&root).expect("create the venv cache directory");
    let name = format!("openai-venv-{}", client.version);
    let dir = root.join(&name);
    let python = dir.join("bin/python");
    if venv_ready(&dir, client) {
        return python;
    }

    // One builder at a time; the lock goes with the file (and the process).
    let lock = File::create(root.join(format!("{name}.lock"))).expect("create the venv lock");
    lock.lock().expect("lock the venv cache");
    if venv_ready(&dir, client) {
        return python;
    }
    let tmp = root.join(format!("{name}.tmp"));
    for stale in [&tmp, &dir] {
        if stale.exists() {
            std::fs::remove_dir_all(stale).expect("remove a stale venv");
        }
    }
    let started = Instant::now();
    let out = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&tmp)
        .stdin(Stdio::null())
        .output()
        .expect("run python3 (Python 3 with venv and pip is needed for this test)");
    assert!(out.status.success(), "{}", report("python3 -m venv", &out));
    let out = pip(&tmp.join("bin/python"))
        .args(["install", "--no-cache-dir"])
        .args(client.requirements)
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "{}",
        report(
            &format!(
                "pip install openai=={} (this test needs PyPI through pip)",
                client.version
            ),
            &out
        )
    );
    std::fs::write(tmp.join(MARKER), client.requirements.join("\n")).expect("write the marker");
    // The venv's python finds its site-packages through pyvenv.cfg beside
    // bin/, so the directory can move; only pip's own script shebangs go stale.
    std::fs::rename(&tmp, &dir).expect("move the venv into place");
    assert!(
        venv_ready(&dir, client),
        "the venv at {} does not import openai {}",
        dir.display(),
        client.version
    );
    eprintln!("built {} in {:.1?}", dir.display(), started.elapsed());
    python
}

/// A running `verinfer devnet`; killed when dropped, panics included.
struct Devnet {
    child: Child,
    url: String,
    api_key: String,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Devnet {
    fn start() -> Devnet {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("devnet");
        let stderr = dir.path().join("devnet.stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_verinfer"))
            .arg("devnet")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .env("VERINFER_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).expect("create the devnet stderr file"))
            .spawn()
            .expect("start verinfer devnet");

        // Read stdout on a thread (it keeps draining after `ready`, so the
        // pipe never fills) and wait for the two lines with a deadline.
        let stdout = child.stdout.take().expect("devnet stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Once nobody listens, sending fails: keep draining anyway.
                let _ = tx.send(line);
            }
        });
        let mut devnet = Devnet {
            child,
            url: String::new(),
            api_key: String::new(),
            stderr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        while devnet.url.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(key) = line.strip_prefix("api-key: ") {
                        devnet.api_key = key.trim().to_string();
                    } else if let Some(url) = line.strip_prefix("verinfer devnet ready at ") {
                        devnet.url = url.trim().to_string();
                    }
                }
                Err(e) => panic!("devnet not ready ({e}); stderr:\n{}", devnet.stderr_tail()),
            }
        }
        assert!(!devnet.api_key.is_empty(), "devnet printed no api-key line");
        devnet
    }

    fn stderr_tail(&self) -> String {
        let all = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn official_openai_python_client_works_unchanged() {
    let started = Instant::now();
    // Fetch the model first, so the devnet's start is not a download.
    verinfer_inference::models::ensure_default_model().expect("the default model");
    let pythons: Vec<(&Client, PathBuf)> = CLIENTS.iter().map(|c| (c, venv_python(c))).collect();

    let devnet = Devnet::start();
    eprintln!("devnet at {} after {:.1?}", devnet.url, started.elapsed());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");

    let mut receipts = Vec::new();
    for (client, python) in &pythons {
        let out = Command::new(python)
            .arg(script)
            .arg(&devnet.url)
            .arg(&devnet.api_key)
            .env_remove("OPENAI_BASE_URL")
            .env_remove("OPENAI_API_KEY")
            .stdin(Stdio::null())
            .output()
            .expect("run the openai script");
        let what = format!("openai {} script", client.version);
        println!("{}", text(&out.stdout));
        assert!(
            out.status.success(),
            "{}\n--- devnet stderr (tail)\n{}",
            report(&what, &out),
            devnet.stderr_tail()
        );
        // The script ends with `ok` only when it ran every check to the end.
        assert_eq!(
            text(&out.stdout).lines().last(),
            Some("ok"),
            "{what}: the last line is not `ok`"
        );
        let ids: Vec<String> = text(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("receipt: "))
            .map(|id| id.trim().to_string())
            .collect();
        // Chat, raw, stream, logprobs (2), n=2 (2), n=2 streamed (2),
        // completion, parse (2), tool calls with their answers (2 x 2),
        // `tool_choice: auto`, parallel calls streamed (2).
        assert_eq!(ids.len(), 19, "{what}: expected 19 receipts, got {ids:?}");
        receipts.extend(ids);
    }

    for id in &receipts {
        let out = Command::new(env!("CARGO_BIN_EXE_verinfer"))
            .args([
                "verify",
                "--url",
                &devnet.url,
                id,
                "--api-key",
                &devnet.api_key,
            ])
            .env("VERINFER_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("run verinfer verify");
        assert!(
            out.status.success(),
            "{}",
            report(&format!("verinfer verify {id}"), &out)
        );
    }
    eprintln!(
        "{} receipts verified; {:.1?} in all",
        receipts.len(),
        started.elapsed()
    );
}
