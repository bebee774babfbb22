//! Typed configuration read once from the environment at cold start.
//!
//! Every variable is parsed here so a typo fails the init phase with the variable's name,
//! instead of surfacing as a confusing error on the first request.

use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// Why the configuration could not be built. Always names the variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set (or is empty).
    #[error("environment variable {name} is required but not set")]
    Missing {
        /// The variable's name.
        name: &'static str,
    },
    /// A variable is set but cannot be used.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        name: &'static str,
        /// What is wrong with it (never the value of a secret).
        reason: String,
    },
}

/// All settings a function needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// DynamoDB table names.
    pub tables: TableNames,
    /// DynamoDB client settings.
    pub dynamodb: DynamoConfig,
    /// Redis (L2) settings; `None` runs without L2 (embedded dev mode, or L1 only).
    pub redis: Option<RedisConfig>,
    /// Cache engine settings.
    pub cache: CacheConfig,
    /// Bearer token of the admin API (`ADMIN_TOKEN`); admin routes refuse every request without it.
    pub admin_token: Option<SecretString>,
    /// Bearer token of product and offer writes (`WRITE_TOKEN`), distinct from the admin
    /// token; write routes refuse every request without it.
    pub write_token: Option<SecretString>,
    /// Scheduled job settings.
    pub jobs: JobsConfig,
    /// How old served data may be, per cache category, before health warns.
    pub freshness: FreshnessObjectives,
    /// How long raised and cleared alerts stay in the health report's history
    /// (`ALERT_HISTORY_SECS`, default 86,400).
    pub alert_history: Duration,
}

/// The freshness objective of each cache category: health turns WARNING when the p99 age of
/// the data a category served over the last 5 minutes exceeds it, and CRITICAL past twice it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreshnessObjectives {
    /// Product details and summaries (`FRESHNESS_OBJECTIVE_PRODUCT_SECS`, default 900).
    pub product: Duration,
    /// Product stats (`FRESHNESS_OBJECTIVE_STATS_SECS`, default 900).
    pub stats: Duration,
    /// Feed pages (`FRESHNESS_OBJECTIVE_FEED_SECS`, default 900).
    pub feed: Duration,
}

impl Default for FreshnessObjectives {
    fn default() -> Self {
        let fifteen_minutes = Duration::from_secs(900);
        FreshnessObjectives {
            product: fifteen_minutes,
            stats: fifteen_minutes,
            feed: fifteen_minutes,
        }
    }
}

impl FreshnessObjectives {
    /// `(category, objective)` pairs, as the traffic breakdown names the categories.
    pub fn by_category(&self) -> [(&'static str, Duration); 3] {
        [
            ("product", self.product),
            ("stats", self.stats),
            ("feed", self.feed),
        ]
    }
}

/// Scheduled job settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobsConfig {
    /// How often the refresh job runs (`REFRESH_INTERVAL_SECS`, default 900); health warns when
    /// it has not succeeded for twice this.
    pub refresh_interval: Duration,
    /// Products refreshed at once (`REFRESH_CONCURRENCY`, default 16).
    pub refresh_concurrency: usize,
    /// How often the offer-expiry job runs (`OFFER_EXPIRY_INTERVAL_SECS`, default 60); health
    /// warns when it has not succeeded for three times this.
    pub expiry_interval: Duration,
    /// Conditional expiry writes in flight at once (`OFFER_EXPIRY_CONCURRENCY`, default 128).
    pub expiry_concurrency: usize,
    /// How often the Redis expiry set is reconciled with the index at least
    /// (`OFFER_RECONCILE_INTERVAL_SECS`, default 3600).
    pub expiry_reconcile_interval: Duration,
    /// Counter updates in flight when the view-aggregator writes a window
    /// (`VIEW_WRITE_CONCURRENCY`, default 32).
    pub view_write_concurrency: usize,
    /// Products whose stats the view-aggregator recomputes after a window, most viewed first
    /// (`VIEW_STATS_REFRESH_MAX`, default 100; 0 leaves it to the refresh job).
    pub view_stats_refresh_max: usize,
    /// The view-aggregator's tumbling window (`VIEW_WINDOW_SECS`, default 900, the template's
    /// `TumblingWindowInSeconds`): when `/admin/jobs` expects its next window.
    pub view_window: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            refresh_interval: Duration::from_secs(900),
            refresh_concurrency: 16,
            expiry_interval: Duration::from_secs(60),
            expiry_concurrency: 128,
            expiry_reconcile_interval: Duration::from_secs(3600),
            view_write_concurrency: 32,
            view_stats_refresh_max: 100,
            view_window: Duration::from_secs(900),
        }
    }
}

/// Names of the three tables (see the design's data model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    /// Products and offers (`CATALOG_TABLE`).
    pub catalog: String,
    /// One item per view event (`VIEWS_TABLE`).
    pub views: String,
    /// Counters, aggregates, feeds, checkpoints and job metadata (`STATS_TABLE`).
    pub stats: String,
}

/// DynamoDB client settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamoConfig {
    /// Endpoint override (`DYNAMODB_ENDPOINT`), e.g. a local `moto_server`; `None` in AWS.
    pub endpoint: Option<String>,
    /// Deadline for one DynamoDB operation including SDK retries (`DYNAMODB_TIMEOUT_MS`, default 3000).
    pub operation_timeout: Duration,
}

/// How to reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// One primary (a local `redis-server`, or a non-cluster replication group).
    Standalone,
    /// Redis Cluster (ElastiCache Serverless is always cluster mode).
    Cluster,
}

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `host:port` seed nodes (`REDIS_ENDPOINTS`, comma-separated). Empty when the endpoint
    /// is to be discovered from [`RedisConfig::cache_name`] at cold start.
    pub nodes: Vec<String>,
    /// The ElastiCache Serverless cache (`CACHE_NAME`): its endpoint is looked up at cold
    /// start when `REDIS_ENDPOINTS` is not set, and `/admin/cache/stats` reports its status
    /// and usage limits.
    pub cache_name: Option<String>,
    /// Standalone or cluster (`REDIS_MODE`, default `standalone`; `cluster` with `CACHE_NAME`
    /// alone, as a serverless cache always is).
    pub mode: RedisMode,
    /// Connect with TLS (`REDIS_TLS`, default `false`; `true` with `CACHE_NAME` alone, as
    /// ElastiCache Serverless requires).
    pub tls: bool,
    /// PEM certificates of the CA that signed the server's certificate (`REDIS_CA_FILE`),
    /// read at start-up; `None` trusts the system's roots (`SSL_CERT_FILE`, or the usual
    /// certificate folders), which include ElastiCache's.
    pub ca_pem: Option<std::sync::Arc<Vec<u8>>>,
    /// ACL user (`REDIS_USERNAME`), if any.
    pub username: Option<String>,
    /// ACL password or auth token (`REDIS_PASSWORD`), if any.
    pub password: Option<SecretString>,
    /// Per-command response timeout (`REDIS_TIMEOUT_MS`, default 50). Tight on purpose:
    /// a slow cache must cost less than the database read it is meant to save.
    pub command_timeout: Duration,
    /// Timeout for establishing a connection (`REDIS_CONNECT_TIMEOUT_MS`, default 1000).
    pub connect_timeout: Duration,
    /// IAM authentication (`REDIS_IAM_USER`, `REDIS_IAM_CACHE_NAME` default `CACHE_NAME`,
    /// `REDIS_IAM_SERVERLESS` default `true`, region from `AWS_REGION`): the password is a SigV4 token signed with
    /// the function's own credentials and renewed (see [`crate::redis_iam`]). Excludes
    /// `REDIS_PASSWORD`.
    pub iam: Option<crate::redis_iam::IamAuth>,
}

/// Fresh and stale lifetimes of one data category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl {
    /// How long an entry is served without revalidation.
    pub fresh: Duration,
    /// How long after `fresh` it may still be served while it is revalidated.
    pub stale: Duration,
}

/// TTLs per data category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CategoryTtls {
    /// Product with its offers (`CACHE_TTL_PRODUCT_SECS` default 300, `CACHE_STALE_PRODUCT_SECS` default 3600).
    pub product: Ttl,
    /// Period view stats (`CACHE_TTL_STATS_SECS` default 900, `CACHE_STALE_STATS_SECS` default 3600).
    pub stats: Ttl,
    /// Ranked feeds (`CACHE_TTL_FEED_SECS` default 900, `CACHE_STALE_FEED_SECS` default 1800).
    pub feed: Ttl,
    /// Cached "not found" (`CACHE_TTL_NEGATIVE_SECS`, default 30).
    pub negative: Duration,
}

/// Cache engine settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Prefix of every Redis key (`CACHE_KEY_PREFIX`, default `cc:v2:`); tests give each run its own.
    pub key_prefix: String,
    /// Upper bound of the in-process L1, in bytes (`L1_MAX_BYTES`, default 32 MiB).
    pub l1_max_bytes: u64,
    /// How long an L1 entry lives (`L1_TTL_SECS`, default 5).
    pub l1_ttl: Duration,
    /// Longest an environment serves from L1 a value another environment changed
    /// (`L1_COHERENCE_MS`, default 1000): each polls the change log when it last did longer
    /// ago than a quarter of this, and serves nothing older than this unchecked. 0 turns
    /// polling off: entries live their TTL.
    pub l1_coherence: Duration,
    /// Payloads larger than this are zstd-compressed (`CACHE_COMPRESS_THRESHOLD_BYTES`, default 1024).
    pub compress_threshold: usize,
    /// TTLs per category.
    pub ttl: CategoryTtls,
    /// Longest a cache load may take (`CACHE_LOAD_TIMEOUT_MS`, default 9000: three DynamoDB
    /// operations); an invalidation's tombstone outlives it, so no load that began before an
    /// invalidation can write its old value back.
    pub load_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            key_prefix: "cc:v2:".to_owned(),
            l1_max_bytes: 32 * 1024 * 1024,
            l1_ttl: Duration::from_secs(5),
            l1_coherence: Duration::from_secs(1),
            compress_threshold: 1024,
            ttl: CategoryTtls {
                product: Ttl {
                    fresh: Duration::from_secs(300),
                    stale: Duration::from_secs(3600),
                },
                stats: Ttl {
                    fresh: Duration::from_secs(900),
                    stale: Duration::from_secs(3600),
                },
                feed: Ttl {
                    fresh: Duration::from_secs(900),
                    stale: Duration::from_secs(1800),
                },
                negative: Duration::from_secs(30),
            },
            load_timeout: Duration::from_secs(9),
        }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let env = Env(&lookup);
        let defaults = CacheConfig::default();
        let ttl = &defaults.ttl;
        Ok(Config {
            tables: TableNames {
                catalog: env.table("CATALOG_TABLE")?,
                views: env.table("VIEWS_TABLE")?,
                stats: env.table("STATS_TABLE")?,
            },
            dynamodb: DynamoConfig {
                endpoint: env.optional("DYNAMODB_ENDPOINT"),
                operation_timeout: env.millis_in("DYNAMODB_TIMEOUT_MS", 3000, 100..=60_000)?,
            },
            redis: RedisConfig::from_env(&env)?,
            cache: CacheConfig {
                key_prefix: env.key_prefix("CACHE_KEY_PREFIX", &defaults.key_prefix)?,
                l1_max_bytes: env.number_in("L1_MAX_BYTES", defaults.l1_max_bytes, 0..=4 << 30)?,
                l1_ttl: env.secs_in("L1_TTL_SECS", defaults.l1_ttl, 0..=3600)?,
                l1_coherence: env.millis_in("L1_COHERENCE_MS", 1000, 0..=60_000)?,
                compress_threshold: env.number_in(
                    "CACHE_COMPRESS_THRESHOLD_BYTES",
                    defaults.compress_threshold,
                    0..=1 << 20,
                )?,
                ttl: CategoryTtls {
                    product: env.ttl(
                        ["CACHE_TTL_PRODUCT_SECS", "CACHE_STALE_PRODUCT_SECS"],
                        ttl.product,
                    )?,
                    stats: env.ttl(
                        ["CACHE_TTL_STATS_SECS", "CACHE_STALE_STATS_SECS"],
                        ttl.stats,
                    )?,
                    feed: env.ttl(["CACHE_TTL_FEED_SECS", "CACHE_STALE_FEED_SECS"], ttl.feed)?,
                    negative: env.secs_in("CACHE_TTL_NEGATIVE_SECS", ttl.negative, 1..=3600)?,
                },
                load_timeout: {
                    let load = env.millis_in("CACHE_LOAD_TIMEOUT_MS", 9000, 100..=120_000)?;
                    let operation = env.millis_in("DYNAMODB_TIMEOUT_MS", 3000, 100..=60_000)?;
                    if load < operation {
                        return Err(ConfigError::Invalid {
                            name: "CACHE_LOAD_TIMEOUT_MS",
                            reason: format!(
                                "must be at least DYNAMODB_TIMEOUT_MS ({} ms): a load makes at least one operation",
                                operation.as_millis()
                            ),
                        });
                    }
                    load
                },
            },
            admin_token: env.optional("ADMIN_TOKEN").map(SecretString::from),
            write_token: {
                let write = env.optional("WRITE_TOKEN");
                if write.is_some() && write == env.optional("ADMIN_TOKEN") {
                    // One leaked credential must not give both writes and admin.
                    return Err(ConfigError::Invalid {
                        name: "WRITE_TOKEN",
                        reason: "must differ from ADMIN_TOKEN".into(),
                    });
                }
                write.map(SecretString::from)
            },
            jobs: {
                let defaults = JobsConfig::default();
                JobsConfig {
                    refresh_interval: env.secs_in(
                        "REFRESH_INTERVAL_SECS",
                        defaults.refresh_interval,
                        10..=86_400,
                    )?,
                    refresh_concurrency: env
                        .at_least_one("REFRESH_CONCURRENCY", defaults.refresh_concurrency)?,
                    expiry_interval: env.secs_in(
                        "OFFER_EXPIRY_INTERVAL_SECS",
                        defaults.expiry_interval,
                        1..=3600,
                    )?,
                    expiry_concurrency: env
                        .at_least_one("OFFER_EXPIRY_CONCURRENCY", defaults.expiry_concurrency)?,
                    expiry_reconcile_interval: env.secs_in(
                        "OFFER_RECONCILE_INTERVAL_SECS",
                        defaults.expiry_reconcile_interval,
                        60..=86_400,
                    )?,
                    view_write_concurrency: env
                        .at_least_one("VIEW_WRITE_CONCURRENCY", defaults.view_write_concurrency)?,
                    view_stats_refresh_max: env.number_in(
                        "VIEW_STATS_REFRESH_MAX",
                        defaults.view_stats_refresh_max,
                        0..=10_000,
                    )?,
                    view_window: env.secs_in("VIEW_WINDOW_SECS", defaults.view_window, 1..=900)?,
                }
            },
            alert_history: env.secs_in(
                "ALERT_HISTORY_SECS",
                Duration::from_secs(86_400),
                60..=2_592_000,
            )?,
            freshness: {
                let defaults = FreshnessObjectives::default();
                FreshnessObjectives {
                    product: env.secs_in(
                        "FRESHNESS_OBJECTIVE_PRODUCT_SECS",
                        defaults.product,
                        1..=604_800,
                    )?,
                    stats: env.secs_in(
                        "FRESHNESS_OBJECTIVE_STATS_SECS",
                        defaults.stats,
                        1..=604_800,
                    )?,
                    feed: env.secs_in(
                        "FRESHNESS_OBJECTIVE_FEED_SECS",
                        defaults.feed,
                        1..=604_800,
                    )?,
                }
            },
        })
    }
}

impl RedisConfig {
    /// A standalone, plain-text configuration for `nodes` with default timeouts.
    pub fn standalone(node: impl Into<String>) -> RedisConfig {
        RedisConfig {
            nodes: vec![node.into()],
            cache_name: None,
            mode: RedisMode::Standalone,
            tls: false,
            ca_pem: None,
            username: None,
            password: None,
            command_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(1000),
            iam: None,
        }
    }

    fn from_env(env: &Env<'_>) -> Result<Option<RedisConfig>, ConfigError> {
        let cache_name = env.optional("CACHE_NAME");
        let endpoints = env.optional("REDIS_ENDPOINTS");
        if endpoints.is_none() && cache_name.is_none() {
            return Ok(None);
        }
        // Without endpoints the cache is an ElastiCache Serverless one, found by name:
        // always a cluster, always TLS.
        let discovered = endpoints.is_none();
        let nodes = endpoints
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| validate_host_port(n).map(|()| n.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| ConfigError::Invalid {
                name: "REDIS_ENDPOINTS",
                reason,
            })?;
        let mode = match env.optional("REDIS_MODE").as_deref() {
            None if discovered => RedisMode::Cluster,
            None | Some("standalone") => RedisMode::Standalone,
            Some("cluster") => RedisMode::Cluster,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "REDIS_MODE",
                    reason: format!("expected `standalone` or `cluster`, got `{other}`"),
                });
            }
        };
        if !discovered && nodes.is_empty() {
            return Err(ConfigError::Invalid {
                name: "REDIS_ENDPOINTS",
                reason: "names no endpoint".into(),
            });
        }
        if !discovered && mode == RedisMode::Standalone && nodes.len() != 1 {
            return Err(ConfigError::Invalid {
                name: "REDIS_ENDPOINTS",
                reason: format!(
                    "standalone mode takes exactly one endpoint, got {}",
                    nodes.len()
                ),
            });
        }
        let tls = env.flag("REDIS_TLS", discovered)?;
        let ca_pem = match env.optional("REDIS_CA_FILE") {
            None => None,
            Some(_) if !tls => {
                return Err(ConfigError::Invalid {
                    name: "REDIS_CA_FILE",
                    reason: "needs REDIS_TLS=true".into(),
                });
            }
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|e| ConfigError::Invalid {
                    name: "REDIS_CA_FILE",
                    reason: format!("cannot read `{path}`: {e}"),
                })?;
                if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError::Invalid {
                        name: "REDIS_CA_FILE",
                        reason: format!("`{path}` holds no PEM certificate"),
                    });
                }
                Some(std::sync::Arc::new(pem))
            }
        };
        let password = env.optional("REDIS_PASSWORD").map(SecretString::from);
        let iam = Self::iam_from_env(env, cache_name.as_deref())?;
        if iam.is_some() && (password.is_some() || env.optional("REDIS_USERNAME").is_some()) {
            return Err(ConfigError::Invalid {
                name: "REDIS_IAM_USER",
                reason: "IAM authentication replaces REDIS_USERNAME and REDIS_PASSWORD; set one or the other".into(),
            });
        }
        Ok(Some(RedisConfig {
            nodes,
            cache_name,
            mode,
            tls,
            ca_pem,
            username: env.optional("REDIS_USERNAME"),
            password,
            command_timeout: env.millis_in("REDIS_TIMEOUT_MS", 50, 1..=10_000)?,
            connect_timeout: env.millis_in("REDIS_CONNECT_TIMEOUT_MS", 1000, 10..=60_000)?,
            iam,
        }))
    }

    fn iam_from_env(
        env: &Env<'_>,
        cache_name: Option<&str>,
    ) -> Result<Option<crate::redis_iam::IamAuth>, ConfigError> {
        let Some(user_id) = env.optional("REDIS_IAM_USER") else {
            return Ok(None);
        };
        let required = |name: &'static str| {
            env.optional(name).ok_or(ConfigError::Invalid {
                name,
                reason: "needed with REDIS_IAM_USER".into(),
            })
        };
        Ok(Some(crate::redis_iam::IamAuth {
            user_id,
            cache_name: match env.optional("REDIS_IAM_CACHE_NAME") {
                Some(name) => name,
                None => cache_name.map(str::to_owned).ok_or(ConfigError::Invalid {
                    name: "REDIS_IAM_CACHE_NAME",
                    reason: "needed with REDIS_IAM_USER unless CACHE_NAME is set".into(),
                })?,
            },
            region: required("AWS_REGION")?,
            serverless: env.flag("REDIS_IAM_SERVERLESS", true)?,
        }))
    }
}

fn validate_host_port(node: &str) -> Result<(), String> {
    let (host, port) = node
        .rsplit_once(':')
        .ok_or_else(|| format!("`{node}` is not host:port"))?;
    if host.is_empty() || host.contains('/') {
        return Err(format!("`{node}` is not host:port"));
    }
    port.parse::<u16>()
        .map(drop)
        .map_err(|_| format!("`{node}` has an invalid port"))
}

/// Typed access to variables through a lookup function.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// A set, non-blank variable.
    fn optional(&self, name: &'static str) -> Option<String> {
        (self.0)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing { name })
    }

    fn parse<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| ConfigError::Invalid {
                name,
                reason: format!("`{raw}`: {e}"),
            }),
        }
    }

    /// A concurrency limit: 1 to 1024.
    fn at_least_one(&self, name: &'static str, default: usize) -> Result<usize, ConfigError> {
        self.number_in(name, default, 1..=1024)
    }

    /// A number within `range`: an absurd value is refused at start-up with its name, rather
    /// than overflowing or exhausting something later.
    fn number_in<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display,
        T::Err: std::fmt::Display,
    {
        let value = self.parse(name, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::Invalid {
                name,
                reason: format!("{value} is outside {}..={}", range.start(), range.end()),
            })
        }
    }

    fn millis_in(
        &self,
        name: &'static str,
        default_ms: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number_in(name, default_ms, range)
            .map(Duration::from_millis)
    }

    fn secs_in(
        &self,
        name: &'static str,
        default: Duration,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number_in(name, default.as_secs(), range)
            .map(Duration::from_secs)
    }

    fn ttl(
        &self,
        [fresh_name, stale_name]: [&'static str; 2],
        default: Ttl,
    ) -> Result<Ttl, ConfigError> {
        const WEEK: u64 = 7 * 86_400;
        Ok(Ttl {
            fresh: self.secs_in(fresh_name, default.fresh, 1..=WEEK)?,
            stale: self.secs_in(stale_name, default.stale, 0..=WEEK)?,
        })
    }

    fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self
            .optional(name)
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::Invalid {
                name,
                reason: format!("expected true or false, got `{other}`"),
            }),
        }
    }

    /// DynamoDB table names: 3 to 255 of `[A-Za-z0-9_.-]`.
    fn table(&self, name: &'static str) -> Result<String, ConfigError> {
        let value = self.required(name)?;
        let valid_chars = value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !(3..=255).contains(&value.len()) || !valid_chars {
            return Err(ConfigError::Invalid {
                name,
                reason: format!("`{value}` is not a valid DynamoDB table name"),
            });
        }
        Ok(value)
    }

    /// Key prefixes become part of every Redis key, so they obey the same character rules as ids.
    fn key_prefix(&self, name: &'static str, default: &str) -> Result<String, ConfigError> {
        let value = self.optional(name).unwrap_or_else(|| default.to_owned());
        let valid = value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":_.-".contains(&b));
        if !valid {
            return Err(ConfigError::Invalid {
                name,
                reason: "up to 64 of [A-Za-z0-9:_.-]".into(),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use secrecy::ExposeSecret;

    use super::*;

    fn config_from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    const TABLES: [(&str, &str); 3] = [
        ("CATALOG_TABLE", "catalog"),
        ("VIEWS_TABLE", "views"),
        ("STATS_TABLE", "stats"),
    ];

    #[test]
    fn minimal_environment_uses_defaults_and_no_redis() {
        let config = config_from(&TABLES).unwrap();
        assert_eq!(config.tables.catalog, "catalog");
        assert!(config.redis.is_none());
        assert_eq!(config.cache, CacheConfig::default());
        assert_eq!(config.dynamodb.operation_timeout, Duration::from_secs(3));
    }

    #[test]
    fn absurd_values_are_refused_with_their_name() {
        for (name, value) in [
            ("L1_TTL_SECS", "99999999999"),
            ("L1_MAX_BYTES", "18446744073709551616"),
            ("CACHE_TTL_PRODUCT_SECS", "0"),
            ("CACHE_STALE_FEED_SECS", "31536000"),
            ("CACHE_TTL_NEGATIVE_SECS", "0"),
            ("DYNAMODB_TIMEOUT_MS", "5"),
            ("CACHE_LOAD_TIMEOUT_MS", "2000"),
            ("REFRESH_CONCURRENCY", "100000"),
            ("OFFER_EXPIRY_INTERVAL_SECS", "0"),
            ("REDIS_TIMEOUT_MS", "0"),
            ("REDIS_CONNECT_TIMEOUT_MS", "-1"),
            ("VIEW_STATS_REFRESH_MAX", "1e9"),
        ] {
            let mut vars = TABLES.to_vec();
            vars.push(("REDIS_ENDPOINTS", "localhost:6379"));
            vars.push((name, value));
            match config_from(&vars) {
                Err(ConfigError::Invalid { name: named, .. }) => {
                    assert_eq!(named, name, "{name}={value}");
                }
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_tombstone_outlives_the_slowest_load_and_its_write() {
        let mut vars = TABLES.to_vec();
        vars.push(("REDIS_ENDPOINTS", "localhost:6379"));
        vars.push(("CACHE_LOAD_TIMEOUT_MS", "30000"));
        vars.push(("REDIS_TIMEOUT_MS", "200"));
        let config = config_from(&vars).unwrap();
        let options = crate::cache::CacheOptions::from_config(&config.cache, config.redis.as_ref());
        assert_eq!(options.load_timeout, Duration::from_secs(30));
        assert!(options.tombstone_ttl() > options.load_timeout + 2 * options.command_timeout);
    }

    #[test]
    fn the_write_token_must_differ_from_the_admin_token() {
        let mut vars = TABLES.to_vec();
        vars.push(("ADMIN_TOKEN", "one-token-for-everything"));
        vars.push(("WRITE_TOKEN", "one-token-for-everything"));
        assert!(matches!(
            config_from(&vars).unwrap_err(),
            ConfigError::Invalid {
                name: "WRITE_TOKEN",
                ..
            }
        ));
        vars.pop();
        vars.push(("WRITE_TOKEN", "another-token"));
        assert!(config_from(&vars).unwrap().write_token.is_some());
    }

    #[test]
    fn missing_table_is_named() {
        let err = config_from(&TABLES[..2]).unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                name: "STATS_TABLE"
            }
        );
        assert!(err.to_string().contains("STATS_TABLE"));
    }

    #[test]
    fn malformed_numbers_and_flags_are_named() {
        let mut vars = TABLES.to_vec();
        vars.push(("REDIS_ENDPOINTS", "localhost:6379"));
        vars.push(("REDIS_TIMEOUT_MS", "fifty"));
        let err = config_from(&vars).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "REDIS_TIMEOUT_MS",
                ..
            }
        ));

        vars.pop();
        vars.push(("REDIS_TLS", "maybe"));
        let err = config_from(&vars).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "REDIS_TLS",
                ..
            }
        ));
    }

    #[test]
    fn bad_table_name_is_rejected() {
        let err = config_from(&[
            ("CATALOG_TABLE", "has space"),
            ("VIEWS_TABLE", "views"),
            ("STATS_TABLE", "stats"),
        ])
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "CATALOG_TABLE",
                ..
            }
        ));
    }

    #[test]
    fn cluster_with_tls_and_secret_password() {
        let mut vars = TABLES.to_vec();
        vars.extend([
            ("REDIS_ENDPOINTS", "a.example:6379, b.example:6380"),
            ("REDIS_MODE", "cluster"),
            ("REDIS_TLS", "true"),
            ("REDIS_PASSWORD", "hunter2"),
            ("CACHE_TTL_PRODUCT_SECS", "60"),
            ("CACHE_STALE_PRODUCT_SECS", "0"),
        ]);
        let config = config_from(&vars).unwrap();
        let redis = config.redis.unwrap();
        assert_eq!(redis.nodes, ["a.example:6379", "b.example:6380"]);
        assert_eq!(redis.mode, RedisMode::Cluster);
        assert!(redis.tls);
        assert_eq!(redis.password.as_ref().unwrap().expose_secret(), "hunter2");
        assert!(!format!("{redis:?}").contains("hunter2"));
        assert_eq!(config.cache.ttl.product.fresh, Duration::from_secs(60));
        assert_eq!(config.cache.ttl.product.stale, Duration::ZERO);
    }

    #[test]
    fn a_cache_name_alone_means_a_serverless_cache_found_at_cold_start() {
        let mut vars = TABLES.to_vec();
        vars.extend([
            ("CACHE_NAME", "catalog-cache-cache"),
            ("REDIS_IAM_USER", "catalog-cache-iam"),
            ("AWS_REGION", "eu-west-1"),
        ]);
        let redis = config_from(&vars).unwrap().redis.unwrap();
        assert!(redis.nodes.is_empty(), "discovered, not configured");
        assert_eq!(redis.cache_name.as_deref(), Some("catalog-cache-cache"));
        assert_eq!(redis.mode, RedisMode::Cluster);
        assert!(redis.tls);
        assert_eq!(redis.iam.unwrap().cache_name, "catalog-cache-cache");

        // REDIS_ENDPOINTS overrides discovery; the name stays for the stats.
        vars.push(("REDIS_ENDPOINTS", "localhost:6379"));
        let redis = config_from(&vars).unwrap().redis.unwrap();
        assert_eq!(redis.nodes, ["localhost:6379"]);
        assert_eq!(redis.cache_name.as_deref(), Some("catalog-cache-cache"));
        assert_eq!(redis.mode, RedisMode::Standalone);
        assert!(!redis.tls);
    }

    #[test]
    fn iam_without_any_cache_name_is_refused() {
        let mut vars = TABLES.to_vec();
        vars.extend([
            ("REDIS_ENDPOINTS", "localhost:6379"),
            ("REDIS_IAM_USER", "catalog-cache-iam"),
            ("AWS_REGION", "eu-west-1"),
        ]);
        assert!(matches!(
            config_from(&vars).unwrap_err(),
            ConfigError::Invalid {
                name: "REDIS_IAM_CACHE_NAME",
                ..
            }
        ));
    }

    #[test]
    fn standalone_mode_rejects_several_endpoints_and_bad_ports() {
        let mut vars = TABLES.to_vec();
        vars.push(("REDIS_ENDPOINTS", "a:1,b:2"));
        assert!(matches!(
            config_from(&vars).unwrap_err(),
            ConfigError::Invalid {
                name: "REDIS_ENDPOINTS",
                ..
            }
        ));
        vars.pop();
        vars.push(("REDIS_ENDPOINTS", "a:99999"));
        assert!(matches!(
            config_from(&vars).unwrap_err(),
            ConfigError::Invalid {
                name: "REDIS_ENDPOINTS",
                ..
            }
        ));
    }

    #[test]
    fn zero_fresh_ttl_is_rejected() {
        let mut vars = TABLES.to_vec();
        vars.push(("CACHE_TTL_FEED_SECS", "0"));
        assert!(matches!(
            config_from(&vars).unwrap_err(),
            ConfigError::Invalid {
                name: "CACHE_TTL_FEED_SECS",
                ..
            }
        ));
    }
}
