//! Extractors whose rejections are API errors (JSON bodies, never axum's plain-text ones), and
//! parsers for path and query values.

use axum::extract::FromRequest;
use catalog_core::model::{OfferId, ProductId};

use crate::error::ApiError;

/// A JSON body; malformed, oversized or non-JSON bodies are 400, 413 and 415 JSON errors.
///
/// A whole number written with a fraction (`267.0`) is read as the integer it is, as JSON
/// Schema (and so the OpenAPI document) counts it an integer. Every body is an object: a
/// derived `Deserialize` would also read a struct from an array of its fields.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) =
            axum::Json::<serde_json::Value>::from_request(request, state).await?;
        if !value.is_object() {
            return Err(ApiError::Invalid("body: must be a JSON object".into()));
        }
        serde_json::from_value(whole_numbers_as_integers(value))
            .map(ApiJson)
            .map_err(|_| ApiError::Invalid("body: not valid JSON for this endpoint".into()))
    }
}

/// Largest integer a JSON number with a fraction can hold exactly (2^53).
const EXACT_FLOAT_INTEGER: f64 = 9_007_199_254_740_992.0;

fn whole_numbers_as_integers(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT_FLOAT_INTEGER => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => {
            Value::Array(items.into_iter().map(whole_numbers_as_integers).collect())
        }
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(k, v)| (k, whole_numbers_as_integers(v)))
                .collect(),
        ),
        other => other,
    }
}

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
    // 1 to 9 ASCII digits, as the document's pattern says (no sign, no overflow).
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let amount: i64 = digits.parse().map_err(|_| invalid())?;
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
        for bad in [
            "",
            "h",
            "-5m",
            "+5m",
            "1w",
            "1.5h",
            "1234567890",
            "99999999999999999999d",
        ] {
            assert!(duration_ms("within", bad).is_err(), "{bad}");
        }
    }
}
