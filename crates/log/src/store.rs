//! The log on disk: durable appends with group commit, crash recovery,
//! signed checkpoints, proofs and tiles.
//!
//! Layout of a log directory:
//!
//! - `config.json`: the origin and format version;
//! - `log.key`: the log's Ed25519 signing key (mode 0600);
//! - `entries`: the entries, each framed as
//!   `len: u32 LE | index: u64 LE | crc32(len | index | data): u32 LE | data`,
//!   each group commit opened by a batch marker, a frame of the same layout
//!   with index `u64::MAX` whose data is `first index | count | bytes` (u64
//!   LE each: the entries of the batch and the length of their frames);
//! - `checkpoint`: the latest signed checkpoint note, replaced atomically;
//! - `lock`: the pid of the process that has the log open, which holds an
//!   exclusive lock on it (see [`crate::dirlock`]).
//!
//! The entries file is the single source of truth; the Merkle tree (64 bytes
//! per entry) and the entry offsets (8 bytes per entry) are rebuilt in memory
//! when the log opens. An append is acknowledged only after its frame is
//! written and `fdatasync`ed; appenders that arrive while a sync is running
//! queue up and share the next one (group commit).
//!
//! Recovery: frames are read in order and checked (length, index, CRC, and
//! each batch against its marker). A batch is written only after the one
//! before it is synced, so only the last batch can have been interrupted, and
//! its frames may have reached the disk in any order. A damaged or incomplete
//! batch is therefore cut off whole if nothing written after it survives (no
//! later marker, and no later entry frame beyond its end): it was never
//! acknowledged. Damage followed by a later batch is damage to acknowledged
//! data, and opening fails. So does a stored checkpoint that the recovered
//! entries do not reproduce. Format 1 logs (frames without markers) open
//! under the old rule for their existing frames (a bad frame is a torn tail
//! only if no valid frame follows) and get markers from then on.

use crate::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
use crate::dirlock::{DirLock, DirLockError};
use crate::merkle::{leaf_hash, ProofError, Tree};
use crate::tiles::{hash_tile, push_bundle_entry, Tile, TileKind};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, RwLock};
use verinfer_types::note::{check_key_name, VerifierKey, ALG_ED25519};
use verinfer_types::sync::lock;
use verinfer_types::{Hash, SecretKey};

/// Largest entry of a transparency log, so that it fits a tile entry bundle
/// (u16 length). Logs used only as write-ahead logs may allow more.
pub const MAX_ENTRY_SIZE: usize = u16::MAX as usize;
/// Hard upper bound of any log's entries (frames carry a u32 length).
pub const MAX_WAL_ENTRY_SIZE: usize = 64 << 20;

const HEADER: usize = 16;
/// Format 2 opens each group commit with a batch marker; format 1 logs are
/// upgraded on open (their frames stay as they are, before `legacy_end`).
const FORMAT: u32 = 2;
/// Index field of a batch marker frame; no entry gets this index.
const MARKER: u64 = u64::MAX;
/// Data of a batch marker: first index, entry count, bytes of entry frames.
const MARKER_DATA: usize = 24;

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
    /// Another process (or another handle in this one) has the log open.
    #[error(transparent)]
    Lock(#[from] DirLockError),
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
    /// Bytes of the entries file written before batch markers (format 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    legacy_end: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    /// Held while the log is open: one writer per directory.
    _lock: DirLock,
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
        let lock = DirLock::acquire(dir)?;
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
            legacy_end: 0,
        })
        .map_err(|e| LogError::Setup(e.to_string()))?;
        // The config is written last: its presence marks a complete init.
        write_atomic(dir, "config.json", &config)?;
        let log = Log::open_locked(dir, lock)?;
        log.checkpoint()?;
        Ok(log)
    }

    /// Opens the log in `dir`, recovering from a torn tail. Fails with
    /// [`LogError::Lock`] while another handle has it open.
    pub fn open(dir: &Path) -> Result<Log, LogError> {
        if !dir.join("config.json").exists() {
            return Err(no_log(dir));
        }
        Self::open_locked(dir, DirLock::acquire(dir)?)
    }

    fn open_locked(dir: &Path, lock: DirLock) -> Result<Log, LogError> {
        let config_path = dir.join("config.json");
        let mut config: Config = match fs::read(&config_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| LogError::Corrupt(format!("{}: {e}", config_path.display())))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(no_log(dir)),
            Err(e) => return Err(io_err(&config_path)(e)),
        };
        if !(1..=FORMAT).contains(&config.format) || config.max_entry_size > MAX_WAL_ENTRY_SIZE {
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
        // A format 1 file is all legacy frames, under the old rule.
        let legacy_end = if config.format == 1 {
            u64::MAX
        } else {
            config.legacy_end
        };
        let durable = recover(&entries, &entries_path, config.max_entry_size, legacy_end)?;
        if config.format == 1 {
            // Batches appended from now on carry markers.
            config.format = FORMAT;
            config.legacy_end = durable.end;
            let bytes =
                serde_json::to_vec_pretty(&config).map_err(|e| LogError::Setup(e.to_string()))?;
            write_atomic(dir, "config.json", &bytes)?;
        }
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
            _lock: lock,
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
        let bytes: usize = batch.iter().map(|e| HEADER + e.len()).sum();
        let mut buf = Vec::with_capacity(HEADER + MARKER_DATA + bytes);
        let marker = Marker {
            base,
            count: batch.len() as u64,
            bytes: bytes as u64,
        };
        encode_frame(&mut buf, MARKER, &marker.encode());
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
                let Some((start, end)) = tile.node_range().filter(|_| tile.exists_at(self.size()))
                else {
                    return Ok(None);
                };
                let mut bundle = Vec::new();
                for i in start..end {
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

fn no_log(dir: &Path) -> LogError {
    LogError::Setup(format!(
        "no log in {} (run `verinfer log init` first)",
        dir.display()
    ))
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

/// A batch marker: the group commit it opens holds entries
/// `base..base + count` in the `bytes` bytes after the marker frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Marker {
    base: u64,
    count: u64,
    bytes: u64,
}

impl Marker {
    fn encode(&self) -> [u8; MARKER_DATA] {
        let mut d = [0u8; MARKER_DATA];
        d[..8].copy_from_slice(&self.base.to_le_bytes());
        d[8..16].copy_from_slice(&self.count.to_le_bytes());
        d[16..].copy_from_slice(&self.bytes.to_le_bytes());
        d
    }

    fn decode(d: &[u8]) -> Option<Marker> {
        if d.len() != MARKER_DATA {
            return None;
        }
        let word = |i: usize| u64::from_le_bytes(d[i..i + 8].try_into().unwrap_or_default());
        Some(Marker {
            base: word(0),
            count: word(8),
            bytes: word(16),
        })
    }
}

/// A frame read back: an entry or a batch marker.
enum Frame<'a> {
    Entry(&'a [u8]),
    Marker(Marker),
}

/// Parses a complete valid frame at the start of `buf`: an entry that must
/// have `index`, or a batch marker. Returns its total length.
fn parse_any(buf: &[u8], index: u64, max: usize) -> Option<(usize, Frame<'_>)> {
    let header = buf.get(..HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let idx = u64::from_le_bytes(header[4..12].try_into().ok()?);
    let crc = u32::from_le_bytes(header[12..16].try_into().ok()?);
    let limit = if idx == MARKER { MARKER_DATA } else { max };
    if (idx != index && idx != MARKER) || len > limit {
        return None;
    }
    let data = buf.get(HEADER..HEADER + len)?;
    if frame_crc(&header[..12], data) != crc {
        return None;
    }
    let frame = if idx == MARKER {
        Frame::Marker(Marker::decode(data)?)
    } else {
        Frame::Entry(data)
    };
    Some((HEADER + len, frame))
}

/// Parses an entry frame at the start of `buf` expecting `index`; returns its
/// total length, or None if it is not a complete valid entry frame.
#[cfg(test)]
fn parse_frame(buf: &[u8], index: u64, max: usize) -> Option<(usize, &[u8])> {
    match parse_any(buf, index, max)? {
        (n, Frame::Entry(d)) => Some((n, d)),
        (_, Frame::Marker(_)) => None,
    }
}

/// Where the sequential read of the entries file stopped on a bad frame.
#[derive(Clone, Copy)]
enum Damage {
    /// At byte `at`, in the frames written before batch markers existed.
    Legacy { at: u64 },
    /// Inside the batch whose marker is at byte `start`.
    InBatch { start: u64, marker: Marker },
    /// At byte `at`, where the next batch's marker should be.
    Boundary { at: u64 },
}

/// Reads the entries file, rebuilding the tree. Frames before `legacy_end`
/// predate batch markers. Cuts off the last batch if it is incomplete or
/// damaged and nothing written after it survives (it was never
/// acknowledged); any other damage is an error.
fn recover(file: &File, path: &Path, max: usize, legacy_end: u64) -> Result<Durable, LogError> {
    let len = file.metadata().map_err(io_err(path))?.len();
    match scan(file, len, max, legacy_end) {
        (durable, None) => Ok(durable),
        (durable, Some(damage)) => cut_damaged_tail(file, path, len, max, durable, damage),
    }
}

/// Reads complete, checked batches from the start of the file; returns
/// them and where the read stopped on a bad frame, if it did.
fn scan(file: &File, len: u64, max: usize, legacy_end: u64) -> (Durable, Option<Damage>) {
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let mut tree = Tree::new();
    let mut offsets = Vec::new();
    let mut pos = 0u64;
    let mut frame = Vec::new();
    // The batch being read: marker position, marker, end, and its entries
    // (offset, leaf hash), kept aside until the whole batch checks out.
    let mut batch: Option<(u64, Marker, u64)> = None;
    let mut pending: Vec<(u64, Hash)> = Vec::new();
    let damage = loop {
        if let Some((start, marker, end)) = batch {
            if pos >= end || pos == len {
                if pos != end || pending.len() as u64 != marker.count {
                    break Some(Damage::InBatch { start, marker });
                }
                for (offset, hash) in pending.drain(..) {
                    offsets.push(offset);
                    tree.push(hash);
                }
                batch = None;
            }
        }
        if pos == len {
            break None;
        }
        let bad = match batch {
            _ if pos < legacy_end => Damage::Legacy { at: pos },
            Some((start, marker, _)) => Damage::InBatch { start, marker },
            None => Damage::Boundary { at: pos },
        };
        let avail = (len - pos).min((HEADER + max.max(MARKER_DATA)) as u64) as usize;
        frame.resize(HEADER, 0);
        if avail < HEADER || reader.read_exact(&mut frame).is_err() {
            break Some(bad);
        }
        let data_len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        if HEADER + data_len > avail {
            break Some(bad);
        }
        frame.resize(HEADER + data_len, 0);
        if reader.read_exact(&mut frame[HEADER..]).is_err() {
            break Some(bad);
        }
        let next = (offsets.len() + pending.len()) as u64;
        match parse_any(&frame, next, max) {
            Some((n, Frame::Entry(data))) if pos < legacy_end => {
                offsets.push(pos);
                tree.push(leaf_hash(data));
                pos += n as u64;
            }
            Some((n, Frame::Entry(data))) if batch.is_some() => {
                pending.push((pos, leaf_hash(data)));
                pos += n as u64;
            }
            // A batch opens at a boundary, at the entry it says.
            Some((n, Frame::Marker(m)))
                if pos >= legacy_end && batch.is_none() && m.base == next && m.count > 0 =>
            {
                let start = pos;
                pos += n as u64;
                batch = Some((start, m, pos.saturating_add(m.bytes)));
            }
            _ => break Some(bad),
        }
    };
    let durable = Durable {
        tree,
        offsets,
        end: pos,
    };
    (durable, damage)
}

/// Cuts the file at `damage` if nothing valid was written after it (an
/// unacknowledged last batch); an error otherwise.
fn cut_damaged_tail(
    file: &File,
    path: &Path,
    len: u64,
    max: usize,
    durable: Durable,
    damage: Damage,
) -> Result<Durable, LogError> {
    // Batches are written one after another, each only once the one before
    // is synced. So a valid frame written after the damaged batch proves the
    // damage hit synced, acknowledged data; otherwise the damaged batch was
    // the last one, never acknowledged, and is cut off whole.
    let next = durable.offsets.len() as u64;
    let (cut, later_from) = match damage {
        Damage::Legacy { at } | Damage::Boundary { at } => (at, at + 1),
        Damage::InBatch { start, marker } => (
            start,
            // Frames of the damaged batch itself lie before its end.
            (start + (HEADER + MARKER_DATA) as u64).saturating_add(marker.bytes),
        ),
    };
    let mut rest = vec![0u8; len.saturating_sub(cut + 1) as usize];
    file.read_exact_at(&mut rest, cut + 1)
        .map_err(io_err(path))?;
    if let Some(p) = later_frame(&rest, cut, later_from, next, max, damage) {
        return Err(LogError::Corrupt(format!(
            "{}: entry {next} at byte {cut} is damaged but data written after it follows at byte {}",
            path.display(),
            cut + 1 + p as u64
        )));
    }
    tracing::warn!(
        path = %path.display(),
        cut_bytes = len - cut,
        entries = next,
        "cutting off an unacknowledged batch left by an interrupted append"
    );
    file.set_len(cut)
        .and_then(|_| file.sync_all())
        .map_err(io_err(path))?;
    Ok(Durable {
        end: cut,
        ..durable
    })
}

/// The offset in `rest` (the file after byte `cut`) of the first valid frame
/// at or after byte `later_from` that a writer put there after entry `next`.
fn later_frame(
    rest: &[u8],
    cut: u64,
    later_from: u64,
    next: u64,
    max: usize,
    damage: Damage,
) -> Option<usize> {
    (0..rest.len().saturating_sub(HEADER - 1)).find(|&p| {
        let at = cut + 1 + p as u64;
        let idx = u64::from_le_bytes(rest[p + 4..p + 12].try_into().unwrap_or([0; 8]));
        let plausible = |i: u64| i >= next && i - next < rest.len() as u64;
        // Cheap checks first: a CRC at every byte would be quadratic.
        if at < later_from {
            false
        } else if idx == MARKER {
            matches!(parse_any(&rest[p..], idx, max), Some((_, Frame::Marker(m))) if plausible(m.base))
        } else {
            // The last batch's marker may be lost while some of its frames
            // reached the disk: at a boundary only a marker proves damage.
            !matches!(damage, Damage::Boundary { .. })
                && plausible(idx)
                && parse_any(&rest[p..], idx, max).is_some()
        }
    })
}

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

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log").finish_non_exhaustive()
    }
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
