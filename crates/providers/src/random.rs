//! Randomness from OpenSSL's CSPRNG: [`OsRandom`], the identity domain's [`Random`] port.
//!
//! Secrets and nonces are drawn straight from the CSPRNG. Identifiers (version 4 UUIDs, and the
//! time-ordered version 7 UUIDs of audit rows) take their random bits from a per-thread block,
//! since every hand-out makes one and a `RAND_bytes` call costs more than the 16 bytes it yields.

use custody_identity::ports::Random;
use std::sync::atomic::{AtomicU64, Ordering};

/// Randomness from OpenSSL's CSPRNG. Implements [`Random`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OsRandom;

impl OsRandom {
    /// Fills a buffer from OpenSSL's CSPRNG.
    ///
    /// # Panics
    ///
    /// When OpenSSL's random number generator fails. That leaves no safe way to go on
    /// (identifiers, nonces and secrets would be predictable), and the [`Random`] port has no
    /// error to return.
    fn fill(buf: &mut [u8]) {
        if openssl::rand::rand_bytes(buf).is_err() {
            panic!("the operating system's random number generator failed");
        }
    }
}

/// 16 bytes for a UUID, from a per-thread block drawn from OpenSSL's CSPRNG 512 bytes at a time.
///
/// Every hand-out takes one (its audit row's id), and each `RAND_bytes` call pays a lock and a
/// fork check that cost more than the bytes. Identifiers are not secrets, so unused ones may
/// wait in memory; secrets and nonces still come straight from [`OsRandom::fill`]. (A process
/// that forked would share its parent's unused block; Custody forks only to `exec`.)
fn uuid_bytes() -> [u8; 16] {
    const BLOCK: usize = 512;
    struct Block {
        bytes: [u8; BLOCK],
        used: usize,
    }
    thread_local! {
        static BLOCK_OF_THREAD: std::cell::RefCell<Block> =
            const { std::cell::RefCell::new(Block { bytes: [0; BLOCK], used: BLOCK }) };
    }
    BLOCK_OF_THREAD.with_borrow_mut(|block| {
        if block.used == BLOCK {
            OsRandom::fill(&mut block.bytes);
            block.used = 0;
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&block.bytes[block.used..block.used + 16]);
        // Taken bytes are not kept.
        block.bytes[block.used..block.used + 16].fill(0);
        block.used += 16;
        out
    })
}

impl Random for OsRandom {
    /// A version 4 UUID in canonical lower-case form (RFC 9562).
    fn uuid(&self) -> String {
        let mut b = uuid_bytes();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        uuid_text(&b)
    }

    /// A version 7 UUID (RFC 9562, section 5.7): 48 bits of Unix time in milliseconds, then
    /// a 12-bit counter in `rand_a` (section 6.2, method 1) that keeps ids of the same
    /// millisecond increasing within this process (a clock that steps back keeps counting from
    /// the last id), then 62 random bits.
    fn ordered_uuid(&self) -> String {
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            & ((1 << 48) - 1);
        // `millisecond << 12 | counter`, never repeating: a counter that runs out moves on to
        // the next millisecond.
        let next = |last: u64| (now_ms << 12).max(last + 1);
        let stamp = match LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(next(last))) {
            Ok(last) | Err(last) => next(last),
        };
        let mut b = uuid_bytes();
        b[..6].copy_from_slice(&(stamp >> 12).to_be_bytes()[2..]);
        let counter = (stamp & 0xfff) as u16;
        b[6] = 0x70 | (counter >> 8) as u8;
        b[7] = counter as u8;
        b[8] = (b[8] & 0x3f) | 0x80;
        uuid_text(&b)
    }

    fn bytes(&self, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        Self::fill(&mut buf);
        buf
    }
}

/// The canonical lower-case text of a UUID.
fn uuid_text(b: &[u8; 16]) -> String {
    // Formatted by hand: this runs on every hand-out (audit row ids), and per-byte `format!`
    // calls were a visible share of its allocations.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `per_thread` ids from each of four threads running at once.
    fn ids_from_four_threads(per_thread: usize, make: impl Fn() -> String + Sync) -> Vec<String> {
        std::thread::scope(|scope| {
            let threads: Vec<_> =
                (0..4).map(|_| scope.spawn(|| (0..per_thread).map(|_| make()).collect::<Vec<_>>())).collect();
            threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
        })
    }

    /// Ordered ids are version 7 UUIDs that increase in creation order, also within one
    /// millisecond and across threads (text order is byte order for lower-case hex).
    #[test]
    fn ordered_uuids_are_version_7_and_increase() {
        let r = OsRandom;
        let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        let ids: Vec<String> = (0..5000).map(|_| r.ordered_uuid()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids must increase");
        let first = &ids[0];
        assert!(custody_identity::AppId::parse(first).is_ok(), "{first}");
        assert_eq!(&first[14..15], "7");
        assert!(matches!(&first[19..20], "8" | "9" | "a" | "b"));
        let millis = u128::from_str_radix(&first[..13].replace('-', ""), 16).unwrap();
        assert!(millis >= before && millis < before + 60_000, "{millis} vs {before}");
        let threaded = ids_from_four_threads(500, || r.ordered_uuid());
        let distinct: std::collections::HashSet<&String> = threaded.iter().collect();
        assert_eq!(distinct.len(), 2000);
        assert!(threaded.iter().all(|id| id.as_str() > ids[4999].as_str()));
    }

    /// Ids come from per-thread blocks of 32 ids: across several refills, on several threads, every
    /// id is a distinct version 4 UUID.
    #[test]
    fn uuids_stay_distinct_across_blocks_and_threads() {
        let ids = ids_from_four_threads(100, || OsRandom.uuid());
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), 400);
        assert!(ids.iter().all(|id| custody_identity::AppId::parse(id).is_ok() && &id[14..15] == "4"));
    }

    #[test]
    fn os_random() {
        let r = OsRandom;
        let id = r.uuid();
        assert!(custody_identity::AppId::parse(&id).is_ok(), "{id}");
        assert_eq!(id, id.to_ascii_lowercase());
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(r.uuid(), r.uuid());
        assert_eq!(r.bytes(48).len(), 48);
        assert_ne!(r.bytes(32), r.bytes(32));
    }
}
