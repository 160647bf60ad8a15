//! Envoy's duration syntax, as protobuf's JSON parser reads a
//! `google.protobuf.Duration`: a string of whole seconds, an optional
//! fraction of 1 to 9 digits and an `s` (`"5s"`, `"0.25s"`, `"1.500s"`), or,
//! as protobuf's legacy mode (which Envoy uses) allows, the message itself
//! `{seconds, nanos}` (each a number or a string). Envoy then refuses any
//! negative duration and any beyond protobuf's range; so does this.

use super::raw::lenient;
use serde_yaml::Value;
use std::time::Duration;

/// protobuf's largest duration: 10,000 years.
const MAX_SECONDS: u64 = 315_576_000_000;

/// Parses a duration value from the file, or says what was expected.
pub fn parse(value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(s) => parse_str(s),
        Value::Mapping(map) => {
            let mut seconds: i128 = 0;
            let mut nanos: i128 = 0;
            for (k, v) in map {
                let n = || lenient::integer(v).ok().flatten();
                match k.as_str() {
                    Some("seconds") => seconds = n().ok_or("`seconds` must be an integer")?,
                    Some("nanos") => nanos = n().ok_or("`nanos` must be an integer")?,
                    _ => {
                        return Err(format!("unexpected key {k:?} in duration object; expected `seconds` and `nanos`"))
                    }
                }
            }
            if seconds < 0 || nanos < 0 {
                return Err("must not be negative".into());
            }
            if nanos > 999_999_999 {
                return Err("`nanos` must be in 0..999999999".into());
            }
            match u64::try_from(seconds) {
                Ok(s) if s <= MAX_SECONDS => Ok(Duration::new(s, nanos as u32)),
                _ => Err(format!("`seconds` must be at most {MAX_SECONDS}")),
            }
        }
        other => Err(format!("expected a duration such as \"0.25s\" or \"5s\", got {}", describe(other))),
    }
}

fn parse_str(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected seconds with an `s` suffix, such as \"0.25s\" or \"5s\"");
    let body = s.strip_suffix('s').ok_or_else(bad)?;
    if body.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    // As protobuf: whole seconds first (`.5s` is refused), and a point is
    // followed by 1 to 9 digits.
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (body, None),
    };
    let all_digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || frac.is_some_and(|f| !all_digits(f) || f.len() > 9) {
        return Err(bad());
    }
    let secs: u64 = whole.parse().map_err(|_| bad())?;
    if secs > MAX_SECONDS {
        return Err(format!("invalid duration {s:?}: at most {MAX_SECONDS}s"));
    }
    let nanos: u32 = match frac {
        None => 0,
        Some(f) => format!("{f:0<9}").parse().map_err(|_| bad())?,
    };
    Ok(Duration::new(secs, nanos))
}

/// A short description of a YAML value for error messages.
pub fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("tagged value {}", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Duration, String> {
        parse(&Value::String(s.into()))
    }

    #[test]
    fn envoy_forms() {
        assert_eq!(p("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(p("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(p("1.500s"), Ok(Duration::from_millis(1500)));
        assert_eq!(p("0.000000001s"), Ok(Duration::from_nanos(1)));
        assert_eq!(p("0.000001s"), Ok(Duration::from_micros(1)));
        assert_eq!(p("0s"), Ok(Duration::ZERO));
        assert_eq!(p("315576000000s"), Ok(Duration::from_secs(MAX_SECONDS)));
    }

    #[test]
    fn object_form() {
        let v: Value = serde_yaml::from_str("{seconds: 2, nanos: 500000000}").unwrap();
        assert_eq!(parse(&v), Ok(Duration::from_millis(2500)));
        let v: Value = serde_yaml::from_str("{seconds: \"1\", nanos: 5}").unwrap();
        assert_eq!(parse(&v), Ok(Duration::new(1, 5)));
        for bad in ["{seconds: -1}", "{nanos: -5}", "{nanos: 1000000000}", "{seconds: 1.5}", "{secs: 1}"] {
            let v: Value = serde_yaml::from_str(bad).unwrap();
            assert!(parse(&v).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "5",
            "5ms",
            "-1s",
            "-0.5s",
            "1.2.3s",
            "s",
            "1.0000000001s",
            "abc s",
            ".5s",
            "1.s",
            " 5s",
            "+1s",
            "315576000001s",
        ] {
            assert!(p(bad).is_err(), "{bad} should be rejected");
        }
        let err = parse(&Value::Number(5.into())).unwrap_err();
        assert!(err.contains("expected a duration"), "{err}");
    }
}
