//! Per-test services and a way to run the `api` binary as Lambda would.

use std::process::Stdio;
use std::sync::Arc;

use catalog_core::ExpectedVersion;
use catalog_core::config::TableNames;
use catalog_core::model::{Currency, Money, Product, ProductId};
use catalog_core::store::ProductWriter;
use catalog_core::store::dynamo::DynamoStore;
use catalog_core::store::dynamo::schema::create_tables;
use integration_tests::{dynamodb_client, dynamodb_endpoint, redis_node, unique_name};
use serde_json::Value;

/// A test's own tables and key prefix on the shared moto and Redis.
pub struct Services {
    pub tables: TableNames,
    pub prefix: String,
    pub store: Arc<DynamoStore>,
}

impl Services {
    pub async fn new() -> Services {
        let tables = TableNames {
            catalog: unique_name("catalog"),
            views: unique_name("views"),
            stats: unique_name("stats"),
        };
        let client = dynamodb_client();
        create_tables(&client, &tables)
            .await
            .expect("create tables on moto");
        Services {
            store: Arc::new(DynamoStore::new(client, tables.clone())),
            prefix: format!("{}:", unique_name("api")),
            tables,
        }
    }

    /// Environment of an `api` process using these services.
    pub fn env(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = [
            ("CATALOG_TABLE", self.tables.catalog.as_str()),
            ("VIEWS_TABLE", self.tables.views.as_str()),
            ("STATS_TABLE", self.tables.stats.as_str()),
            ("CACHE_KEY_PREFIX", self.prefix.as_str()),
            ("ADMIN_TOKEN", "test-token"),
            ("WRITE_TOKEN", "test-write-token"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("REDIS_TIMEOUT_MS", "500"),
            ("RUST_LOG", "warn"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.push(("DYNAMODB_ENDPOINT".into(), dynamodb_endpoint()));
        env.push(("REDIS_ENDPOINTS".into(), redis_node()));
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        env
    }

    pub async fn seed(&self, id: &str, name: &str) -> Product {
        self.store
            .put_product(&product(id, name), ExpectedVersion::Absent)
            .await
            .unwrap()
    }
}

/// Serves the router over `state` on a loopback port; returns its base URL.
pub async fn serve(state: api::AppState) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, state));
    base
}

pub fn product(id: &str, name: &str) -> Product {
    Product {
        id: ProductId::parse(id).unwrap(),
        name: name.into(),
        description: String::new(),
        category: "kitchen".into(),
        price: Money::new(2599, Currency::parse("EUR").unwrap()),
        active: true,
        created_at: 1_790_000_000_000,
        updated_at: 1_790_000_000_000,
        version: 0,
    }
}

/// The `api` binary running against a runtime API, killed on drop.
pub struct ApiProcess {
    _child: tokio::process::Child,
}

impl ApiProcess {
    pub fn start(runtime_api: &str, env: Vec<(String, String)>) -> ApiProcess {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_api"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env)
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", "api")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the api binary");
        ApiProcess { _child: child }
    }
}

/// An API Gateway HTTP API (v2) GET event for `path`, from the fixture.
pub fn get_event(path: &str) -> Value {
    let mut event: Value = serde_json::from_str(include_str!(
        "../../../../tests/fixtures/apigw-v2-http-get.json"
    ))
    .unwrap();
    event["rawPath"] = path.into();
    event["requestContext"]["http"]["path"] = path.into();
    event
}

/// The HTTP response inside a Lambda response to an API Gateway event.
pub struct HttpResponse {
    pub status: u64,
    pub headers: Value,
    pub body: Value,
}

pub fn http_response(lambda_response: &Value) -> HttpResponse {
    let body = lambda_response["body"].as_str().unwrap_or("null");
    HttpResponse {
        status: lambda_response["statusCode"].as_u64().unwrap_or(0),
        headers: lambda_response["headers"].clone(),
        body: serde_json::from_str(body).unwrap_or(Value::Null),
    }
}
