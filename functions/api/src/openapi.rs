//! The OpenAPI 3 document, generated from the handlers' annotations: the router and the
//! document are built from the same list, so they cannot drift apart.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routes::{admin, feed, offers, products};
use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "catalog-cache API",
        description = "Product catalog served from DynamoDB through a two-tier cache. Cached reads say where \
                       they came from (X-Cache: HIT-L1, HIT-L2, STALE, MISS, BYPASS), how old they are (Age) \
                       and carry an ETag. Errors are {\"error\", \"message\"} JSON."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "products", description = "Products, batches, stats and views; writes need the write token"),
        (name = "offers", description = "Offers and their expiry; writes need the write token"),
        (name = "feeds", description = "Ranked feeds"),
        (name = "admin", description = "Cache operations; bearer token required"),
    )
)]
struct ApiDoc;

/// Declares the two bearer schemes the paths refer to: `admin_token` (`ADMIN_TOKEN`, the
/// admin routes) and `write_token` (`WRITE_TOKEN`, product and offer writes).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, what) in [
            ("admin_token", "ADMIN_TOKEN: the admin routes"),
            ("write_token", "WRITE_TOKEN: product and offer writes"),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(what))
                        .build(),
                ),
            );
        }
    }
}

/// Every route of the API, with its OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(products::get_product, products::put_product))
        .routes(routes!(products::batch))
        .routes(routes!(products::stats))
        .routes(routes!(products::create_offer))
        .routes(routes!(products::record_view))
        .routes(routes!(offers::patch_offer))
        .routes(routes!(offers::expiring))
        .routes(routes!(feed::feed))
        .routes(routes!(admin::cache_stats))
        .routes(routes!(admin::cache_health))
        .routes(routes!(admin::warm))
        .routes(routes!(admin::invalidate))
        .routes(routes!(admin::jobs))
}
