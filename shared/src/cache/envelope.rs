//! The versioned envelope every L2 value is stored in.
//!
//! Layout (big-endian), 40 header bytes then the payload:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 2 | magic `CC` |
//! | 2 | 1 | format: 2 = postcard payload (written), 1 = JSON payload (still read) |
//! | 3 | 1 | flags: bit 0 zstd (read only), bit 1 negative (cached "not found"), bit 2 tombstone, bit 3 LZ4 |
//! | 4 | 8 | entity version (0 = unversioned) |
//! | 12 | 8 | stored_at, epoch ms |
//! | 20 | 8 | fresh_until, epoch ms |
//! | 28 | 8 | stale_until, epoch ms |
//! | 36 | 4 | payload length before compression |
//! | 40 | .. | payload (see `codec`), LZ4-compressed (or, written before, zstd) when its flag is set |
//!
//! The entity version, the flags and `stored_at` sit at fixed offsets so the Redis guard script
//! can read them without understanding the rest. A tombstone marks a key invalidated at
//! `stored_at`: readers see a miss, and the guard refuses values read before it. Decoding checks every field and bounds decompression by the
//! declared length, so corrupt or hostile bytes are an error, never a panic or a huge allocation.

use crate::model::EpochMillis;

/// Format of entries whose payload is JSON (written before format 2; still read).
pub const FORMAT_JSON: u8 = 1;
/// Format of entries whose payload is postcard: the one written now. The header is the same
/// in both, so the guard script reads either. A reader treats any other format as a miss.
pub const FORMAT_BINARY: u8 = 2;
const MAGIC: [u8; 2] = *b"CC";
/// Size of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Offset of the big-endian entity version (read by the Lua version guard).
pub const VERSION_OFFSET: usize = 4;

/// zstd, as entries were compressed before LZ4; still read.
const FLAG_ZSTD: u8 = 0b0001;
/// LZ4 (block format), as payloads are compressed now: decoding a 10 KiB product costs a
/// fraction of zstd's time on payloads this small, for slightly more bytes.
const FLAG_LZ4: u8 = 0b1000;
const FLAG_NEGATIVE: u8 = 0b010;
const FLAG_TOMBSTONE: u8 = 0b100;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_NEGATIVE | FLAG_TOMBSTONE | FLAG_LZ4;

/// Metadata of a cache entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryMeta {
    /// Version of the cached entity (0 when the data has no version).
    pub version: u64,
    /// When the entry was written.
    pub stored_at: EpochMillis,
    /// Served without revalidation until this time.
    pub fresh_until: EpochMillis,
    /// Served while revalidating until this time; gone afterwards.
    pub stale_until: EpochMillis,
    /// A cached "not found".
    pub negative: bool,
    /// An invalidation marker: no value, a miss for readers (see the module docs).
    pub tombstone: bool,
}

/// How fresh an entry is at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Before `fresh_until`.
    Fresh,
    /// Between `fresh_until` and `stale_until`.
    Stale,
    /// Past `stale_until`.
    Expired,
}

impl EntryMeta {
    /// Freshness at `now`.
    pub fn freshness(&self, now: EpochMillis) -> Freshness {
        if now < self.fresh_until {
            Freshness::Fresh
        } else if now < self.stale_until {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// Age at `now`, in milliseconds (never negative, even with clock skew between writers).
    pub fn age_ms(&self, now: EpochMillis) -> u64 {
        u64::try_from(now.saturating_sub(self.stored_at)).unwrap_or(0)
    }
}

/// A decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The entry's metadata.
    pub meta: EntryMeta,
    /// The payload's format ([`FORMAT_BINARY`] or [`FORMAT_JSON`]).
    pub format: u8,
    /// The uncompressed payload (empty for a negative entry).
    pub payload: Vec<u8>,
}

/// An encoded envelope with its sizes, for the byte counters.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// What goes to Redis.
    pub bytes: Vec<u8>,
    /// Payload size before compression.
    pub raw_len: usize,
}

/// Why stored bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a header.
    #[error("value is shorter than the envelope header")]
    Truncated,
    /// Not written by this cache.
    #[error("value does not start with the envelope magic")]
    BadMagic,
    /// Written by a newer or older format.
    #[error("unknown envelope format version {0}")]
    UnknownFormat(u8),
    /// Flags this version does not understand.
    #[error("unknown envelope flags {0:#04b}")]
    UnknownFlags(u8),
    /// Times out of order.
    #[error("envelope times are inconsistent")]
    BadTimes,
    /// Larger than the configured maximum.
    #[error("value of {0} bytes exceeds the maximum")]
    TooLarge(usize),
    /// The payload's length does not match the header.
    #[error("payload length does not match the header")]
    LengthMismatch,
    /// zstd refused the payload.
    #[error("cannot decompress the payload")]
    Decompress(#[source] std::io::Error),
}

/// Encodes an entry; payloads longer than `compress_threshold` are LZ4-compressed when that
/// actually makes them smaller.
pub fn encode(meta: &EntryMeta, payload: &[u8], compress_threshold: usize) -> Encoded {
    let compressed = (payload.len() > compress_threshold)
        .then(|| lz4_flex::block::compress(payload))
        .filter(|c| c.len() < payload.len());
    let mut flags = 0;
    if compressed.is_some() {
        flags |= FLAG_LZ4;
    }
    if meta.negative {
        flags |= FLAG_NEGATIVE;
    }
    if meta.tombstone {
        flags |= FLAG_TOMBSTONE;
    }
    let body = compressed.as_deref().unwrap_or(payload);
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.push(FORMAT_BINARY);
    bytes.push(flags);
    bytes.extend_from_slice(&meta.version.to_be_bytes());
    bytes.extend_from_slice(&meta.stored_at.to_be_bytes());
    bytes.extend_from_slice(&meta.fresh_until.to_be_bytes());
    bytes.extend_from_slice(&meta.stale_until.to_be_bytes());
    // Payloads are bounded far below 4 GiB by `max_value_bytes`; saturate rather than wrap.
    bytes.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    bytes.extend_from_slice(body);
    Encoded {
        bytes,
        raw_len: payload.len(),
    }
}

thread_local! {
    /// A zstd context per thread, kept: creating one costs more than decompressing a 10 KiB
    /// document with it.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// An entry compressed with zstd (written before LZ4).
fn decompress_zstd(body: &[u8], raw_len: usize) -> Result<Vec<u8>, DecodeError> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell
            .try_borrow_mut()
            .map_err(|_| DecodeError::Decompress(std::io::Error::other("context in use")))?;
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(DecodeError::Decompress)?);
        }
        match slot.as_mut() {
            Some(decompressor) => decompressor
                .decompress(body, raw_len)
                .map_err(DecodeError::Decompress),
            None => Err(DecodeError::Decompress(std::io::Error::other("no context"))),
        }
    })
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(buf)
}

fn be_i64(bytes: &[u8], at: usize) -> i64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&bytes[at..at + 8]);
    i64::from_be_bytes(buf)
}

/// A tombstone for a key invalidated at `now`, living `ttl`.
pub fn tombstone(now: EpochMillis, ttl_ms: i64) -> Encoded {
    let meta = EntryMeta {
        version: 0,
        stored_at: now,
        fresh_until: now + ttl_ms,
        stale_until: now + ttl_ms,
        negative: false,
        tombstone: true,
    };
    encode(&meta, &[], usize::MAX)
}

/// Decodes and validates stored bytes. `max_raw_len` bounds the stored size and the
/// decompressed size alike.
pub fn decode(bytes: &[u8], max_raw_len: usize) -> Result<Envelope, DecodeError> {
    let meta = decode_header(bytes)?;
    if bytes.len() > HEADER_LEN + max_raw_len {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let flags = bytes[3];
    let mut len_buf = [0u8; 4];
    len_buf.copy_from_slice(&bytes[36..40]);
    let raw_len = u32::from_be_bytes(len_buf) as usize;
    if raw_len > max_raw_len {
        return Err(DecodeError::TooLarge(raw_len));
    }
    let body = &bytes[HEADER_LEN..];
    let payload = if flags & FLAG_LZ4 != 0 {
        lz4_flex::block::decompress(body, raw_len)
            .map_err(|e| DecodeError::Decompress(std::io::Error::other(e)))?
    } else if flags & FLAG_ZSTD != 0 {
        decompress_zstd(body, raw_len)?
    } else {
        body.to_vec()
    };
    if payload.len() != raw_len {
        return Err(DecodeError::LengthMismatch);
    }
    Ok(Envelope {
        meta,
        format: bytes[2],
        payload,
    })
}

/// Decodes only the header (cheap): what the version guard and freshness checks need.
pub fn decode_header(bytes: &[u8]) -> Result<EntryMeta, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Truncated);
    }
    if bytes[..2] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    if bytes[2] != FORMAT_BINARY && bytes[2] != FORMAT_JSON {
        return Err(DecodeError::UnknownFormat(bytes[2]));
    }
    let flags = bytes[3];
    if flags & !KNOWN_FLAGS != 0 {
        return Err(DecodeError::UnknownFlags(flags));
    }
    let meta = EntryMeta {
        version: be_u64(bytes, VERSION_OFFSET),
        stored_at: be_i64(bytes, 12),
        fresh_until: be_i64(bytes, 20),
        stale_until: be_i64(bytes, 28),
        negative: flags & FLAG_NEGATIVE != 0,
        tombstone: flags & FLAG_TOMBSTONE != 0,
    };
    if !(meta.stored_at <= meta.fresh_until && meta.fresh_until <= meta.stale_until) {
        return Err(DecodeError::BadTimes);
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX: usize = 1 << 20;

    fn meta() -> EntryMeta {
        EntryMeta {
            version: 42,
            stored_at: 1_000,
            fresh_until: 2_000,
            stale_until: 3_000,
            negative: false,
            tombstone: false,
        }
    }

    #[test]
    fn small_payloads_stay_plain_and_large_ones_are_compressed() {
        let small = encode(&meta(), b"{\"a\":1}", 1024);
        assert_eq!(small.bytes[3] & FLAG_LZ4, 0);
        let large_payload = "{\"name\":\"kettle\"}".repeat(200);
        let large = encode(&meta(), large_payload.as_bytes(), 1024);
        assert_eq!(large.bytes[3] & FLAG_LZ4, FLAG_LZ4);
        assert!(large.bytes.len() < large_payload.len() / 4);
        let back = decode(&large.bytes, MAX).unwrap();
        assert_eq!(back.payload, large_payload.as_bytes());
        assert_eq!(back.meta, meta());
    }

    #[test]
    fn entries_compressed_with_zstd_before_are_still_read() {
        let payload = "{\"name\":\"kettle\"}".repeat(200);
        let plain = encode(&meta(), payload.as_bytes(), usize::MAX).bytes;
        let mut bytes = plain[..HEADER_LEN].to_vec();
        bytes[3] |= FLAG_ZSTD;
        bytes.extend(zstd::bulk::compress(payload.as_bytes(), 3).unwrap());
        assert_eq!(decode(&bytes, MAX).unwrap().payload, payload.as_bytes());
    }

    #[test]
    fn a_tombstone_is_an_empty_marker_with_its_time() {
        let marker = tombstone(5_000, 10_000);
        let back = decode(&marker.bytes, MAX).unwrap();
        assert!(back.meta.tombstone && !back.meta.negative);
        assert_eq!(
            (back.meta.stored_at, back.meta.stale_until),
            (5_000, 15_000)
        );
        assert!(back.payload.is_empty());
    }

    #[test]
    fn freshness_follows_the_timestamps() {
        let m = meta();
        assert_eq!(m.freshness(1_999), Freshness::Fresh);
        assert_eq!(m.freshness(2_000), Freshness::Stale);
        assert_eq!(m.freshness(3_000), Freshness::Expired);
        assert_eq!(m.age_ms(500), 0);
    }

    #[test]
    fn each_kind_of_corruption_is_reported() {
        let good = encode(&meta(), b"payload", 1024).bytes;
        assert!(matches!(
            decode(&good[..10], MAX),
            Err(DecodeError::Truncated)
        ));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(decode(&bad, MAX), Err(DecodeError::BadMagic)));
        let mut bad = good.clone();
        bad[2] = 9;
        assert!(matches!(
            decode(&bad, MAX),
            Err(DecodeError::UnknownFormat(9))
        ));
        let mut bad = good.clone();
        bad[3] = 0x80;
        assert!(matches!(
            decode(&bad, MAX),
            Err(DecodeError::UnknownFlags(_))
        ));
        let mut bad = good.clone();
        bad.push(b'!');
        assert!(matches!(
            decode(&bad, MAX),
            Err(DecodeError::LengthMismatch)
        ));
        assert!(matches!(decode(&good, 3), Err(DecodeError::TooLarge(_))));
        let mut bad = good.clone();
        bad[3] |= FLAG_LZ4;
        assert!(matches!(decode(&bad, MAX), Err(DecodeError::Decompress(_))));
        let mut bad = good;
        bad[3] |= FLAG_ZSTD;
        assert!(matches!(decode(&bad, MAX), Err(DecodeError::Decompress(_))));
    }

    #[test]
    fn a_lying_length_cannot_force_a_huge_allocation() {
        let payload = "x".repeat(5000);
        let mut bytes = encode(&meta(), payload.as_bytes(), 0).bytes;
        // Claim the payload decompresses to 3 GiB.
        bytes[36..40].copy_from_slice(&(3u32 << 30).to_be_bytes());
        assert!(matches!(decode(&bytes, MAX), Err(DecodeError::TooLarge(_))));
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes, MAX);
        }

        #[test]
        fn decode_never_panics_on_mutated_envelopes(
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = encode(&meta(), &payload, 64).bytes;
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let _ = decode(&bytes, MAX);
        }

        #[test]
        fn encode_then_decode_round_trips(
            payload in proptest::collection::vec(any::<u8>(), 0..5000),
            version in any::<u64>(),
            stored_at in 0i64..1 << 45,
            fresh in 0i64..1 << 30,
            stale in 0i64..1 << 30,
            negative in any::<bool>(),
            tombstone in any::<bool>(),
            threshold in 0usize..2048,
        ) {
            let meta = EntryMeta {
                version,
                stored_at,
                fresh_until: stored_at + fresh,
                stale_until: stored_at + fresh + stale,
                negative,
                tombstone,
            };
            let encoded = encode(&meta, &payload, threshold);
            let back = decode(&encoded.bytes, MAX).unwrap();
            prop_assert_eq!(back.meta, meta);
            prop_assert_eq!(back.payload, payload);
        }
    }
}
