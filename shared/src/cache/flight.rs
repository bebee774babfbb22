//! In-process single flight: concurrent misses of one key share one load.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

/// Coalesces concurrent work per key.
///
/// ## Behavior
/// - The first caller for a key runs its closure; callers arriving while it runs wait and get
///   a clone of its result; their own closures are dropped unrun.
/// - If the running caller is cancelled, a waiting caller runs its own closure instead
///   (`OnceCell` semantics), so a dropped request never strands the others.
/// - The key is forgotten when the work finishes; later callers start afresh (by then the
///   value is in L1).
pub(crate) struct Flights<V> {
    inflight: Mutex<HashMap<String, Arc<OnceCell<V>>>>,
}

impl<V: Clone> Flights<V> {
    pub fn new() -> Self {
        Flights {
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `work` unless a flight for `key` is under way; returns its result and whether
    /// this caller ran it.
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> (V, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let cell = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            inflight
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(OnceCell::new()))
                .clone()
        };
        let mut led = false;
        let result = cell
            .get_or_init(|| {
                led = true;
                work()
            })
            .await
            .clone();
        if led {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            if inflight.get(key).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                inflight.remove(key);
            }
        }
        (result, led)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(Flights::<u32>::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (flights, runs) = (flights.clone(), runs.clone());
                tokio::spawn(async move {
                    flights
                        .run("k", || async {
                            runs.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            7
                        })
                        .await
                })
            })
            .collect();
        let mut leaders = 0;
        for task in tasks {
            let (value, led) = task.await.unwrap();
            assert_eq!(value, 7);
            leaders += usize::from(led);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_leader_hands_over_to_a_waiter() {
        let flights = Arc::new(Flights::<u32>::new());
        let leader = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("k", || async {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        1
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run("k", || async { 2 }).await })
        };
        tokio::time::sleep(Duration::from_millis(1)).await;
        leader.abort();
        assert_eq!(waiter.await.unwrap(), (2, true));
    }
}
