//! An in-memory DynamoDB stream: the change records [`super::memory::MemoryStore`] emits on
//! every write, in shards, with growing sequence numbers and creation times, shaped exactly
//! like the records Lambda delivers (`aws_lambda_events` types, images as DynamoDB JSON).
//!
//! It stands in for DynamoDB Streams in the embedded dev mode and in benchmarks; the local
//! event-source-mapping runner reads it like it reads moto's stream.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use aws_lambda_events::dynamodb::{EventRecord, StreamViewType};
use serde_dynamo::Item;
use tokio::sync::watch;

/// Records kept per shard, like a stream's 24-hour retention: older ones are trimmed.
const RETAINED_PER_SHARD: usize = 200_000;

/// Sequence numbers start here, with the 21 digits DynamoDB's have.
const FIRST_SEQUENCE: u128 = 100_000_000_000_000_000_000;

/// What happened to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Insert,
    /// Replaced or updated.
    Modify,
    /// Deleted.
    Remove,
}

impl ChangeKind {
    fn event_name(self) -> &'static str {
        match self {
            ChangeKind::Insert => "INSERT",
            ChangeKind::Modify => "MODIFY",
            ChangeKind::Remove => "REMOVE",
        }
    }
}

/// One write to a table, as the stream records it.
#[derive(Debug, Clone)]
pub struct Change {
    /// Insert, modify or remove.
    pub kind: ChangeKind,
    /// The item's key attributes.
    pub keys: Item,
    /// The item before the write (kept only by `NEW_AND_OLD_IMAGES` streams).
    pub old: Option<Item>,
    /// The item after the write.
    pub new: Option<Item>,
    /// The partition key's value: it picks the shard, as DynamoDB's partitions do.
    pub partition: String,
    /// When the change happened (`None`: now), for tests that need records in given windows.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug)]
struct Shards {
    next_sequence: u128,
    records: Vec<VecDeque<EventRecord>>,
}

/// A table's stream in memory.
///
/// ## Behavior
/// - Records of one partition key always go to the same shard, in write order; sequence
///   numbers grow across the whole stream.
/// - Readers ask for records after a sequence number; [`MemoryStream::subscribe`] wakes them
///   when new records arrive.
/// - Each shard keeps its last 200,000 records; a reader that fell further behind resumes at
///   the oldest one kept, as after a stream's retention period.
#[derive(Debug)]
pub struct MemoryStream {
    table: String,
    arn: String,
    shard_ids: Vec<String>,
    view: StreamViewType,
    retained_per_shard: usize,
    shards: Mutex<Shards>,
    changed: watch::Sender<u64>,
}

impl MemoryStream {
    /// A stream of `table` with `shards` shards and the given view type.
    pub fn new(table: &str, shards: usize, view: StreamViewType) -> Arc<MemoryStream> {
        MemoryStream::with_retention(table, shards, view, RETAINED_PER_SHARD)
    }

    /// The same, keeping `retained_per_shard` records per shard (simulations that write
    /// more than a day's worth before reading).
    pub fn with_retention(
        table: &str,
        shards: usize,
        view: StreamViewType,
        retained_per_shard: usize,
    ) -> Arc<MemoryStream> {
        let shards = shards.max(1);
        Arc::new(MemoryStream {
            arn: format!(
                "arn:aws:dynamodb:us-east-1:000000000000:table/{table}/stream/2026-01-01T00:00:00.000"
            ),
            table: table.to_owned(),
            shard_ids: (0..shards)
                .map(|i| format!("shardId-00000001767225600000-{i:08x}"))
                .collect(),
            view,
            retained_per_shard,
            shards: Mutex::new(Shards {
                next_sequence: FIRST_SEQUENCE,
                records: vec![VecDeque::new(); shards],
            }),
            changed: watch::channel(0).0,
        })
    }

    /// The stream's ARN (the events' `eventSourceARN`).
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The shards' ids.
    pub fn shard_ids(&self) -> &[String] {
        &self.shard_ids
    }

    /// Appends the record of one write.
    pub fn record(&self, change: Change) {
        let shard = (fnv1a(change.partition.as_bytes()) % self.shard_ids.len() as u64) as usize;
        let keep_old = matches!(
            self.view,
            StreamViewType::NewAndOldImages | StreamViewType::OldImage
        );
        let keep_new = matches!(
            self.view,
            StreamViewType::NewAndOldImages | StreamViewType::NewImage
        );
        let mut shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let sequence = shards.next_sequence;
        shards.next_sequence += 1;
        let mut record = EventRecord::default();
        record.aws_region = "us-east-1".to_owned();
        record.event_id = format!("{:032x}", fnv1a(&sequence.to_be_bytes()));
        record.event_name = change.kind.event_name().to_owned();
        record.event_source = Some("aws:dynamodb".to_owned());
        record.event_version = Some("1.1".to_owned());
        record.event_source_arn = Some(self.arn.clone());
        record.table_name = Some(self.table.clone());
        record.change.approximate_creation_date_time = change.at.unwrap_or_else(chrono::Utc::now);
        record.change.size_bytes = i64::try_from(
            serde_json::to_vec(&(&change.keys, &change.new, &change.old)).map_or(0, |b| b.len()),
        )
        .unwrap_or(i64::MAX);
        record.change.keys = change.keys;
        if keep_new {
            record.change.new_image = change.new.unwrap_or_default();
        }
        if keep_old {
            record.change.old_image = change.old.unwrap_or_default();
        }
        record.change.sequence_number = Some(sequence.to_string());
        record.change.stream_view_type = Some(self.view.clone());
        let queue = &mut shards.records[shard];
        queue.push_back(record);
        if queue.len() > self.retained_per_shard {
            queue.pop_front();
        }
        drop(shards);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Up to `limit` records of `shard` after sequence number `after` (`None`: from the
    /// oldest record kept), in order.
    pub fn read(&self, shard: &str, after: Option<&str>, limit: usize) -> Vec<EventRecord> {
        let Some(index) = self.shard_ids.iter().position(|s| s == shard) else {
            return Vec::new();
        };
        let after: u128 = after.and_then(|a| a.parse().ok()).unwrap_or(0);
        let shards = self.shards.lock().unwrap_or_else(PoisonError::into_inner);
        let queue = &shards.records[index];
        // Sequence numbers grow along the queue: find the first one past `after`.
        let start = queue.partition_point(|r| {
            r.change
                .sequence_number
                .as_deref()
                .and_then(|s| s.parse::<u128>().ok())
                .is_some_and(|s| s <= after)
        });
        queue.iter().skip(start).take(limit).cloned().collect()
    }

    /// A receiver that changes whenever a record is appended.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Records appended so far (all shards).
    pub fn appended(&self) -> u64 {
        *self.changed.borrow()
    }
}

/// FNV-1a, 64 bits: a stable hash for shard choice and ids.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The streams of the catalog and views tables, as one in-memory store emits them.
#[derive(Debug, Clone)]
pub struct MemoryStreams {
    /// The catalog table's stream (`NEW_AND_OLD_IMAGES`).
    pub catalog: Arc<MemoryStream>,
    /// The views table's stream (`NEW_IMAGE`).
    pub views: Arc<MemoryStream>,
}

impl MemoryStreams {
    /// Streams with the given shard counts, named after the dev tables.
    pub fn new(catalog_shards: usize, views_shards: usize) -> MemoryStreams {
        MemoryStreams {
            catalog: MemoryStream::new("catalog", catalog_shards, StreamViewType::NewAndOldImages),
            views: MemoryStream::new("views", views_shards, StreamViewType::NewImage),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(partition: &str) -> Change {
        let keys: Item = serde_dynamo::to_item(serde_json::json!({"pk": partition})).unwrap();
        Change {
            kind: ChangeKind::Insert,
            keys: keys.clone(),
            old: Some(keys.clone()),
            new: Some(keys),
            partition: partition.to_owned(),
            at: None,
        }
    }

    #[test]
    fn records_of_a_partition_stay_in_one_shard_in_order_and_read_after_a_position() {
        let stream = MemoryStream::new("views", 4, StreamViewType::NewImage);
        for _ in 0..5 {
            stream.record(change("p1"));
        }
        let shard = stream
            .shard_ids()
            .iter()
            .find(|s| !stream.read(s, None, 10).is_empty())
            .unwrap()
            .clone();
        let all = stream.read(&shard, None, 10);
        assert_eq!(all.len(), 5);
        let seqs: Vec<u128> = all
            .iter()
            .map(|r| {
                r.change
                    .sequence_number
                    .as_deref()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let after = stream.read(&shard, all[1].change.sequence_number.as_deref(), 10);
        assert_eq!(after.len(), 3);
        assert!(
            all[0].change.old_image.is_empty(),
            "NEW_IMAGE keeps no old image"
        );
        assert_eq!(all[0].event_name, "INSERT");
        assert_eq!(stream.appended(), 5);
    }

    #[test]
    fn a_record_serialises_as_lambda_sends_it() {
        let stream = MemoryStream::new("catalog", 1, StreamViewType::NewAndOldImages);
        stream.record(change("p1"));
        let record = stream.read(&stream.shard_ids()[0], None, 1).pop().unwrap();
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["eventSource"], "aws:dynamodb");
        assert_eq!(json["dynamodb"]["Keys"]["pk"]["S"], "p1");
        assert_eq!(json["dynamodb"]["StreamViewType"], "NEW_AND_OLD_IMAGES");
        assert!(json["dynamodb"]["SequenceNumber"].as_str().unwrap().len() >= 21);
        let back: EventRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back.change.keys, record.change.keys);
    }
}
