//! An HTTP proxy in front of moto that fails chosen DynamoDB requests the way DynamoDB fails
//! them (a 500 `InternalServerError`, a 400 `ThrottlingException` or `ValidationException`),
//! so the real function binaries can be tested against DynamoDB faults: point their
//! `DYNAMODB_ENDPOINT` at [`DynamoFaults::endpoint`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// How a matching request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500 `InternalServerError` (the SDK retries it).
    ServerError,
    /// 400 `ThrottlingException` (the SDK retries it).
    Throttle,
    /// 400 `ValidationException` (not retried).
    Invalid,
}

impl Fault {
    fn response(self) -> Response {
        let (status, kind) = match self {
            Fault::ServerError => (StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError"),
            Fault::Throttle => (StatusCode::BAD_REQUEST, "ThrottlingException"),
            Fault::Invalid => (StatusCode::BAD_REQUEST, "ValidationException"),
        };
        let body = format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{kind}","message":"injected by the test"}}"#
        );
        (
            status,
            [("content-type", "application/x-amz-json-1.0")],
            body,
        )
            .into_response()
    }
}

/// Which requests fail, and how often.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The operation (`UpdateItem`, `BatchGetItem`, ...); `None` matches any.
    pub operation: Option<&'static str>,
    /// A string the request body must contain (e.g. a key), if any.
    pub body_contains: Option<String>,
    /// Matching requests let through before the rule starts failing them.
    pub pass_first: u64,
    /// How many matching requests it fails after that (`None`: all of them).
    pub fail: Option<u64>,
    /// How they fail.
    pub fault: Fault,
}

impl Rule {
    /// Fails every `operation` request (after `pass_first`) with `fault`.
    pub fn on(operation: &'static str, fault: Fault) -> Rule {
        Rule {
            operation: Some(operation),
            body_contains: None,
            pass_first: 0,
            fail: None,
            fault,
        }
    }
}

#[derive(Debug)]
struct Armed {
    rule: Rule,
    seen: u64,
    failed: u64,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Vec<Armed>>,
    injected: Mutex<u64>,
}

/// A running proxy; stops when dropped.
pub struct DynamoFaults {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl DynamoFaults {
    /// A proxy to the DynamoDB API at `upstream` on a free loopback port.
    pub async fn start(upstream: &str) -> DynamoFaults {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::new(),
            rules: Mutex::new(Vec::new()),
            injected: Mutex::new(0),
        });
        let app = Router::new().fallback(proxy).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the fault proxy: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        DynamoFaults {
            addr,
            shared,
            server,
        }
    }

    /// The endpoint to give the code under test.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a rule.
    pub fn add(&self, rule: Rule) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Armed {
                rule,
                seen: 0,
                failed: 0,
            });
    }

    /// Removes every rule: requests pass again.
    pub fn heal(&self) {
        self.shared
            .rules
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// Requests failed so far.
    pub fn injected(&self) -> u64 {
        *self
            .shared
            .injected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for DynamoFaults {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The fault a request meets, if any (and counts it).
fn fault_for(shared: &Shared, operation: &str, body: &[u8]) -> Option<Fault> {
    let mut rules = shared.rules.lock().unwrap_or_else(PoisonError::into_inner);
    for armed in rules.iter_mut() {
        let rule = &armed.rule;
        let matches = rule.operation.is_none_or(|op| op == operation)
            && rule
                .body_contains
                .as_ref()
                .is_none_or(|needle| body.windows(needle.len()).any(|w| w == needle.as_bytes()));
        if !matches {
            continue;
        }
        armed.seen += 1;
        if armed.seen <= rule.pass_first || rule.fail.is_some_and(|n| armed.failed >= n) {
            continue;
        }
        armed.failed += 1;
        *shared
            .injected
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        return Some(rule.fault);
    }
    None
}

async fn proxy(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let operation = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or_default()
        .to_owned();
    if let Some(fault) = fault_for(&shared, &operation, &body) {
        return fault.response();
    }
    let url = format!(
        "{}{}",
        shared.upstream,
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut request = shared.client.request(method, url).body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(upstream) => {
            let status = upstream.status();
            let mut response_headers = HeaderMap::new();
            for (name, value) in upstream.headers() {
                if name != "content-length" && name != "transfer-encoding" {
                    response_headers.insert(name.clone(), value.clone());
                }
            }
            let bytes = upstream.bytes().await.unwrap_or_default();
            (status, response_headers, Body::from(bytes)).into_response()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
