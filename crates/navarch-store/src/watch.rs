//! Watch fan-out, shared by both backends.
//!
//! A watcher is registered with the [`Hub`] *before* its history is read, so
//! no event can fall between history replay and live delivery:
//!
//! 1. `Hub::watch` registers the watcher in `Replaying` mode: from now on every
//!    published event for its prefix is appended to the watcher's buffer.
//! 2. A task reads the history (events with revision > `after`) page by page
//!    from the backend and sends it, waiting for the client as needed (this
//!    task is not the writer, so it may wait).
//! 3. The task then drains the buffer, skipping revisions already sent (an
//!    event committed before registration but published after it is both in
//!    the history and in the buffer), until the buffer is empty; under the
//!    hub lock it then switches the watcher to `Live` mode.
//! 4. In `Live` mode the publisher (the writer) delivers with `try_send`,
//!    never waiting. If the channel has only one free slot left, the watcher
//!    gets a "watcher too slow" error in that slot and is dropped. A buffer
//!    that outgrows the channel capacity while replaying ends the same way.
//!
//! Every path deduplicates by revision, so each event is delivered at most
//! once and in order; the registration order makes it at least once.

use crate::{BoxFuture, Error, Event, Result, Revision, WatchStream};
use parking_lot::Mutex;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Events read from history per page while replaying.
pub(crate) const REPLAY_PAGE: usize = 1024;

/// A backend's retained history, as seen by a replaying watcher.
pub(crate) trait History: Send + Sync + 'static {
    /// Events on keys starting with `prefix` with revision `> after`, in
    /// revision order, at most `limit`. `Compacted` if `after` is below the
    /// compacted revision at the time of the read.
    fn events_after(
        self: Arc<Self>,
        prefix: String,
        after: Revision,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Event>>>;
}

/// The error a watcher receives, as its last item, when it falls behind.
pub(crate) fn too_slow() -> Error {
    Error::Backend("watcher too slow: its event channel filled up; watch again from the last revision received".into())
}

enum Mode {
    /// History replay in progress: live events are buffered.
    Replaying { buf: Vec<Event>, overflow: bool },
    /// The publisher delivers directly.
    Live,
}

struct Watcher {
    id: u64,
    prefix: String,
    tx: mpsc::Sender<Result<Event>>,
    /// The last revision delivered (only meaningful in `Live` mode).
    last: Revision,
    mode: Mode,
}

#[derive(Default)]
struct HubInner {
    next_id: u64,
    closed: bool,
    watchers: Vec<Watcher>,
}

/// The set of watchers of one store.
pub(crate) struct Hub {
    inner: Mutex<HubInner>,
    capacity: usize,
}

/// Sends one live event without waiting. Returns false when the watcher must
/// be dropped (closed by the client, or too slow).
fn deliver(tx: &mpsc::Sender<Result<Event>>, last: &mut Revision, ev: &Event) -> bool {
    let rev = ev.kv.mod_revision;
    if rev <= *last {
        return true;
    }
    // Only the hub sends in Live mode (under its lock), so the free capacity
    // can only grow between this check and the send below.
    if tx.capacity() <= 1 {
        let _ = tx.try_send(Err(too_slow()));
        return false;
    }
    match tx.try_send(Ok(ev.clone())) {
        Ok(()) => {
            *last = rev;
            true
        }
        Err(_) => false,
    }
}

impl Hub {
    /// A hub whose watchers get channels of `capacity` events (at least 2).
    pub(crate) fn new(capacity: usize) -> Self {
        Hub {
            inner: Mutex::new(HubInner::default()),
            capacity: capacity.max(2),
        }
    }

    /// Delivers `events` (in revision order, after every earlier published
    /// event) to the matching watchers. Never blocks on a watcher.
    pub(crate) fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let cap = self.capacity;
        let mut inner = self.inner.lock();
        inner.watchers.retain_mut(|w| {
            if w.tx.is_closed() {
                return false;
            }
            for ev in events {
                if !ev.kv.key.starts_with(w.prefix.as_str()) {
                    continue;
                }
                match &mut w.mode {
                    Mode::Live => {
                        if !deliver(&w.tx, &mut w.last, ev) {
                            return false;
                        }
                    }
                    Mode::Replaying { buf, overflow } => {
                        if *overflow {
                            break;
                        }
                        if buf.len() >= cap {
                            *overflow = true;
                            break;
                        }
                        buf.push(ev.clone());
                    }
                }
            }
            true
        });
    }

    /// Ends every watch stream and refuses new watchers.
    pub(crate) fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        inner.watchers.clear();
    }

    fn remove(&self, id: u64) {
        self.inner.lock().watchers.retain(|w| w.id != id);
    }

    fn registered(&self, id: u64) -> bool {
        self.inner.lock().watchers.iter().any(|w| w.id == id)
    }

    /// Registers a watcher for `prefix` and starts replaying `history` after
    /// `after`. The caller checks `after` against the compacted revision
    /// first; a compaction racing with the replay ends the stream with
    /// `Compacted`.
    pub(crate) fn watch(
        self: &Arc<Self>,
        history: Arc<dyn History>,
        prefix: String,
        after: Revision,
    ) -> Result<WatchStream> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Backend("watch must be called within a tokio runtime".into()))?;
        let (tx, rx) = mpsc::channel(self.capacity);
        let id = {
            let mut inner = self.inner.lock();
            if inner.closed {
                return Err(Error::Closed);
            }
            inner.next_id += 1;
            let id = inner.next_id;
            inner.watchers.push(Watcher {
                id,
                prefix: prefix.clone(),
                tx: tx.clone(),
                last: after,
                mode: Mode::Replaying {
                    buf: Vec::new(),
                    overflow: false,
                },
            });
            id
        };
        runtime.spawn(replay(self.clone(), history, id, tx, prefix, after));
        Ok(rx)
    }
}

/// Steps 2 and 3 of the module doc: history, then the buffer, then Live.
async fn replay(
    hub: Arc<Hub>,
    history: Arc<dyn History>,
    id: u64,
    tx: mpsc::Sender<Result<Event>>,
    prefix: String,
    after: Revision,
) {
    let mut last = after;
    loop {
        if !hub.registered(id) {
            return; // store closed or client gone
        }
        match history
            .clone()
            .events_after(prefix.clone(), last, REPLAY_PAGE)
            .await
        {
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                hub.remove(id);
                return;
            }
            Ok(events) => {
                let n = events.len();
                for ev in events {
                    let rev = ev.kv.mod_revision;
                    if rev <= last {
                        continue;
                    }
                    if tx.send(Ok(ev)).await.is_err() {
                        hub.remove(id);
                        return;
                    }
                    last = rev;
                }
                if n < REPLAY_PAGE {
                    break;
                }
            }
        }
    }
    loop {
        let (buf, overflow) = {
            let mut inner = hub.inner.lock();
            let Some(w) = inner.watchers.iter_mut().find(|w| w.id == id) else {
                return;
            };
            match &mut w.mode {
                Mode::Live => return,
                Mode::Replaying { buf, overflow } => {
                    if buf.is_empty() && !*overflow {
                        w.last = last;
                        w.mode = Mode::Live;
                        return;
                    }
                    (std::mem::take(buf), *overflow)
                }
            }
        };
        for ev in buf {
            let rev = ev.kv.mod_revision;
            if rev <= last {
                continue;
            }
            if tx.send(Ok(ev)).await.is_err() {
                hub.remove(id);
                return;
            }
            last = rev;
        }
        if overflow {
            let _ = tx.send(Err(too_slow())).await;
            hub.remove(id);
            return;
        }
    }
}
