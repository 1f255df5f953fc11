//! Helpers shared by the tests that run `verinfer` as separate processes.

#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A child process killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_verinfer"));
    c.env("VERINFER_LOG", "warn");
    c
}

/// Starts `verinfer node` with `config` and waits for its `ready at URL` line.
pub fn node(role: &str, config: &Path) -> (Proc, String) {
    let mut child = bin()
        .args(["node", "--role", role, "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn verinfer node");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(url) = l.split(" ready at ").nth(1) {
                    break url.trim().to_string();
                }
            }
            _ => panic!("{role} ({}) exited before it was ready", config.display()),
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (
        Proc {
            name: config.display().to_string(),
            child,
        },
        url,
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn write(path: PathBuf, text: String) -> PathBuf {
    std::fs::write(&path, text).expect("write config");
    path
}
