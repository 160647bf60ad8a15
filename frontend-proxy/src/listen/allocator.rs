//! Gives the memory a worker's connections freed back to the system once
//! the worker goes quiet.
//!
//! mimalloc (the binary's allocator) returns memory only from inside its
//! own calls: a page a worker emptied waits in that worker's heap, and a
//! span freed to the arena waits for its purge delay (1 s) and then for the
//! next allocation to purge it. A worker that goes idle after a burst makes
//! no further calls, so what its connections held at the peak (an HTTP/2
//! connection's frame buffers, h2's stream slabs) stayed resident
//! (`bench/RESULTS.md`). Once a second each worker
//! asks mimalloc to collect its own heap: emptied pages go back to the
//! arena, spans free for longer than the purge delay back to the system.
//! On a busy worker mimalloc does this itself every 10,000 allocations;
//! one more collection a second (a walk over the worker's pages that have
//! room) changed neither throughput nor instructions per request in the
//! bench. Forcing it (`mi_collect(true)`) gave back no more on idle HTTP/2
//! connections: what stays is pages that still hold a live block.
//!
//! With another global allocator (the tests') the call finds mimalloc's
//! heap uninitialized and returns.
#![allow(unsafe_code)]

use crate::drain::Drain;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::MissedTickBehavior;

/// How often a worker collects: as often as mimalloc's purge delay, so
/// what a quiet worker freed is back within about twice that.
const EVERY: Duration = Duration::from_secs(1);

/// Collects this worker's heap every [`EVERY`] until the drain starts
/// (spawned on each worker thread).
pub async fn collect_while_serving(drain: Arc<Drain>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let drain_started = drain.started();
    tokio::pin!(drain_started);
    loop {
        tokio::select! {
            _ = tick.tick() => collect(),
            _ = &mut drain_started => return,
        }
    }
}

/// The calling thread's heap, collected without forcing: what mimalloc
/// would collect on its own at its next allocation.
fn collect() {
    // SAFETY: `mi_collect` takes no pointers and only touches the calling
    // thread's heap and the arenas' own bookkeeping.
    unsafe { libmimalloc_sys::mi_collect(false) }
}
