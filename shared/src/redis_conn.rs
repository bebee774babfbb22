//! One Redis connection per process, standalone or cluster, with per-command timeouts and TLS.
//!
//! Both variants are cheap-to-clone multiplexed handles that reconnect by themselves, so the
//! connection is built once at cold start and shared; there is no global static.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value,
};
use secrecy::ExposeSecret;

use crate::config::{RedisConfig, RedisMode};
use crate::error::{Error, Result};

/// A connection to Redis in either topology, usable wherever redis-rs wants a `ConnectionLike`.
///
/// ## Behavior
/// - Every command is bounded by the configured response timeout; a timeout is an error the
///   caller can classify with [`Error::is_retryable`], never a hang.
/// - Standalone uses a `ConnectionManager`, which reconnects in the background after a drop.
/// - Cluster follows `MOVED`/`ASK` redirections and refreshes its slot map by itself.
/// - Cloning shares the underlying connection.
#[derive(Clone)]
pub enum RedisConnection {
    /// A single primary.
    Standalone(ConnectionManager),
    /// A Redis Cluster (e.g. ElastiCache Serverless).
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedisConnection::Standalone(_) => "RedisConnection::Standalone",
            RedisConnection::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl RedisConnection {
    /// Connects according to `config`. Fails if no node answers within the connect timeout.
    /// With IAM authentication, tokens are signed with the default credentials chain.
    pub async fn connect(config: &RedisConfig) -> Result<RedisConnection> {
        let iam = config
            .iam
            .as_ref()
            .map(|auth| auth.provider(crate::redis_iam::default_credentials()));
        Self::connect_with(config, iam).await
    }

    /// [`RedisConnection::connect`] authenticating with `iam`'s tokens, if given.
    pub async fn connect_with(
        config: &RedisConfig,
        iam: Option<crate::redis_iam::IamCredentials>,
    ) -> Result<RedisConnection> {
        let nodes = config
            .nodes
            .iter()
            .map(|node| node_info(node, config))
            .collect::<Result<Vec<_>>>()?;
        // An outer deadline as well: name resolution and the TLS handshake are not all
        // covered by the client's own connection timeout, and a cold start must not hang.
        let deadline = config.connect_timeout * 2;
        let connecting = async {
            match config.mode {
                RedisMode::Standalone => {
                    let node = nodes.into_iter().next().ok_or_else(|| {
                        Error::redis(
                            "connect",
                            (redis::ErrorKind::InvalidClientConfig, "no Redis endpoint").into(),
                        )
                    })?;
                    let client = match &config.ca_pem {
                        Some(pem) => redis::Client::build_with_tls(node, certificates(pem)),
                        None => redis::Client::open(node),
                    }
                    .map_err(|e| Error::redis("connect", e))?;
                    let mut manager_config = ConnectionManagerConfig::new()
                        .set_response_timeout(Some(config.command_timeout))
                        .set_connection_timeout(Some(config.connect_timeout))
                        // Reconnects happen in the background; keep the first attempt short so
                        // a cold start with Redis down degrades quickly instead of retrying.
                        .set_number_of_retries(1)
                        .set_max_delay(Duration::from_millis(500));
                    if let Some(iam) = &iam {
                        manager_config = manager_config.set_credentials_provider(iam.clone());
                    }
                    ConnectionManager::new_with_config(client, manager_config)
                        .await
                        .map(RedisConnection::Standalone)
                        .map_err(|e| Error::redis("connect", e))
                }
                RedisMode::Cluster => {
                    let mut builder = ClusterClientBuilder::new(nodes)
                        .connection_timeout(config.connect_timeout)
                        .response_timeout(config.command_timeout)
                        .retries(2);
                    if let Some(user) = &config.username {
                        builder = builder.username(user);
                    }
                    if let Some(password) = &config.password {
                        builder = builder.password(password.expose_secret());
                    }
                    if let Some(pem) = &config.ca_pem {
                        builder = builder.certs(certificates(pem));
                    }
                    if let Some(iam) = &iam {
                        builder = builder.set_credentials_provider(iam.clone());
                    }
                    let client = builder.build().map_err(|e| Error::redis("connect", e))?;
                    client
                        .get_async_connection()
                        .await
                        .map(RedisConnection::Cluster)
                        .map_err(|e| Error::redis("connect", e))
                }
            }
        };
        tokio::time::timeout(deadline, connecting)
            .await
            .map_err(|_| Error::Timeout {
                op: "Redis connect",
                after: deadline,
            })?
    }

    /// Whether this is a cluster connection (keys of one multi-key command must share a slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConnection::Cluster(_))
    }

    /// Sends `pipeline` (`count` commands) to the cluster node at `host:port` as one request;
    /// on a standalone server, to the server. Each reply is returned as it came, errors
    /// included, for the caller to read.
    pub async fn pipeline_to_node(
        &self,
        pipeline: &Pipeline,
        count: usize,
        host: &str,
        port: u16,
    ) -> redis::RedisResult<Vec<Value>> {
        match self.clone() {
            RedisConnection::Cluster(mut cluster) => {
                let route = redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                    host: host.to_owned(),
                    port,
                };
                cluster
                    .route_pipeline(pipeline.clone(), 0, count, route)
                    .await
            }
            mut standalone => pipeline.query_async(&mut standalone).await,
        }
    }

    /// Round-trips a `PING`.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(|e| Error::redis("PING", e))
    }
}

/// Trust exactly the configured CA (no client certificate).
fn certificates(ca_pem: &[u8]) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(ca_pem.to_vec()),
    }
}

/// Connection info for one `host:port`, with TLS and credentials from the config.
fn node_info(node: &str, config: &RedisConfig) -> Result<ConnectionInfo> {
    let invalid = || {
        Error::redis(
            "connect",
            (
                redis::ErrorKind::InvalidClientConfig,
                "endpoint is not host:port",
            )
                .into(),
        )
    };
    let (host, port) = node.rsplit_once(':').ok_or_else(invalid)?;
    let port: u16 = port.parse().map_err(|_| invalid())?;
    let addr = if config.tls {
        ConnectionAddr::TcpTls {
            host: host.to_owned(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        ConnectionAddr::Tcp(host.to_owned(), port)
    };
    let info = addr
        .into_connection_info()
        .map_err(|e| Error::redis("connect", e))?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password.expose_secret());
    }
    Ok(info.set_redis_settings(settings))
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Standalone(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Standalone(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}
