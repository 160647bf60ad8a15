//! Envoy's format strings (`%REQ(:METHOD)% %RESPONSE_CODE%...`) and format
//! dictionaries (`json_format`), parsed once into pieces: literal text or
//! a command operator. An operator this proxy cannot fill is a parse error,
//! so a configuration never logs `-` where Envoy would log a value.

/// Envoy's default format, used when a logger sets no `log_format`.
pub const DEFAULT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" \
%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% \
%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \
\"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// Why a format string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("unknown command operator %{0}%")]
    UnknownOperator(String),
    #[error("command operator {0} is not supported: {1}")]
    Unsupported(String, &'static str),
    #[error("invalid command operator at byte {0}: expected %NAME%, %NAME(ARG)% or %NAME(ARG):N%")]
    Malformed(usize),
    #[error("{0}")]
    Invalid(String),
}

/// A parsed access-log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// A format string: the pieces in order.
    Text(Vec<Piece>),
    /// `json_format`: one object per line, each key's value a format string.
    Json(Vec<JsonField>),
}

/// A `json_format` key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonField {
    /// The key as a JSON string with its colon, escaped once here.
    pub(super) key: String,
    pub(super) value: JsonValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JsonValue {
    /// A lone operator keeps its type: a number stays a number, a missing
    /// value is `null`.
    Typed(Operator),
    /// Anything else renders as a string.
    Text(Vec<Piece>),
    /// A literal that is not a string (number, boolean, null) as written.
    Literal(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Op(Operator),
}

/// The command operators this proxy fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    StartTime(Vec<TimePiece>),
    /// `REQ(X?Y):N`: header `X`, else `Y`, at most `N` bytes.
    Req {
        name: String,
        alt: Option<String>,
        max: Option<usize>,
    },
    /// `RESP(X-ENVOY-UPSTREAM-SERVICE-TIME):N`.
    UpstreamServiceTime {
        max: Option<usize>,
    },
    Protocol,
    ResponseCode,
    ResponseFlags,
    ResponseCodeDetails,
    BytesReceived,
    BytesSent,
    Duration,
    UpstreamHost,
    UpstreamCluster,
    DownstreamRemoteAddress,
    DownstreamRemoteAddressWithoutPort,
    DownstreamLocalAddress,
    RouteName,
    Hostname,
    /// The text of a local reply (its body before `body_format`).
    LocalReplyBody,
}

/// A piece of a `START_TIME(...)` format (a strftime subset, in UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimePiece {
    Literal(String),
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    /// `%E<n>S`: seconds with `n` fractional digits.
    SecondFraction(u8),
    /// `%<n>f`: `n` fractional digits alone.
    Fraction(u8),
    /// `%s`: seconds since the epoch.
    Epoch,
    /// `%z`: always `+0000` (UTC).
    Offset,
}

/// Envoy's default `START_TIME` format, `%Y-%m-%dT%H:%M:%E3SZ`.
fn default_time() -> Vec<TimePiece> {
    use TimePiece::*;
    let lit = |s: &str| Literal(s.to_string());
    vec![Year, lit("-"), Month, lit("-"), Day, lit("T"), Hour, lit(":"), Minute, lit(":"), SecondFraction(3), lit("Z")]
}

impl Format {
    /// Envoy's default format.
    pub fn default_text() -> Self {
        match Self::parse_text(DEFAULT_FORMAT) {
            Ok(f) => f,
            Err(_) => unreachable!("the default format parses"),
        }
    }

    /// Parses a format string.
    pub fn parse_text(s: &str) -> Result<Self, FormatError> {
        parse_pieces(s).map(Format::Text)
    }

    /// Parses a `json_format` dictionary: a flat map of key to format
    /// string (or a number, boolean or null, written as is). `Err` carries
    /// every problem, each with the key at fault if there is one.
    pub fn parse_json(map: &serde_yaml::Mapping) -> Result<Self, Vec<(Option<String>, FormatError)>> {
        let mut fields = Vec::with_capacity(map.len());
        let mut errors = Vec::new();
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                errors.push((None, FormatError::Invalid("keys must be strings".into())));
                continue;
            };
            let value = match v {
                serde_yaml::Value::String(s) => match parse_pieces(s) {
                    Ok(mut pieces) if matches!(pieces.as_slice(), [Piece::Op(_)]) => match pieces.pop() {
                        Some(Piece::Op(op)) => JsonValue::Typed(op),
                        _ => unreachable!("one operator"),
                    },
                    Ok(pieces) => JsonValue::Text(pieces),
                    Err(e) => {
                        errors.push((Some(key.to_string()), e));
                        continue;
                    }
                },
                serde_yaml::Value::Number(n) => JsonValue::Literal(n.to_string()),
                serde_yaml::Value::Bool(b) => JsonValue::Literal(b.to_string()),
                serde_yaml::Value::Null => JsonValue::Literal("null".into()),
                _ => {
                    let e = FormatError::Invalid(
                        "nested values are not supported: each value must be a format string".into(),
                    );
                    errors.push((Some(key.to_string()), e));
                    continue;
                }
            };
            let key = serde_json::to_string(key).unwrap_or_default() + ":";
            fields.push(JsonField { key, value });
        }
        match errors.is_empty() {
            true => Ok(Format::Json(fields)),
            false => Err(errors),
        }
    }
}

/// Splits a format string into literal text and operators.
fn parse_pieces(s: &str) -> Result<Vec<Piece>, FormatError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let Some(off) = s[i..].find('%') else {
            literal.push_str(&s[i..]);
            break;
        };
        literal.push_str(&s[i..i + off]);
        let at = i + off;
        if bytes.get(at + 1) == Some(&b'%') {
            literal.push('%');
            i = at + 2;
            continue;
        }
        let (op, end) = parse_operator(s, at)?;
        if !literal.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut literal)));
        }
        pieces.push(Piece::Op(op));
        i = end;
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

/// Parses `%NAME(ARG):N%` starting at the `%` at `at`; returns the operator
/// and the index after its closing `%`.
fn parse_operator(s: &str, at: usize) -> Result<(Operator, usize), FormatError> {
    let bytes = s.as_bytes();
    let mut i = at + 1;
    while i < bytes.len() && (bytes[i].is_ascii_uppercase() || bytes[i].is_ascii_digit() || bytes[i] == b'_') {
        i += 1;
    }
    let name = &s[at + 1..i];
    if name.is_empty() {
        return Err(FormatError::Malformed(at));
    }
    let mut arg = None;
    if bytes.get(i) == Some(&b'(') {
        let close = s[i..].find(')').ok_or(FormatError::Malformed(at))? + i;
        arg = Some(&s[i + 1..close]);
        i = close + 1;
    }
    let mut max = None;
    if bytes.get(i) == Some(&b':') {
        let start = i + 1;
        i = start;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        max = Some(s[start..i].parse::<usize>().map_err(|_| FormatError::Malformed(at))?);
    }
    if bytes.get(i) != Some(&b'%') {
        return Err(FormatError::Malformed(at));
    }
    let op = operator(name, arg, max)?;
    Ok((op, i + 1))
}

fn operator(name: &str, arg: Option<&str>, max: Option<usize>) -> Result<Operator, FormatError> {
    let plain = |op: Operator| match (arg, max) {
        (None, None) => Ok(op),
        _ => Err(FormatError::Invalid(format!("%{name}% takes no argument and no length"))),
    };
    match name {
        "START_TIME" => match (arg, max) {
            (_, Some(_)) => Err(FormatError::Invalid("%START_TIME% takes no length".into())),
            (None, None) => Ok(Operator::StartTime(default_time())),
            (Some(""), None) => Ok(Operator::StartTime(default_time())),
            (Some(f), None) => parse_time(f).map(Operator::StartTime),
        },
        "REQ" | "REQUEST_HEADER" => {
            let arg = arg.ok_or_else(|| FormatError::Invalid(format!("%{name}(...)% needs a header name")))?;
            let (name, alt) = match arg.split_once('?') {
                Some((a, b)) => (header_name(a)?, Some(header_name(b)?)),
                None => (header_name(arg)?, None),
            };
            Ok(Operator::Req { name, alt, max })
        }
        "RESP" | "RESPONSE_HEADER" => {
            let arg = arg.ok_or_else(|| FormatError::Invalid(format!("%{name}(...)% needs a header name")))?;
            if arg.eq_ignore_ascii_case("x-envoy-upstream-service-time") {
                Ok(Operator::UpstreamServiceTime { max })
            } else {
                Err(FormatError::Unsupported(
                    format!("%{name}({arg})%"),
                    "response headers are not kept for the access log; only RESP(X-ENVOY-UPSTREAM-SERVICE-TIME) is",
                ))
            }
        }
        "PROTOCOL" => plain(Operator::Protocol),
        "RESPONSE_CODE" => plain(Operator::ResponseCode),
        "RESPONSE_FLAGS" => plain(Operator::ResponseFlags),
        "RESPONSE_CODE_DETAILS" => plain(Operator::ResponseCodeDetails),
        "BYTES_RECEIVED" => plain(Operator::BytesReceived),
        "BYTES_SENT" => plain(Operator::BytesSent),
        "DURATION" => plain(Operator::Duration),
        "UPSTREAM_HOST" => plain(Operator::UpstreamHost),
        "UPSTREAM_CLUSTER" => plain(Operator::UpstreamCluster),
        "DOWNSTREAM_REMOTE_ADDRESS" => plain(Operator::DownstreamRemoteAddress),
        "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT" => plain(Operator::DownstreamRemoteAddressWithoutPort),
        "DOWNSTREAM_LOCAL_ADDRESS" => plain(Operator::DownstreamLocalAddress),
        "ROUTE_NAME" => plain(Operator::RouteName),
        "HOSTNAME" => plain(Operator::Hostname),
        "LOCAL_REPLY_BODY" => plain(Operator::LocalReplyBody),
        _ => Err(FormatError::UnknownOperator(name.to_string())),
    }
}

/// A header name as `REQ()` takes it: case does not matter.
fn header_name(s: &str) -> Result<String, FormatError> {
    let lower = s.trim().to_ascii_lowercase();
    let pseudo = matches!(lower.as_str(), ":method" | ":path" | ":authority" | ":scheme");
    if pseudo || (!lower.starts_with(':') && http::HeaderName::from_bytes(lower.as_bytes()).is_ok()) {
        Ok(lower)
    } else {
        Err(FormatError::Invalid(format!("invalid header name {s:?}")))
    }
}

/// Parses a `START_TIME(...)` format: `%Y %m %d %H %M %S %s %z %%`,
/// `%E<n>S` and `%<n>f` (n from 1 to 9).
fn parse_time(f: &str) -> Result<Vec<TimePiece>, FormatError> {
    let mut out = Vec::new();
    let mut literal = String::new();
    let mut chars = f.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            literal.push(c);
            continue;
        }
        let spec = match chars.next() {
            Some('%') => {
                literal.push('%');
                continue;
            }
            Some('Y') => TimePiece::Year,
            Some('m') => TimePiece::Month,
            Some('d') => TimePiece::Day,
            Some('H') => TimePiece::Hour,
            Some('M') => TimePiece::Minute,
            Some('S') => TimePiece::Second,
            Some('s') => TimePiece::Epoch,
            Some('z') => TimePiece::Offset,
            Some('E') => match (chars.next().and_then(|d| d.to_digit(10)), chars.next()) {
                (Some(n @ 1..=9), Some('S')) => TimePiece::SecondFraction(n as u8),
                _ => return Err(unsupported_time(f)),
            },
            Some(d @ '1'..='9') => match chars.next() {
                Some('f') => TimePiece::Fraction(d as u8 - b'0'),
                _ => return Err(unsupported_time(f)),
            },
            _ => return Err(unsupported_time(f)),
        };
        if !literal.is_empty() {
            out.push(TimePiece::Literal(std::mem::take(&mut literal)));
        }
        out.push(spec);
    }
    if !literal.is_empty() {
        out.push(TimePiece::Literal(literal));
    }
    Ok(out)
}

fn unsupported_time(f: &str) -> FormatError {
    FormatError::Unsupported(
        format!("%START_TIME({f})%"),
        "only %Y %m %d %H %M %S %s %z %E<n>S %<n>f and %% are implemented",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_format_parses() {
        let Format::Text(pieces) = Format::default_text() else { panic!("text") };
        assert_eq!(pieces[0], Piece::Literal("[".into()));
        assert_eq!(pieces[1], Piece::Op(Operator::StartTime(default_time())));
        assert!(pieces.contains(&Piece::Op(Operator::Req {
            name: "x-envoy-original-path".into(),
            alt: Some(":path".into()),
            max: None
        })));
        assert_eq!(pieces.last(), Some(&Piece::Literal("\"\n".into())));
    }

    #[test]
    fn percent_percent_is_a_literal_and_lengths_parse() {
        let f = Format::parse_text("100%% %REQ(User-Agent):5%").unwrap();
        assert_eq!(
            f,
            Format::Text(vec![
                Piece::Literal("100% ".into()),
                Piece::Op(Operator::Req { name: "user-agent".into(), alt: None, max: Some(5) })
            ])
        );
    }

    #[test]
    fn unknown_and_malformed_operators_are_errors() {
        assert_eq!(Format::parse_text("%FOO%"), Err(FormatError::UnknownOperator("FOO".into())));
        assert_eq!(Format::parse_text("a %REQ(x"), Err(FormatError::Malformed(2)));
        assert_eq!(Format::parse_text("50% off"), Err(FormatError::Malformed(2)));
        assert!(matches!(Format::parse_text("%RESP(content-type)%"), Err(FormatError::Unsupported(..))));
        assert!(matches!(Format::parse_text("%START_TIME(%A)%"), Err(FormatError::Unsupported(..))));
        assert!(matches!(Format::parse_text("%DURATION:3%"), Err(FormatError::Invalid(_))));
        assert!(matches!(Format::parse_text("%REQ(bad header)%"), Err(FormatError::Invalid(_))));
    }

    #[test]
    fn time_formats_parse() {
        assert_eq!(
            parse_time("%s.%3f %z").unwrap(),
            vec![
                TimePiece::Epoch,
                TimePiece::Literal(".".into()),
                TimePiece::Fraction(3),
                TimePiece::Literal(" ".into()),
                TimePiece::Offset
            ]
        );
    }

    #[test]
    fn json_keeps_lone_operators_typed() {
        let map: serde_yaml::Mapping =
            serde_yaml::from_str("code: '%RESPONSE_CODE%'\npath: 'p=%REQ(:PATH)%'\nn: 1").unwrap();
        let Format::Json(fields) = Format::parse_json(&map).unwrap() else { panic!("json") };
        assert_eq!(fields[0].key, "\"code\":");
        assert_eq!(fields[0].value, JsonValue::Typed(Operator::ResponseCode));
        assert!(matches!(fields[1].value, JsonValue::Text(_)));
        assert_eq!(fields[2].value, JsonValue::Literal("1".into()));
        let bad: serde_yaml::Mapping = serde_yaml::from_str("a: '%NOPE%'\nb: { c: 1 }").unwrap();
        let errors = Format::parse_json(&bad).unwrap_err();
        assert_eq!(errors[0], (Some("a".into()), FormatError::UnknownOperator("NOPE".into())));
        assert_eq!(errors[1].0.as_deref(), Some("b"));
    }
}
