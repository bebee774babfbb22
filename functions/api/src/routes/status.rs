//! `GET /status`: a live status page (one HTML file, no build step). It holds no figures
//! itself: its script reads the admin routes with the admin token the user types in, so the
//! page is public and reveals nothing without the token.

use std::sync::LazyLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

/// The page, compiled in.
pub const PAGE: &str = include_str!("../status.html");

/// Content-Security-Policy: the page's own inline script (by its hash) and style, and fetches
/// to this origin only; no other script, frame or form target.
static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let hash =
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(inline_script(PAGE)));
    let policy = format!(
        "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    // Base64 and ASCII always make a header value; if not, the strictest policy (the unit
    // test below would fail first).
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
});

/// The text between the page's one `<script>` and `</script>`: what the browser hashes.
fn inline_script(page: &str) -> &str {
    page.split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map_or("", |(script, _)| script)
}

#[utoipa::path(
    get, path = "/status", tag = "status",
    responses((status = 200, description = "The status page (HTML); its figures come from the admin routes", content_type = "text/html"))
)]
/// The live status page: hit ratios by tier, health, job runs, breaker, Redis memory.
pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, POLICY.clone()),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        PAGE,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_one_inline_script_and_the_policy_names_a_hash_not_unsafe_inline() {
        // That the hash matches what a browser computes is checked by the browser test
        // (scripts/browser-test.sh): with a wrong hash the page never leaves its first state.
        assert!(inline_script(PAGE).contains("fetchAdmin"));
        assert_eq!(PAGE.matches("<script").count(), 1, "one script only");
        let policy = POLICY.to_str().unwrap();
        assert!(policy.contains("script-src 'sha256-"));
        assert!(!policy.contains("script-src 'unsafe-inline'"));
        assert!(policy.contains("connect-src 'self'"));
    }
}
