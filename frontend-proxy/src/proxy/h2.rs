//! Our HTTP/2 server: the accept loop of an h2 connection (h2c, or TLS
//! with ALPN h2) when the native engine is on. Each stream is admitted and
//! routed here ([`stream`]); a stream to an HTTP/2 cluster goes stream to
//! stream ([`forward`], on upstream connections of [`client`]), one to an
//! HTTP/1.1 cluster is served by the native engine (`h1/downgrade.rs`),
//! and a local reply is written on the stream, none entering Pingora's
//! `HttpProxy`, whose per-stream machinery (a ~10 KiB `process_new_http`
//! future boxed and copied for every stream, its session, its phases)
//! cost more than the proxying (bench/RESULTS.md). What needs Pingora's
//! engine (ALPN clusters, CONNECT, `Expect`, bodies under a retry policy)
//! goes to its `process_new_http` with the context already built.
//!
//! The loop keeps what Pingora's own (`accept_downstream_sessions`, not public)
//! does: its codec and per-stream checks (`HttpSession::from_h2_stream`,
//! `vendor/pingora-core` patch 1: forbidden bytes in `:path`, `content-length`,
//! authority), a budget of malformed streams per connection, and an idle
//! timeout once no stream is open (the connection manager's `idle_timeout`, as
//! Envoy applies it to HTTP/2). Its end is Envoy's drain sequence rather than
//! h2's own graceful shutdown (whose final GOAWAY follows one PING round trip):
//! on the proxy's drain or the idle timeout, a shutdown notice (GOAWAY with
//! stream 2^31-1), streams still accepted for the connection manager's
//! `drain_timeout`, then the final GOAWAY, and the connection closes once the
//! streams below it have ended (h2 patch 3, `vendor/h2/PATCHES.md`). With
//! `connection_keepalive` the loop also PINGs the client ([`keepalive`]) and
//! closes a connection that stops answering.

mod client;
mod forward;
mod keepalive;
mod stream;

use super::h1::NativeH1;
use crate::drain::Drain;
use futures::future::OptionFuture;
use keepalive::{Keepalive, Next};
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::http::v2::server::{handshake, H2Accept, HttpSession};
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{Digest, Stream};
use pingora_core::server::ShutdownWatch;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::Sleep;
use tracing::{debug, warn};

/// Streams the h2 codec refuses (Pingora's checks) before the connection
/// is closed: Pingora's own budget, which a client cannot reset by
/// interleaving valid streams.
pub const MAX_MALFORMED_STREAMS: usize = 32;

/// Where an HTTP/2 connection came from.
#[derive(Debug, Clone, Copy)]
pub struct H2Source {
    /// The listener (or chosen filter chain) serving it.
    pub listener: usize,
    pub client_addr: Option<SocketAddr>,
}

/// What every stream of a connection shares: one `Arc` per stream.
struct Connection<A> {
    engine: Arc<NativeH1>,
    app: Arc<A>,
    drain: Arc<Drain>,
    shutdown: ShutdownWatch,
    source: H2Source,
    tls_digest: Option<Arc<SslDigest>>,
    /// Streams being served; the idle timer runs only at zero.
    active: AtomicUsize,
    /// When the connection was opened, and when its last stream ended
    /// (milliseconds after that).
    opened: Instant,
    last_end_ms: AtomicU64,
    /// Where its streams have gone, for the size of its turns.
    turns: Turns,
}

impl<A> Connection<A> {
    /// Resolves once no stream has been open for `timeout`. One timer for
    /// the connection's life, that nothing wakes before it runs out (a
    /// stream starting or ending only moves its next deadline): the
    /// connection's task is not polled again for it on every stream. While
    /// streams are open it looks again every `busy` (at least `timeout`).
    async fn idle_for(&self, timeout: Duration, busy: Duration) {
        let mut deadline = Instant::now() + timeout;
        loop {
            tokio::time::sleep_until(deadline.into()).await;
            let now = Instant::now();
            deadline = match self.active.load(Acquire) {
                0 => self.opened + Duration::from_millis(self.last_end_ms.load(Acquire)) + timeout,
                _ => now + timeout.max(busy),
            };
            if deadline <= now {
                return;
            }
        }
    }
}

/// How long a connection may stay after its final GOAWAY once no stream
/// is open: Envoy's default `delayed_close_timeout`.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long a connection goes without a stream before h2 gives back what
/// it keeps for streams (its stream slab, id map and frame buffers: 2-4 KiB
/// of an idle connection, h2 patch 4). Not at once: a busy connection
/// between two batches of streams would reallocate them every time
/// (+1.6 % instructions per request, bench/RESULTS.md).
const RELEASE_AFTER: Duration = Duration::from_secs(1);
/// How often a connection with streams open is looked at again for the
/// release: a long-lived stream (gRPC streaming, a download) does not wake
/// its connection every `RELEASE_AFTER`.
const QUIET_BUSY_RECHECK: Duration = Duration::from_secs(10);
/// Releases tried while a stream h2 keeps after a reset is still stored,
/// before waiting for the next stream.
const RELEASE_TRIES: u8 = 3;

/// Streams a connection starts before it lets them run. h2 hands over
/// every stream its socket had for it (a client's 32 at once, say), and a
/// worker runs its tasks in turn: without a limit, every connection would
/// start all its streams before any of them ran. Every few streams the
/// connection lets the tasks ready by then run (and the sockets ready
/// meanwhile be read) before it takes more, as HAProxy bounds the tasks it
/// runs between polls.
///
/// How many depends on where the streams go. Streams to HTTP/1.1 clusters
/// (each on an upstream connection of its own) are let run every 32: their
/// responses then come back together and leave in one write, and the
/// client's next requests arrive in one read (h2c, 16 connections x 32
/// streams: 2.13 system calls a request instead of 2.54 at 4, HAProxy's
/// 2.16; 12-15 % more requests a second, bench/RESULTS.md). A connection
/// starts with these turns: started at 4 instead, its batches settled
/// smaller (h2c 4 % slower).
const STREAMS_PER_TURN: usize = 32;

/// Streams a turn once a stream of the connection has gone to a cluster
/// that may speak HTTP/2 (gRPC above all), for the rest of its life. Such
/// streams share an upstream connection, which writes the requests of a
/// turn together only once they have all run: with large turns the host,
/// the client and the proxy wait for each other in waves, each idle while
/// another works through the whole batch. Every 4 streams: 1.8x the calls
/// a second of no limit, and 1.15x those of every 16 (bench/RESULTS.md).
/// The connection's first turn (before any stream has been routed) is
/// still [`STREAMS_PER_TURN`]: gRPC unary measured the same either way.
const SHARED_UPSTREAM_STREAMS_PER_TURN: usize = 4;

/// Whether a stream of the connection has gone to a cluster that may speak
/// HTTP/2, for the size of its turns (never unset).
#[derive(Default)]
struct Turns(AtomicBool);

impl Turns {
    /// Records a stream routed to a cluster that may speak HTTP/2
    /// (`http2`) or to an HTTP/1.1 one.
    fn record(&self, http2: bool) {
        if http2 && !self.0.load(Relaxed) {
            self.0.store(true, Relaxed);
        }
    }

    /// Streams to start before the next turn.
    fn size(&self) -> usize {
        if self.0.load(Relaxed) {
            SHARED_UPSTREAM_STREAMS_PER_TURN
        } else {
            STREAMS_PER_TURN
        }
    }
}

/// Where a connection is in Envoy's drain sequence.
enum Phase {
    Open,
    /// The shutdown notice is out; the final GOAWAY follows when the timer
    /// runs out (boxed: only a draining connection pays for a timer).
    Notice(Pin<Box<Sleep>>),
    /// The final GOAWAY is out: the streams below it finish, then h2 ends
    /// the connection, or the timer does once it finds none open.
    Closing(Pin<Box<Sleep>>),
}

/// What moved a connection along its drain sequence, or woke it to
/// release memory.
enum Moved {
    Drain,
    Idle,
    Timer,
    Quiet,
    Keepalive(keepalive::Due),
}

/// One stream being served: the connection is busy while it lives.
struct StreamGuard<A>(Arc<Connection<A>>);

impl<A> StreamGuard<A> {
    fn start(conn: &Arc<Connection<A>>) -> Self {
        conn.active.fetch_add(1, AcqRel);
        Self(conn.clone())
    }
}

impl<A> Drop for StreamGuard<A> {
    fn drop(&mut self) {
        // The end before the count: whoever sees no stream open reads the
        // time the last one ended.
        let conn = &self.0;
        conn.last_end_ms.store(conn.opened.elapsed().as_millis() as u64, Release);
        conn.active.fetch_sub(1, AcqRel);
    }
}

impl NativeH1 {
    /// Serves an HTTP/2 connection until it closes: the handshake with
    /// `app`'s h2 settings (`http2_protocol_options`), then every stream,
    /// each on a task of its own on this worker.
    #[allow(clippy::manual_async_fn)] // an `async fn` keeps its arguments twice
    pub fn serve_h2_connection<'a, A: HttpServerApp + Send + Sync + 'static>(
        self: &'a Arc<Self>,
        stream: Stream,
        source: H2Source,
        app: &'a Arc<A>,
        drain: &'a Arc<Drain>,
        shutdown: &'a ShutdownWatch,
    ) -> impl Future<Output = ()> + 'a {
        async move {
            let listener = &self.proxy().listeners[source.listener];
            let digest = Arc::new(Digest {
                ssl_digest: stream.get_ssl_digest(),
                timing_digest: stream.get_timing_digest(),
                proxy_digest: stream.get_proxy_digest(),
                socket_digest: stream.get_socket_digest(),
            });
            // The connection manager's idle timeout runs from the connection's
            // start, as Envoy's does: a client that stalls inside its preface
            // or SETTINGS does not hold the connection for longer.
            let idle_timeout = listener.hcm.idle_timeout;
            // The handshake boxed and its result in a block of its own: inline,
            // the handshake's future (a codec), its timeout's copy and the
            // result kept room in this future for the connection's whole life
            // (bench/RESULTS.md).
            let mut h2 = {
                let handshake = Box::pin(handshake(stream, app.h2_options()));
                let shaken = match idle_timeout {
                    Some(limit) => tokio::time::timeout(limit, handshake).await,
                    None => Ok(handshake.await),
                };
                match shaken {
                    Ok(Ok(h2)) => h2,
                    Ok(Err(e)) => {
                        // A client that hangs up or speaks something else: ordinary.
                        debug!(listener = %listener.name, error = %e, "HTTP/2 handshake failed");
                        return;
                    }
                    Err(_) => {
                        listener.stats.downstream_cx_idle_timeout.fetch_add(1, Relaxed);
                        debug!(listener = %listener.name, "HTTP/2 handshake idle timeout");
                        return;
                    }
                }
            };
            let conn = Arc::new(Connection {
                engine: self.clone(),
                app: app.clone(),
                drain: drain.clone(),
                shutdown: shutdown.clone(),
                source,
                tls_digest: digest.ssl_digest.clone(),
                active: AtomicUsize::new(0),
                opened: Instant::now(),
                last_end_ms: AtomicU64::new(0),
                turns: Turns::default(),
            });
            let mut drained = pin!(drain.started());
            // Pinned once, as the drain's wait: fresh ones per stream would
            // register anew each time.
            let idle_timeout_or_0 = idle_timeout.unwrap_or_default();
            let mut idle = pin!(conn.idle_for(idle_timeout_or_0, idle_timeout_or_0));
            // Boxed, dropped once the release is done and made again by the
            // first stream after it: an idle connection is not woken every
            // `RELEASE_AFTER`, and keeps no room for the timer meanwhile.
            let mut quiet = Some(Box::pin(conn.idle_for(RELEASE_AFTER, QUIET_BUSY_RECHECK)));
            let mut release_tries = 0u8;
            // Boxed: only a connection that sends PINGs keeps their state.
            let mut keepalive =
                listener.hcm.http2_keepalive.and_then(|k| Some(Box::new(Keepalive::new(k, h2.ping_pong()?))));
            let mut phase = Phase::Open;
            let mut malformed = 0usize;
            let mut turn = 0usize;
            loop {
                // First in the loop, where nothing of the last stream is
                // kept: a yield below the accept would keep room for it in
                // this future (~940 B more, a larger allocator class).
                if turn >= conn.turns.size() {
                    turn = 0;
                    tokio::task::yield_now().await;
                }
                let accepted = match &mut phase {
                    Phase::Open => {
                        tokio::select! {
                            biased;
                            _ = &mut drained => Err(Moved::Drain),
                            accepted = h2.accept() => Ok(accepted),
                            _ = &mut idle, if idle_timeout.is_some() => Err(Moved::Idle),
                            _ = OptionFuture::from(quiet.as_mut()), if quiet.is_some() => Err(Moved::Quiet),
                            due = keepalive::due(&mut keepalive), if keepalive.is_some() => Err(Moved::Keepalive(due)),
                        }
                    }
                    Phase::Notice(timer) | Phase::Closing(timer) => {
                        tokio::select! {
                            biased;
                            _ = timer.as_mut() => Err(Moved::Timer),
                            accepted = h2.accept() => Ok(accepted),
                            // A dead client does not hold a draining connection either.
                            due = keepalive::due(&mut keepalive), if keepalive.is_some() => Err(Moved::Keepalive(due)),
                        }
                    }
                };
                let accepted = match accepted {
                    Ok(accepted) => accepted,
                    Err(Moved::Quiet) => {
                        release_tries += 1;
                        if h2.release_idle_memory() {
                            debug!(listener = %listener.name, "idle HTTP/2 connection released its stream memory");
                            quiet = None;
                        } else if release_tries < RELEASE_TRIES {
                            // A stream reset lately is kept by h2 for its
                            // `reset_stream_duration` (1 s) after ours ended.
                            if let Some(quiet) = quiet.as_mut() {
                                quiet.set(conn.idle_for(RELEASE_AFTER, QUIET_BUSY_RECHECK));
                            }
                        } else {
                            quiet = None;
                        }
                        continue;
                    }
                    Err(Moved::Keepalive(due)) => {
                        let Some(k) = keepalive.as_mut() else { continue };
                        match k.on(due, h2.frames_received()) {
                            Next::Continue => {}
                            Next::Stop => keepalive = None,
                            Next::Close => {
                                listener.stats.http2_keepalive_timeout.fetch_add(1, Relaxed);
                                debug!(listener = %listener.name, "HTTP/2 connection closed: keepalive PING unanswered");
                                return;
                            }
                        }
                        continue;
                    }
                    Err(moved) => {
                        let drain_timeout = listener.hcm.drain_timeout;
                        phase = match (phase, moved) {
                            (Phase::Open, Moved::Drain) => {
                                // The final GOAWAY, and the streams it lets
                                // finish, within the process's drain time
                                // (`--drain-time-s` is 5 s by default, Envoy's
                                // 600: its `drain_timeout` of 5 s would take it all).
                                h2.shutdown_notice();
                                Phase::Notice(Box::pin(tokio::time::sleep(drain_timeout.min(drain.time_left() / 2))))
                            }
                            (Phase::Open, _) => {
                                listener.stats.downstream_cx_idle_timeout.fetch_add(1, Relaxed);
                                debug!(listener = %listener.name, "HTTP/2 connection idle timeout");
                                h2.shutdown_notice();
                                Phase::Notice(Box::pin(tokio::time::sleep(drain_timeout)))
                            }
                            (Phase::Notice(mut timer), _) => {
                                h2.finish_graceful_shutdown();
                                timer.as_mut().reset(tokio::time::Instant::now() + CLOSE_LINGER);
                                Phase::Closing(timer)
                            }
                            (Phase::Closing(mut timer), _) => {
                                if conn.active.load(Acquire) == 0 {
                                    // h2 closes on its own once no stream is left,
                                    // unless its write is stuck behind a client
                                    // that does not read, or the client's last
                                    // stream was 2^31-1 (h2 takes the final GOAWAY
                                    // for a notice then).
                                    debug!(listener = %listener.name, "HTTP/2 connection closed after its final GOAWAY");
                                    return;
                                }
                                timer.as_mut().reset(tokio::time::Instant::now() + CLOSE_LINGER);
                                Phase::Closing(timer)
                            }
                        };
                        continue;
                    }
                };
                let (req, send_response) = match accepted {
                    Some(Ok(stream)) => stream,
                    None => return,
                    Some(Err(e)) => {
                        // Clients often close TCP without closing HTTP/2 first.
                        debug!(listener = %listener.name, error = %e, "HTTP/2 connection ended");
                        return;
                    }
                };
                release_tries = 0;
                if quiet.is_none() {
                    // Streams again (served or refused): their memory is
                    // given back after the next quiet second.
                    quiet = Some(Box::pin(conn.idle_for(RELEASE_AFTER, QUIET_BUSY_RECHECK)));
                }
                // Pingora's checks (forbidden bytes in `:path`,
                // `content-length`, authority) on h2's pair, which is all
                // the `select!` above moved: the session is built here,
                // once, and moved into its task.
                match HttpSession::from_h2_stream(req, send_response, digest.clone()) {
                    H2Accept::Session(session) => {
                        // Boxed before it is spawned: tokio moves a task's
                        // future into its cell and writes its stage over it
                        // when it ends, a copy of the whole (KiBs: the session
                        // and the context) each time, unless it is a pointer.
                        tokio::spawn(Box::pin(stream::serve(StreamGuard::start(&conn), session)));
                        turn += 1;
                    }
                    // Already answered (400) or reset by the checks.
                    H2Accept::Rejected => {
                        malformed += 1;
                        if malformed >= MAX_MALFORMED_STREAMS {
                            // Once per torn-down connection: flood-safe.
                            warn!(listener = %listener.name, malformed, "closing HTTP/2 connection after malformed requests");
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_small_for_good_once_a_stream_went_to_a_cluster_that_may_speak_http2() {
        let turns = Turns::default();
        assert_eq!(turns.size(), STREAMS_PER_TURN, "nothing routed yet");
        turns.record(false);
        assert_eq!(turns.size(), STREAMS_PER_TURN);
        turns.record(true);
        assert_eq!(turns.size(), SHARED_UPSTREAM_STREAMS_PER_TURN);
        turns.record(false);
        assert_eq!(turns.size(), SHARED_UPSTREAM_STREAMS_PER_TURN, "an HTTP/1.1 stream after it changes nothing");
    }
}
