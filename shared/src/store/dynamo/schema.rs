//! Table definitions, used by tests and the dev binary to create tables on a DynamoDB API.
//! They mirror `infra/template.yaml`; a test keeps the two in step.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};

use super::items::EXPIRY_INDEX;
use super::sdk_error;
use crate::config::TableNames;
use crate::error::{Error, Result};

/// Attribute that holds an item's expiry (epoch seconds) on tables with TTL.
pub const TTL_ATTRIBUTE: &str = "ttl";

/// Creates the catalog, views and stats tables with their keys, index, streams and TTL.
pub async fn create_tables(client: &Client, tables: &TableNames) -> Result<()> {
    create_catalog_table(client, &tables.catalog).await?;
    create_table(
        client,
        &tables.views,
        &[("event_id", KeyType::Hash)],
        Some(StreamViewType::NewImage),
    )
    .await?;
    enable_ttl(client, &tables.views).await?;
    create_table(
        client,
        &tables.stats,
        &[("pk", KeyType::Hash), ("sk", KeyType::Range)],
        None,
    )
    .await?;
    enable_ttl(client, &tables.stats).await
}

async fn create_catalog_table(client: &Client, name: &str) -> Result<()> {
    let index = GlobalSecondaryIndex::builder()
        .index_name(EXPIRY_INDEX)
        .key_schema(key("gsi1pk", KeyType::Hash)?)
        .key_schema(key("gsi1sk", KeyType::Range)?)
        // The version rides along so the offer-expiry job can write its conditional expiry
        // (same version) straight from the index, without reading the item first.
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .non_key_attributes("version")
                .build(),
        )
        .build()
        .map_err(build_error)?;
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("sk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("gsi1pk", ScalarAttributeType::S)?)
        .attribute_definitions(attribute("gsi1sk", ScalarAttributeType::N)?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(index)
        .stream_specification(stream(StreamViewType::NewAndOldImages)?)
        .send()
        .await
        .map_err(|e| sdk_error("CreateTable", e))?;
    Ok(())
}

async fn create_table(
    client: &Client,
    name: &str,
    keys: &[(&str, KeyType)],
    stream_view: Option<StreamViewType>,
) -> Result<()> {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest);
    for (attr, key_type) in keys {
        request = request
            .attribute_definitions(attribute(attr, ScalarAttributeType::S)?)
            .key_schema(key(attr, key_type.clone())?);
    }
    if let Some(view) = stream_view {
        request = request.stream_specification(stream(view)?);
    }
    request
        .send()
        .await
        .map_err(|e| sdk_error("CreateTable", e))?;
    Ok(())
}

async fn enable_ttl(client: &Client, table: &str) -> Result<()> {
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(TTL_ATTRIBUTE)
        .build()
        .map_err(build_error)?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
        .map_err(|e| sdk_error("UpdateTimeToLive", e))?;
    Ok(())
}

fn key(name: &str, key_type: KeyType) -> Result<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .map_err(build_error)
}

fn attribute(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(build_error)
}

fn stream(view: StreamViewType) -> Result<StreamSpecification> {
    StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(view)
        .build()
        .map_err(build_error)
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> Error {
    Error::Dynamo {
        op: "CreateTable",
        retryable: false,
        source: Box::new(e),
    }
}
