//! Redis over TLS with a private CA and an ACL user, as ElastiCache is reached: a local
//! `redis-server` serving TLS only, with a CA and certificate generated here by `openssl`,
//! and the default user turned off.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use catalog_core::cache::l2::L2Store;
use catalog_core::cache::l2::redis::RedisL2;
use catalog_core::cache::{Cache, CacheOptions, Source};
use catalog_core::clock::SystemClock;
use catalog_core::config::{Config, RedisConfig};
use catalog_core::model::ProductId;
use catalog_core::redis_conn::RedisConnection;
use integration_tests::{RedisServer, unique_name};
use secrecy::SecretString;

const USER: &str = "catalog-app";
const PASSWORD: &str = "s3cret-acl-password";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl is needed to make a test CA: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate it signed for localhost and 127.0.0.1.
fn test_ca() -> PathBuf {
    let dir = std::env::temp_dir().join(unique_name("redis-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=catalog-cache test CA",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("san.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
        ],
    );
    dir
}

/// `redis-server` on TLS only, with an ACL user and the default user off.
fn tls_server(dir: &Path) -> RedisServer {
    let port = RedisServer::free_port();
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let password = format!(">{PASSWORD}");
    let port_arg = port.to_string();
    let args = [
        "--port",
        "0",
        "--tls-port",
        &port_arg,
        "--tls-cert-file",
        &path("server.crt"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.crt"),
        "--tls-auth-clients",
        "no",
        "--user",
        USER,
        "on",
        &password,
        "~*",
        "&*",
        "+@all",
        "--user",
        "default",
        "off",
    ];
    RedisServer::start(port, &args)
}

fn config(node: &str, ca: Option<&Path>, password: Option<&str>) -> RedisConfig {
    RedisConfig {
        tls: true,
        ca_pem: ca.map(|p| Arc::new(std::fs::read(p).unwrap())),
        username: Some(USER.into()),
        password: password.map(SecretString::from),
        command_timeout: Duration::from_millis(500),
        ..RedisConfig::standalone(node)
    }
}

#[tokio::test]
async fn the_cache_works_over_tls_with_a_private_ca_and_an_acl_user() {
    let dir = test_ca();
    let server = tls_server(&dir);
    let node = server.node();
    // From the environment, as a function reads it.
    let ca_file = dir.join("ca.crt").to_string_lossy().into_owned();
    let config = Config::from_lookup(|name| {
        let value = match name {
            "CATALOG_TABLE" | "VIEWS_TABLE" | "STATS_TABLE" => "t-t",
            "REDIS_ENDPOINTS" => node.as_str(),
            "REDIS_TLS" => "true",
            "REDIS_CA_FILE" => ca_file.as_str(),
            "REDIS_USERNAME" => USER,
            "REDIS_PASSWORD" => PASSWORD,
            "REDIS_TIMEOUT_MS" => "500",
            _ => return None,
        };
        Some(value.to_owned())
    })
    .unwrap();
    let redis = config.redis.clone().unwrap();
    let l2 = RedisL2::new(RedisConnection::connect(&redis).await.unwrap());
    let cache = Cache::new(
        CacheOptions {
            key_prefix: format!("{}:", unique_name("tls")),
            ..CacheOptions::from_config(&config.cache, Some(&redis))
        },
        Some(Arc::new(l2) as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let key = cache.keys().stats(&ProductId::parse("p1").unwrap());
    let first = cache
        .get_or_load(&key, || async {
            Ok(Some(catalog_core::model::PeriodStats::default()))
        })
        .await
        .unwrap();
    assert_eq!(first.source, Source::Loaded);
    // A second environment (no L1 of its own yet) reads it from Redis, over TLS.
    let other = Cache::new(
        cache.options().clone(),
        Some(RedisL2::connect(redis.clone(), Duration::from_secs(2)).await as Arc<dyn L2Store>),
        Arc::new(SystemClock),
    );
    let second = other
        .get_or_load(&key, || async {
            Ok(None::<catalog_core::model::PeriodStats>)
        })
        .await
        .unwrap();
    assert_eq!(second.source, Source::L2);
}

#[tokio::test]
async fn an_unknown_ca_a_wrong_password_or_no_credentials_are_refused() {
    let dir = test_ca();
    let server = tls_server(&dir);
    let node = server.node();
    let ca = dir.join("ca.crt");
    assert!(
        RedisConnection::connect(&config(&node, Some(&ca), Some(PASSWORD)))
            .await
            .is_ok()
    );
    // The public roots do not know our CA.
    assert!(
        RedisConnection::connect(&config(&node, None, Some(PASSWORD)))
            .await
            .is_err()
    );
    assert!(
        RedisConnection::connect(&config(&node, Some(&ca), Some("wrong")))
            .await
            .is_err()
    );
    let anonymous = RedisConfig {
        username: None,
        ..config(&node, Some(&ca), None)
    };
    // The default user is off: a connection without credentials cannot run a command.
    match RedisConnection::connect(&anonymous).await {
        Err(_) => {}
        Ok(conn) => assert!(conn.ping().await.is_err()),
    }
}

#[test]
fn a_ca_file_needs_tls_and_must_hold_a_certificate() {
    let dir = test_ca();
    let key_file = dir.join("ca.key").to_string_lossy().into_owned();
    let ca_file = dir.join("ca.crt").to_string_lossy().into_owned();
    let with = |tls: &'static str, file: String| {
        Config::from_lookup(move |name| match name {
            "CATALOG_TABLE" | "VIEWS_TABLE" | "STATS_TABLE" => Some("t-t".into()),
            "REDIS_ENDPOINTS" => Some("localhost:6380".into()),
            "REDIS_TLS" => Some(tls.into()),
            "REDIS_CA_FILE" => Some(file.clone()),
            _ => None,
        })
    };
    for (tls, file) in [
        ("false", ca_file.clone()),
        ("true", key_file),
        ("true", "/nonexistent/ca.crt".to_owned()),
    ] {
        let err = with(tls, file.clone()).unwrap_err();
        assert!(
            err.to_string().contains("REDIS_CA_FILE"),
            "{tls} {file}: {err}"
        );
    }
    assert!(with("true", ca_file).is_ok());
}
