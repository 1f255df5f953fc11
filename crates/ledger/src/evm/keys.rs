//! EVM keys and account links.
//!
//! Every verinfer key (an Ed25519 seed) also gives a secp256k1 key, derived
//! as SHA-256 over a domain string and the seed, so one key file serves both
//! the network and the chain. The EVM address cannot be computed from the
//! Ed25519 *public* key, so an account publishes a [`Link`]: its address,
//! signed by its Ed25519 key, which anyone can check.

use alloy::primitives::{Address, B256};
pub use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use verinfer_types::{PublicKey, SecretKey, Signature};

use super::EvmError;

const KEY_DOMAIN: &[u8] = b"verinfer evm key v1\0";
const LINK_DOMAIN: &[u8] = b"verinfer evm link v1\0";

/// The EVM signer of a verinfer key.
pub fn evm_signer(key: &SecretKey) -> Result<PrivateKeySigner, EvmError> {
    let d: [u8; 32] = Sha256::new()
        .chain_update(KEY_DOMAIN)
        .chain_update(key.seed())
        .finalize()
        .into();
    // Fails only for a digest of zero or at least the curve order (~2^-128).
    PrivateKeySigner::from_bytes(&B256::from(d)).map_err(|e| EvmError::Key(e.to_string()))
}

/// An account's EVM address, signed by the account's Ed25519 key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The account (Ed25519 public key).
    pub account: PublicKey,
    /// Its EVM address.
    pub address: Address,
    /// Ed25519 signature over the domain, the account and the address.
    pub signature: Signature,
}

fn link_bytes(account: &PublicKey, address: &Address) -> Vec<u8> {
    [LINK_DOMAIN, &account.to_bytes(), address.as_slice()].concat()
}

impl Link {
    /// The link of `key` to its own derived EVM address.
    pub fn new(key: &SecretKey) -> Result<Link, EvmError> {
        Ok(Link::to(key, evm_signer(key)?.address()))
    }

    /// A link of `key` to any `address` (an account that holds its EVM key
    /// elsewhere).
    pub fn to(key: &SecretKey, address: Address) -> Link {
        let account = key.public();
        Link {
            signature: key.sign(&link_bytes(&account, &address)),
            account,
            address,
        }
    }

    /// Checks the signature.
    pub fn verify(&self) -> Result<(), EvmError> {
        self.account
            .verify(&link_bytes(&self.account, &self.address), &self.signature)
            .map_err(|e| EvmError::Key(format!("link of {}: {e}", self.account)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_are_stable_and_links_verify() {
        let k = SecretKey::from_seed(&[7; 32]);
        let a = evm_signer(&k).expect("key").address();
        assert_eq!(a, evm_signer(&k).expect("key").address());
        assert_ne!(
            a,
            evm_signer(&SecretKey::from_seed(&[8; 32]))
                .expect("key")
                .address()
        );
        let l = Link::new(&k).expect("link");
        assert_eq!(l.address, a);
        l.verify().expect("valid link");
        let json = serde_json::to_string(&l).expect("json");
        assert_eq!(serde_json::from_str::<Link>(&json).expect("parse"), l);
        // A link moved to another address no longer verifies.
        let mut moved = l;
        moved.address = Address::repeat_byte(1);
        assert!(moved.verify().is_err());
    }
}
