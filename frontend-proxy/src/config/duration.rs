//! Envoy's duration syntax: protobuf JSON strings (`"0.25s"`, `"5s"`,
//! `"1.500s"`) or the `{seconds, nanos}` object form.

use serde_yaml::Value;
use std::time::Duration;

/// Parses a duration value from the file, or says what was expected.
pub fn parse(value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(s) => parse_str(s),
        Value::Mapping(map) => {
            let mut seconds: u64 = 0;
            let mut nanos: u32 = 0;
            for (k, v) in map {
                match k.as_str() {
                    Some("seconds") => seconds = int_field(v).ok_or("`seconds` must be a non-negative integer")?,
                    Some("nanos") => {
                        nanos = int_field(v)
                            .and_then(|n| u32::try_from(n).ok())
                            .filter(|n| *n < 1_000_000_000)
                            .ok_or("`nanos` must be an integer in 0..999999999")?
                    }
                    _ => {
                        return Err(format!("unexpected key {k:?} in duration object; expected `seconds` and `nanos`"))
                    }
                }
            }
            Ok(Duration::new(seconds, nanos))
        }
        other => Err(format!("expected a duration such as \"0.25s\" or \"5s\", got {}", describe(other))),
    }
}

fn int_field(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_str(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: expected seconds with an `s` suffix, such as \"0.25s\" or \"5s\"");
    let body = s.trim().strip_suffix('s').ok_or_else(bad)?;
    if body.starts_with('-') {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    let (whole, frac) = match body.split_once('.') {
        Some((w, f)) => (w, f),
        None => (body, ""),
    };
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || !all_digits(frac) || frac.len() > 9 {
        return Err(bad());
    }
    let secs: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        let padded = format!("{frac:0<9}");
        padded.parse().map_err(|_| bad())?
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
        assert_eq!(p(".5s"), Ok(Duration::from_millis(500)));
        assert_eq!(p("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn object_form() {
        let v: Value = serde_yaml::from_str("{seconds: 2, nanos: 500000000}").unwrap();
        assert_eq!(parse(&v), Ok(Duration::from_millis(2500)));
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in ["5", "5ms", "-1s", "1.2.3s", "s", "1.0000000001s", "abc s"] {
            assert!(p(bad).is_err(), "{bad} should be rejected");
        }
        let err = parse(&Value::Number(5.into())).unwrap_err();
        assert!(err.contains("expected a duration"), "{err}");
    }
}
