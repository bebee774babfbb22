//! The L2 port on Redis, standalone or cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use redis::{Pipeline, Script};

use super::slots::SlotOwners;
use super::{HashUpdate, L2Store, L2Write, ServerInfo, WriteOutcome};
use crate::cache::key::hash_slot;
use crate::config::{RedisConfig, RedisMode};
use crate::elasticache::ControlPlane;
use crate::error::{Error, Result};
use crate::redis_conn::RedisConnection;

/// Writes an envelope unless the key holds a newer entity version, or a tombstone newer than
/// the value's read time. Both are read at fixed offsets of a format-1 or -2 envelope (`CC`):
/// flags at byte 4 (tombstone = bit 2), version at bytes 5-12, stored_at at bytes 13-20, all
/// big-endian (Lua strings are 1-based). Anything else in the key (another format, another
/// type, garbage) is overwritten; `pcall` keeps a wrong-type key from failing the script.
/// ARGV: envelope, ttl ms, version, read_at.
const SET_GUARDED: &str = r"
local ok, cur = pcall(redis.call, 'GET', KEYS[1])
if ok and type(cur) == 'string' and #cur >= 20
   and string.byte(cur, 1) == 67 and string.byte(cur, 2) == 67
   and (string.byte(cur, 3) == 1 or string.byte(cur, 3) == 2) then
  if math.floor(string.byte(cur, 4) / 4) % 2 == 1 then
    local invalidated_at = 0
    for i = 13, 20 do invalidated_at = invalidated_at * 256 + string.byte(cur, i) end
    if tonumber(ARGV[4]) < invalidated_at then return 0 end
  else
    local cached = 0
    for i = 5, 12 do cached = cached * 256 + string.byte(cur, i) end
    if cached > tonumber(ARGV[3]) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// The error for a call made before the connection is up.
fn not_connected() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "Redis is not connected"))
}

/// Deletes a lock only if it still holds our token, so a holder whose lock expired cannot
/// release the next holder's lock.
const COMPARE_AND_DELETE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Gives a lock a new TTL only if it still holds our token (a holder whose lock expired and was
/// taken by another must not extend the other's lock).
const COMPARE_AND_PEXPIRE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Appends keys to a change log (see `L2Store::publish_changes`). KEYS[1]: the log; ARGV[1]:
/// keys kept; ARGV[2..]: changed keys. A new log starts from the server's clock in
/// microseconds, above every sequence of a lost log unless that one averaged more than one
/// change per microsecond, and marks everything before it as forgotten. Sequences are passed
/// to ZADD as integer strings: Lua would print a large number with 14 digits.
const PUBLISH_CHANGES: &str = r"
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local seq
if last[2] then
  seq = tonumber(last[2])
else
  local t = redis.call('TIME')
  seq = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('ZADD', KEYS[1], string.format('%d', seq), '~floor')
end
for i = 2, #ARGV do
  seq = seq + 1
  redis.call('ZADD', KEYS[1], string.format('%d', seq), ARGV[i])
end
local excess = redis.call('ZCARD', KEYS[1]) - 1 - tonumber(ARGV[1])
if excess > 0 then
  local cut = redis.call('ZRANGE', KEYS[1], excess, excess, 'WITHSCORES')
  redis.call('ZREMRANGEBYRANK', KEYS[1], 1, excess)
  redis.call('ZADD', KEYS[1], cut[2], '~floor')
end
return 1
";

/// Sets hash fields that are absent and deletes others, atomically (see
/// `L2Store::hash_update`). KEYS[1]: the hash; ARGV[1]: how many fields to set; ARGV[2]: 1 to
/// read the hash back; then each field and value to set; then the fields to delete. Returns
/// each `HSETNX` and `HDEL` answer in order, then the hash (flat field/value pairs; empty
/// unless read back).
const HASH_UPDATE: &str = r"
local n = tonumber(ARGV[1])
local done = {}
for i = 0, n - 1 do
  done[#done + 1] = redis.call('HSETNX', KEYS[1], ARGV[3 + 2 * i], ARGV[4 + 2 * i])
end
for i = 3 + 2 * n, #ARGV do
  done[#done + 1] = redis.call('HDEL', KEYS[1], ARGV[i])
end
if ARGV[2] == '1' then
  done[#done + 1] = redis.call('HGETALL', KEYS[1])
else
  done[#done + 1] = {}
end
return done
";

/// The L2 port on a [`RedisConnection`].
///
/// ## Behavior
/// - On a cluster, multi-key reads and write pipelines are split by hash slot (no command
///   spans slots, so no `CROSSSLOT`) and sent as one pipelined request per node, the nodes
///   concurrently (the slot map comes from `CLUSTER SLOTS`; after a routing error it is read
///   again and the batch goes slot by slot, routed by key); on a standalone server a batch is
///   one round trip.
/// - Scripts run by `EVALSHA`; after a failover or `SCRIPT FLUSH` the first `NOSCRIPT` loads
///   them again and retries once.
/// - Built with [`RedisL2::connect`], it connects in the background: until the connection is
///   up every call fails fast (and the engine reads through to the database), so a cold start
///   never waits on, or fails because of, an unreachable Redis.
#[derive(Debug)]
pub struct RedisL2 {
    conn: RwLock<Option<RedisConnection>>,
    /// How to connect again; `None` for an L2 built over a given connection.
    config: Option<RedisConfig>,
    /// Where to look the endpoint up when `config` names none (`CACHE_NAME` alone).
    control_plane: Option<ControlPlane>,
    /// `config` with the endpoint the control plane gave, once it gave one.
    discovered: std::sync::OnceLock<RedisConfig>,
    /// A reconnect is under way.
    reconnecting: AtomicBool,
    /// This L2 itself, for the reconnect task (set by [`RedisL2::connect`]).
    this: std::sync::OnceLock<Weak<RedisL2>>,
    cluster: bool,
    /// Which node serves which slot (cluster only), read once and again after a routing error.
    /// `Some(None)`: read, but not usable (batches go slot by slot, routed by key).
    owners: RwLock<Option<Option<Arc<SlotOwners>>>>,
    set_script: Script,
    unlock_script: Script,
    extend_script: Script,
    publish_script: Script,
    hash_update_script: Script,
    round_trips: AtomicU64,
}

impl RedisL2 {
    /// An L2 over an established connection.
    pub fn new(conn: RedisConnection) -> Self {
        let l2 = RedisL2::unconnected(conn.is_cluster(), None);
        l2.install(conn);
        l2
    }

    fn install(&self, conn: RedisConnection) {
        *self.conn.write().unwrap_or_else(PoisonError::into_inner) = Some(conn);
    }

    /// Connects in the background, waiting at most `wait` for the first connection (run this
    /// in the init phase so the first request finds Redis ready). Retries with capped backoff
    /// until it succeeds or the returned handle is dropped.
    pub async fn connect(config: RedisConfig, wait: Duration) -> Arc<RedisL2> {
        RedisL2::connect_discovering(config, None, wait).await
    }

    /// [`RedisL2::connect`], looking the endpoint up through `control_plane` first when
    /// `config` names none. Until the control plane gives one (it may refuse, time out, or
    /// the cache may still be creating), the lookup is retried with the connect's backoff
    /// and every call fails fast, as while connecting.
    pub async fn connect_discovering(
        config: RedisConfig,
        control_plane: Option<ControlPlane>,
        wait: Duration,
    ) -> Arc<RedisL2> {
        let mut l2 = RedisL2::unconnected(config.mode == RedisMode::Cluster, Some(config));
        l2.control_plane = control_plane;
        // The first connect is under way: a failing health probe must not start a second.
        l2.reconnecting = AtomicBool::new(true);
        let l2 = Arc::new(l2);
        let _ = l2.this.set(Arc::downgrade(&l2));
        let connecting = tokio::spawn(Self::connect_until_done(Arc::downgrade(&l2)));
        // On timeout the task is detached, not cancelled: it keeps trying.
        let _ = tokio::time::timeout(wait, connecting).await;
        l2
    }

    /// Connects (again) until it succeeds or the L2 is dropped, then installs the connection.
    async fn connect_until_done(weak: Weak<RedisL2>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let Some(l2) = weak.upgrade() else { return };
            let endpoint = l2.endpoint_config().await;
            drop(l2);
            let config = match endpoint {
                Ok(Some(config)) => config,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error.message = %e, "cannot look the cache's endpoint up; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            match RedisConnection::connect(&config).await {
                Ok(conn) => {
                    if let Some(l2) = weak.upgrade() {
                        l2.install(conn);
                        l2.reconnecting.store(false, Ordering::Release);
                        tracing::info!(nodes = ?config.nodes, "connected to Redis");
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(nodes = ?config.nodes, error.message = %e, "cannot connect to Redis; retrying in {backoff:?}");
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// The configuration to connect with: the given one, or, when it names no endpoint, the
    /// one the control plane gives (looked up once). `None` for an L2 over a given connection.
    async fn endpoint_config(&self) -> Result<Option<RedisConfig>> {
        let Some(config) = &self.config else {
            return Ok(None);
        };
        if !config.nodes.is_empty() {
            return Ok(Some(config.clone()));
        }
        if let Some(found) = self.discovered.get() {
            return Ok(Some(found.clone()));
        }
        let Some(control_plane) = &self.control_plane else {
            return Err(Error::ControlPlane {
                reason: "no endpoint configured and no cache name to look one up".into(),
            });
        };
        let info = control_plane.describe().await?;
        let Some(endpoint) = info.endpoint else {
            return Err(Error::ControlPlane {
                reason: format!(
                    "cache `{}` has no endpoint yet ({})",
                    info.name, info.status
                ),
            });
        };
        tracing::info!(cache = %info.name, %endpoint, status = %info.status, "found the cache's endpoint");
        let found = RedisConfig {
            nodes: vec![endpoint],
            ..config.clone()
        };
        Ok(Some(self.discovered.get_or_init(|| found).clone()))
    }

    fn unconnected(cluster: bool, config: Option<RedisConfig>) -> Self {
        RedisL2 {
            conn: RwLock::new(None),
            config,
            control_plane: None,
            discovered: std::sync::OnceLock::new(),
            reconnecting: AtomicBool::new(false),
            this: std::sync::OnceLock::new(),
            cluster,
            owners: RwLock::new(None),
            set_script: Script::new(SET_GUARDED),
            unlock_script: Script::new(COMPARE_AND_DELETE),
            extend_script: Script::new(COMPARE_AND_PEXPIRE),
            publish_script: Script::new(PUBLISH_CHANGES),
            hash_update_script: Script::new(HASH_UPDATE),
            round_trips: AtomicU64::new(0),
        }
    }

    /// The connection, once established, for commands outside the port (stats, health).
    pub fn connection(&self) -> Option<RedisConnection> {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connection for one round trip, or a fast failure while still connecting.
    fn trip(&self) -> Result<RedisConnection> {
        let conn = self.connection().ok_or(Error::NotConnected)?;
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        Ok(conn.clone())
    }

    /// Runs a read, once more if the server had closed the connection (idle past its
    /// `timeout`, `CLIENT KILL`, a failover) while the environment was frozen: the first
    /// command on it only finds out, and the connection manager reconnects for the second.
    /// Reads only: a write whose connection dropped may have been applied.
    async fn read<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        match cmd.query_async(&mut self.trip()?).await {
            Err(e) if e.is_connection_dropped() => {
                tracing::debug!(op, error.message = %e, "Redis had closed the connection; reading again on a new one");
                cmd.query_async(&mut self.trip()?)
                    .await
                    .map_err(|e| Error::redis(op, e))
            }
            result => result.map_err(|e| Error::redis(op, e)),
        }
    }

    /// Groups item indexes by hash slot on a cluster; one group on a standalone server.
    fn slot_groups<'a>(&self, keys: impl Iterator<Item = &'a str>) -> Vec<Vec<usize>> {
        if !self.cluster {
            let all: Vec<usize> = keys.enumerate().map(|(i, _)| i).collect();
            return if all.is_empty() {
                Vec::new()
            } else {
                vec![all]
            };
        }
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.enumerate() {
            groups.entry(hash_slot(key.as_bytes())).or_default().push(i);
        }
        groups.into_values().collect()
    }

    /// The cluster's slot map, read with `CLUSTER SLOTS` the first time (not counted as a
    /// round trip of the port's calls); `None` on a standalone server or if it cannot be read.
    async fn owners(&self) -> Option<Arc<SlotOwners>> {
        if !self.cluster {
            return None;
        }
        if let Some(known) = self
            .owners
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
        {
            return known;
        }
        let mut conn = self.connection()?;
        let reply: redis::Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .ok()?;
        let owners = SlotOwners::parse(&reply).map(Arc::new);
        if owners.is_none() {
            tracing::warn!("CLUSTER SLOTS names no usable endpoints; batches go slot by slot");
        }
        *self.owners.write().unwrap_or_else(PoisonError::into_inner) = Some(owners.clone());
        owners
    }

    /// Forgets the slot map (a node answered with a routing error: slots moved).
    fn forget_owners(&self) {
        *self.owners.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Item indexes in batches of one request each: per node on a cluster whose slot map is
    /// known (each slot's items together, as one command may not span slots), one batch on a
    /// standalone server. `None` for the node: routed by key, one slot group per batch.
    async fn batches<'a>(
        &self,
        keys: impl Iterator<Item = &'a str> + Clone,
    ) -> Vec<(Option<(String, u16)>, Vec<Vec<usize>>)> {
        let groups = self.slot_groups(keys.clone());
        let owners = self.owners().await;
        let Some(owners) = owners else {
            return groups.into_iter().map(|g| (None, vec![g])).collect();
        };
        let keys: Vec<&str> = keys.collect();
        let mut by_node: BTreeMap<usize, Vec<Vec<usize>>> = BTreeMap::new();
        let mut unrouted = Vec::new();
        for group in groups {
            match owners.owner(hash_slot(keys[group[0]].as_bytes())) {
                Some(node) => by_node.entry(node).or_default().push(group),
                None => unrouted.push((None, vec![group])),
            }
        }
        by_node
            .into_iter()
            .map(|(node, groups)| (Some(owners.node(node).clone()), groups))
            .chain(unrouted)
            .collect()
    }

    /// Sends `pipe` (`count` commands) as one request to `node` (or routed by its key when
    /// `None`), and reads each reply as a `T`.
    async fn pipeline<T: redis::FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &Pipeline,
        count: usize,
        node: Option<&(String, u16)>,
    ) -> std::result::Result<Vec<T>, redis::RedisError> {
        let Some((host, port)) = node else {
            let mut conn = self.trip().map_err(|_| not_connected())?;
            return pipe.query_async(&mut conn).await;
        };
        let conn = self.trip().map_err(|_| not_connected())?;
        let replies = conn.pipeline_to_node(pipe, count, host, *port).await?;
        let read: std::result::Result<Vec<T>, redis::RedisError> = replies
            .into_iter()
            .map(|reply| Ok(redis::from_redis_value(reply.extract_error()?)?))
            .collect();
        if let Err(e) = &read {
            tracing::debug!(op, error.message = %e, "a node-routed pipeline failed");
        }
        read
    }

    async fn run_guarded_pipeline(
        &self,
        writes: &[&L2Write],
        node: Option<&(String, u16)>,
    ) -> Result<Vec<WriteOutcome>> {
        let mut pipe = Pipeline::with_capacity(writes.len());
        for w in writes {
            let ttl_ms = u64::try_from(w.ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            pipe.cmd("EVALSHA")
                .arg(self.set_script.get_hash())
                .arg(1)
                .arg(&w.key)
                .arg(&w.bytes)
                .arg(ttl_ms)
                .arg(w.version)
                .arg(w.read_at);
        }
        let result: redis::RedisResult<Vec<i64>> =
            self.pipeline("EVALSHA", &pipe, writes.len(), node).await;
        let written = match result {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // A failover or a SCRIPT FLUSH emptied the script cache: load the script (on
                // every node of a cluster), then send the whole pipeline again. Each write is
                // a guarded SET, so the writes that ran before the error run again harmlessly.
                self.set_script
                    .load_async(&mut self.trip()?)
                    .await
                    .map_err(|e| Error::redis("SCRIPT LOAD", e))?;
                self.pipeline("EVALSHA", &pipe, writes.len(), node)
                    .await
                    .map_err(|e| Error::redis("EVALSHA", e))?
            }
            other => other.map_err(|e| Error::redis("EVALSHA", e))?,
        };
        Ok(written
            .into_iter()
            .map(|w| {
                if w == 1 {
                    WriteOutcome::Written
                } else {
                    WriteOutcome::Refused
                }
            })
            .collect())
    }
}

#[async_trait]
impl L2Store for RedisL2 {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.read("GET", redis::cmd("GET").arg(key)).await
    }

    async fn mget(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let batches = self.batches(keys.iter().copied()).await;
        let mget = |group: &[usize]| {
            let mut cmd = redis::cmd("MGET");
            for &i in group {
                cmd.arg(keys[i]);
            }
            cmd
        };
        let reads = batches.iter().map(|(node, groups)| async move {
            let by_group: Vec<Vec<Option<Vec<u8>>>> = match node {
                None => vec![self.read("MGET", &mget(&groups[0])).await?],
                Some(node) => {
                    let mut pipe = Pipeline::with_capacity(groups.len());
                    for group in groups {
                        pipe.add_command(mget(group));
                    }
                    match self.pipeline("MGET", &pipe, groups.len(), Some(node)).await {
                        Ok(values) => values,
                        Err(_) => {
                            // Slots moved (or the node went): route each slot's read by key.
                            self.forget_owners();
                            let each = groups.iter().map(|g| {
                                let cmd = mget(g);
                                async move { self.read("MGET", &cmd).await }
                            });
                            futures::future::try_join_all(each).await?
                        }
                    }
                }
            };
            Ok::<_, Error>(
                groups
                    .iter()
                    .zip(by_group)
                    .flat_map(|(group, values)| group.iter().copied().zip(values))
                    .collect::<Vec<_>>(),
            )
        });
        let mut out = vec![None; keys.len()];
        for pairs in futures::future::try_join_all(reads).await? {
            for (i, value) in pairs {
                out[i] = value;
            }
        }
        Ok(out)
    }

    async fn set_guarded(&self, writes: &[L2Write]) -> Result<Vec<WriteOutcome>> {
        let batches = self.batches(writes.iter().map(|w| w.key.as_str())).await;
        let pipelines = batches.iter().map(|(node, groups)| async move {
            let indexes: Vec<usize> = groups.iter().flatten().copied().collect();
            let batch: Vec<&L2Write> = indexes.iter().map(|&i| &writes[i]).collect();
            let outcomes = match self.run_guarded_pipeline(&batch, node.as_ref()).await {
                Err(_) if node.is_some() => {
                    // Slots moved (or the node went): each slot's writes routed by key. A
                    // guarded write that already ran runs again harmlessly.
                    self.forget_owners();
                    let mut outcomes = Vec::with_capacity(batch.len());
                    for group in groups {
                        let slot: Vec<&L2Write> = group.iter().map(|&i| &writes[i]).collect();
                        outcomes.extend(self.run_guarded_pipeline(&slot, None).await?);
                    }
                    outcomes
                }
                other => other?,
            };
            Ok::<_, Error>(indexes.into_iter().zip(outcomes).collect::<Vec<_>>())
        });
        let mut out = vec![WriteOutcome::Written; writes.len()];
        for pairs in futures::future::try_join_all(pipelines).await? {
            for (i, outcome) in pairs {
                out[i] = outcome;
            }
        }
        Ok(out)
    }

    async fn try_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        let reply: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("SET NX", e))?;
        Ok(reply.is_some())
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<()> {
        self.unlock_script
            .key(key)
            .arg(token)
            .invoke_async::<i64>(&mut self.trip()?)
            .await
            .map(drop)
            .map_err(|e| Error::redis("unlock", e))
    }

    async fn extend_lock(&self, key: &str, token: &str, ttl: Duration) -> Result<bool> {
        self.extend_script
            .key(key)
            .arg(token)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .invoke_async::<i64>(&mut self.trip()?)
            .await
            .map(|extended| extended == 1)
            .map_err(|e| Error::redis("extend lock", e))
    }

    async fn publish_changes(&self, log: &str, keys: &[&str], keep: usize) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut invocation = self.publish_script.key(log);
        invocation.arg(keep.max(1));
        for key in keys {
            invocation.arg(*key);
        }
        invocation
            .invoke_async::<i64>(&mut self.trip()?)
            .await
            .map(drop)
            .map_err(|e| Error::redis("publish changes", e))
    }

    async fn change_log_head(&self, log: &str) -> Result<i64> {
        let last: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(log)
            .arg(-1)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("ZRANGE", e))?;
        #[allow(clippy::cast_possible_truncation)] // sequences are integers below 2^53
        Ok(last.first().map_or(0, |(_, score)| *score as i64))
    }

    async fn read_changes(
        &self,
        log: &str,
        after: i64,
        limit: usize,
    ) -> Result<Option<Vec<(String, i64)>>> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(log)
            .arg(-1)
            .arg(-1)
            .arg("WITHSCORES");
        pipe.cmd("ZRANGE")
            .arg(log)
            .arg(format!("({after}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(0)
            .arg(limit.max(1))
            .arg("WITHSCORES");
        // Read again once if the connection was closed while frozen, as `read` does: the
        // first poll after a thaw is exactly that case.
        let (head, entries): (Vec<(String, f64)>, Vec<(String, f64)>) =
            match pipe.query_async(&mut self.trip()?).await {
                Err(e) if e.is_connection_dropped() => pipe.query_async(&mut self.trip()?).await,
                result => result,
            }
            .map_err(|e| Error::redis("read changes", e))?;
        // An empty head: no log. A head behind the reader: the log was lost and begun again.
        let exists = head.first().is_some_and(|(_, seq)| *seq >= after as f64);
        #[allow(clippy::cast_possible_truncation)] // sequences are integers below 2^53
        Ok(exists.then(|| {
            entries
                .into_iter()
                .map(|(key, seq)| (key, seq as i64))
                .collect()
        }))
    }

    async fn incr(&self, key: &str) -> Result<u64> {
        redis::cmd("INCR")
            .arg(key)
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("INCR", e))
    }

    async fn counter(&self, key: &str) -> Result<u64> {
        let value: Option<u64> = redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("GET", e))?;
        Ok(value.unwrap_or(0))
    }

    async fn enqueue(&self, queue: &str, members: &[&str], score: i64) -> Result<u64> {
        if members.is_empty() {
            return Ok(0);
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(queue).arg("NX");
        for member in members {
            cmd.arg(score).arg(*member);
        }
        cmd.query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("ZADD", e))
    }

    async fn peek_queue(&self, queue: &str, max: usize) -> Result<Vec<String>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        redis::cmd("ZRANGE")
            .arg(queue)
            .arg(0)
            .arg(max - 1)
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("ZRANGE", e))
    }

    async fn dequeue(&self, queue: &str, members: &[String]) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        redis::cmd("ZREM")
            .arg(queue)
            .arg(members)
            .query_async::<i64>(&mut self.trip()?)
            .await
            .map(drop)
            .map_err(|e| Error::redis("ZREM", e))
    }

    async fn queue_len(&self, queue: &str) -> Result<u64> {
        redis::cmd("ZCARD")
            .arg(queue)
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("ZCARD", e))
    }

    async fn zset_add(&self, key: &str, members: &[(String, i64)], only_later: bool) -> Result<()> {
        if members.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(key);
        if only_later {
            cmd.arg("GT");
        }
        for (member, score) in members {
            cmd.arg(*score).arg(member);
        }
        cmd.query_async::<i64>(&mut self.trip()?)
            .await
            .map(drop)
            .map_err(|e| Error::redis("ZADD", e))
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
        if limit == 0 {
            return Ok(Vec::new());
        }
        let bound = |v: i64, unbounded: i64, inf: &str| {
            if v == unbounded {
                inf.to_owned()
            } else {
                v.to_string()
            }
        };
        let pairs: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(key)
            .arg(bound(min, i64::MIN, "-inf"))
            .arg(bound(max, i64::MAX, "+inf"))
            .arg("BYSCORE")
            .arg("LIMIT")
            .arg(offset)
            .arg(limit)
            .arg("WITHSCORES")
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("ZRANGE", e))?;
        // Scores are doubles; epoch milliseconds (below 2^53) round-trip exactly.
        #[allow(clippy::cast_possible_truncation)]
        Ok(pairs.into_iter().map(|(m, s)| (m, s as i64)).collect())
    }

    async fn zset_scan(
        &self,
        key: &str,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<(String, i64)>)> {
        let (next, flat): (u64, Vec<(String, f64)>) = redis::cmd("ZSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(count.max(1))
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("ZSCAN", e))?;
        #[allow(clippy::cast_possible_truncation)]
        Ok((next, flat.into_iter().map(|(m, s)| (m, s as i64)).collect()))
    }

    async fn zset_score(&self, key: &str, member: &str) -> Result<Option<i64>> {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(key)
            .arg(member)
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("ZSCORE", e))?;
        #[allow(clippy::cast_possible_truncation)]
        Ok(score.map(|s| s as i64))
    }

    async fn hash_add(&self, key: &str, increments: &[(String, i64)], ttl: Duration) -> Result<()> {
        if increments.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (field, by) in increments {
            pipe.cmd("HINCRBY").arg(key).arg(field).arg(*by).ignore();
        }
        pipe.cmd("PEXPIRE")
            .arg(key)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .ignore();
        pipe.query_async::<()>(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("HINCRBY", e))
    }

    async fn hash_get_all(&self, keys: &[String]) -> Result<Vec<HashMap<String, i64>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("HGETALL").arg(key);
        }
        let hashes: Vec<HashMap<String, String>> = pipe
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("HGETALL", e))?;
        Ok(hashes.into_iter().map(numeric_fields).collect())
    }

    async fn hash_update(
        &self,
        key: &str,
        set_if_absent: &[(String, i64)],
        delete: &[String],
        read_back: bool,
    ) -> Result<HashUpdate> {
        // One script, so no other update interleaves: each field's change is seen by exactly
        // one of several racing updates, and a field and its companion move together.
        let mut invocation = self.hash_update_script.key(key);
        invocation.arg(set_if_absent.len()).arg(u8::from(read_back));
        for (field, value) in set_if_absent {
            invocation.arg(field).arg(*value);
        }
        for field in delete {
            invocation.arg(field);
        }
        let failed = |e: redis::RedisError| Error::redis("hash update", e);
        let mut replies: Vec<redis::Value> = invocation
            .invoke_async(&mut self.trip()?)
            .await
            .map_err(failed)?;
        let flat: Vec<String> = replies
            .pop()
            .map(redis::from_redis_value::<Vec<String>>)
            .transpose()
            .map_err(|e| failed(e.into()))?
            .unwrap_or_default();
        let hash = flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        let mut done = replies
            .into_iter()
            .map(|reply| redis::from_redis_value::<i64>(reply).map(|n| n == 1))
            .collect::<std::result::Result<Vec<bool>, _>>()
            .map_err(|e| failed(e.into()))?;
        let deleted = done.split_off(set_if_absent.len().min(done.len()));
        Ok(HashUpdate {
            set: done,
            deleted,
            hash: numeric_fields(hash),
        })
    }

    async fn log_append(
        &self,
        key: &str,
        members: &[(String, i64)],
        keep_from: i64,
        ttl: Duration,
        limit: usize,
    ) -> Result<Vec<(String, i64)>> {
        let mut pipe = redis::pipe();
        if !members.is_empty() {
            let add = pipe.cmd("ZADD").arg(key);
            for (member, score) in members {
                add.arg(*score).arg(member);
            }
            add.ignore();
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(key)
            .arg("-inf")
            .arg(format!("({keep_from}"))
            .ignore();
        pipe.cmd("PEXPIRE")
            .arg(key)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .ignore();
        pipe.cmd("ZRANGE")
            .arg(key)
            .arg("+inf")
            .arg(keep_from)
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .arg("WITHSCORES");
        let (kept,): (Vec<(String, f64)>,) = pipe
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("ZADD", e))?;
        // Scores are doubles; epoch milliseconds (below 2^53) round-trip exactly.
        #[allow(clippy::cast_possible_truncation)]
        Ok(kept.into_iter().map(|(m, s)| (m, s as i64)).collect())
    }

    async fn server_info(&self) -> Result<ServerInfo> {
        let mut conn = self.trip()?;
        // A cluster answers INFO with one text per primary; a standalone server with one text.
        let info: redis::Value = redis::cmd("INFO")
            .arg("memory")
            .arg("stats")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::redis("INFO", e))?;
        let mut summary = ServerInfo::default();
        for text in info_texts(info) {
            summary.add_info_text(&text);
        }
        summary.keys = redis::cmd("DBSIZE")
            .query_async(&mut self.trip()?)
            .await
            .map_err(|e| Error::redis("DBSIZE", e))?;
        Ok(summary)
    }

    async fn ping(&self) -> Result<()> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.trip()?)
            .await
            .map(drop)
            .map_err(|e| Error::redis("PING", e))
    }

    fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    fn reconnect(&self) {
        let Some(this) = self.this.get().cloned() else {
            return; // built over a given connection: nothing to reconnect with
        };
        if self.reconnecting.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!("Redis health probes keep failing on this connection; reconnecting");
        tokio::spawn(Self::connect_until_done(this));
    }
}

fn numeric_fields(hash: HashMap<String, String>) -> HashMap<String, i64> {
    hash.into_iter()
        .filter_map(|(field, value)| Some((field, value.parse().ok()?)))
        .collect()
}

/// The INFO text of every node in a reply.
fn info_texts(value: redis::Value) -> Vec<String> {
    match value {
        redis::Value::Map(entries) => entries
            .into_iter()
            .flat_map(|(_, v)| info_texts(v))
            .collect(),
        other => redis::from_redis_value::<String>(other)
            .into_iter()
            .collect(),
    }
}
