//! SHA-256 hashes as a value type, written as lowercase hex in records.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Hash(Sha256::digest(data).into())
    }

    /// SHA-256 of the concatenation of `parts`.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// A hex string that is not a 32-byte hash.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected 64 lowercase hex digits for a SHA-256 hash")]
pub struct ParseHashError;

impl FromStr for Hash {
    type Err = ParseHashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_array(s).map(Hash).ok_or(ParseHashError)
    }
}

/// Parses exactly `N` bytes of lowercase hex (uppercase is not canonical).
pub(crate) fn parse_hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || s.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_hex(&self.0, s)
    }
}

/// Serialises up to 64 bytes as a lowercase hex string without allocating
/// (records carry many hashes, keys and signatures, and settlement encodes
/// each receipt several times).
pub(crate) fn serialize_hex<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 128];
    let out = buf
        .get_mut(..2 * bytes.len())
        .ok_or_else(|| serde::ser::Error::custom("hex value longer than 64 bytes"))?;
    hex::encode_to_slice(bytes, out).map_err(serde::ser::Error::custom)?;
    s.serialize_str(std::str::from_utf8(out).map_err(serde::ser::Error::custom)?)
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest_and_hex_rules() {
        let h = Hash::of(b"");
        assert_eq!(
            h.to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(h.to_hex().parse::<Hash>(), Ok(h));
        assert!(h.to_hex().to_uppercase().parse::<Hash>().is_err());
        assert!("abcd".parse::<Hash>().is_err());
        assert_eq!(Hash::of_parts(&[b"ab", b"c"]), Hash::of(b"abc"));
    }
}
