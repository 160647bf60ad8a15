//! Query strings of admin requests: percent-decoding and the `/stats`
//! options (`filter`, `usedonly`, `type`, `format`).

use super::{stats, Reply, TEXT};
use http::StatusCode;
use regex::RegexBuilder;

/// Largest compiled `?filter=` regex.
const MAX_REGEX_SIZE: usize = 1 << 20;

/// The query options of `/stats` and `/clusters`.
pub(super) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub(super) fn parse(query: &str) -> Self {
        let pairs = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Self { pairs }
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub(super) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(super) fn json(&self) -> bool {
        self.get("format") == Some("json")
    }

    pub(super) fn selection(&self) -> Result<stats::Selection, Reply> {
        let filter = match self.get("filter").filter(|f| !f.is_empty()) {
            Some(f) => Some(
                RegexBuilder::new(f)
                    .size_limit(MAX_REGEX_SIZE)
                    .build()
                    .map_err(|e| Reply::new(StatusCode::BAD_REQUEST, TEXT, format!("Invalid re2 regex: {e}\n")))?,
            ),
            None => None,
        };
        let kind = match self.get("type") {
            None | Some("All") => None,
            Some("Counters") => Some(stats::Kind::Counters),
            Some("Gauges") => Some(stats::Kind::Gauges),
            Some("Histograms") => Some(stats::Kind::Histograms),
            Some(other) => {
                return Err(Reply::new(StatusCode::BAD_REQUEST, TEXT, format!("invalid type={other}\n")));
            }
        };
        Ok(stats::Selection { filter, used_only: self.has("usedonly"), kind })
    }
}

/// `%41` → `A`, `+` → space; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(percent_decode("cluster%5C.a+b%2"), "cluster\\.a b%2");
        let q = Query::parse("filter=upstream_rq_%5Cd%2B&usedonly&format=json");
        assert_eq!(q.get("filter"), Some("upstream_rq_\\d+"));
        assert!(q.has("usedonly") && q.json());
        assert!(Query::parse("filter=(").selection().is_err());
        assert!(Query::parse("type=Bogus").selection().is_err());
    }
}
