//! The one-way digests the domain stores in place of secrets that need no key: SHA-256 of a
//! state or a session id, written as lowercase hex.

/// The stored form of a state value: SHA-256, hex. A state is 32 random bytes, so a plain hash
/// is enough to make the stored value useless to a reader of the database.
pub fn state_hash(state: &str) -> String {
    hex(&sha256(state.as_bytes()))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_vectors() {
        assert_eq!(hex(&sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(
            hex(&sha256(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn state_hash_is_hex_sha256() {
        assert_eq!(state_hash("abc"), hex(&sha256(b"abc")));
        assert_eq!(state_hash("abc").len(), 64);
    }
}
