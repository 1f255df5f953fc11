//! verinfer records, canonical encoding, hashes and keys.
