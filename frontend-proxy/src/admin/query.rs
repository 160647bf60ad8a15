//! Query strings of admin requests (form-encoded, as browsers send them)
//! and the `/stats` options (`filter`, `usedonly`, `type`, `format`).

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
    /// `%41` is `A` and `+` a space; invalid escapes stay as they are.
    pub(super) fn parse(query: &str) -> Self {
        let pairs = form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(Query::parse("filter=cluster%5C.a+b%2").get("filter"), Some("cluster\\.a b%2"));
        let q = Query::parse("filter=upstream_rq_%5Cd%2B&usedonly&format=json");
        assert_eq!(q.get("filter"), Some("upstream_rq_\\d+"));
        assert!(q.has("usedonly") && q.json());
        assert!(Query::parse("filter=(").selection().is_err());
        assert!(Query::parse("type=Bogus").selection().is_err());
    }
}
