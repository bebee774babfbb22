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
