//! The sealing port: authenticated encryption of credentials and operator-supplied secrets.
//!
//! Every sealed box names the key that sealed it, and is bound to associated data (the owning
//! row's id), so a box copied into another row fails to open. A key ring seals with its first key
//! and opens with any, which allows online key rotation.

use crate::Secret;
use std::fmt;

/// An opaque sealed value as stored (the adapter's envelope: key id, nonce, ciphertext, tag).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBox(pub Vec<u8>);

impl fmt::Debug for SealedBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedBox({} bytes)", self.0.len())
    }
}

/// Why sealing or opening failed. Never carries plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    #[error("the sealed value is malformed")]
    Malformed,
    #[error("the sealed value names key `{0}`, which is not in the key ring")]
    UnknownKey(String),
    #[error("the sealed value does not open (wrong key, tampered, or bound to another row)")]
    Unauthentic,
    #[error("encryption failed")]
    Internal,
}

/// Authenticated encryption with associated data.
pub trait Cipher: Send + Sync {
    /// Seals `plaintext` under the current key, bound to `associated_data`, with a fresh nonce.
    fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<SealedBox, CipherError>;
    /// Opens a box sealed by any key of the ring, with the same associated data.
    fn open(&self, sealed: &SealedBox, associated_data: &[u8]) -> Result<Vec<u8>, CipherError>;
    /// Whether `sealed` was sealed by a key other than the current one (it should be resealed).
    fn is_stale(&self, sealed: &SealedBox) -> bool;

    /// Seals a secret string.
    fn seal_secret(&self, secret: &Secret, associated_data: &[u8]) -> Result<SealedBox, CipherError> {
        self.seal(secret.expose().as_bytes(), associated_data)
    }

    /// Opens a box holding a UTF-8 secret string.
    fn open_secret(&self, sealed: &SealedBox, associated_data: &[u8]) -> Result<Secret, CipherError> {
        let bytes = self.open(sealed, associated_data)?;
        String::from_utf8(bytes).map(Secret::new).map_err(|_| CipherError::Malformed)
    }
}

/// What re-sealing a family of sealed values under the current key did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResealReport {
    pub examined: u64,
    pub resealed: u64,
}
