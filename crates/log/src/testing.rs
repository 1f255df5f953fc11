//! Helpers for crash tests (feature `testing`): run a writer as a child
//! process, kill it with SIGKILL, and collect what it acknowledged.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Re-runs the test named `child_test` of the current test binary as a child
/// process with `env` set, kills it with SIGKILL after `after`, and returns
/// the complete lines it printed (a line cut by the kill is dropped).
///
/// The child test is marked `#[ignore = "..."]`, so a normal run does not
/// count it as a test (it is run here with `--ignored`); it must refuse to
/// run without its environment variable, and print one line per
/// acknowledged operation.
pub fn run_and_kill(child_test: &str, env: &[(&str, String)], after: Duration) -> Vec<String> {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            child_test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child writer");
    let stdout = child.stdout.take().expect("child stdout");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut r = BufReader::new(stdout);
        let mut buf = String::new();
        while r.read_line(&mut buf).unwrap_or(0) > 0 {
            if buf.ends_with('\n') {
                lines.push(buf.trim_end().to_string());
            }
            buf.clear();
        }
        lines
    });
    std::thread::sleep(after);
    child.kill().expect("SIGKILL the child"); // SIGKILL on Unix
    child.wait().expect("reap the child");
    reader.join().expect("reader thread")
}
