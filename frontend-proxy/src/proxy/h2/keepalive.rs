//! `connection_keepalive` on a downstream HTTP/2 connection, as Envoy's
//! codec does it: a PING every `interval` plus a random part of
//! `interval_jitter`; a PING unanswered for `timeout` closes the
//! connection, unless frames arrived meanwhile (the answer may be queued
//! behind data the client is still sending), which starts the timeout
//! again. Envoy restarts it at each frame; h2 only counts them, so while a
//! PING is out the count is looked at every quarter of the timeout: the
//! connection closes at most that much later than `timeout` after the
//! client's last frame. The accept loop (`h2.rs`) polls it beside the
//! connection.

use crate::config::model::Http2Keepalive;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::{Instant, Sleep};

/// What woke the keepalive.
pub(super) enum Due {
    /// The PING's answer arrived.
    Answered,
    /// The connection can no longer carry PINGs (it is ending).
    Broken,
    /// Time for a PING, or the timeout of the one out.
    Timer,
}

/// What the connection does next.
pub(super) enum Next {
    Continue,
    /// The PING went unanswered: close the connection.
    Close,
    /// No more PINGs (the connection is ending on its own).
    Stop,
}

/// A connection's keepalive state, boxed by its owner: only connections
/// that send PINGs pay for it.
pub(super) struct Keepalive {
    settings: Http2Keepalive,
    pings: h2::PingPong,
    timer: Pin<Box<Sleep>>,
    /// While a PING is out: the frames received at the last look, and when
    /// the connection closes unless more arrive (`timeout` after the PING
    /// went out, or after the last look that found new frames).
    awaiting: Option<(u64, Instant)>,
}

impl Keepalive {
    pub fn new(settings: Http2Keepalive, pings: h2::PingPong) -> Self {
        let timer = Box::pin(tokio::time::sleep(next_ping(&settings)));
        Self { settings, pings, timer, awaiting: None }
    }

    /// Resolves when the answer arrives or the timer runs out.
    pub fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<Due> {
        if self.awaiting.is_some() {
            match self.pings.poll_pong(cx) {
                Poll::Ready(Ok(_)) => return Poll::Ready(Due::Answered),
                Poll::Ready(Err(_)) => return Poll::Ready(Due::Broken),
                Poll::Pending => {}
            }
        }
        self.timer.as_mut().poll(cx).map(|()| Due::Timer)
    }

    /// Acts on `due`; `frames` is how many frames the client has sent so far.
    pub fn on(&mut self, due: Due, frames: u64) -> Next {
        let now = Instant::now();
        match (due, self.awaiting) {
            (Due::Broken, _) => Next::Stop,
            (Due::Answered, _) => {
                self.awaiting = None;
                self.timer.as_mut().reset(now + next_ping(&self.settings));
                Next::Continue
            }
            (Due::Timer, None) => {
                if self.pings.send_ping(h2::Ping::opaque()).is_err() {
                    return Next::Stop;
                }
                self.wait(frames, now + self.settings.timeout, now);
                Next::Continue
            }
            (Due::Timer, Some((seen, deadline))) => {
                if frames != seen {
                    self.wait(frames, now + self.settings.timeout, now);
                    Next::Continue
                } else if now >= deadline {
                    Next::Close
                } else {
                    self.wait(frames, deadline, now);
                    Next::Continue
                }
            }
        }
    }

    /// Waits for the answer until `deadline`, looking at the frame count
    /// every quarter of the timeout meanwhile.
    fn wait(&mut self, frames: u64, deadline: Instant, now: Instant) {
        self.awaiting = Some((frames, deadline));
        self.timer.as_mut().reset(deadline.min(now + self.settings.timeout / 4));
    }
}

/// Resolves when a connection's keepalive is due; never without one.
pub(super) fn due(keepalive: &mut Option<Box<Keepalive>>) -> impl Future<Output = Due> + '_ {
    poll_fn(move |cx| keepalive.as_mut().map_or(Poll::Pending, |k| k.poll_due(cx)))
}

/// The wait before the next PING: `interval` and up to `jitter` of it more.
fn next_ping(k: &Http2Keepalive) -> std::time::Duration {
    k.interval + k.interval.mul_f64(k.jitter * rand::random::<f64>())
}
