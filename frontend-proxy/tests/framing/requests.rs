//! The client-side cases: what a client may send (RFC 9112 §§2-3, 5-7,
//! RFC 9110 §7.6), and how the proxy must answer and forward it.

use crate::case::{show, vhost, Case, Close, Outcome};
use crate::checks::*;
use crate::support::raw::{ok, Answer, ReadError, Seen};

/// A request the proxy must serve, or refuse with 400 before anything
/// reaches the backend (RFC 9110 §8.6 lets a recipient do either with a
/// repeated `Content-Length`).
pub(crate) fn served_or_refused(
    case: Case,
    want_body: &'static str,
    check: impl Fn(&Seen) -> Result<(), String> + Send + Sync + 'static,
) -> Case {
    case.expect(either(status(200, want_body), rejected(&[400]))).close(Close::Either).backend(refused_or_one(check))
}

/// A request whose body is found broken while it streams: 400 and close,
/// or just the close; no complete request upstream.
pub(crate) fn broken_body(case: Case) -> Case {
    let refused = |o: &Outcome| match (&o.responses.first(), &o.error) {
        (None, Some(ReadError::Closed)) => Ok(()),
        _ => rejected(&[400])(o),
    };
    case.expect(refused).close(Close::Must).backend(no_request())
}

pub(crate) fn post(headers: &str, body: &str) -> String {
    format!("POST {{p}} HTTP/1.1\r\nHost: framing\r\n{headers}\r\n{body}")
}

/// `post`, with a second request after it that must never be answered or reach the backend.
pub(crate) fn post_smuggling(headers: &str, body: &str) -> String {
    format!("{}GET {{p}}/SMUGGLED HTTP/1.1\r\nHost: framing\r\n\r\n", post(headers, body))
}

pub(crate) fn chunked(body: &str) -> String {
    post_smuggling("Transfer-Encoding: chunked\r\n", body)
}

/// More `Connection` tokens than a message may name.
fn connection_flood() -> String {
    (0..200).map(|i| format!("x-{i}")).collect::<Vec<_>>().join(", ")
}

/// Pingora's codec takes Transfer-Encoding over Content-Length, drops the
/// length, answers and closes: the bytes behind the body are never read.
fn pingora_drops_length(c: Case) -> Case {
    c.expect(status(200, "")).close(Close::Must).backend(one(|s| {
        match (s.header("content-length"), s.path.contains("SMUGGLED")) {
            (None, false) => Ok(()),
            other => Err(format!("the backend got content-length / smuggled {other:?}")),
        }
    }))
}

pub(crate) fn get_with(headers: &str) -> String {
    format!("GET {{p}} HTTP/1.1\r\n{headers}\r\n")
}

/// The request cases: what a client may send (RFC 9112 §§2-3, 5-7, RFC 9110 §7.6).
pub(crate) fn request_cases() -> Vec<Case> {
    let v = |name: &'static str| vhost(name);
    vec![
        // RFC 9110 §8.6 / RFC 9112 §6.3: Content-Length.
        served_or_refused(
            Case::new("req_cl_repeated_equal", post("Content-Length: 3\r\nContent-Length: 3\r\n", "abc")),
            "abc",
            |s| body("abc")(s).and_then(|()| single_length("3")(s)),
        ),
        served_or_refused(Case::new("req_cl_list_equal", post("Content-Length: 3, 3\r\n", "abc")), "abc", |s| {
            body("abc")(s).and_then(|()| single_length("3")(s))
        }),
        Case::new("req_cl_conflicting", post_smuggling("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd")).refused(400),
        Case::new("req_cl_list_conflicting", post_smuggling("Content-Length: 3, 4\r\n", "abcd")).refused(400),
        Case::new("req_cl_plus_sign", post_smuggling("Content-Length: +3\r\n", "abc")).refused(400),
        Case::new("req_cl_minus_sign", post_smuggling("Content-Length: -3\r\n", "abc")).refused(400),
        Case::new("req_cl_space_inside", post_smuggling("Content-Length: 1 0\r\n", "abc")).refused(400),
        Case::new("req_cl_hex", post_smuggling("Content-Length: 0x3\r\n", "abc")).refused(400),
        Case::new("req_cl_empty", post_smuggling("Content-Length:\r\n", "abc")).refused(400),
        Case::new("req_cl_huge", post("Content-Length: 99999999999999999999999\r\n", "abc"))
            .expect(rejected(&[400, 413]))
            .close(Close::Must)
            .backend(nothing()),
        Case::new("req_cl_leading_zeros", post("Content-Length: 0003\r\n", "abc"))
            .expect(status(200, "abc"))
            .backend(one(body("abc"))),
        Case::new("req_cl_whitespace_around", post("Content-Length:   3  \r\n", "abc"))
            .expect(status(200, "abc"))
            .backend(one(body("abc"))),
        // RFC 9112 §6.1 / §6.3: Transfer-Encoding.
        Case::new("req_te_and_cl", post_smuggling("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"))
            .refused(400)
            .on_pingora("Content-Length beside Transfer-Encoding in a request", pingora_drops_length),
        Case::new("req_cl_and_te", post_smuggling("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", "0\r\n\r\n"))
            .refused(400)
            .on_pingora("Content-Length beside Transfer-Encoding in a request", pingora_drops_length),
        Case::new("req_te_trailing_comma", post_smuggling("Transfer-Encoding: chunked ,\r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .refused(400),
        Case::new("req_te_leading_comma", post_smuggling("Transfer-Encoding: , chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .refused(400),
        Case::new("req_te_chunked_not_last", post_smuggling("Transfer-Encoding: chunked, identity\r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .refused(400),
        Case::new("req_te_chunked_twice", post_smuggling("Transfer-Encoding: chunked, chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .refused(400),
        Case::new("req_te_split_chunked_first", post_smuggling("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", "abc"))
            .expect(rejected(&[400, 501]))
            .close(Close::Must)
            .backend(nothing()),
        // RFC 9112 §6.1: 501 for a coding the server does not understand; §6.3: 400 as chunked is not last.
        Case::new("req_te_unknown", post_smuggling("Transfer-Encoding: foo\r\n", "abc"))
            .expect(rejected(&[400, 501]))
            .close(Close::Must)
            .backend(nothing()),
        Case::new("req_te_gzip_chunked", post("Transfer-Encoding: gzip, chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .expect(either(rejected(&[400, 501]), status(200, "abc")))
            .close(Close::Either)
            .backend(refused_or_one(body("abc"))),
        Case::new("req_te_split_chunked_last", post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .expect(either(rejected(&[400, 501]), status(200, "abc")))
            .close(Close::Either)
            .backend(refused_or_one(body("abc"))),
        Case::new(
            "req_te_in_http10",
            "POST {p} HTTP/1.0\r\nHost: framing\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET {p}/SMUGGLED HTTP/1.1\r\nHost: framing\r\n\r\n",
        )
        .refused(400),
        Case::new(
            "req_te_and_cl_in_http10",
            "POST {p} HTTP/1.0\r\nHost: framing\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\nGET {p}/SMUGGLED HTTP/1.1\r\nHost: framing\r\n\r\n",
        )
        .refused(400),
        Case::new("req_te_case_and_whitespace", post("Transfer-Encoding:   ChUnKeD  \r\n", "3\r\nabc\r\n0\r\n\r\n"))
            .expect(status(200, "abc"))
            .backend(one(body("abc"))),
        Case::new("req_te_chunked", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"))
            .expect(status(200, "abcdefg"))
            .backend(one(body("abcdefg"))),
        Case::new("req_te_vertical_tab", post_smuggling("Transfer-Encoding:\x0bchunked\r\n", "0\r\n\r\n")).refused(400),
        // RFC 9112 §5.1: whitespace between a field name and the colon: 400.
        Case::new("req_te_space_before_colon", post_smuggling("Transfer-Encoding : chunked\r\nContent-Length: 3\r\n", "0\r\n\r\n"))
            .refused(400),
        // RFC 9112 §7.1: chunk sizes and extensions.
        broken_body(Case::new("req_chunk_size_overflow", chunked("fffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"))),
        Case::new("req_chunk_size_hex_upper", post("Transfer-Encoding: chunked\r\n", "A\r\n0123456789\r\n0\r\n\r\n"))
            .expect(status(200, "0123456789"))
            .backend(one(body("0123456789"))),
        Case::new("req_chunk_size_leading_zeros", post("Transfer-Encoding: chunked\r\n", "0003\r\nabc\r\n0\r\n\r\n"))
            .expect(status(200, "abc"))
            .backend(one(body("abc"))),
        broken_body(Case::new("req_chunk_size_empty", chunked("\r\nabc\r\n0\r\n\r\n")))
            .on_pingora("chunked request bodies", |c| c.expect(status(200, "")).close(Close::Either).backend(pingora_decoded(""))),
        broken_body(Case::new("req_chunk_size_0x", chunked("0x3\r\nabc\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_size_negative", chunked("-3\r\nabc\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_size_leading_space", chunked(" 3\r\nabc\r\n0\r\n\r\n"))),
        Case::new(
            "req_chunk_ext_valid",
            post("Transfer-Encoding: chunked\r\n", "3;a=b;c=\"d;e\" ; f\r\nabc\r\n0;x=y\r\n\r\n"),
        )
        .expect(status(200, "abc"))
        .backend(one(body("abc"))),
        broken_body(Case::new("req_chunk_ext_nul", chunked("3;a\0b\r\nabc\r\n0\r\n\r\n")))
            .on_pingora("chunked request bodies", |c| c.expect(status(200, "abc")).close(Close::Either).backend(pingora_decoded("abc"))),
        broken_body(Case::new("req_chunk_ext_bare_cr", chunked("3;a\rb\r\nabc\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_ext_bare_lf", chunked("3;a\nabc\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_bare_lf_line_ends", chunked("3\nabc\n0\n\n"))),
        broken_body(Case::new("req_chunk_data_too_long", chunked("3\r\nabcd\r\n0\r\n\r\n"))),
        broken_body(Case::new("req_chunk_last_bare_lf", chunked("3\r\nabc\r\n0\r\n\n"))),
        // RFC 9112 §7.1.2: trailers.
        Case::new("req_trailer_valid", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"))
            .expect(status(200, "abc"))
            .backend(one(body("abc"))),
        broken_body(Case::new("req_trailer_bare_lf", chunked("3\r\nabc\r\n0\r\nX-T: 1\n\r\n"))),
        broken_body(Case::new("req_trailer_obs_fold", chunked("3\r\nabc\r\n0\r\nX-T: 1\r\n 2\r\n\r\n")))
            .on_pingora("chunked request bodies", |c| c.expect(status(200, "abc")).close(Close::Either).backend(pingora_decoded("abc"))),
        broken_body(Case::new("req_trailer_nul", chunked("3\r\nabc\r\n0\r\nX-T: a\0b\r\n\r\n")))
            .on_pingora("chunked request bodies", |c| c.expect(status(200, "abc")).close(Close::Either).backend(pingora_decoded("abc"))),
        served_or_refused(
            Case::new("req_trailer_content_length", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nContent-Length: 10\r\n\r\n")),
            "abc",
            |s| body("abc")(s).and_then(|()| no_forbidden_trailer(s)),
        ),
        served_or_refused(
            Case::new("req_trailer_transfer_encoding", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n")),
            "abc",
            |s| body("abc")(s).and_then(|()| no_forbidden_trailer(s)),
        ),
        served_or_refused(
            Case::new("req_trailer_host", post("Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\nHost: decoy.example\r\n\r\n")),
            "abc",
            |s| body("abc")(s).and_then(|()| no_forbidden_trailer(s)),
        ),
        // RFC 9112 §5.2, §2.2, §5.1, RFC 9110 §5.5: field syntax.
        Case::new("req_obs_fold", get_with("Host: framing\r\nX-A: 1\r\n 2\r\n")).refused(400),
        Case::new("req_whitespace_before_first_field", get_with(" Host: framing\r\n")).refused(400),
        Case::new("req_bare_cr_in_value", get_with("Host: framing\r\nX-A: a\rb\r\n")).refused(400),
        Case::new("req_bare_cr_line_end", get_with("Host: framing\rX-A: 1\r\n")).refused(400),
        Case::new("req_nul_in_value", get_with("Host: framing\r\nX-A: a\0b\r\n")).refused(400),
        Case::new("req_nul_in_target", "GET {p}/a\0b HTTP/1.1\r\nHost: framing\r\n\r\n").refused(400).on_pingora(
            "targets with control bytes",
            |c| c.expect(status(200, "")).close(Close::Either).backend(one(|s| match s.path.as_str() {
                "/req_nul_in_target/a%00b" => Ok(()),
                p => Err(format!("the backend got {p:?}, want the NUL percent-encoded")),
            })),
        ),
        // RFC 9112 §3.2: no fragment in a request target; Envoy refuses one.
        Case::new("req_fragment_in_target", "GET {p}/public#/../admin HTTP/1.1\r\nHost: framing\r\n\r\n").refused(400),
        Case::new("req_fragment_absolute_form", "GET http://{v}{p}/a#b HTTP/1.1\r\nHost: {v}\r\n\r\n").refused(400),
        Case::new("req_ctl_in_name", get_with("Host: framing\r\nX\x01A: 1\r\n")).refused(400),
        Case::new("req_empty_field_name", get_with("Host: framing\r\n: x\r\n")).refused(400),
        Case::new("req_non_ascii_field_name", get_with("Host: framing\r\nCaf\u{e9}: 1\r\n")).refused(400),
        Case::new("req_tab_before_colon", post_smuggling("Content-Length\t: 3\r\n", "abc")).refused(400),
        Case::new("req_two_spaces_in_request_line", "GET  {p} HTTP/1.1\r\nHost: framing\r\n\r\n").refused(400),
        // RFC 9112 §2.2: a bare LF MAY be taken as a line end.
        Case::new("req_bare_lf_line_ends", "GET {p} HTTP/1.1\nHost: framing\n\n")
            .expect(either(status(200, ""), rejected(&[400])))
            .close(Close::Either)
            .backend(refused_or_one(|_| Ok(()))),
        // RFC 9112 §2.2: a server SHOULD ignore an empty line before the request line.
        Case::new("req_leading_crlf", "\r\nGET {p} HTTP/1.1\r\nHost: framing\r\n\r\n").backend(one(|_| Ok(()))),
        // RFC 9112 §3.2: Host. An empty one is refused as well: RFC 9110
        // §4.2.1 forbids an `http` URI with an empty host. HTTP/1.0 needs none
        // (RFC 9112 §3.2 asks it of HTTP/1.1 only), but Envoy's connection
        // manager refuses one without Host unless `default_host_for_http_10`
        // gives it one (400, `missing_host_header`); an empty Host is a Host,
        // and the default virtual host serves it.
        Case::new("req_host_missing", get_with("")).refused(400),
        Case::new("req_host_twice_same", get_with("Host: framing\r\nHost: framing\r\n")).refused(400),
        Case::new("req_host_twice_different", get_with("Host: framing\r\nHost: decoy.example\r\n")).refused(400),
        Case::new("req_host_empty", get_with("Host:\r\n")).refused(400),
        Case::new("req_host_invalid", get_with("Host: fra ming\r\n")).refused(400),
        Case::new("req_host_missing_http10", "GET {p} HTTP/1.0\r\n\r\n").refused(400),
        Case::new("req_host_empty_http10", "GET {p} HTTP/1.0\r\nHost:\r\n\r\n").close(Close::Must).backend(one(|_| Ok(()))),
        // RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host.
        Case::new("req_absolute_form_other_host", "GET http://{v}{p}/x HTTP/1.1\r\nHost: decoy.example\r\n\r\n").backend(one(
            move |s| {
                let want = v("req_absolute_form_other_host");
                match (s.headers_named("host").as_slice(), s.path.as_str()) {
                    ([h], "/req_absolute_form_other_host/x") if *h == want => Ok(()),
                    (hosts, path) => Err(format!("the backend got {path} with host {hosts:?}, want host {want}")),
                }
            },
        ))
        .on_pingora("an absolute-form target whose authority differs from Host", |c| c.refused(400)),
        Case::new("req_absolute_form_same_host", "GET http://{v}{p}/x HTTP/1.1\r\nHost: {v}\r\n\r\n").backend(one(move |s| {
            let want = v("req_absolute_form_same_host");
            match (s.headers_named("host").as_slice(), s.path.as_str()) {
                ([h], "/req_absolute_form_same_host/x") if *h == want => Ok(()),
                (hosts, path) => Err(format!("the backend got {path} with host {hosts:?}, want host {want}")),
            }
        })),
        Case::new("req_absolute_form_without_host", "GET http://{v}{p}/x HTTP/1.1\r\n\r\n").refused(400),
        Case::new("req_absolute_form_port_too_big", "GET http://{v}:99999{p}/x HTTP/1.1\r\nHost: {v}\r\n\r\n").refused(400),
        // A head of Connection tokens would cost tokens × fields to match.
        Case::new("req_connection_token_flood", get_with(&format!("Host: framing\r\nConnection: {}\r\n", connection_flood())))
            .refused(400),
        // RFC 9110 §7.6.1: fields named in Connection, and the hop-by-hop set, stop here.
        Case::new("req_connection_named_fields", get_with("Host: framing\r\nConnection: x-hop, keep-alive\r\nX-Hop: secret\r\nX-Kept: yes\r\n"))
            .backend(one(|s| {
                without(&["x-hop", "connection"])(s)?;
                match s.header("x-kept") {
                    Some("yes") => Ok(()),
                    other => Err(format!("the backend got x-kept {other:?}, want yes")),
                }
            })),
        Case::new("req_hop_by_hop_fields", get_with("Host: framing\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\n"))
            .backend(one(without(&["keep-alive", "proxy-connection", "te", "connection"]))),
        // The proxy's own edge fields are added after the client's hop-by-hop ones are gone.
        Case::new("req_connection_cannot_remove_edge_fields", get_with("Host: framing\r\nConnection: x-forwarded-proto, x-request-id\r\n"))
            .backend(one(|s| match (s.header("x-forwarded-proto"), s.header("x-request-id")) {
                (Some("http"), Some(id)) if !id.is_empty() => Ok(()),
                other => Err(format!("the backend got x-forwarded-proto, x-request-id {other:?}")),
            })),
        // RFC 9112 §9.3.2: pipelining. Pingora's engine answers the first
        // request and closes (README); the native engine answers all, in order.
        Case::new(
            "req_pipelined",
            "GET {p}/1 HTTP/1.1\r\nHost: framing\r\n\r\nGET {p}/2 HTTP/1.1\r\nHost: framing\r\n\r\nGET {p}/3 HTTP/1.1\r\nHost: framing\r\n\r\n",
        )
        .script(|s| Answer::send(ok(&s.path)))
        .responses(3)
        .expect(pipelined(&["/req_pipelined/1", "/req_pipelined/2", "/req_pipelined/3"]))
        .close(Close::Either),
        Case::new(
            "req_pipelined_with_bodies",
            "POST {p}/1 HTTP/1.1\r\nHost: framing\r\nContent-Length: 3\r\n\r\nabcPOST {p}/2 HTTP/1.1\r\nHost: framing\r\nContent-Length: 3\r\n\r\ndef",
        )
        .responses(2)
        .expect(pipelined(&["abc", "def"]))
        .close(Close::Either),
        // A refused request ends the connection: what was pipelined behind it is never served.
        Case::new(
            "req_pipelined_behind_a_refused_one",
            "GET {p}/1 HTTP/1.1\r\nHost: framing\r\n\r\nGET {p}/2 HTTP/1.1\r\nHost: framing\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxyGET {p}/SMUGGLED HTTP/1.1\r\nHost: framing\r\n\r\n",
        )
        .script(|s| Answer::send(ok(&s.path)))
        .responses(2)
        .expect(|o| {
            let first = o.first()?;
            if first.body != b"/req_pipelined_behind_a_refused_one/1" {
                return Err(format!("first response {}", show(&first.raw)));
            }
            match o.responses.get(1) {
                Some(r) if r.status == 400 => Ok(()),
                // Pingora's engine closes a pipelined connection after the first response.
                None if o.pingora && o.closed => Ok(()),
                Some(r) => Err(format!("second response {} {}, want 400", r.status, show(&r.raw))),
                None => Err(format!("no second response: {:?}", o.error)),
            }
        })
        .close(Close::Must)
        .backend(one(|s| match s.path.as_str() {
            "/req_pipelined_behind_a_refused_one/1" => Ok(()),
            p => Err(format!("the backend got {p}")),
        })),
        // RFC 9110 §10.1.1: Expect: 100-continue, with the body sent at once.
        Case::new("req_expect_100_continue", post("Expect: 100-continue\r\nContent-Length: 3\r\n", "abc"))
            .expect(|o| {
                let r = o.first()?;
                match (r.status, r.body.as_slice(), r.interim.as_slice()) {
                    (200, b"abc", [] | [100]) => Ok(()),
                    _ => Err(format!("got {}", show(&r.raw))),
                }
            })
            .backend(one(body("abc"))),
    ]
}

/// Pipelined responses with these bodies, in order. Pingora's engine may
/// close after the first (README), the native engine answers all.
pub(crate) fn pipelined(bodies: &'static [&'static str]) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        for (r, want) in o.responses.iter().zip(bodies) {
            if r.status != 200 || r.body != want.as_bytes() {
                return Err(format!("got {} {}, want 200 {want:?}", r.status, show(&r.raw)));
            }
        }
        match o.responses.len() {
            n if n == bodies.len() && !o.closed => Ok(()),
            n if o.pingora && n >= 1 && o.closed => Ok(()),
            n => Err(format!("{n} of {} responses ({:?}), closed: {}", bodies.len(), o.error, o.closed)),
        }
    }
}
