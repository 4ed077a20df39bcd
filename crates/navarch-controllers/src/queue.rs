//! The work queue every reconciler in this crate drains: keys, each queued
//! at most once, plus keys due later (resyncs, deadlines, retries), plus the
//! per-key failure backoff upstream's rate-limited queue applies.
//!
//! A controller's loop owns one [`WorkQueue`]: it folds informer batches
//! in (calling [`WorkQueue::add`] for every key a change touches), pops
//! keys with [`WorkQueue::pop`] (which first moves the due delayed keys in)
//! and sleeps until [`WorkQueue::next_wake`] when the queue is empty.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Duration;
use tokio::time::Instant;

/// A de-duplicating FIFO of keys with delayed adds.
#[derive(Debug)]
pub struct WorkQueue<K: Ord + Hash + Clone> {
    queue: VecDeque<K>,
    queued: HashSet<K>,
    delayed: BTreeSet<(Instant, K)>,
}

impl<K: Ord + Hash + Clone> Default for WorkQueue<K> {
    fn default() -> Self {
        WorkQueue {
            queue: VecDeque::new(),
            queued: HashSet::new(),
            delayed: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> WorkQueue<K> {
    /// Queues `key` unless it is already queued.
    pub fn add(&mut self, key: K) {
        if self.queued.insert(key.clone()) {
            self.queue.push_back(key);
        }
    }

    /// Queues `key` once `after` has passed.
    pub fn add_after(&mut self, key: K, after: Duration) {
        self.delayed.insert((Instant::now() + after, key));
    }

    /// Queues `key` at `at`.
    pub fn add_at(&mut self, key: K, at: Instant) {
        self.delayed.insert((at, key));
    }

    /// The next key, after moving every delayed key that is due.
    pub fn pop(&mut self) -> Option<K> {
        self.promote(Instant::now());
        let key = self.queue.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    fn promote(&mut self, now: Instant) {
        while let Some((at, _)) = self.delayed.first() {
            if *at > now {
                break;
            }
            let (_, key) = self.delayed.pop_first().expect("first exists");
            self.add(key);
        }
    }

    /// Keys ready now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// No key ready now (delayed keys may still be waiting).
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// When the earliest delayed key is due; an hour away when none is.
    pub fn next_wake(&self) -> Instant {
        self.delayed
            .first()
            .map(|(at, _)| *at)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
    }
}

/// Per-key exponential backoff for failed syncs: 100 ms doubling, at most
/// 30 s (our choice; upstream's controllers use 5 ms doubling to 1000 s
/// plus an overall token bucket).
#[derive(Debug)]
pub struct Backoff<K: Hash + Eq> {
    failures: HashMap<K, u32>,
    base: Duration,
    max: Duration,
}

impl<K: Hash + Eq> Default for Backoff<K> {
    fn default() -> Self {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(30))
    }
}

impl<K: Hash + Eq> Backoff<K> {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            failures: HashMap::new(),
            base,
            max,
        }
    }

    /// Records one more failure of `key` and returns how long to wait.
    pub fn fail(&mut self, key: K) -> Duration {
        let n = self.failures.entry(key).or_insert(0);
        let delay = self.base.saturating_mul(1 << (*n).min(16)).min(self.max);
        *n += 1;
        delay
    }

    /// Forgets `key`'s failures (after a success, or when it is gone).
    pub fn forget(&mut self, key: &K) {
        self.failures.remove(key);
    }

    /// Failures of `key` in a row.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn dedups_and_delays() {
        let mut q = WorkQueue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        q.add_after("c", Duration::from_secs(1));
        assert_eq!(q.pop(), Some("a"));
        assert_eq!(q.pop(), Some("b"));
        assert_eq!(q.pop(), None);
        tokio::time::sleep_until(q.next_wake()).await;
        assert_eq!(q.pop(), Some("c"));
        assert_eq!(q.pop(), None);
        // A key popped may be queued again.
        q.add("a");
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut b = Backoff::default();
        let delays: Vec<_> = (0..12).map(|_| b.fail("k").as_millis()).collect();
        assert_eq!(&delays[..4], &[100, 200, 400, 800]);
        assert_eq!(delays[11], 30_000);
        b.forget(&"k");
        assert_eq!(b.fail("k").as_millis(), 100);
    }
}
