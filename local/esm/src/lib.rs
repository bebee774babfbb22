//! Lambda's event-source mapping for DynamoDB streams, run locally, so the stream functions
//! are tested (and `make dev` runs them) the way AWS runs them.
//!
//! # Layout
//! - [`source`]: where records come from: a real stream on moto (DescribeStream,
//!   GetShardIterator, GetRecords) or the in-memory stream of the embedded store.
//! - [`invoke`]: how the function is called: the real binary under the runtime API emulator,
//!   or a handler in the same process.
//! - [`mapping`]: the mapping itself: batching, tumbling windows with state, partial batch
//!   failures, bisect on error, retries, record age and the on-failure destination.
//! - [`emulator`]: the Lambda runtime API emulator (also used by the API's tests).

pub mod emulator;
pub mod invoke;
pub mod mapping;
pub mod source;
