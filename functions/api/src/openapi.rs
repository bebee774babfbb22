//! The OpenAPI 3 document, generated from the handlers' annotations: the router and the
//! document are built from the same list, so they cannot drift apart.

use utoipa::openapi::RefOr;
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routes::{admin, feed, offers, products, status};
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
        (name = "status", description = "The live status page; its figures come from the admin routes"),
    )
)]
struct ApiDoc;

/// Declares the schemes the paths refer to: `admin_token` (`ADMIN_TOKEN`, the admin routes)
/// and `write_token` (`WRITE_TOKEN`, product and offer writes), each as a bearer token or, for
/// requests whose `Authorization` carries a SigV4 signature (IAM), in `X-Api-Token`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue};
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
            components.add_security_scheme(
                format!("{name}_header"),
                SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                    "X-Api-Token",
                    &format!("{what}, when Authorization carries a SigV4 signature (IAM)"),
                ))),
            );
        }
    }
}

/// Finishes the document once every route has added its schemas: tagged enums whose
/// variants refuse unknown fields (`deny_unknown_fields`) are closed, as utoipa closes plain
/// structs but not enum variants.
pub fn finish(openapi: &mut utoipa::openapi::OpenApi, key_prefix: &str) {
    use utoipa::openapi::schema::AdditionalProperties;
    add_links(openapi);
    {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        // The keys an admin may name, with this deployment's prefix.
        if let Some(RefOr::T(Schema::Object(keys))) = components.schemas.get_mut("InvalidateKeys")
            && let Some(RefOr::T(Schema::Array(array))) = keys.properties.get_mut("keys")
        {
            let escaped: String = key_prefix
                .chars()
                .flat_map(|c| {
                    let special = "\\^$.|?*+()[]{}/".contains(c);
                    special.then_some('\\').into_iter().chain([c])
                })
                .collect();
            array.items = utoipa::openapi::schema::ArrayItems::RefOrSchema(Box::new(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(format!(
                        "^{escaped}(product|summary|stats):\\{{[A-Za-z0-9_-]{{1,64}}\\}}$"
                    )))
                    .into(),
            ));
        }
        for name in ["OfferPatch"] {
            if let Some(RefOr::T(Schema::OneOf(one_of))) = components.schemas.get_mut(name) {
                for variant in &mut one_of.items {
                    if let RefOr::T(Schema::Object(object)) = variant {
                        object.additional_properties =
                            Some(Box::new(AdditionalProperties::FreeForm(false)));
                    }
                }
            }
        }
    }
}

/// Where a write's answer leads (OpenAPI links): the product or offer it made can be read,
/// changed and counted with the id in the answer. Clients and stateful API testers
/// (schemathesis) follow them to chain calls.
/// One link: from the responses (`statuses`) of `method path`, to `target` with its `id`.
struct LinkSpec(
    &'static str,
    HttpMethod,
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static str,
);

const LINKS: &[LinkSpec] = &[
    // (path, method, statuses, link name, target operation, `id` of the target)
    LinkSpec(
        "/products/{id}",
        HttpMethod::Put,
        &["200", "201"],
        "GetProduct",
        "get_product",
        "$response.body#/id",
    ),
    LinkSpec(
        "/products/{id}",
        HttpMethod::Put,
        &["200", "201"],
        "ReplaceProduct",
        "put_product",
        "$response.body#/id",
    ),
    LinkSpec(
        "/products/{id}",
        HttpMethod::Put,
        &["200", "201"],
        "CreateOffer",
        "create_offer",
        "$response.body#/id",
    ),
    LinkSpec(
        "/products/{id}",
        HttpMethod::Put,
        &["200", "201"],
        "GetStats",
        "stats",
        "$response.body#/id",
    ),
    LinkSpec(
        "/products/{id}",
        HttpMethod::Put,
        &["200", "201"],
        "RecordView",
        "record_view",
        "$response.body#/id",
    ),
    LinkSpec(
        "/products/{id}/offers",
        HttpMethod::Post,
        &["201"],
        "PatchOffer",
        "patch_offer",
        "$response.body#/id",
    ),
    LinkSpec(
        "/products/{id}/offers",
        HttpMethod::Post,
        &["201"],
        "GetProduct",
        "get_product",
        "$response.body#/product_id",
    ),
    LinkSpec(
        "/offers/{id}",
        HttpMethod::Patch,
        &["200"],
        "PatchOffer",
        "patch_offer",
        "$response.body#/id",
    ),
    LinkSpec(
        "/offers/{id}",
        HttpMethod::Patch,
        &["200"],
        "GetProduct",
        "get_product",
        "$response.body#/product_id",
    ),
];

fn add_links(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::link::LinkBuilder;
    for LinkSpec(path, method, statuses, name, operation_id, id) in LINKS {
        let Some(operation) = openapi
            .paths
            .paths
            .get_mut(*path)
            .and_then(|item| operation_mut(item, method))
        else {
            continue;
        };
        for status in *statuses {
            if let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) {
                response.links.insert(
                    (*name).to_owned(),
                    RefOr::T(
                        LinkBuilder::new()
                            .operation_id(*operation_id)
                            .parameter("id", *id)
                            .build(),
                    ),
                );
            }
        }
    }
}

fn operation_mut<'a>(
    item: &'a mut utoipa::openapi::path::PathItem,
    method: &HttpMethod,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    match method {
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        _ => None,
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
        .routes(routes!(status::page))
}

/// What the document says of a product, offer or event id: 1 to 64 of `[A-Za-z0-9_-]`.
pub struct IdString;

impl utoipa::PartialSchema for IdString {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(64))
            .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
            .into()
    }
}

impl utoipa::ToSchema for IdString {}
