//! The heartbeat loop: one 100 ms tick for all nodes. Each tick renews the
//! Leases of one slice of the nodes and re-posts the status of another, so
//! with N nodes and a 10 s renewal interval each tick renews N/100 Leases.

use crate::node::{rfc3339, Shared, MERGE_PATCH};
use crate::Error;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The heartbeat tick (shorter when the renewal interval is).
const TICK: Duration = Duration::from_millis(100);

/// How many ticks one round of `every` spans (at least one).
fn slots(every: Duration, tick: Duration) -> u64 {
    ((every.as_nanos() / tick.as_nanos().max(1)) as u64).max(1)
}

/// The nodes whose turn is `slot` of `slots`: every node gets exactly one
/// slot per round, and slots hold `n / slots` nodes give or take one.
fn slot_range(slot: u64, slots: u64, n: usize) -> Range<usize> {
    let at = |s: u64| (s as u128 * n as u128 / slots as u128) as usize;
    at(slot)..at(slot + 1)
}

pub(crate) async fn run(shared: Arc<Shared>, tasks: TaskTracker, cancel: CancellationToken) {
    let n = shared.nodes.len();
    let tick = TICK.min(shared.config.lease_renew);
    let lease_slots = slots(shared.config.lease_renew, tick);
    let status_slots = slots(shared.config.status_refresh, tick);
    // Everything was written at registration: the first round starts one
    // tick later.
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut k: u64 = 0;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = interval.tick() => {}
        }
        for i in slot_range(k % lease_slots, lease_slots, n) {
            let (shared, cancel) = (shared.clone(), cancel.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = renew_lease(&shared, i) => {}
                }
            });
        }
        for i in slot_range(k % status_slots, status_slots, n) {
            let (shared, cancel) = (shared.clone(), cancel.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = refresh_status(&shared, i) => {}
                }
            });
        }
        k += 1;
    }
}

pub(crate) async fn renew_lease(shared: &Shared, i: usize) {
    if shared.nodes[i].is_cut_off() {
        return;
    }
    let body =
        serde_json::to_vec(&serde_json::json!({"spec": shared.lease_spec(i)})).expect("json");
    let r = shared
        .call(
            Some(&shared.limit),
            reqwest::Method::PATCH,
            &shared.lease_path(i),
            MERGE_PATCH,
            Some(body),
            3,
        )
        .await;
    let name = &shared.nodes[i].name;
    match r {
        Ok(r) if r.ok() => {}
        Ok(r) if r.status == 404 => {
            if let Err(e) = shared.create_lease(i).await {
                shared.warn(format_args!("recreating the lease of {name}: {e}"));
            }
        }
        Ok(r) => shared.warn(format_args!(
            "renewing the lease of {name}: {} {}",
            r.status,
            r.message()
        )),
        Err(e) => shared.warn(format_args!("renewing the lease of {name}: {e}")),
    }
}

pub(crate) async fn refresh_status(shared: &Shared, i: usize) {
    if shared.nodes[i].is_cut_off() {
        return;
    }
    let now = rfc3339(jiff::Timestamp::now());
    let name = &shared.nodes[i].name;
    match shared.post_status(i, &now).await {
        Ok(()) => {}
        Err(Error::Api { status: 404, .. }) => {
            tracing::warn!(node = %name, "hollow node was deleted, registering it again");
            let again = async {
                shared.register_node(i).await?;
                shared.create_lease(i).await
            };
            if let Err(e) = again.await {
                shared.warn(format_args!("registering {name} again: {e}"));
            }
        }
        Err(e) => shared.warn(format_args!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_gets_one_slot_per_round() {
        for (n, slots_) in [(5000usize, 100u64), (20, 10), (3, 100), (0, 5), (101, 100)] {
            let mut seen = vec![0u32; n];
            let mut biggest = 0;
            for s in 0..slots_ {
                let r = slot_range(s, slots_, n);
                biggest = biggest.max(r.len());
                for i in r {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|c| *c == 1), "n={n} slots={slots_}");
            assert!(biggest <= n.div_ceil(slots_ as usize), "n={n}: {biggest}");
        }
    }

    #[test]
    fn rounds_are_whole_ticks() {
        assert_eq!(slots(Duration::from_secs(10), TICK), 100);
        assert_eq!(slots(Duration::from_secs(300), TICK), 3000);
        assert_eq!(slots(Duration::from_millis(50), TICK), 1);
    }
}
