//! IAM authentication against a real `redis-server`: an ACL user whose password is the token we
//! sign, as ElastiCache checks it. Connections authenticate with the newest token, open ones
//! re-authenticate when it is renewed, and reconnects use the renewed one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use catalog_core::config::RedisConfig;
use catalog_core::redis_conn::RedisConnection;
use catalog_core::redis_iam::IamAuth;
use integration_tests::RedisServer;

const USER: &str = "catalog-cache-iam";

fn auth() -> IamAuth {
    IamAuth {
        user_id: USER.into(),
        cache_name: "catalog-cache-cache".into(),
        region: "us-east-1".into(),
        serverless: true,
    }
}

fn credentials() -> Credentials {
    Credentials::new(
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "test",
    )
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Runs an admin command on the server as the default user.
async fn admin(server: &RedisServer, args: &[&str]) {
    let client = redis::Client::open(format!("redis://{}", server.node())).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    let _: redis::Value = cmd.query_async(&mut conn).await.unwrap();
}

async fn ping(conn: &mut RedisConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(conn).await
}

#[tokio::test]
async fn connections_authenticate_with_the_newest_token_and_reconnect_with_a_renewed_one() {
    let server = RedisServer::start(RedisServer::free_port(), &[]);
    let first = auth().token(&credentials(), at(1_795_996_800)).unwrap();
    let second = auth().token(&credentials(), at(1_795_997_400)).unwrap();
    assert_ne!(first, second);
    admin(
        &server,
        &[
            "ACL",
            "SETUSER",
            USER,
            "on",
            &format!(">{first}"),
            "~*",
            "+@all",
        ],
    )
    .await;

    let clock = Arc::new(AtomicU64::new(1_795_996_800));
    let now = clock.clone();
    let provider = auth()
        .provider(SharedCredentialsProvider::new(credentials()))
        .with_clock(
            move || at(now.load(Ordering::SeqCst)),
            Duration::from_millis(200),
        );
    let config = RedisConfig {
        command_timeout: Duration::from_millis(500),
        ..RedisConfig::standalone(server.node())
    };
    let mut conn = RedisConnection::connect_with(&config, Some(provider.clone()))
        .await
        .expect("the first token authenticates");
    assert_eq!(ping(&mut conn).await.unwrap(), "PONG");
    let whoami: String = redis::cmd("ACL")
        .arg("WHOAMI")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(whoami, USER);

    // The token is renewed; the server knows only the new one from now on.
    clock.store(1_795_997_400, Ordering::SeqCst);
    admin(
        &server,
        &["ACL", "SETUSER", USER, "resetpass", &format!(">{second}")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The connection is dropped (as ElastiCache does after 12 hours); the client reconnects
    // with the renewed token.
    admin(&server, &["CLIENT", "KILL", "USER", USER]).await;
    let mut answered = false;
    for _ in 0..50 {
        if ping(&mut conn).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "reconnected with the renewed token");

    // A wrong token is refused: the password really is checked.
    let stale = auth()
        .provider(SharedCredentialsProvider::new(credentials()))
        .with_clock(|| at(1_795_996_800), Duration::from_secs(600));
    assert!(
        RedisConnection::connect_with(&config, Some(stale))
            .await
            .is_err(),
        "the first token no longer authenticates"
    );
}

#[test]
fn iam_settings_come_from_the_environment_and_exclude_a_password() {
    let env = |extra: &'static [(&'static str, &'static str)]| {
        move |name: &str| -> Option<String> {
            [
                ("CATALOG_TABLE", "catalog"),
                ("VIEWS_TABLE", "views"),
                ("STATS_TABLE", "stats"),
                ("REDIS_ENDPOINTS", "cache.example:6379"),
                ("REDIS_IAM_USER", USER),
                ("REDIS_IAM_CACHE_NAME", "catalog-cache-cache"),
                ("AWS_REGION", "eu-west-1"),
            ]
            .iter()
            .chain(extra.iter())
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
        }
    };
    let config = catalog_core::config::Config::from_lookup(env(&[])).unwrap();
    let iam = config.redis.unwrap().iam.unwrap();
    assert_eq!(
        iam,
        IamAuth {
            user_id: USER.into(),
            cache_name: "catalog-cache-cache".into(),
            region: "eu-west-1".into(),
            serverless: true,
        }
    );
    assert!(catalog_core::config::Config::from_lookup(env(&[("REDIS_PASSWORD", "x")])).is_err());
}
