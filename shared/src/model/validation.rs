//! Field rules shared by the model's parse and validate functions.

use std::borrow::Cow;

/// A field that failed validation, with a reason fit to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// The field (or id kind) that is wrong.
    pub field: &'static str,
    /// Why, in terms of the rule (never echoing arbitrary input back).
    pub reason: Cow<'static, str>,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        ValidationError {
            field,
            reason: reason.into(),
        }
    }
}

/// Longest id we accept. Ids become DynamoDB keys and Redis keys, so they are bounded.
pub(crate) const MAX_ID_LEN: usize = 64;

/// 1 to 64 of `[A-Za-z0-9_-]`: safe in Redis keys (no `*`, spaces, newlines, `{}` hash tags or `:`)
/// and in DynamoDB sort keys built with `#` separators.
pub(crate) fn slug(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() || value.len() > MAX_ID_LEN {
        return Err(ValidationError::new(field, "must be 1 to 64 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ValidationError::new(
            field,
            "may only contain letters, digits, '-' and '_'",
        ));
    }
    Ok(())
}

/// Free text of `min..=max` characters without control characters; blank counts as empty.
pub(crate) fn text(
    field: &'static str,
    value: &str,
    min: usize,
    max: usize,
) -> Result<(), ValidationError> {
    let chars = value.chars().count();
    if value.trim().chars().count() < min || chars > max {
        return Err(ValidationError::new(
            field,
            format!("must be {min} to {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Epoch milliseconds between 2000-01-01 and 2200-01-01: catches seconds-for-millis mix-ups.
pub(crate) fn timestamp(field: &'static str, millis: i64) -> Result<(), ValidationError> {
    const Y2000: i64 = 946_684_800_000;
    const Y2200: i64 = 7_258_118_400_000;
    if (Y2000..Y2200).contains(&millis) {
        Ok(())
    } else {
        Err(ValidationError::new(
            field,
            "must be epoch milliseconds between 2000 and 2200",
        ))
    }
}
