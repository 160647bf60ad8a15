//! The upstream-side cases: what an upstream may send (RFC 9112 §§2, 4-7),
//! and what the client and the pooled connection must see of it.

use crate::case::{show, Case, Close, Outcome, Reuse, EVIL_HEAD, EVIL_RESPONSE};
use crate::checks::*;
use crate::support::raw::{ok, Answer, ReadError};
use crate::support::strict::Framing;
use std::time::Duration;

/// `HTTP/1.1 200 OK` with these header lines, then `rest` (body bytes as sent).
pub(crate) fn resp(headers: &str, rest: &str) -> String {
    format!("HTTP/1.1 200 OK\r\n{headers}\r\n{rest}")
}

pub(crate) fn chunked_resp(body: &str) -> String {
    resp("Transfer-Encoding: chunked\r\n", body)
}

/// 200 with `want` as the body: delimited by the close (then the client
/// connection must close too) or re-framed by the proxy.
pub(crate) fn until_close(want: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        status(200, want)(o)?;
        match (o.first()?.framing, o.closed) {
            (Framing::UntilClose, false) => Err("a close-delimited body, and the connection stayed open".to_string()),
            _ => Ok(()),
        }
    }
}

/// The head went out, then the connection closed before the body's end.
pub(crate) fn cut_after_head() -> impl Fn(&Outcome) -> Result<(), String> {
    |o| match (&o.responses.first(), &o.error) {
        (None, Some(ReadError::Truncated(b))) if b.starts_with(b"HTTP/1.1 200") => cut_or_502()(o),
        _ => Err(format!("want a cut 200, got {:?} / {:?}", o.responses.first().map(|r| show(&r.raw)), o.error)),
    }
}

/// The response cases: what an upstream may send (RFC 9112 §§2, 4-7).
pub(crate) fn response_cases() -> Vec<Case> {
    let late = Duration::from_millis(50);
    let evil_body = resp(&format!("Content-Length: {}\r\n", EVIL_HEAD.len()), EVIL_HEAD);
    let ok_or_502 = || either(status(200, "ok"), protocol_error());
    vec![
        // RFC 9112 §2.2: empty lines before the head are skipped, or the
        // response refused; the body is never taken for a head.
        Case::get("resp_leading_crlf", format!("\r\n{evil_body}"))
            .expect(either(status(200, EVIL_HEAD), protocol_error())),
        Case::get("resp_leading_lf", format!("\n{evil_body}")).expect(either(status(200, EVIL_HEAD), protocol_error())),
        Case::get("resp_leading_two_crlf", format!("\r\n\r\n{evil_body}"))
            .expect(either(status(200, EVIL_HEAD), protocol_error())),
        // Bytes after a complete response: the connection is not reused,
        // whether they come with it or later, while it sits in the pool.
        Case::get("resp_stray_crlf_after", format!("{}\r\n", String::from_utf8_lossy(&ok("ok"))))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::new("resp_stray_crlf_late", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(ok("ok")).then_sleep(late).then_send("\r\n"))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::new("resp_stray_lf_late", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(ok("ok")).then_sleep(late).then_send("\n"))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        // Issue 21 #1: a stray CRLF, then the next response's body looks
        // like a head; the next client must get that body, not its fields.
        Case::get("resp_stray_crlf_then_head_like_body", format!("{}\r\n", String::from_utf8_lossy(&ok("ok"))))
            .next_body(|tag| format!("{EVIL_HEAD}{tag}"))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::new("resp_late_response", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(ok("ok")).then_sleep(late).then_send(EVIL_RESPONSE))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::get("resp_second_response_same_write", format!("{}{EVIL_RESPONSE}", String::from_utf8_lossy(&ok("ok"))))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::get("resp_garbage_after", format!("{}garbage", String::from_utf8_lossy(&ok("ok"))))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length, which is
        // dropped; the connection is not reused.
        Case::get(
            "resp_cl_and_te",
            resp("Content-Length: 100\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .expect(both(status(200, "hello"), lacks("content-length")))
        .reuse(Reuse::Never)
        .on_pingora("Content-Length beside Transfer-Encoding in a response", |c| c.reuse(Reuse::Any)),
        Case::get(
            "resp_te_and_short_cl",
            resp("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .expect(both(status(200, "hello"), lacks("content-length")))
        .reuse(Reuse::Never)
        .on_pingora("Content-Length beside Transfer-Encoding in a response", |c| c.reuse(Reuse::Any)),
        // RFC 9110 §8.6: Content-Length.
        Case::get("resp_cl_conflicting", resp("Content-Length: 2\r\nContent-Length: 3\r\n", "okk")).bad_gateway(),
        Case::get("resp_cl_list_conflicting", resp("Content-Length: 2, 3\r\n", "okk")).bad_gateway(),
        Case::get("resp_cl_repeated_equal", resp("Content-Length: 2\r\nContent-Length: 2\r\n", "ok"))
            .expect(ok_or_502()),
        Case::get("resp_cl_list_equal", resp("Content-Length: 2, 2\r\n", "ok")).expect(ok_or_502()),
        Case::get("resp_cl_plus_sign", resp("Content-Length: +2\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_minus_sign", resp("Content-Length: -2\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_space_inside", resp("Content-Length: 1 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_hex", resp("Content-Length: 0x2\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_huge", resp("Content-Length: 99999999999999999999\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_empty", resp("Content-Length:\r\n", "ok")).bad_gateway(),
        Case::get("resp_cl_leading_zeros", resp("Content-Length: 002\r\n", "ok"))
            .expect(status(200, "ok"))
            .reuse(Reuse::Expected),
        Case::new("resp_cl_body_cut_by_close", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(resp("Content-Length: 10\r\n", "ok")).then_close())
            .cut(),
        // RFC 9112 §6.1, §6.3: Transfer-Encoding.
        Case::new("resp_te_chunked_not_last", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(resp("Transfer-Encoding: chunked, gzip\r\n", "raw bytes")).then_close())
            .expect(either(until_close("raw bytes"), protocol_error()))
            .close(Close::Either),
        Case::get("resp_te_chunked_twice", resp("Transfer-Encoding: chunked, chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"))
            .bad_gateway(),
        Case::new("resp_te_unknown", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(resp("Transfer-Encoding: foo\r\n", "raw bytes")).then_close())
            .expect(either(until_close("raw bytes"), protocol_error()))
            .close(Close::Either),
        // RFC 9112 §6.1: TE in HTTP/1.0 means faulty framing: never reused (issue 21 #7).
        Case::get(
            "resp_te_in_http10",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .bad_gateway(),
        Case::get(
            "resp_te_split_chunked_last",
            resp("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .expect(status(200, "hello")),
        Case::new("resp_te_split_chunked_first", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(
                Answer::send(resp("Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n", "raw bytes"))
                    .then_close(),
            )
            .expect(either(until_close("raw bytes"), protocol_error()))
            .close(Close::Either),
        Case::get("resp_te_empty", resp("Transfer-Encoding:\r\nContent-Length: 2\r\n", "ok")).bad_gateway(),
        // `chunked` takes no parameters: chunked to some parsers, not to others.
        Case::get(
            "resp_te_chunked_with_parameter",
            resp("Transfer-Encoding: gzip, chunked;\r\n", "5\r\nhello\r\n0\r\n\r\n"),
        )
        .bad_gateway(),
        // A coding that is not a token: nobody can agree on the framing.
        Case::get("resp_te_not_a_token", resp("Transfer-Encoding: 0 05\r\n", "5\r\nhello\r\n0\r\n\r\n")).bad_gateway(),
        Case::get("resp_te_case_and_whitespace", resp("Transfer-Encoding:  ChunKed \r\n", "5\r\nhello\r\n0\r\n\r\n"))
            .expect(status(200, "hello"))
            .reuse(Reuse::Expected),
        // RFC 9112 §7.1: chunks, checked strictly (issue 21 #3).
        Case::get("resp_chunked", chunked_resp("5;a=b;c=\"d e\"\r\nhello\r\n0\r\n\r\n"))
            .expect(status(200, "hello"))
            .reuse(Reuse::Expected),
        Case::get("resp_chunk_size_hex_upper", chunked_resp("A\r\n0123456789\r\n0\r\n\r\n"))
            .expect(status(200, "0123456789"))
            .reuse(Reuse::Expected),
        Case::get("resp_chunk_size_leading_zeros", chunked_resp("0005\r\nhello\r\n000\r\n\r\n"))
            .expect(status(200, "hello")),
        Case::get("resp_chunk_size_overflow", chunked_resp("fffffffffffffffffff\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::new("resp_chunk_size_overflow_after_the_head", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(
                // Long enough for the head and the first chunk to be on their way.
                Answer::send(chunked_resp("5\r\nhello\r\n"))
                    .then_sleep(Duration::from_millis(300))
                    .then_send("fffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
            )
            .expect(cut_after_head())
            .reuse(Reuse::Never)
            .close(Close::Must),
        Case::get("resp_chunk_size_empty", chunked_resp("\r\nhello\r\n0\r\n\r\n"))
            .cut()
            .on_pingora("chunked response bodies", |c| {
                c.expect(pingora_reframes("")).reuse(Reuse::Any).close(Close::MustNot)
            }),
        Case::get("resp_chunk_size_0x", chunked_resp("0x5\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_size_leading_space", chunked_resp(" 5\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_ext_nul", chunked_resp("5;a\0\r\nhello\r\n0\r\n\r\n"))
            .cut()
            .on_pingora("chunked response bodies", |c| {
                c.expect(pingora_reframes("hello")).reuse(Reuse::Any).close(Close::MustNot)
            }),
        Case::get("resp_chunk_ext_bare_cr", chunked_resp("5;a\rb\r\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_ext_bare_lf", chunked_resp("5;a\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_ext_open_quote", chunked_resp("5;a=\"b\r\nhello\r\n0\r\n\r\n"))
            .cut()
            .on_pingora("chunked response bodies", |c| {
                c.expect(pingora_reframes("hello")).reuse(Reuse::Any).close(Close::MustNot)
            }),
        Case::get("resp_chunk_ext_without_name", chunked_resp("5;=x\r\nhello\r\n0\r\n\r\n"))
            .cut()
            .on_pingora("chunked response bodies", |c| {
                c.expect(pingora_reframes("hello")).reuse(Reuse::Any).close(Close::MustNot)
            }),
        Case::get("resp_chunk_last_bare_lf", chunked_resp(&format!("5\r\nhello\r\n0\r\n\n{EVIL_RESPONSE}"))).cut(),
        Case::get("resp_chunk_size_bare_lf", chunked_resp("5\nhello\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_data_too_long", chunked_resp("5\r\nhelloXY\r\n0\r\n\r\n")).cut(),
        Case::get("resp_chunk_data_bare_lf", chunked_resp("5\r\nhello\n0\r\n\r\n")).cut(),
        Case::new("resp_chunk_last_missing", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(chunked_resp("5\r\nhello\r\n")).then_close())
            .cut(),
        // RFC 9112 §7.1.2: trailers, well-formed, and none that frames or routes.
        Case::get("resp_trailer", chunked_resp("5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"))
            .expect(status(200, "hello"))
            .reuse(Reuse::Expected),
        Case::get("resp_trailer_bare_lf", chunked_resp("5\r\nhello\r\n0\r\nX-T: 1\n\r\n")).cut(),
        Case::get("resp_trailer_obs_fold", chunked_resp("5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"))
            .cut()
            .on_pingora("chunked response bodies", |c| {
                c.expect(pingora_reframes("hello")).reuse(Reuse::Any).close(Close::MustNot)
            }),
        Case::get("resp_trailer_without_colon", chunked_resp("5\r\nhello\r\n0\r\ngarbage\r\n\r\n"))
            .cut()
            .on_pingora("chunked response bodies", |c| {
                c.expect(pingora_reframes("hello")).reuse(Reuse::Any).close(Close::MustNot)
            }),
        Case::get("resp_trailer_nul", chunked_resp("5\r\nhello\r\n0\r\nX-T: a\0b\r\n\r\n"))
            .cut()
            .on_pingora("chunked response bodies", |c| {
                c.expect(pingora_reframes("hello")).reuse(Reuse::Any).close(Close::MustNot)
            }),
        Case::get("resp_trailer_content_length", chunked_resp("5\r\nhello\r\n0\r\nContent-Length: 10\r\n\r\n"))
            .expect(either(status(200, "hello"), cut_or_502()))
            .close(Close::Either),
        Case::get(
            "resp_trailer_transfer_encoding",
            chunked_resp("5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        )
        .expect(either(status(200, "hello"), cut_or_502()))
        .close(Close::Either),
        Case::get("resp_trailer_host", chunked_resp("5\r\nhello\r\n0\r\nHost: decoy.example\r\n\r\n"))
            .expect(either(status(200, "hello"), cut_or_502()))
            .close(Close::Either),
        // RFC 9112 §5.2, §5.1, §2.2, RFC 9110 §5.5: head syntax.
        Case::get("resp_obs_fold", resp("X-A: 1\r\n 2\r\nContent-Length: 2\r\n", "ok")).expect(ok_or_502()),
        Case::get("resp_bare_cr_in_value", resp("X-A: a\rb\r\nContent-Length: 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_nul_in_value", resp("X-A: a\0b\r\nContent-Length: 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_space_before_colon", resp("Content-Length : 2\r\n", "ok")).expect(ok_or_502()),
        Case::get("resp_bare_lf_line_ends", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok").expect(ok_or_502()),
        Case::get("resp_ctl_in_name", resp("X\x01A: 1\r\nContent-Length: 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_field_without_colon", resp("Garbage\r\nContent-Length: 2\r\n", "ok")).bad_gateway(),
        Case::get("resp_not_http", "SSH-2.0-OpenSSH_9.2\r\n\r\n").bad_gateway(),
        Case::get("resp_http2_version", "HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        // RFC 9112 §4: a three-digit status, 100..=599 (issue 21 #4).
        Case::get("resp_status_099", "HTTP/1.1 099 Weird\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_000", "HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_600", "HTTP/1.1 600 Big\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_999", "HTTP/1.1 999 Bigger\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_not_a_number", "HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_two_digits", "HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_four_digits", "HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok").bad_gateway(),
        Case::get("resp_status_599", "HTTP/1.1 599 Custom\r\nContent-Length: 2\r\n\r\nok").expect(status(599, "ok")),
        Case::get("resp_status_without_reason", "HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok")
            .expect(status(200, "ok")),
        // RFC 9110 §15.2: interim responses.
        Case::get("resp_100_then_200", format!("HTTP/1.1 100 Continue\r\n\r\n{}", String::from_utf8_lossy(&ok("ok"))))
            .expect(both(status(200, "ok"), interim(&[])))
            .reuse(Reuse::Expected),
        Case::get(
            "resp_103_then_200",
            format!("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n{}", String::from_utf8_lossy(&ok("ok"))),
        )
        .expect(both(status(200, "ok"), interim(&[])))
        .reuse(Reuse::Expected),
        Case::get(
            "resp_three_1xx",
            format!(
                "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n{}",
                String::from_utf8_lossy(&ok("ok"))
            ),
        )
        .expect(both(status(200, "ok"), interim(&[])))
        .reuse(Reuse::Expected),
        // A 1xx has no body, whatever its fields say.
        Case::get(
            "resp_1xx_with_length",
            format!("HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n{}", String::from_utf8_lossy(&ok("ok"))),
        )
        .expect(both(status(200, "ok"), interim(&[]))),
        // RFC 9110 §15.2: an HTTP/1.0 client never gets a 1xx.
        Case::new("resp_1xx_to_http10_client", "GET {p} HTTP/1.0\r\nHost: framing\r\n\r\n")
            .answer(format!("HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n{}", String::from_utf8_lossy(&ok("ok"))))
            .expect(both(status(200, "ok"), interim(&[])))
            .close(Close::Either),
        // Empty list elements: Pingora's codec and hyper read `chunked ,` as
        // not chunked, so the proxy and a client would disagree on the end.
        Case::get(
            "resp_te_trailing_comma",
            format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked ,\r\n\r\n2\r\nok\r\n0\r\n\r\n{EVIL_RESPONSE}"),
        )
        .bad_gateway(),
        Case::get(
            "resp_te_leading_comma",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: , chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .bad_gateway(),
        // The codings go on spelled one way.
        Case::get(
            "resp_te_spelled_oddly",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding:  ChUnKeD \r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .expect(both(status(200, "ok"), |o| match o.first()?.headers_named("transfer-encoding").as_slice() {
            ["chunked"] => Ok(()),
            got => Err(format!("transfer-encoding {got:?}, want [\"chunked\"]")),
        })),
        // Issue 21 #7: a 101 nobody asked for is refused, and the connection dropped.
        Case::get(
            "resp_101_unasked",
            format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n{EVIL_RESPONSE}"),
        )
        .bad_gateway(),
        upgraded(),
        // RFC 9112 §6.3 (1): no body after HEAD, 1xx, 204, 304; bytes the
        // upstream sends anyway make its connection unusable.
        Case::get("resp_204_with_body", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello")
            .expect(status(204, ""))
            .reuse(Reuse::Never),
        Case::get(
            "resp_204_with_chunked_body",
            "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .expect(status(204, ""))
        .reuse(Reuse::Never),
        Case::get("resp_304_with_body", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\nhello")
            .expect(status(304, ""))
            .reuse(Reuse::Never),
        Case::get("resp_304_with_length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n")
            .expect(status(304, ""))
            .reuse(Reuse::Expected),
        Case::new("resp_head_with_length", "HEAD {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .head()
            .answer(resp("Content-Length: 5\r\n", ""))
            .expect(both(status(200, ""), |o| match o.first()?.header("content-length") {
                Some("5") => Ok(()),
                other => Err(format!("content-length {other:?}, want the upstream's 5")),
            }))
            .reuse(Reuse::Expected),
        Case::new("resp_head_with_body", "HEAD {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .head()
            .answer(resp("Content-Length: 5\r\n", "hello"))
            .expect(status(200, ""))
            .reuse(Reuse::Never),
        // RFC 9112 §6.3: never a length beside a coding, even with no body.
        Case::new("resp_head_length_and_coding", "HEAD {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .head()
            .answer(resp("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", ""))
            .expect(both(status(200, ""), |o| match o.first()?.header("content-length") {
                None => Ok(()),
                Some(v) => Err(format!("content-length {v:?} forwarded beside transfer-encoding")),
            }))
            .close(Close::Either),
        Case::new("resp_head_chunked", "HEAD {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .head()
            .answer(resp("Transfer-Encoding: chunked\r\n", ""))
            .expect(status(200, ""))
            .reuse(Reuse::Expected),
        // RFC 9112 §6.3 (8), §9.3, §9.6: close-delimited bodies, and closes announced.
        Case::new("resp_close_delimited", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send(resp("", "until the end")).then_close())
            .expect(until_close("until the end"))
            .close(Close::Either),
        Case::new("resp_close_delimited_http10", "GET {p} HTTP/1.1\r\nHost: framing\r\n\r\n")
            .answer_with(Answer::send("HTTP/1.0 200 OK\r\n\r\nold style").then_close())
            .expect(until_close("old style"))
            .close(Close::Either),
        Case::get("resp_connection_close", resp("Connection: close\r\nContent-Length: 2\r\n", "ok"))
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
        Case::get("resp_http10_keep_alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
            .expect(status(200, "ok")),
        Case::get("resp_http10_without_keep_alive", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .expect(status(200, "ok"))
            .reuse(Reuse::Never),
    ]
}

/// RFC 9110 §7.8: a 101 to a request that asked to upgrade; the tunnel's
/// bytes follow it.
pub(crate) fn upgraded() -> Case {
    let mut case = Case::new(
        "resp_101_asked",
        "GET {p} HTTP/1.1\r\nHost: framing\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .answer_with(
        Answer::send(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\ntunnel bytes",
        )
        .then_sleep(Duration::from_millis(300))
        .then_close(),
    )
    .expect(|o| {
        let r = o.first()?;
        match (r.status, r.header("upgrade"), o.extra.as_slice()) {
            (101, Some("websocket"), b"tunnel bytes") => Ok(()),
            _ => Err(format!("got {} then {}", show(&r.raw), show(&o.extra))),
        }
    })
    .close(Close::Either);
    case.asked.upgrade = true;
    case.tunnel = true;
    case
}
