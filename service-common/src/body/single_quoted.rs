//! Rewrites the old clients' single-quoted pseudo-JSON into JSON.
//!
//! The Flask services parsed every body with
//! `json.loads(body.replace("'", '"'))`, so their clients (curl scripts) send
//! `{'name': 'Citizen Kane'}`. A blind replace would corrupt apostrophes in
//! double-quoted strings (`"Schindler's List"`), so this walks the text as
//! tokens instead: double-quoted strings are copied verbatim, single-quoted
//! strings are re-emitted as JSON strings, everything else is copied. The
//! result is then parsed by `serde_json`, which reports any remaining error.

/// Why the text could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// A `'` opened a string that never closed.
    #[error("unterminated single-quoted string starting at line {line} column {column}")]
    Unterminated {
        /// 1-based line of the opening quote.
        line: usize,
        /// 1-based column (in characters) of the opening quote.
        column: usize,
    },
}

/// Converts single-quoted strings in `input` into JSON strings.
///
/// Inside a single-quoted string, `\'` stands for `'`, a bare `"` is escaped,
/// and raw control characters (a newline typed inside the quotes) are
/// escaped; other backslash escapes are kept for the JSON parser to judge.
pub fn to_json(input: &str) -> Result<String, RewriteError> {
    let mut out = String::with_capacity(input.len() + 16);
    let mut chars = input.char_indices();
    while let Some((start, c)) = chars.next() {
        match c {
            '"' => {
                out.push('"');
                copy_double_quoted(&mut chars, &mut out);
            }
            '\'' => {
                out.push('"');
                if !rewrite_single_quoted(&mut chars, &mut out) {
                    let (line, column) = position(input, start);
                    return Err(RewriteError::Unterminated { line, column });
                }
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

/// Copies a double-quoted string body up to and including its closing quote.
/// An unterminated one is copied as is; the JSON parser reports it.
fn copy_double_quoted(chars: &mut std::str::CharIndices<'_>, out: &mut String) {
    while let Some((_, c)) = chars.next() {
        out.push(c);
        match c {
            '\\' => {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            }
            '"' => return,
            _ => {}
        }
    }
}

/// Re-emits a single-quoted string body as the body of a JSON string,
/// including the closing `"`. Returns false if the input ends first.
fn rewrite_single_quoted(chars: &mut std::str::CharIndices<'_>, out: &mut String) -> bool {
    while let Some((_, c)) = chars.next() {
        match c {
            '\'' => {
                out.push('"');
                return true;
            }
            '\\' => match chars.next() {
                Some((_, '\'')) => out.push('\''),
                Some((_, escaped)) => {
                    out.push('\\');
                    out.push(escaped);
                }
                None => return false,
            },
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    false
}

/// 1-based line and column of byte offset `at` in `input`.
fn position(input: &str, at: usize) -> (usize, usize) {
    let before = input.get(..at).unwrap_or(input);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(input: &str) -> Value {
        serde_json::from_str(&to_json(input).unwrap()).unwrap()
    }

    #[test]
    fn old_verify_sh_body() {
        let body = "{\n\t\t'name': 'Citizen Kane',\n\t\t'language': 'English'\n\t}";
        assert_eq!(parse(body), json!({"name": "Citizen Kane", "language": "English"}));
    }

    #[test]
    fn double_quoted_strings_keep_their_apostrophes() {
        let body = r#"{'name': "Schindler's List", 'language': 'English'}"#;
        assert_eq!(parse(body), json!({"name": "Schindler's List", "language": "English"}));
    }

    #[test]
    fn escaped_quotes_inside_single_quotes() {
        assert_eq!(parse(r"{'name': 'Schindler\'s List'}"), json!({"name": "Schindler's List"}));
        assert_eq!(parse(r#"{'name': 'say "hi"'}"#), json!({"name": "say \"hi\""}));
        assert_eq!(parse(r#"{"a": "x\"'y"}"#), json!({"a": "x\"'y"}));
    }

    #[test]
    fn control_characters_inside_single_quotes_are_escaped() {
        assert_eq!(parse("{'a': 'x\ty\nz\u{1}'}"), json!({"a": "x\ty\nz\u{1}"}));
    }

    #[test]
    fn other_escapes_are_left_for_the_json_parser() {
        assert_eq!(parse(r"{'a': 'back\\slash \u00e9'}"), json!({"a": "back\\slash é"}));
        assert!(serde_json::from_str::<Value>(&to_json(r"{'a': '\q'}").unwrap()).is_err());
    }

    #[test]
    fn numbers_and_literals_pass_through() {
        assert_eq!(
            parse("{'rating': 3.5, 'ok': true, 'none': null, 'list': ['a', 1]}"),
            json!({"rating": 3.5, "ok": true, "none": null, "list": ["a", 1]})
        );
    }

    #[test]
    fn unterminated_string_reports_where_it_started() {
        assert_eq!(to_json("{\n  'name': 'Citizen Kane}"), Err(RewriteError::Unterminated { line: 2, column: 11 }));
        assert_eq!(to_json("{'a': 'x\\"), Err(RewriteError::Unterminated { line: 1, column: 7 }));
    }

    #[test]
    fn apostrophe_in_single_quoted_string_does_not_parse() {
        // The old stack failed on this too; it must be an error, not a guess.
        let rewritten = to_json("{'name': 'Schindler's List'}");
        let parsed = rewritten.map(|s| serde_json::from_str::<Value>(&s).is_ok());
        assert_ne!(parsed, Ok(true));
    }

    #[test]
    fn multibyte_text_is_preserved() {
        assert_eq!(parse("{'name': 'Amélie', 'language': '日本語'}"), json!({"name": "Amélie", "language": "日本語"}));
    }
}
