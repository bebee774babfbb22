//! The harness ceiling: an empty `lambda_http` handler. Measured beside the `api` binary under
//! the same Lambda runtime emulator, it shows how much of a request's cost is the harness's.
//! On the same current-thread runtime as `api`: on the default multi-thread runtime the empty
//! handler itself is slower (its request hops between worker threads), which would flatter us.
//! `EMPTY_BODY_BYTES` makes it answer that many bytes, to tell the harness's cost of carrying a
//! product-sized body from the cost of our handler.

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let bytes: usize = std::env::var("EMPTY_BODY_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let body = "x".repeat(bytes);
    lambda_http::run(service_fn(move |_: Request| {
        let body = body.clone();
        async move {
            Ok::<_, Error>(Response::new(if body.is_empty() {
                Body::Empty
            } else {
                Body::Text(body)
            }))
        }
    }))
    .await
}
