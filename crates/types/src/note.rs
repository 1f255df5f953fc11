//! C2SP signed notes (`c2sp.org/signed-note`) and their verifier keys.
//!
//! A note is text ending in a newline, a blank line, and one or more lines
//! `— <key name> base64(key ID || signature)`. Checkpoints of the log and the
//! cosignatures of witnesses are notes. Verifier keys are written
//! `<name>+<key ID as 8 hex digits>+base64(signature type || public key)`.

use crate::keys::{PublicKey, SecretKey, Signature};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Signature type of plain Ed25519 note signatures.
pub const ALG_ED25519: u8 = 0x01;
/// Signature type of timestamped Ed25519 witness cosignatures (`tlog-cosignature`).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// Most signature lines a note may carry (the spec requires accepting 16).
pub const MAX_SIGNATURES: usize = 64;

const DASH: &str = "\u{2014} ";

/// Errors about notes and verifier keys.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    /// The note text does not follow the signed-note format.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A key name that is empty or contains a space or `+`.
    #[error("invalid key name {0:?}: must be non-empty without spaces or '+'")]
    KeyName(String),
    /// A verifier key that cannot be parsed.
    #[error("malformed verifier key: {0}")]
    VerifierKey(&'static str),
    /// A signature from the key was present but did not verify.
    #[error("signature by {0} does not verify")]
    BadSignature(String),
    /// No signature from the key is on the note.
    #[error("note has no signature by {0}")]
    Unsigned(String),
}

/// Checks a key name: non-empty, no Unicode spaces, no `+`.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(NoteError::KeyName(name.to_string()));
    }
    Ok(())
}

/// Key ID per signed-note: the first four bytes of
/// SHA-256(name || 0x0A || signature type || public key), big-endian.
pub fn key_id(name: &str, alg: u8, key: &[u8]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A verifier key: a name, a signature type and an Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifierKey {
    /// Key name, e.g. `example.com/log`.
    pub name: String,
    /// Signature type byte ([`ALG_ED25519`] or [`ALG_COSIGNATURE_V1`]).
    pub alg: u8,
    /// The public key.
    pub key: PublicKey,
}

impl VerifierKey {
    /// A verifier key, checking the name.
    pub fn new(name: &str, alg: u8, key: PublicKey) -> Result<Self, NoteError> {
        check_key_name(name)?;
        Ok(VerifierKey {
            name: name.to_string(),
            alg,
            key,
        })
    }

    /// This key's ID.
    pub fn id(&self) -> u32 {
        key_id(&self.name, self.alg, &self.key.to_bytes())
    }

    /// The signature lines on `note` that claim to be from this key.
    pub fn signatures_on<'a>(&'a self, note: &'a Note) -> impl Iterator<Item = &'a [u8]> + 'a {
        let id = self.id();
        note.signatures
            .iter()
            .filter(move |s| s.name == self.name && s.key_id == id)
            .map(|s| s.sig.as_slice())
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut material = Vec::with_capacity(33);
        material.push(self.alg);
        material.extend_from_slice(&self.key.to_bytes());
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.id(),
            B64.encode(material)
        )
    }
}

impl FromStr for VerifierKey {
    type Err = NoteError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim_end_matches('\n').splitn(3, '+');
        let (name, id, material) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(m)) => (n, i, m),
            _ => return Err(NoteError::VerifierKey("expected name+keyid+base64")),
        };
        check_key_name(name)?;
        if id.len() != 8 || id.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(NoteError::VerifierKey(
                "key ID must be 8 lowercase hex digits",
            ));
        }
        let id = u32::from_str_radix(id, 16)
            .map_err(|_| NoteError::VerifierKey("key ID must be 8 lowercase hex digits"))?;
        let material = B64
            .decode(material)
            .map_err(|_| NoteError::VerifierKey("key material is not base64"))?;
        let (alg, key) = material
            .split_first()
            .ok_or(NoteError::VerifierKey("empty key material"))?;
        if *alg != ALG_ED25519 && *alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::VerifierKey("unsupported signature type"));
        }
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| NoteError::VerifierKey("Ed25519 key must be 32 bytes"))?;
        let key = PublicKey::from_bytes(&key)
            .map_err(|_| NoteError::VerifierKey("invalid Ed25519 key"))?;
        let vk = VerifierKey::new(name, *alg, key)?;
        if vk.id() != id {
            return Err(NoteError::VerifierKey("key ID does not match name and key"));
        }
        Ok(vk)
    }
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key ID.
    pub key_id: u32,
    /// Signature bytes (after the key ID).
    pub sig: Vec<u8>,
}

impl NoteSignature {
    fn line(&self) -> String {
        let mut b = Vec::with_capacity(4 + self.sig.len());
        b.extend_from_slice(&self.key_id.to_be_bytes());
        b.extend_from_slice(&self.sig);
        format!("{DASH}{} {}\n", self.name, B64.encode(b))
    }
}

/// A signed note: text (ending in a newline) and signature lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The signed text, including its final newline.
    pub text: String,
    /// Signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

/// Checks note text: UTF-8 (given), ends with a newline, no control
/// characters other than newline.
pub fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text must end with a newline"));
    }
    if text.chars().any(|c| c != '\n' && (c as u32) < 0x20) {
        return Err(NoteError::Malformed("control character in note"));
    }
    Ok(())
}

impl Note {
    /// A note over `text` with no signatures yet.
    pub fn new(text: &str) -> Result<Self, NoteError> {
        check_text(text)?;
        Ok(Note {
            text: text.to_string(),
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note. The text is separated from the signatures by the
    /// last blank line.
    pub fn parse(s: &str) -> Result<Self, NoteError> {
        check_text(s)?;
        let split = s
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before signatures"))?;
        let text = &s[..split + 1];
        let sigs = &s[split + 2..];
        let mut signatures = Vec::new();
        for line in sigs.split_terminator('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::Malformed("too many signatures"));
            }
            let rest = line.strip_prefix(DASH).ok_or(NoteError::Malformed(
                "signature line must start with an em dash",
            ))?;
            let (name, b64) = rest.split_once(' ').ok_or(NoteError::Malformed(
                "signature line needs a name and a signature",
            ))?;
            check_key_name(name)?;
            let raw = B64
                .decode(b64)
                .map_err(|_| NoteError::Malformed("signature is not base64"))?;
            if raw.len() < 5 {
                return Err(NoteError::Malformed("signature too short"));
            }
            signatures.push(NoteSignature {
                name: name.to_string(),
                key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
                sig: raw[4..].to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(NoteError::Malformed("note has no signatures"));
        }
        Ok(Note {
            text: text.to_string(),
            signatures,
        })
    }

    /// Adds a plain Ed25519 signature (type 0x01) by `key` under `name`.
    pub fn sign(&mut self, name: &str, key: &SecretKey) -> Result<(), NoteError> {
        let vk = VerifierKey::new(name, ALG_ED25519, key.public())?;
        let sig = key.sign(self.text.as_bytes());
        self.add_signature(&vk, sig.0.to_vec());
        Ok(())
    }

    /// Adds a signature line for `vk`, replacing one from the same key.
    pub fn add_signature(&mut self, vk: &VerifierKey, sig: Vec<u8>) {
        let id = vk.id();
        self.signatures
            .retain(|s| !(s.name == vk.name && s.key_id == id));
        self.signatures.push(NoteSignature {
            name: vk.name.clone(),
            key_id: id,
            sig,
        });
    }

    /// Verifies the plain Ed25519 signature of `vk` (type 0x01): at least one
    /// signature by the key must be present, and every one present must verify.
    pub fn verify(&self, vk: &VerifierKey) -> Result<(), NoteError> {
        if vk.alg != ALG_ED25519 {
            return Err(NoteError::VerifierKey(
                "not an Ed25519 note key (type 0x01)",
            ));
        }
        let mut found = false;
        for sig in vk.signatures_on(self) {
            let sig: [u8; 64] = sig
                .try_into()
                .map_err(|_| NoteError::BadSignature(vk.name.clone()))?;
            vk.key
                .verify(self.text.as_bytes(), &Signature(sig))
                .map_err(|_| NoteError::BadSignature(vk.name.clone()))?;
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(NoteError::Unsigned(vk.name.clone()))
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for s in &self.signatures {
            f.write_str(&s.line())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the C2SP signed-note specification.
    const EXAMPLE_KEY: &str =
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    const EXAMPLE_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    #[test]
    fn c2sp_example_note_verifies() {
        let vk: VerifierKey = EXAMPLE_KEY.parse().unwrap();
        assert_eq!(vk.to_string(), EXAMPLE_KEY);
        let note = Note::parse(EXAMPLE_NOTE).unwrap();
        assert_eq!(note.text, "This is an example message.\n");
        note.verify(&vk).unwrap();
        assert_eq!(note.to_string(), EXAMPLE_NOTE);
    }

    #[test]
    fn c2sp_example_rejects_tampering() {
        let vk: VerifierKey = EXAMPLE_KEY.parse().unwrap();
        let tampered = EXAMPLE_NOTE.replace("example message", "example massage");
        assert!(matches!(
            Note::parse(&tampered).unwrap().verify(&vk),
            Err(NoteError::BadSignature(_))
        ));
        // A different key with the same name is unknown, not a failure to verify.
        let other = VerifierKey::new(
            "example.com/foo",
            ALG_ED25519,
            SecretKey::from_seed(&[3; 32]).public(),
        )
        .unwrap();
        assert!(matches!(
            Note::parse(EXAMPLE_NOTE).unwrap().verify(&other),
            Err(NoteError::Unsigned(_))
        ));
        // Key ID that does not match the key.
        assert!(EXAMPLE_KEY
            .replace("530d903a", "530d903b")
            .parse::<VerifierKey>()
            .is_err());
    }

    #[test]
    fn sign_parse_roundtrip_with_blank_lines_in_text() {
        let key = SecretKey::from_seed(&[9; 32]);
        let mut note = Note::new("a\n\nb\n").unwrap();
        note.sign("example.org/x", &key).unwrap();
        let text = note.to_string();
        let back = Note::parse(&text).unwrap();
        assert_eq!(back, note);
        let vk = VerifierKey::new("example.org/x", ALG_ED25519, key.public()).unwrap();
        back.verify(&vk).unwrap();
    }

    #[test]
    fn malformed_notes_are_errors() {
        for bad in [
            "no newline",
            "text\n",
            "text\n\n",
            "text\n\nnot a signature\n",
            "text\n\n\u{2014} name !!!\n",
            "te\u{1}xt\n\n\u{2014} n AAAAAAA=\n",
            "text\n\n\u{2014} bad+name AAAAAAAA\n",
        ] {
            assert!(Note::parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
