//! `PATCH /dev/store/products/{id}`: a write straight to the store, as the console, another
//! service or a script would make it. It goes around the API (no invalidation, no cache at
//! all), so what the tour shows next is cache-sync following the store's stream. Only
//! `make dev` serves it; the API never does.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::patch;
use axum::{Json, Router};
use catalog_core::ExpectedVersion;
use catalog_core::clock::{Clock, SystemClock};
use catalog_core::model::{Money, Product, ProductId};
use catalog_core::store::CatalogStore;
use serde::Deserialize;
use serde_json::json;

/// The fields a direct write may change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    name: Option<String>,
    price: Option<Money>,
    active: Option<bool>,
}

/// The dev-only routes, to merge into the API's router.
pub fn routes(catalog: Arc<dyn CatalogStore>) -> Router {
    Router::new()
        .route("/dev/store/products/{id}", patch(write_product))
        .with_state(catalog)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn write_product(
    State(catalog): State<Arc<dyn CatalogStore>>,
    Path(raw): Path<String>,
    body: Result<Json<Patch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(id) = ProductId::parse(&raw) else {
        return error(StatusCode::BAD_REQUEST, "id: 1-64 of [A-Za-z0-9_-]");
    };
    let Json(patch) = match body {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let current = match catalog.products(std::slice::from_ref(&id)).await {
        Ok(mut found) => match found.pop() {
            Some(p) => p,
            None => return error(StatusCode::NOT_FOUND, "no such product"),
        },
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let updated = Product {
        name: patch.name.unwrap_or_else(|| current.name.clone()),
        price: patch.price.unwrap_or(current.price),
        active: patch.active.unwrap_or(current.active),
        updated_at: SystemClock.now_ms(),
        ..current.clone()
    };
    match catalog
        .put_product(&updated, ExpectedVersion::Exactly(current.version))
        .await
    {
        Ok(stored) => Json(stored).into_response(),
        Err(e @ catalog_core::Error::Invalid(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ catalog_core::Error::VersionConflict { .. }) => {
            error(StatusCode::CONFLICT, e.to_string())
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}
