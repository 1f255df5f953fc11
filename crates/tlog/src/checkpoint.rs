//! C2SP `tlog-checkpoint`: the signed tree head of the log.
//!
//! The note text is the origin, the tree size in decimal and the base64 root
//! hash, one per line, then optional extension lines. The log signs it as a
//! signed note with an Ed25519 key whose name is the origin.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use verinfer_types::note::{Note, NoteError, VerifierKey, ALG_ED25519};
use verinfer_types::{Hash, SecretKey};

/// Errors about checkpoints.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// The note text is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The note's signatures.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// A checkpoint from another log.
    #[error("checkpoint is for origin {found:?}, expected {expected:?}")]
    Origin {
        /// Origin the log key names.
        expected: String,
        /// Origin in the checkpoint.
        found: String,
    },
}

/// The body of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `example.com/log`.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// RFC 6962 root hash at `size`.
    pub root: Hash,
    /// Extension lines (opaque, usually none).
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root.0)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses note text.
    pub fn parse_text(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("text must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(CheckpointError::Malformed("empty origin line"));
        }
        let size = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing tree size"))?;
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(CheckpointError::Malformed(
                "tree size must be decimal without leading zeros",
            ));
        }
        let size = size
            .parse()
            .map_err(|_| CheckpointError::Malformed("tree size out of range"))?;
        let root = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing root hash"))?;
        let root: [u8; 32] = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(CheckpointError::Malformed(
                "root hash must be base64 of 32 bytes",
            ))?;
        let extensions: Vec<String> = lines.map(str::to_string).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root: Hash(root),
            extensions,
        })
    }

    /// Signs the checkpoint with the log key; the key name is the origin.
    pub fn sign(&self, key: &SecretKey) -> Result<SignedCheckpoint, CheckpointError> {
        let mut note = Note::new(&self.to_text())?;
        note.sign(&self.origin, key)?;
        Ok(SignedCheckpoint {
            checkpoint: self.clone(),
            note,
        })
    }
}

/// A checkpoint with its signed note (which may carry cosignatures too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The parsed body.
    pub checkpoint: Checkpoint,
    /// The note: text plus signature lines.
    pub note: Note,
}

impl SignedCheckpoint {
    /// Parses a checkpoint note and verifies the log's signature on it.
    pub fn open(note_text: &str, log_key: &VerifierKey) -> Result<Self, CheckpointError> {
        if log_key.alg != ALG_ED25519 {
            return Err(NoteError::VerifierKey("log key must be an Ed25519 note key").into());
        }
        let note = Note::parse(note_text)?;
        let checkpoint = Checkpoint::parse_text(&note.text)?;
        if checkpoint.origin != log_key.name {
            return Err(CheckpointError::Origin {
                expected: log_key.name.clone(),
                found: checkpoint.origin,
            });
        }
        note.verify(log_key)?;
        Ok(SignedCheckpoint { checkpoint, note })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the C2SP tlog-checkpoint specification.
    #[test]
    fn spec_example_body_parses() {
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let c = Checkpoint::parse_text(text).unwrap();
        assert_eq!(c.size, 20852163);
        assert_eq!(c.to_text(), text);
    }

    #[test]
    fn sign_open_and_reject_other_logs() {
        let key = SecretKey::from_seed(&[4; 32]);
        let c = Checkpoint {
            origin: "example.org/log".into(),
            size: 3,
            root: Hash::of(b"r"),
            extensions: vec![],
        };
        let signed = c.sign(&key).unwrap();
        let vk = VerifierKey::new("example.org/log", ALG_ED25519, key.public()).unwrap();
        let opened = SignedCheckpoint::open(&signed.note.to_string(), &vk).unwrap();
        assert_eq!(opened.checkpoint, c);

        let other = Checkpoint {
            origin: "example.org/other".into(),
            ..c
        };
        let foreign = other.sign(&key).unwrap().note.to_string();
        assert!(matches!(
            SignedCheckpoint::open(&foreign, &vk),
            Err(CheckpointError::Origin { .. })
        ));
    }

    #[test]
    fn malformed_bodies() {
        for bad in [
            "o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\nnotbase64\n",
            "o\n1\n",
            "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
            "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
        ] {
            assert!(Checkpoint::parse_text(bad).is_err(), "{bad:?}");
        }
    }
}
