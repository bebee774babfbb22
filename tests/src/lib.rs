//! Locates the real services that `scripts/with-services.sh` started (`make test` does this)
//! and hands out uniquely named slices of them, so tests can run in parallel.
//!
//! A test that needs a service fails with a clear message when the service is not there;
//! it never skips silently.

use std::time::Duration;

pub mod dynamo_faults;
pub mod fault_load;
pub mod tcp_faults;

/// The Lambda runtime API emulator (it lives with the event-source-mapping runner).
pub use esm::emulator as lambda_emulator;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use catalog_core::config::{RedisConfig, RedisMode};
use catalog_core::redis_conn::RedisConnection;

/// Reads a variable the service harness exports, or fails the test explaining how to run it.
pub fn service_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: integration tests need real services; run them with `make test` \
             (or `scripts/with-services.sh cargo test -p integration-tests`)"
        ),
    }
}

/// `http://127.0.0.1:<port>` of the moto DynamoDB API.
pub fn dynamodb_endpoint() -> String {
    service_env("TEST_DYNAMODB_ENDPOINT")
}

/// `127.0.0.1:<port>` of the standalone Redis.
pub fn redis_node() -> String {
    service_env("TEST_REDIS_NODE")
}

/// Seed nodes of the 3-master Redis Cluster.
pub fn redis_cluster_nodes() -> Vec<String> {
    service_env("TEST_REDIS_CLUSTER_NODES")
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// A name no other test uses: `<prefix>-<uuid>`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A DynamoDB client for moto with fixed test credentials.
pub fn dynamodb_client() -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .endpoint_url(dynamodb_endpoint())
        .http_client(catalog_core::aws::https_client())
        .build();
    Client::from_conf(config)
}

/// The DynamoDB stream of `table` on moto, read through the DynamoDB Streams API.
pub async fn dynamodb_stream(table: &str) -> std::sync::Arc<dyn esm::source::StreamSource> {
    let streams = aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodbstreams::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodbstreams::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .endpoint_url(dynamodb_endpoint())
            .http_client(catalog_core::aws::https_client())
            .build(),
    );
    match esm::source::DynamoStreamSource::for_table(&dynamodb_client(), streams, table).await {
        Ok(source) => std::sync::Arc::new(source),
        Err(e) => panic!(
            "no stream for {table} on moto ({}): {e}",
            dynamodb_endpoint()
        ),
    }
}

/// Redis settings for the standalone server, with a timeout generous enough for a loaded CI box.
pub fn standalone_config() -> RedisConfig {
    RedisConfig {
        command_timeout: Duration::from_millis(500),
        ..RedisConfig::standalone(redis_node())
    }
}

/// Redis settings for the test cluster.
pub fn cluster_config() -> RedisConfig {
    RedisConfig {
        nodes: redis_cluster_nodes(),
        mode: RedisMode::Cluster,
        ..standalone_config()
    }
}

/// Connects with `config`, failing the test if Redis is unreachable.
pub async fn connect(config: &RedisConfig) -> RedisConnection {
    match RedisConnection::connect(config).await {
        Ok(conn) => conn,
        Err(e) => panic!("Redis at {:?} is unreachable: {e:?}", config.nodes),
    }
}

/// A private `redis-server` this process starts and stops, for tests and benchmarks that take
/// Redis away (outages, cold starts with Redis down). Killed on drop.
pub struct RedisServer {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl RedisServer {
    /// A free loopback port, for a server started later.
    pub fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free port: {e}"))
    }

    /// Starts `redis-server` on `port` with extra arguments and waits until it answers.
    pub fn start(port: u16, extra_args: &[&str]) -> RedisServer {
        let dir = std::env::temp_dir().join(unique_name("redis-test"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {dir:?}: {e}"));
        let mut server = RedisServer {
            port,
            dir,
            child: None,
        };
        server.restart(extra_args);
        server
    }

    /// Starts the server again after [`RedisServer::stop`].
    pub fn restart(&mut self, extra_args: &[&str]) {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(extra_args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server (is it installed? `make test` installs it): {e}")
            });
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// Kills the server (an outage).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn node(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `cargo lambda watch --only-lambda-apis` on a free loopback port: cargo-lambda's Lambda
/// control plane, without it building or starting a function (tests start the binary
/// themselves with `AWS_LAMBDA_RUNTIME_API` set to [`CargoLambdaWatch::runtime_api`]).
/// Killed on drop.
pub struct CargoLambdaWatch {
    port: u16,
    _child: tokio::process::Child,
}

impl CargoLambdaWatch {
    /// Starts it in `workspace` (it reads the Cargo manifest there) and waits until it listens.
    pub async fn start(workspace: &std::path::Path) -> CargoLambdaWatch {
        let port = RedisServer::free_port();
        let child = tokio::process::Command::new("cargo")
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
            ])
            .arg(port.to_string())
            .current_dir(workspace)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("`cargo lambda` is needed (`make test` installs PyPI cargo-lambda): {e}")
            });
        // Only connect: any HTTP request to the invoke port would be an invocation, which
        // waits for a function that is not running yet.
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return CargoLambdaWatch {
                    port,
                    _child: child,
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cargo lambda watch did not start on port {port}");
    }

    /// The value for the function's `AWS_LAMBDA_RUNTIME_API`.
    pub fn runtime_api(&self) -> String {
        format!("http://127.0.0.1:{}/.rt", self.port)
    }

    /// The URL that invokes the default function as a Lambda function URL at `path`.
    pub fn function_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/lambda-url/_{path}", self.port)
    }
}

/// A private 3-master Redis Cluster (no replicas) this process starts and stops, for tests
/// that take a master away. Killed on drop.
pub struct RedisCluster {
    masters: Vec<RedisServer>,
    args: Vec<Vec<String>>,
}

impl RedisCluster {
    /// Starts three cluster-enabled servers, assigns the slots and waits until the cluster is ok.
    pub fn start() -> RedisCluster {
        let mut masters = Vec::new();
        let mut args = Vec::new();
        for _ in 0..3 {
            let bus = RedisServer::free_port();
            let node_args = vec![
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-port".to_owned(),
                bus.to_string(),
                "--cluster-config-file".to_owned(),
                "nodes.conf".to_owned(),
                "--cluster-node-timeout".to_owned(),
                "1000".to_owned(),
            ];
            let borrowed: Vec<&str> = node_args.iter().map(String::as_str).collect();
            masters.push(RedisServer::start(RedisServer::free_port(), &borrowed));
            args.push(node_args);
        }
        let cluster = RedisCluster { masters, args };
        let status = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.nodes())
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run redis-cli: {e}"));
        assert!(status.success(), "redis-cli --cluster create failed");
        cluster.wait_until_ok();
        cluster
    }

    /// `127.0.0.1:<port>` of each master.
    pub fn nodes(&self) -> Vec<String> {
        self.masters.iter().map(RedisServer::node).collect()
    }

    /// Kills master `i` (its slots stop answering).
    pub fn stop(&mut self, i: usize) {
        self.masters[i].stop();
    }

    /// Starts master `i` again; it rejoins with its slots (its `nodes.conf` is kept).
    pub fn restart(&mut self, i: usize) {
        let borrowed: Vec<&str> = self.args[i].iter().map(String::as_str).collect();
        self.masters[i].restart(&borrowed);
        self.wait_until_ok();
    }

    fn wait_until_ok(&self) {
        for _ in 0..300 {
            let ok = self.masters.iter().all(|m| {
                std::process::Command::new("redis-cli")
                    .args(["-p", &m.port.to_string(), "cluster", "info"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the private Redis Cluster {:?} did not become ok",
            self.nodes()
        );
    }
}
