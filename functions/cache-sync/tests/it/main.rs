//! The `cache-sync` binary under the Lambda runtime API, fed by the local event-source mapping
//! from the catalog table's real stream (moto), keeping a real Redis (standalone and cluster)
//! in step. Run with `make test`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod through_the_binary;
