//! `PATCH /dev/store/products/{id}`: a write straight to the store, as the console, another
//! service or a script would make it. It goes around the API (no invalidation, no cache at
//! all), so what the tour shows next is cache-sync following the store's stream. Only
//! `make dev` serves it; the API never does. It is a write, so it needs the write token.

use std::sync::Arc;

use api::auth::{BearerToken, presents};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
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

/// What the route needs: the store, and the token a writer presents.
#[derive(Clone)]
struct Direct {
    catalog: Arc<dyn CatalogStore>,
    write_token: Option<BearerToken>,
}

/// The dev-only routes, to merge into the API's router.
pub fn routes(catalog: Arc<dyn CatalogStore>, write_token: Option<BearerToken>) -> Router {
    Router::new()
        .route("/dev/store/products/{id}", patch(write_product))
        .with_state(Direct {
            catalog,
            write_token,
        })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

async fn write_product(
    State(Direct {
        catalog,
        write_token,
    }): State<Direct>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Result<Json<Patch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if !presents(&headers, write_token.as_ref()) {
        return error(StatusCode::UNAUTHORIZED, "the write token is required");
    }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use axum::body::Body;
    use axum::http::Request;
    use catalog_core::model::Currency;
    use catalog_core::store::memory::MemoryStore;
    use catalog_core::store::{ProductReader, ProductWriter};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn a_direct_write_needs_the_write_token() {
        let store = Arc::new(MemoryStore::new());
        let id = ProductId::parse("p1").unwrap();
        let product = Product {
            id: id.clone(),
            name: "Kettle".into(),
            description: String::new(),
            category: "kitchen".into(),
            price: Money::new(100, Currency::parse("EUR").unwrap()),
            active: true,
            created_at: 1_790_000_000_000,
            updated_at: 1_790_000_000_000,
            version: 0,
        };
        store
            .put_product(&product, ExpectedVersion::Absent)
            .await
            .unwrap();
        let token = BearerToken::new(&"the-write-token".to_owned().into());
        let app = routes(store.clone(), Some(token));
        let patch = |auth: Option<&str>| {
            let mut request =
                Request::patch("/dev/store/products/p1").header("content-type", "application/json");
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            request.body(Body::from(r#"{"name": "Renamed"}"#)).unwrap()
        };
        for auth in [None, Some("Bearer wrong")] {
            let response = app.clone().oneshot(patch(auth)).await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        }
        let name = |store: Arc<MemoryStore>| {
            let id = id.clone();
            async move {
                store
                    .product_detail(&id)
                    .await
                    .unwrap()
                    .unwrap()
                    .product
                    .name
            }
        };
        assert_eq!(name(store.clone()).await, "Kettle", "nothing was written");
        let response = app
            .oneshot(patch(Some("Bearer the-write-token")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(name(store).await, "Renamed");
    }
}
