//! The log on disk: durable appends with group commit, crash recovery,
//! signed checkpoints, proofs and tiles.
//!
//! Layout of a log directory:
//!
//! - `config.json`: the origin and format version;
//! - `log.key`: the log's Ed25519 signing key (mode 0600);
//! - `entries`: the entries, each framed as
//!   `len: u32 LE | index: u64 LE | crc32(len | index | data): u32 LE | data`;
//! - `checkpoint`: the latest signed checkpoint note, replaced atomically.
//!
//! The entries file is the single source of truth; the Merkle tree (64 bytes
//! per entry) and the entry offsets (8 bytes per entry) are rebuilt in memory
//! when the log opens. An append is acknowledged only after its frame is
//! written and `fdatasync`ed; appenders that arrive while a sync is running
//! queue up and share the next one (group commit).
//!
//! Recovery: frames are read in order and checked (length, index, CRC). The
//! first bad frame ends the log only if no valid frame follows it, that is if
//! it is a torn tail left by a crash; the tail is then cut off. A bad frame
//! followed by valid ones is damage, not a crash, and opening fails. So does a
//! stored checkpoint that the recovered entries do not reproduce.

use crate::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
use crate::merkle::{leaf_hash, ProofError, Tree};
use crate::tiles::{hash_tile, push_bundle_entry, Tile, TileKind};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard, RwLock};
use verinfer_types::note::{check_key_name, VerifierKey, ALG_ED25519};
use verinfer_types::{Hash, SecretKey};

/// Largest entry of a transparency log, so that it fits a tile entry bundle
/// (u16 length). Logs used only as write-ahead logs may allow more.
pub const MAX_ENTRY_SIZE: usize = u16::MAX as usize;
/// Hard upper bound of any log's entries (frames carry a u32 length).
pub const MAX_WAL_ENTRY_SIZE: usize = 64 << 20;

const HEADER: usize = 16;
const FORMAT: u32 = 1;

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error on a file of the log.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The directory has no log, or already has one.
    #[error("{0}")]
    Setup(String),
    /// The files are damaged in a way that is not a torn tail.
    #[error("log is damaged: {0}")]
    Corrupt(String),
    /// An entry over the log's maximum entry size.
    #[error("entry of {0} bytes is larger than the log's maximum of {1}")]
    EntryTooLarge(usize, usize),
    /// A proof or tree-size request outside the tree.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// Checkpoint problems.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A write or sync failed earlier; the log refuses appends until reopened.
    #[error("log stopped accepting appends after a write failure: {0}")]
    Failed(String),
    /// No entry at this index.
    #[error("no entry {index}: the log has {size} entries")]
    NoEntry {
        /// Requested index.
        index: u64,
        /// Current size.
        size: u64,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Config {
    origin: String,
    format: u32,
    #[serde(default = "default_max_entry")]
    max_entry_size: usize,
}

fn default_max_entry() -> usize {
    MAX_ENTRY_SIZE
}

/// What readers see: only durable entries.
struct Durable {
    tree: Tree,
    /// Byte offset of each entry's frame in the entries file.
    offsets: Vec<u64>,
    /// Length of the entries file covered by the durable entries.
    end: u64,
}

/// Group-commit queue.
struct Queue {
    pending: Vec<Vec<u8>>,
    /// Index the next enqueued entry gets.
    next: u64,
    /// Entries durable so far.
    durable: u64,
    committing: bool,
    failed: Option<String>,
}

/// A transparency log in a directory.
pub struct Log {
    dir: PathBuf,
    origin: String,
    key: SecretKey,
    verifier_key: VerifierKey,
    entries: File,
    max_entry: usize,
    queue: Mutex<Queue>,
    committed: Condvar,
    state: RwLock<Durable>,
    checkpoint: Mutex<Option<SignedCheckpoint>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Log {
    /// Creates a new log in `dir` (created if missing, must not hold a log)
    /// with a fresh signing key. Returns the opened log.
    pub fn init(dir: &Path, origin: &str) -> Result<Log, LogError> {
        Self::init_with_key(dir, origin, &SecretKey::generate())
    }

    /// Like [`Log::init`] with a given signing key.
    pub fn init_with_key(dir: &Path, origin: &str, key: &SecretKey) -> Result<Log, LogError> {
        Self::create(dir, origin, key, MAX_ENTRY_SIZE)
    }

    /// Creates a log whose entries may be up to `max_entry_size` bytes (at
    /// most [`MAX_WAL_ENTRY_SIZE`]). Entry bundles of a log allowing more
    /// than [`MAX_ENTRY_SIZE`] fail for the larger entries.
    pub fn create(
        dir: &Path,
        origin: &str,
        key: &SecretKey,
        max_entry_size: usize,
    ) -> Result<Log, LogError> {
        if max_entry_size > MAX_WAL_ENTRY_SIZE {
            return Err(LogError::Setup(format!(
                "maximum entry size {max_entry_size} is above {MAX_WAL_ENTRY_SIZE}"
            )));
        }
        check_key_name(origin).map_err(|e| LogError::Setup(format!("origin: {e}")))?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let config_path = dir.join("config.json");
        if config_path.exists() {
            return Err(LogError::Setup(format!(
                "{} already holds a log",
                dir.display()
            )));
        }
        let key_path = dir.join("log.key");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io_err(&key_path))?;
        f.write_all(key.to_file_text().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io_err(&key_path))?;
        let entries = dir.join("entries");
        File::create(&entries)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&entries))?;
        let config = serde_json::to_vec_pretty(&Config {
            origin: origin.to_string(),
            format: FORMAT,
            max_entry_size,
        })
        .map_err(|e| LogError::Setup(e.to_string()))?;
        // The config is written last: its presence marks a complete init.
        write_atomic(dir, "config.json", &config)?;
        let log = Log::open(dir)?;
        log.checkpoint()?;
        Ok(log)
    }

    /// Opens the log in `dir`, recovering from a torn tail.
    pub fn open(dir: &Path) -> Result<Log, LogError> {
        let config_path = dir.join("config.json");
        let config: Config = match fs::read(&config_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| LogError::Corrupt(format!("{}: {e}", config_path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LogError::Setup(format!(
                    "no log in {} (run `verinfer log init` first)",
                    dir.display()
                )))
            }
            Err(e) => return Err(io_err(&config_path)(e)),
        };
        if config.format != FORMAT || config.max_entry_size > MAX_WAL_ENTRY_SIZE {
            return Err(LogError::Setup(format!(
                "unsupported log format {}",
                config.format
            )));
        }
        let key_path = dir.join("log.key");
        let key_text = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let key = SecretKey::from_file_text(&key_text)
            .map_err(|e| LogError::Corrupt(format!("{}: {e}", key_path.display())))?;
        let verifier_key = VerifierKey::new(&config.origin, ALG_ED25519, key.public())
            .map_err(|e| LogError::Corrupt(format!("origin: {e}")))?;

        let entries_path = dir.join("entries");
        let entries = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&entries_path)
            .map_err(io_err(&entries_path))?;
        let durable = recover(&entries, &entries_path, config.max_entry_size)?;
        let size = durable.tree.size();

        let checkpoint = match fs::read_to_string(dir.join("checkpoint")) {
            Ok(text) => {
                let c = SignedCheckpoint::open(&text, &verifier_key)?;
                let cp = &c.checkpoint;
                if cp.size > size || durable.tree.root(cp.size)? != cp.root {
                    return Err(LogError::Corrupt(format!(
                        "the signed checkpoint of size {} does not match the {size} entries on disk",
                        cp.size
                    )));
                }
                Some(c)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&dir.join("checkpoint"))(e)),
        };

        Ok(Log {
            dir: dir.to_path_buf(),
            origin: config.origin,
            key,
            verifier_key,
            entries,
            max_entry: config.max_entry_size,
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                next: size,
                durable: size,
                committing: false,
                failed: None,
            }),
            committed: Condvar::new(),
            state: RwLock::new(durable),
            checkpoint: Mutex::new(checkpoint),
        })
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The log's verifier key (`origin+keyid+base64`).
    pub fn verifier_key(&self) -> &VerifierKey {
        &self.verifier_key
    }

    /// Number of durable entries.
    pub fn size(&self) -> u64 {
        self.read().tree.size()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Durable> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one entry; returns its index once it is durable.
    pub fn append(&self, entry: Vec<u8>) -> Result<u64, LogError> {
        self.append_batch(vec![entry])
    }

    /// Appends entries as one contiguous run; returns the index of the first
    /// once all are durable. Concurrent callers share fsyncs.
    pub fn append_batch(&self, entries: Vec<Vec<u8>>) -> Result<u64, LogError> {
        let n = entries.len() as u64;
        let first = self.submit(entries)?;
        self.wait_durable(first + n)?;
        Ok(first)
    }

    /// Queues entries for the next group commit and returns the index of the
    /// first without waiting. Callers that must order their own state with
    /// the log's (the ledger) submit under their own lock, then wait outside
    /// it with [`Log::wait_durable`].
    pub fn submit(&self, entries: Vec<Vec<u8>>) -> Result<u64, LogError> {
        if let Some(e) = entries.iter().find(|e| e.len() > self.max_entry) {
            return Err(LogError::EntryTooLarge(e.len(), self.max_entry));
        }
        let mut q = lock(&self.queue);
        if let Some(f) = &q.failed {
            return Err(LogError::Failed(f.clone()));
        }
        let first = q.next;
        q.next += entries.len() as u64;
        q.pending.extend(entries);
        Ok(first)
    }

    /// Returns once the first `size` entries are durable, leading a group
    /// commit if none is running.
    pub fn wait_durable(&self, size: u64) -> Result<(), LogError> {
        let mut q = lock(&self.queue);
        loop {
            if q.durable >= size {
                return Ok(());
            }
            if let Some(f) = &q.failed {
                return Err(LogError::Failed(f.clone()));
            }
            if size > q.next {
                return Err(LogError::NoEntry {
                    index: size - 1,
                    size: q.next,
                });
            }
            if q.committing {
                q = self.committed.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Become the leader: write everything queued with one sync.
            q.committing = true;
            let batch = std::mem::take(&mut q.pending);
            let base = q.durable;
            drop(q);
            let result = self.write_batch(base, &batch);
            q = lock(&self.queue);
            q.committing = false;
            match result {
                Ok(()) => q.durable = base + batch.len() as u64,
                Err(e) => q.failed = Some(e.to_string()),
            }
            self.committed.notify_all();
        }
    }

    /// Writes and syncs one batch, then publishes it to readers.
    fn write_batch(&self, base: u64, batch: &[Vec<u8>]) -> Result<(), LogError> {
        let start = self.read().end;
        let total: usize = batch.iter().map(|e| HEADER + e.len()).sum();
        let mut buf = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(batch.len());
        let mut hashes = Vec::with_capacity(batch.len());
        for (i, e) in batch.iter().enumerate() {
            offsets.push(start + buf.len() as u64);
            encode_frame(&mut buf, base + i as u64, e);
            hashes.push(leaf_hash(e));
        }
        let path = self.dir.join("entries");
        self.entries
            .write_all_at(&buf, start)
            .and_then(|_| self.entries.sync_data())
            .map_err(io_err(&path))?;
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        for h in hashes {
            st.tree.push(h);
        }
        st.offsets.extend(offsets);
        st.end = start + buf.len() as u64;
        Ok(())
    }

    /// The entry at `index`.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, LogError> {
        let (offset, size) = {
            let st = self.read();
            let size = st.tree.size();
            match st.offsets.get(index as usize) {
                Some(&o) if index < size => (o, size),
                _ => return Err(LogError::NoEntry { index, size }),
            }
        };
        let path = self.dir.join("entries");
        let mut header = [0u8; HEADER];
        self.entries
            .read_exact_at(&mut header, offset)
            .map_err(io_err(&path))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let mut data = vec![0u8; len];
        self.entries
            .read_exact_at(&mut data, offset + HEADER as u64)
            .map_err(io_err(&path))?;
        if frame_crc(&header[..12], &data)
            != u32::from_le_bytes([header[12], header[13], header[14], header[15]])
        {
            return Err(LogError::Corrupt(format!(
                "entry {index} fails its checksum (size {size})"
            )));
        }
        Ok(data)
    }

    /// The RFC 6962 leaf hash of the entry at `index`.
    pub fn leaf_hash(&self, index: u64) -> Result<Hash, LogError> {
        let st = self.read();
        let size = st.tree.size();
        st.tree
            .stored(0, index)
            .copied()
            .ok_or(LogError::NoEntry { index, size })
    }

    /// Root hash at `size`.
    pub fn root(&self, size: u64) -> Result<Hash, LogError> {
        Ok(self.read().tree.root(size)?)
    }

    /// Inclusion proof of `index` in the tree of `size`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        Ok(self.read().tree.inclusion_proof(index, size)?)
    }

    /// Consistency proof from `old` to `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        Ok(self.read().tree.consistency_proof(old, new)?)
    }

    /// Signs a checkpoint of the current size (or returns the stored one if
    /// the log has not grown) and stores it durably before returning it.
    pub fn checkpoint(&self) -> Result<SignedCheckpoint, LogError> {
        let mut latest = lock(&self.checkpoint);
        let (size, root) = {
            let st = self.read();
            let size = st.tree.size();
            (size, st.tree.root(size)?)
        };
        if let Some(c) = latest.as_ref() {
            if c.checkpoint.size == size {
                return Ok(c.clone());
            }
        }
        let signed = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
            extensions: Vec::new(),
        }
        .sign(&self.key)?;
        write_atomic(&self.dir, "checkpoint", signed.note.to_string().as_bytes())?;
        *latest = Some(signed.clone());
        Ok(signed)
    }

    /// The latest stored checkpoint, if one was signed.
    pub fn latest_checkpoint(&self) -> Option<SignedCheckpoint> {
        lock(&self.checkpoint).clone()
    }

    /// The bytes of a tile or entry bundle, or None if it does not exist at
    /// the current size.
    pub fn tile(&self, tile: &Tile) -> Result<Option<Vec<u8>>, LogError> {
        match tile.kind {
            TileKind::Hashes(_) => Ok(hash_tile(&self.read().tree, tile)),
            TileKind::Entries => {
                if !tile.exists_at(self.size()) {
                    return Ok(None);
                }
                let start = tile.index * 256;
                let mut bundle = Vec::new();
                for i in start..start + u64::from(tile.width) {
                    let e = self.entry(i)?;
                    if e.len() > MAX_ENTRY_SIZE {
                        return Err(LogError::EntryTooLarge(e.len(), MAX_ENTRY_SIZE));
                    }
                    push_bundle_entry(&mut bundle, &e);
                }
                Ok(Some(bundle))
            }
        }
    }

    /// Writes the checkpoint and every tile of the current checkpoint's size
    /// under `out`, laid out as C2SP tlog-tiles static files.
    pub fn export_tiles(&self, out: &Path) -> Result<usize, LogError> {
        let cp = self.checkpoint()?;
        let mut n = 0;
        for tile in Tile::all_for_size(cp.checkpoint.size) {
            let Some(bytes) = self.tile(&tile)? else {
                continue;
            };
            let path = out.join(tile.path());
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            fs::write(&path, bytes).map_err(io_err(&path))?;
            n += 1;
        }
        fs::create_dir_all(out).map_err(io_err(out))?;
        let path = out.join("checkpoint");
        fs::write(&path, cp.note.to_string()).map_err(io_err(&path))?;
        Ok(n)
    }
}

fn frame_crc(header12: &[u8], data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(header12);
    h.update(data);
    h.finalize()
}

fn encode_frame(buf: &mut Vec<u8>, index: u64, data: &[u8]) {
    let start = buf.len();
    buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
    buf.extend_from_slice(&index.to_le_bytes());
    let crc = frame_crc(&buf[start..start + 12], data);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf.extend_from_slice(data);
}

/// Parses a frame at the start of `buf` expecting `index`; returns its total
/// length, or None if it is not a complete valid frame.
fn parse_frame(buf: &[u8], index: u64, max: usize) -> Option<(usize, &[u8])> {
    if buf.len() < HEADER {
        return None;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().ok()?) as usize;
    let idx = u64::from_le_bytes(buf[4..12].try_into().ok()?);
    let crc = u32::from_le_bytes(buf[12..16].try_into().ok()?);
    if idx != index || len > max || buf.len() < HEADER + len {
        return None;
    }
    let data = &buf[HEADER..HEADER + len];
    (frame_crc(&buf[..12], data) == crc).then_some((HEADER + len, data))
}

/// Reads the entries file, rebuilding the tree; cuts off a torn tail.
fn recover(file: &File, path: &Path, max: usize) -> Result<Durable, LogError> {
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let mut tree = Tree::new();
    let mut offsets = Vec::new();
    let mut pos = 0u64;
    let mut frame = Vec::new();
    while pos < len {
        let avail = (len - pos).min((HEADER + max) as u64) as usize;
        frame.resize(HEADER, 0);
        if avail < HEADER || reader.read_exact(&mut frame).is_err() {
            break;
        }
        let data_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        if data_len > max || HEADER + data_len > avail {
            break;
        }
        frame.resize(HEADER + data_len, 0);
        if reader.read_exact(&mut frame[HEADER..]).is_err() {
            break;
        }
        match parse_frame(&frame, offsets.len() as u64, max) {
            Some((n, data)) => {
                tree.push(leaf_hash(data));
                offsets.push(pos);
                pos += n as u64;
            }
            None => break,
        }
    }
    if pos < len {
        let next = offsets.len() as u64;
        let mut rest = vec![0u8; (len - pos) as usize];
        file.read_exact_at(&mut rest, pos).map_err(io_err(path))?;
        // Any valid frame for a later index after the bad one means the file
        // was damaged in the middle, not torn at the end.
        let later_frame = (1..rest.len().saturating_sub(HEADER - 1)).find(|&p| {
            let idx = u64::from_le_bytes(rest[p + 4..p + 12].try_into().unwrap_or([0xff; 8]));
            idx >= next
                && idx - next < rest.len() as u64
                && parse_frame(&rest[p..], idx, max).is_some()
        });
        if let Some(at) = later_frame {
            return Err(LogError::Corrupt(format!(
                "{}: entry {next} at byte {pos} is damaged but valid entries follow at byte {}",
                path.display(),
                pos + at as u64
            )));
        }
        tracing::warn!(
            path = %path.display(),
            torn_bytes = len - pos,
            entries = next,
            "cutting off a torn tail left by an interrupted append"
        );
        file.set_len(pos)
            .and_then(|_| file.sync_all())
            .map_err(io_err(path))?;
    }
    Ok(Durable {
        tree,
        offsets,
        end: pos,
    })
}

/// Writes `name` in `dir` atomically: temporary file, fsync, rename, fsync dir.
/// Writes `dir/name` atomically and durably (temporary file, fsync, rename,
/// directory fsync): after a crash the file holds the old or the new bytes.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let dst = dir.join(name);
    let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A frame decodes to its data at its index, and to nothing at any
        /// other index or when any byte of it is cut off.
        #[test]
        fn frames_roundtrip(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600), index in 0u64..u64::MAX) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, index, &data);
            let (n, got) = parse_frame(&buf, index, MAX_ENTRY_SIZE).unwrap();
            proptest::prop_assert_eq!(n, buf.len());
            proptest::prop_assert_eq!(got, &data[..]);
            proptest::prop_assert!(parse_frame(&buf, index.wrapping_add(1), MAX_ENTRY_SIZE).is_none());
            proptest::prop_assert!(parse_frame(&buf[..buf.len() - 1], index, MAX_ENTRY_SIZE).is_none());
        }

        /// Flipping any single bit of a frame is detected.
        #[test]
        fn frames_detect_bit_flips(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..300), bit in 0usize..10_000) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, 7, &data);
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            proptest::prop_assert!(parse_frame(&buf, 7, MAX_ENTRY_SIZE).is_none());
        }
    }
}
