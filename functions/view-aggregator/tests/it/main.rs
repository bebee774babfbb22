//! The `view-aggregator` binary under the Lambda runtime API, fed by the local event-source
//! mapping from a real DynamoDB stream (moto), counters on moto, products through a real
//! Redis. Run with `make test`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod through_the_binary;
