//! Cryptographic adapters: sealing ([`KeyRing`], the vault's [`Cipher`] port) and keyed hashing
//! of server-generated secrets ([`HmacHasher`], the [`SecretHasher`] port). Pure computation, no
//! I/O. Randomness (nonces, generated keys) comes from OpenSSL, as in [`crate::random`].
//!
//! # Sealed box format (version 1)
//!
//! ```text
//! version (1 byte, 0x01) | key id length n (1 byte, 1..=64) | key id (n bytes, ASCII)
//! | nonce (12 bytes) | ciphertext (as long as the plaintext) | tag (16 bytes)
//! ```
//!
//! AES-256-GCM with a fresh random nonce per seal. The authenticated associated data is the
//! header (version, key id length, key id) followed by the caller's associated data, so neither
//! the key id nor the owning row can be swapped without the box failing to open.
//!
//! Every key's cipher state (the AES key schedule and the GHASH key) is computed once, when the
//! ring is built: a hand-out opens a box on every request, and OpenSSL's EVP interface set that
//! state up again on each call, through its parameter tables, at a cost above the decryption of
//! a token itself (about 4% of a cached hand-out's CPU in a `cargo xtask bench --perf` profile).

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use custody_identity::ports::SecretHasher;
use custody_identity::Secret;
use custody_vault::{Cipher, CipherError, SealedBox};
use std::fmt;
use zeroize::Zeroize as _;

const ENVELOPE_VERSION: u8 = 1;
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const MAX_KEY_ID_LEN: usize = 64;

/// Why a key ring could not be built. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyRingError {
    /// No key at all.
    #[error("the key ring is empty: expected `id:base64key[,id:base64key...]`")]
    Empty,
    /// An entry is not `id:base64key` (entries are counted from 1).
    #[error("key ring entry {index} is not of the form `id:base64key`")]
    MalformedEntry {
        /// The 1-based position of the entry.
        index: usize,
    },
    /// An entry's id is not 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    #[error("key ring entry {index} has an invalid key id (1 to 64 characters of A-Z, a-z, 0-9, `.`, `_`, `-`)")]
    InvalidKeyId {
        /// The 1-based position of the entry.
        index: usize,
    },
    /// The key is not base64 (standard or URL-safe, padded or not).
    #[error("key `{id}` is not valid base64")]
    InvalidBase64 {
        /// The key's id.
        id: String,
    },
    /// The key does not decode to 32 bytes.
    #[error("key `{id}` is {len} bytes long; AES-256 keys are 32 bytes")]
    WrongKeyLength {
        /// The key's id.
        id: String,
        /// The decoded length.
        len: usize,
    },
    /// Two entries share an id.
    #[error("key id `{id}` appears more than once")]
    DuplicateKeyId {
        /// The repeated id.
        id: String,
    },
    /// The random number generator failed while generating a key.
    #[error("the random number generator failed")]
    Random,
}

/// Whether `id` is an acceptable key id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
fn valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Base64 in any of the common alphabets and paddings.
fn decode_any_base64(text: &str) -> Option<Vec<u8>> {
    const ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let normalised: String = text
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            other => other,
        })
        .collect();
    ENGINE.decode(normalised).ok()
}

fn random_bytes<const N: usize>() -> Result<[u8; N], openssl::error::ErrorStack> {
    let mut bytes = [0u8; N];
    openssl::rand::rand_bytes(&mut bytes)?;
    Ok(bytes)
}

/// One key of the ring. Both the key and its expanded form are zeroed when it is dropped.
struct RingKey {
    id: String,
    key: [u8; KEY_LEN],
    /// `key` expanded for AES-256-GCM.
    cipher: Aes256Gcm,
}

impl RingKey {
    fn new(id: &str, mut key: [u8; KEY_LEN]) -> Self {
        let ring_key = Self { id: id.to_owned(), key, cipher: Aes256Gcm::new(&key.into()) };
        key.zeroize();
        ring_key
    }
}

impl Drop for RingKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// AES-256-GCM keys with ids: the first key seals, every key opens. Implements [`Cipher`].
///
/// `Debug` prints the key ids only.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing").field("key_ids", &self.key_ids()).finish()
    }
}

impl KeyRing {
    /// Parses `id:base64key[,id:base64key...]`, the first entry being the sealing key. Keys are
    /// 32 bytes in standard or URL-safe base64, padded or not; ids are 1 to 64 characters of
    /// `A-Z a-z 0-9 . _ -` and unique. Whitespace around entries is ignored.
    pub fn parse(spec: &str) -> Result<Self, KeyRingError> {
        if spec.trim().is_empty() {
            return Err(KeyRingError::Empty);
        }
        let mut keys: Vec<RingKey> = Vec::new();
        for (i, entry) in spec.split(',').enumerate() {
            let index = i + 1;
            let (id, encoded) = entry.split_once(':').ok_or(KeyRingError::MalformedEntry { index })?;
            let (id, encoded) = (id.trim(), encoded.trim());
            if !valid_key_id(id) {
                return Err(KeyRingError::InvalidKeyId { index });
            }
            let bytes = decode_any_base64(encoded).ok_or_else(|| KeyRingError::InvalidBase64 { id: id.to_owned() })?;
            let key: [u8; KEY_LEN] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| KeyRingError::WrongKeyLength { id: id.to_owned(), len: bytes.len() })?;
            if keys.iter().any(|k| k.id == id) {
                return Err(KeyRingError::DuplicateKeyId { id: id.to_owned() });
            }
            keys.push(RingKey::new(id, key));
        }
        Ok(Self { keys })
    }

    /// A ring of one freshly generated key named `id` (for a first start).
    pub fn generate(id: &str) -> Result<Self, KeyRingError> {
        if !valid_key_id(id) {
            return Err(KeyRingError::InvalidKeyId { index: 1 });
        }
        let key = random_bytes::<KEY_LEN>().map_err(|_| KeyRingError::Random)?;
        Ok(Self { keys: vec![RingKey::new(id, key)] })
    }

    /// This ring with a freshly generated key named `id` in front (it seals from now on); the
    /// existing keys keep opening what they sealed.
    pub fn rotated(&self, id: &str) -> Result<Self, KeyRingError> {
        let fresh = Self::generate(id)?;
        if self.keys.iter().any(|k| k.id == id) {
            return Err(KeyRingError::DuplicateKeyId { id: id.to_owned() });
        }
        let mut keys = fresh.keys;
        keys.extend(self.keys.iter().map(|k| RingKey::new(&k.id, k.key)));
        Ok(Self { keys })
    }

    /// The ring in the form [`KeyRing::parse`] reads (URL-safe base64 without padding). This is
    /// key material: store it as a secret.
    pub fn export(&self) -> Secret {
        let entries: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{}:{}", k.id, base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.key)))
            .collect();
        Secret::new(entries.join(","))
    }

    /// The id of the sealing key.
    pub fn current_key_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.id.as_str())
    }

    /// All key ids, the sealing key first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// The id of the key that sealed `sealed`, when the box is well formed.
    pub fn sealed_key_id(sealed: &SealedBox) -> Option<&str> {
        Envelope::parse(&sealed.0).ok().map(|e| e.key_id)
    }
}

/// A sealed box taken apart.
struct Envelope<'a> {
    /// Version, key id length and key id: authenticated with the caller's associated data.
    header: &'a [u8],
    key_id: &'a str,
    nonce: &'a [u8],
    ciphertext: &'a [u8],
    tag: &'a [u8],
}

impl<'a> Envelope<'a> {
    fn header(key_id: &str) -> Vec<u8> {
        let mut header = Vec::with_capacity(2 + key_id.len());
        header.push(ENVELOPE_VERSION);
        // Key ids are validated to at most 64 bytes.
        header.push(key_id.len() as u8);
        header.extend_from_slice(key_id.as_bytes());
        header
    }

    fn parse(bytes: &'a [u8]) -> Result<Self, CipherError> {
        let (&version, rest) = bytes.split_first().ok_or(CipherError::Malformed)?;
        if version != ENVELOPE_VERSION {
            return Err(CipherError::Malformed);
        }
        let (&id_len, rest) = rest.split_first().ok_or(CipherError::Malformed)?;
        let id_len = usize::from(id_len);
        if id_len == 0 || id_len > MAX_KEY_ID_LEN || rest.len() < id_len + NONCE_LEN + TAG_LEN {
            return Err(CipherError::Malformed);
        }
        let (id, rest) = rest.split_at(id_len);
        let key_id = std::str::from_utf8(id).map_err(|_| CipherError::Malformed)?;
        if !valid_key_id(key_id) {
            return Err(CipherError::Malformed);
        }
        let (nonce, rest) = rest.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        Ok(Self { header: &bytes[..2 + id_len], key_id, nonce, ciphertext, tag })
    }
}

fn authenticated_data(header: &[u8], associated_data: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + associated_data.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(associated_data);
    aad
}

impl Cipher for KeyRing {
    fn seal(&self, plaintext: &[u8], associated_data: &[u8]) -> Result<SealedBox, CipherError> {
        let key = self.keys.first().ok_or(CipherError::Internal)?;
        let nonce = random_bytes::<NONCE_LEN>().map_err(|_| CipherError::Internal)?;
        let header = Envelope::header(&key.id);
        let aad = authenticated_data(&header, associated_data);
        let mut sealed = header;
        sealed.reserve(NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        let start = sealed.len();
        sealed.extend_from_slice(plaintext);
        let tag = key
            .cipher
            .encrypt_inout_detached(&Nonce::from(nonce), &aad, (&mut sealed[start..]).into())
            .map_err(|_| CipherError::Internal)?;
        sealed.extend_from_slice(&tag);
        Ok(SealedBox(sealed))
    }

    fn open(&self, sealed: &SealedBox, associated_data: &[u8]) -> Result<Vec<u8>, CipherError> {
        let envelope = Envelope::parse(&sealed.0)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == envelope.key_id)
            .ok_or_else(|| CipherError::UnknownKey(envelope.key_id.to_owned()))?;
        let aad = authenticated_data(envelope.header, associated_data);
        let nonce = Nonce::try_from(envelope.nonce).map_err(|_| CipherError::Malformed)?;
        let tag = Tag::try_from(envelope.tag).map_err(|_| CipherError::Malformed)?;
        let mut plaintext = envelope.ciphertext.to_vec();
        // On failure nothing is returned: the unauthenticated bytes are dropped with the buffer.
        key.cipher
            .decrypt_inout_detached(&nonce, &aad, plaintext.as_mut_slice().into(), &tag)
            .map_err(|_| CipherError::Unauthentic)?;
        Ok(plaintext)
    }

    /// `true` when the box names a key other than the sealing key, and also when it is
    /// malformed (it is not a box of the current key either).
    fn is_stale(&self, sealed: &SealedBox) -> bool {
        match Envelope::parse(&sealed.0) {
            Ok(envelope) => envelope.key_id != self.current_key_id(),
            Err(_) => true,
        }
    }
}

/// Why an HMAC key was refused. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HmacKeyError {
    /// The key is not base64 (standard or URL-safe, padded or not).
    #[error("the hashing key is not valid base64")]
    InvalidBase64,
    /// The key is not 32 bytes.
    #[error("the hashing key is {0} bytes long; it must be 32 bytes")]
    WrongLength(usize),
    /// The random number generator failed while generating a key.
    #[error("the random number generator failed")]
    Random,
}

const SHA256_BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104) with a 32-byte key, for secrets the server generates and only needs
/// to recognise. Implements [`SecretHasher`].
///
/// The hashed message is `len(purpose) as u32 big-endian || purpose || secret`, so a hash made
/// for one purpose never matches for another and no (purpose, secret) pair can be confused
/// with another. `Debug` is redacted.
#[derive(Clone)]
pub struct HmacHasher {
    /// SHA-256 having absorbed `key ^ ipad`.
    inner: openssl::sha::Sha256,
    /// SHA-256 having absorbed `key ^ opad`.
    outer: openssl::sha::Sha256,
}

impl fmt::Debug for HmacHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacHasher([redacted])")
    }
}

impl HmacHasher {
    /// A hasher with this 32-byte key.
    pub fn new(key: &[u8]) -> Result<Self, HmacKeyError> {
        if key.len() != KEY_LEN {
            return Err(HmacKeyError::WrongLength(key.len()));
        }
        Ok(Self::with_key(key))
    }

    /// A hasher with a 32-byte key given in base64 (standard or URL-safe, padded or not).
    pub fn parse(encoded: &str) -> Result<Self, HmacKeyError> {
        let key = decode_any_base64(encoded.trim()).ok_or(HmacKeyError::InvalidBase64)?;
        Self::new(&key)
    }

    /// A hasher with a fresh random key, returned alongside in URL-safe base64 (for a first
    /// start; store it as a secret).
    pub fn generate() -> Result<(Self, Secret), HmacKeyError> {
        let key = random_bytes::<KEY_LEN>().map_err(|_| HmacKeyError::Random)?;
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
        Ok((Self::with_key(&key), Secret::new(encoded)))
    }

    /// HMAC for any key length up to one block (keys are 32 bytes here).
    fn with_key(key: &[u8]) -> Self {
        let mut block = [0u8; SHA256_BLOCK];
        block[..key.len()].copy_from_slice(key);
        let mut inner = openssl::sha::Sha256::new();
        inner.update(&block.map(|b| b ^ 0x36));
        let mut outer = openssl::sha::Sha256::new();
        outer.update(&block.map(|b| b ^ 0x5c));
        Self { inner, outer }
    }

    fn mac(&self, message_parts: &[&[u8]]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        for part in message_parts {
            inner.update(part);
        }
        let mut outer = self.outer.clone();
        outer.update(&inner.finish());
        outer.finish()
    }
}

impl SecretHasher for HmacHasher {
    fn hash(&self, purpose: &str, secret: &[u8]) -> Vec<u8> {
        let len = u32::try_from(purpose.len()).unwrap_or(u32::MAX).to_be_bytes();
        self.mac(&[&len, purpose.as_bytes(), secret]).to_vec()
    }

    fn verify(&self, purpose: &str, secret: &[u8], expected: &[u8]) -> bool {
        let actual = self.hash(purpose, secret);
        // The length of a hash is public; only equal-length inputs are compared.
        actual.len() == expected.len() && openssl::memcmp::eq(&actual, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    }

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec).unwrap()
    }

    #[test]
    fn roundtrip_and_envelope() {
        let r = ring(&format!("k1:{}", key(1)));
        let sealed = r.seal(b"refresh-token", b"grant-1").unwrap();
        assert_eq!(sealed.0[0], 1);
        assert_eq!(sealed.0[1], 2);
        assert_eq!(&sealed.0[2..4], b"k1");
        assert_eq!(sealed.0.len(), 4 + 12 + 13 + 16);
        assert_eq!(KeyRing::sealed_key_id(&sealed), Some("k1"));
        assert_eq!(r.open(&sealed, b"grant-1").unwrap(), b"refresh-token");
        let again = r.seal(b"refresh-token", b"grant-1").unwrap();
        assert_ne!(sealed, again, "fresh nonce per seal");
        let empty = r.seal(b"", b"").unwrap();
        assert_eq!(r.open(&empty, b"").unwrap(), b"");
        let secret = r.seal_secret(&Secret::new("s3cret"), b"row").unwrap();
        assert_eq!(r.open_secret(&secret, b"row").unwrap().expose(), "s3cret");
    }

    #[test]
    fn wrong_associated_data_or_another_row_fails() {
        let r = ring(&format!("k1:{}", key(1)));
        let a = r.seal(b"token-a", b"grant-a").unwrap();
        assert_eq!(r.open(&a, b"grant-b"), Err(CipherError::Unauthentic));
        assert_eq!(r.open(&a, b""), Err(CipherError::Unauthentic));
        // A box copied from row a into row b does not open as row b's.
        let _b = r.seal(b"token-b", b"grant-b").unwrap();
        assert_eq!(r.open(&a, b"grant-b"), Err(CipherError::Unauthentic));
    }

    #[test]
    fn tampering_fails() {
        let r = ring(&format!("k1:{}", key(1)));
        let sealed = r.seal(b"some plaintext", b"ad").unwrap();
        for i in 4..sealed.0.len() {
            let mut tampered = sealed.clone();
            tampered.0[i] ^= 0x01;
            assert_eq!(r.open(&tampered, b"ad"), Err(CipherError::Unauthentic), "byte {i}");
        }
        let mut truncated = sealed.clone();
        truncated.0.truncate(4 + 12 + 15);
        assert_eq!(r.open(&truncated, b"ad"), Err(CipherError::Malformed));
        let mut version = sealed.clone();
        version.0[0] = 2;
        assert_eq!(r.open(&version, b"ad"), Err(CipherError::Malformed));
        assert_eq!(r.open(&SealedBox(vec![]), b"ad"), Err(CipherError::Malformed));
        // Renaming the key inside the box is caught too (the header is authenticated).
        let two = ring(&format!("k1:{},k2:{}", key(1), key(1)));
        let mut renamed = two.seal(b"x", b"ad").unwrap();
        renamed.0[3] = b'2';
        assert_eq!(two.open(&renamed, b"ad"), Err(CipherError::Unauthentic));
    }

    #[test]
    fn unknown_key_id() {
        let old = ring(&format!("old:{}", key(1)));
        let other = ring(&format!("new:{}", key(2)));
        let sealed = old.seal(b"x", b"ad").unwrap();
        assert_eq!(other.open(&sealed, b"ad"), Err(CipherError::UnknownKey("old".into())));
        // Same id, different key material: it does not open.
        let impostor = ring(&format!("old:{}", key(3)));
        assert_eq!(impostor.open(&sealed, b"ad"), Err(CipherError::Unauthentic));
    }

    #[test]
    fn rotation() {
        let old = ring(&format!("2025:{}", key(1)));
        let sealed = old.seal(b"credential", b"grant").unwrap();
        assert!(!old.is_stale(&sealed));
        let new = ring(&format!("2026:{}, 2025:{}", key(2), key(1)));
        assert_eq!(new.current_key_id(), "2026");
        assert_eq!(new.open(&sealed, b"grant").unwrap(), b"credential");
        assert!(new.is_stale(&sealed));
        let resealed = new.seal(b"credential", b"grant").unwrap();
        assert!(!new.is_stale(&resealed));
        assert_eq!(KeyRing::sealed_key_id(&resealed), Some("2026"));
        assert!(new.is_stale(&SealedBox(vec![9, 9])));

        let rotated = old.rotated("next").unwrap();
        assert_eq!(rotated.key_ids(), vec!["next", "2025"]);
        assert_eq!(rotated.open(&sealed, b"grant").unwrap(), b"credential");
        assert_eq!(old.rotated("2025").unwrap_err(), KeyRingError::DuplicateKeyId { id: "2025".into() });
    }

    #[test]
    fn parse_rules() {
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfb; 32]);
        let standard = base64::engine::general_purpose::STANDARD.encode([0xfb; 32]);
        assert!(url_safe.contains('-') || url_safe.contains('_'));
        let a = ring(&format!("a:{url_safe}"));
        let b = ring(&format!("b:{standard}"));
        let sealed = a.seal(b"x", b"").unwrap();
        let b_as_a = ring(&format!("a:{standard}"));
        assert_eq!(b_as_a.open(&sealed, b"").unwrap(), b"x");
        assert_eq!(b.key_ids(), vec!["b"]);

        assert_eq!(KeyRing::parse("").unwrap_err(), KeyRingError::Empty);
        assert_eq!(KeyRing::parse("  ").unwrap_err(), KeyRingError::Empty);
        assert_eq!(KeyRing::parse("nocolon").unwrap_err(), KeyRingError::MalformedEntry { index: 1 });
        assert_eq!(KeyRing::parse(&format!("a:{},", key(1))).unwrap_err(), KeyRingError::MalformedEntry { index: 2 });
        assert_eq!(KeyRing::parse(&format!("bad id:{}", key(1))).unwrap_err(), KeyRingError::InvalidKeyId { index: 1 });
        assert_eq!(
            KeyRing::parse(&format!("{}:{}", "x".repeat(65), key(1))).unwrap_err(),
            KeyRingError::InvalidKeyId { index: 1 }
        );
        assert_eq!(KeyRing::parse("a:not base64!").unwrap_err(), KeyRingError::InvalidBase64 { id: "a".into() });
        assert_eq!(KeyRing::parse("a:c2hvcnQ=").unwrap_err(), KeyRingError::WrongKeyLength { id: "a".into(), len: 5 });
        assert_eq!(
            KeyRing::parse(&format!("a:{},a:{}", key(1), key(2))).unwrap_err(),
            KeyRingError::DuplicateKeyId { id: "a".into() }
        );
        // A key pasted where the id goes is not echoed back.
        let err = KeyRing::parse(&format!("{}:{}", key(7), key(1))).unwrap_err();
        assert!(!err.to_string().contains(&key(7)));
    }

    #[test]
    fn generate_export_and_debug() {
        let r = KeyRing::generate("first").unwrap();
        let exported = r.export();
        let again = KeyRing::parse(exported.expose()).unwrap();
        let sealed = r.seal(b"x", b"y").unwrap();
        assert_eq!(again.open(&sealed, b"y").unwrap(), b"x");
        assert_eq!(format!("{r:?}"), "KeyRing { key_ids: [\"first\"] }");
        assert_eq!(KeyRing::generate("no spaces").unwrap_err(), KeyRingError::InvalidKeyId { index: 1 });
        assert_ne!(
            KeyRing::generate("a").unwrap().export().expose(),
            KeyRing::generate("a").unwrap().export().expose()
        );
    }

    /// Boxes sealed by OpenSSL (which sealed every box before the ring kept its keys expanded
    /// with RustCrypto's `aes-gcm`) still open, and boxes sealed now open in OpenSSL: the same
    /// AES-256-GCM, byte for byte, so stored credentials need no migration.
    #[test]
    fn sealed_boxes_match_openssl_symm() {
        use openssl::symm::{decrypt_aead, encrypt_aead, Cipher as SymmCipher};
        let ring = KeyRing::parse("k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").unwrap();
        let key: Vec<u8> = (0u8..32).collect();
        let header = Envelope::header("k1");
        let aad = authenticated_data(&header, b"row");
        let nonce = [7u8; NONCE_LEN];
        let mut tag = [0u8; TAG_LEN];
        let ciphertext =
            encrypt_aead(SymmCipher::aes_256_gcm(), &key, Some(&nonce), &aad, b"an older token", &mut tag).unwrap();
        let mut older = header;
        older.extend_from_slice(&nonce);
        older.extend_from_slice(&ciphertext);
        older.extend_from_slice(&tag);
        assert_eq!(ring.open(&SealedBox(older), b"row").unwrap(), b"an older token");

        let sealed = ring.seal(b"a newer token", b"row").unwrap();
        let envelope = Envelope::parse(&sealed.0).unwrap();
        let aad = authenticated_data(envelope.header, b"row");
        let opened = decrypt_aead(
            SymmCipher::aes_256_gcm(),
            &key,
            Some(envelope.nonce),
            &aad,
            envelope.ciphertext,
            envelope.tag,
        )
        .unwrap();
        assert_eq!(opened, b"a newer token");
        assert_eq!(ring.open(&sealed, b"row").unwrap(), b"a newer token");
        assert!(ring.seal(b"", b"row").and_then(|empty| ring.open(&empty, b"row")).unwrap().is_empty());
    }

    #[test]
    fn hmac_matches_openssl_and_rfc_4231() {
        // RFC 4231 test case 2 uses a 4-byte key; check the construction through `with_key`.
        let h = HmacHasher::with_key(b"Jefe");
        let mac = h.mac(&[b"what do ya want ", b"for nothing?"]);
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(mac.iter().map(|b| format!("{b:02x}")).collect::<String>(), expected);

        let key = [7u8; 32];
        let h = HmacHasher::new(&key).unwrap();
        let pkey = openssl::pkey::PKey::hmac(&key).unwrap();
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
        signer.update(&[0, 0, 0, 7]).unwrap();
        signer.update(b"api_key").unwrap();
        signer.update(b"ck_live_123").unwrap();
        assert_eq!(h.hash("api_key", b"ck_live_123"), signer.sign_to_vec().unwrap());
    }

    #[test]
    fn hasher_rules() {
        let h = HmacHasher::new(&[1u8; 32]).unwrap();
        let stored = h.hash("api_key", b"secret");
        assert_eq!(stored.len(), 32);
        assert!(h.verify("api_key", b"secret", &stored));
        assert!(!h.verify("api_key", b"secreT", &stored));
        assert!(!h.verify("admin_token", b"secret", &stored), "domain separated");
        assert!(!h.verify("api_key", b"secret", &stored[..31]), "a short hash never matches");
        assert!(!h.verify("api_key", b"secret", b""));
        assert_ne!(h.hash("a", b"bc"), h.hash("ab", b"c"));
        let other = HmacHasher::new(&[2u8; 32]).unwrap();
        assert!(!other.verify("api_key", b"secret", &stored), "keyed");
        assert_eq!(format!("{h:?}"), "HmacHasher([redacted])");
        assert_eq!(HmacHasher::new(&[0u8; 16]).unwrap_err(), HmacKeyError::WrongLength(16));
        assert_eq!(HmacHasher::parse("!!").unwrap_err(), HmacKeyError::InvalidBase64);
        let (generated, encoded) = HmacHasher::generate().unwrap();
        let parsed = HmacHasher::parse(encoded.expose()).unwrap();
        assert!(parsed.verify("p", b"s", &generated.hash("p", b"s")));
    }
}
