//! Trailing-period view counts from hourly and daily counters.
//!
//! A bucket counts toward a period when it *started* within the period: `start > now - period`.
//! 1 h and 24 h use the hourly buckets, 7 d and 30 d the daily ones, never both, so no view is
//! counted twice (every view is in one hourly and one daily bucket).

use crate::model::{CounterBucket, EpochMillis, PeriodStats};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Views over 1 h, 24 h, 7 d and 30 d at `now`.
pub fn period_stats(counters: &[(CounterBucket, u64)], now: EpochMillis) -> PeriodStats {
    let sum = |period: i64, hourly: bool| -> u64 {
        counters
            .iter()
            .filter(|(bucket, _)| matches!(bucket, CounterBucket::Hour(_)) == hourly)
            .filter(|(bucket, _)| bucket.start_ms() > now - period && bucket.start_ms() <= now)
            .map(|(_, count)| *count)
            .sum()
    };
    PeriodStats {
        views_1h: sum(HOUR_MS, true),
        views_24h: sum(DAY_MS, true),
        views_7d: sum(7 * DAY_MS, false),
        views_30d: sum(30 * DAY_MS, false),
        computed_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-20 10:30 UTC.
    const NOW: i64 = 1_795_602_600_000;

    fn hour(offset: i64) -> CounterBucket {
        CounterBucket::hour_of(NOW + offset * HOUR_MS)
    }

    fn day(offset: i64) -> CounterBucket {
        CounterBucket::day_of(NOW + offset * DAY_MS)
    }

    #[test]
    fn each_period_sums_its_own_buckets() {
        let counters = [
            (hour(0), 5),  // this hour
            (hour(-1), 7), // the previous hour
            (hour(-23), 11),
            (hour(-24), 13), // started 24 h 30 min ago: outside 24 h
            (day(0), 36),
            (day(-6), 100),
            (day(-7), 1000), // started more than 7 days ago
            (day(-29), 10_000),
        ];
        let stats = period_stats(&counters, NOW);
        assert_eq!(stats.views_1h, 5);
        assert_eq!(stats.views_24h, 5 + 7 + 11);
        assert_eq!(stats.views_7d, 36 + 100);
        assert_eq!(stats.views_30d, 36 + 100 + 1000 + 10_000);
        assert_eq!(stats.computed_at, NOW);
    }

    #[test]
    fn the_last_hour_rolls_over_on_the_hour() {
        let ten = CounterBucket::hour_of(NOW); // 10:00-11:00
        let counters = [(ten, 42)];
        let before = NOW + 29 * 60_000 + 59_999; // 10:59:59.999
        let on_the_hour = NOW + 30 * 60_000; // 11:00:00
        assert_eq!(period_stats(&counters, before).views_1h, 42);
        assert_eq!(period_stats(&counters, on_the_hour).views_1h, 0);
        assert_eq!(period_stats(&counters, on_the_hour).views_24h, 42);
    }

    #[test]
    fn a_counter_30_days_and_1_hour_old_is_excluded() {
        let thirty_days_ago = CounterBucket::Day((NOW - 30 * DAY_MS).div_euclid(DAY_MS));
        // Its start is more than 30 days before NOW (it started at midnight, NOW is 10:30).
        assert!(thirty_days_ago.start_ms() < NOW - 30 * DAY_MS);
        let stats = period_stats(&[(thirty_days_ago, 9)], NOW);
        assert_eq!(stats.views_30d, 0);
        // A day later in the window does count.
        let twenty_nine = CounterBucket::Day((NOW - 29 * DAY_MS).div_euclid(DAY_MS));
        assert_eq!(period_stats(&[(twenty_nine, 9)], NOW).views_30d, 9);
        // Exactly at the boundary: a bucket that started 30 d + 1 h before now is out.
        let hour_bucket_start = NOW - 30 * DAY_MS - HOUR_MS;
        let later = hour_bucket_start.div_euclid(DAY_MS) * DAY_MS + 30 * DAY_MS + HOUR_MS;
        let day_bucket = CounterBucket::day_of(hour_bucket_start);
        assert_eq!(period_stats(&[(day_bucket, 1)], later).views_30d, 0);
    }

    #[test]
    fn future_buckets_from_clock_skew_are_ignored() {
        assert_eq!(period_stats(&[(hour(2), 5)], NOW).views_24h, 0);
    }
}
