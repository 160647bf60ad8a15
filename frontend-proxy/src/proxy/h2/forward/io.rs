//! Moving a forwarded stream's bytes: the client's request DATA and its
//! going away, the upstream's flow-control capacity (the response DATA goes
//! to the client under its window with `h1::send_down`, as a downgraded
//! stream's does).

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use pingora_core::protocols::http::v2::server::HttpSession;
use std::future::poll_fn;

/// What the client side did.
pub(super) enum Client {
    Data(Bytes),
    /// The request body ended.
    End,
    /// The client reset the stream or went away.
    Gone,
}

/// The client's next move: request DATA while `reading`, else only its
/// going away (seen on the response body's stream once it is ours: the
/// session's watch cannot look after the head went out without it).
pub(super) async fn client_event(
    session: &mut HttpSession,
    down: &mut Option<SendStream<Bytes>>,
    reading: bool,
) -> Client {
    if reading {
        return match session.read_body_bytes().await {
            Ok(Some(d)) => Client::Data(d),
            Ok(None) => Client::End,
            Err(_) => Client::Gone,
        };
    }
    match down.as_mut() {
        Some(down) => {
            let _ = poll_fn(|cx| down.poll_reset(cx)).await;
        }
        None => {
            let _ = session.idle().await;
        }
    }
    Client::Gone
}

/// Upstream flow-control capacity for `want` bytes of request DATA.
pub(super) async fn capacity(up: &mut Option<&mut SendStream<Bytes>>, want: usize) -> Option<Result<usize, h2::Error>> {
    let up = up.as_mut()?;
    up.reserve_capacity(want);
    poll_fn(|cx| up.poll_capacity(cx)).await
}

/// The next DATA of the response body.
pub(super) async fn data(recv: &mut Option<RecvStream>) -> Option<Result<Bytes, h2::Error>> {
    recv.as_mut()?.data().await
}
