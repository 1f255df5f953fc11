//! GGUF file reader: header, metadata and tensor directory over a memory map.
//!
//! Every length, count and offset read from the file is checked against the
//! file size before use, so a truncated or corrupt file is an error, not a panic.
//! Its own crate, apart from the engine, because model files are downloaded
//! (untrusted input): the coverage-guided fuzzer builds this parser alone.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

mod mmap;

/// Why a GGUF file was refused.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// The file could not be opened or read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a well-formed GGUF file.
    #[error("invalid GGUF file: {0}")]
    Format(String),
    /// The file ends before a structure it declares.
    #[error("truncated GGUF file: {0}")]
    Truncated(String),
    /// A required metadata key is missing or has the wrong type.
    #[error("model is missing or has a malformed {0}")]
    Missing(String),
}

/// Result alias for the reader.
pub type Result<T> = std::result::Result<T, GgufError>;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Unsigned integer (u8, u16, u32 or u64 in the file).
    UInt(u64),
    /// Signed integer (i8, i16, i32 or i64 in the file).
    Int(i64),
    /// Floating point (f32 or f64 in the file).
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string (invalid UTF-8 is replaced).
    Str(String),
    /// Array of values.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::UInt(v) => Some(*v),
            Value::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
    /// The value as a float, if numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(v) => Some(*v),
            Value::UInt(v) => Some(*v as f64),
            Value::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    /// The value as a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// The value as an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// GGML tensor element types this engine can compute with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// 4-bit, block of 32, scale.
    Q4_0,
    /// 4-bit, block of 32, scale and minimum.
    Q4_1,
    /// 8-bit, block of 32, scale.
    Q8_0,
    /// 5-bit, block of 32, scale (high bits apart).
    Q5_0,
    /// 4-bit k-quant, super-block of 256 (6-bit scales and minimums).
    Q4K,
    /// 5-bit k-quant, super-block of 256 (6-bit scales and minimums).
    Q5K,
    /// 6-bit k-quant, super-block of 256 (8-bit scales).
    Q6K,
}

impl GgmlType {
    /// Decode a GGML type number.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            8 => Self::Q8_0,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            _ => return None,
        })
    }
    /// The GGML type number.
    pub fn to_u32(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q8_0 => 8,
            Self::Q4K => 12,
            Self::Q5K => 13,
            Self::Q6K => 14,
        }
    }
    /// Elements per block.
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q8_0 => 32,
            Self::Q4K | Self::Q5K | Self::Q6K => 256,
        }
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q8_0 => 34,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
        }
    }
}

/// Human-readable name of a GGML type number (for error messages).
pub fn ggml_type_name(v: u32) -> String {
    let name = match v {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        30 => "BF16",
        _ => return format!("type {v}"),
    };
    name.to_string()
}

/// One entry of the tensor directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// Dimensions, innermost (contiguous) first, as in GGUF.
    pub dims: Vec<u64>,
    /// Raw GGML type number.
    pub raw_type: u32,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    /// Byte length of the data (0 if the type is unsupported).
    pub len: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elems(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A memory-mapped GGUF file.
pub struct Gguf {
    mmap: Mmap,
    /// GGUF format version.
    pub version: u32,
    /// Metadata key/value pairs.
    pub metadata: HashMap<String, Value>,
    /// Tensor directory.
    pub tensors: HashMap<String, TensorInfo>,
}

impl std::fmt::Debug for Gguf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Metadata values parsed so far (bounded to cap memory use on hostile files).
    values: usize,
}

/// Most metadata values (array elements included) a file may hold.
const MAX_VALUES: usize = 1 << 24;

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                GgufError::Truncated(format!("file ends inside {what} at byte {}", self.pos))
            })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    fn len(&mut self, what: &str) -> Result<usize> {
        let v = self.u64(what)?;
        let remaining = (self.buf.len() - self.pos) as u64;
        if v > remaining {
            return Err(GgufError::Truncated(format!(
                "{what} declares length {v} but only {remaining} bytes remain"
            )));
        }
        Ok(v as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        let b = self.take(n, what)?;
        Ok(String::from_utf8_lossy(b).into_owned())
    }
    fn value(&mut self, ty: u32, depth: u32, what: &str) -> Result<Value> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(GgufError::Format(format!(
                "{what}: more than {MAX_VALUES} metadata values"
            )));
        }
        Ok(match ty {
            0 => Value::UInt(u64::from(self.arr::<1>(what)?[0])),
            1 => Value::Int(i64::from(self.arr::<1>(what)?[0] as i8)),
            2 => Value::UInt(u64::from(u16::from_le_bytes(self.arr(what)?))),
            3 => Value::Int(i64::from(i16::from_le_bytes(self.arr(what)?))),
            4 => Value::UInt(u64::from(self.u32(what)?)),
            5 => Value::Int(i64::from(i32::from_le_bytes(self.arr(what)?))),
            6 => Value::Float(f64::from(f32::from_le_bytes(self.arr(what)?))),
            7 => Value::Bool(self.arr::<1>(what)?[0] != 0),
            8 => Value::Str(self.string(what)?),
            9 => {
                if depth > 4 {
                    return Err(GgufError::Format(format!(
                        "{what}: arrays nested too deeply"
                    )));
                }
                let et = self.u32(what)?;
                // Every element takes at least one byte, so `len` bounds the count.
                let n = self.len(what)?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(et, depth + 1, what)?);
                }
                Value::Array(v)
            }
            10 => Value::UInt(self.u64(what)?),
            11 => Value::Int(i64::from_le_bytes(self.arr(what)?)),
            12 => Value::Float(f64::from_le_bytes(self.arr(what)?)),
            t => {
                return Err(GgufError::Format(format!(
                    "{what}: unknown metadata value type {t}"
                )))
            }
        })
    }
}

impl Gguf {
    /// Open and parse a GGUF file.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: see `map_file`.
        let mmap = mmap::map_file(&file).map_err(io)?;
        Self::parse(mmap)
    }

    /// Parses a GGUF file held in memory (copied into an anonymous map), for
    /// bytes that did not come from a file, and for fuzzing the parser.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.is_empty() {
            return Err(GgufError::Truncated(
                "file ends inside header at byte 0".into(),
            ));
        }
        let io = |source| GgufError::Io {
            path: "<memory>".into(),
            source,
        };
        let mut map = memmap2::MmapMut::map_anon(bytes.len()).map_err(io)?;
        map.copy_from_slice(bytes);
        Self::parse(map.make_read_only().map_err(io)?)
    }

    fn parse(mmap: Mmap) -> Result<Self> {
        let (version, metadata, tensors) = {
            let mut c = Cursor {
                buf: &mmap,
                pos: 0,
                values: 0,
            };
            let (version, n_tensors, n_kv) = header(&mut c)?;
            let metadata = read_metadata(&mut c, n_kv)?;
            let infos = read_tensor_infos(&mut c, n_tensors)?;
            let align = alignment(&metadata)?;
            let data_start = c.pos.div_ceil(align) * align;
            let file_len = mmap.len();
            let mut tensors = HashMap::new();
            for raw in infos {
                let info = place(raw, data_start, file_len)?;
                tensors.insert(info.name.clone(), info);
            }
            (version, metadata, tensors)
        };
        Ok(Gguf {
            mmap,
            version,
            metadata,
            tensors,
        })
    }

    /// The bytes of a tensor's data.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.offset..info.offset + info.len]
    }

    /// Metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// Required unsigned metadata value.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| GgufError::Missing(format!("metadata key {key:?}")))
    }

    /// Required string metadata value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| GgufError::Missing(format!("metadata key {key:?}")))
    }
}

/// The magic, the version, and the tensor and key counts.
fn header(c: &mut Cursor<'_>) -> Result<(u32, u64, u64)> {
    let magic = c.take(4, "header")?;
    if magic != b"GGUF" {
        return Err(GgufError::Format("bad magic (not a GGUF file)".into()));
    }
    let version = c.u32("header")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Format(format!(
            "unsupported GGUF version {version}"
        )));
    }
    let n_tensors = c.u64("header")?;
    let n_kv = c.u64("header")?;
    if n_tensors > (1 << 24) || n_kv > (1 << 24) {
        return Err(GgufError::Format("implausible tensor or key count".into()));
    }
    Ok((version, n_tensors, n_kv))
}

fn read_metadata(c: &mut Cursor<'_>, n_kv: u64) -> Result<HashMap<String, Value>> {
    let mut metadata = HashMap::new();
    for _ in 0..n_kv {
        let key = c.string("metadata key")?;
        let ty = c.u32("metadata type")?;
        let v = c.value(ty, 0, &format!("metadata value {key:?}"))?;
        metadata.insert(key, v);
    }
    Ok(metadata)
}

/// A tensor as its header entry gives it: name, dimensions, type, offset
/// from the start of the data.
type RawInfo = (String, Vec<u64>, u32, u64);

fn read_tensor_infos(c: &mut Cursor<'_>, n_tensors: u64) -> Result<Vec<RawInfo>> {
    let mut infos = Vec::new();
    for _ in 0..n_tensors {
        let name = c.string("tensor name")?;
        let nd = c.u32("tensor info")?;
        if nd == 0 || nd > 4 {
            return Err(GgufError::Format(format!(
                "tensor {name:?} has {nd} dimensions"
            )));
        }
        let mut dims = Vec::new();
        for _ in 0..nd {
            dims.push(c.u64("tensor info")?);
        }
        let raw_type = c.u32("tensor info")?;
        let offset = c.u64("tensor info")?;
        infos.push((name, dims, raw_type, offset));
    }
    Ok(infos)
}

/// `general.alignment` (default 32): a power of two up to 64 KiB.
fn alignment(metadata: &HashMap<String, Value>) -> Result<usize> {
    let align = metadata
        .get("general.alignment")
        .and_then(Value::as_u64)
        .unwrap_or(32);
    if align == 0 || !align.is_power_of_two() || align > 1 << 16 {
        return Err(GgufError::Format(format!("bad alignment {align}")));
    }
    Ok(align as usize)
}

/// Where a tensor's data lies in the file, checked to fit in it.
fn place(raw: RawInfo, data_start: usize, file_len: usize) -> Result<TensorInfo> {
    let (name, dims, raw_type, offset) = raw;
    let mut elems: u64 = 1;
    for &d in &dims {
        elems = elems
            .checked_mul(d)
            .filter(|&e| e < (1 << 40))
            .ok_or_else(|| GgufError::Format(format!("tensor {name:?} is implausibly large")))?;
    }
    let len = match GgmlType::from_u32(raw_type) {
        Some(t) => {
            if dims[0] % t.block_elems() as u64 != 0 {
                return Err(GgufError::Format(format!(
                    "tensor {name:?}: row length {} is not a multiple of the block size",
                    dims[0]
                )));
            }
            (elems / t.block_elems() as u64) as usize * t.block_bytes()
        }
        None => 0,
    };
    let start = usize::try_from(offset)
        .ok()
        .and_then(|o| o.checked_add(data_start))
        .ok_or_else(|| GgufError::Format(format!("tensor {name:?}: bad offset")))?;
    if start.checked_add(len).is_none_or(|e| e > file_len) {
        return Err(GgufError::Truncated(format!(
            "tensor {name:?} needs bytes {start}..{} but the file has {file_len}",
            start.saturating_add(len)
        )));
    }
    Ok(TensorInfo {
        name,
        dims,
        raw_type,
        offset: start,
        len,
    })
}

/// Helpers to write GGUF files (used by tests and tools to build small models).
pub mod writer {
    use super::Value;

    /// A tensor to write: name, dims (innermost first), GGML type number, raw data.
    #[derive(Debug)]
    pub struct WTensor {
        /// Name.
        pub name: String,
        /// Dimensions, innermost first.
        pub dims: Vec<u64>,
        /// GGML type number.
        pub ty: u32,
        /// Raw bytes.
        pub data: Vec<u8>,
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    /// Integer widths of the metadata written.
    #[derive(Clone, Copy)]
    enum Ints {
        /// Every integer as u64 / i64.
        Wide,
        /// u32 / i32 (llama.cpp's loader requires them for hyperparameters
        /// and token types); the reader reads both alike.
        Narrow,
    }

    fn type_of(v: &Value, ints: Ints) -> u32 {
        match (v, ints) {
            (Value::UInt(_), Ints::Wide) => 10,
            (Value::Int(_), Ints::Wide) => 11,
            (Value::UInt(_), Ints::Narrow) => 4,
            (Value::Int(_), Ints::Narrow) => 5,
            (Value::Float(_), _) => 6,
            (Value::Bool(_), _) => 7,
            (Value::Str(_), _) => 8,
            (Value::Array(_), _) => 9,
        }
    }

    fn put_val(out: &mut Vec<u8>, v: &Value, ints: Ints) {
        match (v, ints) {
            (Value::UInt(x), Ints::Wide) => out.extend_from_slice(&x.to_le_bytes()),
            (Value::Int(x), Ints::Wide) => out.extend_from_slice(&x.to_le_bytes()),
            (Value::UInt(x), Ints::Narrow) => out.extend_from_slice(&(*x as u32).to_le_bytes()),
            (Value::Int(x), Ints::Narrow) => out.extend_from_slice(&(*x as i32).to_le_bytes()),
            (Value::Float(x), _) => out.extend_from_slice(&(*x as f32).to_le_bytes()),
            (Value::Bool(b), _) => out.push(u8::from(*b)),
            (Value::Str(s), _) => put_str(out, s),
            (Value::Array(a), _) => {
                let et = a.first().map_or(8, |x| type_of(x, ints));
                out.extend_from_slice(&et.to_le_bytes());
                out.extend_from_slice(&(a.len() as u64).to_le_bytes());
                for x in a {
                    put_val(out, x, ints);
                }
            }
        }
    }

    /// Serialise a GGUF v3 file (integers in the metadata as u64 / i64).
    pub fn write(meta: &[(String, Value)], tensors: &[WTensor]) -> Vec<u8> {
        write_ints(meta, tensors, Ints::Wide)
    }

    /// [`write`] with integers in the metadata as u32 / i32 (values must
    /// fit), as llama.cpp's loader requires.
    pub fn write_narrow(meta: &[(String, Value)], tensors: &[WTensor]) -> Vec<u8> {
        write_ints(meta, tensors, Ints::Narrow)
    }

    fn write_ints(meta: &[(String, Value)], tensors: &[WTensor], ints: Ints) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (k, v) in meta {
            put_str(&mut out, k);
            out.extend_from_slice(&type_of(v, ints).to_le_bytes());
            put_val(&mut out, v, ints);
        }
        let mut off = 0u64;
        let mut offsets = Vec::new();
        for t in tensors {
            offsets.push(off);
            off += (t.data.len() as u64).div_ceil(32) * 32;
        }
        for (t, off) in tensors.iter().zip(&offsets) {
            put_str(&mut out, &t.name);
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.to_le_bytes());
            out.extend_from_slice(&off.to_le_bytes());
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        for t in tensors {
            out.extend_from_slice(&t.data);
            while out.len() % 32 != 0 {
                out.push(0);
            }
        }
        out
    }
}

impl Gguf {
    /// The whole mapped file (tensor views index into it by absolute offset).
    pub fn tensor_bytes_all(&self) -> &[u8] {
        &self.mmap
    }
}
