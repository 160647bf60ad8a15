//! A forwarded stream's one timer, moved lazily.
//!
//! The deadline moves on every event (an idle timeout restarts whenever
//! bytes move), several times a gRPC call, and each `Sleep::reset`
//! converts the deadline to the driver's ticks and updates the timer's
//! entry (tokio takes its lock only for a timer moved earlier), which
//! showed in the profile (bench/RESULTS.md, "A forwarded stream's timer
//! moved lazily"). Here the timer is moved only when the deadline comes
//! earlier; a later deadline is noticed when the timer runs out before it,
//! and the timer is set again then: at most one extra wake-up per idle
//! period instead of a reset per event.
//!
//! Deadlines are `std::time::Instant`s, compared with the real clock: a
//! runtime with paused time (`tokio::time::pause`) would spin here.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;
use tokio::time::Sleep;

pub(super) struct Deadline {
    timer: Pin<Box<Sleep>>,
    /// What the timer is set to, once set.
    armed: Option<Instant>,
    /// When the stream's time is up (`None`: no limit where it is now).
    target: Option<Instant>,
}

impl Deadline {
    pub(super) fn new() -> Self {
        // Not registered with the driver until first set.
        let never = tokio::time::Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        Self { timer: Box::pin(tokio::time::sleep_until(never)), armed: None, target: None }
    }

    /// The deadline from now on.
    pub(super) fn set(&mut self, target: Option<Instant>) {
        self.target = target;
        if let Some(t) = target {
            if self.armed.is_none_or(|armed| t < armed) {
                self.arm(t);
            }
        }
    }

    fn arm(&mut self, at: Instant) {
        self.timer.as_mut().reset(at.into());
        self.armed = Some(at);
    }

    /// Resolves once the deadline last set has passed. While there is none
    /// it stays pending without a wake-up registered: callers poll it only
    /// while they have a deadline (their `select!` guard).
    pub(super) fn expired(&mut self) -> Expired<'_> {
        Expired(self)
    }
}

/// [`Deadline::expired`]'s future.
pub(super) struct Expired<'a>(&'a mut Deadline);

impl Future for Expired<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let d = &mut *self.0;
        let Some(target) = d.target else { return Poll::Pending };
        loop {
            ready!(d.timer.as_mut().poll(cx));
            // The timer was set for an earlier deadline than the one now:
            // on to the current one (polling registers the wake-up).
            if Instant::now() >= target {
                return Poll::Ready(());
            }
            d.arm(target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_deadline_moved_later_is_kept_not_the_earlier_one() {
        let mut d = Deadline::new();
        let start = Instant::now();
        d.set(Some(start + Duration::from_millis(20)));
        // Moved later before it runs out: the timer stays at 20 ms, and
        // must not count as expired then.
        d.set(Some(start + Duration::from_millis(120)));
        tokio::time::timeout(Duration::from_secs(5), d.expired()).await.expect("the later deadline");
        assert!(start.elapsed() >= Duration::from_millis(120), "expired after {:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_deadline_moved_earlier_moves_the_timer() {
        let mut d = Deadline::new();
        let start = Instant::now();
        d.set(Some(start + Duration::from_secs(60)));
        d.set(Some(start + Duration::from_millis(30)));
        tokio::time::timeout(Duration::from_secs(5), d.expired()).await.expect("the earlier deadline");
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn no_deadline_never_expires() {
        let mut d = Deadline::new();
        d.set(Some(Instant::now() + Duration::from_millis(10)));
        d.set(None);
        assert!(tokio::time::timeout(Duration::from_millis(60), d.expired()).await.is_err());
    }
}
