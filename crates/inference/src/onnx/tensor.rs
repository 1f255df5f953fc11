//! Record-friendly tensors: dtype, shape and raw little-endian bytes.
//!
//! A [`Tensor`] never holds floats as JSON numbers: its bytes serialise as a
//! lowercase hex string, so a record can carry an input or an output exactly
//! and anyone can recompute its digest.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Element type of a [`Tensor`].
///
/// The serde form (and [`DType::name`]) is the lowercase name (`"f32"`,
/// `"i64"`, `"bool"`, ...); [`DType::tag`] is the one-byte tag used in the
/// canonical digest encoding. Both are part of the record format and never
/// change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary64.
    F64,
    /// IEEE 754 binary16.
    F16,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// Boolean, one byte per element, `0x00` or `0x01`.
    Bool,
}

impl DType {
    /// Every dtype, in tag order.
    pub const ALL: [DType; 12] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::I8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    /// Lowercase name, as in records.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::I8 => "i8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
        }
    }

    /// One-byte tag used in the canonical digest encoding (stable forever).
    pub fn tag(self) -> u8 {
        match self {
            DType::F32 => 1,
            DType::F64 => 2,
            DType::F16 => 3,
            DType::I8 => 4,
            DType::I16 => 5,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::U8 => 8,
            DType::U16 => 9,
            DType::U32 => 10,
            DType::U64 => 11,
            DType::Bool => 12,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a [`Tensor`] could not be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// The byte length does not match dtype and shape.
    #[error("tensor of dtype {dtype} and shape {shape:?} needs {expected} bytes, got {got}")]
    ByteLength {
        /// Element type.
        dtype: DType,
        /// Shape.
        shape: Vec<u64>,
        /// Bytes the dtype and shape need.
        expected: u128,
        /// Bytes given.
        got: usize,
    },
    /// A bool tensor holds a byte other than 0 or 1.
    #[error(
        "bool tensor holds byte {byte:#04x} at element {index}; only 0x00 and 0x01 are allowed"
    )]
    InvalidBool {
        /// Element index.
        index: usize,
        /// Offending byte.
        byte: u8,
    },
    /// A typed accessor was called on a tensor of another dtype.
    #[error("tensor has dtype {actual}, not {requested}")]
    WrongDType {
        /// The dtype asked for.
        requested: DType,
        /// The tensor's dtype.
        actual: DType,
    },
    /// The number of elements given does not match the shape.
    #[error("shape {shape:?} holds {expected} elements, got {got}")]
    ElementCount {
        /// Shape.
        shape: Vec<u64>,
        /// Elements the shape holds.
        expected: u128,
        /// Elements given.
        got: usize,
    },
}

/// A tensor as records carry it: dtype, shape (row-major) and the raw
/// little-endian bytes of its elements.
///
/// Serialises as `{"dtype":"f32","shape":[2,3],"data":"<lowercase hex>"}`;
/// deserialisation checks the byte length (and bool bytes), so a record can
/// never yield an inconsistent tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "TensorRepr", into = "TensorRepr")]
pub struct Tensor {
    dtype: DType,
    shape: Vec<u64>,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorRepr {
    dtype: DType,
    shape: Vec<u64>,
    #[serde(with = "hex_string")]
    data: Vec<u8>,
}

impl TryFrom<TensorRepr> for Tensor {
    type Error = TensorError;
    fn try_from(r: TensorRepr) -> Result<Self, Self::Error> {
        Tensor::new(r.dtype, r.shape, r.data)
    }
}

impl From<Tensor> for TensorRepr {
    fn from(t: Tensor) -> Self {
        TensorRepr {
            dtype: t.dtype,
            shape: t.shape,
            data: t.data,
        }
    }
}

mod hex_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(serde::de::Error::custom(
                "tensor data must be lowercase hex",
            ));
        }
        hex::decode(&s).map_err(serde::de::Error::custom)
    }
}

/// Number of elements of `shape`, or `None` on overflow.
pub(crate) fn element_count(shape: &[u64]) -> Option<u128> {
    shape
        .iter()
        .try_fold(1u128, |acc, &d| acc.checked_mul(u128::from(d)))
}

macro_rules! typed_constructors {
    ($($ctor:ident, $getter:ident, $t:ty, $dt:expr;)*) => {
        $(
            #[doc = concat!("Builds a `", stringify!($t), "` tensor from row-major elements.")]
            pub fn $ctor(shape: &[u64], values: &[$t]) -> Result<Tensor, TensorError> {
                let mut data = Vec::with_capacity(values.len() * std::mem::size_of::<$t>());
                for v in values {
                    data.extend_from_slice(&v.to_le_bytes());
                }
                Tensor::from_parts_checked($dt, shape, values.len(), data)
            }

            #[doc = concat!("The elements as `", stringify!($t), "` values (row-major); errors on another dtype.")]
            pub fn $getter(&self) -> Result<Vec<$t>, TensorError> {
                self.expect_dtype($dt)?;
                const N: usize = std::mem::size_of::<$t>();
                Ok(self
                    .data
                    .chunks_exact(N)
                    .map(|c| {
                        let mut b = [0u8; N];
                        b.copy_from_slice(c);
                        <$t>::from_le_bytes(b)
                    })
                    .collect())
            }
        )*
    };
}

impl Tensor {
    /// Builds a tensor from dtype, shape and little-endian bytes, checking
    /// that the byte length matches and that bool bytes are 0 or 1.
    pub fn new(dtype: DType, shape: Vec<u64>, data: Vec<u8>) -> Result<Tensor, TensorError> {
        let expected = element_count(&shape)
            .and_then(|n| n.checked_mul(dtype.size() as u128))
            .unwrap_or(u128::MAX);
        if expected != data.len() as u128 {
            return Err(TensorError::ByteLength {
                dtype,
                shape,
                expected,
                got: data.len(),
            });
        }
        if dtype == DType::Bool {
            if let Some((index, &byte)) = data.iter().enumerate().find(|(_, &b)| b > 1) {
                return Err(TensorError::InvalidBool { index, byte });
            }
        }
        Ok(Tensor { dtype, shape, data })
    }

    fn from_parts_checked(
        dtype: DType,
        shape: &[u64],
        count: usize,
        data: Vec<u8>,
    ) -> Result<Tensor, TensorError> {
        let expected = element_count(shape).unwrap_or(u128::MAX);
        if expected != count as u128 {
            return Err(TensorError::ElementCount {
                shape: shape.to_vec(),
                expected,
                got: count,
            });
        }
        Tensor::new(dtype, shape.to_vec(), data)
    }

    fn expect_dtype(&self, requested: DType) -> Result<(), TensorError> {
        if self.dtype == requested {
            Ok(())
        } else {
            Err(TensorError::WrongDType {
                requested,
                actual: self.dtype,
            })
        }
    }

    typed_constructors! {
        from_f32, to_f32_vec, f32, DType::F32;
        from_f64, to_f64_vec, f64, DType::F64;
        from_i8, to_i8_vec, i8, DType::I8;
        from_i16, to_i16_vec, i16, DType::I16;
        from_i32, to_i32_vec, i32, DType::I32;
        from_i64, to_i64_vec, i64, DType::I64;
        from_u8, to_u8_vec, u8, DType::U8;
        from_u16, to_u16_vec, u16, DType::U16;
        from_u32, to_u32_vec, u32, DType::U32;
        from_u64, to_u64_vec, u64, DType::U64;
    }

    /// Builds a bool tensor from row-major elements.
    pub fn from_bool(shape: &[u64], values: &[bool]) -> Result<Tensor, TensorError> {
        let data = values.iter().map(|&b| u8::from(b)).collect();
        Tensor::from_parts_checked(DType::Bool, shape, values.len(), data)
    }

    /// The elements as bools (row-major); errors on another dtype.
    pub fn to_bool_vec(&self) -> Result<Vec<bool>, TensorError> {
        self.expect_dtype(DType::Bool)?;
        Ok(self.data.iter().map(|&b| b != 0).collect())
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Shape (row-major; empty for a scalar).
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Raw little-endian element bytes, row-major.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    /// True when the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Appends this tensor's canonical encoding to `out`:
    /// `tag:u8 || rank:u64le || dims:u64le* || byte_len:u64le || bytes`.
    pub fn encode_canonical(&self, out: &mut Vec<u8>) {
        out.push(self.dtype.tag());
        out.extend_from_slice(&(self.shape.len() as u64).to_le_bytes());
        for d in &self.shape {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.data);
    }
}

/// Domain-separation prefix of [`tensors_digest`]'s encoding.
pub const TENSORS_DIGEST_DOMAIN: &[u8] = b"verinfer.onnx.tensors.v1\0";

/// SHA-256 over the canonical encoding of a list of tensors:
///
/// ```text
/// "verinfer.onnx.tensors.v1\0" || count:u64le ||
///   for each tensor: tag:u8 || rank:u64le || dim:u64le* || byte_len:u64le || bytes
/// ```
///
/// Tags are [`DType::tag`]; bytes are the raw little-endian element bytes, so
/// two outputs have the same digest exactly when they are bit-identical.
pub fn tensors_digest(tensors: &[Tensor]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(TENSORS_DIGEST_DOMAIN);
    hasher.update((tensors.len() as u64).to_le_bytes());
    let mut buf = Vec::new();
    for t in tensors {
        buf.clear();
        t.encode_canonical(&mut buf);
        hasher.update(&buf);
    }
    hasher.finalize().into()
}

/// [`tensors_digest`] of a model's outputs, as lowercase hex: the one value a
/// verifier compares.
pub fn output_digest(outputs: &[Tensor]) -> String {
    hex::encode(tensors_digest(outputs))
}
