//! The buffers and timers one downstream connection reuses for all its
//! requests, borrowed from the worker's free lists (`recycle.rs`) while
//! bytes move and given back while the connection waits. Between requests
//! the connection keeps only what the wait needs ([`Kept`]): an idle
//! connection's task holds it.

use super::recycle::{self, Source, BUF};
use super::timer::Rearmed;
use bytes::BytesMut;

/// Buffers and timers one downstream connection reuses for all its requests.
/// The buffers are borrowed from the worker's free lists (`recycle.rs`)
/// while bytes move, and given back while the connection waits.
pub(super) struct Buffers {
    /// Bytes read from the client, not yet consumed.
    pub down: BytesMut,
    /// Bytes read from the upstream, not yet forwarded.
    pub up: BytesMut,
    /// What is about to be written.
    pub out: Vec<u8>,
    /// The connection's one timer: the route (or per-try) timeout of each
    /// attempt, and the idle timeout between requests. The two never run
    /// at once: a timer each kept a second boxed tokio `Sleep` (112 bytes)
    /// in every idle connection that had proxied a request.
    pub attempt_timer: Rearmed,
}

/// What a connection keeps while it waits for its next request: the
/// client's unread bytes (none, or a pipelined request) and its timer.
#[derive(Default)]
pub(super) struct Kept {
    pub down: BytesMut,
    pub timer: Rearmed,
}

impl Drop for Kept {
    /// A connection that ends while it waits (its client closed it) took a
    /// buffer for the read that found the end: back to the free list.
    fn drop(&mut self) {
        self.down.clear();
        recycle::give_read(&mut self.down, Source::Client);
    }
}

impl Buffers {
    pub fn new() -> Self {
        Self { down: BytesMut::new(), up: BytesMut::new(), out: Vec::new(), attempt_timer: Rearmed::default() }
    }

    /// For a request: what the connection kept, and room for the rest.
    pub fn resume(kept: &mut Kept) -> Self {
        Self {
            down: std::mem::take(&mut kept.down),
            up: BytesMut::new(),
            out: Vec::new(),
            attempt_timer: std::mem::take(&mut kept.timer),
        }
    }

    /// After a request the connection goes on from: gives back what the
    /// wait does not need ([`Self::release`]) and keeps the rest.
    pub fn suspend(mut self, kept: &mut Kept) {
        self.release();
        kept.down = std::mem::take(&mut self.down);
        kept.timer = std::mem::take(&mut self.attempt_timer);
    }

    /// Between requests: gives the buffers back, but for unread bytes of
    /// the next request (pipelined), which move to a smaller buffer if a
    /// large body made theirs grow.
    pub fn release(&mut self) {
        Self::give_back(&mut self.out, &mut self.down, &mut self.up);
        if self.down.capacity() > 4 * BUF && self.down.len() < BUF {
            let rest = std::mem::replace(&mut self.down, BytesMut::with_capacity(BUF));
            self.down.extend_from_slice(&rest);
        }
    }

    /// Gives back what the next wait does not need: the write buffer, the
    /// upstream's (its bytes are passed on), and the client's unless it
    /// holds unread bytes (a pipelined request).
    pub fn give_back(out: &mut Vec<u8>, down: &mut BytesMut, up: &mut BytesMut) {
        recycle::give_write(out);
        recycle::give_read(down, Source::Client);
        up.clear();
        recycle::give_read(up, Source::Upstream);
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        self.down.clear();
        Self::give_back(&mut self.out, &mut self.down, &mut self.up);
    }
}
