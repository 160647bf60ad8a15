//! The timers of a native-engine connection: a timer re-armed for each
//! request ([`Rearmed`]), a bound that costs nothing when the bounded
//! future is ready at once ([`within`]), and the server's shutdown as a
//! future that stays registered across requests ([`Drained`]).

use crate::drain::Drain;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFuture;

/// A timer a connection re-arms for each request instead of creating a new
/// one: moving a registered tokio timer to a later deadline is one atomic
/// exchange, while a new timer takes the timer driver's lock to register
/// and again to cancel. Created on first use.
#[derive(Default)]
pub struct Rearmed(Option<Pin<Box<Sleep>>>);

/// Resolves once the drain has started, and stays resolved. One per
/// connection: its waiter stays registered across requests, where a new
/// wait per idle period would register and remove one every time. Set up
/// (boxed, out of the connection's task) on the first idle wait that has
/// to wait, so a connection whose requests are always there never pays
/// for it.
pub struct Drained<'a> {
    drain: &'a Drain,
    wait: Option<Pin<Box<WaitForCancellationFuture<'a>>>>,
}

impl<'a> Drained<'a> {
    pub fn new(drain: &'a Drain) -> Self {
        Self { drain, wait: None }
    }

    /// The drain it follows.
    pub fn drain(&self) -> &'a Drain {
        self.drain
    }
}

impl Future for Drained<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.drain.is_draining() {
            return Poll::Ready(());
        }
        let drain = this.drain;
        this.wait.get_or_insert_with(|| Box::pin(drain.started())).as_mut().poll(cx)
    }
}

/// A re-armed timer ran out before what it bounded finished.
#[derive(Debug)]
pub struct TimedOut;

impl Rearmed {
    /// Runs `f` until `deadline` (`None`: no limit). If `f` is ready at
    /// once, the timer is not touched.
    pub fn run<F: Future>(&mut self, deadline: Option<Instant>, f: F) -> RunRearmed<'_, F> {
        RunRearmed { f, timer: self, deadline, armed: false }
    }
}

// The bounding futures below hold what they bound in place. As `async fn`s
// they held it twice (the argument, and the pinned copy polled), and the
// connection's task is as large as its largest such chain.
pin_project_lite::pin_project! {
    /// [`Rearmed::run`]'s future.
    pub struct RunRearmed<'a, F> {
        #[pin]
        f: F,
        timer: &'a mut Rearmed,
        deadline: Option<Instant>,
        armed: bool,
    }
}

impl<F: Future> Future for RunRearmed<'_, F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.f.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let Some(deadline) = *this.deadline else { return Poll::Pending };
        let slot = &mut this.timer.0;
        if !*this.armed {
            *this.armed = true;
            match slot {
                Some(timer) => timer.as_mut().reset(deadline),
                None => *slot = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match slot {
            Some(timer) => timer.as_mut().poll(cx).map(|()| Err(TimedOut)),
            None => Poll::Pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// [`within`]'s future.
    pub struct Within<F> {
        #[pin]
        f: F,
        limit: Option<Duration>,
        #[pin]
        timer: Option<Sleep>,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, TimedOut>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.f.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        let Some(limit) = *this.limit else { return Poll::Pending };
        if this.timer.is_none() {
            this.timer.set(Some(tokio::time::sleep(limit)));
        }
        match this.timer.as_pin_mut() {
            Some(timer) => timer.poll(cx).map(|()| Err(TimedOut)),
            None => Poll::Pending,
        }
    }
}

/// Runs `f` within `limit` (`Err` when it runs out), the time counted from
/// the first poll that finds it not ready. A future that is ready at once
/// costs no timer: most reads and writes on the hot path are.
pub fn within<F: Future>(limit: Option<Duration>, f: F) -> Within<F> {
    Within { f, limit, timer: None }
}
