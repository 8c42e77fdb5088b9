//! Deterministic stand-ins for randomness, sealing and keyed hashing.

use custody_identity::cipher::{Cipher, CipherError, SealedBox};
use custody_identity::ports::{Random, SecretHasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// Distinct, predictable values: UUIDs `00000000-0000-4000-8000-<counter>` and bytes derived
/// from a counter, so two calls never return the same value.
#[derive(Debug, Default)]
pub struct SeqRandom(AtomicU64);

impl SeqRandom {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

impl Random for SeqRandom {
    fn uuid(&self) -> String {
        format!("00000000-0000-4000-8000-{:012x}", self.next())
    }

    fn bytes(&self, len: usize) -> Vec<u8> {
        let seed = self.next().to_be_bytes();
        (0..len).map(|i| seed[i % 8].wrapping_add((i / 8) as u8).wrapping_mul(31).wrapping_add(seed[7])).collect()
    }
}

const SEAL_TAG: &[u8] = b"fake-seal:v1:";
const STALE_TAG: &[u8] = b"fake-seal:v0:";

/// Sealing without secrecy but with the binding the domain relies on: a box opens only with the
/// associated data it was sealed with, and a tampered box does not open. Boxes sealed by
/// [`FakeCipher::seal_stale`] read as sealed by an old key ([`Cipher::is_stale`]).
#[derive(Debug, Default)]
pub struct FakeCipher;

impl FakeCipher {
    fn envelope(tag: &[u8], plaintext: &[u8], associated_data: &[u8]) -> SealedBox {
        let mut out = tag.to_vec();
        out.extend_from_slice(&(associated_data.len() as u32).to_be_bytes());
        out.extend_from_slice(associated_data);
        out.extend_from_slice(plaintext);
        SealedBox(out)
    }

    /// A box as an old key would have sealed it.
    pub fn seal_stale(&self, plaintext: &[u8], associated_data: &[u8]) -> SealedBox {
        Self::envelope(STALE_TAG, plaintext, associated_data)
    }
}

impl Cipher for FakeCipher {
    fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<SealedBox, CipherError> {
        Ok(Self::envelope(SEAL_TAG, plaintext, associated_data))
    }

    fn open(&self, sealed: &SealedBox, associated_data: &[u8]) -> Result<Vec<u8>, CipherError> {
        let bytes = &sealed.0;
        let rest =
            bytes.strip_prefix(SEAL_TAG).or_else(|| bytes.strip_prefix(STALE_TAG)).ok_or(CipherError::Malformed)?;
        let (len, rest) = rest.split_at_checked(4).ok_or(CipherError::Malformed)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (aad, plaintext) = rest.split_at_checked(len).ok_or(CipherError::Malformed)?;
        if aad != associated_data {
            return Err(CipherError::Unauthentic);
        }
        Ok(plaintext.to_vec())
    }

    fn is_stale(&self, sealed: &SealedBox) -> bool {
        sealed.0.starts_with(STALE_TAG)
    }
}

/// Keyed hashing stand-in: purpose and secret, length-prefixed, so different purposes or
/// secrets never collide.
#[derive(Debug, Default)]
pub struct FakeHasher;

impl SecretHasher for FakeHasher {
    fn hash(&self, purpose: &str, secret: &[u8]) -> Vec<u8> {
        let mut out = (purpose.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(purpose.as_bytes());
        out.extend_from_slice(secret);
        out
    }

    fn verify(&self, purpose: &str, secret: &[u8], expected: &[u8]) -> bool {
        self.hash(purpose, secret) == expected
    }
}
