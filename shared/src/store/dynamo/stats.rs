//! The views and stats tables: view events, view counters, period stats, feeds, job metadata.
//!
//! Stats table layout (`pk` / `sk`):
//!
//! | item | pk | sk |
//! | --- | --- | --- |
//! | hourly views | `VIEWS#<product>` | `H#<epoch hour, 10 digits>` |
//! | daily views | `VIEWS#<product>` | `D#<epoch day, 6 digits>` |
//! | period stats | `STATS#<product>` | `PERIODS` |
//! | feed ranking | `FEED#<kind>` | `CURRENT` |
//! | last run of every job | `JOBS` | `<job>` |
//! | run history | `JOB#<job>` | `RUN#<started_at, 13 digits>` |
//! | resume cursor | `JOB#<job>` | `CURSOR` |
//! | job lease | `LEASE` | `<job>` |
//!
//! Counters and history carry a `ttl` so DynamoDB deletes them once no period needs them.
//! Counters fed by the views stream also carry one `mark_<shard>` attribute per stream shard:
//! the last sequence number that shard counted there (see [`ViewCounters::add_views_once`]).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::items::ViewItem;
use super::schema::TTL_ATTRIBUTE;
use super::{DynamoStore, is_condition_failure, sdk_error};
use crate::error::{Error, Result};
use crate::model::{
    CounterBucket, EpochMillis, FeedKind, JobRun, Lease, PeriodStats, ProductId, RankedFeed,
    RunOutcome, ViewEvent,
};
use crate::store::{
    CounterMark, JobLeases, MarkCondition, StatsReader, StatsWriter, ViewCounters, ViewRecorder,
};

/// Hourly counters outlive the 24 h period by a day, daily ones the 30 d period by five days.
const HOURLY_RETENTION_S: i64 = 48 * 3600;
const DAILY_RETENTION_S: i64 = 35 * 86_400;
/// Job history is kept for a month of trends.
const HISTORY_RETENTION_S: i64 = 30 * 86_400;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// A counter item as `add_views` leaves it: `views` in the bucket, expiring with it.
pub(super) fn counter_item(
    product: &ProductId,
    bucket: CounterBucket,
    views: u64,
) -> std::collections::HashMap<String, AttributeValue> {
    let retention = match bucket {
        CounterBucket::Hour(_) => HOURLY_RETENTION_S,
        CounterBucket::Day(_) => DAILY_RETENTION_S,
    };
    std::collections::HashMap::from([
        ("pk".to_owned(), s(views_pk(product))),
        ("sk".to_owned(), s(bucket_sk(bucket))),
        ("count".to_owned(), n(views)),
        (
            TTL_ATTRIBUTE.to_owned(),
            n(bucket.end_ms() / 1000 + retention),
        ),
    ])
}

fn views_pk(product: &ProductId) -> String {
    format!("VIEWS#{product}")
}

fn bucket_sk(bucket: CounterBucket) -> String {
    match bucket {
        CounterBucket::Hour(h) => format!("H#{h:010}"),
        CounterBucket::Day(d) => format!("D#{d:06}"),
    }
}

/// The attribute that holds a shard's stream mark on a counter item.
fn mark_attribute(shard: &str) -> String {
    format!("mark_{shard}")
}

fn bucket_from_sk(sk: &str) -> Option<CounterBucket> {
    if let Some(h) = sk.strip_prefix("H#") {
        h.parse().ok().map(CounterBucket::Hour)
    } else {
        sk.strip_prefix("D#")?.parse().ok().map(CounterBucket::Day)
    }
}

/// A stats-table item wrapping a model value under its keys.
#[derive(Serialize, Deserialize)]
struct Keyed<T> {
    pk: String,
    sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl: Option<i64>,
    #[serde(flatten)]
    value: T,
}

fn encode<T: Serialize>(
    pk: String,
    sk: String,
    ttl: Option<i64>,
    value: T,
) -> Result<HashMap<String, AttributeValue>> {
    serde_dynamo::to_item(Keyed { pk, sk, ttl, value }).map_err(|e| Error::codec("stats item", e))
}

fn decode<T: DeserializeOwned>(item: HashMap<String, AttributeValue>) -> Result<T> {
    serde_dynamo::from_item::<_, Keyed<T>>(item)
        .map(|k| k.value)
        .map_err(|e| Error::codec("stats item", e))
}

impl DynamoStore {
    async fn stats_get<T: DeserializeOwned>(&self, pk: String, sk: &str) -> Result<Option<T>> {
        self.client
            .get_item()
            .table_name(&self.tables.stats)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?
            .item
            .map(decode)
            .transpose()
    }

    async fn stats_put(&self, item: HashMap<String, AttributeValue>) -> Result<()> {
        self.client
            .put_item()
            .table_name(&self.tables.stats)
            .set_item(Some(item))
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_error("PutItem", e))
    }

    async fn stats_query(
        &self,
        pk: String,
        newest_first: bool,
        limit: Option<usize>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.tables.stats)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk.clone()))
                .scan_index_forward(!newest_first)
                .set_limit(limit.map(|l| i32::try_from(l).unwrap_or(i32::MAX)))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| sdk_error("Query", e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() || limit.is_some_and(|l| items.len() >= l) {
                return Ok(items);
            }
        }
    }
}

#[async_trait]
impl ViewRecorder for DynamoStore {
    async fn record_view(&self, event: &ViewEvent) -> Result<bool> {
        event.validate()?;
        let item: HashMap<String, AttributeValue> = serde_dynamo::to_item(ViewItem::from(event))
            .map_err(|e| Error::codec("view event", e))?;
        match self
            .client
            .put_item()
            .table_name(&self.tables.views)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(event_id)")
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(sdk_error("PutItem", e)),
        }
    }
}

#[async_trait]
impl ViewCounters for DynamoStore {
    async fn add_views(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        count: u64,
    ) -> Result<()> {
        let retention = match bucket {
            CounterBucket::Hour(_) => HOURLY_RETENTION_S,
            CounterBucket::Day(_) => DAILY_RETENTION_S,
        };
        self.client
            .update_item()
            .table_name(&self.tables.stats)
            .key("pk", s(views_pk(product)))
            .key("sk", s(bucket_sk(bucket)))
            .update_expression("ADD #count :n SET #ttl = :ttl")
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":n", n(count))
            .expression_attribute_values(":ttl", n(bucket.end_ms() / 1000 + retention))
            .send()
            .await
            .map(drop)
            .map_err(|e| sdk_error("UpdateItem", e))
    }

    async fn add_views_once(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        count: u64,
        mark: &CounterMark<'_>,
    ) -> Result<bool> {
        let retention = match bucket {
            CounterBucket::Hour(_) => HOURLY_RETENTION_S,
            CounterBucket::Day(_) => DAILY_RETENTION_S,
        };
        let (condition, bound) = match mark.condition {
            MarkCondition::Before(first) => {
                ("attribute_not_exists(#mark) OR #mark < :bound", first)
            }
            MarkCondition::Exactly(expected) => ("#mark = :bound", expected),
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.stats)
            .key("pk", s(views_pk(product)))
            .key("sk", s(bucket_sk(bucket)))
            .update_expression("ADD #count :n SET #ttl = :ttl, #mark = :through")
            .condition_expression(condition)
            .expression_attribute_names("#count", "count")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_names("#mark", mark_attribute(mark.shard))
            .expression_attribute_values(":n", n(count))
            .expression_attribute_values(":ttl", n(bucket.end_ms() / 1000 + retention))
            .expression_attribute_values(":through", s(mark.through))
            .expression_attribute_values(":bound", s(bound))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    async fn counter_mark(
        &self,
        product: &ProductId,
        bucket: CounterBucket,
        shard: &str,
    ) -> Result<Option<String>> {
        let item = self
            .client
            .get_item()
            .table_name(&self.tables.stats)
            .key("pk", s(views_pk(product)))
            .key("sk", s(bucket_sk(bucket)))
            .consistent_read(true)
            .projection_expression("#mark")
            .expression_attribute_names("#mark", mark_attribute(shard))
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?
            .item;
        Ok(
            match item.and_then(|mut i| i.remove(&mark_attribute(shard))) {
                Some(AttributeValue::S(mark)) => Some(mark),
                _ => None,
            },
        )
    }

    async fn view_counters(&self, product: &ProductId) -> Result<Vec<(CounterBucket, u64)>> {
        let items = self.stats_query(views_pk(product), false, None).await?;
        Ok(items
            .into_iter()
            .filter_map(|item| {
                let bucket = match item.get("sk") {
                    Some(AttributeValue::S(sk)) => bucket_from_sk(sk)?,
                    _ => return None,
                };
                let count = match item.get("count") {
                    Some(AttributeValue::N(c)) => c.parse().ok()?,
                    _ => return None,
                };
                Some((bucket, count))
            })
            .collect())
    }
}

#[async_trait]
impl StatsReader for DynamoStore {
    async fn period_stats(&self, product: &ProductId) -> Result<Option<PeriodStats>> {
        self.stats_get(format!("STATS#{product}"), "PERIODS").await
    }

    async fn feed(&self, kind: FeedKind) -> Result<Option<RankedFeed>> {
        self.stats_get(format!("FEED#{}", kind.as_str()), "CURRENT")
            .await
    }

    async fn last_runs(&self) -> Result<Vec<JobRun>> {
        self.stats_query("JOBS".to_owned(), false, None)
            .await?
            .into_iter()
            .map(decode)
            .collect()
    }

    async fn run_history(&self, job: &str, limit: usize) -> Result<Vec<JobRun>> {
        // History rows sort by start time; the cursor row (`CURSOR`) sorts before `RUN#`.
        let items = self
            .stats_query(format!("JOB#{job}"), true, Some(limit + 1))
            .await?;
        items
            .into_iter()
            .filter(|item| matches!(item.get("sk"), Some(AttributeValue::S(sk)) if sk.starts_with("RUN#")))
            .take(limit)
            .map(decode)
            .collect()
    }

    async fn cursor(&self, job: &str) -> Result<Option<String>> {
        #[derive(Deserialize)]
        struct Cursor {
            cursor: String,
        }
        Ok(self
            .stats_get::<Cursor>(format!("JOB#{job}"), "CURSOR")
            .await?
            .map(|c| c.cursor))
    }
}

#[async_trait]
impl StatsWriter for DynamoStore {
    async fn put_period_stats(&self, product: &ProductId, stats: &PeriodStats) -> Result<()> {
        self.stats_put(encode(
            format!("STATS#{product}"),
            "PERIODS".into(),
            None,
            stats,
        )?)
        .await
    }

    async fn put_feed(&self, feed: &RankedFeed) -> Result<()> {
        self.stats_put(encode(
            format!("FEED#{}", feed.kind.as_str()),
            "CURRENT".into(),
            None,
            feed,
        )?)
        .await
    }

    async fn record_run(&self, run: &JobRun) -> Result<()> {
        let history = encode(
            format!("JOB#{}", run.job),
            format!("RUN#{:013}", run.started_at),
            Some(run.started_at / 1000 + HISTORY_RETENTION_S),
            run,
        )?;
        self.stats_put(history).await?;
        if run.outcome == RunOutcome::Skipped {
            return Ok(());
        }
        let last = encode("JOBS".to_owned(), run.job.clone(), None, run)?;
        // Only a later run may replace the last run: two overlapping runs finishing in either
        // order leave the one that started last.
        match self
            .client
            .put_item()
            .table_name(&self.tables.stats)
            .set_item(Some(last))
            .condition_expression("attribute_not_exists(pk) OR started_at <= :started")
            .expression_attribute_values(":started", n(run.started_at))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error("PutItem", e)),
        }
    }

    async fn set_cursor(&self, job: &str, cursor: Option<&str>) -> Result<()> {
        let pk = format!("JOB#{job}");
        match cursor {
            Some(cursor) => {
                self.stats_put(HashMap::from([
                    ("pk".to_owned(), s(pk)),
                    ("sk".to_owned(), s("CURSOR")),
                    ("cursor".to_owned(), s(cursor)),
                ]))
                .await
            }
            None => self
                .client
                .delete_item()
                .table_name(&self.tables.stats)
                .key("pk", s(pk))
                .key("sk", s("CURSOR"))
                .send()
                .await
                .map(drop)
                .map_err(|e| sdk_error("DeleteItem", e)),
        }
    }
}

/// Leases outlive their `until` by a day, then DynamoDB deletes the item.
const LEASE_RETENTION_S: i64 = 86_400;

#[async_trait]
impl JobLeases for DynamoStore {
    async fn acquire_lease(
        &self,
        job: &str,
        holder: &str,
        now: EpochMillis,
        until: EpochMillis,
    ) -> Result<Option<Lease>> {
        // One conditional update: free (never taken, or lapsed) becomes ours, with the fence
        // moved on by one; a live lease of someone else fails the condition.
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.stats)
            .key("pk", s("LEASE"))
            .key("sk", s(job))
            .update_expression("SET holder = :holder, #until = :until, #ttl = :ttl ADD fence :one")
            .condition_expression("attribute_not_exists(pk) OR #until <= :now")
            .expression_attribute_names("#until", "until")
            .expression_attribute_names("#ttl", TTL_ATTRIBUTE)
            .expression_attribute_values(":holder", s(holder))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":ttl", n(until / 1000 + LEASE_RETENTION_S))
            .expression_attribute_values(":one", n(1))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew)
            .send()
            .await;
        match result {
            Ok(out) => {
                let fence = match out.attributes().and_then(|a| a.get("fence")) {
                    Some(AttributeValue::N(f)) => f.parse().unwrap_or(0),
                    _ => 0,
                };
                Ok(Some(Lease {
                    job: job.to_owned(),
                    holder: holder.to_owned(),
                    fence,
                    until,
                }))
            }
            Err(e) if is_condition_failure(&e) => Ok(None),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        let result = self
            .client
            .update_item()
            .table_name(&self.tables.stats)
            .key("pk", s("LEASE"))
            .key("sk", s(&lease.job))
            .update_expression("SET #until = :zero")
            .condition_expression("holder = :holder AND fence = :fence")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":holder", s(&lease.holder))
            .expression_attribute_values(":fence", n(lease.fence))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Someone else took over a lapsed lease: theirs now, not ours to release.
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_sort_keys_round_trip_and_sort_by_time() {
        for bucket in [CounterBucket::Hour(497_000), CounterBucket::Day(20_700)] {
            assert_eq!(bucket_from_sk(&bucket_sk(bucket)), Some(bucket));
        }
        assert!(bucket_sk(CounterBucket::Hour(9)) < bucket_sk(CounterBucket::Hour(10)));
    }
}
