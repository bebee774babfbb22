//! Where an event-source mapping reads records from: a DynamoDB stream (moto's, through the
//! DynamoDB Streams API) or the in-memory stream of the embedded store. Either way the
//! records come out as `aws_lambda_events` records, exactly as Lambda would put them in an
//! event.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use aws_lambda_events::dynamodb::{EventRecord, StreamViewType};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};
use catalog_core::store::stream::MemoryStream;

/// Why a source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The stream API failed.
    #[error("{op} failed: {message}")]
    Api {
        /// The call.
        op: &'static str,
        /// What it said.
        message: String,
    },
    /// The table has no stream.
    #[error("table {0} has no stream")]
    NoStream(String),
}

/// A stream: its shards, and records after a position in one of them.
#[async_trait]
pub trait StreamSource: Send + Sync {
    /// The stream's ARN (the events' `eventSourceARN`).
    fn arn(&self) -> &str;

    /// The shards to read, parents before children.
    async fn shards(&self) -> Result<Vec<String>, SourceError>;

    /// Up to `limit` records of `shard` after sequence number `after` (`None`: from the
    /// oldest one the stream keeps), in order.
    async fn read(
        &self,
        shard: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, SourceError>;

    /// Waits until the stream may have new records, at most `timeout` (polling sources just
    /// sleep).
    async fn wait(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }
}

/// The in-memory stream of the embedded store.
#[derive(Debug, Clone)]
pub struct MemorySource(pub Arc<MemoryStream>);

#[async_trait]
impl StreamSource for MemorySource {
    fn arn(&self) -> &str {
        self.0.arn()
    }

    async fn shards(&self) -> Result<Vec<String>, SourceError> {
        Ok(self.0.shard_ids().to_vec())
    }

    async fn read(
        &self,
        shard: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, SourceError> {
        Ok(self.0.read(shard, after, limit))
    }

    async fn wait(&self, timeout: Duration) {
        let mut changes = self.0.subscribe();
        let _ = tokio::time::timeout(timeout, changes.changed()).await;
    }
}

/// A source that is polled, never woken: [`StreamSource::wait`] sleeps the whole poll
/// interval, as Lambda's pollers do (four reads a second per shard). The in-memory source
/// otherwise wakes the mapping the moment a record is appended, which is convenient in
/// `make dev` but faster than anything deployed; benchmarks of propagation use this.
pub struct Polled<S>(pub S);

#[async_trait]
impl<S: StreamSource> StreamSource for Polled<S> {
    fn arn(&self) -> &str {
        self.0.arn()
    }

    async fn shards(&self) -> Result<Vec<String>, SourceError> {
        self.0.shards().await
    }

    async fn read(
        &self,
        shard: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, SourceError> {
        self.0.read(shard, after, limit).await
    }
}

/// A DynamoDB stream read through the DynamoDB Streams API (moto in tests).
///
/// ## Behavior
/// - Each read continues from the shard iterator the previous read of that shard returned,
///   when it continues from the same position; otherwise it asks for an iterator after the
///   position (`AFTER_SEQUENCE_NUMBER`), or at the start (`TRIM_HORIZON`).
#[derive(Debug)]
pub struct DynamoStreamSource {
    client: aws_sdk_dynamodbstreams::Client,
    arn: String,
    /// Per shard: the position the cached iterator continues from, and the iterator.
    iterators: Mutex<HashMap<String, (Option<String>, String)>>,
}

impl DynamoStreamSource {
    /// The stream of `table`, found with DescribeTable.
    pub async fn for_table(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: &str,
    ) -> Result<DynamoStreamSource, SourceError> {
        let described = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| api("DescribeTable", &e))?;
        let arn = described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| SourceError::NoStream(table.to_owned()))?
            .to_owned();
        Ok(DynamoStreamSource {
            client: streams,
            arn,
            iterators: Mutex::new(HashMap::new()),
        })
    }

    async fn iterator(&self, shard: &str, after: Option<&str>) -> Result<String, SourceError> {
        let cached = self
            .iterators
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(shard)
            .filter(|(position, _)| position.as_deref() == after)
            .map(|(_, iterator)| iterator.clone());
        if let Some(iterator) = cached {
            return Ok(iterator);
        }
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.arn)
            .shard_id(shard);
        let request = match after {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        request
            .send()
            .await
            .map_err(|e| api("GetShardIterator", &e))?
            .shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| SourceError::Api {
                op: "GetShardIterator",
                message: "no iterator returned".into(),
            })
    }
}

fn api(op: &'static str, error: &dyn std::fmt::Debug) -> SourceError {
    SourceError::Api {
        op,
        message: format!("{error:?}"),
    }
}

#[async_trait]
impl StreamSource for DynamoStreamSource {
    fn arn(&self) -> &str {
        &self.arn
    }

    async fn shards(&self) -> Result<Vec<String>, SourceError> {
        let described = self
            .client
            .describe_stream()
            .stream_arn(&self.arn)
            .send()
            .await
            .map_err(|e| api("DescribeStream", &e))?;
        let shards = described
            .stream_description()
            .map(|d| d.shards().to_vec())
            .unwrap_or_default();
        // Parents first: a child's records come after its parent's. A parent no longer
        // listed (past the stream's retention) does not hold its children back.
        let listed: HashSet<&str> = shards.iter().filter_map(|s| s.shard_id()).collect();
        let mut ordered: Vec<String> = Vec::new();
        while ordered.len() < shards.len() {
            let before = ordered.len();
            for shard in &shards {
                let id = shard.shard_id().unwrap_or_default();
                let placed = |s: &str| ordered.iter().any(|o| o == s);
                let parent_done = shard
                    .parent_shard_id()
                    .is_none_or(|parent| !listed.contains(parent) || placed(parent));
                if !placed(id) && parent_done {
                    ordered.push(id.to_owned());
                }
            }
            if ordered.len() == before {
                break;
            }
        }
        Ok(ordered)
    }

    async fn read(
        &self,
        shard: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EventRecord>, SourceError> {
        let iterator = self.iterator(shard, after).await?;
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(limit.clamp(1, 1000)).unwrap_or(1000))
            .send()
            .await
            .map_err(|e| {
                // A stale iterator is dropped, so the next read asks for a fresh one.
                self.iterators
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(shard);
                api("GetRecords", &e)
            })?;
        let records: Vec<EventRecord> = out
            .records()
            .iter()
            .map(|r| lambda_record(r, &self.arn))
            .collect();
        let position = records
            .last()
            .and_then(|r| r.change.sequence_number.clone())
            .or_else(|| after.map(str::to_owned));
        let mut iterators = self
            .iterators
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match out.next_shard_iterator() {
            Some(next) => {
                iterators.insert(shard.to_owned(), (position, next.to_owned()));
            }
            None => {
                iterators.remove(shard);
            }
        }
        Ok(records)
    }
}

/// A record of the Streams API as Lambda puts it in an event.
fn lambda_record(record: &Record, arn: &str) -> EventRecord {
    let mut event = EventRecord::default();
    event.event_id = record.event_id().unwrap_or_default().to_owned();
    event.event_name = record
        .event_name()
        .map(|n| n.as_str().to_owned())
        .unwrap_or_default();
    event.event_version = record.event_version().map(str::to_owned);
    event.event_source = Some(record.event_source().unwrap_or("aws:dynamodb").to_owned());
    event.aws_region = record.aws_region().unwrap_or("us-east-1").to_owned();
    event.event_source_arn = Some(arn.to_owned());
    if let Some(change) = record.dynamodb() {
        if let Some(at) = change.approximate_creation_date_time() {
            event.change.approximate_creation_date_time =
                chrono::DateTime::from_timestamp(at.secs(), at.subsec_nanos()).unwrap_or_default();
        }
        let image =
            |item: Option<&HashMap<String, aws_sdk_dynamodbstreams::types::AttributeValue>>| {
                item.cloned()
                    .map(serde_dynamo::Item::from)
                    .unwrap_or_default()
            };
        event.change.keys = image(change.keys());
        event.change.new_image = image(change.new_image());
        event.change.old_image = image(change.old_image());
        event.change.sequence_number = change.sequence_number().map(str::to_owned);
        event.change.size_bytes = change.size_bytes().unwrap_or(0);
        event.change.stream_view_type = change.stream_view_type().and_then(|v| {
            serde_json::from_value::<StreamViewType>(serde_json::Value::String(
                v.as_str().to_owned(),
            ))
            .ok()
        });
    }
    event
}
