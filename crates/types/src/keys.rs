//! Ed25519 keys and signatures, written as lowercase hex in records.
//!
//! # Which signatures verify
//!
//! Verification checks RFC 8032's group equation `[8][S]B = [8]R + [8][k]A`
//! (the cofactored form, §5.1.7) with a canonical `S`, as ZIP 215 fixes it
//! (implemented by `ed25519-zebra`), and public keys of small order are
//! refused when a key is parsed. Nobody but the signer can turn a valid
//! signature into a second valid one, so record hashes that cover signatures
//! stay unique against third parties.
//!
//! We use the cofactored equation, rather than the cofactorless one that
//! `ed25519-dalek`'s `verify_strict` checks, because with it batch
//! verification ([`verify_batch`]) accepts exactly what one-by-one
//! verification accepts: a settlement batch checks hundreds of signatures
//! at about a third of the cost, and every party still agrees on which
//! signature is valid. (The two equations differ only on signatures whose
//! signer deliberately put a small-order component in `R` or its key.)
//! Signing is ordinary RFC 8032 Ed25519 (`ed25519-dalek`).

use crate::hash::parse_hex_array;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use ed25519_zebra::VerificationKey;
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
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerificationKey);

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.as_ref().hash(state);
    }
}

impl PublicKey {
    /// From the 32-byte RFC 8032 encoding; points of small order are refused.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::PublicKey)?;
        if key.is_weak() {
            return Err(KeyError::PublicKey);
        }
        VerificationKey::try_from(*bytes)
            .map(PublicKey)
            .map_err(|_| KeyError::PublicKey)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        let mut b = [0; 32];
        b.copy_from_slice(self.0.as_ref());
        b
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_ref())
    }

    /// Checks `sig` over `msg` (see the module docs for the exact rule).
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        self.0
            .verify(&ed25519_zebra::Signature::from(sig.0), msg)
            .map_err(|_| KeyError::BadSignature)
    }
}

/// Checks many signatures at once: `Ok` if every one verifies, otherwise the
/// index of the first that does not. Accepts exactly what [`PublicKey::verify`]
/// accepts one by one (the equations agree except with probability 2^-128
/// per batch), at a fraction of the cost for large batches, most of all when
/// few keys sign many messages.
pub fn verify_batch(items: &[(&PublicKey, &[u8], &Signature)]) -> Result<(), usize> {
    let mut batch = ed25519_zebra::batch::Verifier::new();
    for (key, msg, sig) in items {
        batch.queue((
            ed25519_zebra::VerificationKeyBytes::from(key.to_bytes()),
            ed25519_zebra::Signature::from(sig.0),
            msg,
        ));
    }
    if batch.verify(rand::thread_rng()).is_ok() {
        return Ok(());
    }
    // Name the culprit, one by one.
    match items
        .iter()
        .position(|(key, msg, sig)| key.verify(msg, sig).is_err())
    {
        Some(i) => Err(i),
        // The batch failed but every signature verifies on its own: only
        // possible with negligible probability; trust the single checks.
        None => Ok(()),
    }
}

impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.as_ref().cmp(other.0.as_ref())
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
        // A clamped secret scalar is a non-zero multiple of 8 below 8l, so
        // its public key is a valid point of large order.
        PublicKey::from_bytes(&self.0.verifying_key().to_bytes())
            .expect("an Ed25519 secret key has a valid public key")
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
                crate::hash::serialize_hex(self.as_ref(), s)
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
impl AsRef<[u8]> for PublicKey {
    fn as_ref(&self) -> &[u8] {
        self.0.as_ref()
    }
}

impl AsRef<[u8]> for Signature {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
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

    /// Regression guard for the batch rule: a batch names the same first
    /// failure as one-by-one checks, whatever is tampered with.
    #[test]
    fn batch_agrees_with_single_checks() {
        let keys: Vec<SecretKey> = (0..3u8)
            .map(|i| SecretKey::from_seed(&[i + 1; 32]))
            .collect();
        let msgs: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100 + usize::from(i)]).collect();
        let mut items: Vec<(PublicKey, Vec<u8>, Signature)> = msgs
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let k = &keys[i % keys.len()];
                (k.public(), m.clone(), k.sign(m))
            })
            .collect();
        let run = |items: &[(PublicKey, Vec<u8>, Signature)]| {
            let refs: Vec<(&PublicKey, &[u8], &Signature)> =
                items.iter().map(|(k, m, s)| (k, &m[..], s)).collect();
            let single = refs.iter().position(|(k, m, s)| k.verify(m, s).is_err());
            (verify_batch(&refs).err(), single)
        };
        assert_eq!(run(&items), (None, None));
        // A flipped bit in R, in S, in the message; a signature by another key;
        // S + l (non-canonical, same value mod l).
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        for (at, tamper) in [(7usize, 0u8), (19, 1), (33, 2), (38, 3), (2, 4)] {
            let mut bad = items.clone();
            let (_, m, sig) = &mut bad[at];
            match tamper {
                0 => sig.0[3] ^= 0x10,
                1 => sig.0[40] ^= 0x01,
                2 => m[0] ^= 0x80,
                3 => *sig = keys[(at + 1) % keys.len()].sign(m),
                _ => {
                    // S + l as little-endian integers (S < l, so no overflow past 2^256).
                    let mut carry = 0u16;
                    for (b, lb) in sig.0[32..].iter_mut().zip(l) {
                        let v = u16::from(*b) + u16::from(lb) + carry;
                        *b = v as u8;
                        carry = v >> 8;
                    }
                }
            }
            assert_eq!(run(&bad), (Some(at), Some(at)), "tamper {tamper}");
        }
        items.truncate(1);
        assert_eq!(run(&items), (None, None));
        assert_eq!(verify_batch(&[]), Ok(()));
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
