//! The active queue's order (upstream PrioritySort): higher priority first,
//! then earlier timestamp, then key for a total order.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, HashMap};

use crate::pod::PodInfo;

/// Compares two pending pods: `Less` means `a` is scheduled first.
/// Pods without a creation timestamp sort after those with one.
pub fn queue_order(a: &PodInfo, b: &PodInfo) -> Ordering {
    QueueKey::of(a).cmp(&QueueKey::of(b))
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct QueueKey {
    priority: Reverse<i32>,
    timestamp: i128,
    key: String,
}

impl QueueKey {
    fn of(pod: &PodInfo) -> QueueKey {
        QueueKey {
            priority: Reverse(pod.priority),
            timestamp: pod.created.unwrap_or(i128::MAX),
            key: pod.key.clone(),
        }
    }
}

/// A priority queue of pod keys with O(log n) push, pop and removal.
#[derive(Debug, Clone, Default)]
pub struct ActiveQueue {
    order: BTreeSet<QueueKey>,
    by_key: HashMap<String, QueueKey>,
}

impl ActiveQueue {
    pub fn new() -> ActiveQueue {
        ActiveQueue::default()
    }

    /// Adds the pod, or moves it if its priority or timestamp changed.
    pub fn push(&mut self, pod: &PodInfo) {
        self.push_with(&pod.key, pod.priority, pod.created.unwrap_or(i128::MAX));
    }

    /// Adds a key with an explicit timestamp (e.g. when it entered the
    /// queue, as upstream orders by).
    pub fn push_with(&mut self, key: &str, priority: i32, timestamp: i128) {
        self.remove(key);
        let k = QueueKey {
            priority: Reverse(priority),
            timestamp,
            key: key.to_string(),
        };
        self.order.insert(k.clone());
        self.by_key.insert(key.to_string(), k);
    }

    /// Takes the next pod to schedule.
    pub fn pop(&mut self) -> Option<String> {
        let k = self.order.pop_first()?;
        self.by_key.remove(&k.key);
        Some(k.key)
    }

    pub fn peek(&self) -> Option<&str> {
        self.order.first().map(|k| k.key.as_str())
    }

    pub fn remove(&mut self, key: &str) -> bool {
        match self.by_key.remove(key) {
            Some(k) => self.order.remove(&k),
            None => false,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, prio: i32, created: &str) -> PodInfo {
        PodInfo::from_json(
            &json!({"metadata": {"name": name, "uid": name, "creationTimestamp": created},
                                   "spec": {"priority": prio}}),
        )
        .unwrap()
    }

    #[test]
    fn priority_then_age() {
        let mut q = ActiveQueue::new();
        q.push(&pod("old-low", 0, "2024-01-01T00:00:00Z"));
        q.push(&pod("new-high", 100, "2024-01-03T00:00:00Z"));
        q.push(&pod("old-high", 100, "2024-01-02T00:00:00Z"));
        q.push(&pod("gone", 1000, "2024-01-02T00:00:00Z"));
        assert!(q.remove("gone"));
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop().as_deref(), Some("old-high"));
        assert_eq!(q.pop().as_deref(), Some("new-high"));
        // Re-pushing with a new priority moves the entry.
        q.push(&pod("old-low", 5, "2024-01-01T00:00:00Z"));
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop().as_deref(), Some("old-low"));
        assert!(q.is_empty());
        assert_eq!(
            queue_order(
                &pod("a", 1, "2024-01-01T00:00:00Z"),
                &pod("b", 0, "2023-01-01T00:00:00Z")
            ),
            Ordering::Less
        );
    }
}
