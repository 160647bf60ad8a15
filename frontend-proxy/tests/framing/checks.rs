//! What a case expects: checks on what the client got (a response, its
//! fields, the close) and on what the backend got.

use crate::case::{show, Outcome};
use crate::support::raw::{ConnLog, ReadError, Seen};
use crate::support::strict;
use std::time::{Duration, SystemTime};

/// A complete response with this status and body.
pub(crate) fn status(code: u16, body: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        let r = o.first()?;
        if r.status != code || r.body != body.as_bytes() {
            return Err(format!("got {} {}, want {code} {body:?}", r.status, show(&r.body)));
        }
        Ok(())
    }
}

pub(crate) fn status_only(code: u16) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| match o.first()? {
        r if r.status == code => Ok(()),
        r => Err(format!("got {} {}, want {code}", r.status, show(&r.raw))),
    }
}

/// Envoy's reply to an upstream that broke the protocol before its
/// response head was through (`retried and the latest` may come before
/// `reset reason` when the request was retried).
pub(crate) fn protocol_error() -> impl Fn(&Outcome) -> Result<(), String> {
    |o| match o.first()? {
        r if r.status == 502 && r.body.ends_with(b"reset reason: protocol error") => Ok(()),
        r => Err(format!("got {} {}, want 502 ... reset reason: protocol error", r.status, show(&r.raw))),
    }
}

/// One of `codes`, then the connection closes.
pub(crate) fn rejected(codes: &[u16]) -> impl Fn(&Outcome) -> Result<(), String> {
    let codes = codes.to_vec();
    move |o| {
        let r = o.first()?;
        if !codes.contains(&r.status) {
            return Err(format!("got {} {}, want one of {codes:?}", r.status, show(&r.raw)));
        }
        if !o.closed {
            return Err(format!("{} but the connection stayed open", r.status));
        }
        Ok(())
    }
}

/// 502, or a response cut short by the close (never a complete wrong one,
/// never a second status line inside the first).
pub(crate) fn cut_or_502() -> impl Fn(&Outcome) -> Result<(), String> {
    |o| match (o.responses.first(), &o.error) {
        (Some(r), _) if r.status == 502 => protocol_error()(o),
        (Some(r), _) => Err(format!("forwarded a complete {} response: {}", r.status, show(&r.raw))),
        (None, Some(ReadError::Closed)) => Ok(()),
        (None, Some(ReadError::Truncated(b))) => match b.windows(7).filter(|w| w == b"HTTP/1.").count() {
            0 | 1 => Ok(()),
            _ => Err(format!("a second status line inside a cut response: {}", show(b))),
        },
        (None, Some(e)) => Err(e.to_string()),
        (None, None) => Err("no response".to_string()),
    }
}

/// Either check passes.
pub(crate) fn either(
    a: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static,
    b: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static,
) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| a(o).or_else(|ea| b(o).map_err(|eb| format!("{ea}; nor: {eb}")))
}

/// Both checks pass.
pub(crate) fn both(
    a: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static,
    b: impl Fn(&Outcome) -> Result<(), String> + Send + Sync + 'static,
) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| a(o).and_then(|()| b(o))
}

/// The first response has no field named `name`.
pub(crate) fn lacks(name: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| match o.first()?.header(name) {
        None => Ok(()),
        Some(v) => Err(format!("the client got {name}: {v}")),
    }
}

/// Statuses of the interim responses the client got before the first final one.
pub(crate) fn interim(want: &'static [u16]) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| match &o.first()?.interim {
        got if got == want => Ok(()),
        got => Err(format!("interim responses {got:?}, want {want:?}")),
    }
}

/// RFC 9110 §5.6.7: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn is_imf_fixdate(v: &str) -> bool {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let b = v.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    v.is_ascii()
        && b.len() == 29
        && DAYS.contains(&&v[0..3])
        && &v[3..5] == ", "
        && digits(5..7)
        && b[7] == b' '
        && MONTHS.contains(&&v[8..11])
        && b[11] == b' '
        && digits(12..16)
        && b[16] == b' '
        && digits(17..19)
        && b[19] == b':'
        && digits(20..22)
        && b[22] == b':'
        && digits(23..25)
        && &v[25..] == " GMT"
}

/// Exactly one `Date`, an IMF-fixdate within two minutes of now.
pub(crate) fn dated_now() -> impl Fn(&Outcome) -> Result<(), String> {
    |o| {
        let r = o.first()?;
        let dates = r.headers_named("date");
        let [date] = dates.as_slice() else { return Err(format!("{} date fields: {dates:?}", dates.len())) };
        if !is_imf_fixdate(date) {
            return Err(format!("date {date:?} is not an IMF-fixdate"));
        }
        let at = httpdate::parse_http_date(date).map_err(|e| format!("date {date:?}: {e}"))?;
        let skew = match SystemTime::now().duration_since(at) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if skew > Duration::from_secs(120) {
            return Err(format!("date {date:?} is {skew:?} from now"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- backend checks

/// Not a byte reached the backend.
pub(crate) fn nothing() -> impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> {
    |_, log| match log.iter().map(|c| c.bytes.len()).sum::<usize>() {
        0 => Ok(()),
        _ => Err(format!("the backend got {}", show(&log.iter().flat_map(|c| c.bytes.clone()).collect::<Vec<_>>()))),
    }
}

/// No complete request reached the backend (the start of one may have,
/// before the proxy found the error and closed the connection).
pub(crate) fn no_request() -> impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> {
    |_, log| {
        let seen: Vec<String> =
            log.iter().flat_map(|c| &c.requests).map(|s| format!("{} {}", s.method, s.path)).collect();
        match seen.as_slice() {
            [] => Ok(()),
            _ => Err(format!("the backend got complete requests {seen:?}")),
        }
    }
}

/// Exactly one request reached the backend, and `check` holds for it.
pub(crate) fn one(
    check: impl Fn(&Seen) -> Result<(), String> + Send + Sync,
) -> impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> {
    move |_, log| {
        let seen: Vec<&Seen> = log.iter().flat_map(|c| &c.requests).collect();
        match seen.as_slice() {
            [s] => check(s),
            _ => Err(format!(
                "the backend got {} requests ({})",
                seen.len(),
                show(&log.iter().flat_map(|c| c.bytes.clone()).collect::<Vec<_>>())
            )),
        }
    }
}

/// When the client was refused, no complete request; else exactly one, for which `check` holds.
pub(crate) fn refused_or_one(
    check: impl Fn(&Seen) -> Result<(), String> + Send + Sync,
) -> impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> {
    let one = one(check);
    move |o, log| if o.refused() { no_request()(o, log) } else { one(o, log) }
}

/// The request body as the backend decoded it.
pub(crate) fn body(want: &'static str) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| match s.body == want.as_bytes() {
        true => Ok(()),
        false => Err(format!("the backend got body {}, want {want:?}", show(&s.body))),
    }
}

/// The backend got the request without any of these fields.
pub(crate) fn without(names: &'static [&'static str]) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| match names.iter().find(|n| s.header(n).is_some()) {
        None => Ok(()),
        Some(n) => Err(format!("the backend got {n}: {:?}", s.header(n).unwrap_or_default())),
    }
}

/// One `Content-Length` field, with this value (a repeated one collapsed).
pub(crate) fn single_length(want: &'static str) -> impl Fn(&Seen) -> Result<(), String> {
    move |s| match s.headers_named("content-length").as_slice() {
        [v] if *v == want => Ok(()),
        got => Err(format!("the backend got content-length {got:?}, want one {want:?}")),
    }
}

/// Trailers the backend got include no framing or routing field.
pub(crate) fn no_forbidden_trailer(s: &Seen) -> Result<(), String> {
    match s.trailers.iter().find(|(n, _)| strict::is_forbidden_trailer(n)) {
        None => Ok(()),
        Some((n, v)) => Err(format!("the backend got the trailer {n}: {}", show(v))),
    }
}

/// Pingora decodes a chunked body leniently (extension bytes, trailer
/// syntax) and sends the client its own chunks: the client gets a
/// well-formed response with the decoded content and no trailers.
pub(crate) fn pingora_reframes(body: &'static str) -> impl Fn(&Outcome) -> Result<(), String> {
    move |o| {
        let r = o.first()?;
        crate::harness::evil_free(r)?;
        match (r.status, r.body == body.as_bytes()) {
            (200, true) => Ok(()),
            _ => Err(format!("got {} {}, want Pingora's re-framed 200 {body:?}", r.status, show(&r.raw))),
        }
    }
}

/// A chunked request body Pingora's codec decoded leniently: the backend got
/// one request with `want`, re-framed, and nothing smuggled behind it.
pub(crate) fn pingora_decoded(want: &'static str) -> impl Fn(&Outcome, &[ConnLog]) -> Result<(), String> {
    one(move |s| match (s.path.contains("SMUGGLED"), s.body == want.as_bytes()) {
        (false, true) => Ok(()),
        _ => Err(format!("the backend got {} with body {}, want {want:?}", s.path, show(&s.body))),
    })
}
