//! The crate's one error type, and its classification for callers that retry or map to HTTP.

use std::time::Duration;

use crate::config::ConfigError;
use crate::model::ValidationError;

/// A boxed error from a dependency, kept as a source so logs show the whole chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the shared crate.
///
/// Variants keep their source instead of flattening it into a string, so the log line
/// written once at the edge carries the full cause while clients only see a fixed message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that failed validation: bad id, field or payload.
    #[error(transparent)]
    Invalid(#[from] ValidationError),

    /// Something the operation depends on does not exist (e.g. the product of a new offer).
    #[error("{entity} {id} not found")]
    NotFound {
        /// What kind of entity.
        entity: &'static str,
        /// Its id.
        id: String,
    },

    /// A conditional write lost: the stored version is not the one the caller expected.
    #[error("version conflict on {entity} {id}: expected {expected}")]
    VersionConflict {
        /// What kind of entity (`product`, `offer`).
        entity: &'static str,
        /// The entity's id.
        id: String,
        /// The version the caller expected to replace (`none` for a create).
        expected: ExpectedVersion,
    },

    /// A DynamoDB call failed.
    #[error("DynamoDB {op} failed")]
    Dynamo {
        /// The operation, e.g. `Query`.
        op: &'static str,
        /// Whether the failure is transient (throttling, timeouts, 5xx, network).
        retryable: bool,
        /// The SDK error.
        #[source]
        source: BoxError,
    },

    /// A Redis call failed.
    #[error("Redis {op} failed")]
    Redis {
        /// The command or step, e.g. `MGET`.
        op: &'static str,
        /// The client error.
        #[source]
        source: redis::RedisError,
    },

    /// A Redis key holds another type than the command expects (`WRONGTYPE`): the data is
    /// unusable, but Redis itself is healthy.
    #[error("Redis {op} hit a key holding another type")]
    WrongType {
        /// The command.
        op: &'static str,
    },

    /// Redis is not connected yet (a background connect is under way).
    #[error("Redis is not connected")]
    NotConnected,

    /// An operation did not finish within its deadline.
    #[error("{op} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        op: &'static str,
        /// The deadline that passed.
        after: Duration,
    },

    /// A value could not be converted between the model and its stored form.
    #[error("cannot encode or decode {what}")]
    Codec {
        /// What was being converted.
        what: &'static str,
        /// The codec's error.
        #[source]
        source: BoxError,
    },

    /// The ElastiCache control plane refused, or does not know the cache.
    #[error("ElastiCache control plane: {reason}")]
    ControlPlane {
        /// What it said.
        reason: String,
    },

    /// Configuration was missing or malformed.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// The error of a load this caller waited on (single flight) instead of running itself.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),
}

impl Error {
    /// Whether trying the same operation again later may succeed.
    ///
    /// Throttling, timeouts, dropped connections and service-side 5xx are retryable;
    /// bad input, conflicts and decode failures are not, because retrying them repeats them.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Dynamo { retryable, .. } => *retryable,
            Error::Redis { source, .. } => {
                source.is_timeout()
                    || source.is_connection_dropped()
                    || source.is_io_error()
                    || source.is_connection_refusal()
            }
            Error::Timeout { .. } | Error::NotConnected | Error::ControlPlane { .. } => true,
            Error::Shared(inner) => inner.is_retryable(),
            Error::Invalid(_)
            | Error::NotFound { .. }
            | Error::VersionConflict { .. }
            | Error::Codec { .. }
            | Error::WrongType { .. }
            | Error::Config(_) => false,
        }
    }

    /// Whether the backing store (DynamoDB) is unavailable, as opposed to the request being wrong.
    /// The API answers these with 503 and a retry hint.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Dynamo { retryable, .. } => *retryable,
            Error::Timeout { .. } => true,
            Error::Shared(inner) => inner.is_unavailable(),
            _ => false,
        }
    }

    /// Wraps a Redis error with the command that produced it; `WRONGTYPE` replies become
    /// [`Error::WrongType`].
    pub fn redis(op: &'static str, source: redis::RedisError) -> Self {
        if source.code() == Some("WRONGTYPE") {
            Error::WrongType { op }
        } else {
            Error::Redis { op, source }
        }
    }

    /// Wraps an encoding or decoding error.
    pub fn codec(what: &'static str, source: impl Into<BoxError>) -> Self {
        Error::Codec {
            what,
            source: source.into(),
        }
    }
}

/// The version a conditional write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// The entity must not exist yet.
    Absent,
    /// The entity must exist with exactly this version.
    Exactly(u64),
}

impl ExpectedVersion {
    /// The version the entity will have after a successful write.
    pub fn next(self) -> u64 {
        match self {
            ExpectedVersion::Absent => 1,
            ExpectedVersion::Exactly(v) => v.saturating_add(1),
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Absent => f.write_str("none"),
            ExpectedVersion::Exactly(v) => write!(f, "version {v}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_retryable_and_conflicts_are_not() {
        let timeout = Error::Timeout {
            op: "GET",
            after: Duration::from_millis(50),
        };
        let conflict = Error::VersionConflict {
            entity: "product",
            id: "p1".into(),
            expected: ExpectedVersion::Exactly(3),
        };
        assert!(timeout.is_retryable());
        assert!(!conflict.is_retryable());
        assert_eq!(
            conflict.to_string(),
            "version conflict on product p1: expected version 3"
        );
    }

    #[test]
    fn a_create_expects_absence_and_yields_version_one() {
        assert_eq!(ExpectedVersion::Absent.next(), 1);
        assert_eq!(ExpectedVersion::Exactly(7).next(), 8);
    }
}
