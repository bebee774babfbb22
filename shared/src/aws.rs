//! The AWS SDK set-up every client shares: region and credentials from the environment (in
//! Lambda, `AWS_REGION` and the function role's credentials in `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), and one HTTPS client on rustls with ring.
//!
//! Why not `aws_config::defaults()`: its provider chain (profile files, SSO, STS web identity,
//! ECS, IMDS) and its default HTTPS client (aws-lc) are megabytes of a Lambda binary that
//! never uses them. Lambda hands every function its credentials in the environment.

use std::sync::OnceLock;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// Region when the environment names none (local runs against moto).
const LOCAL_REGION: &str = "us-east-1";

/// Makes ring the process's rustls provider (the SDK's and Redis's TLS), so nothing depends
/// on which provider features happen to be enabled. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The process's HTTPS client: one connection pool for every SDK client.
pub fn https_client() -> SharedHttpClient {
    static CLIENT: OnceLock<SharedHttpClient> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            install_crypto_provider();
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                .build_https()
        })
        .clone()
}

/// The function's credentials: its role's, from the environment.
pub fn credentials() -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(EnvironmentVariableCredentialsProvider::new())
}

/// `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`.
pub fn region() -> Region {
    let named = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
    Region::new(named.unwrap_or_else(|| LOCAL_REGION.to_owned()))
}

/// SDK settings from the environment, with `timeouts` and an optional endpoint override.
pub fn sdk_config(timeouts: Option<TimeoutConfig>, endpoint: Option<&str>) -> SdkConfig {
    let mut builder = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(region())
        .credentials_provider(credentials())
        .http_client(https_client());
    if let Some(timeouts) = timeouts {
        builder = builder.timeout_config(timeouts);
    }
    if let Some(endpoint) = endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    builder.build()
}
