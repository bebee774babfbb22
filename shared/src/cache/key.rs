//! Every cache key is built here: prefixed, versioned by the prefix (`cc:v1:`), and made only of
//! validated parts, so no request input can produce `*`, spaces, newlines or unbounded keys.

use std::fmt;

use crate::model::{FeedKind, ProductId};

/// What kind of data a key holds; selects the TTLs from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Category {
    /// A product with its offers.
    Product,
    /// A product's period stats.
    Stats,
    /// A page of a ranked feed.
    Feed,
}

/// A validated cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    full: String,
    category: Category,
}

impl CacheKey {
    /// The key as stored in Redis.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The data category (selects TTLs).
    pub fn category(&self) -> Category {
        self.category
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// What a key refers to, recovered from its string (for draining the revalidation queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTarget {
    /// `product:{<id>}`.
    Product(ProductId),
    /// `summary:{<id>}`.
    Summary(ProductId),
    /// `stats:{<id>}`.
    Stats(ProductId),
}

/// Builds keys under one prefix. Tests give every test its own prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    /// Keys under `prefix` (validated by config: `[A-Za-z0-9:_.-]{0,64}`).
    pub fn new(prefix: impl Into<String>) -> Self {
        KeySpace {
            prefix: prefix.into(),
        }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A product with its offers: `<prefix>product:{<id>}`. The id is the key's hash tag, so
    /// a product's keys share one cluster slot and are read together in one MGET.
    pub fn product(&self, id: &ProductId) -> CacheKey {
        self.key(Category::Product, format_args!("product:{{{id}}}"))
    }

    /// A product without its offers, as listed in batches and feeds: `<prefix>summary:{<id>}`.
    pub fn summary(&self, id: &ProductId) -> CacheKey {
        self.key(Category::Product, format_args!("summary:{{{id}}}"))
    }

    /// A product's period stats: `<prefix>stats:{<id>}`.
    pub fn stats(&self, id: &ProductId) -> CacheKey {
        self.key(Category::Stats, format_args!("stats:{{{id}}}"))
    }

    /// The whole ranked id list of a feed at a generation: `<prefix>feed:<kind>:g<generation>`.
    pub fn feed(&self, kind: FeedKind, generation: u64) -> CacheKey {
        self.key(
            Category::Feed,
            format_args!("feed:{}:g{generation}", kind.as_str()),
        )
    }

    /// Every key that caches something about product `id` (not feeds, which use generations).
    pub fn product_keys(&self, id: &ProductId) -> [CacheKey; 3] {
        [self.product(id), self.summary(id), self.stats(id)]
    }

    /// The generation counter of a namespace: `<prefix>gen:<namespace>`.
    pub fn generation(&self, namespace: &str) -> String {
        format!("{}gen:{namespace}", self.prefix)
    }

    /// The single-flight lock of a key: `<prefix>lock:<key without prefix>`.
    pub fn lock(&self, key: &CacheKey) -> String {
        let rest = key.full.strip_prefix(&self.prefix).unwrap_or(&key.full);
        format!("{}lock:{rest}", self.prefix)
    }

    /// The sorted set of active offers by expiry (`<product>/<offer>` scored by `expires_at`):
    /// `<prefix>{offers}:by-expiry`. One key, so one slot; the hash tag keeps any companion key
    /// in the same slot.
    pub fn expiry_set(&self) -> String {
        format!("{}{{offers}}:by-expiry", self.prefix)
    }

    /// The change log every environment polls to drop what others changed from its L1 (a
    /// sorted set of keys scored by a sequence): `<prefix>l1:changes`.
    pub fn change_log(&self) -> String {
        format!("{}l1:changes", self.prefix)
    }

    /// The durable revalidation queue (a sorted set of keys scored by enqueue time).
    pub fn revalidation_queue(&self) -> String {
        format!("{}revalidate", self.prefix)
    }

    /// The hash of per-minute cache counters for one hour: `<prefix>{counters}:h<epoch hour>`.
    /// The hash tag puts every hour in one cluster slot, so a day is one pipeline.
    pub fn counters_hour(&self, epoch_hour: i64) -> String {
        format!("{}{{counters}}:h{epoch_hour}", self.prefix)
    }

    /// Per-minute traffic (per route and per cache operation) for one hour, kept apart from
    /// the counters so the 24 h window never reads minute-resolution route fields:
    /// `<prefix>{counters}:t<epoch hour>`.
    pub fn traffic_hour(&self, epoch_hour: i64) -> String {
        format!("{}{{counters}}:t{epoch_hour}", self.prefix)
    }

    /// The same traffic summed over one hour, for the 24 h window:
    /// `<prefix>{counters}:d<epoch hour>`.
    pub fn traffic_rollup(&self, epoch_hour: i64) -> String {
        format!("{}{{counters}}:d{epoch_hour}", self.prefix)
    }

    /// Recovers what a key refers to, for keys this key space built.
    pub fn parse(&self, full: &str) -> Option<KeyTarget> {
        let rest = full.strip_prefix(&self.prefix)?;
        let (kind, tagged) = rest.split_once(':')?;
        let id = ProductId::parse(tagged.strip_prefix('{')?.strip_suffix('}')?).ok()?;
        match kind {
            "product" => Some(KeyTarget::Product(id)),
            "summary" => Some(KeyTarget::Summary(id)),
            "stats" => Some(KeyTarget::Stats(id)),
            _ => None,
        }
    }

    fn key(&self, category: Category, rest: fmt::Arguments<'_>) -> CacheKey {
        CacheKey {
            full: format!("{}{rest}", self.prefix),
            category,
        }
    }
}

/// Number of Redis Cluster hash slots.
pub const SLOT_COUNT: u16 = 16384;

/// The Redis Cluster hash slot of a key: CRC16 (XMODEM) of the key, or of its `{hash tag}`
/// when it has a non-empty one, modulo 16384.
pub fn hash_slot(key: &[u8]) -> u16 {
    let hashed = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOT_COUNT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_and_parse_back() {
        let keys = KeySpace::new("cc:v1:");
        let id = ProductId::parse("sku-1").unwrap();
        let key = keys.product(&id);
        assert_eq!(key.as_str(), "cc:v1:product:{sku-1}");
        assert_eq!(key.category(), Category::Product);
        assert_eq!(
            keys.parse(key.as_str()),
            Some(KeyTarget::Product(id.clone()))
        );
        assert_eq!(
            keys.parse(keys.stats(&id).as_str()),
            Some(KeyTarget::Stats(id))
        );
        assert_eq!(keys.parse("other:product:x"), None);
        assert_eq!(keys.parse("cc:v1:product:{bad id}"), None);
        assert_eq!(keys.lock(&key), "cc:v1:lock:product:{sku-1}");
    }

    #[test]
    fn feed_keys_carry_their_generation() {
        let keys = KeySpace::new("t:");
        assert_eq!(
            keys.feed(FeedKind::Trending, 7).as_str(),
            "t:feed:trending:g7"
        );
        assert_eq!(FeedKind::parse("new"), Ok(FeedKind::New));
        assert!(FeedKind::parse("hot").is_err());
    }

    #[test]
    fn hash_slots_match_redis() {
        // Reference values from the Redis Cluster specification; the integration tests also
        // compare against `CLUSTER KEYSLOT` on a real cluster.
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(hash_slot(b"{user1000}.following"), hash_slot(b"user1000"));
        // An empty tag `{}` does not count: the whole key is hashed.
        assert_eq!(
            hash_slot(b"{}x"),
            crc16::State::<crc16::XMODEM>::calculate(b"{}x") % SLOT_COUNT
        );
    }
}
