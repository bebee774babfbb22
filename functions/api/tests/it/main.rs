//! The API against real services: the router over DynamoDB (moto) and Redis, and the `api`
//! binary under a Lambda runtime (the freeze-aware emulator, and `cargo lambda watch`).
//! Run with `make test`, which starts the services.

// Test code: a failed unwrap is a failed test with its location, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dynamo_faults;
mod lambda_runtime;
mod real_services;
mod redis_faults;
mod support;
