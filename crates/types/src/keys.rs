//! Ed25519 keys and signatures, written as lowercase hex in records.
//!
//! Verification is strict (RFC 8032 with canonical `S` and no small-order
//! keys), so a signature cannot be mangled into a second valid encoding and
//! record hashes that cover signatures stay unique.

use crate::hash::parse_hex_array;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// Errors about keys and signatures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not 64 lowercase hex digits, or not a valid curve point.
    #[error("invalid Ed25519 public key")]
    PublicKey,
    /// Not 128 lowercase hex digits.
    #[error("invalid Ed25519 signature encoding")]
    SignatureEncoding,
    /// The signature does not verify under the key.
    #[error("signature does not verify")]
    BadSignature,
    /// A secret key file that cannot be read.
    #[error("invalid secret key: {0}")]
    SecretKey(String),
}

/// An Ed25519 public key: an account, a node or a verifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// From the 32-byte RFC 8032 encoding.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::PublicKey)?;
        if key.is_weak() {
            return Err(KeyError::PublicKey);
        }
        Ok(PublicKey(key))
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Checks `sig` over `msg` (strict RFC 8032 verification).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let s = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0
            .verify_strict(msg, &s)
            .map_err(|_| KeyError::BadSignature)
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_bytes().cmp(other.0.as_bytes())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = parse_hex_array::<32>(s).ok_or(KeyError::PublicKey)?;
        PublicKey::from_bytes(&bytes)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// A 64-byte Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl Default for Signature {
    fn default() -> Self {
        Signature([0; 64])
    }
}

impl FromStr for Signature {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex_array::<64>(s)
            .map(Signature)
            .ok_or(KeyError::SignatureEncoding)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", self.to_hex())
    }
}

/// An Ed25519 secret key. Its `Debug` does not print the secret.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        SecretKey(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// From a 32-byte seed (RFC 8032 private key).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// The 32-byte seed.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `msg` (deterministic per RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }

    /// The key-file text: one JSON object with the seed and the public key.
    pub fn to_file_text(&self) -> String {
        let v = serde_json::json!({
            "type": KEY_FILE_TYPE,
            "secret": hex::encode(self.seed()),
            "public": self.public().to_hex(),
        });
        format!("{v}\n")
    }

    /// Parses key-file text written by [`SecretKey::to_file_text`], checking
    /// that the stored public key matches the secret.
    pub fn from_file_text(text: &str) -> Result<Self, KeyError> {
        #[derive(Deserialize)]
        struct KeyFile {
            #[serde(rename = "type")]
            kind: String,
            secret: String,
            public: String,
        }
        let f: KeyFile =
            serde_json::from_str(text.trim()).map_err(|e| KeyError::SecretKey(e.to_string()))?;
        if f.kind != KEY_FILE_TYPE {
            return Err(KeyError::SecretKey(format!(
                "type is {:?}, expected {KEY_FILE_TYPE:?}",
                f.kind
            )));
        }
        let seed = parse_hex_array::<32>(&f.secret)
            .ok_or_else(|| KeyError::SecretKey("secret is not 64 hex digits".into()))?;
        let key = SecretKey::from_seed(&seed);
        if key.public().to_hex() != f.public {
            return Err(KeyError::SecretKey(
                "public key does not match the secret".into(),
            ));
        }
        Ok(key)
    }
}

const KEY_FILE_TYPE: &str = "verinfer.secret-key.v1";

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

macro_rules! hex_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
hex_serde!(PublicKey);
hex_serde!(Signature);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_file_roundtrip() {
        let k = SecretKey::from_seed(&[7; 32]);
        let sig = k.sign(b"msg");
        assert!(k.public().verify(b"msg", &sig).is_ok());
        assert_eq!(k.public().verify(b"msh", &sig), Err(KeyError::BadSignature));
        let back = SecretKey::from_file_text(&k.to_file_text()).unwrap();
        assert_eq!(back.public(), k.public());
        assert_eq!(
            k.public().to_hex().parse::<PublicKey>().unwrap(),
            k.public()
        );
        let sig_hex = sig.to_hex();
        assert_eq!(sig_hex.parse::<Signature>().unwrap(), sig);
    }

    #[test]
    fn rejects_bad_key_material() {
        assert!("00".parse::<PublicKey>().is_err());
        // The identity point is a small-order (weak) key.
        let mut id = [0u8; 32];
        id[0] = 1;
        assert_eq!(PublicKey::from_bytes(&id), Err(KeyError::PublicKey));
        let k = SecretKey::from_seed(&[1; 32]);
        let tampered = k.to_file_text().replace(
            &k.public().to_hex(),
            &SecretKey::from_seed(&[2; 32]).public().to_hex(),
        );
        assert!(SecretKey::from_file_text(&tampered).is_err());
        assert!(SecretKey::from_file_text("not json").is_err());
    }
}
