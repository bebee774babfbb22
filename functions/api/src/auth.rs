//! Credentials checked in the function, whatever sits in front of it: the admin token for
//! `/admin/*`, the write token for product and offer writes. Each is kept only as a digest,
//! so comparisons are constant-time and of fixed length.
//!
//! A token comes as `Authorization: Bearer <token>`, or as `X-Api-Token: <token>` when the
//! `Authorization` header is taken: behind the HTTP API's IAM authorisation it carries the
//! request's SigV4 signature.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// A configured bearer token.
#[derive(Clone)]
pub struct BearerToken([u8; 32]);

impl BearerToken {
    /// From the configured secret.
    pub fn new(secret: &SecretString) -> Self {
        BearerToken(Sha256::digest(secret.expose_secret().as_bytes()).into())
    }

    /// Whether `presented` is the token, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        use subtle::ConstantTimeEq;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.ct_eq(&digest).into()
    }
}

/// The header that carries a token when `Authorization` holds a SigV4 signature.
pub const TOKEN_HEADER: &str = "x-api-token";

/// Whether the request presents `token` (never, without a token), as a bearer token or in
/// [`TOKEN_HEADER`].
pub fn presents(headers: &HeaderMap, token: Option<&BearerToken>) -> bool {
    let Some(token) = token else {
        return false;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let in_header = headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    [bearer, in_header]
        .into_iter()
        .flatten()
        .any(|presented| token.matches(presented))
}

/// Proof that the request carries the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if presents(&parts.headers, state.admin_token.as_ref()) {
            Ok(Admin)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}

/// Proof that the request carries the write token.
pub struct Writer;

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if presents(&parts.headers, state.write_token.as_ref()) {
            Ok(Writer)
        } else {
            Err(ApiError::Unauthorized)
        }
    }
}
