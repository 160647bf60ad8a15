//! Hop-by-hop fields on responses (RFC 9110 §7.6.1) and `Date` (§6.6.1).

use crate::case::{Case, Close};
use crate::checks::*;
use crate::responses::resp;
use crate::support::raw::ok;

/// RFC 9110 §7.6.1 on responses, and §6.6.1: Date.
pub(crate) fn field_cases() -> Vec<Case> {
    vec![
        Case::get("resp_connection_named_fields", resp("Connection: x-internal\r\nX-Internal: secret\r\nX-Public: yes\r\nContent-Length: 2\r\n", "ok"))
            .expect(both(both(status(200, "ok"), lacks("x-internal")), |o| match o.first()?.header("x-public") {
                Some("yes") => Ok(()),
                other => Err(format!("x-public {other:?}, want yes")),
            })),
        Case::get(
            "resp_hop_by_hop_fields",
            resp("Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: h2c\r\nContent-Length: 2\r\n", "ok"),
        )
        .expect(both(
            both(status(200, "ok"), lacks("keep-alive")),
            both(both(lacks("proxy-connection"), lacks("te")), lacks("upgrade")),
        )),
        Case::get("resp_date_added", ok("ok")).expect(both(status(200, "ok"), dated_now())),
        Case::get("resp_date_kept", resp("Date: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n", "ok"))
            .expect(both(status(200, "ok"), |o| match o.first()?.headers_named("date").as_slice() {
                ["Sun, 06 Nov 1994 08:49:37 GMT"] => Ok(()),
                got => Err(format!("date fields {got:?}, want the upstream's")),
            }))
            .on_pingora("Date", |c| c.expect(both(status(200, "ok"), dated_now()))),
        Case::new("local_reply_date_404", "GET /no-route-here HTTP/1.1\r\nHost: framing\r\n\r\n")
            .expect(both(status_only(404), dated_now()))
            .backend(nothing()),
        Case::new("local_reply_date_400", "GET {p} HTTP/1.1\r\nHost: framing\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            .expect(both(rejected(&[400]), dated_now()))
            .close(Close::Must)
            .backend(nothing()),
        Case::get("local_reply_date_502", "SSH-2.0-OpenSSH_9.2\r\n\r\n").bad_gateway().expect(both(protocol_error(), dated_now())),
    ]
}
