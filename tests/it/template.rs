//! The SAM template and the code that creates tables for tests and dev must describe the same
//! tables, or what passes here would break in AWS.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use serde_norway::Value;

use crate::helpers::spawn_dynamo_env;

const TEMPLATE: &str = include_str!("../../infra/template.yaml");

/// What matters about a table's shape, from either source, as comparable strings.
#[derive(Debug, PartialEq, Eq)]
struct Shape {
    keys: BTreeSet<String>,
    attributes: BTreeSet<String>,
    indexes: BTreeSet<String>,
    stream: Option<String>,
    ttl: Option<String>,
}

fn yaml_str(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

fn shape_from_template(resource: &str) -> Shape {
    let template: Value = serde_norway::from_str(TEMPLATE).unwrap();
    let props = &template["Resources"][resource]["Properties"];
    let keys = |v: &Value| -> BTreeSet<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|k| {
                format!(
                    "{}:{}",
                    yaml_str(k, "AttributeName"),
                    yaml_str(k, "KeyType")
                )
            })
            .collect()
    };
    Shape {
        keys: keys(&props["KeySchema"]),
        attributes: props["AttributeDefinitions"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|a| {
                format!(
                    "{}:{}",
                    yaml_str(a, "AttributeName"),
                    yaml_str(a, "AttributeType")
                )
            })
            .collect(),
        indexes: props["GlobalSecondaryIndexes"]
            .as_sequence()
            .map(|gsis| {
                gsis.iter()
                    .map(|g| {
                        format!(
                            "{} {:?} {} {:?}",
                            yaml_str(g, "IndexName"),
                            keys(&g["KeySchema"]),
                            yaml_str(&g["Projection"], "ProjectionType"),
                            g["Projection"]["NonKeyAttributes"]
                                .as_sequence()
                                .map(|a| a
                                    .iter()
                                    .filter_map(|v| v.as_str())
                                    .collect::<BTreeSet<_>>())
                                .unwrap_or_default()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        stream: props["StreamSpecification"]["StreamViewType"]
            .as_str()
            .map(str::to_owned),
        ttl: props["TimeToLiveSpecification"]["AttributeName"]
            .as_str()
            .map(str::to_owned),
    }
}

async fn shape_from_dynamodb(client: &aws_sdk_dynamodb::Client, table: &str) -> Shape {
    let DescribeTableOutput { table: desc, .. } = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let desc = desc.unwrap();
    let keys = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| -> BTreeSet<String> {
        schema
            .iter()
            .map(|k| format!("{}:{}", k.attribute_name(), k.key_type().as_str()))
            .collect()
    };
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .time_to_live_description
        .and_then(|d| d.attribute_name);
    Shape {
        keys: keys(desc.key_schema()),
        attributes: desc
            .attribute_definitions()
            .iter()
            .map(|a| format!("{}:{}", a.attribute_name(), a.attribute_type().as_str()))
            .collect(),
        indexes: desc
            .global_secondary_indexes()
            .iter()
            .map(|g| {
                format!(
                    "{} {:?} {} {:?}",
                    g.index_name().unwrap_or_default(),
                    keys(g.key_schema()),
                    g.projection()
                        .and_then(|p| p.projection_type())
                        .map(|p| p.as_str())
                        .unwrap_or_default(),
                    g.projection()
                        .map(|p| p
                            .non_key_attributes()
                            .iter()
                            .map(String::as_str)
                            .collect::<BTreeSet<_>>())
                        .unwrap_or_default()
                )
            })
            .collect(),
        stream: desc
            .stream_specification()
            .and_then(|s| s.stream_view_type())
            .map(|v| v.as_str().to_owned()),
        ttl,
    }
}

#[tokio::test]
async fn template_tables_match_the_tables_the_code_creates() {
    let env = spawn_dynamo_env().await;
    let client = env.store.client();
    for (resource, table) in [
        ("CatalogTable", &env.tables.catalog),
        ("ViewsTable", &env.tables.views),
        ("StatsTable", &env.tables.stats),
    ] {
        assert_eq!(
            shape_from_dynamodb(client, table).await,
            shape_from_template(resource),
            "{resource} in infra/template.yaml differs from store::dynamo::schema"
        );
    }
}

/// The template with its intrinsic functions (`!Ref`, `!Sub`, ...) left as tagged values.
fn template() -> Value {
    serde_norway::from_str(TEMPLATE).unwrap()
}

/// The serverless functions: logical id to properties and metadata.
fn functions(template: &Value) -> Vec<(String, Value)> {
    template["Resources"]
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(_, resource)| resource["Type"].as_str() == Some("AWS::Serverless::Function"))
        .map(|(id, resource)| (id.as_str().unwrap().to_owned(), resource.clone()))
        .collect()
}

/// Package names under `functions/`: the binaries `cargo lambda build` can build.
fn function_packages() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../functions");
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|entry| {
            let path = entry.unwrap().path();
            let manifest = std::fs::read_to_string(path.join("Cargo.toml")).ok()?;
            path.join("src/main.rs").exists().then_some(())?;
            manifest.lines().find_map(|line| {
                let value = line.strip_prefix("name = ")?;
                Some(value.trim_matches('"').to_owned())
            })
        })
        .collect()
}

#[test]
fn the_template_deploys_every_function_binary_and_only_those() {
    let template = template();
    let binaries: BTreeSet<String> = functions(&template)
        .iter()
        .map(|(id, f)| {
            assert_eq!(
                f["Metadata"]["BuildMethod"].as_str(),
                Some("rust-cargolambda"),
                "{id}"
            );
            yaml_str(&f["Metadata"]["BuildProperties"], "Binary")
        })
        .collect();
    assert_eq!(binaries, function_packages());
    let globals = &template["Globals"]["Function"];
    assert_eq!(globals["Runtime"].as_str(), Some("provided.al2023"));
    assert_eq!(globals["Architectures"][0].as_str(), Some("arm64"));
}

/// A value the configuration accepts for a variable whose template value is an intrinsic
/// function (resolved only at deploy time).
fn deploy_time_value(name: &str) -> String {
    match name {
        "REDIS_ENDPOINTS" => "cache.example.internal:6379".into(),
        "ADMIN_TOKEN" => "admin-token-from-the-parameter".into(),
        "WRITE_TOKEN" => "write-token-from-the-parameter".into(),
        "REFRESH_INTERVAL_SECS" => "900".into(),
        _ => format!("resolved-{}", name.to_lowercase().replace('_', "-")),
    }
}

/// Variables the template sets for a library rather than our configuration: the CA bundle
/// rustls-native-certs reads for Redis TLS.
const READ_OUTSIDE_THE_CONFIGURATION: [&str; 1] = ["SSL_CERT_FILE"];

#[test]
fn every_variable_the_template_sets_is_read_and_every_one_required_is_set() {
    let template = template();
    let globals = template["Globals"]["Function"]["Environment"]["Variables"]
        .as_mapping()
        .unwrap()
        .clone();
    for (id, function) in functions(&template) {
        let mut variables = std::collections::BTreeMap::new();
        let own = function["Properties"]["Environment"]["Variables"]
            .as_mapping()
            .cloned()
            .unwrap_or_default();
        for (name, value) in globals.iter().chain(own.iter()) {
            let name = name.as_str().unwrap().to_owned();
            let value = match value {
                Value::Tagged(_) => deploy_time_value(&name),
                plain => plain
                    .as_str()
                    .map_or_else(|| deploy_time_value(&name), str::to_owned),
            };
            variables.insert(name, value);
        }
        // Set by Lambda itself in every environment.
        variables.insert("AWS_REGION".to_owned(), "us-east-1".to_owned());
        let read = std::sync::Mutex::new(BTreeSet::new());
        let config = catalog_core::config::Config::from_lookup(|name| {
            read.lock().unwrap().insert(name.to_owned());
            variables.get(name).cloned()
        });
        assert!(
            config.is_ok(),
            "{id}: the configuration refuses the template's environment: {:?}",
            config.err()
        );
        let read = read.into_inner().unwrap();
        for name in variables.keys() {
            assert!(
                read.contains(name) || READ_OUTSIDE_THE_CONFIGURATION.contains(&name.as_str()),
                "{id} sets {name}, which the configuration never reads"
            );
        }
    }
}

/// `(namespace, metric)` of every metric an alarm or the dashboard watches.
fn watched_metrics(template: &Value) -> Vec<(String, String)> {
    let mut watched = Vec::new();
    for (id, resource) in template["Resources"].as_mapping().unwrap() {
        let props = &resource["Properties"];
        match resource["Type"].as_str() {
            Some("AWS::CloudWatch::Alarm") => {
                if let Some(name) = props["MetricName"].as_str() {
                    watched.push((yaml_str(props, "Namespace"), name.to_owned()));
                }
                for query in props["Metrics"].as_sequence().into_iter().flatten() {
                    let metric = &query["MetricStat"]["Metric"];
                    if let Some(name) = metric["MetricName"].as_str() {
                        watched.push((yaml_str(metric, "Namespace"), name.to_owned()));
                    }
                }
            }
            Some("AWS::CloudWatch::Dashboard") => {
                // `!Sub` of a JSON document; `${...}` sit only inside its strings.
                let body = match &props["DashboardBody"] {
                    Value::Tagged(tagged) => tagged.value.as_str().unwrap().to_owned(),
                    other => panic!("{id:?}: unexpected dashboard body {other:?}"),
                };
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                for widget in body["widgets"].as_array().unwrap() {
                    let mut namespace = String::new();
                    let mut metric = String::new();
                    for row in widget["properties"]["metrics"].as_array().unwrap() {
                        let row = row.as_array().unwrap();
                        // Rows repeat the previous row's fields with "." (and "..." for all).
                        match row.first().and_then(|v| v.as_str()) {
                            Some("...") | None => continue,
                            Some(".") => {}
                            Some(ns) => namespace = ns.to_owned(),
                        }
                        match row.get(1).and_then(|v| v.as_str()) {
                            Some(".") | None => {}
                            Some(name) => metric = name.to_owned(),
                        }
                        watched.push((namespace.clone(), metric.clone()));
                    }
                }
            }
            _ => {}
        }
    }
    watched
}

#[test]
fn every_metric_an_alarm_or_the_dashboard_watches_in_our_namespace_is_emitted() {
    use catalog_core::jobs::metrics::{NAMESPACE, RUN_METRICS};
    let emitted: BTreeSet<&str> = catalog_core::cache::metrics::MetricsSnapshot::default()
        .fields()
        .into_iter()
        .map(|(name, _, _)| name)
        .chain(RUN_METRICS.iter().map(|(name, _)| *name))
        .collect();
    let watched = watched_metrics(&template());
    let ours: Vec<&(String, String)> = watched.iter().filter(|(ns, _)| ns == NAMESPACE).collect();
    assert!(
        ours.len() >= 10,
        "alarms and dashboard watch our metrics: {watched:?}"
    );
    for (_, metric) in ours {
        assert!(
            emitted.contains(metric.as_str()),
            "{metric} is watched in infra/template.yaml but the code never emits it"
        );
    }
    for (namespace, _) in &watched {
        assert!(
            [NAMESPACE, "AWS/Lambda", "AWS/SQS", "AWS/ApiGateway"].contains(&namespace.as_str()),
            "unexpected namespace {namespace}"
        );
    }
}

/// Least privilege in the template's terms: every statement names its actions (no `*`, no
/// SAM policy template granting a whole table's data plane) on named resources.
#[test]
fn every_function_is_granted_named_actions_on_named_resources() {
    let template = template();
    for (id, function) in functions(&template) {
        let policies = function["Properties"]["Policies"].as_sequence().unwrap();
        for policy in policies {
            let statements = policy["Statement"].as_sequence().unwrap_or_else(|| {
                panic!("{id}: a policy template instead of statements: {policy:?}")
            });
            for statement in statements {
                let actions: Vec<&str> = match &statement["Action"] {
                    Value::String(one) => vec![one.as_str()],
                    Value::Sequence(many) => many.iter().map(|a| a.as_str().unwrap()).collect(),
                    other => panic!("{id}: Action {other:?}"),
                };
                for action in actions {
                    assert!(!action.contains('*'), "{id}: {action}");
                }
                assert_ne!(
                    statement["Resource"].as_str(),
                    Some("*"),
                    "{id}: {statement:?}"
                );
            }
        }
    }
}
