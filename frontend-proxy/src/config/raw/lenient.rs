//! Reading values the way Envoy does.
//!
//! Envoy turns a YAML bootstrap into JSON and reads that with protobuf's
//! JSON parser, which it runs in "legacy" mode (protobuf's
//! `JsonStringToMessage` always sets `allow_legacy_syntax`) with
//! `case_insensitive_enum_parsing`. That parser is more forgiving than
//! serde, and every difference below is a file Envoy loads:
//!
//! - an integer field takes a number or a string (`port_value: "9901"`),
//!   including a whole number written as a float (`5.0`, `"1e3"`); a
//!   fraction, a space or a value out of range is an error;
//! - a floating-point field takes a number or a string (`"0.5"`, `"NaN"`);
//! - a boolean field takes `true`/`false` or, quoted, what abseil's
//!   `SimpleAtob` reads (`"true"`, `"yes"`, `"1"`, `"f"`, ... in any case);
//!   YAML 1.1's unquoted `on`/`off`, which Envoy's YAML reader turns into
//!   booleans, are read too (serde_yaml cannot tell `on` from `"on"`);
//! - a repeated field takes a single value in place of a list
//!   (`domains: "*"`, `listeners:` written as one mapping), and a list
//!   nested in a list is flattened into it;
//! - a wrapper (`google.protobuf.UInt32Value`, `BoolValue`, ...) also takes
//!   the object form `{value: 5}`, as any well-known type does in legacy
//!   mode (fields marked `#[wrapper]` in [`mapping!`]; a plain `uint32`
//!   field does not);
//! - enum names match in any case ([`enum_name`]); the validator compares
//!   every enum through it.
//!
//! Strings stay strict, as in Envoy: `name: 5` is an error there too.
//! Numbers written as enum values (`codec_type: 1`) are not read.
//!
//! [`Lenient`] is a serde `Deserializer` over a YAML value that applies the
//! scalar and list rules wherever a raw struct asks for a number, boolean or
//! list; [`super::Field`] reads every value through it.

use super::Field;
use serde::de::value::SeqDeserializer;
use serde::de::{self, DeserializeOwned, Deserializer as _, IntoDeserializer, Visitor};
use serde::Deserialize;
use serde_yaml::Value;

/// The canonical spelling of enum name `s` among `names` (Envoy parses enums
/// case-insensitively), or `s` itself when it is none of them, so the
/// caller's "unknown value" error quotes what the file says.
pub fn enum_name<'a>(s: &'a str, names: &[&'a str]) -> &'a str {
    names.iter().copied().find(|n| n.eq_ignore_ascii_case(s)).unwrap_or(s)
}

/// A YAML value read as protobuf's JSON parser reads it.
pub struct Lenient(pub Value);

type Error = serde_yaml::Error;

fn error(msg: impl std::fmt::Display) -> Error {
    de::Error::custom(msg)
}

/// Largest integer a double holds exactly: protobuf's bound for integers
/// written in float form.
const EXACT_IN_DOUBLE: f64 = 9_007_199_254_740_992.0;

/// An integer as protobuf's JSON parser reads one (`ParseIntInner`):
/// `Ok(None)` for a value that is no number at all.
pub(crate) fn integer(v: &Value) -> Result<Option<i128>, String> {
    let from_float = |d: f64, shown: &str| -> Result<Option<i128>, String> {
        if !d.is_finite() {
            return Err(format!("invalid number {shown}"));
        }
        if d.fract() != 0.0 {
            return Err(format!("expected an integer, got {shown} (it has a fractional part)"));
        }
        if d.abs() > EXACT_IN_DOUBLE * 2.0 {
            return Err(format!("integer {shown} is out of range"));
        }
        Ok(Some(d as i128))
    };
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i.into()))
            } else if let Some(u) = n.as_u64() {
                Ok(Some(u.into()))
            } else {
                from_float(n.as_f64().unwrap_or(f64::NAN), &n.to_string())
            }
        }
        Value::String(s) => {
            if s.chars().any(char::is_whitespace) {
                return Err(format!("invalid integer {s:?}: spaces are not allowed in a quoted number"));
            }
            if let Ok(i) = s.parse::<i128>() {
                return Ok(Some(i));
            }
            match s.parse::<f64>() {
                Ok(d) => from_float(d, &format!("{s:?}")),
                Err(_) => Err(format!("expected an integer, got string {s:?}")),
            }
        }
        _ => Ok(None),
    }
}

/// A boolean written as a string: abseil's `SimpleAtob` (what protobuf's
/// legacy JSON parser uses), and YAML 1.1's `on`/`off` in the cases
/// yaml-cpp reads (Envoy's YAML reader makes those booleans before JSON).
fn boolean(s: &str) -> Option<bool> {
    const TRUE: &[&str] = &["true", "t", "yes", "y", "1"];
    const FALSE: &[&str] = &["false", "f", "no", "n", "0"];
    if TRUE.iter().any(|t| t.eq_ignore_ascii_case(s)) || matches!(s, "on" | "On" | "ON") {
        Some(true)
    } else if FALSE.iter().any(|f| f.eq_ignore_ascii_case(s)) || matches!(s, "off" | "Off" | "OFF") {
        Some(false)
    } else {
        None
    }
}

/// A floating-point number written as a string (`ParseFp`).
fn float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ if s.chars().any(|c| c.is_ascii_alphabetic() && !matches!(c, 'e' | 'E')) => None,
        _ => s.parse().ok(),
    }
}

/// The elements of a repeated field: a list (nested lists flattened, as
/// protobuf's legacy parser does) or a single value.
fn elements(v: Value, out: &mut Vec<Lenient>) {
    match v {
        Value::Sequence(items) => {
            for item in items {
                match item {
                    Value::Sequence(_) => elements(item, out),
                    other => out.push(Lenient(other)),
                }
            }
        }
        Value::Null => {}
        single => out.push(Lenient(single)),
    }
}

impl Lenient {
    fn int<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match integer(&self.0).map_err(error)? {
            Some(i) => {
                if let Ok(i) = i64::try_from(i) {
                    visitor.visit_i64(i)
                } else if let Ok(u) = u64::try_from(i) {
                    visitor.visit_u64(u)
                } else {
                    Err(error(format!("integer {i} is out of range")))
                }
            }
            None => self.0.deserialize_any(visitor),
        }
    }
}

macro_rules! ints {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.int(visitor)
        })*
    };
}

macro_rules! forward {
    ($($method:ident)*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.0.$method(visitor)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Lenient {
    type Error = Error;

    ints!(deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64 deserialize_i128
          deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_u128);

    forward!(deserialize_any deserialize_char deserialize_str deserialize_string deserialize_bytes
             deserialize_byte_buf deserialize_unit deserialize_map deserialize_identifier
             deserialize_ignored_any);

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0 {
            Value::String(s) => match boolean(s) {
                Some(b) => visitor.visit_bool(b),
                None => Err(error(format!("expected true or false, got string {s:?}"))),
            },
            _ => self.0.deserialize_bool(visitor),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0 {
            Value::String(s) => match float(s) {
                Some(d) => visitor.visit_f64(d),
                None => Err(error(format!("expected a number, got string {s:?}"))),
            },
            _ => self.0.deserialize_f64(visitor),
        }
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let mut items = Vec::new();
        elements(self.0, &mut items);
        let mut seq = SeqDeserializer::new(items.into_iter());
        let value = visitor.visit_seq(&mut seq)?;
        seq.end()?;
        Ok(value)
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_tuple_struct(name, len, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Error> {
        self.0.deserialize_unit_struct(name, visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_struct(name, fields, visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }
}

impl<'de> IntoDeserializer<'de, Error> for Lenient {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

/// `deserialize_with` for a wrapper field (`UInt32Value`, `BoolValue`, ...):
/// the value itself, or protobuf's legacy object form `{value: x}` (`{}` is
/// the wrapper with its default value, as protobuf reads it).
pub fn wrapper<'de, D, T>(deserializer: D) -> Result<Option<Field<T>>, D::Error>
where
    D: de::Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = Value::deserialize(deserializer)?;
    Ok(match value {
        Value::Null => None,
        Value::Mapping(map) => {
            let mut inner = None;
            for (k, v) in map {
                if k.as_str() == Some("value") {
                    inner = Some(v);
                } else {
                    let k = k.as_str().map_or_else(|| format!("{k:?}"), str::to_string);
                    return Ok(Some(Field::Invalid(format!(
                        "unexpected key `{k}` in a wrapper object; write the value itself, or `{{value: ...}}`"
                    ))));
                }
            }
            Some(match inner {
                Some(v) => Field::from_value(v),
                None => Field::Ok(T::default()),
            })
        }
        other => Some(Field::from_value(other)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: DeserializeOwned>(yaml: &str) -> Result<T, String> {
        let v: Value = serde_yaml::from_str(yaml).unwrap();
        T::deserialize(Lenient(v)).map_err(|e| e.to_string())
    }

    #[test]
    fn integers_as_protobuf_reads_them() {
        assert_eq!(read::<u32>("9901"), Ok(9901));
        assert_eq!(read::<u32>("\"9901\""), Ok(9901));
        assert_eq!(read::<u32>("5.0"), Ok(5));
        assert_eq!(read::<u32>("\"1e3\""), Ok(1000));
        assert_eq!(read::<u64>("\"18446744073709551615\""), Ok(u64::MAX));
        assert_eq!(read::<i64>("\"-12\""), Ok(-12));
        assert_eq!(read::<i64>("\"+12\""), Ok(12));
        for bad in ["5.5", "\"5.5\"", "\" 5\"", "\"five\"", "\"NaN\"", "\"inf\"", "-1", "\"-1\"", "4294967296", "true"]
        {
            assert!(read::<u32>(bad).is_err(), "{bad} should not be a u32");
        }
    }

    #[test]
    fn booleans_as_protobuf_reads_them() {
        for (yaml, b) in [("true", true), ("\"true\"", true), ("\"Yes\"", true), ("\"1\"", true), ("on", true)] {
            assert_eq!(read::<bool>(yaml), Ok(b), "{yaml}");
        }
        for (yaml, b) in [("False", false), ("\"f\"", false), ("no", false), ("\"0\"", false), ("OFF", false)] {
            assert_eq!(read::<bool>(yaml), Ok(b), "{yaml}");
        }
        for bad in ["1", "\"maybe\"", "\"oN\"", "[true]"] {
            assert!(read::<bool>(bad).is_err(), "{bad} should not be a boolean");
        }
    }

    #[test]
    fn floats_and_strings() {
        assert_eq!(read::<f64>("\"12.5\""), Ok(12.5));
        assert_eq!(read::<f64>("50"), Ok(50.0));
        assert!(read::<f64>("\"Infinity\"").unwrap().is_infinite());
        assert!(read::<f64>("\"abc\"").is_err());
        assert!(read::<String>("5").is_err(), "a number is not a string, in Envoy either");
    }

    #[test]
    fn a_single_value_is_a_list_of_one() {
        assert_eq!(read::<Vec<String>>("\"*\""), Ok(vec!["*".to_string()]));
        assert_eq!(read::<Vec<u32>>("[1, [\"2\", 3], 4]"), Ok(vec![1, 2, 3, 4]));
        assert_eq!(read::<Vec<u32>>("~"), Ok(vec![]));
        let fields: Vec<Field<u32>> = read("[1, x]").unwrap();
        assert!(matches!(fields[..], [Field::Ok(1), Field::Invalid(_)]));
    }

    #[test]
    fn wrappers_take_the_object_form() {
        #[derive(Debug, Deserialize)]
        struct W {
            #[serde(default, deserialize_with = "wrapper")]
            n: Option<Field<u32>>,
        }
        let n = |yaml: &str| serde_yaml::from_str::<W>(yaml).unwrap().n;
        assert!(matches!(n("n: 5"), Some(Field::Ok(5))));
        assert!(matches!(n("n: {value: \"5\"}"), Some(Field::Ok(5))));
        assert!(matches!(n("n: {}"), Some(Field::Ok(0))));
        assert!(n("n: ~").is_none());
        assert!(n("{}").is_none());
        assert!(matches!(n("n: {val: 5}"), Some(Field::Invalid(_))));
    }

    #[test]
    fn enum_names_in_any_case() {
        let names = ["ROUND_ROBIN", "TLSv1_2"];
        assert_eq!(enum_name("round_robin", &names), "ROUND_ROBIN");
        assert_eq!(enum_name("tlsV1_2", &names), "TLSv1_2");
        assert_eq!(enum_name("other", &names), "other");
    }
}
