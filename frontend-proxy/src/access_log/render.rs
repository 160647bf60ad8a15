//! Renders a parsed [`Format`] for one finished request, with Envoy's
//! conventions: `-` for a value that is missing, `:N` truncation for
//! headers, times in UTC, a JSON object per line for `json_format`.

use super::format::{JsonValue, Operator, Piece, TimePiece};
use super::{Entry, Format};
use crate::address::Address;
use std::borrow::Cow;
use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

impl Format {
    /// Appends the line for `e` to `out` (a JSON line ends with `\n`; a
    /// text format ends with whatever it says).
    pub fn render(&self, e: &Entry<'_>, out: &mut String) {
        match self {
            Format::Text(pieces) => text(pieces, e, out),
            Format::Json(fields) => {
                out.push('{');
                let mut scratch = String::new();
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&f.key);
                    match &f.value {
                        JsonValue::Literal(v) => out.push_str(v),
                        JsonValue::Text(pieces) => {
                            scratch.clear();
                            text(pieces, e, &mut scratch);
                            json_string(&scratch, out);
                        }
                        JsonValue::Typed(op) => {
                            scratch.clear();
                            if !value(op, e, &mut scratch) {
                                out.push_str("null");
                            } else if is_numeric(op) {
                                out.push_str(&scratch);
                            } else {
                                json_string(&scratch, out);
                            }
                        }
                    }
                }
                out.push_str("}\n");
            }
        }
    }
}

fn text(pieces: &[Piece], e: &Entry<'_>, out: &mut String) {
    for p in pieces {
        match p {
            Piece::Literal(s) => out.push_str(s),
            Piece::Op(op) => {
                if !value(op, e, out) {
                    out.push('-');
                }
            }
        }
    }
}

fn is_numeric(op: &Operator) -> bool {
    matches!(
        op,
        Operator::ResponseCode
            | Operator::BytesReceived
            | Operator::BytesSent
            | Operator::Duration
            | Operator::UpstreamServiceTime { max: None }
    )
}

/// Appends the operator's value; `false` (nothing appended) when missing.
fn value(op: &Operator, e: &Entry<'_>, out: &mut String) -> bool {
    match op {
        Operator::StartTime(pieces) => time(pieces, e.start, out),
        Operator::Req { name, alt, max } => {
            let Some(req) = e.request else { return false };
            let v = header(req, name).or_else(|| alt.as_deref().and_then(|a| header(req, a)));
            match v {
                Some(v) => truncated(&v, *max, out),
                None => return false,
            }
        }
        Operator::UpstreamServiceTime { max } => match e.upstream_service_time {
            Some(t) => truncated(&t.as_millis().to_string(), *max, out),
            None => return false,
        },
        Operator::Protocol => {
            let Some(req) = e.request else { return false };
            out.push_str(match (e.http2, req.version) {
                (true, _) => "HTTP/2",
                (false, http::Version::HTTP_10) => "HTTP/1.0",
                _ => "HTTP/1.1",
            });
        }
        Operator::ResponseCode => push_num(out, e.status as u64),
        Operator::ResponseFlags => e.flags.write_short(out),
        Operator::ResponseCodeDetails => match e.response_code_details {
            Some(d) => out.push_str(d),
            None => return false,
        },
        Operator::BytesReceived => push_num(out, e.bytes_received),
        Operator::BytesSent => push_num(out, e.bytes_sent),
        Operator::Duration => push_num(out, e.duration.as_millis() as u64),
        Operator::UpstreamHost => return address(e.upstream_host, out),
        Operator::UpstreamCluster => match e.upstream_cluster {
            Some(c) => out.push_str(c),
            None => return false,
        },
        Operator::DownstreamRemoteAddress => match (e.downstream_remote, e.downstream_local) {
            (Some(a), _) => return address(Some(a), out),
            // Envoy names a pipe's client after the listener's own socket
            // (accept(2) gives no name for it).
            (None, Some(Address::Pipe(p))) => out.push_str(&p.path),
            (None, _) => return false,
        },
        Operator::DownstreamRemoteAddressWithoutPort => match (e.downstream_remote, e.downstream_local) {
            (Some(a), _) => {
                let _ = write!(out, "{}", a.ip());
            }
            (None, Some(Address::Pipe(p))) => out.push_str(&p.path),
            (None, _) => return false,
        },
        Operator::DownstreamLocalAddress => return address(e.downstream_local, out),
        Operator::RouteName => match e.route_name {
            Some(r) => out.push_str(r),
            None => return false,
        },
        Operator::Hostname => out.push_str(e.hostname),
        Operator::LocalReplyBody => match e.local_reply_body {
            Some(b) => out.push_str(b),
            None => return false,
        },
    }
    true
}

fn push_num(out: &mut String, n: u64) {
    let _ = write!(out, "{n}");
}

fn address(a: Option<impl std::fmt::Display>, out: &mut String) -> bool {
    match a {
        Some(a) => {
            let _ = write!(out, "{a}");
            true
        }
        None => false,
    }
}

/// A request header (pseudo-headers included); several values join with `,`.
fn header<'a>(req: &'a pingora_http::RequestHeader, name: &str) -> Option<Cow<'a, str>> {
    crate::routing::header_value(req, name)
}

/// Appends at most `max` bytes of `v` (cut at a character boundary).
fn truncated(v: &str, max: Option<usize>, out: &mut String) {
    match max {
        Some(n) if v.len() > n => {
            let mut end = n;
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            out.push_str(&v[..end]);
        }
        _ => out.push_str(v),
    }
}

/// Appends `s` as a JSON string.
fn json_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn time(pieces: &[TimePiece], at: SystemTime, out: &mut String) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let nanos = since.subsec_nanos();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    for p in pieces {
        let _ = match p {
            TimePiece::Literal(s) => out.write_str(s),
            TimePiece::Year => write!(out, "{year:04}"),
            TimePiece::Month => write!(out, "{month:02}"),
            TimePiece::Day => write!(out, "{day:02}"),
            TimePiece::Hour => write!(out, "{:02}", of_day / 3600),
            TimePiece::Minute => write!(out, "{:02}", of_day / 60 % 60),
            TimePiece::Second => write!(out, "{:02}", of_day % 60),
            TimePiece::SecondFraction(n) => {
                let _ = write!(out, "{:02}.", of_day % 60);
                fraction(nanos, *n, out)
            }
            TimePiece::Fraction(n) => fraction(nanos, *n, out),
            TimePiece::Epoch => write!(out, "{secs}"),
            TimePiece::Offset => out.write_str("+0000"),
        };
    }
}

/// The first `digits` digits of the fraction of a second.
fn fraction(nanos: u32, digits: u8, out: &mut String) -> std::fmt::Result {
    let digits = digits.clamp(1, 9) as u32;
    write!(out, "{:0width$}", nanos / 10u32.pow(9 - digits), width = digits as usize)
}

/// (year, month, day) of a day count since 1970-01-01, proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::super::ResponseFlags;
    use super::*;
    use pingora_http::RequestHeader;

    fn request() -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/films?id=1", None).unwrap();
        req.insert_header("host", "films.local").unwrap();
        req.insert_header("user-agent", "curl/8.5.0").unwrap();
        req.insert_header("x-request-id", "abc").unwrap();
        req.append_header("x-forwarded-for", "10.0.0.1").unwrap();
        req.append_header("x-forwarded-for", "10.0.0.2").unwrap();
        req
    }

    fn entry(req: Option<&RequestHeader>) -> Entry<'_> {
        Entry {
            // 2016-04-15T20:17:00.310Z
            start: UNIX_EPOCH + Duration::from_millis(1_460_751_420_310),
            duration: Duration::from_micros(226_900),
            request: req,
            http2: false,
            status: 204,
            flags: ResponseFlags::default(),
            bytes_received: 154,
            bytes_sent: 0,
            upstream_service_time: Some(Duration::from_millis(100)),
            upstream_host: Some(Box::leak(Box::new(Address::Ip("10.0.2.1:80".parse().unwrap())))),
            upstream_cluster: Some("films"),
            downstream_remote: Some("10.0.35.28:51234".parse().unwrap()),
            downstream_local: Some(Box::leak(Box::new(Address::Ip("10.0.0.9:8080".parse().unwrap())))),
            route_name: Some("films_route"),
            hostname: "proxy-1",
            response_code_details: Some("via_upstream"),
            local_reply_body: None,
        }
    }

    fn render(format: &str, e: &Entry<'_>) -> String {
        let mut out = String::new();
        Format::parse_text(format).unwrap().render(e, &mut out);
        out
    }

    #[test]
    fn the_default_format_matches_envoys_example() {
        let req = request();
        let mut out = String::new();
        Format::default_text().render(&entry(Some(&req)), &mut out);
        assert_eq!(
            out,
            "[2016-04-15T20:17:00.310Z] \"GET /films?id=1 HTTP/1.1\" 204 - 154 0 226 100 \"10.0.0.1,10.0.0.2\" \
             \"curl/8.5.0\" \"abc\" \"films.local\" \"10.0.2.1:80\"\n"
        );
    }

    #[test]
    fn each_operator() {
        let req = request();
        let e = entry(Some(&req));
        let cases = [
            ("%START_TIME%", "2016-04-15T20:17:00.310Z"),
            ("%START_TIME(%Y/%m/%d %H:%M:%S)%", "2016/04/15 20:17:00"),
            ("%START_TIME(%s.%6f %z)%", "1460751420.310000 +0000"),
            ("%REQ(:METHOD)% %REQ(:PATH)% %REQ(:AUTHORITY)%", "GET /films?id=1 films.local"),
            ("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "/films?id=1"),
            ("%REQ(USER-AGENT):4%", "curl"),
            ("%REQUEST_HEADER(x-missing)%", "-"),
            ("%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "100"),
            ("%PROTOCOL%", "HTTP/1.1"),
            ("%RESPONSE_CODE%", "204"),
            ("%RESPONSE_FLAGS%", "-"),
            ("%RESPONSE_CODE_DETAILS%", "via_upstream"),
            ("%BYTES_RECEIVED% %BYTES_SENT%", "154 0"),
            ("%DURATION%", "226"),
            ("%UPSTREAM_HOST% %UPSTREAM_CLUSTER%", "10.0.2.1:80 films"),
            ("%DOWNSTREAM_REMOTE_ADDRESS%", "10.0.35.28:51234"),
            ("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.35.28"),
            ("%DOWNSTREAM_LOCAL_ADDRESS%", "10.0.0.9:8080"),
            ("%ROUTE_NAME% %HOSTNAME%", "films_route proxy-1"),
            ("100%%", "100%"),
        ];
        for (format, expected) in cases {
            assert_eq!(render(format, &e), expected, "{format}");
        }
    }

    #[test]
    fn missing_values_are_dashes() {
        let mut e = entry(None);
        e.upstream_service_time = None;
        e.upstream_host = None;
        e.upstream_cluster = None;
        e.route_name = None;
        e.response_code_details = None;
        e.downstream_remote = None;
        e.flags = ResponseFlags::NO_ROUTE_FOUND;
        let all = "%REQ(:METHOD)% %PROTOCOL% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% %UPSTREAM_HOST% \
                   %UPSTREAM_CLUSTER% %ROUTE_NAME% %RESPONSE_CODE_DETAILS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %RESPONSE_FLAGS%";
        assert_eq!(render(all, &e), "- - - - - - - - NR");
    }

    #[test]
    fn http2_and_http10_protocols() {
        let mut req = request();
        let mut e = entry(Some(&req));
        e.http2 = true;
        assert_eq!(render("%PROTOCOL%", &e), "HTTP/2");
        req.set_version(http::Version::HTTP_10);
        let e = entry(Some(&req));
        assert_eq!(render("%PROTOCOL%", &e), "HTTP/1.0");
    }

    #[test]
    fn json_lines_are_objects_with_typed_values() {
        let map: serde_yaml::Mapping = serde_yaml::from_str(
            "code: '%RESPONSE_CODE%'\nua: '%REQ(USER-AGENT)%'\nline: '\"%REQ(:METHOD)%\" %REQ(x-none)%'\nhost: '%UPSTREAM_HOST%'\nmissing: '%ROUTE_NAME%'\nn: 3",
        )
        .unwrap();
        let req = request();
        let mut e = entry(Some(&req));
        e.route_name = None;
        let mut out = String::new();
        Format::parse_json(&map).unwrap().render(&e, &mut out);
        assert!(out.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 204, "ua": "curl/8.5.0", "line": "\"GET\" -", "host": "10.0.2.1:80", "missing": null, "n": 3})
        );
    }

    #[test]
    fn dates_around_leap_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }
}
