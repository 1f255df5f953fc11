//! The Python and JavaScript clients (`clients/python`, `clients/js`) against
//! the Rust checker and a running devnet.
//!
//! - `client_unit_tests_pass`: pytest and `node --test` on the shared RFC 6962
//!   vectors, the C2SP signed-note example, RFC 8785 canonical JSON and a
//!   devnet receipt (`clients/testdata`); `mypy --strict` on the package.
//! - `three_verifiers_agree_on_devnet_receipts`: apps get checked answers
//!   through `VerifiedOpenAI` (the official openai client, wrapped; streamed
//!   and not, and waiting for a cosigned checkpoint) and through the JS
//!   `VerifiedClient`; their receipts are fetched (with the text, and one
//!   without), and every receipt and every copy with one field changed (in
//!   value; for two of them also in kind, and with an unknown member in
//!   each object) goes through the Rust `verinfer verify`, the Python
//!   checker and the JS checker, with pinned keys, with a pinned quorum no
//!   checkpoint meets, and with the receipt's own keys. The three must agree
//!   on every one; with pinned keys fresh receipts pass and every change
//!   fails, except a new value for the keys the receipt names, which pinned
//!   keys override; with the unreachable quorum every one fails.
//!
//! Python runs in a venv under the target directory with every package
//! pinned (built once, under a file lock); `clients/python` is installed
//! into it with pip at each run, as an app would. Node 20 or later is needed.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{json, Value};

/// The venv's packages beyond the openai client's pinned set
/// (`support::OPENAI_1_109_1`): cryptography, pytest, mypy, and wheel for
/// building `clients/python` with the venv's setuptools.
const EXTRA_REQUIREMENTS: &[&str] = &[
    "cryptography==50.0.2",
    "cffi==2.1.1",
    "pycparser==3.12",
    "pytest==9.2.0",
    "iniconfig==2.3.1",
    "packaging==26.4",
    "pluggy==1.7.0",
    "Pygments==2.21.0",
    "wheel==0.48.0",
    "mypy==2.4.1",
    "mypy_extensions==1.2.0",
    "pathspec==1.1.1",
    "librt==0.17.0",
];

fn requirements() -> Vec<&'static str> {
    support::OPENAI_1_109_1
        .iter()
        .chain(EXTRA_REQUIREMENTS)
        .copied()
        .collect()
}

const MARKER: &str = "verinfer-requirements.txt";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

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

fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{}", report(what, &out));
    out
}

fn pip(python: &Path) -> Command {
    let mut c = Command::new(python);
    c.args(["-m", "pip"])
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1");
    c
}

/// The venv's python, with `clients/python` freshly installed (once per
/// test process).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let started = Instant::now();
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = root.join("clients-venv");
        let python = dir.join("bin/python");
        let want = requirements().join("\n");
        let ready =
            |d: &Path| std::fs::read_to_string(d.join(MARKER)).ok().as_deref() == Some(&want);
        let lock = File::create(root.join("clients-venv.lock")).unwrap();
        lock.lock().unwrap();
        if !ready(&dir) {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).unwrap();
            }
            run(
                "python3 -m venv (Python 3 with venv and pip is needed)",
                Command::new("python3").args(["-m", "venv"]).arg(&dir),
            );
            run(
                "pip install the pinned packages (this test needs PyPI through pip)",
                pip(&python)
                    .args(["install", "--no-cache-dir"])
                    .args(requirements()),
            );
            std::fs::write(dir.join(MARKER), &want).unwrap();
        }
        // As an app installs it; the venv's own setuptools builds it offline.
        run(
            "pip install ./clients/python",
            pip(&python)
                .args([
                    "install",
                    "--no-deps",
                    "--no-build-isolation",
                    "--force-reinstall",
                    "--quiet",
                ])
                .arg(repo().join("clients/python")),
        );
        eprintln!("python venv ready in {:.1?}", started.elapsed());
        python
    })
}

#[test]
fn client_unit_tests_pass() {
    let repo = repo();
    let out = run(
        "pytest clients/python/tests",
        Command::new(python())
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
            .arg(repo.join("clients/python/tests")),
    );
    println!("{}", text(&out.stdout));
    // The package ships `py.typed`: its annotations must hold.
    let out = run(
        "mypy --strict clients/python/src/verinfer",
        Command::new(python())
            .args(["-m", "mypy", "--strict", "--cache-dir"])
            .arg(Path::new(env!("CARGO_TARGET_TMPDIR")).join("clients-mypy-cache"))
            .arg(repo.join("clients/python/src/verinfer")),
    );
    println!("{}", text(&out.stdout));
    let out = run(
        "node --test clients/js/test (Node 20 or later is needed)",
        Command::new("node")
            .arg("--test")
            .current_dir(repo.join("clients/js")),
    );
    println!("{}", text(&out.stdout));
}

/// A running devnet; stopped when dropped.
struct Devnet {
    _proc: support::Proc,
    url: String,
    api_key: String,
    _dir: tempfile::TempDir,
}

fn devnet() -> Devnet {
    verinfer_inference::models::ensure_default_model().expect("the default model");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("devnet");
    let mut cmd = support::bin();
    cmd.arg("devnet")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", "127.0.0.1:0"]);
    let (proc, url) = support::spawn_ready(cmd, "devnet");
    let api_key = std::fs::read_to_string(data.join("api-key"))
        .unwrap()
        .trim()
        .to_string();
    Devnet {
        _proc: proc,
        url,
        api_key,
        _dir: dir,
    }
}

/// The receipt ids an app printed (`receipt: ID`), after checking it ended
/// with `ok`.
fn receipts(what: &str, out: &Output) -> Vec<String> {
    let stdout = text(&out.stdout);
    println!("{what}:\n{stdout}");
    assert_eq!(stdout.lines().last(), Some("ok"), "{}", report(what, out));
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("receipt: "))
        .map(str::to_string)
        .collect()
}

/// The same value with one visible change that keeps its kind: a number
/// plus one, a boolean flipped, a string with one letter or digit moved on
/// (hex stays hex; in a signed note, the change is in the signed text).
fn changed(v: &Value) -> Option<Value> {
    match v {
        Value::Bool(b) => Some(Value::Bool(!b)),
        Value::Number(n) => n.as_u64().map(|n| json!(n + 1)),
        Value::String(s) => {
            let end = s.find("\n\n").unwrap_or(s.len());
            let chars: Vec<(usize, char)> = s[..end].char_indices().collect();
            let from = chars.len() / 2;
            let pick = chars[from..]
                .iter()
                .chain(&chars[..from])
                .find(|(_, c)| c.is_ascii_alphanumeric());
            let Some(&(at, c)) = pick else {
                return Some(Value::String(format!("{s}x")));
            };
            let next = match c {
                '9' => '0',
                'f' => 'a',
                'z' => 'g',
                'Z' => 'A',
                c => char::from(c as u8 + 1),
            };
            let mut t = s.clone();
            t.replace_range(at..at + 1, &next.to_string());
            Some(Value::String(t))
        }
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// JSON pointers of every scalar and of every object in `v`.
fn members(v: &Value, at: String, scalars: &mut Vec<String>, objects: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            objects.push(at.clone());
            m.iter()
                .for_each(|(k, x)| members(x, format!("{at}/{k}"), scalars, objects));
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| members(x, format!("{at}/{i}"), scalars, objects)),
        _ => scalars.push(at),
    }
}

/// Copies of `bundle` with one change each, what was changed, and whether
/// pinned keys must still accept it: every scalar changed in value; when
/// `thorough`, also every scalar changed in kind (a string for a number, a
/// number for a string) and an unknown member added to every object.
fn variants(bundle: &Value, thorough: bool) -> Vec<(String, Value, bool)> {
    let (mut scalars, mut objects) = (Vec::new(), Vec::new());
    members(bundle, String::new(), &mut scalars, &mut objects);
    let mut out = Vec::new();
    for p in &scalars {
        let old = bundle.pointer(p).unwrap();
        let mut edits: Vec<(&str, Value)> =
            changed(old).map(|v| ("changed", v)).into_iter().collect();
        if thorough {
            let retyped = match old {
                Value::String(_) => json!(7),
                Value::Null => continue,
                _ => json!("7"),
            };
            edits.push(("of another kind", retyped));
        }
        for (how, value) in edits {
            let mut t = bundle.clone();
            *t.pointer_mut(p).unwrap() = value;
            out.push((
                format!("{p} {how}"),
                t,
                how == "changed" && overridden_by_pins(p),
            ));
        }
    }
    if thorough {
        for p in &objects {
            let mut t = bundle.clone();
            t.pointer_mut(p).unwrap()["unexpected"] = json!(1);
            out.push((format!("an unknown member in {p:?}"), t, false));
        }
    }
    out
}

/// The fields a check with pinned keys does not read: the keys the receipt
/// names.
fn overridden_by_pins(pointer: &str) -> bool {
    pointer == "/log_key" || pointer == "/witness_quorum" || pointer.starts_with("/witnesses/")
}

/// One receipt to check: a name, its file, and whether pinned keys must
/// accept it.
struct Case {
    name: String,
    file: PathBuf,
    pinned_pass: bool,
}

/// The Python checker's outcome on every case: `ok`, `fail CHECK` or
/// `crash ...` (an exception other than a failed check).
fn python_outcomes(cases: &[Case], pins: &Value, list: &Path) -> Vec<String> {
    let script = r#"
import json, sys
from verinfer import ReceiptError, Trust, verify_receipt
pins = json.loads(sys.argv[1])
trust = Trust(**pins) if pins else None
for f in open(sys.argv[2]).read().split("\n"):
    if not f:
        continue
    try:
        with open(f) as fh:
            verify_receipt(json.load(fh), trust)
        print("ok")
    except ReceiptError as e:
        print("fail " + e.check)
    except Exception as e:
        print("crash " + type(e).__name__ + " " + str(e).replace("\n", " "))
"#;
    let py_pins = if pins.is_null() {
        Value::Null
    } else {
        json!({"log_key": pins["logKey"], "witnesses": pins["witnesses"], "witness_quorum": pins["witnessQuorum"]})
    };
    let out = run(
        "python checker",
        Command::new(python())
            .args(["-c", script, &py_pins.to_string()])
            .arg(list),
    );
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(
        lines.len(),
        cases.len(),
        "{}",
        report("python checker", &out)
    );
    lines
}

/// The JS checker's outcome on every case, as [`python_outcomes`].
fn js_outcomes(cases: &[Case], pins: &Value, list: &Path) -> Vec<String> {
    let script = r#"
import { readFileSync } from "node:fs";
const [mod, pins, list] = process.argv.slice(1);
const { checkReceipt, pinTrust } = await import(mod);
const trust = pinTrust(JSON.parse(pins) || {});
for (const f of readFileSync(list, "utf8").split("\n").filter(Boolean)) {
  try {
    const r = await checkReceipt(JSON.parse(readFileSync(f, "utf8")), trust);
    console.log(r.ok ? "ok" : "fail " + r.checks.find((c) => c.ok === false).id);
  } catch (e) {
    console.log("crash " + String(e && e.message).replace(/\n/g, " "));
  }
}
"#;
    let module = repo().join("clients/js/verinfer.js");
    let out = run(
        "js checker",
        Command::new("node")
            .args(["--input-type=module", "-e", script])
            .arg(&module)
            .arg(pins.to_string())
            .arg(list),
    );
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), cases.len(), "{}", report("js checker", &out));
    lines
}

/// `verinfer verify FILE` on every case, four at a time.
fn rust_outcomes(cases: &[Case], args: &[String]) -> Vec<Output> {
    let chunk = cases.len().div_ceil(4);
    std::thread::scope(|s| {
        let workers: Vec<_> = cases
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|case| {
                            support::bin()
                                .arg("verify")
                                .arg(&case.file)
                                .args(args)
                                .stdin(Stdio::null())
                                .output()
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    })
}

/// The pins as `verinfer verify` options.
fn pin_args(pins: &Value) -> Vec<String> {
    if pins.is_null() {
        return Vec::new();
    }
    let mut args = vec![
        "--log-key".to_string(),
        pins["logKey"].as_str().unwrap().into(),
    ];
    for w in pins["witnesses"].as_array().unwrap() {
        args.extend(["--witness".to_string(), w.as_str().unwrap().into()]);
    }
    args.extend([
        "--witness-quorum".to_string(),
        pins["witnessQuorum"].to_string(),
    ]);
    args
}

#[test]
fn three_verifiers_agree_on_devnet_receipts() {
    let started = Instant::now();
    let repo = repo();
    let python = python();
    let net = devnet();
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let network: Value = reqwest::blocking::get(format!("{}/v1/network", net.url))
        .unwrap()
        .json()
        .unwrap();
    let log_key = network["log_key"].as_str().unwrap().to_string();

    // Apps get checked answers, in Python and in JavaScript.
    let out = Command::new(python)
        .arg(tests.join("clients_app.py"))
        .args([&net.url, &net.api_key, &log_key])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let mut ids = receipts("python app (VerifiedOpenAI)", &out);
    assert_eq!(ids.len(), 4, "{}", report("python app", &out));
    let out = Command::new("node")
        .arg(tests.join("clients_app.mjs"))
        .arg(repo.join("clients/js/verinfer.js"))
        .args([&net.url, &net.api_key, &log_key])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let js_ids = receipts("js app (VerifiedClient)", &out);
    assert_eq!(js_ids.len(), 2, "{}", report("js app", &out));
    ids.extend(js_ids);
    eprintln!(
        "{} checked answers after {:.1?}",
        ids.len(),
        started.elapsed()
    );

    // Their bundles, as `verinfer verify --url` fetches (and checks) them;
    // the first also without the text.
    let dir = tempfile::tempdir().unwrap();
    let mut bundles = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let file = dir.path().join(format!("{id}.json"));
        run(
            "verinfer verify --url",
            support::bin()
                .args([
                    "verify",
                    "--url",
                    &net.url,
                    id,
                    "--api-key",
                    &net.api_key,
                    "--out",
                ])
                .arg(&file),
        );
        bundles.push((format!("receipt {i}"), file));
    }
    let leaf_only = dir.path().join("leaf-only.json");
    run(
        "verinfer verify --url (no API key)",
        support::bin()
            .args(["verify", "--url", &net.url, &ids[0], "--out"])
            .arg(&leaf_only),
    );
    bundles.push(("receipt 0 without its text".into(), leaf_only));

    // Trust on first use: the keys of the first bundle, pinned for all.
    let first: Value = serde_json::from_slice(&std::fs::read(&bundles[0].1).unwrap()).unwrap();
    assert_eq!(first["log_key"], log_key.as_str());
    assert!(
        first["receipt"].is_object(),
        "the owner's bundle holds the receipt"
    );
    let pins = json!({
        "logKey": first["log_key"],
        "witnesses": first["witnesses"],
        "witnessQuorum": first["witness_quorum"],
    });

    // Every bundle, and every bundle with one scalar changed.
    let mut cases = Vec::new();
    // Changes of kind and unknown members only in the first and in the
    // one without its text: the others have the same shape.
    for (i, (name, file)) in bundles.iter().enumerate() {
        let bundle: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        cases.push(Case {
            name: name.clone(),
            file: file.clone(),
            pinned_pass: true,
        });
        let thorough = i == 0 || i == bundles.len() - 1;
        for (what, t, pinned_pass) in variants(&bundle, thorough) {
            let file = dir.path().join(format!("case-{}.json", cases.len()));
            std::fs::write(&file, serde_json::to_vec_pretty(&t).unwrap()).unwrap();
            cases.push(Case {
                name: format!("{name}, {what}"),
                file,
                pinned_pass,
            });
        }
    }
    let list = dir.path().join("cases.txt");
    let paths: Vec<String> = cases.iter().map(|c| c.file.display().to_string()).collect();
    std::fs::write(&list, paths.join("\n")).unwrap();

    let mut disagreements = Vec::new();
    let mut wrong = Vec::new();
    // Pinned keys; pinned keys with a quorum no checkpoint meets (every
    // receipt fails); the receipt's own keys.
    let witnesses = pins["witnesses"].as_array().unwrap().len();
    let mut unreachable = pins.clone();
    unreachable["witnessQuorum"] = json!(witnesses + 1);
    let modes = [
        ("pinned keys", pins.clone(), Some(true)),
        ("a quorum above the witnesses", unreachable, Some(false)),
        ("the receipt's keys", Value::Null, None),
    ];
    for (mode, pins, expect) in modes {
        let py = python_outcomes(&cases, &pins, &list);
        let js = js_outcomes(&cases, &pins, &list);
        let rust = rust_outcomes(&cases, &pin_args(&pins));
        for (i, case) in cases.iter().enumerate() {
            let (rust, stderr) = (rust[i].status.success(), &rust[i].stderr);
            for (lang, o) in [("python", &py[i]), ("js", &js[i])] {
                assert!(
                    !o.starts_with("crash"),
                    "{lang} crashed on {} ({mode}): {o}",
                    case.name
                );
                if (o == "ok") != rust {
                    disagreements.push(format!(
                        "{} ({mode}): rust {}, {lang} {o}",
                        case.name,
                        if rust { "ok".into() } else { text(stderr) }
                    ));
                }
            }
            let Some(expect) = expect else { continue };
            if rust != (expect && case.pinned_pass) {
                wrong.push(format!(
                    "{} ({mode}): rust {}",
                    case.name,
                    if rust { "passes" } else { "fails" }
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "the verifiers disagree:\n{}",
        disagreements.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "unexpected outcomes:\n{}",
        wrong.join("\n")
    );

    // The command lines, as a user runs them.
    let (fresh, tampered) = (&cases[0], cases.iter().find(|c| !c.pinned_pass).unwrap());
    let pin = pin_args(&pins);
    for (case, code) in [(fresh, 0), (tampered, 1)] {
        let py = Command::new(python)
            .args(["-m", "verinfer", "verify"])
            .arg(&case.file)
            .args(&pin)
            .output()
            .unwrap();
        assert_eq!(
            py.status.code(),
            Some(code),
            "{}",
            report("python -m verinfer verify", &py)
        );
        let js = Command::new("node")
            .arg(repo.join("clients/js/cli.js"))
            .arg("verify")
            .arg(&case.file)
            .args(&pin)
            .output()
            .unwrap();
        assert_eq!(
            js.status.code(),
            Some(code),
            "{}",
            report("node cli.js verify", &js)
        );
    }
    let id = ids.last().unwrap();
    let mut py = Command::new(python);
    py.args([
        "-m",
        "verinfer",
        "verify",
        "--url",
        &net.url,
        id,
        "--api-key",
        &net.api_key,
    ]);
    println!(
        "{}",
        text(&run("python -m verinfer verify --url", &mut py).stdout)
    );
    let mut js = Command::new("node");
    js.arg(repo.join("clients/js/cli.js")).args([
        "verify",
        "--url",
        &net.url,
        id,
        "--api-key",
        &net.api_key,
    ]);
    println!("{}", text(&run("node cli.js verify --url", &mut js).stdout));

    eprintln!(
        "{} receipts, {} cases, 3 trust modes: rust, python and js agree; {:.1?} in all",
        bundles.len(),
        cases.len(),
        started.elapsed()
    );
}
