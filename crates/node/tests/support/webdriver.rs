//! A minimal W3C WebDriver client for the browser tests: starts
//! `chromedriver`, opens headless Chromium sessions and sends the dozen
//! commands the tests use, over the blocking reqwest client the workspace
//! already has.
//!
//! Why not `fantoccini`: it is not in the offline crate cache this project
//! builds from, and it brings an async HTTP stack of its own (hyper-tls or
//! rustls, cookie, the `webdriver` crate) for a few JSON calls; the protocol
//! subset needed here is a page of code.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C key of an element reference in JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The Escape key, as WebDriver encodes it in key input.
pub(crate) const ESCAPE: &str = "\u{E00C}";
/// The Tab key.
pub(crate) const TAB: &str = "\u{E004}";

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A running `chromedriver`, killed on drop.
pub(crate) struct Driver {
    child: Child,
    base: String,
    http: reqwest::blocking::Client,
}

impl Driver {
    /// Starts `chromedriver` (`$CHROMEDRIVER`, else from `PATH`) on a free
    /// port. A missing driver is an error that says how to install it: the
    /// browser tests never skip silently.
    pub(crate) fn start() -> Result<Driver> {
        let exe = std::env::var_os("CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| which("chromedriver"))
            .filter(|p| p.is_file())
            .ok_or_else(|| {
                anyhow!(
                    "chromedriver not found: the browser tests need headless Chromium and its \
                     driver (Debian: `apt-get install -y chromium chromium-driver`; .ci/run \
                     installs them), or set CHROMEDRIVER=/path/to/chromedriver"
                )
            })?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(&exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", exe.display()))?;
        let mut driver = Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(120))
                .build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = driver
                .http
                .get(format!("{}/status", driver.base))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .and_then(|v| v["value"]["ready"].as_bool())
                .unwrap_or(false);
            if ready {
                return Ok(driver);
            }
            if let Some(status) = driver.child.try_wait()? {
                bail!("{} exited at start: {status}", exe.display());
            }
            if Instant::now() > deadline {
                bail!("{} did not become ready in 20 s", exe.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .with_context(|| format!("{method} {path}: reply"))?;
        if !status.is_success() {
            bail!(
                "{method} {path}: {} {}",
                v["value"]["error"].as_str().unwrap_or("error"),
                v["value"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .lines()
                    .next()
                    .unwrap_or_default()
            );
        }
        Ok(v["value"].clone())
    }

    /// Opens a headless Chromium session with a `width` x `height` viewport;
    /// `phone` emulates a touch device of that size (Chromium's windows do
    /// not go below 500 px).
    pub(crate) fn session(&self, width: u32, height: u32, phone: bool) -> Result<Session<'_>> {
        let mut chrome = json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--lang=en-US",
                format!("--window-size={width},{height}"),
            ],
        });
        if let Some(bin) = std::env::var_os("CHROME_BIN")
            .map(PathBuf::from)
            .or_else(|| which("chromium"))
        {
            chrome["binary"] = json!(bin);
        }
        if phone {
            chrome["mobileEmulation"] =
                json!({"deviceMetrics": {"width": width, "height": height, "pixelRatio": 2}});
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": chrome,
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"script": 60_000, "pageLoad": 30_000},
        }}});
        let v = self.call(reqwest::Method::POST, "/session", Some(caps))?;
        let id = v["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session id in {v}"))?
            .to_string();
        Ok(Session { driver: self, id })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session, closed on drop.
pub(crate) struct Session<'a> {
    driver: &'a Driver,
    id: String,
}

/// An element reference.
#[derive(Clone, Debug)]
pub(crate) struct Element(String);

impl Session<'_> {
    fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        self.driver
            .call(method, &format!("/session/{}{path}", self.id), body)
    }

    fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.cmd(reqwest::Method::POST, path, Some(body))
    }

    /// Navigates to `url` and waits for the load event.
    pub(crate) fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({ "url": url })).map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub(crate) fn execute(&self, script: &str, args: Value) -> Result<Value> {
        self.post("/execute/sync", json!({"script": script, "args": args}))
    }

    /// Runs `script` as the body of an async function (its arguments are
    /// `args[0]`, `args[1]`...) and returns what its promise resolves to.
    pub(crate) fn execute_async(&self, script: &str, args: Value) -> Result<Value> {
        let wrapped = format!(
            "const done = arguments[arguments.length - 1];\
             const args = Array.from(arguments).slice(0, -1);\
             (async () => {{ {script} }})()\
             .then(done, (e) => done({{__error: String(e && e.stack || e)}}));"
        );
        let v = self.post("/execute/async", json!({"script": wrapped, "args": args}))?;
        if let Some(e) = v.get("__error") {
            bail!("script failed: {e}");
        }
        Ok(v)
    }

    /// The first element matching a CSS selector.
    pub(crate) fn find(&self, css: &str) -> Result<Element> {
        let v = self.post("/element", json!({"using": "css selector", "value": css}))?;
        v[ELEMENT]
            .as_str()
            .map(|s| Element(s.to_string()))
            .ok_or_else(|| anyhow!("no element reference for {css}"))
    }

    /// Clicks an element as a user would (scrolled into view, hit-tested).
    pub(crate) fn click(&self, e: &Element) -> Result<()> {
        self.post(&format!("/element/{}/click", e.0), json!({}))
            .map(drop)
    }

    /// Types `text` into an element (also a file path into a file input).
    pub(crate) fn send_keys(&self, e: &Element, text: &str) -> Result<()> {
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text }))
            .map(drop)
    }

    /// Presses keys on whatever has focus (e.g. [`TAB`], [`ESCAPE`]).
    pub(crate) fn press(&self, keys: &str) -> Result<()> {
        let mut actions = Vec::new();
        for k in keys.chars() {
            actions.push(json!({"type": "keyDown", "value": k.to_string()}));
            actions.push(json!({"type": "keyUp", "value": k.to_string()}));
        }
        self.post(
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": actions}]}),
        )?;
        self.cmd(reqwest::Method::DELETE, "/actions", None)
            .map(drop)
    }

    /// Saves a PNG screenshot of the viewport.
    pub(crate) fn screenshot(&self, path: &Path) -> Result<()> {
        use base64::Engine as _;
        let v = self.cmd(reqwest::Method::GET, "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().ok_or_else(|| anyhow!("no screenshot data"))?)?;
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// The browser console's messages so far (for failure messages).
    pub(crate) fn console(&self) -> String {
        self.post("/se/log", json!({"type": "browser"}))
            .map(|v| {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .map(|m| m["message"].as_str().unwrap_or_default().to_string())
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    /// Evaluates `script` every 100 ms until it returns something other than
    /// null, false or undefined, and returns that; fails after `timeout`
    /// saying what was awaited, what the script returned last and the console.
    pub(crate) fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.execute(script, json!([]))?;
            if !(v.is_null() || v == Value::Bool(false)) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; page: {}; console: {}",
                    self.execute("return document.body.innerText.slice(0, 2000)", json!([]))
                        .unwrap_or_default(),
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let _ = self.cmd(reqwest::Method::DELETE, "", None);
    }
}
