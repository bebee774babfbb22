//! The L2 port in process memory: Redis semantics (TTLs, NX locks, guarded writes, sorted-set
//! queues) for unit tests and the embedded dev mode, plus fault injection for tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{CHANGE_LOG_FLOOR, HashUpdate, L2Store, L2Write, ServerInfo, WriteOutcome};
use crate::cache::envelope;
use crate::error::{Error, Result};

#[derive(Debug, Clone)]
enum Value {
    Bytes(Vec<u8>),
    Counter(u64),
    Queue(BTreeMap<String, i64>),
    Hash(HashMap<String, i64>),
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    expires_at: Option<Instant>,
}

/// The entry at `key`, created holding `empty` and no expiry when absent, as Redis creates a
/// key on its first write.
fn entry_or_new<'a>(
    entries: &'a mut HashMap<String, Entry>,
    key: &str,
    empty: Value,
) -> &'a mut Entry {
    entries.entry(key.to_owned()).or_insert(Entry {
        value: empty,
        expires_at: None,
    })
}

/// In-memory L2.
///
/// ## Behavior
/// - Keys expire lazily on access, like Redis from a client's point of view.
/// - [`MemoryL2::set_failing`] makes every call fail with a timeout, to exercise fail-open paths;
///   [`MemoryL2::intercept`] sees each call first, to fail some or to move a test's clock.
#[derive(Debug, Default)]
pub struct MemoryL2 {
    entries: Mutex<HashMap<String, Entry>>,
    failing: AtomicBool,
    round_trips: AtomicU64,
    interceptor: Interceptor,
}

/// Sees every call's operation name before it runs; `true` fails the call.
type InterceptFn = std::sync::Arc<dyn Fn(&'static str) -> bool + Send + Sync>;

#[derive(Default)]
struct Interceptor(Mutex<Option<InterceptFn>>);

impl Interceptor {
    fn fails(&self, op: &'static str) -> bool {
        let hook = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        hook.is_some_and(|hook| hook(op))
    }
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Interceptor")
    }
}

impl MemoryL2 {
    /// An empty store.
    pub fn new() -> Self {
        MemoryL2::default()
    }

    /// While `true`, every call fails as if Redis timed out.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Calls `hook` with each call's operation name (`"read changes"`, `"ZRANGE"`, ...)
    /// before the call runs; where it returns `true` the call fails as a timeout. A hook can
    /// also move a test's clock, as a reply arriving later would.
    pub fn intercept(&self, hook: impl Fn(&'static str) -> bool + Send + Sync + 'static) {
        *self
            .interceptor
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(std::sync::Arc::new(hook));
    }

    /// Stores raw bytes without a guard, e.g. to plant corrupt data in a test.
    pub fn put_raw(&self, key: &str, bytes: Vec<u8>) {
        self.lock().insert(
            key.to_owned(),
            Entry {
                value: Value::Bytes(bytes),
                expires_at: None,
            },
        );
    }

    /// Stores a counter where a value is expected, to simulate a key of the wrong type.
    pub fn put_wrong_type(&self, key: &str) {
        self.lock().insert(
            key.to_owned(),
            Entry {
                value: Value::Counter(1),
                expires_at: None,
            },
        );
    }

    /// Drops every key, as `FLUSHALL` (or a failover that lost the data) would.
    pub fn flush_all(&self) {
        self.lock().clear();
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.lock()
            .values()
            .filter(|e| e.expires_at.is_none_or(|t| t > now))
            .count()
    }

    /// Whether there are no live keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the round trip and fails if fault injection is on.
    fn call(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, HashMap<String, Entry>>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::SeqCst) || self.interceptor.fails(op) {
            return Err(Error::Timeout {
                op,
                after: Duration::from_millis(50),
            });
        }
        let mut entries = self.lock();
        let now = Instant::now();
        entries.retain(|_, e| e.expires_at.is_none_or(|t| t > now));
        Ok(entries)
    }
}

fn wrong_type(op: &'static str) -> Error {
    Error::WrongType { op }
}

#[async_trait]
impl L2Store for MemoryL2 {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let entries = self.call("GET")?;
        match entries.get(key).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b.clone())),
            Some(_) => Err(wrong_type("GET")),
        }
    }

    async fn mget(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let entries = self.call("MGET")?;
        Ok(keys
            .iter()
            .map(|k| match entries.get(*k).map(|e| &e.value) {
                Some(Value::Bytes(b)) => Some(b.clone()),
                _ => None,
            })
            .collect())
    }

    async fn set_guarded(&self, writes: &[L2Write]) -> Result<Vec<WriteOutcome>> {
        let mut entries = self.call("EVALSHA")?;
        let now = Instant::now();
        Ok(writes
            .iter()
            .map(|w| {
                let cached = match entries.get(&w.key).map(|e| &e.value) {
                    Some(Value::Bytes(b)) => envelope::decode_header(b).ok(),
                    _ => None,
                };
                let refused = cached.is_some_and(|m| {
                    if m.tombstone {
                        w.read_at < m.stored_at
                    } else {
                        m.version > w.version
                    }
                });
                if refused {
                    return WriteOutcome::Refused;
                }
                entries.insert(
                    w.key.clone(),
                    Entry {
                        value: Value::Bytes(w.bytes.clone()),
                        expires_at: Some(now + w.ttl),
                    },
                );
                WriteOutcome::Written
            })
            .collect())
    }

    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let mut entries = self.call("SET NX")?;
        if entries.contains_key(key) {
            return Ok(false);
        }
        entries.insert(
            key.to_owned(),
            Entry {
                value: Value::Bytes(token.as_bytes().to_vec()),
                expires_at: Some(Instant::now() + ttl),
            },
        );
        Ok(true)
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<()> {
        let mut entries = self.call("unlock")?;
        if matches!(entries.get(key).map(|e| &e.value), Some(Value::Bytes(b)) if b == token.as_bytes())
        {
            entries.remove(key);
        }
        Ok(())
    }

    async fn extend_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let mut entries = self.call("extend lock")?;
        match entries.get_mut(key) {
            Some(entry) if matches!(&entry.value, Value::Bytes(b) if b == token.as_bytes()) => {
                entry.expires_at = Some(Instant::now() + ttl);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn publish_changes(&self, log: &str, keys: &[&str], keep: usize) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut entries = self.call("publish changes")?;
        let entry = entries.entry(log.to_owned()).or_insert_with(|| {
            // As in Redis: a new log starts from the clock in microseconds.
            let start = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
            Entry {
                value: Value::Queue(BTreeMap::from([(CHANGE_LOG_FLOOR.to_owned(), start)])),
                expires_at: None,
            }
        });
        let Value::Queue(log) = &mut entry.value else {
            return Err(wrong_type("publish changes"));
        };
        let mut seq = log.values().copied().max().unwrap_or(0);
        for key in keys {
            seq += 1;
            log.insert((*key).to_owned(), seq);
        }
        let excess = log.len().saturating_sub(1 + keep.max(1));
        if excess > 0 {
            let mut by_seq: Vec<(i64, String)> = log
                .iter()
                .filter(|(member, _)| *member != CHANGE_LOG_FLOOR)
                .map(|(member, seq)| (*seq, member.clone()))
                .collect();
            by_seq.sort_unstable();
            for (_, member) in &by_seq[..excess] {
                log.remove(member);
            }
            log.insert(CHANGE_LOG_FLOOR.to_owned(), by_seq[excess - 1].0);
        }
        Ok(())
    }

    async fn change_log_head(&self, log: &str) -> Result<i64> {
        let entries = self.call("change log head")?;
        match entries.get(log).map(|e| &e.value) {
            None => Ok(0),
            Some(Value::Queue(set)) => Ok(set.values().copied().max().unwrap_or(0)),
            Some(_) => Err(wrong_type("change log head")),
        }
    }

    async fn read_changes(
        &self,
        log: &str,
        after: i64,
        limit: usize,
    ) -> Result<Option<Vec<(String, i64)>>> {
        let entries = self.call("read changes")?;
        match entries.get(log).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Queue(set)) if set.values().copied().max().unwrap_or(0) < after => Ok(None),
            Some(Value::Queue(set)) => {
                let mut newer: Vec<(String, i64)> = set
                    .iter()
                    .filter(|(_, seq)| **seq > after)
                    .map(|(key, seq)| (key.clone(), *seq))
                    .collect();
                newer.sort_unstable_by_key(|(_, seq)| *seq);
                newer.truncate(limit.max(1));
                Ok(Some(newer))
            }
            Some(_) => Err(wrong_type("read changes")),
        }
    }

    async fn incr(&self, key: &str) -> Result<u64> {
        let mut entries = self.call("INCR")?;
        let entry = entry_or_new(&mut entries, key, Value::Counter(0));
        match &mut entry.value {
            Value::Counter(n) => {
                *n += 1;
                Ok(*n)
            }
            _ => Err(wrong_type("INCR")),
        }
    }

    async fn counter(&self, key: &str) -> Result<u64> {
        let entries = self.call("GET")?;
        match entries.get(key).map(|e| &e.value) {
            None => Ok(0),
            Some(Value::Counter(n)) => Ok(*n),
            Some(_) => Err(wrong_type("GET")),
        }
    }

    async fn enqueue(&self, queue: &str, members: &[&str], score: i64) -> Result<u64> {
        let mut entries = self.call("ZADD")?;
        let entry = entry_or_new(&mut entries, queue, Value::Queue(BTreeMap::new()));
        let Value::Queue(queued) = &mut entry.value else {
            return Err(wrong_type("ZADD"));
        };
        let mut added = 0;
        for member in members {
            if !queued.contains_key(*member) {
                queued.insert((*member).to_owned(), score);
                added += 1;
            }
        }
        Ok(added)
    }

    async fn peek_queue(&self, queue: &str, max: usize) -> Result<Vec<String>> {
        let entries = self.call("ZRANGE")?;
        match entries.get(queue).map(|e| &e.value) {
            None => Ok(Vec::new()),
            Some(Value::Queue(members)) => {
                let mut by_score: Vec<(&String, &i64)> = members.iter().collect();
                by_score.sort_by_key(|(member, score)| (**score, (*member).clone()));
                Ok(by_score
                    .into_iter()
                    .take(max)
                    .map(|(m, _)| m.clone())
                    .collect())
            }
            Some(_) => Err(wrong_type("ZRANGE")),
        }
    }

    async fn dequeue(&self, queue: &str, members: &[String]) -> Result<()> {
        let mut entries = self.call("ZREM")?;
        if let Some(Value::Queue(queued)) = entries.get_mut(queue).map(|e| &mut e.value) {
            for member in members {
                queued.remove(member);
            }
        }
        Ok(())
    }

    async fn queue_len(&self, queue: &str) -> Result<u64> {
        let entries = self.call("ZCARD")?;
        match entries.get(queue).map(|e| &e.value) {
            Some(Value::Queue(members)) => Ok(members.len() as u64),
            _ => Ok(0),
        }
    }

    async fn zset_add(&self, key: &str, members: &[(String, i64)], only_later: bool) -> Result<()> {
        let mut entries = self.call("ZADD")?;
        let entry = entry_or_new(&mut entries, key, Value::Queue(BTreeMap::new()));
        let Value::Queue(set) = &mut entry.value else {
            return Err(wrong_type("ZADD"));
        };
        for (member, score) in members {
            let current = set.entry(member.clone()).or_insert(*score);
            if !only_later || *score > *current {
                *current = *score;
            }
        }
        Ok(())
    }

    async fn zset_remove(&self, key: &str, members: &[String]) -> Result<()> {
        self.dequeue(key, members).await
    }

    async fn zset_range_by_score(
        &self,
        key: &str,
        min: i64,
        max: i64,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        let entries = self.call("ZRANGEBYSCORE")?;
        match entries.get(key).map(|e| &e.value) {
            None => Ok(Vec::new()),
            Some(Value::Queue(set)) => {
                let mut in_range: Vec<(&String, i64)> = set
                    .iter()
                    .filter(|(_, score)| (min..=max).contains(*score))
                    .map(|(member, score)| (member, *score))
                    .collect();
                in_range.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
                Ok(in_range
                    .into_iter()
                    .skip(offset)
                    .take(limit)
                    .map(|(member, score)| (member.clone(), score))
                    .collect())
            }
            Some(_) => Err(wrong_type("ZRANGEBYSCORE")),
        }
    }

    async fn zset_scan(
        &self,
        key: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(String, i64)>)> {
        let entries = self.call("ZSCAN")?;
        match entries.get(key).map(|e| &e.value) {
            None => Ok((0, Vec::new())),
            Some(Value::Queue(set)) => {
                // The cursor is a position in member order.
                let start = usize::try_from(cursor).unwrap_or(usize::MAX);
                let page: Vec<(String, i64)> = set
                    .iter()
                    .skip(start)
                    .take(count.max(1))
                    .map(|(m, s)| (m.clone(), *s))
                    .collect();
                let next = start + page.len();
                Ok((if next >= set.len() { 0 } else { next as u64 }, page))
            }
            Some(_) => Err(wrong_type("ZSCAN")),
        }
    }

    async fn zset_score(&self, key: &str, member: &str) -> Result<Option<i64>> {
        let entries = self.call("ZSCORE")?;
        match entries.get(key).map(|e| &e.value) {
            None => Ok(None),
            Some(Value::Queue(set)) => Ok(set.get(member).copied()),
            Some(_) => Err(wrong_type("ZSCORE")),
        }
    }

    async fn hash_add(&self, key: &str, increments: &[(String, i64)], ttl: Duration) -> Result<()> {
        let mut entries = self.call("HINCRBY")?;
        let entry = entry_or_new(&mut entries, key, Value::Hash(HashMap::new()));
        entry.expires_at = Some(Instant::now() + ttl);
        let Value::Hash(fields) = &mut entry.value else {
            return Err(wrong_type("HINCRBY"));
        };
        for (field, by) in increments {
            *fields.entry(field.clone()).or_default() += by;
        }
        Ok(())
    }

    async fn hash_get_all(&self, keys: &[String]) -> Result<Vec<HashMap<String, i64>>> {
        let entries = self.call("HGETALL")?;
        Ok(keys
            .iter()
            .map(|k| match entries.get(k).map(|e| &e.value) {
                Some(Value::Hash(fields)) => fields.clone(),
                _ => HashMap::new(),
            })
            .collect())
    }

    async fn hash_update(
        &self,
        key: &str,
        set_if_absent: &[(String, i64)],
        delete: &[String],
        read_back: bool,
    ) -> Result<HashUpdate> {
        let mut entries = self.call("HSETNX")?;
        let entry = entry_or_new(&mut entries, key, Value::Hash(HashMap::new()));
        let Value::Hash(fields) = &mut entry.value else {
            return Err(wrong_type("HSETNX"));
        };
        let mut update = HashUpdate::apply(fields, set_if_absent, delete);
        if !read_back {
            update.hash.clear();
        }
        Ok(update)
    }

    async fn log_append(
        &self,
        key: &str,
        members: &[(String, i64)],
        keep_from: i64,
        ttl: Duration,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        let mut entries = self.call("ZADD")?;
        let entry = entry_or_new(&mut entries, key, Value::Queue(BTreeMap::new()));
        entry.expires_at = Some(Instant::now() + ttl);
        let Value::Queue(set) = &mut entry.value else {
            return Err(wrong_type("ZADD"));
        };
        for (member, score) in members {
            set.insert(member.clone(), *score);
        }
        set.retain(|_, score| *score >= keep_from);
        let mut kept: Vec<(String, i64)> = set.iter().map(|(m, s)| (m.clone(), *s)).collect();
        kept.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
        kept.truncate(limit);
        Ok(kept)
    }

    async fn server_info(&self) -> Result<ServerInfo> {
        let entries = self.call("INFO")?;
        let used: usize = entries
            .values()
            .map(|e| match &e.value {
                Value::Bytes(b) => b.len(),
                _ => 64,
            })
            .sum();
        Ok(ServerInfo {
            nodes: 1,
            used_memory: used as u64,
            used_memory_peak: used as u64,
            maxmemory: 0,
            evicted_keys: 0,
            expired_keys: 0,
            keys: entries.len() as u64,
        })
    }

    async fn ping(&self) -> Result<()> {
        self.call("PING").map(drop)
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }
}
