//! A Lambda Runtime API emulator with Lambda's freeze rule: the next invocation is delivered
//! only after the runtime has posted its response *and* every registered extension has asked
//! for its next event. That is the guarantee post-response work relies on, so tests and the
//! cold-start benchmark run the real function binary against this emulator.
//!
//! Implements the runtime API (`/2018-06-01/runtime/...`) and the extensions API
//! (`/2020-01-01/extension/...`) that `lambda_runtime` and `lambda-extension` use.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify, oneshot};

/// How long an invoked function has (the deadline sent to the function).
const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Something that happened, with its wall-clock time in epoch milliseconds (`at_ms`) and the
/// invocation it concerns (`request_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // the fields are the same on every variant, documented above
pub enum Event {
    /// The runtime received invocation `request_id`.
    Delivered { request_id: String, at_ms: i64 },
    /// The runtime posted the response of `request_id`.
    Responded { request_id: String, at_ms: i64 },
    /// An extension asked for its next event after invocation `request_id`: it is done with it.
    ExtensionDone {
        request_id: String,
        extension: String,
        at_ms: i64,
    },
    /// The runtime reported an init error.
    InitError { at_ms: i64 },
}

/// The outcome of one invocation.
#[derive(Debug)]
pub struct Invocation {
    /// The request id.
    pub request_id: String,
    /// What the function returned (or its error document).
    pub response: Value,
    /// Whether the runtime reported an error.
    pub is_error: bool,
    /// When the response was posted (epoch ms).
    pub responded_at_ms: i64,
}

struct Pending {
    request_id: String,
    payload: Value,
    reply: oneshot::Sender<Invocation>,
}

struct Current {
    request_id: String,
    responded: bool,
    extensions_done: Vec<String>,
    reply: Option<oneshot::Sender<Invocation>>,
}

#[derive(Default)]
struct Extension {
    name: String,
    ready: bool,
    next_event: Option<Value>,
}

#[derive(Default)]
struct Emulation {
    queue: VecDeque<Pending>,
    current: Option<Current>,
    extensions: HashMap<String, Extension>,
    events: Vec<Event>,
}

impl Emulation {
    /// Whether the environment is frozen: nothing in flight, every extension waiting.
    fn idle(&self) -> bool {
        let current_done = self.current.as_ref().is_none_or(|c| {
            c.responded
                && self
                    .extensions
                    .keys()
                    .all(|id| c.extensions_done.contains(id))
        });
        current_done && self.extensions.values().all(|e| e.ready)
    }
}

#[derive(Default)]
struct Shared {
    state: Mutex<Emulation>,
    changed: Notify,
}

/// A running emulator.
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Emulator {
    /// Starts on a free loopback port.
    pub async fn start() -> Emulator {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(runtime_next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(runtime_response),
            )
            .route(
                "/2018-06-01/runtime/invocation/{id}/error",
                post(runtime_error),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .route("/2020-01-01/extension/register", post(extension_register))
            .route("/2020-01-01/extension/event/next", get(extension_next))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("cannot bind the emulator: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Emulator {
            addr,
            shared,
            server,
        }
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    /// Invokes the function with `payload` and waits for its response (at most `timeout`);
    /// panics if none comes (tests that expect an answer).
    pub async fn invoke(&self, payload: Value, timeout: Duration) -> Invocation {
        match self.try_invoke(payload, timeout).await {
            Ok(invocation) => invocation,
            Err(e) => panic!("{e}; events: {:?}", self.events().await),
        }
    }

    /// Invokes the function with `payload` and waits for its response (at most `timeout`).
    /// An invocation that gets no response in time is an error, as a Lambda timeout is; the
    /// function is then presumed dead (callers restart it) and the invocation is dropped.
    pub async fn try_invoke(
        &self,
        payload: Value,
        timeout: Duration,
    ) -> Result<Invocation, String> {
        let (reply, response) = oneshot::channel();
        {
            let mut state = self.shared.state.lock().await;
            state.queue.push_back(Pending {
                request_id: uuid::Uuid::new_v4().to_string(),
                payload,
                reply,
            });
        }
        self.shared.changed.notify_waiters();
        match tokio::time::timeout(timeout, response).await {
            Ok(Ok(invocation)) => Ok(invocation),
            _ => {
                // Forget the invocation, so a restarted function starts afresh.
                let mut state = self.shared.state.lock().await;
                state.current = None;
                state.queue.clear();
                drop(state);
                self.shared.changed.notify_waiters();
                Err(format!("the function did not answer within {timeout:?}"))
            }
        }
    }

    /// Everything that happened so far.
    pub async fn events(&self) -> Vec<Event> {
        self.shared.state.lock().await.events.clone()
    }

    /// Names of the registered extensions.
    pub async fn extensions(&self) -> Vec<String> {
        let state = self.shared.state.lock().await;
        state.extensions.values().map(|e| e.name.clone()).collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Waits until `ready` returns a value, re-checking whenever the state changes.
async fn wait_for<T>(shared: &Shared, mut ready: impl FnMut(&mut Emulation) -> Option<T>) -> T {
    loop {
        let changed = shared.changed.notified();
        {
            let mut state = shared.state.lock().await;
            if let Some(value) = ready(&mut state) {
                drop(state);
                shared.changed.notify_waiters();
                return value;
            }
        }
        // Re-check now and then, so a lost wake-up can only delay, never hang.
        let _ = tokio::time::timeout(Duration::from_millis(50), changed).await;
    }
}

async fn runtime_next(State(shared): State<Arc<Shared>>) -> Response {
    let (request_id, payload) = wait_for(&shared, |state| {
        if !state.idle() || state.queue.is_empty() {
            return None;
        }
        let pending = state.queue.pop_front()?;
        let at_ms = now_ms();
        state.events.push(Event::Delivered {
            request_id: pending.request_id.clone(),
            at_ms,
        });
        let event = json!({
            "eventType": "INVOKE",
            "deadlineMs": at_ms + i64::try_from(INVOKE_TIMEOUT.as_millis()).unwrap_or(0),
            "requestId": pending.request_id,
            "invokedFunctionArn": "arn:aws:lambda:us-east-1:000000000000:function:api",
            "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-00000000-000000000000000000000000"},
        });
        for extension in state.extensions.values_mut() {
            extension.next_event = Some(event.clone());
        }
        state.current = Some(Current {
            request_id: pending.request_id.clone(),
            responded: false,
            extensions_done: Vec::new(),
            reply: Some(pending.reply),
        });
        Some((pending.request_id, pending.payload))
    })
    .await;
    let deadline = now_ms() + i64::try_from(INVOKE_TIMEOUT.as_millis()).unwrap_or(0);
    let mut response = Json(payload).into_response();
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("lambda-runtime-aws-request-id", request_id);
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:us-east-1:000000000000:function:api".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000".into(),
    );
    response
}

async fn complete(shared: &Shared, id: &str, body: &Bytes, is_error: bool) -> StatusCode {
    let mut state = shared.state.lock().await;
    let at_ms = now_ms();
    let Some(current) = state.current.as_mut().filter(|c| c.request_id == id) else {
        return StatusCode::BAD_REQUEST;
    };
    current.responded = true;
    if let Some(reply) = current.reply.take() {
        let _ = reply.send(Invocation {
            request_id: id.to_owned(),
            response: serde_json::from_slice(body).unwrap_or(Value::Null),
            is_error,
            responded_at_ms: at_ms,
        });
    }
    state.events.push(Event::Responded {
        request_id: id.to_owned(),
        at_ms,
    });
    drop(state);
    shared.changed.notify_waiters();
    StatusCode::ACCEPTED
}

async fn runtime_response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    complete(&shared, &id, &body, false).await
}

async fn runtime_error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    complete(&shared, &id, &body, true).await
}

async fn init_error(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared
        .state
        .lock()
        .await
        .events
        .push(Event::InitError { at_ms: now_ms() });
    StatusCode::ACCEPTED
}

async fn extension_register(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let name = headers
        .get("lambda-extension-name")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unnamed")
        .to_owned();
    let id = uuid::Uuid::new_v4().to_string();
    shared.state.lock().await.extensions.insert(
        id.clone(),
        Extension {
            name,
            ..Extension::default()
        },
    );
    let mut response =
        Json(json!({"functionName": "api", "functionVersion": "$LATEST", "handler": "bootstrap"}))
            .into_response();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response
            .headers_mut()
            .insert("lambda-extension-identifier", v);
    }
    response
}

async fn extension_next(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(id) = headers
        .get("lambda-extension-identifier")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return StatusCode::FORBIDDEN.into_response();
    };
    {
        let mut state = shared.state.lock().await;
        let Some(extension) = state.extensions.get_mut(&id) else {
            return StatusCode::FORBIDDEN.into_response();
        };
        let name = extension.name.clone();
        let was_ready = extension.ready;
        extension.ready = true;
        // Asking for the next event means it is done with the current invocation.
        let at_ms = now_ms();
        let done = state
            .current
            .as_mut()
            .filter(|_| was_ready)
            .and_then(|current| {
                (!current.extensions_done.contains(&id)).then(|| {
                    current.extensions_done.push(id.clone());
                    current.request_id.clone()
                })
            });
        if let Some(request_id) = done {
            state.events.push(Event::ExtensionDone {
                request_id,
                extension: name,
                at_ms,
            });
        }
    }
    shared.changed.notify_waiters();
    let event = wait_for(&shared, |state| {
        state.extensions.get_mut(&id)?.next_event.take()
    })
    .await;
    Json(event).into_response()
}
