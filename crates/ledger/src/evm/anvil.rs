//! A local chain for the devnet and the tests: anvil, from the npm package
//! `@foundry-rs/anvil` that `contracts/test.sh` (and the README's setup)
//! installs under `contracts/node_modules`. Nothing is downloaded here.
//!
//! anvil lives no longer than the process that started it: a stop
//! ([`Anvil::stop`], or dropping it) ends it with SIGTERM, so it writes its
//! state file, and if this process dies without stopping it (SIGKILL, a
//! crash) the kernel sends anvil SIGTERM all the same (`PR_SET_PDEATHSIG`,
//! see [`spawn_tied`]). An anvil left running would hold its port and its
//! state file, and the next start on the same directory would meet a chain
//! it did not start.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;

use super::EvmError;

/// The first of anvil's well-known development accounts (mnemonic "test test
/// ... junk"): it holds 10,000 ETH on every fresh anvil chain. Local chains
/// only.
pub const DEV_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// The signer of [`DEV_KEY`].
pub fn dev_signer() -> PrivateKeySigner {
    DEV_KEY
        .parse()
        .unwrap_or_else(|_| unreachable!("a valid constant key"))
}

/// Where anvil is: `$VERINFER_ANVIL`, else the npm package's binary under
/// `contracts/node_modules` of the current directory or of this source tree.
pub fn binary() -> Result<PathBuf, EvmError> {
    if let Some(p) = std::env::var_os("VERINFER_ANVIL") {
        return Ok(PathBuf::from(p));
    }
    let rel = "contracts/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for base in [PathBuf::from("."), tree] {
        let p = base.join(rel);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(EvmError::Chain(format!(
        "anvil not found: run `npm ci --ignore-scripts` in contracts/ (it installs {rel}), \
         or set VERINFER_ANVIL to an anvil binary"
    )))
}

/// A running anvil, keeping its state in a file (loaded at start, written
/// every second and at a clean stop), so a restart resumes the chain.
pub struct Anvil {
    child: Child,
    port: u16,
    state: PathBuf,
    /// Set by [`Anvil::stop`]: [`Anvil::revive`] leaves a stopped anvil
    /// stopped, so a supervisor cannot start it again during a shutdown.
    stopped: bool,
}

/// A command to spawn, and where to send the child.
type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` so that it dies with this process: the child asks the kernel
/// for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`) before it execs.
/// The kernel sends that signal when the *thread* that forked the child
/// exits, so every child is forked by one thread that lives as long as the
/// process (not by a pooled thread, which exits when idle). The child gets
/// its own process group, so a Ctrl-C in the terminal reaches only this
/// process, which stops the child itself (a child ending on its own at the
/// same time would be seen as a crash and restarted).
fn spawn_tied(cmd: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<io::Result<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            // Never returns: the sender lives in this static forever.
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_dying_with_parent(&mut cmd));
                }
            })
            .map(|_| tx)
    });
    let spawner = spawner
        .as_ref()
        .map_err(|e| io::Error::new(e.kind(), format!("starting the spawner thread: {e}")))?;
    let (reply, child) = mpsc::channel();
    spawner
        .send((cmd, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    child
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

fn spawn_dying_with_parent(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id();
    #[allow(unsafe_code)]
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe calls are allowed: prctl and getppid are plain
    // system calls, and nothing is allocated (errors are raw errnos).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the prctl: the signal will never come.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.process_group(0).spawn()
}

fn free_port() -> Result<u16, EvmError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| EvmError::Chain(e.to_string()))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| EvmError::Chain(e.to_string()))
}

impl Anvil {
    /// Starts anvil on `port` (0: any free port) with its state in `state`.
    pub fn start(state: &Path, port: u16) -> Result<Anvil, EvmError> {
        let port = if port == 0 { free_port()? } else { port };
        let child = Self::spawn(state, port)?;
        let a = Anvil {
            child,
            port,
            state: state.to_path_buf(),
            stopped: false,
        };
        a.wait_ready()?;
        Ok(a)
    }

    fn spawn(state: &Path, port: u16) -> Result<Child, EvmError> {
        let bin = binary()?;
        let mut cmd = Command::new(&bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--state")
            .arg(state)
            .args(["--state-interval", "1", "--silent"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        spawn_tied(cmd).map_err(|e| EvmError::Chain(format!("cannot start {}: {e}", bin.display())))
    }

    fn wait_ready(&self) -> Result<(), EvmError> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(EvmError::Chain(format!(
            "anvil did not listen on port {} in 30 s",
            self.port
        )))
    }

    /// The RPC URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts it again on the same port and state file (after it died or
    /// was stopped).
    pub fn restart(&mut self) -> Result<(), EvmError> {
        self.stop();
        self.child = Self::spawn(&self.state, self.port)?;
        self.stopped = false;
        self.wait_ready()
    }

    /// Restarts it if it exited on its own; leaves it alone when it runs or
    /// was stopped. Returns whether it restarted it.
    pub fn revive(&mut self) -> Result<bool, EvmError> {
        if self.stopped || !self.exited() {
            return Ok(false);
        }
        self.restart().map(|()| true)
    }

    /// Whether [`Anvil::stop`] stopped it (and nothing restarted it since).
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Stops it cleanly (SIGTERM, so it writes its state), or kills it after
    /// 5 s; waits for it either way, so its port and state file are free.
    pub fn stop(&mut self) {
        self.stopped = true;
        if self.exited() {
            return;
        }
        let termed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let t = Instant::now();
        while termed && t.elapsed() < Duration::from_secs(5) {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        self.stop();
    }
}

impl std::fmt::Debug for Anvil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anvil").finish_non_exhaustive()
    }
}
