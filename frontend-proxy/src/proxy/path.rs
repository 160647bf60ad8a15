//! The connection manager's path normalization (`normalize_path`,
//! `merge_slashes`, `path_with_escaped_slashes_action`), done as Envoy
//! does it before routing; the upstream gets the normalized path too.
//!
//! Envoy's order: escaped slashes (`%2F`, `%5C`, either case) are
//! unescaped (or refused), then the path is canonicalized (after dot
//! segments lose their parameters: `/..;x/` is `/../`, Envoy's fix for
//! CVE-2026-73551, which servlet containers would otherwise resolve past
//! a route), then runs of slashes are merged. Only the part before the first `?` changes; the
//! query goes through as it came.
//!
//! Envoy canonicalizes with Chromium's URL path canonicalizer, which is
//! not RFC 3986 §6 to the letter: besides removing dot segments (`%2E`
//! counting as a dot, `..` above the root dropped rather than refused) it
//! turns `\` into `/`, decodes escaped unreserved characters, escapes
//! bytes that may not appear in a path (controls, space, `"#<>?\^`{|}`,
//! bytes >= 0x80) and keeps other escapes as they are, hex case included.
//! Only an escaped or raw NUL fails it (Envoy answers 400). No crate does
//! this: the `url` crate follows the WHATWG URL standard, which decodes
//! nothing and escapes a different set, so requests would route
//! differently than under Envoy. Written here from Chromium's and Envoy's
//! documented behaviour and tests.

use super::LocalReply;
use crate::config::model::{EscapedSlashes, PathNormalization};
use http::uri::PathAndQuery;
use http::Uri;
use pingora_http::RequestHeader;

/// What normalization makes of a request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Route and forward the target as it is.
    Unchanged,
    /// Route and forward this target instead.
    Rewritten(Vec<u8>),
    /// Answer 307 with this target as `Location`.
    Redirect(Vec<u8>),
    /// Answer 400.
    Reject,
}

/// Normalizes a request target (`path[?query]`) as `opts` say. A target
/// that is not a path (`*`, an authority) is left alone: Envoy refuses it
/// before it normalizes anything.
pub fn normalize(target: &[u8], opts: &PathNormalization) -> Outcome {
    if target.first() != Some(&b'/') || *opts == PathNormalization::OFF {
        return Outcome::Unchanged;
    }
    let split = target.iter().position(|&b| b == b'?').unwrap_or(target.len());
    let (path, query) = target.split_at(split);
    let mut redirect = false;
    let mut current: Option<Vec<u8>> = None;
    if opts.escaped_slashes != EscapedSlashes::KeepUnchanged {
        if let Some(unescaped) = unescape_slashes(path) {
            match opts.escaped_slashes {
                EscapedSlashes::RejectRequest => return Outcome::Reject,
                EscapedSlashes::UnescapeAndRedirect => redirect = true,
                EscapedSlashes::UnescapeAndForward | EscapedSlashes::KeepUnchanged => {}
            }
            current = Some(unescaped);
        }
    }
    if opts.normalize {
        if let Some(stripped) = strip_dot_segment_parameters(current.as_deref().unwrap_or(path)) {
            current = Some(stripped);
        }
        match canonicalize(current.as_deref().unwrap_or(path)) {
            Some(p) => current = Some(p),
            None => return Outcome::Reject,
        }
    }
    if opts.merge_slashes {
        if let Some(p) = merge_slashes(current.as_deref().unwrap_or(path)) {
            current = Some(p);
        }
    }
    let Some(mut new_path) = current else {
        return Outcome::Unchanged;
    };
    new_path.extend_from_slice(query);
    if redirect {
        Outcome::Redirect(new_path)
    } else if new_path == target {
        Outcome::Unchanged
    } else {
        Outcome::Rewritten(new_path)
    }
}

/// Dot segments with parameters made plain, as Envoy does before it
/// canonicalizes: a segment that starts with `..;` becomes `..`, one that
/// starts with `.;` becomes `.` (what follows in the segment is dropped).
/// Only literal dots count (`%2E%2E;` is left, as in Envoy); nothing
/// after a `#` changes. `None` when there is no such segment.
fn strip_dot_segment_parameters(path: &[u8]) -> Option<Vec<u8>> {
    let end = path.iter().position(|&b| b == b'#').unwrap_or(path.len());
    if !has_dot_segment_parameters(&path[..end]) {
        return None;
    }
    let mut out = Vec::with_capacity(end);
    for (i, segment) in path[..end].split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        if segment.starts_with(b"..;") {
            out.extend_from_slice(b"..");
        } else if segment.starts_with(b".;") {
            out.push(b'.');
        } else {
            out.extend_from_slice(segment);
        }
    }
    out.extend_from_slice(&path[end..]);
    Some(out)
}

/// Whether a path (no query) has a segment starting `..;` or `.;`. A first
/// normalization can leave one (from `%2E%2E;`, as Envoy's does), which a
/// second would strip: the one place normalizing twice differs from once.
pub fn has_dot_segment_parameters(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|s| s.starts_with(b"..;") || s.starts_with(b".;"))
}

/// Normalizes the request's target in place; `Some(reply)` when the proxy
/// answers instead: 400 for a path it refuses, 307 to the normalized
/// target for `UNESCAPE_AND_REDIRECT` (400 to gRPC, which cannot follow a
/// redirect, as in Envoy).
pub fn apply(req: &mut RequestHeader, opts: &PathNormalization, grpc: bool) -> Option<LocalReply> {
    match normalize(req.raw_path(), opts) {
        Outcome::Unchanged => None,
        Outcome::Rewritten(target) => set_target(req, target).err(),
        Outcome::Reject => Some(LocalReply::PathNormalizationFailed),
        Outcome::Redirect(_) if grpc => Some(LocalReply::PathNormalizationFailed),
        // The target goes in `Location` as it is: one that is not UTF-8
        // (raw bytes >= 0x80 left by unescaping alone) cannot be a header
        // here, and is refused instead.
        Outcome::Redirect(target) => match String::from_utf8(target) {
            Ok(location) => Some(LocalReply::NormalizedPathRedirect { location }),
            Err(_) => Some(LocalReply::PathNormalizationFailed),
        },
    }
}

/// Replaces the target's path and query, keeping the rest of the URI (an
/// HTTP/2 request's scheme and authority).
fn set_target(req: &mut RequestHeader, target: Vec<u8>) -> Result<(), LocalReply> {
    let mut parts = req.uri.clone().into_parts();
    let uri = PathAndQuery::try_from(target.as_slice()).ok().and_then(|pq| {
        parts.path_and_query = Some(pq);
        Uri::from_parts(parts).ok()
    });
    match uri {
        Some(uri) => {
            req.set_uri(uri);
            Ok(())
        }
        // Bytes the URI type refuses (not UTF-8): kept as raw bytes, as
        // the HTTP/1 parsers keep such a target.
        None => req.set_raw_path(&target).map_err(|_| LocalReply::PathNormalizationFailed),
    }
}

/// `%2F` → `/` and `%5C` → `\` (hex in either case); `None` if there were none.
pub fn unescape_slashes(path: &[u8]) -> Option<Vec<u8>> {
    if !path.contains(&b'%') {
        return None;
    }
    let mut out = Vec::with_capacity(path.len());
    let mut found = false;
    let mut i = 0;
    while i < path.len() {
        let slash = match path.get(i..i + 3) {
            Some([b'%', b'2', b'f' | b'F']) => Some(b'/'),
            Some([b'%', b'5', b'c' | b'C']) => Some(b'\\'),
            _ => None,
        };
        match slash {
            Some(s) => {
                out.push(s);
                found = true;
                i += 3;
            }
            None => {
                out.push(path[i]);
                i += 1;
            }
        }
    }
    found.then_some(out)
}

/// Envoy's `merge_slashes`: runs of `/` become one. `None` if the path has
/// no run. As Envoy, the path is rebuilt from its non-empty segments with
/// a leading and a trailing `/` if it had them, so `//` (all slashes)
/// stays `//`.
pub fn merge_slashes(path: &[u8]) -> Option<Vec<u8>> {
    if !path.windows(2).any(|w| w == b"//") {
        return None;
    }
    let mut out = Vec::with_capacity(path.len());
    if path.first() == Some(&b'/') {
        out.push(b'/');
    }
    for (n, segment) in path.split(|&b| b == b'/').filter(|s| !s.is_empty()).enumerate() {
        if n > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(segment);
    }
    if path.last() == Some(&b'/') {
        out.push(b'/');
    }
    Some(out)
}

/// How the canonicalizer treats a byte (Chromium's path character table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Copied as it is, and kept escaped when it comes escaped.
    Pass,
    /// Written escaped.
    Escape,
    /// Copied as it is, and decoded when it comes escaped.
    Unescape,
    /// `.`: a dot segment, or part of a name.
    Dot,
    /// NUL: fails the path.
    Invalid,
}

fn class(b: u8) -> Class {
    match b {
        0 => Class::Invalid,
        b'.' => Class::Dot,
        b'-' | b'_' | b'~' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => Class::Unescape,
        0x01..=0x20 | 0x7f..=0xff => Class::Escape,
        b'"' | b'#' | b'%' | b'<' | b'>' | b'?' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' => Class::Escape,
        _ => Class::Pass,
    }
}

/// The length of a dot at `i` (`.` or `%2E` in either case), or 0.
fn dot_len(s: &[u8], i: usize) -> usize {
    match s.get(i..) {
        Some([b'.', ..]) => 1,
        Some([b'%', b'2', b'e' | b'E', ..]) => 3,
        _ => 0,
    }
}

fn is_slash(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

/// What a dot that starts a segment means, and how many input bytes after
/// it that meaning takes (the second dot, the slash).
enum DotSegment {
    /// Part of a name (`.hidden`, `..x`).
    Name,
    /// `.`: dropped.
    Current(usize),
    /// `..`: removes the segment before it.
    Parent(usize),
}

fn classify_after_dot(s: &[u8], after: usize) -> DotSegment {
    match s.get(after) {
        None => return DotSegment::Current(0),
        Some(&b) if is_slash(b) => return DotSegment::Current(1),
        Some(_) => {}
    }
    let second = dot_len(s, after);
    if second > 0 {
        match s.get(after + second) {
            None => return DotSegment::Parent(second),
            Some(&b) if is_slash(b) => return DotSegment::Parent(second + 1),
            Some(_) => {}
        }
    }
    DotSegment::Name
}

/// Takes `out` (which ends with `/`) back to the slash before its last
/// segment; never above the first.
fn back_up_to_previous_slash(out: &mut Vec<u8>) {
    let mut i = out.len() - 1;
    if i == 0 {
        return;
    }
    i -= 1;
    while out[i] != b'/' && i > 0 {
        i -= 1;
    }
    out.truncate(i + 1);
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The byte `%XY` at `i` stands for, if `s[i+1..i+3]` are hex digits.
fn decode_escaped(s: &[u8], i: usize) -> Option<u8> {
    match s.get(i + 1..i + 3) {
        Some(&[hi, lo]) => Some((hex_value(hi)? << 4) | hex_value(lo)?),
        _ => None,
    }
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// A `%` that began no escape sequence, followed by bytes that were just
/// decoded, must not read as an escape sequence once decoded (`%%30%30`
/// would become `%00`): its `%` is written `%25` then.
fn escape_nested(s: &[u8], next: usize, percent: usize, out: &mut Vec<u8>) {
    let len = out.len();
    let last = out[len - 1];
    let append_next = percent + 2 == len;
    if append_next {
        match s.get(next) {
            Some(&b) if b < 0x80 => out.push(b),
            _ => return,
        }
    }
    if decode_escaped(out, percent).is_some() {
        if !append_next {
            let second = out[percent + 1];
            out.push(second);
        }
        out[percent + 1] = b'2';
        out[percent + 2] = b'5';
        out.push(last);
    } else if append_next {
        out.truncate(len);
    }
}

/// `normalize_path`: the path canonicalized as Envoy does it (see the
/// module's comment), always starting with `/`; `None` for a path Envoy
/// refuses (one with a NUL, escaped or not).
pub fn canonicalize(path: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(path.len() + 1);
    if path.first().is_none_or(|&b| !is_slash(b)) {
        out.push(b'/');
    }
    let mut ok = true;
    // Where in `out` the last `%` that began no escape sequence went.
    let mut bare_percent: Option<usize> = None;
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        let dot = dot_len(path, i);
        if dot > 0 {
            if out.last() == Some(&b'/') {
                match classify_after_dot(path, i + dot) {
                    DotSegment::Name => {
                        out.push(b'.');
                        i += dot;
                    }
                    DotSegment::Current(more) => i += dot + more,
                    DotSegment::Parent(more) => {
                        back_up_to_previous_slash(&mut out);
                        // A bare `%` the back-up removed is gone: left
                        // pointing past the output, its index would later
                        // take an unrelated escape for a nested one and
                        // rewrite it (`/%x/..%41` style input), which the
                        // copy of Chromium in Envoy does and later Chromium
                        // fixed (crbug.com/1080890). Without the reset a
                        // second normalization changed such a path again.
                        if bare_percent.is_some_and(|p| p >= out.len()) {
                            bare_percent = None;
                        }
                        i += dot + more;
                    }
                }
            } else {
                out.push(b'.');
                i += dot;
            }
            continue;
        }
        match (b, class(b)) {
            (b'\\', _) => {
                out.push(b'/');
                i += 1;
            }
            (b'%', _) => match decode_escaped(path, i) {
                Some(value) => {
                    match class(value) {
                        Class::Unescape => {
                            out.push(value);
                            if bare_percent.is_some_and(|p| p + 3 >= out.len()) {
                                escape_nested(path, i + 3, bare_percent.unwrap_or_default(), &mut out);
                            }
                        }
                        other => {
                            out.extend_from_slice(&path[i..i + 3]);
                            ok &= other != Class::Invalid;
                        }
                    }
                    i += 3;
                }
                None => {
                    bare_percent = Some(out.len());
                    out.push(b'%');
                    i += 1;
                }
            },
            (_, Class::Invalid) => {
                push_escaped(&mut out, b);
                ok = false;
                i += 1;
            }
            (_, Class::Escape) => {
                push_escaped(&mut out, b);
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests;
