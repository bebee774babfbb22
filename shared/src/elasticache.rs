//! The ElastiCache control plane: given `CACHE_NAME` instead of `REDIS_ENDPOINTS`, a function
//! finds its serverless cache's endpoint at cold start, and `/admin/cache/stats` shows the
//! cache's status and usage limits.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_elasticache::Client;
use serde::Serialize;
use tokio::sync::OnceCell;

/// How long a cold start waits for `DescribeServerlessCaches`; past it the function serves
/// without Redis (and says so in its log).
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the control plane says about a serverless cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerlessCacheInfo {
    /// The cache's name.
    pub name: String,
    /// `creating`, `available`, `modifying`, `deleting`, ...
    pub status: String,
    /// `host:port` of its endpoint, once it has one.
    pub endpoint: Option<String>,
    /// Upper bound of its data storage, in GB, if set.
    pub data_storage_max_gb: Option<i32>,
    /// Upper bound of its ElastiCache Processing Units per second, if set.
    pub ecpu_per_second_max: Option<i32>,
}

/// One serverless cache as seen through the ElastiCache API. Its client is built on first
/// use: a function given `REDIS_ENDPOINTS` never pays for it at cold start.
#[derive(Debug, Clone)]
pub struct ControlPlane {
    client: Arc<OnceCell<Client>>,
    cache_name: String,
}

impl ControlPlane {
    /// The control plane of `cache_name` over `client`.
    pub fn new(client: Client, cache_name: impl Into<String>) -> ControlPlane {
        ControlPlane {
            client: Arc::new(OnceCell::new_with(Some(client))),
            cache_name: cache_name.into(),
        }
    }

    /// The control plane of `cache_name` on the default credentials chain and region,
    /// loaded when first asked.
    pub fn from_environment(cache_name: impl Into<String>) -> ControlPlane {
        ControlPlane {
            client: Arc::new(OnceCell::new()),
            cache_name: cache_name.into(),
        }
    }

    /// The cache's name.
    pub fn cache_name(&self) -> &str {
        &self.cache_name
    }

    /// Describes the cache, within [`DESCRIBE_TIMEOUT`].
    pub async fn describe(&self) -> crate::Result<ServerlessCacheInfo> {
        let client = self
            .client
            .get_or_init(|| async { Client::new(&crate::aws::sdk_config(None, None)) })
            .await;
        describe(client, &self.cache_name).await
    }
}

/// Describes the serverless cache `name`, within [`DESCRIBE_TIMEOUT`].
async fn describe(client: &Client, name: &str) -> crate::Result<ServerlessCacheInfo> {
    let failed = |reason: String| crate::Error::ControlPlane { reason };
    let output = tokio::time::timeout(
        DESCRIBE_TIMEOUT,
        client
            .describe_serverless_caches()
            .serverless_cache_name(name)
            .send(),
    )
    .await
    .map_err(|_| crate::Error::Timeout {
        op: "DescribeServerlessCaches",
        after: DESCRIBE_TIMEOUT,
    })?
    .map_err(|e| {
        failed(format!(
            "DescribeServerlessCaches failed: {}",
            aws_sdk_elasticache::error::DisplayErrorContext(&e)
        ))
    })?;
    let cache = output
        .serverless_caches()
        .iter()
        .find(|c| c.serverless_cache_name() == Some(name))
        .ok_or_else(|| failed(format!("no serverless cache named `{name}`")))?;
    let limits = cache.cache_usage_limits();
    Ok(ServerlessCacheInfo {
        name: name.to_owned(),
        status: cache.status().unwrap_or("unknown").to_owned(),
        endpoint: cache
            .endpoint()
            .and_then(|e| Some(format!("{}:{}", e.address()?, e.port().unwrap_or(6379)))),
        data_storage_max_gb: limits
            .and_then(|l| l.data_storage())
            .and_then(|d| d.maximum()),
        ecpu_per_second_max: limits
            .and_then(|l| l.ecpu_per_second())
            .and_then(|e| e.maximum()),
    })
}

/// Recorded control-plane answers, for tests here and in the other crates.
#[cfg(any(test, feature = "test-util"))]
#[allow(clippy::unwrap_used)] // Test support: a poisoned lock or a bad header is a failed test.
pub mod testing {
    use std::sync::{Arc, Mutex};

    use aws_sdk_elasticache::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::test_util::infallible_client_fn;

    use super::Client;

    /// A `DescribeServerlessCaches` answer in the Query protocol's XML, as ElastiCache sends
    /// it (recorded from a 5 GB / 5,000 ECPU/s Valkey cache), for `name` in `status` at
    /// `endpoint`.
    pub fn describe_response(name: &str, status: &str, endpoint: Option<(&str, u16)>) -> String {
        let endpoint = endpoint.map_or_else(String::new, |(address, port)| {
            format!(
                "<Endpoint><Address>{address}</Address><Port>{port}</Port></Endpoint>\
                 <ReaderEndpoint><Address>{address}</Address><Port>{}</Port></ReaderEndpoint>",
                port + 1
            )
        });
        format!(
            r#"<DescribeServerlessCachesResponse xmlns="http://elasticache.amazonaws.com/doc/2015-02-02/">
  <DescribeServerlessCachesResult>
    <ServerlessCaches>
      <member>
        <ServerlessCacheName>{name}</ServerlessCacheName>
        <Status>{status}</Status>
        <Engine>valkey</Engine>
        <MajorEngineVersion>8</MajorEngineVersion>
        {endpoint}
        <CacheUsageLimits>
          <DataStorage><Maximum>5</Maximum><Unit>GB</Unit></DataStorage>
          <ECPUPerSecond><Maximum>5000</Maximum></ECPUPerSecond>
        </CacheUsageLimits>
        <UserGroupId>catalog-users-1a2b3c4d</UserGroupId>
      </member>
    </ServerlessCaches>
  </DescribeServerlessCachesResult>
  <ResponseMetadata><RequestId>6b5e1f1e-0000-4000-8000-000000000000</RequestId></ResponseMetadata>
</DescribeServerlessCachesResponse>"#
        )
    }

    /// A client whose every call is answered with `status` and `body`; the second value
    /// collects the request bodies it was sent.
    pub fn client_answering(status: u16, body: String) -> (Client, Arc<Mutex<Vec<String>>>) {
        client_answering_in_turn(vec![(status, body)])
    }

    /// A client answering its calls with `answers` in turn, the last one from then on.
    pub fn client_answering_in_turn(
        answers: Vec<(u16, String)>,
    ) -> (Client, Arc<Mutex<Vec<String>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let http = infallible_client_fn(move |request| {
            let mut seen = record.lock().unwrap();
            seen.push(
                String::from_utf8_lossy(request.body().bytes().unwrap_or_default()).into_owned(),
            );
            let (status, body) = answers[(seen.len() - 1).min(answers.len() - 1)].clone();
            http::Response::builder()
                .status(status)
                .header("content-type", "text/xml")
                .body(body)
                .unwrap()
        });
        (client_over(http), seen)
    }

    /// A client whose calls are never answered.
    pub fn client_never_answering() -> Client {
        client_over(aws_smithy_http_client::test_util::NeverClient::new())
    }

    fn client_over(http: impl aws_sdk_elasticache::config::HttpClient + 'static) -> Client {
        let config = aws_sdk_elasticache::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
            .http_client(http)
            .build();
        Client::from_conf(config)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{client_answering, describe_response};
    use super::*;

    const ADDRESS: &str = "catalog-cache-cache-x1y2z3.serverless.use1.cache.amazonaws.com";

    #[tokio::test]
    async fn the_endpoint_status_and_limits_come_from_describe_serverless_caches() {
        let recorded = describe_response("catalog-cache-cache", "available", Some((ADDRESS, 6379)));
        let (client, seen) = client_answering(200, recorded);
        let info = describe(&client, "catalog-cache-cache").await.unwrap();
        assert_eq!(
            info,
            ServerlessCacheInfo {
                name: "catalog-cache-cache".into(),
                status: "available".into(),
                endpoint: Some(format!("{ADDRESS}:6379")),
                data_storage_max_gb: Some(5),
                ecpu_per_second_max: Some(5000),
            }
        );
        let request = &seen.lock().unwrap()[0];
        assert!(
            request.contains("Action=DescribeServerlessCaches"),
            "{request}"
        );
        assert!(
            request.contains("ServerlessCacheName=catalog-cache-cache"),
            "{request}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_control_plane_that_does_not_answer_is_given_up_on_after_the_timeout() {
        let control_plane = ControlPlane::new(
            super::testing::client_never_answering(),
            "catalog-cache-cache",
        );
        let started = tokio::time::Instant::now();
        let err = control_plane.describe().await.unwrap_err();
        assert!(matches!(err, crate::Error::Timeout { .. }), "{err:?}");
        assert_eq!(started.elapsed(), DESCRIBE_TIMEOUT);
    }

    #[tokio::test]
    async fn an_unknown_cache_or_a_refusal_is_an_error() {
        let empty = r#"<DescribeServerlessCachesResponse xmlns="http://elasticache.amazonaws.com/doc/2015-02-02/"><DescribeServerlessCachesResult><ServerlessCaches/></DescribeServerlessCachesResult></DescribeServerlessCachesResponse>"#;
        let (client, _) = client_answering(200, empty.into());
        assert!(describe(&client, "other").await.is_err());
        let denied = r#"<ErrorResponse xmlns="http://elasticache.amazonaws.com/doc/2015-02-02/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>not allowed</Message></Error><RequestId>x</RequestId></ErrorResponse>"#;
        let (client, _) = client_answering(403, denied.into());
        assert!(describe(&client, "catalog-cache-cache").await.is_err());
    }
}
