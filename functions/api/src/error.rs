//! API errors: every failure becomes `{"error": "<code>", "message": "<fixed text>"}` with its
//! status. Internal details go to the log once and never to the client.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use catalog_core::model::ValidationError;
use serde::Serialize;

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code, e.g. `invalid_request`.
    pub error: &'static str,
    /// Fixed human-readable text for the code.
    pub message: &'static str,
    /// For `invalid_request`: which rule the request broke (never echoes the input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum ApiError {
    /// 400: a bad id, body or query.
    Invalid(String),
    /// 401: missing or wrong admin credentials.
    Unauthorized,
    /// 404: the resource does not exist.
    NotFound,
    /// 404: no route has this path.
    NoRoute,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 409: a conditional write lost (stale `expected_version`) or the state forbids it.
    Conflict,
    /// 413: the body is larger than allowed.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 503: DynamoDB is unavailable and no stale copy exists; retry shortly.
    Unavailable(catalog_core::Error),
    /// 500: a bug or an unexpected failure.
    Internal(String),
}

impl ApiError {
    /// A 400 for a broken validation rule.
    pub fn invalid(e: &ValidationError) -> Self {
        ApiError::Invalid(e.to_string())
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Invalid(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request is invalid.",
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Missing or invalid credentials.",
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "The resource does not exist.",
            ),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "no_route", "No such route."),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This method is not allowed on this route.",
            ),
            ApiError::Conflict => (
                StatusCode::CONFLICT,
                "conflict",
                "The resource changed or is in a state that forbids this; read it again and retry.",
            ),
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large.",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "The request body must be JSON.",
            ),
            ApiError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "The service is temporarily unavailable; retry shortly.",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal error.",
            ),
        }
    }
}

impl From<catalog_core::Error> for ApiError {
    fn from(e: catalog_core::Error) -> Self {
        use catalog_core::Error;
        match e {
            Error::Invalid(v) => ApiError::invalid(&v),
            Error::NotFound { .. } => ApiError::NotFound,
            Error::VersionConflict { .. } => ApiError::Conflict,
            e if e.is_unavailable() => ApiError::Unavailable(e),
            Error::Shared(inner) => match std::sync::Arc::try_unwrap(inner) {
                Ok(e) => ApiError::from(e),
                Err(shared) => ApiError::Internal(format!("{shared:?}")),
            },
            other => ApiError::Internal(format!("{other:?}")),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
            _ => ApiError::Invalid("body: not valid JSON for this endpoint".into()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(_: PathRejection) -> Self {
        ApiError::Invalid("path: malformed parameter".into())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(_: QueryRejection) -> Self {
        ApiError::Invalid("query: malformed or unknown parameter".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let detail = match &self {
            ApiError::Invalid(detail) => Some(detail.clone()),
            ApiError::Unavailable(source) => {
                tracing::warn!(error.message = %source, error.source = ?std::error::Error::source(source), "store unavailable; answering 503");
                None
            }
            ApiError::Internal(details) => {
                tracing::error!(error.details = %details, "internal error; answering 500");
                None
            }
            _ => None,
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: code,
                message,
                detail,
            }),
        )
            .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
