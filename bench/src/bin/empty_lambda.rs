//! The harness ceiling: an empty `lambda_http` handler. Measured beside the `api` binary under
//! the same Lambda runtime emulator, it shows how much of a request's cost is the harness's.

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(|_: Request| async {
        Ok::<_, Error>(Response::new(Body::Empty))
    }))
    .await
}
