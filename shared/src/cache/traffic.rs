//! Traffic per route template and cache category: requests, answers per source, handler
//! latency and the age of the data served.
//!
//! Counted in process with atomics and fixed-bucket histograms (no Redis call per request),
//! then flushed with the cache counters into the same per-minute Redis buckets as plain
//! counts (`r|<route>|<category>|<stat>`), so windows merge across environments by addition
//! and percentiles come from the merged buckets.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;

/// Prefix of every traffic field in a minute bucket.
pub const FIELD_PREFIX: &str = "r|";

/// Where an answer came from. `NotFound` is a 404 (from any tier); `Error` a 5xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// From this process's L1.
    L1,
    /// Fresh from Redis.
    L2,
    /// Stale while revalidating.
    Stale,
    /// Loaded from the database.
    Loaded,
    /// Redis skipped (circuit open or failing).
    Bypass,
    /// 404.
    NotFound,
    /// 5xx.
    Error,
    /// A route that does not read the cache (writes, admin).
    Uncached,
}

impl Answer {
    const ALL: [Answer; 8] = [
        Answer::L1,
        Answer::L2,
        Answer::Stale,
        Answer::Loaded,
        Answer::Bypass,
        Answer::NotFound,
        Answer::Error,
        Answer::Uncached,
    ];

    fn name(self) -> &'static str {
        match self {
            Answer::L1 => "l1",
            Answer::L2 => "l2",
            Answer::Stale => "stale",
            Answer::Loaded => "loaded",
            Answer::Bypass => "bypass",
            Answer::NotFound => "not_found",
            Answer::Error => "error",
            Answer::Uncached => "uncached",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Sub-buckets per power of two: values land in buckets at most 12.5% wide.
const SUB_BITS: u32 = 3;
/// Buckets cover 1 to 2^40 (µs: 12 days; ms: 34 years); larger values go to the last.
const BUCKETS: usize = (40 << SUB_BITS) as usize;

/// The bucket of a value: the power of two below it and the next `SUB_BITS` bits.
fn bucket_of(value: u64) -> usize {
    if value < (1 << SUB_BITS) {
        return usize::try_from(value).unwrap_or(0);
    }
    let power = 63 - value.leading_zeros();
    let sub = (value >> (power - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    let index = ((power - SUB_BITS + 1) << SUB_BITS) as u64 + sub;
    usize::try_from(index)
        .unwrap_or(BUCKETS - 1)
        .min(BUCKETS - 1)
}

/// The largest value a bucket holds (what a percentile falling in it reports).
fn bucket_upper(index: usize) -> u64 {
    let index = index as u64;
    if index < (1 << SUB_BITS) {
        return index;
    }
    let power = (index >> SUB_BITS) + u64::from(SUB_BITS) - 1;
    let sub = index & ((1 << SUB_BITS) - 1);
    let low = (1u64 << power) + (sub << (power - u64::from(SUB_BITS)));
    low + (1u64 << (power - u64::from(SUB_BITS))) - 1
}

/// Fixed-bucket histogram; recording is one atomic add.
struct Histogram(Box<[AtomicU64]>);

impl Default for Histogram {
    fn default() -> Self {
        Histogram((0..BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl Histogram {
    fn record(&self, value: u64) {
        self.0[bucket_of(value)].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the counts and resets them: `(bucket, count)` of the non-empty buckets.
    fn take(&self) -> Vec<(usize, u64)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c.swap(0, Ordering::Relaxed) {
                0 => None,
                n => Some((i, n)),
            })
            .collect()
    }
}

/// A traffic field's name, parsed: the inverse of the names [`Traffic::take_fields`] writes
/// (`r|<route>|<category>|<stat>` and `o|<operation>|<stat>`).
enum Field<'a> {
    Route {
        route: &'a str,
        category: &'a str,
        stat: Stat,
    },
    Operation {
        operation: &'a str,
        stat: Stat,
    },
}

/// What a field counts.
enum Stat {
    Requests,
    Calls,
    Answer(Answer),
    Latency(usize),
    Age(usize),
}

impl Field<'_> {
    fn parse(name: &str) -> Option<Field<'_>> {
        if let Some(rest) = name.strip_prefix(FIELD_PREFIX) {
            // The stat and category are the last two parts; the route is everything before.
            let mut parts = rest.rsplitn(3, '|');
            let (stat, category, route) = (parts.next()?, parts.next()?, parts.next()?);
            return Some(Field::Route {
                route,
                category,
                stat: Stat::parse(stat)?,
            });
        }
        let (operation, stat) = name.strip_prefix(OPERATION_PREFIX)?.split_once('|')?;
        Some(Field::Operation {
            operation,
            stat: Stat::parse(stat)?,
        })
    }
}

impl Stat {
    fn parse(stat: &str) -> Option<Stat> {
        let bucket = |prefix: &str| stat.strip_prefix(prefix)?.parse().ok();
        match stat {
            "requests" => Some(Stat::Requests),
            "calls" => Some(Stat::Calls),
            _ => {
                if let Some(answer) = stat.strip_prefix("a.") {
                    Answer::ALL
                        .into_iter()
                        .find(|a| a.name() == answer)
                        .map(Stat::Answer)
                } else if let Some(i) = bucket("lat.") {
                    Some(Stat::Latency(i))
                } else {
                    bucket("age.").map(Stat::Age)
                }
            }
        }
    }
}

/// The cache category a route reads, from `<METHOD> <template>` (a bare template is a GET):
/// writes and admin routes read none.
pub fn category_of(route: &str) -> &'static str {
    let (method, template) = route.split_once(' ').unwrap_or(("GET", route));
    match (method, template) {
        ("GET", "/products/{id}") | ("POST", "/products/batch") => "product",
        ("GET", "/products/{id}/stats") => "stats",
        ("GET", "/feed") => "feed",
        _ => "none",
    }
}

/// One route's live counts.
struct RouteCounters {
    requests: AtomicU64,
    answers: [AtomicU64; 8],
    /// Handler latency, microseconds.
    latency_us: Histogram,
    /// Age of the data served, milliseconds (cached answers only).
    age_ms: Histogram,
}

impl Default for RouteCounters {
    fn default() -> Self {
        RouteCounters {
            requests: AtomicU64::new(0),
            answers: Default::default(),
            latency_us: Histogram::default(),
            age_ms: Histogram::default(),
        }
    }
}

/// Prefix of every cache-operation field in a minute bucket.
pub const OPERATION_PREFIX: &str = "o|";

/// A cache operation whose latency is recorded, so a slow Redis or database shows before it
/// causes timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A Redis read (`GET`, `MGET`).
    L2Get,
    /// A Redis write (the guarded-set script).
    L2Set,
    /// A loader call (the database).
    Load,
}

impl Operation {
    const ALL: [Operation; 3] = [Operation::L2Get, Operation::L2Set, Operation::Load];

    fn name(self) -> &'static str {
        match self {
            Operation::L2Get => "l2_get",
            Operation::L2Set => "l2_set",
            Operation::Load => "load",
        }
    }
}

/// One operation's live counts.
#[derive(Default)]
struct OperationCounters {
    calls: AtomicU64,
    latency_us: Histogram,
}

/// Every route's counts in this process, and the cache operations' latency.
#[derive(Clone)]
pub struct Traffic {
    routes: Arc<RwLock<HashMap<String, Arc<RouteCounters>>>>,
    operations: Arc<[OperationCounters; 3]>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            routes: Arc::default(),
            operations: Arc::new(std::array::from_fn(|_| OperationCounters::default())),
        }
    }
}

impl Traffic {
    /// Counts one request: its route template, its answer, how long the handler took and, for
    /// a cached answer, how old the data was.
    pub fn record(&self, route: &str, answer: Answer, latency: Duration, age: Option<Duration>) {
        let counters = self.counters(route);
        counters.requests.fetch_add(1, Ordering::Relaxed);
        counters.answers[answer.index()].fetch_add(1, Ordering::Relaxed);
        counters
            .latency_us
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        if let Some(age) = age {
            counters
                .age_ms
                .record(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        }
    }

    /// Records how long one cache operation took (failed ones included: a timeout is slow).
    pub fn record_operation(&self, operation: Operation, latency: Duration) {
        let counters = &self.operations[operation as usize];
        counters.calls.fetch_add(1, Ordering::Relaxed);
        counters
            .latency_us
            .record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    fn counters(&self, route: &str) -> Arc<RouteCounters> {
        let routes = self
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(counters) = routes.get(route) {
            return counters.clone();
        }
        drop(routes);
        self.routes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(route.to_owned())
            .or_default()
            .clone()
    }

    /// Takes what was counted since the last call, as bucket fields
    /// (`r|<route>|<category>|<stat>` to a count), and resets it.
    pub fn take_fields(&self) -> Vec<(String, u64)> {
        let routes: Vec<(String, Arc<RouteCounters>)> = self
            .routes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(r, c)| (r.clone(), c.clone()))
            .collect();
        let mut fields = Vec::new();
        for operation in Operation::ALL {
            let counters = &self.operations[operation as usize];
            let field = |stat: &str| format!("{OPERATION_PREFIX}{}|{stat}", operation.name());
            match counters.calls.swap(0, Ordering::Relaxed) {
                0 => {}
                n => fields.push((field("calls"), n)),
            }
            for (i, n) in counters.latency_us.take() {
                fields.push((field(&format!("lat.{i}")), n));
            }
        }
        for (route, counters) in routes {
            let field =
                |stat: &str| format!("{FIELD_PREFIX}{route}|{}|{stat}", category_of(&route));
            match counters.requests.swap(0, Ordering::Relaxed) {
                0 => {}
                n => fields.push((field("requests"), n)),
            }
            for answer in Answer::ALL {
                match counters.answers[answer.index()].swap(0, Ordering::Relaxed) {
                    0 => {}
                    n => fields.push((field(&format!("a.{}", answer.name())), n)),
                }
            }
            for (i, n) in counters.latency_us.take() {
                fields.push((field(&format!("lat.{i}")), n));
            }
            for (i, n) in counters.age_ms.take() {
                fields.push((field(&format!("age.{i}")), n));
            }
        }
        fields
    }
}

/// Percentiles of a merged histogram, in the histogram's unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Percentiles {
    /// Median.
    pub p50: Option<u64>,
    /// 95th percentile.
    pub p95: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
}

fn percentiles(buckets: &BTreeMap<usize, u64>) -> Percentiles {
    let total: u64 = buckets.values().sum();
    let at = |p: f64| -> Option<u64> {
        if total == 0 {
            return None;
        }
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let rank = ((p / 100.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        buckets.iter().find_map(|(i, n)| {
            seen += n;
            (seen >= rank).then(|| bucket_upper(*i))
        })
    };
    Percentiles {
        p50: at(50.0),
        p95: at(95.0),
        p99: at(99.0),
    }
}

/// One route over a window, every environment's counts merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteWindow {
    /// The method and route template, e.g. `GET /products/{id}`.
    pub route: String,
    /// The cache category it reads: `product`, `stats`, `feed` or `none`.
    pub category: String,
    /// Requests.
    pub requests: u64,
    /// Answers by where they came from: `l1`, `l2`, `stale`, `loaded`, `bypass`, `not_found`,
    /// `error`, `uncached`.
    pub answers: BTreeMap<String, u64>,
    /// Handler latency in microseconds (bucket upper bounds, at most 12.5% above the truth).
    pub latency_us: Percentiles,
    /// Age of the data served in milliseconds (cached answers only), p50 and p99.
    pub age_ms: Percentiles,
    /// The latency histogram the percentiles come from, for EMF.
    #[serde(skip)]
    latency_buckets: BTreeMap<usize, u64>,
    /// The age histogram, for EMF.
    #[serde(skip)]
    age_buckets: BTreeMap<usize, u64>,
}

/// Distinct values CloudWatch takes in one EMF metric.
const EMF_MAX_VALUES: usize = 100;

/// A histogram as an EMF distribution (`{"Values": [...], "Counts": [...]}`, each value a
/// bucket's upper bound), which CloudWatch merges with every other environment's to compute
/// percentiles over all of them. Past [`EMF_MAX_VALUES`] buckets, neighbours are merged (the
/// value stays a bound on what each holds, only coarser).
fn emf_distribution(buckets: &BTreeMap<usize, u64>) -> Option<serde_json::Value> {
    let mut shift = 0;
    loop {
        let mut merged: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
        for (index, count) in buckets.iter().filter(|(_, c)| **c > 0) {
            let (upper, total) = merged.entry(index >> shift).or_default();
            *upper = (*upper).max(bucket_upper(*index));
            *total += count;
        }
        if merged.is_empty() {
            return None;
        }
        if merged.len() <= EMF_MAX_VALUES {
            let (values, counts): (Vec<u64>, Vec<u64>) = merged.into_values().unzip();
            return Some(serde_json::json!({"Values": values, "Counts": counts}));
        }
        shift += 1;
    }
}

impl RouteWindow {
    /// One CloudWatch Embedded Metric Format line for this route, with the `Function`, `Route`
    /// and `Category` dimensions: requests, answers per source, and the latency and data-age
    /// distributions (values and counts, so CloudWatch's percentiles merge environments).
    pub fn emf_line(&self, namespace: &str, function: &str, timestamp: i64) -> String {
        let mut values: Vec<(String, serde_json::Value, &str)> =
            vec![("Requests".into(), self.requests.into(), "Count")];
        for (answer, count) in &self.answers {
            values.push((format!("Answers_{answer}"), (*count).into(), "Count"));
        }
        for (name, buckets, unit) in [
            ("Latency", &self.latency_buckets, "Microseconds"),
            ("DataAge", &self.age_buckets, "Milliseconds"),
        ] {
            if let Some(distribution) = emf_distribution(buckets) {
                values.push((name.into(), distribution, unit));
            }
        }
        let metrics: Vec<_> = values
            .iter()
            .map(|(name, _, unit)| serde_json::json!({"Name": name, "Unit": unit}))
            .collect();
        let mut line = serde_json::json!({
            "_aws": {
                "Timestamp": timestamp,
                "CloudWatchMetrics": [{
                    "Namespace": namespace,
                    "Dimensions": [["Function", "Route", "Category"]],
                    "Metrics": metrics,
                }],
            },
            "Function": function,
            "Route": self.route,
            "Category": self.category,
        });
        if let Some(object) = line.as_object_mut() {
            for (name, value, _) in values {
                object.insert(name, value);
            }
        }
        line.to_string()
    }
}

/// Builds the per-route breakdown from a window's summed fields (`r|...` names to counts;
/// other names are ignored).
pub fn breakdown<'a>(fields: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<RouteWindow> {
    #[derive(Default)]
    struct Parts {
        category: String,
        requests: u64,
        answers: BTreeMap<String, u64>,
        latency: BTreeMap<usize, u64>,
        age: BTreeMap<usize, u64>,
    }
    let mut routes: BTreeMap<String, Parts> = BTreeMap::new();
    for (name, value) in fields {
        let Some(Field::Route {
            route,
            category,
            stat,
        }) = Field::parse(name)
        else {
            continue;
        };
        let entry = routes.entry(route.to_owned()).or_default();
        category.clone_into(&mut entry.category);
        match stat {
            Stat::Requests => entry.requests += value,
            Stat::Answer(answer) => {
                *entry.answers.entry(answer.name().to_owned()).or_default() += value;
            }
            Stat::Latency(i) => *entry.latency.entry(i).or_default() += value,
            Stat::Age(i) => *entry.age.entry(i).or_default() += value,
            Stat::Calls => {}
        }
    }
    routes
        .into_iter()
        .map(|(route, parts)| {
            let age = percentiles(&parts.age);
            RouteWindow {
                route,
                category: parts.category,
                requests: parts.requests,
                answers: parts.answers,
                latency_us: percentiles(&parts.latency),
                age_ms: Percentiles { p95: None, ..age },
                latency_buckets: parts.latency,
                age_buckets: parts.age,
            }
        })
        .collect()
}

/// One cache operation over a window, every environment's calls merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OperationWindow {
    /// `l2_get`, `l2_set` or `load`.
    pub operation: String,
    /// Calls.
    pub calls: u64,
    /// Latency in microseconds (bucket upper bounds).
    pub latency_us: Percentiles,
}

/// The cache operations' latency from a window's summed fields (`o|...` names).
pub fn operations<'a>(fields: impl IntoIterator<Item = (&'a str, u64)>) -> Vec<OperationWindow> {
    let mut operations: BTreeMap<String, (u64, BTreeMap<usize, u64>)> = BTreeMap::new();
    for (name, value) in fields {
        let Some(Field::Operation { operation, stat }) = Field::parse(name) else {
            continue;
        };
        let entry = operations.entry(operation.to_owned()).or_default();
        match stat {
            Stat::Calls => entry.0 += value,
            Stat::Latency(i) => *entry.1.entry(i).or_default() += value,
            _ => {}
        }
    }
    operations
        .into_iter()
        .map(|(operation, (calls, latency))| OperationWindow {
            operation,
            calls,
            latency_us: percentiles(&latency),
        })
        .collect()
}

/// The p99 age (ms) of the data each category served, from a window's summed fields, every
/// route of the category merged (a batch and a single read are both `product`).
pub fn age_p99_by_category<'a>(
    fields: impl IntoIterator<Item = (&'a str, u64)>,
) -> BTreeMap<String, AgeP99> {
    let mut ages: BTreeMap<String, BTreeMap<usize, u64>> = BTreeMap::new();
    for (name, value) in fields {
        if let Some(Field::Route {
            category,
            stat: Stat::Age(i),
            ..
        }) = Field::parse(name)
        {
            *ages
                .entry(category.to_owned())
                .or_default()
                .entry(i)
                .or_default() += value;
        }
    }
    ages.into_iter()
        .filter_map(|(category, buckets)| {
            let answers: u64 = buckets.values().sum();
            let p99 = percentiles(&buckets).p99?;
            // The bucket's lowest value: an objective is only said to be missed when the p99
            // is surely past it, not because a bucket's upper bound is.
            Some((
                category,
                AgeP99 {
                    at_least_ms: bucket_lower(bucket_of(p99)),
                    answers,
                },
            ))
        })
        .collect()
}

/// A category's p99 served age over a window, for health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgeP99 {
    /// The p99 is at least this (the lower bound of its bucket), in milliseconds.
    pub at_least_ms: u64,
    /// Cached answers the figure is drawn from.
    pub answers: u64,
}

/// The smallest value a bucket holds.
fn bucket_lower(index: usize) -> u64 {
    if index == 0 {
        0
    } else {
        bucket_upper(index - 1) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_hold_their_values() {
        let mut last = 0;
        for value in (0..20_000u64).chain([1 << 20, 123_456_789, u64::from(u32::MAX)]) {
            let bucket = bucket_of(value);
            assert!(
                bucket >= last || value >= 20_000,
                "buckets grow with values"
            );
            last = bucket;
            assert!(bucket_upper(bucket) >= value, "{value} above its bucket");
            if value >= 8 {
                assert!(
                    bucket_upper(bucket) - value <= value / 8,
                    "{value}: bucket too wide"
                );
            }
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    fn fields_of(traffic: &Traffic) -> HashMap<String, u64> {
        let mut merged = HashMap::new();
        for (name, value) in traffic.take_fields() {
            *merged.entry(name).or_default() += value;
        }
        merged
    }

    #[test]
    fn the_breakdown_adds_up_to_the_totals() {
        let traffic = Traffic::default();
        let ms = Duration::from_millis;
        for i in 0..100u64 {
            let answer =
                [Answer::L1, Answer::L2, Answer::Loaded, Answer::NotFound][(i % 4) as usize];
            traffic.record("/products/{id}", answer, ms(i), Some(ms(1000)));
        }
        traffic.record("/feed", Answer::Stale, ms(3), Some(ms(20_000)));
        traffic.record("/admin/jobs", Answer::Uncached, ms(1), None);
        let fields = fields_of(&traffic);
        let routes = breakdown(fields.iter().map(|(n, v)| (n.as_str(), *v)));
        assert_eq!(routes.len(), 3);
        let total: u64 = routes.iter().map(|r| r.requests).sum();
        assert_eq!(total, 102);
        for route in &routes {
            assert_eq!(
                route.answers.values().sum::<u64>(),
                route.requests,
                "{}",
                route.route
            );
        }
        let product = routes.iter().find(|r| r.route == "/products/{id}").unwrap();
        assert_eq!(product.category, "product");
        assert_eq!(product.answers["l1"], 25);
        // 0..100 ms: the median is 49 or 50 ms, within a bucket's width above.
        let p50 = product.latency_us.p50.unwrap();
        assert!((49_000..=56_250).contains(&p50), "{p50}");
        assert!(product.age_ms.p99.unwrap() >= 1000);
        let admin = routes.iter().find(|r| r.route == "/admin/jobs").unwrap();
        assert_eq!((admin.category.as_str(), admin.age_ms.p50), ("none", None));
        // A write shares its template with the read, not its category.
        assert_eq!(category_of("PUT /products/{id}"), "none");
        assert_eq!(category_of("GET /products/{id}"), "product");
        assert_eq!(category_of("POST /products/batch"), "product");
        // Taken once: a second take is empty.
        assert!(traffic.take_fields().is_empty());
    }

    #[test]
    fn a_routes_emf_line_has_the_route_and_category_dimensions_and_its_figures() {
        let traffic = Traffic::default();
        traffic.record(
            "/feed",
            Answer::L2,
            Duration::from_micros(300),
            Some(Duration::from_secs(2)),
        );
        let fields = fields_of(&traffic);
        let routes = breakdown(fields.iter().map(|(n, v)| (n.as_str(), *v)));
        let line: serde_json::Value =
            serde_json::from_str(&routes[0].emf_line("CatalogCache", "api", 1_000)).unwrap();
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(
            directive["Dimensions"][0],
            serde_json::json!(["Function", "Route", "Category"])
        );
        assert_eq!(
            (line["Route"].as_str(), line["Category"].as_str()),
            (Some("/feed"), Some("feed"))
        );
        assert_eq!(line["Requests"], 1);
        assert_eq!(line["Answers_l2"], 1);
        // Latency and age are distributions: CloudWatch merges them across environments.
        assert_eq!(
            line["Latency"],
            serde_json::json!({"Values": [319], "Counts": [1]})
        );
        assert_eq!(
            line["DataAge"],
            serde_json::json!({"Values": [2047], "Counts": [1]})
        );
        // Every metric declared has a value on the line.
        for metric in directive["Metrics"].as_array().unwrap() {
            let value = &line[metric["Name"].as_str().unwrap()];
            assert!(value.is_u64() || value["Values"].is_array(), "{metric}");
        }
    }

    #[test]
    fn an_emf_distribution_keeps_within_cloudwatchs_100_values_and_its_counts() {
        let traffic = Traffic::default();
        // Latencies from 1 µs to about 17 minutes: far more than 100 buckets.
        for power in 0..30u32 {
            for step in 0..8u64 {
                let micros = (1u64 << power) + step * (1u64 << power) / 8;
                traffic.record("GET /feed", Answer::L1, Duration::from_micros(micros), None);
            }
        }
        let fields = fields_of(&traffic);
        let routes = breakdown(fields.iter().map(|(n, v)| (n.as_str(), *v)));
        let line: serde_json::Value =
            serde_json::from_str(&routes[0].emf_line("CatalogCache", "api", 1_000)).unwrap();
        let values = line["Latency"]["Values"].as_array().unwrap();
        let counts = line["Latency"]["Counts"].as_array().unwrap();
        assert!(values.len() <= 100 && values.len() > 50, "{}", values.len());
        assert_eq!(values.len(), counts.len());
        assert_eq!(counts.iter().map(|c| c.as_u64().unwrap()).sum::<u64>(), 240);
        // Each value still bounds what it stands for: the largest bounds the largest latency.
        let largest = values.last().unwrap().as_u64().unwrap();
        assert!(largest >= (1 << 29) + 7 * (1 << 29) / 8, "{largest}");
        assert!(line.get("DataAge").is_none(), "no ages recorded");
    }

    #[test]
    fn operation_latency_is_recorded_per_tier() {
        let traffic = Traffic::default();
        for i in 1..=100u64 {
            traffic.record_operation(Operation::L2Get, Duration::from_micros(i * 10));
        }
        traffic.record_operation(Operation::Load, Duration::from_millis(4));
        let fields = fields_of(&traffic);
        let ops = operations(fields.iter().map(|(n, v)| (n.as_str(), *v)));
        assert_eq!(ops.len(), 2, "{ops:?}");
        let get = ops.iter().find(|o| o.operation == "l2_get").unwrap();
        assert_eq!(get.calls, 100);
        let p99 = get.latency_us.p99.unwrap();
        assert!((990..=1125).contains(&p99), "{p99}");
        let load = ops.iter().find(|o| o.operation == "load").unwrap();
        assert!((4000..=4500).contains(&load.latency_us.p50.unwrap()));
        // Operations are not routes.
        assert!(breakdown(fields.iter().map(|(n, v)| (n.as_str(), *v))).is_empty());
    }

    #[test]
    fn histograms_merge_across_environments_by_addition() {
        let (one, other, both) = (Traffic::default(), Traffic::default(), Traffic::default());
        for i in 0..1000u64 {
            let latency = Duration::from_micros(i * i);
            let (environment, age) = if i % 3 == 0 {
                (&one, 10)
            } else {
                (&other, 5000)
            };
            environment.record(
                "/products/{id}",
                Answer::L2,
                latency,
                Some(Duration::from_millis(age)),
            );
            both.record(
                "/products/{id}",
                Answer::L2,
                latency,
                Some(Duration::from_millis(age)),
            );
        }
        let mut merged = fields_of(&one);
        for (name, value) in fields_of(&other) {
            *merged.entry(name).or_default() += value;
        }
        let from_two = breakdown(merged.iter().map(|(n, v)| (n.as_str(), *v)));
        let single = fields_of(&both);
        let from_one = breakdown(single.iter().map(|(n, v)| (n.as_str(), *v)));
        assert_eq!(from_two, from_one);
        assert_eq!(from_two[0].requests, 1000);
        let ages = age_p99_by_category(merged.iter().map(|(n, v)| (n.as_str(), *v)));
        // Two thirds of the reads served 5 s old data: the p99 is in 5 s's bucket, whose lower
        // bound health compares.
        assert!(
            (4375..=5000).contains(&ages["product"].at_least_ms),
            "{ages:?}"
        );
        assert_eq!(ages["product"].answers, 1000);
    }
}
