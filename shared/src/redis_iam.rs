//! IAM authentication to ElastiCache: the password of an IAM-enabled cache user is a SigV4
//! presigned `connect` request, signed with the function's own credentials and valid for 15
//! minutes. A new token is signed every 10 minutes; every connection, including those the
//! client opens again after a drop, authenticates with the newest, and open connections
//! re-authenticate with it (redis-rs's streaming credentials).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use futures::Stream;
use redis::auth::{BasicAuth, StreamingCredentialsProvider};

/// How long ElastiCache accepts a token for a new connection.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);
/// How often a new token is signed: well before the last one expires.
pub const RENEW_EVERY: Duration = Duration::from_secs(600);
/// Backoff when credentials or signing fail (the previous token stays in use meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Who authenticates to which cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamAuth {
    /// The ElastiCache user id (also its user name), e.g. `catalog-cache-iam`.
    pub user_id: String,
    /// The serverless cache's name (or a replication group's id).
    pub cache_name: String,
    /// The cache's region.
    pub region: String,
    /// A serverless cache (the token names the resource type).
    pub serverless: bool,
}

impl IamAuth {
    /// The token for a connection made at `at`: the presigned URL without its scheme.
    pub fn token(&self, credentials: &Credentials, at: SystemTime) -> crate::Result<String> {
        let failed = |e: &dyn std::fmt::Display| auth_error(format!("cannot sign the token: {e}"));
        let mut url = format!(
            "http://{}/?Action=connect&User={}",
            self.cache_name,
            encode(&self.user_id)
        );
        if self.serverless {
            url.push_str("&ResourceType=ServerlessCache");
        }
        let identity = credentials.clone().into();
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(TOKEN_LIFETIME);
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("elasticache")
            .time(at)
            .settings(settings)
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let request =
            SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
                .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(request, &params).map_err(|e| failed(&e))?.into_parts();
        for (name, value) in instructions.params() {
            url.push('&');
            url.push_str(name);
            url.push('=');
            url.push_str(&encode(value));
        }
        Ok(url.trim_start_matches("http://").to_owned())
    }

    /// A credentials stream for redis-rs: a token now, then a new one every [`RENEW_EVERY`].
    pub fn provider(&self, credentials: SharedCredentialsProvider) -> IamCredentials {
        IamCredentials {
            auth: self.clone(),
            credentials,
            clock: Arc::new(SystemTime::now),
            renew_every: RENEW_EVERY,
        }
    }
}

fn auth_error(detail: String) -> crate::Error {
    crate::Error::Redis {
        op: "IAM authentication",
        source: redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "ElastiCache IAM token",
            detail,
        )),
    }
}

/// The function's own credentials (in Lambda, its role's, from the environment).
pub fn default_credentials() -> SharedCredentialsProvider {
    crate::aws::credentials()
}

/// SigV4's query encoding: everything but unreserved characters, percent-encoded.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Tokens for every connection of one client (see the module docs).
#[derive(Clone)]
pub struct IamCredentials {
    auth: IamAuth,
    credentials: SharedCredentialsProvider,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    renew_every: Duration,
}

impl std::fmt::Debug for IamCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamCredentials")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

impl IamCredentials {
    /// Signs with `clock`'s time and renews every `renew_every` (tests).
    pub fn with_clock(
        self,
        clock: impl Fn() -> SystemTime + Send + Sync + 'static,
        renew_every: Duration,
    ) -> Self {
        IamCredentials {
            clock: Arc::new(clock),
            renew_every,
            ..self
        }
    }

    /// Signs a token with the current credentials.
    pub async fn current(&self) -> crate::Result<BasicAuth> {
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| auth_error(format!("no AWS credentials to sign the token: {e}")))?;
        let token = self.auth.token(&credentials, (self.clock)())?;
        Ok(BasicAuth::new(self.auth.user_id.clone(), token))
    }
}

impl StreamingCredentialsProvider for IamCredentials {
    fn subscribe(
        &self,
    ) -> Pin<Box<dyn Stream<Item = redis::RedisResult<BasicAuth>> + Send + 'static>> {
        let this = self.clone();
        Box::pin(futures::stream::unfold(true, move |first| {
            let this = this.clone();
            async move {
                if !first {
                    tokio::time::sleep(this.renew_every).await;
                }
                loop {
                    match this.current().await {
                        Ok(auth) => return Some((Ok(auth), false)),
                        Err(e) if first => {
                            // The connection cannot authenticate without one.
                            let error = match e {
                                crate::Error::Redis { source, .. } => source,
                                other => redis::RedisError::from((
                                    redis::ErrorKind::AuthenticationFailed,
                                    "ElastiCache IAM token",
                                    other.to_string(),
                                )),
                            };
                            return Some((Err(error), true));
                        }
                        Err(e) => {
                            tracing::warn!(error.message = %e, "cannot renew the ElastiCache IAM token; retrying (the current one is valid for a while)");
                            tokio::time::sleep(RETRY_AFTER).await;
                        }
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signed by botocore 1.43 (`SigV4QueryAuth(creds, "elasticache", "us-east-1",
    /// expires=900)` at 2026-11-24T12:00:00Z), an implementation independent of ours.
    const BOTOCORE_SIGNATURE: &str =
        "580058b288adbcd5c567e6cd408253979c9b02f140f36512101a4cbda6f8897e";
    const BOTOCORE_SIGNATURE_WITH_SESSION: &str =
        "fb11fac07684febcabdb07ce0df4fc22019b00c02b82d1e88cda7b52b400700d";

    fn auth() -> IamAuth {
        IamAuth {
            user_id: "catalog-cache-iam".into(),
            cache_name: "catalog-cache-cache".into(),
            region: "us-east-1".into(),
            serverless: true,
        }
    }

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_521_600) // 2026-11-24T12:00:00Z
    }

    fn query(token: &str) -> std::collections::BTreeMap<String, String> {
        let (host, query) = token.split_once("/?").unwrap();
        assert_eq!(host, "catalog-cache-cache");
        query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    #[test]
    fn the_token_matches_an_independent_signer() {
        let credentials = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        let token = auth().token(&credentials, at()).unwrap();
        assert!(!token.starts_with("http"), "{token}");
        let q = query(&token);
        assert_eq!(q["Action"], "connect");
        assert_eq!(q["User"], "catalog-cache-iam");
        assert_eq!(q["ResourceType"], "ServerlessCache");
        assert_eq!(
            q["X-Amz-Credential"],
            "AKIDEXAMPLE%2F20261124%2Fus-east-1%2Felasticache%2Faws4_request"
        );
        assert_eq!(q["X-Amz-Date"], "20261124T120000Z");
        assert_eq!(q["X-Amz-Expires"], "900");
        assert_eq!(q["X-Amz-SignedHeaders"], "host");
        assert_eq!(q["X-Amz-Signature"], BOTOCORE_SIGNATURE);

        let with_session = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("session-token-example".into()),
            None,
            "test",
        );
        let q = query(&auth().token(&with_session, at()).unwrap());
        assert_eq!(q["X-Amz-Security-Token"], "session-token-example");
        assert_eq!(q["X-Amz-Signature"], BOTOCORE_SIGNATURE_WITH_SESSION);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_token_is_signed_before_the_last_one_expires() {
        use futures::StreamExt;
        let credentials = SharedCredentialsProvider::new(Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        ));
        let mut stream = auth().provider(credentials).subscribe();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.username(), "catalog-cache-iam");
        let started = tokio::time::Instant::now();
        let second = stream.next().await.unwrap().unwrap();
        let waited = started.elapsed();
        assert!(
            waited >= RENEW_EVERY && waited < TOKEN_LIFETIME,
            "{waited:?}"
        );
        assert!(second.password().contains("X-Amz-Signature="));
    }
}
