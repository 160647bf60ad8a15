//! The differential properties of the HTTP/1.1 wire code: what the engine
//! decides (`frontend_proxy::fuzzing`) against the reference reader
//! (`strict.rs`). Each check takes the bytes and returns what went wrong;
//! `tests/wire_fuzz.rs` runs them under proptest, the `fuzz/` targets
//! under libFuzzer (which include this file as it is).
//!
//! The rule is one-directional: the engine may refuse what the reference
//! accepts (it is stricter, the client gets a 502 or a 400), but whatever
//! it accepts, the reference must read the same way: same head end, same
//! status, same framing, same body end. Anything else is bytes of one
//! message read as part of another.
#![allow(dead_code)]

use super::strict::{self, Framing, Verdict};
use frontend_proxy::fuzzing::{self, Asked, BodyFraming, ChunkedVerdict, RequestVerdict, ResponseVerdict};

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(&b[..b.len().min(300)]))
}

fn same_framing(engine: BodyFraming, reference: Framing) -> bool {
    matches!(
        (engine, reference),
        (BodyFraming::None, Framing::None | Framing::Upgraded)
            | (BodyFraming::Chunked, Framing::Chunked)
            | (BodyFraming::UntilClose, Framing::UntilClose)
    ) || matches!((engine, reference), (BodyFraming::Length(a), Framing::Length(b)) if a == b)
}

/// A request head the engine serves is one the reference reads the same
/// way: same length, same body length, no other framing, Host rules kept.
pub fn check_request(bytes: &[u8]) -> Result<(), String> {
    let verdict = fuzzing::parse_request(bytes);
    let reference = strict::request(bytes);
    match (&verdict, &reference) {
        (RequestVerdict::Served { head_len, body, close }, Ok(r)) => {
            if r.len != *head_len || !same_framing(*body, r.framing) {
                return Err(format!(
                    "the engine serves a {head_len}-byte head with a body framed {body:?}; the reference reads {} bytes, {:?}: {}",
                    r.len,
                    r.framing,
                    show(bytes)
                ));
            }
            let asks_close = r.all("connection").iter().any(|v| strict::has_token(v, "close"));
            if asks_close && !close {
                return Err(format!("the client asked to close and the engine missed it: {}", show(bytes)));
            }
            Ok(())
        }
        (RequestVerdict::Served { .. }, Err(Verdict::Invalid(why))) => {
            Err(format!("the engine serves a request the reference refuses ({why}): {}", show(bytes)))
        }
        (RequestVerdict::Served { .. }, Err(Verdict::Partial)) => {
            Err(format!("the engine serves a head the reference has not seen the end of: {}", show(bytes)))
        }
        (RequestVerdict::Partial, Ok(r)) => {
            Err(format!("the engine waits for more after a complete {}-byte head: {}", r.len, show(bytes)))
        }
        _ => Ok(()),
    }
}

/// A response head the engine forwards is the one the reference finds:
/// same end, status and framing; and a connection the reference must
/// close after it is not kept.
pub fn check_response_head(bytes: &[u8], asked: Asked) -> Result<(), String> {
    let verdict = fuzzing::response_head(bytes, asked);
    let reference = strict::final_response_head(bytes, strict::Asked { head: asked.head, upgrade: asked.upgrade });
    match (&verdict, &reference) {
        (ResponseVerdict::Final { head, status, framing, keep_alive }, Ok((r, rf))) => {
            if head.end != r.len || *status != r.status || !same_framing(*framing, *rf) {
                return Err(format!(
                    "the engine reads a {status} head ending at {} framed {framing:?}; the reference a {} ending at {} framed {rf:?}: {}",
                    head.end,
                    r.status,
                    r.len,
                    show(bytes)
                ));
            }
            if *keep_alive && strict::closes_after(r) {
                return Err(format!("the engine keeps a connection that must close: {}", show(bytes)));
            }
            Ok(())
        }
        (ResponseVerdict::Final { status, .. }, Err(v)) => {
            Err(format!("the engine forwards a {status} head the reference refuses ({v:?}): {}", show(bytes)))
        }
        (ResponseVerdict::Partial, Ok((r, _))) => {
            Err(format!("the engine waits for more after a complete {}-byte head: {}", r.len, show(bytes)))
        }
        _ => Ok(()),
    }
}

/// Splits `body` at `cuts` (positions, in any order) into reads.
pub fn split<'a>(body: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut parts = Vec::new();
    let mut at = 0;
    for c in cuts {
        parts.push(&body[at..c]);
        at = c;
    }
    parts.push(&body[at..]);
    parts
}

/// The chunked scanner ends a body where the reference decoder does,
/// refuses what the reference refuses (it passes bytes on as it scans
/// them), forwards no framing or routing trailer, and does not depend on
/// how the body was split into reads.
pub fn check_chunked(body: &[u8], cuts: &[usize]) -> Result<(), String> {
    let parts = split(body, cuts);
    let verdict = fuzzing::chunked_body(&parts);
    let whole = fuzzing::chunked_body(&[body]);
    if verdict != whole {
        return Err(format!("{whole:?} in one read, {verdict:?} in {} reads: {}", parts.len(), show(body)));
    }
    match (verdict, strict::chunked(body)) {
        (ChunkedVerdict::Invalid, _) | (ChunkedVerdict::Partial, Err(Verdict::Partial)) => Ok(()),
        (ChunkedVerdict::End { len, forwarded }, Ok(c)) if len == c.len => {
            // What goes on is a chunked body of the same content whose
            // trailer fields, if it had any, were all left out.
            match strict::chunked(&forwarded) {
                Ok(f) if f.len == forwarded.len() && f.body == c.body && f.trailers.is_empty() => Ok(()),
                Ok(f) => Err(format!(
                    "the client gets {} (content {}, trailers {:?}) of {}",
                    show(&forwarded),
                    show(&f.body),
                    f.trailers,
                    show(body)
                )),
                Err(v) => Err(format!("the client gets {} ({v:?}) of {}", show(&forwarded), show(body))),
            }
        }
        (ChunkedVerdict::End { len, .. }, Ok(c)) => {
            Err(format!("the scanner ends the body at {len}, the reference at {}: {}", c.len, show(body)))
        }
        (ChunkedVerdict::End { len: n, .. }, Err(v)) => {
            Err(format!("the scanner ends the body at {n}, the reference says {v:?}: {}", show(body)))
        }
        (ChunkedVerdict::Partial, Ok(c)) => {
            Err(format!("the scanner misses the end the reference finds at {}: {}", c.len, show(body)))
        }
        (ChunkedVerdict::Partial, Err(Verdict::Invalid(why))) => {
            Err(format!("the scanner passes bytes the reference refuses ({why}): {}", show(body)))
        }
    }
}
