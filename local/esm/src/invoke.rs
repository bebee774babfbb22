//! How an event-source mapping calls the function: the real binary through the Lambda
//! runtime API (the emulator), or a handler in the same process (the embedded dev mode and
//! benchmarks).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use serde_json::Value;

use catalog_core::streams::RawEvent;

use crate::emulator::Emulator;

/// Why an invocation did not produce a response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InvokeError {
    /// The function returned an error (or panicked).
    #[error("function error: {0}")]
    Function(String),
    /// The function did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// Calls the function with an event and returns what it answered.
#[async_trait]
pub trait Invoker: Send + Sync {
    /// One invocation.
    async fn invoke(&self, payload: Value) -> Result<Value, InvokeError>;
}

/// A handler in this process.
pub struct InProcess<F>(pub F);

#[async_trait]
impl<F> Invoker for InProcess<F>
where
    F: Fn(Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync,
{
    async fn invoke(&self, payload: Value) -> Result<Value, InvokeError> {
        (self.0)(payload).await.map_err(InvokeError::Function)
    }
}

/// A stream function's handler in this process: it gets the event as the Lambda runtime
/// hands it over (a [`RawEvent`]) and its response goes back as JSON, as the runtime sends it;
/// an error is a function error.
pub fn stream_handler<F, Fut, R, E>(
    handle: F,
) -> InProcess<impl Fn(Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync>
where
    F: Fn(RawEvent) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<R, E>> + Send + 'static,
    R: serde::Serialize,
    E: std::fmt::Display,
{
    use futures::FutureExt;
    let handle = std::sync::Arc::new(handle);
    InProcess(move |event: Value| {
        let handle = handle.clone();
        async move {
            let event = RawEvent::from_value(&event).map_err(|e| e.to_string())?;
            let response = handle(event).await.map_err(|e| e.to_string())?;
            serde_json::to_value(response).map_err(|e| e.to_string())
        }
        .boxed()
    })
}

/// A function binary running under the runtime API emulator, as one Lambda environment.
///
/// ## Behavior
/// - Invocations are delivered one at a time, after the previous one (and every extension)
///   finished, as Lambda does for one environment.
/// - An invocation that does not answer within the timeout fails; the process is then
///   killed and started again (a new environment).
pub struct FunctionProcess {
    emulator: Emulator,
    binary: std::path::PathBuf,
    env: Vec<(String, String)>,
    timeout: Duration,
    child: tokio::sync::Mutex<tokio::process::Child>,
}

impl FunctionProcess {
    /// Starts `binary` with `env` against a fresh emulator.
    pub async fn start(
        binary: &Path,
        env: Vec<(String, String)>,
        timeout: Duration,
    ) -> std::io::Result<FunctionProcess> {
        let emulator = Emulator::start().await;
        let child = spawn(binary, &env, &emulator.runtime_api())?;
        Ok(FunctionProcess {
            emulator,
            binary: binary.to_owned(),
            env,
            timeout,
            child: tokio::sync::Mutex::new(child),
        })
    }
}

fn spawn(
    binary: &Path,
    env: &[(String, String)],
    runtime_api: &str,
) -> std::io::Result<tokio::process::Child> {
    tokio::process::Command::new(binary)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
        .env(
            "AWS_LAMBDA_FUNCTION_NAME",
            binary.file_name().map_or_else(
                || "function".to_owned(),
                |n| n.to_string_lossy().into_owned(),
            ),
        )
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

#[async_trait]
impl Invoker for FunctionProcess {
    async fn invoke(&self, payload: Value) -> Result<Value, InvokeError> {
        match self.emulator.try_invoke(payload, self.timeout).await {
            Ok(invocation) if invocation.is_error => {
                Err(InvokeError::Function(invocation.response.to_string()))
            }
            Ok(invocation) => Ok(invocation.response),
            Err(reason) => {
                let mut child = self.child.lock().await;
                let _ = child.kill().await;
                match spawn(&self.binary, &self.env, &self.emulator.runtime_api()) {
                    Ok(fresh) => *child = fresh,
                    Err(e) => tracing::error!(error.message = %e, "cannot restart the function"),
                }
                Err(InvokeError::Timeout(reason))
            }
        }
    }
}
