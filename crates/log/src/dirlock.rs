//! One writer per data directory.
//!
//! Every process that opens a log or a ledger directory holds an exclusive
//! advisory lock (`flock`) on the file `lock` in it for as long as it has the
//! directory open. The file holds the owner's pid so that a second opener can
//! say who is in the way. The lock belongs to the open file, not to the path:
//! the OS drops it when the owner closes the directory or dies, even by
//! SIGKILL, so a crash never leaves a stale lock behind. The file itself is
//! left in place (removing it would let a later opener lock a fresh inode
//! while an older one still holds the old).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside a data directory.
pub const LOCK_FILE: &str = "lock";

/// How long a lock recorded under this process's own pid is tried again
/// before it counts as held (see [`DirLock::acquire`]).
const SAME_PROCESS_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    /// Another open handle (in this or another process) holds the directory.
    #[error("data directory in use (pid {}): {}", pid.map_or("unknown".into(), |p| p.to_string()), dir.display())]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The owner's pid, if its lock file says.
        pid: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// An exclusive lock on a data directory, held until dropped.
#[derive(Debug)]
pub struct DirLock {
    // Only held: closing the file releases the lock.
    _file: File,
}

impl DirLock {
    /// Locks `dir` (which must exist) for this process, or fails at once with
    /// [`DirLockError::InUse`] if another handle holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, DirLockError> {
        let path = dir.join(LOCK_FILE);
        let io_err = |source| DirLockError::Io {
            path: path.clone(),
            source,
        };
        // No truncation on open: the file holds the current owner's pid
        // until the lock is ours.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let start = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {
                    let mut text = String::new();
                    // The owner may not have written its pid yet: then unknown.
                    let _ = file.seek(SeekFrom::Start(0));
                    let _ = file.read_to_string(&mut text);
                    let pid: Option<u32> = text.trim().parse().ok();
                    // A lock this process released can live on for a moment
                    // in a child another thread forked before the release:
                    // the child holds the open file until it execs. So a lock
                    // recorded as ours is tried again for a short while
                    // before it counts as held.
                    if pid == Some(std::process::id()) && start.elapsed() < SAME_PROCESS_GRACE {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                    return Err(DirLockError::InUse {
                        dir: dir.to_path_buf(),
                        pid,
                    });
                }
                Err(TryLockError::Error(e)) => return Err(io_err(e)),
            }
        }
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .map_err(io_err)?;
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_handle_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        match DirLock::acquire(dir.path()) {
            Err(DirLockError::InUse { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("second lock: {other:?}"),
        }
        let msg = DirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!(
                "data directory in use (pid {})",
                std::process::id()
            )),
            "{msg}"
        );
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
