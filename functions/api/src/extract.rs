//! Extractors whose rejections are API errors (JSON bodies, never axum's plain-text ones), and
//! parsers for path and query values.

use axum::extract::FromRequest;
use catalog_core::model::{OfferId, ProductId};

use crate::error::ApiError;

/// A JSON body; malformed, oversized or non-JSON bodies are 400, 413 and 415 JSON errors.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Query parameters; malformed values are a 400 JSON error.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// Path parameters; malformed values are a 400 JSON error.
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// A product id from a path or body.
pub fn product_id(raw: &str) -> Result<ProductId, ApiError> {
    ProductId::parse(raw).map_err(|e| ApiError::invalid(&e))
}

/// An offer id from a path or body.
pub fn offer_id(raw: &str) -> Result<OfferId, ApiError> {
    OfferId::parse(raw).map_err(|e| ApiError::invalid(&e))
}

/// A duration such as `3600`, `90s`, `30m`, `2h` or `1d`, in milliseconds.
pub fn duration_ms(field: &'static str, raw: &str) -> Result<i64, ApiError> {
    let invalid = || {
        ApiError::Invalid(format!(
            "{field}: a number with an optional unit s, m, h or d"
        ))
    };
    let (digits, unit_ms) = match raw.char_indices().last() {
        Some((i, 's')) => (&raw[..i], 1_000),
        Some((i, 'm')) => (&raw[..i], 60_000),
        Some((i, 'h')) => (&raw[..i], 3_600_000),
        Some((i, 'd')) => (&raw[..i], 86_400_000),
        _ => (raw, 1_000),
    };
    let amount: i64 = digits.parse().map_err(|_| invalid())?;
    if amount < 0 {
        return Err(invalid());
    }
    amount.checked_mul(unit_ms).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_reject_garbage() {
        assert_eq!(duration_ms("within", "90").unwrap(), 90_000);
        assert_eq!(duration_ms("within", "30m").unwrap(), 1_800_000);
        assert_eq!(duration_ms("within", "2h").unwrap(), 7_200_000);
        assert_eq!(duration_ms("within", "1d").unwrap(), 86_400_000);
        for bad in ["", "h", "-5m", "1w", "1.5h", "99999999999999999999d"] {
            assert!(duration_ms("within", bad).is_err(), "{bad}");
        }
    }
}
